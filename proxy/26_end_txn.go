package proxy

// EndTxn v0–v5 (v5: KIP-890, the epoch bumped on every end), answered by
// eosproxy itself; never passed on.
//
// eosproxy is the transaction coordinator: txnstate decides the commit or
// abort durably and answers, and carries the decision out in the background:
// a commit's buffered batches and offsets are written to the backend then
// (txnstate's forwarding), an abort's dropped. Nothing of a transaction
// reaches the backend before its commit is decided, so consumers of the
// backend never see uncommitted data.

import (
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/eosproxy/eosproxy/metrics"
	"github.com/eosproxy/eosproxy/txnstate"
)

func handleEndTxn(c *conn, r *request) error {
	return answerLocal(r, kmsg.NewPtrEndTxnRequest(), func(req *kmsg.EndTxnRequest) []byte {
		if code := c.authorizeTxn("EndTxn", req.TransactionalID, req.ProducerID); code != 0 {
			resp := req.ResponseKind().(*kmsg.EndTxnResponse)
			resp.ErrorCode, resp.ProducerID, resp.ProducerEpoch = code, -1, -1
			return resp.AppendTo(nil)
		}
		return c.endTxn(req)
	})
}

func (c *conn) endTxn(r *kmsg.EndTxnRequest) []byte {
	p := c.p
	before := p.coord.Get(r.TransactionalID)
	decided := time.Now()
	res := p.coord.EndTxn(c.ctx, r.TransactionalID, txnstate.EndTxnRequest{
		ProducerID: r.ProducerID, Epoch: r.ProducerEpoch, Commit: r.Commit, Version: r.Version})
	c.refused(res.Err, r.TransactionalID, r.ProducerID)
	if res.Err == 0 && before != nil && before.State == txnstate.Ongoing { // not a retry
		if !r.Commit {
			p.m.TxnEnded(metrics.TxnAborted)
		} else {
			p.m.TxnEnded(metrics.TxnCommitted)
			p.ops.backlog.Add(1)
			go func() {
				defer p.ops.backlog.Add(-1)
				if p.coord.Wait(p.life, r.TransactionalID) == nil {
					p.m.CommitForwarded(time.Since(decided))
				}
			}()
		}
	}
	resp := r.ResponseKind().(*kmsg.EndTxnResponse)
	resp.ErrorCode, resp.ProducerID, resp.ProducerEpoch = res.Err, res.ProducerID, res.Epoch
	return resp.AppendTo(nil)
}

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
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/eosproxy/eosproxy/txnstate"
)

func handleEndTxn(c *conn, r *request) error {
	req := kmsg.NewPtrEndTxnRequest()
	if err := decodeLocal(r, req); err != nil {
		return err
	}
	res := c.p.coord.EndTxn(c.ctx, req.TransactionalID, txnstate.EndTxnRequest{
		ProducerID: req.ProducerID, Epoch: req.ProducerEpoch, Commit: req.Commit, Version: req.Version})
	resp := req.ResponseKind().(*kmsg.EndTxnResponse)
	resp.ErrorCode, resp.ProducerID, resp.ProducerEpoch = res.Err, res.ProducerID, res.Epoch
	r.answer(resp.AppendTo(nil))
	return nil
}

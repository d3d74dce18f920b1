package proxy

// AddOffsetsToTxn v0–v4, answered by eosproxy itself; never passed on.
//
// eosproxy is the transaction coordinator: the consumer group joins the
// producer's open transaction in txnstate, so that the group's offsets, sent
// next by TxnOffsetCommit, are committed or aborted with it. With SASL
// pass-through the backend is asked first whether the client may READ the
// group (topicauth.go).

import (
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/eosproxy/eosproxy/txnstate"
)

func handleAddOffsetsToTxn(c *conn, r *request) error {
	return answerLocal(r, kmsg.NewPtrAddOffsetsToTxnRequest(), func(req *kmsg.AddOffsetsToTxnRequest) []byte {
		code := c.authorizeTxn("AddOffsetsToTxn", req.TransactionalID, req.ProducerID)
		if code == 0 {
			code = c.authorizeGroupRead(req.Group, "AddOffsetsToTxn") // topicauth.go
		}
		if code != 0 {
			resp := req.ResponseKind().(*kmsg.AddOffsetsToTxnResponse)
			resp.ErrorCode = code
			return resp.AppendTo(nil)
		}
		return c.p.addOffsetsToTxn(req)
	})
}

func (p *Proxy) addOffsetsToTxn(r *kmsg.AddOffsetsToTxnRequest) []byte {
	res := p.coord.AddOffsets(r.TransactionalID, txnstate.AddOffsetsRequest{
		ProducerID: r.ProducerID, Epoch: r.ProducerEpoch, Group: r.Group, Version: r.Version})
	resp := r.ResponseKind().(*kmsg.AddOffsetsToTxnResponse)
	resp.ErrorCode = res.Err
	return resp.AppendTo(nil)
}

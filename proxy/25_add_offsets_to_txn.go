package proxy

// AddOffsetsToTxn v0–v4, answered by eosproxy itself; never passed on.
//
// eosproxy is the transaction coordinator: the consumer group joins the
// producer's open transaction in txnstate, so that the group's offsets, sent
// next by TxnOffsetCommit, are committed or aborted with it.

import (
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/eosproxy/eosproxy/txnstate"
)

func handleAddOffsetsToTxn(c *conn, r *request) error {
	req := kmsg.NewPtrAddOffsetsToTxnRequest()
	if err := decodeLocal(r, req); err != nil {
		return err
	}
	res := c.p.coord.AddOffsets(req.TransactionalID, txnstate.AddOffsetsRequest{
		ProducerID: req.ProducerID, Epoch: req.ProducerEpoch, Group: req.Group, Version: req.Version})
	resp := req.ResponseKind().(*kmsg.AddOffsetsToTxnResponse)
	resp.ErrorCode = res.Err
	r.answer(resp.AppendTo(nil))
	return nil
}

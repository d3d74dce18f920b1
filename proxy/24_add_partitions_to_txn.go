package proxy

// AddPartitionsToTxn v0–v3 (the client's form), answered by eosproxy itself;
// never passed on.
//
// eosproxy is the transaction coordinator: the partitions join the
// producer's open transaction in txnstate, every partition answered with
// the one outcome. v4+ is the form brokers send to the coordinator to verify
// a transaction (KIP-890), which no client sends; eosproxy does not advertise
// it and closes the connection on it, as Kafka does on a version it does not
// support.

import (
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/eosproxy/eosproxy/txnstate"
)

func handleAddPartitionsToTxn(c *conn, r *request) error {
	return answerLocal(r, kmsg.NewPtrAddPartitionsToTxnRequest(), func(req *kmsg.AddPartitionsToTxnRequest) []byte {
		if code := c.authorizeTxn("AddPartitionsToTxn", req.TransactionalID, req.ProducerID); code != 0 {
			return addPartitionsAnswer(req, code)
		}
		return c.addPartitionsToTxn(req)
	})
}

func (c *conn) addPartitionsToTxn(r *kmsg.AddPartitionsToTxnRequest) []byte {
	var parts []txnstate.TopicPartition
	for _, t := range r.Topics {
		for _, part := range t.Partitions {
			parts = append(parts, txnstate.TopicPartition{Topic: t.Topic, Partition: part})
		}
	}
	res := c.p.coord.AddPartitions(r.TransactionalID, txnstate.AddPartitionsRequest{
		ProducerID: r.ProducerID, Epoch: r.ProducerEpoch, Partitions: parts, Version: r.Version})
	c.refused(res.Err, r.TransactionalID, r.ProducerID)
	return addPartitionsAnswer(r, res.Err)
}

// addPartitionsAnswer answers every partition of r with code.
func addPartitionsAnswer(r *kmsg.AddPartitionsToTxnRequest, code int16) []byte {
	resp := r.ResponseKind().(*kmsg.AddPartitionsToTxnResponse)
	for _, t := range r.Topics {
		rt := kmsg.NewAddPartitionsToTxnResponseTopic()
		rt.Topic = t.Topic
		for _, part := range t.Partitions {
			rp := kmsg.NewAddPartitionsToTxnResponseTopicPartition()
			rp.Partition, rp.ErrorCode = part, code
			rt.Partitions = append(rt.Partitions, rp)
		}
		resp.Topics = append(resp.Topics, rt)
	}
	return resp.AppendTo(nil)
}

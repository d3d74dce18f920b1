package proxy

// DescribeProducers v0, answered by eosproxy itself; never passed on.
//
// eosproxy keeps the idempotent producers' state (dedup), and the backend
// sees only eosproxy's own producer ids, so the backend's answer would name
// the wrong producers: eosproxy lists the clients' producers on each
// partition with their epoch and last sequence.

import "github.com/twmb/franz-go/pkg/kmsg"

func handleDescribeProducers(c *conn, r *request) error {
	return answerLocal(r, kmsg.NewPtrDescribeProducersRequest(), c.p.describeProducers)
}

func (p *Proxy) describeProducers(req *kmsg.DescribeProducersRequest) []byte {
	resp := req.ResponseKind().(*kmsg.DescribeProducersResponse)
	for _, t := range req.Topics {
		rt := kmsg.NewDescribeProducersResponseTopic()
		rt.Topic = t.Topic
		for _, part := range t.Partitions {
			rp := kmsg.NewDescribeProducersResponseTopicPartition()
			rp.Partition = part
			for _, pr := range p.producers.Producers(t.Topic, part) {
				ap := kmsg.NewDescribeProducersResponseTopicPartitionActiveProducer()
				ap.ProducerID, ap.ProducerEpoch, ap.LastSequence = pr.ProducerID, int32(pr.Epoch), pr.LastSequence
				ap.LastTimestamp, ap.CoordinatorEpoch, ap.CurrentTxnStartOffset = pr.LastUpdateMs, -1, -1
				rp.ActiveProducers = append(rp.ActiveProducers, ap)
			}
			rt.Partitions = append(rt.Partitions, rp)
		}
		resp.Topics = append(resp.Topics, rt)
	}
	return resp.AppendTo(nil)
}

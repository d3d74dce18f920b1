package proxy

// DescribeProducers v0, answered by eosproxy itself; never passed on.
//
// eosproxy keeps the idempotent producers' state (dedup), and the backend
// sees only eosproxy's own producer ids, so the backend's answer would name
// the wrong producers: eosproxy lists the clients' producers on each
// partition with their epoch and last sequence.
//
// Kafka answers it only with READ on the topic; eosproxy's ACL file names
// no topics (the backend authorizes them, and in SASL termination it sees
// only eosproxy's user). With an ACL file a principal sees the producers it
// initialised, no one else's: their ids and sequences are what it could use
// against them. Without one everything is shown, as Kafka without an
// authorizer.

import "github.com/twmb/franz-go/pkg/kmsg"

func handleDescribeProducers(c *conn, r *request) error {
	return answerLocal(r, kmsg.NewPtrDescribeProducersRequest(), func(req *kmsg.DescribeProducersRequest) []byte {
		return c.p.describeProducers(req, c.mayDescribeProducer)
	})
}

// mayDescribeProducer reports whether the connection's principal may see
// producer id pid in DescribeProducers.
func (c *conn) mayDescribeProducer(pid int64) bool {
	return c.p.cfg.ACL == nil || c.p.owners.mayUse(pid, c.principal())
}

func (p *Proxy) describeProducers(req *kmsg.DescribeProducersRequest, visible func(pid int64) bool) []byte {
	resp := req.ResponseKind().(*kmsg.DescribeProducersResponse)
	for _, t := range req.Topics {
		rt := kmsg.NewDescribeProducersResponseTopic()
		rt.Topic = t.Topic
		for _, part := range t.Partitions {
			rp := kmsg.NewDescribeProducersResponseTopicPartition()
			rp.Partition = part
			for _, pr := range p.producers.Producers(t.Topic, part) {
				if !visible(pr.ProducerID) {
					continue
				}
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

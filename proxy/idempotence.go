package proxy

import (
	"context"
	"fmt"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/eosproxy/eosproxy/dedup"
	"github.com/eosproxy/eosproxy/protocol"
	"github.com/eosproxy/eosproxy/upstream"
)

// Kafka error codes eosproxy answers Produce with itself.
const (
	errCorruptMessage          int16 = 2
	errRequestTimedOut         int16 = 7
	errStorage                 int16 = 56
	errInvalidRecord           int16 = 87
	errCoordinatorNotAvailable int16 = 15
	errInvalidRequiredAcks     int16 = 21
)

// refuseProduce answers every partition of req with code.
func refuseProduce(req *kmsg.ProduceRequest, code int16) []byte {
	resp := req.ResponseKind().(*kmsg.ProduceResponse)
	for _, t := range req.Topics {
		rt := kmsg.NewProduceResponseTopic()
		rt.Topic, rt.TopicID = t.Topic, t.TopicID
		for _, p := range t.Partitions {
			rp := kmsg.NewProduceResponseTopicPartition()
			rp.Partition, rp.ErrorCode = p.Partition, code
			rp.BaseOffset, rp.LogAppendTime, rp.LogStartOffset = -1, -1, -1
			rt.Partitions = append(rt.Partitions, rp)
		}
		resp.Topics = append(resp.Topics, rt)
	}
	return resp.AppendTo(nil)
}

// producePlan is an idempotent Produce request after eosproxy's checks: the
// batches cleared for writing (with their tokens) go upstream, the rest are
// answered locally, merged into the upstream's answer in request order.
type producePlan struct {
	order   []reqTopic // the request's topics and partitions, for the answer
	tokens  map[tp]*dedup.Token
	local   map[tp]kmsg.ProduceResponseTopicPartition
	forward bool
}

type tp struct {
	topic     string
	partition int32
}

// planProduce checks every batch of an acks≠0 Produce request that carries a
// producer id. It rewrites the frame in place (producer fields cleared, CRC
// recomputed) and returns the frame to forward, or a nil plan when the
// request carries no idempotent batch and passes through untouched.
func (c *conn) planProduce(ctx context.Context, frame []byte, hdr protocol.RequestHeader) (*producePlan, []byte, error) {
	req := kmsg.NewPtrProduceRequest()
	req.SetVersion(hdr.APIVersion)
	// Decoding leaves Records pointing into frame (strings are copied, as
	// the plan outlives the frame buffer): rewriting a batch header there
	// rewrites the frame to forward.
	if err := req.ReadFrom(frame[hdr.BodyOffset:]); err != nil {
		return nil, nil, bad("decode Produce v%d: %w", hdr.APIVersion, err)
	}
	var plan *producePlan
	dropped := false
	order := make([]reqTopic, len(req.Topics))
	seen := map[tp]bool{}
	for ti := range req.Topics {
		t := &req.Topics[ti]
		order[ti] = reqTopic{Topic: t.Topic, TopicID: t.TopicID}
		kept := t.Partitions[:0:0]
		for _, p := range t.Partitions {
			if seen[tp{t.Topic, p.Partition}] {
				// One batch per partition and request: a second one would
				// wait on the first's token for ever. Kafka refuses it too.
				plan.fail()
				return nil, nil, bad("Produce names %s/%d twice", t.Topic, p.Partition)
			}
			seen[tp{t.Topic, p.Partition}] = true
			order[ti].Partitions = append(order[ti].Partitions, p.Partition)
			answer, keep := c.checkBatch(ctx, t.Topic, p.Partition, p.Records, &plan)
			if keep {
				kept = append(kept, p)
				continue
			}
			plan.local[tp{t.Topic, p.Partition}] = answer
			dropped = true
		}
		t.Partitions = kept
	}
	if plan == nil {
		return nil, frame, nil
	}
	plan.order = order
	if !dropped {
		plan.forward = true
		return plan, frame, nil
	}
	topics := req.Topics[:0]
	for _, t := range req.Topics {
		if len(t.Partitions) > 0 {
			topics = append(topics, t)
		}
	}
	req.Topics = topics
	// Whatever is left, idempotent or not, still goes upstream.
	if plan.forward = len(topics) > 0; !plan.forward {
		return plan, nil, nil
	}
	out := append(make([]byte, 0, len(frame)), frame[:hdr.BodyOffset]...)
	return plan, req.AppendTo(out), nil
}

// checkBatch decides one partition's batch. It returns keep=true to forward
// it (rewritten if idempotent), or the local answer for it.
func (c *conn) checkBatch(ctx context.Context, topic string, partition int32, records []byte, plan **producePlan) (kmsg.ProduceResponseTopicPartition, bool) {
	ans := kmsg.NewProduceResponseTopicPartition()
	ans.Partition = partition
	ans.BaseOffset, ans.LogAppendTime, ans.LogStartOffset = -1, -1, -1
	ensure := func() {
		if *plan == nil {
			*plan = &producePlan{tokens: map[tp]*dedup.Token{}, local: map[tp]kmsg.ProduceResponseTopicPartition{}}
		}
	}
	if len(records) == 0 {
		return ans, true
	}
	// Every batch's CRC is checked, not only the ones eosproxy re-signs
	// (it must not bless a corrupt batch with a fresh CRC): a corrupt batch
	// is refused here, never forwarded, whatever the backend would do.
	bt, err := protocol.ParseBatch(records)
	if err == nil && (bt.ProducerID < 0 || bt.Transactional) {
		return ans, true // the backend checks the rest of what passes unchanged
	}
	if err != nil {
		ensure()
		c.log.Warn().Err(err).Str("topic", topic).Int32("partition", partition).Msg("rejecting corrupt record batch")
		ans.ErrorCode = errCorruptMessage
		return ans, false
	}
	ensure()
	if bt.Length != len(records) {
		// Kafka takes exactly one batch per partition from a v2 producer.
		ans.ErrorCode = errInvalidRecord
		return ans, false
	}
	// Begin may wait for an earlier batch of this connection to be
	// answered: that batch's request must not sit in the write buffer.
	if c.uw.Buffered() > 0 {
		c.uw.Flush() // an error shows on the next write
	}
	key := dedup.Key{ProducerID: bt.ProducerID, Topic: topic, Partition: partition}
	info := dedup.BatchInfo{Epoch: bt.ProducerEpoch, FirstSeq: bt.BaseSequence, Count: bt.Count}
	d, tok, err := c.p.producers.Begin(ctx, key, info, func() [32]byte { return protocol.Digest(records, bt.Length) })
	if err != nil {
		c.log.Warn().Err(err).Int64("producer", key.ProducerID).Str("topic", topic).Int32("partition", partition).
			Msg("cannot settle producer state; asking the client to retry")
		ans.ErrorCode = errRequestTimedOut
		return ans, false
	}
	switch d.Verdict {
	case dedup.Write:
		up, ok, err := c.p.up.PairedID(ctx, bt.ProducerID)
		if err != nil {
			tok.Failed(false)
			c.log.Warn().Err(err).Int64("producer", key.ProducerID).Msg("asking the client to retry")
			ans.ErrorCode = errRequestTimedOut
			return ans, false
		}
		if ok {
			// The client's epoch and sequence, checked by Begin: the
			// backend sees the client's own sequence stream.
			protocol.SetProducer(records, bt.Length, up, bt.ProducerEpoch, bt.BaseSequence)
		} else {
			protocol.ClearProducer(records, bt.Length)
		}
		(*plan).tokens[tp{topic, partition}] = tok
		return ans, true
	case dedup.Duplicate:
		c.p.metrics.duplicates.Add(1)
		c.log.Debug().Int64("producer", key.ProducerID).Str("topic", topic).Int32("partition", partition).
			Int32("seq", info.FirstSeq).Int64("offset", d.BaseOffset).Msg("DUP response: batch already written")
		ans.BaseOffset = d.BaseOffset
	default:
		ans.ErrorCode = d.Err
	}
	return ans, false
}

// fail releases every token of a plan whose upstream answer will never be
// read: the batches may or may not have been written.
func (pl *producePlan) fail() {
	if pl == nil {
		return
	}
	for _, tok := range pl.tokens {
		tok.Failed(true)
	}
	pl.tokens = nil
}

// answerProduce completes a planned Produce: it records the outcome of each
// forwarded batch durably, then builds the client's answer in request order
// from the upstream's answer (nil when nothing was forwarded) and the local
// answers.
func (c *conn) answerProduce(pl *producePlan, version int16, answer []byte) ([]byte, error) {
	resp := kmsg.NewPtrProduceResponse()
	resp.SetVersion(version)
	if answer != nil {
		if err := resp.ReadFrom(answer); err != nil {
			pl.fail()
			return nil, fmt.Errorf("decode Produce v%d response: %w", version, err)
		}
	}
	results := map[tp]*kmsg.ProduceResponseTopicPartition{}
	for ti := range resp.Topics {
		t := &resp.Topics[ti]
		for pi := range t.Partitions {
			results[tp{t.Topic, t.Partitions[pi].Partition}] = &t.Partitions[pi]
		}
	}
	var toks []*dedup.Token
	var offs []int64
	var parts []*kmsg.ProduceResponseTopicPartition
	for k, tok := range pl.tokens {
		r := results[k]
		switch {
		case r == nil:
			tok.Failed(true)
		case r.ErrorCode == 0:
			toks, offs, parts = append(toks, tok), append(offs, r.BaseOffset), append(parts, r)
		default:
			tok.Failed(upstream.Ambiguous(r.ErrorCode))
		}
	}
	pl.tokens = nil
	for i, err := range dedup.WrittenAll(toks, offs) {
		if err != nil {
			c.log.Error().Err(err).Msg("producer state not durable; answering KAFKA_STORAGE_ERROR so the client retries")
			parts[i].ErrorCode = errStorage
		}
	}
	// The answer lists topics and partitions in the order of the request.
	out := kmsg.NewPtrProduceResponse()
	out.SetVersion(version)
	out.ThrottleMillis = resp.ThrottleMillis
	out.Brokers = resp.Brokers
	out.UnknownTags = resp.UnknownTags
	for _, t := range pl.order {
		rt := kmsg.NewProduceResponseTopic()
		rt.Topic = t.Topic
		rt.TopicID = t.TopicID
		for _, p := range t.Partitions {
			k := tp{t.Topic, p}
			if a, ok := pl.local[k]; ok {
				rt.Partitions = append(rt.Partitions, a)
			} else if r := results[k]; r != nil {
				rt.Partitions = append(rt.Partitions, *r)
			}
		}
		out.Topics = append(out.Topics, rt)
	}
	if _, err := protocol.MapBrokers(out, c.p.mapBroker); err != nil {
		return nil, err
	}
	return out.AppendTo(nil), nil
}

type reqTopic struct {
	Topic      string
	TopicID    [16]byte
	Partitions []int32
}

// produce runs eosproxy's idempotence checks on a Produce request, or
// buffers a transactional one, and returns the frame to forward (nil when
// nothing goes upstream).
func (c *conn) produce(s *slot, frame []byte, hdr protocol.RequestHeader, acks int16) ([]byte, error) {
	if protocol.ProduceIsTransactional(hdr.APIVersion, frame[hdr.BodyOffset:]) {
		req := kmsg.NewPtrProduceRequest()
		req.SetVersion(hdr.APIVersion)
		if err := req.ReadFrom(frame[hdr.BodyOffset:]); err != nil {
			return nil, bad("decode Produce v%d: %w", hdr.APIVersion, err)
		}
		if acks == 0 {
			// Kafka refuses it with INVALID_REQUIRED_ACKS; with acks=0 there
			// is no answer to carry that, so the connection closes.
			return nil, bad("transactional Produce with acks=0 (must be -1)")
		}
		if acks != -1 {
			c.log.Warn().Int16("acks", acks).Msg("refusing transactional Produce without acks=all: INVALID_REQUIRED_ACKS")
			s.mode, s.body = localAnswer, refuseProduce(req, errInvalidRequiredAcks)
			return nil, nil
		}
		s.mode, s.wait = localAnswer, c.produceTxn(req)
		return nil, nil
	}
	if acks == 0 {
		return frame, nil
	}
	plan, fwd, err := c.planProduce(c.ctx, frame, hdr)
	if err != nil || plan == nil {
		return frame, err
	}
	s.plan = plan
	if plan.forward {
		s.mode = produceAnswer
		return fwd, nil
	}
	body, err := c.answerProduce(plan, hdr.APIVersion, nil)
	if err != nil {
		return nil, err
	}
	s.mode, s.body, s.plan = localAnswer, body, nil
	return nil, nil
}

// answerLocally answers the requests eosproxy serves itself from its state:
// InitProducerId for idempotent producers and DescribeProducers. A nil body
// means the request passes through.
func (p *Proxy) answerLocally(ctx context.Context, hdr protocol.RequestHeader, body []byte) ([]byte, error) {
	switch hdr.APIKey {
	case protocol.KeyInitProducerID:
		req := kmsg.NewPtrInitProducerIDRequest()
		req.SetVersion(hdr.APIVersion)
		if err := req.ReadFrom(body); err != nil {
			return nil, bad("decode InitProducerId v%d: %w", hdr.APIVersion, err)
		}
		if req.TransactionalID != nil {
			return p.initProducerIDTxn(ctx, req), nil
		}
		resp := req.ResponseKind().(*kmsg.InitProducerIDResponse)
		// Kafka gives an idempotent producer a new id on every call, even
		// one that names its old id and epoch (KIP-360).
		id, err := p.producers.NewProducerID()
		if err != nil {
			p.log.Error().Err(err).Msg("cannot allocate a producer id")
			resp.ErrorCode = errCoordinatorNotAvailable
			resp.ProducerID, resp.ProducerEpoch = -1, -1
		} else if err := p.up.Pair(ctx, id); err != nil {
			// As Kafka answers while its producer id block is not ready:
			// every client retries it (franz-go, Java, librdkafka).
			p.log.Debug().Err(err).Msg("InitProducerId answered COORDINATOR_LOAD_IN_PROGRESS")
			resp.ErrorCode = kerr.CoordinatorLoadInProgress.Code
			resp.ProducerID, resp.ProducerEpoch = -1, -1
		} else {
			resp.ProducerID, resp.ProducerEpoch = id, 0
		}
		return resp.AppendTo(nil), nil
	case protocol.KeyDescribeProducers:
		req := kmsg.NewPtrDescribeProducersRequest()
		req.SetVersion(hdr.APIVersion)
		if err := req.ReadFrom(body); err != nil {
			return nil, bad("decode DescribeProducers v%d: %w", hdr.APIVersion, err)
		}
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
		return resp.AppendTo(nil), nil
	}
	return nil, nil
}

package proxy

import (
	"context"
	"fmt"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/eosproxy/eosproxy/dedup"
	"github.com/eosproxy/eosproxy/metrics"
	"github.com/eosproxy/eosproxy/protocol"
	"github.com/eosproxy/eosproxy/txnstate"
	"github.com/eosproxy/eosproxy/upstream"
)

// An idempotent Produce (00_produce.go): each batch that carries a producer
// id is checked against the producer's state (dedup) before anything is
// forwarded, and its outcome recorded once the backend has answered.

// producePlan is an idempotent Produce request after eosproxy's checks: the
// batches cleared for writing (with their tokens) go upstream, the rest are
// answered locally, merged into the upstream's answer in request order.
type producePlan struct {
	order   []reqTopic // the request's topics and partitions, for the answer
	tokens  map[txnstate.TopicPartition]*dedup.Token
	local   map[txnstate.TopicPartition]kmsg.ProduceResponseTopicPartition
	forward bool
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
	seen := map[txnstate.TopicPartition]bool{}
	for ti := range req.Topics {
		t := &req.Topics[ti]
		order[ti] = reqTopic{Topic: t.Topic, TopicID: t.TopicID}
		kept := t.Partitions[:0:0]
		for _, p := range t.Partitions {
			k := txnstate.TopicPartition{Topic: t.Topic, Partition: p.Partition}
			if seen[k] {
				// One batch per partition and request: a second one would
				// wait on the first's token for ever. Kafka refuses it too.
				plan.fail()
				return nil, nil, bad("Produce names %s/%d twice", t.Topic, p.Partition)
			}
			seen[k] = true
			order[ti].Partitions = append(order[ti].Partitions, p.Partition)
			answer, keep := c.checkBatch(ctx, t.Topic, p.Partition, p.Records, &plan)
			if keep {
				kept = append(kept, p)
				continue
			}
			plan.local[k] = answer
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
			*plan = &producePlan{tokens: map[txnstate.TopicPartition]*dedup.Token{}, local: map[txnstate.TopicPartition]kmsg.ProduceResponseTopicPartition{}}
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
		ans.ErrorCode = kerr.CorruptMessage.Code
		return ans, false
	}
	ensure()
	if bt.Length != len(records) {
		// Kafka takes exactly one batch per partition from a v2 producer.
		ans.ErrorCode = kerr.InvalidRecord.Code
		return ans, false
	}
	if code := c.authorizeIdempotent("idempotent Produce", bt.ProducerID); code != 0 {
		ans.ErrorCode = code
		return ans, false
	}
	if code, msg := c.p.storageFull(); code != 0 {
		ans.ErrorCode, ans.ErrorMessage = code, &msg
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
		ans.ErrorCode = kerr.RequestTimedOut.Code
		return ans, false
	}
	switch d.Verdict {
	case dedup.Write:
		up, ok, err := c.p.up.PairedID(ctx, bt.ProducerID)
		if err != nil {
			tok.Failed(false)
			c.log.Warn().Err(err).Int64("producer", key.ProducerID).Msg("asking the client to retry")
			ans.ErrorCode = kerr.RequestTimedOut.Code
			return ans, false
		}
		if !ok && d.Deferred {
			// Only the backend's own producer state could take it.
			tok.Failed(false)
			ans.ErrorCode = d.Err
			c.refused(d.Err, "", key.ProducerID)
			return ans, false
		}
		if ok {
			// The client's epoch and sequence, checked by Begin: the
			// backend sees the client's own sequence stream.
			protocol.SetProducer(records, bt.Length, up, bt.ProducerEpoch, bt.BaseSequence)
		} else {
			protocol.ClearProducer(records, bt.Length)
		}
		(*plan).tokens[txnstate.TopicPartition{Topic: topic, Partition: partition}] = tok
		return ans, true
	case dedup.Duplicate:
		c.p.metrics.duplicates.Add(1)
		c.p.m.Duplicate()
		c.log.Debug().Int64("producer", key.ProducerID).Str("topic", topic).Int32("partition", partition).
			Int32("seq", info.FirstSeq).Int64("offset", d.BaseOffset).Msg("DUP response: batch already written")
		ans.BaseOffset = d.BaseOffset
	default:
		ans.ErrorCode = d.Err
		c.refused(d.Err, "", key.ProducerID)
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

// respond completes the plan with the upstream's answer.
func (pl *producePlan) respond(c *conn, s *slot, body []byte) ([]byte, error) {
	return c.answerProduce(pl, s.ver, body)
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
	results := map[txnstate.TopicPartition]*kmsg.ProduceResponseTopicPartition{}
	for ti := range resp.Topics {
		t := &resp.Topics[ti]
		for pi := range t.Partitions {
			results[txnstate.TopicPartition{Topic: t.Topic, Partition: t.Partitions[pi].Partition}] = &t.Partitions[pi]
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
			c.p.m.BackendError(r.ErrorCode)
			switch r.ErrorCode {
			case kerr.OutOfOrderSequenceNumber.Code, kerr.InvalidProducerEpoch.Code:
				// The backend's producer state refused a batch eosproxy
				// left to it (dedup.Decision.Deferred): a refusal like
				// eosproxy's own.
				c.refused(r.ErrorCode, "", tok.Key().ProducerID)
			}
			if r.ErrorCode == kerr.DuplicateSequenceNumber.Code {
				c.p.m.Unclear(metrics.SettledBackendDuplicate)
			}
			tok.Failed(upstream.Ambiguous(r.ErrorCode))
		}
	}
	pl.tokens = nil
	for i, err := range dedup.WrittenAll(toks, offs) {
		if err != nil {
			c.log.Error().Err(err).Msg("producer state not durable; answering KAFKA_STORAGE_ERROR so the client retries")
			parts[i].ErrorCode = kerr.KafkaStorageError.Code
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
			k := txnstate.TopicPartition{Topic: t.Topic, Partition: p}
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

package proxy

// Produce v0–v12 (v13 names topics by id, while producer state is kept by
// topic name; eosproxy does not advertise it and closes the connection on
// it, as Kafka does on a version it does not support).
//
// eosproxy answers itself a transactional Produce: its batches are buffered
// in the transaction (spooled, nothing goes to the backend before EndTxn
// commits) and each is answered NONE once durable, or refused. It also
// answers an idempotent producer's retried batch that is already written
// (with its offset, not written twice) and batches it refuses (out of order,
// fenced, corrupt). What it passes on: plain batches unchanged, and an
// idempotent producer's new batches under the backend producer id paired
// with the client's (idempotence.go; the pairing is upstream/pairing.go), or without producer
// fields on a backend without idempotence, each recorded once the backend
// has written it so that a retry is not written twice. The answer merges
// the backend's with eosproxy's own, in request order, and maps broker
// addresses (v10+).

import (
	"fmt"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/eosproxy/eosproxy/dedup"
	"github.com/eosproxy/eosproxy/protocol"
	"github.com/eosproxy/eosproxy/txnstate"
)

func handleProduce(c *conn, r *request) error {
	if err := passMapped(c, r); err != nil {
		return err
	}
	acks, err := protocol.ProduceAcks(r.hdr.APIVersion, r.body())
	if err != nil {
		return bad("produce request: %w", err)
	}
	r.noResponse = acks == 0
	r.frame, err = c.produce(&r.slot, r.frame, r.hdr, acks)
	return err
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
			s.local, s.body = true, refuseProduce(req, kerr.InvalidRequiredAcks.Code)
			return nil, nil
		}
		s.local, s.wait = true, c.produceTxn(req)
		return nil, nil
	}
	if acks == 0 {
		return frame, nil
	}
	plan, fwd, err := c.planProduce(c.ctx, frame, hdr)
	if err != nil || plan == nil {
		return frame, err
	}
	if plan.forward {
		s.answer = plan
		return fwd, nil
	}
	body, err := c.answerProduce(plan, hdr.APIVersion, nil)
	if err != nil {
		return nil, err
	}
	s.local, s.body, s.answer = true, body, nil
	return nil, nil
}

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

// produceTxn buffers a transactional Produce request's batches in the
// coordinator; nothing is forwarded. The answer is NONE with base offset -1
// for each accepted batch (its offset is known only once it is committed),
// given once the batch is durable: wait builds it.
func (c *conn) produceTxn(req *kmsg.ProduceRequest) (wait func() []byte) {
	id := *req.TransactionID
	type pending struct {
		rp   *kmsg.ProduceResponseTopicPartition
		wait func() int16
	}
	var waits []pending
	resp := req.ResponseKind().(*kmsg.ProduceResponse)
	for _, t := range req.Topics {
		rt := kmsg.NewProduceResponseTopic()
		rt.Topic, rt.TopicID = t.Topic, t.TopicID
		rt.Partitions = make([]kmsg.ProduceResponseTopicPartition, len(t.Partitions))
		for i, part := range t.Partitions {
			rp := &rt.Partitions[i]
			*rp = kmsg.NewProduceResponseTopicPartition()
			rp.Partition = part.Partition
			rp.BaseOffset, rp.LogAppendTime, rp.LogStartOffset = -1, -1, -1
			code, msg, w := c.bufferTxnBatch(id, req.Version, t.Topic, part.Partition, part.Records)
			rp.ErrorCode = code
			if msg != "" {
				rp.ErrorMessage = &msg
			}
			if w != nil {
				waits = append(waits, pending{rp, w})
			}
		}
		resp.Topics = append(resp.Topics, rt)
	}
	return func() []byte {
		for _, w := range waits {
			w.rp.ErrorCode = w.wait()
		}
		return resp.AppendTo(nil)
	}
}

func (c *conn) bufferTxnBatch(id string, version int16, topic string, partition int32, records []byte) (int16, string, func() int16) {
	if len(records) == 0 {
		return kerr.InvalidRecord.Code, "", nil
	}
	bt, err := protocol.ParseBatch(records)
	if err != nil {
		c.log.Warn().Err(err).Str("txn", id).Str("topic", topic).Int32("partition", partition).
			Msg("rejecting corrupt transactional record batch")
		return kerr.CorruptMessage.Code, "", nil
	}
	if bt.Length != len(records) || !bt.Transactional || bt.ProducerID < 0 || bt.Control {
		return kerr.InvalidRecord.Code, "a transactional Produce takes one transactional batch per partition", nil
	}
	if code := c.authorizeTxn("transactional Produce", id, bt.ProducerID); code != 0 {
		return code, "", nil
	}
	if code := c.authorizeTopicWrite(topic); code != 0 {
		return code, "", nil
	}
	if code, msg := c.p.storageFull(); code != 0 {
		return code, msg, nil
	}
	if code, msg := c.checkTopicLimits(topic, partition, records, bt); code != 0 {
		c.log.Warn().Str("txn", id).Str("topic", topic).Int32("partition", partition).
			Str("err", errName(code)).Msg(msg)
		return code, msg, nil
	}
	batch := append([]byte(nil), records...)
	protocol.ClearTransactional(batch, bt.Length)
	ans := c.p.coord.BufferBatch(id, txnstate.ProduceRequest{
		ProducerID: bt.ProducerID, Epoch: bt.ProducerEpoch,
		Partition: txnstate.TopicPartition{Topic: topic, Partition: partition}, Version: version,
	}, dedup.BatchInfo{Epoch: bt.ProducerEpoch, FirstSeq: bt.BaseSequence, Count: bt.Count}, batch)
	if ans.Err != 0 {
		c.refused(ans.Err, id, bt.ProducerID)
		c.log.Debug().Str("txn", id).Str("topic", topic).Int32("partition", partition).
			Str("err", errName(ans.Err)).Int16("code", ans.Err).Msg("transactional batch refused")
	}
	return ans.Err, ans.Msg, ans.Wait
}

// checkTopicLimits refuses a transactional batch that the backend would
// refuse, as Kafka refuses it on append: MESSAGE_TOO_LARGE over the topic's
// max.message.bytes, INVALID_RECORD for a record without a key in a
// compacted topic, UNKNOWN_TOPIC_OR_PARTITION for a topic it does not have.
// Buffered, such a batch would reach the backend only once its commit was
// decided, and be refused there for good: the commit could never finish.
// When the limits cannot be had, the batch is taken (the backend decides,
// at the commit, as before this check).
func (c *conn) checkTopicLimits(topic string, partition int32, records []byte, bt protocol.Batch) (int16, string) {
	lim, err := c.p.up.TopicLimits(c.ctx, topic)
	if err != nil {
		c.log.Warn().Err(err).Str("topic", topic).Msg("cannot check transactional batches against their topic's settings; the backend decides at their commit")
		return 0, ""
	}
	switch {
	case lim.Missing:
		return kerr.UnknownTopicOrPartition.Code, fmt.Sprintf("the backend has no topic %q", topic)
	case lim.MaxMessageBytes > 0 && bt.Length > lim.MaxMessageBytes:
		return kerr.MessageTooLarge.Code, fmt.Sprintf("batch of %d bytes to %s-%d exceeds the topic's max.message.bytes (%d)",
			bt.Length, topic, partition, lim.MaxMessageBytes)
	case lim.Compacted:
		recs := protocol.BatchRecords(records, bt.Length)
		if codec := protocol.BatchCodec(records); codec != 0 {
			var err error
			if recs, err = c.p.decompress.Decompress(recs, kgo.CompressionCodecType(codec)); err != nil {
				return kerr.CorruptMessage.Code, fmt.Sprintf("cannot decompress a batch to compacted topic %s-%d: %v", topic, partition, err)
			}
		}
		i, err := protocol.FirstKeyless(recs, bt.Count)
		if err != nil {
			return kerr.CorruptMessage.Code, fmt.Sprintf("batch to compacted topic %s-%d: %v", topic, partition, err)
		}
		if i >= 0 {
			return kerr.InvalidRecord.Code, fmt.Sprintf("Compacted topic cannot accept message without key in topic partition %s-%d (record %d of the batch).", topic, partition, i)
		}
	}
	return 0, ""
}

// storageFull refuses a batch that brings data to eosproxy's disk while its
// filesystem is below the reserve (store.Space), as Kafka answers a
// Produce to a log dir that cannot take it: KAFKA_STORAGE_ERROR, which
// producers retry.
func (p *Proxy) storageFull() (int16, string) {
	if p.cfg.Space == nil {
		return 0, ""
	}
	if low, avail := p.cfg.Space.Low(); low {
		return kerr.KafkaStorageError.Code, fmt.Sprintf("eosproxy's data dir has %d bytes free, under its reserve", avail)
	}
	return 0, ""
}

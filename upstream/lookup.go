package upstream

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/eosproxy/eosproxy/protocol"
	"github.com/eosproxy/eosproxy/txnstate"
)

// The look-ups that settle an unknown outcome, for dedup's producer table
// and txnstate's forwarding alike; never on the hot path.

func (b *Client) EndOffset(ctx context.Context, topic string, partition int32) (int64, error) {
	offs, err := kadm.NewClient(b.admin).ListEndOffsets(ctx, topic)
	if err != nil {
		return 0, err
	}
	o, ok := offs.Lookup(topic, partition)
	if !ok {
		return 0, fmt.Errorf("no end offset for %s/%d", topic, partition)
	}
	return o.Offset, o.Err
}

// FindBatch reads the partition from offset from to its high watermark,
// read_uncommitted, and compares each batch's content digest.
//
// Offsets below the log start (deleted by retention or DeleteRecords since
// from was recorded) cannot be read: the look-up starts at the log start
// instead, and a batch that landed in the deleted range is not found. The
// caller then writes it again: where the batch goes under a producer id the
// backend gave eosproxy, the backend drops the resend (Kafka keeps producer
// state past the log start, KAFKA-7190); without one the record is in the
// log twice, its first copy deleted. Failing instead would fail every
// retry for as long as the state lives (24 h by default), and on the commit
// path hold back every later commit of the transactional id.
//
// It first waits (awaitReplicated) until the high watermark has reached
// the leader's log end offset: a first copy appended but not yet
// replicated would otherwise be missed and the batch written twice. It
// then reads from that leader under that leader epoch, whose high
// watermark only grows.
func (b *Client) FindBatch(ctx context.Context, topic string, partition int32, from int64, digest [32]byte) (int64, bool, error) {
	mark, err := b.awaitReplicated(ctx, topic, partition, from, digest)
	if err != nil {
		return 0, false, err
	}
	broker := b.admin.Broker(int(mark.leader))
	for offset := from; ; {
		req := kmsg.NewPtrFetchRequest()
		req.ReplicaID = -1
		req.MaxWaitMillis = 0
		req.MaxBytes = 16 << 20
		rt := kmsg.NewFetchRequestTopic()
		rt.Topic = topic
		rt.TopicID = mark.topic
		rp := kmsg.NewFetchRequestTopicPartition()
		rp.Partition = partition
		rp.FetchOffset = offset
		rp.PartitionMaxBytes = 16 << 20
		rp.CurrentLeaderEpoch = mark.epoch
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		resp, err := req.RequestWith(ctx, broker)
		if err != nil {
			return 0, false, err
		}
		if len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 1 {
			return 0, false, fmt.Errorf("fetch %s/%d: malformed answer", topic, partition)
		}
		fp := resp.Topics[0].Partitions[0]
		if fp.ErrorCode == kerr.OffsetOutOfRange.Code {
			next, done, err := b.outOfRange(ctx, topic, partition, from, offset)
			if err != nil {
				return 0, false, err
			}
			if done {
				return 0, false, nil
			}
			offset = next
			continue
		}
		if err := kerr.ErrorForCode(fp.ErrorCode); err != nil {
			return 0, false, fmt.Errorf("fetch %s/%d at %d: %w", topic, partition, offset, err)
		}
		next := offset
		for rest := fp.RecordBatches; len(rest) >= protocol.BatchHeaderLen; {
			bt, err := protocol.ParseBatch(rest)
			if err != nil {
				break // a partial batch at the end of the answer
			}
			base := protocol.BatchBaseOffset(rest)
			if base >= from && protocol.Digest(rest, bt.Length) == digest {
				return base, true, nil
			}
			next = base + int64(protocol.BatchLastOffsetDelta(rest)) + 1
			rest = rest[bt.Length:]
		}
		if next >= fp.HighWatermark {
			return 0, false, nil
		}
		if next == offset {
			return 0, false, fmt.Errorf("fetch %s/%d at %d made no progress", topic, partition, offset)
		}
		offset = next
	}
}

// outOfRange handles OFFSET_OUT_OF_RANGE for a look-up from from that has
// reached offset: it says where to go on reading (the log start, when offset
// was deleted meanwhile), or done when nothing at or after offset is left to
// read (the log ends before it: truncated by an unclean election, or the
// topic was deleted and created again), or an error when the broker's
// answer does not fit its own bounds (retried by the caller).
func (b *Client) outOfRange(ctx context.Context, topic string, partition int32, from, offset int64) (next int64, done bool, err error) {
	adm := kadm.NewClient(b.admin)
	starts, err := adm.ListStartOffsets(ctx, topic)
	if err != nil {
		return 0, false, fmt.Errorf("log start of %s/%d: %w", topic, partition, err)
	}
	start, ok := starts.Lookup(topic, partition)
	if !ok || start.Err != nil {
		return 0, false, fmt.Errorf("log start of %s/%d: %v", topic, partition, start.Err)
	}
	if offset < start.Offset {
		b.log.Warn().Str("topic", topic).Int32("partition", partition).Int64("from", from).Int64("log_start", start.Offset).
			Msg("look-up for a batch with an unknown outcome: the log below its start was deleted (retention or DeleteRecords), so a batch that landed there cannot be found and would be written again; reading from the log start")
		return start.Offset, false, nil
	}
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return 0, false, fmt.Errorf("end offset of %s/%d: %w", topic, partition, err)
	}
	end, ok := ends.Lookup(topic, partition)
	if !ok || end.Err != nil {
		return 0, false, fmt.Errorf("end offset of %s/%d: %v", topic, partition, end.Err)
	}
	if offset >= end.Offset {
		b.log.Warn().Str("topic", topic).Int32("partition", partition).Int64("from", offset).Int64("end", end.Offset).
			Msg("look-up for a batch with an unknown outcome: the partition ends before the low-water offset (log truncated or topic re-created); the batch is not there")
		return 0, true, nil
	}
	return 0, false, fmt.Errorf("fetch %s/%d at %d: %w (log %d..%d)", topic, partition, offset, kerr.OffsetOutOfRange, start.Offset, end.Offset)
}

// DropsLateCopies reports whether idempotent clients' batches go to the
// backend paired with a producer id of its own (dedup.Backend): the backend
// then keeps their producer state and drops a late first copy of a retried
// batch itself. Until eosproxy knows whether the backend has idempotence
// (at start) every batch goes paired or not at all (PairedID), so only a
// backend known to lack it says no.
func (b *Client) DropsLateCopies() bool { return b.ids.mode.Load() != backendPlain }

// MissingPartitions implements txnstate.Backend: from the backend's
// metadata, asked afresh (never a cached answer, which may predate the
// topic), the partitions of tps whose topic it does not have, or that are
// past its partition count.
func (b *Client) MissingPartitions(ctx context.Context, tps []txnstate.TopicPartition) (map[txnstate.TopicPartition]bool, error) {
	req := kmsg.NewPtrMetadataRequest()
	for _, topic := range topicsOf(tps) {
		rt := kmsg.NewMetadataRequestTopic()
		rt.Topic = kmsg.StringPtr(topic)
		req.Topics = append(req.Topics, rt)
	}
	resp, err := req.RequestWith(ctx, b.admin)
	if err != nil {
		return nil, fmt.Errorf("metadata: %w", err)
	}
	topics := map[string]kmsg.MetadataResponseTopic{}
	for _, t := range resp.Topics {
		if t.Topic != nil {
			topics[*t.Topic] = t
		}
	}
	out := map[txnstate.TopicPartition]bool{}
	for _, tp := range tps {
		t, ok := topics[tp.Topic]
		if !ok {
			return nil, fmt.Errorf("metadata: topic %s not answered", tp.Topic)
		}
		switch err := kerr.ErrorForCode(t.ErrorCode); {
		case errors.Is(err, kerr.UnknownTopicOrPartition):
			out[tp] = true
		case err != nil:
			return nil, fmt.Errorf("metadata of %s: %w", tp.Topic, err)
		default:
			out[tp] = !slices.ContainsFunc(t.Partitions, func(p kmsg.MetadataResponseTopicPartition) bool {
				return p.Partition == tp.Partition
			})
		}
	}
	return out, nil
}

// topicsOf lists the topics of tps, each once.
func topicsOf(tps []txnstate.TopicPartition) []string {
	var topics []string
	for _, tp := range tps {
		if !slices.Contains(topics, tp.Topic) {
			topics = append(topics, tp.Topic)
		}
	}
	return topics
}

func (b *Client) EndOffsets(ctx context.Context, tps []txnstate.TopicPartition) (map[txnstate.TopicPartition]int64, error) {
	offs, err := kadm.NewClient(b.admin).ListEndOffsets(ctx, topicsOf(tps)...)
	if err != nil {
		return nil, err
	}
	out := make(map[txnstate.TopicPartition]int64, len(tps))
	for _, tp := range tps {
		o, ok := offs.Lookup(tp.Topic, tp.Partition)
		if !ok {
			return nil, fmt.Errorf("no end offset for %s/%d", tp.Topic, tp.Partition)
		}
		if o.Err != nil {
			return nil, fmt.Errorf("end offset of %s/%d: %w", tp.Topic, tp.Partition, o.Err)
		}
		out[tp] = o.Offset
	}
	return out, nil
}

package proxy

import (
	"context"
	"fmt"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/eosproxy/eosproxy/protocol"
)

// upstreamBackend answers dedup's questions about the backend with
// eosproxy's own client; only used to settle unknown outcomes, never on the
// hot path.
type upstreamBackend struct{ p *Proxy }

func (b upstreamBackend) EndOffset(ctx context.Context, topic string, partition int32) (int64, error) {
	offs, err := kadm.NewClient(b.p.admin).ListEndOffsets(ctx, topic)
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
func (b upstreamBackend) FindBatch(ctx context.Context, topic string, partition int32, from int64, digest [32]byte) (int64, bool, error) {
	meta, err := kadm.NewClient(b.p.admin).Metadata(ctx, topic)
	if err != nil {
		return 0, false, err
	}
	pd, ok := meta.Topics[topic].Partitions[partition]
	if !ok || pd.Err != nil {
		return 0, false, fmt.Errorf("no leader for %s/%d: %v", topic, partition, pd.Err)
	}
	broker := b.p.admin.Broker(int(pd.Leader))
	for offset := from; ; {
		req := kmsg.NewPtrFetchRequest()
		req.ReplicaID = -1
		req.MaxWaitMillis = 0
		req.MaxBytes = 16 << 20
		rt := kmsg.NewFetchRequestTopic()
		rt.Topic = topic
		rt.TopicID = meta.Topics[topic].ID
		rp := kmsg.NewFetchRequestTopicPartition()
		rp.Partition = partition
		rp.FetchOffset = offset
		rp.PartitionMaxBytes = 16 << 20
		rp.CurrentLeaderEpoch = -1
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

// The backend as the coordinator sees it: what carrying out a commit needs
// of the real cluster. Apart from the coordinator's own files because the
// client behind it (eosproxy's own connections) changes on its own.

package txnstate

import (
	"context"
	"errors"
)

// Backend is what the coordinator needs of the real cluster to carry out a
// commit: package upstream implements it over eosproxy's own client.
type Backend interface {
	// EndOffsets returns each partition's log end offset.
	EndOffsets(ctx context.Context, tps []TopicPartition) (map[TopicPartition]int64, error)
	// Produce writes one batch per partition (acks=all) and reports each.
	Produce(ctx context.Context, batches map[TopicPartition][]byte) map[TopicPartition]ProduceResult
	// FindBatch reads the partition from offset from and reports where a
	// batch with this content digest is (protocol.Digest), if anywhere: the
	// look-up dedup.Backend makes, by the same method.
	FindBatch(ctx context.Context, topic string, partition int32, from int64, digest [32]byte) (int64, bool, error)
	// MissingPartitions reports which of tps the backend says it does not
	// have (their topic deleted, or fewer partitions).
	MissingPartitions(ctx context.Context, tps []TopicPartition) (map[TopicPartition]bool, error)
	// CommitOffsets commits a group's offsets as the member that sent them.
	// An error wrapping ErrPermanent will not succeed on a retry.
	CommitOffsets(ctx context.Context, group string, g GroupOffsets) error
}

// ErrPermanent marks a backend failure that retrying cannot fix.
var ErrPermanent = errors.New("permanent failure")

// ProduceResult is the backend's answer for one batch.
type ProduceResult struct {
	BaseOffset int64
	Err        error
	// Ambiguous: the batch may have been written although Err says otherwise
	// (a timeout, a dropped connection).
	Ambiguous bool
}

// IdempotentBackend is a Backend that also takes writes under a producer id of
// eosproxy's own. With it a commit's batches of a partition are pipelined:
// the backend keeps them in sequence order and drops a resent one it holds.
type IdempotentBackend interface {
	Backend
	// InitProducerID gets a fresh producer id (and its epoch) for
	// eosproxy's own writes; an error if the backend cannot give one.
	InitProducerID(ctx context.Context) (int64, int16, error)
	// Send writes one batch per partition (stamped with eosproxy's
	// producer fields) and returns a wait for the answers. Batches sent for
	// a partition reach the backend in the order Send is called.
	Send(ctx context.Context, batches map[TopicPartition][]byte) func(context.Context) map[TopicPartition]ProduceResult
}

// Package dedup holds eosproxy's idempotent-producer state, following Kafka's
// ProducerStateManager: per (producer id, partition) the epoch and the last
// five batches written, and the pure decision of whether an incoming batch is
// new, a retry of one already written, out of order, or from a fenced epoch.
// Decide is a pure function; Table wraps it with locking, in-flight tracking
// and persistence in badger.
package dedup

import (
	"math"

	"github.com/twmb/franz-go/pkg/kerr"
)

const (
	maxRememberedBatches       = 5
	unknownOffset        int64 = -1
)

// BatchInfo is what a decision needs to know of an incoming batch.
type BatchInfo struct {
	Epoch    int16
	FirstSeq int32
	Count    int32
}

// LastSeq is the sequence of the batch's last record, wrapping after
// math.MaxInt32 to 0 as Kafka's producers do.
func (b BatchInfo) LastSeq() int32 { return addSeq(b.FirstSeq, b.Count-1) }

func addSeq(seq, n int32) int32 {
	if seq > math.MaxInt32-n {
		return n - (math.MaxInt32 - seq) - 1
	}
	return seq + n
}

// Written is one batch known to be in the backend.
type Written struct {
	Epoch      int16
	FirstSeq   int32
	LastSeq    int32
	BaseOffset int64 // -1 when not known
}

// State is one producer's state on one partition.
type State struct {
	Epoch   int16
	Batches []Written // oldest first, at most five
	// LowWater is a backend offset at or before where this producer's next
	// batch on the partition can land: the end of its last written batch, or
	// the partition's end when eosproxy first saw the producer there.
	LowWater int64
	// LastUpdateMs drives expiry (producer.id.expiration.ms).
	LastUpdateMs int64
	// Unverified means a batch may have reached the backend without eosproxy
	// learning its outcome (a dropped connection, a timeout, a crash); the
	// next batch must look at the backend from LowWater before being written.
	Unverified bool
	// Intent is persisted: a batch of this producer may have been sent to
	// the partition after this state was recorded. A state loaded without
	// it is verified: nothing was in flight when it was written (an idle
	// producer, or a clean stop), so no look-up is needed.
	Intent bool
}

// Verdict is the outcome of Decide.
type Verdict uint8

const (
	// Write: the batch is new and next in sequence; write it.
	Write Verdict = iota
	// Duplicate: a retry of a written batch; answer NONE with BaseOffset
	// (or DUPLICATE_SEQUENCE_NUMBER if that offset is unknown).
	Duplicate
	// Reject: answer with Err (a Kafka error code, from kerr).
	Reject
)

// Decision is Decide's answer.
type Decision struct {
	Verdict    Verdict
	Err        int16
	BaseOffset int64
	// Deferred (with Write): eosproxy's state refuses the batch with Err,
	// but the state may lack batches the backend holds; written under the
	// producer's pairing, the backend decides it as Kafka would. Without a
	// pairing the batch must be answered Err instead (Table.Begin).
	Deferred bool
}

// Decide applies Kafka's producer-state checks to batch b given the state st
// eosproxy holds for its producer and partition (nil if none).
func Decide(st *State, b BatchInfo) Decision {
	if st == nil {
		// Kafka accepts a producer it has no state for at any sequence: its
		// state may have expired or been cleaned with the log.
		return Decision{Verdict: Write}
	}
	switch {
	case b.Epoch < st.Epoch:
		return Decision{Verdict: Reject, Err: kerr.InvalidProducerEpoch.Code}
	case b.Epoch > st.Epoch:
		// A bumped epoch (KIP-360: clients bump it themselves) restarts the
		// sequence at 0.
		if b.FirstSeq != 0 {
			return Decision{Verdict: Reject, Err: kerr.OutOfOrderSequenceNumber.Code}
		}
		return Decision{Verdict: Write}
	}
	last := b.LastSeq()
	for _, w := range st.Batches {
		if w.Epoch == b.Epoch && w.FirstSeq == b.FirstSeq && w.LastSeq == last {
			if w.BaseOffset == unknownOffset {
				return Decision{Verdict: Reject, Err: kerr.DuplicateSequenceNumber.Code}
			}
			return Decision{Verdict: Duplicate, BaseOffset: w.BaseOffset}
		}
	}
	if len(st.Batches) == 0 {
		return Decision{Verdict: Write}
	}
	if want := addSeq(st.Batches[len(st.Batches)-1].LastSeq, 1); b.FirstSeq != want {
		return Decision{Verdict: Reject, Err: kerr.OutOfOrderSequenceNumber.Code}
	}
	return Decision{Verdict: Write}
}

// Apply returns st updated with batch b written at baseOffset.
func Apply(st State, b BatchInfo, baseOffset int64, nowMs int64) State {
	if b.Epoch != st.Epoch {
		st.Batches = nil
		st.Epoch = b.Epoch
	}
	batches := make([]Written, 0, maxRememberedBatches)
	if n := len(st.Batches); n >= maxRememberedBatches {
		batches = append(batches, st.Batches[n-maxRememberedBatches+1:]...)
	} else {
		batches = append(batches, st.Batches...)
	}
	st.Batches = append(batches, Written{Epoch: b.Epoch, FirstSeq: b.FirstSeq, LastSeq: b.LastSeq(), BaseOffset: baseOffset})
	if baseOffset >= 0 {
		st.LowWater = baseOffset + int64(b.Count)
	}
	st.LastUpdateMs = nowMs
	st.Unverified = false
	return st
}

package txnstate

import (
	"maps"
	"math"

	"github.com/twmb/franz-go/pkg/kerr"
)

// NoProducerID and NoEpoch are Kafka's "none" values (RecordBatch).
const (
	NoProducerID int64 = -1
	NoEpoch      int16 = -1
)

// TopicPartition names one partition.
type TopicPartition struct {
	Topic     string
	Partition int32
}

// Offset is one consumer offset held in a transaction until commit.
type Offset struct {
	Offset      int64
	LeaderEpoch int32
	Metadata    string
}

// GroupOffsets is what a transaction holds for one consumer group: the
// member that sent TxnOffsetCommit (v3+ fields, needed for the OffsetCommit
// sent to the backend on commit) and the offsets it committed.
type GroupOffsets struct {
	MemberID        string
	GenerationID    int32
	GroupInstanceID string // "" when the member is not static
	Offsets         map[TopicPartition]Offset
}

// Txn is everything the coordinator keeps per transactional id, the
// counterpart of Kafka's TransactionMetadata. Values are treated as
// immutable: decision functions return a fresh Txn and never modify their
// argument, so a caller can persist the result and only then swap it in.
type Txn struct {
	TransactionalID string
	ProducerID      int64
	// LastProducerID is the producer id before the latest transition (Kafka's
	// prevProducerId); it differs from ProducerID only right after a
	// producer id rotation, which is what lets a retry from the old id be
	// recognised.
	LastProducerID int64
	// NextProducerID is the id allocated, under TV2, when an EndTxn exhausts
	// the epoch; Complete switches to it.
	NextProducerID int64
	Epoch          int16
	// LastEpoch is the epoch before the latest bump, NoEpoch when a new
	// producer instance took over; it lets a retried request be answered
	// instead of fenced.
	LastEpoch      int16
	TimeoutMs      int32
	State          State
	Partitions     map[TopicPartition]struct{}
	PendingOffsets map[string]GroupOffsets // by group id; present once AddOffsetsToTxn succeeded
	StartTimeMs    int64                   // when the transaction began; -1 when none is open
	LastUpdateMs   int64
	// TxnVersion is the transaction protocol the client used for the
	// latest transition: 1 (classic, KIP-98) or 2 (KIP-890: implicit partition
	// adds, epoch bump on every EndTxn).
	TxnVersion int8
}

// Clone returns a deep copy.
func (t *Txn) Clone() *Txn {
	if t == nil {
		return nil
	}
	c := *t
	c.Partitions = maps.Clone(t.Partitions)
	if t.PendingOffsets != nil {
		c.PendingOffsets = make(map[string]GroupOffsets, len(t.PendingOffsets))
		for g, o := range t.PendingOffsets {
			o.Offsets = maps.Clone(o.Offsets)
			c.PendingOffsets[g] = o
		}
	}
	return &c
}

// HasPartition reports whether tp was added to the transaction.
func (t *Txn) HasPartition(tp TopicPartition) bool {
	_, ok := t.Partitions[tp]
	return ok
}

// HasGroup reports whether group was added to the transaction.
func (t *Txn) HasGroup(group string) bool {
	_, ok := t.PendingOffsets[group]
	return ok
}

// EpochExhausted reports whether epoch leaves no room for another bump.
// Kafka stops one short of MaxInt16 so that the coordinator can always fence
// (TransactionMetadata.isEpochExhausted).
func EpochExhausted(epoch int16) bool { return epoch >= math.MaxInt16-1 }

// Action is what the caller must do after persisting a Result's Txn.
type Action uint8

const (
	// NoAction: nothing beyond persisting the new state (if any).
	NoAction Action = iota
	// Forward: the commit is decided. Forward the transaction's buffered
	// batches (per partition, in order) and then its PendingOffsets to the
	// backend, then call Complete. Read them from the Result's Txn: Complete
	// clears them.
	Forward
	// Discard: the abort is decided. Drop the buffered batches and offsets,
	// then call Complete.
	Discard
)

func (a Action) String() string {
	switch a {
	case NoAction:
		return "none"
	case Forward:
		return "forward"
	case Discard:
		return "discard"
	}
	return "Action(?)"
}

// Result is the outcome of one decision.
type Result struct {
	// Txn is the new state, to be made durable before the client is
	// answered; nil when the state does not change.
	Txn *Txn
	// Err is the Kafka error code to answer with, already adjusted to the
	// request's version.
	Err int16
	// ProducerID and Epoch are what the response carries (InitProducerId;
	// EndTxn v5+); NoProducerID/NoEpoch when nothing.
	ProducerID int64
	Epoch      int16
	Action     Action
}

func fail(code int16) Result {
	return Result{Err: code, ProducerID: NoProducerID, Epoch: NoEpoch}
}

func ok() Result { return fail(ErrNone) }

// Config holds the coordinator settings the decisions depend on.
type Config struct {
	// MaxTimeoutMs is transaction.max.timeout.ms (Kafka's default: 15 minutes).
	MaxTimeoutMs int32
	// TxnVersion is the transaction.version the proxy finalizes (1 or 2). It
	// decides how aborts started by the coordinator itself (fencing in
	// InitProducerId, timeouts) bump the epoch, as Kafka uses the server's
	// level for those (TransactionStateManager.transactionVersionLevel).
	TxnVersion int8
}

// transition starts cur's transition to state to: a deep copy with the
// fields every transition sets. LastProducerID becomes cur's producer id, as
// Kafka records this.producerId as prevProducerId on every transition.
func transition(cur *Txn, to State, nowMs int64) *Txn {
	n := cur.Clone()
	n.State = to
	n.LastProducerID = cur.ProducerID
	n.LastUpdateMs = nowMs
	return n
}

// checked is the single gate every decision passes through: a Result whose
// Txn is not a legal transition from `from` is turned into
// UNKNOWN_SERVER_ERROR (Kafka throws IllegalStateException there) rather than
// persisted. Tests assert it never triggers.
func checked(from State, r Result) Result {
	if r.Txn != nil && !CanTransition(from, r.Txn.State) {
		return fail(kerr.UnknownServerError.Code)
	}
	return r
}

// known reports whether cur is a live transactional id. A Dead one is being
// removed; Kafka answers as if it were already gone once the removal is
// written (and CONCURRENT_TRANSACTIONS while it is in flight, which a pure
// decision cannot observe).
func known(cur *Txn) bool { return cur != nil && cur.State != Dead }

// checkProducer is the check every client request after InitProducerId
// starts with (AddPartitionsToTxn, AddOffsetsToTxn, verification): the
// producer must be the current one, and no commit or abort may be under way.
func checkProducer(cur *Txn, producerID int64, epoch int16) int16 {
	switch {
	case !known(cur), cur.ProducerID != producerID:
		return kerr.InvalidProducerIDMapping.Code
	case cur.Epoch != epoch:
		return kerr.ProducerFenced.Code
	case cur.State == PrepareCommit, cur.State == PrepareAbort, cur.State == PrepareEpochFence:
		return kerr.ConcurrentTransactions.Code
	}
	return ErrNone
}

// fenceAndAbort is the coordinator's own abort of an open transaction: when
// a new producer instance calls InitProducerId, or the transaction timed out.
// Kafka bumps the epoch to fence the current producer
// (prepareFenceProducerEpoch), then runs EndTxn(abort) at the server's
// transaction version, which under TV2 bumps once more. No new producer id is
// allocated on this path even if the epoch is exhausted; the next
// InitProducerId rotates it.
func fenceAndAbort(cfg Config, cur *Txn, nowMs int64) *Txn {
	fenced := cur.Epoch
	if fenced < math.MaxInt16 {
		fenced++
	}
	n := transition(cur, PrepareAbort, nowMs)
	n.NextProducerID = NoProducerID
	n.TxnVersion = serverVersion(cfg)
	if n.TxnVersion >= 2 {
		n.LastEpoch = fenced
		n.Epoch = fenced
		if fenced < math.MaxInt16 {
			n.Epoch = fenced + 1
		}
	} else {
		n.Epoch = fenced
		n.LastEpoch = NoEpoch
	}
	return n
}

func serverVersion(cfg Config) int8 {
	if cfg.TxnVersion >= 2 {
		return 2
	}
	return 1
}

// Complete records that a prepared commit or abort has been carried out
// (Kafka: the markers are written, prepareComplete). Under TV2 a producer id
// allocated because the epoch ran out takes over now, at epoch 0. The
// partitions and offsets are cleared.
func Complete(cur *Txn, nowMs int64) Result {
	if !known(cur) {
		return fail(kerr.InvalidProducerIDMapping.Code)
	}
	var to State
	switch cur.State {
	case PrepareCommit:
		to = CompleteCommit
	case PrepareAbort:
		to = CompleteAbort
	default:
		return fail(kerr.InvalidTxnState.Code)
	}
	n := transition(cur, to, nowMs)
	if n.TxnVersion >= 2 && cur.NextProducerID != NoProducerID {
		n.ProducerID = cur.NextProducerID
		n.Epoch = 0
	}
	n.NextProducerID = NoProducerID
	n.Partitions = nil
	n.PendingOffsets = nil
	r := ok()
	r.Txn = n
	r.ProducerID, r.Epoch = n.ProducerID, n.Epoch
	return checked(cur.State, r)
}

// Timeout aborts a transaction open longer than its timeout, fencing its
// producer (TransactionStateManager.timedOutTransactions, then
// TransactionCoordinator.abortTimedOutTransactions). The Result's Txn is nil
// when there is nothing to abort.
func Timeout(cfg Config, cur *Txn, nowMs int64) Result {
	if !known(cur) || cur.State != Ongoing || cur.StartTimeMs+int64(cur.TimeoutMs) >= nowMs {
		return ok()
	}
	r := ok()
	r.Txn = fenceAndAbort(cfg, cur, nowMs)
	r.Action = Discard
	return checked(cur.State, r)
}

// Expire removes a transactional id unused for expirationMs
// (transactional.id.expiration.ms): only when no transaction is open. The
// Result's Txn, in state Dead, tells the caller to delete the id; nil when
// it stays.
func Expire(cur *Txn, nowMs, expirationMs int64) Result {
	if !known(cur) || !cur.State.ExpirationAllowed() || cur.LastUpdateMs > nowMs-expirationMs {
		return ok()
	}
	n := transition(cur, Dead, nowMs)
	n.Partitions = nil
	n.PendingOffsets = nil
	r := ok()
	r.Txn = n
	return checked(cur.State, r)
}

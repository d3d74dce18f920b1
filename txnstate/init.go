package txnstate

import "github.com/twmb/franz-go/pkg/kerr"

// InitProducerIDRequest is the part of an InitProducerId request (with a
// transactional id) the decision needs.
type InitProducerIDRequest struct {
	TransactionalID string
	TimeoutMs       int32
	// ProducerID and Epoch are KIP-360's "I am resuming as this producer";
	// both NoProducerID/NoEpoch when the client is not resuming.
	ProducerID int64
	Epoch      int16
	Version    int16
}

func (r InitProducerIDRequest) resuming() bool { return r.ProducerID != NoProducerID }

// InitProducerID decides an InitProducerId for a transactional id
// (TransactionCoordinator.handleInitProducerId and
// prepareInitProducerIdTransit). cur is the stored state, nil when the id is
// unknown; newPID allocates a producer id and is called only when one is
// needed.
//
//   - a new id gets a new producer id at epoch 0;
//   - Empty/CompleteCommit/CompleteAbort: the epoch is bumped, fencing the
//     previous instance; an exhausted epoch rotates to a new producer id;
//   - Ongoing: the open transaction is aborted with a fenced epoch (Action
//     Discard) and the client told CONCURRENT_TRANSACTIONS, so it retries
//     once the abort completed and gets a second bump;
//   - PrepareCommit/PrepareAbort: CONCURRENT_TRANSACTIONS until Complete.
//
// A KIP-360 resume must name the current producer id (or the previous one
// with an exhausted epoch, a retry across a rotation); a retry of a resume
// that already bumped the epoch returns the same answer again.
func InitProducerID(cfg Config, cur *Txn, req InitProducerIDRequest, nowMs int64, newPID func() int64) Result {
	r := initProducerID(cfg, cur, req, nowMs, newPID)
	r.Err = fencedFor(r.Err, req.Version >= 4)
	if r.Err != ErrNone {
		r.ProducerID, r.Epoch = NoProducerID, NoEpoch
	}
	return r
}

func initProducerID(cfg Config, cur *Txn, req InitProducerIDRequest, nowMs int64, newPID func() int64) Result {
	switch {
	case req.TransactionalID == "":
		return fail(kerr.InvalidRequest.Code)
	case req.TimeoutMs <= 0 || req.TimeoutMs > cfg.MaxTimeoutMs:
		return fail(kerr.InvalidTransactionTimeout.Code)
	case (req.ProducerID == NoProducerID) != (req.Epoch == NoEpoch):
		// KafkaApis rejects a half-given producer id/epoch pair.
		return fail(kerr.InvalidRequest.Code)
	}

	t := cur
	if !known(t) {
		// Kafka creates the metadata first (epoch -1, so any resume is
		// accepted and the client simply gets the new id); it is persisted
		// only through the transition below.
		pid := newPID()
		t = &Txn{
			TransactionalID: req.TransactionalID,
			ProducerID:      pid,
			LastProducerID:  NoProducerID,
			NextProducerID:  NoProducerID,
			Epoch:           NoEpoch,
			LastEpoch:       NoEpoch,
			TimeoutMs:       req.TimeoutMs,
			State:           Empty,
			StartTimeMs:     -1,
			LastUpdateMs:    nowMs,
			TxnVersion:      1,
		}
	}

	if req.resuming() && !(t.Epoch == NoEpoch ||
		req.ProducerID == t.ProducerID ||
		(req.ProducerID == t.LastProducerID && EpochExhausted(req.Epoch))) {
		return fail(kerr.ProducerFenced.Code)
	}

	switch t.State {
	case PrepareCommit, PrepareAbort, PrepareEpochFence:
		return fail(kerr.ConcurrentTransactions.Code)
	case Ongoing:
		r := fail(kerr.ConcurrentTransactions.Code)
		r.Txn = fenceAndAbort(cfg, t, nowMs)
		r.Action = Discard
		return checked(t.State, r)
	case Empty, CompleteCommit, CompleteAbort:
	default:
		return fail(kerr.UnknownServerError.Code)
	}

	n := transition(t, Empty, nowMs)
	n.TimeoutMs = req.TimeoutMs
	n.Partitions = nil
	n.PendingOffsets = nil
	n.StartTimeMs = -1
	n.NextProducerID = NoProducerID

	switch {
	case EpochExhausted(t.Epoch) && (!req.resuming() || req.Epoch == t.Epoch):
		// prepareProducerIdRotation: no epoch left, start over with a new id.
		// The old epoch is remembered only for a resume, so that its retry
		// (old id, exhausted epoch) is recognised.
		n.ProducerID = newPID()
		n.Epoch = 0
		n.LastEpoch = NoEpoch
		if req.resuming() {
			n.LastEpoch = t.Epoch
		}
	case !req.resuming():
		n.Epoch = t.Epoch + 1
		n.LastEpoch = NoEpoch
	case EpochExhausted(t.Epoch):
		// Only reachable for a resume naming another epoch. Kafka throws an
		// IllegalStateException here (UNKNOWN_SERVER_ERROR to the client);
		// answering as for any other epoch is the evident intent.
		if req.Epoch != t.LastEpoch {
			return fail(kerr.ProducerFenced.Code)
		}
		n.Epoch, n.LastEpoch = t.Epoch, t.LastEpoch
	case t.Epoch == NoEpoch || req.Epoch == t.Epoch:
		// The producer resumes after an error and nobody else took over.
		n.Epoch = t.Epoch + 1
		n.LastEpoch = t.Epoch
	case req.Epoch == t.LastEpoch:
		// A retry of a resume that succeeded: same answer, no second bump.
		// Safe, since a new instance would have set LastEpoch to NoEpoch.
		n.Epoch, n.LastEpoch = t.Epoch, t.LastEpoch
	default:
		return fail(kerr.ProducerFenced.Code)
	}

	r := ok()
	r.Txn = n
	r.ProducerID, r.Epoch = n.ProducerID, n.Epoch
	return checked(t.State, r)
}

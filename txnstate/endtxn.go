package txnstate

import (
	"math"

	"github.com/twmb/franz-go/pkg/kerr"
)

// EndTxnRequest is an EndTxn request.
type EndTxnRequest struct {
	ProducerID int64
	Epoch      int16
	Commit     bool
	// Version is the request version; v5+ means the client runs TV2
	// (KIP-890), as KafkaApis decides.
	Version int16
}

// EndTxn decides an EndTxn (TransactionCoordinator.endTransaction and
// endTransactionWithTV1). From Ongoing it prepares the commit (Action
// Forward) or abort (Action Discard); Complete must follow once that is done.
// Retries are answered as Kafka does:
//
//	TV1: CompleteCommit+commit or CompleteAbort+abort → NONE;
//	     PrepareCommit+commit or PrepareAbort+abort → CONCURRENT_TRANSACTIONS;
//	     any other combination, and Empty → INVALID_TXN_STATE.
//
// TV2 bumps the epoch on every EndTxn and returns the producer id and epoch
// the client is to use next; a retry carries the previous epoch. From the
// table in TransactionCoordinator.scala (Retry = epoch one below the stored
// one, Current = the stored one; EB = epoch bump, PF = PRODUCER_FENCED,
// ITS = INVALID_TXN_STATE):
//
//	                 Abort          Commit
//	                 Retry Current  Retry Current
//	Empty            PF    EB       PF    ITS
//	CompleteAbort    NONE  EB       ITS   ITS
//	CompleteCommit   ITS   EB       NONE  ITS
//
// newPID is called only when a TV2 EndTxn exhausts the epoch.
func EndTxn(cur *Txn, req EndTxnRequest, nowMs int64, newPID func() int64) Result {
	if req.Version >= 5 {
		return endTxnV2(cur, req, nowMs, newPID)
	}
	r := endTxnV1(cur, req, nowMs)
	r.Err = fencedFor(r.Err, req.Version >= 2)
	return r
}

// retryAnswer is EndTxn's answer for a state already past the request:
// NONE when the retry asks for what happened, CONCURRENT_TRANSACTIONS when
// it is still happening, INVALID_TXN_STATE when it asks for the opposite.
func retryAnswer(state State, commit bool) int16 {
	switch {
	case state == CompleteCommit && commit, state == CompleteAbort && !commit:
		return ErrNone
	case state == PrepareCommit && commit, state == PrepareAbort && !commit:
		return kerr.ConcurrentTransactions.Code
	}
	return kerr.InvalidTxnState.Code
}

func prepareState(commit bool) (State, Action) {
	if commit {
		return PrepareCommit, Forward
	}
	return PrepareAbort, Discard
}

func endTxnV1(cur *Txn, req EndTxnRequest, nowMs int64) Result {
	switch {
	case !known(cur), cur.ProducerID != req.ProducerID:
		return fail(kerr.InvalidProducerIDMapping.Code)
	case cur.Epoch != req.Epoch:
		// TV1 has no retry with an older epoch: strict equality.
		return fail(kerr.ProducerFenced.Code)
	case cur.State == PrepareEpochFence:
		return fail(kerr.ConcurrentTransactions.Code)
	case cur.State != Ongoing:
		return fail(retryAnswer(cur.State, req.Commit))
	}
	to, action := prepareState(req.Commit)
	n := transition(cur, to, nowMs)
	n.NextProducerID = NoProducerID
	n.TxnVersion = 1
	r := ok()
	r.Txn = n
	r.Action = action
	return checked(cur.State, r)
}

func endTxnV2(cur *Txn, req EndTxnRequest, nowMs int64, newPID func() int64) Result {
	if !known(cur) {
		return fail(kerr.InvalidProducerIDMapping.Code)
	}
	// A retry of an EndTxn that rotated the producer id: the client still
	// has the old id and the last epoch it was given.
	retryOnOverflow := cur.LastProducerID == req.ProducerID &&
		req.Epoch == math.MaxInt16-1 && cur.Epoch == 0
	// A retry of an EndTxn that bumped the epoch.
	retryOnBump := int32(cur.Epoch) == int32(req.Epoch)+1

	var validEpoch bool
	switch cur.State {
	case PrepareCommit, PrepareAbort:
		validEpoch = retryOnBump
	case CompleteCommit, CompleteAbort:
		validEpoch = retryOnBump || retryOnOverflow || req.Epoch == cur.Epoch
	default: // Ongoing, Empty, PrepareEpochFence
		validEpoch = req.Epoch == cur.Epoch
	}
	retry := retryOnBump || retryOnOverflow

	switch {
	case cur.ProducerID != req.ProducerID && !retryOnOverflow:
		return fail(kerr.InvalidProducerIDMapping.Code)
	case !validEpoch:
		return fail(kerr.ProducerFenced.Code)
	}

	var abortWithoutData bool
	switch cur.State {
	case Ongoing:
	case Empty:
		if req.Commit {
			return fail(kerr.InvalidTxnState.Code)
		}
		abortWithoutData = true
	case CompleteCommit, CompleteAbort:
		code := retryAnswer(cur.State, req.Commit)
		if retry && code == ErrNone {
			r := ok()
			r.ProducerID, r.Epoch = cur.ProducerID, cur.Epoch
			return r
		}
		if retry || req.Commit {
			return fail(kerr.InvalidTxnState.Code)
		}
		// A TV2 client unsure of the outcome may always abort.
		abortWithoutData = true
	case PrepareCommit, PrepareAbort:
		return fail(retryAnswer(cur.State, req.Commit))
	default: // PrepareEpochFence: a fence is being written
		return fail(kerr.ConcurrentTransactions.Code)
	}

	to, action := prepareState(req.Commit)
	n := transition(cur, to, nowMs)
	n.TxnVersion = 2
	n.NextProducerID = NoProducerID
	if EpochExhausted(cur.Epoch) {
		n.NextProducerID = newPID()
	}
	n.LastEpoch = cur.Epoch
	if cur.Epoch < math.MaxInt16 {
		n.Epoch = cur.Epoch + 1
	}
	if abortWithoutData {
		// Nothing was added, so no start time is known; Kafka uses now.
		n.StartTimeMs = nowMs
	}
	r := ok()
	r.Txn = n
	r.Action = action
	// Kafka answers once the prepare is durable; the client must continue
	// with the id and epoch it will have after Complete. (Kafka 4.0 returned
	// the pre-rotation id with epoch MaxInt16 on overflow; later versions
	// return the rotated id at epoch 0, as here.)
	r.ProducerID, r.Epoch = n.ProducerID, n.Epoch
	if n.NextProducerID != NoProducerID {
		r.ProducerID, r.Epoch = n.NextProducerID, 0
	}
	return checked(cur.State, r)
}

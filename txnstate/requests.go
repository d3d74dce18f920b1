// The client's transaction requests (Kafka's TransactionCoordinator): each
// locks its id, takes this package's pure decision (init.go, add.go,
// endtxn.go) and has save.go make it durable. Apart from the decisions
// because locking, waiting and answering happen here.

package txnstate

import (
	"context"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
)

// newPID adapts the allocator to the decisions' signature, remembering a
// failure so the caller can answer COORDINATOR_NOT_AVAILABLE.
func (c *Coordinator) newPID(errp *error) func() int64 {
	return func() int64 {
		id, err := c.opt.NewProducerID()
		if err != nil {
			*errp = err
			return NoProducerID
		}
		return id
	}
}

// InitProducerID answers InitProducerId with a transactional id.
func (c *Coordinator) InitProducerID(ctx context.Context, req InitProducerIDRequest) Result {
	e := c.lock(req.TransactionalID, true)
	defer e.mu.Unlock()
	e.writes.Wait()
	var allocErr error
	r := InitProducerID(c.opt.Config, e.preparing(), req, c.nowMs(), c.newPID(&allocErr))
	if allocErr != nil {
		c.log.Error().Err(allocErr).Msg("cannot allocate a producer id")
		return fail(kerr.CoordinatorNotAvailable.Code)
	}
	if r.Action == Discard {
		c.log.Info().Str("txn", req.TransactionalID).Msg("new producer instance: aborting the previous one's open transaction")
	}
	r, _ = c.apply(e, r)
	return r
}

// AddPartitions answers AddPartitionsToTxn.
func (c *Coordinator) AddPartitions(id string, req AddPartitionsRequest) Result {
	return c.decide(id, func(t *Txn, now int64) Result { return AddPartitions(t, req, now) })
}

// AddOffsets answers AddOffsetsToTxn.
func (c *Coordinator) AddOffsets(id string, req AddOffsetsRequest) Result {
	return c.decide(id, func(t *Txn, now int64) Result { return AddOffsets(t, req, now) })
}

// TxnOffsetCommit holds a group's offsets in the transaction.
func (c *Coordinator) TxnOffsetCommit(id string, req TxnOffsetCommitRequest) Result {
	return c.decide(id, func(t *Txn, now int64) Result { return TxnOffsetCommit(t, req, now) })
}

func (c *Coordinator) decide(id string, fn func(*Txn, int64) Result) Result {
	e := c.lock(id, false)
	if e == nil {
		return fn(nil, c.nowMs())
	}
	defer e.mu.Unlock()
	// A Produce's state change (a partition added by v12) is written by the
	// flusher: it must land before this one, not overwrite it later.
	e.writes.Wait()
	r, _ := c.apply(e, fn(e.txn.Load(), c.nowMs()))
	return r
}

// EndTxn answers EndTxn once the decision is durable (the id is then in
// CompleteCommit or CompleteAbort), or, with Options.AnswerWithin, once the
// decision has been carried out or that long has passed.
func (c *Coordinator) EndTxn(ctx context.Context, id string, req EndTxnRequest) Result {
	e := c.lock(id, false)
	if e == nil {
		return EndTxn(nil, req, c.nowMs(), nil)
	}
	e.writes.Wait()
	var allocErr error
	r := EndTxn(e.txn.Load(), req, c.nowMs(), c.newPID(&allocErr))
	if allocErr != nil {
		e.mu.Unlock()
		c.log.Error().Err(allocErr).Msg("cannot allocate a producer id")
		return fail(kerr.CoordinatorNotAvailable.Code)
	}
	if r.Action == Forward && e.broken.Load() {
		// A batch of the transaction was refused (a limit) or is not
		// durable: it cannot commit. Older clients get INVALID_TXN_STATE,
		// as Kafka answers an EndTxn it cannot carry out, and abort. For a
		// KIP-890 client (EndTxn v5+) the abort, the only outcome left, is
		// carried out now (bumping the epoch, as its own abort would) and
		// the answer is TRANSACTION_ABORTABLE: franz-go, which commits
		// whatever succeeded, then resumes with its producer id (KIP-360),
		// which a completed abort answers with the bumped epoch.
		defer e.mu.Unlock()
		if req.Version < 5 {
			return fail(kerr.InvalidTxnState.Code)
		}
		abort := req
		abort.Commit = false
		if ar, _ := c.apply(e, EndTxn(e.txn.Load(), abort, c.nowMs(), c.newPID(&allocErr))); ar.Err == ErrNone {
			c.log.Info().Str("txn", id).Msg("commit of a transaction missing a refused batch: aborted it instead")
		}
		return fail(kerr.TransactionAbortable.Code)
	}
	r, j := c.apply(e, r)
	e.mu.Unlock()
	if j != nil {
		// Flow control: the client goes on with its next transaction
		// while decided ones are carried out, but while more than
		// maxBacklogBytes of them wait ahead of this one, the answer waits:
		// undelivered data never piles up.
		for prev := e.backlog(j); prev != nil; prev = e.backlog(j) {
			select {
			case <-prev.done:
			case <-ctx.Done():
				return r
			}
		}
	}
	if j != nil && c.opt.AnswerWithin > 0 {
		t := time.NewTimer(c.opt.AnswerWithin)
		defer t.Stop()
		select {
		case <-j.done:
		case <-t.C:
		case <-ctx.Done():
		}
	}
	return r
}

// Wait blocks until every decided commit and abort of id has been carried
// out (committed data in the backend), or ctx ends.
func (c *Coordinator) Wait(ctx context.Context, id string) error {
	e := c.entry(id, false)
	if e == nil {
		return nil
	}
	last := e.lastJob()
	if last == nil {
		return nil
	}
	select {
	case <-last.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

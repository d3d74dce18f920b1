// Saving decisions (the writing side of Kafka's TransactionStateManager): a
// decision's new state goes to badger in one write with the job it decides,
// before the client is answered. Apart from requests.go because buffering
// and expiry save decisions too.

package txnstate

import (
	"encoding/binary"
	"fmt"

	"github.com/eosproxy/eosproxy/dedup"
	"github.com/eosproxy/eosproxy/store"

	"github.com/twmb/franz-go/pkg/kerr"
)

// commit makes n the durable state of e (together with extra writes) and
// swaps it in. Called with e.mu held.
func (c *Coordinator) commit(e *entry, n *Txn, extra func(*store.Txn) error) error {
	old := e.txn.Load()
	err := c.db.Update(func(txn *store.Txn) error {
		if n.ProducerID != e.seqPID {
			// A new producer id starts with no sequence state.
			for tp := range e.seqs {
				if err := txn.Delete(tpKey(prefixSeq, e.id, tp)); err != nil {
					return err
				}
			}
		}
		if extra != nil {
			if err := extra(txn); err != nil {
				return err
			}
		}
		return txn.Set(idKey(prefixMeta, e.id), encodeTxn(n))
	})
	if err != nil {
		return fmt.Errorf("persist transaction %q: %w", e.id, err)
	}
	c.swap(e, old, n)
	return nil
}

func (c *Coordinator) swap(e *entry, old, n *Txn) {
	if n.ProducerID != e.seqPID {
		e.seqs = map[TopicPartition]dedup.State{}
		e.seqPID = n.ProducerID
	}
	had := old != nil && len(old.PendingOffsets) > 0
	if has := len(n.PendingOffsets) > 0; has != had {
		if has {
			c.pending.Add(1)
		} else {
			c.pending.Add(-1)
		}
	}
	e.txn.Store(n)
}

// apply persists a decision's new state and queues what its Action asks.
// A decided commit or abort is completed in the same write: from then on the
// id answers from the Complete state, and the next transaction can start
// while a job carries the decision out (forwarding or dropping the
// generation's batches), as Kafka answers EndTxn before its markers are
// written. Called with e.mu held.
func (c *Coordinator) apply(e *entry, r Result) (Result, *job) {
	if r.Txn == nil {
		return r, nil
	}
	cur := e.txn.Load()
	n := r.Txn
	gen := e.gen
	var kvs []kv
	if (cur == nil || cur.State != Ongoing) && (n.State == Ongoing || r.Action != NoAction) {
		// A new transaction (or an abort with none open) is a new generation.
		gen = c.counter.Add(1)
		kvs = append(kvs, kv{idKey(prefixGen, e.id), binary.BigEndian.AppendUint64(nil, gen)})
	}
	var j *job
	if r.Action != NoAction {
		comp := Complete(n, c.nowMs())
		if comp.Err != ErrNone {
			return fail(kerr.UnknownServerError.Code), nil
		}
		j = &job{gen: gen, seq: c.counter.Add(1), txn: n, commit: r.Action == Forward, bytes: e.bytes, fresh: true, done: make(chan struct{})}
		kvs = append(kvs, kv{genKey(prefixJob, e.id, gen), encodeTxn(n)},
			kv{genKey(prefixDecided, e.id, gen), binary.BigEndian.AppendUint64(nil, j.seq)})
		if j.commit {
			kvs = append(kvs, c.knownLowWater(e, gen, n)...)
		}
		n = comp.Txn
	}
	err := c.commit(e, n, func(txn *store.Txn) error {
		for _, w := range kvs {
			if err := txn.Set(w.k, w.v); err != nil {
				return err
			}
		}
		if j != nil {
			return txn.Delete(idKey(prefixBroken, e.id))
		}
		return nil
	})
	if err != nil {
		c.log.Error().Err(err).Msg("cannot persist transaction state")
		return fail(kerr.CoordinatorNotAvailable.Code), nil
	}
	e.gen = gen
	if j != nil && j.commit {
		c.crashPoint(CrashDecisionLogged)
	}
	if j != nil {
		e.bytes = 0
		e.broken.Store(false)
		e.last = nil
		if j.commit && len(j.txn.PendingOffsets) > 0 {
			c.pending.Add(1)
			c.noteDecided(j)
		}
		if j.commit {
			c.backlog.Add(j.bytes)
		}
		e.jmu.Lock()
		e.jobs = append(e.jobs, j)
		e.jmu.Unlock()
		c.startJobs(e)
	}
	return r, j
}

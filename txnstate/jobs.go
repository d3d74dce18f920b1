// Carrying out decisions (Kafka's TransactionMarkerChannelManager): per id one
// runner takes the decided commits and aborts in order, forwards or drops
// their batches, and retires them. Apart from deciding because the client
// goes on with its next transaction while this runs.

package txnstate

import (
	"fmt"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/eosproxy/eosproxy/store"
	"github.com/eosproxy/eosproxy/txnstate/spool"
)

// jobQueue is an entry's decided commits and aborts not yet carried out,
// oldest first; one runner (running) carries them out in order. jmu guards it.
type jobQueue struct {
	jmu     sync.Mutex
	jobs    []*job
	running bool
}

// job is a decided commit or abort of one generation: its batches are to be
// forwarded (then its offsets committed) or dropped.
type job struct {
	gen    uint64
	seq    uint64 // decision order, across transactional ids
	txn    *Txn   // the prepared state: partitions and offsets
	commit bool
	bytes  int64
	fresh  bool // nothing was sent yet: decided in this process, or stopped cleanly before it started
	// started: carryOut began (something may have been sent); read by
	// Close once the jobs have stopped.
	started bool
	done    chan struct{}
}

// maxBacklogBytes is how much decided, not yet carried out, data of one
// transactional id may be ahead of a new decision before EndTxn waits.
const maxBacklogBytes = 64 << 20

// backlog returns the oldest job ahead of j when the jobs ahead of it hold
// more than maxBacklogBytes, else nil.
func (e *entry) backlog(j *job) *job {
	e.jmu.Lock()
	defer e.jmu.Unlock()
	var ahead int64
	for _, q := range e.jobs {
		if q == j {
			break
		}
		ahead += q.bytes
	}
	if ahead > maxBacklogBytes && len(e.jobs) > 0 && e.jobs[0] != j {
		return e.jobs[0]
	}
	return nil
}

// preparing is e's state as InitProducerId sees it: while a decided commit
// or abort is not yet carried out (its batches and offsets not all in the
// backend), the id is in PrepareCommit or PrepareAbort, as in Kafka until
// the transaction's markers are written, although e is already Complete
// (so that its producer can go on with its next transaction meanwhile). A
// new instance is then answered CONCURRENT_TRANSACTIONS and retries: once
// it gets its producer id, everything the previous instance committed is
// readable read_committed, and the group offsets it committed are in the
// backend, as Kafka's marker makes them visible at the same moment. An open
// transaction (Ongoing) is shown as it is: InitProducerId fences and aborts
// it at once.
func (e *entry) preparing() *Txn {
	t := e.txn.Load()
	if t == nil || t.State == Ongoing {
		return t
	}
	last := e.lastJob()
	if last == nil {
		return t
	}
	p := *t
	p.State = PrepareAbort
	if last.commit {
		p.State = PrepareCommit
	}
	return &p
}

// busy reports whether e has decided commits or aborts not carried out.
func (e *entry) busy() bool {
	e.jmu.Lock()
	defer e.jmu.Unlock()
	return len(e.jobs) > 0
}

// startJobs makes sure a runner carries out e's queued jobs.
func (c *Coordinator) startJobs(e *entry) {
	e.jmu.Lock()
	if e.running || len(e.jobs) == 0 {
		e.jmu.Unlock()
		return
	}
	e.running = true
	e.jmu.Unlock()
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.runJobs(e)
	}()
}

// runJobs carries out e's decided commits and aborts, oldest first, so a
// transactional id's committed data reaches the backend in commit order.
func (c *Coordinator) runJobs(e *entry) {
	for {
		e.jmu.Lock()
		if len(e.jobs) == 0 || c.ctx.Err() != nil {
			e.running = false
			e.jmu.Unlock()
			return
		}
		j := e.jobs[0]
		e.jmu.Unlock()
		if !c.carryOut(e, j) {
			e.jmu.Lock()
			e.running = false
			e.jmu.Unlock()
			return // closing: the next Open resumes it
		}
		e.jmu.Lock()
		e.jobs = e.jobs[1:]
		e.jmu.Unlock()
		if j.commit && len(j.txn.PendingOffsets) > 0 {
			c.pending.Add(-1)
		}
		c.buffered.Add(-j.bytes)
		if j.commit {
			c.backlog.Add(-j.bytes)
		}
		close(j.done)
	}
}

// carryOut forwards (commit) or drops (abort) one generation's batches,
// retrying until it succeeds; false when the coordinator closes first.
func (c *Coordinator) carryOut(e *entry, j *job) bool {
	log := c.log.With().Str("txn", e.id).Int64("producer", j.txn.ProducerID).Uint64("gen", j.gen).Logger()
	j.started = true
	for attempt, wait := 0, 50*time.Millisecond; ; attempt, wait = attempt+1, min(2*wait, 5*time.Second) {
		var err error
		if j.commit {
			err = c.forward(c.ctx, j.txn, j.gen, j.seq, attempt == 0 && j.fresh, log)
		}
		if err == nil {
			err = c.retire(e.id, j)
		}
		if err == nil {
			if j.commit {
				log.Debug().Msg("transaction committed")
			} else {
				log.Debug().Msg("transaction aborted")
			}
			return true
		}
		if c.ctx.Err() != nil {
			return false
		}
		// One failure that the next attempt mends is routine (a group's
		// members changing under a rebalance, a leader moving), as for
		// Kafka's markers; a second one is worth an operator's look.
		ev := log.Warn()
		if attempt == 0 {
			ev = log.Info()
		}
		ev.Err(err).Bool("commit", j.commit).Dur("retry_in", wait).Msg("carrying out a transaction's end failed; retrying")
		select {
		case <-c.ctx.Done():
			return false
		case <-time.After(wait):
		}
	}
}

// retire deletes a carried-out generation: its batches (index, then spool
// data), its forwarding low-water offsets and its job. The low-water offsets
// go last, with the job: were a commit's job found again after a crash, its
// remaining batches would be looked for in the backend from them, never
// sent again blindly.
//
// A commit holding group offsets also keeps, for each of its group
// partitions, the decision order of the latest commit holding it: after a
// restart that order is what an earlier commit still unfinished is checked
// against (commitOffsets), its own job being gone.
func (c *Coordinator) retire(id string, j *job) error {
	gen := j.gen
	keys, refs, err := c.batchKeys(id, gen)
	if err != nil {
		return err
	}
	if len(keys) > maxKeysWithComplete {
		if err := c.deleteKeys(keys); err != nil {
			return err
		}
		keys = nil
	}
	keepOrder, unlock := c.keepOffsetOrder(j)
	err = c.db.Update(func(txn *store.Txn) error {
		for _, k := range keys {
			if err := txn.Delete(k); err != nil {
				return err
			}
		}
		if err := keepOrder(txn); err != nil {
			return err
		}
		if err := c.deleteLowWater(id, gen)(txn); err != nil {
			return err
		}
		if err := txn.Delete(genKey(prefixGenProducer, id, gen)); err != nil {
			return err
		}
		if err := txn.Delete(genKey(prefixDecided, id, gen)); err != nil {
			return err
		}
		return txn.Delete(genKey(prefixJob, id, gen))
	})
	unlock()
	if err != nil {
		return fmt.Errorf("retire transaction %q generation %d: %w", id, gen, err)
	}
	for _, r := range refs {
		c.opt.Spool.Release(r)
	}
	return nil
}

// deleteLowWater deletes a generation's forwarding low-water offsets within
// a write.
func (c *Coordinator) deleteLowWater(id string, gen uint64) func(*store.Txn) error {
	return func(txn *store.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: genKey(prefixLow, id, gen)})
		var keys [][]byte
		for it.Rewind(); it.Valid(); it.Next() {
			keys = append(keys, it.Item().KeyCopy(nil))
		}
		it.Close()
		for _, k := range keys {
			if err := txn.Delete(k); err != nil {
				return err
			}
		}
		return nil
	}
}

// maxKeysWithComplete is how many buffered batches' index entries are
// deleted in the same badger write that retires their generation.
const maxKeysWithComplete = 1000

// batchKeys lists a generation's buffered batches: index keys and spool
// references.
func (c *Coordinator) batchKeys(id string, gen uint64) (keys [][]byte, refs []spool.Ref, err error) {
	return c.batchKeysUnder(genKey(prefixBatch, id, gen))
}

// batchKeysUnder lists the buffered batches' index keys under prefix, and
// the spool references they hold.
func (c *Coordinator) batchKeysUnder(prefix []byte) (keys [][]byte, refs []spool.Ref, err error) {
	err = c.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			keys = append(keys, it.Item().KeyCopy(nil))
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			if r, err := spool.UnmarshalRef(v); err == nil {
				refs = append(refs, r)
			}
		}
		return nil
	})
	return keys, refs, err
}

func (c *Coordinator) deleteKeys(keys [][]byte) error { return c.db.DeleteKeys(keys) }

// lastJob is the id's latest decided commit or abort not yet carried out.
func (e *entry) lastJob() *job {
	e.jmu.Lock()
	defer e.jmu.Unlock()
	if n := len(e.jobs); n > 0 {
		return e.jobs[n-1]
	}
	return nil
}

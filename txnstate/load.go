// Loading at Open (the reading side of Kafka's TransactionStateManager): ids,
// sequences, generations, decided jobs and buffered batches read back from
// badger, so that Open can roll unfinished jobs forward; and the marks a
// clean stop leaves so that loading knows which commits sent nothing.

package txnstate

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/dgraph-io/badger/v4"

	"github.com/eosproxy/eosproxy/dedup"
	"github.com/eosproxy/eosproxy/store"
	"github.com/eosproxy/eosproxy/txnstate/spool"
)

func (c *Coordinator) load() error {
	err := c.db.Scan([]byte(prefixMeta), func(k, v []byte) error {
		t, err := decodeTxn(v)
		if err != nil {
			return err
		}
		e := &entry{id: t.TransactionalID, seqs: map[TopicPartition]dedup.State{}, seqPID: t.ProducerID}
		e.txn.Store(t)
		c.txns[e.id] = e
		if len(t.PendingOffsets) > 0 {
			c.pending.Add(1)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("load transactions: %w", err)
	}
	err = c.db.Scan([]byte(prefixSeq), func(k, v []byte) error {
		id, tp, err := parseTPKey(prefixSeq, k)
		if err != nil || len(v) < 8 {
			return fmt.Errorf("corrupt sequence key %q", k)
		}
		e := c.txns[id]
		if e == nil || int64(binary.BigEndian.Uint64(v)) != e.seqPID {
			return nil // an earlier producer id's: irrelevant
		}
		st, err := dedup.UnmarshalState(v[8:])
		if err != nil {
			return fmt.Errorf("sequence state of %q: %w", id, err)
		}
		e.seqs[tp] = st
		return nil
	})
	if err != nil {
		return fmt.Errorf("load transaction sequences: %w", err)
	}
	err = c.db.Scan([]byte(prefixBroken), func(k, _ []byte) error {
		id, _, err := readStr(k[len(prefixBroken):])
		if err != nil {
			return fmt.Errorf("corrupt key %q", k)
		}
		if e := c.txns[id]; e != nil && e.txn.Load().State == Ongoing {
			e.broken.Store(true)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("load refused transactions: %w", err)
	}
	var top uint64
	err = c.db.Scan([]byte(prefixGen), func(k, v []byte) error {
		id, _, err := readStr(k[len(prefixGen):])
		if err != nil || len(v) != 8 {
			return fmt.Errorf("corrupt generation key %q", k)
		}
		if e := c.txns[id]; e != nil {
			e.gen = binary.BigEndian.Uint64(v)
			top = max(top, e.gen)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("load transaction generations: %w", err)
	}
	err = c.db.Scan([]byte(prefixOffsetOrder), func(k, v []byte) error {
		group, tp, err := parseGroupTPKey(k)
		if err != nil || len(v) != 8 {
			return fmt.Errorf("corrupt offset order key %q", k)
		}
		seq := binary.BigEndian.Uint64(v)
		c.noteOffset(group, tp, seq)
		// New decisions must come after every one whose order is kept.
		top = max(top, seq)
		return nil
	})
	if err != nil {
		return fmt.Errorf("load the decision order of group offsets: %w", err)
	}
	jobs := map[string]map[uint64]*job{}
	var unsent [][]byte
	err = c.db.Scan([]byte(prefixJob), func(k, v []byte) error {
		id, gen, err := parseGenKey(prefixJob, k)
		if err != nil {
			return fmt.Errorf("corrupt job key %q", k)
		}
		t, err := decodeTxn(v)
		if err != nil {
			return err
		}
		e := c.txns[id]
		if e == nil {
			return nil
		}
		j := &job{gen: gen, txn: t, commit: t.State == PrepareCommit, done: make(chan struct{})}
		order, err := c.db.Get(genKey(prefixDecided, id, gen))
		if err != nil {
			return err
		}
		if j.fresh, err = c.loadUnsent(id, gen, &unsent); err != nil {
			return err
		}
		if len(order) == 8 { // absent before decision orders were kept: 0, the oldest
			j.seq = binary.BigEndian.Uint64(order)
			top = max(top, j.seq)
		}
		e.jobs = append(e.jobs, j)
		if jobs[id] == nil {
			jobs[id] = map[uint64]*job{}
		}
		jobs[id][gen] = j
		if j.commit && len(t.PendingOffsets) > 0 {
			c.pending.Add(1)
			c.noteDecided(j)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("load decided transactions: %w", err)
	}
	// Before any job runs: a job that sends and is then killed must be
	// looked for after the next start.
	if err := c.deleteKeys(unsent); err != nil {
		return fmt.Errorf("delete unsent commit marks: %w", err)
	}
	for _, e := range c.txns {
		slices.SortFunc(e.jobs, func(a, b *job) int { return cmp.Compare(a.gen, b.gen) })
	}
	var orphans [][]byte
	err = c.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(prefixBatch)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			id, gen, _, rest, err := parseGenTPKey(prefixBatch, item.Key())
			if err != nil || len(rest) != 8 {
				return fmt.Errorf("corrupt batch key %q", item.Key())
			}
			top = max(top, binary.BigEndian.Uint64(rest), gen)
			e := c.txns[id]
			j := jobs[id][gen]
			open := e != nil && e.gen == gen && e.txn.Load().State == Ongoing
			if j == nil && !open {
				// Left by a crash while its abort was being carried out.
				orphans = append(orphans, item.KeyCopy(nil))
				continue
			}
			v, err := item.ValueCopy(nil)
			if err != nil {
				return err
			}
			ref, err := spool.UnmarshalRef(v)
			if err != nil {
				return fmt.Errorf("batch key %q: %w", item.Key(), err)
			}
			if err := c.opt.Spool.Retain(ref); err != nil {
				return fmt.Errorf("batch of %q: %w", id, err)
			}
			if j != nil {
				j.bytes += int64(ref.Length)
				if j.commit {
					c.backlog.Add(int64(ref.Length))
				}
			} else {
				e.bytes += int64(ref.Length)
			}
			c.buffered.Add(int64(ref.Length))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("load buffered batches: %w", err)
	}
	if err := c.deleteKeys(orphans); err != nil {
		return fmt.Errorf("delete abandoned batches: %w", err)
	}
	c.counter.Store(top)
	c.opt.Spool.Sweep()
	return nil
}

// prefixUnsent: txn/c/<id><gen>, a decided commit none of whose batches was
// sent when eosproxy stopped cleanly; deleted when loaded.
const prefixUnsent = "txn/c/"

// markUnsent records, at a clean stop, each decided commit that has sent
// nothing (decided, or loaded unsent, and never started): after the restart
// it is forwarded without a look-up. Only what was sent can have an unknown
// outcome; without the mark every pending commit would be looked for, from
// low-water offsets that may be old by then, or below a log start that
// retention has moved.
func (c *Coordinator) markUnsent() {
	entries := c.entries()
	var keys [][]byte
	for _, e := range entries {
		e.jmu.Lock()
		for _, j := range e.jobs {
			if j.commit && j.fresh && !j.started {
				keys = append(keys, genKey(prefixUnsent, e.id, j.gen))
			}
		}
		e.jmu.Unlock()
	}
	if len(keys) == 0 {
		return
	}
	err := c.db.Update(func(txn *store.Txn) error {
		for _, k := range keys {
			if err := txn.Set(k, []byte{1}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		// They are looked for after the restart: slower, not wrong.
		c.log.Warn().Err(err).Msg("cannot record the commits not yet sent")
	}
}

// loadUnsent reports whether generation gen of id was recorded as unsent
// at a clean stop, and queues the mark's deletion.
func (c *Coordinator) loadUnsent(id string, gen uint64, del *[][]byte) (bool, error) {
	k := genKey(prefixUnsent, id, gen)
	v, err := c.db.Get(k)
	if err != nil {
		return false, fmt.Errorf("unsent mark of %q: %w", id, err)
	}
	if len(v) == 0 {
		return false, nil
	}
	*del = append(*del, k)
	return true, nil
}

// Group offsets held by transactions: what OffsetFetch sees as unstable or
// as committed already, and the decision order that keeps an earlier
// commit's offsets from overwriting a later one's. Kafka keeps these in its
// group coordinator; here they live beside the transactions that hold them.

package txnstate

import (
	"context"
	"encoding/binary"
	"maps"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/eosproxy/eosproxy/store"
)

// offsetBook is the coordinator's bookkeeping of group offsets.
type offsetBook struct {
	pending atomic.Int32 // transactions holding group offsets
	// offLatest is, per group and partition, the decision order (job.seq)
	// of the latest decided commit holding an offset for it. Commits of
	// different transactional ids are carried out independently, so an
	// earlier one (a previous owner of the partition, held up by retries)
	// can finish after a later one: its offset must then neither be written
	// over the later one nor served in its place. offMu guards it;
	// groupLocks serialise each group's check-and-commit.
	offMu      sync.Mutex
	offLatest  map[string]map[TopicPartition]uint64
	groupLocks map[string]*sync.Mutex
}

// OffsetsPending reports whether an open or committing transaction holds
// offsets for group on tp (any partition when tp is nil): what Kafka calls
// an unstable offset.
func (c *Coordinator) OffsetsPending(group string, tp *TopicPartition) bool {
	if c.pending.Load() == 0 {
		return false
	}
	es := c.entries()
	for _, e := range es {
		for _, t := range e.holding() {
			g, ok := t.PendingOffsets[group]
			if !ok {
				continue
			}
			if tp == nil {
				if len(g.Offsets) > 0 {
					return true
				}
				continue
			}
			if _, ok := g.Offsets[*tp]; ok {
				return true
			}
		}
	}
	return false
}

// holding lists the open transaction of e holding offsets: those are
// unstable. Offsets of decided commits not yet in the backend are committed
// already (DecidedOffsets).
func (e *entry) holding() []*Txn {
	if t := e.txn.Load(); t != nil && t.State == Ongoing {
		return []*Txn{t}
	}
	return nil
}

// DecidedOffsets returns the offsets of group that commits have decided but
// not yet written to the backend, the latest per partition: they are the
// group's committed offsets, as Kafka's are once its commit marker is
// written, and OffsetFetch answers carry them. Nil when there are none.
func (c *Coordinator) DecidedOffsets(group string) map[TopicPartition]Offset {
	if c.pending.Load() == 0 {
		return nil
	}
	es := c.entries()
	out := map[TopicPartition]Offset{}
	for _, e := range es {
		e.jmu.Lock()
		for _, j := range e.jobs {
			if !j.commit {
				continue
			}
			for tp, o := range j.txn.PendingOffsets[group].Offsets {
				// Only the latest decision's offset is the group's: an
				// earlier one still waiting to be written is stale, and
				// if the latest is written already the backend has it.
				if c.latestFor(group, tp, j.seq) {
					out[tp] = o
				}
			}
		}
		e.jmu.Unlock()
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// noteDecided records a decided commit's offsets in the decision order.
func (c *Coordinator) noteDecided(j *job) {
	for group, g := range j.txn.PendingOffsets {
		for tp := range g.Offsets {
			c.noteOffset(group, tp, j.seq)
		}
	}
}

// noteOffset records that the commit decided at seq holds an offset of group
// for tp.
func (c *Coordinator) noteOffset(group string, tp TopicPartition, seq uint64) {
	c.offMu.Lock()
	defer c.offMu.Unlock()
	if c.offLatest == nil {
		c.offLatest = map[string]map[TopicPartition]uint64{}
	}
	m := c.offLatest[group]
	if m == nil {
		m = map[TopicPartition]uint64{}
		c.offLatest[group] = m
	}
	m[tp] = max(m[tp], seq)
}

// latestFor reports whether no commit decided after seq holds an offset of
// group for tp.
func (c *Coordinator) latestFor(group string, tp TopicPartition, seq uint64) bool {
	c.offMu.Lock()
	defer c.offMu.Unlock()
	return c.offLatest[group][tp] <= seq
}

// commitOffsets writes a decided commit's offsets of group to the backend,
// leaving out those a later decided commit holds (its own offsets are newer
// and are, or will be, written). Per group the check and the write are one
// step, so a later commit's offsets cannot be written between them.
func (c *Coordinator) commitOffsets(ctx context.Context, group string, g GroupOffsets, seq uint64) error {
	lock := c.groupLock(group)
	lock.Lock()
	defer lock.Unlock()
	mine := g
	mine.Offsets = map[TopicPartition]Offset{}
	for tp, o := range g.Offsets {
		if c.latestFor(group, tp, seq) {
			mine.Offsets[tp] = o
		}
	}
	if len(mine.Offsets) == 0 {
		return nil
	}
	return c.opt.Backend.CommitOffsets(ctx, group, mine)
}

func (c *Coordinator) groupLock(group string) *sync.Mutex {
	c.offMu.Lock()
	defer c.offMu.Unlock()
	if c.groupLocks == nil {
		c.groupLocks = map[string]*sync.Mutex{}
	}
	lock := c.groupLocks[group]
	if lock == nil {
		lock = &sync.Mutex{}
		c.groupLocks[group] = lock
	}
	return lock
}

// keepOffsetOrder, for a commit holding offsets that is being retired,
// writes within the retiring write the decision order of the latest commit
// holding each of its group partitions (txn/l/), and returns the group locks
// to release once that write is done. The locks make these writes land in
// the order their values were read: the value kept only grows.
func (c *Coordinator) keepOffsetOrder(j *job) (write func(*store.Txn) error, unlock func()) {
	if !j.commit || len(j.txn.PendingOffsets) == 0 {
		return func(*store.Txn) error { return nil }, func() {}
	}
	groups := slices.Sorted(maps.Keys(j.txn.PendingOffsets)) // one lock order
	var locks []*sync.Mutex
	for _, g := range groups {
		l := c.groupLock(g)
		l.Lock()
		locks = append(locks, l)
	}
	unlock = func() {
		for _, l := range locks {
			l.Unlock()
		}
	}
	write = func(txn *store.Txn) error {
		c.offMu.Lock()
		var kvs []kv
		for _, g := range groups {
			for tp := range j.txn.PendingOffsets[g].Offsets {
				seq := max(c.offLatest[g][tp], j.seq)
				kvs = append(kvs, kv{groupTPKey(g, tp), binary.BigEndian.AppendUint64(nil, seq)})
			}
		}
		c.offMu.Unlock()
		for _, w := range kvs {
			if err := txn.Set(w.k, w.v); err != nil {
				return err
			}
		}
		return nil
	}
	return write, unlock
}

// AnyOffsetsPending reports cheaply whether any transaction holds offsets.
func (c *Coordinator) AnyOffsetsPending() bool { return c.pending.Load() > 0 }

// PendingPartitions lists the partitions for which an open or committing
// transaction holds offsets of group.
func (c *Coordinator) PendingPartitions(group string) []TopicPartition {
	if c.pending.Load() == 0 {
		return nil
	}
	es := c.entries()
	seen := map[TopicPartition]bool{}
	var out []TopicPartition
	for _, e := range es {
		for _, t := range e.holding() {
			for tp := range t.PendingOffsets[group].Offsets {
				if !seen[tp] {
					seen[tp] = true
					out = append(out, tp)
				}
			}
		}
	}
	slices.SortFunc(out, compareTP)
	return out
}

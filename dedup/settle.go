// Look-ups in the backend: settling a state whose last outcome is unknown,
// and the intent that says when a look-up is needed after a crash (recorded
// before a batch goes out, cleared once the producer is idle). Apart because
// this is the only I/O toward the backend the table does.

package dedup

import (
	"context"
	"fmt"
	"time"
)

// settle brings an unverified or absent state up to date with the backend.
// For a producer seen for the first time on a partition it records the
// partition's end as the low-water mark before any write. For an unverified
// one it looks for b past the low-water mark: if b is there, b was written
// before eosproxy could record it, and it is recorded now. Begin calls it
// only for a batch Decide would write, so b is the one batch that can have
// landed unrecorded: batches are written one at a time per key.
//
// On a backend without idempotence, a look-up right after the outcome
// became unclear (unclearAt) first waits out lateWriteGrace: a request the
// broker read before eosproxy's connection to it broke may still be queued
// there, and a look-up before it is appended misses it, so the retry would
// be written too. A backend with idempotence drops that late copy itself.
func (t *Table) settle(ctx context.Context, key Key, st *State, unclearAt time.Time, b BatchInfo, digest func() [32]byte) error {
	if st != nil && !unclearAt.IsZero() && !t.backend.DropsLateCopies() {
		if wait := t.lateGrace - t.now().Sub(unclearAt); wait > 0 {
			if err := t.sleep(ctx, wait); err != nil {
				return fmt.Errorf("wait before looking for an unacknowledged batch in %s/%d: %w", key.Topic, key.Partition, err)
			}
		}
	}
	if st == nil {
		end, err := t.backend.EndOffset(ctx, key.Topic, key.Partition)
		if err != nil {
			return fmt.Errorf("end offset of %s/%d: %w", key.Topic, key.Partition, err)
		}
		ns := State{Epoch: b.Epoch, LowWater: end, LastUpdateMs: t.now().UnixMilli(), Intent: true}
		return t.store(key, ns, true)
	}
	off, found, err := t.backend.FindBatch(ctx, key.Topic, key.Partition, st.LowWater, digest())
	if err != nil {
		return fmt.Errorf("look for an unacknowledged batch in %s/%d from offset %d: %w", key.Topic, key.Partition, st.LowWater, err)
	}
	ns := *st
	ns.Intent = true
	if found {
		t.log.Info().Int64("producer", key.ProducerID).Str("topic", key.Topic).Int32("partition", key.Partition).
			Int32("seq", b.FirstSeq).Int64("offset", off).Msg("batch found in the backend after an unknown outcome; not writing it again")
		ns = Apply(ns, b, off, t.now().UnixMilli())
	}
	// Batches are released to the backend before their state is durable
	// (WrittenAll), so after a crash several may have landed unrecorded, one
	// after another: the key stays unverified until a batch is not found.
	ns.Unverified = found
	return t.store(key, ns, found)
}

// lateWriteGrace is how long a look-up waits after an unclear outcome: a
// broker appends a request it already read within milliseconds, but seconds
// on a loaded machine it can be hundreds (an in-process kfake under test
// load appended one about 200 ms late, after the look-up had missed it). It
// narrows, not closes, the window in which a backend without idempotence
// writes a retried batch twice, at the cost of that wait for the retry.
const lateWriteGrace = 500 * time.Millisecond

func sleepCtx(ctx context.Context, d time.Duration) error {
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// arm records, durably and before a batch of an idle producer goes out,
// that one may be in flight (the intent), with a low-water offset moved up
// to the partition's end: after a crash the look-up reads only what the
// partition received since, not everything since the producer's last
// batch. If the end cannot be read the old low-water offset (still at or
// before where the batch can land) is kept: the bound is an economy, not a
// condition for writing.
func (t *Table) arm(ctx context.Context, key Key, st State) error {
	ns := st
	ns.Intent = true
	if end, err := t.backend.EndOffset(ctx, key.Topic, key.Partition); err != nil {
		t.log.Debug().Err(err).Str("topic", key.Topic).Int32("partition", key.Partition).
			Msg("end offset before an idle producer's batch unknown; keeping its low-water offset")
	} else {
		ns.LowWater = max(ns.LowWater, end)
	}
	return t.store(key, ns, true)
}

// clearIntents records, for every state that matches and has nothing in
// flight or unknown, that no batch was sent after it. Queued under mu, so
// each write is ordered after the state's earlier ones and before any
// later arm of the same key.
func (t *Table) clearIntents(match func(*State) bool) int {
	var waits []chan error
	t.mu.Lock()
	for k, e := range t.entries {
		if e.inflight != nil || e.st == nil || e.st.Unverified || !e.st.Intent || !match(e.st) {
			continue
		}
		cp := *e.st
		cp.Intent = false
		e.st = &cp
		waits = append(waits, t.submit(k, cp))
	}
	t.mu.Unlock()
	for _, w := range waits {
		if err := <-w; err != nil {
			// The state on disk keeps its intent: a needless look-up
			// after a crash, nothing worse.
			t.log.Warn().Err(err).Msg("record idle producer states")
			break
		}
	}
	return len(waits)
}

// DefaultIdleAfter is how long a producer's partition must see no batch
// before its intent is cleared.
const DefaultIdleAfter = 2 * time.Second

// sweepIdle clears the intent of every producer idle on a partition for
// idleAfter.
func (t *Table) sweepIdle() int {
	cutoff := t.now().Add(-t.idleAfter).UnixMilli()
	return t.clearIntents(func(st *State) bool { return st.LastUpdateMs < cutoff })
}

func (t *Table) idleLoop() {
	t.tickLoop(max(t.idleAfter/2, 10*time.Millisecond), func() { t.sweepIdle() })
}

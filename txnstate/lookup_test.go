package txnstate_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/eosproxy/eosproxy/txnstate"
)

// TestCommitLookupStartsAfterEarlierCommit: a copier that keeps its input's
// timestamps can commit a batch with the same content as the previous
// commit's last one. The second commit is decided while the first is still
// being forwarded; eosproxy is then killed and restarts. Were the second
// commit's look-up to start before the first commit's batches, it would take
// the first commit's batch for its own and never write it: a lost write.
func TestCommitLookupStartsAfterEarlierCommit(t *testing.T) {
	for _, idem := range []bool{false, true} {
		name := "one batch at a time"
		if idem {
			name = "pipelined to an idempotent backend"
		}
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, envConfig{idem: idem, disk: true, opts: func(o *txnstate.Options) { o.AnswerWithin = 10 * time.Millisecond }})
			part := tp("out", 0)
			from := ends(e.be, part)
			p := e.initProducer("tx", true, 60_000)
			// An earlier commit: eosproxy now knows where its own last write
			// to the partition ended.
			p.send(part, 1, 10)
			if r := p.end(true); r.Err != 0 {
				t.Fatalf("earlier commit: %s", txnstate.ErrorName(r.Err))
			}
			same := func() {
				t.Helper()
				raw := txnBatch(p.pid, p.epoch, p.seq[part], 1_700_000_000_042, []byte("same key and value"))
				if code := wait(p.produce(part, raw, p.produceVersion())); code != txnstate.ErrNone {
					t.Fatalf("produce: %s", txnstate.ErrorName(code))
				}
				p.accepted(part, raw)
			}
			same()
			base, _ := e.be.counts()
			e.be.setFault(func(n int, _ TP) fault {
				if n == base+1 {
					return hang
				}
				return apply
			})
			p.noWait = true
			if r := p.end(true); r.Err != 0 {
				t.Fatalf("first commit: %s", txnstate.ErrorName(r.Err))
			}
			<-e.be.hung
			// The next commit, with a batch of the same content, is decided
			// while the first one's batch is in flight.
			same()
			if r := p.end(true); r.Err != 0 {
				t.Fatalf("second commit: %s", txnstate.ErrorName(r.Err))
			}
			p.noWait = false

			e.shutdown()
			e.be.land() // the first commit's batch was written after all
			e.be.setFault(nil)
			e.open()
			e.waitState("tx", txnstate.CompleteCommit)
			checkForwarded(t, e.be, from, p.committed)
		})
	}
}

// TestCommitLookupNotFromAnotherLookup: after a restart, a look-up finds a
// batch another transactional id wrote before the restart. That batch can
// sit before a commit the killed process completed, so its end says nothing
// about where later commits can land: were it taken as the low-water offset
// of the next commit, that commit's look-up would again start before the
// completed commit's batches (and take one with the same content for its
// own).
func TestCommitLookupNotFromAnotherLookup(t *testing.T) {
	for _, idem := range []bool{false, true} {
		name := "one batch at a time"
		if idem {
			name = "pipelined to an idempotent backend"
		}
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, envConfig{idem: idem, disk: true, opts: func(o *txnstate.Options) { o.AnswerWithin = 10 * time.Millisecond }})
			part := tp("out", 0)
			from := ends(e.be, part)
			var want [][32]byte
			same := func(p *producer) {
				t.Helper()
				raw := txnBatch(p.pid, p.epoch, p.seq[part], 1_700_000_000_042, []byte("same key and value"))
				if code := wait(p.produce(part, raw, p.produceVersion())); code != txnstate.ErrNone {
					t.Fatalf("produce: %s", txnstate.ErrorName(code))
				}
				p.accepted(part, raw)
				want = append(want, digest(raw))
			}

			// B's batch is written, but the answer is lost, and every
			// look-up for it fails until the restart.
			b := e.initProducer("b", true, 60_000)
			want = append(want, digest(b.send(part, 1, 10)))
			base, _ := e.be.counts()
			e.be.setFault(func(n int, _ TP) fault {
				if n == base+1 {
					return writeAmbiguous
				}
				return apply
			})
			e.be.mu.Lock()
			for range 100 {
				e.be.findErrs = append(e.be.findErrs, errTimeout)
			}
			e.be.mu.Unlock()
			b.noWait = true
			if r := b.end(true); r.Err != 0 {
				t.Fatalf("B's commit: %s", txnstate.ErrorName(r.Err))
			}
			// A commits after it, completely.
			a := e.initProducer("a", true, 60_000)
			same(a)
			if r := a.end(true); r.Err != 0 {
				t.Fatalf("A's commit: %s", txnstate.ErrorName(r.Err))
			}

			e.shutdown()
			e.be.mu.Lock()
			e.be.findErrs = nil
			e.be.mu.Unlock()
			e.open()
			e.waitState("b", txnstate.CompleteCommit) // found by its look-up

			// A's next commit, same content, is interrupted before its
			// batch lands, and looked for after the restart.
			same(a)
			base, _ = e.be.counts()
			e.be.setFault(func(n int, _ TP) fault {
				if n == base+1 {
					return hang
				}
				return apply
			})
			a.noWait = true
			if r := a.end(true); r.Err != 0 {
				t.Fatalf("A's second commit: %s", txnstate.ErrorName(r.Err))
			}
			<-e.be.hung
			e.shutdown()
			e.be.mu.Lock()
			e.be.inflight = nil // lost
			e.be.mu.Unlock()
			e.be.setFault(nil)
			e.open()
			e.waitState("a", txnstate.CompleteCommit)
			checkForwarded(t, e.be, from, map[TP][][32]byte{part: want})
		})
	}
}

// findRecorder records where each look-up starts.
type findRecorder struct {
	txnstate.Backend
	mu    *sync.Mutex
	froms *[]int64
}

func (r findRecorder) FindBatch(ctx context.Context, topic string, partition int32, from int64, d [32]byte) (int64, bool, error) {
	r.mu.Lock()
	*r.froms = append(*r.froms, from)
	r.mu.Unlock()
	return r.Backend.FindBatch(ctx, topic, partition, from, d)
}

// TestCommitLookupBounded: the low-water offset a commit takes from the end
// of eosproxy's own last write to a partition is only used while that is
// recent. A partition that others have written much to since gets its end
// read when forwarding starts, so that a look-up after a crash reads what
// arrived during the commit, not everything since eosproxy last wrote there.
func TestCommitLookupBounded(t *testing.T) {
	for _, idle := range []bool{false, true} {
		name := "recent write"
		if idle {
			name = "idle partition"
		}
		t.Run(name, func(t *testing.T) {
			var mu sync.Mutex
			var froms []int64
			e := newEnv(t, envConfig{disk: true, opts: func(o *txnstate.Options) {
				o.AnswerWithin = 10 * time.Millisecond
				o.Backend = findRecorder{o.Backend, &mu, &froms}
			}})
			part := tp("out", 0)
			p := e.initProducer("tx", true, 60_000)
			p.send(part, 1, 10)
			if r := p.end(true); r.Err != 0 {
				t.Fatalf("earlier commit: %s", txnstate.ErrorName(r.Err))
			}
			written := e.be.end(part)
			e.be.seed(part, 1000) // other producers
			if idle {
				e.clock.advance(time.Minute)
			}
			p.send(part, 1, 10)
			base, _ := e.be.counts()
			e.be.setFault(func(n int, _ TP) fault {
				if n == base+1 {
					return hang
				}
				return apply
			})
			p.noWait = true
			if r := p.end(true); r.Err != 0 {
				t.Fatalf("commit: %s", txnstate.ErrorName(r.Err))
			}
			<-e.be.hung
			e.shutdown()
			e.be.mu.Lock()
			e.be.inflight = nil
			e.be.mu.Unlock()
			e.be.setFault(nil)
			e.open()
			e.waitState("tx", txnstate.CompleteCommit)
			want := written
			if idle {
				want += 2000 // past the seeded records
			}
			mu.Lock()
			defer mu.Unlock()
			if len(froms) != 1 || froms[0] != want {
				t.Fatalf("look-ups from %v, want one from %d", froms, want)
			}
		})
	}
}

// TestCleanStopLeavesUnsentCommitsUnverified: at a clean stop, a decided
// commit that has sent nothing yet is recorded as such, and after the
// restart it is forwarded without a look-up; one that had a batch in flight
// is looked for. The mark is gone once loaded: were the commit then killed
// mid-way, the next start would look for it.
func TestCleanStopLeavesUnsentCommitsUnverified(t *testing.T) {
	e := newEnv(t, envConfig{disk: true, opts: func(o *txnstate.Options) { o.AnswerWithin = 10 * time.Millisecond }})
	busy, queued := tp("out", 0), tp("out", 1)
	from := ends(e.be, busy, queued)
	p := e.initProducer("tx", true, 60_000)
	// A recent write to queued: the next commit there takes its low-water
	// offset with the decision (and, without the mark, would be looked for).
	p.send(queued, 1, 10)
	if r := p.end(true); r.Err != 0 {
		t.Fatalf("earlier commit: %s", txnstate.ErrorName(r.Err))
	}
	p.send(busy, 1, 10)
	base, _ := e.be.counts()
	e.be.setFault(func(n int, _ TP) fault {
		if n == base+1 {
			return hang
		}
		return apply
	})
	p.noWait = true
	if r := p.end(true); r.Err != 0 {
		t.Fatalf("commit in flight: %s", txnstate.ErrorName(r.Err))
	}
	<-e.be.hung
	p.send(queued, 1, 10)
	if r := p.end(true); r.Err != 0 {
		t.Fatalf("queued commit: %s", txnstate.ErrorName(r.Err))
	}
	p.noWait = false
	e.shutdown() // clean: Close
	e.be.land()
	e.be.setFault(nil)
	_, findsBefore := e.be.counts()
	e.open()
	e.waitState("tx", txnstate.CompleteCommit)
	checkForwarded(t, e.be, from, p.committed)
	// The commit in flight: found by one look-up, then nothing left to look
	// for. The queued one: none.
	if _, finds := e.be.counts(); finds-findsBefore != 1 {
		t.Fatalf("%d look-ups after the clean stop, want 1 (for the commit in flight only)", finds-findsBefore)
	}
	if n := countKeys(t, e, "txn/c/"); n != 0 {
		t.Fatalf("%d unsent marks left after loading", n)
	}
}

func countKeys(t *testing.T, e *env, prefix string) int {
	t.Helper()
	n := 0
	err := e.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(prefix)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			n++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

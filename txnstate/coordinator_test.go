package txnstate_test

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/eosproxy/eosproxy/txnstate"

	"github.com/twmb/franz-go/pkg/kerr"
)

var (
	errOutOfOrder      = kerr.OutOfOrderSequenceNumber.Code
	errInvalidEpoch    = kerr.InvalidProducerEpoch.Code
	errTxnAbortable    = kerr.TransactionAbortable.Code
	errInvalidTxnState = kerr.InvalidTxnState.Code
)

func ends(be *fakeBackend, tps ...TP) map[TP]int64 {
	m := map[TP]int64{}
	for _, p := range tps {
		m[p] = be.end(p)
	}
	return m
}

func versionName(tv2 bool) string {
	if tv2 {
		return "TV2"
	}
	return "TV1"
}

// TestCommitForwardsOnceInOrder runs two committed transactions over three
// partitions and a consumer group: every batch reaches the backend exactly
// once, per partition in the order produced, cleared of its producer fields,
// and the offsets are committed as the member that sent them.
func TestCommitForwardsOnceInOrder(t *testing.T) {
	for _, tv2 := range []bool{false, true} {
		t.Run(versionName(tv2), func(t *testing.T) {
			e := newEnv(t, envConfig{})
			a0, a1, b0, in := tp("a", 0), tp("a", 1), tp("b", 0), tp("in", 3)
			e.be.seed(a0, 3)
			e.be.seed(b0, 1)
			from := ends(e.be, a0, a1, b0)
			p := e.initProducer("tx", tv2, 60_000)
			sent := 0
			for round := range 2 {
				p.begin(a0, a1, b0)
				for i := range 8 {
					for _, part := range []TP{a0, a1, b0} {
						p.send(part, 1+i%3, 40)
						sent++
					}
				}
				p.offsets("grp", "member-1", int32(7+round), "static-1", map[TP]txnstate.Offset{in: {Offset: int64(42 + round), LeaderEpoch: 3, Metadata: "meta"}})

				tx := e.c.Get("tx")
				if tx == nil || tx.State != txnstate.Ongoing || len(tx.Partitions) != 3 || !tx.HasGroup("grp") {
					t.Fatalf("before commit: %+v", tx)
				}
				if !e.c.OffsetsPending("grp", &in) || !e.c.OffsetsPending("grp", nil) || !e.c.AnyOffsetsPending() {
					t.Fatal("offsets held by the open transaction not reported pending")
				}
				if e.c.OffsetsPending("grp", &a0) || e.c.OffsetsPending("other", nil) {
					t.Fatal("offsets reported pending for a partition or group the transaction does not hold")
				}
				if e.c.Buffered() == 0 {
					t.Fatal("Buffered() is 0 with an open transaction")
				}
				if got, _ := e.be.counts(); got != sent-24 {
					t.Fatalf("%d batches sent to the backend before the commit", got-(sent-24))
				}

				if r := p.end(true); r.Err != txnstate.ErrNone {
					t.Fatalf("EndTxn(commit): %s", txnstate.ErrorName(r.Err))
				}
				done := e.waitState("tx", txnstate.CompleteCommit)
				if len(done.Partitions) != 0 || len(done.PendingOffsets) != 0 {
					t.Fatalf("completed transaction still holds %+v", done)
				}
				checkForwarded(t, e.be, from, p.committed)
				attempts, finds := e.be.counts()
				if attempts != sent || finds != 0 {
					t.Fatalf("%d batches sent (%d look-ups) for %d buffered", attempts, finds, sent)
				}
				commits := e.be.groupCommits()
				want := groupCommit{"grp", txnstate.GroupOffsets{MemberID: "member-1", GenerationID: int32(7 + round), GroupInstanceID: "static-1",
					Offsets: map[TP]txnstate.Offset{in: {Offset: int64(42 + round), LeaderEpoch: 3, Metadata: "meta"}}}}
				if len(commits) != round+1 || !sameCommit(commits[round], want) {
					t.Fatalf("group commits %+v, want %d, the last %+v", commits, round+1, want)
				}
				if e.c.OffsetsPending("grp", nil) || e.c.AnyOffsetsPending() {
					t.Fatal("offsets still pending after the commit")
				}
				if e.c.Buffered() != 0 {
					t.Fatalf("Buffered() = %d after the commit", e.c.Buffered())
				}
				if n := len(e.indexed()); n != 0 {
					t.Fatalf("%d batches left in the index after the commit", n)
				}
			}
			if l := e.c.List(); len(l) != 1 || l[0].TransactionalID != "tx" {
				t.Fatalf("List() = %+v", l)
			}
		})
	}
}

func sameCommit(a, b groupCommit) bool {
	return a.group == b.group && a.g.MemberID == b.g.MemberID && a.g.GenerationID == b.g.GenerationID &&
		a.g.GroupInstanceID == b.g.GroupInstanceID && maps.Equal(a.g.Offsets, b.g.Offsets)
}

// TestAbortDiscards: an aborted transaction forwards nothing and its spool
// data goes away (the segments holding it are deleted once it is no longer
// the current one).
func TestAbortDiscards(t *testing.T) {
	const segBytes = 8 << 10
	for _, tc := range []struct {
		name  string
		abort func(t *testing.T, p *producer)
		final txnstate.State
	}{
		{"EndTxn", func(t *testing.T, p *producer) {
			if r := p.end(false); r.Err != txnstate.ErrNone {
				t.Fatalf("EndTxn(abort): %s", txnstate.ErrorName(r.Err))
			}
		}, txnstate.CompleteAbort},
		{"new producer instance", func(t *testing.T, p *producer) {
			old := *p
			p.reinit(60_000) // CONCURRENT_TRANSACTIONS while the abort runs, then a new epoch
			if p.epoch <= old.epoch {
				t.Fatalf("epoch %d after fencing %d", p.epoch, old.epoch)
			}
			// The old instance is fenced.
			if code := wait(old.produce(tp("a", 0), old.build(tp("a", 0), 1, 10), old.produceVersion())); code != errInvalidEpoch {
				t.Fatalf("produce of the fenced instance: %s", txnstate.ErrorName(code))
			}
			r := p.e.c.EndTxn(context.Background(), p.id, txnstate.EndTxnRequest{ProducerID: old.pid, Epoch: old.epoch, Commit: true, Version: old.endVersion()})
			if r.Err != kerr.ProducerFenced.Code {
				t.Fatalf("EndTxn of the fenced instance: %s", txnstate.ErrorName(r.Err))
			}
		}, txnstate.Empty},
	} {
		for _, tv2 := range []bool{false, true} {
			t.Run(tc.name+"/"+versionName(tv2), func(t *testing.T) {
				e := newEnv(t, envConfig{segBytes: segBytes})
				a0, a1 := tp("a", 0), tp("a", 1)
				from := ends(e.be, a0, a1)
				p := e.initProducer("tx", tv2, 60_000)
				p.begin(a0, a1)
				for i := range 40 {
					p.send([]TP{a0, a1}[i%2], 1, 900)
				}
				p.offsets("grp", "m", 1, "", map[TP]txnstate.Offset{tp("in", 0): {Offset: 9}})
				if got := e.sp.DiskBytes(); got < 40*900 {
					t.Fatalf("DiskBytes %d with 40 batches of ~1 KiB buffered", got)
				}
				if n := len(e.indexed()); n != 40 {
					t.Fatalf("%d batches in the index, want 40", n)
				}

				tc.abort(t, p)
				e.waitState("tx", tc.final)

				if attempts, _ := e.be.counts(); attempts != 0 {
					t.Fatalf("abort sent %d batches to the backend", attempts)
				}
				if c := e.be.groupCommits(); len(c) != 0 {
					t.Fatalf("abort committed offsets: %+v", c)
				}
				if got := e.sp.DiskBytes(); got > segBytes {
					t.Fatalf("DiskBytes %d after the abort; only the current segment (≤ %d) may remain", got, segBytes)
				}
				if n := len(e.indexed()); n != 0 || e.c.Buffered() != 0 {
					t.Fatalf("after the abort: %d batches indexed, Buffered() = %d", n, e.c.Buffered())
				}
				if e.c.OffsetsPending("grp", nil) {
					t.Fatal("aborted offsets still pending")
				}

				// The next transaction starts clean and commits only its own data.
				p.begin(a0)
				p.send(a0, 2, 900)
				p.send(a0, 1, 900)
				if r := p.end(true); r.Err != txnstate.ErrNone {
					t.Fatalf("commit after abort: %s", txnstate.ErrorName(r.Err))
				}
				e.waitState("tx", txnstate.CompleteCommit)
				checkForwarded(t, e.be, from, map[TP][][32]byte{a0: p.committed[a0], a1: nil})
				if total(p.committed) != 2 {
					t.Fatalf("committed %d batches", total(p.committed))
				}
				// The aborted data's current segment goes with the next rotation.
				if got := e.sp.DiskBytes(); got > segBytes {
					t.Fatalf("DiskBytes %d after the second transaction", got)
				}
			})
		}
	}
}

// TestConcurrentTransactions commits transactions of several ids at once
// over shared partitions (run with -race).
func TestConcurrentTransactions(t *testing.T) {
	e := newEnv(t, envConfig{segBytes: 16 << 10})
	parts := []TP{tp("s", 0), tp("s", 1)}
	from := ends(e.be, parts...)
	const ids = 6
	ps := make([]*producer, ids)
	for i := range ps {
		ps[i] = e.initProducer(fmt.Sprintf("tx-%d", i), i%2 == 0, 60_000)
	}
	var wg sync.WaitGroup
	errs := make(chan string, ids*100)
	for _, p := range ps {
		wg.Go(func() {
			for range 2 {
				if !p.tv2 {
					r := e.c.AddPartitions(p.id, txnstate.AddPartitionsRequest{ProducerID: p.pid, Epoch: p.epoch, Partitions: parts, Version: 3})
					if r.Err != 0 {
						errs <- fmt.Sprintf("%s: AddPartitions: %s", p.id, txnstate.ErrorName(r.Err))
						return
					}
				}
				var answers []txnstate.ProduceAnswer
				for i := range 12 {
					part := parts[i%2]
					raw := p.build(part, 1+i%3, 300)
					a := p.produce(part, raw, p.produceVersion())
					if a.Err != 0 {
						errs <- fmt.Sprintf("%s: produce: %s", p.id, txnstate.ErrorName(a.Err))
						return
					}
					p.accepted(part, raw)
					answers = append(answers, a) // pipelined, as clients do
				}
				for _, a := range answers {
					if code := wait(a); code != 0 {
						errs <- fmt.Sprintf("%s: produce: %s", p.id, txnstate.ErrorName(code))
						return
					}
				}
				r := p.e.c.EndTxn(context.Background(), p.id, txnstate.EndTxnRequest{ProducerID: p.pid, Epoch: p.epoch, Commit: true, Version: p.endVersion()})
				if r.Err != 0 {
					errs <- fmt.Sprintf("%s: commit: %s", p.id, txnstate.ErrorName(r.Err))
					return
				}
				for part, ds := range p.open {
					p.committed[part] = append(p.committed[part], ds...)
				}
				p.open = map[TP][][32]byte{}
				if p.tv2 {
					p.pid, p.epoch, p.seq = r.ProducerID, r.Epoch, map[TP]int32{}
				}
				// Wait for the forwarding before the next transaction.
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				err := e.c.Wait(ctx, p.id)
				cancel()
				if err != nil {
					errs <- p.id + ": commit never carried out"
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for s := range errs {
		t.Fatal(s)
	}
	e.be.checkValid(t)
	// Each transaction's batches exactly once, in its order, per partition.
	for _, part := range parts {
		got := e.be.digests(part, from[part])
		n := 0
		for _, p := range ps {
			want := p.committed[part]
			n += len(want)
			var mine [][32]byte
			for _, d := range got {
				if slices.Contains(want, d) {
					mine = append(mine, d)
				}
			}
			if !slices.Equal(mine, want) {
				t.Errorf("%s on %v: %s", p.id, part, describe(mine, want))
			}
		}
		if len(got) != n {
			t.Errorf("%v holds %d batches, %d committed", part, len(got), n)
		}
	}
	if e.c.Buffered() != 0 {
		t.Fatalf("Buffered() = %d", e.c.Buffered())
	}
}

// TestForwardFailures injects backend failures while a commit is forwarded:
// the commit completes with every batch exactly once whatever the failure.
func TestForwardFailures(t *testing.T) {
	// with makes the listed batch attempts (counted from 1) fail with f.
	with := func(f fault, ns ...int) func(int, TP) fault {
		return func(n int, _ TP) fault {
			if slices.Contains(ns, n) {
				return f
			}
			return apply
		}
	}
	for _, tc := range []struct {
		name       string
		fault      func(int, TP) fault
		setup      func(be *fakeBackend)
		commits    int
		needLookup bool
	}{
		// Rounds send one batch per partition, partitions sorted: attempts
		// 1-3 are round 1, 4-6 round 2, …
		{name: "written, answered ambiguously", fault: with(writeAmbiguous, 5), commits: 1, needLookup: true},
		{name: "first batch written, answered ambiguously", fault: with(writeAmbiguous, 1), commits: 1, needLookup: true},
		{name: "whole round written, answered ambiguously", fault: with(writeAmbiguous, 4, 5, 6), commits: 1, needLookup: true},
		{name: "written ambiguously twice running", fault: with(writeAmbiguous, 5, 7), commits: 1, needLookup: true},
		{name: "last batch written, answered ambiguously", fault: with(writeAmbiguous, 18), commits: 1, needLookup: true},
		{name: "lost, answered ambiguously", fault: with(loseAmbiguous, 5), commits: 1, needLookup: true},
		{name: "rejected", fault: with(reject, 2, 8), commits: 1},
		{name: "end offsets fail", setup: func(be *fakeBackend) { be.endErrs = []error{errTimeout, errTimeout} }, commits: 1},
		{name: "look-up fails", fault: with(writeAmbiguous, 5), setup: func(be *fakeBackend) { be.findErrs = []error{errTimeout} }, commits: 1, needLookup: true},
		{name: "offset commit fails once", setup: func(be *fakeBackend) { be.commitErrs = []error{errTimeout} }, commits: 1},
		{name: "offset commit fails for good", setup: func(be *fakeBackend) {
			be.commitErrs = []error{fmt.Errorf("group gone: %w", txnstate.ErrPermanent)}
		}, commits: 0},
	} {
		for _, idem := range []bool{false, true} {
			name := tc.name
			if idem {
				name += ", pipelined to an idempotent backend"
			}
			t.Run(name, func(t *testing.T) {
				e := newEnv(t, envConfig{idem: idem})
				parts := []TP{tp("a", 0), tp("a", 1), tp("b", 0)}
				e.be.seed(parts[0], 2)
				from := ends(e.be, parts...)
				p := e.initProducer("tx", true, 60_000)
				for i := range 18 {
					p.send(parts[i%3], 1+i%2, 50)
				}
				p.offsets("grp", "m", 4, "", map[TP]txnstate.Offset{tp("in", 0): {Offset: 77}})
				e.be.setFault(tc.fault)
				if tc.setup != nil {
					e.be.mu.Lock()
					tc.setup(e.be)
					e.be.mu.Unlock()
				}
				if r := p.end(true); r.Err != 0 {
					t.Fatalf("commit: %s", txnstate.ErrorName(r.Err))
				}
				e.waitState("tx", txnstate.CompleteCommit)
				checkForwarded(t, e.be, from, p.committed)
				if c := e.be.groupCommits(); len(c) != tc.commits {
					t.Fatalf("%d group commits, want %d", len(c), tc.commits)
				}
				if _, finds := e.be.counts(); tc.needLookup && finds == 0 {
					t.Fatal("an unclear answer was not followed by a look-up")
				}
				if e.c.Buffered() != 0 || len(e.indexed()) != 0 {
					t.Fatalf("data left after the commit: %d bytes, %d batches", e.c.Buffered(), len(e.indexed()))
				}
				e.be.checkValid(t)
			})
		}
	}
}

// TestRollForwardAfterInterruptedForwarding: the coordinator stops while the
// backend holds one of its Produce requests; the request lands afterwards
// (or never does). A coordinator opened on the same database and spool
// completes the commit with every batch exactly once. With an earlier
// commit in the same process, the interrupted commit's starting offsets are
// the ends of eosproxy's own earlier writes (no ListOffsets), and other
// producers wrote after them.
func TestRollForwardAfterInterruptedForwarding(t *testing.T) {
	for _, tc := range []struct {
		name           string
		lands, earlier bool
		// late: the in-flight batch lands only after the roll-forward
		// resent it. Only a backend with idempotence can tell (eosproxy's
		// new epoch fences the old write); without, it is the documented
		// limit.
		late bool
	}{
		{"in-flight batch lands", true, false, false},
		{"in-flight batch lost", false, false, false},
		{"after an earlier commit, in-flight batch lands", true, true, false},
		{"after an earlier commit, in-flight batch lost", false, true, false},
		{"in-flight batch lands after the roll-forward", false, false, true},
	} {
		lands := tc.lands
		for _, idem := range []bool{false, true} {
			if tc.late && !idem {
				continue
			}
			name := tc.name
			if idem {
				name += ", pipelined to an idempotent backend"
			}
			t.Run(name, func(t *testing.T) {
				e := newEnv(t, envConfig{idem: idem, disk: true, segBytes: 4 << 10, opts: func(o *txnstate.Options) { o.AnswerWithin = 10 * time.Millisecond }})
				parts := []TP{tp("a", 0), tp("a", 1), tp("b", 0)}
				e.be.seed(parts[1], 4)
				from := ends(e.be, parts...)
				p := e.initProducer("tx", true, 60_000)
				if tc.earlier {
					for _, part := range parts {
						p.send(part, 2, 300)
					}
					if r := p.end(true); r.Err != 0 {
						t.Fatalf("earlier commit: %s", txnstate.ErrorName(r.Err))
					}
					e.waitState("tx", txnstate.CompleteCommit)
					for _, part := range parts {
						e.be.seed(part, 3)
					}
					// The seeded batches now sit between the earlier commit's
					// batches and this one's: skip them in the comparison.
					for _, part := range parts {
						want := append([][32]byte(nil), p.committed[part]...)
						got := e.be.digests(part, from[part])
						if len(got) != len(want)+3 || !slices.Equal(got[:len(want)], want) {
							t.Fatalf("earlier commit on %v: %s", part, describe(got, want))
						}
						p.committed[part] = nil
					}
					from = ends(e.be, parts...)
				}
				for i := range 15 {
					p.send(parts[i%3], 1+i%3, 300)
				}
				p.offsets("grp", "m", 2, "inst", map[TP]txnstate.Offset{tp("in", 1): {Offset: 5}})
				// Round 3's batch for a/1 hangs; the others of the round are written.
				base, _ := e.be.counts()
				e.be.setFault(func(n int, _ TP) fault {
					if n == base+8 {
						return hang
					}
					return apply
				})
				old := *p
				p.noWait = true
				if r := p.end(true); r.Err != 0 {
					t.Fatalf("commit: %s", txnstate.ErrorName(r.Err))
				}
				p.noWait = false
				<-e.be.hung

				// While forwarding: the commit is decided and a retry of it is
				// answered NONE.
				if tx := e.c.Get("tx"); tx.State != txnstate.CompleteCommit {
					t.Fatalf("state %v while forwarding", tx.State)
				}
				r := e.c.EndTxn(context.Background(), "tx", txnstate.EndTxnRequest{ProducerID: old.pid, Epoch: old.epoch, Commit: true, Version: 5})
				if r.Err != txnstate.ErrNone {
					t.Fatalf("retried EndTxn while forwarding: %s", txnstate.ErrorName(r.Err))
				}
				// Its offsets are committed (served from the decision), not
				// unstable, though the backend does not have them yet.
				if e.c.OffsetsPending("grp", nil) {
					t.Fatal("offsets of a decided commit reported unstable")
				}
				if d := e.c.DecidedOffsets("grp"); d[tp("in", 1)].Offset != 5 {
					t.Fatalf("decided offsets %+v, want in/1 at 5", d)
				}

				e.shutdown() // the hung Produce returns an unclear answer
				var late map[TP][]byte
				if lands {
					e.be.land()
				} else {
					e.be.mu.Lock()
					late, e.be.inflight = e.be.inflight, nil
					e.be.mu.Unlock()
				}
				e.be.setFault(nil)
				if c := e.be.groupCommits(); len(c) != 0 {
					t.Fatalf("offsets committed before the batches: %+v", c)
				}
				e.open()
				e.waitState("tx", txnstate.CompleteCommit)
				if tc.late {
					// The write of the killed process arrives now.
					waitFor(t, "the roll-forward to finish", func() bool { return len(e.be.groupCommits()) == 1 })
					e.be.mu.Lock()
					e.be.inflight = late
					e.be.mu.Unlock()
					e.be.land()
				}
				checkForwarded(t, e.be, from, p.committed)
				if c := e.be.groupCommits(); len(c) != 1 || c[0].g.MemberID != "m" || c[0].g.GroupInstanceID != "inst" {
					t.Fatalf("group commits %+v", c)
				}
				if _, finds := e.be.counts(); finds == 0 {
					t.Fatal("roll-forward did not look for the batches already written")
				}
				// The state is swapped in before the byte count is settled.
				waitFor(t, "Buffered() to drop to 0", func() bool { return e.c.Buffered() == 0 })
				if e.c.Buffered() != 0 || len(e.indexed()) != 0 {
					t.Fatalf("data left: %d bytes, %d batches", e.c.Buffered(), len(e.indexed()))
				}
				// The producer carries on with the epoch its commit was answered with.
				p.send(parts[0], 1, 10)
				if r := p.end(true); r.Err != 0 {
					t.Fatalf("next commit: %s", txnstate.ErrorName(r.Err))
				}
				e.waitState("tx", txnstate.CompleteCommit)
				checkForwarded(t, e.be, from, p.committed)
				e.be.checkValid(t)
			})
		}
	}
}

// TestRestartKeepsOngoing: an open transaction's state, sequence state and
// buffered batches survive a restart; its commit afterwards forwards them.
func TestRestartKeepsOngoing(t *testing.T) {
	for _, tv2 := range []bool{false, true} {
		t.Run(versionName(tv2), func(t *testing.T) {
			e := newEnv(t, envConfig{disk: true, segBytes: 2 << 10})
			a0, b0, in := tp("a", 0), tp("b", 0), tp("in", 0)
			e.be.seed(b0, 1)
			from := ends(e.be, a0, b0)
			p := e.initProducer("tx", tv2, 60_000)
			p.begin(a0, b0)
			var last []byte
			for i := range 10 {
				last = p.send([]TP{a0, b0}[i%2], 1+i%2, 250)
			}
			p.offsets("grp", "m", 3, "", map[TP]txnstate.Offset{in: {Offset: 11}})
			buffered := e.c.Buffered()
			before := e.c.Get("tx")

			e.restart()

			tx := e.c.Get("tx")
			if tx == nil || tx.State != txnstate.Ongoing || !maps.Equal(tx.Partitions, before.Partitions) ||
				tx.PendingOffsets["grp"].Offsets[in].Offset != 11 || tx.Epoch != p.epoch || tx.ProducerID != p.pid {
				t.Fatalf("after restart: %+v, before %+v", tx, before)
			}
			if e.c.Buffered() != buffered {
				t.Fatalf("Buffered() = %d after restart, %d before", e.c.Buffered(), buffered)
			}
			if !e.c.OffsetsPending("grp", &in) {
				t.Fatal("held offsets not pending after restart")
			}
			if n := len(e.indexed()); n != 10 {
				t.Fatalf("%d batches indexed after restart, want 10", n)
			}
			// The sequence state survived: a retry is recognised, a gap refused.
			if code := wait(p.produce(b0, last, p.produceVersion())); code != 0 {
				t.Fatalf("retry after restart: %s", txnstate.ErrorName(code))
			}
			if e.c.Buffered() != buffered {
				t.Fatal("retry after restart buffered the batch again")
			}
			p.seq[a0]++
			if code := wait(p.produce(a0, p.build(a0, 1, 10), p.produceVersion())); code != errOutOfOrder {
				t.Fatalf("sequence gap after restart: %s", txnstate.ErrorName(code))
			}
			p.seq[a0]--
			p.send(a0, 1, 250)
			p.send(b0, 1, 250)
			if r := p.end(true); r.Err != 0 {
				t.Fatalf("commit: %s", txnstate.ErrorName(r.Err))
			}
			e.waitState("tx", txnstate.CompleteCommit)
			checkForwarded(t, e.be, from, p.committed)
			if total(p.committed) != 12 {
				t.Fatalf("%d committed", total(p.committed))
			}
			if c := e.be.groupCommits(); len(c) != 1 || c[0].g.Offsets[in].Offset != 11 {
				t.Fatalf("group commits %+v", c)
			}
			if got := e.sp.DiskBytes(); got > 2<<10 {
				t.Fatalf("DiskBytes %d after the commit", got)
			}
		})
	}
}

// Regression tests that what the coordinator decided or answered stays true
// later: after a restart, against a flusher's late write, against an earlier
// commit finishing after a later one, and for a new producer instance.

package txnstate_test

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/eosproxy/eosproxy/txnstate"

	"github.com/twmb/franz-go/pkg/kerr"
)

// TestOffsetsSurviveRestartWithProduceInFlight: a KIP-890 client's first
// Produce of a transaction adds the partition implicitly; the new state is
// written by the batch's flusher, after the spool sync. A TxnOffsetCommit
// (v5) answered meanwhile is written at once. The flusher's later write of
// the older state must not undo it: after a restart the transaction has to
// hold the offsets the client was told are held, or its commit silently
// drops them (and the consumer re-reads what it already processed).
func TestOffsetsSurviveRestartWithProduceInFlight(t *testing.T) {
	e := newEnv(t, envConfig{})
	a0, in := tp("a", 0), tp("in", 0)
	p := e.initProducer("tx", true, 60_000)
	// A large batch makes the spool sync, hence the flusher, take a while.
	raw := p.build(a0, 1, 8<<20)
	ans := p.produce(a0, raw, 12)
	if ans.Err != 0 {
		t.Fatalf("produce: %s", txnstate.ErrorName(ans.Err))
	}
	// Pipelined, as clients do: the offsets go out before the Produce answer.
	r := e.c.TxnOffsetCommit("tx", txnstate.TxnOffsetCommitRequest{ProducerID: p.pid, Epoch: p.epoch, Group: "grp",
		MemberID: "m", GenerationID: 1, Offsets: map[TP]txnstate.Offset{in: {Offset: 42}}, Version: 5})
	if r.Err != 0 {
		t.Fatalf("TxnOffsetCommit: %s", txnstate.ErrorName(r.Err))
	}
	if code := ans.Wait(); code != 0 {
		t.Fatalf("produce: %s", txnstate.ErrorName(code))
	}
	p.accepted(a0, raw)

	e.restart()

	tx := e.c.Get("tx")
	if tx == nil || tx.State != txnstate.Ongoing || !tx.HasPartition(a0) {
		t.Fatalf("after restart: %+v", tx)
	}
	if got := tx.PendingOffsets["grp"].Offsets[in]; !tx.HasGroup("grp") || got.Offset != 42 {
		t.Errorf("after restart the transaction holds offsets %+v, want grp/%v at 42 (TxnOffsetCommit was answered NONE before the restart)", tx.PendingOffsets, in)
	}
	if r := p.end(true); r.Err != 0 {
		t.Fatalf("commit: %s", txnstate.ErrorName(r.Err))
	}
	e.waitState("tx", txnstate.CompleteCommit)
	if c := e.be.groupCommits(); len(c) != 1 {
		t.Errorf("the commit sent %d group offset commits, want 1", len(c))
	}
}

// TestRefusedBatchStillBlocksCommitAfterRestart: once a batch of a
// transaction was refused (here: over MaxTransactionBytes), the transaction
// must not commit — EndTxn(commit) answers INVALID_TXN_STATE (classic) or
// aborts it and answers TRANSACTION_ABORTABLE (KIP-890). That mark lives
// only in memory (entry.broken): after a restart the same EndTxn(commit)
// commits the transaction without the refused batch. franz-go, per the
// comment in EndTxn, does send that commit.
func TestRefusedBatchStillBlocksCommitAfterRestart(t *testing.T) {
	for _, tc := range []struct {
		name string
		tv2  bool
		want int16
	}{
		{"TV1", false, errInvalidTxnState},
		{"TV2", true, errTxnAbortable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, envConfig{disk: true, opts: func(o *txnstate.Options) { o.MaxTransactionBytes = 2500 }})
			a0 := tp("a", 0)
			p := e.initProducer("tx", tc.tv2, 60_000)
			p.begin(a0)
			p.send(a0, 1, 900)
			p.send(a0, 1, 900)
			if ans := p.produce(a0, p.build(a0, 1, 900), p.produceVersion()); ans.Err != kerr.PolicyViolation.Code {
				t.Fatalf("over the limit: %s", txnstate.ErrorName(ans.Err))
			}

			e.restart()

			if r := p.end(true); r.Err != tc.want {
				t.Errorf("EndTxn(commit) after restart: %s, want %s", txnstate.ErrorName(r.Err), txnstate.ErrorName(tc.want))
			}
			if tx := e.c.Get("tx"); tx.State == txnstate.PrepareCommit || tx.State == txnstate.CompleteCommit {
				e.waitState("tx", txnstate.CompleteCommit)
				t.Errorf("the transaction committed %d of its 3 batches", len(e.be.digests(a0, 0)))
			}
		})
	}
}

// Found by eoscheck (2,375 records copied twice): a copier's commit holding
// offsets of a partition could not write them for a while (its OffsetCommit
// failing); the partition moved to another copier, whose transactional id's
// commits are carried out independently, and which committed further. The
// first commit's offsets, written late, put the group back, and the next
// owner of the partition copied again. Offsets must follow the order in
// which commits were decided: the earlier commit's offset is neither served
// once a later one holds the partition nor written over it.
func TestEarlierCommitsOffsetsDoNotOverwriteLaterOnes(t *testing.T) {
	e := newEnv(t, envConfig{})
	in := tp("in", 0)
	hold := e.be.holdOffset(in, 10)

	b := e.initProducer("B", true, 60_000)
	b.offsets("grp", "m1", 1, "", map[TP]txnstate.Offset{in: {Offset: 10}})
	b.noWait = true // its offsets cannot be written yet
	if r := b.end(true); r.Err != 0 {
		t.Fatalf("B's commit: %s", txnstate.ErrorName(r.Err))
	}
	if d := e.c.DecidedOffsets("grp"); d[in].Offset != 10 {
		t.Fatalf("decided offsets %+v, want in/0 at B's 10", d)
	}
	a := e.initProducer("A", true, 60_000)
	a.offsets("grp", "m2", 2, "", map[TP]txnstate.Offset{in: {Offset: 20}})
	if r := a.end(true); r.Err != 0 {
		t.Fatalf("A's commit: %s", txnstate.ErrorName(r.Err))
	}
	if err := e.c.Wait(context.Background(), "A"); err != nil {
		t.Fatal(err)
	}
	if d := e.c.DecidedOffsets("grp"); d != nil {
		t.Fatalf("decided offsets %+v after A's commit was written: B's earlier one is stale", d)
	}
	hold.Store(false)
	if err := e.c.Wait(context.Background(), "B"); err != nil {
		t.Fatal(err)
	}
	if last := e.be.lastGroupOffset(in); last != 20 {
		t.Fatalf("the group's offset of in/0 ends at %d, want A's 20: %+v", last, e.be.groupCommits())
	}
}

// Issue 9, item 2: the decision order of group offsets must survive a
// restart. B's commit (offset 10) cannot write its offsets; A's later commit
// (offset 20) writes them and is retired. After a restart only B's job is
// left: rebuilt from unfinished jobs alone, the order would let B write its
// older 10 over A's 20 and the group would re-read 10 records.
func TestEarlierCommitsOffsetsDoNotOverwriteLaterOnesAfterRestart(t *testing.T) {
	e := newEnv(t, envConfig{disk: true})
	in := tp("in", 0)
	hold := e.be.holdOffset(in, 10)

	b := e.initProducer("B", true, 60_000)
	b.offsets("grp", "m1", 1, "", map[TP]txnstate.Offset{in: {Offset: 10}})
	b.noWait = true
	if r := b.end(true); r.Err != 0 {
		t.Fatalf("B's commit: %s", txnstate.ErrorName(r.Err))
	}
	a := e.initProducer("A", true, 60_000)
	a.offsets("grp", "m2", 2, "", map[TP]txnstate.Offset{in: {Offset: 20}})
	if r := a.end(true); r.Err != 0 {
		t.Fatalf("A's commit: %s", txnstate.ErrorName(r.Err))
	}

	e.restart()

	if d := e.c.DecidedOffsets("grp"); d != nil {
		t.Errorf("after restart the decided offsets are %+v: B's 10 is older than A's 20 the backend holds", d)
	}
	hold.Store(false)
	if err := e.c.Wait(context.Background(), "B"); err != nil {
		t.Fatal(err)
	}
	if last := e.be.lastGroupOffset(in); last != 20 {
		t.Fatalf("after restart the group's offset of in/0 ends at %d, want A's 20: %+v", last, e.be.groupCommits())
	}

	// A commit decided after the restart is later than everything before
	// it: its offsets are written.
	c := e.initProducer("C", true, 60_000)
	c.offsets("grp", "m3", 3, "", map[TP]txnstate.Offset{in: {Offset: 30}})
	if r := c.end(true); r.Err != 0 {
		t.Fatalf("C's commit: %s", txnstate.ErrorName(r.Err))
	}
	cs := e.be.groupCommits()
	if got := cs[len(cs)-1].g.Offsets[in].Offset; got != 30 {
		t.Fatalf("C's commit after the restart left the group at %d, want 30: %+v", got, cs)
	}
	e.restart()
	c.offsets("grp", "m3", 3, "", map[TP]txnstate.Offset{in: {Offset: 40}})
	if r := c.end(true); r.Err != 0 {
		t.Fatalf("C's second commit: %s", txnstate.ErrorName(r.Err))
	}
	cs = e.be.groupCommits()
	if got := cs[len(cs)-1].g.Offsets[in].Offset; got != 40 {
		t.Fatalf("after a second restart C's commit left the group at %d, want 40: %+v", got, cs)
	}
}

// Issue 9, item 3: InitProducerId of a new instance must not succeed while
// the previous instance's commit is not fully in the backend — its batches
// and its group offsets, which Kafka's marker makes visible at the same
// moment. Kafka keeps the transaction in PrepareCommit until its markers
// are written and answers CONCURRENT_TRANSACTIONS; an application reading
// its own output read_committed right after initTransactions() (Kafka
// Connect's exactly-once sources) would otherwise miss the commit and
// produce it again.
func TestInitProducerIDWaitsForTheLastCommit(t *testing.T) {
	e := newEnv(t, envConfig{})
	a0, in := tp("a", 0), tp("in", 0)
	var holdData, holdOffsets atomic.Bool
	holdData.Store(true)
	holdOffsets.Store(true)
	e.be.setFault(func(int, TP) fault {
		if holdData.Load() {
			return reject
		}
		return apply
	})
	e.be.mu.Lock()
	e.be.commitFail = func(txnstate.GroupOffsets) error {
		if holdOffsets.Load() {
			return errTimeout
		}
		return nil
	}
	e.be.mu.Unlock()

	p := e.initProducer("tx", true, 60_000)
	p.send(a0, 1, 50)
	p.offsets("grp", "m", 1, "", map[TP]txnstate.Offset{in: {Offset: 5}})
	p.noWait = true
	if r := p.end(true); r.Err != 0 {
		t.Fatalf("commit: %s", txnstate.ErrorName(r.Err))
	}
	init := func() txnstate.Result {
		return e.c.InitProducerID(context.Background(), txnstate.InitProducerIDRequest{
			TransactionalID: "tx", TimeoutMs: 60_000, ProducerID: txnstate.NoProducerID, Epoch: txnstate.NoEpoch, Version: 4})
	}
	if r := init(); r.Err != kerr.ConcurrentTransactions.Code {
		t.Fatalf("InitProducerId while the commit's batches are not in the backend: %s, want CONCURRENT_TRANSACTIONS", txnstate.ErrorName(r.Err))
	}
	// DescribeTransactions shows what Kafka's coordinator would: the
	// commit is prepared, not complete, until it is in the backend.
	if d := e.c.Describe("tx"); d == nil || d.State != txnstate.PrepareCommit {
		t.Fatalf("described while the commit is not in the backend: %+v, want PrepareCommit", d)
	}
	if all := e.c.DescribeAll(); len(all) != 1 || all[0].State != txnstate.PrepareCommit {
		t.Fatalf("listed while the commit is not in the backend: %+v, want PrepareCommit", all)
	}
	holdData.Store(false)
	waitFor(t, "the commit's batch in the backend", func() bool { return len(e.be.digests(a0, 0)) == 1 })
	if r := init(); r.Err != kerr.ConcurrentTransactions.Code {
		t.Fatalf("InitProducerId while the commit's offsets are not in the backend: %s, want CONCURRENT_TRANSACTIONS", txnstate.ErrorName(r.Err))
	}
	holdOffsets.Store(false)
	q := &producer{e: e, t: t, id: "tx", tv2: true, committed: map[TP][][32]byte{}}
	q.reinit(60_000)
	if q.epoch <= p.epoch && q.pid == p.pid {
		t.Fatalf("new instance got %d/%d, previous one %d/%d: not fenced", q.pid, q.epoch, p.pid, p.epoch)
	}
	if c := e.be.groupCommits(); len(c) != 1 || c[0].g.Offsets[in].Offset != 5 {
		t.Fatalf("group offsets in the backend when InitProducerId succeeded: %+v", c)
	}
	checkForwarded(t, e.be, map[TP]int64{a0: 0}, p.committed)
	if d := e.c.Describe("tx"); d == nil || d.State != txnstate.Empty {
		t.Fatalf("described after the new instance's InitProducerId: %+v, want Empty", d)
	}
}

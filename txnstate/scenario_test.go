package txnstate

import (
	"math"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
)

// apply checks r like the matrix does, wants code, and returns the state the
// caller would have persisted.
func apply(t *testing.T, name string, cur *Txn, r Result, code int16) *Txn {
	t.Helper()
	if r.Err != code {
		t.Fatalf("%s: %s, want %s", name, ErrorName(r.Err), ErrorName(code))
	}
	checkResult(t, name, cur, r)
	if r.Txn != nil {
		return r.Txn
	}
	return cur
}

func initTx(cur *Txn, p int64, e int16, newPID func() int64) Result {
	return InitProducerID(cfg, cur, InitProducerIDRequest{TransactionalID: "tx", TimeoutMs: 60_000, ProducerID: p, Epoch: e, Version: 5}, now, newPID)
}

func TestLifecycleTV1(t *testing.T) {
	newPID := pids()
	r := initTx(nil, NoProducerID, NoEpoch, newPID)
	tx := apply(t, "init", nil, r, OK)
	if r.ProducerID != 2000 || r.Epoch != 0 || tx.State != Empty {
		t.Fatalf("init: pid %d epoch %d state %v", r.ProducerID, r.Epoch, tx.State)
	}
	p, e := r.ProducerID, r.Epoch

	tx = apply(t, "add", tx, AddPartitions(tx, AddPartitionsRequest{ProducerID: p, Epoch: e, Partitions: []TopicPartition{tp0, tp1}, Version: 3}, now), OK)
	if tx.State != Ongoing || tx.StartTimeMs != now || !tx.HasPartition(tp1) {
		t.Fatalf("add: %+v", tx)
	}
	if r := AddPartitions(tx, AddPartitionsRequest{ProducerID: p, Epoch: e, Partitions: []TopicPartition{tp0}, Version: 3}, now+5); r.Err != OK || r.Txn != nil {
		t.Fatalf("re-adding a present partition must be a no-op, got %+v", r)
	}
	tx = apply(t, "add offsets", tx, AddOffsets(tx, AddOffsetsRequest{ProducerID: p, Epoch: e, Group: "g", Version: 3}, now), OK)
	tx = apply(t, "offsets", tx, TxnOffsetCommit(tx, TxnOffsetCommitRequest{ProducerID: p, Epoch: e, Group: "g", MemberID: "m", GenerationID: 7,
		Offsets: map[TopicPartition]Offset{{"in", 3}: {Offset: 99}}, Version: 3}, now), OK)
	if got := tx.PendingOffsets["g"]; got.GenerationID != 7 || got.Offsets[TopicPartition{"in", 3}].Offset != 99 {
		t.Fatalf("offsets not held: %+v", got)
	}
	if r := AdmitBatch(tx, ProduceRequest{ProducerID: p, Epoch: e, Partition: tp1, Version: 9}, now); r.Err != OK || r.Txn != nil {
		t.Fatalf("produce to an added partition: %+v", r)
	}

	r = EndTxn(tx, EndTxnRequest{ProducerID: p, Epoch: e, Commit: true, Version: 3}, now, newPID)
	prepared := apply(t, "commit", tx, r, OK)
	if prepared.State != PrepareCommit || r.Action != Forward || prepared.Epoch != e || r.ProducerID != NoProducerID {
		t.Fatalf("commit: %+v %+v", r, prepared)
	}
	if !prepared.HasPartition(tp0) || !prepared.HasGroup("g") {
		t.Fatal("the prepared state must still name what to forward")
	}
	tx = apply(t, "complete", prepared, Complete(prepared, now), OK)
	if tx.State != CompleteCommit || tx.Epoch != e || tx.ProducerID != p {
		t.Fatalf("complete: %+v", tx)
	}
	apply(t, "retried commit", tx, EndTxn(tx, EndTxnRequest{ProducerID: p, Epoch: e, Commit: true, Version: 3}, now, newPID), OK)
	apply(t, "abort after commit", tx, EndTxn(tx, EndTxnRequest{ProducerID: p, Epoch: e, Commit: false, Version: 3}, now, newPID), ITS)

	// The next transaction starts from CompleteCommit.
	tx = apply(t, "add again", tx, AddPartitions(tx, AddPartitionsRequest{ProducerID: p, Epoch: e, Partitions: []TopicPartition{tp0}, Version: 3}, now+10), OK)
	if tx.StartTimeMs != now+10 || tx.HasPartition(tp1) {
		t.Fatalf("a new transaction must start afresh: %+v", tx)
	}
}

func TestLifecycleTV2(t *testing.T) {
	newPID := pids()
	r := initTx(nil, NoProducerID, NoEpoch, newPID)
	tx := apply(t, "init", nil, r, OK)
	p, e := r.ProducerID, r.Epoch

	tx = apply(t, "produce", tx, AdmitBatch(tx, ProduceRequest{ProducerID: p, Epoch: e, Partition: tp0, Version: 12}, now), OK)
	if tx.State != Ongoing || !tx.HasPartition(tp0) || tx.TxnVersion != 2 {
		t.Fatalf("implicit add: %+v", tx)
	}
	tx = apply(t, "offsets", tx, TxnOffsetCommit(tx, TxnOffsetCommitRequest{ProducerID: p, Epoch: e, Group: "g",
		Offsets: map[TopicPartition]Offset{{"in", 0}: {Offset: 5}}, Version: 5}, now), OK)
	if !tx.HasGroup("g") {
		t.Fatal("TxnOffsetCommit v5 must add the group")
	}

	r = EndTxn(tx, EndTxnRequest{ProducerID: p, Epoch: e, Commit: true, Version: 5}, now, newPID)
	prepared := apply(t, "commit", tx, r, OK)
	if r.ProducerID != p || r.Epoch != e+1 || prepared.Epoch != e+1 || prepared.LastEpoch != e {
		t.Fatalf("TV2 commit must bump the epoch: %+v %+v", r, prepared)
	}
	// Retried while forwarding: CONCURRENT_TRANSACTIONS; with the new epoch: fenced-looking.
	apply(t, "retry while preparing", prepared, EndTxn(prepared, EndTxnRequest{ProducerID: p, Epoch: e, Commit: true, Version: 5}, now, newPID), CONC)
	tx = apply(t, "complete", prepared, Complete(prepared, now), OK)

	r = EndTxn(tx, EndTxnRequest{ProducerID: p, Epoch: e, Commit: true, Version: 5}, now, newPID)
	apply(t, "retry after complete", tx, r, OK)
	if r.ProducerID != p || r.Epoch != e+1 {
		t.Fatalf("a retry must be told the current epoch: %+v", r)
	}
	// The client goes on with the bumped epoch.
	e++
	tx = apply(t, "next txn", tx, AdmitBatch(tx, ProduceRequest{ProducerID: p, Epoch: e, Partition: tp1, Version: 12}, now), OK)
	apply(t, "old epoch fenced", tx, AdmitBatch(tx, ProduceRequest{ProducerID: p, Epoch: e - 1, Partition: tp1, Version: 12}, now), IPE)

	// An abort with nothing added (the client is unsure) bumps too.
	tx = apply(t, "abort", tx, EndTxn(tx, EndTxnRequest{ProducerID: p, Epoch: e, Commit: false, Version: 5}, now, newPID), OK)
	tx = apply(t, "complete abort", tx, Complete(tx, now), OK)
	r = EndTxn(tx, EndTxnRequest{ProducerID: p, Epoch: e + 1, Commit: false, Version: 5}, now+1, newPID)
	tx = apply(t, "empty abort", tx, r, OK)
	if tx.State != PrepareAbort || tx.Epoch != e+2 || tx.StartTimeMs != now+1 || r.Action != Discard {
		t.Fatalf("abort without data: %+v", tx)
	}
}

func TestInitProducerIDEpochExhaustion(t *testing.T) {
	newPID := pids()
	cur := fixture(CompleteCommit)
	cur.Epoch = math.MaxInt16 - 2
	r := initTx(cur, NoProducerID, NoEpoch, newPID)
	cur = apply(t, "bump to the last epoch", cur, r, OK)
	if r.ProducerID != pid || r.Epoch != math.MaxInt16-1 {
		t.Fatalf("got %d/%d", r.ProducerID, r.Epoch)
	}
	r = initTx(cur, NoProducerID, NoEpoch, newPID)
	rotated := apply(t, "rotate", cur, r, OK)
	if r.ProducerID != 2000 || r.Epoch != 0 || rotated.LastProducerID != pid || rotated.LastEpoch != NoEpoch {
		t.Fatalf("rotation: %+v %+v", r, rotated)
	}

	// KIP-360 resume with the exhausted epoch: rotation that remembers the
	// old epoch, so the same resume retried gets the same answer.
	r = initTx(cur, pid, math.MaxInt16-1, newPID)
	rotated = apply(t, "resume rotate", cur, r, OK)
	if r.ProducerID != 2001 || r.Epoch != 0 || rotated.LastEpoch != math.MaxInt16-1 {
		t.Fatalf("resume rotation: %+v %+v", r, rotated)
	}
	r2 := initTx(rotated, pid, math.MaxInt16-1, newPID)
	apply(t, "retried resume", rotated, r2, OK)
	if r2.ProducerID != r.ProducerID || r2.Epoch != r.Epoch {
		t.Fatalf("retry answered %d/%d, first answer %d/%d", r2.ProducerID, r2.Epoch, r.ProducerID, r.Epoch)
	}
	// The old id with a non-exhausted epoch is fenced.
	apply(t, "old id", rotated, initTx(rotated, pid, 3, newPID), PF)
}

func TestEndTxnEpochExhaustionTV2(t *testing.T) {
	newPID := pids()
	cur := fixture(Ongoing)
	cur.Epoch = math.MaxInt16 - 1
	r := EndTxn(cur, EndTxnRequest{ProducerID: pid, Epoch: cur.Epoch, Commit: true, Version: 5}, now, newPID)
	prepared := apply(t, "commit", cur, r, OK)
	if prepared.Epoch != math.MaxInt16 || prepared.NextProducerID != 2000 || r.ProducerID != 2000 || r.Epoch != 0 {
		t.Fatalf("overflowing commit: %+v %+v", r, prepared)
	}
	apply(t, "retry while preparing", prepared, EndTxn(prepared, EndTxnRequest{ProducerID: pid, Epoch: math.MaxInt16 - 1, Commit: true, Version: 5}, now, newPID), CONC)
	done := apply(t, "complete", prepared, Complete(prepared, now), OK)
	if done.ProducerID != 2000 || done.Epoch != 0 || done.LastProducerID != pid || done.NextProducerID != NoProducerID {
		t.Fatalf("complete must switch to the new id: %+v", done)
	}
	r = EndTxn(done, EndTxnRequest{ProducerID: pid, Epoch: math.MaxInt16 - 1, Commit: true, Version: 5}, now, newPID)
	apply(t, "retry with the old id", done, r, OK)
	if r.ProducerID != 2000 || r.Epoch != 0 {
		t.Fatalf("retry must learn the new id: %+v", r)
	}
	apply(t, "abort with the old id", done, EndTxn(done, EndTxnRequest{ProducerID: pid, Epoch: math.MaxInt16 - 1, Commit: false, Version: 5}, now, newPID), ITS)
	next := apply(t, "new id works", done, AdmitBatch(done, ProduceRequest{ProducerID: 2000, Epoch: 0, Partition: tp0, Version: 12}, now), OK)
	if next.LastProducerID != 2000 {
		t.Fatalf("LastProducerID follows each transition: %+v", next)
	}
}

func TestKIP360Resume(t *testing.T) {
	newPID := pids()
	cur := fixture(CompleteAbort) // epoch 5, last 4
	r := initTx(cur, pid, epoch, newPID)
	resumed := apply(t, "resume", cur, r, OK)
	if r.ProducerID != pid || r.Epoch != epoch+1 || resumed.LastEpoch != epoch {
		t.Fatalf("resume: %+v %+v", r, resumed)
	}
	r2 := initTx(resumed, pid, epoch, newPID)
	again := apply(t, "retried resume", resumed, r2, OK)
	if r2.Epoch != epoch+1 || again.Epoch != epoch+1 {
		t.Fatalf("a retried resume must not bump again: %+v", r2)
	}
	// A new instance takes over: the last epoch is forgotten, so the old
	// instance's resume, retry or not, is fenced.
	taken := apply(t, "new instance", again, initTx(again, NoProducerID, NoEpoch, newPID), OK)
	if taken.Epoch != epoch+2 || taken.LastEpoch != NoEpoch {
		t.Fatalf("takeover: %+v", taken)
	}
	apply(t, "old resume", taken, initTx(taken, pid, epoch+1, newPID), PF)
	apply(t, "old resume retry", taken, initTx(taken, pid, epoch, newPID), PF)
	r = InitProducerID(cfg, taken, InitProducerIDRequest{TransactionalID: "tx", TimeoutMs: 1000, ProducerID: pid, Epoch: epoch, Version: 3}, now, newPID)
	if r.Err != IPE || r.ProducerID != NoProducerID {
		t.Fatalf("v3 clients get INVALID_PRODUCER_EPOCH: %+v", r)
	}
	// Resume of an unknown id: a fresh producer id, no fencing.
	r = initTx(nil, 77, 3, newPID)
	apply(t, "resume unknown", nil, r, OK)
	if r.ProducerID == 77 || r.Epoch != 0 {
		t.Fatalf("resume of an unknown id: %+v", r)
	}
}

func TestInitProducerIDBadRequests(t *testing.T) {
	newPID := func() int64 { t.Fatal("no producer id may be allocated"); return 0 }
	for _, c := range []struct {
		name string
		req  InitProducerIDRequest
		want int16
	}{
		{"timeout above max", InitProducerIDRequest{TransactionalID: "tx", TimeoutMs: cfg.MaxTimeoutMs + 1, ProducerID: -1, Epoch: -1}, kerr.InvalidTransactionTimeout.Code},
		{"zero timeout", InitProducerIDRequest{TransactionalID: "tx", TimeoutMs: 0, ProducerID: -1, Epoch: -1}, kerr.InvalidTransactionTimeout.Code},
		{"empty id", InitProducerIDRequest{TimeoutMs: 1000, ProducerID: -1, Epoch: -1}, kerr.InvalidRequest.Code},
		{"pid without epoch", InitProducerIDRequest{TransactionalID: "tx", TimeoutMs: 1000, ProducerID: 5, Epoch: -1}, kerr.InvalidRequest.Code},
		{"epoch without pid", InitProducerIDRequest{TransactionalID: "tx", TimeoutMs: 1000, ProducerID: -1, Epoch: 2}, kerr.InvalidRequest.Code},
	} {
		r := InitProducerID(cfg, nil, c.req, now, newPID)
		if r.Err != c.want || r.Txn != nil || r.ProducerID != NoProducerID {
			t.Errorf("%s: %+v", c.name, r)
		}
	}
	if r := InitProducerID(cfg, nil, InitProducerIDRequest{TransactionalID: "tx", TimeoutMs: cfg.MaxTimeoutMs, ProducerID: -1, Epoch: -1}, now, pids()); r.Err != OK {
		t.Errorf("the max timeout itself is allowed: %+v", r)
	}
}

// TestZombieFencing: a new instance's InitProducerId aborts the old
// instance's open transaction with a fenced epoch; the old instance can
// neither write nor commit; the new one gets in once the abort completed.
func TestZombieFencing(t *testing.T) {
	for _, tv := range []int8{1, 2} {
		c := Config{MaxTimeoutMs: cfg.MaxTimeoutMs, TxnVersion: tv}
		newPID := pids()
		cur := fixture(Ongoing)
		r := InitProducerID(c, cur, InitProducerIDRequest{TransactionalID: "tx", TimeoutMs: 1000, ProducerID: -1, Epoch: -1, Version: 4}, now, newPID)
		fenced := apply(t, "fence", cur, r, CONC)
		wantEpoch := epoch + int16(tv) // TV2's abort bumps once more
		if fenced.State != PrepareAbort || fenced.Epoch != wantEpoch || r.Action != Discard || r.ProducerID != NoProducerID {
			t.Fatalf("tv%d fence: %+v %+v", tv, r, fenced)
		}
		apply(t, "retry during abort", fenced, InitProducerID(c, fenced, InitProducerIDRequest{TransactionalID: "tx", TimeoutMs: 1000, ProducerID: -1, Epoch: -1, Version: 4}, now, newPID), CONC)
		apply(t, "zombie add", fenced, AddPartitions(fenced, AddPartitionsRequest{ProducerID: pid, Epoch: epoch, Partitions: []TopicPartition{tp1}, Version: 3}, now), PF)
		apply(t, "zombie produce", fenced, AdmitBatch(fenced, ProduceRequest{ProducerID: pid, Epoch: epoch, Partition: tp0, Version: 9}, now), IPE)
		apply(t, "zombie commit v3", fenced, EndTxn(fenced, EndTxnRequest{ProducerID: pid, Epoch: epoch, Commit: true, Version: 3}, now, newPID), PF)
		done := apply(t, "complete", fenced, Complete(fenced, now), OK)
		if tv == 2 {
			// Clients send EndTxn v5 only to a TV2 coordinator, whose fence
			// bumps twice, so the zombie's epoch is not mistaken for a retry.
			apply(t, "zombie commit v5", fenced, EndTxn(fenced, EndTxnRequest{ProducerID: pid, Epoch: epoch, Commit: true, Version: 5}, now, newPID), PF)
			apply(t, "zombie commit v5 after abort", done, EndTxn(done, EndTxnRequest{ProducerID: pid, Epoch: epoch, Commit: true, Version: 5}, now, newPID), PF)
		}
		apply(t, "zombie commit after abort", done, EndTxn(done, EndTxnRequest{ProducerID: pid, Epoch: epoch, Commit: true, Version: 3}, now, newPID), PF)
		r = InitProducerID(c, done, InitProducerIDRequest{TransactionalID: "tx", TimeoutMs: 1000, ProducerID: -1, Epoch: -1, Version: 4}, now, newPID)
		apply(t, "new instance", done, r, OK)
		if r.ProducerID != pid || r.Epoch != wantEpoch+1 {
			t.Fatalf("tv%d new instance got %d/%d", tv, r.ProducerID, r.Epoch)
		}
	}
}

func TestTimeout(t *testing.T) {
	cur := fixture(Ongoing) // started at now-100, timeout 60s
	deadline := cur.StartTimeMs + int64(cur.TimeoutMs)
	if r := Timeout(cfg, cur, deadline); r.Txn != nil {
		t.Fatalf("not yet timed out at the deadline: %+v", r)
	}
	for _, tv := range []int8{1, 2} {
		c := Config{MaxTimeoutMs: cfg.MaxTimeoutMs, TxnVersion: tv}
		r := Timeout(c, cur, deadline+1)
		aborted := apply(t, "timeout", cur, r, OK)
		if aborted.State != PrepareAbort || r.Action != Discard || aborted.Epoch != epoch+int16(tv) {
			t.Fatalf("tv%d timeout: %+v", tv, aborted)
		}
		apply(t, "late commit", aborted, EndTxn(aborted, EndTxnRequest{ProducerID: pid, Epoch: epoch, Commit: true, Version: 4}, now, pids()), PF)
		if r := Timeout(c, aborted, deadline+2); r.Txn != nil {
			t.Fatal("an aborting transaction is not timed out again")
		}
	}
	// At the last epoch the fence cannot bump past MaxInt16, and no new
	// producer id is allocated on this path; the next InitProducerId rotates.
	cur.Epoch = math.MaxInt16 - 1
	r := Timeout(cfg, cur, deadline+1)
	aborted := apply(t, "timeout at the last epoch", cur, r, OK)
	if aborted.Epoch != math.MaxInt16 || aborted.NextProducerID != NoProducerID {
		t.Fatalf("%+v", aborted)
	}
	done := apply(t, "complete", aborted, Complete(aborted, now), OK)
	r = initTx(done, NoProducerID, NoEpoch, pids())
	apply(t, "init", done, r, OK)
	if r.ProducerID != 2000 || r.Epoch != 0 {
		t.Fatalf("rotation after an exhausting fence: %+v", r)
	}
}

func TestExpire(t *testing.T) {
	for _, s := range States() {
		cur := fixture(s)
		r := Expire(cur, cur.LastUpdateMs+1000, 1000)
		if (r.Txn != nil) != s.ExpirationAllowed() {
			t.Errorf("%v: expired=%v", s, r.Txn != nil)
		}
		checkResult(t, "expire", cur, r)
		if r := Expire(cur, cur.LastUpdateMs+999, 1000); r.Txn != nil {
			t.Errorf("%v expired too early", s)
		}
	}
	// An expired id starts over.
	r := initTx(&Txn{State: Dead, ProducerID: pid, Epoch: epoch}, NoProducerID, NoEpoch, pids())
	if r.Err != OK || r.ProducerID != 2000 || r.Epoch != 0 {
		t.Fatalf("init after expiry: %+v", r)
	}
}

func TestCompleteClearsAndKeepsEpochTV1(t *testing.T) {
	cur := fixture(PrepareAbort)
	r := Complete(cur, now)
	done := apply(t, "complete", cur, r, OK)
	if done.State != CompleteAbort || done.Epoch != epoch || done.ProducerID != pid || done.Partitions != nil || done.PendingOffsets != nil {
		t.Fatalf("%+v", done)
	}
}

// TestResumeAtExhaustedEpoch covers a resume naming another epoch while the
// current one is exhausted, where Kafka throws IllegalStateException: a
// retry of the resume that reached the last epoch gets the same answer, any
// other epoch is fenced.
func TestResumeAtExhaustedEpoch(t *testing.T) {
	cur := fixture(Empty)
	cur.Epoch, cur.LastEpoch = math.MaxInt16-1, math.MaxInt16-2
	r := initTx(cur, pid, math.MaxInt16-2, pids())
	apply(t, "retry", cur, r, OK)
	if r.ProducerID != pid || r.Epoch != math.MaxInt16-1 {
		t.Fatalf("%+v", r)
	}
	apply(t, "stale", cur, initTx(cur, pid, 3, pids()), PF)
}

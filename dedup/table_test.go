package dedup

import (
	"context"
	"errors"
	"math"
	"reflect"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
)

// ---- Begin / Written ----

func TestBeginFirstBatchAsksEndOffsetOnce(t *testing.T) {
	tt := newTable(t)
	tt.be.set(func(f *fakeBackend) { f.end = 500 })
	tok := tt.beginWrite(t, k1, bi(0, 0, 5))
	ends, _ := tt.be.calls()
	if !reflect.DeepEqual(ends, []endCall{{k1.Topic, k1.Partition}}) {
		t.Fatalf("EndOffset calls %+v", ends)
	}
	tt.be.wantCounts(t, 1, 0)
	written(t, tok, 500)
	tt.writeBatch(t, k1, bi(0, 5, 5), 505)
	tt.beginExpect(t, k1, bi(0, 5, 5), dup(505))
	tt.beginExpect(t, k1, bi(0, 0, 5), dup(500))
	tt.beginExpect(t, k1, bi(0, 11, 1), reject(kerr.OutOfOrderSequenceNumber.Code))
	tt.be.wantCounts(t, 1, 0)
	// Another partition of the same producer is a first-seen key.
	k2 := k1
	k2.Partition++
	tt.writeBatch(t, k2, bi(0, 0, 1), 501)
	tt.be.wantCounts(t, 2, 0)
}

func TestBeginUnknownProducerAtArbitrarySeq(t *testing.T) {
	tt := newTable(t)
	tt.writeBatch(t, k1, bi(4, 123456, 10), 0)
	tt.beginExpect(t, k1, bi(4, 123456, 10), dup(0))
	tt.writeBatch(t, k1, bi(4, 123466, 1), 10)
	tt.beginExpect(t, k1, bi(3, 123467, 1), reject(kerr.InvalidProducerEpoch.Code))
}

func TestBeginWrapAround(t *testing.T) {
	tt := newTable(t)
	tt.writeBatch(t, k1, bi(0, math.MaxInt32-6, 5), 0) // ..MaxInt32-2
	tt.writeBatch(t, k1, bi(0, math.MaxInt32-1, 5), 5) // spans: ..2
	tt.beginExpect(t, k1, bi(0, math.MaxInt32-1, 5), dup(5))
	tt.beginExpect(t, k1, bi(0, 0, 3), reject(kerr.OutOfOrderSequenceNumber.Code))
	tt.writeBatch(t, k1, bi(0, 3, 1), 10)
	if p := tt.Producers(k1.Topic, k1.Partition); len(p) != 1 || p[0].LastSequence != 3 {
		t.Fatalf("producers %+v", p)
	}
}

func TestBeginFirstSeenWaitsDuringEndOffset(t *testing.T) {
	tt := newTable(t)
	gate, entered := make(chan struct{}), make(chan struct{}, 4)
	tt.be.set(func(f *fakeBackend) { f.end, f.gate, f.entered = 40, gate, entered })
	ctx := testCtx(t)
	first := tt.beginAsync(ctx, k1, bi(0, 0, 5))
	<-entered // the first Begin is inside EndOffset, holding the key
	retry := tt.beginAsync(ctx, k1, bi(0, 0, 5))
	stillBlocked(t, retry)
	stillBlocked(t, first)
	close(gate)
	// Once the key is settled either Begin may take it; the other then
	// waits for that one's Written and answers a duplicate.
	var r beginResult
	waiter := retry
	select {
	case r = <-first:
	case r = <-retry:
		waiter = first
	case <-time.After(20 * time.Second):
		t.Fatal("deadlock")
	}
	if r.err != nil || r.d.Verdict != Write || r.tok == nil {
		t.Fatalf("Begin that took the key: %+v", r)
	}
	stillBlocked(t, waiter) // waiting for the written batch's token
	written(t, r.tok, 40)
	if r := receive(t, waiter); r.err != nil || r.d != dup(40) || r.tok != nil {
		t.Fatalf("the other Begin: %+v", r)
	}
	tt.be.wantCounts(t, 1, 0)
}

func TestBeginWaitsForInflightBatch(t *testing.T) {
	for _, c := range []struct {
		name string
		next BatchInfo
		want Decision // the decision after the first batch is written at 700
	}{
		{"retry of the in-flight batch is a duplicate", bi(0, 10, 5), dup(700)},
		{"next batch is written", bi(0, 15, 5), write()},
		{"gap after the in-flight batch", bi(0, 16, 1), reject(kerr.OutOfOrderSequenceNumber.Code)},
		{"new epoch at 0", bi(1, 0, 1), write()},
		{"older epoch", bi(-1, 15, 1), reject(kerr.InvalidProducerEpoch.Code)},
	} {
		t.Run(c.name, func(t *testing.T) {
			tt := newTable(t)
			// Any sequence is accepted first; a state with no batch would
			// answer Write for every batch of the epoch, so each case below
			// tells whether the second Begin decided after Written.
			tok := tt.beginWrite(t, k1, bi(0, 10, 5))
			ctx := testCtx(t)
			second := tt.beginAsync(ctx, k1, c.next)
			stillBlocked(t, second)
			// Other keys are not held up.
			other := Key{ProducerID: k1.ProducerID + 1, Topic: k1.Topic, Partition: k1.Partition}
			written(t, tt.beginWrite(t, other, bi(0, 10, 5)), 600)
			stillBlocked(t, second)
			written(t, tok, 700)
			r := receive(t, second)
			if r.err != nil || r.d != c.want || (r.tok != nil) != (c.want.Verdict == Write) {
				t.Fatalf("second Begin: %+v, want %+v", r, c.want)
			}
			if r.tok != nil {
				written(t, r.tok, 705)
			}
			tt.be.wantCounts(t, 2, 0)
		})
	}
}

func TestBeginManyWaiters(t *testing.T) {
	// Five pipelined batches of one producer: each Begin waits for the
	// batch in flight and decides on the state it left.
	tt := newTable(t)
	tok := tt.beginWrite(t, k1, bi(0, 0, 1))
	ctx := testCtx(t)
	var waiting []<-chan beginResult
	for i := int32(1); i < 5; i++ {
		waiting = append(waiting, tt.beginAsync(ctx, k1, bi(0, i, 1)))
	}
	off := int64(0)
	written(t, tok, off)
	// The waiters may wake in any order; an out-of-order one is answered 45
	// and a client would retry it. Drive them until every one answered.
	for range waiting {
		var r beginResult
		select {
		case r = <-waiting[0]:
		case r = <-waiting[1]:
		case r = <-waiting[2]:
		case r = <-waiting[3]:
		case <-time.After(20 * time.Second):
			t.Fatal("deadlock")
		}
		if r.err != nil {
			t.Fatal(r.err)
		}
		switch r.d.Verdict {
		case Write:
			off++
			written(t, r.tok, off)
		case Reject:
			if r.d.Err != kerr.OutOfOrderSequenceNumber.Code {
				t.Fatalf("waiter: %+v", r.d)
			}
		default:
			t.Fatalf("waiter: %+v", r.d)
		}
	}
	// Everything written so far is a contiguous prefix of 0..4 and the next
	// one in line is accepted.
	st := tt.Producers(k1.Topic, k1.Partition)
	if len(st) != 1 {
		t.Fatalf("producers %+v", st)
	}
	last := st[0].LastSequence
	if int64(last) != off {
		t.Fatalf("last sequence %d after %d writes", last, off+1)
	}
	tt.writeBatch(t, k1, bi(0, last+1, 1), off+1)
}

func TestBeginContextCancelledWhileWaiting(t *testing.T) {
	tt := newTable(t)
	tok := tt.beginWrite(t, k1, bi(0, 0, 5))
	ctx, cancel := context.WithCancel(context.Background())
	second := tt.beginAsync(ctx, k1, bi(0, 5, 5))
	stillBlocked(t, second)
	cancel()
	if r := receive(t, second); !errors.Is(r.err, context.Canceled) || r.tok != nil {
		t.Fatalf("cancelled Begin: %+v", r)
	}
	// The holder is unaffected.
	written(t, tok, 10)
	tt.writeBatch(t, k1, bi(0, 5, 5), 15)
}

func TestWrittenAllGroup(t *testing.T) {
	tt := newTable(t)
	var toks []*Token
	var offs []int64
	for i := range 20 {
		k := Key{ProducerID: int64(i), Topic: "t", Partition: int32(i % 3)}
		toks = append(toks, tt.beginWrite(t, k, bi(0, 0, 2)))
		offs = append(offs, int64(100+i))
	}
	for i, err := range WrittenAll(toks, offs) {
		if err != nil {
			t.Fatalf("token %d: %v", i, err)
		}
	}
	tt = tt.reopen(t, 24*time.Hour)
	for i := range 20 {
		k := Key{ProducerID: int64(i), Topic: "t", Partition: int32(i % 3)}
		tt.beginExpect(t, k, bi(0, 0, 2), dup(int64(100+i)))
	}
	tt.be.wantCounts(t, 0, 0)
}

// ---- persistence and unverified states ----

func TestEpochFencingAcrossReopen(t *testing.T) {
	tt := newTable(t)
	tt.writeBatch(t, k1, bi(3, 0, 5), 0)
	tt.writeBatch(t, k1, bi(3, 5, 5), 5)
	tt = tt.reopen(t, 24*time.Hour)
	tt.beginExpect(t, k1, bi(2, 10, 5), reject(kerr.InvalidProducerEpoch.Code))
	tt.beginExpect(t, k1, bi(2, 5, 5), reject(kerr.InvalidProducerEpoch.Code))
	tt.beginExpect(t, k1, bi(0, 0, 1), reject(kerr.InvalidProducerEpoch.Code))
	tt.beginExpect(t, k1, bi(4, 10, 1), reject(kerr.OutOfOrderSequenceNumber.Code))
	tt.be.wantCounts(t, 0, 0)
	tt.writeBatch(t, k1, bi(4, 0, 1), 10)
	tt.beginExpect(t, k1, bi(3, 10, 5), reject(kerr.InvalidProducerEpoch.Code))
	tt = tt.reopen(t, 24*time.Hour)
	tt.beginExpect(t, k1, bi(3, 5, 5), reject(kerr.InvalidProducerEpoch.Code))
	tt.beginExpect(t, k1, bi(4, 0, 1), dup(10))
}

func TestProducers(t *testing.T) {
	tt := newTable(t)
	now := time.UnixMilli(1_700_000_000_000)
	tt.now = func() time.Time { return now }
	for _, pid := range []int64{42, 5, 19} {
		k := Key{ProducerID: pid, Topic: "t", Partition: 1}
		tt.writeBatch(t, k, bi(int16(pid%3), 0, 5), pid)
		now = now.Add(time.Second)
		tt.writeBatch(t, k, bi(int16(pid%3), 5, int32(pid)), pid+5)
	}
	// Same producer, other partition and other topic: not listed.
	tt.writeBatch(t, Key{ProducerID: 5, Topic: "t", Partition: 2}, bi(0, 0, 100), 0)
	tt.writeBatch(t, Key{ProducerID: 6, Topic: "u", Partition: 1}, bi(0, 0, 100), 0)
	// A producer with state but no batch written yet.
	empty := Key{ProducerID: 11, Topic: "t", Partition: 1}
	tt.beginWrite(t, empty, bi(1, 50, 1)).Failed(false)

	got := tt.Producers("t", 1)
	base := time.UnixMilli(1_700_000_000_000)
	want := []Producer{
		{ProducerID: 5, Epoch: 2, LastSequence: 9, LastUpdateMs: base.Add(2 * time.Second).UnixMilli()},
		{ProducerID: 11, Epoch: 1, LastSequence: -1, LastUpdateMs: base.Add(3 * time.Second).UnixMilli()},
		{ProducerID: 19, Epoch: 1, LastSequence: 23, LastUpdateMs: base.Add(3 * time.Second).UnixMilli()},
		{ProducerID: 42, Epoch: 0, LastSequence: 46, LastUpdateMs: base.Add(1 * time.Second).UnixMilli()},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Producers(t, 1) =\n%+v\nwant\n%+v", got, want)
	}
	if got := tt.Producers("t", 9); len(got) != 0 {
		t.Fatalf("Producers(t, 9) = %+v", got)
	}
	if got := tt.Producers("u", 1); len(got) != 1 || got[0].ProducerID != 6 || got[0].LastSequence != 99 {
		t.Fatalf("Producers(u, 1) = %+v", got)
	}
	// The same listing after a restart (the empty state was persisted when
	// its first batch was settled).
	tt = tt.reopen(t, 100*365*24*time.Hour)
	if got := tt.Producers("t", 1); !reflect.DeepEqual(got, want) {
		t.Fatalf("after reopen: Producers(t, 1) =\n%+v\nwant\n%+v", got, want)
	}
}

// ---- expiry ----

func TestExpiryOnOpen(t *testing.T) {
	tt := newTable(t)
	// The expire loop of a 24 h table ticks once a minute, so setting now
	// here races with nothing.
	minuteAgo := time.Now().Add(-time.Minute)
	secondsAgo := time.Now().Add(-5 * time.Second)
	tt.now = func() time.Time { return minuteAgo }
	kOld := k1
	tt.writeBatch(t, kOld, bi(0, 0, 5), 0)
	tt.now = func() time.Time { return secondsAgo }
	kNew := Key{ProducerID: 8, Topic: "orders", Partition: 3}
	tt.writeBatch(t, kNew, bi(0, 0, 5), 5)

	tt = tt.reopen(t, time.Hour)
	if p := tt.Producers("orders", 3); len(p) != 2 {
		t.Fatalf("with 1h expiration: %+v", p)
	}
	tt = tt.reopen(t, 30*time.Second)
	if p := tt.Producers("orders", 3); len(p) != 1 || p[0].ProducerID != kNew.ProducerID {
		t.Fatalf("with 30s expiration: %+v", p)
	}
	// The dropped state is gone for good: its retry is an unknown
	// producer's batch (written; a new EndOffset), not a duplicate.
	tt = tt.reopen(t, time.Hour)
	if p := tt.Producers("orders", 3); len(p) != 1 || p[0].ProducerID != kNew.ProducerID {
		t.Fatalf("expired state back from disk: %+v", p)
	}
	tt.now = func() time.Time { return minuteAgo }
	tt.beginWrite(t, kOld, bi(0, 0, 5)).Failed(false)
	tt.be.wantCounts(t, 1, 0)

	tt.close()
	// Every state was last updated seconds ago or more: a 1 ms expiration
	// drops them all.
	ttOne := openTable(t, tt.dir, &fakeBackend{}, time.Millisecond)
	if p := ttOne.Producers("orders", 3); len(p) != 0 {
		t.Fatalf("with 1ms expiration: %+v", p)
	}
}

func TestExpireSkipsInflightAndDropsIdle(t *testing.T) {
	tt := newTable(t) // 24 h: the loop does not tick during the test
	start := time.Now()
	tt.now = func() time.Time { return start }
	idle := Key{ProducerID: 1, Topic: "t", Partition: 0}
	busy := Key{ProducerID: 2, Topic: "t", Partition: 0}
	tt.writeBatch(t, idle, bi(0, 0, 1), 0)
	tt.writeBatch(t, busy, bi(0, 0, 1), 1)
	tok := tt.beginWrite(t, busy, bi(0, 1, 1))

	later := start.Add(25 * time.Hour)
	tt.now = func() time.Time { return later }
	tt.expire()
	if p := tt.Producers("t", 0); len(p) != 1 || p[0].ProducerID != busy.ProducerID {
		t.Fatalf("after expire: %+v", p)
	}
	written(t, tok, 1)
	tt.beginExpect(t, busy, bi(0, 1, 1), dup(1))
	// The idle one is unknown now: any sequence is taken.
	tt.writeBatch(t, idle, bi(0, 77, 1), 2)
	tt.be.wantCounts(t, 3, 0)

	// Deleted from disk too.
	later2 := later.Add(25 * time.Hour)
	tt.now = func() time.Time { return later2 }
	tt.expire()
	if p := tt.Producers("t", 0); len(p) != 0 {
		t.Fatalf("after second expire: %+v", p)
	}
	tt = tt.reopen(t, 100*365*24*time.Hour)
	if p := tt.Producers("t", 0); len(p) != 0 {
		t.Fatalf("expired states back from disk: %+v", p)
	}
}

func TestExpireLoop(t *testing.T) {
	// 1 s: long enough for the state to be seen right after it is
	// written, short enough for the loop (ticking every 100 ms) to drop it
	// soon.
	tt := openTable(t, t.TempDir(), &fakeBackend{}, time.Second)
	tt.writeBatch(t, k1, bi(0, 0, 1), 0)
	if p := tt.Producers(k1.Topic, k1.Partition); len(p) != 1 {
		t.Fatalf("producers %+v", p)
	}
	// Poll for the background loop's effect (bounded; not a sleep used as
	// synchronisation).
	deadline := time.Now().Add(10 * time.Second)
	for len(tt.Producers(k1.Topic, k1.Partition)) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("idle producer not expired by the background loop")
		}
		time.Sleep(5 * time.Millisecond)
	}
	tt = tt.reopen(t, 100*365*24*time.Hour)
	if p := tt.Producers(k1.Topic, k1.Partition); len(p) != 0 {
		t.Fatalf("expired state back from disk: %+v", p)
	}
}

// ---- duplicates answered from durable state only ----

// A retry of a batch whose new state is still on its way to disk must not be
// answered "ok" before it is there: after a crash the state would not hold
// the batch, and the client's next batch would meet the older state and get
// OUT_OF_ORDER_SEQUENCE_NUMBER (issue 9, item 10).
func TestDuplicateAnsweredOnlyFromDurableState(t *testing.T) {
	tt := newTable(t)
	tt.writeBatch(t, k1, bi(0, 0, 2), 100)

	held, unhold := tt.holdCommits(t)
	tok := tt.beginWrite(t, k1, bi(0, 2, 3))
	wrote := make(chan []error, 1)
	go func() { wrote <- WrittenAll([]*Token{tok}, []int64{102}) }()
	<-held // the new state's group commit is under way and held

	// With the state not durable the retry cannot be answered: it must
	// wait (a cancelled context shows it would).
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	if d, _, err := tt.Begin(cancelled, k1, bi(0, 2, 3), func() [32]byte { return digestOf(k1, bi(0, 2, 3)) }); err == nil {
		t.Fatalf("retry answered %+v while its state was not durable", d)
	}
	ch := tt.beginAsync(testCtx(t), k1, bi(0, 2, 3))
	stillBlocked(t, ch)
	unhold()
	if r := receive(t, ch); r.err != nil || r.d != dup(102) {
		t.Fatalf("retry after the state is durable: %+v, want %+v", r, dup(102))
	}
	if errs := <-wrote; errs[0] != nil {
		t.Fatal(errs[0])
	}
}

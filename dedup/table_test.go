package dedup

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/eosproxy/eosproxy/store"

	"github.com/twmb/franz-go/pkg/kerr"
)

// ---- fake backend ----

type endCall struct {
	Topic     string
	Partition int32
}

type findCall struct {
	Topic     string
	Partition int32
	From      int64
	Digest    [32]byte
}

// fakeBackend records every call and answers as configured. If gate is set,
// EndOffset and FindBatch first announce themselves on entered (if set) and
// then wait for gate (or ctx).
type fakeBackend struct {
	mu        sync.Mutex
	end       int64
	endErr    error
	found     bool
	foundAt   int64
	findErr   error
	endCalls  []endCall
	findCalls []findCall
	gate      chan struct{}
	entered   chan struct{}
}

func (f *fakeBackend) wait(ctx context.Context) error {
	f.mu.Lock()
	gate, entered := f.gate, f.entered
	f.mu.Unlock()
	if entered != nil {
		entered <- struct{}{}
	}
	if gate == nil {
		return nil
	}
	select {
	case <-gate:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (f *fakeBackend) EndOffset(ctx context.Context, topic string, partition int32) (int64, error) {
	f.mu.Lock()
	f.endCalls = append(f.endCalls, endCall{topic, partition})
	f.mu.Unlock()
	if err := f.wait(ctx); err != nil {
		return 0, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.end, f.endErr
}

func (f *fakeBackend) FindBatch(ctx context.Context, topic string, partition int32, from int64, digest [32]byte) (int64, bool, error) {
	f.mu.Lock()
	f.findCalls = append(f.findCalls, findCall{topic, partition, from, digest})
	f.mu.Unlock()
	if err := f.wait(ctx); err != nil {
		return 0, false, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.findErr != nil {
		return 0, false, f.findErr
	}
	return f.foundAt, f.found, nil
}

func (f *fakeBackend) set(fn func(f *fakeBackend)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func (f *fakeBackend) calls() (ends []endCall, finds []findCall) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]endCall(nil), f.endCalls...), append([]findCall(nil), f.findCalls...)
}

func (f *fakeBackend) counts() (ends, finds int) {
	e, fi := f.calls()
	return len(e), len(fi)
}

func (f *fakeBackend) wantCounts(t *testing.T, ends, finds int) {
	t.Helper()
	if e, fi := f.counts(); e != ends || fi != finds {
		t.Fatalf("backend calls: EndOffset %d, FindBatch %d; want %d, %d", e, fi, ends, finds)
	}
}

// ---- helpers ----

// digestOf is a stand-in for the records' digest: distinct per batch.
func digestOf(k Key, b BatchInfo) [32]byte {
	return sha256.Sum256(fmt.Appendf(nil, "%+v/%+v", k, b))
}

// testTable is one Table over one badger directory.
type testTable struct {
	*Table
	db     *store.DB
	dir    string
	be     *fakeBackend
	closed bool // Table.Close was called
}

// openTable opens a table whose idle loop does not tick during a test
// (tests sweep with sweepIdle themselves, and may set now).
func openTable(t *testing.T, dir string, be *fakeBackend, exp time.Duration) *testTable {
	return openTableIdle(t, dir, be, exp, 24*time.Hour)
}

func openTableIdle(t *testing.T, dir string, be *fakeBackend, exp, idleAfter time.Duration) *testTable {
	t.Helper()
	db, err := store.Open(dir, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	tbl, err := open(db, be, exp, idleAfter, zerolog.Nop())
	if err != nil {
		db.Close()
		t.Fatal(err)
	}
	tt := &testTable{Table: tbl, db: db, dir: dir, be: be}
	t.Cleanup(tt.close)
	return tt
}

func newTable(t *testing.T) *testTable {
	return openTable(t, t.TempDir(), &fakeBackend{}, 24*time.Hour)
}

// closeTable stops the table (not its database); safe to call twice.
func (tt *testTable) closeTable() {
	if !tt.closed {
		tt.closed = true
		tt.Table.Close()
	}
}

// close stops the table and closes its database; safe to call twice.
func (tt *testTable) close() {
	tt.closeTable()
	if tt.db != nil {
		tt.db.Close()
		tt.db = nil
	}
}

// reopen stops tt cleanly (Close) and opens a new table on the same
// directory with a fresh fake backend.
func (tt *testTable) reopen(t *testing.T, exp time.Duration) *testTable {
	t.Helper()
	tt.close()
	return openTable(t, tt.dir, &fakeBackend{}, exp)
}

// crash stops tt as a kill would leave it (what was queued for the disk is
// written, nothing more: no Close) and opens a new table on the same
// directory with a fresh fake backend.
func (tt *testTable) crash(t *testing.T) *testTable {
	t.Helper()
	if !tt.closed {
		tt.closed = true
		tt.stopLoops()
	}
	tt.close()
	return openTable(t, tt.dir, &fakeBackend{}, 24*time.Hour)
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

var k1 = Key{ProducerID: 7, Topic: "orders", Partition: 3}

func (tt *testTable) begin(t *testing.T, k Key, b BatchInfo) (Decision, *Token) {
	t.Helper()
	d, tok, err := tt.Begin(testCtx(t), k, b, func() [32]byte { return digestOf(k, b) })
	if err != nil {
		t.Fatalf("Begin(%+v, %+v): %v", k, b, err)
	}
	if (d.Verdict == Write) != (tok != nil) {
		t.Fatalf("Begin(%+v, %+v) = %+v with token %v", k, b, d, tok)
	}
	return d, tok
}

// beginWrite expects a Write and returns its token.
func (tt *testTable) beginWrite(t *testing.T, k Key, b BatchInfo) *Token {
	t.Helper()
	d, tok := tt.begin(t, k, b)
	if d.Verdict != Write {
		t.Fatalf("Begin(%+v, %+v) = %+v, want Write", k, b, d)
	}
	return tok
}

// beginExpect expects a final decision.
func (tt *testTable) beginExpect(t *testing.T, k Key, b BatchInfo, want Decision) {
	t.Helper()
	d, _ := tt.begin(t, k, b)
	if d != want {
		t.Fatalf("Begin(%+v, %+v) = %+v, want %+v", k, b, d, want)
	}
}

// written records tok's batch at off (one token's group commit).
func written(t *testing.T, tok *Token, off int64) {
	t.Helper()
	if errs := WrittenAll([]*Token{tok}, []int64{off}); len(errs) != 1 || errs[0] != nil {
		t.Fatalf("WrittenAll: %v", errs)
	}
}

// writeBatch runs one batch through Begin and Written at off.
func (tt *testTable) writeBatch(t *testing.T, k Key, b BatchInfo, off int64) {
	t.Helper()
	written(t, tt.beginWrite(t, k, b), off)
}

type beginResult struct {
	d   Decision
	tok *Token
	err error
}

// beginAsync runs Begin in a goroutine and delivers its result.
func (tt *testTable) beginAsync(ctx context.Context, k Key, b BatchInfo) <-chan beginResult {
	ch := make(chan beginResult, 1)
	go func() {
		d, tok, err := tt.Begin(ctx, k, b, func() [32]byte { return digestOf(k, b) })
		ch <- beginResult{d, tok, err}
	}()
	return ch
}

// stillBlocked is a negative check only: it fails if ch delivers within a
// short while. It cannot prove that a goroutine is blocked, only catch one
// that is not; the positive assertions that follow it (the decision taken
// after the release) are what show the wait happened.
func stillBlocked(t *testing.T, ch <-chan beginResult) {
	t.Helper()
	select {
	case r := <-ch:
		t.Fatalf("Begin returned while it should wait: %+v", r)
	case <-time.After(50 * time.Millisecond):
	}
}

// receive waits for ch (the test context bounds it, so a deadlock fails
// instead of hanging).
func receive(t *testing.T, ch <-chan beginResult) beginResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(20 * time.Second):
		t.Fatal("Begin did not return: deadlock")
		return beginResult{}
	}
}

// ---- producer ids ----

func TestNewProducerIDUniqueIncreasingAcrossReopen(t *testing.T) {
	tt := newTable(t)
	seen := map[int64]bool{}
	var last int64 = -1
	take := func(tt *testTable, n int, floor int64) {
		t.Helper()
		prev := floor
		for i := 0; i < n; i++ {
			id, err := tt.NewProducerID()
			if err != nil {
				t.Fatal(err)
			}
			if id < 0 {
				t.Fatalf("negative producer id %d", id)
			}
			if id <= prev {
				t.Fatalf("id %d after %d: not increasing (floor %d)", id, prev, floor)
			}
			if seen[id] {
				t.Fatalf("id %d handed out twice", id)
			}
			seen[id] = true
			prev = id
		}
		last = prev
	}
	take(tt, 2500, -1) // crosses two reservation blocks
	for round := 0; round < 3; round++ {
		floor := last
		tt = tt.reopen(t, 24*time.Hour)
		// New ids after a restart are above every id handed out before,
		// whether the last block was used up or not.
		take(tt, []int{1, 999, 1001}[round], floor)
	}
}

func TestNewProducerIDConcurrent(t *testing.T) {
	tt := newTable(t)
	const workers, each = 8, 400
	ids := make(chan int64, workers*each)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range each {
				id, err := tt.NewProducerID()
				if err != nil {
					t.Error(err)
					return
				}
				ids <- id
			}
		})
	}
	wg.Wait()
	close(ids)
	seen := map[int64]bool{}
	for id := range ids {
		if seen[id] {
			t.Fatalf("id %d handed out twice", id)
		}
		seen[id] = true
	}
	if len(seen) != workers*each {
		t.Fatalf("%d ids, want %d", len(seen), workers*each)
	}
}

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

func TestPersistenceCrashedStateIsUnverified(t *testing.T) {
	for _, found := range []bool{false, true} {
		t.Run(fmt.Sprintf("found=%v", found), func(t *testing.T) {
			tt := newTable(t)
			tt.be.set(func(f *fakeBackend) { f.end = 395 })
			tt.writeBatch(t, k1, bi(2, 0, 5), 400)
			tt.writeBatch(t, k1, bi(2, 5, 3), 405)
			tt = tt.crash(t)

			p := tt.Producers(k1.Topic, k1.Partition)
			if len(p) != 1 || p[0].ProducerID != k1.ProducerID || p[0].Epoch != 2 || p[0].LastSequence != 7 {
				t.Fatalf("reloaded producers %+v", p)
			}
			// Retries of remembered batches are answered from the state,
			// without a look at the backend.
			tt.beginExpect(t, k1, bi(2, 5, 3), dup(405))
			tt.beginExpect(t, k1, bi(2, 0, 5), dup(400))
			tt.beginExpect(t, k1, bi(2, 9, 1), reject(kerr.OutOfOrderSequenceNumber.Code))
			tt.beginExpect(t, k1, bi(1, 8, 1), reject(kerr.InvalidProducerEpoch.Code))
			tt.be.wantCounts(t, 0, 0)

			// The next batch may have been forwarded before the stop: it
			// is looked for from LowWater = 405 + 3.
			next := bi(2, 8, 4)
			tt.be.set(func(f *fakeBackend) { f.found, f.foundAt = found, 409 })
			d, tok := tt.begin(t, k1, next)
			_, finds := tt.be.calls()
			wantFind := []findCall{{k1.Topic, k1.Partition, 408, digestOf(k1, next)}}
			if !reflect.DeepEqual(finds, wantFind) {
				t.Fatalf("FindBatch calls %+v, want %+v", finds, wantFind)
			}
			tt.be.wantCounts(t, 0, 1)
			if found {
				if d != dup(409) {
					t.Fatalf("found batch: %+v, want Duplicate at 409", d)
				}
				// Recorded durably at once (the client is answered "ok"
				// with it): after another crash its retry is a duplicate
				// without another look, and the one after it is written.
				tt = tt.crash(t)
				tt.beginExpect(t, k1, next, dup(409))
				tt.be.wantCounts(t, 0, 0)
				tt.be.set(func(f *fakeBackend) { f.found = false })
				tt.writeBatch(t, k1, bi(2, 12, 1), 413)
				_, finds := tt.be.calls()
				if len(finds) != 1 || finds[0].From != 413 {
					t.Fatalf("FindBatch calls %+v, want one from 413", finds)
				}
			} else {
				if d.Verdict != Write {
					t.Fatalf("batch not in the backend: %+v, want Write", d)
				}
				written(t, tok, 410)
				tt.beginExpect(t, k1, next, dup(410))
				tt.writeBatch(t, k1, bi(2, 12, 1), 414)
			}
			tt.be.wantCounts(t, 0, 1) // one look per unverified state, no more

			// The found (or written) batch is durable too.
			tt = tt.crash(t)
			if found {
				tt.beginExpect(t, k1, next, dup(409))
			} else {
				tt.beginExpect(t, k1, next, dup(410))
			}
			tt.be.wantCounts(t, 0, 0)
		})
	}
}

func TestCrashAfterForwardingFirstBatch(t *testing.T) {
	// A new producer's first batch: the table persists the partition's end
	// before the write, so after a crash between forwarding and Written
	// the retry looks from there.
	for _, found := range []bool{false, true} {
		t.Run(fmt.Sprintf("found=%v", found), func(t *testing.T) {
			tt := newTable(t)
			tt.be.set(func(f *fakeBackend) { f.end = 500 })
			_ = tt.beginWrite(t, k1, bi(0, 0, 5)) // forwarded, then the proxy dies
			tt = tt.crash(t)
			p := tt.Producers(k1.Topic, k1.Partition)
			if len(p) != 1 || p[0].LastSequence != -1 || p[0].Epoch != 0 {
				t.Fatalf("reloaded producers %+v", p)
			}
			tt.be.set(func(f *fakeBackend) { f.found, f.foundAt = found, 503 })
			d, tok := tt.begin(t, k1, bi(0, 0, 5))
			_, finds := tt.be.calls()
			if len(finds) != 1 || finds[0].From != 500 || finds[0].Digest != digestOf(k1, bi(0, 0, 5)) {
				t.Fatalf("FindBatch calls %+v", finds)
			}
			tt.be.wantCounts(t, 0, 1)
			if found {
				if d != dup(503) {
					t.Fatalf("got %+v, want Duplicate at 503", d)
				}
			} else {
				if d.Verdict != Write {
					t.Fatalf("got %+v, want Write", d)
				}
				written(t, tok, 504)
			}
		})
	}
}

func TestFailedAmbiguousMakesNextBeginLook(t *testing.T) {
	tt := newTable(t)
	tt.be.set(func(f *fakeBackend) { f.end = 100 })
	tt.writeBatch(t, k1, bi(0, 0, 5), 100)

	// Not ambiguous: the backend refused the batch; the retry is written
	// without a look.
	tok := tt.beginWrite(t, k1, bi(0, 5, 5))
	tok.Failed(false)
	tok = tt.beginWrite(t, k1, bi(0, 5, 5))
	tt.be.wantCounts(t, 1, 0)

	// Ambiguous: the retry first looks from LowWater = 105.
	tok.Failed(true)
	// Out-of-order batches and retries of recorded batches are answered
	// without a look.
	tt.beginExpect(t, k1, bi(0, 10, 5), reject(kerr.OutOfOrderSequenceNumber.Code))
	tt.beginExpect(t, k1, bi(0, 0, 5), dup(100))
	tt.be.wantCounts(t, 1, 0)
	tok = tt.beginWrite(t, k1, bi(0, 5, 5)) // not found
	_, finds := tt.be.calls()
	if len(finds) != 1 || finds[0].From != 105 || finds[0].Digest != digestOf(k1, bi(0, 5, 5)) {
		t.Fatalf("FindBatch calls %+v", finds)
	}
	// Ambiguous again, and this time the batch had landed.
	tok.Failed(true)
	tt.be.set(func(f *fakeBackend) { f.found, f.foundAt = true, 107 })
	tt.beginExpect(t, k1, bi(0, 5, 5), dup(107))
	tt.be.wantCounts(t, 1, 2)
	// A found batch leaves the key unverified (more may have landed
	// unrecorded after it): the next one is looked for too, from LowWater
	// 107 + 5, and once it is not found the key is verified again.
	tt.be.set(func(f *fakeBackend) { f.found = false })
	tok = tt.beginWrite(t, k1, bi(0, 10, 5))
	tt.be.wantCounts(t, 1, 3)
	_, finds = tt.be.calls()
	if finds[2].From != 112 {
		t.Fatalf("third look from %d, want 112", finds[2].From)
	}
	written(t, tok, 112)
	_ = tt.beginWrite(t, k1, bi(0, 15, 5))
	tt.be.wantCounts(t, 1, 3)
}

func TestFailedAmbiguousFirstBatch(t *testing.T) {
	tt := newTable(t)
	tt.be.set(func(f *fakeBackend) { f.end = 70 })
	tok := tt.beginWrite(t, k1, bi(0, 3, 2))
	tok.Failed(true)
	tt.be.set(func(f *fakeBackend) { f.found, f.foundAt = true, 71 })
	tt.beginExpect(t, k1, bi(0, 3, 2), dup(71))
	_, finds := tt.be.calls()
	if len(finds) != 1 || finds[0].From != 70 {
		t.Fatalf("FindBatch calls %+v", finds)
	}
	tt.be.wantCounts(t, 1, 1)
}

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

// ---- backend errors ----

var errBackend = errors.New("backend unavailable")

func TestEndOffsetErrorReleasesKey(t *testing.T) {
	tt := newTable(t)
	tt.be.set(func(f *fakeBackend) { f.endErr = errBackend })
	for range 2 {
		d, tok, err := tt.Begin(testCtx(t), k1, bi(0, 0, 5), func() [32]byte { return digestOf(k1, bi(0, 0, 5)) })
		if !errors.Is(err, errBackend) || tok != nil || d != (Decision{}) {
			t.Fatalf("Begin with failing EndOffset: %+v %v %v", d, tok, err)
		}
	}
	if p := tt.Producers(k1.Topic, k1.Partition); len(p) != 0 {
		t.Fatalf("state created despite the error: %+v", p)
	}
	tt.be.set(func(f *fakeBackend) { f.endErr, f.end = nil, 30 })
	// Would deadlock if the failed Begins had kept the key.
	tok := tt.beginWrite(t, k1, bi(0, 0, 5))
	tt.be.wantCounts(t, 3, 0)
	written(t, tok, 30)
	tt.beginExpect(t, k1, bi(0, 0, 5), dup(30))
}

func TestFindBatchErrorReleasesKeyAndStaysUnverified(t *testing.T) {
	tt := newTable(t)
	tt.writeBatch(t, k1, bi(0, 0, 5), 10)
	tt = tt.crash(t)
	tt.be.set(func(f *fakeBackend) { f.findErr = errBackend })
	for range 2 {
		_, tok, err := tt.Begin(testCtx(t), k1, bi(0, 5, 5), func() [32]byte { return digestOf(k1, bi(0, 5, 5)) })
		if !errors.Is(err, errBackend) || tok != nil {
			t.Fatalf("Begin with failing FindBatch: %v %v", tok, err)
		}
	}
	tt.be.set(func(f *fakeBackend) { f.findErr = nil })
	tok := tt.beginWrite(t, k1, bi(0, 5, 5))
	// Still unverified after the errors: the successful Begin looked too.
	tt.be.wantCounts(t, 0, 3)
	written(t, tok, 15)
	tt.writeBatch(t, k1, bi(0, 10, 5), 20)
	tt.be.wantCounts(t, 0, 3)
}

func TestBackendErrorReleasesWaiters(t *testing.T) {
	// A second Begin waiting for the key while the first one's backend
	// call fails proceeds (and asks again) instead of hanging.
	tt := newTable(t)
	gate, entered := make(chan struct{}), make(chan struct{}, 4)
	tt.be.set(func(f *fakeBackend) { f.endErr, f.gate, f.entered = errBackend, gate, entered })
	ctx := testCtx(t)
	first := tt.beginAsync(ctx, k1, bi(0, 0, 5))
	<-entered
	second := tt.beginAsync(ctx, k1, bi(0, 0, 5))
	stillBlocked(t, second)
	tt.be.set(func(f *fakeBackend) { f.entered = nil })
	close(gate)
	if r := receive(t, first); !errors.Is(r.err, errBackend) {
		t.Fatalf("first: %+v", r)
	}
	if r := receive(t, second); !errors.Is(r.err, errBackend) {
		t.Fatalf("second: %+v", r)
	}
	tt.be.set(func(f *fakeBackend) { f.endErr = nil })
	tt.writeBatch(t, k1, bi(0, 0, 5), 0)
	tt.be.wantCounts(t, 3, 0)
}

func TestBackendCallCancelled(t *testing.T) {
	tt := newTable(t)
	gate, entered := make(chan struct{}), make(chan struct{}, 1)
	tt.be.set(func(f *fakeBackend) { f.gate, f.entered = gate, entered })
	ctx, cancel := context.WithCancel(context.Background())
	first := tt.beginAsync(ctx, k1, bi(0, 0, 5))
	<-entered
	cancel()
	if r := receive(t, first); !errors.Is(r.err, context.Canceled) || r.tok != nil {
		t.Fatalf("cancelled: %+v", r)
	}
	tt.be.set(func(f *fakeBackend) { f.gate, f.entered = nil, nil })
	tt.writeBatch(t, k1, bi(0, 0, 5), 0)
}

// ---- duplicates answered from durable state only ----

// A retry of a batch whose new state is still on its way to disk must not be
// answered "ok" before it is there: after a crash the state would not hold
// the batch, and the client's next batch would meet the older state and get
// OUT_OF_ORDER_SEQUENCE_NUMBER (issue 9, item 10).
func TestDuplicateAnsweredOnlyFromDurableState(t *testing.T) {
	tt := newTable(t)
	tt.writeBatch(t, k1, bi(0, 0, 2), 100)

	held, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	unhold := func() { tt.beforeCommit.Store(nil); once.Do(func() { close(release) }) }
	t.Cleanup(unhold) // registered after the table's: runs first, so Close can drain
	hook := func() {
		held <- struct{}{}
		<-release
	}
	tt.beforeCommit.Store(&hook)
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

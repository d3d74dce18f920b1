// Test helpers of the producer state table: a fake backend that records
// and gates its look-ups, and a table that can be reopened or crashed.

package dedup

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/eosproxy/eosproxy/store"
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
	// dedups: the fake stands for a backend with idempotence, taking
	// batches under a pairing (DropsLateCopies).
	dedups bool
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

// DropsLateCopies: without dedups, the fake is a backend without
// idempotence.
func (f *fakeBackend) DropsLateCopies() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.dedups
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
	// No wait before look-ups, except in the tests of that wait.
	tbl.lateGrace = 0
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

var errBackend = errors.New("backend unavailable")

// holdCommits makes the table's group commits wait: held receives when one
// is under way, and unhold (also run at cleanup) lets them all go.
func (tt *testTable) holdCommits(t *testing.T) (held <-chan struct{}, unhold func()) {
	h, release := make(chan struct{}, 1), make(chan struct{})
	var once sync.Once
	unhold = func() { tt.beforeCommit.Store(nil); once.Do(func() { close(release) }) }
	t.Cleanup(unhold) // registered after the table's: runs first, so Close can drain
	hook := func() {
		h <- struct{}{}
		<-release
	}
	tt.beforeCommit.Store(&hook)
	return h, unhold
}

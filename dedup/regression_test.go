package dedup

import (
	"testing"
	"time"
)

// Regression tests for bugs found in table.go while writing its tests.

// The first batch of a bumped epoch fails ambiguously (it may have landed):
// its retry must be looked for in the backend like any other, or it is
// written twice. Begin only settles unverified states when the batch's
// epoch equals the state's.
func TestRegressionAmbiguousFirstBatchOfNewEpoch(t *testing.T) {
	tt := newTable(t)
	tt.writeBatch(t, k1, bi(0, 0, 5), 100)
	tok := tt.beginWrite(t, k1, bi(1, 0, 5)) // KIP-360 bump, then a timeout
	tok.Failed(true)
	tt.be.set(func(f *fakeBackend) { f.found, f.foundAt = true, 105 })
	d, tok := tt.begin(t, k1, bi(1, 0, 5))
	if tok != nil {
		tok.Failed(false)
	}
	_, finds := tt.be.calls()
	if d != dup(105) || len(finds) != 1 || finds[0].From != 105 {
		t.Fatalf("retry of an ambiguous new-epoch batch that landed at 105: %+v, FindBatch calls %+v; want Duplicate at 105 after one look from 105", d, finds)
	}
}

// Same after a crash: the state on disk is at epoch 0, the batch forwarded
// before the crash was the first of epoch 1.
func TestRegressionCrashAfterForwardingFirstBatchOfNewEpoch(t *testing.T) {
	tt := newTable(t)
	tt.writeBatch(t, k1, bi(0, 0, 5), 100)
	_ = tt.beginWrite(t, k1, bi(1, 0, 5)) // forwarded, then the proxy dies
	tt = tt.crash(t)
	tt.be.set(func(f *fakeBackend) { f.found, f.foundAt = true, 105 })
	d, tok := tt.begin(t, k1, bi(1, 0, 5))
	if tok != nil {
		tok.Failed(false)
	}
	if d != dup(105) {
		t.Fatalf("retry after restart: %+v, want Duplicate at 105", d)
	}
}

// WrittenAll racing with (here: just after) Close must return, with an
// error, not hang: submit and commitLoop both choose at random between the
// commit channel and stop, so a commit can be queued where no one will
// ever answer it.
func TestRegressionWrittenAfterCloseHangs(t *testing.T) {
	for i := range 20 {
		tt := newTable(t)
		tok := tt.beginWrite(t, k1, bi(0, 0, 1))
		tt.closeTable()
		done := make(chan []error, 1)
		go func() { done <- WrittenAll([]*Token{tok}, []int64{0}) }()
		select {
		case errs := <-done:
			if errs[0] == nil {
				t.Fatalf("round %d: Written after Close reported durable", i)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("round %d: WrittenAll after Close hangs", i)
		}
		tt.close()
	}
}

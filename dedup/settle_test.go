// Tests of unknown outcomes: crashes, ambiguous failures and backend errors,
// and the look-ups that settle them.

package dedup

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
)

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

// A request the broker read before eosproxy's connection to it broke can be
// appended after the retry's look-up; a backend without idempotence then
// holds the batch twice. The look-up right after an unclear outcome waits
// lateWriteGrace first, so a first copy appended meanwhile is found.
func TestLookupWaitsForALateFirstCopy(t *testing.T) {
	tt := newTable(t)
	tt.lateGrace = lateWriteGrace
	tt.writeBatch(t, k1, bi(0, 0, 5), 100)
	retry := bi(0, 5, 5)
	tt.beginWrite(t, k1, retry).Failed(true) // the connection broke after the request
	var waited time.Duration
	tt.sleep = func(ctx context.Context, d time.Duration) error {
		waited = d
		// Meanwhile the broker appends the first copy it had queued.
		tt.be.set(func(f *fakeBackend) { f.found, f.foundAt = true, 105 })
		return nil
	}
	tt.beginExpect(t, k1, retry, dup(105))
	if waited <= 0 || waited > lateWriteGrace {
		t.Fatalf("look-up waited %v before reading the backend, want up to %v", waited, lateWriteGrace)
	}

	// A look-up long after the outcome became unclear does not wait.
	tt.sleep = func(ctx context.Context, d time.Duration) error { waited = d; return nil }
	tt.be.set(func(f *fakeBackend) { f.found = false })
	tt.beginWrite(t, k1, bi(0, 10, 5)).Failed(true)
	tt.now = func() time.Time { return time.Now().Add(time.Minute) }
	waited = 0
	d, tok := tt.begin(t, k1, bi(0, 10, 5))
	if d.Verdict != Write || waited != 0 {
		t.Fatalf("late look-up: %+v after waiting %v, want Write without waiting", d, waited)
	}
	tok.Failed(false)
}

package dedup

import (
	"testing"
	"time"
)

// TestCleanStopLeavesNothingUnverified: only a batch in flight can have an
// unknown outcome. After a clean stop a producer's next batch is written
// without a look-up (which could start below a log start that retention
// has moved since); a producer whose last outcome was unknown is still
// looked for.
func TestCleanStopLeavesNothingUnverified(t *testing.T) {
	tt := newTable(t)
	tt.be.set(func(f *fakeBackend) { f.end = 100 })
	unclear := Key{ProducerID: 8, Topic: "orders", Partition: 3}
	tt.writeBatch(t, k1, bi(0, 0, 5), 100)
	tt.writeBatch(t, unclear, bi(0, 0, 5), 105)
	tt.beginWrite(t, unclear, bi(0, 5, 5)).Failed(true) // a timeout
	tt = tt.reopen(t, 24*time.Hour)

	tt.be.set(func(f *fakeBackend) { f.end = 5000 })
	tt.writeBatch(t, k1, bi(0, 5, 5), 5000)
	// One EndOffset (a fresh low-water offset with the recorded intent),
	// no look-up.
	tt.be.wantCounts(t, 1, 0)
	tt.beginExpect(t, k1, bi(0, 0, 5), dup(100))

	tt.writeBatch(t, unclear, bi(0, 5, 5), 5005)
	_, finds := tt.be.calls()
	if len(finds) != 1 || finds[0].From != 110 {
		t.Fatalf("FindBatch calls %+v, want one from 110 for the batch with an unknown outcome", finds)
	}
}

// TestIdleProducerLookupBounded: a producer that writes rarely to a busy
// partition. Its low-water offset is the end of its last batch; a look-up
// after a crash would read everything the partition received since. Once
// the producer has been idle for idleAfter its intent is cleared, and its
// next batch records the partition's end (read just before it is sent) as
// the low-water offset: the look-up reads from there.
func TestIdleProducerLookupBounded(t *testing.T) {
	for _, idle := range []bool{false, true} {
		name := "active"
		if idle {
			name = "idle"
		}
		t.Run(name, func(t *testing.T) {
			tt := newTable(t)
			start := time.Now()
			tt.now = func() time.Time { return start }
			tt.be.set(func(f *fakeBackend) { f.end = 100 })
			tt.writeBatch(t, k1, bi(0, 0, 1), 100)
			tt.be.set(func(f *fakeBackend) { f.end = 1_000_000 }) // others wrote since
			if idle {
				tt.now = func() time.Time { return start.Add(tt.idleAfter + time.Second) }
			}
			swept := tt.sweepIdle()
			if (swept == 1) != idle {
				t.Fatalf("sweep cleared %d intents", swept)
			}
			_ = tt.beginWrite(t, k1, bi(0, 1, 1)) // forwarded, then the proxy dies
			tt = tt.crash(t)
			tt.beginWrite(t, k1, bi(0, 1, 1)).Failed(false)
			_, finds := tt.be.calls()
			want := int64(101)
			if idle {
				want = 1_000_000
			}
			if len(finds) != 1 || finds[0].From != want {
				t.Fatalf("FindBatch calls %+v, want one from %d", finds, want)
			}
		})
	}
}

// TestIdleLoopClearsIntent: the background loop clears the intent of an
// idle producer, durably: after a crash it needs no look-up.
func TestIdleLoopClearsIntent(t *testing.T) {
	tt := openTableIdle(t, t.TempDir(), &fakeBackend{}, 24*time.Hour, 20*time.Millisecond)
	tt.writeBatch(t, k1, bi(0, 0, 1), 0)
	deadline := time.Now().Add(10 * time.Second)
	for {
		tt.mu.Lock()
		intent := tt.entries[k1].st.Intent
		tt.mu.Unlock()
		if !intent {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("idle producer's intent not cleared by the background loop")
		}
		time.Sleep(5 * time.Millisecond)
	}
	tt = tt.crash(t)
	tt.writeBatch(t, k1, bi(0, 1, 1), 1)
	tt.be.wantCounts(t, 1, 0)
}

// TestStateEncodingVersion1: states written before the intent flag load
// with it set (a batch may have been in flight).
func TestStateEncodingVersion1(t *testing.T) {
	st := State{Epoch: 3, LowWater: 77, LastUpdateMs: 5, Batches: []Written{{Epoch: 3, FirstSeq: 0, LastSeq: 4, BaseOffset: 72}}}
	v2 := MarshalState(st)
	v1 := append([]byte{stateVersion1}, v2[1:19]...)
	v1 = append(v1, v2[20:]...)
	got, err := UnmarshalState(v1)
	if err != nil || !got.Intent || got.LowWater != 77 || len(got.Batches) != 1 || got.Batches[0].BaseOffset != 72 {
		t.Fatalf("version 1: %+v %v", got, err)
	}
	for _, intent := range []bool{false, true} {
		st.Intent = intent
		got, err := UnmarshalState(MarshalState(st))
		if err != nil || got.Intent != intent || got.LowWater != 77 || len(got.Batches) != 1 {
			t.Fatalf("round trip of %+v: %+v %v", st, got, err)
		}
	}
}

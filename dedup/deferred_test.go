package dedup

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
)

// On a backend that deduplicates, WrittenAll returns before the new states
// are on disk: the answer to the client does not wait for an fsync.
func TestWrittenAllDoesNotWaitWhenBackendDedups(t *testing.T) {
	tt := newTable(t)
	tt.be.set(func(f *fakeBackend) { f.dedups = true })
	tt.writeBatch(t, k1, bi(0, 0, 2), 100)

	held, unhold := tt.holdCommits(t)
	tok := tt.beginWrite(t, k1, bi(0, 2, 3))
	wrote := make(chan []error, 1)
	go func() { wrote <- WrittenAll([]*Token{tok}, []int64{102}) }()
	<-held // the group commit is under way and held
	select {
	case errs := <-wrote:
		if len(errs) != 1 || errs[0] != nil {
			t.Fatalf("WrittenAll: %v", errs)
		}
	case <-testCtx(t).Done():
		t.Fatal("WrittenAll waited for the disk")
	}
	// The next batch goes ahead at once too.
	tok = tt.beginWrite(t, k1, bi(0, 5, 1))
	unhold()
	written(t, tok, 105)
}

// After a crash that lost states whose answers had gone out, the state
// eosproxy loads lags the backend: the client's next batch is not next to
// it. On a backend that deduplicates, the backend decides that batch
// (written, a retry answered with its offset, or refused with its own
// code) instead of eosproxy refusing it OUT_OF_ORDER_SEQUENCE_NUMBER; on
// one that does not, eosproxy's own state must be durable before any
// answer, so such a batch is out of order.
func TestLaggingStateAfterCrashLeftToADedupingBackend(t *testing.T) {
	for _, dedups := range []bool{true, false} {
		tt := newTable(t)
		tt.writeBatch(t, k1, bi(0, 0, 2), 100) // seq 0-1 at 100
		tt = tt.crash(t)
		tt.be.set(func(f *fakeBackend) { f.dedups = dedups })
		// Seq 2-3 were written and answered, their state lost: the client
		// sends seq 4.
		if !dedups {
			tt.beginExpect(t, k1, bi(0, 4, 1), Decision{Verdict: Reject, Err: kerr.OutOfOrderSequenceNumber.Code})
			continue
		}
		// Deferred, with eosproxy's own verdict for a batch that would
		// go unpaired after all.
		d, tok := tt.begin(t, k1, bi(0, 4, 1))
		if d != (Decision{Verdict: Write, Err: kerr.OutOfOrderSequenceNumber.Code, Deferred: true}) {
			t.Fatalf("Begin after the crash: %+v", d)
		}
		written(t, tok, 104)
		tt.be.wantCounts(t, 0, 0) // no look-up: the backend decided
		// The state follows the backend's answer: seq 5 is next, a retry
		// of seq 4 a duplicate.
		tt.beginExpect(t, k1, bi(0, 4, 1), dup(104))
		written(t, tt.beginWrite(t, k1, bi(0, 5, 1)), 105)
		tt.be.wantCounts(t, 0, 0)
	}
}

// A batch whose answer was unclear (the backend wrote it, the answer was an
// error) is not in eosproxy's state; the client's next batch, pipelined
// behind it, follows it in the backend. Kafka takes that batch and answers
// the retry of the unclear one as a duplicate with its offset; so does a
// deduplicating backend, which eosproxy lets decide both instead of
// refusing them OUT_OF_ORDER_SEQUENCE_NUMBER (on which a client renumbers
// and writes the batch again).
func TestUnclearBatchThenNextLeftToADedupingBackend(t *testing.T) {
	tt := newTable(t)
	tt.be.set(func(f *fakeBackend) { f.dedups = true })
	tt.writeBatch(t, k1, bi(0, 0, 2), 100)
	tt.beginWrite(t, k1, bi(0, 2, 1)).Failed(true) // written at 102, answer unclear
	written(t, tt.beginWrite(t, k1, bi(0, 3, 1)), 103)
	// The retry: the backend answers it as the duplicate it is.
	written(t, tt.beginWrite(t, k1, bi(0, 2, 1)), 102)
	tt.beginExpect(t, k1, bi(0, 2, 1), dup(102))
	tt.beginExpect(t, k1, bi(0, 3, 1), dup(103))
	tt.be.wantCounts(t, 1, 0) // the first batch's end offset; no look-up
}

// On a backend that deduplicates, a producer's next batch goes out while
// the one ahead of it is still in flight (as the client pipelines them to
// Kafka); on one that does not, it waits (TestBeginWaitsForInflightBatch).
func TestPipelinedBehindInflightWhenBackendDedups(t *testing.T) {
	tt := newTable(t)
	tt.be.set(func(f *fakeBackend) { f.dedups = true })
	tt.writeBatch(t, k1, bi(0, 0, 2), 100)
	first := tt.beginWrite(t, k1, bi(0, 2, 1))
	second := tt.beginWrite(t, k1, bi(0, 3, 1)) // does not wait for first
	// A batch that does not follow the last one in flight waits.
	retry := tt.beginAsync(testCtx(t), k1, bi(0, 2, 1))
	stillBlocked(t, retry)
	written(t, first, 102)
	written(t, second, 103)
	if r := receive(t, retry); r.err != nil || r.d != dup(102) {
		t.Fatalf("retry of the first: %+v, want %+v", r, dup(102))
	}
	tt.beginExpect(t, k1, bi(0, 3, 1), dup(103))

	// The first fails: the backend refuses the pipelined second (out of
	// order), and both are retried in order.
	first = tt.beginWrite(t, k1, bi(0, 4, 1))
	second = tt.beginWrite(t, k1, bi(0, 5, 1))
	first.Failed(false)
	second.Failed(false)
	written(t, tt.beginWrite(t, k1, bi(0, 4, 1)), 104)
	written(t, tt.beginWrite(t, k1, bi(0, 5, 1)), 105)
	tt.beginExpect(t, k1, bi(0, 5, 1), dup(105))
}

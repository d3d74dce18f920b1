// Tests of the decisions the clock takes: timeouts and expiry of ids.

package txnstate_test

import (
	"testing"
	"time"

	"github.com/eosproxy/eosproxy/txnstate"

	"github.com/twmb/franz-go/pkg/kerr"
)

// TestTimeoutAborts: a transaction open longer than its timeout is aborted
// by the background check, fencing its producer; one within its timeout is
// left alone.
func TestTimeoutAborts(t *testing.T) {
	for _, tv2 := range []bool{false, true} {
		t.Run(versionName(tv2), func(t *testing.T) {
			e := newEnv(t, envConfig{opts: func(o *txnstate.Options) { o.CheckInterval = 2 * time.Millisecond }})
			a0 := tp("a", 0)
			slow := e.initProducer("slow", tv2, 1_000)
			slow.begin(a0)
			slow.send(a0, 2, 100)
			patient := e.initProducer("patient", tv2, 60_000)
			patient.begin(a0)
			patient.send(a0, 1, 100)

			e.clock.advance(1001 * time.Millisecond)
			tx := e.waitState("slow", txnstate.CompleteAbort)
			if tx.Epoch <= slow.epoch {
				t.Fatalf("timed-out producer not fenced: epoch %d, was %d", tx.Epoch, slow.epoch)
			}
			if code := wait(slow.produce(a0, slow.build(a0, 1, 10), slow.produceVersion())); code != errInvalidEpoch {
				t.Fatalf("produce of the timed-out producer: %s", txnstate.ErrorName(code))
			}
			if r := slow.end(true); r.Err != kerr.ProducerFenced.Code {
				t.Fatalf("commit of the timed-out producer: %s", txnstate.ErrorName(r.Err))
			}
			if got := e.c.Get("patient"); got.State != txnstate.Ongoing {
				t.Fatalf("transaction within its timeout is %v", got.State)
			}
			if attempts, _ := e.be.counts(); attempts != 0 {
				t.Fatalf("timeout forwarded %d batches", attempts)
			}
			from := ends(e.be, a0)
			if r := patient.end(true); r.Err != 0 {
				t.Fatalf("commit: %s", txnstate.ErrorName(r.Err))
			}
			e.waitState("patient", txnstate.CompleteCommit)
			checkForwarded(t, e.be, from, patient.committed)
			if e.c.Buffered() != 0 {
				t.Fatalf("Buffered() = %d", e.c.Buffered())
			}
		})
	}
}

// TestExpiredIDForgotten: a transactional id unused for Expiration is
// removed, also from the database; InitProducerId then starts afresh.
func TestExpiredIDForgotten(t *testing.T) {
	e := newEnv(t, envConfig{disk: true, opts: func(o *txnstate.Options) {
		o.CheckInterval = 2 * time.Millisecond
		o.Expiration = time.Hour
	}})
	a0 := tp("a", 0)
	p := e.initProducer("tx", true, 60_000)
	p.send(a0, 1, 10)
	if r := p.end(true); r.Err != 0 {
		t.Fatalf("commit: %s", txnstate.ErrorName(r.Err))
	}
	e.waitState("tx", txnstate.CompleteCommit)
	e.clock.advance(30 * time.Minute)
	e.initProducer("recent", true, 60_000)
	e.clock.advance(31 * time.Minute)
	waitFor(t, "the id to expire", func() bool { return e.c.Get("tx") == nil })
	for _, tx := range e.c.List() {
		if tx.TransactionalID == "tx" {
			t.Fatal("expired id still listed")
		}
	}
	if got := e.c.Get("recent"); got == nil || got.State != txnstate.Empty {
		t.Fatalf("id used 31 minutes ago: %+v", got)
	}
	e.restart()
	if e.c.Get("tx") != nil {
		t.Fatal("expired id back after a restart")
	}
	q := e.initProducer("tx", true, 60_000)
	if q.pid == p.pid || q.epoch != 0 {
		t.Fatalf("InitProducerId after expiry: %d/%d, the old producer was %d", q.pid, q.epoch, p.pid)
	}
}

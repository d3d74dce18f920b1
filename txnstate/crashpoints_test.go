package txnstate_test

import (
	"sync"
	"testing"

	"github.com/eosproxy/eosproxy/txnstate"
)

// TestCrashPointsWhere: the coordinator's crash points come where their
// names say, in both forwarding modes: decision-logged once per commit,
// with the decision durable and nothing forwarded; half-forwarded after
// each acknowledged batch but the last (some in the backend, not all), and
// once all are, before the group offsets. An abort reaches neither.
func TestCrashPointsWhere(t *testing.T) {
	for _, idem := range []bool{false, true} {
		t.Run(map[bool]string{false: "rounds", true: "pipelined"}[idem], func(t *testing.T) {
			a0, a1, in := tp("a", 0), tp("a", 1), tp("in", 0)
			type hit struct {
				point           string
				written, groups int
				state           txnstate.State
			}
			var mu sync.Mutex
			var hits []hit
			var e *env
			e = newEnv(t, envConfig{idem: idem, opts: func(o *txnstate.Options) {
				o.CrashPoint = func(point string) {
					h := hit{point: point, written: int(e.be.end(a0) + e.be.end(a1)), groups: len(e.be.groupCommits())}
					if tx := e.c.Get("tx"); tx != nil {
						h.state = tx.State
					}
					mu.Lock()
					hits = append(hits, h)
					mu.Unlock()
				}
			}})
			p := e.initProducer("tx", true, 60_000)
			p.begin(a0, a1)
			for range 3 {
				p.send(a0, 1, 10)
				p.send(a1, 1, 10)
			}
			if r := p.end(false); r.Err != txnstate.ErrNone {
				t.Fatalf("abort: %s", txnstate.ErrorName(r.Err))
			}
			e.waitState("tx", txnstate.CompleteAbort)
			mu.Lock()
			if len(hits) != 0 {
				t.Fatalf("an abort reached crash points: %+v", hits)
			}
			mu.Unlock()
			p.begin(a0, a1)
			for range 3 {
				p.send(a0, 1, 10)
				p.send(a1, 1, 10)
			}
			p.offsets("grp", "m", 1, "", map[TP]txnstate.Offset{in: {Offset: 9}})
			if r := p.end(true); r.Err != txnstate.ErrNone {
				t.Fatalf("commit: %s", txnstate.ErrorName(r.Err))
			}
			e.waitState("tx", txnstate.CompleteCommit)
			mu.Lock()
			defer mu.Unlock()
			if len(hits) < 2 || hits[0].point != txnstate.CrashDecisionLogged {
				t.Fatalf("hits %+v: want decision-logged first, then half-forwarded", hits)
			}
			if h := hits[0]; h.written != 0 || h.groups != 0 || h.state != txnstate.CompleteCommit {
				t.Fatalf("decision-logged at %+v: want the decision swapped in (Complete), nothing written", h)
			}
			last := hits[len(hits)-1]
			if last.point != txnstate.CrashHalfForwarded || last.written != 6 || last.groups != 0 {
				t.Fatalf("last hit %+v: want half-forwarded with every batch written, the offsets not", last)
			}
			// Between batches: each after one more was acknowledged (the
			// backend may hold more: the rest of its wave or round).
			partly := false
			for _, h := range hits[1 : len(hits)-1] {
				if h.point != txnstate.CrashHalfForwarded || h.written == 0 || h.groups != 0 {
					t.Fatalf("hit %+v of %+v: want half-forwarded with batches written, the offsets not", h, hits)
				}
				partly = partly || h.written < 6
			}
			if !partly {
				t.Fatalf("hits %+v: want half-forwarded with some batches not yet written too", hits)
			}
		})
	}
}

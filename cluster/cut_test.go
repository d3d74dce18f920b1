package cluster

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/eosproxy/eosproxy/upstream"
)

// An owner cut off from the backend while it writes (packets dropped,
// upstream.Cut; its process running) notices by itself, within the
// session timeout and a tick, that the backend no longer hears from it, and
// gives ownership up, so that its clients can go; another member takes
// over. Once the cut ends it rebuilds and follows, and when the next owner
// leaves it claims again and serves at once: nothing left from the cut (a
// connection waiting it out, a write of the old ownership) holds its new
// claim up.
func TestCutOffOwner(t *testing.T) {
	c := newBackend(t)
	cut := upstream.NewCut(nil)
	a := ownerThrough(t, c, cut.Dial)
	t.Cleanup(func() { cut.Set(false) }) // before a's Close
	b := join(t, c, "b", time.Second, nil)
	sets := numbered("a", 3)
	appendAll(t, a, sets...)
	waitApplied(t, b, sets)
	// a writes all along, so that the cut catches writes in flight.
	stop := make(chan struct{})
	writing := make(chan struct{})
	go func() {
		defer close(writing)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := a.Append([]byte{byte(i)})(); err != nil {
				return
			}
		}
	}()
	time.Sleep(200 * time.Millisecond) // let some writes go (load, not synchronisation)

	cut.Set(true)
	start := time.Now()
	ch := nextChange(t, a, a.cfg.SessionTimeout+5*time.Second)
	took := time.Since(start)
	t.Logf("a gave up %v after the cut: %s", took, ch.Reason)
	if ch.Owner || !strings.Contains(ch.Reason, "not heard") {
		t.Fatalf("a: %+v, want a deposition for the silence", ch)
	}
	if bound := a.cfg.SessionTimeout + time.Second; took > bound {
		t.Fatalf("a gave up after %v, want ≤ %v", took, bound)
	}
	if err := a.Append([]byte("late"))(); !errors.Is(err, ErrNotOwner) {
		t.Fatalf("append after giving up: %v, want ErrNotOwner", err)
	}
	if ch := nextChange(t, b, b.cfg.SessionTimeout+5*time.Second); !ch.Owner {
		t.Fatalf("b: %+v", ch)
	}
	close(stop)
	<-writing
	more := numbered("b", 2)
	appendAll(t, b, more...)
	// As long as eoscheck's cuts: connections of a's wait out the cut
	// past their deadlines.
	time.Sleep(5 * time.Second) // the fault's duration, not synchronisation
	cut.Set(false)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := a.Rebuild(ctx); err != nil {
		t.Fatal(err)
	}
	if adv, self, ok := a.Leader(); !ok || self || adv != b.adv {
		t.Fatalf("a's Leader() = %q %v %v, want b", adv, self, ok)
	}
	if got := a.sets(); len(got) < len(sets)+len(more) || !equalSets(got[len(got)-len(more):], more) {
		t.Fatalf("a rebuilt to %d sets, not ending with b's", len(got))
	}
	closed := time.Now()
	b.Close()
	ch = nextChange(t, a, a.cfg.SessionTimeout+5*time.Second)
	took = time.Since(closed)
	t.Logf("a owns again %v after b's clean stop", took)
	if !ch.Owner {
		t.Fatalf("a: %+v", ch)
	}
	if took > 3*time.Second {
		t.Errorf("a took %v to own after the cut and b's clean stop, want ≤ 3 s", took)
	}
	if err := a.Append([]byte("after"))(); err != nil {
		t.Fatalf("append after owning again: %v", err)
	}
}

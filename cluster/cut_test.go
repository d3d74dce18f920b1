package cluster

import (
	"context"
	"testing"
	"time"

	"github.com/eosproxy/eosproxy/upstream"
)

// An owner cut off from the backend (packets dropped, upstream.Cut) while
// it is writing gives up by itself; once the cut ends and the next owner
// leaves, it claims again and serves at once: nothing of the cut (a
// connection waiting out the cut, a write of the old ownership) holds its
// new claim up.
func TestOwnerAfterCut(t *testing.T) {
	c := newBackend(t)
	cut := upstream.NewCut(nil)
	a := join(t, c, "a", time.Second, func(cfg *Config) {
		cfg.groupDialer, cfg.tailDialer, cfg.prodDialer = cut.Dial, cut.Dial, cut.Dial
	})
	t.Cleanup(func() { cut.Set(false) })
	if firstOwner(t, 20*time.Second, a) != a {
		t.Fatal("a does not own")
	}
	b := join(t, c, "b", time.Second, nil)
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
	ch := nextChange(t, a, a.cfg.SessionTimeout+5*time.Second)
	if ch.Owner {
		t.Fatalf("a: %+v", ch)
	}
	if ch := nextChange(t, b, b.cfg.SessionTimeout+5*time.Second); !ch.Owner {
		t.Fatalf("b: %+v", ch)
	}
	close(stop)
	<-writing
	// As long as eoscheck's cuts: connections of a's wait out the cut
	// past their deadlines.
	time.Sleep(5 * time.Second) // the fault's duration, not synchronisation
	cut.Set(false)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := a.Rebuild(ctx); err != nil {
		t.Fatal(err)
	}
	closed := time.Now()
	b.Close()
	ch = nextChange(t, a, a.cfg.SessionTimeout+5*time.Second)
	took := time.Since(closed)
	t.Logf("a owns again %v after b's clean stop", took)
	if !ch.Owner {
		t.Fatalf("a: %+v", ch)
	}
	if took > 3*time.Second {
		t.Errorf("a took %v to own after the cut and b's clean stop, want ≤ 3 s", took)
	}
	start := time.Now()
	if err := a.Append([]byte("after"))(); err != nil {
		t.Fatalf("append after owning again: %v", err)
	}
	t.Logf("first append after owning again: %v", time.Since(start))
}

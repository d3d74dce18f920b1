package upstream

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eosproxy/eosproxy/dedup"
	"github.com/eosproxy/eosproxy/store"
)

func instanceEnv(t *testing.T) []string {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c.ListenAddrs()
}

func startTestInstance(t *testing.T, seeds []string, db *store.DB) (*Instance, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	in, err := StartInstance(ctx, db, seeds, nil, "test", time.Second, zerolog.New(zerolog.NewTestWriter(t)))
	if in != nil {
		t.Cleanup(in.Close)
	}
	return in, err
}

// A lease whose holder stopped renewing it without a release (killed) is
// taken over once it expires; the same data dir (instance id) takes its
// own lease back at once.
func TestInstanceLeaseTakeOver(t *testing.T) {
	seeds := instanceEnv(t)
	dbA := memDB(t)
	a, err := startTestInstance(t, seeds, dbA)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := startTestInstance(t, seeds, memDB(t)); !errors.Is(err, ErrAnotherInstance) {
		t.Fatalf("second instance while the first renews its lease: %v, want ErrAnotherInstance", err)
	}
	// Killed: no more heartbeats, no release.
	a.halt()
	if again, err := startTestInstance(t, seeds, dbA); err != nil {
		t.Fatalf("the same data dir restarted: %v", err)
	} else {
		again.halt() // killed again
	}
	b, err := startTestInstance(t, seeds, memDB(t))
	if err != nil {
		t.Fatalf("another instance after the lease expired: %v", err)
	}
	if b.id == a.id {
		t.Fatal("two data dirs with one instance id")
	}
}

// An instance whose lease another one took over (it was not renewed in
// time: a pause, a partition) learns it and reports it.
func TestInstanceLeaseLost(t *testing.T) {
	seeds := instanceEnv(t)
	a, err := startTestInstance(t, seeds, memDB(t))
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.DisableIdempotentWrite())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	v, _ := json.Marshal(leaseRecord{Instance: "other", Kind: "claim", Supersedes: a.id, TimeMs: time.Now().UnixMilli()})
	if err := cl.ProduceSync(context.Background(), &kgo.Record{Topic: instanceTopic, Value: v}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-a.lost:
		if !errors.Is(err, ErrAnotherInstance) {
			t.Fatalf("lost: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the take-over went unnoticed")
	}
}

// Producer id blocks come from the backend: distinct for every
// reservation, whoever makes it, and at or above the floor (a data dir that
// counted its own ids before).
func TestReserveBlock(t *testing.T) {
	seeds := instanceEnv(t)
	a, err := startTestInstance(t, seeds, memDB(t))
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int64]bool{}
	for _, floor := range []int64{0, 0, 5500, 0, 123_456} {
		s, err := a.ReserveBlock(floor)
		if err != nil {
			t.Fatal(err)
		}
		if s < floor || s%dedup.ProducerIDBlock != 0 || seen[s] {
			t.Fatalf("block at %d for floor %d (had %v)", s, floor, seen)
		}
		seen[s] = true
	}
}

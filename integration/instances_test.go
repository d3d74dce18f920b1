package integration

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/eosproxy/eosproxy/proxy"
)

// Issue 9, item 8: two eosproxy instances on one backend, each with its own
// data dir (here: its own in-memory store). The producer ids they hand out
// never collide, and while one serves, a second refuses to start with an
// error naming the first.
func TestTwoInstancesOnOneBackend(t *testing.T) { eachBackend(t, twoInstances) }

func twoInstances(t *testing.T, b backend) {
	lease := func(c *proxy.Config) { c.InstanceLeaseTimeout = 2 * time.Second }
	ids := func(p *testProxy, n int) []int64 {
		t.Helper()
		cl := newClient(t, p.Addr())
		var out []int64
		for range n {
			resp, err := kmsg.NewPtrInitProducerIDRequest().RequestWith(testCtx(t), cl)
			if err != nil || resp.ErrorCode != 0 {
				t.Fatalf("InitProducerId: %v %d", err, resp.ErrorCode)
			}
			out = append(out, resp.ProducerID)
		}
		return out
	}

	first := startProxy(t, b, lease)
	firstIDs := ids(first, 3)

	cfg := proxy.Config{Listen: "127.0.0.1:0", Upstreams: b.addrs, InstanceLeaseTimeout: 2 * time.Second, Log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel)}
	if secureTier {
		tierProxy(&cfg)
	}
	second, err := proxy.New(cfg)
	if err == nil {
		second.Close()
		t.Fatal("a second instance started while the first serves the backend")
	}
	if !errors.Is(err, proxy.ErrAnotherInstance) || !strings.Contains(err.Error(), "instance ") {
		t.Fatalf("second instance refused with %v, want an error naming the first instance", err)
	}
	t.Logf("second instance refused: %v", err)

	// Once the first stops, another instance takes the backend and hands
	// out ids the first never did.
	first.Close()
	third := startProxy(t, b, lease)
	seen := map[int64]bool{}
	for _, id := range firstIDs {
		seen[id] = true
	}
	for _, id := range ids(third, 3) {
		if seen[id] {
			t.Fatalf("producer id %d handed out by both instances (first: %v)", id, firstIDs)
		}
	}
}

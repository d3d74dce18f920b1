package integration

import (
	"errors"
	"net"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eosproxy/eosproxy/proxy"
	"github.com/eosproxy/eosproxy/upstream"
)

// A forced stop (Close; in cluster mode, a deposed owner) while a decided
// commit's forwarding is held up by a partition from the backend writes
// nothing once the backend is reachable again: the next owner carries the
// commit out, and on a backend without idempotence nothing would drop a
// second copy. Found by eoscheck --crash-points with cuts: the deposed
// owner's stop waited for a client connection's dial before it stopped
// forwarding, the partition healed meanwhile, and the held write of the
// commit went out after the next owner's (20 records copied twice).
func TestForcedStopWritesNothingAfter(t *testing.T) {
	if secureTier {
		t.Skip("a backend cut needs a backend without TLS")
	}
	b := newFake(t)
	cut := upstream.NewCut(nil)
	t.Cleanup(func() { cut.Set(false) })
	p := startProxy(t, b, func(c *proxy.Config) {
		c.BackendCut = cut
		c.NoBackendIdempotence = true // commits forwarded without producer ids
		c.DialTimeout = 3 * time.Second
	})
	topic := createTopic(t, kadm.NewClient(newClient(t, p.Addr())), 1)
	txn := newClient(t, p.Addr(), kgo.TransactionalID("forced-stop-"+topic), kgo.DefaultProduceTopic(topic),
		kgo.ProducerLinger(0), kgo.RequestRetries(0))
	ctx := testCtx(t)
	if err := txn.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if err := txn.ProduceSync(ctx, &kgo.Record{Value: []byte(strconv.Itoa(i))}).FirstErr(); err != nil {
			t.Fatalf("produce %d: %v", i, err)
		}
	}
	// The decision is eosproxy's own (its data dir): the commit is
	// answered, and its forwarding is held up by the cut.
	cut.Set(true)
	if err := txn.EndTransaction(ctx, kgo.TryCommit); err != nil {
		t.Fatalf("commit: %v", err)
	}
	// A client connecting meanwhile: its connection's dial to the backend
	// waits (up to the dial timeout), and so does a stop for in-flight work.
	conn, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// ApiVersions v0, which eosproxy asks the backend about.
	if _, err := conn.Write([]byte{0, 0, 0, 10, 0, 18, 0, 0, 0, 0, 0, 1, 0xff, 0xff}); err != nil {
		t.Fatal(err)
	}

	stopped := make(chan struct{})
	go func() { p.Close(); close(stopped) }()
	// The partition heals while the stop is still waiting for that dial.
	time.Sleep(300 * time.Millisecond) // the fault's timing, not synchronisation
	cut.Set(false)
	<-stopped

	if _, total := readBackendCommitted(t, b, topic); total != 0 {
		t.Fatalf("the backend holds %d records written after the forced stop, want none", total)
	}
}

// TestWriteFenceHoldsBackendWrites: while the write fence refuses (in
// cluster mode the owner's lease, lapsed after a pause past the group
// session), nothing that eosproxy forwards reaches the backend, neither a
// decided commit's batches nor an idempotent client's batch; once it
// allows again, both arrive, once. Without the fence, a paused owner's
// goroutines resuming after the next owner took over wrote a commit's
// batches a second time (eoscheck --instance-stops, on kfake without
// idempotence: 32 records copied twice).
func TestWriteFenceHoldsBackendWrites(t *testing.T) {
	b := newFake(t)
	var refuse atomic.Bool
	var refused atomic.Int64
	p := startProxy(t, b, func(c *proxy.Config) {
		c.NoBackendIdempotence = true // nothing in the backend would drop a second copy
		c.WriteFence = func() error {
			if refuse.Load() {
				refused.Add(1)
				return errors.New("lease lapsed (test)")
			}
			return nil
		}
	})
	topic := createTopic(t, kadm.NewClient(newClient(t, p.Addr())), 1)
	ctx := testCtx(t)
	txn := newClient(t, p.Addr(), kgo.TransactionalID("fenced-"+topic), kgo.DefaultProduceTopic(topic), kgo.ProducerLinger(0))
	if err := txn.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if err := txn.ProduceSync(ctx, &kgo.Record{Value: []byte(strconv.Itoa(i))}).FirstErr(); err != nil {
			t.Fatalf("produce %d: %v", i, err)
		}
	}
	idem := newClient(t, p.Addr(), kgo.DefaultProduceTopic(topic), kgo.ProducerLinger(0))
	if err := idem.ProduceSync(ctx, &kgo.Record{Value: []byte("100")}).FirstErr(); err != nil {
		t.Fatal(err)
	}

	refuse.Store(true)
	// The decision is eosproxy's own: the commit is answered, and its
	// forwarding is refused by the fence until it allows again.
	if err := txn.EndTransaction(ctx, kgo.TryCommit); err != nil {
		t.Fatalf("commit: %v", err)
	}
	done := make(chan error, 1)
	idem.Produce(ctx, &kgo.Record{Value: []byte("101")}, func(_ *kgo.Record, err error) { done <- err })
	waitFor(t, "the fence to refuse writes", 10*time.Second, func() bool { return refused.Load() >= 2 })
	if _, total := readBackendCommitted(t, b, topic); total != 1 {
		t.Fatalf("the backend holds %d records while the fence refuses, want the 1 written before", total)
	}

	refuse.Store(false)
	if err := <-done; err != nil {
		t.Fatalf("idempotent produce once the fence allows: %v", err)
	}
	// A new instance of the transactional id gets its producer id only
	// once the commit is wholly in the backend (CONCURRENT_TRANSACTIONS
	// until then, as Kafka until its markers are written): after its
	// first batch, nothing of the commit is still to come. Its own
	// transaction aborts, writing nothing.
	next := newClient(t, p.Addr(), kgo.TransactionalID("fenced-"+topic), kgo.DefaultProduceTopic(topic), kgo.ProducerLinger(0))
	if err := next.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := next.ProduceSync(ctx, &kgo.Record{Value: []byte("102")}).FirstErr(); err != nil {
		t.Fatalf("produce of the next instance: %v", err)
	}
	if err := next.EndTransaction(ctx, kgo.TryAbort); err != nil {
		t.Fatalf("abort of the next instance: %v", err)
	}
	if got, total := readBackendCommitted(t, b, topic); total != 12 {
		t.Fatalf("the backend holds %d records, want 12 (10 committed, 2 idempotent): %v", total, got)
	}
}

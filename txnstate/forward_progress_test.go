package txnstate_test

import (
	"bytes"
	"context"
	"sync"
	"testing"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/pb"

	"github.com/eosproxy/eosproxy/txnstate"
)

// Issue 9, item 10: a forwarding progress step (acknowledged batches
// deleted, low-water offsets moved past them) must be one badger
// transaction. Written as a WriteBatch, a step of more batches than fit in
// one transaction was committed in several: a crash between them leaves
// batches deleted with the low-water offset (and, toward an idempotent
// backend, the sequence) of before them. Here a commit of more batches than
// one badger transaction holds fails at its last batch, and every badger
// commit that deletes forwarded batches must also move the low-water offset
// (or retire the generation).
func TestForwardingProgressIsOneBadgerTransaction(t *testing.T) {
	e := newEnv(t, envConfig{segBytes: 1 << 20})
	n := int(e.db.MaxBatchCount()) + 100
	part := tp("p", 0)

	type step struct{ delBatch, setLow, delJob bool }
	var mu sync.Mutex
	steps := map[uint64]*step{}
	probe := []byte("txn/~probe")
	sawProbe := false
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- e.db.Subscribe(ctx, func(l *badger.KVList) error {
			mu.Lock()
			defer mu.Unlock()
			for _, kv := range l.Kv {
				s := steps[kv.Version]
				if s == nil {
					s = &step{}
					steps[kv.Version] = s
				}
				del := len(kv.Value) == 0
				switch {
				case bytes.Equal(kv.Key, probe):
					sawProbe = true
				case bytes.HasPrefix(kv.Key, []byte("txn/b/")) && del:
					s.delBatch = true
				case bytes.HasPrefix(kv.Key, []byte("txn/w/")) && !del:
					s.setLow = true
				case bytes.HasPrefix(kv.Key, []byte("txn/q/")) && del:
					s.delJob = true
				}
			}
			return nil
		}, []pb.Match{{Prefix: []byte("txn/")}})
	}()
	// The subscription is live once it sees a write made after it started.
	waitFor(t, "the subscription", func() bool {
		if err := e.db.Put(probe, []byte{1}); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		defer mu.Unlock()
		return sawProbe
	})

	p := e.initProducer("tx", true, 60_000)
	var answers []txnstate.ProduceAnswer
	for range n {
		raw := p.build(part, 1, 10)
		a := p.produce(part, raw, 12)
		if a.Err != 0 {
			t.Fatalf("produce: %s", txnstate.ErrorName(a.Err))
		}
		p.accepted(part, raw)
		answers = append(answers, a)
	}
	for _, a := range answers {
		if code := wait(a); code != 0 {
			t.Fatalf("produce: %s", txnstate.ErrorName(code))
		}
	}
	from := e.be.end(part)
	// One batch per round without idempotence: attempt n is the last batch.
	e.be.setFault(func(i int, _ TP) fault {
		if i == n {
			return reject
		}
		return apply
	})
	if r := p.end(true); r.Err != 0 {
		t.Fatalf("commit: %s", txnstate.ErrorName(r.Err))
	}
	e.waitState("tx", txnstate.CompleteCommit)
	checkForwarded(t, e.be, map[TP]int64{part: from}, p.committed)
	cancel()
	<-done

	mu.Lock()
	defer mu.Unlock()
	var split int
	for _, s := range steps {
		if s.delBatch && !s.setLow && !s.delJob {
			split++
		}
	}
	if split > 0 {
		t.Fatalf("%d badger commits deleted forwarded batches without moving the low-water offset past them (a progress step split across transactions)", split)
	}
}

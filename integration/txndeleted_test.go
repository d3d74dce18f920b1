package integration

import (
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestTxnCommitToDeletedTopic: a topic deleted while a transaction holds
// batches for it, committed after, does not stop the transactional id:
// Kafka skips the markers of a deleted partition, eosproxy drops its
// batches; the rest of the commit and the next transactions reach the
// backend.
func TestTxnCommitToDeletedTopic(t *testing.T) {
	run := func(t *testing.T, b backend) {
		p, adm, gone, kept := proxyAndTwoTopics(t, b)
		prod := newClient(t, p.Addr(), kgo.TransactionalID(kept+"-txn"))
		ctx := testCtx(t)
		if err := prod.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		if err := prod.ProduceSync(ctx, &kgo.Record{Topic: gone, Value: []byte("lost with its topic")},
			&kgo.Record{Topic: kept, Value: []byte("first")}).FirstErr(); err != nil {
			t.Fatal(err)
		}
		if _, err := adm.DeleteTopic(ctx, gone); err != nil {
			t.Fatalf("delete %s: %v", gone, err)
		}
		if err := prod.EndTransaction(ctx, kgo.TryCommit); err != nil {
			t.Fatalf("commit: %v", err)
		}
		if err := prod.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		if err := prod.ProduceSync(ctx, &kgo.Record{Topic: kept, Value: []byte("second")}).FirstErr(); err != nil {
			t.Fatal(err)
		}
		if err := prod.EndTransaction(ctx, kgo.TryCommit); err != nil {
			t.Fatalf("second commit: %v", err)
		}
		start := time.Now()
		cons := newClient(t, p.Addr(), kgo.ConsumeTopics(kept), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
			kgo.FetchIsolationLevel(kgo.ReadCommitted()))
		got := consumeValues(t, cons, 2)
		if got[0] != "first" || got[1] != "second" {
			t.Errorf("read %q, want first, second", got)
		}
		t.Logf("both commits read after %v", time.Since(start))
		// A new instance of the id is not held back by the first commit.
		next := newClient(t, p.Addr(), kgo.TransactionalID(kept+"-txn"))
		if err := next.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		if err := next.ProduceSync(ctx, &kgo.Record{Topic: kept, Value: []byte("third")}).FirstErr(); err != nil {
			t.Fatalf("new instance: %v", err)
		}
		if err := next.EndTransaction(ctx, kgo.TryCommit); err != nil {
			t.Fatalf("new instance's commit: %v", err)
		}
	}
	eachNoEOSBackend(t, run)
}

// TestTxnOffsetsOfDeletedTopic: a decided commit holding group offsets of
// a topic deleted since commits the group's other offsets and completes:
// the offsets of a deleted partition are dropped, as its batches are,
// instead of being retried forever (Kafka refuses OffsetCommit for an
// unknown topic), which held up the transactional id.
func TestTxnOffsetsOfDeletedTopic(t *testing.T) {
	run := func(t *testing.T, b backend) {
		p, adm, gone, kept := proxyAndTwoTopics(t, b)
		group := kept + "-group"
		x := initRawTxn(t, newClient(t, p.Addr()), kept+"-txn")
		x.addOffsets(group)
		x.commitOffsets(group, gone, map[int32]int64{0: 5})
		x.commitOffsets(group, kept, map[int32]int64{0: 7})
		if _, err := adm.DeleteTopic(testCtx(t), gone); err != nil {
			t.Fatalf("delete %s: %v", gone, err)
		}
		if code := x.end(true); code != 0 {
			t.Fatalf("EndTxn(commit): %v", kerr.ErrorForCode(code))
		}
		start := time.Now()
		initRawTxn(t, newClient(t, p.Addr()), kept+"-txn") // CONCURRENT_TRANSACTIONS until the commit is complete
		t.Logf("the next InitProducerId answered %v after the commit", time.Since(start))
		offs := backendOffsets(t, b, group)
		if o, ok := offs.Lookup(kept, 0); !ok || o.At != 7 {
			t.Errorf("group %s's offset of %s/0 in the backend: %+v (found %v), want 7", group, kept, o, ok)
		}
	}
	eachNoEOSBackend(t, run)
}

// proxyAndTwoTopics starts eosproxy in front of b and creates two topics of
// one partition through it: one to delete, one to keep.
func proxyAndTwoTopics(t *testing.T, b backend) (*testProxy, *kadm.Client, string, string) {
	t.Helper()
	p := startProxy(t, b)
	adm := kadm.NewClient(newClient(t, p.Addr()))
	return p, adm, createTopic(t, adm, 1), createTopic(t, adm, 1)
}

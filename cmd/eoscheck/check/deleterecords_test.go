package check

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Records DeleteRecords removed (read and kept just before) count as read
// by the verdict: no loss, and order is checked across the log start; a
// log start the kept records do not account for is an error, not a clean
// verdict.
func TestVerdictCountsDeletedRecords(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	fake, cl, adm := verdictBackend(ctx, t)
	prods := []*producer{{acked: make([]atomic.Bool, 10)}}
	prods[0].sent.Store(10)
	for s := range 10 {
		prods[0].acked[s].Store(true)
		// 0-5 comes before 0-3 in partition 1, across the log start.
		v := s
		switch s {
		case 3:
			v = 5
		case 5:
			v = 3
		}
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "in", Partition: int32(v % 2), Value: fmt.Appendf(nil, "0-%d", v)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	var d deletedInput
	n, err := d.deleteInput(ctx, fake.ListenAddrs(), adm, "in", map[int32]int64{0: 3, 1: 2})
	if err != nil {
		t.Fatal(err)
	}
	if n != 5 || d.events != 1 {
		t.Fatalf("deleted %d records in %d events, want 5 in 1", n, d.events)
	}
	rep := &Report{Topic: "in"}
	if _, err := verdict(ctx, fake.ListenAddrs(), rep, prods, adm, d.parts); err != nil {
		t.Fatal(err)
	}
	if rep.Lost != 0 || rep.Duplicates != 0 || rep.OrderErrors != 1 || rep.BackendTotal != 10 {
		t.Fatalf("lost %d, duplicates %d, order violations %d (want 1), backend %d (want 10); examples %v",
			rep.Lost, rep.Duplicates, rep.OrderErrors, rep.BackendTotal, rep.Examples)
	}
	if _, err := verdict(ctx, fake.ListenAddrs(), &Report{Topic: "in"}, prods, adm, nil); err == nil {
		t.Fatal("verdict without the deleted records: no error")
	}
}

// A short retention while the producers idle: the backend's retention
// deletes the older records (kfake, every log.cleaner.backoff.ms), the
// retention is restored, and what it deleted, also after the event was
// counted, is kept for the verdict.
func TestRetentionWhileIdle(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	fake, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.BrokerConfigs(map[string]string{"log.cleaner.backoff.ms": "20"}))
	if err != nil {
		t.Fatal(err)
	}
	defer fake.Close()
	cl, err := kgo.NewClient(kgo.SeedBrokers(fake.ListenAddrs()...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	if _, err := adm.CreateTopic(ctx, 2, 1, nil, "in"); err != nil {
		t.Fatal(err)
	}
	// 0-0..0-5 an hour old, 0-6..0-9 new: the retention (half the age of
	// what the input holds) deletes the old ones only.
	prods := []*producer{{acked: make([]atomic.Bool, 10)}}
	prods[0].sent.Store(10)
	for s := range 10 {
		prods[0].acked[s].Store(true)
		ts := time.Now()
		if s < 6 {
			ts = ts.Add(-time.Hour)
		}
		r := &kgo.Record{Topic: "in", Partition: int32(s % 2), Value: fmt.Appendf(nil, "0-%d", s), Timestamp: ts}
		if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	var idle sync.RWMutex
	var inflight atomic.Int64
	var d deletedInput
	rep := &Report{Topic: "in"}
	var out strings.Builder
	f := &idleFault{idle: &idle, inflight: &inflight, deleted: &d, backend: fake.ListenAddrs(), direct: cl, adm: adm, rep: rep, out: &out}
	if err := retentionWhileIdle(ctx, f); err != nil {
		t.Fatal(err)
	}
	if d.retentionEvents != 1 || d.retentionRecords == 0 {
		t.Fatalf("%d retention events, %d records deleted; want 1 and some (%s)", d.retentionEvents, d.retentionRecords, out.String())
	}
	if v, err := topicConfig(ctx, adm, "in", "retention.ms"); err != nil || v != nil {
		t.Fatalf("retention.ms left at %v (%v), want the broker's default", v, err)
	}
	if !idle.TryLock() {
		t.Fatal("the producers are still held")
	}
	idle.Unlock()
	// More deleted after the event (DeleteRecords here, as a late
	// retention pass would): settled from the snapshot.
	if _, err := adm.DeleteRecords(ctx, kadm.Offsets{"in": {0: {Topic: "in", Partition: 0, At: 4}}}); err != nil {
		t.Fatal(err)
	}
	starts, err := adm.ListStartOffsets(ctx, "in")
	if err != nil {
		t.Fatal(err)
	}
	d.settle(starts)
	if d.retentionRecords != 7 {
		t.Fatalf("%d records deleted in all, want 7 (the 6 old ones and 0-6)", d.retentionRecords)
	}
	if _, err := verdict(ctx, fake.ListenAddrs(), rep, prods, adm, d.parts); err != nil {
		t.Fatal(err)
	}
	if rep.Lost != 0 || rep.Duplicates != 0 || rep.OrderErrors != 0 || rep.BackendTotal != 10 {
		t.Fatalf("lost %d, duplicates %d, order violations %d, backend %d (want 10); examples %v",
			rep.Lost, rep.Duplicates, rep.OrderErrors, rep.BackendTotal, rep.Examples)
	}
}

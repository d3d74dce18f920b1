package check

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

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

package check

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// The verdict must see each kind of anomaly: records are written straight
// to a backend with known lost, duplicate, out-of-order and unexpected
// values.
func TestVerdictCountsAnomalies(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	fake, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer fake.Close()
	cl, err := kgo.NewClient(kgo.SeedBrokers(fake.ListenAddrs()...), kgo.DefaultProduceTopic("t"),
		kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	if _, err := adm.CreateTopic(ctx, 2, 1, nil, "t"); err != nil {
		t.Fatal(err)
	}
	// Producer 0 sent 0..5 (all acked), producer 1 sent 0..2 (acked 0, 1).
	prods := []*producer{{acked: make([]atomic.Bool, 6)}, {acked: make([]atomic.Bool, 3)}}
	prods[0].sent.Store(6)
	prods[1].sent.Store(3)
	for s := range 6 {
		prods[0].acked[s].Store(true)
	}
	prods[1].acked[0].Store(true)
	prods[1].acked[1].Store(true)
	write := []struct {
		part int32
		v    string
	}{
		{0, "0-0"}, {0, "0-1"}, {0, "0-1"}, // duplicate 0-1
		{0, "0-3"}, {0, "0-2"}, // order violation
		{1, "1-0"}, {1, "1-1"}, {1, "1-2"},
		{1, "0-99"}, {1, "7-0"}, {1, "junk"}, // 3 unexpected
		// 0-4 and 0-5 lost
	}
	for _, w := range write {
		if err := cl.ProduceSync(ctx, &kgo.Record{Partition: w.part, Value: []byte(w.v)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	rep := &Report{Topic: "t"}
	if err := verdict(ctx, fake.ListenAddrs(), rep, prods, adm); err != nil {
		t.Fatal(err)
	}
	if rep.Lost != 2 || rep.Duplicates != 1 || rep.OrderErrors != 1 || rep.Unexpected != 3 || rep.Anomalies != 7 {
		t.Fatalf("lost %d dup %d order %d unexpected %d anomalies %d; examples %v",
			rep.Lost, rep.Duplicates, rep.OrderErrors, rep.Unexpected, rep.Anomalies, rep.Examples)
	}
	if rep.Valid() {
		t.Fatal("report with anomalies is valid")
	}
}

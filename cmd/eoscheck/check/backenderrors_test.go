package check

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// The injected backend errors are answered although the write happened:
// a failed Produce's record is in the topic, a failed OffsetCommit's offset
// is stored; other topics and a disabled injector are left alone.
func TestBackendErrorsApplyThenFail(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	fake, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer fake.Close()
	admCl, err := kgo.NewClient(kgo.SeedBrokers(fake.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer admCl.Close()
	adm := kadm.NewClient(admCl)
	for _, topic := range []string{"in", "other"} {
		if _, err := adm.CreateTopic(ctx, 1, 1, nil, topic); err != nil {
			t.Fatal(err)
		}
	}
	be := newBackendErrors(1, 1, nil) // every request
	be.install(fake, []string{"in"}, "in", nil)
	be.setEnabled(true)

	// No retries: the first answer is the outcome (counted by kind below).
	cl, err := kgo.NewClient(kgo.SeedBrokers(fake.ListenAddrs()...), kgo.DisableIdempotentWrite(),
		kgo.RecordRetries(0), kgo.ProducerLinger(0))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	const n = 20
	for i := range n {
		err := cl.ProduceSync(ctx, &kgo.Record{Topic: "in", Value: fmt.Appendf(nil, "v%d", i)}).FirstErr()
		if err == nil { // kgo does not wrap the answer's code past its retry limit
			t.Fatalf("produce %d succeeded, want an injected error", i)
		}
	}
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "other", Value: []byte("x")}).FirstErr(); err != nil {
		t.Fatalf("produce to a topic without faults: %v", err)
	}
	offs := kadm.Offsets{}
	offs.Add(kadm.Offset{Topic: "in", Partition: 0, At: 7})
	resp, err := adm.CommitOffsets(ctx, "g", offs)
	if err != nil {
		t.Fatal(err)
	}
	if err := resp.Error(); !errors.Is(err, kerr.RequestTimedOut) {
		t.Fatalf("commit: %v, want REQUEST_TIMED_OUT", err)
	}
	be.setEnabled(false)
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "in", Value: []byte("last")}).FirstErr(); err != nil {
		t.Fatalf("produce with the injector disabled: %v", err)
	}

	ends, err := adm.ListEndOffsets(ctx, "in")
	if err != nil {
		t.Fatal(err)
	}
	if o, _ := ends.Lookup("in", 0); o.Offset != n+1 {
		t.Fatalf("input end offset %d, want %d: failed produces were not appended", o.Offset, n+1)
	}
	fetched, err := adm.FetchOffsets(ctx, "g")
	if err != nil {
		t.Fatal(err)
	}
	if o, ok := fetched.Lookup("in", 0); !ok || o.At != 7 {
		t.Fatalf("group offset %+v %v, want 7: the failed commit was not stored", o, ok)
	}
	by := be.byKind()
	if be.total() != n+1 || by[produceTimedOut.String()]+by[produceNotEnoughReplicas.String()] != n || by[commitTimedOut.String()] != 1 ||
		by[produceTimedOut.String()] == 0 || by[produceNotEnoughReplicas.String()] == 0 {
		t.Fatalf("counted %d: %v", be.total(), by)
	}
}

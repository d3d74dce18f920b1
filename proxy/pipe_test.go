package proxy

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/eosproxy/eosproxy/txnstate"
)

// pipeEnv is a one-broker kfake (with idempotence) and a Proxy in front of
// it, not serving: enough for eosproxy's own connections.
func pipeEnv(t *testing.T) (*Proxy, txnBackend, txnstate.TopicPartition) {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "t"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	p, err := New(Config{Listen: "127.0.0.1:0", Upstreams: c.ListenAddrs(), Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p, txnBackend{upstreamBackend{p}, &leaderCache{}, p.pipes}, txnstate.TopicPartition{Topic: "t", Partition: 0}
}

// Batches sent back to back on a pipe, before any answer, reach the broker
// in send order: kfake checks their sequences (a reordering is
// OUT_OF_ORDER_SEQUENCE_NUMBER) and gives them consecutive offsets.
func TestPipeKeepsSendOrder(t *testing.T) {
	_, b, tp := pipeEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	pid, epoch, err := b.InitProducerID(ctx)
	if err != nil {
		t.Fatalf("InitProducerId: %v", err)
	}
	const n = 50
	var waits []func(context.Context) map[txnstate.TopicPartition]txnstate.ProduceResult
	for i := range n {
		batch := producerBatch(pid, epoch, int32(i), false, fmt.Sprint(i))
		waits = append(waits, b.Send(ctx, map[txnstate.TopicPartition][]byte{tp: batch}))
	}
	for i, w := range waits {
		r := w(ctx)[tp]
		if r.Err != nil || r.BaseOffset != int64(i) {
			t.Fatalf("batch %d: offset %d, %v; want offset %d", i, r.BaseOffset, r.Err, i)
		}
	}
	offs, err := kadm.NewClient(b.p.admin).ListEndOffsets(ctx, tp.Topic)
	if err != nil {
		t.Fatal(err)
	}
	if o, _ := offs.Lookup(tp.Topic, tp.Partition); o.Offset != n {
		t.Fatalf("partition ends at %d, want %d", o.Offset, n)
	}
}

// When the pipe's connection fails, every send in flight on it is
// answered as unclear (it may have been written) and the next send dials a
// new connection.
func TestPipeFailureIsUnclear(t *testing.T) {
	p, b, tp := pipeEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	leaders, _, err := b.leaders.lookup(ctx, b.upstreamBackend, []txnstate.TopicPartition{tp})
	if err != nil {
		t.Fatal(err)
	}
	pp, err := p.pipes.get(ctx, p, leaders[tp])
	if err != nil {
		t.Fatal(err)
	}
	// Stop the reader from seeing answers: fail the pipe with sends queued.
	w := b.Send(ctx, map[txnstate.TopicPartition][]byte{tp: oneRecordBatch("a")})
	pp.fail(errors.New("test: connection lost"))
	after := b.Send(ctx, map[txnstate.TopicPartition][]byte{tp: oneRecordBatch("b")})
	r := w(ctx)[tp]
	if r.Err == nil && r.BaseOffset != 0 {
		t.Fatalf("send before the failure: %+v", r)
	}
	if r.Err != nil && !r.Ambiguous {
		t.Fatalf("send in flight on a failed pipe answered %v, not unclear", r.Err)
	}
	// The send after the failure went on a new connection.
	if r := after(ctx)[tp]; r.Err != nil {
		t.Fatalf("send after the failure: %v", r.Err)
	}
	if pp2, err := p.pipes.get(ctx, p, leaders[tp]); err != nil || pp2 == pp {
		t.Fatalf("pipe not replaced after its failure (%v)", err)
	}
}

package integration

import (
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// On a backend with idempotence a client producer's batches are never
// forwarded without a producer id of the backend's, even when the backend
// fails eosproxy's InitProducerId for a while (its producer id block not
// ready): the client's InitProducerId is answered
// COORDINATOR_LOAD_IN_PROGRESS, as Kafka does, and retried, instead of the
// client being left unpaired — without the backend's duplicate check — for
// life (issue 9, item 5).
func TestIdempotentNeverForwardedUnpaired(t *testing.T) {
	b := newFake(t) // with idempotence
	var calls atomic.Int64
	b.fake.ControlKey(int16(kmsg.InitProducerID), func(req kmsg.Request) (kmsg.Response, error, bool) {
		if calls.Add(1) > 3 {
			return nil, nil, false
		}
		b.fake.KeepControl()
		resp := req.ResponseKind().(*kmsg.InitProducerIDResponse)
		resp.ErrorCode = kerr.CoordinatorLoadInProgress.Code
		resp.ProducerID, resp.ProducerEpoch = -1, -1
		return resp, nil, true
	})
	p := startProxy(t, b)
	topic := createTopic(t, kadm.NewClient(newClient(t, p.Addr())), 2)
	prod := newClient(t, p.Addr(), kgo.DefaultProduceTopic(topic))
	ctx := testCtx(t)
	for i := range 100 {
		if err := prod.ProduceSync(ctx, &kgo.Record{Value: []byte(strconv.Itoa(i))}).FirstErr(); err != nil {
			t.Fatalf("produce %d: %v", i, err)
		}
	}

	cl := newClient(t, b.addrs[0], kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	pids := map[int64]int{}
	for n := 0; n < 100; {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %d of 100 records", n)
		}
		fs.EachRecord(func(r *kgo.Record) {
			n++
			pids[r.ProducerID]++
		})
	}
	if pids[-1] > 0 || len(pids) != 1 {
		t.Fatalf("records by producer id in the backend: %v; want all 100 under one backend producer id", pids)
	}
	if calls.Load() <= 3 {
		t.Fatalf("the backend answered %d InitProducerId requests: the failures did not happen", calls.Load())
	}
}

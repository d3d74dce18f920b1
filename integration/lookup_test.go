package integration

import (
	"context"
	"io"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/eosproxy/eosproxy/proxy"
)

// TestLookupBelowLogStart: a batch's outcome is unknown (the backend timed
// out), and before the producer's retry arrives DeleteRecords moves the log
// start past the producer's low-water offset. The look-up must not fail for
// ever on OFFSET_OUT_OF_RANGE (the producer would be stuck on the partition
// until its state expires): it reads from the log start. A batch still
// there is found; one that landed in the deleted range cannot be, and on
// this backend without idempotence it is written again (the limit README
// states; a backend with idempotence drops the resend).
func TestLookupBelowLogStart(t *testing.T) {
	for _, tc := range []struct {
		name      string
		landed    bool  // the batch with an unknown outcome reached the log (at offset 6)
		deleteTo  int64 // DeleteRecords before offset
		wantRetry int64 // where the retry is answered
		wantLog   []string
	}{
		{"landed and still there", true, 6, 6, []string{"b", "c"}},
		{"landed then deleted (cannot be known: written again)", true, 7, 7, []string{"b", "c"}},
		{"never landed", false, 6, 6, []string{"b", "c"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rs := newRawSetup(t, 1)
			b, topic := rs.b, rs.topic
			rp := &rawProducer{t: t, c: rs.c, topic: topic}
			direct := newClient(t, b.addrs[0], kgo.DisableIdempotentWrite(), kgo.DefaultProduceTopic(topic))
			ctx := testCtx(t)

			if got := rp.produce(rs.pid, 0, 0, "a"); got.ErrorCode != 0 || got.BaseOffset != 0 {
				t.Fatalf("first batch: %+v", got)
			}
			// Other producers' records after it: offsets 1..5.
			for range 5 {
				if err := direct.ProduceSync(ctx, &kgo.Record{Value: []byte("other")}).FirstErr(); err != nil {
					t.Fatal(err)
				}
			}
			// kfake writes a batch it answers REQUEST_TIMED_OUT, as a broker
			// can; it refuses one it answers KAFKA_STORAGE_ERROR. eosproxy
			// cannot tell either from a write.
			fault := kerr.KafkaStorageError
			if tc.landed {
				fault = kerr.RequestTimedOut
			}
			b.fake.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: topic, Err: fault})
			if got := rp.produce(rs.pid, 0, 1, "b"); got.ErrorCode != fault.Code {
				t.Fatalf("faulted batch: %+v", got)
			}
			dels, err := kadm.NewClient(direct).DeleteRecords(ctx, kadm.Offsets{topic: {0: {Topic: topic, Partition: 0, At: tc.deleteTo}}})
			if err != nil || dels.Error() != nil {
				t.Fatalf("DeleteRecords: %v %v", err, dels.Error())
			}

			if got := rp.produce(rs.pid, 0, 1, "b"); got.ErrorCode != 0 || got.BaseOffset != tc.wantRetry {
				t.Fatalf("retry after the log start moved past the low-water offset: error %s offset %d, want offset %d",
					kerr.ErrorForCode(got.ErrorCode), got.BaseOffset, tc.wantRetry)
			}
			if got := rp.produce(rs.pid, 0, 2, "c"); got.ErrorCode != 0 || got.BaseOffset != tc.wantRetry+1 {
				t.Fatalf("next batch: error %s offset %d", kerr.ErrorForCode(got.ErrorCode), got.BaseOffset)
			}
			var vals []string
			cl := newClient(t, b.addrs[0], kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
			for len(vals) < len(tc.wantLog) {
				fs := cl.PollFetches(ctx)
				if ctx.Err() != nil {
					t.Fatalf("backend holds %q, want %q", vals, tc.wantLog)
				}
				fs.EachRecord(func(r *kgo.Record) { vals = append(vals, string(r.Value)) })
			}
			if len(vals) != len(tc.wantLog) || vals[0] != tc.wantLog[0] || vals[1] != tc.wantLog[1] {
				t.Fatalf("backend holds %q from the log start, want %q", vals, tc.wantLog)
			}
		})
	}
}

// TestLookupBelowLogStartRealKafka: the same on Apache Kafka. The unknown
// outcome is a Produce eosproxy forwarded whose connection broke before the
// answer (held back by the test, and delivered to the broker or not); then
// DeleteRecords moves the log start past the producer's low-water offset,
// and the client retries. Kafka has idempotence, so eosproxy may forward
// under a producer id of its own: a resend of a batch the broker holds (or
// held, below the log start) is then dropped by the broker.
func TestLookupBelowLogStartRealKafka(t *testing.T) {
	addr := realKafka(t)
	for _, tc := range []struct {
		name     string
		landed   bool
		deleteTo int64
	}{
		{"landed and still there", true, 6},
		{"landed then deleted", true, 7},
		{"never landed", false, 6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := backend{name: "kafka", addrs: []string{addr}}
			h := &holder{held: make(chan struct{})}
			p := startProxy(t, b, func(c *proxy.Config) { c.Dial = hookDial(h.dial) })
			adm := kadm.NewClient(newClient(t, p.Addr()))
			topic := createTopic(t, adm, 1)
			ctx := testCtx(t)
			meta, err := adm.Metadata(ctx, topic)
			if err != nil {
				t.Fatal(err)
			}
			var leader string
			for _, br := range meta.Brokers {
				if br.NodeID == meta.Topics[topic].Partitions[0].Leader {
					leader = net.JoinHostPort(br.Host, strconv.Itoa(int(br.Port)))
				}
			}
			pid := initProducerID(t, p.Addr())
			rp := &rawProducer{t: t, c: dial(t, leader), topic: topic}
			if got := rp.produce(pid, 0, 0, "a"); got.ErrorCode != 0 || got.BaseOffset != 0 {
				t.Fatalf("first batch: %+v", got)
			}
			direct := newClient(t, addr, kgo.DisableIdempotentWrite(), kgo.DefaultProduceTopic(topic))
			for range 5 {
				if err := direct.ProduceSync(ctx, &kgo.Record{Value: []byte("other")}).FirstErr(); err != nil {
					t.Fatal(err)
				}
			}

			// eosproxy's upstream connection breaks with the Produce
			// written: the client's connection goes too, unanswered.
			h.armed.Store(true)
			if _, err := rp.c.Write(rawRequest(produceRequest(9, topic, map[int32][]byte{0: idempotentBatch(pid, 0, 1, "b")}), 100)); err != nil {
				t.Fatal(err)
			}
			<-h.held
			rp.c.SetReadDeadline(time.Now().Add(20 * time.Second))
			if _, err := io.ReadAll(rp.c); err != nil {
				t.Fatalf("client connection: %v", err)
			}
			if tc.landed {
				h.release(t)
			}
			dels, err := kadm.NewClient(direct).DeleteRecords(ctx, kadm.Offsets{topic: {0: {Topic: topic, Partition: 0, At: tc.deleteTo}}})
			if err != nil || dels.Error() != nil {
				t.Fatalf("DeleteRecords: %v %v", err, dels.Error())
			}

			rp = &rawProducer{t: t, c: dial(t, leader), topic: topic}
			got := rp.produce(pid, 0, 1, "b")
			if got.ErrorCode != 0 || got.BaseOffset < 6 {
				t.Fatalf("retry after the log start moved past the low-water offset: error %s offset %d",
					kerr.ErrorForCode(got.ErrorCode), got.BaseOffset)
			}
			next := rp.produce(pid, 0, 2, "c")
			if next.ErrorCode != 0 {
				t.Fatalf("next batch: %s", kerr.ErrorForCode(next.ErrorCode))
			}
			end := next.BaseOffset + 1
			var vals []string
			cl := newClient(t, addr, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
			for int64(len(vals)) < end-tc.deleteTo {
				fs := cl.PollFetches(ctx)
				if ctx.Err() != nil {
					t.Fatalf("backend holds %q from the log start %d, want %d records", vals, tc.deleteTo, end-tc.deleteTo)
				}
				fs.EachRecord(func(r *kgo.Record) { vals = append(vals, string(r.Value)) })
			}
			t.Logf("retry answered at %d; backend holds %q from the log start %d", got.BaseOffset, vals, tc.deleteTo)
			switch {
			case tc.landed && tc.deleteTo == 6:
				if got.BaseOffset != 6 || len(vals) != 2 || vals[0] != "b" || vals[1] != "c" {
					t.Fatalf("the landed batch was not found: retry at %d, log %q", got.BaseOffset, vals)
				}
			case !tc.landed:
				if got.BaseOffset != 6 || len(vals) != 2 || vals[0] != "b" || vals[1] != "c" {
					t.Fatalf("retry at %d, log %q; want b written at 6", got.BaseOffset, vals)
				}
			default:
				// Deleted: eosproxy cannot know; Kafka drops the resend if it
				// came under eosproxy's own producer id for this client.
				if vals[len(vals)-1] != "c" {
					t.Fatalf("log %q", vals)
				}
			}
		})
	}
}

// TestCommitLookupBelowLogStart: the commit path. A commit's batch is
// refused with an error that leaves its outcome unknown (it was not
// written); its retry must first look for it from the partition's
// low-water offset. Before the look-up can read (the backend fails those
// fetches meanwhile), other producers write to the partition and
// DeleteRecords moves the log start past the low-water offset. Were the
// look-up to fail for ever on OFFSET_OUT_OF_RANGE, the commit would never
// reach the backend, and every later commit of the transactional id would
// wait behind it.
func TestCommitLookupBelowLogStart(t *testing.T) {
	b := newNoEOSFake(t)
	p := startProxy(t, b, func(c *proxy.Config) { c.CommitAnswerWithin = 10 * time.Millisecond })
	adm := kadm.NewClient(newClient(t, p.Addr()))
	out := createTopic(t, adm, 1)
	ctx := testCtx(t)
	direct := newClient(t, b.addrs[0], kgo.DisableIdempotentWrite(), kgo.DefaultProduceTopic(out))

	b.fake.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: out, Err: kerr.KafkaStorageError})
	fetches := b.fake.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Fetch}, Count: -1, Err: kerr.KafkaStorageError})
	tx := newClient(t, p.Addr(), kgo.TransactionalID("tx"), kgo.DefaultProduceTopic(out))
	if err := tx.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := tx.ProduceSync(ctx, &kgo.Record{Value: []byte("x")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if err := tx.EndTransaction(ctx, kgo.TryCommit); err != nil {
		t.Fatalf("commit: %v", err)
	}
	if err := fetches.Wait(ctx, 1); err != nil { // the look-up has started failing
		t.Fatal(err)
	}
	for range 3 {
		if err := direct.ProduceSync(ctx, &kgo.Record{Value: []byte("other")}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	dels, err := kadm.NewClient(direct).DeleteRecords(ctx, kadm.Offsets{out: {0: {Topic: out, Partition: 0, At: 3}}})
	if err != nil || dels.Error() != nil {
		t.Fatalf("DeleteRecords: %v %v", err, dels.Error())
	}
	fetches.Remove()

	// The commit reaches the backend, once.
	cl := newClient(t, b.addrs[0], kgo.ConsumeTopics(out), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	waitCtx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	var vals []string
	for len(vals) == 0 {
		fs := cl.PollFetches(waitCtx)
		if waitCtx.Err() != nil {
			t.Fatalf("the commit did not reach the backend (its look-up is stuck below the log start?); proxy log:\n%s", p.logs)
		}
		fs.EachRecord(func(r *kgo.Record) { vals = append(vals, string(r.Value)) })
	}
	ends, err := kadm.NewClient(direct).ListEndOffsets(ctx, out)
	if err != nil {
		t.Fatal(err)
	}
	if e, _ := ends.Lookup(out, 0); len(vals) != 1 || vals[0] != "x" || e.Offset != 4 {
		t.Fatalf("backend holds %q from the log start, ending at %d; want [x] ending at 4", vals, e.Offset)
	}
}

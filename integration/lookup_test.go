package integration

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestLookupBelowLogStart: a batch's outcome is unknown (the backend timed
// out), and before the producer's retry arrives DeleteRecords moves the log
// start past the producer's low-water offset. The look-up must not fail for
// ever on OFFSET_OUT_OF_RANGE (the producer would be stuck on the partition
// until its state expires): it reads from the log start. A batch still
// there is found; one that landed in the deleted range cannot be, and is
// written again, as Kafka does for a producer whose batches are all below
// the log start.
func TestLookupBelowLogStart(t *testing.T) {
	for _, tc := range []struct {
		name      string
		landed    bool  // the batch with an unknown outcome reached the log (at offset 6)
		deleteTo  int64 // DeleteRecords before offset
		wantRetry int64 // where the retry is answered
		wantLog   []string
	}{
		{"landed, still there", true, 6, 6, []string{"b", "c"}},
		{"landed, then deleted: cannot be known, written again", true, 7, 7, []string{"b", "c"}},
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

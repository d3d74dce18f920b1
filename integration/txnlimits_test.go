package integration

import (
	"crypto/rand"
	"errors"
	"testing"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestTxnBatchOverTopicLimits: a transactional batch that the backend
// would refuse on append is refused when it is produced, with Kafka's error
// code, as Kafka refuses it: a batch over the topic's max.message.bytes
// (MESSAGE_TOO_LARGE), a record without a key in a compacted topic
// (INVALID_RECORD, compressed or not). Buffered instead, it would reach the
// backend only once its commit was decided and be refused there for good,
// and the commit could never finish. The producer aborts, and its next
// transaction commits and is read back read_committed.
func TestTxnBatchOverTopicLimits(t *testing.T) {
	run := func(t *testing.T, b backend) {
		p := startProxy(t, b)
		adm := kadm.NewClient(newClient(t, p.Addr()))
		small := createTopicWith(t, adm, 1, map[string]*string{"max.message.bytes": kadm.StringPtr("2000")})
		compact := createTopicWith(t, adm, 1, map[string]*string{"cleanup.policy": kadm.StringPtr("compact")})
		for _, codec := range []kgo.CompressionCodec{kgo.NoCompression(), kgo.Lz4Compression()} {
			prod := newClient(t, p.Addr(), kgo.TransactionalID(small+"-txn"), kgo.ProducerBatchCompression(codec))
			refused := func(r *kgo.Record, want error) {
				t.Helper()
				if err := prod.BeginTransaction(); err != nil {
					t.Fatal(err)
				}
				err := prod.ProduceSync(testCtx(t), r).FirstErr()
				if !errors.Is(err, want) {
					t.Errorf("produce %d bytes (key %q) to %s: %v, want %v", len(r.Value), r.Key, r.Topic, err, want)
				}
				if err := prod.EndTransaction(testCtx(t), kgo.TryAbort); err != nil {
					t.Fatalf("abort after the refusal: %v", err)
				}
			}
			big := make([]byte, 5000) // random: too large compressed too
			rand.Read(big)
			refused(&kgo.Record{Topic: small, Value: big}, kerr.MessageTooLarge)
			refused(&kgo.Record{Topic: compact, Value: []byte("no key")}, kerr.InvalidRecord)

			if err := prod.BeginTransaction(); err != nil {
				t.Fatal(err)
			}
			if err := prod.ProduceSync(testCtx(t),
				&kgo.Record{Topic: small, Value: []byte("fits")},
				&kgo.Record{Topic: compact, Key: []byte("k"), Value: []byte("keyed")},
			).FirstErr(); err != nil {
				t.Fatalf("produce what the topics take: %v", err)
			}
			if err := prod.EndTransaction(testCtx(t), kgo.TryCommit); err != nil {
				t.Fatalf("commit: %v", err)
			}
			prod.Close()
		}
		for topic, want := range map[string]string{small: "fits", compact: "keyed"} {
			cons := newClient(t, p.Addr(), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
				kgo.FetchIsolationLevel(kgo.ReadCommitted()))
			got := consumeValues(t, cons, 2)
			if len(got) != 2 || got[0] != want || got[1] != want {
				t.Errorf("%s read read_committed: %q, want %q twice (one commit per codec)", topic, got, want)
			}
		}
	}
	eachNoEOSBackend(t, run)
}

// consumeValues polls cl until it has want records and returns their values.
func consumeValues(t *testing.T, cl *kgo.Client, want int) []string {
	t.Helper()
	ctx := testCtx(t)
	var got []string
	for len(got) < want {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("consumed %d of %d records (%q) before the deadline", len(got), want, got)
		}
		fs.EachRecord(func(r *kgo.Record) { got = append(got, string(r.Value)) })
	}
	return got
}

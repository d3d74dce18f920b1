package integration

import (
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/eosproxy/eosproxy/proxy"
	"github.com/eosproxy/eosproxy/store"
)

// While the data dir's filesystem is below its reserve, transactional and
// idempotent batches are refused with KAFKA_STORAGE_ERROR (retriable, as
// Kafka answers a Produce its log dir cannot take), with a message, and
// nothing of them is kept; once there is room the same batches are taken,
// each once. (A full filesystem itself is eoscheck's --disk-fulls.)
func TestDataDirBelowReserve(t *testing.T) {
	run := func(t *testing.T, b backend) {
		var free atomic.Uint64
		var spaceLog logBuf
		space := store.NewSpace(t.TempDir(), 64<<20, zerolog.New(&spaceLog))
		setFree := func(n uint64) {
			free.Store(n)
			space.SetFree(func(string) (uint64, error) { return free.Load(), nil }) // looks again at once
		}
		setFree(1 << 40)
		p := startProxy(t, b, func(c *proxy.Config) { c.Space = space })
		adm := kadm.NewClient(newClient(t, p.Addr()))
		topic := createTopic(t, adm, 1)
		raw := newClient(t, p.Addr())
		// Produce goes to the partition's leader, as a producer sends it.
		md, err := adm.Metadata(testCtx(t), topic)
		if err != nil {
			t.Fatal(err)
		}
		leader := raw.Broker(int(md.Topics[topic].Partitions[0].Leader))
		pid := initProducerID(t, p.Addr())
		x := initRawTxn(t, raw, topic+"-txn")
		send := func(what string, req *kmsg.ProduceRequest) kmsg.ProduceResponseTopicPartition {
			t.Helper()
			resp, err := req.RequestWith(testCtx(t), leader)
			if err != nil {
				t.Fatalf("%s Produce: %v", what, err)
			}
			if len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 1 {
				t.Fatalf("%s Produce answered %+v", what, resp.Topics)
			}
			return resp.Topics[0].Partitions[0]
		}
		idem := func() kmsg.ProduceResponseTopicPartition {
			return send("idempotent", produceRequest(9, topic, map[int32][]byte{0: idempotentBatch(pid, 0, 0, "idempotent")}))
		}
		txn := func() kmsg.ProduceResponseTopicPartition {
			req := produceRequest(12, topic, map[int32][]byte{0: transactionalBatch(x.pid, x.epoch, 0, "transactional")})
			req.TransactionID = &x.id
			return send("transactional", req)
		}

		setFree(1 << 20)
		for what, rp := range map[string]kmsg.ProduceResponseTopicPartition{"idempotent": idem(), "transactional": txn()} {
			if rp.ErrorCode != kerr.KafkaStorageError.Code {
				t.Errorf("%s batch with 1 MiB free (reserve 64 MiB): %v, want KAFKA_STORAGE_ERROR", what, kerr.ErrorForCode(rp.ErrorCode))
			}
			if rp.ErrorMessage == nil || !strings.Contains(*rp.ErrorMessage, "reserve") {
				t.Errorf("%s batch's refusal message %v does not say why", what, rp.ErrorMessage)
			}
		}
		if !strings.Contains(spaceLog.String(), "almost full") {
			t.Error("no log line says the data dir is almost full")
		}
		if n := endOffsetsSum(t, b, topic); n != 0 {
			t.Fatalf("backend holds %d records written while refused", n)
		}

		setFree(1 << 40)
		first := idem()
		again := idem() // the producer's retry of the same batch
		if first.ErrorCode != 0 || again.ErrorCode != 0 || again.BaseOffset != first.BaseOffset {
			t.Fatalf("idempotent batch with room again: %v at %d, its retry %v at %d; want NONE at the same offset",
				kerr.ErrorForCode(first.ErrorCode), first.BaseOffset, kerr.ErrorForCode(again.ErrorCode), again.BaseOffset)
		}
		if rp := txn(); rp.ErrorCode != 0 {
			t.Fatalf("transactional batch with room again: %v", kerr.ErrorForCode(rp.ErrorCode))
		}
		if code := x.end(true); code != 0 {
			t.Fatalf("commit: %v", kerr.ErrorForCode(code))
		}
		cons := newClient(t, p.Addr(), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
			kgo.FetchIsolationLevel(kgo.ReadCommitted()))
		got := consumeValues(t, cons, 2)
		slices.Sort(got)
		if !slices.Equal(got, []string{"idempotent", "transactional"}) {
			t.Fatalf("read_committed: %q, want each batch once", got)
		}
		if n := endOffsetsSum(t, b, topic); n != 2 {
			t.Fatalf("backend holds %d records, want 2", n)
		}
	}
	eachNoEOSBackend(t, run)
}

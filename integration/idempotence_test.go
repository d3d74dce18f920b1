package integration

import (
	"encoding/binary"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/eosproxy/eosproxy/integration/faults"
	"github.com/eosproxy/eosproxy/proxy"
	"github.com/eosproxy/eosproxy/store"
)

func newNoEOSFake(t *testing.T) backend {
	return newFake(t, kfake.MaxVersions(faults.NoEOSVersions()))
}

// readBackend reads every record of topic straight from the backend,
// bypassing eosproxy, and fails if any carries a producer id.
func readBackend(t *testing.T, b backend, topic string, want int) map[int32][]int {
	t.Helper()
	cl := newClient(t, b.addrs[0], kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	// The writes are done: the end offsets say how many records there are.
	ends, err := kadm.NewClient(cl).ListEndOffsets(testCtx(t), topic)
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	ends.Each(func(o kadm.ListedOffset) { total += o.Offset })
	got := map[int32][]int{}
	at := map[int]string{} // where each value was first read, to name a duplicate's copies
	var dups []string
	n := 0
	ctx := testCtx(t)
	for int64(n) < max(total, int64(want)) {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("backend holds %d records, want %d (end offsets total %d)", n, want, total)
		}
		fs.EachRecord(func(r *kgo.Record) {
			if r.ProducerID != -1 {
				t.Fatalf("backend record at %d/%d carries producer id %d", r.Partition, r.Offset, r.ProducerID)
			}
			v, _ := strconv.Atoi(string(r.Value))
			here := fmt.Sprintf("%d/%d", r.Partition, r.Offset)
			if first, ok := at[v]; ok && len(dups) < 10 {
				dups = append(dups, fmt.Sprintf("value %d at %s and %s", v, first, here))
			} else if !ok {
				at[v] = here
			}
			got[r.Partition] = append(got[r.Partition], v)
			n++
		})
	}
	if total != int64(want) {
		t.Fatalf("backend partitions end at %d records in total, want %d; duplicates: %v", total, want, dups)
	}
	return got
}

func TestIdempotentProducerThroughProxy(t *testing.T) {
	b := newNoEOSFake(t)
	p := startProxy(t, b)
	adm := kadm.NewClient(newClient(t, p.Addr()))
	topic := createTopic(t, adm, 3)
	prod := newClient(t, p.Addr(), kgo.DefaultProduceTopic(topic))
	const n = 5000
	produceN(t, prod, topic, 0, n)
	checkAllOnceInOrder(t, readBackend(t, b, topic, n), n)

	// DescribeProducers (KIP-664) is answered from eosproxy's state.
	described, err := adm.DescribeProducers(testCtx(t), kadm.TopicsSet{topic: {0: {}, 1: {}, 2: {}}})
	if err != nil {
		t.Fatal(err)
	}
	producers := 0
	described.EachProducer(func(p kadm.DescribedProducer) {
		producers++
		if p.LastSequence < 0 {
			t.Fatalf("producer %d on %s/%d: last sequence %d", p.ProducerID, p.Topic, p.Partition, p.LastSequence)
		}
	})
	if producers == 0 {
		t.Fatal("DescribeProducers lists no producer")
	}
}

// The backend writes a batch and then answers an error; the producer
// retries; eosproxy must find the batch in the backend and answer the retry
// as a duplicate instead of writing it again.
func TestIdempotenceWhenBackendFailsAfterWrite(t *testing.T) {
	b := newNoEOSFake(t)
	p := startProxy(t, b)
	adm := kadm.NewClient(newClient(t, p.Addr()))
	topic := createTopic(t, adm, 3)
	var nth atomic.Int64
	b.fake.Fault(kfake.Fault{
		Keys: []kmsg.Key{kmsg.Produce}, Topic: topic, Count: -1,
		Err:  kerr.RequestTimedOut,
		When: func(kmsg.Request) bool { return nth.Add(1)%3 == 0 },
	})
	b.fake.Fault(kfake.Fault{
		Keys: []kmsg.Key{kmsg.Produce}, Topic: topic, Count: -1,
		Err:  kerr.NotEnoughReplicasAfterAppend,
		When: func(kmsg.Request) bool { return nth.Load()%5 == 0 },
	})
	// Small batches: many requests however fast the records pile up in
	// the client (a loaded machine otherwise sends them in a handful).
	prod := newClient(t, p.Addr(), kgo.DefaultProduceTopic(topic), kgo.ProducerLinger(0), kgo.ProducerBatchMaxBytes(2<<10),
		kgo.RetryBackoffFn(func(int) time.Duration { return time.Millisecond }))
	const n = 3000
	produceN(t, prod, topic, 0, n)
	checkAllOnceInOrder(t, readBackend(t, b, topic, n), n)
	if nth.Load() < 10 {
		t.Fatalf("only %d produce requests reached the faulty backend", nth.Load())
	}
	if p.Stats().Duplicates == 0 {
		t.Fatal("no retry was answered as a duplicate: the faults did not bite")
	}
}

// rawProducer speaks Produce on one connection with explicit producer ids
// and sequences.
type rawProducer struct {
	t     *testing.T
	c     net.Conn
	topic string
	corr  int32
}

func (rp *rawProducer) produce(pid int64, epoch int16, seq int32, value string) kmsg.ProduceResponseTopicPartition {
	rp.t.Helper()
	req := produceRequest(9, rp.topic, map[int32][]byte{0: idempotentBatch(pid, epoch, seq, value)})
	rp.corr++
	rp.c.Write(rawRequest(req, rp.corr))
	corr, body := readResponse(rp.t, rp.c)
	if corr != rp.corr {
		rp.t.Fatalf("correlation %d, want %d", corr, rp.corr)
	}
	return produceAnswer(rp.t, 9, body)[0]
}

func initProducerID(t *testing.T, addr string) int64 {
	t.Helper()
	resp, err := kmsg.NewPtrInitProducerIDRequest().RequestWith(testCtx(t), newClient(t, addr))
	if err != nil || resp.ErrorCode != 0 || resp.ProducerEpoch != 0 {
		t.Fatalf("InitProducerId: %v %+v", err, resp)
	}
	return resp.ProducerID
}

func TestSequenceChecksAnsweredAsKafka(t *testing.T) {
	b := newNoEOSFake(t)
	dir := t.TempDir()
	db, err := store.Open(dir, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	p := startProxy(t, b, func(c *proxy.Config) { c.DB = db })
	adm := kadm.NewClient(newClient(t, p.Addr()))
	topic := createTopic(t, adm, 1)
	meta, err := adm.Metadata(testCtx(t), topic)
	if err != nil {
		t.Fatal(err)
	}
	leader := meta.Topics[topic].Partitions[0].Leader
	var leaderAddr string
	for _, br := range meta.Brokers {
		if br.NodeID == leader {
			leaderAddr = net.JoinHostPort(br.Host, strconv.Itoa(int(br.Port)))
		}
	}
	pid := initProducerID(t, p.Addr())
	if pid2 := initProducerID(t, p.Addr()); pid2 == pid {
		t.Fatalf("InitProducerId handed out %d twice", pid)
	}
	rp := &rawProducer{t: t, c: dial(t, leaderAddr), topic: topic}
	expect := func(what string, got kmsg.ProduceResponseTopicPartition, code int16, offset int64) {
		t.Helper()
		if got.ErrorCode != code || code == 0 && got.BaseOffset != offset {
			t.Fatalf("%s: error %d offset %d, want error %d offset %d", what, got.ErrorCode, got.BaseOffset, code, offset)
		}
	}
	expect("first", rp.produce(pid, 0, 0, "a"), 0, 0)
	expect("second", rp.produce(pid, 0, 1, "b"), 0, 1)
	expect("retry of second", rp.produce(pid, 0, 1, "b"), 0, 1)
	expect("retry of first", rp.produce(pid, 0, 0, "a"), 0, 0)
	expect("gap", rp.produce(pid, 0, 3, "d"), 45, 0)
	expect("older sequence", rp.produce(pid, 0, 0, "z"), 0, 0) // same seq range as batch 0: a duplicate
	expect("new epoch not at 0", rp.produce(pid, 1, 2, "c"), 45, 0)
	expect("new epoch at 0", rp.produce(pid, 1, 0, "c"), 0, 2)
	expect("stale epoch", rp.produce(pid, 0, 2, "x"), 47, 0)
	if d := p.Stats().Duplicates; d != 3 {
		t.Fatalf("%d duplicates counted, want 3", d)
	}

	// After a restart the state is back: retries are still duplicates, and
	// the next batch is checked against the backend before it is written.
	p.Close()
	p2 := startProxy(t, b, func(c *proxy.Config) { c.DB = db })
	_ = p2
	rp2 := &rawProducer{t: t, c: dial(t, leaderAddr), topic: topic}
	expect("retry after restart", rp2.produce(pid, 1, 0, "c"), 0, 2)
	expect("stale epoch after restart", rp2.produce(pid, 0, 2, "x"), 47, 0)
	expect("next after restart", rp2.produce(pid, 1, 1, "d"), 0, 3)
	got := readBackend(t, b, topic, 4)
	if len(got[0]) != 4 {
		t.Fatalf("backend holds %v", got)
	}
}

// One Produce request whose partitions get different fates: each partition
// must still be answered, and only what is good reaches the backend once.
func TestMixedProduceRequestAnswersEveryPartition(t *testing.T) {
	rs := newRawSetup(t, 3)
	adm, topic, c, pid := rs.adm, rs.topic, rs.c, rs.pid

	send := func(corr int32, batches map[int32][]byte) map[int32]kmsg.ProduceResponseTopicPartition {
		t.Helper()
		c.Write(rawRequest(produceRequest(9, topic, batches), corr))
		got, body := readResponse(t, c)
		if got != corr {
			t.Fatalf("correlation %d, want %d", got, corr)
		}
		out := produceAnswer(t, 9, body)
		if len(out) != len(batches) {
			t.Fatalf("answer covers partitions %v, request had %d", out, len(batches))
		}
		return out
	}

	corrupt := oneRecordBatch("corrupt")
	corrupt[16] = 9 // magic
	got := send(1, map[int32][]byte{0: corrupt, 1: oneRecordBatch("plain"), 2: idempotentBatch(pid, 0, 0, "idem")})
	if got[0].ErrorCode != 2 || got[1].ErrorCode != 0 || got[2].ErrorCode != 0 {
		t.Fatalf("first request: %+v", got)
	}
	// Retry of partition 2's batch (a duplicate, answered locally) beside a
	// new plain batch on partition 1 (forwarded).
	got2 := send(2, map[int32][]byte{1: oneRecordBatch("plain2"), 2: idempotentBatch(pid, 0, 0, "idem")})
	if got2[1].ErrorCode != 0 || got2[1].BaseOffset != 1 || got2[2].ErrorCode != 0 || got2[2].BaseOffset != got[2].BaseOffset {
		t.Fatalf("second request: %+v", got2)
	}
	// An idempotent batch whose CRC does not match is refused, not
	// re-signed and forwarded.
	badCRC := idempotentBatch(pid, 0, 1, "idem2")
	badCRC[len(badCRC)-1] ^= 0xff
	if got3 := send(3, map[int32][]byte{2: badCRC}); got3[2].ErrorCode != 2 {
		t.Fatalf("bad CRC answered %+v, want CORRUPT_MESSAGE", got3[2])
	}
	// Plain batches are checked too: a bad CRC, or a length field claiming
	// more bytes than there are, is refused by eosproxy and never reaches
	// the backend (the end offsets below would move).
	plainBadCRC := oneRecordBatch("plain-bad-crc")
	plainBadCRC[len(plainBadCRC)-1] ^= 0xff
	lying := oneRecordBatch("lying-length")
	binary.BigEndian.PutUint32(lying[8:], uint32(len(lying)+100))
	if got4 := send(4, map[int32][]byte{0: lying, 1: plainBadCRC}); got4[0].ErrorCode != 2 || got4[1].ErrorCode != 2 {
		t.Fatalf("plain corrupt batches answered %+v, want CORRUPT_MESSAGE for both", got4)
	}
	if n := strings.Count(rs.p.logs.String(), "rejecting corrupt record batch"); n != 4 {
		t.Fatalf("eosproxy refused %d corrupt batches itself, want 4 (bad magic, two bad CRCs, a lying length)", n)
	}
	ends, err := adm.ListEndOffsets(testCtx(t), topic)
	if err != nil {
		t.Fatal(err)
	}
	for part, want := range map[int32]int64{0: 0, 1: 2, 2: 1} {
		if o, _ := ends.Lookup(topic, part); o.Offset != want {
			t.Fatalf("partition %d ends at %d, want %d", part, o.Offset, want)
		}
	}
}

// A client may pipeline up to five batches per partition: eosproxy takes
// them all at once on one connection, writes them in order and answers each.
func TestFivePipelinedBatchesPerPartition(t *testing.T) {
	rs := newRawSetup(t, 1)
	b, topic, c, pid := rs.b, rs.topic, rs.c, rs.pid
	for seq := int32(0); seq < 5; seq++ {
		req := produceRequest(9, topic, map[int32][]byte{0: idempotentBatch(pid, 0, seq, strconv.Itoa(int(seq)))})
		if _, err := c.Write(rawRequest(req, seq+1)); err != nil {
			t.Fatal(err)
		}
	}
	for seq := int32(0); seq < 5; seq++ {
		corr, body := readResponse(t, c)
		got := produceAnswer(t, 9, body)[0]
		if corr != seq+1 || got.ErrorCode != 0 || got.BaseOffset != int64(seq) {
			t.Fatalf("answer %d: correlation %d, error %d, offset %d", seq, corr, got.ErrorCode, got.BaseOffset)
		}
	}
	checkAllOnceInOrder(t, readBackend(t, b, topic, 5), 5)
}

// rawSetup is a one-broker backend without the EOS API keys behind eosproxy,
// a fresh topic, a raw connection to the broker's eosproxy listener and a
// producer id from eosproxy: what the raw Produce tests start from.
type rawSetup struct {
	p     *testProxy
	b     backend
	adm   *kadm.Client
	topic string
	c     net.Conn
	pid   int64
}

func newRawSetup(t *testing.T, partitions int32) rawSetup {
	t.Helper()
	b := newFake(t, kfake.NumBrokers(1), kfake.MaxVersions(faults.NoEOSVersions()))
	p := startProxy(t, b)
	adm := kadm.NewClient(newClient(t, p.Addr()))
	topic := createTopic(t, adm, partitions)
	meta, err := adm.Metadata(testCtx(t), topic)
	if err != nil {
		t.Fatal(err)
	}
	br := meta.Brokers[0]
	c := dial(t, net.JoinHostPort(br.Host, strconv.Itoa(int(br.Port))))
	return rawSetup{p: p, b: b, adm: adm, topic: topic, c: c, pid: initProducerID(t, p.Addr())}
}

package integration

// Real-broker tier, idempotent producers: Kafka's Java producer (through
// ProducerPerformance and ConsoleProducer), librdkafka and franz-go each write
// through an in-process eosproxy to the Apache Kafka broker named by
// EOSPROXY_TEST_KAFKA. eosproxy answers InitProducerId itself, checks the
// sequences and forwards every batch with its producer fields cleared, so
// although this backend supports idempotence it must never see a producer
// id: each test reads the topic straight from the broker and checks that,
// checks the count (exactly once) and order, and asks DescribeProducers
// through the proxy for eosproxy's own view of the producer.

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// idemToolTimeout bounds one client run in this file: 50000 records through
// a JVM producer take a few seconds, the JVM start 2–4 s more.
const idemToolTimeout = 90 * time.Second

// runIdemTool runs a client with stdin, bounded by idemToolTimeout, and fails
// the test with both outputs on a non-zero exit or a timeout.
func runIdemTool(t *testing.T, stdin string, name string, args ...string) (stdout, stderr string) {
	t.Helper()
	return runToolFor(t, idemToolTimeout, stdin, name, args...)
}

// javaProblems are stderr lines of a Kafka Java tool that mean a send failed
// or the idempotent producer hit an error (its WARN lines about retries are
// logged, not failed on).
var javaProblems = regexp.MustCompile(`(?m)^.*(ERROR|Exception|OUT_OF_ORDER_SEQUENCE|OutOfOrderSequence|UNKNOWN_PRODUCER_ID|InvalidProducerEpoch|DUPLICATE_SEQUENCE).*$`)

func checkJavaStderr(t *testing.T, what, stderr string) {
	t.Helper()
	if m := javaProblems.FindAllString(stderr, 5); len(m) > 0 {
		t.Fatalf("%s reported problems (first: %q):\n%s", what, m, tail(stderr, 4000))
	}
	if s := strings.TrimSpace(stderr); s != "" {
		t.Logf("%s stderr:\n%s", what, tail(s, 2000))
	}
}

// brokerEnds lists topic's end offsets straight from the broker (a fresh
// topic: every partition starts at 0), failing unless there are parts.
func brokerEnds(t *testing.T, adm *kadm.Client, topic string, parts int) map[int32]int64 {
	t.Helper()
	ends, err := adm.ListEndOffsets(testCtx(t), topic)
	if err != nil {
		t.Fatalf("list end offsets of %s: %v", topic, err)
	}
	out := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err != nil {
			t.Fatalf("end offset %s/%d: %v", o.Topic, o.Partition, o.Err)
		}
		out[o.Partition] = o.Offset
	})
	if len(out) != parts {
		t.Fatalf("end offsets for %d partitions of %s, want %d: %v", len(out), topic, parts, out)
	}
	return out
}

func sumEnds(ends map[int32]int64) int64 {
	var n int64
	for _, e := range ends {
		n += e
	}
	return n
}

// readBrokerDirect reads every record of topic straight from the broker,
// bypassing eosproxy, up to the partitions' end offsets. It fails unless the
// partitions together hold want records, at contiguous offsets from 0, each
// in a batch without producer id or epoch (eosproxy's ids never reach the
// backend). It returns the records by partition, in offset order.
func readBrokerDirect(t *testing.T, b backend, topic string, parts, want int) map[int32][]*kgo.Record {
	t.Helper()
	cl := newClient(t, b.addrs[0], kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	ends := brokerEnds(t, kadm.NewClient(cl), topic, parts)
	if total := sumEnds(ends); total != int64(want) {
		t.Fatalf("broker: partitions of %s end at %d records in total, want %d (%v)", topic, total, want, ends)
	}
	got := map[int32][]*kgo.Record{}
	done := func() bool {
		for p, e := range ends {
			if int64(len(got[p])) < e {
				return false
			}
		}
		return true
	}
	ctx := testCtx(t)
	for !done() {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			n := 0
			for _, rs := range got {
				n += len(rs)
			}
			t.Fatalf("broker: read %d of %d records of %s before timeout", n, want, topic)
		}
		for _, e := range fs.Errors() {
			t.Fatalf("broker fetch %s/%d: %v", e.Topic, e.Partition, e.Err)
		}
		fs.EachRecord(func(r *kgo.Record) {
			// eosproxy forwards under a producer id the broker gave it (the
			// client's epoch and sequences), never in a transaction.
			if r.Attrs.IsTransactional() {
				t.Fatalf("broker record %s/%d@%d is in a transactional batch (producer id %d epoch %d)",
					r.Topic, r.Partition, r.Offset, r.ProducerID, r.ProducerEpoch)
			}
			if want := int64(len(got[r.Partition])); r.Offset != want {
				t.Fatalf("broker record %s/%d at offset %d, want %d (gap or control record)", r.Topic, r.Partition, r.Offset, want)
			}
			got[r.Partition] = append(got[r.Partition], r)
		})
	}
	return got
}

// intValues maps records to their integer values, by partition.
func intValues(t *testing.T, recs map[int32][]*kgo.Record) map[int32][]int {
	t.Helper()
	out := map[int32][]int{}
	for p, rs := range recs {
		for _, r := range rs {
			v, err := strconv.Atoi(string(r.Value))
			if err != nil {
				t.Fatalf("record %d/%d: value %q is not a number", p, r.Offset, r.Value)
			}
			out[p] = append(out[p], v)
		}
	}
	return out
}

// assertBrokerHasNoOpenTxn fails if any producer the broker knows on the
// topic has a transaction open there: eosproxy writes committed data only,
// under its own idempotent producer where the broker has idempotence.
func assertBrokerHasNoOpenTxn(t *testing.T, b backend, topic string, parts int) {
	t.Helper()
	adm := kadm.NewClient(newClient(t, b.addrs[0]))
	described, err := adm.DescribeProducers(testCtx(t), kadm.TopicsSet{topic: partitionSet(parts)})
	if err != nil {
		t.Fatalf("broker DescribeProducers: %v", err)
	}
	described.EachPartition(func(d kadm.DescribedProducersPartition) {
		if d.Err != nil {
			t.Fatalf("broker DescribeProducers %s/%d: %v %s", d.Topic, d.Partition, d.Err, d.ErrMessage)
		}
		for _, pr := range d.ActiveProducers {
			if pr.CurrentTxnStartOffset != -1 {
				t.Fatalf("broker has producer %d (epoch %d) in a transaction from offset %d on %s/%d",
					pr.ProducerID, pr.ProducerEpoch, pr.CurrentTxnStartOffset, d.Topic, d.Partition)
			}
		}
	})
}

func partitionSet(parts int) map[int32]struct{} {
	s := map[int32]struct{}{}
	for p := range parts {
		s[int32(p)] = struct{}{}
	}
	return s
}

// assertOneProxyProducer asks DescribeProducers of adm (eosproxy, or the
// broker behind it, which sees the client's sequences under the producer id
// it gave eosproxy) and fails unless each partition lists exactly one producer — the same id everywhere,
// and pid when pid ≥ 0 — at epoch 0 with LastSequence one below the
// partition's record count (one producer, sequences from 0, no gap, no
// reset). It returns the producer id.
func assertOneProxyProducer(t *testing.T, adm *kadm.Client, topic string, counts map[int32]int64, pid int64) int64 {
	t.Helper()
	described, err := adm.DescribeProducers(testCtx(t), kadm.TopicsSet{topic: partitionSet(len(counts))})
	if err != nil {
		t.Fatalf("DescribeProducers: %v", err)
	}
	seen := 0
	described.EachPartition(func(d kadm.DescribedProducersPartition) {
		seen++
		if d.Err != nil {
			t.Fatalf("DescribeProducers %s/%d: %v %s", d.Topic, d.Partition, d.Err, d.ErrMessage)
		}
		prs := d.ActiveProducers.Sorted()
		if len(prs) != 1 {
			t.Fatalf("DescribeProducers %s/%d lists %d producers, want 1: %+v", d.Topic, d.Partition, len(prs), prs)
		}
		pr := prs[0]
		t.Logf("producer on %s/%d: id %d epoch %d last sequence %d (partition holds %d)",
			d.Topic, d.Partition, pr.ProducerID, pr.ProducerEpoch, pr.LastSequence, counts[d.Partition])
		if pid < 0 {
			pid = pr.ProducerID
		}
		switch {
		case pr.ProducerID != pid:
			t.Fatalf("%s/%d: producer %d, want %d", d.Topic, d.Partition, pr.ProducerID, pid)
		case pr.LastSequence < 0:
			t.Fatalf("%s/%d: producer %d has last sequence %d", d.Topic, d.Partition, pr.ProducerID, pr.LastSequence)
		case pr.ProducerEpoch != 0:
			t.Fatalf("%s/%d: producer %d at epoch %d, want 0 (a bumped epoch means the client saw an error)", d.Topic, d.Partition, pr.ProducerID, pr.ProducerEpoch)
		case int64(pr.LastSequence)+1 != counts[d.Partition]:
			t.Fatalf("%s/%d: producer %d last sequence %d, but the partition holds %d records", d.Topic, d.Partition, pr.ProducerID, pr.LastSequence, counts[d.Partition])
		}
	})
	if seen != len(counts) {
		t.Fatalf("DescribeProducers described %d partitions, want %d", seen, len(counts))
	}
	return pid
}

// assertQuietProxy fails if the proxy logged a warning or an error: on these
// clean runs (no fault injected) one would mean eosproxy answered a batch
// with an error and the client retried, which the counts alone could hide.
func assertQuietProxy(t *testing.T, p *testProxy) {
	t.Helper()
	var bad []string
	for _, line := range strings.Split(p.logs.String(), "\n") {
		if strings.Contains(line, `"level":"warn"`) || strings.Contains(line, `"level":"error"`) {
			bad = append(bad, line)
		}
	}
	if len(bad) > 0 {
		t.Fatalf("proxy logged %d warnings/errors on a clean run, first:\n%s", len(bad), strings.Join(firstN(bad, 5), "\n"))
	}
}

// partitionCounts is the number of records per partition.
func partitionCounts[T any](m map[int32][]T) map[int32]int64 {
	out := map[int32]int64{}
	for p, rs := range m {
		out[p] = int64(len(rs))
	}
	return out
}

// --- Java: ProducerPerformance -----------------------------------------------

func TestJavaIdempotentProducerThroughProxy(t *testing.T) {
	b := realBackend(t)
	sh := kafkaSh(t)
	p := startProxy(t, b)
	adm := kadm.NewClient(newClient(t, p.Addr()))
	const parts, n = 3, 50000
	topic := createTopic(t, adm, parts)

	out, stderr := runIdemTool(t, "", "bash", sh, "run", "org.apache.kafka.tools.ProducerPerformance",
		"--topic", topic, "--num-records", strconv.Itoa(n), "--record-size", "100", "--throughput", "-1",
		"--producer-props", "bootstrap.servers="+p.Addr(), "enable.idempotence=true", "acks=all",
		"max.in.flight.requests.per.connection=5", "delivery.timeout.ms=60000")
	checkJavaStderr(t, "ProducerPerformance", stderr)
	m := perfSummary.FindAllStringSubmatch(out, -1)
	if len(m) != 1 {
		t.Fatalf("want one summary line in ProducerPerformance output, found %d:\n%s", len(m), tail(out, 3000))
	}
	if m[0][1] != strconv.Itoa(n) {
		t.Fatalf("ProducerPerformance summary: %q, want %d records sent", m[0][0], n)
	}
	t.Logf("idempotent through proxy: %s", m[0][0])

	// Through the proxy: the partitions' ends sum to exactly the records
	// acknowledged, so none was written twice.
	ends := brokerEnds(t, adm, topic, parts)
	if total := sumEnds(ends); total != n {
		t.Fatalf("topic %s holds %d records (ends %v), want %d", topic, total, ends, n)
	}

	// Straight from the broker: the same records, none with a producer id,
	// and the broker knows no producer.
	recs := readBrokerDirect(t, b, topic, parts, n)
	for part, rs := range recs {
		if len(rs) == 0 {
			t.Fatalf("partition %d got no record", part)
		}
	}
	assertBrokerHasNoOpenTxn(t, b, topic, parts)

	// eosproxy's own view: one producer, sequences 0..count-1 per partition.
	assertOneProxyProducer(t, adm, topic, ends, -1)
	// The broker saw the same sequences, under its own producer id.
	assertOneProxyProducer(t, kadm.NewClient(newClient(t, b.addrs[0])), topic, ends, -1)
	assertQuietProxy(t, p)
}

// --- librdkafka (confluent-kafka-python) -------------------------------------

type rdkafkaIdemSummary struct {
	Librdkafka     []any    `json:"librdkafka"`
	Delivered      [][3]any `json:"delivered"`
	DeliveryErrors []string `json:"delivery_errors"`
	Errors         [][2]any `json:"errors"`
	Unflushed      *int     `json:"unflushed"`
	EOS            *struct {
		IdempState    string `json:"idemp_state"`
		ProducerID    int64  `json:"producer_id"`
		ProducerEpoch int16  `json:"producer_epoch"`
		EpochCnt      int    `json:"epoch_cnt"`
	} `json:"eos"`
}

// needRdkafkaPython returns the script path, skipping unless Debian's
// python3 can import confluent_kafka.
func needRdkafkaPython(t *testing.T, script string) string {
	t.Helper()
	if _, err := os.Stat(debianPython); err != nil {
		t.Skipf("librdkafka client unavailable: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, debianPython, "-c", "import confluent_kafka").CombinedOutput(); err != nil {
		t.Skipf("librdkafka client unavailable: %s cannot import confluent_kafka (install python3-confluent-kafka): %v %s",
			debianPython, err, out)
	}
	path := filepath.Join(integrationDir(t), "clients", script)
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("client script missing: %v", err)
	}
	return path
}

// consumeThroughProxy reads want records of topic through the proxy and
// fails on a fetch error, a timeout, or a record beyond want.
func consumeThroughProxy(t *testing.T, p *testProxy, topic string, want int) map[int32][]*kgo.Record {
	t.Helper()
	cl := newClient(t, p.Addr(), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	ctx := testCtx(t)
	got := map[int32][]*kgo.Record{}
	n := 0
	for n < want {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("consumed %d of %d records through the proxy before timeout", n, want)
		}
		for _, e := range fs.Errors() {
			t.Fatalf("fetch %s/%d through the proxy: %v", e.Topic, e.Partition, e.Err)
		}
		fs.EachRecord(func(r *kgo.Record) {
			got[r.Partition] = append(got[r.Partition], r)
			n++
		})
	}
	if n != want {
		t.Fatalf("consumed %d records through the proxy, want %d", n, want)
	}
	return got
}

func TestLibrdkafkaIdempotentThroughProxy(t *testing.T) {
	b := realBackend(t)
	script := needRdkafkaPython(t, "librdkafka_idempotent.py")
	p := startProxy(t, b)
	adm := kadm.NewClient(newClient(t, p.Addr()))
	const parts, n = 3, 20000
	topic := createTopic(t, adm, parts)

	out, stderr := runIdemTool(t, "", debianPython, script, "--bootstrap", p.Addr(), "--topic", topic,
		"--count", strconv.Itoa(n), "--partitions", strconv.Itoa(parts), "--timeout", "60")
	if s := strings.TrimSpace(stderr); s != "" {
		t.Logf("librdkafka stderr:\n%s", tail(s, 3000))
	}
	var s rdkafkaIdemSummary
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatalf("script output is not JSON: %v\n%s", err, tail(out, 2000))
	}
	t.Logf("librdkafka %v: %d delivered, eos %+v", s.Librdkafka, len(s.Delivered), s.EOS)

	// Producer: no error at all (error_cb reports idempotence trouble, fatal
	// or not), every record acknowledged, nothing left in the queue.
	if len(s.Errors) > 0 {
		t.Fatalf("librdkafka error_cb: %d errors (first: %v)\nstderr:\n%s", len(s.Errors), firstN2(s.Errors, 3), tail(stderr, 3000))
	}
	if len(s.DeliveryErrors) > 0 || s.Unflushed == nil || *s.Unflushed != 0 {
		t.Fatalf("producer: %d delivery errors (first: %v), unflushed %v", len(s.DeliveryErrors), firstN(s.DeliveryErrors, 1), s.Unflushed)
	}
	delivered := decodeRecs(t, "delivered", s.Delivered)
	if len(delivered) != n {
		t.Fatalf("producer: %d delivery reports, want %d", len(delivered), n)
	}
	if s.EOS == nil || s.EOS.IdempState != "Assigned" || s.EOS.ProducerID < 0 {
		t.Fatalf("librdkafka idempotence state %+v, want Assigned with a producer id", s.EOS)
	}

	// Consumer through the proxy: each value once, ascending per partition,
	// each at the partition and offset its delivery report named.
	where := map[int]rec{}
	for _, r := range delivered {
		if _, dup := where[r.value]; dup {
			t.Fatalf("two delivery reports for value %d", r.value)
		}
		where[r.value] = r
	}
	consumed := consumeThroughProxy(t, p, topic, n)
	values := intValues(t, consumed)
	for part, rs := range consumed {
		for i, r := range rs {
			v := values[part][i]
			if d := where[v]; d.partition != r.Partition || d.offset != r.Offset {
				t.Fatalf("value %d consumed at %d/%d, delivery report said %d/%d", v, r.Partition, r.Offset, d.partition, d.offset)
			}
		}
	}
	checkAllOnceInOrder(t, values, n)
	if len(consumed) != parts {
		t.Fatalf("records in %d partitions, want %d", len(consumed), parts)
	}

	// Straight from the broker: exactly n records, none with a producer id.
	readBrokerDirect(t, b, topic, parts, n)
	assertBrokerHasNoOpenTxn(t, b, topic, parts)

	// eosproxy's view names the producer id librdkafka was given.
	assertOneProxyProducer(t, adm, topic, partitionCounts(consumed), s.EOS.ProducerID)
	// The broker saw the same sequences, under its own producer id.
	assertOneProxyProducer(t, kadm.NewClient(newClient(t, b.addrs[0])), topic, partitionCounts(consumed), -1)
	assertQuietProxy(t, p)
}

func firstN2(s [][2]any, n int) [][2]any {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// --- franz-go ----------------------------------------------------------------

func TestFranzIdempotentThroughProxy(t *testing.T) {
	b := realBackend(t)
	p := startProxy(t, b)
	adm := kadm.NewClient(newClient(t, p.Addr()))
	const parts, n = 3, 20000
	topic := createTopic(t, adm, parts)

	// franz-go's default producer is idempotent (acks=all, up to five
	// requests in flight per broker).
	prod := newClient(t, p.Addr(), kgo.DefaultProduceTopic(topic))
	start := time.Now()
	produceN(t, prod, topic, 0, n)
	t.Logf("franz-go produced %d records through the proxy in %s", n, time.Since(start).Round(time.Millisecond))
	pid, epoch, err := prod.ProducerID(testCtx(t))
	if err != nil || pid < 0 || epoch != 0 {
		t.Fatalf("franz-go producer id %d epoch %d (%v): want an id from eosproxy at epoch 0", pid, epoch, err)
	}

	// Straight from the broker: each value once, in order, none with a
	// producer id; the broker knows no producer.
	recs := readBrokerDirect(t, b, topic, parts, n)
	checkAllOnceInOrder(t, intValues(t, recs), n)
	if len(recs) != parts {
		t.Fatalf("records in %d partitions, want %d", len(recs), parts)
	}
	assertBrokerHasNoOpenTxn(t, b, topic, parts)

	// eosproxy's view names the producer id franz-go was given.
	assertOneProxyProducer(t, adm, topic, partitionCounts(recs), pid)
	// The broker saw the same sequences, under its own producer id.
	assertOneProxyProducer(t, kadm.NewClient(newClient(t, b.addrs[0])), topic, partitionCounts(recs), -1)
	assertQuietProxy(t, p)
}

// --- Java: ConsoleProducer -----------------------------------------------------

func TestJavaConsoleProducerIdempotent(t *testing.T) {
	b := realBackend(t)
	sh := kafkaSh(t)
	p := startProxy(t, b)
	adm := kadm.NewClient(newClient(t, p.Addr()))
	topic := createTopic(t, adm, 1)
	const n = 500
	lines := numberedLines("idem-console", n)

	_, stderr := runIdemTool(t, strings.Join(lines, "\n")+"\n", "bash", sh, "run", "org.apache.kafka.tools.ConsoleProducer",
		"--bootstrap-server", p.Addr(), "--topic", topic,
		"--producer-property", "enable.idempotence=true", "--producer-property", "acks=all",
		"--producer-property", "delivery.timeout.ms=30000")
	checkJavaStderr(t, "console producer", stderr)

	recs := readBrokerDirect(t, b, topic, 1, n)
	got := make([]string, 0, n)
	for _, r := range recs[0] {
		got = append(got, string(r.Value))
	}
	assertSameLines(t, got, lines)
	assertBrokerHasNoOpenTxn(t, b, topic, 1)
	assertOneProxyProducer(t, adm, topic, partitionCounts(recs), -1)
	// The broker saw the same sequences, under its own producer id.
	assertOneProxyProducer(t, kadm.NewClient(newClient(t, b.addrs[0])), topic, partitionCounts(recs), -1)
	assertQuietProxy(t, p)
}

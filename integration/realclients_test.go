package integration

// Real-broker tier with clients that are not franz-go: kcat and librdkafka
// (Debian's python3-confluent-kafka), and Kafka's own Java tools run through
// integration/kafka/kafka.sh. Each test starts an in-process eosproxy in front
// of the broker named by EOSPROXY_TEST_KAFKA and talks to it only through the
// proxy; a missing client tool skips the test with the reason.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
)

// toolTimeout bounds one client tool invocation (a JVM start is 2–4 s).
const toolTimeout = 60 * time.Second

// integrationDir is the directory of this file, so the tests find
// kafka/kafka.sh and clients/ whatever the working directory.
func integrationDir(t *testing.T) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot locate the integration directory")
	}
	return filepath.Dir(file)
}

// realBackend is the real broker as a backend, skipping when none is set.
func realBackend(t *testing.T) backend {
	return backend{name: "kafka", addrs: []string{realKafka(t)}}
}

// needBinary returns the path of a client tool, or skips the test.
func needBinary(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("client tool %s not found (%v): install it to run this real-client test", name, err)
	}
	return path
}

// kafkaSh returns the path of kafka.sh, skipping unless Java and the Kafka
// jars are there to run its tools.
func kafkaSh(t *testing.T) string {
	t.Helper()
	sh := filepath.Join(integrationDir(t), "kafka", "kafka.sh")
	if _, err := os.Stat(sh); err != nil {
		t.Skipf("Kafka tools unavailable: %v", err)
	}
	needBinary(t, "bash")
	needBinary(t, "java")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "bash", sh, "env").Output()
	if err != nil {
		t.Fatalf("kafka.sh env: %v", err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if libs, ok := strings.CutPrefix(line, "EOSPROXY_KAFKA_LIBS="); ok {
			if _, err := os.Stat(libs); err != nil {
				t.Skipf("Kafka jars not fetched (%v): run integration/kafka/kafka.sh fetch", err)
			}
		}
	}
	return sh
}

// runTool runs a client tool with stdin, bounded by toolTimeout, and returns
// its stdout and stderr. A non-zero exit or a timeout fails the test with
// both outputs.
func runTool(t *testing.T, stdin string, name string, args ...string) (stdout, stderr string) {
	t.Helper()
	return runToolFor(t, toolTimeout, stdin, name, args...)
}

// runToolFor is runTool with its own time bound.
func runToolFor(t *testing.T, timeout time.Duration, stdin string, name string, args ...string) (stdout, stderr string) {
	t.Helper()
	stdout, stderr, err := runToolErrFor(t, timeout, stdin, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\nstderr:\n%s\nstdout:\n%s", name, strings.Join(args, " "), err, tail(stderr, 4000), tail(stdout, 2000))
	}
	return stdout, stderr
}

func runToolErrFor(t *testing.T, timeout time.Duration, stdin string, name string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = t.TempDir()
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.WaitDelay = 5 * time.Second // do not hang on pipes held by a killed tool's children
	start := time.Now()
	err = cmd.Run()
	t.Logf("%s %s: %v in %s", filepath.Base(name), strings.Join(firstN(args, 3), " "), exitStatus(err), time.Since(start).Round(time.Millisecond))
	if ctx.Err() != nil {
		err = fmt.Errorf("timed out after %s: %w", timeout, err)
	}
	return out.String(), errb.String(), err
}

func exitStatus(err error) string {
	if err == nil {
		return "exit 0"
	}
	return err.Error()
}

func firstN(s []string, n int) []string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// numberedLines returns n distinct lines "<prefix>-0000 …", with a few odd
// characters so a client that mangles values is caught.
func numberedLines(prefix string, n int) []string {
	lines := make([]string, n)
	for i := range lines {
		lines[i] = fmt.Sprintf("%s-%04d value with spaces, tabs\tand ünïcode #%d", prefix, i, i*i)
	}
	return lines
}

// splitLines splits tool output into lines, dropping one trailing newline.
func splitLines(s string) []string {
	s = strings.TrimSuffix(s, "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// assertSameLines fails unless got is exactly want, in order.
func assertSameLines(t *testing.T, got, want []string) {
	t.Helper()
	for i := 0; i < len(got) && i < len(want); i++ {
		if got[i] != want[i] {
			t.Fatalf("line %d: got %q, want %q", i, got[i], want[i])
		}
	}
	if len(got) != len(want) {
		t.Fatalf("got %d lines, want %d (extra or missing from line %d on)", len(got), len(want), min(len(got), len(want)))
	}
}

// assertNoUpstreamAddr fails if a client printed an upstream broker address
// (its host:port) anywhere in its output.
func assertNoUpstreamAddr(t *testing.T, b backend, what, out string) {
	t.Helper()
	for _, up := range b.addrs {
		if i := strings.Index(out, up); i >= 0 {
			t.Fatalf("%s shows upstream address %s at byte %d: …%s…", what, up, i, out[max(0, i-200):min(len(out), i+len(up)+200)])
		}
	}
}

// assertProxyBroker is assertProxyAddr plus an explicit check that the port
// is none of the upstreams' ports (the proxy listens on the same host).
func assertProxyBroker(t *testing.T, p *testProxy, b backend, host string, port int32) {
	t.Helper()
	for _, up := range b.addrs {
		_, uport, err := net.SplitHostPort(up)
		if err != nil {
			t.Fatal(err)
		}
		if strconv.Itoa(int(port)) == uport {
			t.Fatalf("client was told broker %s:%d: the upstream's port", host, port)
		}
	}
	assertProxyAddr(t, p, b, host, port)
}

// --- kcat --------------------------------------------------------------------

// kcatMetadata is the part of `kcat -L -J` the test reads.
type kcatMetadata struct {
	OriginatingBroker struct {
		ID   int32  `json:"id"`
		Name string `json:"name"`
	} `json:"originating_broker"`
	Brokers []struct {
		ID   int32  `json:"id"`
		Name string `json:"name"`
	} `json:"brokers"`
	Topics []struct {
		Topic      string            `json:"topic"`
		Partitions []json.RawMessage `json:"partitions"`
	} `json:"topics"`
}

func TestKcatMetadataShowsOnlyProxy(t *testing.T) {
	b := realBackend(t)
	kcat := needBinary(t, "kcat")
	p := startProxy(t, b)
	adm := kadm.NewClient(newClient(t, p.Addr()))
	topic := createTopic(t, adm, 1)

	out, _ := runTool(t, "", kcat, "-b", p.Addr(), "-L", "-J", "-m", "30")
	var md kcatMetadata
	if err := json.Unmarshal([]byte(out), &md); err != nil {
		t.Fatalf("kcat -L -J output is not JSON: %v\n%s", err, tail(out, 2000))
	}
	assertNoUpstreamAddr(t, b, "kcat -L -J", out)
	if len(md.Brokers) == 0 {
		t.Fatalf("kcat metadata lists no brokers:\n%s", tail(out, 2000))
	}
	for _, br := range md.Brokers {
		host, port, err := net.SplitHostPort(br.Name)
		if err != nil {
			t.Fatalf("broker %d name %q: %v", br.ID, br.Name, err)
		}
		n, err := strconv.ParseInt(port, 10, 32)
		if err != nil {
			t.Fatalf("broker %d port %q: %v", br.ID, port, err)
		}
		assertProxyBroker(t, p, b, host, int32(n))
	}
	found := false
	for _, tp := range md.Topics {
		if tp.Topic == topic {
			found = true
			if len(tp.Partitions) != 1 {
				t.Fatalf("topic %s: %d partitions in kcat metadata, want 1", topic, len(tp.Partitions))
			}
		}
	}
	if !found {
		t.Fatalf("topic %s missing from kcat metadata", topic)
	}

	// Produce 100 lines and read them back, both through the proxy.
	lines := numberedLines("kcat", 100)
	_, perr := runTool(t, strings.Join(lines, "\n")+"\n", kcat, "-P", "-b", p.Addr(), "-t", topic,
		"-X", "acks=all", "-X", "message.timeout.ms=30000")
	if strings.Contains(perr, "ERROR") {
		t.Fatalf("kcat producer reported errors:\n%s", tail(perr, 4000))
	}
	got, _ := runTool(t, "", kcat, "-C", "-b", p.Addr(), "-t", topic, "-o", "beginning", "-e", "-q",
		"-f", "%s\n")
	assertSameLines(t, splitLines(got), lines)
}

// --- Kafka console producer / consumer ----------------------------------------

func TestConsoleProducerConsumer(t *testing.T) {
	b := realBackend(t)
	sh := kafkaSh(t)
	p := startProxy(t, b)
	adm := kadm.NewClient(newClient(t, p.Addr()))
	topic := createTopic(t, adm, 1)
	group := topic + "-console"
	const n = 200
	lines := numberedLines("console", n)

	_, perr := runTool(t, strings.Join(lines, "\n")+"\n", "bash", sh, "run", "org.apache.kafka.tools.ConsoleProducer",
		"--bootstrap-server", p.Addr(), "--topic", topic,
		"--producer-property", "acks=all", "--producer-property", "delivery.timeout.ms=30000")
	if strings.Contains(perr, "ERROR") {
		t.Fatalf("console producer reported errors:\n%s", tail(perr, 4000))
	}

	got, cerr := runTool(t, "", "bash", sh, "run", "org.apache.kafka.tools.consumer.ConsoleConsumer",
		"--bootstrap-server", p.Addr(), "--topic", topic, "--group", group,
		"--from-beginning", "--max-messages", strconv.Itoa(n), "--timeout-ms", "30000")
	assertSameLines(t, splitLines(got), lines)
	if !strings.Contains(cerr, fmt.Sprintf("Processed a total of %d messages", n)) {
		t.Fatalf("console consumer did not report %d messages:\n%s", n, tail(cerr, 4000))
	}

	// The consumer commits its position on close, through the proxy's
	// group coordinator address.
	offs, err := adm.FetchOffsets(testCtx(t), group)
	if err != nil {
		t.Fatalf("fetch offsets of %s: %v", group, err)
	}
	o, ok := offs.Lookup(topic, 0)
	if !ok || o.Err != nil || o.At != n {
		t.Fatalf("group %s committed %+v (found %v), want offset %d", group, o, ok, n)
	}
}

// --- librdkafka (confluent-kafka-python) ---------------------------------------

const debianPython = "/usr/bin/python3"

type rdkafkaSummary struct {
	Librdkafka     []any      `json:"librdkafka"`
	Delivered      [][3]any   `json:"delivered"`
	DeliveryErrors []string   `json:"delivery_errors"`
	Unflushed      int        `json:"unflushed"`
	Consumed       [][3]any   `json:"consumed"`
	ConsumeErrors  []string   `json:"consume_errors"`
	CommitError    *string    `json:"commit_error"`
	Committed      [][2]int64 `json:"committed"`
	Brokers        [][3]any   `json:"brokers"`
	OrigBroker     string     `json:"orig_broker_name"`
	TopicParts     *int       `json:"topic_partitions"`
}

// rec is one record from the summary: partition, offset, value.
type rec struct {
	partition int32
	offset    int64
	value     int
}

func decodeRecs(t *testing.T, what string, raw [][3]any) []rec {
	t.Helper()
	out := make([]rec, 0, len(raw))
	for _, r := range raw {
		p, ok1 := r[0].(float64)
		o, ok2 := r[1].(float64)
		s, ok3 := r[2].(string)
		v, err := strconv.Atoi(s)
		if !ok1 || !ok2 || !ok3 || err != nil {
			t.Fatalf("%s: bad record %v", what, r)
		}
		out = append(out, rec{int32(p), int64(o), v})
	}
	return out
}

func TestLibrdkafkaPython(t *testing.T) {
	b := realBackend(t)
	if _, err := os.Stat(debianPython); err != nil {
		t.Skipf("librdkafka client unavailable: %v", err)
	}
	{
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		out, err := exec.CommandContext(ctx, debianPython, "-c", "import confluent_kafka").CombinedOutput()
		cancel()
		if err != nil {
			t.Skipf("librdkafka client unavailable: %s cannot import confluent_kafka (install python3-confluent-kafka): %v %s",
				debianPython, err, out)
		}
	}
	script := filepath.Join(integrationDir(t), "clients", "librdkafka_roundtrip.py")
	if _, err := os.Stat(script); err != nil {
		t.Fatalf("client script missing: %v", err)
	}

	p := startProxy(t, b)
	adm := kadm.NewClient(newClient(t, p.Addr()))
	topic := createTopic(t, adm, 3)
	group := topic + "-rdkafka"
	const n = 1000

	out, _ := runTool(t, "", debianPython, script, "--bootstrap", p.Addr(), "--topic", topic,
		"--group", group, "--count", strconv.Itoa(n), "--timeout", "40")
	assertNoUpstreamAddr(t, b, "librdkafka summary", out)
	var s rdkafkaSummary
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatalf("script output is not JSON: %v\n%s", err, tail(out, 2000))
	}
	t.Logf("librdkafka %v: %d delivered, %d consumed", s.Librdkafka, len(s.Delivered), len(s.Consumed))

	// Producer: every record acknowledged, nothing left in the queue.
	if len(s.DeliveryErrors) > 0 || s.Unflushed != 0 {
		t.Fatalf("producer: %d delivery errors (first: %v), %d unflushed", len(s.DeliveryErrors), firstN(s.DeliveryErrors, 1), s.Unflushed)
	}
	delivered := decodeRecs(t, "delivered", s.Delivered)
	if len(delivered) != n {
		t.Fatalf("producer: %d delivery reports, want %d", len(delivered), n)
	}

	// Consumer: each value once, ascending per partition (one key's values
	// go to one partition in send order), contiguous offsets from 0, and
	// each at the partition and offset its delivery report named.
	if len(s.ConsumeErrors) > 0 {
		t.Fatalf("consumer errors: %v", s.ConsumeErrors)
	}
	consumed := decodeRecs(t, "consumed", s.Consumed)
	where := map[int]rec{}
	for _, r := range delivered {
		where[r.value] = r
	}
	byPart := map[int32][]int{}
	for _, r := range consumed {
		if want := int64(len(byPart[r.partition])); r.offset != want {
			t.Fatalf("partition %d: record %d at offset %d, want offset %d (gap or duplicate)", r.partition, r.value, r.offset, want)
		}
		if d, ok := where[r.value]; !ok || d.partition != r.partition || d.offset != r.offset {
			t.Fatalf("value %d consumed at %d/%d, delivery report said %+v", r.value, r.partition, r.offset, d)
		}
		byPart[r.partition] = append(byPart[r.partition], r.value)
	}
	checkAllOnceInOrder(t, byPart, n)
	if len(consumed) != n {
		t.Fatalf("consumed %d records, want %d", len(consumed), n)
	}

	// Commit: the group's offsets are the partitions' ends, as the script
	// and the proxy-side admin client both see them.
	if s.CommitError != nil {
		t.Fatalf("commit: %s", *s.CommitError)
	}
	var scriptSum int64
	for _, c := range s.Committed {
		want := int64(len(byPart[int32(c[0])]))
		if want == 0 && c[1] == -1001 {
			continue // librdkafka's OFFSET_INVALID: nothing consumed there, nothing committed
		}
		if c[1] != want {
			t.Fatalf("script saw partition %d committed at %d, want %d", c[0], c[1], want)
		}
		scriptSum += c[1]
	}
	if scriptSum != n {
		t.Fatalf("script saw committed offsets summing to %d, want %d (%v)", scriptSum, n, s.Committed)
	}
	offs, err := adm.FetchOffsets(testCtx(t), group)
	if err != nil {
		t.Fatalf("fetch offsets of %s: %v", group, err)
	}
	var sum int64
	offs.Each(func(o kadm.OffsetResponse) {
		if o.Err != nil {
			t.Fatalf("committed offset %s/%d: %v", o.Topic, o.Partition, o.Err)
		}
		sum += o.At
	})
	if sum != n {
		t.Fatalf("group %s committed offsets sum to %d, want %d", group, sum, n)
	}

	// AdminClient metadata: only proxy addresses.
	if len(s.Brokers) == 0 {
		t.Fatal("AdminClient list_topics returned no brokers")
	}
	for _, br := range s.Brokers {
		host, ok1 := br[1].(string)
		port, ok2 := br[2].(float64)
		if !ok1 || !ok2 {
			t.Fatalf("bad broker entry %v", br)
		}
		assertProxyBroker(t, p, b, host, int32(port))
	}
	if s.TopicParts == nil || *s.TopicParts != 3 {
		t.Fatalf("AdminClient metadata for %s: partitions %v, want 3", topic, s.TopicParts)
	}
}

// --- ProducerPerformance ---------------------------------------------------------

// perfSummary matches ProducerPerformance's final line, which unlike its
// periodic lines carries percentiles: "20000 records sent, 41152.263374
// records/sec (3.92 MB/sec), 95.46 ms avg latency, 290.00 ms max latency,
// 80 ms 50th, ...".
var perfSummary = regexp.MustCompile(`(?m)^(\d+) records sent, [\d.]+ records/sec \([\d.]+ MB/sec\), [\d.]+ ms avg latency, [\d.]+ ms max latency, \d+ ms 50th`)

func TestProducerPerfThroughProxy(t *testing.T) {
	b := realBackend(t)
	sh := kafkaSh(t)
	p := startProxy(t, b)
	adm := kadm.NewClient(newClient(t, p.Addr()))
	topic := createTopic(t, adm, 3)
	const n = 20000

	out, _ := runTool(t, "", "bash", sh, "run", "org.apache.kafka.tools.ProducerPerformance",
		"--topic", topic, "--num-records", strconv.Itoa(n), "--record-size", "100", "--throughput", "-1",
		"--producer-props", "bootstrap.servers="+p.Addr(), "acks=all", "enable.idempotence=false")
	m := perfSummary.FindAllStringSubmatch(out, -1)
	if len(m) != 1 {
		t.Fatalf("want one summary line in ProducerPerformance output, found %d:\n%s", len(m), tail(out, 3000))
	}
	if m[0][1] != strconv.Itoa(n) {
		t.Fatalf("ProducerPerformance summary: %q, want %d records sent", m[0][0], n)
	}
	t.Logf("through proxy: %s", m[0][0])

	// Count what the broker holds, asking through the proxy: a fresh topic,
	// so every partition starts at 0 and the ends sum to the records written.
	ctx := testCtx(t)
	starts, err := adm.ListStartOffsets(ctx, topic)
	if err != nil {
		t.Fatalf("list start offsets: %v", err)
	}
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatalf("list end offsets: %v", err)
	}
	var total int64
	parts := 0
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err != nil {
			t.Fatalf("end offset %s/%d: %v", o.Topic, o.Partition, o.Err)
		}
		s, ok := starts.Lookup(o.Topic, o.Partition)
		if !ok || s.Err != nil || s.Offset != 0 {
			t.Fatalf("start offset %s/%d: %+v (found %v), want 0", o.Topic, o.Partition, s, ok)
		}
		total += o.Offset
		parts++
	})
	if parts != 3 {
		t.Fatalf("end offsets for %d partitions, want 3", parts)
	}
	if total != n {
		t.Fatalf("topic %s holds %d records, want %d", topic, total, n)
	}
}

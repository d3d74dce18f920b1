package integration

// Fault tests of eosproxy's idempotent producer: the connection between
// eosproxy and the backend is closed right after a Produce request has been
// written (integration/faults), so the backend applies the batch and eosproxy
// never reads the answer. The producer retries; eosproxy must find the batch
// in the backend instead of writing it a second time. The backend is kfake
// without the EOS API keys, so it cannot be doing the deduplication itself.

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eosproxy/eosproxy/integration/faults"
	"github.com/eosproxy/eosproxy/proxy"
)

// foundInBackendMsg is eosproxy's log line for an unknown outcome settled by
// finding the batch in the backend.
const foundInBackendMsg = "batch found in the backend"

// faultSeed is the seed of a test's fault schedule: EOSPROXY_FAULT_SEED if
// set (to repeat a failing run), else the clock. It is logged either way.
func faultSeed(t *testing.T) uint64 {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("EOSPROXY_FAULT_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("EOSPROXY_FAULT_SEED=%q: %v", s, err)
		}
		seed = v
	}
	t.Logf("fault seed %d (repeat with EOSPROXY_FAULT_SEED=%d)", seed, seed)
	return seed
}

// sparseLogf logs the first few fault reports and then every 50th, so a
// run's log shows the faults without drowning in them.
func sparseLogf(t *testing.T) func(string, ...any) {
	var n atomic.Int64
	return func(format string, args ...any) {
		if i := n.Add(1); i <= 5 || i%50 == 0 {
			t.Logf(format, args...)
		}
	}
}

// dropProduceInjector closes eosproxy's upstream connection after about one
// in 20 Produce requests.
func dropProduceInjector(t *testing.T) (*faults.Injector, func(ctx context.Context, network, addr string) (net.Conn, error)) {
	return tierInjector(faults.Config{
		Seed:        faultSeed(t),
		Probability: 0.05,
		Keys:        []int16{0}, // Produce
		Logf:        sparseLogf(t),
	})
}

// assertAmbiguityResolved fails unless the injector dropped at least min
// connections and eosproxy settled at least one unknown outcome by finding
// the batch in the backend or answered a retry as a duplicate: the faults
// created ambiguity and eosproxy resolved it, rather than never meeting it.
func assertAmbiguityResolved(t *testing.T, inj *faults.Injector, p *testProxy, min int64) {
	t.Helper()
	found := strings.Count(p.logs.String(), foundInBackendMsg)
	dups := p.Stats().Duplicates
	t.Logf("faults: %d of %d Produce requests dropped after forwarding (%d upstream connections); eosproxy: %d batches found in the backend, %d retries answered as duplicates",
		inj.Drops(), inj.Matched(), inj.Conns(), found, dups)
	if inj.Drops() < min {
		t.Fatalf("only %d connections dropped, want at least %d: the faults did not bite", inj.Drops(), min)
	}
	if dups == 0 && found == 0 {
		t.Fatal("no retry was answered as a duplicate and no batch was found in the backend: the ambiguity was never resolved")
	}
}

func TestIdempotenceUnderConnectionDrops(t *testing.T) {
	b := newNoEOSFake(t)
	inj, dial := dropProduceInjector(t)
	p := startProxy(t, b, func(c *proxy.Config) { c.Dial = dial })
	adm := kadm.NewClient(newClient(t, p.Addr()))
	topic := createTopic(t, adm, 6)
	prod := newClient(t, p.Addr(), kgo.DefaultProduceTopic(topic),
		kgo.RecordRetries(1<<30), kgo.RequestRetries(1<<30),
		kgo.RetryBackoffFn(func(int) time.Duration { return 5 * time.Millisecond }),
		// Small batches: 100k records make hundreds of Produce requests,
		// not 70 of a megabyte each, so the faults hit often.
		kgo.ProducerBatchMaxBytes(1<<10))
	const n = 100_000
	start := time.Now()
	produceN(t, prod, topic, 0, n)
	t.Logf("franz-go: %d records acknowledged in %s", n, time.Since(start).Round(time.Millisecond))
	checkAllOnceInOrder(t, readBackend(t, b, topic, n), n)
	assertAmbiguityResolved(t, inj, p, 10)
}

// needConfluentKafka skips unless Debian's python can import confluent_kafka.
func needConfluentKafka(t *testing.T) {
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
}

// librdkafkaProduceSummary is what faults/testdata/librdkafka_produce.py
// prints.
type librdkafkaProduceSummary struct {
	Librdkafka         []any    `json:"librdkafka"`
	Delivered          int      `json:"delivered"`
	DeliveryErrors     []string `json:"delivery_errors"`
	DeliveryErrorCount int      `json:"delivery_error_count"`
	Errors             [][2]any `json:"errors"`
	Unflushed          int      `json:"unflushed"`
}

func TestIdempotenceUnderConnectionDropsLibrdkafka(t *testing.T) {
	needConfluentKafka(t)
	script := filepath.Join(integrationDir(t), "faults", "testdata", "librdkafka_produce.py")
	b := newNoEOSFake(t)
	inj, dial := dropProduceInjector(t)
	p := startProxy(t, b, func(c *proxy.Config) { c.Dial = dial })
	adm := kadm.NewClient(newClient(t, p.Addr()))
	const partitions = 6
	topic := createTopic(t, adm, partitions)
	const n = 20_000
	args := []string{script, "--bootstrap", p.Addr(), "--topic", topic,
		"--count", strconv.Itoa(n), "--partitions", strconv.Itoa(partitions), "--timeout", "50",
		// Small batches: hundreds of Produce requests, so the faults hit often.
		"--batch-num-messages", "20"}
	args = append(args, rdkafkaTierArgs()...)
	if dbg := os.Getenv("EOSPROXY_RDKAFKA_DEBUG"); dbg != "" {
		args = append(args, "--debug", dbg) // librdkafka's debug contexts, e.g. eos,msg,protocol
	}
	out, stderr := runTool(t, "", debianPython, args...)
	defer func() {
		if t.Failed() && stderr != "" {
			t.Logf("librdkafka stderr (tail):\n%s", tail(stderr, 20000))
		}
	}()
	var s librdkafkaProduceSummary
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatalf("script output is not JSON: %v\n%s", err, tail(out, 2000))
	}
	var cbErrs []string
	for _, e := range s.Errors {
		if fatal, _ := e[1].(bool); fatal {
			t.Fatalf("librdkafka reported a fatal error: %v", e[0])
		}
		cbErrs = append(cbErrs, fmt.Sprint(e[0]))
	}
	t.Logf("librdkafka %v: %d delivered, %d delivery errors, %d unflushed, %d error_cb reports (first: %v)",
		s.Librdkafka, s.Delivered, s.DeliveryErrorCount, s.Unflushed, len(s.Errors), firstN(cbErrs, 3))
	if s.DeliveryErrorCount > 0 || s.Unflushed != 0 || s.Delivered != n {
		t.Fatalf("producer: %d delivered of %d, %d delivery errors (first: %v), %d unflushed",
			s.Delivered, n, s.DeliveryErrorCount, firstN(s.DeliveryErrors, 3), s.Unflushed)
	}
	checkAllOnceInOrder(t, readBackend(t, b, topic, n), n)
	assertAmbiguityResolved(t, inj, p, 10)
}

package integration

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eosproxy/eosproxy/proxy"
)

// backend is a Kafka cluster the proxy fronts in a test.
type backend struct {
	name  string
	addrs []string
	fake  *kfake.Cluster // nil for a real broker
}

// realKafka returns the real broker's bootstrap address, or skips the test
// with the reason when none is configured.
func realKafka(t *testing.T) string {
	if secureTier {
		t.Skip("secure tier: the real broker is plaintext; the real-broker security tests (realsecurity_test.go) start a SASL_SSL one of their own")
	}
	addr := os.Getenv("EOSPROXY_TEST_KAFKA")
	if addr == "" {
		t.Skip("real-broker tier skipped: EOSPROXY_TEST_KAFKA is not set (start one with integration/kafka/kafka.sh start)")
	}
	return addr
}

func newFake(t *testing.T, opts ...kfake.Opt) backend {
	t.Helper()
	if secureTier {
		opts = append(tierKfakeOpts(), opts...)
	}
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(3), kfake.AllowAutoTopicCreation()}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return backend{name: "kfake", addrs: c.ListenAddrs(), fake: c}
}

// eachBackend runs fn against a fresh 3-broker kfake cluster and, when
// configured, against the real broker.
func eachBackend(t *testing.T, fn func(t *testing.T, b backend)) {
	t.Run("kfake", func(t *testing.T) { fn(t, newFake(t)) })
	t.Run("kafka", func(t *testing.T) { fn(t, backend{name: "kafka", addrs: []string{realKafka(t)}}) })
}

// eachNoEOSBackend runs fn against a fresh kfake cluster without the EOS
// API keys and, when configured, against the real broker.
func eachNoEOSBackend(t *testing.T, fn func(t *testing.T, b backend)) {
	t.Run("kfake", func(t *testing.T) { fn(t, newNoEOSFake(t)) })
	t.Run("kafka", func(t *testing.T) { fn(t, backend{name: "kafka", addrs: []string{realKafka(t)}}) })
}

// logBuf collects the proxy's log lines for assertions.
type logBuf struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

type testProxy struct {
	*proxy.Proxy
	logs *logBuf
}

func startProxy(t *testing.T, b backend, mod ...func(*proxy.Config)) *testProxy {
	t.Helper()
	logs := &logBuf{}
	cfg := proxy.Config{
		Listen:    "127.0.0.1:0",
		Upstreams: b.addrs,
		Log:       zerolog.New(zerolog.MultiLevelWriter(logs, zerolog.NewTestWriter(t))).Level(zerolog.InfoLevel),
	}
	if secureTier {
		tierProxy(&cfg)
	}
	for _, m := range mod {
		m(&cfg)
	}
	p, err := proxy.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	p.Start(context.Background())
	t.Cleanup(p.Close)
	return &testProxy{Proxy: p, logs: logs}
}

func newClient(t *testing.T, addr string, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	if secureTier {
		opts = append(tierClientOpts(), opts...)
	}
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(addr), kgo.MetadataMinAge(100 * time.Millisecond)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

var topicSeq struct {
	sync.Mutex
	n int
}

// createTopic makes a uniquely named topic through the proxy.
func createTopic(t *testing.T, adm *kadm.Client, partitions int32) string {
	t.Helper()
	return createTopicWith(t, adm, partitions, nil)
}

// createTopicWith is createTopic with topic configs.
func createTopicWith(t *testing.T, adm *kadm.Client, partitions int32, configs map[string]*string) string {
	t.Helper()
	topicSeq.Lock()
	topicSeq.n++
	name := fmt.Sprintf("%s-%d-%d", strings.ReplaceAll(t.Name(), "/", "_"), time.Now().UnixNano()%1e6, topicSeq.n)
	topicSeq.Unlock()
	ctx := testCtx(t)
	resp, err := adm.CreateTopic(ctx, partitions, 1, configs, name)
	if err != nil || resp.Err != nil {
		t.Fatalf("create topic %s: %v %v", name, err, resp.Err)
	}
	// Kafka answers CreateTopics once the controller has the topic; a
	// broker's metadata learns it a moment later (Kafka's own tests wait
	// for it the same way). Wait until every partition has a leader.
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		meta, err := adm.Metadata(ctx, name)
		if err == nil {
			if td, ok := meta.Topics[name]; ok && td.Err == nil && len(td.Partitions) == int(partitions) &&
				!slices.ContainsFunc(td.Partitions.Sorted(), func(p kadm.PartitionDetail) bool { return p.Leader < 0 || p.Err != nil }) {
				return name
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("topic %s not in the metadata with a leader for each of its %d partitions: %v", name, partitions, err)
		case <-tick.C:
		}
	}
}

// assertProxyAddr fails unless addr is one of the proxy's addresses (same
// host, never an upstream port).
func assertProxyAddr(t *testing.T, p *testProxy, b backend, host string, port int32) {
	t.Helper()
	addr := net.JoinHostPort(host, fmt.Sprint(port))
	for _, up := range b.addrs {
		if addr == up {
			t.Fatalf("client was told upstream address %s", addr)
		}
	}
	phost, _, _ := net.SplitHostPort(p.Addr())
	if host != phost {
		t.Fatalf("client was told host %s, want proxy host %s", host, phost)
	}
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("advertised address %s does not answer: %v", addr, err)
	}
	c.Close()
}

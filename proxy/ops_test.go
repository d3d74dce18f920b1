package proxy

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"

	"github.com/eosproxy/eosproxy/store"
)

const opsTopic = "ops"

// opsEnv is a started proxy in front of kfake, with its own registry.
type opsEnv struct {
	p   *Proxy
	kf  *kfake.Cluster
	reg *prometheus.Registry
}

// logLines returns the JSON log lines in b whose message contains msg.
func logLines(b *syncBuf, msg string) []map[string]any {
	var out []map[string]any
	for _, l := range strings.Split(b.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && strings.Contains(fmt.Sprint(m["message"]), msg) {
			out = append(out, m)
		}
	}
	return out
}

func newOpsEnv(t *testing.T, cfg Config, log ...*syncBuf) *opsEnv {
	t.Helper()
	kf, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, opsTopic))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kf.Close)
	env := &opsEnv{kf: kf, reg: prometheus.NewRegistry()}
	cfg.Listen, cfg.Upstreams, cfg.NoInstanceLease, cfg.Log = "127.0.0.1:0", kf.ListenAddrs(), true, zerolog.Nop()
	if len(log) > 0 {
		cfg.Log = zerolog.New(log[0])
	}
	if cfg.Metrics == nil {
		cfg.Metrics = env.reg
	}
	if env.p, err = New(cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(env.p.Close)
	env.p.Start(context.Background())
	return env
}

func (env *opsEnv) client(t *testing.T, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(env.p.Addr()), kgo.DefaultProduceTopic(opsTopic),
		kgo.RecordPartitioner(kgo.ManualPartitioner())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// value is the sum of the samples of the named metric whose labels include
// labels (name, value pairs): a histogram's sample count.
func value(t *testing.T, g prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, l := range m.GetLabel() {
					if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue metrics
				}
			}
			switch {
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			case m.Gauge != nil:
				sum += m.Gauge.GetValue()
			case m.Histogram != nil:
				sum += float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return sum
}

// eventually waits for cond, for what happens in the background after an
// answer (a commit's forwarding); it yields rather than sleeps.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10 s", what)
		}
		runtime.Gosched()
	}
}

func produceSync(t *testing.T, cl *kgo.Client, partition int32, value string) {
	t.Helper()
	if err := cl.ProduceSync(context.Background(), &kgo.Record{Partition: partition, Value: []byte(value)}).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// Traffic of an idempotent producer moves the connection, request, byte
// and producer metrics.
func TestMetricsTraffic(t *testing.T) {
	env := newOpsEnv(t, Config{})
	g := env.reg
	if v := value(t, g, "eosproxy_connections_total"); v != 0 {
		t.Fatalf("connections before any: %v", v)
	}
	cl := env.client(t)
	produceSync(t, cl, 0, "a")
	produceSync(t, cl, 1, "b")
	for _, c := range []struct {
		name   string
		labels []string
	}{
		{"eosproxy_connections_total", nil},
		{"eosproxy_connections_open", nil},
		{"eosproxy_requests_total", []string{"api_key", "Produce"}},
		{"eosproxy_request_duration_seconds", []string{"api_key", "Produce", "path", "forwarded"}},
		{"eosproxy_request_duration_seconds", []string{"api_key", "InitProducerID", "path", "local"}},
		{"eosproxy_client_received_bytes_total", nil},
		{"eosproxy_client_sent_bytes_total", nil},
		{"eosproxy_producer_ids_total", nil},
		{"eosproxy_producers_tracked", nil},
	} {
		if v := value(t, g, c.name, c.labels...); v < 1 {
			t.Errorf("%s%v = %v after producing", c.name, c.labels, v)
		}
	}
	if v := value(t, g, "eosproxy_request_duration_seconds", "api_key", "Produce", "path", "local"); v != 0 {
		t.Errorf("idempotent Produce counted as answered locally: %v", v)
	}
	open := value(t, g, "eosproxy_connections_open")
	cl.Close()
	eventually(t, "connections closed", func() bool { return value(t, g, "eosproxy_connections_open") < open })
}

// idemProducer is a raw idempotent producer: an id from eosproxy and
// batches the test numbers itself.
func idemProducer(t *testing.T, cl *kgo.Client) (int64, func(epoch int16, seq int32, v string) int16) {
	t.Helper()
	ctx := context.Background()
	init, err := kmsg.NewPtrInitProducerIDRequest().RequestWith(ctx, cl)
	if err != nil || init.ErrorCode != 0 {
		t.Fatalf("InitProducerId: %v %v", err, init)
	}
	pid := init.ProducerID
	return pid, func(epoch int16, seq int32, v string) int16 {
		req := kmsg.NewPtrProduceRequest()
		req.Acks, req.TimeoutMillis = -1, 5000
		rt := kmsg.NewProduceRequestTopic()
		rt.Topic = opsTopic
		rp := kmsg.NewProduceRequestTopicPartition()
		rp.Records = producerBatch(pid, epoch, seq, false, v)
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		resp, err := req.RequestWith(ctx, cl)
		if err != nil {
			t.Fatal(err)
		}
		return resp.Topics[0].Partitions[0].ErrorCode
	}
}

// A resent batch is answered as a duplicate, a gap in sequence refused as
// out of order, an old epoch as fenced.
func TestMetricsProducerAnswers(t *testing.T) {
	env := newOpsEnv(t, Config{})
	g := env.reg
	_, produce := idemProducer(t, env.client(t))
	if code := produce(1, 0, "a"); code != 0 {
		t.Fatalf("first batch: %v", kerr.ErrorForCode(code))
	}
	if code := produce(1, 0, "a"); code != 0 {
		t.Fatalf("resent batch: %v", kerr.ErrorForCode(code))
	}
	if v := value(t, g, "eosproxy_duplicates_answered_total"); v != 1 {
		t.Errorf("duplicates answered %v, want 1", v)
	}
	if code := produce(1, 5, "gap"); code != kerr.OutOfOrderSequenceNumber.Code {
		t.Fatalf("gap answered %v", kerr.ErrorForCode(code))
	}
	if v := value(t, g, "eosproxy_out_of_order_rejections_total"); v != 1 {
		t.Errorf("out-of-order rejections %v, want 1", v)
	}
	if code := produce(0, 1, "old epoch"); code != kerr.InvalidProducerEpoch.Code {
		t.Fatalf("old epoch answered %v", kerr.ErrorForCode(code))
	}
	if v := value(t, g, "eosproxy_fenced_rejections_total"); v != 1 {
		t.Errorf("fenced rejections %v, want 1", v)
	}
}

// Errors in the backend's answers to forwarded idempotent batches are
// counted by code; a timed-out write, not found by the look-up of its
// retry, is settled as written; the backend's own duplicate answer too.
func TestMetricsBackendErrors(t *testing.T) {
	env := newOpsEnv(t, Config{})
	g := env.reg
	cl := env.client(t)
	_, produce := idemProducer(t, cl)
	env.failProduce(kerr.NotLeaderForPartition.Code, kerr.RequestTimedOut.Code, kerr.DuplicateSequenceNumber.Code)
	for _, want := range []error{kerr.NotLeaderForPartition, kerr.RequestTimedOut, kerr.DuplicateSequenceNumber, nil} {
		if code := produce(0, 0, "x"); kerr.ErrorForCode(code) != want {
			t.Fatalf("answered %v, want %v", kerr.ErrorForCode(code), want)
		}
	}
	for _, code := range []string{"NOT_LEADER_FOR_PARTITION", "REQUEST_TIMED_OUT", "DUPLICATE_SEQUENCE_NUMBER"} {
		if v := value(t, g, "eosproxy_backend_errors_total", "code", code); v != 1 {
			t.Errorf("backend errors %s: %v, want 1", code, v)
		}
	}
	if v := value(t, g, "eosproxy_unclear_outcomes_total", "settled", "written"); v < 1 {
		t.Errorf("unclear outcomes settled as written: %v", v)
	}
	if v := value(t, g, "eosproxy_unclear_outcomes_total", "settled", "backend_duplicate"); v != 1 {
		t.Errorf("unclear outcomes settled as the backend's duplicate: %v", v)
	}
}

// A batch whose answer was lost but that reached the backend is found by
// the retry's look-up, not written again, and counted so.
func TestMetricsUnclearFound(t *testing.T) {
	env := newOpsEnv(t, Config{})
	_, produce := idemProducer(t, env.client(t))
	env.failProduce(kerr.RequestTimedOut.Code)
	if code := produce(0, 0, "x"); code != kerr.RequestTimedOut.Code {
		t.Fatalf("answered %v", kerr.ErrorForCode(code))
	}
	// It reached the backend after all (the same records, without the
	// producer fields eosproxy would have written).
	direct, err := kgo.NewClient(kgo.SeedBrokers(env.kf.ListenAddrs()...), kgo.MaxVersions(kversion.V3_7_0())) // topics by name
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()
	req := kmsg.NewPtrProduceRequest()
	req.Acks, req.TimeoutMillis = -1, 5000
	rt := kmsg.NewProduceRequestTopic()
	rt.Topic = opsTopic
	rp := kmsg.NewProduceRequestTopicPartition()
	rp.Records = producerBatch(-1, -1, -1, false, "x")
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	if resp, err := req.RequestWith(context.Background(), direct); err != nil || resp.Topics[0].Partitions[0].ErrorCode != 0 {
		t.Fatalf("direct write: %v %v", err, resp)
	}
	if code := produce(0, 0, "x"); code != 0 {
		t.Fatalf("retry answered %v", kerr.ErrorForCode(code))
	}
	if v := value(t, env.reg, "eosproxy_unclear_outcomes_total", "settled", "found"); v != 1 {
		t.Errorf("unclear outcomes settled as found: %v, want 1", v)
	}
}

// failProduce makes the backend answer its next Produce requests with
// codes, one each, without writing anything.
func (env *opsEnv) failProduce(codes ...int16) {
	fail := codes
	env.kf.ControlKey(kmsg.Produce.Int16(), func(r kmsg.Request) (kmsg.Response, error, bool) {
		if len(fail) == 0 {
			return nil, nil, false
		}
		env.kf.KeepControl()
		req := r.(*kmsg.ProduceRequest)
		resp := req.ResponseKind().(*kmsg.ProduceResponse)
		rt := kmsg.NewProduceResponseTopic()
		rt.Topic = req.Topics[0].Topic
		rp := kmsg.NewProduceResponseTopicPartition()
		rp.ErrorCode = fail[0]
		rt.Partitions = append(rt.Partitions, rp)
		resp.Topics = append(resp.Topics, rt)
		fail = fail[1:]
		return resp, nil, true
	})
}

// Transactions: open, buffered and aged while open; committed (forwarded,
// held up in the backlog while the backend does not answer) and aborted;
// fenced by a new producer instance.
func TestMetricsTransactions(t *testing.T) {
	var logs syncBuf
	env := newOpsEnv(t, Config{}, &logs)
	g := env.reg
	ctx := context.Background()
	cl := env.client(t, kgo.TransactionalID("ops-txn"))
	if err := cl.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	produceSync(t, cl, 0, "in a transaction")
	if v := value(t, g, "eosproxy_transactions_open"); v != 1 {
		t.Errorf("open transactions %v, want 1", v)
	}
	for _, name := range []string{"eosproxy_transaction_buffered_bytes"} {
		if v := value(t, g, name); v <= 0 {
			t.Errorf("%s = %v while a transaction is open", name, v)
		}
	}
	if v := value(t, g, "eosproxy_disk_bytes", "store", "spool"); v <= 0 {
		t.Errorf("spool disk bytes %v while a transaction is open", v)
	}
	eventually(t, "oldest transaction ages", func() bool { return value(t, g, "eosproxy_transaction_oldest_open_seconds") > 0 })

	// The backend holds the commit's writes: it is decided, not carried out.
	hold, held := make(chan struct{}), make(chan struct{}, 1)
	env.kf.ControlKey(kmsg.Produce.Int16(), func(kmsg.Request) (kmsg.Response, error, bool) {
		select {
		case held <- struct{}{}:
		default:
		}
		env.kf.SleepControl(func() { <-hold })
		return nil, nil, false
	})
	if err := cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
		t.Fatal(err)
	}
	<-held
	if v := value(t, g, "eosproxy_forward_backlog_commits"); v != 1 {
		t.Errorf("backlog commits %v while the backend holds the commit, want 1", v)
	}
	if _, ok := any(env.p.coord).(backlogBytes); ok {
		if v := value(t, g, "eosproxy_forward_backlog_bytes"); v <= 0 {
			t.Errorf("backlog bytes %v while the backend holds the commit", v)
		}
	}
	close(hold)
	if err := env.p.coord.Wait(ctx, "ops-txn"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "commit forwarding timed", func() bool { return value(t, g, "eosproxy_commit_forward_seconds") == 1 })
	eventually(t, "backlog empty", func() bool { return value(t, g, "eosproxy_forward_backlog_commits") == 0 })
	if v := value(t, g, "eosproxy_transactions_total", "result", "committed"); v != 1 {
		t.Errorf("committed %v, want 1", v)
	}
	if v := value(t, g, "eosproxy_transactions_open"); v != 0 {
		t.Errorf("open transactions %v after the commit", v)
	}
	if v := value(t, g, "eosproxy_transaction_oldest_open_seconds"); v != 0 {
		t.Errorf("oldest open transaction %v s with none open", v)
	}

	if err := cl.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	produceSync(t, cl, 0, "aborted")
	if err := cl.EndTransaction(ctx, kgo.TryAbort); err != nil {
		t.Fatal(err)
	}
	if v := value(t, g, "eosproxy_transactions_total", "result", "aborted"); v != 1 {
		t.Errorf("aborted %v, want 1", v)
	}

	// A new instance fences the open transaction; the old one is refused.
	if err := cl.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	produceSync(t, cl, 0, "fenced")
	zombie := env.client(t, kgo.TransactionalID("ops-txn"))
	if err := zombie.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	produceSync(t, zombie, 1, "new instance")
	if v := value(t, g, "eosproxy_transactions_total", "result", "fenced"); v != 1 {
		t.Errorf("fenced transactions %v, want 1", v)
	}
	if err := cl.EndTransaction(ctx, kgo.TryCommit); err == nil {
		t.Fatal("fenced producer committed")
	}
	if v := value(t, g, "eosproxy_fenced_rejections_total"); v < 1 {
		t.Errorf("fenced rejections %v", v)
	}
	// Both the fencing and the refusal are logged with the client's
	// address and the transactional id.
	for _, msg := range []string{"fenced the previous one", "refusing a fenced producer's request"} {
		lines := logLines(&logs, msg)
		if len(lines) == 0 {
			t.Errorf("no log line %q", msg)
		}
		for _, l := range lines {
			if l["txn"] != "ops-txn" || l["client"] == nil {
				t.Errorf("log line %q without client and transactional id: %v", msg, l)
			}
		}
	}
}

// Connections over --max-connections, and those whose backend cannot be
// reached, are refused and counted by reason.
func TestMetricsConnectionsRefused(t *testing.T) {
	env := newOpsEnv(t, Config{MaxConnections: 1})
	// A served connection answers ApiVersions; a refused one is closed.
	apiVersions := func(c net.Conn) error {
		c.SetDeadline(time.Now().Add(10 * time.Second)) // a failure, not a hang
		frame := requestFrame(kmsg.ApiVersions.Int16(), 0, nil)
		if _, err := c.Write(binary.BigEndian.AppendUint32(nil, uint32(len(frame)))); err != nil {
			return err
		}
		if _, err := c.Write(frame); err != nil {
			return err
		}
		_, err := io.ReadFull(c, make([]byte, 4))
		return err
	}
	first, err := net.Dial("tcp", env.p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	if err := apiVersions(first); err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", env.p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := apiVersions(c); err == nil {
		t.Fatal("connection over the limit served")
	}
	if v := value(t, env.reg, "eosproxy_connections_refused_total", "reason", "max_connections"); v != 1 {
		t.Errorf("refused over the limit: %v, want 1", v)
	}

	reg := prometheus.NewRegistry()
	down := func(context.Context, string, string) (net.Conn, error) { return nil, errors.New("backend down") }
	p, err := New(Config{Listen: "127.0.0.1:0", Upstreams: []string{"127.0.0.1:1"}, Dial: down, NoInstanceLease: true, Metrics: reg, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	p.Start(context.Background())
	c2, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if err := apiVersions(c2); err == nil {
		t.Fatal("connection without a backend served")
	}
	if v := value(t, reg, "eosproxy_connections_refused_total", "reason", "upstream_unreachable"); v != 1 {
		t.Errorf("refused without a backend: %v, want 1", v)
	}
	// Once the (empty) roll-forward is done, the backend is what is missing.
	eventually(t, "not ready for want of the backend", func() bool {
		err := p.Ready(context.Background())
		return err != nil && strings.Contains(err.Error(), "backend unreachable: ")
	})
}

// The badger state on disk is measured.
func TestMetricsStateDisk(t *testing.T) {
	db, err := store.Open(t.TempDir(), zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	env := newOpsEnv(t, Config{DB: db})
	if v := value(t, env.reg, "eosproxy_disk_bytes", "store", "badger"); v <= 0 {
		t.Errorf("badger disk bytes %v", v)
	}
}

// Ready: not before Start, then once the backend answers; and Shutdown
// unregisters the collectors so that a later proxy can use the registry.
func TestReadyAndUnregister(t *testing.T) {
	kf, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer kf.Close()
	reg := prometheus.NewRegistry()
	cfg := Config{Listen: "127.0.0.1:0", Upstreams: kf.ListenAddrs(), NoInstanceLease: true, Metrics: reg, Log: zerolog.Nop()}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Ready(context.Background()); err == nil || !strings.Contains(err.Error(), "not started") {
		t.Errorf("ready before Start: %v", err)
	}
	p.Start(context.Background())
	eventually(t, "ready", func() bool { return p.Ready(context.Background()) == nil })
	p.Close()
	if err := p.Ready(context.Background()); err == nil {
		t.Error("ready after Close")
	}
	p2, err := New(cfg)
	if err != nil {
		t.Fatalf("second proxy on the same registry: %v", err)
	}
	p2.Close()
}

// A transaction past its timeout is aborted by the coordinator and counted.
func TestMetricsTimedOut(t *testing.T) {
	if !timeoutsCounted {
		t.Skip("txnstate does not report timeouts yet (see timeoutsCounted)")
	}
	env := newOpsEnv(t, Config{})
	cl := env.client(t, kgo.TransactionalID("ops-timeout"), kgo.TransactionTimeout(100*time.Millisecond))
	if err := cl.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	produceSync(t, cl, 0, "times out")
	eventually(t, "timed out", func() bool { return value(t, env.reg, "eosproxy_transactions_total", "result", "timed_out") == 1 })
}

// After a restart the proxy is not ready until the commits the previous
// run decided are carried out (roll-forward), and says so; it logs the end.
func TestReadyAfterRollForward(t *testing.T) {
	db, err := store.Open(t.TempDir(), zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	cfg := Config{DB: db, SpoolDir: t.TempDir()}
	env := newOpsEnv(t, cfg)
	// Every Produce reaching the backend while hold is set waits for it.
	var hold atomic.Pointer[chan struct{}]
	held := make(chan struct{}, 4)
	env.kf.ControlKey(kmsg.Produce.Int16(), func(kmsg.Request) (kmsg.Response, error, bool) {
		env.kf.KeepControl()
		if h := hold.Load(); h != nil {
			held <- struct{}{}
			env.kf.SleepControl(func() { <-*h })
		}
		return nil, nil, false
	})
	first, second := make(chan struct{}), make(chan struct{})
	defer close(first)
	hold.Store(&first)

	cl := env.client(t, kgo.TransactionalID("ops-rollforward"))
	if err := cl.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	produceSync(t, cl, 0, "decided before the restart")
	if err := cl.EndTransaction(context.Background(), kgo.TryCommit); err != nil {
		t.Fatal(err)
	}
	<-held // the commit is decided and its forwarding held
	cl.Close()
	hold.Store(&second)
	env.p.Close()

	var logs syncBuf
	cfg.Listen, cfg.Upstreams, cfg.NoInstanceLease, cfg.Metrics, cfg.Log = "127.0.0.1:0", env.kf.ListenAddrs(), true, env.reg, zerolog.New(&logs)
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	p.Start(context.Background())
	<-held // the roll-forward's write
	if err := p.Ready(context.Background()); err == nil || !strings.Contains(err.Error(), "rolling forward") {
		t.Errorf("ready while rolling forward: %v", err)
	}
	close(second)
	eventually(t, "ready after the roll-forward", func() bool { return p.Ready(context.Background()) == nil })
	if lines := logLines(&logs, "roll-forward finished"); len(lines) != 1 {
		t.Errorf("roll-forward's end logged %d times", len(lines))
	}
}

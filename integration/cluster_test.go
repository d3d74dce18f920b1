package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/eosproxy/eosproxy/integration/faults"
)

// clusterInstance is one eosproxy process of a cluster (--cluster), with
// its bootstrap port and the range of its broker ports.
type clusterInstance struct {
	cp        *crashProxy
	bootstrap string
	lo, hi    int
	dataDir   string
	// cutFile cuts the instance off from the backend while it exists
	// (upstream.Cut; not on the secure tier, whose backend has TLS).
	cutFile string
	up      bool
}

func startCluster(t *testing.T, bin string, b backend, rng *rand.Rand, name string, n int, session time.Duration) []*clusterInstance {
	t.Helper()
	var out []*clusterInstance
	for range n {
		base, err := faults.FreePortRange(rng, 1+len(b.addrs))
		if err != nil {
			t.Fatal(err)
		}
		in := &clusterInstance{bootstrap: net.JoinHostPort("127.0.0.1", strconv.Itoa(base)), lo: base + 1, hi: base + len(b.addrs), dataDir: t.TempDir()}
		in.cp = newCrashProxy(t, bin,
			"--log-format", "json", "--log-level", "info",
			"--cluster", name, "--cluster-session-timeout", session.String(),
			// Checkpoints (and the log trimmed) many times over the test.
			"--cluster-checkpoint-bytes", "16384",
			"--listen", in.bootstrap,
			"--broker-ports", fmt.Sprintf("%d-%d", in.lo, in.hi),
			"--upstream", strings.Join(b.addrs, ","),
			"--admin-listen", "",
			"--data-dir", in.dataDir)
		in.cp.args = append(in.cp.args, tierBinaryArgs()...)
		in.cp.env = tierBinaryEnv()
		if !secureTier {
			in.cutFile = filepath.Join(t.TempDir(), "cut")
			in.cp.env = append(in.cp.env, "EOSPROXY_TEST_BACKEND_CUT_FILE="+in.cutFile)
		}
		in.cp.start()
		in.up = true
		out = append(out, in)
	}
	return out
}

// clusterOwner asks the cluster, through any running instance, for its
// metadata and returns the instance whose broker listeners it names: the
// one serving. It waits until there is one.
func clusterOwner(t *testing.T, insts []*clusterInstance, within time.Duration) int {
	t.Helper()
	deadline := time.Now().Add(within)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		for _, in := range insts {
			if !in.up {
				continue
			}
			if i := askOwner(in.bootstrap, insts); i >= 0 {
				return i
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no instance of the cluster serves after %s", within)
		}
		<-tick.C
	}
}

func askOwner(bootstrap string, insts []*clusterInstance) int {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	opts := []kgo.Opt{kgo.SeedBrokers(bootstrap), kgo.DialTimeout(500 * time.Millisecond), kgo.RequestRetries(0)}
	if secureTier {
		opts = append(tierClientOpts(), opts...)
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return -1
	}
	defer cl.Close()
	resp, err := kmsg.NewPtrMetadataRequest().RequestWith(ctx, cl)
	if err != nil || len(resp.Brokers) == 0 {
		return -1
	}
	port := int(resp.Brokers[0].Port)
	for i, in := range insts {
		if port >= in.lo && port <= in.hi && in.up {
			return i
		}
	}
	return -1
}

// Issue 13: three eosproxy processes as one cluster in front of one
// backend. An idempotent and a transactional producer bootstrap from all
// three; the serving instance is SIGKILLed again and again (and once
// paused, once cut off from the backend, once stopped cleanly) while they
// run, and the killed one restarts as a standby. Every acknowledged record is in the backend exactly once, a
// committed transaction's records all, an aborted one's none, and each
// failover is timed.
func TestClusterFailover(t *testing.T) {
	bin := buildProxy(t)
	eachBackend(t, func(t *testing.T, b backend) { clusterFailover(t, bin, b) })
}

func clusterFailover(t *testing.T, bin string, b backend) {
	seed := faultSeed(t)
	rng := rand.New(rand.NewPCG(seed, seed>>1|1))
	const session = 6 * time.Second
	insts := startCluster(t, bin, b, rng, fmt.Sprintf("test%d", seed%100000), 3, session)
	owner := clusterOwner(t, insts, 30*time.Second)
	t.Logf("instance %d serves first", owner)

	adm := kadm.NewClient(newClient(t, b.addrs[0]))
	idemTopic := createTopic(t, adm, 6)
	txnTopic := createTopic(t, adm, 3)
	var seeds []string
	for _, in := range insts {
		seeds = append(seeds, in.bootstrap)
	}
	retry := []kgo.Opt{
		kgo.SeedBrokers(seeds...),
		kgo.RecordRetries(1 << 30), kgo.RequestRetries(1 << 30),
		kgo.RetryBackoffFn(func(n int) time.Duration { return min(time.Duration(n)*20*time.Millisecond, 250*time.Millisecond) }),
		kgo.RecordDeliveryTimeout(3 * time.Minute), kgo.RequestTimeoutOverhead(5 * time.Second),
	}

	// The idempotent producer.
	prod := newClient(t, seeds[0], append(retry, kgo.DefaultProduceTopic(idemTopic), kgo.ProducerBatchMaxBytes(4<<10))...)
	const n = 20_000
	acked := make([]atomic.Bool, n)
	var nacked, nfailed atomic.Int64
	var wg sync.WaitGroup
	issued := 0
	produce := func(upTo int) {
		for ; issued < upTo; issued++ {
			i := issued
			wg.Add(1)
			prod.Produce(context.Background(), &kgo.Record{Key: []byte(strconv.Itoa(i % 7)), Value: []byte(strconv.Itoa(i))},
				func(_ *kgo.Record, err error) {
					defer wg.Done()
					if err != nil {
						nfailed.Add(1)
						return
					}
					acked[i].Store(true)
					nacked.Add(1)
				})
		}
	}

	// The transactional producer: transactions of 20 records, each value
	// naming its transaction; on any error it aborts (or, if that fails
	// too, starts a new client: InitProducerId fences the old one).
	type txnOutcome int
	const (
		committed txnOutcome = iota + 1
		aborted
		unknown // EndTxn(commit) failed: Kafka's clients cannot know either
	)
	var tmu sync.Mutex
	outcomes := map[int]txnOutcome{}
	txnDone := make(chan struct{})
	stopTxn := make(chan struct{})
	go func() {
		defer close(txnDone)
		newTxnClient := func() *kgo.Client {
			cl, err := kgo.NewClient(append(retry, append(txnTierOpts(), kgo.DefaultProduceTopic(txnTopic),
				kgo.TransactionalID("cluster-txn-"+strconv.FormatUint(seed, 10)), kgo.TransactionTimeout(30*time.Second))...)...)
			if err != nil {
				t.Error(err)
			}
			return cl
		}
		cl := newTxnClient()
		defer func() { cl.Close() }()
		for txn := 0; ; txn++ {
			select {
			case <-stopTxn:
				return
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			err := cl.BeginTransaction()
			for r := 0; err == nil && r < 20; r++ {
				err = cl.ProduceSync(ctx, &kgo.Record{Value: fmt.Appendf(nil, "%d/%d", txn, r)}).FirstErr()
			}
			abort := err != nil || txn%5 == 4
			if err == nil {
				err = cl.EndTransaction(ctx, kgo.TransactionEndTry(!abort))
				tmu.Lock()
				switch {
				case err == nil && abort:
					outcomes[txn] = aborted
				case err == nil:
					outcomes[txn] = committed
				default:
					outcomes[txn] = unknown
				}
				tmu.Unlock()
			} else {
				tmu.Lock()
				outcomes[txn] = aborted
				tmu.Unlock()
				if cl.EndTransaction(ctx, kgo.TryAbort) != nil {
					err = fmt.Errorf("abort failed")
				}
			}
			cancel()
			if err != nil {
				cl.Close()
				cl = newTxnClient()
			}
		}
	}()

	// librdkafka's idempotent producer too (Debian's python3-confluent-kafka),
	// paced to span the faults.
	const rdN = 3000
	rdTopic := createTopic(t, adm, 3)
	var rdOut, rdErr strings.Builder
	rdDone := make(chan error, 1)
	if rdScript := rdkafkaScript(t, "librdkafka_idempotent.py"); rdScript != "" && !secureTier {
		cmd := exec.Command(debianPython, rdScript, "--bootstrap", strings.Join(seeds, ","), "--topic", rdTopic,
			"--count", strconv.Itoa(rdN), "--partitions", "3", "--rate", "150", "--timeout", "120")
		cmd.Stdout, cmd.Stderr = &rdOut, &rdErr
		go func() { rdDone <- cmd.Run() }()
	} else {
		close(rdDone)
	}

	// Faults: SIGKILL the serving instance, pause it (SIGSTOP) past the
	// session timeout and let it go on (SIGCONT: a zombie, which must find
	// itself deposed), cut it off from the backend while its clients still
	// reach it (it must notice by itself during the cut and let them go),
	// or stop it cleanly (SIGTERM); a killed or stopped instance restarts
	// as a standby. Each time, how long until another instance serves.
	const faultsN = 6
	var failovers []time.Duration
	for k := range faultsN {
		interval := 500*time.Millisecond + time.Duration(rng.Int64N(int64(1500*time.Millisecond)))
		end := time.Now().Add(interval)
		for time.Now().Before(end) {
			produce(min(issued+50, n*(k+1)/(faultsN+1)))
			time.Sleep(10 * time.Millisecond) // pacing the load, not synchronisation
		}
		victim := clusterOwner(t, insts, session+30*time.Second)
		how := []string{"SIGKILL", "SIGSTOP", "SIGKILL", "cut", "SIGKILL", "clean stop (SIGTERM)"}[k]
		if how == "cut" && insts[victim].cutFile == "" {
			how = "SIGKILL"
		}
		down := time.Now()
		deposedBefore := insts[victim].cp.logs.count(deposedMsg)
		switch how {
		case "SIGKILL":
			insts[victim].cp.kill()
		case "SIGSTOP":
			insts[victim].cp.signal(syscall.SIGSTOP)
		case "cut":
			if err := os.WriteFile(insts[victim].cutFile, nil, 0o644); err != nil {
				t.Fatal(err)
			}
		default:
			insts[victim].cp.stop()
		}
		insts[victim].up = false
		next := clusterOwner(t, insts, 3*session)
		took := time.Since(down)
		failovers = append(failovers, took)
		switch {
		case how == "clean stop (SIGTERM)" && took > 3*time.Second+time.Second:
			t.Errorf("a clean stop handed over in %s, want ≤ 3 s (+1 s for the test's polling)", took.Round(time.Millisecond))
		case how != "clean stop (SIGTERM)" && took > session+5*time.Second:
			t.Errorf("failover after a %s took %s, want ≤ session timeout %s + 5 s", how, took.Round(time.Millisecond), session)
		}
		t.Logf("fault %d: %s of instance %d; instance %d serves after %s", k+1, how, victim, next, took.Round(time.Millisecond))
		if how == "cut" {
			// Cut off, it must see by itself that the backend no longer
			// hears from it, within the session timeout and a few
			// seconds, and give up, so that its clients go elsewhere.
			waitFor(t, "the owner cut off from the backend to give up", session+5*time.Second, func() bool {
				return insts[victim].cp.logs.count(deposedMsg) > deposedBefore
			})
			t.Logf("the cut owner %d gave up %s after the cut", victim, time.Since(down).Round(time.Millisecond))
			if err := os.Remove(insts[victim].cutFile); err != nil {
				t.Fatal(err)
			}
			insts[victim].up = true
			if o := clusterOwner(t, insts, 3*session); o != next {
				t.Errorf("after the cut ended, instance %d serves, not %d", o, next)
			}
			continue
		}
		if how == "SIGSTOP" {
			// Resumed, the old owner must learn that it was deposed,
			// give up, and serve nothing more.
			insts[victim].cp.signal(syscall.SIGCONT)
			waitFor(t, "the resumed owner to give up", 3*session, func() bool { return insts[victim].cp.logs.count(deposedMsg) > deposedBefore })
			insts[victim].up = true
			if o := clusterOwner(t, insts, 3*session); o != next {
				t.Errorf("after the zombie resumed, instance %d serves, not %d", o, next)
			}
			continue
		}
		if k == 2 {
			// The data dir is a cache of the cluster's log: one wiped
			// rebuilds from the backend.
			if err := os.RemoveAll(insts[victim].dataDir); err != nil {
				t.Fatal(err)
			}
			t.Logf("instance %d's data dir wiped before its restart", victim)
		}
		insts[victim].cp.start()
		insts[victim].up = true
	}
	produce(n)
	close(stopTxn)
	flushCtx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := prod.Flush(flushCtx); err != nil {
		t.Fatalf("flush: %v (%d acknowledged, %d failed)", err, nacked.Load(), nfailed.Load())
	}
	wg.Wait()
	<-txnDone
	if err, ran := <-rdDone; ran {
		checkRdkafkaThroughCluster(t, b, rdTopic, rdN, err, rdOut.String(), rdErr.String())
	}
	t.Logf("failovers: %v; idempotent: %d acknowledged, %d failed", failovers, nacked.Load(), nfailed.Load())

	// The idempotent records, read from the backend directly.
	got, _ := readBackendRecords(t, b, idemTopic, true)
	dups, lost := dupsAndLost(countValues(t, got, n), acked)
	if len(dups) > 0 || len(lost) > 0 {
		t.Errorf("idempotent records: %d duplicated (first %v), %d acknowledged and lost (first %v)", len(dups), dups[:min(10, len(dups))], len(lost), lost[:min(10, len(lost))])
	}

	// The transactions, read_committed through the cluster.
	cons := newClient(t, seeds[1], kgo.SeedBrokers(seeds...), kgo.ConsumeTopics(txnTopic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	// eosproxy writes only committed data to the backend, plainly, but an
	// EndTxn(commit) may be answered before the last of its data is there
	// (as Kafka answers before its markers are written): read until every
	// transaction the producer saw committed is whole and nothing more is
	// in the backend than was read.
	tmu.Lock()
	var mustCommit []int
	for txn, o := range outcomes {
		if o == committed {
			mustCommit = append(mustCommit, txn)
		}
	}
	tmu.Unlock()
	perTxn := map[int]map[int]int{}
	ctx := testCtx(t)
	var read int64
	for {
		whole := true
		for _, txn := range mustCommit {
			whole = whole && len(perTxn[txn]) >= 20
		}
		if whole {
			ends, err := adm.ListEndOffsets(ctx, txnTopic)
			if err != nil {
				t.Fatal(err)
			}
			var total int64
			ends.Each(func(o kadm.ListedOffset) { total += o.Offset })
			if read >= total {
				break
			}
		}
		fs := cons.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %d committed records through the cluster; the committed transactions are not all whole before timeout", read)
		}
		fs.EachRecord(func(r *kgo.Record) {
			read++
			var txn, i int
			if _, err := fmt.Sscanf(string(r.Value), "%d/%d", &txn, &i); err != nil {
				t.Errorf("bad transactional value %q", r.Value)
				return
			}
			if perTxn[txn] == nil {
				perTxn[txn] = map[int]int{}
			}
			perTxn[txn][i]++
		})
	}
	tmu.Lock()
	defer tmu.Unlock()
	var ncommitted, naborted, nunknown int
	for txn, o := range outcomes {
		recs := perTxn[txn]
		switch o {
		case committed:
			ncommitted++
			if len(recs) != 20 {
				t.Errorf("committed transaction %d: %d of its 20 records read", txn, len(recs))
			}
		case aborted:
			naborted++
			if len(recs) != 0 {
				t.Errorf("aborted transaction %d: %d of its records read", txn, len(recs))
			}
		case unknown:
			nunknown++
			if len(recs) != 0 && len(recs) != 20 {
				t.Errorf("transaction %d (commit outcome unknown to the client): %d of its 20 records read", txn, len(recs))
			}
		}
		for i, c := range recs {
			if c > 1 {
				t.Errorf("transaction %d record %d read %d times", txn, i, c)
			}
		}
	}
	for txn := range perTxn {
		if _, ok := outcomes[txn]; !ok {
			t.Errorf("records of transaction %d read, which the producer never ended", txn)
		}
	}
	if ncommitted == 0 {
		t.Error("no transaction committed")
	}
	t.Logf("transactions: %d committed, %d aborted, %d with an unknown outcome", ncommitted, naborted, nunknown)

	var checkpoints, deposed int
	for _, in := range insts {
		checkpoints += in.cp.logs.count("checkpoint of the state written")
		deposed += in.cp.logs.count(deposedMsg)
	}
	t.Logf("checkpoints written: %d; owners deposed (fenced): %d", checkpoints, deposed)
	if checkpoints == 0 {
		t.Error("no checkpoint written: the replays after the failovers never started from one")
	}
	if deposed == 0 {
		t.Error("the paused owner was never deposed: fencing not exercised")
	}
}

// rdkafkaScript is the path of a librdkafka client script, or "" (logged)
// when Debian's python3-confluent-kafka is not installed.
func rdkafkaScript(t *testing.T, name string) string {
	t.Helper()
	if err := exec.Command(debianPython, "-c", "import confluent_kafka").Run(); err != nil {
		t.Logf("librdkafka part skipped: %s cannot import confluent_kafka (install python3-confluent-kafka): %v", debianPython, err)
		return ""
	}
	return filepath.Join(integrationDir(t), "clients", name)
}

// checkRdkafkaThroughCluster judges the librdkafka idempotent producer's
// run: no fatal error, every record delivered, each once in the backend.
func checkRdkafkaThroughCluster(t *testing.T, b backend, topic string, n int, runErr error, out, stderr string) {
	t.Helper()
	if runErr != nil {
		t.Errorf("librdkafka producer: %v\n%s", runErr, tail(stderr, 3000))
		return
	}
	var s rdkafkaIdemSummary
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Errorf("librdkafka output is not JSON: %v\n%s", err, tail(out, 2000))
		return
	}
	for _, e := range s.Errors {
		if fatal, _ := e[1].(bool); fatal {
			t.Errorf("librdkafka fatal error: %v", e[0])
		}
	}
	if len(s.DeliveryErrors) > 0 || s.Unflushed == nil || *s.Unflushed != 0 || len(s.Delivered) != n {
		t.Errorf("librdkafka: %d delivered of %d, %d delivery errors (first %v), unflushed %v", len(s.Delivered), n, len(s.DeliveryErrors), firstN(s.DeliveryErrors, 1), s.Unflushed)
	}
	got, _ := readBackendRecords(t, b, topic, true)
	bad := 0
	for v, c := range countValues(t, got, n) {
		if c != 1 {
			if bad < 5 {
				t.Errorf("librdkafka value %d is %d times in the backend", v, c)
			}
			bad++
		}
	}
	t.Logf("librdkafka %v: %d delivered through the cluster, %d transient errors reported; %d values not exactly once in the backend", s.Librdkafka, len(s.Delivered), len(s.Errors), bad)
}

const deposedMsg = "no longer the cluster's owner"

// waitFor polls cond until it holds, or fails the test after within.
func waitFor(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s", within, what)
		}
		<-tick.C
	}
}

func txnTierOpts() []kgo.Opt {
	if secureTier {
		return tierClientOpts()
	}
	return nil
}

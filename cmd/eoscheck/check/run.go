package check

// Run's phases: set-up (this file: files, backend, topics, eosproxy,
// producers, copiers and readers, then the load and the progress lines),
// the fault schedule (schedule.go), and the verdict and report (finish.go).
// They share one run.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/eosproxy/eosproxy/integration/faults"
)

// run is one eoscheck run: what its phases set up and share.
type run struct {
	cfg     Config
	rng     *rand.Rand
	rep     *Report
	start   time.Time
	out     io.Writer
	closers []func() // run last first when Run returns

	// Set-up.
	work, logPath string
	dataDir       string // eosproxy's (one instance)
	logFile       *os.File
	trace         *tracer
	backend       []string
	drops         *dropper
	fake          *kfake.Cluster
	direct        *kgo.Client
	adm           *kadm.Client
	berrs         *backendErrors
	pp            *proxyProc
	cl            *instances   // cluster mode (Instances ≥ 2); pp is then nil
	crash         *crashPoints // Config.CrashPoints; nil: none
	bootstrap     string       // every instance's, comma-separated (seeds)
	clientOpts    []kgo.Opt
	copierOpts    []kgo.Opt // clientOpts without TLS: the copiers' dialer does it
	perProducer   int
	prods         []*producer
	cw            *copyWork
	readers       []*reader
	stopReaders   context.CancelFunc
	tlog          *txnLog

	// The load. idle, write-locked, holds the producers between ticks
	// while the input's records are deleted; inflight counts Produce calls
	// not yet answered.
	idle                 sync.RWMutex
	inflight             atomic.Int64
	acked, failed, sent  atomic.Int64
	firstErr             atomic.Pointer[string]
	wg                   sync.WaitGroup // outstanding Produce callbacks
	prodWG               sync.WaitGroup
	stopProducers        context.CancelFunc
	producing, inputDone chan struct{}
	jw                   *javaWork
	javaDone             chan struct{}
	javaKills            int // SIGKILLs while a Java copier was in its copy loop
	kills                int
	killsA               atomic.Int64
	brokerRestartsA      atomic.Int64
	brokerDown           atomic.Bool
	javaA                atomic.Pointer[javaWork]
	stopProgress         func()
	deleted              deletedInput
	producersStuck       bool
	flushTimeout         time.Duration
	faultsOver           time.Time
}

// Run runs one check. An error means the check could not be carried out
// (the report may be partial); anomalies are in the report.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	cfg.defaults()
	r := &run{cfg: cfg, rng: rand.New(rand.NewPCG(cfg.Seed, cfg.Seed>>1|1))}
	r.rep = &Report{Seed: cfg.Seed, Producers: cfg.Producers, Partitions: cfg.Partitions, Note: notes(cfg)}
	r.rep.ReplicationFactor = cfg.ReplicationFactor
	r.rep.Instances = cfg.Instances
	r.start = time.Now()
	// The schedule, the progress lines and the restarts after crash
	// points write it.
	r.out = &syncWriter{w: cfg.Progress}
	defer r.close()
	if err := validate(cfg); err != nil {
		return r.rep, err
	}
	if err := r.setUp(ctx); err != nil {
		return r.rep, err
	}
	r.load(ctx)
	if err := r.schedule(ctx); err != nil {
		return r.rep, err
	}
	if err := r.finish(ctx); err != nil {
		return r.rep, err
	}
	return r.rep, nil
}

// onReturn registers f to run when Run returns, last registered first.
func (r *run) onReturn(f func()) { r.closers = append(r.closers, f) }

func (r *run) close() {
	for i := len(r.closers) - 1; i >= 0; i-- {
		r.closers[i]()
	}
}

// notes describes the run's workload and faults for the report.
func notes(cfg Config) string {
	note := "idempotent producers, SIGKILLs of eosproxy"
	if cfg.Copiers > 0 {
		note += fmt.Sprintf(", %d transactional copiers (abort rate %g, %d mid-transaction replacements), %d read_committed readers",
			cfg.Copiers, cfg.AbortRate, cfg.CopierRestarts, cfg.Readers)
	}
	if cfg.Drops {
		note += fmt.Sprintf(", backend connections dropped after requests (rate %g)", cfg.DropRate)
	}
	if cfg.BackendErrors {
		note += fmt.Sprintf(", backend errors answered after applying Produce/OffsetCommit (rate %g)", cfg.BackendErrorRate)
	}
	if cfg.RestartBroker > 0 {
		note += fmt.Sprintf(", %d restarts of the backend broker on its data", cfg.RestartBroker)
	}
	if cfg.JavaCopiers > 0 {
		note += fmt.Sprintf(", %d Java TransactionalMessageCopiers (random aborts, up to %d SIGKILLs while they run, %d of their JVMs SIGKILLed)", cfg.JavaCopiers, cfg.JavaKills, cfg.JavaCrashes)
	}
	if cfg.Copiers > 0 && cfg.GroupProtocol != "classic" {
		note += fmt.Sprintf(", copiers in a %s-protocol group", cfg.GroupProtocol)
	}
	if cfg.Stalls > 0 {
		note += fmt.Sprintf(", %d copier stalls past the session timeout", cfg.Stalls)
	}
	if cfg.CleanRestarts > 0 || cfg.CommitKills > 0 {
		note += fmt.Sprintf(", %d SIGTERM restarts and %d restarts at a commit", cfg.CleanRestarts, cfg.CommitKills)
	}
	if cfg.CommitRestarts > 0 || cfg.InitReads {
		note += fmt.Sprintf(", %d copier replacements right after a commit, output read after InitProducerId", cfg.CommitRestarts)
	}
	for _, f := range idleFaultKinds {
		if n := f.times(cfg); n > 0 {
			note += fmt.Sprintf(f.note, n)
		}
	}
	if cfg.ReplicationFactor > 1 || cfg.BrokerPauses > 0 {
		note += fmt.Sprintf(", replication factor %d, %d broker pauses", cfg.ReplicationFactor, cfg.BrokerPauses)
	}
	if cfg.DiskFulls > 0 {
		note += fmt.Sprintf(", %d fills of the data dir below eosproxy's reserve for %v", cfg.DiskFulls, cfg.DiskFullFor)
	}
	if cfg.Instances > 1 {
		note += fmt.Sprintf(", %d eosproxy instances as one cluster (session timeout %v; SIGKILLs and SIGTERMs mostly of the owner), %d SIGSTOPs of the owner past the session timeout, %d cuts of the owner from the backend past it",
			cfg.Instances, cfg.ClusterSessionTimeout, cfg.InstanceStops, cfg.InstanceCuts)
	}
	return note
}

// validate refuses combinations of settings that cannot run.
func validate(cfg Config) error {
	if cfg.Security != nil && (cfg.Upstream != "" || cfg.JavaCopiers > 0) {
		return errors.New("TLS and SASL (Security) cover the in-process kfake backend and franz-go clients only")
	}
	if cfg.Drops && cfg.Upstream != "" {
		return errors.New("--drops needs the in-process kfake backend: a real broker advertises its own addresses, so a relay in front of its bootstrap would see only eosproxy's first connection")
	}
	if cfg.BackendErrors && cfg.Upstream != "" {
		return errors.New("--backend-errors needs the in-process kfake backend: the errors are kfake faults")
	}
	if cfg.RestartBroker > 0 && (cfg.Upstream == "" || cfg.BrokerRestartCmd == "") {
		return errors.New("--restart-broker needs --upstream and a broker restart command")
	}
	if cfg.BrokerPauses > 0 && (cfg.Upstream == "" || cfg.BrokerPauseCmd == "" || cfg.BrokerResumeCmd == "") {
		return errors.New("--pause-broker needs --upstream and broker pause and resume commands")
	}
	if cfg.Stalls > 0 && cfg.Copiers < 2 {
		return errors.New("--stalls needs at least two copiers: the group must move the stalled copier's partitions to another")
	}
	if cfg.GroupProtocol != "classic" && cfg.GroupProtocol != "consumer" {
		return fmt.Errorf("--group-protocol %q: classic or consumer", cfg.GroupProtocol)
	}
	if _, err := parseCrashSpec(cfg.CrashPoints, cfg.Instances); err != nil {
		return err
	}
	if cfg.DiskFulls > 0 && cfg.Instances > 1 {
		return errors.New("--disk-fulls fills the data dir of one eosproxy instance: not with --instances")
	}
	if cfg.InstanceStops > 0 && cfg.Instances < 2 {
		return errors.New("--instance-stops needs --instances 2 or more: another instance must take over from the stopped owner")
	}
	if cfg.InstanceCuts > 0 && cfg.Instances < 2 {
		return errors.New("--instance-cuts needs --instances 2 or more: another instance must take over from the owner cut off")
	}
	if cfg.JavaCopiers > 0 {
		switch {
		case cfg.Upstream == "":
			return errors.New("--java-copiers needs --upstream: the Java copiers belong to the real-broker tier")
		case cfg.KafkaSh == "":
			return errors.New("--java-copiers needs kafka.sh (integration/kafka/kafka.sh) to run Java")
		case cfg.JavaCopiers > cfg.Partitions:
			return fmt.Errorf("--java-copiers %d: each copies one partition, the topic has %d", cfg.JavaCopiers, cfg.Partitions)
		}
	}
	return nil
}

// setUp creates the work dir and logs, the backend and the topics, starts
// eosproxy, and creates the producers, the copiers and their readers.
func (r *run) setUp(ctx context.Context) error {
	if err := r.files(); err != nil {
		return err
	}
	brokers, err := r.startBackend(ctx)
	if err != nil {
		return err
	}
	if err := r.createTopics(ctx); err != nil {
		return err
	}
	if err := r.startProxy(len(brokers)); err != nil {
		return err
	}
	// While the broker restarts, eosproxy closes its clients' connections
	// right after they connect (upstream unreachable); franz-go takes an
	// EOF before the first response for a misconfiguration (TLS, SASL) and
	// fails the request unless told that the configuration is right.
	// So does a standby that knows no owner yet (during a failover).
	if r.cfg.RestartBroker > 0 || r.cl != nil {
		r.clientOpts = append(r.clientOpts, kgo.AlwaysRetryEOF())
	}
	// Clipped: the clients append their own options to these concurrently.
	// The copiers' gates dial, so TLS is theirs to do.
	r.copierOpts = slices.Clip(append(slices.Clip(r.clientOpts), r.cfg.Security.saslOpts()...))
	r.clientOpts = slices.Clip(append(r.clientOpts, r.cfg.Security.opts()...))
	if err := r.newProducers(); err != nil {
		return err
	}
	if err := r.startCopiers(ctx); err != nil {
		return err
	}
	if r.drops != nil {
		r.drops.setEnabled(true)
	}
	if r.berrs != nil {
		r.berrs.setEnabled(true)
	}
	return nil
}

func (r *run) files() error {
	cfg, rep := r.cfg, r.rep
	r.work = cfg.WorkDir
	if r.work == "" {
		d, err := os.MkdirTemp("", "eoscheck-")
		if err != nil {
			return err
		}
		r.work = d
	}
	if err := os.MkdirAll(filepath.Join(r.work, "data"), 0o755); err != nil {
		return err
	}
	r.logPath = cfg.LogFile
	if r.logPath == "" {
		r.logPath = filepath.Join(r.work, "eosproxy.log")
	}
	rep.LogFile = r.logPath
	if cfg.Instances > 1 {
		// Each instance logs to a file of its own (newCluster).
		rep.LogFile = strings.TrimSuffix(r.logPath, ".log") + "-*.log"
		return r.traceFile()
	}
	logFile, err := os.Create(r.logPath)
	if err != nil {
		return err
	}
	r.logFile = logFile
	r.onReturn(func() { logFile.Close() })
	return r.traceFile()
}

func (r *run) traceFile() error {
	traceFile, err := os.Create(filepath.Join(r.work, "trace.log"))
	if err != nil {
		return err
	}
	r.onReturn(func() { traceFile.Close() })
	r.trace = newTracer(traceFile, r.start)
	r.onReturn(r.trace.flush)
	return nil
}

// startBackend starts kfake (unless Upstream names a real backend) and
// connects to the backend directly.
func (r *run) startBackend(ctx context.Context) (kadm.BrokerDetails, error) {
	cfg, rep := r.cfg, r.rep
	if cfg.Upstream != "" {
		r.backend = strings.Split(cfg.Upstream, ",")
		rep.Backend = cfg.Upstream
	} else {
		opts := []kfake.Opt{kfake.NumBrokers(3)}
		for _, f := range idleFaultKinds {
			if f.times(cfg) > 0 && f.kfake != nil {
				opts = append(opts, f.kfake...)
			}
		}
		if cfg.Stalls > 0 && cfg.GroupProtocol == "consumer" {
			// A stalled member is removed after the group's session
			// timeout (45 s by default).
			opts = append(opts, kfake.BrokerConfigs(map[string]string{
				"group.consumer.session.timeout.ms":    "6000",
				"group.consumer.heartbeat.interval.ms": "1000",
			}))
		}
		kind := "kfake (with idempotence: commits forwarded under eosproxy's producer id)"
		if !cfg.BackendIdempotence {
			opts = append(opts, kfake.MaxVersions(faults.NoEOSVersions()))
			kind = "kfake (no EOS API keys)"
		}
		if cfg.Drops {
			r.drops = newDropper(cfg.Seed, cfg.DropRate, cfg.Security)
			r.onReturn(r.drops.close)
			opts = append(opts, kfake.ListenFn(r.drops.listen))
		}
		if cfg.Security != nil {
			opts = append(opts, cfg.Security.Kfake...)
		}
		fake, err := kfake.NewCluster(opts...)
		if err != nil {
			return nil, err
		}
		r.fake = fake
		r.onReturn(fake.Close)
		if cfg.Copiers > 0 {
			r.trace.watchGroup(fake, fmt.Sprintf("eoscheck-%d-copiers", cfg.Seed))
		}
		r.backend = fake.ListenAddrs()
		rep.Backend = kind + ": " + strings.Join(r.backend, ",")
		if r.drops != nil {
			rep.Backend = kind + " behind dropping relays: " + strings.Join(r.backend, ",")
		}
		if cfg.BackendErrors {
			rep.Backend += ", answering errors after writes"
		}
	}
	direct, err := kgo.NewClient(append(cfg.Security.opts(), kgo.SeedBrokers(r.backend...))...)
	if err != nil {
		return nil, err
	}
	r.direct = direct
	r.onReturn(direct.Close)
	r.adm = kadm.NewClient(direct)
	brokers, err := r.adm.ListBrokers(ctx)
	if err != nil {
		return nil, fmt.Errorf("backend metadata: %w", err)
	}
	return brokers, nil
}

// createTopics creates the input and output topics (and installs the
// backend errors, which name them).
func (r *run) createTopics(ctx context.Context) error {
	cfg, rep, adm := r.cfg, r.rep, r.adm
	rep.Topic = fmt.Sprintf("eoscheck-%d", cfg.Seed)
	var inputConfigs map[string]*string
	for _, f := range idleFaultKinds {
		if f.times(cfg) > 0 {
			for k, v := range f.input {
				if inputConfigs == nil {
					inputConfigs = map[string]*string{}
				}
				inputConfigs[k] = kmsg.StringPtr(v)
			}
		}
	}
	if _, err := adm.CreateTopic(ctx, int32(cfg.Partitions), int16(cfg.ReplicationFactor), inputConfigs, rep.Topic); err != nil {
		return fmt.Errorf("create topic: %w", err)
	}
	if cfg.Copiers > 0 {
		rep.Copy = &CopyReport{Copiers: cfg.Copiers, Readers: cfg.Readers, AbortRate: cfg.AbortRate,
			OutputTopic: rep.Topic + "-out", Group: fmt.Sprintf("eoscheck-%d-copiers", cfg.Seed)}
		rep.Copy.GroupProtocol = cfg.GroupProtocol
		if cfg.Stalls > 0 {
			rep.Copy.Stalls = &StallReport{}
		}
		if cfg.CommitRestarts > 0 || cfg.InitReads {
			rep.Copy.InitReads = &InitReadReport{}
		}
		if _, err := adm.CreateTopic(ctx, int32(cfg.Partitions), int16(cfg.ReplicationFactor), nil, rep.Copy.OutputTopic); err != nil {
			return fmt.Errorf("create output topic: %w", err)
		}
	}
	if cfg.JavaCopiers > 0 {
		// The tool writes each record to the partition it read it from.
		rep.JavaCopy = &JavaCopyReport{Copiers: cfg.JavaCopiers, OutputTopic: rep.Topic + "-java-out", TransactionSize: javaTxnSize}
		if _, err := adm.CreateTopic(ctx, int32(cfg.Partitions), int16(cfg.ReplicationFactor), nil, rep.JavaCopy.OutputTopic); err != nil {
			return fmt.Errorf("create java output topic: %w", err)
		}
	}
	if cfg.BackendErrors {
		r.berrs = newBackendErrors(cfg.Seed, cfg.BackendErrorRate, r.trace)
		topics := []string{rep.Topic}
		if rep.Copy != nil {
			topics = append(topics, rep.Copy.OutputTopic)
		}
		details, err := adm.ListTopics(ctx, topics...)
		if err != nil {
			return fmt.Errorf("backend topics: %w", err)
		}
		ids := map[[16]byte]string{}
		for _, d := range details {
			ids[d.ID] = d.Topic
		}
		r.berrs.install(r.fake, topics, rep.Topic, ids)
	}
	return nil
}

// startProxy starts eosproxy in front of the backend's brokers.
func (r *run) startProxy(brokers int) error {
	cfg := r.cfg
	bin := cfg.ProxyBin
	if bin == "" {
		var err error
		if bin, err = buildProxy(r.work); err != nil {
			return err
		}
	}
	var err error
	if r.crash, err = newCrashPoints(cfg, r.start, r.trace, r.out); err != nil {
		return err
	}
	if cfg.Instances > 1 {
		return r.startCluster(bin, brokers)
	}
	base, err := faults.FreePortRange(r.rng, 1+brokers)
	if err != nil {
		return err
	}
	r.dataDir = filepath.Join(r.work, "data")
	if cfg.DiskFulls > 0 {
		unmount, err := mountDataFS(r.dataDir)
		if err != nil {
			return err
		}
		r.onReturn(unmount) // after eosproxy stops
	}
	r.pp = &proxyProc{bin: bin, logs: newProxyLogs(r.logFile), args: []string{
		"--log-format", "json", "--log-level", cfg.ProxyLogLevel,
		"--listen", net.JoinHostPort("127.0.0.1", strconv.Itoa(base)),
		"--broker-ports", fmt.Sprintf("%d-%d", base+1, base+brokers),
		"--upstream", strings.Join(r.backend, ","),
		"--data-dir", r.dataDir,
	}}
	r.pp.args = append(r.pp.args, cfg.ProxyArgs...)
	if cp := r.crash; cp != nil {
		pp := r.pp
		pp.env = cp.env
		pp.onCrash = func(run *procRun, point string) {
			cp.record(0, point, true, run.exitedAt)
			if _, err := pp.restartAfterCrash(run); err != nil {
				cp.fail(0, err)
			}
		}
	}
	r.onReturn(r.pp.stop)
	if r.bootstrap, err = r.pp.start(); err != nil {
		return err
	}
	fmt.Fprintf(r.out, "eoscheck: seed %d, backend %s, eosproxy %s (logs %s), topic %s\n", cfg.Seed, r.rep.Backend, r.bootstrap, r.logPath, r.rep.Topic)
	return nil
}

// startCluster starts Instances eosproxy processes as one cluster and
// waits until one of them serves.
func (r *run) startCluster(bin string, brokers int) error {
	cfg := r.cfg
	base, err := faults.FreePortRange(r.rng, cfg.Instances*(brokers+2))
	if err != nil {
		return err
	}
	cl, err := newInstances(cfg, bin, r.work, r.logPath, brokers, base, r.backend, r.rng, r.trace, r.out, r.start, r.crash)
	if cl != nil {
		r.onReturn(cl.stopAll)
	}
	if err != nil {
		return err
	}
	r.cl = cl
	if err := cl.startAll(); err != nil {
		return err
	}
	r.bootstrap = strings.Join(cl.bootstraps, ",")
	fmt.Fprintf(r.out, "eoscheck: seed %d, backend %s, eosproxy cluster %s of %d instances %s (logs %s), topic %s\n",
		cfg.Seed, r.rep.Backend, cl.name, cfg.Instances, r.bootstrap, r.rep.LogFile, r.rep.Topic)
	return nil
}

// procs are the eosproxy processes of the run: one, or the cluster's.
func (r *run) procs() []*proxyProc {
	if r.cl != nil {
		return r.cl.pps
	}
	return []*proxyProc{r.pp}
}

// seeds splits a comma-separated bootstrap list (every instance of a
// cluster) into seed brokers.
func seeds(bootstrap string) []string { return strings.Split(bootstrap, ",") }

// clientLog opens the work dir's file name for franz-go debug logs with
// --client-log, closed when the run returns; nil without it.
func (r *run) clientLog(name string) (io.Writer, error) {
	if !r.cfg.ClientLog {
		return nil, nil
	}
	f, err := os.Create(filepath.Join(r.work, name))
	if err != nil {
		return nil, err
	}
	r.onReturn(func() { f.Close() })
	return &syncWriter{w: f}, nil
}

// newProducers creates the idempotent producers' clients.
func (r *run) newProducers() error {
	cfg := r.cfg
	r.perProducer = (cfg.Records + cfg.Producers - 1) / cfg.Producers
	r.prods = make([]*producer, cfg.Producers)
	kgoLog, err := r.clientLog("producers-kgo.log")
	if err != nil {
		return err
	}
	for i := range r.prods {
		opts := slices.Clone(r.clientOpts)
		if kgoLog != nil {
			opts = append(opts, kgo.WithLogger(kgo.BasicLogger(kgoLog, kgo.LogLevelDebug, func() string {
				return fmt.Sprintf("%8.3fs [producer %d] ", time.Since(r.start).Seconds(), i)
			})))
		}
		cl, err := kgo.NewClient(append(opts, kgo.SeedBrokers(seeds(r.bootstrap)...), kgo.DefaultProduceTopic(r.rep.Topic),
			kgo.RecordRetries(1<<30), kgo.RequestRetries(1<<30),
			kgo.RetryBackoffFn(func(n int) time.Duration { return min(time.Duration(n)*10*time.Millisecond, 200*time.Millisecond) }),
			kgo.RecordDeliveryTimeout(2*time.Minute),
			// Reconnect soon after a kill: the default waits up to 5 s
			// between metadata refreshes.
			kgo.MetadataMinAge(100*time.Millisecond),
			kgo.ProducerBatchMaxBytes(16<<10),
			kgo.MaxBufferedRecords(20_000))...)
		if err != nil {
			return err
		}
		r.prods[i] = &producer{cl: cl, acked: make([]atomic.Bool, r.perProducer)}
		r.onReturn(r.prods[i].close)
	}
	return nil
}

// startCopiers starts the copiers and the readers of their output.
func (r *run) startCopiers(ctx context.Context) error {
	cfg, rep := r.cfg, r.rep
	readCtx, stopReaders := context.WithCancel(ctx)
	r.stopReaders = stopReaders
	r.onReturn(stopReaders)
	r.tlog = &txnLog{start: r.start}
	if cfg.Copiers == 0 {
		return nil
	}
	kgoLog, err := r.clientLog("copiers-kgo.log")
	if err != nil {
		return err
	}
	cw := &copyWork{clientOpts: r.copierOpts, tls: cfg.Security.clientTLS(), kgoLog: kgoLog, seed: cfg.Seed, bootstrap: r.bootstrap, in: rep.Topic, out: rep.Copy.OutputTopic,
		group: rep.Copy.Group, abortRate: cfg.AbortRate, log: r.tlog, trace: r.trace,
		adm: r.adm, consumerProtocol: cfg.GroupProtocol == "consumer", initReadAll: cfg.InitReads,
		commitHook: make(chan struct{}, 1), kfakeGroup: r.fake != nil, backend: r.direct}
	r.cw = cw
	if cfg.Stalls > 0 {
		// Short enough that a stall is a few seconds, long enough
		// for the group.min.session.timeout.ms of Kafka and kfake
		// (6 s); the transactions must outlive a stall.
		cw.sessionTimeout, cw.txnTimeout = 6*time.Second, 90*time.Second
		if cfg.GroupProtocol == "consumer" && cfg.Upstream != "" {
			if err := setGroupSessionTimeout(ctx, r.direct, rep.Copy.Group); err != nil {
				fmt.Fprintf(r.out, "copiers' group: could not lower its session timeout (stalls then last 45 s): %v\n", err)
			}
		}
	}
	if err := cw.start(ctx, cfg.Copiers); err != nil {
		return fmt.Errorf("copiers: %w", err)
	}
	r.onReturn(cw.finish) // idempotent: also on an early return
	for i := range cfg.Readers {
		rd, err := newReader(i, r.bootstrap, rep.Copy.OutputTopic, cfg.Partitions, r.tlog, r.clientOpts...)
		if err != nil {
			return err
		}
		r.onReturn(rd.cl.Close)
		r.readers = append(r.readers, rd)
		go rd.run(readCtx)
	}
	return nil
}

// load starts the producers at the rate that spreads the records over the
// schedule, and the progress lines.
func (r *run) load(ctx context.Context) {
	cfg := r.cfg
	rate := cfg.Rate
	if rate <= 0 {
		span := cfg.Duration
		if span <= 0 {
			every := cfg.KillEvery
			if every <= 0 {
				every = 900 * time.Millisecond
			}
			span = time.Duration(max(cfg.Kills, 1)) * (every + 150*time.Millisecond)
			// Keep producing across the broker restarts (each ~10-30 s).
			span += time.Duration(cfg.RestartBroker) * 15 * time.Second
		}
		rate = max(1000, int(float64(cfg.Records)/span.Seconds()))
	}
	// prodCtx ends the producers early when they are wedged (Produce
	// blocks once their buffers are full).
	prodCtx, stopProducers := context.WithCancel(ctx)
	r.stopProducers = stopProducers
	r.onReturn(stopProducers)
	for i, p := range r.prods {
		r.prodWG.Add(1)
		go func() {
			defer r.prodWG.Done()
			tick := time.NewTicker(10 * time.Millisecond)
			defer tick.Stop()
			perTick := max(1, rate/cfg.Producers/100)
			t0 := time.Now()
			for seq := 0; seq < r.perProducer && int(r.sent.Load()) < cfg.Records; {
				r.idle.RLock()
				// Catch up to the rate: records due by now.
				due := min(r.perProducer, int(time.Since(t0).Seconds()*float64(rate)/float64(cfg.Producers))+perTick)
				for ; seq < due && int(r.sent.Add(1)) <= cfg.Records; seq++ {
					s := seq
					r.wg.Add(1)
					r.inflight.Add(1)
					p.sent.Store(int64(s + 1))
					p.cl.Produce(prodCtx, &kgo.Record{
						Key:   []byte(strconv.Itoa(s % 64)),
						Value: []byte(strconv.Itoa(i) + "-" + strconv.Itoa(s)),
					}, func(_ *kgo.Record, err error) {
						defer r.wg.Done()
						defer r.inflight.Add(-1)
						if err != nil {
							r.failed.Add(1)
							msg := err.Error()
							r.firstErr.CompareAndSwap(nil, &msg)
							return
						}
						p.acked[s].Store(true)
						r.acked.Add(1)
					})
				}
				r.idle.RUnlock()
				select {
				case <-tick.C:
				case <-prodCtx.Done():
					return
				}
			}
		}()
	}
	r.producing = make(chan struct{})
	go func() { r.prodWG.Wait(); close(r.producing) }()
	// The Java copiers are told how many records to copy, so they start
	// once every Produce was answered: the input is then final.
	if cfg.JavaCopiers > 0 {
		r.inputDone = make(chan struct{})
		go func() { r.prodWG.Wait(); r.wg.Wait(); close(r.inputDone) }()
	}
	r.onReturn(func() {
		if r.jw != nil {
			r.jw.stop()
		}
	})
	r.progress()
}

// startJava starts the Java copiers on the input as it is now.
func (r *run) startJava(ctx context.Context) error {
	cfg, rep, adm := r.cfg, r.rep, r.adm
	ends, err := adm.ListEndOffsets(ctx, rep.Topic)
	if err != nil {
		return fmt.Errorf("java copiers: input end offsets: %w", err)
	}
	// Short retention may have deleted the start of their partitions.
	starts, err := adm.ListStartOffsets(ctx, rep.Topic)
	if err != nil {
		return fmt.Errorf("java copiers: input start offsets: %w", err)
	}
	byPart := map[int32]int64{}
	ends.Each(func(e kadm.ListedOffset) { byPart[e.Partition] = e.Offset })
	startOf := map[int32]int64{}
	starts.Each(func(o kadm.ListedOffset) { startOf[o.Partition] = o.Offset })
	r.jw = newJavaWork(cfg.KafkaSh, r.bootstrap, rep.Topic, rep.JavaCopy.OutputTopic, r.work, cfg.Seed, startOf, byPart, cfg.JavaCopiers, cfg.JavaCrashes, r.trace)
	r.jw.start(ctx)
	r.javaDone = r.jw.done
	r.trace.printf("java copiers started on partitions 0-%d (%v records)", cfg.JavaCopiers-1, byPart)
	fmt.Fprintf(r.out, "java copiers: %d TransactionalMessageCopiers started (logs %s)\n", cfg.JavaCopiers, filepath.Join(r.work, "java-copier-*.log"))
	return nil
}

// javaOver reports whether the Java copiers have run (or there are none)
// and the schedule need not kill eosproxy under them any longer.
func (r *run) javaOver() bool {
	if r.cfg.JavaCopiers == 0 {
		return true
	}
	return r.jw != nil && (r.jw.ended.Load() > 0 || r.javaKills >= r.cfg.JavaKills)
}

// progress prints a progress line every second until stopProgress.
func (r *run) progress() {
	cfg := r.cfg
	progDone := make(chan struct{})
	var progWG sync.WaitGroup
	progWG.Add(1)
	go func() {
		defer progWG.Done()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				line := fmt.Sprintf("[%5.1fs] sent %d  acked %d  failed %d  kills %d  restarts %d",
					time.Since(r.start).Seconds(), min(r.sent.Load(), int64(cfg.Records)), r.acked.Load(), r.failed.Load(), r.killsA.Load(), r.killsA.Load())
				if r.cw != nil {
					var read int64
					for _, rd := range r.readers {
						read += rd.records.Load()
					}
					line += fmt.Sprintf("  | copied %d  commits %d  aborts %d+%d forced  unknown %d  replaced %d  read %d",
						r.tlog.copied.Load(), r.tlog.commits.Load(), r.tlog.aborts.Load(), r.tlog.forced.Load(), r.tlog.unknown.Load(),
						r.cw.restartsCrash.Load()+r.cw.restartsZombie.Load(), read)
				}
				if r.cl != nil {
					line += fmt.Sprintf("  | owner %d", r.cl.owner())
				}
				if r.drops != nil {
					line += fmt.Sprintf("  | drops %d", r.drops.drops())
				}
				if r.berrs != nil {
					line += fmt.Sprintf("  | backend errors %d", r.berrs.total())
				}
				if j := r.javaA.Load(); j != nil {
					got, want := j.copied()
					line += fmt.Sprintf("  | java copied %d/%d  runs %d", got, want, j.runs())
					if j.ended.Load() > 0 {
						line += " (done)"
					}
				}
				if cfg.RestartBroker > 0 {
					line += fmt.Sprintf("  | broker restarts %d", r.brokerRestartsA.Load())
					if r.brokerDown.Load() {
						line += " (broker down)"
					}
				}
				fmt.Fprintln(r.out, line)
			case <-progDone:
				return
			}
		}
	}()
	progStopped := false
	r.stopProgress = func() {
		if !progStopped {
			progStopped = true
			close(progDone)
			progWG.Wait()
		}
	}
	r.onReturn(r.stopProgress)
}

// Command eosbench measures what eosproxy costs: it runs the same Kafka
// workloads direct to a backend and through eosproxy, side by side in one
// run, and reports throughput and latency (p50/p99/p999) of both, proxy
// against direct as ratios of medians and differences (see DESIGN.md,
// "Performance method"). It also reports the method's own noise floor: the
// same procedure with the direct path in both slots (an A/A comparison), so
// a ratio can be judged against what the method reports when nothing
// differs.
//
// eosproxy runs as its own process, the way users run it: the cmd/eosproxy
// binary, built into a temporary directory (or --proxy-bin), started as a
// child in front of the same backend, listening on loopback only, with its
// state on disk in a temporary directory under --data-dir (removed at
// exit), as in production, and an --admin-listen port of its own. Over each
// proxy phase's measured window eosbench reads the child's CPU time
// (utime+stime from /proc/<pid>/stat) and its Go allocation counters
// (go_memstats_mallocs_total, go_memstats_alloc_bytes_total on /metrics)
// and reports eosproxy's cost per byte carried: CPU-seconds per GB and
// allocations per MB (and per record). --in-process runs eosproxy inside
// the benchmark instead (no process hop, no cost figures).
//
// Method: per workload, a fresh 3-partition topic; then --rounds rounds, each
// a direct and a proxy phase (D P, then P D, ...) and an A/A pair of two
// direct phases. Throughput workloads (produce-100B, produce-1KiB, consume,
// and the idempotent and transactional ones) report records/s and MB/s, and
// the latency of each produce (or fetch) request under that load, from the
// client writing it to reading its answer. latency and latency-idem produce
// one 100-byte record at a time (ProduceSync, linger 0) and report the
// latency of each and the throughput that gives. The idempotence workloads
// (produce-idem-100B, produce-idem-1KiB, latency-idem) compare idempotence:
// their direct (D) and proxy (P) phases run an idempotent producer, D
// against the backend's own idempotence, and a third phase per round,
// proxy-plain (Q), runs the plain producer through eosproxy (D P Q, then
// Q P D, ...); they report P against D and against Q. The plain and the
// idempotent producer both keep five produce requests in flight per broker,
// kgo's own limit with idempotence on (see idemProducerOpts). The txn-*
// workloads compare transactions: every phase runs one franz-go
// transactional producer with a transactional.id of its own, producing
// 1 KiB records async as fast as it can and committing every 100 ms
// (txn-1KiB-100ms) or every 1000 records (txn-1KiB-1000rec), each time
// Flush, then EndTransaction(TryCommit); the direct side uses the backend's
// native transactions (kfake's or Kafka's coordinator), the proxy side
// eosproxy's. They report committed records/s (only records whose
// transaction committed) and the commit latency p50/p99, where commit is
// the EndTransaction call alone, after Flush returned (flush+commit, from
// when the commit was due, is shown beside it). Rows the performance issue
// sets a target for (throughput ratios, added latency, commit p99) say
// whether the median meets it. Every phase uses a new franz-go client,
// warms up for a quarter of --phase (at most 1s), measures for --phase and
// stops by itself.
// Before a phase the benchmark waits (up to --quiet-wait) for other processes
// on the machine to go quiet, and each phase records how many cores the
// benchmark (this process and its eosproxy child) and everything else used,
// so a spoiled phase can be recognised; the report gives the median and
// maximum of the others' use as the run's quietness.
//
// The backend is by default a franz-go kfake cluster, eosproxy's embedded
// backend, held in memory, run as its own process (eosbench started again
// as a kfake server; its CPU counts as the backend's), as a broker always
// is: inside eosbench, a direct round trip would skip the process wake-up
// at each end (client and broker goroutines hand over in one Go scheduler),
// and the hop through eosproxy would look dearer than in any deployment.
// --kfake-process=false runs it inside eosbench all the same. It shares the
// CPUs with the proxy and the clients: when the clients and kfake already
// keep every core busy, the proxy's own CPU use shows up as lost
// throughput, so the ratios are a pessimistic view of a proxy on its own
// machine. --upstream points the benchmark at a real broker instead.
//
// --instances N runs the proxy phases through a cluster of N eosproxy
// child processes instead of one (--cluster with a name unique to the run,
// each instance with its own ports and data dir; the clients list every
// instance as a seed and end up on the one that serves, the owner).
// --compare-instances 0,1,2,3 runs several such configurations in one run
// (0: one instance without --cluster), each in a proxy slot of its own
// interleaved with the direct phases (D P0 P1 P2 P3, then reversed, with
// the A/A pair; no Q slot), and reports each against direct side by side.
// For a cluster, eosproxy's cost sums over all its instances (standbys
// replay the cluster's log), with the owner's own cores beside it, and the
// report adds how much the cluster's log topic grew in the backend
// (DescribeLogDirs) per byte carried: the cost of writing transactional
// bytes twice. Record values are distinct random bytes, as the log's
// snappy compression would make equal values nearly free.
//
// txn-buffer, run only when named in --workloads, is a single measurement
// rather than rounds of phases, and only meaningful through eosproxy: it
// runs after the other workloads, once their eosproxy child has stopped
// (eosproxy refuses a second instance on one backend), and starts an
// eosproxy child of its own in front of the same backend, so that its
// memory is fresh, then writes
// --txn-buffer-bytes (default 1 GiB) of 1 KiB records inside one open
// transaction (timeout --txn-buffer-timeout, default 10 min), sampling the
// child's VmRSS every 250 ms. It reports the RSS before writing, at 25, 50,
// 75 and 100% of the data acknowledged, and at its peak, then ends the
// transaction (--txn-buffer-end abort, the default, or commit, which
// forwards it all to the backend: with kfake, into eosbench's own memory)
// and reports how long that took, with a verdict against the 256 MiB
// target. It also checks the backend's high watermarks while the
// transaction is open: if the backend already holds the records, eosproxy
// passed the transaction through and the verdict says it measured nothing.
//
// Usage:
//
//	go run ./cmd/eosbench [--phase 1s] [--rounds 3] [--workloads produce-100B,latency]
//	                      [--upstream host:port [--upstream-pid pid]] [--json out.json] [--data-dir dir]
//	                      [--proxy-bin path] [--proxy-args "--flag value"] [--proxy-log file]
//	go run ./cmd/eosbench --in-process [--cpuprofile cpu.out] [--blockprofile block.out]
//	go run ./cmd/eosbench --workloads txn-1KiB-100ms,txn-1KiB-1000rec [--upstream host:port]
//	go run ./cmd/eosbench --instances 3 | --compare-instances 0,1,2,3 [--upstream host:port]
//	go run ./cmd/eosbench --workloads txn-buffer [--txn-buffer-bytes 1GiB]
//	                      [--txn-buffer-timeout 10m] [--txn-buffer-end abort|commit]
//
// With --in-process and --cpuprofile, split the profile by party with
// pprof's tag filters, e.g. go tool pprof -top -tagfocus=role=proxy cpu.out;
// a child eosproxy is profiled through its own admin port instead
// (/debug/pprof). --blockprofile shows where goroutines waited (block
// profiles carry no labels; focus on the proxy's packages, e.g.
// go tool pprof -top -focus=eosproxy block.out).
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eosproxy/eosproxy/proxy"
	"github.com/eosproxy/eosproxy/store"
)

type config struct {
	upstream     string
	upstreamPIDs []int
	kfakeProcess bool
	phase        time.Duration
	rounds       int
	workloads    []string
	jsonPath     string
	cpuProfile   string
	blockProfile string
	kfakeBrokers int
	consumeMB    int
	maxOthers    float64
	quietWait    time.Duration
	dataDir      string
	proxyLog     string
	// txn-buffer
	txnBufferBytes   int64
	txnBufferTimeout time.Duration
	txnBufferCommit  bool
	proxyBin         string
	proxyArgs        []string
	inProcess        bool
	// instances are the proxy configurations the proxy phases run
	// through: 0 a single instance (no --cluster), N a cluster of N
	// instances. More than one (--compare-instances) gives each a slot.
	instances []int
}

// compare says whether the run compares several proxy configurations.
func (c config) compare() bool { return len(c.instances) > 1 }

func parseFlags(args []string) (config, error) {
	var cfg config
	var workloads, bufferBytes, bufferEnd, proxyArgs, compareInstances string
	var instances int
	fs := flag.NewFlagSet("eosbench", flag.ContinueOnError)
	fs.StringVar(&cfg.upstream, "upstream", "", "bootstrap host:port of a real broker (default: an in-process kfake cluster)")
	fs.Func("upstream-pid", "`pid` of a broker on this machine (repeatable; e.g. $(cat $EOSPROXY_KAFKA_RUN/kafka.pid) for kafka.sh): its CPU counts as the benchmark's, reported per phase as backend cores, not as other load", func(v string) error {
		pid, err := strconv.Atoi(v)
		if err != nil || pid <= 0 {
			return fmt.Errorf("want a process id, got %q", v)
		}
		if _, err := procCPU(pid); err != nil {
			return fmt.Errorf("process %d: %w", pid, err)
		}
		cfg.upstreamPIDs = append(cfg.upstreamPIDs, pid)
		return nil
	})
	fs.DurationVar(&cfg.phase, "phase", time.Second, "measured duration of each phase")
	fs.IntVar(&cfg.rounds, "rounds", 3, "rounds per workload; each round runs a direct and a proxy phase plus an A/A pair")
	fs.StringVar(&workloads, "workloads", strings.Join(defaultWorkloads(), ","), "comma-separated workloads to run, of: "+strings.Join(workloadNames(), ", ")+" (txn-buffer only when named)")
	fs.StringVar(&cfg.jsonPath, "json", "", "also write all phase results to this JSON file")
	fs.StringVar(&cfg.cpuProfile, "cpuprofile", "", "write a CPU profile of the whole run; samples carry the label role=proxy|kfake|client")
	fs.StringVar(&cfg.blockProfile, "blockprofile", "", "write a profile of where goroutines waited (channels, locks, select) over the whole run: where a path is slow without using CPU")
	fs.IntVar(&cfg.kfakeBrokers, "kfake-brokers", 1, "brokers of the kfake cluster")
	fs.BoolVar(&cfg.kfakeProcess, "kfake-process", true, "run the kfake backend as its own process, as a broker is (false: inside eosbench, where the direct path skips a process wake-up at each end of a round trip)")
	fs.IntVar(&cfg.consumeMB, "consume-mb", 256, "size of the data set the consume workload reads, in MiB")
	fs.Float64Var(&cfg.maxOthers, "max-others", 0.3, "before each phase, wait until other processes use fewer cores than this (0: do not wait)")
	fs.DurationVar(&cfg.quietWait, "quiet-wait", 2*time.Second, "longest wait for other processes to quieten before a phase")
	fs.StringVar(&cfg.proxyLog, "proxy-log", "", "write eosproxy's debug log (JSON) to this `file`, e.g. to see how long each commit's forwarding took")
	fs.StringVar(&cfg.dataDir, "data-dir", os.TempDir(), "directory under which eosproxy's on-disk state is created (and removed at exit); a tmpfs here makes fsyncs free")
	fs.StringVar(&bufferBytes, "txn-buffer-bytes", "1GiB", "txn-buffer: data written inside the one open transaction (bytes, or with a KiB, MiB or GiB suffix)")
	fs.DurationVar(&cfg.txnBufferTimeout, "txn-buffer-timeout", 10*time.Minute, "txn-buffer: the producer's transaction timeout, also the longest the writing may take (eosproxy's --transaction-max-timeout must be at least this)")
	fs.StringVar(&bufferEnd, "txn-buffer-end", "abort", "txn-buffer: end the transaction with abort or commit (commit forwards all of it to the backend: an in-process kfake then holds it in eosbench's memory)")
	fs.StringVar(&cfg.proxyBin, "proxy-bin", "", "eosproxy binary to run as the child process (default: go build ./cmd/eosproxy into a temporary directory)")
	fs.StringVar(&proxyArgs, "proxy-args", "", "more flags for the eosproxy child processes, space-separated (e.g. a larger per-transaction bound for txn-buffer)")
	fs.IntVar(&instances, "instances", 0, "run the proxy phases through a cluster of this many eosproxy child processes (--cluster, a name unique to the run; clients list every instance as a seed); 0: one instance without --cluster")
	fs.StringVar(&compareInstances, "compare-instances", "", "comma-separated instance counts, e.g. 0,1,2,3: run the proxy phases through each configuration (0: one instance without --cluster) in one run, side by side, each against direct")
	fs.BoolVar(&cfg.inProcess, "in-process", false, "run eosproxy inside the benchmark process instead of as a child process (no process hop; no cost per byte)")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	cfg.proxyArgs = strings.Fields(proxyArgs)
	switch {
	case instances < 0 || instances > 9:
		return cfg, fmt.Errorf("--instances %d: want 0 to 9", instances)
	case compareInstances != "" && instances != 0:
		return cfg, errors.New("--instances and --compare-instances exclude each other")
	case compareInstances != "":
		list, err := parseInstances(compareInstances)
		if err != nil {
			return cfg, fmt.Errorf("--compare-instances %q: %w", compareInstances, err)
		}
		cfg.instances = list
	default:
		cfg.instances = []int{instances}
	}
	if cfg.inProcess && (len(cfg.instances) > 1 || cfg.instances[0] != 0) {
		return cfg, errors.New("--in-process runs one instance: not with --instances or --compare-instances")
	}
	n, err := parseBytes(bufferBytes)
	if err != nil || n < txnRecordSize {
		return cfg, fmt.Errorf("--txn-buffer-bytes %q: want a size of at least %d bytes, e.g. 1GiB", bufferBytes, txnRecordSize)
	}
	cfg.txnBufferBytes = n
	switch bufferEnd {
	case "abort":
	case "commit":
		cfg.txnBufferCommit = true
	default:
		return cfg, fmt.Errorf("--txn-buffer-end %q: want abort or commit", bufferEnd)
	}
	if cfg.txnBufferTimeout <= 0 {
		return cfg, errors.New("--txn-buffer-timeout must be positive")
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if cfg.phase <= 0 || cfg.rounds <= 0 || cfg.kfakeBrokers <= 0 || cfg.consumeMB <= 0 {
		return cfg, errors.New("--phase, --rounds, --kfake-brokers and --consume-mb must be positive")
	}
	for _, w := range strings.Split(workloads, ",") {
		if w = strings.TrimSpace(w); w == "" {
			continue
		}
		if findWorkload(w) == nil {
			return cfg, fmt.Errorf("unknown workload %q (known: %s)", w, strings.Join(workloadNames(), ", "))
		}
		cfg.workloads = append(cfg.workloads, w)
	}
	if len(cfg.workloads) == 0 {
		return cfg, errors.New("no workloads selected")
	}
	return cfg, nil
}

func main() {
	if n := os.Getenv(serveKfakeEnv); n != "" {
		if err := serveKfake(n); err != nil {
			fmt.Fprintln(os.Stderr, "eosbench:", err)
			os.Exit(1)
		}
		return
	}
	cfg, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "eosbench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "eosbench:", err)
		os.Exit(1)
	}
}

// bench is what every phase needs: where the two paths start, and an admin
// client on the direct path for topic set-up between phases.
type bench struct {
	cfg       config
	direct    []string // backend bootstrap addresses
	proxied   []string // eosproxy bootstrap address
	adminCl   *kgo.Client
	admin     *kadm.Client
	runID     string
	consumeTo map[int32]int64 // consume workload: end offset per partition
	brokers   int             // the backend's brokers: eosproxy listens for each
	proxyBin  string          // the eosproxy binary children run
	// sets are the eosproxy children, one set per configuration
	// (--instances, --compare-instances), unless --in-process; bySlot
	// finds a proxy slot's set, cur is the current phase's (nil: direct).
	sets   []*proxySet
	bySlot map[string]*proxySet
	cur    *proxySet
	// win is the current phase's measured window, marked by the phase
	// (markStart, markEnd) and read around by runPhase.
	win costWindow
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s  "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

func run(ctx context.Context, cfg config) error {
	start := time.Now()
	if cfg.cpuProfile != "" {
		f, err := os.Create(cfg.cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if cfg.blockProfile != "" {
		// Sample about one wait per 10µs spent waiting: short enough to see
		// a path's per-request waits, cheap enough not to change them.
		runtime.SetBlockProfileRate(int((10 * time.Microsecond).Nanoseconds()))
		defer func() {
			runtime.SetBlockProfileRate(0)
			if f, err := os.Create(cfg.blockProfile); err != nil {
				progress("block profile: %v", err)
			} else {
				defer f.Close()
				if err := pprof.Lookup("block").WriteTo(f, 0); err != nil {
					progress("block profile: %v", err)
				}
			}
		}()
	}

	b := &bench{cfg: cfg, runID: fmt.Sprintf("%x", time.Now().UnixNano()&0xffffffff)}
	backend := "upstream " + cfg.upstream
	if cfg.upstream != "" {
		b.direct = []string{cfg.upstream}
	} else if cfg.kfakeProcess {
		kc, err := startKfakeChild(cfg.kfakeBrokers)
		if err != nil {
			return err
		}
		defer kc.stop()
		b.direct = kc.addrs
		// Its CPU is the backend's, as --upstream-pid counts a broker's.
		b.cfg.upstreamPIDs = append(b.cfg.upstreamPIDs, kc.cmd.Process.Pid)
		cfg = b.cfg
		backend = fmt.Sprintf("kfake as its own process (pid %d), %d broker(s), in memory", kc.cmd.Process.Pid, cfg.kfakeBrokers)
	} else {
		// Goroutines inherit pprof labels from the goroutine that starts
		// them, so everything kfake starts here is attributable in a profile.
		var cluster *kfake.Cluster
		var err error
		pprof.Do(ctx, pprof.Labels("role", "kfake"), func(context.Context) {
			cluster, err = kfake.NewCluster(kfake.NumBrokers(cfg.kfakeBrokers))
		})
		if err != nil {
			return fmt.Errorf("start kfake: %w", err)
		}
		defer cluster.Close()
		b.direct = cluster.ListenAddrs()
		backend = fmt.Sprintf("in-process kfake, %d broker(s), in memory", cfg.kfakeBrokers)
	}

	var err error
	b.adminCl, err = kgo.NewClient(kgo.SeedBrokers(b.direct...))
	if err != nil {
		return err
	}
	defer b.adminCl.Close()
	b.admin = kadm.NewClient(b.adminCl)
	brokers, err := b.admin.BrokerMetadata(ctx)
	if err != nil {
		return fmt.Errorf("backend metadata: %w", err)
	}
	b.brokers = max(1, len(brokers.Brokers))

	// eosproxy's state on disk, as in production: its fsyncs (transactional
	// batches; idempotent answers on a backend without idempotence) cost
	// what they cost there.
	dir, err := os.MkdirTemp(cfg.dataDir, "eosbench-state-")
	if err != nil {
		return fmt.Errorf("eosproxy data dir: %w", err)
	}
	defer os.RemoveAll(dir)
	var plogFile *os.File
	if cfg.proxyLog != "" {
		if plogFile, err = os.Create(cfg.proxyLog); err != nil {
			return fmt.Errorf("eosproxy log: %w", err)
		}
		defer plogFile.Close()
	}
	phased, single := false, false
	for _, name := range cfg.workloads {
		if findWorkload(name).single == nil {
			phased = true
		} else {
			single = true
		}
	}
	if !cfg.inProcess || single {
		bin, cleanup, err := proxyBinary(ctx, cfg)
		if err != nil {
			return err
		}
		defer cleanup()
		b.proxyBin = bin
	}
	proxyMode := "not started (no phased workload)"
	stopShared := func() {}
	switch {
	case !phased:
	case cfg.inProcess:
		stop, err := b.startInProcess(ctx, dir, plogFile)
		if err != nil {
			return err
		}
		defer stop()
		proxyMode = "in-process (shares the benchmark's CPU and heap)"
	default:
		extra := slices.Clone(cfg.proxyArgs)
		var log io.Writer
		if plogFile != nil {
			extra = append([]string{"--log-level", "debug", "--log-format", "json"}, extra...)
			log = plogFile
		}
		stopped := false
		stopShared = func() {
			if !stopped {
				stopped = true
				for _, s := range b.sets {
					s.stop(b)
				}
			}
		}
		defer stopShared()
		b.bySlot = map[string]*proxySet{}
		var modes []string
		for _, n := range cfg.instances {
			progress("starting eosproxy: %s", configLabel(n))
			s, err := startProxySet(ctx, b, n, cfg.compare(), dir, extra, log)
			if err != nil {
				return err
			}
			b.sets = append(b.sets, s)
			b.bySlot[s.slot] = s
			modes = append(modes, s.describe())
		}
		if !cfg.compare() {
			b.bySlot[slotProxyPlain] = b.sets[0]
		}
		b.proxied = b.sets[0].seeds
		if len(b.sets) == 1 && b.sets[0].cluster == "" {
			pc := b.sets[0].children[0]
			proxyMode = fmt.Sprintf("child process pid %d (%s %s)", pc.cmd.Process.Pid, b.proxyBin, strings.Join(b.sets[0].args[0], " "))
		} else {
			proxyMode = fmt.Sprintf("child processes (%s; flags of the first: %s): %s", b.proxyBin, strings.Join(b.sets[0].args[0], " "), strings.Join(modes, "; "))
		}
	}

	proxyState := fmt.Sprintf("on disk in %s (%s)", dir, fsType(dir))
	progress("backend: %s at %v; eosproxy: %s, at %v, state %s; GOMAXPROCS=%d", backend, b.direct, proxyMode, b.proxied, proxyState, runtime.GOMAXPROCS(0))
	phases := 0
	for _, name := range cfg.workloads {
		if w := findWorkload(name); w.single == nil {
			phases += len(order(0, w, b.proxySlots()))
		}
	}
	if phases > 0 {
		progress("%d workload(s) x %d round(s): %d phases (direct, %s, [proxy-plain,] A/A pair) of %v each", len(cfg.workloads), cfg.rounds, phases*cfg.rounds, strings.Join(b.proxySlots(), ", "), cfg.phase)
	}

	rep := report{
		Backend:    backend,
		ProxyMode:  proxyMode,
		ProxyState: proxyState,
		Kfake:      cfg.upstream == "",
		BrokerPIDs: cfg.upstreamPIDs,
		Configs:    b.configInfo(),
		ProxyIdle:  b.firstIdle(),
		GOMAXPROCS: runtime.GOMAXPROCS(0),
		NumCPU:     runtime.NumCPU(),
		GoVersion:  runtime.Version(),
		Phase:      cfg.phase.String(),
		Rounds:     cfg.rounds,
	}
	// Single measurements run last, after the shared eosproxy child has
	// stopped: they start an eosproxy of their own on the same backend,
	// which refuses a second instance while the first holds its lease.
	names := slices.Clone(cfg.workloads)
	slices.SortStableFunc(names, func(x, y string) int {
		return cmp.Compare(boolInt(findWorkload(x).single != nil), boolInt(findWorkload(y).single != nil))
	})
	for _, name := range names {
		w := findWorkload(name)
		if w.single != nil && len(b.sets) > 0 {
			stopShared()
			b.sets, b.bySlot = nil, nil
		}
		wr, err := b.runWorkload(ctx, w)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		rep.Workloads = append(rep.Workloads, wr)
	}
	for i, s := range b.sets {
		rep.Configs[i].Failovers = s.failovers
	}
	rep.Elapsed = time.Since(start).Round(time.Second).String()
	rep.print(os.Stdout)
	progress("done in %s", rep.Elapsed)
	if cfg.jsonPath != "" {
		if err := rep.writeJSON(cfg.jsonPath); err != nil {
			return err
		}
	}
	return nil
}

// topicPartitions is the partition count of every workload's topic.
const topicPartitions = 3

// Slots of one round. The A/A pair runs the direct path in both slots with
// exactly the procedure of the direct/proxy pair, so D2/D1 is the ratio the
// method reports when the two sides are the same.
const (
	slotDirect = "direct"
	slotProxy  = "proxy"
	slotAA1    = "aa-direct-1"
	slotAA2    = "aa-direct-2"
	// slotProxyPlain is the idempotence workloads' third slot: the plain
	// producer through eosproxy, against which the idempotent one is set.
	slotProxyPlain = "proxy-plain"
)

// order alternates which side of each pair goes first (D P, P D, D P, ...)
// so that drift over the run (a growing heap, a warming page cache, a
// neighbour's load) does not consistently favour one side. The A/A pair is
// interleaved with the main pair in every round so both see the same drift.
// An idempotence workload runs D P Q, then Q P D, ...: over two rounds every
// pair of its three slots has swapped places, as D and P do. With several
// proxy configurations (--compare-instances) each has a proxy slot, and
// there is no Q slot: D P1 P2 ..., then ... P2 P1 D.
func order(round int, w *workload, proxySlots []string) []string {
	sides := append([]string{slotDirect}, proxySlots...)
	if w.idem && len(proxySlots) == 1 {
		sides = append(sides, slotProxyPlain)
	}
	aa := []string{slotAA1, slotAA2}
	if round%2 == 1 {
		slices.Reverse(sides)
		slices.Reverse(aa)
	}
	return append(sides, aa...)
}

func (b *bench) runWorkload(ctx context.Context, w *workload) (workloadResult, error) {
	// A fresh topic per workload: no workload reads another's leftovers.
	topic := fmt.Sprintf("eosbench-%s-%s", w.name, b.runID)
	if _, err := b.admin.CreateTopic(ctx, topicPartitions, -1, nil, topic); err != nil {
		return workloadResult{}, fmt.Errorf("create topic %s: %w", topic, err)
	}
	defer func() {
		// Best effort: on a real broker the benchmark should not leave data.
		dctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		b.admin.DeleteTopics(dctx, topic)
	}()
	if w.prepare != nil {
		if err := w.prepare(ctx, b, topic); err != nil {
			return workloadResult{}, fmt.Errorf("prepare: %w", err)
		}
	}
	if w.single != nil {
		buf, err := w.single(ctx, b, topic)
		if err != nil {
			return workloadResult{}, err
		}
		return workloadResult{Name: w.name, About: w.about, Buffer: buf}, nil
	}
	res := workloadResult{Name: w.name, Phases: map[string][]metrics{}}
	for round := 0; round < b.cfg.rounds; round++ {
		for _, slot := range order(round, w, b.proxySlots()) {
			seeds := b.direct
			if s := b.bySlot[slot]; s != nil {
				seeds = s.seeds
			} else if b.isProxySlot(slot) {
				seeds = b.proxied // --in-process
			}
			m, err := b.runPhase(ctx, w, slot, seeds, topic)
			if err != nil {
				return res, fmt.Errorf("round %d %s phase: %w", round+1, slot, err)
			}
			res.Phases[slot] = append(res.Phases[slot], m)
			progress("%-17s round %d/%d %-12s %s", w.name, round+1, b.cfg.rounds, slot, w.summary(m))
		}
	}
	res.summarize(w, b.proxySlots(), b.cfg.compare())
	return res, nil
}

// runPhase runs one bounded phase: whatever happens, it ends a grace period
// after its planned end.
func (b *bench) runPhase(ctx context.Context, w *workload, slot string, seeds []string, topic string) (metrics, error) {
	if err := b.waitQuiet(ctx); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, warmUp(b.cfg.phase)+b.cfg.phase+30*time.Second)
	defer cancel()
	var m metrics
	var err error
	b.cur = b.bySlot[slot]
	if err := b.cur.checkOwner(ctx); err != nil {
		return nil, err
	}
	b.win = costWindow{active: b.cur != nil, topic: topic}
	cpu0, host0, wall0, backend0 := b.benchCPU(), hostBusy(), time.Now(), b.backendCPU()
	// The client's goroutines carry role=client so that a CPU profile of
	// the whole run can be split into client, proxy and kfake time.
	pprof.Do(ctx, pprof.Labels("role", "client", "slot", slot), func(ctx context.Context) {
		m, err = w.phase(ctx, b, slot, seeds, topic)
	})
	if err != nil {
		return nil, err
	}
	// The benchmark's CPU use over the phase (client, proxy and
	// in-process backend), in cores: a phase that is slow while using little
	// CPU waited on something rather than competed for CPU.
	wall := time.Since(wall0).Seconds()
	own := (b.benchCPU() - cpu0).Seconds()
	m["cores"] = own / wall
	if len(b.cfg.upstreamPIDs) > 0 {
		m["backend cores"] = (b.backendCPU() - backend0).Seconds() / wall
	}
	// CPU the rest of the machine used meanwhile: other processes compete
	// with every party of this benchmark and are the usual cause of a wide
	// spread between phases.
	if host0 >= 0 {
		if host1 := hostBusy(); host1 >= 0 {
			m["others cores"] = max(0, (host1-host0).Seconds()-own) / wall
		}
	}
	if b.win.err != nil {
		progress("%s %s: no eosproxy cost figures: %v", w.name, slot, b.win.err)
	}
	if b.win.logErr != nil {
		progress("%s %s: no size of the cluster's log: %v", w.name, slot, b.win.logErr)
	}
	b.addCost(m)
	b.ownerCost(m)
	b.addLogCost(m)
	if w.cleanup != nil {
		if err := w.cleanup(ctx, b, topic); err != nil {
			return nil, fmt.Errorf("cleanup: %w", err)
		}
	}
	// Client, proxy and kfake share one heap: collect this phase's garbage
	// now, so the next phase does not pay for it, whichever side it is.
	runtime.GC()
	return m, nil
}

func boolInt(v bool) int {
	if v {
		return 1
	}
	return 0
}

// startInProcess runs eosproxy inside the benchmark (--in-process): the
// hop then costs no process switch, and its CPU and heap are the
// benchmark's, so no cost per byte is reported.
func (b *bench) startInProcess(ctx context.Context, dir string, logFile *os.File) (func(), error) {
	plog := zerolog.Nop()
	if logFile != nil {
		plog = zerolog.New(logFile).Level(zerolog.DebugLevel).With().Timestamp().Logger()
	}
	var db *store.DB
	var p *proxy.Proxy
	var err error
	pprof.Do(ctx, pprof.Labels("role", "proxy"), func(ctx context.Context) {
		if db, err = store.Open(dir, zerolog.Nop()); err != nil {
			return
		}
		p, err = proxy.New(proxy.Config{Listen: "127.0.0.1:0", Upstreams: b.direct, DB: db, Log: plog})
		if err == nil {
			p.Start(ctx)
		}
	})
	if err != nil {
		if db != nil {
			db.Close()
		}
		return nil, fmt.Errorf("start eosproxy: %w", err)
	}
	b.proxied = []string{p.Addr()}
	return func() {
		p.Close()
		db.Close() // after the proxy, which does not close a DB it was given
	}, nil
}

// cpuTime is the CPU time, user and system, the process has used so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// waitQuiet waits, up to --quiet-wait, until the rest of the machine uses
// less than --max-others cores. On a shared machine another process's burst
// can halve one phase and not the next, a spread the medians cannot fully
// absorb in a few rounds; waiting it out costs little.
func (b *bench) waitQuiet(ctx context.Context) error {
	if b.cfg.maxOthers <= 0 || hostBusy() < 0 {
		return nil
	}
	const window = 500 * time.Millisecond
	start := time.Now()
	for waited := false; ; waited = true {
		cpu0, host0, t0 := b.benchCPU(), hostBusy(), time.Now()
		select {
		case <-time.After(window):
		case <-ctx.Done():
			return ctx.Err()
		}
		others := max(0, (hostBusy()-host0-(b.benchCPU()-cpu0)).Seconds()) / time.Since(t0).Seconds()
		switch {
		case others < b.cfg.maxOthers:
			if waited {
				progress("other processes quiet after %s", time.Since(start).Round(time.Second))
			}
			return nil
		case time.Since(start) > b.cfg.quietWait:
			progress("other processes still use %.2f cores after %s; running the phase anyway", others, b.cfg.quietWait)
			return nil
		case !waited:
			progress("waiting: other processes use %.2f cores (limit %.2f)", others, b.cfg.maxOthers)
		}
	}
}

// hostBusy is the CPU time all processes have used so far, from Linux's
// /proc/stat; -1 where that is not available.
func hostBusy() time.Duration {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return -1
	}
	line, _, _ := strings.Cut(string(data), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return -1
	}
	// user nice system idle iowait irq softirq steal: all but idle and
	// iowait are busy. The unit is USER_HZ, 100 per second on Linux.
	var busy int64
	for i, v := range f[1:9] {
		if i == 3 || i == 4 {
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return -1
		}
		busy += n
	}
	return time.Duration(busy) * (time.Second / 100)
}

// warmUp is how long a phase runs before it starts measuring: connection
// set-up, metadata and filling the pipeline are not what is compared.
func warmUp(phase time.Duration) time.Duration {
	return min(phase/4, time.Second)
}

// fsType names the file system dir is on, as far as Linux's statfs tells:
// on a tmpfs the fsyncs eosproxy makes cost nothing, unlike in production.
func fsType(dir string) string {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return "file system unknown"
	}
	switch uint32(st.Type) { // Linux's magic numbers fit in 32 bits
	case 0x01021994:
		return "tmpfs: fsyncs cost nothing"
	case 0xEF53:
		return "ext2/3/4"
	case 0x58465342:
		return "xfs"
	case 0x9123683E:
		return "btrfs"
	case 0x794C7630:
		return "overlayfs"
	}
	return fmt.Sprintf("file system 0x%x", st.Type)
}

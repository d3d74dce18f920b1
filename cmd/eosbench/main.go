// Command eosbench measures what eosproxy costs: it runs the same Kafka
// workloads direct to a backend and through an in-process eosproxy, side by
// side in one run, and reports proxy/direct ratios of medians (see DESIGN.md,
// "Performance method"). It also reports the method's own noise floor: the
// same procedure with the direct path in both slots (an A/A comparison), so a
// ratio can be judged against what the method reports when nothing differs.
//
// Method: per workload, a fresh 3-partition topic; then --rounds rounds, each
// a direct and a proxy phase (D P, then P D, ...) and an A/A pair of two
// direct phases. The produce-idem-* workloads compare idempotence (issue 3,
// target >= 0.9x both): their direct (D) and proxy (P) phases run an
// idempotent producer, and a third phase per round, proxy-plain (Q), runs
// the plain producer through eosproxy (D P Q, then Q P D, ...); they report
// P/D and P/Q. The plain and the idempotent producer both keep five produce
// requests in flight per broker, kgo's own limit with idempotence on (see
// idemProducerOpts). The txn-* workloads compare transactions (target:
// committed throughput >= 0.9x direct, commit p99 <= direct + 5 ms): every
// phase runs one franz-go transactional producer with a transactional.id of
// its own, producing 1 KiB records async as fast as it can and committing
// every 100 ms (txn-1KiB-100ms) or every 1000 records (txn-1KiB-1000rec),
// each time Flush, then EndTransaction(TryCommit); the direct side uses the
// backend's native transactions (kfake's or Kafka's coordinator), the proxy
// side eosproxy's. They report committed records/s (only records whose
// transaction committed) and the commit latency p50/p99, where commit is the
// EndTransaction call alone, after Flush returned (flush+commit, from when
// the commit was due, is shown beside it), as P/D and P - D in ms. Every
// phase uses a new franz-go client, warms up for a quarter of --phase (at
// most 1s), measures for --phase and stops by itself.
// Before a phase the benchmark waits (up to --quiet-wait) for other processes
// on the machine to go quiet, and each phase records how many cores the
// benchmark and everything else used, so a spoiled phase can be recognised.
//
// The backend is by default an in-process franz-go kfake cluster, eosproxy's
// embedded backend, held in memory. It shares the CPUs with the proxy and the
// clients: when the clients and kfake already keep every core busy, the
// proxy's own CPU use shows up as lost throughput, so the ratios are a
// pessimistic view of a proxy on its own machine. --upstream points the
// benchmark at a real broker instead. eosproxy always runs in-process,
// listening on loopback only, with its state in an on-disk badger database
// as in production (fsynced before each idempotent produce is answered), in
// a temporary directory under --data-dir that is removed at exit.
//
// txn-buffer, run only when named in --workloads, is a single measurement
// rather than rounds of phases, and only meaningful through eosproxy: it
// builds cmd/eosproxy (or takes --proxy-bin) and runs it as a child process
// in front of the same backend, so that its memory is its own, then writes
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
//	go run ./cmd/eosbench [--phase 5s] [--rounds 5] [--workloads produce-100B,latency]
//	                      [--upstream host:port] [--json out.json] [--cpuprofile cpu.out]
//	                      [--blockprofile block.out] [--data-dir dir]
//	go run ./cmd/eosbench --workloads txn-1KiB-100ms,txn-1KiB-1000rec [--upstream host:port]
//	go run ./cmd/eosbench --workloads txn-buffer [--txn-buffer-bytes 1GiB]
//	                      [--txn-buffer-timeout 10m] [--txn-buffer-end abort|commit]
//	                      [--proxy-bin path] [--proxy-args "--flag value"] [--upstream host:port]
//
// With --cpuprofile, split the profile by party with pprof's tag filters, e.g.
// go tool pprof -top -tagfocus=role=proxy cpu.out. --blockprofile shows
// where goroutines waited instead (block profiles carry no labels; focus on
// the proxy's packages, e.g. go tool pprof -top -focus=eosproxy block.out).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
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
}

func parseFlags(args []string) (config, error) {
	var cfg config
	var workloads, bufferBytes, bufferEnd, proxyArgs string
	fs := flag.NewFlagSet("eosbench", flag.ContinueOnError)
	fs.StringVar(&cfg.upstream, "upstream", "", "bootstrap host:port of a real broker (default: an in-process kfake cluster)")
	fs.DurationVar(&cfg.phase, "phase", 5*time.Second, "measured duration of each phase")
	fs.IntVar(&cfg.rounds, "rounds", 5, "rounds per workload; each round runs a direct and a proxy phase plus an A/A pair")
	fs.StringVar(&workloads, "workloads", strings.Join(defaultWorkloads(), ","), "comma-separated workloads to run, of: "+strings.Join(workloadNames(), ", ")+" (txn-buffer only when named)")
	fs.StringVar(&cfg.jsonPath, "json", "", "also write all phase results to this JSON file")
	fs.StringVar(&cfg.cpuProfile, "cpuprofile", "", "write a CPU profile of the whole run; samples carry the label role=proxy|kfake|client")
	fs.StringVar(&cfg.blockProfile, "blockprofile", "", "write a profile of where goroutines waited (channels, locks, select) over the whole run: where a path is slow without using CPU")
	fs.IntVar(&cfg.kfakeBrokers, "kfake-brokers", 1, "brokers of the in-process kfake cluster")
	fs.IntVar(&cfg.consumeMB, "consume-mb", 256, "size of the data set the consume workload reads, in MiB")
	fs.Float64Var(&cfg.maxOthers, "max-others", 0.3, "before each phase, wait until other processes use fewer cores than this (0: do not wait)")
	fs.DurationVar(&cfg.quietWait, "quiet-wait", 30*time.Second, "longest wait for other processes to quieten before a phase")
	fs.StringVar(&cfg.proxyLog, "proxy-log", "", "write the in-process eosproxy's debug log (JSON) to this `file`, e.g. to see how long each commit's forwarding took")
	fs.StringVar(&cfg.dataDir, "data-dir", os.TempDir(), "directory under which eosproxy's on-disk state is created (and removed at exit); a tmpfs here makes fsyncs free")
	fs.StringVar(&bufferBytes, "txn-buffer-bytes", "1GiB", "txn-buffer: data written inside the one open transaction (bytes, or with a KiB, MiB or GiB suffix)")
	fs.DurationVar(&cfg.txnBufferTimeout, "txn-buffer-timeout", 10*time.Minute, "txn-buffer: the producer's transaction timeout, also the longest the writing may take (eosproxy's --transaction-max-timeout must be at least this)")
	fs.StringVar(&bufferEnd, "txn-buffer-end", "abort", "txn-buffer: end the transaction with abort or commit (commit forwards all of it to the backend: an in-process kfake then holds it in eosbench's memory)")
	fs.StringVar(&cfg.proxyBin, "proxy-bin", "", "txn-buffer: eosproxy binary to run as the child process (default: go build ./cmd/eosproxy into a temporary directory)")
	fs.StringVar(&proxyArgs, "proxy-args", "", "txn-buffer: more flags for the eosproxy child, space-separated (e.g. a larger per-transaction bound)")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	cfg.proxyArgs = strings.Fields(proxyArgs)
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

	// eosproxy's state on disk, as in production: the idempotent producer
	// phases then pay for the fsync before each answer.
	dir, err := os.MkdirTemp(cfg.dataDir, "eosbench-state-")
	if err != nil {
		return fmt.Errorf("eosproxy data dir: %w", err)
	}
	defer os.RemoveAll(dir)
	plog := zerolog.Nop()
	if cfg.proxyLog != "" {
		f, err := os.Create(cfg.proxyLog)
		if err != nil {
			return fmt.Errorf("eosproxy log: %w", err)
		}
		defer f.Close()
		plog = zerolog.New(f).Level(zerolog.DebugLevel).With().Timestamp().Logger()
	}
	var db *store.DB
	var p *proxy.Proxy
	pprof.Do(ctx, pprof.Labels("role", "proxy"), func(ctx context.Context) {
		if db, err = store.Open(dir, zerolog.Nop()); err != nil {
			return
		}
		p, err = proxy.New(proxy.Config{Listen: "127.0.0.1:0", Upstreams: b.direct, DB: db, Log: plog})
		if err == nil {
			p.Start(ctx)
		}
	})
	if db != nil {
		defer db.Close() // after the proxy, which does not close a DB it was given
	}
	if err != nil {
		return fmt.Errorf("start eosproxy: %w", err)
	}
	defer p.Close()
	b.proxied = []string{p.Addr()}

	b.adminCl, err = kgo.NewClient(kgo.SeedBrokers(b.direct...))
	if err != nil {
		return err
	}
	defer b.adminCl.Close()
	b.admin = kadm.NewClient(b.adminCl)

	proxyState := fmt.Sprintf("on-disk badger in %s (%s)", dir, fsType(dir))
	progress("backend: %s at %v; eosproxy at %v, state %s; GOMAXPROCS=%d", backend, b.direct, b.proxied, proxyState, runtime.GOMAXPROCS(0))
	phases := 0
	for _, name := range cfg.workloads {
		if w := findWorkload(name); w.single == nil {
			phases += len(order(0, w))
		}
	}
	if phases > 0 {
		progress("%d workload(s) x %d round(s): %d phases (direct, proxy, [proxy-plain,] A/A pair) of %v each", len(cfg.workloads), cfg.rounds, phases*cfg.rounds, cfg.phase)
	}

	rep := report{
		Backend:    backend,
		ProxyState: proxyState,
		GOMAXPROCS: runtime.GOMAXPROCS(0),
		NumCPU:     runtime.NumCPU(),
		GoVersion:  runtime.Version(),
		Phase:      cfg.phase.String(),
		Rounds:     cfg.rounds,
	}
	for _, name := range cfg.workloads {
		wr, err := b.runWorkload(ctx, findWorkload(name))
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		rep.Workloads = append(rep.Workloads, wr)
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
// pair of its three slots has swapped places, as D and P do.
func order(round int, w *workload) []string {
	sides := []string{slotDirect, slotProxy}
	if w.idem {
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
	if _, err := b.admin.CreateTopic(ctx, 3, -1, nil, topic); err != nil {
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
		for _, slot := range order(round, w) {
			seeds := b.direct
			if slot == slotProxy || slot == slotProxyPlain {
				seeds = b.proxied
			}
			m, err := b.runPhase(ctx, w, slot, seeds, topic)
			if err != nil {
				return res, fmt.Errorf("round %d %s phase: %w", round+1, slot, err)
			}
			res.Phases[slot] = append(res.Phases[slot], m)
			progress("%-17s round %d/%d %-12s %s", w.name, round+1, b.cfg.rounds, slot, w.summary(m))
		}
	}
	res.summarize(w)
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
	cpu0, host0, wall0 := cpuTime(), hostBusy(), time.Now()
	// The client's goroutines carry role=client so that a CPU profile of
	// the whole run can be split into client, proxy and kfake time.
	pprof.Do(ctx, pprof.Labels("role", "client", "slot", slot), func(ctx context.Context) {
		m, err = w.phase(ctx, b, slot, seeds, topic)
	})
	if err != nil {
		return nil, err
	}
	// The whole process's CPU use over the phase (client, proxy and
	// in-process backend), in cores: a phase that is slow while using little
	// CPU waited on something rather than competed for CPU.
	wall := time.Since(wall0).Seconds()
	own := (cpuTime() - cpu0).Seconds()
	m["cores"] = own / wall
	// CPU the rest of the machine used meanwhile: other processes compete
	// with every party of this benchmark and are the usual cause of a wide
	// spread between phases.
	if host0 >= 0 {
		if host1 := hostBusy(); host1 >= 0 {
			m["others cores"] = max(0, (host1-host0).Seconds()-own) / wall
		}
	}
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
		cpu0, host0, t0 := cpuTime(), hostBusy(), time.Now()
		select {
		case <-time.After(window):
		case <-ctx.Done():
			return ctx.Err()
		}
		others := max(0, (hostBusy()-host0-(cpuTime()-cpu0)).Seconds()) / time.Since(t0).Seconds()
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

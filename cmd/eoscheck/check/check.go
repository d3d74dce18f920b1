// Package check is the core of eoscheck, the exactly-once verifier: it
// drives idempotent franz-go producers through an eosproxy child process
// while SIGKILLing and restarting it, then reads the backend directly and
// accounts for every record in the Jepsen Kafka workload's terms.
//
// This first slice covers idempotent producers only: eosproxy does not
// implement transactions yet, so there are no transactional copiers and no
// aborted or uncommitted reads to look for.
package check

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eosproxy/eosproxy/integration/faults"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Config is one eoscheck run.
type Config struct {
	Upstream   string        // backend bootstrap; empty starts kfake (without the EOS API keys) in-process
	ProxyBin   string        // eosproxy binary; empty builds cmd/eosproxy
	Producers  int           // idempotent producers
	Partitions int           // partitions of the topic
	Records    int           // records to send in total
	Duration   time.Duration // if set, spread the records over this long (the run ends when both this and Kills are reached)
	Rate       int           // records per second in total; 0 chooses one that spreads Records over the kill schedule
	KillEvery  time.Duration // fixed interval between SIGKILLs; 0: random 300 ms–1.5 s
	Kills      int           // at least this many SIGKILLs
	Seed       uint64        // 0: from the clock
	WorkDir    string        // data dir and logs go under it; empty: a temp dir
	LogFile    string        // eosproxy's JSON logs; empty: WorkDir/eosproxy.log
	Progress   io.Writer     // progress lines and the final table; nil: silent
}

// Report is the outcome, written as JSON.
type Report struct {
	Seed          uint64   `json:"seed"`
	Topic         string   `json:"topic"`
	Backend       string   `json:"backend"`
	Producers     int      `json:"producers"`
	Partitions    int      `json:"partitions"`
	Seconds       float64  `json:"seconds"`
	Sent          int64    `json:"sent"`
	Acked         int64    `json:"acked"`
	Failed        int64    `json:"failed"`
	Kills         int      `json:"kills"`
	Restarts      int      `json:"restarts"`
	BackendTotal  int64    `json:"backend_records"`
	Lost          int64    `json:"lost"`
	Duplicates    int64    `json:"duplicates"`      // distinct values read more than once
	DuplicateRead int64    `json:"duplicate_extra"` // extra copies beyond the first
	OrderErrors   int64    `json:"order_violations"`
	Unexpected    int64    `json:"unexpected"`
	Anomalies     int64    `json:"anomalies"`
	Examples      []string `json:"examples,omitempty"`
	ProxyCrashes  []string `json:"proxy_crashes,omitempty"`
	LogFile       string   `json:"log_file"`
	Note          string   `json:"note"`
}

// Valid reports whether the run found no anomaly.
func (r *Report) Valid() bool { return r.Anomalies == 0 }

func (c *Config) defaults() {
	if c.Producers <= 0 {
		c.Producers = 4
	}
	if c.Partitions <= 0 {
		c.Partitions = 6
	}
	if c.Records <= 0 {
		c.Records = 200_000
	}
	if c.Kills < 0 {
		c.Kills = 0
	}
	if c.Seed == 0 {
		c.Seed = uint64(time.Now().UnixNano())
	}
	if c.Progress == nil {
		c.Progress = io.Discard
	}
}

// producer is one idempotent producer's bookkeeping.
type producer struct {
	cl    *kgo.Client
	sent  atomic.Int64  // values 0..sent-1 were handed to Produce
	acked []atomic.Bool // by seq
}

// Run runs one check. An error means the check could not be carried out
// (the report may be partial); anomalies are in the report.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	cfg.defaults()
	rng := rand.New(rand.NewPCG(cfg.Seed, cfg.Seed>>1|1))
	rep := &Report{Seed: cfg.Seed, Producers: cfg.Producers, Partitions: cfg.Partitions,
		Note: "idempotent producers only: eosproxy does not implement transactions yet (no copiers, no aborted/uncommitted-read checks)"}
	start := time.Now()
	out := cfg.Progress

	work := cfg.WorkDir
	if work == "" {
		d, err := os.MkdirTemp("", "eoscheck-")
		if err != nil {
			return rep, err
		}
		work = d
	}
	dataDir := filepath.Join(work, "data")
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return rep, err
	}
	logPath := cfg.LogFile
	if logPath == "" {
		logPath = filepath.Join(work, "eosproxy.log")
	}
	rep.LogFile = logPath
	logFile, err := os.Create(logPath)
	if err != nil {
		return rep, err
	}
	defer logFile.Close()

	// Backend.
	var backend []string
	if cfg.Upstream != "" {
		backend = strings.Split(cfg.Upstream, ",")
		rep.Backend = cfg.Upstream
	} else {
		fake, err := kfake.NewCluster(kfake.NumBrokers(3), kfake.MaxVersions(faults.NoEOSVersions()))
		if err != nil {
			return rep, err
		}
		defer fake.Close()
		backend = fake.ListenAddrs()
		rep.Backend = "kfake (no EOS API keys): " + strings.Join(backend, ",")
	}
	direct, err := kgo.NewClient(kgo.SeedBrokers(backend...))
	if err != nil {
		return rep, err
	}
	defer direct.Close()
	adm := kadm.NewClient(direct)
	brokers, err := adm.ListBrokers(ctx)
	if err != nil {
		return rep, fmt.Errorf("backend metadata: %w", err)
	}
	rep.Topic = fmt.Sprintf("eoscheck-%d", cfg.Seed)
	if _, err := adm.CreateTopic(ctx, int32(cfg.Partitions), 1, nil, rep.Topic); err != nil {
		return rep, fmt.Errorf("create topic: %w", err)
	}

	// eosproxy.
	bin := cfg.ProxyBin
	if bin == "" {
		if bin, err = buildProxy(work); err != nil {
			return rep, err
		}
	}
	base, err := faults.FreePortRange(rng, 1+len(brokers))
	if err != nil {
		return rep, err
	}
	pp := &proxyProc{bin: bin, logs: &proxyLogs{file: logFile, counts: map[string]int{}}, args: []string{
		"--log-format", "json", "--log-level", "info",
		"--listen", net.JoinHostPort("127.0.0.1", strconv.Itoa(base)),
		"--broker-ports", fmt.Sprintf("%d-%d", base+1, base+len(brokers)),
		"--upstream", strings.Join(backend, ","),
		"--data-dir", dataDir,
	}}
	defer pp.stop()
	bootstrap, err := pp.start()
	if err != nil {
		return rep, err
	}
	fmt.Fprintf(out, "eoscheck: seed %d, backend %s, eosproxy %s (logs %s), topic %s\n", cfg.Seed, rep.Backend, bootstrap, logPath, rep.Topic)

	// Producers.
	perProducer := (cfg.Records + cfg.Producers - 1) / cfg.Producers
	prods := make([]*producer, cfg.Producers)
	for i := range prods {
		cl, err := kgo.NewClient(kgo.SeedBrokers(bootstrap), kgo.DefaultProduceTopic(rep.Topic),
			kgo.RecordRetries(1<<30), kgo.RequestRetries(1<<30),
			kgo.RetryBackoffFn(func(n int) time.Duration { return min(time.Duration(n)*10*time.Millisecond, 200*time.Millisecond) }),
			kgo.RecordDeliveryTimeout(2*time.Minute),
			// Reconnect soon after a kill: the default waits up to 5 s
			// between metadata refreshes.
			kgo.MetadataMinAge(100*time.Millisecond),
			kgo.ProducerBatchMaxBytes(16<<10),
			kgo.MaxBufferedRecords(20_000))
		if err != nil {
			return rep, err
		}
		defer cl.Close()
		prods[i] = &producer{cl: cl, acked: make([]atomic.Bool, perProducer)}
	}

	rate := cfg.Rate
	if rate <= 0 {
		span := cfg.Duration
		if span <= 0 {
			every := cfg.KillEvery
			if every <= 0 {
				every = 900 * time.Millisecond
			}
			span = time.Duration(max(cfg.Kills, 1)) * (every + 150*time.Millisecond)
		}
		rate = max(1000, int(float64(cfg.Records)/span.Seconds()))
	}

	var acked, failed, sent atomic.Int64
	var firstErr atomic.Pointer[string]
	var wg sync.WaitGroup // outstanding Produce callbacks
	var prodWG sync.WaitGroup
	for i, p := range prods {
		prodWG.Add(1)
		go func() {
			defer prodWG.Done()
			tick := time.NewTicker(10 * time.Millisecond)
			defer tick.Stop()
			perTick := max(1, rate/cfg.Producers/100)
			t0 := time.Now()
			for seq := 0; seq < perProducer && int(sent.Load()) < cfg.Records; {
				// Catch up to the rate: records due by now.
				due := min(perProducer, int(time.Since(t0).Seconds()*float64(rate)/float64(cfg.Producers))+perTick)
				for ; seq < due && int(sent.Add(1)) <= cfg.Records; seq++ {
					s := seq
					wg.Add(1)
					p.sent.Store(int64(s + 1))
					p.cl.Produce(context.Background(), &kgo.Record{
						Key:   []byte(strconv.Itoa(s % 64)),
						Value: []byte(strconv.Itoa(i) + "-" + strconv.Itoa(s)),
					}, func(_ *kgo.Record, err error) {
						defer wg.Done()
						if err != nil {
							failed.Add(1)
							msg := err.Error()
							firstErr.CompareAndSwap(nil, &msg)
							return
						}
						p.acked[s].Store(true)
						acked.Add(1)
					})
				}
				select {
				case <-tick.C:
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	producing := make(chan struct{})
	go func() { prodWG.Wait(); close(producing) }()

	// Progress.
	kills := 0
	var killsA atomic.Int64
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
				fmt.Fprintf(out, "[%5.1fs] sent %d  acked %d  failed %d  kills %d  restarts %d\n",
					time.Since(start).Seconds(), min(sent.Load(), int64(cfg.Records)), acked.Load(), failed.Load(), killsA.Load(), killsA.Load())
			case <-progDone:
				return
			}
		}
	}()
	stopProgress := func() { close(progDone); progWG.Wait() }

	// Fault schedule: SIGKILL and restart at once on the same data dir and
	// ports, until the records are sent, the duration is over and at least
	// Kills kills were done.
	var runErr error
	deadline := time.After(cfg.Duration)
	durationOver := cfg.Duration <= 0
	producersDone := false
	for runErr == nil && (!producersDone || !durationOver || kills < cfg.Kills) {
		interval := cfg.KillEvery
		if interval <= 0 {
			interval = 300*time.Millisecond + time.Duration(rng.Int64N(int64(1200*time.Millisecond)))
		}
		timer := time.NewTimer(interval)
	wait:
		for {
			select {
			case <-timer.C:
				break wait
			case <-producing:
				producing = nil
				producersDone = true
			case <-deadline:
				deadline = nil
				durationOver = true
			case <-ctx.Done():
				runErr = ctx.Err()
				break wait
			}
		}
		timer.Stop()
		if runErr != nil {
			break
		}
		if producersDone && durationOver && kills >= cfg.Kills {
			break
		}
		if err := pp.kill(); err != nil {
			runErr = err
			break
		}
		kills++
		killsA.Store(int64(kills))
		if _, err := pp.start(); err != nil {
			runErr = err
			break
		}
	}
	rep.Kills, rep.Restarts = kills, pp.runs-1
	if runErr != nil {
		stopProgress()
		return rep, runErr
	}

	flushCtx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	for _, p := range prods {
		if err := p.cl.Flush(flushCtx); err != nil {
			stopProgress()
			return rep, fmt.Errorf("flush: %v (%d acked, %d failed)", err, acked.Load(), failed.Load())
		}
	}
	wg.Wait()
	stopProgress()
	rep.Sent, rep.Acked, rep.Failed = min(sent.Load(), int64(cfg.Records)), acked.Load(), failed.Load()
	if p := firstErr.Load(); p != nil {
		fmt.Fprintf(out, "first produce failure: %s\n", *p)
	}

	// Verdict, from the backend directly.
	if err := verdict(ctx, backend, rep, prods, adm); err != nil {
		return rep, err
	}
	rep.ProxyCrashes = pp.logs.crashed()
	rep.Seconds = time.Since(start).Seconds()
	if len(rep.ProxyCrashes) > 0 {
		rep.Anomalies += int64(len(rep.ProxyCrashes))
	}
	printTable(out, rep)
	if cfg.WorkDir == "" && rep.Valid() && cfg.LogFile == "" {
		logFile.Close()
		os.RemoveAll(work)
		rep.LogFile += " (removed: no anomaly)"
	}
	return rep, nil
}

// verdict reads every partition from the start up to its end offset,
// straight from the backend, and counts the anomalies.
func verdict(ctx context.Context, backend []string, rep *Report, prods []*producer, adm *kadm.Client) error {
	ends, err := adm.ListEndOffsets(ctx, rep.Topic)
	if err != nil {
		return fmt.Errorf("end offsets: %w", err)
	}
	var total int64
	ends.Each(func(o kadm.ListedOffset) { total += o.Offset })
	rep.BackendTotal = total
	cl, err := kgo.NewClient(kgo.SeedBrokers(backend...), kgo.ConsumeTopics(rep.Topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		return err
	}
	defer cl.Close()
	seen := make([][]int32, len(prods))
	for i, p := range prods {
		seen[i] = make([]int32, len(p.acked))
	}
	type key struct {
		part int32
		prod int
	}
	last := map[key]int{}
	example := func(format string, args ...any) {
		if len(rep.Examples) < 20 {
			rep.Examples = append(rep.Examples, fmt.Sprintf(format, args...))
		}
	}
	readCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	var n int64
	for n < total {
		fs := cl.PollFetches(readCtx)
		if readCtx.Err() != nil {
			return fmt.Errorf("read %d of the backend's %d records before timeout", n, total)
		}
		fs.EachRecord(func(r *kgo.Record) {
			n++
			pi, seq, ok := parseValue(string(r.Value))
			if !ok || pi >= len(prods) || int64(seq) >= prods[pi].sent.Load() {
				rep.Unexpected++
				example("unexpected value %q at %d/%d", r.Value, r.Partition, r.Offset)
				return
			}
			if seen[pi][seq]++; seen[pi][seq] == 2 {
				rep.Duplicates++
				example("duplicate %d-%d at %d/%d", pi, seq, r.Partition, r.Offset)
			}
			if seen[pi][seq] > 1 {
				rep.DuplicateRead++
			}
			k := key{r.Partition, pi}
			if prev, ok := last[k]; ok && seq < prev {
				rep.OrderErrors++
				example("order: producer %d seq %d after %d in partition %d (offset %d)", pi, seq, prev, r.Partition, r.Offset)
			}
			last[k] = seq
		})
	}
	for pi, p := range prods {
		for seq := range p.acked {
			if p.acked[seq].Load() && seen[pi][seq] == 0 {
				rep.Lost++
				example("lost: %d-%d acknowledged, not in the backend", pi, seq)
			}
		}
	}
	rep.Anomalies = rep.Lost + rep.Duplicates + rep.OrderErrors + rep.Unexpected
	return nil
}

func parseValue(s string) (int, int, bool) {
	a, b, ok := strings.Cut(s, "-")
	if !ok {
		return 0, 0, false
	}
	p, err1 := strconv.Atoi(a)
	q, err2 := strconv.Atoi(b)
	if err1 != nil || err2 != nil || p < 0 || q < 0 {
		return 0, 0, false
	}
	return p, q, true
}

func printTable(w io.Writer, r *Report) {
	fmt.Fprintf(w, "\n%-28s %10s\n", "eoscheck (idempotent)", "count")
	row := func(name string, v int64) { fmt.Fprintf(w, "%-28s %10d\n", name, v) }
	row("records sent", r.Sent)
	row("acked", r.Acked)
	row("failed (allowed)", r.Failed)
	row("in backend", r.BackendTotal)
	row("SIGKILLs", int64(r.Kills))
	row("restarts", int64(r.Restarts))
	row("lost (acked, not read)", r.Lost)
	row("duplicates", r.Duplicates)
	row("order violations", r.OrderErrors)
	row("unexpected", r.Unexpected)
	row("eosproxy crashes", int64(len(r.ProxyCrashes)))
	row("ANOMALIES", r.Anomalies)
	for _, e := range r.Examples {
		fmt.Fprintf(w, "  %s\n", e)
	}
	verdict := "VALID"
	if !r.Valid() {
		verdict = "INVALID"
	}
	fmt.Fprintf(w, "%s in %.1fs\n", verdict, r.Seconds)
}

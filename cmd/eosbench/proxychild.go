package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/eosproxy/eosproxy/integration/faults"
)

// eosproxy as its own process, the way users run it: the built
// cmd/eosproxy binary (or --proxy-bin) in front of the same backend, its
// state in a directory of its own under --data-dir, an admin listener on
// loopback whose /metrics the benchmark reads. Its CPU time (from
// /proc/<pid>/stat) and its allocations (the Go runtime's counters on
// /metrics) are read around each measured window of a proxy phase, which
// gives eosproxy's cost per byte carried.

// proxyBinary is --proxy-bin, or cmd/eosproxy built into a temporary
// directory (removed by the returned cleanup).
func proxyBinary(ctx context.Context, cfg config) (string, func(), error) {
	if cfg.proxyBin != "" {
		return cfg.proxyBin, func() {}, nil
	}
	binDir, err := os.MkdirTemp("", "eosbench-bin-")
	if err != nil {
		return "", nil, err
	}
	cleanup := func() { os.RemoveAll(binDir) }
	bin := filepath.Join(binDir, "eosproxy")
	progress("go build ./cmd/eosproxy")
	bctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	out, err := exec.CommandContext(bctx, "go", "build", "-o", bin, "github.com/eosproxy/eosproxy/cmd/eosproxy").CombinedOutput()
	cancel()
	if err != nil {
		cleanup()
		return "", nil, fmt.Errorf("build eosproxy (run eosbench from the module, or give --proxy-bin): %v\n%s", err, out)
	}
	return bin, cleanup, nil
}

// proxyChild is a running eosproxy child and where to reach it.
type proxyChild struct {
	*child
	listen string // bootstrap address for clients
	admin  string // host:port of /metrics
	http   *http.Client
	// brokerLo and brokerHi are its --broker-ports: the listeners its
	// metadata names while it serves.
	brokerLo, brokerHi int
}

// startProxyChild starts bin in front of upstream with nb broker listeners,
// its state in stateDir, plus extra flags (which may override the ones
// given here: the flag package keeps the last).
func startProxyChild(ctx context.Context, bin string, upstream []string, nb int, stateDir string, extra []string, log io.Writer) (*proxyChild, []string, error) {
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 0))
	base, err := takePorts(2+nb, func(n int) (int, error) { return faults.FreePortRange(rng, n) })
	if err != nil {
		return nil, nil, err
	}
	listen := net.JoinHostPort("127.0.0.1", strconv.Itoa(base))
	admin := net.JoinHostPort("127.0.0.1", strconv.Itoa(base+1+nb))
	args := []string{
		"--listen", listen,
		"--broker-ports", fmt.Sprintf("%d-%d", base+1, base+nb),
		"--admin-listen", admin,
		"--upstream", strings.Join(upstream, ","),
		"--data-dir", stateDir,
		"--log-level", "warn",
	}
	args = append(args, extra...)
	c, err := startChild(ctx, bin, args, listen, log)
	if err != nil {
		return nil, args, err
	}
	// No compression: a gzip writer allocated for some reads and not
	// others would make what a read costs eosproxy vary.
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableCompression: true}}
	p := &proxyChild{child: c, listen: listen, admin: admin, http: hc, brokerLo: base + 1, brokerHi: base + nb}
	if err := p.waitReady(ctx); err != nil {
		c.stop()
		return nil, args, err
	}
	return p, args, nil
}

// waitReady waits until /readyz says eosproxy is ready: it listens before
// it has claimed the backend, and exits if another instance holds it.
func (p *proxyChild) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(30 * time.Second)
	last := ""
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.admin+"/readyz", nil)
		if err != nil {
			return err
		}
		if resp, err := p.http.Do(req); err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = strings.TrimSpace(string(body))
		} else {
			last = err.Error()
		}
		select {
		case <-p.exited:
			return fmt.Errorf("eosproxy exited before it was ready (%v): %s", p.cmd.ProcessState, strings.Join(p.log.lines(), " | "))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("eosproxy not ready after 30 s (/readyz: %s): %s", last, strings.Join(p.log.lines(), " | "))
		}
	}
}

// procCost is what the child has used so far.
type procCost struct {
	cpu        time.Duration // user + system, all threads
	mallocs    float64       // heap objects allocated (go_memstats_mallocs_total)
	allocBytes float64       // heap bytes allocated (go_memstats_alloc_bytes_total)
	at         time.Time
}

// cost reads the child's CPU time and allocation counters.
func (p *proxyChild) cost(ctx context.Context) (procCost, error) {
	c := procCost{at: time.Now()}
	var err error
	if c.cpu, err = procCPU(p.cmd.Process.Pid); err != nil {
		return c, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.admin+"/metrics", nil)
	if err != nil {
		return c, err
	}
	resp, err := p.http.Do(req)
	if err != nil {
		return c, fmt.Errorf("eosproxy /metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return c, fmt.Errorf("eosproxy /metrics: %s", resp.Status)
	}
	vals, err := scrape(resp.Body, "go_memstats_mallocs_total", "go_memstats_alloc_bytes_total")
	if err != nil {
		return c, fmt.Errorf("eosproxy /metrics: %w", err)
	}
	c.mallocs, c.allocBytes = vals[0], vals[1]
	return c, nil
}

// scrape reads the values of unlabelled samples from Prometheus' text
// format; each name must be present.
func scrape(r io.Reader, names ...string) ([]float64, error) {
	vals := make([]float64, len(names))
	found := make([]bool, len(names))
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, v, ok := strings.Cut(sc.Text(), " ")
		if !ok || strings.HasPrefix(name, "#") {
			continue
		}
		for i, n := range names {
			if name == n {
				f, err := strconv.ParseFloat(strings.Fields(v)[0], 64)
				if err != nil {
					return nil, fmt.Errorf("%s: %w", n, err)
				}
				vals[i], found[i] = f, true
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	for i, ok := range found {
		if !ok {
			return nil, fmt.Errorf("no %s (is the Go collector registered?)", names[i])
		}
	}
	return vals, nil
}

// procCPU is a process's CPU time so far, user and system over all its
// threads, from /proc/<pid>/stat (in USER_HZ ticks, 100 per second on
// Linux: 10 ms resolution, fine against windows of seconds).
func procCPU(pid int) (time.Duration, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return parseProcStatCPU(string(data))
}

func parseProcStatCPU(stat string) (time.Duration, error) {
	// The command name (field 2) may hold spaces: count fields after its ')'.
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("unexpected /proc stat line %q", stat)
	}
	f := strings.Fields(stat[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("unexpected /proc stat line %q", stat)
	}
	var ticks int64
	for _, s := range f[11:13] { // utime (field 14), stime (field 15)
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("unexpected /proc stat line %q: %w", stat, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * (time.Second / 100), nil
}

// child is an eosproxy process the benchmark runs.
type child struct {
	cmd    *exec.Cmd
	exited chan struct{}
	log    *childLog
}

// startChild starts eosproxy and waits until its bootstrap listener
// accepts connections (at --log-level warn it logs no "ready" line). Its
// output goes to log if given (a --proxy-log file), else to a childLog.
func startChild(ctx context.Context, bin string, args []string, listen string, log io.Writer) (*child, error) {
	c := &child{cmd: exec.Command(bin, args...), exited: make(chan struct{}), log: &childLog{}}
	c.cmd.Stdout, c.cmd.Stderr = c.log, c.log
	if log != nil {
		c.cmd.Stdout, c.cmd.Stderr = log, log
	}
	if err := c.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start eosproxy: %w", err)
	}
	go func() { c.cmd.Wait(); close(c.exited) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		conn, err := net.DialTimeout("tcp", listen, time.Second)
		if err == nil {
			conn.Close()
			return c, nil
		}
		select {
		case <-c.exited:
			return nil, fmt.Errorf("eosproxy exited before it listened (%v): %s", c.cmd.ProcessState, strings.Join(c.log.lines(), " | "))
		case <-ctx.Done():
			c.stop()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			c.stop()
			return nil, fmt.Errorf("eosproxy not listening on %s after 30 s: %s", listen, strings.Join(c.log.lines(), " | "))
		}
	}
}

// stop asks eosproxy to shut down (SIGTERM), kills it if it has not within
// 20 s, and says how it ended.
func (c *child) stop() string {
	select {
	case <-c.exited:
		return fmt.Sprintf("exited by itself before the end: %v", c.cmd.ProcessState)
	default:
	}
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
		return c.cmd.ProcessState.String()
	case <-time.After(20 * time.Second):
	}
	c.cmd.Process.Kill()
	<-c.exited
	return "killed: not stopped 20 s after SIGTERM"
}

// childLog keeps eosproxy's output (warnings and errors only, at
// --log-level warn): the first lines are echoed as they come, a bounded
// number is kept for the report.
type childLog struct {
	mu      sync.Mutex
	partial []byte
	kept    []string
	dropped int
}

const childLogKeep = 20

func (l *childLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		line := strings.TrimSpace(string(l.partial[:i]))
		l.partial = l.partial[i+1:]
		if line == "" {
			continue
		}
		if len(l.kept) < childLogKeep {
			l.kept = append(l.kept, line)
			progress("eosproxy child: %s", line)
		} else {
			l.dropped++
		}
	}
	return len(p), nil
}

func (l *childLog) lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := append([]string(nil), l.kept...)
	if s := strings.TrimSpace(string(l.partial)); s != "" {
		out = append(out, s)
	}
	if l.dropped > 0 {
		out = append(out, fmt.Sprintf("(%d more lines not kept)", l.dropped))
	}
	return out
}

// costWindow is one proxy phase's measured window as eosproxy's counters
// saw it: read when the phase starts measuring (markStart) and when it
// stops (markEnd), so warm-up and set-up are not counted.
type costWindow struct {
	active     bool     // the phase runs through eosproxy children (b.cur)
	start, end procCost // summed over the configuration's children
	marks      int
	err        error
	// A cluster's phase: the owner's own counters, and the sizes of the
	// cluster's log and of the workload's topic in the backend.
	ownerStart, ownerEnd procCost
	topic                string
	logStart, logEnd     int64
	topicStart, topicEnd int64
	logErr               error
}

func (b *bench) markStart() {
	b.mark(&b.win.start, &b.win.ownerStart, &b.win.logStart, &b.win.topicStart)
}
func (b *bench) markEnd() { b.mark(&b.win.end, &b.win.ownerEnd, &b.win.logEnd, &b.win.topicEnd) }

func (b *bench) mark(into, owner *procCost, logBytes, topicBytes *int64) {
	if !b.win.active || b.win.err != nil {
		return
	}
	c, o, err := b.cur.cost(context.Background())
	if err != nil {
		b.win.err = err
		return
	}
	*into, *owner = c, o
	b.win.marks++
	if lt := b.cur.logTopic(); lt != "" && b.win.logErr == nil {
		*logBytes, *topicBytes, b.win.logErr = logSizes(context.Background(), b.admin, lt, b.win.topic)
	}
}

// idleCost is what eosproxy uses when it carries nothing, to take out of
// each window: the rendering of one /metrics read (which falls inside
// every window) and its background work per second (timers, badger's
// housekeeping). Against a window of a second they are not negligible:
// a few thousand allocations, as many as bulk produce of ~100 MB makes.
type idleCost struct {
	Scrape         procCost `json:"-"`
	PerSecond      procCost `json:"-"`
	ScrapeAllocs   float64  `json:"scrape_allocs"`
	IdleAllocsPerS float64  `json:"idle_allocs_per_s"`
	IdleBytesPerS  float64  `json:"idle_alloc_bytes_per_s"`
	IdleCores      float64  `json:"idle_cores"`
}

// measureIdle measures idleCost on a child that carries nothing yet, a
// second after it started: the least of three back-to-back reads for a
// read's own cost, then a 2 s idle window.
func (p *proxyChild) measureIdle(ctx context.Context) (idleCost, error) {
	var ic idleCost
	// Let start-up work (opening the state, first metadata) finish first.
	select {
	case <-time.After(time.Second):
	case <-ctx.Done():
		return ic, ctx.Err()
	}
	for i := range 3 {
		a, err := p.cost(ctx)
		if err != nil {
			return ic, err
		}
		z, err := p.cost(ctx)
		if err != nil {
			return ic, err
		}
		d := procCost{mallocs: z.mallocs - a.mallocs, allocBytes: z.allocBytes - a.allocBytes}
		if i == 0 || d.mallocs < ic.Scrape.mallocs {
			ic.Scrape = d
		}
	}
	a, err := p.cost(ctx)
	if err != nil {
		return ic, err
	}
	select {
	case <-time.After(2 * time.Second):
	case <-ctx.Done():
		return ic, ctx.Err()
	}
	z, err := p.cost(ctx)
	if err != nil {
		return ic, err
	}
	secs := z.at.Sub(a.at).Seconds()
	ic.PerSecond = procCost{
		cpu:        time.Duration(float64(z.cpu-a.cpu) / secs),
		mallocs:    max(0, z.mallocs-a.mallocs-ic.Scrape.mallocs) / secs,
		allocBytes: max(0, z.allocBytes-a.allocBytes-ic.Scrape.allocBytes) / secs,
	}
	ic.ScrapeAllocs = ic.Scrape.mallocs
	ic.IdleAllocsPerS, ic.IdleBytesPerS = ic.PerSecond.mallocs, ic.PerSecond.allocBytes
	ic.IdleCores = ic.PerSecond.cpu.Seconds()
	return ic, nil
}

// addCost adds eosproxy's cost over the window, less its idle cost, to a
// phase's metrics: per byte carried (the phase's MB/s over the window) and
// per record.
func (b *bench) addCost(m metrics) {
	w := b.win
	if !w.active || w.marks != 2 {
		return
	}
	secs := w.end.at.Sub(w.start.at).Seconds()
	if secs <= 0 {
		return
	}
	ic := b.cur.idle
	idle := ic.PerSecond
	cpu := max(0, (w.end.cpu-w.start.cpu).Seconds()-idle.cpu.Seconds()*secs)
	mallocs := max(0, w.end.mallocs-w.start.mallocs-ic.Scrape.mallocs-idle.mallocs*secs)
	allocBytes := max(0, w.end.allocBytes-w.start.allocBytes-ic.Scrape.allocBytes-idle.allocBytes*secs)
	m["proxy cores"] = cpu / secs
	if bytes := m["MB/s"] * 1e6 * secs; bytes > 0 {
		m["proxy CPU s/GB"] = cpu / (bytes / 1e9)
		m["proxy allocs/MB"] = mallocs / (bytes / 1e6)
		m["proxy alloc B/B"] = allocBytes / bytes
	}
	if recs := m["rec/s"] * secs; recs > 0 {
		m["proxy CPU us/rec"] = cpu * 1e6 / recs
		m["proxy allocs/rec"] = mallocs / recs
	}
}

// benchCPU is the CPU time the benchmark's own parties have used so far:
// this process (clients, and kfake or an in-process eosproxy), the eosproxy
// children (of every configuration) and the brokers named by --upstream-pid. The rest of the machine's
// CPU use is "other load".
func (b *bench) benchCPU() time.Duration {
	t := cpuTime() + b.backendCPU()
	for _, s := range b.sets {
		for _, c := range s.children {
			if cpu, err := procCPU(c.cmd.Process.Pid); err == nil {
				t += cpu
			}
		}
	}
	return t
}

// backendCPU is the CPU time of the brokers named by --upstream-pid.
func (b *bench) backendCPU() time.Duration {
	var t time.Duration
	for _, pid := range b.cfg.upstreamPIDs {
		if c, err := procCPU(pid); err == nil {
			t += c
		}
	}
	return t
}

package check

// Cluster mode (issue 13): with Instances ≥ 2, eoscheck runs that many
// eosproxy processes as one cluster (--cluster NAME) in front of the
// backend. One of them, the owner, serves the exactly-once work; the others
// relay their clients to it. The clients get every instance as a seed. The
// fault schedule picks its victims among the instances, mostly the owner
// (known from the logs: the latest "owner of the cluster: serving" line of
// an instance that was not deposed, stopped or killed since), sometimes a
// standby, and measures how long the cluster is left without an owner (a
// failover). InstanceStops SIGSTOP the owner past the session timeout and
// SIGCONT it: a zombie, which its successor must have fenced.
// InstanceCuts cut the owner off from the backend the same way, while its
// process and its clients' connections to it carry on: a zombie that never
// stopped.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eosproxy/eosproxy/cluster"
)

// The cluster's log lines eoscheck relies on (cmd/eosproxy, cluster/).
const (
	msgServing       = "owner of the cluster: serving"
	msgDeposedPrefix = "no longer the cluster's owner"
)

// The errors of package cluster, as logged.
var errFencedText, errNotOwnerText = cluster.ErrFenced.Error(), cluster.ErrNotOwner.Error()

// Failover is a fault of the cluster's owner and how long the cluster was
// left without one.
type Failover struct {
	At     float64 `json:"at"`              // seconds since the run started
	Victim int     `json:"victim"`          // instance
	How    string  `json:"how"`             // kill (SIGKILL), stop (SIGSTOP past the session timeout), cut (from the backend, past it), term (SIGTERM: a clean handover), crash (at a crash point)
	Point  string  `json:"point,omitempty"` // crash: the crash point
	// TookMs is the time from the fault until another instance (or the
	// victim's next run) logged that it serves; -1: none did within the
	// session timeout + 30 s.
	TookMs int64 `json:"took_ms"`
	// ExitedMs (term) is how long the victim took to exit after SIGTERM:
	// it finishes its in-flight requests (--shutdown-timeout) first.
	ExitedMs   int64  `json:"exited_ms,omitempty"`
	NewOwner   int    `json:"new_owner"` // -1: none
	Generation string `json:"generation,omitempty"`
}

// ZombieReport is what became of an owner stopped past the session
// timeout once it was resumed.
type ZombieReport struct {
	Instance int    `json:"instance"`
	How      string `json:"how"` // stop (SIGSTOP), cut (from the backend)
	// DeposedMs is the time from the end of the isolation (SIGCONT, the
	// cut's end) until it logged that it is no longer the owner; -1: it
	// did not within 30 s; 0 with DuringCut: it did during the cut.
	DeposedMs int64  `json:"deposed_ms"`
	DuringCut bool   `json:"deposed_during_cut,omitempty"`
	Reason    string `json:"reason,omitempty"`
	// RefusedWrites are the writes it refused itself, as no longer the
	// owner, from its isolation until 30 s after its return: a zombie
	// that learned of its deposition (its group session lost) before the
	// log's fencing could void its writes still had them stopped.
	RefusedWrites int `json:"refused_writes,omitempty"`
	from, until   time.Time
}

// clusterWatch follows the instances' logs: who serves, who was deposed
// and why, fencings.
type clusterWatch struct {
	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every event below
	// servingSince is when an instance last logged that it serves; zero
	// when it was deposed, killed or stopped since.
	servingSince []time.Time
	servings     []ownerEvent // "serving" lines, in order
	deposals     []ownerEvent // "no longer the owner" lines, in order
	crashes      []ownerEvent // runs ended at a crash point (reason: the point)
	deposedBy    map[string]int
	fencings     int64
	fenceLines   map[string]int // other fencing lines, by message
	refused      int64          // writes refused as this member is no longer the owner
	refusedAt    [][]time.Time  // when, by instance
}

// init prepares the watch of n instances.
func (w *clusterWatch) init(n int) {
	w.changed = make(chan struct{})
	w.servingSince = make([]time.Time, n)
	w.deposedBy = map[string]int{}
	w.fenceLines = map[string]int{}
	w.refusedAt = make([][]time.Time, n)
}

type ownerEvent struct {
	inst   int
	at     time.Time
	gen    string
	reason string
}

// instances are the Instances eosproxy processes of a cluster-mode run and
// the schedule's bookkeeping of their faults (used by the schedule's
// goroutine only, but for the watch, failovers, and the restarts after
// crash points, which run on goroutines of their own).
type instances struct {
	name           string
	pps            []*proxyProc
	bootstraps     []string
	logPaths       []string
	sessionTimeout time.Duration
	rng            *rand.Rand
	trace          *tracer
	out            io.Writer
	start          time.Time
	w              clusterWatch
	crash          *crashPoints // nil: no crash points

	kills, terms, stops, cuts  int      // faults so far, by kind
	cutFiles                   []string // instance i is cut off from the backend while cutFiles[i] exists
	standbyKills, standbyTerms int
	fmu                        sync.Mutex // guards failovers
	failovers                  []Failover
	zombies                    []ZombieReport
	skippedStops, skippedCuts  int // no owner known to stop or cut
	unknownOwnerFaults         int // faults while no owner was known: victim at random
}

// fencingReason reports whether a deposed owner's reason says another
// owner fenced it (rather than a rebalance revoking its ownership).
func fencingReason(reason string) bool {
	r := strings.ToLower(reason)
	// "read back void": its own write lost to a newer claim in the log.
	return strings.Contains(r, "fenc") || strings.Contains(r, "supersed") || strings.Contains(r, "void")
}

// clusterFencingLine reports whether a line other than a deposition tells
// of a fencing in the cluster: a write or claim refused for a newer
// generation.
func clusterFencingLine(m logLine) bool {
	msg := strings.ToLower(m.Message)
	if strings.HasPrefix(msg, msgDeposedPrefix) || !strings.Contains(msg, "fenc") {
		return false
	}
	// Not a client producer fenced by the coordinator (single mode too).
	return strings.Contains(msg, "claim") || strings.Contains(msg, "generation") ||
		strings.Contains(msg, "owner") || strings.Contains(msg, "cluster")
}

// newCluster prepares (does not start) n instances, each on its own ports,
// data dir and log file, with base the first of n*(brokers+2) free ports.
func newInstances(cfg Config, bin, work, logPath string, brokers, base int, backend []string, rng *rand.Rand, trace *tracer, out io.Writer, start time.Time, crash *crashPoints) (*instances, error) {
	n := cfg.Instances
	c := &instances{name: fmt.Sprintf("eoscheck-%d", cfg.Seed), sessionTimeout: cfg.ClusterSessionTimeout,
		rng: rng, trace: trace, out: out, start: start, crash: crash}
	c.w.init(n)
	for i := range n {
		port := base + i*(brokers+2)
		data := filepath.Join(work, "data-"+strconv.Itoa(i))
		if err := os.MkdirAll(data, 0o755); err != nil {
			return nil, err
		}
		lp := strings.TrimSuffix(logPath, ".log") + "-" + strconv.Itoa(i) + ".log"
		f, err := os.Create(lp)
		if err != nil {
			return nil, err
		}
		logs := newProxyLogs(f)
		logs.cluster = c.watch(i)
		pp := &proxyProc{name: fmt.Sprintf("eosproxy instance %d", i), bin: bin, logs: logs, file: f, args: []string{
			"--log-format", "json", "--log-level", cfg.ProxyLogLevel,
			"--listen", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
			"--broker-ports", fmt.Sprintf("%d-%d", port+1, port+brokers),
			"--admin-listen", net.JoinHostPort("127.0.0.1", strconv.Itoa(port+brokers+1)),
			"--upstream", strings.Join(backend, ","),
			"--data-dir", data,
			"--cluster", c.name,
			"--cluster-session-timeout", cfg.ClusterSessionTimeout.String(),
		}}
		pp.args = append(pp.args, cfg.ProxyArgs...)
		cut := filepath.Join(work, "cut-"+strconv.Itoa(i))
		c.cutFiles = append(c.cutFiles, cut)
		var env []string
		if cfg.InstanceCuts > 0 {
			env = append(env, "EOSPROXY_TEST_BACKEND_CUT_FILE="+cut)
		}
		switch {
		case crash != nil:
			pp.env = func() []string { return append(crash.env(), env...) }
			pp.onCrash = func(run *procRun, point string) { c.crashed(i, run, point) }
		case env != nil:
			pp.env = func() []string { return append(os.Environ(), env...) }
		}
		c.pps = append(c.pps, pp)
		c.logPaths = append(c.logPaths, lp)
	}
	return c, nil
}

// startAll starts every instance, then waits until one serves.
func (c *instances) startAll() error {
	for _, pp := range c.pps {
		addr, err := pp.start()
		if err != nil {
			return err
		}
		c.bootstraps = append(c.bootstraps, addr)
	}
	t0 := time.Now()
	ev, ok := c.waitServing(time.Time{}, -1, c.sessionTimeout+60*time.Second)
	if !ok {
		return fmt.Errorf("cluster %s: no instance logged %q within %v of starting", c.name, msgServing, c.sessionTimeout+60*time.Second)
	}
	c.trace.printf("cluster %s: instance %d serves (generation %s), %v after all were ready", c.name, ev.inst, ev.gen, ev.at.Sub(t0).Round(time.Millisecond))
	return nil
}

// stopAll ends every instance (cleanup) and closes their logs.
func (c *instances) stopAll() {
	for _, pp := range c.pps {
		pp.stop()
		if pp.file != nil {
			pp.file.Close()
		}
	}
}

// watch is instance i's log hook (called with its proxyLogs' mu held).
func (c *instances) watch(i int) func(logLine) {
	return func(m logLine) {
		w := &c.w
		switch {
		case m.Message == msgServing:
			w.mu.Lock()
			now := time.Now()
			w.servingSince[i] = now
			w.servings = append(w.servings, ownerEvent{inst: i, at: now, gen: m.generation()})
		case strings.HasPrefix(m.Message, msgDeposedPrefix):
			w.mu.Lock()
			now := time.Now()
			w.servingSince[i] = time.Time{}
			w.deposals = append(w.deposals, ownerEvent{inst: i, at: now, reason: m.Reason})
			w.deposedBy[reasonKey(m.Reason)]++
			if fencingReason(m.Reason) {
				w.fencings++
			}
		case clusterFencingLine(m) || strings.Contains(m.Error, errFencedText):
			w.mu.Lock()
			w.fenceLines[m.Message]++
			w.fencings++
		case strings.Contains(m.Error, errNotOwnerText):
			w.mu.Lock()
			w.refused++
			w.refusedAt[i] = append(w.refusedAt[i], time.Now())
			w.mu.Unlock()
			return
		default:
			return
		}
		close(w.changed)
		w.changed = make(chan struct{})
		w.mu.Unlock()
	}
}

// reasonIDs are the instance ids and numbers in a reason.
var reasonIDs = regexp.MustCompile(`\b([0-9a-f]{16}|[0-9]+)\b`)

// reasonKey shortens a deposition's reason to its kind (the text before a
// colon), for counting.
func reasonKey(reason string) string {
	if reason == "" {
		return "(none)"
	}
	if i := strings.IndexByte(reason, ':'); i > 0 {
		reason = reason[:i]
	}
	reason = reasonIDs.ReplaceAllString(reason, "N")
	if len(reason) > 80 {
		reason = reason[:80]
	}
	return reason
}

// owner is the instance that serves as far as the logs say (the latest to
// have logged so, if two think they do), or -1.
func (c *instances) owner() int {
	c.w.mu.Lock()
	defer c.w.mu.Unlock()
	o := -1
	for i, t := range c.w.servingSince {
		if !t.IsZero() && (o < 0 || t.After(c.w.servingSince[o])) {
			o = i
		}
	}
	return o
}

// down records that instance i no longer serves (killed, stopped).
func (c *instances) down(i int) {
	c.w.mu.Lock()
	c.w.servingSince[i] = time.Time{}
	c.w.mu.Unlock()
}

// crashed handles a run of instance i that ended at a crash point (on
// its own goroutine): counted, started again at once unless eoscheck
// dealt with its end already, and, when it was the owner, the takeover
// timed as after a kill.
func (c *instances) crashed(i int, run *procRun, point string) {
	c.w.mu.Lock()
	wasOwner := !c.w.servingSince[i].IsZero()
	c.w.servingSince[i] = time.Time{}
	c.w.crashes = append(c.w.crashes, ownerEvent{inst: i, at: run.exitedAt, reason: "ended at crash point " + point})
	close(c.w.changed)
	c.w.changed = make(chan struct{})
	c.w.mu.Unlock()
	c.crash.record(i, point, wasOwner, run.exitedAt)
	restarted, err := c.pps[i].restartAfterCrash(run)
	if err != nil {
		c.crash.fail(i, err)
		return
	}
	if restarted && wasOwner {
		c.takeover(run.exitedAt, i, i, "crash", point)
	}
}

// waitServing waits up to bound for a "serving" line logged after t0 by an
// instance other than exclude.
func (c *instances) waitServing(t0 time.Time, exclude int, bound time.Duration) (ownerEvent, bool) {
	return c.waitEvent(bound, func() (ownerEvent, bool) {
		for _, e := range c.w.servings {
			if e.at.After(t0) && e.inst != exclude {
				return e, true
			}
		}
		return ownerEvent{}, false
	})
}

// waitDeposed waits up to bound for instance i to log, after t0, that it no
// longer owns the cluster, or to end at a crash point (it is gone then).
func (c *instances) waitDeposed(t0 time.Time, i int, bound time.Duration) (ownerEvent, bool) {
	return c.waitEvent(bound, func() (ownerEvent, bool) {
		for _, e := range c.w.deposals {
			if e.at.After(t0) && e.inst == i {
				return e, true
			}
		}
		for _, e := range c.w.crashes {
			if e.at.After(t0) && e.inst == i {
				return e, true
			}
		}
		return ownerEvent{}, false
	})
}

// waitEvent waits up to bound until find (called with the watch's mu
// held) finds its event.
func (c *instances) waitEvent(bound time.Duration, find func() (ownerEvent, bool)) (ownerEvent, bool) {
	timer := time.NewTimer(bound)
	defer timer.Stop()
	for {
		c.w.mu.Lock()
		e, ok := find()
		changed := c.w.changed
		c.w.mu.Unlock()
		if ok {
			return e, true
		}
		select {
		case <-changed:
		case <-timer.C:
			return ownerEvent{}, false
		}
	}
}

// pick chooses the victim of the n-th fault of its kind: the owner, but
// every third fault a standby chosen at random (unless owner is required,
// as for a restart timed to a commit, which the owner serves).
func (c *instances) pick(n int, ownerRequired bool) (victim int, wasOwner bool) {
	asked := time.Now()
	o := c.owner()
	if o < 0 && c.crash != nil {
		// Most likely the owner just ended at a crash point and is being
		// taken over from (often, with crash points): aim at the next.
		if _, ok := c.waitServing(asked, -1, c.sessionTimeout+30*time.Second); ok {
			o = c.owner()
		}
	}
	if o < 0 {
		c.unknownOwnerFaults++
		return c.rng.IntN(len(c.pps)), false
	}
	if ownerRequired || n%3 != 2 {
		return o, true
	}
	v := c.rng.IntN(len(c.pps) - 1)
	if v >= o {
		v++ // any instance but the owner
	}
	return v, false
}

// fault stops an instance, with SIGTERM when clean (a clean handover) or
// SIGKILL, starts it again at once on its data dir and ports, and, when it
// was the owner, waits until an instance serves again, recording the
// failover. unclean is proxyProc.term's.
func (c *instances) fault(clean, atCommit bool) (unclean string, err error) {
	n, how := c.kills, "kill"
	if clean {
		n, how = c.terms, "term"
	}
	v, wasOwner := c.pick(n, atCommit)
	pp := c.pps[v]
	t0 := time.Now()
	if clean {
		c.terms++
		unclean, err = pp.term()
	} else {
		c.kills++
		err = pp.kill()
	}
	if err != nil {
		return "", err
	}
	exited := time.Since(t0)
	c.down(v)
	role := "standby"
	if wasOwner {
		role = "owner"
	} else if clean {
		c.standbyTerms++
	} else {
		c.standbyKills++
	}
	c.trace.printf("cluster: instance %d (%s) %s", v, role, map[string]string{"kill": "SIGKILLed", "term": "stopped with SIGTERM"}[how])
	if _, err := pp.start(); err != nil {
		return unclean, err
	}
	if wasOwner {
		f := c.takeover(t0, v, v, how, "")
		if clean {
			c.fmu.Lock()
			c.failovers[f].ExitedMs = exited.Milliseconds()
			c.fmu.Unlock()
		}
	}
	return unclean, nil
}

// takeover waits until an instance other than exclude serves after t0,
// for up to the session timeout + 30 s, and records the failover (its
// index in failovers).
func (c *instances) takeover(t0 time.Time, victim, exclude int, how, point string) int {
	f := Failover{At: t0.Sub(c.start).Seconds(), Victim: victim, How: how, Point: point, TookMs: -1, NewOwner: -1}
	if how == "kill" || how == "term" || how == "crash" {
		exclude = -1 // the victim's next run may take over
	}
	bound := c.sessionTimeout + 30*time.Second
	if e, ok := c.waitServing(t0, exclude, bound); ok {
		f.TookMs, f.NewOwner, f.Generation = e.at.Sub(t0).Milliseconds(), e.inst, e.gen
		c.trace.printf("cluster: instance %d serves (generation %s) %v after the %s of instance %d", e.inst, e.gen, e.at.Sub(t0).Round(time.Millisecond), how, victim)
		fmt.Fprintf(c.out, "failover: %s of owner %d, instance %d serves after %v\n", how, victim, e.inst, e.at.Sub(t0).Round(time.Millisecond))
	} else {
		c.trace.printf("cluster: no instance serves %v after the %s of instance %d", bound, how, victim)
		fmt.Fprintf(c.out, "failover: %s of owner %d, no instance serves after %v\n", how, victim, bound)
	}
	c.fmu.Lock()
	defer c.fmu.Unlock()
	c.failovers = append(c.failovers, f)
	return len(c.failovers) - 1
}

// isolateOwner takes the owner away from the cluster without ending it:
// how "stop" SIGSTOPs it, "cut" cuts it off from the backend while its
// clients still reach it (its cut file, upstream.Cut). The isolation lasts
// until another instance serves and for at least the session timeout + 1
// s (a cut: + 5 s, and the owner must notice the cut by itself meanwhile:
// the deposition frees its clients); then the owner is SIGCONTed or reconnected, and isolateOwner waits up
// to 30 s for it to log that it no longer owns the cluster (a zombie,
// fenced by its successor's higher generation). A cut owner may notice
// and log it during the cut already (its group session lost).
//
// With copiers (cw), the isolation waits up to 5 s for one of them to ask
// to commit and comes a moment after: the owner is then likely mid-write,
// so that the zombie has late writes for the fence to void.
func (c *instances) isolateOwner(ctx context.Context, cw *copyWork, how string) error {
	n := &c.stops
	if how == "cut" {
		n = &c.cuts
	}
	*n++
	if cw != nil {
		select {
		case <-cw.commitHook: // stale: of an earlier arming
		default:
		}
		cw.commitHookArmed.Store(true)
		select {
		case <-cw.commitHook:
			// A commit takes a few ms through the owner.
			time.Sleep(time.Duration(c.rng.Int64N(int64(3 * time.Millisecond))))
		case <-time.After(5 * time.Second):
		case <-ctx.Done():
		}
		cw.commitHookArmed.Store(false)
	}
	var o int
	var pp *proxyProc
	var t0 time.Time
	for attempt := 1; ; attempt++ {
		asked := time.Now()
		if o = c.owner(); o < 0 && c.crash != nil {
			// Most likely the owner just ended at a crash point and is
			// being taken over from: isolate the next one.
			if _, ok := c.waitServing(asked, -1, c.sessionTimeout+30*time.Second); ok {
				o = c.owner()
			}
		}
		if o < 0 {
			if how == "cut" {
				c.skippedCuts++
			} else {
				c.skippedStops++
			}
			c.trace.printf("cluster: no owner known: %s %d skipped", how, *n)
			return nil
		}
		pp = c.pps[o]
		t0 = time.Now()
		var err error
		if how == "cut" {
			err = os.WriteFile(c.cutFiles[o], nil, 0o644)
		} else {
			err = pp.signal(syscall.SIGSTOP)
		}
		if err == nil {
			break
		}
		if !errors.Is(err, errCrashed) || attempt == 3 {
			return err
		}
		// It ended at a crash point a moment ago: isolate the next owner.
		c.trace.printf("cluster: owner %d to isolate: %v; waiting for the next", o, err)
		c.waitServing(t0, -1, c.sessionTimeout+30*time.Second)
	}
	c.down(o)
	c.trace.printf("cluster: owner %d isolated (%s %d)", o, how, *n)
	c.takeover(t0, o, o, how, "")
	hold := c.sessionTimeout + time.Second
	if how == "cut" {
		// Long enough for it to notice by itself that the backend no
		// longer hears from it (its watchdog: the session timeout and a
		// fetch) and let its clients go.
		hold = c.sessionTimeout + 5*time.Second
	}
	if d := hold - time.Since(t0); d > 0 {
		select {
		case <-time.After(d):
		case <-ctx.Done():
		}
	}
	t1 := time.Now()
	// Ended even when the run is cancelled: an isolated instance would
	// hang the others' clients.
	var err error
	if how == "cut" {
		err = os.Remove(c.cutFiles[o])
	} else {
		err = pp.signal(syscall.SIGCONT)
	}
	if err != nil {
		return err
	}
	end := map[string]string{"stop": "SIGCONT", "cut": "the end of its cut"}[how]
	c.trace.printf("cluster: instance %d back after %v (%s)", o, t1.Sub(t0).Round(time.Millisecond), end)
	z := ZombieReport{Instance: o, How: how, DeposedMs: -1, from: t0, until: t1.Add(30 * time.Second)}
	from := t1
	if how == "cut" {
		from = t0 // it may learn of its deposition during the cut
	}
	if e, ok := c.waitDeposed(from, o, t1.Sub(from)+30*time.Second); ok {
		z.DeposedMs, z.Reason = e.at.Sub(t1).Milliseconds(), e.reason
		if z.DeposedMs < 0 {
			z.DeposedMs, z.DuringCut = 0, true
		}
		c.trace.printf("cluster: zombie %d deposed %v after %s: %s", o, e.at.Sub(t1).Round(time.Millisecond), end, e.reason)
		fmt.Fprintf(c.out, "zombie: instance %d deposed %v after %s (%s)\n", o, e.at.Sub(t1).Round(time.Millisecond), end, e.reason)
	} else {
		c.trace.printf("cluster: zombie %d logged no deposition within 30 s of %s", o, end)
		fmt.Fprintf(c.out, "zombie: instance %d logged no deposition within 30 s of %s\n", o, end)
	}
	c.zombies = append(c.zombies, z)
	return nil
}

// report fills the cluster's part of the report and its pass conditions:
// failover p99 ≤ session timeout + 5 s, a clean handover ≤ 3 s, every
// zombie deposed, fencings seen when an owner was stopped.
func (c *instances) report(rep *Report, cfg Config) {
	// fencings: depositions for a fencing, other fencing lines, and the
	// late writes of deposed owners the cluster's log holds as void.
	rep.Instances = len(c.pps)
	rep.ClusterName = c.name
	rep.SessionTimeoutMs = c.sessionTimeout.Milliseconds()
	c.fmu.Lock()
	rep.Failovers = slices.Clone(c.failovers)
	c.fmu.Unlock()
	rep.Zombies = slices.Clone(c.zombies)
	rep.InstanceStops = c.stops - c.skippedStops
	rep.InstanceCuts = c.cuts - c.skippedCuts
	rep.StandbyKills, rep.StandbyTerms = c.standbyKills, c.standbyTerms
	rep.UnknownOwnerFaults = c.unknownOwnerFaults
	c.w.mu.Lock()
	rep.Fencings = c.w.fencings
	rep.DeposedByReason = maps.Clone(c.w.deposedBy)
	rep.FencingLines = maps.Clone(c.w.fenceLines)
	rep.Takeovers = len(c.w.servings)
	rep.WritesRefused = c.w.refused
	for i := range rep.Zombies {
		z := &rep.Zombies[i]
		if z.Instance < len(c.w.refusedAt) {
			for _, at := range c.w.refusedAt[z.Instance] {
				if !at.Before(z.from) && at.Before(z.until) {
					z.RefusedWrites++
				}
			}
		}
	}
	c.w.mu.Unlock()
	if a := rep.ClusterLog; a != nil {
		rep.Fencings += int64(a.Superseded)
	}
	bound := c.sessionTimeout + 30*time.Second
	var took []int64
	rep.CleanHandoverMaxMs = -1
	for _, f := range rep.Failovers {
		ms := f.TookMs
		if ms < 0 {
			ms = bound.Milliseconds()
			rep.ClusterFailures = append(rep.ClusterFailures, fmt.Sprintf("no instance served within %v of the %s of owner %d at %.1fs", bound, f.How, f.Victim, f.At))
		}
		if f.How == "term" {
			rep.CleanHandoverMaxMs = max(rep.CleanHandoverMaxMs, ms)
			continue
		}
		took = append(took, ms)
	}
	rep.FailoverP99Ms = -1
	if len(took) > 0 {
		slices.Sort(took)
		rep.FailoverP99Ms = took[(len(took)*99+99)/100-1]
	}
	limit := c.sessionTimeout + 5*time.Second
	if rep.FailoverP99Ms > limit.Milliseconds() {
		rep.ClusterFailures = append(rep.ClusterFailures, fmt.Sprintf("failover p99 %v > session timeout %v + 5 s", time.Duration(rep.FailoverP99Ms)*time.Millisecond, c.sessionTimeout))
	}
	if rep.CleanHandoverMaxMs > 3000 {
		rep.ClusterFailures = append(rep.ClusterFailures, fmt.Sprintf("clean handover took %v > 3 s", time.Duration(rep.CleanHandoverMaxMs)*time.Millisecond))
	}
	for _, z := range c.zombies {
		if z.How == "cut" && !z.DuringCut {
			rep.ClusterFailures = append(rep.ClusterFailures, fmt.Sprintf("owner %d, cut off from the backend, did not notice within session timeout + 5 s (its clients stay held until the cut ends)", z.Instance))
		}
		if z.DeposedMs < 0 {
			rep.ClusterFailures = append(rep.ClusterFailures, fmt.Sprintf("the isolated (%s) owner %d logged no %q within 30 s of its return", z.How, z.Instance, msgDeposedPrefix))
		}
	}
	// Fencing is exercised when the log voided a zombie's writes or a
	// fencing was logged, or when a stopped zombie, having learned of its
	// deposition first (against Kafka its group session's loss often
	// comes back before the log's newer claim), refused writes itself.
	refusedByZombie := false
	for _, z := range rep.Zombies {
		refusedByZombie = refusedByZombie || (z.How == "stop" && z.RefusedWrites > 0)
	}
	if rep.InstanceStops > 0 && rep.Fencings == 0 && !refusedByZombie {
		rep.ClusterFailures = append(rep.ClusterFailures, fmt.Sprintf("%d owners stopped past the session timeout, but no fencing was logged and no zombie refused a write: fencing not exercised", rep.InstanceStops))
	}
	if cfg.InstanceStops > 0 && rep.InstanceStops == 0 {
		rep.ClusterFailures = append(rep.ClusterFailures, "no owner was known when an instance stop was due: none stopped")
	}
	if cfg.InstanceCuts > 0 && rep.InstanceCuts == 0 {
		rep.ClusterFailures = append(rep.ClusterFailures, "no owner was known when a cut was due: none cut off")
	}
}

// auditLog reads the cluster's log from the backend and replays it as its
// readers do (cluster.AuditLog): the deposed owners' late writes that the
// fence voided.
func (c *instances) auditLog(ctx context.Context, backend []string, opts ...kgo.Opt) (*cluster.Audit, error) {
	topic := "__eosproxy_" + c.name + "_log"
	cl, err := kgo.NewClient(append(opts, kgo.SeedBrokers(backend...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().AtStart()}}))...)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("cluster log %s: end offset: %w", topic, err)
	}
	end, ok := ends.Lookup(topic, 0)
	if !ok || end.Err != nil {
		return nil, fmt.Errorf("cluster log %s: end offset: %v", topic, end.Err)
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var recs []*kgo.Record
	for len(recs) == 0 || recs[len(recs)-1].Offset < end.Offset-1 {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("cluster log %s: read %d records, the end is at %d: %w", topic, len(recs), end.Offset, err)
		}
		fs.EachError(func(_ string, _ int32, err error) {
			if err != nil {
				c.trace.printf("cluster log %s: fetch: %v", topic, err)
			}
		})
		recs = append(recs, fs.Records()...)
		if end.Offset == 0 {
			break
		}
	}
	a := cluster.AuditLog(recs)
	return &a, nil
}

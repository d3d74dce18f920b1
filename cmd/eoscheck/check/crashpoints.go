package check

// Crash points (issue 13): with Config.CrashPoints, every eosproxy run is
// started with EOSPROXY_TEST_CRASH (a seed of its own per run), so that it
// SIGKILLs itself, now and then, at the named instants kills from outside
// rarely hit: a commit's decision logged, a commit half forwarded, a set of
// the cluster's log sent and not yet confirmed, or confirmed and not yet
// answered. eoscheck notices such an end (the run's last line names the
// point), starts the instance again at once on the same data dir and ports
// and, when it was the cluster's owner, times the takeover as for its own
// kills. The run fails unless every point armed was hit at least once.

import (
	"fmt"
	"io"
	"maps"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/eosproxy/eosproxy/cluster"
	"github.com/eosproxy/eosproxy/txnstate"
)

// The environment eosproxy reads its crash points from.
const (
	envTestCrash     = "EOSPROXY_TEST_CRASH"
	envTestCrashSeed = "EOSPROXY_TEST_CRASH_SEED"
)

// defaultCrashPoints ("all") are the probabilities per time a point is
// reached, chosen for runs such as `--instances 3 --records 20000 --rate
// 300 --copiers 2`: each point then fires within seconds to tens of
// seconds of an owner's life. The sets of the cluster's log are written
// for almost every request, decisions once per transaction, and a
// commit's half-forwarded instants a few times per commit.
var defaultCrashPoints = map[string]float64{
	txnstate.CrashDecisionLogged: 0.03,
	txnstate.CrashHalfForwarded:  0.02,
	cluster.CrashSetSent:         0.002,
	cluster.CrashSetAcked:        0.002,
}

// crashEscalation: a point not yet hit is armed in new runs with its
// probability doubled for every this long the check has run, so that a
// workload that reaches it rarely (--backend-idempotence writes fewer sets)
// still has it exercised.
const crashEscalation = 15 * time.Second

// clusterOnlyCrashPoints are reached in cluster mode only.
var clusterOnlyCrashPoints = []string{cluster.CrashSetSent, cluster.CrashSetAcked}

// parseCrashSpec parses Config.CrashPoints: "all" (the defaults for the
// mode) or point=probability[,...].
func parseCrashSpec(spec string, instances int) (map[string]float64, error) {
	spec = strings.TrimSpace(spec)
	if spec == "" {
		return nil, nil
	}
	out := map[string]float64{}
	if spec == "all" {
		for p, v := range defaultCrashPoints {
			if instances > 1 || !slices.Contains(clusterOnlyCrashPoints, p) {
				out[p] = v
			}
		}
		return out, nil
	}
	for _, part := range strings.Split(spec, ",") {
		name, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		name = strings.TrimSpace(name)
		if _, known := defaultCrashPoints[name]; !known {
			return nil, fmt.Errorf("crash points %q: unknown point %q (known: %s)", spec, name, strings.Join(slices.Sorted(maps.Keys(defaultCrashPoints)), ", "))
		}
		p := defaultCrashPoints[name]
		if ok {
			var err error
			if p, err = strconv.ParseFloat(strings.TrimSpace(v), 64); err != nil || p <= 0 || p > 1 {
				return nil, fmt.Errorf("crash points %q: probability of %s: want a number above 0, at most 1", spec, name)
			}
		}
		if instances < 2 && slices.Contains(clusterOnlyCrashPoints, name) {
			return nil, fmt.Errorf("crash point %s is reached in cluster mode only (--instances 2 or more)", name)
		}
		out[name] = p
	}
	return out, nil
}

// CrashEvent is one eosproxy run that ended at a crash point.
type CrashEvent struct {
	At       float64 `json:"at"` // seconds since the run started
	Instance int     `json:"instance"`
	Point    string  `json:"point"`
	Owner    bool    `json:"owner,omitempty"` // it served (cluster mode: was the owner)
}

// crashPoints arms eosproxy's runs and records their crashes.
type crashPoints struct {
	spec  map[string]float64
	max   int // crashes per point, after which new runs no longer arm it
	start time.Time
	trace *tracer
	out   io.Writer

	mu      sync.Mutex
	rng     *rand.Rand // seeds of the runs
	byPoint map[string]int
	events  []CrashEvent
	errs    []string
}

func newCrashPoints(cfg Config, start time.Time, trace *tracer, out io.Writer) (*crashPoints, error) {
	spec, err := parseCrashSpec(cfg.CrashPoints, cfg.Instances)
	if err != nil || spec == nil {
		return nil, err
	}
	return &crashPoints{spec: spec, max: cfg.CrashPointMax, start: start, trace: trace, out: out,
		rng: rand.New(rand.NewPCG(cfg.Seed^0xc4a5, cfg.Seed>>3|1)), byPoint: map[string]int{}}, nil
}

// env is a new run's environment: this process's, with the points not yet
// hit max times armed (escalated, if not hit yet), and a seed of the
// run's own.
func (cp *crashPoints) env() []string {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, envTestCrash+"=") && !strings.HasPrefix(kv, envTestCrashSeed+"=") {
			env = append(env, kv)
		}
	}
	var parts []string
	boost := math.Exp2(math.Floor(float64(time.Since(cp.start)) / float64(crashEscalation)))
	for _, p := range slices.Sorted(maps.Keys(cp.spec)) {
		prob := cp.spec[p]
		if cp.byPoint[p] == 0 {
			prob = min(1, prob*boost)
		}
		if cp.max <= 0 || cp.byPoint[p] < cp.max {
			parts = append(parts, fmt.Sprintf("%s=%g", p, prob))
		}
	}
	if len(parts) == 0 {
		return env
	}
	return append(env, envTestCrash+"="+strings.Join(parts, ","), envTestCrashSeed+"="+strconv.FormatUint(cp.rng.Uint64(), 10))
}

// record counts a run of instance inst that ended at point.
func (cp *crashPoints) record(inst int, point string, owner bool, at time.Time) {
	cp.mu.Lock()
	cp.byPoint[point]++
	cp.events = append(cp.events, CrashEvent{At: at.Sub(cp.start).Seconds(), Instance: inst, Point: point, Owner: owner})
	cp.mu.Unlock()
	role := ""
	if owner {
		role = " (owner)"
	}
	cp.trace.printf("crash point: eosproxy instance %d%s ended at %s; starting it again", inst, role, point)
	fmt.Fprintf(cp.out, "crash point: instance %d%s SIGKILLed itself at %s\n", inst, role, point)
}

// fail records that a crashed run could not be started again.
func (cp *crashPoints) fail(inst int, err error) {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	cp.errs = append(cp.errs, fmt.Sprintf("instance %d: restart after a crash point: %v", inst, err))
	cp.trace.printf("crash point: instance %d not started again: %v", inst, err)
}

// report fills the crash points' part of the report and its pass
// condition: every point armed was hit.
func (cp *crashPoints) report(rep *Report) {
	if cp == nil {
		return
	}
	cp.mu.Lock()
	defer cp.mu.Unlock()
	rep.CrashPointsArmed = maps.Clone(cp.spec)
	rep.CrashPoints = map[string]int{}
	for p := range cp.spec {
		rep.CrashPoints[p] = cp.byPoint[p]
	}
	rep.CrashEvents = slices.Clone(cp.events)
	rep.CrashPointFailures = slices.Clone(cp.errs)
	for _, p := range slices.Sorted(maps.Keys(cp.spec)) {
		if cp.byPoint[p] == 0 {
			rep.CrashPointFailures = append(rep.CrashPointFailures, fmt.Sprintf("crash point %s not exercised: no eosproxy run ended there", p))
		}
	}
}

// printCrashPoints prints the crash points' rows.
func printCrashPoints(w io.Writer, r *Report) {
	if r.CrashPoints == nil {
		return
	}
	fmt.Fprintf(w, "%-44s %10s\n", "crash points (eosproxy SIGKILLed itself at)", "")
	for _, p := range slices.Sorted(maps.Keys(r.CrashPoints)) {
		fmt.Fprintf(w, "%-44s %10d\n", fmt.Sprintf("  %s (p=%g)", p, r.CrashPointsArmed[p]), r.CrashPoints[p])
	}
}

package check

import (
	"context"
	"encoding/json"
	"io"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The cluster's watch must follow ownership from the instances' log lines
// (the latest serving instance not deposed since), count fencings, and the
// report must fail the pass conditions it does not meet.
func TestClusterWatchAndConditions(t *testing.T) {
	c := &instances{name: "x", pps: make([]*proxyProc, 3), sessionTimeout: 6 * time.Second,
		rng: rand.New(rand.NewPCG(1, 2)), trace: newTracer(io.Discard, time.Now()), out: io.Discard, start: time.Now()}
	c.w.init(3)
	feed := func(i int, js string) {
		l := newProxyLogs(nil)
		l.cluster = c.watch(i)
		l.Write([]byte(js + "\n"))
	}
	if o := c.owner(); o != -1 {
		t.Fatalf("owner %d before any line", o)
	}
	feed(0, `{"level":"info","message":"eosproxy ready","bootstrap":"a"}`)
	feed(1, `{"level":"info","message":"owner of the cluster: serving","generation":3}`)
	if o := c.owner(); o != 1 {
		t.Fatalf("owner %d, want 1", o)
	}
	t0 := time.Now()
	feed(2, `{"level":"info","message":"owner of the cluster: serving","generation":"4"}`)
	feed(1, `{"level":"warn","message":"no longer the cluster's owner: stopping and rebuilding from the cluster's log","reason":"fenced: claim of generation 4"}`)
	feed(0, `{"level":"info","message":"no longer the cluster's owner: stopping and rebuilding from the cluster's log","reason":"revoked"}`)
	feed(0, `{"level":"warn","message":"log write fenced by a newer claim"}`)
	feed(0, `{"level":"info","message":"transaction timed out: aborting it and fencing its producer"}`) // no cluster fencing
	if o := c.owner(); o != 2 {
		t.Fatalf("owner %d, want 2", o)
	}
	if e, ok := c.waitServing(t0, 1, time.Second); !ok || e.inst != 2 || e.gen != "4" {
		t.Fatalf("waitServing: %+v %v", e, ok)
	}
	if _, ok := c.waitServing(time.Now(), -1, 10*time.Millisecond); ok {
		t.Fatal("waitServing found a line logged before t0")
	}
	// Standby every third fault of a kind.
	for n, wantOwner := range []bool{true, true, false, true} {
		v, owner := c.pick(n, false)
		if owner != wantOwner || (owner && v != 2) || (!owner && v == 2) {
			t.Fatalf("fault %d: victim %d owner %v", n, v, owner)
		}
	}

	c.failovers = []Failover{{How: "kill", TookMs: 7000}, {How: "stop", TookMs: 12000}, {How: "term", TookMs: 3500}}
	c.stops = 1
	c.zombies = []ZombieReport{{Instance: 1, How: "stop", DeposedMs: -1}, {Instance: 2, How: "cut", DeposedMs: 200}}
	rep := &Report{}
	c.report(rep, Config{InstanceStops: 1})
	if k := reasonKey("fenced by the claim of 45e604e45dd9eeea (generation 4)"); k != "fenced by the claim of N (generation N)" {
		t.Errorf("reason key %q", k)
	}
	if rep.Fencings != 2 || rep.DeposedByReason["fenced"] != 1 || rep.DeposedByReason["revoked"] != 1 || rep.FailoverP99Ms != 12000 || rep.CleanHandoverMaxMs != 3500 {
		t.Fatalf("report: %+v", rep)
	}
	got := strings.Join(rep.ClusterFailures, "\n")
	for _, want := range []string{"failover p99 12s > session timeout 6s + 5 s", "clean handover took 3.5s > 3 s", "the isolated (stop) owner 1 logged no",
		"owner 2, cut off from the backend, did not notice"} {
		if !strings.Contains(got, want) {
			t.Errorf("failures lack %q:\n%s", want, got)
		}
	}
	if rep.Valid() {
		t.Fatal("valid despite cluster failures")
	}

	c.failovers = []Failover{{How: "kill", TookMs: 7000}, {How: "term", TookMs: 900}}
	c.zombies = []ZombieReport{{Instance: 1, How: "stop", DeposedMs: 300}, {Instance: 2, How: "cut", DuringCut: true}}
	rep = &Report{}
	c.report(rep, Config{InstanceStops: 1})
	if !rep.Valid() {
		t.Fatalf("not valid: %v", rep.ClusterFailures)
	}
	c.w.fencings = 0
	rep = &Report{}
	c.report(rep, Config{InstanceStops: 1})
	if rep.Valid() || !strings.Contains(strings.Join(rep.ClusterFailures, ""), "fencing not exercised") {
		t.Fatalf("no fencing after a stop: %v", rep.ClusterFailures)
	}
	// A zombie that refused its own writes, having learned of its
	// deposition first, exercised fencing too.
	back := time.Now()
	c.zombies[0].from, c.zombies[0].until = back.Add(-7*time.Second), back.Add(30*time.Second)
	feed(1, `{"level":"warn","message":"cannot settle producer state; asking the client to retry","error":"persist producer state: `+errNotOwnerText+`"}`)
	rep = &Report{}
	c.report(rep, Config{InstanceStops: 1})
	if !rep.Valid() || rep.Zombies[0].RefusedWrites != 1 {
		t.Fatalf("a zombie's own refusals: valid %v, %+v, %v", rep.Valid(), rep.Zombies, rep.ClusterFailures)
	}
}

// eoscheck --instances 3 in process against kfake (CI tier, short): three
// eosproxy instances as one cluster, the owner SIGKILLed twice, a standby
// once, the owner stopped with SIGTERM once (a clean handover) and
// SIGSTOPped twice past the session timeout (zombies, to be fenced), cut
// off from the backend once (a zombie whose process and clients carry on;
// it must notice by itself and let its clients go), with
// idempotent producers, transactional copiers (aborts, a replacement
// mid-transaction) and a read_committed reader seeded with all three.
// It proves: no anomaly (the verdict of every eoscheck run), each owner
// fault was followed by a takeover within the pass conditions (failover
// p99 <= session timeout + 5 s, clean handover <= 3 s), and the zombie was
// deposed with a fencing logged, the cut one during its cut.
func TestEoscheckInstances(t *testing.T) {
	if testing.Short() {
		t.Skip("eoscheck --instances 3 takes ~60 s")
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("EOSPROXY_FAULT_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("EOSPROXY_FAULT_SEED=%q: %v", s, err)
		}
		seed = v
	}
	t.Logf("fault seed %d (repeat with EOSPROXY_FAULT_SEED=%d)", seed, seed)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	work, err := os.MkdirTemp("", "eoscheck-instances-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("kept %s (eosproxy-N.log, trace.log)", work)
			return
		}
		os.RemoveAll(work)
	})
	var progress strings.Builder
	rep, err := Run(ctx, Config{
		Instances:      3,
		InstanceStops:  2, // two zombies: one may find itself deposed before it writes
		InstanceCuts:   1,
		Kills:          4, // the first a SIGTERM of the owner, then the owner, the owner, a standby
		CleanRestarts:  1,
		Producers:      2,
		Partitions:     3,
		Records:        4000,
		Rate:           200, // producing across the stops: zombies with writes in flight
		Seed:           seed,
		WorkDir:        work,
		Progress:       &progress,
		Copiers:        2,
		AbortRate:      0.1,
		CopierRestarts: 1,
		Readers:        1,
		CopyTimeout:    time.Minute,
		// Every crash point at probability 1, each armed until hit once:
		// the first runs end at them one after the other (a set sent, a
		// set confirmed, a commit decided, a commit half forwarded, which
		// its successor then finishes), whatever the seed.
		CrashPoints:   "decision-logged=1,half-forwarded=1,set-sent=1,set-acked=1",
		CrashPointMax: 1,
	})
	t.Logf("eoscheck output:\n%s", progress.String())
	if err != nil {
		t.Fatalf("eoscheck could not run: %v", err)
	}
	if b, err := json.MarshalIndent(rep, "", "  "); err == nil {
		t.Logf("report:\n%s", b)
	}
	how := map[string]int{}
	for _, f := range rep.Failovers {
		if f.TookMs >= 0 {
			how[f.How]++
		}
	}
	if how["kill"] == 0 || how["term"] == 0 || how["stop"] != 2 || how["cut"] != 1 {
		t.Errorf("failovers taken over, by fault: %v; want owner kills, a clean handover, two stops and a cut", how)
	}
	if rep.InstanceCuts != 1 {
		t.Errorf("%d owners cut off, want 1", rep.InstanceCuts)
	}
	// A zombie's writes are fenced by the log (void there) or, since the
	// owner's lease, refused by the zombie itself before they are sent.
	refused := 0
	for _, z := range rep.Zombies {
		refused += z.RefusedWrites
	}
	if rep.InstanceStops != 2 || rep.Fencings == 0 && refused == 0 {
		t.Errorf("%d owners stopped, %d fencings logged, %d writes refused by zombies: fencing not exercised", rep.InstanceStops, rep.Fencings, refused)
	}
	if rep.Instances != 3 || rep.Restarts < 4 || rep.Sent != 4000 {
		t.Errorf("%d instances, %d restarts, %d records sent", rep.Instances, rep.Restarts, rep.Sent)
	}
	for _, p := range []string{"decision-logged", "half-forwarded", "set-sent", "set-acked"} {
		if rep.CrashPoints[p] == 0 {
			t.Errorf("crash point %s not hit: %v", p, rep.CrashPoints)
		}
	}
	if !rep.Valid() {
		t.Errorf("%d anomalies (seed %d; logs %s), cluster failures %v, crash point failures %v; examples:\n%s\neosproxy warnings and errors: %v",
			rep.Anomalies, rep.Seed, rep.LogFile, rep.ClusterFailures, rep.CrashPointFailures, strings.Join(rep.Examples, "\n"), rep.ProxyLog)
	}
}

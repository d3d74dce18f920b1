package check

import (
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// The cluster's watch must follow ownership from the instances' log lines
// (the latest serving instance not deposed since), count fencings, and the
// report must fail the pass conditions it does not meet.
func TestClusterWatchAndConditions(t *testing.T) {
	c := &cluster{name: "x", pps: make([]*proxyProc, 3), sessionTimeout: 6 * time.Second,
		rng: rand.New(rand.NewPCG(1, 2)), trace: newTracer(io.Discard, time.Now()), out: io.Discard, start: time.Now()}
	c.w.changed = make(chan struct{})
	c.w.servingSince = make([]time.Time, 3)
	c.w.deposedBy = map[string]int{}
	c.w.fenceLines = map[string]int{}
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
	c.zombies = []ZombieReport{{Instance: 1, DeposedMs: -1}}
	rep := &Report{}
	c.report(rep, Config{InstanceStops: 1})
	if rep.Fencings != 2 || rep.DeposedByReason["fenced"] != 1 || rep.DeposedByReason["revoked"] != 1 || rep.FailoverP99Ms != 12000 || rep.CleanHandoverMaxMs != 3500 {
		t.Fatalf("report: %+v", rep)
	}
	got := strings.Join(rep.ClusterFailures, "\n")
	for _, want := range []string{"failover p99 12s > session timeout 6s + 5 s", "clean handover took 3.5s > 3 s", "the stopped owner 1 logged no"} {
		if !strings.Contains(got, want) {
			t.Errorf("failures lack %q:\n%s", want, got)
		}
	}
	if rep.Valid() {
		t.Fatal("valid despite cluster failures")
	}

	c.failovers = []Failover{{How: "kill", TookMs: 7000}, {How: "term", TookMs: 900}}
	c.zombies = []ZombieReport{{Instance: 1, DeposedMs: 300}}
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
}

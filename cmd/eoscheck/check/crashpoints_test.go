package check

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestParseCrashSpec(t *testing.T) {
	all, err := parseCrashSpec("all", 3)
	if err != nil || len(all) != 4 {
		t.Fatalf("all, cluster: %v, %v; want the 4 points", all, err)
	}
	single, err := parseCrashSpec("all", 1)
	if err != nil || len(single) != 2 || single["decision-logged"] == 0 || single["half-forwarded"] == 0 {
		t.Fatalf("all, single instance: %v, %v; want decision-logged and half-forwarded", single, err)
	}
	got, err := parseCrashSpec("set-sent=0.5, decision-logged", 3)
	if err != nil || got["set-sent"] != 0.5 || got["decision-logged"] != defaultCrashPoints["decision-logged"] || len(got) != 2 {
		t.Fatalf("got %v, %v", got, err)
	}
	if got, err := parseCrashSpec("", 3); got != nil || err != nil {
		t.Fatalf("empty: %v, %v", got, err)
	}
	for _, bad := range []string{"staged=0.1", "set-sent=0", "set-sent=2", "set-sent=x"} {
		if _, err := parseCrashSpec(bad, 3); err == nil {
			t.Errorf("%q: want an error", bad)
		}
	}
	if _, err := parseCrashSpec("set-acked=0.1", 1); err == nil {
		t.Error("set-acked with one instance: want an error (cluster mode only)")
	}
}

// TestCrashPointsEnv: a point is armed in new runs until it was hit max
// times; each run gets a seed of its own.
func TestCrashPointsEnv(t *testing.T) {
	t.Setenv(envTestCrash, "set-sent=1") // of the caller: replaced
	cp, err := newCrashPoints(Config{CrashPoints: "set-sent=0.5,set-acked=0.25", CrashPointMax: 1, Instances: 3, Seed: 7},
		time.Now(), newTracer(nil, time.Now()), &strings.Builder{})
	if err != nil {
		t.Fatal(err)
	}
	spec := func(env []string) (string, string) {
		var s, seed string
		for _, kv := range env {
			if v, ok := strings.CutPrefix(kv, envTestCrash+"="); ok {
				if s != "" {
					t.Fatalf("%s twice", envTestCrash)
				}
				s = v
			}
			if v, ok := strings.CutPrefix(kv, envTestCrashSeed+"="); ok {
				seed = v
			}
		}
		return s, seed
	}
	s1, seed1 := spec(cp.env())
	if s1 != "set-acked=0.25,set-sent=0.5" || seed1 == "" {
		t.Fatalf("first run: %q seed %q", s1, seed1)
	}
	cp.record(1, "set-sent", true, time.Now())
	s2, seed2 := spec(cp.env())
	if s2 != "set-acked=0.25" || seed2 == seed1 {
		t.Fatalf("after set-sent was hit: %q seed %q (first %q)", s2, seed2, seed1)
	}
	var rep Report
	cp.report(&rep)
	if rep.CrashPoints["set-sent"] != 1 || len(rep.CrashPointFailures) != 1 || !strings.Contains(rep.CrashPointFailures[0], "set-acked not exercised") {
		t.Fatalf("report: %v %v", rep.CrashPoints, rep.CrashPointFailures)
	}
	if rep.Valid() {
		t.Fatal("a point not exercised: want the run invalid")
	}
	cp.record(2, "set-acked", false, time.Now())
	if s, _ := spec(cp.env()); s != "" {
		t.Fatalf("every point hit: %q, want none armed", s)
	}
	rep = Report{}
	cp.report(&rep)
	if !rep.Valid() {
		t.Fatalf("every point hit: %v", rep.CrashPointFailures)
	}
}

// fakeProxy is a stand-in for eosproxy: it logs that it is ready and,
// armed with a crash point, logs that point and SIGKILLs itself.
const fakeProxy = `#!/bin/sh
echo '{"level":"info","message":"eosproxy ready","bootstrap":"127.0.0.1:1"}'
if [ -n "$EOSPROXY_TEST_CRASH" ]; then
	echo '{"level":"error","message":"test crash point: SIGKILL","point":"set-sent"}'
	kill -9 $$
fi
exec sleep 600
`

// TestProxyProcCrashRestart: a run that ends at a crash point is reported
// and started again; a kill that finds such a run already gone succeeds,
// and the restart then leaves the run eoscheck started alone.
func TestProxyProcCrashRestart(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "eosproxy")
	if err := os.WriteFile(bin, []byte(fakeProxy), 0o755); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	armed := 1 // runs to arm
	var crashes []string
	var restarts []bool
	handled := make(chan struct{}, 10)
	pp := &proxyProc{bin: bin, logs: newProxyLogs(nil)}
	pp.env = func() []string {
		mu.Lock()
		defer mu.Unlock()
		if armed == 0 {
			return os.Environ()
		}
		armed--
		return append(os.Environ(), envTestCrash+"=set-sent=1")
	}
	pp.onCrash = func(run *procRun, point string) {
		restarted, err := pp.restartAfterCrash(run)
		mu.Lock()
		crashes = append(crashes, point)
		restarts = append(restarts, restarted)
		mu.Unlock()
		if err != nil {
			t.Error(err)
		}
		handled <- struct{}{}
	}
	t.Cleanup(pp.stop)
	if _, err := pp.start(); err != nil {
		t.Fatal(err)
	}
	<-handled
	mu.Lock()
	if !slices.Equal(crashes, []string{"set-sent"}) || !slices.Equal(restarts, []bool{true}) {
		t.Fatalf("crashes %v, restarted %v; want set-sent, restarted", crashes, restarts)
	}
	armed = 1
	mu.Unlock()
	if pp.runCount() != 2 {
		t.Fatalf("%d runs, want 2", pp.runCount())
	}
	// The second run is up, unarmed: kill it, start a third, armed one,
	// and kill it too, racing its crash: whichever comes first, kill
	// succeeds and exactly one more run is started by the schedule.
	if err := pp.kill(); err != nil {
		t.Fatal(err)
	}
	if _, err := pp.start(); err != nil {
		t.Fatal(err)
	}
	<-handled // the third run's crash, restarted (a fourth run) by the handler
	if err := pp.kill(); err != nil {
		t.Fatalf("kill of the restarted run: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(crashes) != 2 || pp.runCount() != 4 {
		t.Fatalf("crashes %v, %d runs; want 2 crashes, 4 runs", crashes, pp.runCount())
	}
}

// TestCrashPointsEscalate: a point not hit yet is armed with its
// probability doubled for every crashEscalation the check has run.
func TestCrashPointsEscalate(t *testing.T) {
	start := time.Now().Add(-2*crashEscalation - time.Second)
	cp, err := newCrashPoints(Config{CrashPoints: "set-sent=0.1,set-acked=0.3", CrashPointMax: 2, Instances: 3, Seed: 1},
		start, newTracer(nil, start), &strings.Builder{})
	if err != nil {
		t.Fatal(err)
	}
	cp.record(0, "set-sent", true, time.Now())
	for _, kv := range cp.env() {
		if v, ok := strings.CutPrefix(kv, envTestCrash+"="); ok {
			if v != "set-acked=1,set-sent=0.1" {
				t.Fatalf("armed %q, want set-acked escalated to 1 (0.3×4), set-sent (hit) as given", v)
			}
			return
		}
	}
	t.Fatal("nothing armed")
}

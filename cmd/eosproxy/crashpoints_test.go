package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"github.com/rs/zerolog"
)

func envOf(kv map[string]string) func(string) string {
	return func(k string) string { return kv[k] }
}

func TestParseCrashPoints(t *testing.T) {
	cp, err := parseCrashPoints(envOf(nil))
	if err != nil || cp != nil {
		t.Fatalf("unset: %v, %v; want nil, nil", cp, err)
	}
	if cp.hook(zerolog.Nop()) != nil {
		t.Fatal("no crash points: want a nil hook")
	}
	cp, err = parseCrashPoints(envOf(map[string]string{
		envTestCrash:     "decision-logged=0.05, half-forwarded=0.1,set-sent=0.02,set-acked=1",
		envTestCrashSeed: "42",
	}))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{"decision-logged": 0.05, "half-forwarded": 0.1, "set-sent": 0.02, "set-acked": 1}
	if len(cp.prob) != len(want) || cp.seed != 42 {
		t.Fatalf("got %v seed %d, want %v seed 42", cp.prob, cp.seed, want)
	}
	for k, v := range want {
		if cp.prob[k] != v {
			t.Fatalf("%s: got %v, want %v", k, cp.prob[k], v)
		}
	}
	// Also through parseConfig: the spec is checked at startup.
	c, err := parseConfig(nil, envOf(map[string]string{envTestCrash: "set-sent=0.5"}))
	if err != nil || c.crash == nil || c.crash.prob["set-sent"] != 0.5 {
		t.Fatalf("parseConfig: %+v, %v", c.crash, err)
	}
	for _, bad := range []map[string]string{
		{envTestCrash: "staged-not-indexed=0.1"},
		{envTestCrash: "set-sent"},
		{envTestCrash: "set-sent=x"},
		{envTestCrash: "set-sent=1.5"},
		{envTestCrash: "set-sent=-0.1"},
		{envTestCrash: "set-sent=0.1,set-sent=0.2"},
		{envTestCrash: "set-sent=0.1", envTestCrashSeed: "seed"},
	} {
		if _, err := parseConfig(nil, envOf(bad)); err == nil {
			t.Errorf("%v: want a startup error", bad)
		}
	}
	// A point not in the spec, or at probability 0, never crashes.
	cp, _ = parseCrashPoints(envOf(map[string]string{envTestCrash: "set-sent=0"}))
	hook := cp.hook(zerolog.Nop())
	for range 1000 {
		hook("set-sent")
		hook("set-acked")
	}
}

// TestCrashPointKills runs this test binary as a child that reaches a
// crash point armed with probability 1: it must die of SIGKILL, its last
// line naming the point.
func TestCrashPointKills(t *testing.T) {
	if os.Getenv("EOSPROXY_CRASH_CHILD") == "1" {
		cp, err := parseCrashPoints(os.Getenv)
		if err != nil {
			os.Exit(3)
		}
		cp.hook(zerolog.New(os.Stderr))("decision-logged")
		os.Exit(4) // not reached
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashPointKills$")
	cmd.Env = append(os.Environ(), "EOSPROXY_CRASH_CHILD=1", envTestCrash+"=decision-logged=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("child: %v, want it killed", err)
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child ended with %v, want SIGKILL; stderr:\n%s", ee, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
	var last struct{ Level, Message, Point string }
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &last); err != nil {
		t.Fatalf("last line %q: %v", lines[len(lines)-1], err)
	}
	if last.Message != msgCrashPoint || last.Point != "decision-logged" || last.Level != "error" {
		t.Fatalf("last line %+v, want %q with point decision-logged at error level", last, msgCrashPoint)
	}
}

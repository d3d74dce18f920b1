package main

import (
	"bytes"
	"slices"
	"strings"
	"testing"
)

func TestParseFlagsInstances(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		want    []int
		compare bool
		bad     bool
	}{
		{args: nil, want: []int{0}},
		{args: []string{"--instances", "3"}, want: []int{3}},
		{args: []string{"--compare-instances", "0,1, 2,3"}, want: []int{0, 1, 2, 3}, compare: true},
		{args: []string{"--compare-instances", "2"}, want: []int{2}},
		{args: []string{"--compare-instances", "1,1"}, bad: true},
		{args: []string{"--compare-instances", "x"}, bad: true},
		{args: []string{"--compare-instances", "0,2", "--instances", "2"}, bad: true},
		{args: []string{"--instances", "-1"}, bad: true},
		{args: []string{"--instances", "2", "--in-process"}, bad: true},
	} {
		cfg, err := parseFlags(tc.args)
		if tc.bad {
			if err == nil {
				t.Errorf("%q accepted: %v", tc.args, cfg.instances)
			}
			continue
		}
		if err != nil || !slices.Equal(cfg.instances, tc.want) || cfg.compare() != tc.compare {
			t.Errorf("%q: instances %v, compare %v, %v; want %v, %v", tc.args, cfg.instances, cfg.compare(), err, tc.want, tc.compare)
		}
	}
}

func TestOrderWithConfigurations(t *testing.T) {
	idem := findWorkload("produce-idem-1KiB")
	// One configuration: today's slots, Q included.
	if got := order(0, idem, []string{slotProxy}); !slices.Equal(got, []string{slotDirect, slotProxy, slotProxyPlain, slotAA1, slotAA2}) {
		t.Errorf("one configuration: %v", got)
	}
	// Several: one slot each, no Q, reversed every other round.
	slots := []string{proxySlotFor(0, true), proxySlotFor(2, true)}
	if got := order(0, idem, slots); !slices.Equal(got, []string{slotDirect, "proxy-single", "proxy-cluster2", slotAA1, slotAA2}) {
		t.Errorf("round 1: %v", got)
	}
	if got := order(1, idem, slots); !slices.Equal(got, []string{"proxy-cluster2", "proxy-single", slotDirect, slotAA2, slotAA1}) {
		t.Errorf("round 2: %v", got)
	}
}

func TestTakePortsApart(t *testing.T) {
	// A probe that keeps offering the same free base: the second taker
	// must not get ports the first was given.
	next := []int{20000, 20002, 20010}
	free := func(int) (int, error) {
		b := next[0]
		if len(next) > 1 {
			next = next[1:]
		}
		return b, nil
	}
	a, err := takePorts(3, free)
	if err != nil || a != 20000 {
		t.Fatalf("first: %d, %v", a, err)
	}
	b, err := takePorts(3, free)
	if err != nil || b != 20010 {
		t.Fatalf("second: %d, %v; want 20010 (20002 overlaps 20000-20002)", b, err)
	}
}

func TestOwnerOfPort(t *testing.T) {
	s := &proxySet{children: []*proxyChild{{brokerLo: 100, brokerHi: 102}, {brokerLo: 200, brokerHi: 200}}}
	for port, want := range map[int32]int{100: 0, 102: 0, 200: 1, 103: -1, 9092: -1} {
		if got := s.ownerOfPort(port); got != want {
			t.Errorf("port %d: instance %d, want %d", port, got, want)
		}
	}
}

func TestCompareReport(t *testing.T) {
	w := findWorkload("latency")
	slots := []string{proxySlotFor(0, true), proxySlotFor(2, true)}
	wr := workloadResult{Name: w.name, Phases: map[string][]metrics{
		slotDirect:       {{"rec/s": 1000, "p50 ms": 0.2, "p99 ms": 0.4, "p999 ms": 1}},
		"proxy-single":   {{"rec/s": 800, "p50 ms": 0.3, "p99 ms": 0.5, "p999 ms": 1}},
		"proxy-cluster2": {{"rec/s": 500, "p50 ms": 0.4, "p99 ms": 0.8, "p999 ms": 2, "MB/s": 0.05, "log MB/s": 0.0001, "log B/B": 0.002, "log B/rec": 0.2}},
		slotAA1:          {{"rec/s": 1000, "p50 ms": 0.2, "p99 ms": 0.4, "p999 ms": 1}},
		slotAA2:          {{"rec/s": 900, "p50 ms": 0.2, "p99 ms": 0.4, "p999 ms": 1}},
	}}
	wr.summarize(w, slots, true)
	if c := wr.Comparisons[0]; len(c.Configs) != 2 || c.Configs[1].Ratio != 0.5 || c.AARatio != 0.9 {
		t.Fatalf("throughput row: %+v", c)
	}
	rep := report{Configs: []configInfo{
		{Label: "single", Slot: "proxy-single"},
		{Label: "cluster of 2", Slot: "proxy-cluster2", Cluster: "x"},
	}, Workloads: []workloadResult{wr}}
	var out bytes.Buffer
	rep.print(&out)
	for _, want := range []string{
		"| workload | D: direct | single vs D | cluster of 2 vs D | A/A noise (D vs D) |",
		"| latency throughput | 1000 rec/s | 800 rec/s (0.80x) | 500 rec/s (0.50x) | 0.90x |",
		"| latency p50 | 0.200 ms | 0.300 ms (+0.100 ms (1.50x)) | 0.400 ms (+0.200 ms (2.00x)) | +0.000 ms (1.00x) |",
		"| latency | cluster of 2 | 0.050 | 0.0001 | 0.002 | 0.200 | - |",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
}

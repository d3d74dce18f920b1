package main

import (
	"strings"
	"testing"
	"time"
)

func TestParseProcStatCPU(t *testing.T) {
	// A command name with spaces and parentheses must not shift the fields.
	stat := "4242 (eos (proxy) x) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 75 0 0 20 0 9 0 100 0 0"
	got, err := parseProcStatCPU(stat)
	if err != nil || got != 3250*time.Millisecond {
		t.Fatalf("parseProcStatCPU = %v, %v; want 3.25s (250+75 ticks)", got, err)
	}
	if _, err := parseProcStatCPU("4242 (x) S 1 2"); err == nil {
		t.Fatal("short stat line accepted")
	}
}

func TestScrape(t *testing.T) {
	page := `# HELP go_memstats_mallocs_total Total number of heap objects allocated.
# TYPE go_memstats_mallocs_total counter
go_memstats_mallocs_total 1.234567e+06
go_memstats_alloc_bytes_total{x="y"} 7
go_memstats_alloc_bytes_total 8.5e+08
`
	v, err := scrape(strings.NewReader(page), "go_memstats_mallocs_total", "go_memstats_alloc_bytes_total")
	if err != nil || v[0] != 1234567 || v[1] != 8.5e8 {
		t.Fatalf("scrape = %v, %v", v, err)
	}
	if _, err := scrape(strings.NewReader(page), "go_memstats_frees_total"); err == nil {
		t.Fatal("missing metric not reported")
	}
}

func TestAddCost(t *testing.T) {
	t0 := time.Unix(1000, 0)
	b := &bench{
		// Idle: 100 allocations (10 kB) per /metrics read; per second 50
		// allocations, 1 kB and 0.01 cores.
		cur: &proxySet{idle: idleCost{
			Scrape:    procCost{mallocs: 100, allocBytes: 10e3},
			PerSecond: procCost{cpu: 10 * time.Millisecond, mallocs: 50, allocBytes: 1e3},
		}},
		win: costWindow{
			active: true,
			marks:  2,
			start:  procCost{at: t0, cpu: time.Second, mallocs: 1000, allocBytes: 1e6},
			end:    procCost{at: t0.Add(2 * time.Second), cpu: 1520 * time.Millisecond, mallocs: 3100, allocBytes: 3.012e6},
		},
	}
	m := metrics{"MB/s": 100, "rec/s": 1e5} // 200 MB, 200k records in the window
	b.addCost(m)
	// CPU 0.52 s - 0.02 idle = 0.5 s; mallocs 2100 - 100 - 100 = 1900;
	// bytes 2.012e6 - 10e3 - 2e3 = 2e6.
	want := metrics{"proxy cores": 0.25, "proxy CPU s/GB": 2.5, "proxy allocs/MB": 9.5, "proxy alloc B/B": 0.01, "proxy CPU us/rec": 2.5, "proxy allocs/rec": 0.0095}
	for k, v := range want {
		if got := m[k]; got < v*0.999 || got > v*1.001 {
			t.Errorf("%s = %v, want %v", k, got, v)
		}
	}
	// Not through the child, or a window not fully marked: nothing added.
	for _, w := range []costWindow{{active: false, marks: 2}, {active: true, marks: 1}} {
		b.win = w
		m := metrics{"MB/s": 100}
		b.addCost(m)
		if len(m) != 1 {
			t.Errorf("window %+v: cost added: %v", w, m)
		}
	}
}

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

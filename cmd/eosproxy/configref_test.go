package main

import (
	"flag"
	"os"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite README.md's configuration table from the flag definitions")

const readme = "../../README.md"

// README.md's configuration table is the one the flag definitions render.
func TestConfigReference(t *testing.T) {
	var c config
	fs, _ := newFlagSet(&c)
	want := renderConfigReference(fs)
	raw, err := os.ReadFile(readme)
	if err != nil {
		t.Fatal(err)
	}
	text := string(raw)
	before, rest, ok1 := strings.Cut(text, configRefBegin+"\n")
	got, after, ok2 := strings.Cut(rest, configRefEnd)
	if !ok1 || !ok2 {
		t.Fatalf("%s: no %q ... %q markers", readme, configRefBegin, configRefEnd)
	}
	if got == want {
		return
	}
	if *update {
		if err := os.WriteFile(readme, []byte(before+configRefBegin+"\n"+want+configRefEnd+after), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: configuration table rewritten", readme)
		return
	}
	gl, wl := strings.Split(got, "\n"), strings.Split(want, "\n")
	for i := 0; i < len(gl) || i < len(wl); i++ {
		var g, w string
		if i < len(gl) {
			g = gl[i]
		}
		if i < len(wl) {
			w = wl[i]
		}
		if g != w {
			t.Fatalf("README.md's configuration table differs from the flag definitions at table line %d:\nREADME: %s\nflags:  %s\nrun `go generate ./cmd/eosproxy` (or `go test ./cmd/eosproxy -run TestConfigReference -update`) to rewrite it", i+1, g, w)
		}
	}
}

// Defaults read as one writes them, and the table's cells stay cells.
func TestRenderConfigReference(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.Duration("d", 90*time.Minute, "a `span`")
	fs.Duration("zero", 0, "off")
	fs.Int64("buf-bytes", 3<<20, "budget")
	fs.String("s", "", "a|b, set --x-* or FOO_BAR (default: the host of --y)")
	got := renderConfigReference(fs)
	for _, want := range []string{
		"| `--d span` | `EOSPROXY_D` | `1h30m` | a span |",
		"| `--zero duration` | `EOSPROXY_ZERO` | `0s` | off |",
		"| `--buf-bytes int` | `EOSPROXY_BUF_BYTES` | `3145728` (3 MiB) | budget |",
		"| `--s string` | `EOSPROXY_S` | the host of `--y` | a\\|b, set `--x-*` or `FOO_BAR` |",
	} {
		if !strings.Contains(got, want+"\n") {
			t.Errorf("no row %s in\n%s", want, got)
		}
	}
}

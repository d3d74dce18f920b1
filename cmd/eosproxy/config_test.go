package main

import (
	"os"
	"path/filepath"
	"testing"
)

func TestConfigPrecedence(t *testing.T) {
	file := filepath.Join(t.TempDir(), "eosproxy.yaml")
	os.WriteFile(file, []byte("listen: 127.0.0.1:7000\nupstream: [a:1, b:2]\nlog-level: debug\ndata-dir: /from/file\n"), 0o644)
	env := map[string]string{
		"EOSPROXY_CONFIG":    file,
		"EOSPROXY_LOG_LEVEL": "warn",
		"EOSPROXY_DATA_DIR":  "/from/env",
	}
	c, err := parseConfig([]string{"--data-dir", "/from/flag"}, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	want := config{Listen: "127.0.0.1:7000", Upstream: "a:1,b:2", LogLevel: "warn", DataDir: "/from/flag"}
	if c.Listen != want.Listen || c.Upstream != want.Upstream || c.LogLevel != want.LogLevel || c.DataDir != want.DataDir {
		t.Fatalf("got %+v, want flag > env > file: %+v", c, want)
	}
	if got := c.upstreams(); len(got) != 2 || got[1] != "b:2" {
		t.Fatalf("upstreams %q", got)
	}
}

func TestConfigErrors(t *testing.T) {
	file := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(file, []byte("listne: x\n"), 0o644)
	none := func(string) string { return "" }
	for _, args := range [][]string{
		{"--config", file},
		{"--max-request-bytes", "0"},
		{"extra"},
	} {
		if _, err := parseConfig(args, none); err == nil {
			t.Fatalf("%v: no error", args)
		}
	}
	if _, err := parseConfig(nil, func(k string) string {
		if k == "EOSPROXY_MAX_REQUEST_BYTES" {
			return "lots"
		}
		return ""
	}); err == nil {
		t.Fatal("bad env value accepted")
	}
	c, _ := parseConfig([]string{"--broker-ports", "19093-19099"}, none)
	if lo, hi, err := c.brokerPortRange(); lo != 19093 || hi != 19099 || err != nil {
		t.Fatalf("range %d-%d %v", lo, hi, err)
	}
}

func TestConfigAdminListen(t *testing.T) {
	none := func(string) string { return "" }
	c, err := parseConfig(nil, none)
	if err != nil || c.AdminListen != "127.0.0.1:9190" {
		t.Fatalf("default admin listener %q, %v", c.AdminListen, err)
	}
	if c, _ = parseConfig([]string{"--admin-listen", ""}, none); c.AdminListen != "" {
		t.Fatalf("--admin-listen '' does not disable it: %q", c.AdminListen)
	}
	// The deprecated --debug-listen names the same endpoint.
	if c, _ = parseConfig([]string{"--debug-listen", "127.0.0.1:6060"}, none); c.AdminListen != "127.0.0.1:6060" {
		t.Fatalf("--debug-listen alias: %q", c.AdminListen)
	}
}

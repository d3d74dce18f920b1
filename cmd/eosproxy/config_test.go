package main

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
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

const example = "testdata/eosproxy.example.yaml"

// The example file loads through the real config path, and names every
// option (commented out where it keeps the default).
func TestConfigExample(t *testing.T) {
	c, err := parseConfig([]string{"--config", example}, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "0.0.0.0:9092" || c.AdvertiseHost != "kafka-proxy.internal" || c.BrokerPorts != "19093-19099" || c.DataDir != "/var/lib/eosproxy" {
		t.Errorf("listeners and data dir: %+v", c)
	}
	if got := c.upstreams(); len(got) != 3 || got[0] != "broker1:9092" || got[2] != "broker3:9092" {
		t.Errorf("upstream %q", got)
	}
	if c.TxnMaxTimeout != 5*time.Minute || c.MaxTxnBytes != 1<<30 || c.LogFormat != "json" || c.AdminListen != "0.0.0.0:9190" {
		t.Errorf("transactions, logs, admin: %+v", c)
	}
	if !c.UpstreamTLS || c.UpstreamSASLMech != "SCRAM-SHA-512" || c.UpstreamSASLUser != "eosproxy" || c.UpstreamSASLPass != "" {
		t.Errorf("backend security (the password belongs in EOSPROXY_UPSTREAM_SASL_PASSWORD): %+v", c.security)
	}
	raw, err := os.ReadFile(example)
	if err != nil {
		t.Fatal(err)
	}
	fs, _ := newFlagSet(&config{})
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name == "config" {
			return
		}
		if !strings.Contains(string(raw), "\n"+f.Name+":") && !strings.Contains(string(raw), "\n# "+f.Name+":") {
			t.Errorf("%s: no key %s (commented out or not)", example, f.Name)
		}
	})
}

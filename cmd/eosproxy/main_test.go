package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// freeAddr is a loopback address nothing listens on right now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// eosproxy, as started by main, serves its admin endpoint: liveness at
// once, readiness once it serves clients, its metrics, and profiles.
func TestAdminEndpoint(t *testing.T) {
	admin := freeAddr(t)
	cfg, err := parseConfig([]string{"--listen", "127.0.0.1:0", "--data-dir", t.TempDir(), "--admin-listen", admin}, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, cfg, zerolog.Nop()) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	get := func(path string) (int, string, error) {
		resp, err := http.Get("http://" + admin + path)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body), err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, body, err := get("/readyz")
		if err == nil && code == 200 {
			break
		}
		select {
		case err := <-done:
			done <- nil // for the deferred wait
			t.Fatalf("eosproxy stopped: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz never ready: %d %q %v", code, body, err)
		}
		if err == nil && (code != 503 || !strings.HasPrefix(body, "not ready: ")) {
			t.Fatalf("/readyz before ready: %d %q", code, body)
		}
		time.Sleep(20 * time.Millisecond) // polling a probe, as a kubelet does
	}
	if code, _, err := get("/healthz"); err != nil || code != 200 {
		t.Errorf("/healthz: %d %v", code, err)
	}
	code, body, err := get("/metrics")
	if err != nil || code != 200 {
		t.Fatalf("/metrics: %d %v", code, err)
	}
	for _, name := range []string{"eosproxy_connections_open", "eosproxy_transactions_open", "eosproxy_disk_bytes{store=\"badger\"}", "go_goroutines", "process_resident_memory_bytes"} {
		if !strings.Contains(body, name) {
			t.Errorf("/metrics lacks %s", name)
		}
	}
	if code, _, err := get("/debug/pprof/heap?debug=1"); err != nil || code != 200 {
		t.Errorf("/debug/pprof/heap: %d %v", code, err)
	}
}

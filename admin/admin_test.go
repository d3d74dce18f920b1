package admin

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func get(t *testing.T, srv *httptest.Server, path string) (int, string) {
	t.Helper()
	resp, err := http.Get(srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

func TestEndpoints(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "eosproxy_test_total", Help: "A test counter."})
	reg.MustRegister(c)
	c.Add(3)
	s := New(reg)
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()

	if code, body := get(t, srv, "/metrics"); code != 200 || !strings.Contains(body, "eosproxy_test_total 3") {
		t.Errorf("/metrics: %d %q", code, body)
	}
	if code, _ := get(t, srv, "/healthz"); code != 200 {
		t.Errorf("/healthz: %d", code)
	}
	if code, body := get(t, srv, "/readyz"); code != 503 || !strings.Contains(body, "loading state") {
		t.Errorf("/readyz before the proxy exists: %d %q", code, body)
	}
	var why error = errors.New("backend unreachable: dial refused")
	s.SetReady(func(context.Context) error { return why })
	if code, body := get(t, srv, "/readyz"); code != 503 || !strings.Contains(body, "backend unreachable") {
		t.Errorf("/readyz not ready: %d %q", code, body)
	}
	why = nil
	if code, _ := get(t, srv, "/readyz"); code != 200 {
		t.Errorf("/readyz ready: %d", code)
	}
	if code, body := get(t, srv, "/debug/pprof/"); code != 200 || !strings.Contains(body, "goroutine") {
		t.Errorf("/debug/pprof/: %d", code)
	}
	if code, _ := get(t, srv, "/debug/pprof/goroutine?debug=1"); code != 200 {
		t.Errorf("/debug/pprof/goroutine: %d", code)
	}
}

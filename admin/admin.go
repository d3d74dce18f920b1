// Package admin is eosproxy's operations endpoint: Prometheus metrics,
// liveness and readiness probes, and Go's profiles.
package admin

import (
	"context"
	"net/http"
	"net/http/pprof"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// ReadyFunc says why eosproxy cannot serve yet; nil when it can.
type ReadyFunc func(ctx context.Context) error

// Server holds what the endpoints read.
type Server struct {
	gatherer prometheus.Gatherer
	ready    atomic.Pointer[ReadyFunc]
	// ReadyTimeout bounds one readiness check (it asks the backend).
	ReadyTimeout time.Duration
}

// New serves g's metrics. Until SetReady is called /readyz answers that
// eosproxy's state is loading.
func New(g prometheus.Gatherer) *Server {
	return &Server{gatherer: g, ReadyTimeout: 5 * time.Second}
}

// SetReady names the readiness check, once the proxy exists.
func (s *Server) SetReady(f ReadyFunc) { s.ready.Store(&f) }

// Handler serves /metrics, /healthz, /readyz and /debug/pprof/.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(s.gatherer, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		plain(w, http.StatusOK, "ok")
	})
	mux.HandleFunc("/readyz", s.readyz)
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	f := s.ready.Load()
	if f == nil {
		plain(w, http.StatusServiceUnavailable, "not ready: loading state")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.ReadyTimeout)
	defer cancel()
	if err := (*f)(ctx); err != nil {
		plain(w, http.StatusServiceUnavailable, "not ready: "+err.Error())
		return
	}
	plain(w, http.StatusOK, "ready")
}

func plain(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(code)
	w.Write([]byte(msg + "\n"))
}

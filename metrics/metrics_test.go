package metrics

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

func count(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// The per-request calls allocate nothing once a key's children exist: they
// run for every request a client sends.
func TestPerRequestAllocs(t *testing.T) {
	m := New(prometheus.NewRegistry())
	start := time.Now()
	m.Request(0, 100)
	if n := testing.AllocsPerRun(1000, func() {
		m.Request(0, 100)
		m.Answered(0, false, start)
		m.Sent(50)
		m.Refused(0)
	}); n != 0 {
		t.Fatalf("%v allocations per request", n)
	}
	if got := count(t, m.requests.WithLabelValues("Produce")); got != 1002 {
		t.Fatalf("Produce requests %v", got)
	}
	// A key newer than kmsg's is counted, under one label.
	m.Request(32000, 1)
	if got := count(t, m.requests.WithLabelValues("unknown")); got != 1 {
		t.Fatalf("unknown key requests %v", got)
	}
}

func BenchmarkRequest(b *testing.B) {
	m := New(nil)
	start := time.Now()
	for b.Loop() {
		m.Request(0, 100)
		m.Answered(0, false, start)
		m.Sent(50)
	}
}

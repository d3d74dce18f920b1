// Package metrics holds eosproxy's Prometheus collectors. The proxy counts
// events through the methods here; what it keeps as state (transactions,
// producers, disk use) is read at scrape time through State, so nothing is
// counted twice and the hot paths only increment pre-resolved counters.
package metrics

import (
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Refusal reasons of eosproxy_connections_refused_total.
const (
	RefusedMaxConnections      = "max_connections"
	RefusedUpstreamUnreachable = "upstream_unreachable"
	RefusedShuttingDown        = "shutting_down"
)

// How an unclear outcome (a write whose answer was lost) was settled.
const (
	SettledFound            = "found"             // the batch was in the backend: not written again
	SettledWritten          = "written"           // it was not: written (again)
	SettledBackendDuplicate = "backend_duplicate" // the backend dropped a resent batch itself
)

// Transaction results of eosproxy_transactions_total.
const (
	TxnCommitted = "committed"
	TxnAborted   = "aborted"
	TxnTimedOut  = "timed_out"
	TxnFenced    = "fenced"
)

// Metrics are one proxy's collectors. The zero of nothing: build it with New.
type Metrics struct {
	reg        prometheus.Registerer
	collectors []prometheus.Collector

	connsOpen  prometheus.Gauge
	connsTotal prometheus.Counter
	refused    *prometheus.CounterVec
	bytesIn    prometheus.Counter
	bytesOut   prometheus.Counter

	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	// keys holds each API key's pre-resolved children, made on first use
	// so that keys never sent add no series.
	keys [kmsg.MaxKey + 2]atomic.Pointer[keyMetrics]

	backendErrors *prometheus.CounterVec
	unclear       *prometheus.CounterVec
	duplicates    prometheus.Counter
	outOfOrder    prometheus.Counter
	fenced        prometheus.Counter
	producerIDs   prometheus.Counter
	txns          *prometheus.CounterVec
	txnResults    map[string]prometheus.Counter
	forwardTime   prometheus.Histogram
}

type keyMetrics struct {
	requests         prometheus.Counter
	local, forwarded prometheus.Observer
}

// New makes the collectors and registers them with reg; nil registers
// nothing (the counters still count, unseen).
func New(reg prometheus.Registerer) *Metrics {
	m := &Metrics{reg: reg}
	counter := func(name, help string) prometheus.Counter {
		return add(m, prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help}))
	}
	counterVec := func(name, help, label string) *prometheus.CounterVec {
		return add(m, prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, []string{label}))
	}
	m.connsOpen = add(m, prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "eosproxy_connections_open", Help: "Client connections open now."}))
	m.connsTotal = counter("eosproxy_connections_total", "Client connections accepted and served.")
	m.refused = counterVec("eosproxy_connections_refused_total", "Client connections closed at once, by reason.", "reason")
	m.bytesIn = counter("eosproxy_client_received_bytes_total", "Bytes of requests read from clients.")
	m.bytesOut = counter("eosproxy_client_sent_bytes_total", "Bytes of responses sent to clients.")
	m.requests = counterVec("eosproxy_requests_total", "Client requests read, by API key.", "api_key")
	m.latency = add(m, prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "eosproxy_request_duration_seconds",
		Help: "Time from reading a request to handing its response to the client's connection, by API key and by whether eosproxy answered it itself (local) or the backend did (forwarded).",
		// 100 µs to 10 s: a local answer takes microseconds, a commit's
		// durable write milliseconds, a waiting Produce up to its timeout.
		Buckets: prometheus.ExponentialBuckets(0.0001, 2.5, 11),
	}, []string{"api_key", "path"}))
	m.backendErrors = counterVec("eosproxy_backend_errors_total",
		"Error codes in backend answers that eosproxy reads (idempotent and committed batches, offset commits), by Kafka error name.", "code")
	m.unclear = counterVec("eosproxy_unclear_outcomes_total", "Writes whose outcome was unknown (answer lost), by how it was settled.", "settled")
	m.duplicates = counter("eosproxy_duplicates_answered_total", "Retried idempotent batches answered with their first write's offset, not written twice.")
	m.outOfOrder = counter("eosproxy_out_of_order_rejections_total", "Batches refused with OUT_OF_ORDER_SEQUENCE_NUMBER.")
	m.fenced = counter("eosproxy_fenced_rejections_total", "Requests refused because their producer epoch is fenced (INVALID_PRODUCER_EPOCH, PRODUCER_FENCED).")
	m.producerIDs = counter("eosproxy_producer_ids_total", "Producer ids handed out (idempotent and transactional).")
	m.txns = counterVec("eosproxy_transactions_total", "Transactions ended, by result.", "result")
	m.forwardTime = add(m, prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "eosproxy_commit_forward_seconds",
		Help:    "Time from a commit's decision to the last byte of it written to the backend.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 12),
	}))
	// Labels known in advance show as 0 before their first event.
	for _, r := range []string{RefusedMaxConnections, RefusedUpstreamUnreachable, RefusedShuttingDown} {
		m.refused.WithLabelValues(r)
	}
	for _, s := range []string{SettledFound, SettledWritten, SettledBackendDuplicate} {
		m.unclear.WithLabelValues(s)
	}
	m.txnResults = map[string]prometheus.Counter{}
	for _, r := range []string{TxnCommitted, TxnAborted, TxnTimedOut, TxnFenced} {
		m.txnResults[r] = m.txns.WithLabelValues(r)
	}
	return m
}

func add[C prometheus.Collector](m *Metrics, c C) C {
	m.collectors = append(m.collectors, c)
	if m.reg != nil {
		m.reg.MustRegister(c)
	}
	return c
}

// Close unregisters every collector, so that a later proxy can register
// its own in the same registry.
func (m *Metrics) Close() {
	if m.reg == nil {
		return
	}
	for _, c := range m.collectors {
		m.reg.Unregister(c)
	}
}

// ConnOpened counts an accepted client connection; ConnClosed its end.
func (m *Metrics) ConnOpened() { m.connsTotal.Inc(); m.connsOpen.Inc() }
func (m *Metrics) ConnClosed() { m.connsOpen.Dec() }

// ConnRefused counts a client connection closed at once.
func (m *Metrics) ConnRefused(reason string) { m.refused.WithLabelValues(reason).Inc() }

func (m *Metrics) key(key int16) *keyMetrics {
	i := int(key)
	if i < 0 || i > kmsg.MaxKey {
		i = kmsg.MaxKey + 1 // every key newer than kmsg's, together
	}
	if k := m.keys[i].Load(); k != nil {
		return k
	}
	name := "unknown"
	if i <= kmsg.MaxKey {
		if name = kmsg.NameForKey(key); name == "" {
			name = "key_" + strconv.Itoa(i)
		}
	}
	k := &keyMetrics{
		requests:  m.requests.WithLabelValues(name),
		local:     m.latency.WithLabelValues(name, "local"),
		forwarded: m.latency.WithLabelValues(name, "forwarded"),
	}
	if m.keys[i].CompareAndSwap(nil, k) {
		return k
	}
	return m.keys[i].Load()
}

// Request counts a request of size bytes (its frame with the size field).
func (m *Metrics) Request(key int16, size int) {
	m.key(key).requests.Inc()
	m.bytesIn.Add(float64(size))
}

// Answered records the latency of a response to a request read at start.
func (m *Metrics) Answered(key int16, local bool, start time.Time) {
	k := m.key(key)
	o := k.forwarded
	if local {
		o = k.local
	}
	o.Observe(time.Since(start).Seconds())
}

// Sent counts size bytes of responses sent to a client.
func (m *Metrics) Sent(size int) { m.bytesOut.Add(float64(size)) }

// BackendError counts an error code in a backend answer eosproxy read.
func (m *Metrics) BackendError(code int16) {
	if code == 0 {
		return
	}
	name := "UNKNOWN_" + strconv.Itoa(int(code))
	if err := kerr.ErrorForCode(code); err != nil {
		if ke, ok := err.(*kerr.Error); ok {
			name = ke.Message
		}
	}
	m.backendErrors.WithLabelValues(name).Inc()
}

// Unclear counts an unknown write outcome settled as how (Settled*).
func (m *Metrics) Unclear(how string) { m.unclear.WithLabelValues(how).Inc() }

// Duplicate counts a retried batch answered without a second write.
func (m *Metrics) Duplicate() { m.duplicates.Inc() }

// Refused counts an answer code that refuses a request for its sequence or
// its epoch; other codes are not counted here.
func (m *Metrics) Refused(code int16) {
	switch code {
	case kerr.OutOfOrderSequenceNumber.Code:
		m.outOfOrder.Inc()
	case kerr.InvalidProducerEpoch.Code, kerr.ProducerFenced.Code:
		m.fenced.Inc()
	}
}

// ProducerID counts a producer id handed out.
func (m *Metrics) ProducerID() { m.producerIDs.Inc() }

// TxnEnded counts a transaction's end (Txn*).
func (m *Metrics) TxnEnded(result string) { m.txnResults[result].Inc() }

// CommitForwarded records how long a commit took from its decision to its
// last byte in the backend.
func (m *Metrics) CommitForwarded(d time.Duration) { m.forwardTime.Observe(d.Seconds()) }

// NewRegistry is the registry eosproxy serves: its own collectors go in
// through New, with the Go runtime's and the process's (memory, CPU, file
// descriptors) alongside.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

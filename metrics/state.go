package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Transactions is the coordinator's state as a scrape sees it.
type Transactions struct {
	// Open: transactions begun and not yet decided.
	Open int
	// OldestStart is when the oldest open one began (zero: none open).
	OldestStart time.Time
	// BufferedBytes: data of open and decided, not yet written, commits.
	BufferedBytes int64
	// BacklogCommits: commits decided and not yet fully written.
	BacklogCommits int
	// BacklogBytes: the bytes those still have to write; -1 when the
	// coordinator cannot tell.
	BacklogBytes int64
}

// State reads, at scrape time, what the proxy keeps anyway. A nil func
// leaves its metric out.
type State struct {
	Transactions     func() Transactions
	ProducersTracked func() int
	SpoolBytes       func() int64
	BadgerBytes      func() int64
	// DataDirFree: bytes free on the data dir's filesystem, if known.
	DataDirFree func() (int64, bool)
	// Now is the clock for the oldest transaction's age; default time.Now.
	Now func() time.Time
}

var (
	descTxnOpen = prometheus.NewDesc("eosproxy_transactions_open",
		"Transactions begun and not yet decided.", nil, nil)
	descTxnOldest = prometheus.NewDesc("eosproxy_transaction_oldest_open_seconds",
		"Age of the oldest open transaction (0: none open).", nil, nil)
	descBuffered = prometheus.NewDesc("eosproxy_transaction_buffered_bytes",
		"Bytes of transactional data buffered by eosproxy: open transactions and decided commits not yet written.", nil, nil)
	descBacklogCommits = prometheus.NewDesc("eosproxy_forward_backlog_commits",
		"Commits decided and not yet fully written to the backend.", nil, nil)
	descBacklogBytes = prometheus.NewDesc("eosproxy_forward_backlog_bytes",
		"Bytes that decided commits still have to write to the backend.", nil, nil)
	descProducers = prometheus.NewDesc("eosproxy_producers_tracked",
		"Idempotent producers whose sequence state eosproxy keeps.", nil, nil)
	descDisk = prometheus.NewDesc("eosproxy_disk_bytes",
		"Disk used by eosproxy's data: the spool of buffered transactional batches, and badger's state.", []string{"store"}, nil)
	descFree = prometheus.NewDesc("eosproxy_data_dir_free_bytes",
		"Bytes free on the data dir's filesystem; below --data-dir-reserve, batches are refused with KAFKA_STORAGE_ERROR.", nil, nil)
)

type stateCollector struct{ s State }

func (c stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descTxnOpen, descTxnOldest, descBuffered, descBacklogCommits, descBacklogBytes, descProducers, descDisk, descFree} {
		ch <- d
	}
}

func (c stateCollector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	if f := c.s.Transactions; f != nil {
		t := f()
		gauge(descTxnOpen, float64(t.Open))
		age := 0.0
		if !t.OldestStart.IsZero() {
			now := time.Now
			if c.s.Now != nil {
				now = c.s.Now
			}
			age = max(0, now().Sub(t.OldestStart).Seconds())
		}
		gauge(descTxnOldest, age)
		gauge(descBuffered, float64(t.BufferedBytes))
		gauge(descBacklogCommits, float64(t.BacklogCommits))
		if t.BacklogBytes >= 0 {
			gauge(descBacklogBytes, float64(t.BacklogBytes))
		}
	}
	if f := c.s.ProducersTracked; f != nil {
		gauge(descProducers, float64(f()))
	}
	if f := c.s.SpoolBytes; f != nil {
		gauge(descDisk, float64(f()), "spool")
	}
	if f := c.s.BadgerBytes; f != nil {
		gauge(descDisk, float64(f()), "badger")
	}
	if f := c.s.DataDirFree; f != nil {
		if n, ok := f(); ok {
			gauge(descFree, float64(n))
		}
	}
}

// Watch makes every scrape read s.
func (m *Metrics) Watch(s State) { add(m, prometheus.Collector(stateCollector{s})) }

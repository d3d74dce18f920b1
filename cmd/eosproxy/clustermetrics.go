package main

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/eosproxy/eosproxy/cluster"
)

// registerClusterMetrics exposes this instance's view of its cluster on
// /metrics: whether it serves, and how often ownership moved or fenced it.
func registerClusterMetrics(reg prometheus.Registerer, m *cluster.Member, serving func() bool) {
	b := func(v bool) float64 {
		if v {
			return 1
		}
		return 0
	}
	stat := func(f func(cluster.Stats) int64) func() float64 {
		return func() float64 { return float64(f(m.Stats())) }
	}
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "eosproxy_cluster_serving", Help: "1 while this instance is the cluster's owner and serves, 0 while it is a standby."},
			func() float64 { return b(serving()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "eosproxy_cluster_fencings_total", Help: "Times this instance found its ownership superseded by another instance's claim, or its own write void."},
			stat(func(s cluster.Stats) int64 { return s.Fencings })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "eosproxy_cluster_takeovers_total", Help: "Times this instance became the cluster's owner."},
			stat(func(s cluster.Stats) int64 { return int64(len(s.Failovers)) })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "eosproxy_cluster_log_sets_total", Help: "State changes this instance wrote to the cluster's log (confirmed) or applied from it.", ConstLabels: prometheus.Labels{"way": "written"}},
			stat(func(s cluster.Stats) int64 { return s.Appended })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "eosproxy_cluster_log_sets_total", Help: "State changes this instance wrote to the cluster's log (confirmed) or applied from it.", ConstLabels: prometheus.Labels{"way": "applied"}},
			stat(func(s cluster.Stats) int64 { return s.Applied })),
	)
}

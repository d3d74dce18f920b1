package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
)

type report struct {
	Backend    string   `json:"backend"`
	ProxyMode  string   `json:"proxy_mode"`
	ProxyState string   `json:"proxy_state"`
	Kfake      bool     `json:"kfake"`      // the backend is the in-process kfake
	ProxyIdle  idleCost `json:"proxy_idle"` // the first configuration's
	// Configs are the proxy configurations (--instances,
	// --compare-instances), one per proxy slot; none --in-process.
	Configs    []configInfo     `json:"configs,omitempty"`
	BrokerPIDs []int            `json:"broker_pids,omitempty"` // --upstream-pid: counted as the benchmark's
	GOMAXPROCS int              `json:"gomaxprocs"`
	NumCPU     int              `json:"num_cpu"`
	GoVersion  string           `json:"go_version"`
	Phase      string           `json:"phase"`
	Rounds     int              `json:"rounds"`
	Elapsed    string           `json:"elapsed"`
	Workloads  []workloadResult `json:"workloads"`
	// compareNoted: the side-by-side tables' note was printed.
	compareNoted bool
}

type workloadResult struct {
	Name  string `json:"name"`
	About string `json:"about"`
	// Idempotence marks a produce-idem-* workload: direct and proxy ran an
	// idempotent producer, proxy-plain a plain one through eosproxy.
	Idempotence bool `json:"idempotence,omitempty"`
	// Transactions marks a txn-* workload: direct used the backend's native
	// transactions, proxy eosproxy's.
	Transactions bool `json:"transactions,omitempty"`
	// Phases holds every phase's metrics per slot, in run order.
	Phases map[string][]metrics `json:"phases,omitempty"`
	// Slots are the workload's slots in the order of a round's first.
	Slots []string `json:"slots,omitempty"`
	// Buffer is the txn-buffer measurement, which has no phases.
	Buffer      *bufferResult `json:"txn_buffer,omitempty"`
	Comparisons []comparison  `json:"comparisons"`
	rows        []row
}

// comparison is one table row: medians per side, proxy/direct, and the same
// figures for the A/A pair, which show how far apart two identical sides come
// out with this method.
type comparison struct {
	Metric       string  `json:"metric"`
	Unit         string  `json:"unit"`
	DirectMedian float64 `json:"direct_median"`
	ProxyMedian  float64 `json:"proxy_median"`
	Ratio        float64 `json:"ratio"`          // proxy / direct
	Diff         float64 `json:"diff,omitempty"` // proxy - direct, latency rows
	AA1Median    float64 `json:"aa1_median"`
	AA2Median    float64 `json:"aa2_median"`
	AARatio      float64 `json:"aa_ratio"`          // aa2 / aa1
	AADiff       float64 `json:"aa_diff,omitempty"` // aa2 - aa1, latency rows
	// Idempotence workloads: the plain producer through eosproxy, and the
	// idempotent one through eosproxy against it.
	ProxyPlainMedian float64 `json:"proxy_plain_median,omitempty"`
	PlainRatio       float64 `json:"proxy_vs_plain_ratio,omitempty"` // proxy / proxy-plain
	PlainDiff        float64 `json:"proxy_vs_plain_diff,omitempty"`  // proxy - proxy-plain, latency rows
	// Configs compare each proxy configuration with direct
	// (--compare-instances); Proxy* and Ratio are then unset.
	Configs []configComparison `json:"configs,omitempty"`
	row     row
}

// configComparison is one configuration's cell of a comparison row.
type configComparison struct {
	Slot   string  `json:"slot"`
	Median float64 `json:"median"`
	Ratio  float64 `json:"ratio"`          // against direct
	Diff   float64 `json:"diff,omitempty"` // against direct, latency rows
}

func (wr *workloadResult) summarize(w *workload, proxySlots []string, compare bool) {
	wr.About = w.about
	wr.Idempotence = w.idem
	wr.Transactions = w.txn
	wr.rows = w.rows
	wr.Slots = order(0, w, proxySlots)
	for _, r := range w.rows {
		c := comparison{
			Metric:       r.metric,
			Unit:         r.unit,
			DirectMedian: wr.median(slotDirect, r.metric),
			ProxyMedian:  wr.median(slotProxy, r.metric),
			AA1Median:    wr.median(slotAA1, r.metric),
			AA2Median:    wr.median(slotAA2, r.metric),
			row:          r,
		}
		c.Ratio = c.ProxyMedian / c.DirectMedian
		c.AARatio = c.AA2Median / c.AA1Median
		idemQ := w.idem && !compare
		if idemQ {
			c.ProxyPlainMedian = wr.median(slotProxyPlain, r.metric)
			c.PlainRatio = c.ProxyMedian / c.ProxyPlainMedian
		}
		if r.latency {
			c.Diff = c.ProxyMedian - c.DirectMedian
			c.AADiff = c.AA2Median - c.AA1Median
			if idemQ {
				c.PlainDiff = c.ProxyMedian - c.ProxyPlainMedian
			}
		}
		if compare {
			c.ProxyMedian, c.Ratio, c.Diff = 0, 0, 0
			for _, slot := range proxySlots {
				cc := configComparison{Slot: slot, Median: wr.median(slot, r.metric)}
				cc.Ratio = cc.Median / c.DirectMedian
				if r.latency {
					cc.Diff = cc.Median - c.DirectMedian
				}
				c.Configs = append(c.Configs, cc)
			}
		}
		wr.Comparisons = append(wr.Comparisons, c)
	}
}

// median of a metric over a slot's phases: robust to the odd phase that a
// GC cycle or a scheduler hiccup spoils, which a mean is not.
func (wr *workloadResult) median(slot, metric string) float64 {
	var v []float64
	for _, m := range wr.Phases[slot] {
		v = append(v, m[metric])
	}
	return median(v)
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	v = slices.Clone(v)
	slices.Sort(v)
	if n := len(v); n%2 == 0 {
		return (v[n/2-1] + v[n/2]) / 2
	}
	return v[len(v)/2]
}

// idemTarget is what issues 3 and 12 ask of idempotent produce through
// eosproxy against the backend's own idempotence.
const idemTarget = 0.9

func (rep *report) print(w io.Writer) {
	fmt.Fprintf(w, "\n## eosbench: direct vs through eosproxy\n\n")
	fmt.Fprintf(w, "backend: %s; eosproxy: %s; eosproxy state: %s; GOMAXPROCS %d of %d CPUs; %s; %d round(s) of %s phases; run time %s\n\n",
		rep.Backend, rep.ProxyMode, rep.ProxyState, rep.GOMAXPROCS, rep.NumCPU, rep.GoVersion, rep.Rounds, rep.Phase, rep.Elapsed)
	var plain, idem, txn, buffer []workloadResult
	for _, wr := range rep.Workloads {
		switch {
		case wr.Buffer != nil:
			buffer = append(buffer, wr)
		case wr.Idempotence:
			idem = append(idem, wr)
		case wr.Transactions:
			txn = append(txn, wr)
		default:
			plain = append(plain, wr)
		}
	}
	missed := false
	if len(plain) > 0 {
		fmt.Fprintf(w, "### plain pass-through: direct (D) vs through eosproxy (P)\n\n")
		missed = rep.table(w, plain, false) || missed
		fmt.Fprintf(w, "Throughput: medians over rounds of each phase's rate. Request p50/p99/p999: per produce (or fetch) request, from the client writing it to reading its answer, under full load (5 produce requests in flight per broker; mostly queueing, so no target). "+
			"latency: one ProduceSync of %d B at a time, linger 0, acks=all; its throughput is what that gives. Latency rows compare by difference (P - D) and ratio.\n\n", latencySize)
	}
	if len(idem) > 0 && rep.compare() {
		fmt.Fprintf(w, "### idempotence: idempotent through each eosproxy configuration vs the backend's own idempotence, direct (D)\n\n")
		rep.table(w, idem, false)
		var inflight []string
		for _, wr := range idem {
			if wr.Name == "latency-idem" {
				continue
			}
			var parts []string
			for _, slot := range wr.Slots {
				if slot != slotAA1 && slot != slotAA2 {
					parts = append(parts, rep.slotLabel(slot)+" "+wr.maxOf(slot, "max inflight"))
				}
			}
			inflight = append(inflight, wr.Name+" "+strings.Join(parts, ", "))
		}
		fmt.Fprintf(w, "kgo's default idempotent producer, acks=all, on every side; with --compare-instances there is no plain-through-eosproxy (Q) slot. "+
			"At most 5 produce requests in flight per broker (kgo's fixed limit with idempotence on); most seen in flight on one broker: %s.\n\n", strings.Join(inflight, "; "))
	} else if len(idem) > 0 {
		fmt.Fprintf(w, "### idempotence: idempotent through eosproxy (P) vs the backend's own idempotence, direct (D), and plain through eosproxy (Q)\n\n")
		missed = rep.table(w, idem, true) || missed
		var inflight []string
		for _, wr := range idem {
			if wr.Name == "latency-idem" {
				continue
			}
			inflight = append(inflight, fmt.Sprintf("%s D %s, P %s, Q %s", wr.Name,
				wr.maxOf(slotDirect, "max inflight"), wr.maxOf(slotProxy, "max inflight"), wr.maxOf(slotProxyPlain, "max inflight")))
		}
		fmt.Fprintf(w, "D and P: kgo's default idempotent producer, acks=all. Q: the same producer with idempotence off, so P vs Q is what eosproxy's own idempotence costs (producer-state checks, re-signed batches, state made durable before each answer). "+
			"The produce-idem-* workloads keep at most 5 produce requests in flight per broker: kgo's fixed limit with idempotence on (1 until the first answer, then 5 for Produce v4+), and MaxProduceRequestsInflightPerBroker(5) for Q. "+
			"Most seen in flight on one broker: %s.\n\n", strings.Join(inflight, "; "))
	}
	if len(txn) > 0 {
		fmt.Fprintf(w, "### transactions: transactional produce through eosproxy (P) vs native transactions direct (D)\n\n")
		missed = rep.table(w, txn, false) || missed
		var shape []string
		for _, wr := range txn {
			var parts []string
			for _, slot := range wr.Slots {
				if slot == slotAA1 || slot == slotAA2 {
					continue
				}
				label := rep.slotLabel(slot)
				if !rep.compare() {
					label = map[string]string{slotDirect: "D", slotProxy: "P"}[slot]
				}
				parts = append(parts, fmt.Sprintf("%s %s txn/s of %s records", label, fmtNum(wr.median(slot, "txn/s")), fmtNum(wr.median(slot, "rec/txn"))))
			}
			shape = append(shape, wr.Name+" "+strings.Join(parts, ", "))
		}
		fmt.Fprintf(w, "Each phase: one kgo transactional producer (idempotent, acks=all, a transactional.id of its own, %v transaction timeout, %d MiB client buffer), "+
			"BeginTransaction, 1 KiB records produced async as fast as possible until the commit is due, Flush, EndTransaction(TryCommit). "+
			"Committed: records whose transaction committed, per second. Commit: the EndTransaction call alone, after Flush returned. "+
			"Flush+commit: from when the commit was due to EndTransaction's return. Medians over rounds of each phase's p50/p99 (%s). "+
			"The throughput target is %.1fx of Apache Kafka's native transactions and %.1fx of kfake's.\n\n",
			txnTimeout, txnBufferedBytes>>20, strings.Join(shape, "; "), txnTarget, txnTargetKfake)
	}
	if missed {
		fmt.Fprintf(w, "MISS: the median misses the issue's target; judge it against the A/A noise of the same row.\n\n")
	}
	rep.printCost(w)
	rep.printClusterLog(w)
	for _, wr := range buffer {
		wr.Buffer.print(w)
	}
	var others []float64
	for _, wr := range rep.Workloads {
		for _, ms := range wr.Phases {
			for _, m := range ms {
				others = append(others, m["others cores"])
			}
		}
	}
	if len(others) == 0 {
		return // no phases: only single measurements ran
	}
	local := "a local broker counts here unless named by --upstream-pid"
	if len(rep.BrokerPIDs) > 0 {
		local = fmt.Sprintf("nor the broker, pid %v, named by --upstream-pid", rep.BrokerPIDs)
	}
	fmt.Fprintf(w, "Quietness: other processes on the machine (not the benchmark, not its eosproxy child; %s) used a median %.2f cores (max %.2f) during the phases", local, median(others), slices.Max(others))
	if slices.Max(others) > 0.3 {
		fmt.Fprintf(w, ": they competed for CPU, so expect a wider spread")
	}
	fmt.Fprintln(w, ".")
	fmt.Fprintf(w, "\nPer-phase values, in run order (the spread behind each median):\n\n")
	for _, wr := range rep.Workloads {
		if wr.Buffer != nil {
			continue
		}
		slots := wr.Slots
		if len(slots) == 0 {
			slots = []string{slotDirect, slotProxy, slotAA1, slotAA2}
			if wr.Idempotence {
				slots = []string{slotDirect, slotProxy, slotProxyPlain, slotAA1, slotAA2}
			}
		}
		type shown struct{ label, metric string }
		var lines []shown
		for _, c := range wr.Comparisons {
			lines = append(lines, shown{c.row.label + " " + c.Unit, c.Metric})
		}
		if wr.Idempotence && wr.Name != "latency-idem" {
			// How each path kept the producer's pipe full.
			lines = append(lines,
				shown{wr.Name + " max produce requests in flight per broker", "max inflight"},
				shown{wr.Name + " produce requests/s", "req/s"},
				shown{wr.Name + " KiB per produce request", "KiB/req"})
		}
		if wr.Transactions {
			lines = append(lines,
				shown{wr.Name + " flush+commit p50 ms", "flush+commit p50 ms"},
				shown{wr.Name + " transactions/s", "txn/s"},
				shown{wr.Name + " records per transaction", "rec/txn"})
		}
		lines = append(lines,
			shown{wr.Name + " cores used by the benchmark (clients, backend, eosproxy)", "cores"},
			shown{wr.Name + " cores used by other processes", "others cores"})
		if len(rep.BrokerPIDs) > 0 {
			lines = append(lines, shown{wr.Name + " of them, the broker's (--upstream-pid)", "backend cores"})
		}
		if rep.hasCluster() {
			lines = append(lines,
				shown{wr.Name + " eosproxy cores, all instances", "proxy cores"},
				shown{wr.Name + " of them, the owner's", "owner cores"},
				shown{wr.Name + " cluster log bytes per byte carried", "log B/B"})
		}
		for _, l := range lines {
			var parts []string
			for _, slot := range slots {
				var vs []string
				for _, m := range wr.Phases[slot] {
					if _, ok := m[l.metric]; !ok && (l.metric == "proxy cores" || l.metric == "owner cores" || l.metric == "log B/B") {
						vs = append(vs, "-")
						continue
					}
					if l.metric == "max inflight" {
						vs = append(vs, fmt.Sprintf("%.0f", m[l.metric]))
					} else {
						vs = append(vs, fmtNum(m[l.metric]))
					}
				}
				parts = append(parts, fmt.Sprintf("%s [%s]", slot, strings.Join(vs, " ")))
			}
			fmt.Fprintf(w, "- %s: %s\n", l.label, strings.Join(parts, ", "))
		}
	}
}

// table prints one comparison table: per row, the medians of D and P (and
// Q), P against D (and Q), the target if any, and the A/A noise,
// the same comparison between two direct slots. It says whether a target
// was missed.
func (rep *report) table(w io.Writer, wrs []workloadResult, withQ bool) (missed bool) {
	if rep.compare() {
		rep.compareTable(w, wrs)
		return false
	}
	if withQ {
		fmt.Fprintln(w, "| workload | D | P | Q | P vs D | P vs Q | target (P vs D) | A/A noise (D vs D) |")
		fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---|---:|")
	} else {
		fmt.Fprintln(w, "| workload | D: direct | P: through eosproxy | P vs D | target | A/A noise (D vs D) |")
		fmt.Fprintln(w, "|---|---:|---:|---:|---|---:|")
	}
	for _, wr := range wrs {
		for _, c := range wr.Comparisons {
			r := c.row
			label := r.label
			if strings.Contains(r.metric, "p999") {
				// Fewer than 1000 samples in a phase: its p999 is its
				// slowest request, which one hiccup decides.
				samples := "samples"
				if strings.HasPrefix(r.metric, "req ") {
					samples = "req samples"
				}
				if n := wr.median(slotDirect, samples); n < 1000 {
					label += fmt.Sprintf(" (~max: %.0f samples)", n)
				}
			}
			vs := func(diff, ratio float64) string {
				if r.latency {
					return fmt.Sprintf("%+.3f ms (%.2fx)", diff, ratio)
				}
				return fmt.Sprintf("%.2fx", ratio)
			}
			target := ""
			switch minRatio := r.minRatio; {
			case minRatio > 0:
				if wr.Transactions && rep.Kfake {
					minRatio = txnTargetKfake
				}
				target = verdict(c.Ratio >= minRatio, fmt.Sprintf(">= %.2fx", minRatio))
			case r.maxDiffMs > 0:
				target = verdict(c.Diff <= r.maxDiffMs, fmt.Sprintf("<= +%.2f ms", r.maxDiffMs))
			}
			if strings.HasSuffix(target, "MISS") {
				missed = true
			}
			if withQ {
				fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s |\n", label,
					wr.cell(r, slotDirect), wr.cell(r, slotProxy), wr.cell(r, slotProxyPlain),
					vs(c.Diff, c.Ratio), vs(c.PlainDiff, c.PlainRatio), target, vs(c.AADiff, c.AARatio))
			} else {
				fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s |\n", label,
					wr.cell(r, slotDirect), wr.cell(r, slotProxy), vs(c.Diff, c.Ratio), target, vs(c.AADiff, c.AARatio))
			}
		}
	}
	fmt.Fprintln(w)
	return missed
}

func verdict(ok bool, target string) string {
	if ok {
		return target + ": ok"
	}
	return target + ": MISS"
}

// printCost prints what eosproxy, as a child process, used per byte and
// per record it carried, over each proxy phase's measured window.
func (rep *report) printCost(w io.Writer) {
	type line struct {
		wr   workloadResult
		slot string
	}
	var lines []line
	for _, wr := range rep.Workloads {
		for _, slot := range wr.Slots {
			if slot == slotDirect || slot == slotAA1 || slot == slotAA2 {
				continue
			}
			if len(wr.Phases[slot]) > 0 && wr.Phases[slot][0]["proxy cores"] > 0 {
				lines = append(lines, line{wr, slot})
			}
		}
	}
	if len(lines) == 0 {
		if strings.HasPrefix(rep.ProxyMode, "in-process") {
			fmt.Fprintf(w, "eosproxy's cost per byte: not measured in-process (its CPU and heap are the benchmark's).\n\n")
		}
		return
	}
	fmt.Fprintf(w, "### eosproxy's cost per byte carried (child process, over each measured window; medians over rounds)\n\n")
	cluster := rep.hasCluster()
	if cluster {
		fmt.Fprintln(w, "| workload | slot | eosproxy cores | of them, the owner's | CPU-s per GB | allocations per MB | bytes allocated per byte | CPU µs per record | allocations per record |")
		fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|---:|---:|---:|")
	} else {
		fmt.Fprintln(w, "| workload | slot | eosproxy cores | CPU-s per GB | allocations per MB | bytes allocated per byte | CPU µs per record | allocations per record |")
		fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|---:|---:|")
	}
	for _, l := range lines {
		med := func(metric string) string { return fmtNum(l.wr.median(l.slot, metric)) }
		owner := ""
		if cluster {
			owner = " - |"
			if _, ok := l.wr.Phases[l.slot][0]["owner cores"]; ok {
				owner = " " + med("owner cores") + " |"
			}
		}
		fmt.Fprintf(w, "| %s | %s | %s |%s %s | %s | %s | %s | %s |\n", l.wr.Name, rep.slotLabel(l.slot),
			med("proxy cores"), owner, med("proxy CPU s/GB"), med("proxy allocs/MB"), med("proxy alloc B/B"), med("proxy CPU us/rec"), med("proxy allocs/rec"))
	}
	var idle []string
	for _, c := range rep.Configs {
		ic := c.Idle
		idle = append(idle, fmt.Sprintf("%s %.0f allocations per /metrics read, and per second %.0f allocations (%s bytes) and %.3f cores", c.Label, ic.ScrapeAllocs, ic.IdleAllocsPerS, fmtNum(ic.IdleBytesPerS), ic.IdleCores))
	}
	if len(rep.Configs) == 0 {
		ic := rep.ProxyIdle
		idle = append(idle, fmt.Sprintf("%.0f allocations per /metrics read, and per second %.0f allocations (%s bytes) and %.3f cores", ic.ScrapeAllocs, ic.IdleAllocsPerS, fmtNum(ic.IdleBytesPerS), ic.IdleCores))
	}
	sum := ""
	if cluster {
		sum = "Figures are summed over all instances of a configuration (a cluster's standbys replay its log); the owner's own cores are shown beside them. "
	}
	fmt.Fprintf(w, "\nCPU: utime+stime of each eosproxy process from /proc/<pid>/stat (10 ms ticks). Allocations: go_memstats_mallocs_total and go_memstats_alloc_bytes_total from its /metrics. %s"+
		"Both less eosproxy's idle cost, measured before the first phase: %s; a figure near that floor over a window (e.g. a bulk workload's allocations per MB times its MB/s) is noise. "+
		"Per byte of record values carried (produced, or consumed for consume; committed for txn-*), MB = 10^6 bytes, GB = 10^9.\n\n",
		sum, strings.Join(idle, "; "))
}

// printClusterLog prints what a cluster's log took in the backend per
// byte carried: the cost of writing every state change (transactional
// batches included) to the backend before answering.
func (rep *report) printClusterLog(w io.Writer) {
	type line struct {
		wr   workloadResult
		slot string
	}
	var lines []line
	for _, wr := range rep.Workloads {
		for _, slot := range wr.Slots {
			for _, m := range wr.Phases[slot] {
				if _, ok := m["log MB/s"]; ok {
					lines = append(lines, line{wr, slot})
					break
				}
			}
		}
	}
	if len(lines) == 0 {
		return
	}
	fmt.Fprintf(w, "### cluster mode: the cluster's log in the backend (medians over rounds)\n\n")
	fmt.Fprintln(w, "| workload | slot | carried MB/s | log MB/s | log bytes per byte carried | log bytes per record | log bytes per byte the topic grew |")
	fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|---:|")
	for _, l := range lines {
		med := func(metric string) string {
			var v []float64
			for _, m := range l.wr.Phases[l.slot] {
				if x, ok := m[metric]; ok {
					v = append(v, x)
				}
			}
			if len(v) == 0 {
				return "-"
			}
			if m := median(v); m > 0 && m < 0.01 {
				return fmt.Sprintf("%.2g", m) // e.g. producer states per byte
			}
			return fmtNum(median(v))
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s |\n", l.wr.Name, rep.slotLabel(l.slot), med("MB/s"), med("log MB/s"), med("log B/B"), med("log B/rec"), med("log B/topic B"))
	}
	fmt.Fprintf(w, "\nLog: the growth of the cluster's log topic (__eosproxy_<name>_log) over each measured window, as the backend's DescribeLogDirs reports its size (stored bytes, batch headers included, one replica), "+
		"per byte of record values carried (committed for txn-*), per record, and per byte the workload's topic grew by in the backend over the same window (its partitions' sizes likewise). "+
		"The owner writes every state change there before answering: transactional batches as they are produced (then again to the topic at commit, so transactional bytes are written twice), producer states, decisions. "+
		"A window in which the log was trimmed (after a checkpoint) gives no figure.\n\n")
}

// compare says whether the run compared several configurations.
func (rep *report) compare() bool { return len(rep.Configs) > 1 }

// hasCluster says whether any configuration is a cluster.
func (rep *report) hasCluster() bool {
	for _, c := range rep.Configs {
		if c.Cluster != "" {
			return true
		}
	}
	return false
}

// slotLabel names a slot in the tables: a configuration's label, or the
// slot's own name.
func (rep *report) slotLabel(slot string) string {
	if rep.compare() {
		for _, c := range rep.Configs {
			if c.Slot == slot {
				return c.Label
			}
		}
	}
	return slot
}

// compareTable is table for several configurations: per row, direct's
// median, each configuration's median with its ratio (and difference) to
// direct, and the A/A noise. No targets: they are judged on the
// single-configuration tables.
func (rep *report) compareTable(w io.Writer, wrs []workloadResult) {
	var head, align []string
	for _, c := range rep.Configs {
		head = append(head, c.Label+" vs D")
		align = append(align, "---:")
	}
	fmt.Fprintf(w, "| workload | D: direct | %s | A/A noise (D vs D) |\n", strings.Join(head, " | "))
	fmt.Fprintf(w, "|---|---:|%s|---:|\n", strings.Join(align, "|"))
	for _, wr := range wrs {
		for _, c := range wr.Comparisons {
			r := c.row
			vs := func(diff, ratio float64) string {
				if r.latency {
					return fmt.Sprintf("%+.3f ms (%.2fx)", diff, ratio)
				}
				return fmt.Sprintf("%.2fx", ratio)
			}
			var cells []string
			for _, cc := range c.Configs {
				cells = append(cells, fmt.Sprintf("%s %s (%s)", fmtNum(cc.Median), r.unit, vs(cc.Diff, cc.Ratio)))
			}
			fmt.Fprintf(w, "| %s | %s | %s | %s |\n", r.label, wr.cell(r, slotDirect), strings.Join(cells, " | "), vs(c.AADiff, c.AARatio))
		}
	}
	fmt.Fprintln(w)
	if !rep.compareNoted {
		rep.compareNoted = true
		fmt.Fprintf(w, "Each configuration's median, then against direct (ratio; latency rows also the difference). single: one eosproxy instance without --cluster; cluster of N: N instances with --cluster, clients listing all of them as seeds (they end up on the owner). "+
			"Phases interleave as D, then each configuration, then the A/A pair, reversed every other round.\n\n")
	}
}

// print prints the txn-buffer measurement.
func (br *bufferResult) print(w io.Writer) {
	fmt.Fprintf(w, "### txn-buffer: eosproxy's memory while one open transaction holds %.0f MiB (%s; target RSS <= %.0f MiB)\n\n", br.BufferedMiB, br.Path, br.TargetMiB)
	fmt.Fprintln(w, "| buffered | eosproxy RSS | of it anon | of it file-backed |")
	fmt.Fprintln(w, "|---|---:|---:|---:|")
	line := func(label string, m memUse) {
		fmt.Fprintf(w, "| %s | %.0f MiB | %.0f MiB | %.0f MiB |\n", label, m.RSSMiB, m.AnonMiB, m.FileMiB)
	}
	line("before writing", br.Before)
	for _, c := range br.Checkpoints {
		line(fmt.Sprintf("%.0f%% (sampled at %.1f%%)", c.Percent, c.BufferedPercent), c.memUse)
	}
	line("max while buffering", br.MaxBuffering)
	line(fmt.Sprintf("max while ending (%s)", br.End), br.MaxEnd)
	line("1 s after the end", br.AfterEnd)
	fmt.Fprintln(w)
	fmt.Fprintf(w, "Wrote %d records of %d bytes in %.1f s (%.1f MB/s) in one transaction; eosproxy's state directory then took %.0f MiB on disk (%.0f MiB apparent); "+
		"the backend's high watermarks summed to %d while the transaction was open and %d 1 s after the end; the %s took %s ms. "+
		"RSS is VmRSS of the eosproxy child, sampled every %v from /proc/<pid>/status, with its RssAnon and RssFile parts (maxima are per column); eosproxy %s.\n\n",
		br.Records, txnRecordSize, br.WriteSeconds, br.WriteMBps, br.DiskMiB, br.DiskApparentMiB, br.BackendRecordsWhileOpen, br.BackendRecordsAfterEnd, br.End, fmtNum(br.EndMs), rssSampleEvery, br.ChildExit)
	fmt.Fprintf(w, "**%s**\n\n", br.Verdict)
}

// cell is a table cell: a slot's median of a row's metric, with the row's
// companion metric beside it.
func (wr *workloadResult) cell(r row, slot string) string {
	s := fmtNum(wr.median(slot, r.metric)) + " " + r.unit
	if r.also != "" {
		s += fmt.Sprintf(" (%s %s)", fmtNum(wr.median(slot, r.also)), r.alsoUnit)
	}
	return s
}

// maxOf is the largest value of a metric over a slot's phases.
func (wr *workloadResult) maxOf(slot, metric string) string {
	var v []float64
	for _, m := range wr.Phases[slot] {
		v = append(v, m[metric])
	}
	if len(v) == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f", slices.Max(v))
}

func (rep *report) writeJSON(path string) error {
	data, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(data, '\n'), 0o644)
}

// fmtNum prints a number with about three significant digits.
func fmtNum(v float64) string {
	switch a := max(v, -v); {
	case a >= 1e6:
		return fmt.Sprintf("%.2fM", v/1e6)
	case a >= 1e4:
		return fmt.Sprintf("%.0fk", v/1e3)
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	case a >= 1:
		return fmt.Sprintf("%.2f", v)
	default:
		return fmt.Sprintf("%.3f", v)
	}
}

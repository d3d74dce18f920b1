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
	Backend    string           `json:"backend"`
	ProxyState string           `json:"proxy_state"`
	GOMAXPROCS int              `json:"gomaxprocs"`
	NumCPU     int              `json:"num_cpu"`
	GoVersion  string           `json:"go_version"`
	Phase      string           `json:"phase"`
	Rounds     int              `json:"rounds"`
	Elapsed    string           `json:"elapsed"`
	Workloads  []workloadResult `json:"workloads"`
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
	row              row
}

func (wr *workloadResult) summarize(w *workload) {
	wr.About = w.about
	wr.Idempotence = w.idem
	wr.Transactions = w.txn
	wr.rows = w.rows
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
		if w.idem {
			c.ProxyPlainMedian = wr.median(slotProxyPlain, r.metric)
			c.PlainRatio = c.ProxyMedian / c.ProxyPlainMedian
		}
		if r.latency {
			c.Diff = c.ProxyMedian - c.DirectMedian
			c.AADiff = c.AA2Median - c.AA1Median
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

// idemTarget is what issue 3 asks of idempotent produce through eosproxy,
// against both the backend's own idempotence and eosproxy's plain path.
const idemTarget = 0.9

func (rep *report) print(w io.Writer) {
	fmt.Fprintf(w, "\n## eosbench: direct vs through eosproxy\n\n")
	fmt.Fprintf(w, "backend: %s; eosproxy state: %s; GOMAXPROCS %d; %d round(s) of %s phases; run time %s\n\n",
		rep.Backend, rep.ProxyState, rep.GOMAXPROCS, rep.Rounds, rep.Phase, rep.Elapsed)
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
	if len(plain) > 0 {
		fmt.Fprintln(w, "| workload | direct median | proxy median | proxy/direct | A/A noise (direct/direct) |")
		fmt.Fprintln(w, "|---|---:|---:|---:|---:|")
		for _, wr := range plain {
			for _, c := range wr.Comparisons {
				r := c.row
				ratio := fmt.Sprintf("%.2fx", c.Ratio)
				aa := fmt.Sprintf("%.2fx", c.AARatio)
				if r.latency {
					ratio = fmt.Sprintf("%+.3f ms (%.2fx)", c.Diff, c.Ratio)
					aa = fmt.Sprintf("%+.3f ms (%.2fx)", c.AADiff, c.AARatio)
				}
				fmt.Fprintf(w, "| %s | %s | %s | %s | %s |\n", r.label, wr.cell(r, slotDirect), wr.cell(r, slotProxy), ratio, aa)
			}
		}
		fmt.Fprintln(w)
	}
	if len(idem) > 0 {
		rep.printIdempotence(w, idem)
	}
	if len(txn) > 0 {
		rep.printTransactions(w, txn)
	}
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
	fmt.Fprintf(w, "Other processes on the machine used a median %.2f cores (max %.2f) during the phases", median(others), slices.Max(others))
	if slices.Max(others) > 0.3 {
		fmt.Fprintf(w, ": they competed for CPU, so expect a wider spread")
	}
	fmt.Fprintln(w, ".")
	fmt.Fprintf(w, "\nPer-phase values, in run order (the spread behind each median):\n\n")
	for _, wr := range rep.Workloads {
		if wr.Buffer != nil {
			continue
		}
		slots := []string{slotDirect, slotProxy, slotAA1, slotAA2}
		if wr.Idempotence {
			slots = []string{slotDirect, slotProxy, slotProxyPlain, slotAA1, slotAA2}
		}
		type shown struct{ label, metric string }
		var lines []shown
		for _, c := range wr.Comparisons {
			lines = append(lines, shown{c.row.label + " " + c.Unit, c.Metric})
		}
		if wr.Idempotence {
			// How each path kept the producer's pipe full.
			lines = append(lines,
				shown{wr.Name + " max produce requests in flight per broker", "max inflight"},
				shown{wr.Name + " produce requests/s", "req/s"},
				shown{wr.Name + " KiB per produce request", "KiB/req"},
				shown{wr.Name + " ms per produce request (write to answer)", "ms/req"})
		}
		if wr.Transactions {
			lines = append(lines,
				shown{wr.Name + " flush+commit p50 ms", "flush+commit p50 ms"},
				shown{wr.Name + " transactions/s", "txn/s"},
				shown{wr.Name + " records per transaction", "rec/txn"})
		}
		for _, l := range lines {
			var parts []string
			for _, slot := range slots {
				var vs []string
				for _, m := range wr.Phases[slot] {
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

// printIdempotence prints the idempotence comparison of issue 3: idempotent
// produce through eosproxy (P) against idempotent produce direct (D) and
// against plain produce through eosproxy (Q).
func (rep *report) printIdempotence(w io.Writer, idem []workloadResult) {
	fmt.Fprintf(w, "### idempotence: idempotent produce through eosproxy (P) vs idempotent direct (D) and plain through eosproxy (Q); target >= %.1fx both\n\n", idemTarget)
	fmt.Fprintln(w, "| workload | D: idempotent, direct | P: idempotent, eosproxy | Q: plain, eosproxy | P/D | P/Q | A/A noise (D/D) |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|")
	below := false
	ratio := func(v float64) string {
		if v < idemTarget {
			below = true
			return fmt.Sprintf("%.2fx *", v)
		}
		return fmt.Sprintf("%.2fx", v)
	}
	var inflight []string
	for _, wr := range idem {
		for _, c := range wr.Comparisons {
			r := c.row
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %.2fx |\n", r.label,
				wr.cell(r, slotDirect), wr.cell(r, slotProxy), wr.cell(r, slotProxyPlain),
				ratio(c.Ratio), ratio(c.PlainRatio), c.AARatio)
		}
		inflight = append(inflight, fmt.Sprintf("%s D %s, P %s, Q %s", wr.Name,
			wr.maxOf(slotDirect, "max inflight"), wr.maxOf(slotProxy, "max inflight"), wr.maxOf(slotProxyPlain, "max inflight")))
	}
	fmt.Fprintln(w)
	if below {
		fmt.Fprintf(w, "\\* below the %.1fx target; judge it against the A/A noise.\n\n", idemTarget)
	}
	fmt.Fprintf(w, "D and P: kgo's default idempotent producer, acks=all. Q: the same producer with idempotence off, so P/Q is what eosproxy's own idempotence costs (producer-state checks, re-signed batches, state fsynced before each answer). "+
		"Both keep at most 5 produce requests in flight per broker: kgo's fixed limit with idempotence on (1 until the first answer, then 5 for Produce v4+), and MaxProduceRequestsInflightPerBroker(5) for Q. "+
		"Most seen in flight on one broker: %s.\n\n", strings.Join(inflight, "; "))
}

// printTransactions prints the transaction comparison: transactional
// produce through eosproxy, eosproxy being the coordinator (P), against the
// same client using the backend's native transactions (D).
func (rep *report) printTransactions(w io.Writer, txn []workloadResult) {
	fmt.Fprintf(w, "### transactions: transactional produce through eosproxy (P) vs native transactions direct (D); target committed throughput >= %.1fx, commit p99 <= D + %.0f ms\n\n", txnTarget, txnCommitSlackMs)
	fmt.Fprintln(w, "| workload | D: native, direct | P: through eosproxy | P/D | P - D | target | A/A noise (D/D) |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---|---:|")
	missed := false
	verdict := func(ok bool, s string) string {
		if !ok {
			missed = true
			return s + ": MISS *"
		}
		return s + ": ok"
	}
	for _, wr := range txn {
		for _, c := range wr.Comparisons {
			r := c.row
			diff, target := "", ""
			aa := fmt.Sprintf("%.2fx", c.AARatio)
			switch {
			case r.latency:
				diff = fmt.Sprintf("%+.2f ms", c.Diff)
				aa = fmt.Sprintf("%+.2f ms (%.2fx)", c.AADiff, c.AARatio)
				if c.Metric == "commit p99 ms" {
					target = verdict(c.Diff <= txnCommitSlackMs, fmt.Sprintf("<= +%.0f ms", txnCommitSlackMs))
				}
			default:
				target = verdict(c.Ratio >= txnTarget, fmt.Sprintf(">= %.2fx", txnTarget))
			}
			fmt.Fprintf(w, "| %s | %s | %s | %.2fx | %s | %s | %s |\n", r.label,
				wr.cell(r, slotDirect), wr.cell(r, slotProxy), c.Ratio, diff, target, aa)
		}
	}
	fmt.Fprintln(w)
	if missed {
		fmt.Fprintf(w, "\\* misses the target; judge it against the A/A noise.\n\n")
	}
	var shape []string
	for _, wr := range txn {
		shape = append(shape, fmt.Sprintf("%s D %s txn/s of %s records, P %s txn/s of %s records", wr.Name,
			fmtNum(wr.median(slotDirect, "txn/s")), fmtNum(wr.median(slotDirect, "rec/txn")),
			fmtNum(wr.median(slotProxy, "txn/s")), fmtNum(wr.median(slotProxy, "rec/txn"))))
	}
	fmt.Fprintf(w, "Each phase: one kgo transactional producer (idempotent, acks=all, a transactional.id of its own, %v transaction timeout, %d MiB client buffer), "+
		"BeginTransaction, 1 KiB records produced async as fast as possible until the commit is due, Flush, EndTransaction(TryCommit). "+
		"Committed: records whose transaction committed, per second. Commit: the EndTransaction call alone, after Flush returned. "+
		"Flush+commit: from when the commit was due to EndTransaction's return. Medians over rounds of each phase's p50/p99 (%s).\n\n",
		txnTimeout, txnBufferedBytes>>20, strings.Join(shape, "; "))
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

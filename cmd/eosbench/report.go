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
	// Phases holds every phase's metrics per slot, in run order.
	Phases      map[string][]metrics `json:"phases"`
	Comparisons []comparison         `json:"comparisons"`
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
	row          row
}

func (wr *workloadResult) summarize(w *workload) {
	wr.About = w.about
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

func (rep *report) print(w io.Writer) {
	fmt.Fprintf(w, "\n## eosbench: direct vs through eosproxy\n\n")
	fmt.Fprintf(w, "backend: %s; GOMAXPROCS %d; %d round(s) of %s phases; run time %s\n\n",
		rep.Backend, rep.GOMAXPROCS, rep.Rounds, rep.Phase, rep.Elapsed)
	fmt.Fprintln(w, "| workload | direct median | proxy median | proxy/direct | A/A noise (direct/direct) |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|")
	for _, wr := range rep.Workloads {
		for _, c := range wr.Comparisons {
			r := c.row
			cell := func(slot string, med float64) string {
				s := fmtNum(med) + " " + r.unit
				if r.also != "" {
					s += fmt.Sprintf(" (%s %s)", fmtNum(wr.median(slot, r.also)), r.alsoUnit)
				}
				return s
			}
			ratio := fmt.Sprintf("%.2fx", c.Ratio)
			aa := fmt.Sprintf("%.2fx", c.AARatio)
			if r.latency {
				ratio = fmt.Sprintf("%+.3f ms (%.2fx)", c.Diff, c.Ratio)
				aa = fmt.Sprintf("%+.3f ms (%.2fx)", c.AADiff, c.AARatio)
			}
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s |\n", r.label, cell(slotDirect, c.DirectMedian), cell(slotProxy, c.ProxyMedian), ratio, aa)
		}
	}
	var others []float64
	for _, wr := range rep.Workloads {
		for _, ms := range wr.Phases {
			for _, m := range ms {
				others = append(others, m["others cores"])
			}
		}
	}
	fmt.Fprintf(w, "\nOther processes on the machine used a median %.2f cores (max %.2f) during the phases", median(others), slices.Max(others))
	if slices.Max(others) > 0.3 {
		fmt.Fprintf(w, ": they competed for CPU, so expect a wider spread")
	}
	fmt.Fprintln(w, ".")
	fmt.Fprintf(w, "\nPer-phase values, in run order (the spread behind each median):\n\n")
	for _, wr := range rep.Workloads {
		for _, c := range wr.Comparisons {
			var parts []string
			for _, slot := range []string{slotDirect, slotProxy, slotAA1, slotAA2} {
				var vs []string
				for _, m := range wr.Phases[slot] {
					vs = append(vs, fmtNum(m[c.Metric]))
				}
				parts = append(parts, fmt.Sprintf("%s [%s]", slot, strings.Join(vs, " ")))
			}
			fmt.Fprintf(w, "- %s %s: %s\n", c.row.label, c.Unit, strings.Join(parts, ", "))
		}
	}
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

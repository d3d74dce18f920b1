package main

import (
	"context"
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/eosproxy/eosproxy/metrics"
	"github.com/eosproxy/eosproxy/proxy"
)

// describing records the name of every metric registered through it, with
// or without samples yet (a label set seen only on errors, say).
type describing struct {
	*prometheus.Registry
	names map[string]bool
}

var fqName = regexp.MustCompile(`fqName: "([^"]+)"`)

func (d describing) Register(c prometheus.Collector) error {
	ch := make(chan *prometheus.Desc, 64)
	go func() { c.Describe(ch); close(ch) }()
	for desc := range ch {
		if m := fqName.FindStringSubmatch(desc.String()); m != nil {
			d.names[m[1]] = true
		}
	}
	return d.Registry.Register(c)
}

func (d describing) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := d.Register(c); err != nil {
			panic(err)
		}
	}
}

// Every metric the dashboard's queries name is one a running eosproxy
// exports (through the registry main serves).
func TestDashboardMetrics(t *testing.T) {
	kf, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer kf.Close()
	reg := describing{metrics.NewRegistry(), map[string]bool{}}
	p, err := proxy.New(proxy.Config{Listen: "127.0.0.1:0", Upstreams: kf.ListenAddrs(), NoInstanceLease: true, Metrics: reg, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	p.Start(context.Background())
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		reg.names[mf.GetName()] = true
	}

	raw, err := os.ReadFile("../../integration/grafana/eosproxy.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatal(err)
	}
	// Metric names: the families eosproxy, the Go runtime and the process
	// export; PromQL's functions and labels match none of these prefixes.
	name := regexp.MustCompile(`\b(?:eosproxy|go|process)_[a-zA-Z0-9_:]+`)
	used := 0
	for _, pn := range dash.Panels {
		for _, tg := range pn.Targets {
			for _, n := range name.FindAllString(tg.Expr, -1) {
				used++
				base := n
				for _, suffix := range []string{"_bucket", "_sum", "_count"} {
					if b, ok := strings.CutSuffix(n, suffix); ok && reg.names[b] {
						base = b
					}
				}
				if !reg.names[base] {
					t.Errorf("panel %q queries %s, which eosproxy does not export", pn.Title, n)
				}
			}
		}
	}
	if used < 20 {
		t.Fatalf("only %d metric names found in the dashboard's queries", used)
	}
}

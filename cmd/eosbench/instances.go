package main

// Proxy configurations (--instances, --compare-instances): the proxy phases
// run through a single eosproxy instance (0, today's mode, without
// --cluster), or through a cluster of N eosproxy child processes
// (--cluster NAME, a name unique to the run), each with its own ports and
// data dir, whose clients list every instance as a seed: a standby relays
// the connection to the owner, whose metadata then names its own listeners.
// --compare-instances runs several configurations in one run, each in a
// slot of its own, interleaved with the direct phases as the proxy slot is,
// so that all see the same drift.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// parseInstances reads --compare-instances: instance counts, 0 for the
// single instance without --cluster, each at most once.
func parseInstances(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 0 || n > 9 {
			return nil, fmt.Errorf("want instance counts from 0 (single instance, no --cluster) to 9, got %q", f)
		}
		if slices.Contains(out, n) {
			return nil, fmt.Errorf("%d named twice", n)
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, errors.New("no instance counts")
	}
	return out, nil
}

// configLabel names a configuration in the report.
func configLabel(instances int) string {
	if instances == 0 {
		return "single"
	}
	return fmt.Sprintf("cluster of %d", instances)
}

// proxySlotFor is the slot of a configuration's proxy phases: "proxy"
// when the run has one configuration (the report is then today's), else
// one slot per configuration.
func proxySlotFor(instances int, compare bool) string {
	if !compare {
		return slotProxy
	}
	if instances == 0 {
		return "proxy-single"
	}
	return fmt.Sprintf("proxy-cluster%d", instances)
}

// proxySet is one configuration of eosproxy child processes.
type proxySet struct {
	instances int    // 0: one instance without --cluster
	label     string // configLabel
	slot      string // its proxy slot
	cluster   string // --cluster name; empty for the single instance
	children  []*proxyChild
	args      [][]string
	seeds     []string   // every instance's bootstrap address
	idle      idleCost   // summed over the children
	idles     []idleCost // each child's
	owner     int        // index of the child that serves
	failovers int        // owner changes seen between phases
}

// logTopic is the backend topic the cluster's owner writes every state
// change to; empty for the single instance.
func (s *proxySet) logTopic() string {
	if s.cluster == "" {
		return ""
	}
	return "__eosproxy_" + s.cluster + "_log"
}

// clusterArgs are the flags that make a child an instance of cluster name.
func clusterArgs(name string) []string {
	return []string{"--cluster", name}
}

// startProxySet starts a configuration's children (each with a data dir of
// its own under dir), waits until one serves and measures their idle cost.
func startProxySet(ctx context.Context, b *bench, instances int, compare bool, dir string, extra []string, log io.Writer) (*proxySet, error) {
	s := &proxySet{instances: instances, label: configLabel(instances), slot: proxySlotFor(instances, compare)}
	n := max(1, instances)
	if instances > 0 {
		s.cluster = fmt.Sprintf("eosbench-%s-%d", b.runID, instances)
	}
	for i := range n {
		sub := filepath.Join(dir, fmt.Sprintf("%s-%d", strings.ReplaceAll(s.label, " ", "-"), i))
		if err := os.MkdirAll(sub, 0o755); err != nil {
			s.stop(b)
			return nil, err
		}
		args := slices.Clone(extra)
		if s.cluster != "" {
			args = append(clusterArgs(s.cluster), args...)
		}
		pc, a, err := startProxyChild(ctx, b.proxyBin, b.direct, b.brokers, sub, args, log)
		if err != nil {
			s.stop(b)
			return nil, fmt.Errorf("%s, instance %d: %w", s.label, i, err)
		}
		s.children = append(s.children, pc)
		s.args = append(s.args, a)
		s.seeds = append(s.seeds, pc.listen)
	}
	owner, err := s.findOwner(ctx)
	if err != nil {
		s.stop(b)
		return nil, err
	}
	s.owner = owner
	// Each child's idle cost, measured at the same time, summed: the
	// window's counters are the children's sums.
	idles := make([]idleCost, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, c := range s.children {
		wg.Add(1)
		go func() {
			defer wg.Done()
			idles[i], errs[i] = c.measureIdle(ctx)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		s.stop(b)
		return nil, fmt.Errorf("%s: eosproxy children's cost counters: %w", s.label, err)
	}
	for _, ic := range idles {
		s.idle.Scrape.mallocs += ic.Scrape.mallocs
		s.idle.Scrape.allocBytes += ic.Scrape.allocBytes
		s.idle.PerSecond.cpu += ic.PerSecond.cpu
		s.idle.PerSecond.mallocs += ic.PerSecond.mallocs
		s.idle.PerSecond.allocBytes += ic.PerSecond.allocBytes
	}
	s.idles = idles
	s.idle.ScrapeAllocs = s.idle.Scrape.mallocs
	s.idle.IdleAllocsPerS, s.idle.IdleBytesPerS = s.idle.PerSecond.mallocs, s.idle.PerSecond.allocBytes
	s.idle.IdleCores = s.idle.PerSecond.cpu.Seconds()
	return s, nil
}

// describe says what runs, for the report.
func (s *proxySet) describe() string {
	var pids []string
	for i, c := range s.children {
		p := strconv.Itoa(c.cmd.Process.Pid)
		if s.cluster != "" && i == s.owner {
			p += " (owner)"
		}
		pids = append(pids, p)
	}
	what := "one instance"
	if s.cluster != "" {
		what = fmt.Sprintf("--cluster %s, %d instances", s.cluster, len(s.children))
	}
	return fmt.Sprintf("%s: %s, pid %s, seeds %s", s.label, what, strings.Join(pids, ", "), strings.Join(s.seeds, ","))
}

// findOwner asks the configuration, through any of its instances, for
// metadata until the answer names the listeners of one of them: that
// instance serves (a standby relays the request to it). Up to a minute:
// the first owner waits for the backend's consumer group.
func (s *proxySet) findOwner(ctx context.Context) (int, error) {
	if len(s.children) == 1 && s.cluster == "" {
		return 0, nil
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var last error
	for {
		i, err := s.askOwner(ctx)
		if err == nil {
			return i, nil
		}
		last = err
		select {
		case <-ctx.Done():
			return -1, fmt.Errorf("%s: no instance serves after a minute: %w", s.label, last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (s *proxySet) askOwner(ctx context.Context) (int, error) {
	// A fresh client each time: one that knew the old owner's listeners
	// would ask them.
	cl, err := kgo.NewClient(kgo.SeedBrokers(s.seeds...), kgo.RequestRetries(0))
	if err != nil {
		return -1, err
	}
	defer cl.Close()
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := kmsg.NewPtrMetadataRequest().RequestWith(rctx, cl)
	if err != nil {
		return -1, err
	}
	for _, br := range resp.Brokers {
		if i := s.ownerOfPort(br.Port); i >= 0 {
			return i, nil
		}
	}
	return -1, fmt.Errorf("metadata names no instance's broker listener: %v", resp.Brokers)
}

// ownerOfPort is the child whose broker listeners include port, or -1.
func (s *proxySet) ownerOfPort(port int32) int {
	for i, c := range s.children {
		if int(port) >= c.brokerLo && int(port) <= c.brokerHi {
			return i
		}
	}
	return -1
}

// checkOwner, before a phase, notes whether another instance took over
// since the last look (e.g. a session lost on a starved machine).
func (s *proxySet) checkOwner(ctx context.Context) error {
	if s == nil || s.cluster == "" {
		return nil
	}
	for i, c := range s.children {
		select {
		case <-c.exited:
			return fmt.Errorf("%s: instance %d (pid %d) exited: %v: %s", s.label, i, c.cmd.Process.Pid, c.cmd.ProcessState, strings.Join(c.log.lines(), " | "))
		default:
		}
	}
	owner, err := s.findOwner(ctx)
	if err != nil {
		return err
	}
	if owner != s.owner {
		s.failovers++
		progress("%s: instance %d (pid %d) serves now, instead of %d", s.label, owner, s.children[owner].cmd.Process.Pid, s.owner)
		s.owner = owner
	}
	return nil
}

// stop stops every child, standbys first (so that the owner does not
// hand over to one of them on the way out), and removes the cluster's
// topics and group from the backend.
func (s *proxySet) stop(b *bench) {
	order := slices.Clone(s.children)
	if s.owner >= 0 && s.owner < len(order) {
		o := order[s.owner]
		order = append(slices.Delete(order, s.owner, s.owner+1), o)
	}
	var wg sync.WaitGroup
	for _, c := range order[:max(0, len(order)-1)] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if exit := c.stop(); !strings.Contains(exit, "exit status 0") {
				progress("eosproxy child %d (%s): %s", c.cmd.Process.Pid, s.label, exit)
			}
		}()
	}
	wg.Wait()
	if len(order) > 0 {
		c := order[len(order)-1]
		if exit := c.stop(); !strings.Contains(exit, "exit status 0") {
			progress("eosproxy child %d (%s): %s", c.cmd.Process.Pid, s.label, exit)
		}
	}
	s.children = nil
	if s.cluster == "" || b.admin == nil {
		return
	}
	// Best effort, as for the workloads' topics: leave no data behind.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	name := "__eosproxy_" + s.cluster
	if _, err := b.admin.DeleteTopics(ctx, name+"_log", name+"_owner"); err != nil {
		progress("%s: delete the cluster's topics: %v", s.label, err)
	}
	if _, err := b.admin.DeleteGroups(ctx, name); err != nil {
		progress("%s: delete the cluster's group: %v", s.label, err)
	}
}

// cost reads every child's counters: their sum, and the owner's own.
func (s *proxySet) cost(ctx context.Context) (sum, owner procCost, err error) {
	sum.at = time.Now()
	for i, c := range s.children {
		pc, err := c.cost(ctx)
		if err != nil {
			return sum, owner, fmt.Errorf("instance %d: %w", i, err)
		}
		sum.cpu += pc.cpu
		sum.mallocs += pc.mallocs
		sum.allocBytes += pc.allocBytes
		if i == s.owner {
			owner = pc
		}
	}
	return sum, owner, nil
}

// logSizes reads the backend's size of the cluster's log and of the
// workload's topic (all partitions), as DescribeLogDirs reports them: the
// bytes the backend stores, batch headers included, one replica (the
// largest) per partition.
func logSizes(ctx context.Context, adm *kadm.Client, logTopic, topic string) (logBytes, topicBytes int64, err error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	set := kadm.TopicsSet{logTopic: {0: {}}, topic: {}}
	for p := range int32(topicPartitions) {
		set[topic][p] = struct{}{}
	}
	all, err := adm.DescribeAllLogDirs(ctx, set)
	if err != nil {
		return 0, 0, fmt.Errorf("describe log dirs: %w", err)
	}
	size := map[string]map[int32]int64{}
	for _, dirs := range all {
		dirs.EachPartition(func(p kadm.DescribedLogDirPartition) {
			if size[p.Topic] == nil {
				size[p.Topic] = map[int32]int64{}
			}
			size[p.Topic][p.Partition] = max(size[p.Topic][p.Partition], p.Size)
		})
	}
	for _, v := range size[logTopic] {
		logBytes += v
	}
	for _, v := range size[topic] {
		topicBytes += v
	}
	if _, ok := size[logTopic]; !ok {
		return 0, 0, fmt.Errorf("no size of %s in the backend's log dirs", logTopic)
	}
	return logBytes, topicBytes, nil
}

// addLogCost adds, for a cluster's phase, what its log took in the backend
// over the window: MB/s, bytes per byte of record values carried, and
// bytes per byte the workload's own topic grew by. A trim of the log
// (after a checkpoint) inside the window makes the figures meaningless:
// they are then left out.
func (b *bench) addLogCost(m metrics) {
	w := b.win
	if !w.active || w.marks != 2 || b.cur == nil || b.cur.cluster == "" || w.logErr != nil {
		return
	}
	secs := w.end.at.Sub(w.start.at).Seconds()
	logBytes := w.logEnd - w.logStart
	if secs <= 0 || logBytes < 0 {
		return
	}
	m["log MB/s"] = float64(logBytes) / secs / 1e6
	if carried := m["MB/s"] * 1e6 * secs; carried > 0 {
		m["log B/B"] = float64(logBytes) / carried
	}
	if recs := m["rec/s"] * secs; recs > 0 {
		m["log B/rec"] = float64(logBytes) / recs
	}
	if grew := w.topicEnd - w.topicStart; grew > 0 {
		m["log B/topic B"] = float64(logBytes) / float64(grew)
	}
}

// ownerCost adds the owner's own share of a cluster's cost.
func (b *bench) ownerCost(m metrics) {
	w := b.win
	if !w.active || w.marks != 2 || b.cur == nil || b.cur.cluster == "" {
		return
	}
	secs := w.ownerEnd.at.Sub(w.ownerStart.at).Seconds()
	if secs <= 0 {
		return
	}
	idle := b.cur.idles[b.cur.owner].PerSecond.cpu.Seconds()
	m["owner cores"] = max(0, (w.ownerEnd.cpu-w.ownerStart.cpu).Seconds()/secs-idle)
}

// portsTaken are the ports given to children in this run: a standby binds
// only its bootstrap port, so a free-port probe cannot see the broker ports
// it takes once it serves.
var portsTaken struct {
	sync.Mutex
	ranges [][2]int
}

// takePorts finds n consecutive free ports that no child of this run was
// given, and records them.
func takePorts(n int, free func(n int) (int, error)) (int, error) {
	portsTaken.Lock()
	defer portsTaken.Unlock()
	for range 100 {
		base, err := free(n)
		if err != nil {
			return 0, err
		}
		if !slices.ContainsFunc(portsTaken.ranges, func(r [2]int) bool { return base < r[1] && r[0] < base+n }) {
			portsTaken.ranges = append(portsTaken.ranges, [2]int{base, base + n})
			return base, nil
		}
	}
	return 0, fmt.Errorf("no %d free ports apart from this run's", n)
}

// proxySlots are the run's proxy slots, one per configuration, in the
// order of --compare-instances.
func (b *bench) proxySlots() []string {
	var slots []string
	for _, n := range b.cfg.instances {
		slots = append(slots, proxySlotFor(n, b.cfg.compare()))
	}
	return slots
}

// isProxySlot says whether a slot's phases run through eosproxy.
func (b *bench) isProxySlot(slot string) bool {
	return slot == slotProxyPlain || slices.Contains(b.proxySlots(), slot)
}

// configInfo describes the configurations for the report.
type configInfo struct {
	Label     string   `json:"label"`
	Slot      string   `json:"slot"`
	Instances int      `json:"instances"` // 0: one instance without --cluster
	Cluster   string   `json:"cluster,omitempty"`
	PIDs      []int    `json:"pids"`
	Owner     int      `json:"owner"` // index in PIDs of the instance that served at the start
	Args      []string `json:"args"`  // the first instance's flags
	Idle      idleCost `json:"idle"`  // summed over the instances
	Failovers int      `json:"failovers,omitempty"`
}

func (b *bench) configInfo() []configInfo {
	var out []configInfo
	for _, s := range b.sets {
		ci := configInfo{Label: s.label, Slot: s.slot, Instances: s.instances, Cluster: s.cluster, Owner: s.owner, Idle: s.idle, Failovers: s.failovers}
		for _, c := range s.children {
			ci.PIDs = append(ci.PIDs, c.cmd.Process.Pid)
		}
		if len(s.args) > 0 {
			ci.Args = s.args[0]
		}
		out = append(out, ci)
	}
	return out
}

// firstIdle is the first configuration's idle cost (the report's
// proxy_idle, as before configurations).
func (b *bench) firstIdle() idleCost {
	if len(b.sets) == 0 {
		return idleCost{}
	}
	return b.sets[0].idle
}

package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// metrics is one phase's result, by metric name.
type metrics map[string]float64

// row is one line of the result table: a metric compared across the sides.
type row struct {
	label  string
	metric string
	unit   string
	// latency rows compare by difference (+ms) as well as by ratio; a
	// ratio of small latencies alone overstates what a client feels.
	latency bool
	// also is a metric shown beside the main one, e.g. records/s.
	also, alsoUnit string
	// The target for proxy against direct, if it sets one: a
	// ratio at least minRatio, or a difference at most maxDiffMs.
	minRatio, maxDiffMs float64
}

// reqLatencyRows are the latency rows of a throughput workload: the time
// from writing a request of the workload's kind to reading its answer, per
// request, under full load. No target: under load a request's time is
// mostly queueing behind the ones ahead of it.
func reqLatencyRows(kind string) []row {
	return []row{
		{label: kind + " request p50", metric: "req p50 ms", unit: "ms", latency: true},
		{label: kind + " request p99", metric: "req p99 ms", unit: "ms", latency: true},
		{label: kind + " request p999", metric: "req p999 ms", unit: "ms", latency: true},
	}
}

// oneAtATimeRows are the rows of a one-record-at-a-time workload: the
// records per second that gives, and the latency of each ProduceSync
// against the target for the hop (+0.1 ms p50, +0.25 ms p99).
func oneAtATimeRows(name string) []row {
	return []row{
		{label: name + " throughput", metric: "rec/s", unit: "rec/s"},
		{label: name + " p50", metric: "p50 ms", unit: "ms", latency: true, maxDiffMs: 0.1},
		{label: name + " p99", metric: "p99 ms", unit: "ms", latency: true, maxDiffMs: 0.25},
		{label: name + " p999", metric: "p999 ms", unit: "ms", latency: true},
	}
}

type workload struct {
	name    string
	about   string
	prepare func(ctx context.Context, b *bench, topic string) error
	// phase runs one phase of the given slot against seeds.
	phase   func(ctx context.Context, b *bench, slot string, seeds []string, topic string) (metrics, error)
	cleanup func(ctx context.Context, b *bench, topic string) error
	rows    []row
	// idem marks an idempotence comparison: its direct and proxy slots run
	// an idempotent producer, and a third slot, proxy-plain, runs a plain
	// one through eosproxy.
	idem bool
	// txn marks a transactional comparison (the txn-* workloads), reported
	// against its own targets.
	txn bool
	// single, when set, replaces the rounds of phases: one measurement that
	// is only meaningful through eosproxy (txn-buffer). Such a workload has
	// no phase and no rows, and runs only when asked for by name.
	single func(ctx context.Context, b *bench, topic string) (*bufferResult, error)
}

var workloads = []*workload{
	produceWorkload("produce-100B", 100),
	produceWorkload("produce-1KiB", 1024),
	produceIdemWorkload("produce-idem-100B", 100),
	produceIdemWorkload("produce-idem-1KiB", 1024),
	{
		name:    "consume",
		about:   "fresh consumer per phase reading a pre-produced data set of 1 KiB records from the start",
		prepare: prepareConsume,
		phase:   consumePhase,
		rows: append([]row{{label: "consume", metric: "MB/s", unit: "MB/s", also: "rec/s", alsoUnit: "rec/s", minRatio: 0.95}},
			reqLatencyRows("consume: fetch")...),
	},
	{
		name:  "latency",
		about: "one-at-a-time ProduceSync of 100-byte records, plain producer, acks=all, no linger",
		phase: func(ctx context.Context, b *bench, _ string, seeds []string, topic string) (metrics, error) {
			return latencyPhase(ctx, b, producerOpts(seeds, topic))
		},
		cleanup: trimTopic,
		rows:    oneAtATimeRows("latency"),
	},
	{
		name:  "latency-idem",
		about: "as latency but idempotent (kgo default): D the backend's idempotence, P eosproxy's, Q the plain producer through eosproxy",
		phase: func(ctx context.Context, b *bench, slot string, seeds []string, topic string) (metrics, error) {
			opts := idemProducerOpts(seeds, topic)
			if slot == slotProxyPlain {
				opts = producerOpts(seeds, topic)
			}
			return latencyPhase(ctx, b, opts)
		},
		cleanup: trimTopic,
		rows:    oneAtATimeRows("latency-idem"),
		idem:    true,
	},
	txnWorkload("txn-1KiB-100ms", 100*time.Millisecond, 0),
	txnWorkload("txn-1KiB-1000rec", 0, 1000),
	{
		name:   "txn-buffer",
		about:  "eosproxy as a child process: RSS while one open transaction buffers --txn-buffer-bytes of 1 KiB records, then the time to abort (or commit) it",
		single: txnBufferRun,
	},
}

// workloadNames lists every workload; defaultWorkloads those run when
// --workloads is not given, which leaves out the single measurements.
func workloadNames() []string {
	var names []string
	for _, w := range workloads {
		names = append(names, w.name)
	}
	return names
}

func defaultWorkloads() []string {
	var names []string
	for _, w := range workloads {
		if w.single == nil {
			names = append(names, w.name)
		}
	}
	return names
}

func findWorkload(name string) *workload {
	for _, w := range workloads {
		if w.name == name {
			return w
		}
	}
	return nil
}

func (w *workload) summary(m metrics) string {
	var parts []string
	for _, r := range w.rows {
		parts = append(parts, fmt.Sprintf("%s=%s", r.metric, fmtNum(m[r.metric])))
		if r.also != "" {
			parts = append(parts, fmt.Sprintf("%s=%s", r.also, fmtNum(m[r.also])))
		}
	}
	if v, ok := m["max inflight"]; ok {
		parts = append(parts, fmt.Sprintf("inflight<=%.0f", v))
	}
	parts = append(parts, fmt.Sprintf("cores=%.2f others=%.2f", m["cores"], m["others cores"]))
	if v, ok := m["proxy cores"]; ok {
		parts = append(parts, fmt.Sprintf("eosproxy=%.2f", v))
	}
	if v, ok := m["backend cores"]; ok {
		parts = append(parts, fmt.Sprintf("broker=%.2f", v))
	}
	return strings.Join(parts, " ")
}

// producerOpts are shared by every plain producing workload. Idempotence is
// off so that the proxy is measured passing records through, not the
// producer-state bookkeeping; five requests in flight per broker is what an
// idempotent producer uses (see idemProducerOpts), so the pipe stays as full
// as it would be by default. No compression: the proxy then carries the full
// payload, and the client's CPU does not go to compressing it.
func producerOpts(seeds []string, topic string) []kgo.Opt {
	return []kgo.Opt{
		kgo.SeedBrokers(seeds...),
		kgo.DefaultProduceTopic(topic),
		kgo.DisableIdempotentWrite(),
		kgo.MaxProduceRequestsInflightPerBroker(5),
		kgo.ProducerBatchCompression(kgo.NoCompression()),
		kgo.RequiredAcks(kgo.AllISRAcks()),
	}
}

// idemProducerOpts are producerOpts with kgo's default idempotence left on.
// kgo then refuses MaxProduceRequestsInflightPerBroker and sets the limit
// itself: one produce request in flight per broker until the first answer,
// then five once that answer shows Produce v4 or later (kgo v1.22 sink.go,
// newSink and firstRespCheck; both Kafka and eosproxy answer v4+). So the
// plain producer's five in flight is the same pipe depth, and the
// idempotence comparison holds it equal; every produce phase records the
// most requests it had in flight to one broker ("max inflight"), so that
// this can be checked in each run.
func idemProducerOpts(seeds []string, topic string) []kgo.Opt {
	return []kgo.Opt{
		kgo.SeedBrokers(seeds...),
		kgo.DefaultProduceTopic(topic),
		kgo.ProducerBatchCompression(kgo.NoCompression()),
		kgo.RequiredAcks(kgo.AllISRAcks()),
	}
}

// produceWorkload produces records of size bytes asynchronously, as fast as
// the client can, with kgo's default linger and batch size.
func produceWorkload(name string, size int) *workload {
	return &workload{
		name:  name,
		about: fmt.Sprintf("async produce of %d-byte records as fast as possible, default linger and batch size", size),
		phase: func(ctx context.Context, b *bench, _ string, seeds []string, topic string) (metrics, error) {
			return producePhase(ctx, b, producerOpts(seeds, topic), size)
		},
		cleanup: trimTopic,
		rows: append([]row{{label: name, metric: "MB/s", unit: "MB/s", also: "rec/s", alsoUnit: "rec/s", minRatio: 0.95}},
			reqLatencyRows(name+": produce")...),
	}
}

// produceIdemWorkload is produceWorkload with an idempotent producer, for
// the comparison issue 3 asks for: idempotent produce through eosproxy
// (slot proxy) against idempotent produce straight to a backend that
// supports it (slot direct), and against plain produce through eosproxy
// (slot proxy-plain), which isolates what eosproxy's own idempotence costs:
// producer-state checks, re-signing batches, and the group-committed state
// writes (before each answer only on a backend without idempotence). The
// plain producer keeps the same pipe
// depth, five requests in flight per broker (see idemProducerOpts).
func produceIdemWorkload(name string, size int) *workload {
	return &workload{
		name:  name,
		about: fmt.Sprintf("as produce-%s but idempotent (kgo default, acks=all); proxy-plain: the plain producer through eosproxy, same 5 requests in flight per broker", sizeName(size)),
		phase: func(ctx context.Context, b *bench, slot string, seeds []string, topic string) (metrics, error) {
			opts := idemProducerOpts(seeds, topic)
			if slot == slotProxyPlain {
				opts = producerOpts(seeds, topic)
			}
			return producePhase(ctx, b, opts, size)
		},
		cleanup: trimTopic,
		rows: append([]row{{label: name, metric: "MB/s", unit: "MB/s", also: "rec/s", alsoUnit: "rec/s", minRatio: idemTarget}},
			reqLatencyRows(name+": produce")...),
		idem: true,
	}
}

func sizeName(size int) string {
	if size%1024 == 0 {
		return fmt.Sprintf("%dKiB", size/1024)
	}
	return fmt.Sprintf("%dB", size)
}

// produceStats watches a client's requests of one kind (key: produce, or
// fetch for the consumer): how many are written to a broker and not yet
// answered, the most seen at once on any one broker (kgo calls the write
// hook before the read hook of the same request, but for a race that can
// only make it undercount), and, per completed request, its bytes and its
// time from write to answer, kept one by one while measuring is on. These
// show how a path keeps the pipe full: fewer, larger, slower requests mean
// the path holds batches back.
type produceStats struct {
	key       int16
	mu        sync.Mutex
	now       map[int32]int
	max       int
	reqs      int64
	bytes     int64
	e2e       time.Duration
	measuring bool
	lat       []time.Duration
}

func newReqStats(key int16) *produceStats {
	return &produceStats{key: key, now: map[int32]int{}}
}

// measure turns keeping each request's latency on or off.
func (h *produceStats) measure(on bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.measuring = on
}

// latencies adds the p50/p99/p999 of the requests kept while measuring.
func (h *produceStats) latencies(m metrics) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.lat) == 0 {
		return
	}
	m["req p50 ms"] = quantileMs(h.lat, 0.50)
	m["req p99 ms"] = quantileMs(h.lat, 0.99)
	m["req p999 ms"] = quantileMs(h.lat, 0.999)
	m["req samples"] = float64(len(h.lat))
}

func (h *produceStats) OnBrokerWrite(meta kgo.BrokerMetadata, key int16, _ int, _, _ time.Duration, err error) {
	if key != h.key || err != nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.now[meta.NodeID]++
	h.max = max(h.max, h.now[meta.NodeID])
}

func (h *produceStats) OnBrokerRead(meta kgo.BrokerMetadata, key int16, _ int, _, _ time.Duration, _ error) {
	if key != h.key {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.now[meta.NodeID]--
}

func (h *produceStats) OnBrokerE2E(_ kgo.BrokerMetadata, key int16, e kgo.BrokerE2E) {
	if key != h.key || e.Err() != nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.reqs++
	h.bytes += int64(e.BytesWritten)
	h.e2e += e.DurationE2E()
	if h.measuring {
		h.lat = append(h.lat, e.DurationE2E())
	}
}

// totals reads the counters of completed requests.
func (h *produceStats) totals() (reqs, bytes int64, e2e time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.reqs, h.bytes, h.e2e
}

func (h *produceStats) peak() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.max
}

var (
	produceKey = kmsg.Produce.Int16()
	fetchKey   = kmsg.Fetch.Int16()
)

// producePhase produces with a client built from opts plus the buffer sizes
// every producing phase shares.
func producePhase(ctx context.Context, b *bench, opts []kgo.Opt, size int) (metrics, error) {
	hook := newReqStats(produceKey)
	// Enough buffered records that the client never waits for room while a
	// full pipeline of batches is in flight (5 requests of up to 1 MiB).
	opts = append(opts,
		kgo.MaxBufferedRecords(max(100_000, (64<<20)/size)),
		kgo.MaxBufferedBytes(64<<20),
		kgo.WithHooks(hook),
	)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, err
	}
	defer cl.Close()

	var acked atomic.Int64
	var stopped atomic.Bool
	var failed firstErr
	promise := func(_ *kgo.Record, err error) {
		if err == nil {
			acked.Add(1)
			return
		}
		// Records still buffered when the phase ends fail with the
		// cancellation; only a failure before then is a real one.
		if !stopped.Load() {
			failed.set(err)
		}
	}
	value := recordValues(size) // kgo does not modify a record's value
	pctx, stopProducing := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for pctx.Err() == nil {
			cl.Produce(pctx, &kgo.Record{Value: value()}, promise)
		}
	}()

	n0, t0, err := measureAfter(ctx, warmUp(b.cfg.phase), acked.Load)
	hook.measure(true)
	b.markStart()
	reqs0, bytes0, e2e0 := hook.totals()
	var n1 int64
	var t1 time.Time
	if err == nil {
		n1, t1, err = measureAfter(ctx, b.cfg.phase, acked.Load)
	}
	b.markEnd()
	hook.measure(false)
	reqs1, bytes1, e2e1 := hook.totals()
	stopped.Store(true)
	stopProducing()
	<-done
	if err == nil {
		err = failed.get()
	}
	if err != nil {
		return nil, fmt.Errorf("produce: %w", err)
	}
	secs := t1.Sub(t0).Seconds()
	recs := float64(n1-n0) / secs
	m := metrics{"rec/s": recs, "MB/s": recs * float64(size) / 1e6, "max inflight": float64(hook.peak())}
	if reqs := reqs1 - reqs0; reqs > 0 {
		m["req/s"] = float64(reqs) / secs
		m["KiB/req"] = float64(bytes1-bytes0) / float64(reqs) / 1024
		m["ms/req"] = float64(e2e1-e2e0) / float64(reqs) / 1e6
	}
	hook.latencies(m)
	return m, nil
}

// firstErr keeps the first error reported from any goroutine.
type firstErr struct {
	mu  sync.Mutex
	err error
}

func (f *firstErr) set(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err == nil {
		f.err = err
	}
}

func (f *firstErr) get() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

// measureAfter waits d and then reads a counter, returning it with the time
// it was read.
func measureAfter(ctx context.Context, d time.Duration, read func() int64) (int64, time.Time, error) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return read(), time.Now(), nil
	case <-ctx.Done():
		return 0, time.Time{}, ctx.Err()
	}
}

// trimTopic deletes everything produced so far, so that every phase starts
// on the same, empty log and an in-memory backend does not grow all run.
func trimTopic(ctx context.Context, b *bench, topic string) error {
	ends, err := b.admin.ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return fmt.Errorf("list end offsets: %w", err)
	}
	resps, err := b.admin.DeleteRecords(ctx, ends.Offsets())
	if err == nil {
		err = resps.Error()
	}
	if err != nil {
		return fmt.Errorf("delete records: %w", err)
	}
	return nil
}

const consumeRecordSize = 1024

// prepareConsume produces the data set every consume phase reads, once,
// straight to the backend.
func prepareConsume(ctx context.Context, b *bench, topic string) error {
	n := b.cfg.consumeMB << 20 / consumeRecordSize
	progress("consume: producing the %d MiB data set (%d records of %d bytes)", b.cfg.consumeMB, n, consumeRecordSize)
	cl, err := kgo.NewClient(append(producerOpts(b.direct, topic), kgo.MaxBufferedBytes(64<<20))...)
	if err != nil {
		return err
	}
	defer cl.Close()
	value := recordValues(consumeRecordSize) // kgo does not modify a record's value
	var failed firstErr
	for range n {
		cl.Produce(ctx, &kgo.Record{Value: value()}, func(_ *kgo.Record, err error) {
			if err != nil {
				failed.set(err)
			}
		})
	}
	if err := cl.Flush(ctx); err != nil {
		return err
	}
	if err := failed.get(); err != nil {
		return err
	}
	ends, err := b.admin.ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return fmt.Errorf("list end offsets: %w", err)
	}
	b.consumeTo = map[int32]int64{}
	for p, o := range ends[topic] {
		b.consumeTo[p] = o.Offset
	}
	return nil
}

// consumePhase reads the data set from the start with a fresh client and
// kgo's default fetch sizes. Should a phase reach the end of the data set,
// it rewinds and reads it again, so a phase never runs dry; a rewind costs
// about one fetch round trip, little against reading the whole data set, and
// the phase reports how many it made.
func consumePhase(ctx context.Context, b *bench, _ string, seeds []string, topic string) (metrics, error) {
	hook := newReqStats(fetchKey)
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(seeds...),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.WithHooks(hook),
	)
	if err != nil {
		return nil, err
	}
	defer cl.Close()

	rewind := map[string]map[int32]kgo.EpochOffset{topic: {}}
	for p := range b.consumeTo {
		rewind[topic][p] = kgo.EpochOffset{Epoch: -1, Offset: 0}
	}
	next := map[int32]int64{}
	var bytes, recs, rewinds int64
	poll := func(until time.Time) error {
		pctx, cancel := context.WithDeadline(ctx, until)
		defer cancel()
		for time.Now().Before(until) {
			fs := cl.PollFetches(pctx)
			var ferr error
			fs.EachError(func(_ string, _ int32, err error) {
				if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) && ferr == nil {
					ferr = err
				}
			})
			if ferr != nil {
				return ferr
			}
			fs.EachPartition(func(p kgo.FetchTopicPartition) {
				for _, r := range p.Records {
					bytes += int64(len(r.Value))
				}
				recs += int64(len(p.Records))
				if n := len(p.Records); n > 0 {
					next[p.Partition] = p.Records[n-1].Offset + 1
				}
			})
			if atEnd(next, b.consumeTo) {
				clear(next)
				cl.SetOffsets(rewind)
				rewinds++
			}
		}
		return ctx.Err()
	}
	if err := poll(time.Now().Add(warmUp(b.cfg.phase))); err != nil {
		return nil, err
	}
	hook.measure(true)
	b.markStart()
	b0, r0, w0, t0 := bytes, recs, rewinds, time.Now()
	if err := poll(t0.Add(b.cfg.phase)); err != nil {
		return nil, err
	}
	secs := time.Since(t0).Seconds()
	b.markEnd()
	hook.measure(false)
	if recs == r0 {
		return nil, errors.New("consumed nothing")
	}
	m := metrics{
		"MB/s":    float64(bytes-b0) / secs / 1e6,
		"rec/s":   float64(recs-r0) / secs,
		"rewinds": float64(rewinds - w0),
	}
	hook.latencies(m)
	return m, nil
}

func atEnd(next, end map[int32]int64) bool {
	for p, e := range end {
		if next[p] < e {
			return false
		}
	}
	return true
}

// latencySize is the record size of the one-at-a-time workloads.
const latencySize = 100

// latencyPhase produces one record at a time with a client built from opts
// and times each ProduceSync. Linger is zero: with kgo's default 10ms
// linger every request would wait for it and the phase would measure the
// timer, not the path.
func latencyPhase(ctx context.Context, b *bench, opts []kgo.Opt) (metrics, error) {
	cl, err := kgo.NewClient(append(opts, kgo.ProducerLinger(0))...)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	value := recordValues(latencySize) // kgo does not modify a record's value
	var samples []time.Duration
	measureFrom := time.Now().Add(warmUp(b.cfg.phase))
	var first, end time.Time
	for {
		t := time.Now()
		if !end.IsZero() && !t.Before(end) {
			break
		}
		if end.IsZero() && !t.Before(measureFrom) {
			b.markStart()
			first = time.Now()
			end = first.Add(b.cfg.phase)
			t = first
		}
		if err := cl.ProduceSync(ctx, &kgo.Record{Value: value()}).FirstErr(); err != nil {
			return nil, fmt.Errorf("produce: %w", err)
		}
		if !end.IsZero() {
			samples = append(samples, time.Since(t))
		}
	}
	secs := time.Since(first).Seconds()
	b.markEnd()
	if len(samples) == 0 {
		return nil, errors.New("no requests completed")
	}
	recs := float64(len(samples)) / secs
	return metrics{
		"p50 ms":  quantileMs(samples, 0.50),
		"p99 ms":  quantileMs(samples, 0.99),
		"p999 ms": quantileMs(samples, 0.999),
		"rec/s":   recs,
		"MB/s":    recs * latencySize / 1e6,
		"samples": float64(len(samples)),
	}, nil
}

// valuePool is random bytes that record values are cut from.
var valuePool = sync.OnceValue(func() []byte {
	v := make([]byte, 16<<20)
	rand.NewChaCha8([32]byte{}).Read(v)
	return v
})

// recordValues returns a source of record values of size bytes (for one
// goroutine): successive windows of a 16 MiB pool of random bytes, so that
// no value repeats within a batch. Nothing on the measured paths
// compresses records but a cluster's log (kgo's default snappy, on the
// batches it stores), and equal or zero values would make that log look
// almost free: distinct random bytes measure it at its dearest.
func recordValues(size int) func() []byte {
	pool := valuePool()
	n := max(1, (len(pool)-size)/size)
	i := 0
	return func() []byte {
		off := (i % n) * size
		i++
		return pool[off : off+size : off+size]
	}
}

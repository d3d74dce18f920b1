package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// The txn-buffer measurement: eosproxy keeps an open transaction's batches
// on its own disk, not in memory, so its resident memory should stay flat
// however much uncommitted data it holds (issue target: <= 256 MiB while
// 1 GiB is buffered).
//
// In-process, the client's, kfake's and the proxy's memory would be one
// heap, so this runs eosproxy as a child process (go build ./cmd/eosproxy,
// or --proxy-bin) in front of the same backend, with its state in a fresh
// directory under --data-dir, and reads the child's VmRSS from
// /proc/<pid>/status every 250 ms. One franz-go transactional producer
// writes --txn-buffer-bytes of 1 KiB records inside ONE transaction (its
// timeout --txn-buffer-timeout, default 10 min), flushes, and then ends it,
// by default with an abort: a commit forwards everything to the backend,
// which for the in-process kfake means holding it all in eosbench's memory
// (--txn-buffer-end commit chooses that). There is no direct side: the
// backend's own transactions buffer in the backend's log, not in a proxy.
//
// Reported: the child's RSS (VmRSS, and its anonymous and file-backed
// parts) before writing, at 25/50/75/100% of the data
// acknowledged, its peak while buffering and while ending, the time the end
// took, the state directory's size on disk, and how many of the records the
// backend already held while the transaction was open (0 when eosproxy
// buffers them itself; otherwise the measurement says nothing about
// buffering and the verdict says so).
const (
	rssTargetMiB       = 256
	rssSampleEvery     = 250 * time.Millisecond
	txnBufferClientBuf = 16 << 20 // the client's own buffer: not what is measured
	txnBufferEndBound  = 5 * time.Minute
)

// bufferResult is the txn-buffer measurement, in the report and its JSON.
type bufferResult struct {
	Path                    string      `json:"path"`
	End                     string      `json:"end"` // abort or commit
	TargetMiB               float64     `json:"target_mib"`
	BufferedMiB             float64     `json:"buffered_mib"`
	Records                 int64       `json:"records"`
	WriteSeconds            float64     `json:"write_seconds"`
	WriteMBps               float64     `json:"write_mb_per_s"`
	Before                  memUse      `json:"before"`
	Checkpoints             []rssPoint  `json:"checkpoints"`
	MaxBuffering            memUse      `json:"max_buffering"` // each field's own maximum
	MaxEnd                  memUse      `json:"max_end"`
	AfterEnd                memUse      `json:"after_end"`
	EndMs                   float64     `json:"end_ms"`
	DiskMiB                 float64     `json:"state_disk_mib"`          // allocated blocks
	DiskApparentMiB         float64     `json:"state_disk_apparent_mib"` // file sizes
	BackendRecordsWhileOpen int64       `json:"backend_records_while_open"`
	BackendRecordsAfterEnd  int64       `json:"backend_records_after_end"` // 1 s after`
	Meaningful              bool        `json:"meaningful"`
	Pass                    bool        `json:"pass"`
	Verdict                 string      `json:"verdict"`
	Samples                 []rssSample `json:"samples"`
	ChildLog                []string    `json:"child_log,omitempty"`
	ChildArgs               []string    `json:"child_args"`
	ChildExit               string      `json:"child_exit"`
}

// rssPoint is the child's RSS at the first sample at or past a share of
// the data acknowledged.
type rssPoint struct {
	Percent         float64 `json:"percent"`          // 25, 50, 75, 100
	BufferedPercent float64 `json:"buffered_percent"` // acknowledged at the sample
	memUse
}

// memUse is a process's resident memory from /proc/<pid>/status: VmRSS,
// what the target is about, and its two main parts, RssAnon (heap, stacks:
// memory the process holds) and RssFile (pages of mapped files, such as
// badger's memory-mapped tables and logs, which the kernel can drop and
// read back).
type memUse struct {
	RSSMiB  float64 `json:"rss_mib"`
	AnonMiB float64 `json:"anon_mib"`
	FileMiB float64 `json:"file_mib"`
}

func (m memUse) max(o memUse) memUse {
	return memUse{max(m.RSSMiB, o.RSSMiB), max(m.AnonMiB, o.AnonMiB), max(m.FileMiB, o.FileMiB)}
}

type rssSample struct {
	Seconds     float64 `json:"s"`
	BufferedMiB float64 `json:"buffered_mib"`
	memUse
	Ending bool `json:"ending,omitempty"`
}

func txnBufferRun(ctx context.Context, b *bench, topic string) (*bufferResult, error) {
	cfg := b.cfg
	res := &bufferResult{
		Path:      "through eosproxy only (child process); no direct side",
		End:       "abort",
		TargetMiB: rssTargetMiB,
	}
	if cfg.txnBufferCommit {
		res.End = "commit"
	}

	// A child of its own, not the one the other workloads share: its
	// memory before writing is then that of a fresh eosproxy.
	bin := b.proxyBin
	hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	help, _ := exec.CommandContext(hctx, bin, "--help").CombinedOutput()
	cancel()

	stateDir, err := os.MkdirTemp(cfg.dataDir, "eosbench-child-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(stateDir)
	var extra []string
	if bytes.Contains(help, []byte("transaction-max-timeout")) {
		extra = append(extra, "--transaction-max-timeout", cfg.txnBufferTimeout.String())
	} else {
		progress("txn-buffer: this eosproxy has no --transaction-max-timeout flag; relying on its default")
	}
	extra = append(extra, cfg.proxyArgs...)
	pc, args, err := startProxyChild(ctx, bin, b.direct, b.brokers, stateDir, extra, nil)
	res.ChildArgs = args
	if err != nil {
		return nil, err
	}
	child, listen := pc.child, pc.listen
	defer func() {
		res.ChildExit = child.stop()
		res.ChildLog = child.log.lines()
	}()
	progress("txn-buffer: eosproxy child pid %d at %s (state %s, %s), upstream %v", child.cmd.Process.Pid, listen, stateDir, fsType(stateDir), b.direct)

	if res.Before, err = readMem(child.cmd.Process.Pid); err != nil {
		return nil, err
	}

	total := cfg.txnBufferBytes / txnRecordSize
	totalBytes := total * txnRecordSize
	res.Records = total

	// The sampler reads the child's RSS and the acknowledged bytes every
	// 250 ms until stopped, and says how far it got every 5 s.
	var acked atomic.Int64
	var ending atomic.Bool
	var smu sync.Mutex
	start := time.Now()
	sample := func() rssSample {
		mem, _ := readMem(child.cmd.Process.Pid)
		s := rssSample{Seconds: time.Since(start).Seconds(), BufferedMiB: mib(acked.Load() * txnRecordSize), memUse: mem, Ending: ending.Load()}
		smu.Lock()
		res.Samples = append(res.Samples, s)
		smu.Unlock()
		return s
	}
	stopSampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(rssSampleEvery)
		defer tick.Stop()
		lastSay := time.Now()
		for {
			select {
			case <-stopSampling:
				return
			case <-tick.C:
			}
			s := sample()
			if time.Since(lastSay) >= 5*time.Second {
				lastSay = time.Now()
				phase := fmt.Sprintf("buffered %.0f of %.0f MiB", s.BufferedMiB, mib(totalBytes))
				if s.Ending {
					phase = "ending (" + res.End + ")"
				}
				progress("txn-buffer: %s, eosproxy RSS %.0f MiB (anon %.0f, file %.0f)", phase, s.RSSMiB, s.AnonMiB, s.FileMiB)
			}
		}
	}()
	stopSampler := func() {
		if stopSampling != nil {
			close(stopSampling)
			<-sampled
			stopSampling = nil
		}
	}
	defer stopSampler()

	id := fmt.Sprintf("eosbench-txn-buffer-%s-%08x", b.runID, rand.Uint32())
	cl, err := kgo.NewClient(append(idemProducerOpts([]string{listen}, topic),
		kgo.TransactionalID(id),
		kgo.TransactionTimeout(cfg.txnBufferTimeout),
		kgo.MaxBufferedBytes(txnBufferClientBuf),
		kgo.MaxBufferedRecords(2*txnBufferClientBuf/txnRecordSize),
	)...)
	if err != nil {
		return nil, err
	}
	defer cl.Close()

	// Writing the data, bound by the transaction's own timeout (after it,
	// the coordinator would abort the transaction anyway).
	wctx, cancel := context.WithTimeout(ctx, cfg.txnBufferTimeout)
	defer cancel()
	if err := cl.BeginTransaction(); err != nil {
		return nil, fmt.Errorf("begin: %w", err)
	}
	progress("txn-buffer: writing %.0f MiB (%d records of %d bytes) in one transaction (timeout %v)", mib(totalBytes), total, txnRecordSize, cfg.txnBufferTimeout)
	value := make([]byte, txnRecordSize)
	var failed firstErr
	var anyFailed atomic.Bool
	promise := func(_ *kgo.Record, err error) {
		if err != nil {
			failed.set(err)
			anyFailed.Store(true)
			return
		}
		acked.Add(1)
	}
	for i := int64(0); i < total && wctx.Err() == nil && !anyFailed.Load(); i++ {
		cl.Produce(wctx, &kgo.Record{Value: value}, promise)
	}
	err = cl.Flush(wctx)
	if err == nil {
		err = failed.get()
	}
	if err != nil {
		abortQuietly(cl)
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			err = fmt.Errorf("not written within --txn-buffer-timeout %v: %w", cfg.txnBufferTimeout, err)
		}
		return nil, fmt.Errorf("write %.0f MiB in one transaction (%.0f MiB acknowledged): %w", mib(totalBytes), mib(acked.Load()*txnRecordSize), err)
	}
	res.WriteSeconds = time.Since(start).Seconds()
	res.BufferedMiB = mib(totalBytes)
	res.WriteMBps = float64(totalBytes) / res.WriteSeconds / 1e6
	last := sample()
	allocated, apparent := dirSize(stateDir)
	res.DiskMiB, res.DiskApparentMiB = mib(allocated), mib(apparent)

	// Whether the records already reached the backend: high watermarks
	// count uncommitted records too.
	if res.BackendRecordsWhileOpen, err = backendRecords(ctx, b, topic); err != nil {
		return nil, err
	}

	// Ending the transaction.
	ending.Store(true)
	progress("txn-buffer: all %.0f MiB acknowledged in %.1f s; eosproxy RSS %.0f MiB (anon %.0f, file %.0f), state %.0f MiB on disk (%.0f MiB apparent); backend holds %d records; %s",
		mib(totalBytes), res.WriteSeconds, last.RSSMiB, last.AnonMiB, last.FileMiB, res.DiskMiB, res.DiskApparentMiB, res.BackendRecordsWhileOpen, res.End)
	ectx, ecancel := context.WithTimeout(ctx, txnBufferEndBound)
	defer ecancel()
	end := kgo.TryAbort
	if cfg.txnBufferCommit {
		end = kgo.TryCommit
	}
	t := time.Now()
	err = cl.EndTransaction(ectx, end)
	res.EndMs = float64(time.Since(t)) / 1e6
	if err != nil {
		return nil, fmt.Errorf("%s of the %.0f MiB transaction after %.0f ms: %w", res.End, mib(totalBytes), res.EndMs, err)
	}
	// A second of samples after the end: what the end leaves behind.
	time.Sleep(time.Second)
	after := sample()
	res.AfterEnd = after.memUse
	if res.BackendRecordsAfterEnd, err = backendRecords(ctx, b, topic); err != nil {
		return nil, err
	}
	stopSampler()

	smu.Lock()
	samples := res.Samples
	smu.Unlock()
	for _, s := range samples {
		if s.Ending {
			res.MaxEnd = res.MaxEnd.max(s.memUse)
		} else {
			res.MaxBuffering = res.MaxBuffering.max(s.memUse)
		}
	}
	res.MaxBuffering = res.MaxBuffering.max(res.Before)
	for _, q := range []float64{25, 50, 75} {
		for _, s := range samples {
			if !s.Ending && s.BufferedMiB >= q/100*res.BufferedMiB {
				res.Checkpoints = append(res.Checkpoints, rssPoint{Percent: q, BufferedPercent: 100 * s.BufferedMiB / res.BufferedMiB, memUse: s.memUse})
				break
			}
		}
	}
	res.Checkpoints = append(res.Checkpoints, rssPoint{Percent: 100, BufferedPercent: 100, memUse: last.memUse})

	res.Meaningful = res.BackendRecordsWhileOpen == 0
	peak := res.MaxBuffering
	res.Pass = res.Meaningful && peak.RSSMiB <= rssTargetMiB
	switch {
	case !res.Meaningful:
		res.Verdict = fmt.Sprintf("NOT MEASURED: the backend already held %d of the %d records while the transaction was open, so eosproxy passed the transaction through instead of buffering it (eosproxy's RSS peaked at %.0f MiB, which says nothing about buffering)",
			res.BackendRecordsWhileOpen, total, peak.RSSMiB)
	case res.Pass:
		res.Verdict = fmt.Sprintf("PASS: eosproxy's RSS peaked at %.0f MiB <= %d MiB target while buffering %.0f MiB of uncommitted data (peak anon %.0f MiB, file-backed %.0f MiB)", peak.RSSMiB, rssTargetMiB, res.BufferedMiB, peak.AnonMiB, peak.FileMiB)
	default:
		res.Verdict = fmt.Sprintf("MISS: eosproxy's RSS peaked at %.0f MiB > %d MiB target while buffering %.0f MiB of uncommitted data (peak anon %.0f MiB, file-backed %.0f MiB)", peak.RSSMiB, rssTargetMiB, res.BufferedMiB, peak.AnonMiB, peak.FileMiB)
	}
	progress("txn-buffer: %s ended in %s ms; %s", res.End, fmtNum(res.EndMs), res.Verdict)
	return res, nil
}

// backendRecords sums the topic's high watermarks on the backend, which
// count uncommitted records (and transaction markers) too.
func backendRecords(ctx context.Context, b *bench, topic string) (int64, error) {
	ends, err := b.admin.ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return 0, fmt.Errorf("backend end offsets: %w", err)
	}
	var n int64
	ends.Each(func(o kadm.ListedOffset) { n += o.Offset })
	return n, nil
}

// readMem reads a process's resident memory from /proc/<pid>/status.
func readMem(pid int) (memUse, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return memUse{}, fmt.Errorf("read eosproxy's RSS: %w", err)
	}
	var m memUse
	found := false
	for _, line := range strings.Split(string(data), "\n") {
		key, v, ok := strings.Cut(line, ":")
		f := strings.Fields(v) // "12345 kB"
		if !ok || len(f) != 2 || f[1] != "kB" {
			continue
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			continue
		}
		switch key {
		case "VmRSS":
			m.RSSMiB, found = mib(kb<<10), true
		case "RssAnon":
			m.AnonMiB = mib(kb << 10)
		case "RssFile":
			m.FileMiB = mib(kb << 10)
		}
	}
	if !found {
		return m, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
	}
	return m, nil
}

// dirSize is the disk space the files under dir take, allocated blocks
// and apparent sizes. Neither is exact for badger: it preallocates its
// value log files sparsely (apparent > data), and pages written through a
// memory map that the kernel has not yet written back may have no blocks
// yet (allocated < data).
func dirSize(dir string) (allocated, apparent int64) {
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				apparent += info.Size()
				if st, ok := info.Sys().(*syscall.Stat_t); ok {
					allocated += st.Blocks * 512
				}
			}
		}
		return nil
	})
	return allocated, apparent
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

// parseBytes reads a size: a number of bytes, or one with a KiB, MiB or GiB
// suffix (KB, MB and GB, and K, M, G, are taken as the same binary units).
func parseBytes(s string) (int64, error) {
	s = strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"GB", 1 << 30}, {"MB", 1 << 20}, {"KB", 1 << 10}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}, {"B", 1}} {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = strings.TrimSpace(v), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return n * mult, nil
}

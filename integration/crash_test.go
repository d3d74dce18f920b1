package integration

// Crash test of eosproxy's idempotent producer: the eosproxy binary is
// SIGKILLed at random moments while a franz-go idempotent producer writes
// through it, and restarted each time on the same data dir and ports. A kill
// can land anywhere: between forwarding a batch and persisting its outcome,
// between persisting and answering, in the middle of settling an unknown
// outcome. Afterwards the backend (kfake without the EOS API keys, in this
// process) must hold every acknowledged record exactly once, in order per
// partition.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/eosproxy/eosproxy/dedup"
)

// crashLogs collects the JSON log lines of every run of the binary.
type crashLogs struct {
	mu      sync.Mutex
	partial []byte
	counts  map[string]int // message → lines
	tail    []string       // the last lines, for a failure report
	notable []string       // warnings and errors (first ones)
	raw     []string       // lines that are not JSON: panics, runtime faults
	ready   chan string    // the current run's bootstrap, once it is ready
}

func (l *crashLogs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		l.line(string(l.partial[:i]))
		l.partial = l.partial[i+1:]
	}
	return len(p), nil
}

func (l *crashLogs) line(s string) {
	if l.tail = append(l.tail, s); len(l.tail) > 200 {
		l.tail = l.tail[1:]
	}
	var m struct {
		Level     string `json:"level"`
		Message   string `json:"message"`
		Bootstrap string `json:"bootstrap"`
	}
	if json.Unmarshal([]byte(s), &m) != nil {
		if strings.TrimSpace(s) != "" && len(l.raw) < 400 {
			l.raw = append(l.raw, s)
		}
		return
	}
	l.counts[m.Message]++
	if (m.Level == "warn" || m.Level == "error" || m.Level == "fatal" || m.Level == "panic") && len(l.notable) < 50 {
		l.notable = append(l.notable, s)
	}
	if m.Message == "eosproxy ready" && l.ready != nil {
		select {
		case l.ready <- m.Bootstrap:
		default:
		}
	}
}

// count is how many lines so far had a message starting with prefix.
func (l *crashLogs) count(prefix string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for msg, c := range l.counts {
		if strings.HasPrefix(msg, prefix) {
			n += c
		}
	}
	return n
}

// summary is the count of each log message over all runs.
func (l *crashLogs) summary() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	msgs := make([]string, 0, len(l.counts))
	for m := range l.counts {
		msgs = append(msgs, m)
	}
	slices.Sort(msgs)
	var sb strings.Builder
	for _, m := range msgs {
		fmt.Fprintf(&sb, "\n  %5d  %s", l.counts[m], m)
	}
	return sb.String()
}

func (l *crashLogs) report() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return fmt.Sprintf("warnings and errors:\n%s\nnon-JSON output:\n%s\nlast lines:\n%s",
		strings.Join(l.notable, "\n"), strings.Join(l.raw, "\n"), strings.Join(l.tail, "\n"))
}

// crashProxy runs the eosproxy binary, SIGKILLs it and starts it again with
// the same arguments (so the same data dir and ports). Unlike runProxy it
// owns the process across restarts: one cleanup kills whichever run is
// current.
type crashProxy struct {
	t      *testing.T
	bin    string
	args   []string
	env    []string // added to the environment
	logs   *crashLogs
	cmd    *exec.Cmd
	exited chan struct{} // closed when the current run has been waited for
	runs   int
}

func newCrashProxy(t *testing.T, bin string, args ...string) *crashProxy {
	cp := &crashProxy{t: t, bin: bin, args: args, logs: &crashLogs{counts: map[string]int{}}}
	t.Cleanup(func() {
		if cp.cmd != nil {
			cp.cmd.Process.Kill()
			<-cp.exited
		}
		if t.Failed() {
			t.Logf("eosproxy logs:\n%s", cp.logs.report())
		}
	})
	return cp
}

// start runs the binary and waits for its "eosproxy ready" line.
func (cp *crashProxy) start() string {
	cp.t.Helper()
	ready := make(chan string, 1)
	cp.logs.mu.Lock()
	cp.logs.ready = ready
	cp.logs.mu.Unlock()
	cmd := exec.Command(cp.bin, cp.args...)
	if cp.env != nil {
		cmd.Env = append(os.Environ(), cp.env...)
	}
	cmd.Stderr = cp.logs // exec copies the pipe; Wait returns once all of it is read
	if err := cmd.Start(); err != nil {
		cp.t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	cp.cmd, cp.exited = cmd, exited
	cp.runs++
	select {
	case addr := <-ready:
		return addr
	case <-exited:
		cp.cmd = nil
		cp.t.Fatalf("eosproxy run %d exited before it was ready: %v\n%s", cp.runs, cmd.ProcessState, cp.logs.report())
	case <-time.After(30 * time.Second):
		cp.t.Fatalf("eosproxy run %d not ready after 30 s", cp.runs)
	}
	return ""
}

// kill SIGKILLs the current run and waits until it is gone (and its ports
// with it). A run that already exited by itself fails the test.
func (cp *crashProxy) kill() {
	cp.t.Helper()
	select {
	case <-cp.exited:
		state := cp.cmd.ProcessState
		cp.cmd = nil
		cp.t.Fatalf("eosproxy run %d exited by itself: %v\n%s", cp.runs, state, cp.logs.report())
	default:
	}
	if err := cp.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		cp.t.Fatalf("SIGKILL: %v", err)
	}
	select {
	case <-cp.exited:
	case <-time.After(30 * time.Second):
		cp.t.Fatal("eosproxy did not die on SIGKILL")
	}
	if ws, ok := cp.cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
		cp.t.Fatalf("eosproxy run %d ended with %v, not by the SIGKILL", cp.runs, cp.cmd.ProcessState)
	}
	cp.cmd = nil
}

// signal sends sig to the current run (SIGSTOP, SIGCONT).
func (cp *crashProxy) signal(sig syscall.Signal) {
	cp.t.Helper()
	if err := cp.cmd.Process.Signal(sig); err != nil {
		cp.t.Fatalf("%v: %v", sig, err)
	}
}

// stop ends the current run with SIGTERM (a clean stop) and waits for it.
func (cp *crashProxy) stop() {
	cp.t.Helper()
	if err := cp.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		cp.t.Fatalf("SIGTERM: %v", err)
	}
	select {
	case <-cp.exited:
	case <-time.After(60 * time.Second):
		cp.t.Fatal("eosproxy did not stop within 60 s of SIGTERM")
	}
	if !cp.cmd.ProcessState.Success() {
		cp.t.Errorf("eosproxy run %d ended with %v after SIGTERM\n%s", cp.runs, cp.cmd.ProcessState, cp.logs.report())
	}
	cp.cmd = nil
}

// countValues counts how often each of the values 0..n-1 is in got (values
// by partition); any other value fails the test.
func countValues(t *testing.T, got map[int32][]int, n int) []int {
	t.Helper()
	seen := make([]int, n)
	for p, vs := range got {
		for _, v := range vs {
			if v < 0 || v >= n {
				t.Fatalf("partition %d: unexpected value %d", p, v)
			}
			seen[v]++
		}
	}
	return seen
}

// dupsAndLost lists the values seen more than once, and the acknowledged
// ones never seen.
func dupsAndLost(seen []int, acked []atomic.Bool) (dups, lost []int) {
	for v, c := range seen {
		if c > 1 {
			dups = append(dups, v)
		}
		if acked[v].Load() && c == 0 {
			lost = append(lost, v)
		}
	}
	return dups, lost
}

// readBackendAll reads every record of topic straight from the backend up
// to the partitions' current ends and returns the values by partition.
func readBackendAll(t *testing.T, b backend, topic string) (map[int32][]int, int64) {
	t.Helper()
	return readBackendRecords(t, b, topic, false)
}

// readBackendCommitted is readBackendAll for data eosproxy wrote at commit:
// against a backend with idempotence it is written under eosproxy's own
// producer id, never in a transactional batch.
func readBackendCommitted(t *testing.T, b backend, topic string) (map[int32][]int, int64) {
	t.Helper()
	return readBackendRecords(t, b, topic, true)
}

func readBackendRecords(t *testing.T, b backend, topic string, ownProducer bool) (map[int32][]int, int64) {
	t.Helper()
	cl := newClient(t, b.addrs[0], kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	ends, err := kadm.NewClient(cl).ListEndOffsets(testCtx(t), topic)
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	ends.Each(func(o kadm.ListedOffset) { total += o.Offset })
	got := map[int32][]int{}
	var n int64
	ctx := testCtx(t)
	for n < total {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %d of the backend's %d records before timeout", n, total)
		}
		fs.EachRecord(func(r *kgo.Record) {
			if r.Attrs.IsTransactional() || r.ProducerID != -1 && !ownProducer {
				t.Fatalf("backend record at %d/%d carries producer id %d (transactional: %v)", r.Partition, r.Offset, r.ProducerID, r.Attrs.IsTransactional())
			}
			v, err := strconv.Atoi(string(r.Value))
			if err != nil {
				t.Fatalf("backend record at %d/%d: bad value %q", r.Partition, r.Offset, r.Value)
			}
			got[r.Partition] = append(got[r.Partition], v)
			n++
		})
	}
	return got, total
}

// Idempotent producers through eosproxy while it is SIGKILLed, in front of
// a backend without idempotence (eosproxy's state and look-ups alone keep
// duplicates out; each answer waits for the state on disk) and of one with
// it (answers do not wait for the disk: after a kill the state may lag the
// backend, which then decides the batches eosproxy cannot).
func TestIdempotenceAcrossSIGKILL(t *testing.T) {
	bin := buildProxy(t)
	t.Run("backend-without-idempotence", func(t *testing.T) { idempotenceAcrossSIGKILL(t, bin, newNoEOSFake(t), false) })
	t.Run("backend-with-idempotence", func(t *testing.T) { idempotenceAcrossSIGKILL(t, bin, newFake(t), true) })
}

func idempotenceAcrossSIGKILL(t *testing.T, bin string, b backend, backendIdempotent bool) {
	seed := faultSeed(t)
	rng := rand.New(rand.NewPCG(seed, seed>>1|1))
	topic := createTopic(t, kadm.NewClient(newClient(t, b.addrs[0])), 6)

	cp, bootstrap := startCrashProxy(t, bin, b, rng)

	prod := newClient(t, bootstrap, kgo.DefaultProduceTopic(topic),
		kgo.RecordRetries(1<<30), kgo.RequestRetries(1<<30),
		kgo.RetryBackoffFn(func(n int) time.Duration { return min(time.Duration(n)*10*time.Millisecond, 200*time.Millisecond) }),
		kgo.RecordDeliveryTimeout(2*time.Minute),
		// Small batches: many Produce requests in flight at any kill.
		kgo.ProducerBatchMaxBytes(4<<10),
		// Produce never blocks: the test goroutine must stay free to take
		// the aimed kill while the backend holds a request.
		kgo.MaxBufferedRecords(2*50_000))

	const n, kills = 50_000, 10
	acked := make([]atomic.Bool, n)
	var nacked, nfailed atomic.Int64
	var firstErr atomic.Pointer[error]
	var wg sync.WaitGroup
	issued := 0
	produce := func(upTo int) {
		for ; issued < upTo; issued++ {
			i := issued
			wg.Add(1)
			prod.Produce(context.Background(), &kgo.Record{Key: []byte(strconv.Itoa(i % 7)), Value: []byte(strconv.Itoa(i))},
				func(_ *kgo.Record, err error) {
					defer wg.Done()
					if err != nil {
						nfailed.Add(1)
						firstErr.CompareAndSwap(nil, &err)
						return
					}
					acked[i].Store(true)
					nacked.Add(1)
				})
		}
	}

	// Every other kill is aimed at the hard case: after its interval the
	// next Produce request eosproxy forwards for the topic is held by the
	// backend until eosproxy is dead, then applied. The batch is in the
	// backend, eosproxy never learnt it: only the look-up in the backend
	// after the restart can keep the retry from writing it twice.
	var armed atomic.Bool
	hook := make(chan chan struct{})
	testDone := make(chan struct{})
	t.Cleanup(func() { close(testDone) }) // runs before the cluster closes
	b.fake.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		pr, ok := req.(*kmsg.ProduceRequest)
		if !ok || pr.Acks == 0 || !slices.ContainsFunc(pr.Topics, func(rt kmsg.ProduceRequestTopic) bool { return rt.Topic == topic }) ||
			!armed.CompareAndSwap(true, false) {
			return nil, nil, false // not handled: the cluster handles it as usual
		}
		killed := make(chan struct{})
		select {
		case hook <- killed:
			<-killed
		case <-testDone:
		}
		return nil, nil, false
	})
	// The fault schedule: kill after a random 300–1500 ms, restart at
	// once. The records of each round are spread over its interval, so
	// every kill meets a producer in full flow.
	start := time.Now()
	var downtime time.Duration
	aimedKills := 0
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for k := range kills {
		interval := 300*time.Millisecond + time.Duration(rng.Int64N(int64(1200*time.Millisecond)))
		roundEnd := (k + 1) * n / (kills + 1)
		perTick := max(1, (roundEnd-issued)*int(10*time.Millisecond)/int(interval))
		aimed := k%2 == 1
		deadline := time.NewTimer(interval)
		limit := roundEnd
		var hookC chan chan struct{} // set once an aimed kill is armed
		var fallback <-chan time.Time
		var killed chan struct{}
	round:
		for {
			select {
			case <-tick.C:
				produce(min(issued+perTick, limit))
			case <-deadline.C:
				produce(roundEnd)
				if !aimed {
					break round
				}
				// Keep producing into the next round until a Produce
				// request reaches the backend.
				armed.Store(true)
				hookC, limit = hook, n
				fallback = time.After(10 * time.Second)
			case killed = <-hookC:
				break round
			case <-fallback: // no Produce came: kill anyway
				if !armed.CompareAndSwap(true, false) {
					killed = <-hook // it came meanwhile
				}
				break round
			}
		}
		unacked := int64(issued) - nacked.Load() - nfailed.Load()
		down := time.Now()
		cp.kill()
		how := "at a random moment"
		if killed != nil {
			close(killed) // the backend applies the request now
			aimedKills++
			how = "while the backend held a forwarded Produce request"
		}
		cp.start()
		downtime += time.Since(down)
		t.Logf("kill %d after %s, %s: %d records issued, %d not yet acknowledged; back in %s",
			k+1, interval.Round(time.Millisecond), how, issued, unacked, time.Since(down).Round(time.Millisecond))
	}
	produce(n)
	flushCtx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	if err := prod.Flush(flushCtx); err != nil {
		t.Fatalf("flush: %v (%d acknowledged, %d failed)", err, nacked.Load(), nfailed.Load())
	}
	wg.Wait()
	t.Logf("franz-go: %d records in %s across %d SIGKILLs (%d aimed; %s down in total): %d acknowledged, %d failed; eosproxy: %d batches found in the backend after an unknown outcome",
		n, time.Since(start).Round(time.Millisecond), kills, aimedKills, downtime.Round(time.Millisecond), nacked.Load(), nfailed.Load(), cp.logs.count(foundInBackendMsg))

	t.Logf("eosproxy log messages over %d runs:%s", cp.runs, cp.logs.summary())

	// The proof, read from the backend directly.
	got, total := readBackendRecords(t, b, topic, backendIdempotent)
	dups, lost := dupsAndLost(countValues(t, got, n), acked)
	if len(dups) > 0 || len(lost) > 0 {
		t.Fatalf("backend holds %d records: %d values more than once (first: %v), %d acknowledged values missing (first: %v)",
			total, len(dups), dups[:min(len(dups), 10)], len(lost), lost[:min(len(lost), 10)])
	}
	for p, vs := range got {
		for i := 1; i < len(vs); i++ {
			if vs[i-1] >= vs[i] {
				t.Fatalf("partition %d: %d after %d (out of order)", p, vs[i], vs[i-1])
			}
		}
	}
	if p := firstErr.Load(); p != nil {
		t.Errorf("%d records failed (first: %v); %d of them reached the backend anyway, once each", nfailed.Load(), *p, total-nacked.Load())
	}
	if total != nacked.Load() && nfailed.Load() == 0 {
		t.Fatalf("backend holds %d records, %d acknowledged", total, nacked.Load())
	}
	// With idempotence in the backend the retry of a held batch may also
	// be left to the backend, when eosproxy's state lags it.
	found, lagging := cp.logs.count(foundInBackendMsg), cp.logs.count(dedup.LaggingStateMsg)
	if found == 0 && (!backendIdempotent || lagging == 0) {
		t.Fatalf("after %d aimed kills no batch was found in the backend (%d left to it): the unknown outcomes were never settled", aimedKills, lagging)
	}
	t.Logf("batches found in the backend after an unknown outcome: %d; left to the backend's own producer state: %d", found, lagging)
	cp.logs.mu.Lock()
	raw := append([]string(nil), cp.logs.raw...)
	cp.logs.mu.Unlock()
	for _, line := range raw {
		if strings.Contains(line, "panic") || strings.Contains(line, "fatal error") {
			t.Fatalf("eosproxy crashed by itself: %s", line)
		}
	}
}

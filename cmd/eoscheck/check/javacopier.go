package check

// The Java workload (real-broker tier only): Kafka's own
// TransactionalMessageCopier (Java kafka-clients, run by
// integration/kafka/kafka.sh) copies input partitions through eosproxy with
// random aborts (a third of its transactions), while eosproxy is SIGKILLed.
//
// Each copier copies one input partition p (manual assignment, not group
// mode) to partition p of its own output topic, committing its consumer
// position in each transaction under its own consumer group. Manual
// assignment, because in group mode the tool ignores --input-partition and
// --max-messages (it subscribes to the whole topic and recomputes what is
// left on each rebalance), and a restarted instance would first wait out
// its predecessor's session in the group; assigned, a restart resumes from
// the group's committed offset at once and copies exactly what is left.
//
// The copiers start once the idempotent producers are done (every Produce
// answered), so --max-messages can be the partition's final record count;
// the fault schedule then goes on killing eosproxy while they run. A copier
// that exits non-zero (a fatal producer error after a kill, a timeout while
// eosproxy was down) is treated as a crashed client: it is started again
// with the same transactional id and group, up to javaMaxRuns times.
//
// Besides, eoscheck SIGKILLs the copiers' JVMs JavaCrashes times (a client
// crash, most likely mid-transaction: records buffered in eosproxy, offsets
// pending), at points spread over each copier's progress; the successor
// must not see the dead instance's transaction, nor may it ever be read.
//
// The tool copies values as they are, so an aborted copy cannot be told
// from a committed one by its value: it re-copies what it aborted, so an
// aborted copy in the output shows as a duplicate.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

const javaCopierClass = "org.apache.kafka.tools.TransactionalMessageCopier"

// javaMaxRuns bounds the launches of one Java copier: a copier that keeps
// failing is a finding (its partition ends short of the input, so the
// verdict counts lost records and a group offset short of the end), not a
// reason to run forever.
const javaMaxRuns = 30

// javaTxnSize is --transaction-size: records per transaction (the tool's
// max.poll.records).
const javaTxnSize = 100

// javaTxnTimeoutMs is --transaction-timeout. The tool fetches its position
// (OffsetFetch with RequireStable, as it reads read_committed) before
// initTransactions; a predecessor killed mid-transaction leaves offsets
// pending in eosproxy, answered UNSTABLE_OFFSET_COMMIT until the
// coordinator times that transaction out. With the tool's default (60 s) a
// restarted copier would wait up to a minute, about as long as its position
// fetch may take (default.api.timeout.ms) before it fails and exits again.
const javaTxnTimeoutMs = 10_000

// JavaCopyReport is the Java copiers' part of the report.
type JavaCopyReport struct {
	Copiers         int     `json:"copiers"`
	OutputTopic     string  `json:"output_topic"`
	TransactionSize int     `json:"transaction_size"`
	Runs            int64   `json:"runs"`         // JVM launches
	Restarts        int64   `json:"restarts"`     // launches after a run that ended without finishing
	Finished        int     `json:"finished"`     // copiers whose last run exited 0 with nothing left
	Crashes         int64   `json:"crashes"`      // runs SIGKILLed by eoscheck on purpose (then restarted)
	KillsDuring     int     `json:"kills_during"` // SIGKILLs of eosproxy while a copier was in its copy loop
	Seconds         float64 `json:"seconds"`      // from the first launch until every copier ended

	// From eosproxy's log (debug level): its coordinator's transaction
	// ends for the copiers' transactional ids. -1: not counted (eosproxy
	// did not log at debug level).
	Commits  int64 `json:"commits"`
	Aborts   int64 `json:"aborts"`
	TimedOut int64 `json:"timed_out"` // transactions eosproxy aborted for their timeout

	InputRecords     int64 `json:"input_records"`      // records of the copied partitions
	Processed        int64 `json:"processed"`          // committed, as the copiers' status lines say (summed over runs; a run SIGKILLed between a commit and its next status line leaves that commit out)
	OutputRecords    int64 `json:"output_records"`     // read read_committed from the backend
	OutputLogRecords int64 `json:"output_log_records"` // the output's end offsets (all records in its log)

	Lost             int64 `json:"lost"`             // input records not in the output
	Duplicates       int64 `json:"duplicates"`       // input records in the output more than once (an aborted copy shows here)
	DuplicateExtra   int64 `json:"duplicate_extra"`  // extra copies beyond the first
	OrderErrors      int64 `json:"order_violations"` // a record before one that precedes it in the input
	Unexpected       int64 `json:"unexpected"`       // output records not in their input partition
	OffsetMismatches int64 `json:"offset_mismatches"`
	OutputIsInput    bool  `json:"output_equals_input"` // each output partition is its input partition, record for record

	ExitReasons map[string]int64   `json:"exit_reasons,omitempty"` // runs that ended by themselves without finishing, by exception
	PerCopier   []JavaCopierReport `json:"per_copier"`
	Errors      []string           `json:"errors,omitempty"`
}

// JavaCopierReport is one Java copier.
type JavaCopierReport struct {
	Partition       int32  `json:"partition"`
	TransactionalID string `json:"transactional_id"`
	Group           string `json:"group"`
	MaxMessages     int64  `json:"max_messages"`
	Runs            int64  `json:"runs"`
	Processed       int64  `json:"processed"`
	Finished        bool   `json:"finished"`
	GroupOffset     int64  `json:"group_offset"`
	InputEnd        int64  `json:"input_end"`
	InputStart      int64  `json:"input_start"` // the log start when the copier started (short retention)
}

func (j *JavaCopyReport) anomalies() int64 {
	return j.Lost + j.Duplicates + j.OrderErrors + j.Unexpected + j.OffsetMismatches
}

// javaStatus is one of the tool's JSON status lines (Kafka 4.1:
// "transactionalId" and "stage"; older versions: "progress" and
// "shutdown_complete").
type javaStatus struct {
	TransactionalID  string `json:"transactionalId"`
	Progress         string `json:"progress"`
	Stage            string `json:"stage"`
	ShutdownComplete string `json:"shutdown_complete"`
	TotalProcessed   int64  `json:"totalProcessed"`
	Remaining        int64  `json:"remaining"`
}

// javaCopier is one copier: one input partition, one transactional id, one
// group, across its runs.
type javaCopier struct {
	part  int32
	txnID string
	group string
	want  int64 // --max-messages: the input partition's records
	start int64 // the input partition's log start (short retention)

	runs     atomic.Int64
	done     atomic.Int64 // processed by runs that ended
	current  atomic.Int64 // processed by the current run
	finished atomic.Bool
	// looping: the current run is in its copy loop (it printed a status
	// line, which it does after initTransactions).
	looping atomic.Bool
	// crashAt are the numbers of records committed at which eoscheck
	// SIGKILLs the copier's JVM, ascending; nextCrash is the next one.
	crashAt   []int64
	nextCrash int
	crashes   atomic.Int64
}

// javaWork runs the Java copiers.
type javaWork struct {
	sh, bootstrap, in, out, work string
	trace                        *tracer
	copiers                      []*javaCopier

	cancel   context.CancelFunc
	wg       sync.WaitGroup
	done     chan struct{}
	started  time.Time
	ended    atomic.Int64 // ns since started when every copier ended; 0: running
	restarts atomic.Int64

	mu       sync.Mutex
	exits    map[string]int64
	examples []string
	rng      *rand.Rand // under mu
}

func newJavaWork(sh, bootstrap, in, out, work string, seed uint64, starts, ends map[int32]int64, copiers, crashes int, trace *tracer) *javaWork {
	w := &javaWork{sh: sh, bootstrap: bootstrap, in: in, out: out, work: work, trace: trace,
		done: make(chan struct{}), exits: map[string]int64{}, rng: rand.New(rand.NewPCG(seed, 0x1a7a))}
	for p := range int32(copiers) {
		c := &javaCopier{part: p, want: ends[p] - starts[p], start: starts[p],
			txnID: fmt.Sprintf("eoscheck-%d-java-%d", seed, p), group: fmt.Sprintf("eoscheck-%d-java-%d", seed, p)}
		// Crash k goes to copier k % copiers; a copier's m crashes at
		// 1/(m+1), 2/(m+1), ... of its partition.
		m := crashes / copiers
		if int(p) < crashes%copiers {
			m++
		}
		for i := 1; i <= m; i++ {
			c.crashAt = append(c.crashAt, c.want*int64(i)/int64(m+1))
		}
		w.copiers = append(w.copiers, c)
	}
	return w
}

func (w *javaWork) note(format string, args ...any) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.examples) < 20 {
		w.examples = append(w.examples, fmt.Sprintf(format, args...))
	}
}

// start launches every copier; done is closed once all have ended.
func (w *javaWork) start(parent context.Context) {
	ctx, cancel := context.WithCancel(parent)
	w.cancel = cancel
	w.started = time.Now()
	for _, c := range w.copiers {
		w.wg.Add(1)
		go w.run(ctx, c)
	}
	go func() {
		w.wg.Wait()
		w.ended.Store(max(1, int64(time.Since(w.started))))
		close(w.done)
	}()
}

// stop ends the copiers' JVMs (if still running) and waits for them.
func (w *javaWork) stop() {
	if w.cancel != nil {
		w.cancel()
		<-w.done
	}
}

// copying reports whether a copier is in its copy loop: a SIGKILL of
// eosproxy then hits a running client, not a JVM that is still starting.
func (w *javaWork) copying() bool {
	for _, c := range w.copiers {
		if c.looping.Load() {
			return true
		}
	}
	return false
}

// runs counts the JVM launches so far.
func (w *javaWork) runs() (n int64) {
	for _, c := range w.copiers {
		n += c.runs.Load()
	}
	return n
}

// copied is what the copiers have committed so far, as their status lines
// say, and what they are to copy.
func (w *javaWork) copied() (got, want int64) {
	for _, c := range w.copiers {
		got += c.done.Load() + c.current.Load()
		want += c.want
	}
	return got, want
}

// run launches copier c until a run exits 0 with nothing left to copy.
func (w *javaWork) run(ctx context.Context, c *javaCopier) {
	defer w.wg.Done()
	f, err := os.OpenFile(filepath.Join(w.work, fmt.Sprintf("java-copier-%d.log", c.part)), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		w.note("java copier %d: log file: %v", c.part, err)
		return
	}
	defer f.Close()
	log := &syncWriter{w: f}
	for ctx.Err() == nil {
		if c.runs.Load() >= javaMaxRuns {
			w.note("java copier %d: gave up after %d runs", c.part, javaMaxRuns)
			w.trace.printf("java copier %d: gave up after %d runs", c.part, javaMaxRuns)
			return
		}
		n := c.runs.Add(1)
		if n > 1 {
			w.restarts.Add(1)
		}
		w.trace.printf("java copier %d run %d: launched (max messages %d)", c.part, n, c.want)
		st, reason, crashed, err := w.launch(ctx, c, int(n), log)
		c.looping.Store(false)
		c.done.Add(c.current.Swap(0))
		if crashed {
			c.crashes.Add(1)
			reason = "SIGKILLed by eoscheck (client crash)"
		}
		if err == nil && st != nil && st.Remaining == 0 {
			c.finished.Store(true)
			w.trace.printf("java copier %d run %d: finished (processed %d in this run)", c.part, n, st.TotalProcessed)
			return
		}
		if ctx.Err() != nil {
			return
		}
		if reason == "" {
			reason = fmt.Sprintf("exit: %v", err)
			if err == nil {
				reason = "exit 0 with records left"
			}
		}
		if !crashed {
			w.mu.Lock()
			w.exits[exitKind(reason)]++
			w.mu.Unlock()
		}
		w.note("java copier %d run %d: %s", c.part, n, reason)
		w.trace.printf("java copier %d run %d: ended without finishing (%v): %s", c.part, n, err, reason)
		select {
		case <-ctx.Done():
			return
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// javaException is the first line of a stack trace ("<class>: <message>"),
// or what the tool prints to stderr before it exits 1 once the prefix and
// suffix of javaFatal are cut off.
var javaException = regexp.MustCompile(`^([A-Za-z_$][\w.$]*(?:Exception|Error)): (.*)$`)

const (
	javaFatal       = "Shutting down after unexpected error "
	javaFatalSuffix = " (see the log for additional detail)"
)

// javaExitReason is the exception a line of the tool's stderr names, as
// "<SimpleName>: <message>".
func javaExitReason(line string) (string, bool) {
	if rest, ok := strings.CutPrefix(line, javaFatal); ok {
		line = strings.TrimSuffix(rest, javaFatalSuffix)
	}
	m := javaException.FindStringSubmatch(line)
	if m == nil {
		return "", false
	}
	return m[1][strings.LastIndexByte(m[1], '.')+1:] + ": " + m[2], true
}

// exitKind is a reason's exception class without its package.
func exitKind(reason string) string {
	if m := javaException.FindStringSubmatch(reason); m != nil {
		return m[1][strings.LastIndexByte(m[1], '.')+1:]
	}
	if i := strings.IndexByte(reason, ':'); i > 0 {
		return reason[:i]
	}
	return reason
}

// launch runs the tool once. It returns the run's last status line, the
// exception it died of (if it printed one), whether eoscheck SIGKILLed it
// on purpose, and the exit error.
func (w *javaWork) launch(ctx context.Context, c *javaCopier, run int, log io.Writer) (*javaStatus, string, bool, error) {
	args := []string{w.sh, "run", javaCopierClass,
		"--broker-list", w.bootstrap,
		"--input-topic", w.in, "--input-partition", strconv.Itoa(int(c.part)),
		"--output-topic", w.out,
		"--transactional-id", c.txnID, "--consumer-group", c.group,
		"--enable-random-aborts",
		"--transaction-size", strconv.Itoa(javaTxnSize),
		"--transaction-timeout", strconv.Itoa(javaTxnTimeoutMs),
		"--max-messages", strconv.FormatInt(c.want, 10)}
	cmd := exec.CommandContext(ctx, "bash", args...)
	cmd.Dir = w.work
	cmd.WaitDelay = 5 * time.Second // a killed JVM's pipes must not hang Wait
	var mu sync.Mutex
	var last *javaStatus
	var reason string
	var killed atomic.Bool
	cmd.Stdout = &lineWriter{fn: func(line string) {
		fmt.Fprintf(log, "[run %d] %s\n", run, line)
		var st javaStatus
		if json.Unmarshal([]byte(line), &st) != nil {
			return
		}
		c.current.Store(st.TotalProcessed)
		c.looping.Store(st.Stage == "ProcessLoop" || st.Progress != "")
		mu.Lock()
		last = &st
		mu.Unlock()
		if c.nextCrash < len(c.crashAt) && st.Remaining > 0 && c.done.Load()+st.TotalProcessed >= c.crashAt[c.nextCrash] {
			c.nextCrash++
			// The line comes right before the next poll: a little
			// later, the next transaction is likely open.
			w.mu.Lock()
			delay := time.Duration(w.rng.IntN(60)) * time.Millisecond
			w.mu.Unlock()
			time.AfterFunc(delay, func() {
				if cmd.Process.Signal(syscall.SIGKILL) == nil {
					killed.Store(true)
					w.trace.printf("java copier %d run %d: SIGKILLed (client crash) after %d records committed", c.part, run, c.done.Load()+c.current.Load())
				}
			})
		}
	}}
	cmd.Stderr = &lineWriter{fn: func(line string) {
		fmt.Fprintf(log, "[run %d stderr] %s\n", run, line)
		// The tool's own line comes after the stack trace: the last
		// one wins.
		if r, ok := javaExitReason(line); ok {
			mu.Lock()
			reason = r
			mu.Unlock()
		}
	}}
	if err := cmd.Start(); err != nil {
		return nil, "", false, fmt.Errorf("start %s: %w", w.sh, err)
	}
	err := cmd.Wait()
	cmd.Stdout.(*lineWriter).flush()
	cmd.Stderr.(*lineWriter).flush()
	mu.Lock()
	defer mu.Unlock()
	// A kill that came after the JVM had exited by itself did nothing.
	crashed := killed.Load() && err != nil
	return last, reason, crashed, err
}

// lineWriter calls fn with each complete line written to it.
type lineWriter struct {
	mu  sync.Mutex
	buf []byte
	fn  func(string)
}

func (l *lineWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			break
		}
		l.fn(strings.TrimRight(string(l.buf[:i]), "\r"))
		l.buf = l.buf[i+1:]
	}
	return len(p), nil
}

// flush passes on a last line without a newline.
func (l *lineWriter) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.buf) > 0 {
		l.fn(string(l.buf))
		l.buf = nil
	}
}

// javaCheck waits, at most settle, for eosproxy to carry out the Java
// copiers' decided commits (javaSettle), then gives the verdict
// (javaVerdict). out gets a line if the wait ran out.
func javaCheck(ctx context.Context, out io.Writer, backend []string, rep *Report, jw *javaWork, adm *kadm.Client,
	ends map[string]txnEnds, settle time.Duration) error {
	settled, err := javaSettle(ctx, adm, rep.Topic, jw, settle)
	if err != nil {
		return fmt.Errorf("java copiers' commits: %w", err)
	}
	if !settled {
		fmt.Fprintf(out, "java copiers' group offsets in the backend did not reach the input's end within %v of their end\n", settle)
		jw.note("java copiers' group offsets in the backend did not reach the input's end within %v of their end", settle)
	}
	return javaVerdict(ctx, backend, rep, jw, adm, ends)
}

// javaSettle waits until the group offset of every finished Java copier,
// read from the backend, is at its input partition's end, or timeout has
// passed (false). eosproxy answers EndTxn(commit) once its decision is
// durable and writes the transaction's records to the backend after (as
// Kafka writes its markers after), then its offsets, one transactional id's
// commits in commit order; so a copier's JVM can have exited while its last
// commits are still being written, and reading the output at once misses
// them (seed 1391714446254214855: the last transaction, 100 records,
// reported lost though it was in the backend a moment later). Offsets at
// the end mean every commit before them is written. The Go copiers wait the
// same way (waitCopied).
func javaSettle(ctx context.Context, adm *kadm.Client, topic string, jw *javaWork, timeout time.Duration) (bool, error) {
	deadline := time.Now().Add(timeout)
	for {
		ok, err := javaOffsetsAtEnd(ctx, adm, topic, jw)
		if err != nil && ctx.Err() != nil {
			return false, err
		}
		if err == nil && ok {
			return true, nil
		}
		if time.Now().After(deadline) {
			return false, nil
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// javaOffsetsAtEnd says whether every finished Java copier's group has
// committed its input partition's end offset in the backend.
func javaOffsetsAtEnd(ctx context.Context, adm *kadm.Client, topic string, jw *javaWork) (bool, error) {
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return false, fmt.Errorf("input end offsets: %w", err)
	}
	for _, c := range jw.copiers {
		if !c.finished.Load() {
			continue // it never committed everything; the verdict counts it
		}
		e, ok := ends.Lookup(topic, c.part)
		if !ok || e.Err != nil {
			return false, fmt.Errorf("end offset of %s/%d: %v", topic, c.part, e.Err)
		}
		offs, err := adm.FetchOffsets(ctx, c.group)
		if err != nil {
			return false, fmt.Errorf("offsets of group %s: %w", c.group, err)
		}
		o, found := offs.Lookup(topic, c.part)
		if found && o.Err == nil && o.At == e.Offset || !found && e.Offset == 0 {
			continue
		}
		return false, nil
	}
	return true, nil
}

// javaVerdict reads the copied input partitions and the Java output topic
// straight from the backend (the output read_committed) and checks that
// each output partition is its input partition, record for record; then
// compares each copier group's committed offset with the input's end
// offset. ends are eosproxy's logged transaction ends by transactional id
// (nil: its log was not at debug level).
func javaVerdict(ctx context.Context, backend []string, rep *Report, jw *javaWork, adm *kadm.Client, ends map[string]txnEnds) error {
	j := rep.JavaCopy
	example := func(format string, args ...any) {
		if len(rep.Examples) < 60 {
			rep.Examples = append(rep.Examples, fmt.Sprintf(format, args...))
		}
	}
	j.Restarts = jw.restarts.Load()
	for _, c := range jw.copiers {
		j.Crashes += c.crashes.Load()
	}
	if e := jw.ended.Load(); e > 0 {
		j.Seconds = time.Duration(e).Seconds()
	}
	jw.mu.Lock()
	if len(jw.exits) > 0 {
		j.ExitReasons = maps.Clone(jw.exits)
	}
	j.Errors = append(j.Errors, jw.examples...)
	jw.mu.Unlock()
	if ends == nil {
		j.Commits, j.Aborts, j.TimedOut = -1, -1, -1
	}

	var copied []int32
	for _, c := range jw.copiers {
		copied = append(copied, c.part)
	}
	all := make([]int32, rep.Partitions)
	for p := range all {
		all[p] = int32(p)
	}
	in, _, err := readPartitions(ctx, backend, adm, rep.Topic, copied, false)
	if err != nil {
		return fmt.Errorf("java copiers' input: %w", err)
	}
	out, logEnd, err := readPartitions(ctx, backend, adm, j.OutputTopic, all, true)
	if err != nil {
		return fmt.Errorf("java copiers' output: %w", err)
	}
	j.OutputLogRecords = logEnd
	for _, rs := range out {
		j.OutputRecords += int64(len(rs))
	}
	if j.OutputLogRecords != j.OutputRecords {
		// Not visible to read_committed clients, so no anomaly; but
		// eosproxy forwards commits as plain batches, so the backend's
		// log should hold no aborted records or transaction markers.
		example("java copy: the output's log holds %d records, %d of them visible read_committed", j.OutputLogRecords, j.OutputRecords)
	}

	inEnds, err := adm.ListEndOffsets(ctx, rep.Topic)
	if err != nil {
		return fmt.Errorf("input end offsets: %w", err)
	}
	j.OutputIsInput = true
	for _, c := range jw.copiers {
		inVals := values(in[c.part])
		outVals := values(out[c.part])
		j.InputRecords += int64(len(inVals))
		if !slices.Equal(inVals, outVals) {
			j.OutputIsInput = false
		}
		lost, dups, extra, order, unexpected := compareCopy(inVals, outVals, func(format string, args ...any) {
			example("java copy: partition %d: "+format, append([]any{c.part}, args...)...)
		})
		j.Lost += lost
		j.Duplicates += dups
		j.DuplicateExtra += extra
		j.OrderErrors += order
		j.Unexpected += unexpected

		cr := JavaCopierReport{Partition: c.part, TransactionalID: c.txnID, Group: c.group, MaxMessages: c.want,
			Runs: c.runs.Load(), Processed: c.done.Load() + c.current.Load(), Finished: c.finished.Load(), GroupOffset: -1, InputStart: c.start}
		j.Runs += cr.Runs
		j.Processed += cr.Processed
		if cr.Finished {
			j.Finished++
		}
		if e, ok := inEnds.Lookup(rep.Topic, c.part); ok {
			cr.InputEnd = e.Offset
		}
		if cr.InputEnd-c.start != c.want {
			example("java copy: partition %d held %d records when the copiers started, %d now", c.part, c.want, cr.InputEnd-c.start)
		}
		offs, err := adm.FetchOffsets(ctx, c.group)
		if err != nil {
			return fmt.Errorf("offsets of group %s: %w", c.group, err)
		}
		if o, ok := offs.Lookup(rep.Topic, c.part); ok && o.Err == nil {
			cr.GroupOffset = o.At
		}
		if cr.GroupOffset != cr.InputEnd && !(cr.GroupOffset == -1 && cr.InputEnd == 0) {
			j.OffsetMismatches++
			example("java copy: group %s committed %s/%d at %d, input ends at %d", c.group, rep.Topic, c.part, cr.GroupOffset, cr.InputEnd)
		}
		if ends != nil {
			e := ends[c.txnID]
			j.Commits += e.commits
			j.Aborts += e.aborts
			j.TimedOut += e.timedOut
		}
		j.PerCopier = append(j.PerCopier, cr)
	}
	// The other output partitions have no copier: anything there is
	// unexpected.
	for p := len(jw.copiers); p < rep.Partitions; p++ {
		if rs := out[int32(p)]; len(rs) > 0 {
			j.Unexpected += int64(len(rs))
			j.OutputIsInput = false
			example("java copy: output partition %d, which no copier writes, holds %d records (first %q)", p, len(rs), rs[0].Value)
		}
	}
	return nil
}

func values(rs []*kgo.Record) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = string(r.Value)
	}
	return out
}

// compareCopy accounts for a copy of in (one partition, in order) that
// should be in itself: input records missing from it (lost), copied more
// often than the input holds them (duplicates, and the extra copies),
// first copies that come before a record preceding them in the input
// (order violations), and values the input does not hold (unexpected).
func compareCopy(in, out []string, example func(format string, args ...any)) (lost, dups, extra, order, unexpected int64) {
	pos := make(map[string]int, len(in))
	want := make(map[string]int64, len(in))
	for i, v := range in {
		if _, ok := pos[v]; !ok {
			pos[v] = i
		}
		want[v]++
	}
	got := make(map[string]int64, len(out))
	last := -1
	for off, v := range out {
		i, ok := pos[v]
		if !ok {
			unexpected++
			example("unexpected output %q at offset %d", v, off)
			continue
		}
		got[v]++
		if got[v] == want[v]+1 {
			dups++
			example("duplicate %q (again at offset %d)", v, off)
		}
		if got[v] > want[v] {
			extra++
		}
		if got[v] == 1 {
			if i < last {
				order++
				example("order: %q (input index %d) at offset %d after input index %d", v, i, off, last)
			} else {
				last = i
			}
		}
	}
	keys := make([]string, 0, len(want))
	for v := range want {
		keys = append(keys, v)
	}
	sort.Slice(keys, func(a, b int) bool { return pos[keys[a]] < pos[keys[b]] })
	for _, v := range keys {
		if n := want[v] - got[v]; n > 0 {
			lost += n
			example("lost: input %q (index %d) is not in the output", v, pos[v])
		}
	}
	return lost, dups, extra, order, unexpected
}

// readPartitions reads parts of topic from the start up to their end
// offsets, straight from the backend. Read committed, the tail of a
// partition may be records or markers it never returns: then it stops
// after 5 s without a new record. It returns the records by partition and
// the sum of the end offsets.
func readPartitions(ctx context.Context, backend []string, adm *kadm.Client, topic string, parts []int32, committed bool) (map[int32][]*kgo.Record, int64, error) {
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return nil, 0, fmt.Errorf("end offsets of %s: %w", topic, err)
	}
	want := map[int32]int64{}
	offsets := map[int32]kgo.Offset{}
	var total int64
	for _, p := range parts {
		e, ok := ends.Lookup(topic, p)
		if !ok || e.Err != nil {
			return nil, 0, fmt.Errorf("end offset of %s/%d: %v", topic, p, e.Err)
		}
		total += e.Offset
		if e.Offset > 0 {
			want[p] = e.Offset
			offsets[p] = kgo.NewOffset().AtStart()
		}
	}
	out := map[int32][]*kgo.Record{}
	if len(want) == 0 {
		return out, total, nil
	}
	opts := []kgo.Opt{kgo.SeedBrokers(backend...), kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: offsets})}
	if committed {
		opts = append(opts, kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, 0, err
	}
	defer cl.Close()
	deadline := time.Now().Add(2 * time.Minute)
	lastNew := time.Now()
	for len(want) > 0 {
		if time.Now().After(deadline) {
			return nil, 0, fmt.Errorf("%s: %d partitions not read to their end within 2 minutes", topic, len(want))
		}
		if committed && time.Since(lastNew) > 5*time.Second {
			break
		}
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		fs := cl.PollFetches(pctx)
		cancel()
		if ctx.Err() != nil {
			return nil, 0, ctx.Err()
		}
		fs.EachRecord(func(r *kgo.Record) {
			lastNew = time.Now()
			out[r.Partition] = append(out[r.Partition], r)
			if end, ok := want[r.Partition]; ok && r.Offset+1 >= end {
				delete(want, r.Partition)
			}
		})
	}
	return out, total, nil
}

package check

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// buildProxy builds cmd/eosproxy into dir and returns the binary's path.
func buildProxy(dir string) (string, error) {
	bin := filepath.Join(dir, "eosproxy")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/eosproxy/eosproxy/cmd/eosproxy").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("build eosproxy: %v\n%s", err, out)
	}
	return bin, nil
}

// proxyLogs writes the JSON log lines of every run of eosproxy to a file
// and watches them: the "ready" line of the current run, warnings, errors,
// and output that is not JSON (a panic, a runtime fault).
type proxyLogs struct {
	mu      sync.Mutex
	file    io.Writer
	partial []byte
	counts  map[string]int
	levels  map[string]string // level of each message
	notable []string          // first warnings and errors
	raw     []string          // first non-JSON lines
	ready   chan string
	// ends are the coordinator's transaction ends by transactional id
	// (commits and aborts logged at debug level, timeouts at info).
	ends  map[string]txnEnds
	debug bool // a debug line was seen: commits and aborts are counted
	// cluster, when set, is told of every JSON line (cluster mode: who
	// owns the cluster, fencings); called with mu held.
	cluster func(logLine)
	// crash is the crash point the current run logged it kills itself
	// at (EOSPROXY_TEST_CRASH), if any.
	crash string
}

// msgCrashPoint is eosproxy's line just before it SIGKILLs itself at a
// test crash point (cmd/eosproxy/crashpoints.go), with the field point.
const msgCrashPoint = "test crash point: SIGKILL"

// logLine is what eoscheck reads of one of eosproxy's JSON log lines.
type logLine struct {
	Level     string `json:"level"`
	Message   string `json:"message"`
	Bootstrap string `json:"bootstrap"`
	Txn       string `json:"txn"`
	Reason    string `json:"reason"`
	Error     string `json:"error"`
	Point     string `json:"point"` // of msgCrashPoint
	// Raw: a type other than the one expected must not make the whole
	// line unreadable.
	Generation json.RawMessage `json:"generation"`
}

// generation is the line's generation field as text ("" when absent).
func (m logLine) generation() string { return strings.Trim(string(m.Generation), `"`) }

// txnEnds counts what eosproxy's coordinator logged for one transactional
// id.
type txnEnds struct {
	commits, aborts, timedOut int64
}

func (l *proxyLogs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.file != nil {
		l.file.Write(p)
	}
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

func (l *proxyLogs) line(s string) {
	var m logLine
	if json.Unmarshal([]byte(s), &m) != nil {
		if strings.TrimSpace(s) != "" && len(l.raw) < 100 {
			l.raw = append(l.raw, s)
		}
		return
	}
	l.counts[m.Message]++
	l.levels[m.Message] = m.Level
	l.debug = l.debug || m.Level == "debug"
	if m.Txn != "" {
		switch e := l.ends[m.Txn]; m.Message {
		case "transaction committed":
			e.commits++
			l.ends[m.Txn] = e
		case "transaction aborted":
			e.aborts++
			l.ends[m.Txn] = e
		case "transaction timed out: aborting it and fencing its producer":
			e.timedOut++
			l.ends[m.Txn] = e
		}
	}
	if (m.Level == "warn" || m.Level == "error" || m.Level == "fatal" || m.Level == "panic") && len(l.notable) < 20 {
		l.notable = append(l.notable, s)
	}
	if m.Message == msgCrashPoint && m.Point != "" {
		l.crash = m.Point
	}
	if l.cluster != nil {
		l.cluster(m)
	}
	if m.Message == "eosproxy ready" && l.ready != nil {
		select {
		case l.ready <- m.Bootstrap:
		default:
		}
	}
}

// takeCrash returns the crash point the run that just ended logged, and
// forgets it for the next run.
func (l *proxyLogs) takeCrash() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.crash
	l.crash = ""
	return c
}

func newProxyLogs(file io.Writer) *proxyLogs {
	return &proxyLogs{file: file, counts: map[string]int{}, levels: map[string]string{}, ends: map[string]txnEnds{}}
}

// txnEnds returns the transaction ends logged by transactional id, or nil
// when eosproxy logged nothing at debug level (its commits and aborts are
// debug lines).
func (l *proxyLogs) txnEnds() map[string]txnEnds {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.debug {
		return nil
	}
	return maps.Clone(l.ends)
}

// countContaining is how many lines eosproxy logged whose message
// contains sub.
func (l *proxyLogs) countContaining(sub string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for msg, c := range l.counts {
		if strings.Contains(msg, sub) {
			n += c
		}
	}
	return n
}

// notableCounts counts, by message, eosproxy's warnings and errors and the
// info lines that show it resolving unknown outcomes, resuming commits and
// fencing.
func (l *proxyLogs) notableCounts() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]int{}
	for msg, n := range l.counts {
		switch lv := l.levels[msg]; {
		case lv == "warn" || lv == "error" || lv == "fatal" || lv == "panic",
			strings.Contains(msg, "found in the backend"),
			strings.Contains(msg, "resuming transaction"),
			strings.Contains(msg, "aborting the previous one"),
			strings.Contains(msg, "timed out"):
			out[msg] = n
		}
	}
	return out
}

// crashed lists non-JSON output that looks like eosproxy died by itself.
func (l *proxyLogs) crashed() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, s := range l.raw {
		if strings.Contains(s, "panic") || strings.Contains(s, "fatal error") {
			out = append(out, s)
		}
	}
	return out
}

// proxyProc owns the eosproxy child process across SIGKILLs and restarts,
// always with the same arguments (same data dir, same ports). Its methods
// are safe to call from several goroutines: the fault schedule's and the
// restart after a crash point (onCrash).
type proxyProc struct {
	name string   // in errors; empty: "eosproxy"
	file *os.File // its log file, if its own (cluster mode)
	bin  string
	args []string
	logs *proxyLogs
	// env, when set, is the environment of each new run (crash points);
	// called with mu held.
	env func() []string
	// onCrash, when set, is told, on a goroutine of its own, of every run
	// that logged a crash point's line before it ended (whoever's signal
	// ended it); restartAfterCrash starts the next run unless eoscheck
	// already dealt with the end.
	onCrash func(run *procRun, point string)

	mu     sync.Mutex // serialises runs: start, kill, term, signal, stop, restartAfterCrash
	run    *procRun   // the current run; nil between runs
	runs   int
	closed bool // stopped for good: no restart after a crash
}

// procRun is one run of eosproxy.
type procRun struct {
	cmd    *exec.Cmd
	n      int
	exited chan struct{}
	// Set before exited closes: when, and the crash point the run logged
	// it was killing itself at ("" for none).
	exitedAt time.Time
	crash    string
}

// errCrashed: the run ended at a crash point of its own before eoscheck's
// signal reached it.
var errCrashed = errors.New("ended at a crash point")

// start runs eosproxy and waits for its "eosproxy ready" line.
func (pp *proxyProc) start() (string, error) {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	return pp.startLocked()
}

// startLocked is start with mu held. A run that ends at a crash point
// before it is ready (a commit resumed at startup) is started again.
func (pp *proxyProc) startLocked() (string, error) {
	for attempt := 1; ; attempt++ {
		addr, run, err := pp.startOnce()
		if err == nil || run == nil || run.crash == "" || attempt == 5 {
			return addr, err
		}
	}
}

func (pp *proxyProc) startOnce() (string, *procRun, error) {
	ready := make(chan string, 1)
	pp.logs.mu.Lock()
	pp.logs.ready = ready
	pp.logs.crash = ""
	pp.logs.mu.Unlock()
	cmd := exec.Command(pp.bin, pp.args...)
	cmd.Stderr = pp.logs
	cmd.Stdout = pp.logs
	if pp.env != nil {
		cmd.Env = pp.env()
	}
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	pp.runs++
	run := &procRun{cmd: cmd, n: pp.runs, exited: make(chan struct{})}
	go func() {
		cmd.Wait() // returns once the logs are copied: the crash line is in
		run.exitedAt = time.Now()
		run.crash = pp.logs.takeCrash()
		close(run.exited)
		if run.crash != "" && pp.onCrash != nil {
			pp.onCrash(run, run.crash)
		}
	}()
	pp.run = run
	select {
	case addr := <-ready:
		return addr, run, nil
	case <-run.exited:
		select {
		case addr := <-ready: // ready, then gone: its end is onCrash's
			return addr, run, nil
		default:
		}
		pp.run = nil
		return "", run, fmt.Errorf("%s run %d exited before it was ready: %v", pp.label(), run.n, cmd.ProcessState)
	case <-time.After(30 * time.Second):
		return "", run, fmt.Errorf("%s run %d not ready after 30 s", pp.label(), run.n)
	}
}

// restartAfterCrash starts the next run after run ended at a crash point,
// unless eoscheck dealt with its end already (killed, stopped or restarted
// it since) or stopped the process for good: restarted is then false.
func (pp *proxyProc) restartAfterCrash(run *procRun) (restarted bool, err error) {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	if pp.closed || pp.run != run {
		return false, nil
	}
	pp.run = nil
	if _, err := pp.startLocked(); err != nil {
		return false, err
	}
	return true, nil
}

// runCount is how many runs were started.
func (pp *proxyProc) runCount() int {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	return pp.runs
}

// ended reports whether run has exited; err says why that is an error for
// a caller that wanted to signal it (nil: it ended at a crash point, the
// caller's purpose is served).
func (pp *proxyProc) ended(run *procRun) (bool, error) {
	select {
	case <-run.exited:
	default:
		return false, nil
	}
	pp.run = nil
	if run.crash != "" {
		return true, nil
	}
	return true, fmt.Errorf("%s run %d exited by itself: %v", pp.label(), run.n, run.cmd.ProcessState)
}

// send signals run. A run that ended meanwhile (at a crash point, between
// the caller's look at it and the signal) is waited for, so that the
// caller's ended then reports it.
func (pp *proxyProc) send(run *procRun, sig syscall.Signal) error {
	err := run.cmd.Process.Signal(sig)
	if errors.Is(err, os.ErrProcessDone) {
		<-run.exited
	}
	return err
}

// kill SIGKILLs the current run and waits until it is gone. A run that
// already exited by itself is an error, unless it ended at a crash point
// (it is gone, as asked).
func (pp *proxyProc) kill() error {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	run := pp.run
	if run == nil {
		return errors.New(pp.label() + " is not running")
	}
	if ended, err := pp.ended(run); ended {
		return err
	}
	if err := pp.send(run, syscall.SIGKILL); err != nil {
		if ended, eerr := pp.ended(run); ended {
			return eerr
		}
		return fmt.Errorf("SIGKILL: %w", err)
	}
	select {
	case <-run.exited:
	case <-time.After(30 * time.Second):
		return errors.New(pp.label() + " did not die on SIGKILL")
	}
	pp.run = nil
	if ws, ok := run.cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
		return fmt.Errorf("%s run %d ended with %v, not by the SIGKILL", pp.label(), run.n, run.cmd.ProcessState)
	}
	return nil
}

func (pp *proxyProc) label() string {
	if pp.name == "" {
		return "eosproxy"
	}
	return pp.name
}

// signal sends sig (SIGSTOP, SIGCONT) to the current run; errCrashed when
// it ended at a crash point. Such a run is left current, for
// restartAfterCrash to start the next one: a caller that signals, unlike
// one that kills, starts none itself.
func (pp *proxyProc) signal(sig syscall.Signal) error {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	run := pp.run
	if run == nil {
		return fmt.Errorf("%s is not running", pp.label())
	}
	if ended, err := pp.signalEnded(run); ended {
		return err
	}
	err := pp.send(run, sig)
	if err == nil && sig == syscall.SIGSTOP && !stopped(run) {
		// The run killed itself at a crash point just before the signal:
		// signalling a process that is dead but not yet reaped succeeds,
		// and the stop would count while its restart serves on.
		<-run.exited
		err = os.ErrProcessDone
	}
	if err != nil {
		if ended, eerr := pp.signalEnded(run); ended {
			return eerr
		}
		return fmt.Errorf("%s: %v: %w", pp.label(), sig, err)
	}
	return nil
}

// signalEnded is ended for signal: a run that ended at a crash point stays
// current (restartAfterCrash's to restart) and is errCrashed.
func (pp *proxyProc) signalEnded(run *procRun) (bool, error) {
	select {
	case <-run.exited:
	default:
		return false, nil
	}
	if run.crash != "" {
		return true, fmt.Errorf("%s run %d: %w (%s)", pp.label(), run.n, errCrashed, run.crash)
	}
	return pp.ended(run)
}

// stopped waits until SIGSTOP has taken run's process to the stopped
// state, and says false if it is dead instead (a zombie, or gone).
func stopped(run *procRun) bool {
	stat := fmt.Sprintf("/proc/%d/stat", run.cmd.Process.Pid)
	for range 500 {
		b, err := os.ReadFile(stat)
		if err != nil {
			return false
		}
		// pid (comm) state ...: the state follows the last ')'.
		if i := bytes.LastIndexByte(b, ')'); i >= 0 && i+2 < len(b) {
			switch b[i+2] {
			case 'T', 't':
				return true
			case 'Z', 'X':
				return false
			}
		}
		select {
		case <-run.exited:
			return false
		case <-time.After(time.Millisecond):
		}
	}
	return true // still running after 0.5 s: let the caller's timing show it
}

// stop ends whichever run is current, for good (cleanup).
func (pp *proxyProc) stop() {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	pp.closed = true
	if run := pp.run; run != nil {
		run.cmd.Process.Kill()
		<-run.exited
		pp.run = nil
	}
}

// restartBroker runs command (sh -c), which stops the real backend broker
// and starts it again on its data and returns once it serves metadata
// again; its output is appended to logPath. It returns how long it took.
func restartBroker(ctx context.Context, command, logPath string) (time.Duration, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, "sh", "-c", command)
	cmd.Stdout = io.MultiWriter(f, &out)
	cmd.Stderr = cmd.Stdout
	t0 := time.Now()
	err = cmd.Run()
	d := time.Since(t0)
	if err != nil {
		tail := out.String()
		if len(tail) > 2000 {
			tail = tail[len(tail)-2000:]
		}
		return d, fmt.Errorf("%q: %v after %v\n%s", command, err, d.Round(time.Millisecond), tail)
	}
	return d, nil
}

// term stops the current run cleanly (SIGTERM: eosproxy finishes what is
// in flight within its --shutdown-timeout and exits) and waits until it is
// gone. An exit status other than 0 is returned as unclean (the run is
// over either way), unless the run ended at a crash point meanwhile; a run
// that does not exit within 30 s is SIGKILLed and reported as unclean too.
// err is for a run that was not there to stop.
func (pp *proxyProc) term() (unclean string, err error) {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	run := pp.run
	if run == nil {
		return "", errors.New(pp.label() + " is not running")
	}
	if ended, err := pp.ended(run); ended {
		return "", err
	}
	if err := pp.send(run, syscall.SIGTERM); err != nil {
		if ended, eerr := pp.ended(run); ended {
			return "", eerr
		}
		return "", fmt.Errorf("SIGTERM: %w", err)
	}
	select {
	case <-run.exited:
	case <-time.After(30 * time.Second):
		run.cmd.Process.Kill()
		<-run.exited
		pp.run = nil
		return fmt.Sprintf("%s run %d did not exit within 30 s of SIGTERM (SIGKILLed)", pp.label(), run.n), nil
	}
	pp.run = nil
	if state := run.cmd.ProcessState; !state.Success() && run.crash == "" {
		return fmt.Sprintf("%s run %d ended with %v after SIGTERM", pp.label(), run.n, state), nil
	}
	return "", nil
}

// runCmd runs command (sh -c) with its output appended to logPath, for up
// to a minute (pausing or resuming a broker).
func runCmd(ctx context.Context, command, logPath string) error {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, "sh", "-c", command)
	cmd.Stdout = io.MultiWriter(f, &out)
	cmd.Stderr = cmd.Stdout
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%q: %v\n%s", command, err, out.String())
	}
	return nil
}

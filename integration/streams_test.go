package integration

// Real-broker tier, the workload exactly-once exists for: a Kafka Streams
// application with processing.guarantee=exactly_once_v2
// (streams/EosStreamsApp.java, compiled with javac against the kafka-streams
// jars that kafka.sh fetches) runs through the eosproxy binary in front of the
// real Kafka. It re-keys its input through a repartition topic (which Streams
// purges with DeleteRecords), counts per key in a RocksDB store with a
// changelog, and writes one output record per input record carrying the
// key's count after it. While it works, eosproxy is SIGKILLed and restarted
// on its data dir several times, and the Streams JVM is SIGKILLed once and
// restarted, and stopped cleanly once and restarted (its state dir kept).
// Then, read_committed through eosproxy, every input record must be in the
// output exactly once and each key's counts must run 1, 2, 3, ... without
// gap or repeat; the backend must hold exactly one record per input record
// in the output, the repartition topic and the changelog (aborted
// transactions never reach it), and the changelog's last count per key must
// be the key's number of inputs.
//
// What Streams makes of eosproxy's answers is logged, not asserted (see
// streamsLogSummary and README, "Kafka Streams"). eosproxy answers a
// transactional Produce with base offset -1, so RecordCollectorImpl logs
// WARN "Received offset=-1 in produce response for <partition>" for every
// record sent (repartition, changelog and output alike) and never learns
// the changelog offsets it has written. The store's offset then stays where
// the last restore left it (or unknown), and an enforced checkpoint (clean
// close, task suspended in a rebalance, end of restoration) writes that
// stale offset or -4 (OFFSET_UNKNOWN): the next start replays the changelog
// from there, from its start for -4, where straight against Kafka a clean
// restart restores nothing. The result is correct (the replay is puts of
// committed values); it costs restore time.

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

const (
	streamsInputs    = 6000 // input records
	streamsKeys      = 7    // keys the app counts by
	streamsProducers = 3    // logical producers: each one's records go to one input partition
	streamsParts     = 3    // partitions of the input and output topics
)

// kafkaLibs is the directory of the cached Kafka jars, skipping the test
// unless it holds kafka-streams too (a cache fetched before kafka.sh asked
// for it: run kafka.sh fetch again).
func kafkaLibs(t *testing.T, sh string) string {
	t.Helper()
	out, err := exec.Command("bash", sh, "env").Output()
	if err != nil {
		t.Fatalf("kafka.sh env: %v", err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if libs, ok := strings.CutPrefix(line, "EOSPROXY_KAFKA_LIBS="); ok {
			libs = strings.Trim(libs, "'")
			jars, _ := filepath.Glob(filepath.Join(libs, "kafka-streams-*.jar"))
			if len(jars) == 0 {
				t.Skipf("no kafka-streams jar in %s: run integration/kafka/kafka.sh fetch", libs)
			}
			return libs
		}
	}
	t.Fatalf("kafka.sh env names no EOSPROXY_KAFKA_LIBS:\n%s", out)
	return ""
}

// compileStreamsApp compiles streams/EosStreamsApp.java into dir.
func compileStreamsApp(t *testing.T, libs, dir string) {
	t.Helper()
	needBinary(t, "javac")
	src := filepath.Join(integrationDir(t), "streams", "EosStreamsApp.java")
	out, err := exec.Command("javac", "-cp", filepath.Join(libs, "*"), "-d", dir, src).CombinedOutput()
	if err != nil {
		t.Fatalf("javac %s: %v\n%s", src, err, out)
	}
}

// streamsLog4j: Streams' own INFO lines (restores, checkpoints, task
// corruption) and every client's warnings, to stderr.
const streamsLog4j = `status = warn
appender.err.type = Console
appender.err.name = STDERR
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.err.ref = STDERR
logger.streams.name = org.apache.kafka.streams
logger.streams.level = INFO
`

// streamsJVM runs the Streams application, SIGKILLs it or stops it with
// SIGTERM (a clean close), and starts it again with the same arguments, so
// the same application id and state dir. Each run's stdout and stderr go to
// files in dir.
type streamsJVM struct {
	t      *testing.T
	args   []string
	dir    string
	cmd    *exec.Cmd
	exited chan struct{}
	runs   int
	errs   []string // stderr file of each run
	// started is closed when the current run says SIGTERM closes it
	// cleanly (its shutdown hook is in place), running when it first
	// reaches RUNNING (its tasks assigned and restored).
	started, running chan struct{}
}

func newStreamsJVM(t *testing.T, dir string, args ...string) *streamsJVM {
	j := &streamsJVM{t: t, args: args, dir: dir}
	t.Cleanup(func() {
		if j.cmd != nil {
			j.cmd.Process.Kill()
			<-j.exited
		}
	})
	return j
}

func (j *streamsJVM) start() {
	j.t.Helper()
	j.runs++
	out, err := os.Create(filepath.Join(j.dir, fmt.Sprintf("streams-%d.out", j.runs)))
	if err != nil {
		j.t.Fatal(err)
	}
	errPath := filepath.Join(j.dir, fmt.Sprintf("streams-%d.err", j.runs))
	errf, err := os.Create(errPath)
	if err != nil {
		j.t.Fatal(err)
	}
	j.started, j.running = make(chan struct{}), make(chan struct{})
	cmd := exec.Command("java", j.args...)
	cmd.Stdout = &stdoutWatch{w: out, started: j.started, running: j.running}
	cmd.Stderr = errf // a file: the JVM writes it directly
	if err := cmd.Start(); err != nil {
		j.t.Fatalf("start the Streams JVM: %v", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); out.Close(); errf.Close(); close(exited) }()
	j.cmd, j.exited = cmd, exited
	j.errs = append(j.errs, errPath)
}

// stdoutWatch copies the application's stdout to w and closes started at
// its "started" line and running at its first "state ... RUNNING".
type stdoutWatch struct {
	w                 io.Writer
	started, running  chan struct{}
	line              []byte
	wasStarted, wasUp bool
}

func (s *stdoutWatch) Write(p []byte) (int, error) {
	s.w.Write(p)
	for _, c := range p {
		if c != '\n' {
			s.line = append(s.line, c)
			continue
		}
		l := string(s.line)
		if l == "started" && !s.wasStarted {
			s.wasStarted = true
			close(s.started)
		}
		if strings.HasPrefix(l, "state ") && strings.HasSuffix(l, " RUNNING") && !s.wasUp {
			s.wasUp = true
			close(s.running)
		}
		s.line = s.line[:0]
	}
	return len(p), nil
}

// waitRunning waits until the current run has reached RUNNING.
func (j *streamsJVM) waitRunning() {
	j.t.Helper()
	select {
	case <-j.running:
	case <-j.exited:
		j.alive()
	case <-time.After(90 * time.Second):
		j.t.Fatalf("Streams JVM run %d not RUNNING after 90 s\n%s", j.runs, j.tail())
	}
}

// alive fails the test if the current run ended by itself.
func (j *streamsJVM) alive() {
	j.t.Helper()
	select {
	case <-j.exited:
		j.t.Fatalf("Streams JVM run %d exited by itself: %v\n%s", j.runs, j.cmd.ProcessState, j.tail())
	default:
	}
}

func (j *streamsJVM) kill() {
	j.t.Helper()
	j.alive()
	j.cmd.Process.Signal(syscall.SIGKILL)
	<-j.exited
	j.cmd = nil
}

// stop closes the application cleanly (SIGTERM runs its shutdown hook,
// KafkaStreams.close) and fails unless it says so within a minute.
func (j *streamsJVM) stop() {
	j.t.Helper()
	select {
	case <-j.started:
	case <-j.exited:
	case <-time.After(time.Minute):
		j.t.Fatalf("Streams JVM run %d not started after a minute\n%s", j.runs, j.tail())
	}
	j.alive()
	j.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-j.exited:
	case <-time.After(time.Minute):
		j.t.Fatalf("Streams JVM run %d not closed a minute after SIGTERM\n%s", j.runs, j.tail())
	}
	j.cmd = nil
	out, _ := os.ReadFile(filepath.Join(j.dir, fmt.Sprintf("streams-%d.out", j.runs)))
	if !strings.Contains(string(out), "closed") {
		j.t.Fatalf("Streams JVM run %d ended without closing cleanly:\n%s\n%s", j.runs, out, j.tail())
	}
}

// tail is the end of the current run's stderr without the per-record
// offset warnings.
func (j *streamsJVM) tail() string {
	b, _ := os.ReadFile(j.errs[len(j.errs)-1])
	var keep []string
	for _, l := range strings.Split(string(b), "\n") {
		if !strings.Contains(l, "in produce response for") {
			keep = append(keep, l)
		}
	}
	return tail(strings.Join(keep, "\n"), 6000)
}

// streamsFault is one fault of the schedule, done once the output holds at
// least `at` records.
type streamsFault struct {
	at   int
	what string // "eosproxy SIGKILL", "Streams SIGKILL" or "Streams clean restart"
}

func TestStreamsExactlyOnce(t *testing.T) {
	b := realBackend(t)
	sh := kafkaSh(t)
	libs := kafkaLibs(t, sh)
	if testing.Short() {
		t.Skip("the Kafka Streams run takes about a minute")
	}
	needBinary(t, "javac")
	bin := buildProxy(t)
	seed := faultSeed(t)
	rng := rand.New(rand.NewPCG(seed, seed>>1|1))
	work := eoscheckWorkDir(t, "streams-test-", "streams-N.err/out: the Streams JVM runs; state/: its state dir")
	classes := filepath.Join(work, "classes")
	compileStreamsApp(t, libs, classes)
	log4j := filepath.Join(work, "log4j2-streams.properties")
	if err := os.WriteFile(log4j, []byte(streamsLog4j), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()

	direct := newClient(t, b.addrs[0])
	adm := kadm.NewClient(direct)
	input := createTopic(t, adm, streamsParts)
	output := createTopic(t, adm, streamsParts)
	app := fmt.Sprintf("eosstreams-%d", time.Now().UnixNano())
	repartition, changelog := app+"-bykey-repartition", app+"-counts-changelog"

	// The input, written straight to the backend: only the Streams
	// application's own path goes through eosproxy.
	inputs := make([]string, streamsInputs)
	recs := make([]*kgo.Record, streamsInputs)
	seqs := make([]int, streamsProducers)
	for i := range inputs {
		p := rng.IntN(streamsProducers)
		inputs[i] = fmt.Sprintf("k%d:p%d:%d", rng.IntN(streamsKeys), p, seqs[p])
		seqs[p]++
		recs[i] = &kgo.Record{Topic: input, Key: []byte(fmt.Sprintf("p%d", p)), Value: []byte(inputs[i])}
	}
	cp, bootstrap := startCrashProxy(t, bin, b, rng)
	jvm := newStreamsJVM(t, work, "-Xmx384m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
		"-Dlog4j2.configurationFile="+log4j,
		"-cp", classes+string(os.PathListSeparator)+filepath.Join(libs, "*"),
		"EosStreamsApp", bootstrap, app, input, output, filepath.Join(work, "state"))
	jvm.start()

	// The input arrives in 30 slices, one every 0.5 s, so the application
	// works through the whole fault schedule; the last 6 only once every
	// fault is done, so the last runs of eosproxy and the JVM have input
	// to process too.
	const inputSlices, lastSlices = 30, 6
	produced := make(chan error, 1)
	faultsDone := make(chan struct{})
	go func() {
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
		for i := 0; i < inputSlices; i++ {
			if i == inputSlices-lastSlices {
				select {
				case <-faultsDone:
				case <-ctx.Done():
					produced <- ctx.Err()
					return
				}
			}
			lo, hi := i*streamsInputs/inputSlices, (i+1)*streamsInputs/inputSlices
			if err := direct.ProduceSync(ctx, recs[lo:hi]...).FirstErr(); err != nil {
				produced <- fmt.Errorf("produce input %d..%d: %w", lo, hi, err)
				return
			}
			select {
			case <-tick.C:
			case <-ctx.Done():
				produced <- ctx.Err()
				return
			}
		}
		produced <- nil
	}()

	// The schedule: eosproxy SIGKILLed three times, the JVM SIGKILLed once
	// and restarted cleanly once, each when the output has reached a
	// random point below 80 % (all of it input that comes before the
	// schedule's end); the JVM only once the run is RUNNING (it has its
	// tasks and has restored their stores).
	var faults []streamsFault
	for _, what := range []string{"eosproxy SIGKILL", "eosproxy SIGKILL", "eosproxy SIGKILL", "Streams SIGKILL", "Streams clean restart"} {
		faults = append(faults, streamsFault{at: streamsInputs/20 + rng.IntN(streamsInputs*3/4), what: what})
	}
	slices.SortFunc(faults, func(a, b streamsFault) int { return a.at - b.at })

	// Progress is the output as the backend holds it: eosproxy writes a
	// transaction's records there when it commits.
	watch := newClient(t, b.addrs[0], kgo.ConsumeTopics(output), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	seen := 0
	start := time.Now()
	waitOutput := func(n int) {
		t.Helper()
		for seen < n {
			pctx, pcancel := context.WithTimeout(ctx, time.Second)
			fs := watch.PollFetches(pctx)
			pcancel()
			seen += fs.NumRecords()
			if ctx.Err() != nil {
				t.Fatalf("output has %d of %d records after %s\nStreams stderr:\n%s", seen, streamsInputs, time.Since(start).Round(time.Second), jvm.tail())
			}
			jvm.alive()
		}
	}
	for _, f := range faults {
		waitOutput(f.at)
		// The output moves when eosproxy has written a commit: a random
		// delay spreads the faults over the phases of the next ones.
		<-time.After(time.Duration(rng.IntN(300)) * time.Millisecond)
		t.Logf("%s: output at %d records (%s)", f.what, seen, time.Since(start).Round(time.Millisecond))
		switch f.what {
		case "eosproxy SIGKILL":
			cp.kill()
			cp.start()
		case "Streams SIGKILL":
			jvm.waitRunning()
			jvm.kill()
			jvm.start()
		case "Streams clean restart":
			jvm.waitRunning()
			jvm.stop()
			jvm.start()
		}
	}
	close(faultsDone)
	waitOutput(streamsInputs)
	if err := <-produced; err != nil {
		t.Fatal(err)
	}
	t.Logf("output complete in the backend after %s; %d Streams runs, %d eosproxy runs", time.Since(start).Round(time.Millisecond), jvm.runs, cp.runs)
	jvm.stop()

	// Through eosproxy, as an application reads it: read_committed.
	read := newClient(t, bootstrap, kgo.ConsumeTopics(output), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	got := readToEnds(t, read, output)
	v := checkStreamsOutput(inputs, got)
	t.Logf("verdict: %s", v)
	if !v.ok() {
		t.Errorf("output through eosproxy is not the input exactly once: %s", v)
	}

	// The backend: exactly one record per input in each topic the
	// application writes (aborted transactions never reach it), the
	// changelog's last count per key the key's number of inputs, and the
	// repartition topic purged (DeleteRecords passed through eosproxy).
	readBrokerDirect(t, b, output, streamsParts, streamsInputs)
	last := map[string]int64{}
	for _, rs := range readBrokerDirect(t, b, changelog, streamsParts, streamsInputs) {
		for _, r := range rs {
			if len(r.Value) != 8 {
				t.Fatalf("changelog record %d/%d: value %x is not a long", r.Partition, r.Offset, r.Value)
			}
			last[string(r.Key)] = int64(binary.BigEndian.Uint64(r.Value))
		}
	}
	for k, n := range keyCounts(inputs) {
		if last[k] != int64(n) {
			t.Errorf("changelog: last count of %s is %d, want %d", k, last[k], n)
		}
	}
	rends, err := adm.ListEndOffsets(ctx, repartition)
	if err != nil {
		t.Fatal(err)
	}
	rstarts, err := adm.ListStartOffsets(ctx, repartition)
	if err != nil {
		t.Fatal(err)
	}
	var rend, rstart int64
	rends.Each(func(o kadm.ListedOffset) { rend += o.Offset })
	rstarts.Each(func(o kadm.ListedOffset) { rstart += o.Offset })
	if rend != streamsInputs {
		t.Errorf("repartition topic %s ends at %d records in total, want %d", repartition, rend, streamsInputs)
	}
	if rstart == 0 {
		t.Errorf("repartition topic %s was never purged (DeleteRecords through eosproxy)", repartition)
	}
	t.Logf("repartition topic: %d of %d records purged", rstart, rend)

	sum := summarizeStreamsLogs(t, jvm.errs)
	t.Logf("Streams logs: %s", sum)
	if sum.threadDeaths > 0 {
		t.Errorf("a stream thread died %d times (see the Streams logs)", sum.threadDeaths)
	}
	if t.Failed() {
		t.Logf("eosproxy logs:\n%s", cp.logs.report())
	}
}

// readToEnds reads topic through cl from the start up to the partitions'
// end offsets (as cl's client sees them), by partition in offset order.
func readToEnds(t *testing.T, cl *kgo.Client, topic string) map[int32][]*kgo.Record {
	t.Helper()
	ctx := testCtx(t)
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	next := map[int32]int64{}
	done := func() bool {
		ok := true
		ends.Each(func(o kadm.ListedOffset) { ok = ok && next[o.Partition] >= o.Offset })
		return ok
	}
	got := map[int32][]*kgo.Record{}
	for !done() {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %s up to %v: got to %v before timeout", topic, ends, next)
		}
		for _, e := range fs.Errors() {
			t.Fatalf("fetch %s/%d: %v", e.Topic, e.Partition, e.Err)
		}
		fs.EachRecord(func(r *kgo.Record) {
			got[r.Partition] = append(got[r.Partition], r)
			next[r.Partition] = r.Offset + 1
		})
	}
	return got
}

func keyCounts(inputs []string) map[string]int {
	n := map[string]int{}
	for _, in := range inputs {
		n[in[:strings.IndexByte(in, ':')]]++
	}
	return n
}

// streamsVerdict is what checkStreamsOutput found, with a few examples of
// each kind of fault.
type streamsVerdict struct {
	outputs, lost, duplicates, unexpected, badCounts, reordered int
	examples                                                    []string
}

func (v streamsVerdict) ok() bool {
	return v.lost+v.duplicates+v.unexpected+v.badCounts+v.reordered == 0
}

func (v streamsVerdict) String() string {
	return fmt.Sprintf("%d outputs: %d lost, %d duplicates, %d unexpected, %d counts out of sequence, %d out of producer order; examples: %v",
		v.outputs, v.lost, v.duplicates, v.unexpected, v.badCounts, v.reordered, v.examples)
}

func (v *streamsVerdict) example(format string, args ...any) {
	if len(v.examples) < 10 {
		v.examples = append(v.examples, fmt.Sprintf(format, args...))
	}
}

// checkStreamsOutput checks the application's output against its input:
// each input value once; per key (one output partition each, so offset
// order), the counts 1, 2, 3, ... in order; per key and producer, the
// producer's sequence numbers increasing (one input partition per producer,
// one repartition partition per key).
func checkStreamsOutput(inputs []string, out map[int32][]*kgo.Record) streamsVerdict {
	var v streamsVerdict
	want := map[string]bool{}
	for _, in := range inputs {
		want[in] = true
	}
	seen := map[string]int{}
	count := map[string]int{}      // key → last count
	lastSeq := map[[2]string]int{} // key, producer → last sequence
	valueRE := regexp.MustCompile(`^(k\d+):(p\d+):(\d+) (\d+)$`)
	for _, p := range slices.Sorted(maps.Keys(out)) {
		for _, r := range out[p] {
			v.outputs++
			m := valueRE.FindStringSubmatch(string(r.Value))
			if m == nil || string(r.Key) != m[1] {
				v.unexpected++
				v.example("%d/%d: key %q value %q", p, r.Offset, r.Key, r.Value)
				continue
			}
			in, key, prod := m[1]+":"+m[2]+":"+m[3], m[1], m[2]
			seq, _ := strconv.Atoi(m[3])
			n, _ := strconv.Atoi(m[4])
			switch seen[in]++; {
			case !want[in]:
				v.unexpected++
				v.example("%d/%d: %q is no input", p, r.Offset, r.Value)
			case seen[in] > 1:
				v.duplicates++
				v.example("%d/%d: %q again", p, r.Offset, r.Value)
			}
			if n != count[key]+1 {
				v.badCounts++
				v.example("%d/%d: %q after count %d of %s", p, r.Offset, r.Value, count[key], key)
			}
			count[key] = n
			pk := [2]string{key, prod}
			if last, ok := lastSeq[pk]; ok && seq <= last {
				v.reordered++
				v.example("%d/%d: %q after %s's sequence %d", p, r.Offset, r.Value, prod, last)
			}
			lastSeq[pk] = seq
		}
	}
	for _, in := range inputs {
		if seen[in] == 0 {
			v.lost++
			v.example("lost %q", in)
		}
	}
	return v
}

// streamsLogSummary counts what the Streams JVM runs logged about
// eosproxy's answers and what it cost them.
type streamsLogSummary struct {
	offsetUnknown    map[string]int // "Received offset=-1 in produce response", by kind of topic
	threadDeaths     int            // stream threads that died (and were replaced)
	corrupted        int            // "did not find checkpoint offsets while stores are not empty": state wiped
	fromCheckpoint   int            // stores initialized from a checkpoint file
	unknownCheckpt   int            // ... whose checkpointed offset was unknown (restored from the changelog's start)
	restored         int64          // changelog records restored into the store, all runs
	restoredPerRun   []int64
	sendsPerRun      []int          // offset -1 answers per run: how much each run produced
	warnings, errors map[string]int // other WARN and ERROR lines, by message shape
}

func (s streamsLogSummary) String() string {
	return fmt.Sprintf("produce answers with offset -1 %v (per run %v); %d stream thread deaths; %d stores wiped as corrupted (EOS crash); %d stores initialized from a checkpoint, %d of them with offset unknown; %d changelog records restored (per run %v); other warnings %v; errors %v",
		s.offsetUnknown, s.sendsPerRun, s.threadDeaths, s.corrupted, s.fromCheckpoint, s.unknownCheckpt, s.restored, s.restoredPerRun, s.warnings, s.errors)
}

var (
	streamsLineRE     = regexp.MustCompile(`^\[[^\]]*\] (WARN|ERROR) (.*) \(([^)]*)\)$`)
	restoredRE        = regexp.MustCompile(`Finished restoring changelog \S+ to store \S+ with a total number of (\d+) records`)
	offsetUnknownRE   = regexp.MustCompile(`Received offset=-1 in produce response for (\S+)`)
	checkpointOffsRE  = regexp.MustCompile(`initialized from checkpoint with offset (\S+) at changelog`)
	numbersAndIdsRE   = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f-]{27}|\d+`)
	streamsPrefixesRE = regexp.MustCompile(`^(stream-(thread|client) \[[^\]]*\] |state-updater \[[^\]]*\] |stream-task \[[^\]]*\] |\[[A-Za-z]+ clientId=[^\]]*\] )+`)
)

func summarizeStreamsLogs(t *testing.T, files []string) streamsLogSummary {
	t.Helper()
	s := streamsLogSummary{offsetUnknown: map[string]int{}, warnings: map[string]int{}, errors: map[string]int{}}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var run int64
		sends := 0
		for _, l := range strings.Split(string(b), "\n") {
			if m := offsetUnknownRE.FindStringSubmatch(l); m != nil {
				kind := "output"
				switch {
				case strings.Contains(m[1], "-repartition-"):
					kind = "repartition"
				case strings.Contains(m[1], "-changelog-"):
					kind = "changelog"
				}
				s.offsetUnknown[kind]++
				sends++
				continue
			}
			if m := restoredRE.FindStringSubmatch(l); m != nil {
				n, _ := strconv.ParseInt(m[1], 10, 64)
				run += n
			}
			if m := checkpointOffsRE.FindStringSubmatch(l); m != nil {
				s.fromCheckpoint++
				if m[1] == "null" {
					s.unknownCheckpt++
				}
			}
			if strings.Contains(l, "stream thread died") {
				s.threadDeaths++
			}
			if strings.Contains(l, "did not find checkpoint offsets while stores are not empty") {
				s.corrupted++
			}
			if m := streamsLineRE.FindStringSubmatch(l); m != nil {
				msg := numbersAndIdsRE.ReplaceAllString(streamsPrefixesRE.ReplaceAllString(m[2], ""), "N")
				if len(msg) > 160 {
					msg = msg[:160]
				}
				if m[1] == "ERROR" {
					s.errors[msg]++
				} else {
					s.warnings[msg]++
				}
			}
		}
		s.restored += run
		s.restoredPerRun = append(s.restoredPerRun, run)
		s.sendsPerRun = append(s.sendsPerRun, sends)
	}
	return s
}

// TestCheckStreamsOutput: the Streams test's checker finds each kind of
// fault (no broker needed).
func TestCheckStreamsOutput(t *testing.T) {
	inputs := []string{"k0:p0:0", "k1:p0:1", "k0:p1:0", "k0:p0:2"}
	rec := func(off int64, v string) *kgo.Record {
		return &kgo.Record{Offset: off, Key: []byte(v[:2]), Value: []byte(v)}
	}
	good := func() map[int32][]*kgo.Record {
		return map[int32][]*kgo.Record{
			0: {rec(0, "k0:p0:0 1"), rec(1, "k0:p1:0 2"), rec(2, "k0:p0:2 3")},
			1: {rec(0, "k1:p0:1 1")},
		}
	}
	if v := checkStreamsOutput(inputs, good()); !v.ok() || v.outputs != 4 {
		t.Fatalf("exact output judged %s", v)
	}
	for _, c := range []struct {
		name string
		mod  func(map[int32][]*kgo.Record)
		want func(streamsVerdict) int
	}{
		{"lost", func(o map[int32][]*kgo.Record) { o[1] = nil }, func(v streamsVerdict) int { return v.lost }},
		{"duplicate", func(o map[int32][]*kgo.Record) { o[1] = append(o[1], rec(1, "k1:p0:1 1")) },
			func(v streamsVerdict) int { return v.duplicates }},
		{"processed twice, output once", func(o map[int32][]*kgo.Record) { o[0][2] = rec(2, "k0:p0:2 4") },
			func(v streamsVerdict) int { return v.badCounts }},
		{"unexpected", func(o map[int32][]*kgo.Record) { o[1] = append(o[1], rec(1, "k1:p2:9 2")) },
			func(v streamsVerdict) int { return v.unexpected }},
		{"reordered", func(o map[int32][]*kgo.Record) {
			o[0] = []*kgo.Record{rec(0, "k0:p0:2 1"), rec(1, "k0:p1:0 2"), rec(2, "k0:p0:0 3")}
		}, func(v streamsVerdict) int { return v.reordered }},
	} {
		o := good()
		c.mod(o)
		if v := checkStreamsOutput(inputs, o); v.ok() || c.want(v) == 0 {
			t.Errorf("%s: judged %s", c.name, v)
		}
	}
}

package integration

// The client matrix (issue 11), on the real-broker tier: each client library
// is tried through one in-process eosproxy in front of the Apache Kafka broker
// of EOSPROXY_TEST_KAFKA, in four modes:
//   - plain: non-idempotent acks=all produce, read back by the client;
//   - idempotent: the same with the idempotent producer;
//   - transactional: commit a transaction, abort one, commit another; a
//     read_committed franz-go consumer must see the committed records, in
//     order, and none of the aborted;
//   - read_committed: the client reads, with isolation read_committed, a
//     topic franz-go wrote the same way, and must see exactly the committed.
// A client without a mode says why in its row. The table is written to
// testdata/clientmatrix.md with EOSPROXY_UPDATE_MATRIX=1 and README.md holds
// it between the client-matrix markers (TestClientMatrixInREADME).
//
// The clients that are not Go modules come from
// clients/fetch-clients.sh fetch (Java kafka-clients 4.x and 3.x from Maven
// Central, the confluent-kafka wheel from PyPI; install-deps.sh runs it) and
// from Debian (python3-confluent-kafka).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	segkafka "github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

var matrixModes = []string{"plain", "idempotent", "transactional", "read_committed"}

const (
	matrixCount      = 100 // records per mode (per transaction in the transactional ones)
	matrixPartitions = 2
	matrixFile       = "testdata/clientmatrix.md"
	matrixBegin      = "<!-- client-matrix:begin -->"
	matrixEnd        = "<!-- client-matrix:end -->"
	// matrixToolTimeout bounds one external client run: a JVM or Python
	// process doing all its modes, each bounded by 30 s inside.
	matrixToolTimeout = 3 * time.Minute
)

// matrixResult is one mode's outcome as a client reports it: what it read
// (partition, value) and the error that stopped it.
type matrixResult struct {
	Consumed []matrixRecord `json:"consumed"`
	Error    *string        `json:"error"`
}

type matrixRecord struct {
	Partition int32
	Value     string
}

func (r *matrixRecord) UnmarshalJSON(b []byte) error {
	var pair [2]any
	if err := json.Unmarshal(b, &pair); err != nil {
		return err
	}
	p, ok1 := pair[0].(float64)
	v, ok2 := pair[1].(string)
	if !ok1 || !ok2 {
		return fmt.Errorf("bad record %s", b)
	}
	r.Partition, r.Value = int32(p), v
	return nil
}

// matrixEnv is what a client run gets: eosproxy's address, a transactional
// id of its own, and the topic of each mode it supports.
type matrixEnv struct {
	addr   string
	txnID  string
	topics map[string]string // mode -> topic
}

type matrixClient struct {
	name        string
	unsupported map[string]string // mode -> why the client cannot do it
	// run does every mode of env.topics and returns the client's version
	// and each mode's result. It skips the test when the client is not
	// installed.
	run func(t *testing.T, env matrixEnv) (version string, res map[string]matrixResult)
}

func matrixClients() []matrixClient {
	return []matrixClient{
		{name: "franz-go (kgo)", run: runFranzMatrix},
		{name: "Java kafka-clients 4.x", run: javaMatrix("EOSPROXY_MATRIX_JAVA4")},
		{name: "Java kafka-clients 3.x", run: javaMatrix("EOSPROXY_MATRIX_JAVA3")},
		{name: "librdkafka: Debian python3-confluent-kafka", run: pythonMatrix("")},
		{name: "librdkafka: confluent-kafka wheel (PyPI)", run: pythonMatrix("EOSPROXY_MATRIX_WHEEL_PYTHON")},
		{name: "IBM/sarama", run: runSaramaMatrix},
		{name: "segmentio/kafka-go", run: runKafkaGoMatrix, unsupported: map[string]string{
			"idempotent":    "no: kafka-go has no idempotent producer",
			"transactional": "no: kafka-go has no transactions API",
		}},
	}
}

func TestClientMatrix(t *testing.T) {
	b := realBackend(t)
	if secureTier {
		t.Skip("the client matrix runs its clients without TLS or SASL")
	}
	p := startProxy(t, b)
	adm := kadm.NewClient(newClient(t, p.Addr()))

	clients := matrixClients()
	rows := make([][]string, len(clients))
	t.Run("clients", func(t *testing.T) {
		for i, c := range clients {
			t.Run(strings.NewReplacer(" ", "_", "/", "_", ":", "", "(", "", ")", "").Replace(c.name), func(t *testing.T) {
				t.Parallel()
				rows[i] = runMatrixClient(t, p, adm, c)
			})
		}
	})
	table := matrixTable(rows)
	t.Logf("client matrix:\n%s", table)
	if t.Failed() {
		return
	}
	kafkaVersion := "4.1.2"
	if out, err := exec.Command("bash", filepath.Join(integrationDir(t), "kafka", "kafka.sh"), "env").Output(); err == nil {
		for _, l := range splitLines(string(out)) {
			if v, ok := strings.CutPrefix(l, "EOSPROXY_KAFKA_VERSION="); ok {
				kafkaVersion = v
			}
		}
	}
	path := filepath.Join(integrationDir(t), matrixFile)
	for i, r := range rows {
		if r == nil {
			t.Logf("%s was skipped: not in this run's table", clients[i].name)
		}
	}
	if os.Getenv("EOSPROXY_UPDATE_MATRIX") != "" {
		if slices.ContainsFunc(rows, func(r []string) bool { return r == nil }) {
			t.Fatalf("not writing %s: a client was skipped", matrixFile)
		}
		doc := fmt.Sprintf("Run on %s through eosproxy in front of Apache Kafka %s, by `TestClientMatrix`\n"+
			"(`integration/clientmatrix_test.go`; regenerate with `EOSPROXY_UPDATE_MATRIX=1`):\n\n%s",
			time.Now().UTC().Format("2006-01-02"), kafkaVersion, table)
		if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s: copy it into README.md between %s and %s", path, matrixBegin, matrixEnd)
		return
	}
	// The committed table must still say what the clients do; a newer
	// version alone only asks for a regeneration.
	old, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v (write it with EOSPROXY_UPDATE_MATRIX=1)", path, err)
	}
	oldRows := tableRows(string(old))
	if len(oldRows) != len(rows) {
		t.Fatalf("%s has %d rows, this run %d: regenerate it with EOSPROXY_UPDATE_MATRIX=1", matrixFile, len(oldRows), len(rows))
	}
	for i, r := range rows {
		if r == nil {
			continue
		}
		if !slices.Equal(withoutVersion(oldRows[i]), withoutVersion(r)) {
			t.Errorf("%s says %v, this run %v: regenerate it with EOSPROXY_UPDATE_MATRIX=1", matrixFile, oldRows[i], r)
		} else if !slices.Equal(oldRows[i], r) {
			t.Logf("%s: versions differ (%v, this run %v): regenerate it with EOSPROXY_UPDATE_MATRIX=1", matrixFile, oldRows[i], r)
		}
	}
}

// TestClientMatrixInREADME checks README.md shows testdata/clientmatrix.md
// between the client-matrix markers.
func TestClientMatrixInREADME(t *testing.T) {
	dir := integrationDir(t)
	want, err := os.ReadFile(filepath.Join(dir, matrixFile))
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join(dir, "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok1 := strings.Cut(string(readme), matrixBegin+"\n")
	got, _, ok2 := strings.Cut(rest, matrixEnd)
	if !ok1 || !ok2 {
		t.Fatalf("README.md lacks the markers %s … %s", matrixBegin, matrixEnd)
	}
	if got != string(want) {
		t.Fatalf("README.md between %s and %s is not %s: copy it in.\nREADME:\n%s\n%s:\n%s", matrixBegin, matrixEnd, matrixFile, got, matrixFile, want)
	}
	if len(tableRows(string(want))) != len(matrixClients()) {
		t.Fatalf("%s has %d rows, the test %d clients", matrixFile, len(tableRows(string(want))), len(matrixClients()))
	}
}

// runMatrixClient runs one client in every mode it supports and returns its
// table row: name, version, one cell per mode.
func runMatrixClient(t *testing.T, p *testProxy, adm *kadm.Client, c matrixClient) []string {
	env := matrixEnv{addr: p.Addr(), topics: map[string]string{}}
	for _, m := range matrixModes {
		if _, no := c.unsupported[m]; !no {
			env.topics[m] = createTopic(t, adm, matrixPartitions)
		}
	}
	if tp, ok := env.topics["transactional"]; ok {
		env.txnID = tp + "-txn"
	}
	if tp, ok := env.topics["read_committed"]; ok {
		writeTxnPattern(t, p.Addr(), tp)
	}
	version, res := c.run(t, env)
	row := []string{c.name, version}
	for _, m := range matrixModes {
		if why, no := c.unsupported[m]; no {
			row = append(row, why)
			continue
		}
		if err := checkMatrixMode(t, p.Addr(), m, env.topics[m], res[m]); err != nil {
			t.Errorf("%s, %s: %v", c.name, m, err)
			row = append(row, "FAILED")
			continue
		}
		row = append(row, "yes")
	}
	return row
}

// matrixValues is what a mode's topic holds, per partition, for the records
// "<prefix>-<i>" written to partition i % matrixPartitions.
func matrixValues(prefixes ...string) map[int32][]string {
	want := map[int32][]string{}
	for _, pre := range prefixes {
		for i := range matrixCount {
			p := int32(i % matrixPartitions)
			want[p] = append(want[p], fmt.Sprintf("%s-%d", pre, i))
		}
	}
	return want
}

func checkMatrixMode(t *testing.T, addr, mode, topic string, r matrixResult) error {
	if r.Error != nil {
		return fmt.Errorf("client error: %s", *r.Error)
	}
	var want map[int32][]string
	got := map[int32][]string{}
	switch mode {
	case "plain", "idempotent":
		want = matrixValues(mode)
		for _, rec := range r.Consumed {
			got[rec.Partition] = append(got[rec.Partition], rec.Value)
		}
	case "transactional":
		// The client's records as a read_committed reader sees them.
		want = matrixValues("c1", "c2")
		got = readCommitted(t, addr, topic, 2*matrixCount)
	case "read_committed":
		want = matrixValues("c1", "c2")
		for _, rec := range r.Consumed {
			got[rec.Partition] = append(got[rec.Partition], rec.Value)
		}
	}
	for p := range int32(matrixPartitions) {
		if !slices.Equal(got[p], want[p]) {
			return fmt.Errorf("partition %d of %s read %d records %v, want %d %v", p, topic, len(got[p]), firstN(got[p], 5), len(want[p]), firstN(want[p], 5))
		}
	}
	if len(got) != matrixPartitions {
		return fmt.Errorf("records from partitions %v, want 0..%d", got, matrixPartitions-1)
	}
	if mode == "plain" || mode == "idempotent" {
		return checkMatrixProducers(t, addr, topic, mode == "idempotent", want)
	}
	return nil
}

// checkMatrixProducers asks eosproxy's DescribeProducers whether the client
// really wrote as it was told: an idempotent producer leaves one producer
// per partition whose last sequence is the partition's last record, a plain
// one none.
func checkMatrixProducers(t *testing.T, addr, topic string, idempotent bool, want map[int32][]string) error {
	adm := kadm.NewClient(newClient(t, addr))
	described, err := adm.DescribeProducers(testCtx(t), kadm.TopicsSet{topic: partitionSet(matrixPartitions)})
	if err != nil {
		return fmt.Errorf("DescribeProducers: %w", err)
	}
	var errs []error
	described.EachPartition(func(d kadm.DescribedProducersPartition) {
		prs := d.ActiveProducers.Sorted()
		switch {
		case d.Err != nil:
			errs = append(errs, fmt.Errorf("DescribeProducers %s/%d: %w %s", d.Topic, d.Partition, d.Err, d.ErrMessage))
		case !idempotent && len(prs) != 0:
			errs = append(errs, fmt.Errorf("plain produce left producers %+v on partition %d", prs, d.Partition))
		case idempotent && (len(prs) != 1 || prs[0].LastSequence != int32(len(want[d.Partition])-1)):
			errs = append(errs, fmt.Errorf("idempotent produce left producers %+v on partition %d, want one with last sequence %d", prs, d.Partition, len(want[d.Partition])-1))
		}
	})
	return errors.Join(errs...)
}

// writeTxnPattern writes, with franz-go's transactional producer, a
// committed, an aborted and a committed transaction ("c1", "a", "c2").
func writeTxnPattern(t *testing.T, addr, topic string) {
	t.Helper()
	cl := newClient(t, addr, kgo.TransactionalID(topic+"-writer"), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err := franzTransact(testCtx(t), cl, topic); err != nil {
		t.Fatalf("franz-go writing the read_committed topic: %v", err)
	}
}

// readCommitted reads want records of topic with franz-go, read_committed,
// by partition.
func readCommitted(t *testing.T, addr, topic string, want int) map[int32][]string {
	t.Helper()
	cl := newClient(t, addr, kgo.FetchIsolationLevel(kgo.ReadCommitted()), matrixAssign(topic))
	got, err := franzConsume(testCtx(t), cl, want)
	if err != nil {
		t.Errorf("read_committed read of %s: %v", topic, err)
	}
	out := map[int32][]string{}
	for _, r := range got {
		out[r.Partition] = append(out[r.Partition], r.Value)
	}
	return out
}

func matrixAssign(topic string) kgo.Opt {
	parts := map[int32]kgo.Offset{}
	for p := range int32(matrixPartitions) {
		parts[p] = kgo.NewOffset().AtStart()
	}
	return kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: parts})
}

func matrixTable(rows [][]string) string {
	var b strings.Builder
	b.WriteString("| client | version | plain | idempotent | transactional | read_committed |\n")
	b.WriteString("|---|---|---|---|---|---|\n")
	for _, r := range rows {
		if r == nil {
			continue // a skipped client
		}
		b.WriteString("| " + strings.Join(r, " | ") + " |\n")
	}
	return b.String()
}

// tableRows parses the body rows of the markdown table in doc.
func tableRows(doc string) [][]string {
	var rows [][]string
	for _, l := range splitLines(doc) {
		if !strings.HasPrefix(l, "| ") || strings.HasPrefix(l, "| client |") {
			continue
		}
		cells := strings.Split(strings.TrimSuffix(strings.TrimPrefix(l, "| "), " |"), " | ")
		rows = append(rows, cells)
	}
	return rows
}

func withoutVersion(row []string) []string {
	if len(row) < 2 {
		return row
	}
	return append([]string{row[0]}, row[2:]...)
}

// moduleVersion is the version of a Go module go.mod selects (a test
// binary's build information lists no dependencies).
func moduleVersion(path string) string {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Version}}", path).Output()
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(out))
}

// --- franz-go --------------------------------------------------------------------

func runFranzMatrix(t *testing.T, env matrixEnv) (string, map[string]matrixResult) {
	res := map[string]matrixResult{}
	for mode, topic := range env.topics {
		var r matrixResult
		res[mode] = errResult(&r, franzMode(t, env, mode, topic, &r))
	}
	return moduleVersion("github.com/twmb/franz-go"), res
}

func franzMode(t *testing.T, env matrixEnv, mode, topic string, r *matrixResult) error {
	ctx := testCtx(t)
	manual := kgo.RecordPartitioner(kgo.ManualPartitioner())
	switch mode {
	case "plain", "idempotent":
		opts := []kgo.Opt{manual, kgo.RequiredAcks(kgo.AllISRAcks())}
		if mode == "plain" {
			opts = append(opts, kgo.DisableIdempotentWrite())
		}
		prod := newClient(t, env.addr, opts...)
		if err := prod.ProduceSync(ctx, matrixKgoRecords(topic, mode)...).FirstErr(); err != nil {
			return fmt.Errorf("produce: %w", err)
		}
		var err error
		r.Consumed, err = franzConsume(ctx, newClient(t, env.addr, matrixAssign(topic)), matrixCount)
		return err
	case "transactional":
		return franzTransact(ctx, newClient(t, env.addr, manual, kgo.TransactionalID(env.txnID)), topic)
	case "read_committed":
		var err error
		r.Consumed, err = franzConsume(ctx, newClient(t, env.addr, matrixAssign(topic), kgo.FetchIsolationLevel(kgo.ReadCommitted())), 2*matrixCount)
		return err
	}
	return fmt.Errorf("unknown mode %s", mode)
}

// errResult keeps what a mode read and adds its error.
func errResult(r *matrixResult, err error) matrixResult {
	var out matrixResult
	if r != nil {
		out = *r
	}
	if err != nil {
		s := err.Error()
		out.Error = &s
	}
	return out
}

func matrixKgoRecords(topic, prefix string) []*kgo.Record {
	recs := make([]*kgo.Record, matrixCount)
	for i := range recs {
		recs[i] = &kgo.Record{Topic: topic, Partition: int32(i % matrixPartitions), Value: fmt.Appendf(nil, "%s-%d", prefix, i)}
	}
	return recs
}

func franzTransact(ctx context.Context, cl *kgo.Client, topic string) error {
	for _, step := range []struct {
		prefix string
		commit kgo.TransactionEndTry
	}{{"c1", kgo.TryCommit}, {"a", kgo.TryAbort}, {"c2", kgo.TryCommit}} {
		if err := cl.BeginTransaction(); err != nil {
			return fmt.Errorf("begin: %w", err)
		}
		if err := cl.ProduceSync(ctx, matrixKgoRecords(topic, step.prefix)...).FirstErr(); err != nil {
			return fmt.Errorf("produce %s: %w", step.prefix, err)
		}
		if err := cl.EndTransaction(ctx, step.commit); err != nil {
			return fmt.Errorf("end transaction %s: %w", step.prefix, err)
		}
	}
	return nil
}

func franzConsume(ctx context.Context, cl *kgo.Client, want int) ([]matrixRecord, error) {
	var got []matrixRecord
	for len(got) < want {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return got, fmt.Errorf("read %d of %d records: %w", len(got), want, err)
		}
		if err := fs.Err(); err != nil {
			return got, fmt.Errorf("fetch: %w", err)
		}
		fs.EachRecord(func(r *kgo.Record) { got = append(got, matrixRecord{r.Partition, string(r.Value)}) })
	}
	return got, nil
}

// --- Java kafka-clients ----------------------------------------------------------

// matrixPaths is what clients/fetch-clients.sh env prints.
var matrixPaths = sync.OnceValues(func() (map[string]string, error) {
	out, err := exec.Command("bash", filepath.Join(integrationDirNoT(), "clients", "fetch-clients.sh"), "env").Output()
	if err != nil {
		return nil, fmt.Errorf("clients/fetch-clients.sh env: %w", err)
	}
	m := map[string]string{}
	for _, l := range splitLines(string(out)) {
		if k, v, ok := strings.Cut(l, "="); ok {
			m[k] = v
		}
	}
	return m, nil
})

func integrationDirNoT() string {
	wd, _ := os.Getwd() // go test runs in the package directory
	return wd
}

// fetchedClient returns the path fetch-clients.sh names for key, skipping
// when it has not been fetched.
func fetchedClient(t *testing.T, key string) string {
	t.Helper()
	paths, err := matrixPaths()
	if err != nil {
		t.Fatal(err)
	}
	path := paths[key]
	if _, err := os.Stat(path); path == "" || err != nil {
		t.Skipf("%s not fetched (%q): run integration/clients/fetch-clients.sh fetch (install-deps.sh does)", key, path)
	}
	return path
}

func javaMatrix(key string) func(*testing.T, matrixEnv) (string, map[string]matrixResult) {
	return func(t *testing.T, env matrixEnv) (string, map[string]matrixResult) {
		dir := fetchedClient(t, key)
		java := needBinary(t, "java")
		needBinary(t, "javac") // source-file mode compiles in the JVM; a JRE alone lacks jdk.compiler
		args := []string{"-Xmx256m", "-XX:TieredStopAtLevel=1", "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn", "-cp", filepath.Join(dir, "*"),
			filepath.Join(integrationDir(t), "clients", "Matrix.java"),
			env.addr, strconv.Itoa(matrixCount), strconv.Itoa(matrixPartitions), env.txnID}
		for _, m := range matrixModes {
			if tp, ok := env.topics[m]; ok {
				args = append(args, m+"="+tp)
			}
		}
		stdout, stderr := runToolFor(t, matrixToolTimeout, "", java, args...)
		logStderr(t, stderr)
		lines := splitLines(stdout)
		var out struct {
			Version string                  `json:"version"`
			Modes   map[string]matrixResult `json:"modes"`
		}
		if len(lines) == 0 || json.Unmarshal([]byte(lines[len(lines)-1]), &out) != nil {
			t.Fatalf("Matrix.java output is not one JSON line:\n%s\nstderr:\n%s", tail(stdout, 2000), tail(stderr, 3000))
		}
		return out.Version, out.Modes
	}
}

// logStderr shows what an external client logged (its warnings, retries).
func logStderr(t *testing.T, stderr string) {
	if s := strings.TrimSpace(stderr); s != "" {
		t.Logf("client stderr:\n%s", tail(s, 3000))
	}
}

// --- librdkafka (confluent-kafka-python) ------------------------------------------

// pythonMatrix runs clients/librdkafka_matrix.py with Debian's python (key
// "") or the one fetch-clients.sh names under key.
func pythonMatrix(key string) func(*testing.T, matrixEnv) (string, map[string]matrixResult) {
	return func(t *testing.T, env matrixEnv) (string, map[string]matrixResult) {
		var python, script string
		if key == "" {
			script = needRdkafkaPython(t, "librdkafka_matrix.py")
			python = debianPython
		} else {
			python = fetchedClient(t, key)
			script = filepath.Join(integrationDir(t), "clients", "librdkafka_matrix.py")
		}
		args := []string{script, "--bootstrap", env.addr, "--count", strconv.Itoa(matrixCount),
			"--partitions", strconv.Itoa(matrixPartitions), "--transactional-id", env.txnID}
		for _, m := range matrixModes {
			if tp, ok := env.topics[m]; ok {
				args = append(args, "--mode", m+"="+tp)
			}
		}
		stdout, stderr := runToolFor(t, matrixToolTimeout, "", python, args...)
		logStderr(t, stderr)
		var out struct {
			Version []string                `json:"version"`
			Modes   map[string]matrixResult `json:"modes"`
		}
		if err := json.Unmarshal([]byte(stdout), &out); err != nil || len(out.Version) != 2 {
			t.Fatalf("librdkafka_matrix.py output is not its JSON (%v):\n%s\nstderr:\n%s", err, tail(stdout, 2000), tail(stderr, 3000))
		}
		return fmt.Sprintf("confluent-kafka %s, librdkafka %s", out.Version[0], out.Version[1]), out.Modes
	}
}

// --- IBM/sarama --------------------------------------------------------------------

func runSaramaMatrix(t *testing.T, env matrixEnv) (string, map[string]matrixResult) {
	res := map[string]matrixResult{}
	for mode, topic := range env.topics {
		r, err := saramaMode(env, mode, topic)
		res[mode] = errResult(&r, err)
	}
	return moduleVersion("github.com/IBM/sarama"), res
}

func saramaConfig() *sarama.Config {
	cfg := sarama.NewConfig()
	cfg.Version = sarama.V4_1_0_0
	cfg.ClientID = "eosproxy-matrix"
	cfg.Producer.RequiredAcks = sarama.WaitForAll
	cfg.Producer.Return.Successes = true
	cfg.Producer.Partitioner = sarama.NewManualPartitioner
	cfg.Producer.Timeout = 30 * time.Second
	cfg.Metadata.Retry.Backoff = 100 * time.Millisecond
	return cfg
}

func saramaMessages(topic, prefix string) []*sarama.ProducerMessage {
	msgs := make([]*sarama.ProducerMessage, matrixCount)
	for i := range msgs {
		msgs[i] = &sarama.ProducerMessage{Topic: topic, Partition: int32(i % matrixPartitions), Value: sarama.StringEncoder(fmt.Sprintf("%s-%d", prefix, i))}
	}
	return msgs
}

func saramaMode(env matrixEnv, mode, topic string) (matrixResult, error) {
	addrs := []string{env.addr}
	switch mode {
	case "plain", "idempotent":
		cfg := saramaConfig()
		if mode == "idempotent" {
			cfg.Producer.Idempotent = true
			cfg.Net.MaxOpenRequests = 1
		}
		prod, err := sarama.NewSyncProducer(addrs, cfg)
		if err != nil {
			return matrixResult{}, fmt.Errorf("new producer: %w", err)
		}
		err = prod.SendMessages(saramaMessages(topic, mode))
		if cerr := prod.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return matrixResult{}, fmt.Errorf("produce: %w", err)
		}
		got, err := saramaConsume(addrs, topic, matrixCount, sarama.ReadUncommitted)
		return matrixResult{Consumed: got}, err
	case "transactional":
		cfg := saramaConfig()
		cfg.Producer.Idempotent = true
		cfg.Net.MaxOpenRequests = 1
		cfg.Producer.Transaction.ID = env.txnID
		prod, err := sarama.NewSyncProducer(addrs, cfg)
		if err != nil {
			return matrixResult{}, fmt.Errorf("new transactional producer: %w", err)
		}
		defer prod.Close()
		for _, step := range []struct {
			prefix string
			commit bool
		}{{"c1", true}, {"a", false}, {"c2", true}} {
			if err := prod.BeginTxn(); err != nil {
				return matrixResult{}, fmt.Errorf("begin: %w", err)
			}
			if err := prod.SendMessages(saramaMessages(topic, step.prefix)); err != nil {
				return matrixResult{}, fmt.Errorf("produce %s: %w", step.prefix, err)
			}
			end := prod.AbortTxn
			if step.commit {
				end = prod.CommitTxn
			}
			if err := end(); err != nil {
				return matrixResult{}, fmt.Errorf("end transaction %s: %w", step.prefix, err)
			}
		}
		return matrixResult{}, nil
	case "read_committed":
		got, err := saramaConsume(addrs, topic, 2*matrixCount, sarama.ReadCommitted)
		return matrixResult{Consumed: got}, err
	}
	return matrixResult{}, fmt.Errorf("unknown mode %s", mode)
}

func saramaConsume(addrs []string, topic string, want int, iso sarama.IsolationLevel) ([]matrixRecord, error) {
	cfg := saramaConfig()
	cfg.Consumer.IsolationLevel = iso
	cfg.Consumer.Return.Errors = true
	c, err := sarama.NewConsumer(addrs, cfg)
	if err != nil {
		return nil, fmt.Errorf("new consumer: %w", err)
	}
	defer c.Close()
	msgs := make(chan *sarama.ConsumerMessage)
	errs := make(chan error, matrixPartitions)
	done := make(chan struct{})
	var pcs []sarama.PartitionConsumer
	defer func() {
		close(done) // the forwarders stop first, then their partitions
		for _, pc := range pcs {
			pc.Close()
		}
	}()
	for p := range int32(matrixPartitions) {
		pc, err := c.ConsumePartition(topic, p, sarama.OffsetOldest)
		if err != nil {
			return nil, fmt.Errorf("consume partition %d: %w", p, err)
		}
		pcs = append(pcs, pc)
		go func() {
			for {
				select {
				case m := <-pc.Messages():
					select {
					case msgs <- m:
					case <-done:
						return
					}
				case e := <-pc.Errors():
					select {
					case errs <- e:
					case <-done:
					}
					return
				case <-done:
					return
				}
			}
		}()
	}
	deadline := time.NewTimer(30 * time.Second)
	defer deadline.Stop()
	var got []matrixRecord
	for len(got) < want {
		select {
		case m := <-msgs:
			got = append(got, matrixRecord{m.Partition, string(m.Value)})
		case err := <-errs:
			return got, fmt.Errorf("consume: %w", err)
		case <-deadline.C:
			return got, fmt.Errorf("read %d of %d records in 30s", len(got), want)
		}
	}
	return got, nil
}

// --- segmentio/kafka-go ---------------------------------------------------------------

func runKafkaGoMatrix(t *testing.T, env matrixEnv) (string, map[string]matrixResult) {
	res := map[string]matrixResult{}
	ctx := testCtx(t)
	for mode, topic := range env.topics {
		var r matrixResult
		var err error
		switch mode {
		case "plain":
			w := &segkafka.Writer{
				Addr:         segkafka.TCP(env.addr),
				Topic:        topic,
				RequiredAcks: segkafka.RequireAll,
				BatchTimeout: 5 * time.Millisecond,
				// The partition is the key: "<partition>".
				Balancer: segkafka.BalancerFunc(func(m segkafka.Message, _ ...int) int {
					p, _ := strconv.Atoi(string(m.Key))
					return p
				}),
			}
			msgs := make([]segkafka.Message, matrixCount)
			for i := range msgs {
				msgs[i] = segkafka.Message{Key: []byte(strconv.Itoa(i % matrixPartitions)), Value: fmt.Appendf(nil, "plain-%d", i)}
			}
			err = w.WriteMessages(ctx, msgs...)
			if cerr := w.Close(); err == nil {
				err = cerr
			}
			if err == nil {
				r.Consumed, err = kafkaGoConsume(ctx, env.addr, topic, segkafka.ReadUncommitted)
			}
		case "read_committed":
			r.Consumed, err = kafkaGoConsume(ctx, env.addr, topic, segkafka.ReadCommitted)
		default:
			err = fmt.Errorf("mode %s not supported", mode)
		}
		res[mode] = errResult(&r, err)
	}
	return moduleVersion("github.com/segmentio/kafka-go"), res
}

// kafkaGoConsume reads each partition's share of the mode's records with a
// partition reader (no group).
func kafkaGoConsume(ctx context.Context, addr, topic string, iso segkafka.IsolationLevel) ([]matrixRecord, error) {
	// As many records as the mode wrote: one batch of values, or two
	// committed transactions.
	want := matrixValues("plain")
	if iso == segkafka.ReadCommitted {
		want = matrixValues("c1", "c2")
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var got []matrixRecord
	for p := range int32(matrixPartitions) {
		r := segkafka.NewReader(segkafka.ReaderConfig{
			Brokers:        []string{addr},
			Topic:          topic,
			Partition:      int(p),
			IsolationLevel: iso,
			MaxWait:        500 * time.Millisecond,
		})
		if err := r.SetOffset(segkafka.FirstOffset); err != nil {
			r.Close()
			return got, fmt.Errorf("partition %d: set offset: %w", p, err)
		}
		for range want[p] {
			m, err := r.ReadMessage(ctx)
			if err != nil {
				r.Close()
				return got, fmt.Errorf("partition %d: read: %w", p, err)
			}
			got = append(got, matrixRecord{int32(m.Partition), string(m.Value)})
		}
		if err := r.Close(); err != nil && !errors.Is(err, context.Canceled) {
			return got, fmt.Errorf("partition %d: close: %w", p, err)
		}
	}
	return got, nil
}

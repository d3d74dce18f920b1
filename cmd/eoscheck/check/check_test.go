package check

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// The verdict must see each kind of anomaly: records are written straight
// to a backend with known lost, duplicate, out-of-order and unexpected
// values.
func TestVerdictCountsAnomalies(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	fake, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer fake.Close()
	cl, err := kgo.NewClient(kgo.SeedBrokers(fake.ListenAddrs()...), kgo.DefaultProduceTopic("t"),
		kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	if _, err := adm.CreateTopic(ctx, 2, 1, nil, "t"); err != nil {
		t.Fatal(err)
	}
	// Producer 0 sent 0..5 (all acked), producer 1 sent 0..2 (acked 0, 1).
	prods := []*producer{{acked: make([]atomic.Bool, 6)}, {acked: make([]atomic.Bool, 3)}}
	prods[0].sent.Store(6)
	prods[1].sent.Store(3)
	for s := range 6 {
		prods[0].acked[s].Store(true)
	}
	prods[1].acked[0].Store(true)
	prods[1].acked[1].Store(true)
	write := []struct {
		part int32
		v    string
	}{
		{0, "0-0"}, {0, "0-1"}, {0, "0-1"}, // duplicate 0-1
		{0, "0-3"}, {0, "0-2"}, // order violation
		{1, "1-0"}, {1, "1-1"}, {1, "1-2"},
		{1, "0-99"}, {1, "7-0"}, {1, "junk"}, // 3 unexpected
		// 0-4 and 0-5 lost
	}
	for _, w := range write {
		if err := cl.ProduceSync(ctx, &kgo.Record{Partition: w.part, Value: []byte(w.v)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	rep := &Report{Topic: "t"}
	if _, err := verdict(ctx, fake.ListenAddrs(), rep, prods, adm, nil); err != nil {
		t.Fatal(err)
	}
	if rep.Lost != 2 || rep.Duplicates != 1 || rep.OrderErrors != 1 || rep.Unexpected != 3 || rep.Anomalies != 7 {
		t.Fatalf("lost %d dup %d order %d unexpected %d anomalies %d; examples %v",
			rep.Lost, rep.Duplicates, rep.OrderErrors, rep.Unexpected, rep.Anomalies, rep.Examples)
	}
	if rep.Valid() {
		t.Fatal("report with anomalies is valid")
	}
}

// The copier verdict must see each kind of anomaly: an output topic is
// written straight to a backend against a hand-made transaction log.
func TestCopyVerdictCountsAnomalies(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	fake, cl, adm := verdictBackend(ctx, t)
	// Input: producer 0 sent 0..7, all in the input topic.
	prods := []*producer{{acked: make([]atomic.Bool, 8)}}
	prods[0].sent.Store(8)
	// 0-5 is in the input twice (its producer's duplicate): copied
	// twice, it is no copier's duplicate.
	seen := [][]int32{{1, 1, 1, 1, 1, 2, 1, 1}}
	for i := range 8 {
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "in", Partition: int32(i % 2), Value: fmt.Appendf(nil, "0-%d", i)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	tlog := &txnLog{start: time.Now()}
	txn := func(st txnState, ids ...int) *txnRec {
		var in []inputID
		for _, s := range ids {
			in = append(in, packID(0, s))
		}
		r := tlog.begin(0, 0, in)
		r.state.Store(int32(st))
		r.endAt.Store(1)
		return r
	}
	txn(txnCommitted, 0, 1, 2) // 1: whole
	txn(txnAborted, 3, 4)      // 2: 3 read from it: aborted read
	txn(txnCommitted, 3, 4)    // 3: 4 missing: committed missing, input 4 lost
	txn(txnCommitted, 2, 5)    // 4: 2 again: duplicate
	txn(txnCrashed, 6)         // 5: read: aborted read (fenced copier)
	txn(txnOpen, 6)            // 6: read: never ended
	txn(txnCommitted, 5)       // 7: the input's second 0-5
	// 7 is never copied, 6 has no committed copy and 4 is missing from its
	// committed transaction: 3 lost.
	write := []struct {
		part int32
		v    string
	}{
		{0, "0-0:0:1"}, {0, "0-1:0:1"}, {1, "0-2:0:1"},
		{0, "0-3:0:2"},
		{1, "0-3:0:3"},
		{0, "0-2:0:4"}, {1, "0-5:0:4"},
		{0, "0-6:0:5"},
		{1, "0-6:0:6"},
		{0, "0-5:0:7"},
		{1, "0-5:0:99"}, {0, "junk"}, {0, "0-0:1:1"}, {1, "0-1:0:3"}, // 4 unexpected
	}
	for _, w := range write {
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "out", Partition: w.part, Value: []byte(w.v)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	// Group offsets: partition 0 at the end, partition 1 short of it.
	offs := kadm.Offsets{}
	offs.Add(kadm.Offset{Topic: "in", Partition: 0, At: 4})
	offs.Add(kadm.Offset{Topic: "in", Partition: 1, At: 3})
	if _, err := adm.CommitOffsets(ctx, "g", offs); err != nil {
		t.Fatal(err)
	}
	// A reader that read partition 0 and, of partition 1, only offset 0,
	// with one record read before its commit was asked for.
	rd := &reader{parts: make([][]uint64, 2), log: tlog}
	fs := func() []*kgo.Record {
		c, err := kgo.NewClient(kgo.SeedBrokers(fake.ListenAddrs()...), kgo.ConsumeTopics("out"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		var out []*kgo.Record
		for len(out) < len(write) {
			out = append(out, c.PollFetches(ctx).Records()...)
			if ctx.Err() != nil {
				t.Fatal(ctx.Err())
			}
		}
		return out
	}()
	for _, r := range fs {
		if r.Partition == 0 || r.Offset == 0 {
			rd.store(r)
		}
	}
	rd.early = append(rd.early, earlyRead{txn: 1, desc: "early"}, earlyRead{txn: 2, desc: "early, aborted"})

	rep := &Report{Topic: "in", Partitions: 2, BackendTotal: 8,
		Copy: &CopyReport{OutputTopic: "out", Group: "g"}}
	if err := copyVerdict(ctx, fake.ListenAddrs(), rep, prods, seen, tlog, []*reader{rd}, adm); err != nil {
		t.Fatal(err)
	}
	c := rep.Copy
	want := CopyReport{Lost: 3, Duplicates: 1, AbortedReads: 2, UncommittedReads: 2, CommitMissing: 1,
		Unexpected: 4, ReaderMismatches: 5, OffsetMismatches: 1}
	got := CopyReport{Lost: c.Lost, Duplicates: c.Duplicates, AbortedReads: c.AbortedReads, UncommittedReads: c.UncommittedReads,
		CommitMissing: c.CommitMissing, Unexpected: c.Unexpected, ReaderMismatches: c.ReaderMismatches, OffsetMismatches: c.OffsetMismatches}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got  %+v\nwant %+v\nexamples %v", got, want, rep.Examples)
	}
	if c.OutputIsInput || c.anomalies() != 19 {
		t.Fatalf("output == input %v, anomalies %d", c.OutputIsInput, c.anomalies())
	}
}

func TestParseOutput(t *testing.T) {
	id, slot, txn, ok := parseOutput(string(outputValue([]byte("3-1234"), 1, 57)))
	if !ok || id != packID(3, 1234) || slot != 1 || txn != 57 || id.String() != "3-1234" {
		t.Fatalf("%v %v %v %v", id, slot, txn, ok)
	}
	for _, bad := range []string{"", "3-1", "3-1:1", "x-1:1:1", "3-1:a:1", "3-1:1:b"} {
		if _, _, _, ok := parseOutput(bad); ok {
			t.Fatalf("%q parsed", bad)
		}
	}
}

// The Java copy verdict must see each kind of anomaly in a copied
// partition.
func TestCompareCopyCountsAnomalies(t *testing.T) {
	in := []string{"a", "b", "c", "d", "e", "f"}
	// b twice (an aborted copy that leaked), d before c, x unexpected,
	// f lost.
	out := []string{"a", "b", "b", "d", "c", "x", "e"}
	var examples []string
	lost, dups, extra, order, unexpected := compareCopy(in, out, func(format string, args ...any) {
		examples = append(examples, fmt.Sprintf(format, args...))
	})
	if lost != 1 || dups != 1 || extra != 1 || order != 1 || unexpected != 1 {
		t.Fatalf("lost %d dup %d (+%d) order %d unexpected %d; examples %v", lost, dups, extra, order, unexpected, examples)
	}
	// The input's own duplicates are to be copied as they are.
	lost, dups, extra, order, unexpected = compareCopy([]string{"a", "a", "b"}, []string{"a", "a", "b"}, func(string, ...any) {})
	if lost+dups+extra+order+unexpected != 0 {
		t.Fatalf("exact copy: lost %d dup %d (+%d) order %d unexpected %d", lost, dups, extra, order, unexpected)
	}
}

func TestJavaExitReason(t *testing.T) {
	for line, want := range map[string]string{
		// Kafka 4.1's TransactionalMessageCopier, after the stack trace.
		"Shutting down after unexpected error KafkaException: Unexpected error in InitProducerIdResponse; x. (see the log for additional detail)":       "KafkaException: Unexpected error in InitProducerIdResponse; x.",
		"org.apache.kafka.common.errors.TimeoutException: Timeout expired after 60000ms":                                                                "TimeoutException: Timeout expired after 60000ms",
		"[2026-01-01 00:00:00,000] WARN [Producer clientId=p] Connection to node -1 could not be established. (org.apache.kafka.clients.NetworkClient)": "",
		"\tat org.apache.kafka.tools.TransactionalMessageCopier.main(TransactionalMessageCopier.java:1)":                                                "",
	} {
		got, ok := javaExitReason(line)
		if got != want || ok != (want != "") {
			t.Errorf("javaExitReason(%q) = %q, %v; want %q", line, got, ok, want)
		}
	}
}

func TestJavaExitKind(t *testing.T) {
	for reason, want := range map[string]string{
		"KafkaException: The transactional.id x has been claimed by another process":     "KafkaException",
		"org.apache.kafka.common.errors.TimeoutException: Timeout expired after 60000ms": "TimeoutException",
		"exit: exit status 1": "exit",
	} {
		if got := exitKind(reason); got != want {
			t.Errorf("exitKind(%q) = %q, want %q", reason, got, want)
		}
	}
}

// javaVerdict must read the copied partitions and the Java output from the
// backend and count a duplicate, a record in a partition no copier writes,
// and a group offset short of the input's end.
func TestJavaVerdictCountsAnomalies(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	fake, cl, adm := verdictBackend(ctx, t)
	write := []struct {
		topic string
		part  int32
		v     string
	}{
		{"in", 0, "0-0"}, {"in", 0, "0-1"}, {"in", 0, "0-2"}, {"in", 1, "1-0"},
		{"out", 0, "0-0"}, {"out", 0, "0-1"}, {"out", 0, "0-1"}, {"out", 0, "0-2"}, // duplicate 0-1
		{"out", 1, "1-0"}, // partition 1 has no copier: unexpected
	}
	for _, w := range write {
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: w.topic, Partition: w.part, Value: []byte(w.v)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	jw := newJavaWork("kafka.sh", "", "in", "out", t.TempDir(), 1, nil, map[int32]int64{0: 3, 1: 1}, 1, 0, nil)
	offs := kadm.Offsets{}
	offs.Add(kadm.Offset{Topic: "in", Partition: 0, At: 2}) // short of the end (3)
	if _, err := adm.CommitOffsets(ctx, jw.copiers[0].group, offs); err != nil {
		t.Fatal(err)
	}
	rep := &Report{Topic: "in", Partitions: 2, JavaCopy: &JavaCopyReport{Copiers: 1, OutputTopic: "out"}}
	if err := javaVerdict(ctx, fake.ListenAddrs(), rep, jw, adm, nil); err != nil {
		t.Fatal(err)
	}
	j := rep.JavaCopy
	if j.Duplicates != 1 || j.DuplicateExtra != 1 || j.Unexpected != 1 || j.OffsetMismatches != 1 || j.Lost != 0 || j.OrderErrors != 0 ||
		j.OutputIsInput || j.InputRecords != 3 || j.OutputRecords != 5 || j.anomalies() != 3 || j.Commits != -1 {
		t.Fatalf("java verdict: %+v; examples %v", j, rep.Examples)
	}
}

// verdictBackend is a one-broker kfake with topics "in" and "out" of two
// partitions each, and a client that writes to the partition a record
// names.
func verdictBackend(ctx context.Context, t *testing.T) (*kfake.Cluster, *kgo.Client, *kadm.Client) {
	t.Helper()
	fake, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fake.Close)
	cl, err := kgo.NewClient(kgo.SeedBrokers(fake.ListenAddrs()...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	adm := kadm.NewClient(cl)
	for _, topic := range []string{"in", "out"} {
		if _, err := adm.CreateTopic(ctx, 2, 1, nil, topic); err != nil {
			t.Fatal(err)
		}
	}
	return fake, cl, adm
}

// A Java copier's JVM can exit while eosproxy is still writing its last
// commits to the backend (EndTxn is answered once the decision is durable;
// the records, then the offsets, follow). javaCheck must wait for the
// group's offsets to reach the input's end before reading the output;
// reading at once reported the last transaction lost (seed
// 1391714446254214855). Here the last record and the offset at the end
// are written only once the check asks for the group's offsets.
func TestJavaCheckWaitsForLastCommit(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	fake, cl, adm := verdictBackend(ctx, t)
	produce := func(topic, v string) {
		t.Helper()
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Partition: 0, Value: []byte(v)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	for _, v := range []string{"0-0", "0-1", "0-2"} {
		produce("in", v)
	}
	produce("out", "0-0")
	produce("out", "0-1")
	jw := newJavaWork("kafka.sh", "", "in", "out", t.TempDir(), 1, nil, map[int32]int64{0: 3}, 1, 0, nil)
	jw.copiers[0].finished.Store(true)
	commit := func(at int64) error {
		offs := kadm.Offsets{}
		offs.Add(kadm.Offset{Topic: "in", Partition: 0, At: at})
		_, err := adm.CommitOffsets(ctx, jw.copiers[0].group, offs)
		return err
	}
	if err := commit(2); err != nil { // the commit before the last one
		t.Fatal(err)
	}

	// The last commit lands once the check first asks for the group's
	// offsets: after the copier ended, as in the soak run.
	asked := make(chan struct{})
	var once sync.Once
	fake.ControlKey(int16(kmsg.OffsetFetch), func(kmsg.Request) (kmsg.Response, error, bool) {
		fake.KeepControl()
		once.Do(func() { close(asked) })
		return nil, nil, false
	})
	landed := make(chan error, 1)
	go func() {
		select {
		case <-asked:
		case <-ctx.Done():
			landed <- ctx.Err()
			return
		}
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "out", Partition: 0, Value: []byte("0-2")}).FirstErr(); err != nil {
			landed <- err
			return
		}
		landed <- commit(3)
	}()

	rep := &Report{Topic: "in", Partitions: 2, JavaCopy: &JavaCopyReport{Copiers: 1, OutputTopic: "out"}}
	var out bytes.Buffer
	if err := javaCheck(ctx, &out, fake.ListenAddrs(), rep, jw, adm, nil, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := <-landed; err != nil {
		t.Fatal(err)
	}
	j := rep.JavaCopy
	if j.Lost != 0 || !j.OutputIsInput || j.OutputRecords != 3 || j.OffsetMismatches != 0 || j.anomalies() != 0 || out.Len() != 0 {
		t.Fatalf("java check read the output before the last commit was in the backend: %+v; examples %v; out %q", j, rep.Examples, out.String())
	}
}

package integration

// Real-broker tier, transactions. eosproxy is the transaction coordinator of
// its clients: a transactional Produce is buffered in eosproxy's store and
// answered there, and only when the transaction commits are its batches
// written to the backend, as plain batches (producer id -1); an aborted
// transaction's records never reach the backend. Each test here drives a
// real transactional client -- Kafka's own TransactionalMessageCopier (Java
// kafka-clients), a small Java kafka-clients producer, librdkafka
// (python3-confluent-kafka) and franz-go, the latter both with KIP-890
// "transaction.version 2" and capped to the classic protocol -- through
// commits and aborts, then checks
//   - through the target, with a read_committed consumer: every committed
//     value exactly once, in the partition it was written to, in order, and
//     nothing else (no aborted value);
//   - straight from the backend, bypassing eosproxy, with read_uncommitted:
//     the same values once each and nothing else, every batch without
//     producer id or epoch, offsets contiguous from 0 (no control batch: the
//     backend never saw a transaction), no producer and no transactional id
//     known to the broker;
//   - the transaction's state as DescribeTransactions reports it.
//
// Every test runs twice, as subtests: "direct" against the broker itself
// (Kafka's own coordinator: a check of the test, where the backend checks
// are replaced by the opposite sanity check that read_uncommitted does show
// the aborted records, so the proxy-side check is known to be able to fail)
// and "proxy" through an in-process eosproxy in front of the same broker.
//
// Base offset -1. eosproxy answers a buffered transactional Produce before
// the records have an offset, with BaseOffset -1 ("unknown", as Kafka itself
// answers acks=0). What each client makes of it (checked in "proxy", with
// the real offsets checked in "direct"):
//   - Java kafka-clients: RecordMetadata.offset() is -1 for every record (its
//     constructor keeps -1 instead of adding the index in the batch); the
//     copier never looks at offsets, it commits consumer positions.
//   - franz-go: Record.Offset is -1 for every record of the batch
//     (producer.go: "if the base offset is invalid/unknown (-1), all record
//     offsets should be treated as unknown"). Internally its
//     lastAckedOffset becomes len(batch)-1, only consulted on
//     UNKNOWN_PRODUCER_ID with a log start offset.
//   - librdkafka (2.0.2 here, and still in master): a message's offset is
//     base+index (rd_kafka_msgq_set_metadata), so each batch's records
//     report -1, 0, 1, 2, ... -- numbers that look like offsets but are not;
//     confluent-kafka-python's Message.offset() shows the -1 as None. A
//     librdkafka application must not trust delivery-report offsets of
//     transactional records through eosproxy.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"

	"github.com/eosproxy/eosproxy/proxy"
)

// txnToolTimeout bounds one client run in this file (a JVM start is 2–4 s,
// compiling the Java producer 2–3 s more).
const txnToolTimeout = 60 * time.Second

// deliveryBound fails a produced record that is not acknowledged in time:
// franz-go's ProduceSync does not give up on buffered records when its
// context ends, so without it an unanswered Produce would hang the test.
var deliveryBound = kgo.RecordDeliveryTimeout(30 * time.Second)

// txnTarget is where a test's clients connect: straight to the broker, or
// through an eosproxy in front of it.
type txnTarget struct {
	b    backend
	addr string     // what the clients are given
	p    *testProxy // nil when direct
}

func (tg txnTarget) viaProxy() bool { return tg.p != nil }

// eachTxnTarget runs fn straight against the real broker b ("direct") and
// through a fresh eosproxy in front of it ("proxy"), whose log keeps debug
// lines too (the test output still gets info and above only): the
// coordinator logs each transaction's end at debug level.
func eachTxnTarget(t *testing.T, b backend, fn func(t *testing.T, tg txnTarget)) {
	t.Run("direct", func(t *testing.T) { fn(t, txnTarget{b: b, addr: b.addrs[0]}) })
	t.Run("proxy", func(t *testing.T) {
		all := &logBuf{}
		p := startProxy(t, b, func(c *proxy.Config) {
			c.Log = zerolog.New(zerolog.MultiLevelWriter(all, &zerolog.FilteredLevelWriter{
				Writer: zerolog.LevelWriterAdapter{Writer: zerolog.NewTestWriter(t)},
				Level:  zerolog.InfoLevel,
			})).Level(zerolog.DebugLevel)
		})
		p.logs = all // assertQuietProxy reads these
		fn(t, txnTarget{b: b, addr: p.Addr(), p: p})
	})
}

// txnEnds counts the transactions of txnID that eosproxy's coordinator
// logged as committed and as aborted.
func txnEnds(p *testProxy, txnID string) (commits, aborts int) {
	for _, line := range strings.Split(p.logs.String(), "\n") {
		var l struct {
			Component string `json:"component"`
			Txn       string `json:"txn"`
			Message   string `json:"message"`
		}
		if json.Unmarshal([]byte(line), &l) != nil || l.Component != "txn" || l.Txn != txnID {
			continue
		}
		switch l.Message {
		case "transaction committed":
			commits++
		case "transaction aborted":
			aborts++
		}
	}
	return commits, aborts
}

// txnOutcome is what transactional runs must leave in a topic: the values of
// committed transactions with the partition each was written to, and the
// values of aborted ones.
type txnOutcome struct {
	committed map[string]int32
	aborted   map[string]bool
}

func newTxnOutcome() txnOutcome {
	return txnOutcome{committed: map[string]int32{}, aborted: map[string]bool{}}
}

func (o txnOutcome) add(commit bool, value string, partition int32) {
	if commit {
		o.committed[value] = partition
	} else {
		o.aborted[value] = true
	}
}

// assertProxyTxnEnds fails unless eosproxy's coordinator logged plan's
// commits and aborts for txnID -- when its log names transaction ends at
// all (see txnEnds).
func assertProxyTxnEnds(t *testing.T, p *testProxy, txnID string, plan []txnStep) {
	t.Helper()
	wantC, wantA := 0, 0
	for _, st := range plan {
		if st.commit {
			wantC++
		} else {
			wantA++
		}
	}
	commits, aborts := txnEnds(p, txnID)
	if commits == 0 && aborts == 0 {
		t.Logf("proxy: eosproxy's log names no transaction end of %s: commits and aborts not counted", txnID)
		return
	}
	if commits != wantC || aborts != wantA {
		t.Fatalf("proxy: eosproxy logged %d commits and %d aborts of %s, want %d and %d", commits, aborts, txnID, wantC, wantA)
	}
}

// txnStep is one transaction of a plan: how many records, and whether it
// ends in a commit or an abort.
type txnStep struct {
	commit bool
	n      int
}

// txnPlan is commit, abort, commit: the abort sits between two commits, so
// a leak of aborted data lands between committed data.
var txnPlan = []txnStep{{true, 100}, {false, 50}, {true, 100}}

func planArg(plan []txnStep) string {
	s := make([]string, len(plan))
	for i, st := range plan {
		s[i] = fmt.Sprintf("abort:%d", st.n)
		if st.commit {
			s[i] = fmt.Sprintf("commit:%d", st.n)
		}
	}
	return strings.Join(s, ",")
}

// --- verification -------------------------------------------------------------

// endMarkerKey keys the plain record written to each partition after a
// client's last transaction ended. A read_committed reader that reached it
// has passed every transaction before it (the last stable offset is beyond
// them), so it has seen all there is to see.
const endMarkerKey = "eosproxy-end-marker"

func isEndMarker(r *kgo.Record) bool { return string(r.Key) == endMarkerKey }

// writeEndMarkers writes one end marker to each partition of topic through
// addr, without idempotence (no producer id, whoever the target is).
func writeEndMarkers(t *testing.T, addr, topic string, parts int) {
	t.Helper()
	cl := newClient(t, addr, kgo.DisableIdempotentWrite(), kgo.RecordPartitioner(kgo.ManualPartitioner()), deliveryBound)
	recs := make([]*kgo.Record, parts)
	for p := range recs {
		recs[p] = &kgo.Record{Topic: topic, Partition: int32(p), Key: []byte(endMarkerKey), Value: []byte("end")}
	}
	if err := cl.ProduceSync(testCtx(t), recs...).FirstErr(); err != nil {
		t.Fatalf("end markers to %s via %s: %v", topic, addr, err)
	}
}

// readToEnd reads topic from addr until every partition's end marker and
// every committed value has been seen, and returns all records read (end
// markers included) by partition, in offset order.
func readToEnd(t *testing.T, what, addr, topic string, parts int, out txnOutcome, readCommitted bool) map[int32][]*kgo.Record {
	t.Helper()
	opts := []kgo.Opt{kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart())}
	if readCommitted {
		opts = append(opts, kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	}
	cl := newClient(t, addr, opts...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	got := map[int32][]*kgo.Record{}
	ended := map[int32]bool{}
	seen := map[string]bool{}
	for len(ended) < parts || len(seen) < len(out.committed) {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			var missing []string
			for v := range out.committed {
				if !seen[v] {
					missing = append(missing, v)
				}
			}
			slices.Sort(missing)
			t.Fatalf("%s: before the timeout, %d of %d end markers and %d of %d committed values were seen (missing e.g. %v)",
				what, len(ended), parts, len(seen), len(out.committed), firstN(missing, 10))
		}
		for _, e := range fs.Errors() {
			t.Fatalf("%s: fetch %s/%d: %v", what, e.Topic, e.Partition, e.Err)
		}
		fs.EachRecord(func(r *kgo.Record) {
			got[r.Partition] = append(got[r.Partition], r)
			if isEndMarker(r) {
				ended[r.Partition] = true
			} else if _, ok := out.committed[string(r.Value)]; ok {
				seen[string(r.Value)] = true
			}
		})
	}
	return got
}

// checkCommittedView fails unless recs (read_committed through the target)
// hold every committed value exactly once, in its partition, ascending per
// partition, and nothing else but the end markers.
func checkCommittedView(t *testing.T, what string, recs map[int32][]*kgo.Record, out txnOutcome) {
	t.Helper()
	count := map[string]int{}
	for p, rs := range recs {
		last := -1
		for _, r := range rs {
			if isEndMarker(r) {
				continue
			}
			v := string(r.Value)
			wantP, ok := out.committed[v]
			switch {
			case out.aborted[v]:
				t.Fatalf("%s: record %q of an aborted transaction is visible at %d/%d", what, v, p, r.Offset)
			case !ok:
				t.Fatalf("%s: unexpected record %q at %d/%d", what, v, p, r.Offset)
			case wantP >= 0 && wantP != p:
				t.Fatalf("%s: record %q at %d/%d, but it was written to partition %d", what, v, p, r.Offset, wantP)
			}
			count[v]++
			if count[v] > 1 {
				t.Fatalf("%s: record %q seen %d times (again at %d/%d)", what, v, count[v], p, r.Offset)
			}
			n, err := strconv.Atoi(v)
			if err != nil {
				t.Fatalf("%s: record value %q at %d/%d is not a number", what, v, p, r.Offset)
			}
			if n <= last {
				t.Fatalf("%s: partition %d: %d after %d (order lost)", what, p, n, last)
			}
			last = n
		}
	}
	if len(count) != len(out.committed) {
		t.Fatalf("%s: %d distinct committed values, want %d", what, len(count), len(out.committed))
	}
}

// checkBackend judges raw: topic read straight from the backend with
// read_uncommitted. Through eosproxy it must hold exactly the committed
// records, once each, in batches without producer id or epoch, at
// contiguous offsets from 0 up to the partition's end (franz-go hides
// control records: a gap is a transaction marker), and the broker must know
// no producer on the topic and none of txnIDs. Direct, where Kafka is the
// coordinator, the opposite must hold: read_uncommitted shows the aborted
// records, with the client's producer id -- the proof that this check can
// fail. It returns the number of data records (end markers excluded).
func checkBackend(t *testing.T, tg txnTarget, topic string, parts int, raw map[int32][]*kgo.Record, out txnOutcome, txnIDs ...string) int {
	t.Helper()
	n := 0
	if !tg.viaProxy() {
		aborted, distinct := 0, map[string]bool{}
		for _, rs := range raw {
			for _, r := range rs {
				if isEndMarker(r) {
					continue
				}
				n++
				distinct[string(r.Value)] = true
				if out.aborted[string(r.Value)] {
					aborted++
				}
				if r.ProducerID < 0 {
					t.Fatalf("direct: transactional record %q at %d/%d has no producer id", r.Value, r.Partition, r.Offset)
				}
			}
		}
		if aborted < len(out.aborted) {
			t.Fatalf("direct: read_uncommitted shows %d of the %d aborted records: the test does not get aborted data to the broker", aborted, len(out.aborted))
		}
		t.Logf("direct: the broker's log holds %d records (%d distinct values, %d of them known aborted), with transaction markers between",
			n, len(distinct), aborted)
		return n
	}

	ends := brokerEnds(t, kadm.NewClient(newClient(t, tg.b.addrs[0])), topic, parts)
	count := map[string]int{}
	for p := range int32(parts) {
		rs := raw[p]
		for i, r := range rs {
			v := string(r.Value)
			if r.Offset != int64(i) {
				t.Fatalf("backend %s/%d: record %q at offset %d, want %d: the log holds a control batch (transaction marker) before it",
					topic, p, v, r.Offset, i)
			}
			// Plain batches, or eosproxy's own idempotent ones where the
			// broker has idempotence; never transactional ones.
			if r.Attrs.IsTransactional() {
				t.Fatalf("backend %s/%d@%d: record %q is in a transactional batch (producer id %d epoch %d): eosproxy must write committed data as non-transactional batches",
					topic, p, r.Offset, v, r.ProducerID, r.ProducerEpoch)
			}
			if isEndMarker(r) {
				continue
			}
			n++
			count[v]++
			_, ok := out.committed[v]
			switch {
			case out.aborted[v]:
				t.Fatalf("backend %s/%d@%d: record %q of an aborted transaction reached the backend", topic, p, r.Offset, v)
			case !ok:
				t.Fatalf("backend %s/%d@%d: unexpected record %q", topic, p, r.Offset, v)
			case count[v] > 1:
				t.Fatalf("backend %s/%d@%d: record %q written %d times", topic, p, r.Offset, v, count[v])
			}
		}
		if int64(len(rs)) != ends[p] {
			t.Fatalf("backend %s/%d ends at offset %d, but %d records were read up to its end marker: more was written after it",
				topic, p, ends[p], len(rs))
		}
	}
	if len(count) != len(out.committed) {
		t.Fatalf("backend %s: %d distinct committed values, want %d", topic, len(count), len(out.committed))
	}
	assertBrokerHasNoOpenTxn(t, tg.b, topic, parts)
	assertBrokerKnowsNoTxn(t, tg.b, txnIDs...)
	return n
}

// assertBrokerKnowsNoTxn fails if the broker's own transaction coordinator
// lists any of txnIDs: with eosproxy as the coordinator, no transactional
// request reaches the backend.
func assertBrokerKnowsNoTxn(t *testing.T, b backend, txnIDs ...string) {
	t.Helper()
	listed, err := kadm.NewClient(newClient(t, b.addrs[0])).ListTransactions(testCtx(t), nil, nil)
	if err != nil {
		t.Fatalf("broker ListTransactions: %v", err)
	}
	for _, id := range txnIDs {
		if l, ok := listed[id]; ok {
			t.Fatalf("the broker's coordinator knows transactional id %s (producer %d, state %s): the transaction went to the backend",
				id, l.ProducerID, l.State)
		}
	}
}

// verifyTxnTopic writes the end markers through the target, checks what a
// read_committed consumer sees through it and what the backend holds, and
// returns both reads and the backend's data record count.
func verifyTxnTopic(t *testing.T, tg txnTarget, topic string, parts int, out txnOutcome, txnIDs ...string) (committed, raw map[int32][]*kgo.Record, rawN int) {
	t.Helper()
	writeEndMarkers(t, tg.addr, topic, parts)
	committed = readToEnd(t, "read_committed via "+tg.addr, tg.addr, topic, parts, out, true)
	checkCommittedView(t, "read_committed via "+tg.addr, committed, out)
	raw = readToEnd(t, "backend read_uncommitted", tg.b.addrs[0], topic, parts, out, false)
	rawN = checkBackend(t, tg, topic, parts, raw, out, txnIDs...)
	return committed, raw, rawN
}

// assertTxnCommitted polls DescribeTransactions through addr until txnID is
// CompleteCommit (Kafka moves from PrepareCommit once the markers are
// written), with producer pid when pid ≥ 0.
func assertTxnCommitted(t *testing.T, addr, txnID string, pid int64) {
	t.Helper()
	adm := kadm.NewClient(newClient(t, addr))
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		described, err := adm.DescribeTransactions(ctx, txnID)
		var d kadm.DescribedTransaction
		if err == nil {
			d = described[txnID]
			err = d.Err
		}
		if err == nil && d.State == "CompleteCommit" && (pid < 0 || d.ProducerID == pid) {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("DescribeTransactions %s via %s: state %q producer %d epoch %d (err %v), want CompleteCommit with producer %d",
				txnID, addr, d.State, d.ProducerID, d.ProducerEpoch, err, pid)
		case <-tick.C:
		}
	}
}

// valuePositions maps each non-marker value to where recs hold it.
func valuePositions(recs map[int32][]*kgo.Record) map[string][2]int64 {
	out := map[string][2]int64{}
	for p, rs := range recs {
		for _, r := range rs {
			if !isEndMarker(r) {
				out[string(r.Value)] = [2]int64{int64(p), r.Offset}
			}
		}
	}
	return out
}

// --- TransactionalMessageCopier (Java kafka-clients) -------------------------

// copierStatus is one of the copier's JSON status lines on stdout; the last
// one is its shutdown line (Kafka 4.1: "stage":"ShutdownComplete"; older
// versions: "shutdown_complete":<transactional id>).
type copierStatus struct {
	TransactionalID  string `json:"transactionalId"`
	Stage            string `json:"stage"`
	ShutdownComplete string `json:"shutdown_complete"`
	TotalProcessed   int64  `json:"totalProcessed"`
	Remaining        int64  `json:"remaining"`
}

func (s copierStatus) shutdownOf(txnID string) bool {
	return s.ShutdownComplete == txnID || (s.Stage == "ShutdownComplete" && s.TransactionalID == txnID)
}

// produceToPartitions writes values from..from+n-1 as strings, value v to
// partition v % parts (cl needs the manual partitioner), and fails on any
// error. It returns the per-partition counts.
func produceToPartitions(t *testing.T, cl *kgo.Client, topic string, parts, from, n int) map[int32]int64 {
	t.Helper()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	counts := map[int32]int64{}
	for v := from; v < from+n; v++ {
		p := int32(v % parts)
		counts[p]++
		wg.Add(1)
		cl.Produce(testCtx(t), &kgo.Record{Topic: topic, Partition: p, Value: []byte(strconv.Itoa(v))}, func(_ *kgo.Record, err error) {
			defer wg.Done()
			if err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		t.Fatalf("produce to %s: %v", topic, firstErr)
	}
	return counts
}

// assertGroupOffsets fails unless group's committed offsets on topic, asked
// through addr, are want.
func assertGroupOffsets(t *testing.T, what, addr, group, topic string, want map[int32]int64) {
	t.Helper()
	offs, err := kadm.NewClient(newClient(t, addr)).FetchOffsets(testCtx(t), group)
	if err != nil {
		t.Fatalf("%s: fetch offsets of %s: %v", what, group, err)
	}
	for p, w := range want {
		o, ok := offs.Lookup(topic, p)
		if !ok || o.Err != nil || o.At != w {
			t.Fatalf("%s: group %s committed %s/%d at %+v (found %v), want offset %d", what, group, topic, p, o, ok, w)
		}
	}
}

func TestRealTxnCopier(t *testing.T) {
	b := realBackend(t)
	sh := kafkaSh(t)
	eachTxnTarget(t, b, func(t *testing.T, tg txnTarget) {
		const parts, n = 3, 5000
		adm := kadm.NewClient(newClient(t, tg.addr))
		in := createTopic(t, adm, parts)
		outTopic := createTopic(t, adm, parts)
		group, txnID := outTopic+"-copier", outTopic+"-txn"

		// Input: plain franz-go (idempotent) producer through the target,
		// unique values, value v in partition v % 3.
		prod := newClient(t, tg.addr, kgo.RecordPartitioner(kgo.ManualPartitioner()), deliveryBound)
		inCounts := produceToPartitions(t, prod, in, parts, 0, n)
		out := newTxnOutcome()
		for v := range n {
			out.add(true, strconv.Itoa(v), int32(v%parts)) // the copier keeps the partition
		}

		// The copier subscribes to the input (group mode), copies with
		// transactions of up to 100 records, commits its positions in each
		// (TxnOffsetCommit with the group metadata) and throws away a third
		// of its transactions at random (abort, seek back to the committed
		// positions, copy again).
		start := time.Now()
		stdout, stderr := runToolFor(t, txnToolTimeout, "", "bash", sh, "run", "org.apache.kafka.tools.TransactionalMessageCopier",
			"--broker-list", tg.addr, "--input-topic", in, "--input-partition", "0", "--output-topic", outTopic,
			"--transactional-id", txnID, "--consumer-group", group, "--group-mode", "--use-group-metadata",
			"--enable-random-aborts", "--transaction-size", "100", "--max-messages", strconv.Itoa(n))
		checkJavaStderr(t, "TransactionalMessageCopier", stderr)
		lines := splitLines(stdout)
		var st copierStatus
		if len(lines) == 0 || json.Unmarshal([]byte(lines[len(lines)-1]), &st) != nil || !st.shutdownOf(txnID) {
			t.Fatalf("copier did not end with its shutdown line:\n%s", tail(stdout, 2000))
		}
		if st.TotalProcessed != n || st.Remaining != 0 {
			t.Fatalf("copier: %+v, want %d processed and 0 remaining", st, n)
		}
		t.Logf("copier copied %d records in %s (%d status lines)", n, time.Since(start).Round(time.Millisecond), len(lines))

		_, _, rawN := verifyTxnTopic(t, tg, outTopic, parts, out, txnID)
		if !tg.viaProxy() && rawN <= n {
			t.Fatalf("direct: the output log holds %d records for %d copied: no random abort happened, the test proves nothing about aborts", rawN, n)
		}
		if tg.viaProxy() {
			// The aborts went through eosproxy. If its log no longer
			// names transaction ends (a message renamed), say so rather
			// than fail: the data checks above stand alone.
			commits, aborts := txnEnds(tg.p, txnID)
			t.Logf("proxy: eosproxy logged %d commits and %d aborts of %s", commits, aborts, txnID)
			if commits > 0 && aborts == 0 {
				t.Fatalf("proxy: the copier's %d transactions through eosproxy were all committed: no random abort, the test proves nothing about aborts", commits)
			}
		}

		// The offsets committed inside the transactions are the group's,
		// through the target and in the backend.
		assertGroupOffsets(t, "via "+tg.addr, tg.addr, group, in, inCounts)
		if tg.viaProxy() {
			assertGroupOffsets(t, "backend", tg.b.addrs[0], group, in, inCounts)
			assertQuietProxy(t, tg.p)
		}
		assertTxnCommitted(t, tg.addr, txnID, -1)
	})
}

// --- Java kafka-clients transactional producer --------------------------------

// javaTxnProducer is a kafka-clients transactional producer, run by the
// JVM's source-file mode with the Kafka jars on the class path. It runs the
// plan of its fourth argument like librdkafka_txn.py (value v to partition
// v % parts, flush before ending each transaction; an optional sixth
// argument names a properties file of more client settings) and prints one
// JSON line:
// per transaction, [partition, RecordMetadata.offset(), value] for each
// record, and the first exception with its causes, if any.
const javaTxnProducer = `
import java.util.*;
import java.util.concurrent.Future;
import org.apache.kafka.clients.producer.*;

public class EosproxyTxnProducer {
    public static void main(String[] args) {
        Properties props = new Properties();
        props.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        props.put(ProducerConfig.TRANSACTIONAL_ID_CONFIG, args[2]);
        props.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, "org.apache.kafka.common.serialization.StringSerializer");
        props.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, "org.apache.kafka.common.serialization.StringSerializer");
        props.put(ProducerConfig.BATCH_SIZE_CONFIG, "512"); // several batches per partition and transaction
        props.put(ProducerConfig.LINGER_MS_CONFIG, "5");
        props.put(ProducerConfig.REQUEST_TIMEOUT_MS_CONFIG, "20000");
        props.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, "30000");
        String topic = args[1];
        int parts = Integer.parseInt(args[4]);
        if (args.length > 5) { // more client properties: security settings
            try (java.io.FileReader r = new java.io.FileReader(args[5])) {
                props.load(r);
            } catch (java.io.IOException e) {
                throw new RuntimeException(e);
            }
        }
        StringBuilder out = new StringBuilder("{\"txns\":[");
        String failure = null;
        try (KafkaProducer<String, String> p = new KafkaProducer<>(props)) {
            p.initTransactions();
            int v = 0;
            String sep = "";
            for (String step : args[3].split(",")) {
                String[] kv = step.split(":");
                boolean commit = kv[0].equals("commit");
                List<Future<RecordMetadata>> sent = new ArrayList<>();
                p.beginTransaction();
                int first = v;
                for (int i = 0; i < Integer.parseInt(kv[1]); i++, v++) {
                    sent.add(p.send(new ProducerRecord<>(topic, v % parts, "k" + (v % parts), Integer.toString(v))));
                }
                p.flush();
                out.append(sep).append("{\"commit\":").append(commit).append(",\"delivered\":[");
                sep = ",";
                for (int i = 0; i < sent.size(); i++) {
                    RecordMetadata m = sent.get(i).get();
                    out.append(i == 0 ? "" : ",").append('[').append(m.partition()).append(',').append(m.offset())
                       .append(",\"").append(first + i).append("\"]");
                }
                out.append("]}");
                if (commit) p.commitTransaction(); else p.abortTransaction();
            }
        } catch (Exception e) {
            failure = e.toString();
            for (Throwable c = e.getCause(); c != null; c = c.getCause()) {
                failure += "; caused by " + c;
            }
        }
        out.append("],\"failure\":");
        if (failure == null) {
            out.append("null");
        } else {
            out.append('"').append(failure.replace("\\", "\\\\").replace("\"", "\\\"").replace("\n", "\\n")).append('"');
        }
        System.out.println(out.append('}'));
    }
}
`

// clientTxnReport is the JSON summary of librdkafka_txn.py and of the Java
// producer: one entry per transaction of the plan, in order.
type clientTxnReport struct {
	Librdkafka []any `json:"librdkafka"`
	Txns       []struct {
		Commit         bool     `json:"commit"`
		Delivered      [][3]any `json:"delivered"`
		DeliveryErrors []string `json:"delivery_errors"`
		Unflushed      *int     `json:"unflushed"`
		EndError       *string  `json:"end_error"`
	} `json:"txns"`
	Errors    [][2]any `json:"errors"`    // librdkafka error_cb
	Exception []string `json:"exception"` // librdkafka: call, error
	Failure   *string  `json:"failure"`   // Java: first exception
}

// checkClientReport fails on any error the client reported or a plan not
// run to its end, and returns the outcome and the delivery reports per
// transaction.
func checkClientReport(t *testing.T, client string, rep clientTxnReport, plan []txnStep, stderr string) (txnOutcome, [][]rec) {
	t.Helper()
	if rep.Failure != nil || rep.Exception != nil || len(rep.Errors) > 0 {
		t.Fatalf("%s: failure %v, exception %v, errors %v\nstderr:\n%s", client, deref(rep.Failure), rep.Exception, firstN2(rep.Errors, 5), tail(stderr, 3000))
	}
	if len(rep.Txns) != len(plan) {
		t.Fatalf("%s ran %d transactions, want %d", client, len(rep.Txns), len(plan))
	}
	out := newTxnOutcome()
	var delivered [][]rec
	for i, tx := range rep.Txns {
		if tx.Commit != plan[i].commit {
			t.Fatalf("%s: transaction %d commit=%v, want %v", client, i, tx.Commit, plan[i].commit)
		}
		if len(tx.DeliveryErrors) > 0 || (tx.Unflushed != nil && *tx.Unflushed != 0) || tx.EndError != nil {
			t.Fatalf("%s: transaction %d: delivery errors %v, unflushed %v, end error %v", client, i, firstN(tx.DeliveryErrors, 3), tx.Unflushed, deref(tx.EndError))
		}
		recs := decodeRecs(t, fmt.Sprintf("%s transaction %d", client, i), tx.Delivered)
		if len(recs) != plan[i].n {
			t.Fatalf("%s: transaction %d: %d delivery reports, want %d", client, i, len(recs), plan[i].n)
		}
		for _, r := range recs {
			out.add(tx.Commit, strconv.Itoa(r.value), r.partition)
		}
		delivered = append(delivered, recs)
	}
	return out, delivered
}

func deref(s *string) string {
	if s == nil {
		return "<nil>"
	}
	return *s
}

// checkDirectOffsets: straight to Kafka, each reported offset is real, and
// a committed record's is where read_committed found it.
func checkDirectOffsets(t *testing.T, client string, delivered [][]rec, out txnOutcome, committed map[int32][]*kgo.Record) {
	t.Helper()
	at := valuePositions(committed)
	for i, recs := range delivered {
		for _, r := range recs {
			v := strconv.Itoa(r.value)
			if r.offset < 0 {
				t.Fatalf("direct: %s reported offset %d for %q (transaction %d)", client, r.offset, v, i)
			}
			if _, ok := out.committed[v]; ok && at[v] != [2]int64{int64(r.partition), r.offset} {
				t.Fatalf("direct: %s reported %q at %d/%d, read_committed found it at %v", client, v, r.partition, r.offset, at[v])
			}
		}
	}
}

func TestRealTxnJavaProducer(t *testing.T) {
	b := realBackend(t)
	sh := kafkaSh(t)
	needBinary(t, "javac") // source-file mode compiles in the JVM; a JRE alone lacks jdk.compiler
	src := filepath.Join(t.TempDir(), "EosproxyTxnProducer.java")
	if err := os.WriteFile(src, []byte(javaTxnProducer), 0o644); err != nil {
		t.Fatal(err)
	}
	eachTxnTarget(t, b, func(t *testing.T, tg txnTarget) {
		const parts = 3
		topic := createTopic(t, kadm.NewClient(newClient(t, tg.addr)), parts)
		txnID := topic + "-txn"
		stdout, stderr := runToolFor(t, txnToolTimeout, "", "bash", sh, "run", src,
			tg.addr, topic, txnID, planArg(txnPlan), strconv.Itoa(parts))
		lines := splitLines(stdout)
		var rep clientTxnReport
		if len(lines) == 0 || json.Unmarshal([]byte(lines[len(lines)-1]), &rep) != nil {
			t.Fatalf("Java producer output is not one JSON line:\n%s\nstderr:\n%s", tail(stdout, 2000), tail(stderr, 3000))
		}
		out, delivered := checkClientReport(t, "Java producer", rep, txnPlan, stderr)
		checkJavaStderr(t, "Java producer", stderr)
		committed, _, _ := verifyTxnTopic(t, tg, topic, parts, out, txnID)
		assertTxnCommitted(t, tg.addr, txnID, -1)

		if !tg.viaProxy() {
			checkDirectOffsets(t, "Java producer", delivered, out, committed)
			return
		}
		// Through eosproxy: RecordMetadata.offset() is -1 for every
		// transactional record (kafka-clients keeps an unknown base
		// offset as -1 rather than adding the index in the batch).
		for i, recs := range delivered {
			for _, r := range recs {
				if r.offset != -1 {
					t.Fatalf("proxy: Java RecordMetadata.offset() %d for %d at partition %d (transaction %d), want -1 (eosproxy answers buffered transactional batches with base offset -1)",
						r.offset, r.value, r.partition, i)
				}
			}
		}
		assertProxyTxnEnds(t, tg.p, txnID, txnPlan)
		assertQuietProxy(t, tg.p)
	})
}

// --- librdkafka (confluent-kafka-python) ---------------------------------------

func TestRealTxnLibrdkafka(t *testing.T) {
	b := realBackend(t)
	script := needRdkafkaPython(t, "librdkafka_txn.py")
	eachTxnTarget(t, b, func(t *testing.T, tg txnTarget) {
		const parts = 3
		topic := createTopic(t, kadm.NewClient(newClient(t, tg.addr)), parts)
		txnID := topic + "-txn"
		stdout, stderr := runToolFor(t, txnToolTimeout, "", debianPython, script, "--bootstrap", tg.addr, "--topic", topic,
			"--transactional-id", txnID, "--plan", planArg(txnPlan), "--partitions", strconv.Itoa(parts), "--timeout", "30")
		var rep clientTxnReport
		if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
			t.Fatalf("script output is not JSON: %v\n%s\nstderr:\n%s", err, tail(stdout, 2000), tail(stderr, 3000))
		}
		if s := strings.TrimSpace(stderr); s != "" {
			t.Logf("librdkafka stderr:\n%s", tail(s, 3000))
		}
		out, delivered := checkClientReport(t, fmt.Sprintf("librdkafka %v", rep.Librdkafka), rep, txnPlan, stderr)
		committed, _, _ := verifyTxnTopic(t, tg, topic, parts, out, txnID)
		assertTxnCommitted(t, tg.addr, txnID, -1)

		if !tg.viaProxy() {
			checkDirectOffsets(t, "librdkafka", delivered, out, committed)
			return
		}
		// Through eosproxy: librdkafka numbers a batch's messages from
		// the base offset, -1, 0, 1, ...: per partition, in delivery
		// order, each reported offset is -1 (a batch's first; None in
		// Python) or one more than the one before.
		batches := 0
		for i, recs := range delivered {
			prev := map[int32]int64{}
			for _, r := range recs {
				p, seen := prev[r.partition]
				switch {
				case r.offset == -1:
					batches++
				case !seen || r.offset != p+1:
					t.Fatalf("proxy: librdkafka reported offset %d for %d at partition %d after %d (transaction %d), want -1 or %d: not base -1 plus index",
						r.offset, r.value, r.partition, p, i, p+1)
				}
				prev[r.partition] = r.offset
			}
		}
		t.Logf("proxy: librdkafka delivery reports: offsets -1, 0, 1, ... in %d batches", batches)
		assertProxyTxnEnds(t, tg.p, txnID, txnPlan)
		assertQuietProxy(t, tg.p)
	})
}

// --- franz-go --------------------------------------------------------------------

// keyCounter counts the requests a client wrote, by API key.
type keyCounter struct{ n [128]atomic.Int64 }

func (c *keyCounter) OnBrokerWrite(_ kgo.BrokerMetadata, key int16, _ int, _, _ time.Duration, err error) {
	if err == nil && key >= 0 && int(key) < len(c.n) {
		c.n[key].Add(1)
	}
}

// advertisesTV2 asks addr for its API versions and finalized features and
// reports whether a client may use KIP-890 part 2 (transaction.version ≥ 2,
// Produce v12+, EndTxn v5+), with what it saw.
func advertisesTV2(t *testing.T, addr string) (bool, string) {
	t.Helper()
	resp, err := kmsg.NewPtrApiVersionsRequest().RequestWith(testCtx(t), newClient(t, addr))
	if err != nil {
		t.Fatalf("ApiVersions via %s: %v", addr, err)
	}
	tv := int16(-1)
	for _, f := range resp.FinalizedFeatures {
		if f.Name == "transaction.version" {
			tv = f.MaxVersionLevel
		}
	}
	maxV := map[int16]int16{}
	for _, k := range resp.ApiKeys {
		maxV[k.ApiKey] = k.MaxVersion
	}
	produce, endTxn := maxV[int16(kmsg.Produce)], maxV[int16(kmsg.EndTxn)]
	return tv >= 2 && produce >= 12 && endTxn >= 5,
		fmt.Sprintf("transaction.version %d, Produce ≤ v%d, EndTxn ≤ v%d", tv, produce, endTxn)
}

func strictlyIncreasing(s []int16) bool {
	for i := 1; i < len(s); i++ {
		if s[i] <= s[i-1] {
			return false
		}
	}
	return true
}

// String lists the request counts by API name.
func (c *keyCounter) String() string {
	var parts []string
	for key := range c.n {
		if n := c.n[key].Load(); n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", kmsg.NameForKey(int16(key)), n))
		}
	}
	return strings.Join(parts, ", ")
}

// txnStepTimeout bounds one produce or EndTxn step of a franz-go
// transaction.
const txnStepTimeout = 35 * time.Second // beyond deliveryBound: the client's own error first

// franzTxnClient is a transactional franz-go client and what it did: the
// requests it wrote and what it logged.
type franzTxnClient struct {
	*kgo.Client
	writes *keyCounter
	log    *clientLog
}

// saw is what the client wrote and logged, for failures.
func (c franzTxnClient) saw() string {
	return fmt.Sprintf("client wrote: %s; %s", c.writes, c.log)
}

// clientLog keeps a franz-go client's info-and-above log lines (repeats
// collapsed) and counts the Kafka error names in every line, debug
// included: franz-go logs the errors of retried produce batches only at
// debug level.
type clientLog struct {
	mu    sync.Mutex
	lines []string
	reps  []int
	errs  map[string]int
}

var kafkaErrName = regexp.MustCompile(`\b[A-Z][A-Z_]{4,}[A-Z]\b`)

func (l *clientLog) Level() kgo.LogLevel { return kgo.LogLevelDebug }

func (l *clientLog) Log(level kgo.LogLevel, msg string, kv ...any) {
	var b strings.Builder
	b.WriteString(msg)
	for i := 0; i+1 < len(kv); i += 2 {
		fmt.Fprintf(&b, "; %v: %v", kv[i], kv[i+1])
	}
	line := b.String()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.errs == nil {
		l.errs = map[string]int{}
	}
	for _, e := range kafkaErrName.FindAllString(line, -1) {
		l.errs[e]++
	}
	if level > kgo.LogLevelInfo {
		return
	}
	if n := len(l.lines); n > 0 && l.lines[n-1] == line {
		l.reps[n-1]++
		return
	}
	l.lines = append(l.lines, line)
	l.reps = append(l.reps, 1)
}

func (l *clientLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var b strings.Builder
	fmt.Fprintf(&b, "Kafka errors in the client's log: %v; last log lines:", l.errs)
	for i := max(0, len(l.lines)-15); i < len(l.lines); i++ {
		fmt.Fprintf(&b, "\n  %s", tail(l.lines[i], 400))
		if l.reps[i] > 1 {
			fmt.Fprintf(&b, " (×%d)", l.reps[i])
		}
	}
	return b.String()
}

// runFranzTxns runs plan with cl (a transactional client with the manual
// partitioner): value v to partition v %
// parts, all acknowledged before the transaction ends. It returns the
// outcome and the records per transaction, as the client finished them
// (offset, producer id and epoch set).
func runFranzTxns(t *testing.T, cl franzTxnClient, topic string, parts int, plan []txnStep) (txnOutcome, [][]*kgo.Record) {
	t.Helper()
	out := newTxnOutcome()
	var all [][]*kgo.Record
	v := 0
	for i, st := range plan {
		if err := cl.BeginTransaction(); err != nil {
			t.Fatalf("begin transaction %d: %v (%s)", i, err, cl.saw())
		}
		recs := make([]*kgo.Record, st.n)
		for j := range recs {
			p := int32(v % parts)
			recs[j] = &kgo.Record{Topic: topic, Partition: p, Key: []byte(fmt.Sprintf("k%d", p)), Value: []byte(strconv.Itoa(v))}
			out.add(st.commit, strconv.Itoa(v), p)
			v++
		}
		// ProduceSync waits for every record, whatever its context says,
		// and a client retrying AddPartitionsToTxn on
		// CONCURRENT_TRANSACTIONS never fails them: the watchdog turns
		// that into a failure; closing the client at cleanup releases
		// the goroutine.
		done := make(chan error, 1)
		go func() { done <- cl.ProduceSync(context.Background(), recs...).FirstErr() }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("produce in transaction %d: %v (%s)", i, err, cl.saw())
			}
		case <-time.After(txnStepTimeout):
			t.Fatalf("produce in transaction %d: not acknowledged within %s (%s)", i, txnStepTimeout, cl.saw())
		}
		ctx, cancel := context.WithTimeout(context.Background(), txnStepTimeout)
		err := cl.EndTransaction(ctx, kgo.TransactionEndTry(st.commit))
		cancel()
		if err != nil {
			t.Fatalf("end transaction %d (commit=%v): %v (%s)", i, st.commit, err, cl.saw())
		}
		all = append(all, recs)
	}
	return out, all
}

func TestRealTxnFranz(t *testing.T) {
	b := realBackend(t)
	eachTxnTarget(t, b, func(t *testing.T, tg txnTarget) {
		tv2, features := advertisesTV2(t, tg.addr)
		t.Logf("%s advertises %s", tg.addr, features)
		for _, flow := range []struct {
			name    string
			classic bool
		}{{"default", false}, {"classic", true}} {
			t.Run(flow.name, func(t *testing.T) {
				const parts = 3
				topic := createTopic(t, kadm.NewClient(newClient(t, tg.addr)), parts)
				txnID := topic + "-txn"
				cl := franzTxnClient{writes: &keyCounter{}, log: &clientLog{}}
				opts := []kgo.Opt{kgo.TransactionalID(txnID), kgo.RecordPartitioner(kgo.ManualPartitioner()), deliveryBound,
					kgo.WithHooks(cl.writes), kgo.WithLogger(cl.log)}
				if flow.classic {
					// Kafka 3.9's versions: Produce ≤ v11, EndTxn ≤ v4,
					// TxnOffsetCommit ≤ v4 -- AddPartitionsToTxn and an
					// epoch that EndTxn does not bump.
					opts = append(opts, kgo.MaxVersions(kversion.V3_9_0()))
				}
				cl.Client = newClient(t, tg.addr, opts...)
				out, txns := runFranzTxns(t, cl, topic, parts, txnPlan)

				// The flow the client used: KIP-890 part 2 sends no
				// AddPartitionsToTxn (Produce v12 adds the partition) and
				// EndTxn v5 bumps the epoch, so each transaction runs at a
				// higher epoch; the classic flow adds partitions explicitly
				// and keeps one epoch.
				pid := txns[0][0].ProducerID
				epochs := make([]int16, len(txns))
				for i, recs := range txns {
					epochs[i] = recs[0].ProducerEpoch
					for _, r := range recs {
						if r.ProducerID != pid || r.ProducerEpoch != epochs[i] {
							t.Fatalf("transaction %d: record %s with producer %d epoch %d, want %d epoch %d", i, r.Value, r.ProducerID, r.ProducerEpoch, pid, epochs[i])
						}
					}
				}
				adds := cl.writes.n[kmsg.AddPartitionsToTxn].Load()
				wantTV2 := tv2 && !flow.classic
				t.Logf("producer %d, epochs per transaction %v, %d AddPartitionsToTxn requests, %d EndTxn", pid, epochs, adds, cl.writes.n[kmsg.EndTxn].Load())
				if wantTV2 {
					if adds != 0 || !strictlyIncreasing(epochs) {
						t.Fatalf("want the KIP-890 flow (%s): %d AddPartitionsToTxn requests, epochs %v", features, adds, epochs)
					}
				} else {
					if !flow.classic {
						t.Logf("%s does not advertise transaction.version 2 (%s): the default flow is the classic one", tg.addr, features)
					}
					if adds == 0 || epochs[0] != epochs[len(epochs)-1] {
						t.Fatalf("want the classic flow: %d AddPartitionsToTxn requests, epochs %v", adds, epochs)
					}
				}

				committed, _, _ := verifyTxnTopic(t, tg, topic, parts, out, txnID)
				// TV2 may hand the client a new producer id on an epoch
				// overflow, not here: the last transaction's id is the
				// coordinator's.
				assertTxnCommitted(t, tg.addr, txnID, txns[len(txns)-1][0].ProducerID)

				at := valuePositions(committed)
				for i, recs := range txns {
					for _, r := range recs {
						v := string(r.Value)
						if tg.viaProxy() {
							// eosproxy answered base offset -1: franz-go
							// reports -1 for every record of the batch.
							if r.Offset != -1 {
								t.Fatalf("proxy: franz-go Record.Offset %d for %s at partition %d (transaction %d), want -1 (eosproxy answers buffered transactional batches with base offset -1)",
									r.Offset, v, r.Partition, i)
							}
							continue
						}
						if r.Offset < 0 {
							t.Fatalf("direct: franz-go Record.Offset %d for %s (transaction %d)", r.Offset, v, i)
						}
						if _, ok := out.committed[v]; ok && at[v] != [2]int64{int64(r.Partition), r.Offset} {
							t.Fatalf("direct: franz-go reported %s at %d/%d, read_committed found it at %v", v, r.Partition, r.Offset, at[v])
						}
					}
				}
				if tg.viaProxy() {
					assertProxyTxnEnds(t, tg.p, txnID, txnPlan)
					assertQuietProxy(t, tg.p)
				}
			})
		}
	})
}

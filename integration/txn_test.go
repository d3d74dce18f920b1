package integration

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"

	"github.com/eosproxy/eosproxy/integration/faults"
)

// The transaction tests run eosproxy in front of a kfake cluster that has no
// idempotence or transaction API at all (faults.NoEOSVersions): whatever
// transactional behaviour the clients see is eosproxy's own.

// txnFlows are the two transaction protocols eosproxy serves: KIP-890's
// (transaction.version 2, which eosproxy advertises and franz-go uses by
// default: implicit partition adds on Produce v12, an epoch bump on every
// EndTxn v5) and the classic one, forced by capping the client below them.
func txnFlows() []struct {
	name string
	opts []kgo.Opt
	// epochStep is how much each EndTxn moves the producer epoch.
	epochStep int16
} {
	classic := kversion.Stable()
	classic.SetMaxKeyVersion(int16(kmsg.EndTxn), 4)
	classic.SetMaxKeyVersion(int16(kmsg.Produce), 11)
	return []struct {
		name      string
		opts      []kgo.Opt
		epochStep int16
	}{
		{"tv2", nil, 1},
		{"tv1", []kgo.Opt{kgo.MaxVersions(classic)}, 0},
	}
}

// endOffsetsSum is the sum of the partitions' end offsets in the backend:
// every record and every control batch takes offsets there.
func endOffsetsSum(t *testing.T, b backend, topic string) int64 {
	t.Helper()
	ends, err := kadm.NewClient(newClient(t, b.addrs[0])).ListEndOffsets(testCtx(t), topic)
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	ends.Each(func(o kadm.ListedOffset) { total += o.Offset })
	return total
}

// backendReaches waits until the partitions' end offsets in the backend sum
// to n and returns the sum: eosproxy answers a commit once it is decided and
// durable, and writes the data to the backend right after (as Kafka writes
// its commit markers after answering). More than n fails at once.
func backendReaches[N int | int64](t *testing.T, b backend, topic string, n N) int64 {
	t.Helper()
	ctx := testCtx(t)
	for {
		got := endOffsetsSum(t, b, topic)
		if got > int64(n) {
			t.Fatalf("backend holds %d records of %s, want %d", got, topic, n)
		}
		if got == int64(n) {
			return got
		}
		select {
		case <-ctx.Done():
			t.Fatalf("backend holds %d records of %s, want %d", got, topic, n)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// produceAndFlush produces values [from, from+n) in the open transaction
// and waits for every acknowledgement.
func produceAndFlush(t *testing.T, cl *kgo.Client, topic string, from, n int) {
	t.Helper()
	produceN(t, cl, topic, from, n)
	if err := cl.Flush(testCtx(t)); err != nil {
		t.Fatal(err)
	}
}

// describeTxn describes id once its last decision is carried out: as in
// Kafka, a decided transaction shows PrepareCommit/PrepareAbort until then.
func describeTxn(t *testing.T, adm *kadm.Client, id string) kadm.DescribedTransaction {
	t.Helper()
	var got kadm.DescribedTransaction
	pollUntil(t, 30*time.Second, func() (bool, string) {
		d, err := adm.DescribeTransactions(testCtx(t), id)
		if err != nil {
			t.Fatalf("DescribeTransactions %s: %v", id, err)
		}
		var ok bool
		if got, ok = d[id]; !ok || got.Err != nil {
			t.Fatalf("DescribeTransactions %s: %+v", id, got)
		}
		return !strings.HasPrefix(got.State, "Prepare"), "transaction " + id + " still " + got.State
	})
	return got
}

func TestTxnCommitAbortCommit(t *testing.T) {
	for _, flow := range txnFlows() {
		t.Run(flow.name, func(t *testing.T) {
			b := newNoEOSFake(t)
			p := startProxy(t, b)
			adm := kadm.NewClient(newClient(t, p.Addr()))
			topic := createTopic(t, adm, 3)
			id := topic + "-txn"
			prod := newClient(t, p.Addr(), append([]kgo.Opt{kgo.DefaultProduceTopic(topic), kgo.TransactionalID(id)}, flow.opts...)...)
			run := func(from, n int, commit bool) {
				t.Helper()
				if err := prod.BeginTransaction(); err != nil {
					t.Fatal(err)
				}
				produceAndFlush(t, prod, topic, from, n)
				// Acknowledged, not committed: nothing may be in the backend.
				if got := endOffsetsSum(t, b, topic); got > int64(from) {
					t.Fatalf("backend holds %d offsets before the transaction of %d..%d ended, want at most the %d committed", got, from, from+n-1, from)
				}
				if d := describeTxn(t, adm, id); d.State != "Ongoing" || len(d.Topics[topic]) == 0 {
					t.Fatalf("open transaction described as %+v, want Ongoing with %s", d, topic)
				}
				if err := prod.EndTransaction(testCtx(t), kgo.TransactionEndTry(commit)); err != nil {
					t.Fatalf("end transaction (commit=%v): %v", commit, err)
				}
			}
			run(0, 100, true)
			run(100, 50, false)
			run(100, 100, true)
			backendReaches(t, b, topic, 200)
			got, total := readBackendAll(t, b, topic)
			if total != 200 {
				t.Fatalf("backend end offsets sum to %d, want 200: aborted data or control batches reached it", total)
			}
			checkAllOnceInOrder(t, got, 200)
			d := describeTxn(t, adm, id)
			if d.State != "CompleteCommit" || d.ProducerEpoch != 3*flow.epochStep {
				t.Fatalf("after three transactions: %+v, want CompleteCommit at epoch %d", d, 3*flow.epochStep)
			}
			cons := newClient(t, p.Addr(), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
				kgo.FetchIsolationLevel(kgo.ReadCommitted()))
			checkAllOnceInOrder(t, consumeAll(t, cons, 200), 200)
		})
	}
}

// A second producer with the same transactional id fences the first: the
// first's open transaction is aborted, it can neither write nor commit.
func TestTxnZombieFenced(t *testing.T) {
	for _, flow := range txnFlows() {
		t.Run(flow.name, func(t *testing.T) {
			b := newNoEOSFake(t)
			p := startProxy(t, b)
			topic := createTopic(t, kadm.NewClient(newClient(t, p.Addr())), 3)
			id := topic + "-txn"
			opts := append([]kgo.Opt{kgo.DefaultProduceTopic(topic), kgo.TransactionalID(id)}, flow.opts...)
			zombie := newClient(t, p.Addr(), opts...)
			if err := zombie.BeginTransaction(); err != nil {
				t.Fatal(err)
			}
			produceAndFlush(t, zombie, topic, 1000, 50)

			fresh := newClient(t, p.Addr(), opts...)
			if err := fresh.BeginTransaction(); err != nil {
				t.Fatal(err)
			}
			produceAndFlush(t, fresh, topic, 0, 20)

			err := zombie.ProduceSync(testCtx(t), &kgo.Record{Value: []byte("2000")}).FirstErr()
			if err == nil {
				t.Fatal("the fenced producer could still write")
			}
			if err := zombie.EndTransaction(testCtx(t), kgo.TryCommit); err == nil {
				t.Fatal("the fenced producer could commit")
			}
			if err := fresh.EndTransaction(testCtx(t), kgo.TryCommit); err != nil {
				t.Fatalf("commit of the new instance: %v", err)
			}
			backendReaches(t, b, topic, 20)
			got, total := readBackendAll(t, b, topic)
			if total != 20 {
				t.Fatalf("backend holds %d records, want the new instance's 20", total)
			}
			checkAllOnceInOrder(t, got, 20)
		})
	}
}

// A transaction left open longer than its timeout is aborted by eosproxy,
// and its producer fenced.
func TestTxnTimeoutAborts(t *testing.T) {
	b := newNoEOSFake(t)
	p := startProxy(t, b)
	adm := kadm.NewClient(newClient(t, p.Addr()))
	topic := createTopic(t, adm, 3)
	id := topic + "-txn"
	prod := newClient(t, p.Addr(), kgo.DefaultProduceTopic(topic), kgo.TransactionalID(id), kgo.TransactionTimeout(1500*time.Millisecond))
	if err := prod.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	produceAndFlush(t, prod, topic, 0, 30)
	before := describeTxn(t, adm, id)
	ctx := testCtx(t)
	for {
		d := describeTxn(t, adm, id)
		if d.State == "CompleteAbort" {
			if d.ProducerEpoch <= before.ProducerEpoch {
				t.Fatalf("timed-out transaction aborted without fencing: epoch %d → %d", before.ProducerEpoch, d.ProducerEpoch)
			}
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("transaction still %s after its timeout", d.State)
		case <-time.After(50 * time.Millisecond):
		}
	}
	if err := prod.EndTransaction(testCtx(t), kgo.TryCommit); err == nil {
		t.Fatal("a timed-out transaction committed")
	}
	if got := endOffsetsSum(t, b, topic); got != 0 {
		t.Fatalf("backend holds %d records of the aborted transaction", got)
	}
	if !strings.Contains(p.logs.String(), "transaction timed out") {
		t.Fatal("no log line for the timeout")
	}
}

// Consume-transform-produce with franz-go's GroupTransactSession: every
// input record is copied exactly once and the group's offsets in the backend
// end where the input ends.
func TestTxnGroupTransactSessionCopies(t *testing.T) {
	const n = 100_000
	b := newNoEOSFake(t)
	p := startProxy(t, b)
	adm := kadm.NewClient(newClient(t, p.Addr()))
	in, out := createTopic(t, adm, 3), createTopic(t, adm, 3)
	plain := newClient(t, p.Addr(), kgo.DefaultProduceTopic(in))
	produceN(t, plain, in, 0, n)
	if err := plain.Flush(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	group := in + "-group"
	sess, err := kgo.NewGroupTransactSession(sessionOpts(
		kgo.SeedBrokers(p.Addr()), kgo.TransactionalID(in+"-copier"),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumerGroup(group), kgo.ConsumeTopics(in), kgo.DefaultProduceTopic(out),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
	)...)
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	copied, commits, aborts := 0, 0, 0
	for copied < n {
		// A thousand records per transaction: about a hundred commits.
		batch, committed, ok := copyTxn(t, ctx, sess, 1000, nil)
		if !ok {
			t.Fatalf("copied %d of %d before timeout", copied, n)
		}
		if committed {
			copied += batch
			commits++
		} else {
			aborts++
		}
	}
	t.Logf("copied %d records in %d transactions (%d aborted)", copied, commits, aborts)
	backendReaches(t, b, out, n)
	got, total := readBackendAll(t, b, out)
	if total != n {
		t.Fatalf("output holds %d records, want %d", total, n)
	}
	seen := make([]bool, n)
	for _, vs := range got {
		for _, v := range vs {
			if seen[v] {
				t.Fatalf("value %d copied twice", v)
			}
			seen[v] = true
		}
	}
	// The group's offsets, read from the backend directly, cover the input.
	offs, err := kadm.NewClient(newClient(t, b.addrs[0])).FetchOffsets(testCtx(t), group)
	if err != nil {
		t.Fatal(err)
	}
	ends, err := kadm.NewClient(newClient(t, b.addrs[0])).ListEndOffsets(testCtx(t), in)
	if err != nil {
		t.Fatal(err)
	}
	ends.Each(func(e kadm.ListedOffset) {
		o, ok := offs.Lookup(in, e.Partition)
		if !ok || o.At != e.Offset {
			t.Errorf("group offset of %s/%d = %+v, want %d", in, e.Partition, o, e.Offset)
		}
	})
}

// copyTxn runs one consume-transform-produce transaction of up to max
// records through sess and returns how many it copied and whether they
// committed; ok is false when ctx ended while polling. before, if set, runs
// after the poll, before the transaction begins.
func copyTxn(t *testing.T, ctx context.Context, sess *kgo.GroupTransactSession, max int, before func()) (copied int, committed, ok bool) {
	t.Helper()
	fs := sess.PollRecords(ctx, max)
	if ctx.Err() != nil {
		return 0, false, false
	}
	if before != nil {
		before()
	}
	if err := sess.Begin(); err != nil {
		t.Fatal(err)
	}
	var prodErr atomic.Pointer[error]
	fs.EachRecord(func(r *kgo.Record) {
		copied++
		sess.Produce(ctx, &kgo.Record{Key: r.Key, Value: r.Value}, func(_ *kgo.Record, err error) {
			if err != nil {
				prodErr.CompareAndSwap(nil, &err)
			}
		})
	})
	committed, err := sess.End(ctx, kgo.TryCommit)
	if err != nil {
		t.Fatalf("end transaction: %v", err)
	}
	if e := prodErr.Load(); e != nil {
		t.Fatalf("produce: %v", *e)
	}
	return copied, committed, true
}

// A transaction whose data was buffered (and acknowledged) before eosproxy
// was SIGKILLed commits after the restart, exactly once.
func TestTxnBufferedDataSurvivesSIGKILL(t *testing.T) {
	bin := buildProxy(t)
	b := newNoEOSFake(t)
	topic := createTopic(t, kadm.NewClient(newClient(t, b.addrs[0])), 3)
	cp, bootstrap := startCrashProxy(t, bin, b, nil)
	prod := newClient(t, bootstrap, kgo.DefaultProduceTopic(topic), kgo.TransactionalID(topic+"-txn"),
		kgo.RequestRetries(1<<20), kgo.RetryTimeout(time.Minute))
	if err := prod.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	produceAndFlush(t, prod, topic, 0, 1000)
	cp.kill()
	cp.start()
	if err := prod.EndTransaction(testCtx(t), kgo.TryCommit); err != nil {
		t.Fatalf("commit after restart: %v", err)
	}
	backendReaches(t, b, topic, 1000)
	got, total := readBackendAll(t, b, topic)
	if total != 1000 {
		t.Fatalf("backend holds %d records, want 1000", total)
	}
	checkAllOnceInOrder(t, got, 1000)
}

// eosproxy is SIGKILLed while it forwards a commit: the backend holds a
// forwarded batch until eosproxy is dead and then writes it. On restart the
// commit rolls forward, finds that batch in the backend and does not write
// it again. Against a backend without idempotence (batches cleared, one per
// partition in flight) and one with it (pipelined under eosproxy's own
// producer id).
func TestTxnSIGKILLDuringCommitRollsForward(t *testing.T) {
	bin := buildProxy(t)
	t.Run("backend without EOS", func(t *testing.T) { sigkillDuringCommit(t, bin, newNoEOSFake(t)) })
	t.Run("backend with idempotence", func(t *testing.T) { sigkillDuringCommit(t, bin, newFake(t)) })
}

func sigkillDuringCommit(t *testing.T, bin string, b backend) {
	topic := createTopic(t, kadm.NewClient(newClient(t, b.addrs[0])), 3)
	cp, bootstrap := startCrashProxy(t, bin, b, nil)

	var mu sync.Mutex
	armed := false
	hook := make(chan chan struct{})
	testDone := make(chan struct{})
	t.Cleanup(func() { close(testDone) })
	b.fake.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		b.fake.KeepControl()
		// Only eosproxy's commit forwarding produces to this backend.
		if pr, ok := req.(*kmsg.ProduceRequest); !ok || len(pr.Topics) == 0 {
			return nil, nil, false
		}
		mu.Lock()
		fire := armed
		armed = false
		mu.Unlock()
		if !fire {
			return nil, nil, false
		}
		killed := make(chan struct{})
		select {
		case hook <- killed:
			<-killed
		case <-testDone:
		}
		return nil, nil, false // now the cluster writes it
	})

	newProducer := func() *kgo.Client {
		return newClient(t, bootstrap, kgo.DefaultProduceTopic(topic), kgo.TransactionalID(topic+"-txn"),
			kgo.RequestRetries(1<<20), kgo.RetryTimeout(time.Minute), kgo.ProducerBatchMaxBytes(1<<10))
	}
	prod := newProducer()
	const rounds, per = 3, 600
	for r := range rounds {
		if err := prod.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		produceAndFlush(t, prod, topic, r*per, per)
		mu.Lock()
		armed = true
		mu.Unlock()
		ended := make(chan error, 1)
		go func() { ended <- prod.EndTransaction(context.Background(), kgo.TryCommit) }()
		// eosproxy answers once the commit is durable, then forwards.
		select {
		case killed := <-hook:
			cp.kill()
			close(killed)
		case <-time.After(30 * time.Second):
			t.Fatalf("round %d: no forwarded batch reached the backend", r)
		}
		cp.start()
		if err := <-ended; err != nil {
			// The kill can take the answer to EndTxn with it: the commit
			// was decided (its forwarding had begun), the client only did
			// not hear so. As an application would, start a new instance.
			t.Logf("round %d: commit answer lost in the kill (%v); a new producer instance goes on", r, err)
			prod = newProducer()
		}
	}
	backendReaches(t, b, topic, rounds*per)
	got, total := readBackendCommitted(t, b, topic)
	if total != rounds*per {
		t.Fatalf("backend holds %d records, want %d", total, rounds*per)
	}
	checkAllOnceInOrder(t, got, rounds*per)
	if n := cp.logs.count(foundCommitMsg); n < rounds {
		t.Fatalf("%d of %d held batches were found in the backend after the restart", n, rounds)
	}
}

const foundCommitMsg = "batch of an interrupted commit found in the backend; not resending it"

// startCrashProxy runs the eosproxy binary on fixed ports (so clients find
// it again after a restart) in front of b; rng is the test's fault source,
// nil for a fresh one.
func startCrashProxy(t *testing.T, bin string, b backend, rng *rand.Rand) (*crashProxy, string) {
	t.Helper()
	if rng == nil {
		seed := faultSeed(t)
		rng = rand.New(rand.NewPCG(seed, seed>>1|1))
	}
	// Fixed ports: clients reconnect to the same bootstrap and broker
	// addresses after every restart.
	base, err := faults.FreePortRange(rng, 1+len(b.addrs))
	if err != nil {
		t.Fatal(err)
	}
	cp := newCrashProxy(t, bin,
		"--log-format", "json", "--log-level", "info",
		"--listen", net.JoinHostPort("127.0.0.1", strconv.Itoa(base)),
		"--broker-ports", fmt.Sprintf("%d-%d", base+1, base+len(b.addrs)),
		"--upstream", strings.Join(b.addrs, ","),
		"--data-dir", t.TempDir())
	cp.args = append(cp.args, tierBinaryArgs()...)
	cp.env = tierBinaryEnv()
	return cp, cp.start()
}

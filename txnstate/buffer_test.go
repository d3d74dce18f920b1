// Tests of buffering transactional batches: retries, refusals, limits, and
// durability before the answer.

package txnstate_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/eosproxy/eosproxy/protocol"
	"github.com/eosproxy/eosproxy/txnstate"

	"github.com/twmb/franz-go/pkg/kerr"
)

// TestProduceRetry: a retried batch (same producer, epoch and sequence) is
// answered as written, even while the original is still being made durable,
// and is neither buffered nor forwarded a second time.
func TestProduceRetry(t *testing.T) {
	for _, tv2 := range []bool{false, true} {
		t.Run(versionName(tv2), func(t *testing.T) {
			e := newEnv(t, envConfig{})
			a0 := tp("a", 0)
			from := ends(e.be, a0)
			p := e.initProducer("tx", tv2, 60_000)
			p.begin(a0)
			v := p.produceVersion()

			b0 := p.build(a0, 3, 100)
			first := p.produce(a0, b0, v)
			retry := p.produce(a0, b0, v) // before the original is durable
			if first.Err != 0 || retry.Err != 0 {
				t.Fatalf("answers %d, %d", first.Err, retry.Err)
			}
			if wait(retry) != 0 || wait(first) != 0 {
				t.Fatal("retry or original failed")
			}
			p.accepted(a0, b0)
			size := e.c.Buffered()
			disk := e.sp.DiskBytes()
			if size != int64(len(b0)) {
				t.Fatalf("Buffered() = %d, one batch of %d", size, len(b0))
			}
			if code := wait(p.produce(a0, b0, v)); code != 0 {
				t.Fatalf("retry after durability: %s", txnstate.ErrorName(code))
			}
			b1 := p.send(a0, 2, 100)
			// Retries of both, the older one last.
			for _, b := range [][]byte{b1, b0} {
				if code := wait(p.produce(a0, b, v)); code != 0 {
					t.Fatalf("retry: %s", txnstate.ErrorName(code))
				}
			}
			if got := e.c.Buffered(); got != size+int64(len(b1)) {
				t.Fatalf("Buffered() = %d after retries, want %d", got, size+int64(len(b1)))
			}
			if got := e.sp.DiskBytes(); got != disk+int64(len(b1)) {
				t.Fatalf("DiskBytes %d after retries, want %d", got, disk+int64(len(b1)))
			}
			if n := len(e.indexed()); n != 2 {
				t.Fatalf("%d batches indexed, want 2", n)
			}
			p.send(a0, 1, 100)
			if r := p.end(true); r.Err != 0 {
				t.Fatalf("commit: %s", txnstate.ErrorName(r.Err))
			}
			e.waitState("tx", txnstate.CompleteCommit)
			checkForwarded(t, e.be, from, p.committed)
			if attempts, _ := e.be.counts(); attempts != 3 {
				t.Fatalf("%d batches sent, want 3", attempts)
			}
		})
	}
}

// TestProduceRefused covers the Produce answers that buffer nothing.
func TestProduceRefused(t *testing.T) {
	a0, a1 := tp("a", 0), tp("a", 1)
	for _, tc := range []struct {
		name string
		tv2  bool
		do   func(e *env, p *producer) int16
		want int16
	}{
		{"out of order sequence", true, func(e *env, p *producer) int16 {
			p.seq[a0] += 5
			return wait(p.produce(a0, p.build(a0, 1, 10), 12))
		}, errOutOfOrder},
		{"out of order sequence TV1", false, func(e *env, p *producer) int16 {
			p.seq[a0] += 2
			return wait(p.produce(a0, p.build(a0, 1, 10), 9))
		}, errOutOfOrder},
		{"sequence not from 0 on a new epoch", true, func(e *env, p *producer) int16 {
			p.reinit(60_000)
			p.begin(a0)
			p.seq[a0] = 1
			return wait(p.produce(a0, p.build(a0, 1, 10), 12))
		}, errOutOfOrder},
		{"fenced epoch v12", true, func(e *env, p *producer) int16 {
			old := *p
			p.reinit(60_000)
			return wait(old.produce(a0, old.build(a0, 1, 10), 12))
		}, errInvalidEpoch},
		{"fenced epoch v9", false, func(e *env, p *producer) int16 {
			old := *p
			p.reinit(60_000)
			p.begin(a0)
			return wait(old.produce(a0, old.build(a0, 1, 10), 9))
		}, errInvalidEpoch},
		{"fenced epoch AddPartitions v3", false, func(e *env, p *producer) int16 {
			old := *p
			p.reinit(60_000)
			return e.c.AddPartitions(p.id, txnstate.AddPartitionsRequest{ProducerID: old.pid, Epoch: old.epoch, Partitions: []TP{a1}, Version: 3}).Err
		}, kerr.ProducerFenced.Code},
		{"fenced epoch AddPartitions v1", false, func(e *env, p *producer) int16 {
			old := *p
			p.reinit(60_000)
			return e.c.AddPartitions(p.id, txnstate.AddPartitionsRequest{ProducerID: old.pid, Epoch: old.epoch, Partitions: []TP{a1}, Version: 1}).Err
		}, errInvalidEpoch},
		{"fenced epoch TxnOffsetCommit", true, func(e *env, p *producer) int16 {
			old := *p
			p.reinit(60_000)
			return e.c.TxnOffsetCommit(p.id, txnstate.TxnOffsetCommitRequest{ProducerID: old.pid, Epoch: old.epoch, Group: "g", Version: 5}).Err
		}, errInvalidEpoch},
		{"fenced epoch EndTxn v3", false, func(e *env, p *producer) int16 {
			old := *p
			p.reinit(60_000)
			return e.c.EndTxn(context.Background(), p.id, txnstate.EndTxnRequest{ProducerID: old.pid, Epoch: old.epoch, Commit: true, Version: 3}).Err
		}, kerr.ProducerFenced.Code},
		{"unknown transactional id", true, func(e *env, p *producer) int16 {
			p.id = "nobody"
			return wait(p.produce(a0, p.build(a0, 1, 10), 12))
		}, kerr.InvalidProducerIDMapping.Code},
		{"other producer id", true, func(e *env, p *producer) int16 {
			p.pid += 100
			return wait(p.produce(a0, p.build(a0, 1, 10), 12))
		}, kerr.InvalidProducerIDMapping.Code},
		{"partition not added v9", false, func(e *env, p *producer) int16 {
			return wait(p.produce(a1, p.build(a1, 1, 10), 9))
		}, errInvalidTxnState},
		{"partition not added v11", false, func(e *env, p *producer) int16 {
			return wait(p.produce(a1, p.build(a1, 1, 10), 11))
		}, errTxnAbortable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, envConfig{})
			p := e.initProducer("tx", tc.tv2, 60_000)
			p.begin(a0)
			p.send(a0, 1, 10)
			buffered, disk := e.c.Buffered(), e.sp.DiskBytes()
			if got := tc.do(e, p); got != tc.want {
				t.Fatalf("got %s (%d), want %s (%d)", txnstate.ErrorName(got), got, txnstate.ErrorName(tc.want), tc.want)
			}
			if e.c.Buffered() > buffered || e.sp.DiskBytes() > disk {
				t.Fatalf("a refused batch was buffered: %d → %d bytes, disk %d → %d", buffered, e.c.Buffered(), disk, e.sp.DiskBytes())
			}
		})
	}
}

// TestProduceDurableBeforeAnswer: once Wait returns NONE, the batch is in
// the spool and in the index (and survives a restart: see
// TestRestartKeepsOngoing).
func TestProduceDurableBeforeAnswer(t *testing.T) {
	e := newEnv(t, envConfig{segBytes: 4 << 10})
	p := e.initProducer("tx", true, 60_000)
	var want [][]byte
	for i := range 30 {
		part := tp("a", int32(i%3))
		raw := p.build(part, 1+i%4, 200)
		ans := p.produce(part, raw, 12)
		if ans.Err != 0 || ans.Wait == nil {
			t.Fatalf("produce %d: %+v", i, ans)
		}
		if code := ans.Wait(); code != 0 {
			t.Fatalf("produce %d: %s", i, txnstate.ErrorName(code))
		}
		p.accepted(part, raw)
		bt, _ := protocol.ParseBatch(raw)
		cleared := slices.Clone(raw)
		protocol.ClearTransactional(cleared, bt.Length)
		want = append(want, cleared)
		got := e.indexed()
		for _, w := range want {
			if !slices.ContainsFunc(got, func(b []byte) bool { return bytes.Equal(b, w) }) {
				t.Fatalf("after batch %d was answered, a batch is missing from the index or differs in the spool", i)
			}
		}
		if len(got) != len(want) {
			t.Fatalf("%d batches indexed, %d produced", len(got), len(want))
		}
	}
}

// TestTransactionTooLarge: a batch over the limit is refused with
// POLICY_VIOLATION and the transaction can then only abort. A classic
// EndTxn(commit) gets INVALID_TXN_STATE and the client aborts; a KIP-890
// one (v5) is turned into the abort and answered TRANSACTION_ABORTABLE, after
// which the client resumes its producer id (KIP-360). Either way nothing is
// forwarded and the next transaction commits normally.
func TestTransactionTooLarge(t *testing.T) {
	const batch = 1000 // bytes of each batch's records, about
	perTxn := func(o *txnstate.Options) { o.MaxTransactionBytes = 3*batch + 500 }
	for _, tc := range []struct {
		name string
		tv2  bool
		opts func(*txnstate.Options)
		// batches buffered by another transactional id first
		other int
		after int16 // answer to a produce after the refusal
		// the answer to EndTxn(commit); 0: the client aborts without trying
		commit int16
	}{
		{"MaxTransactionBytes TV1", false, perTxn, 0, errInvalidTxnState, errInvalidTxnState},
		{"MaxTransactionBytes TV1 abort", false, perTxn, 0, errInvalidTxnState, 0},
		{"MaxTransactionBytes TV2", true, perTxn, 0, errTxnAbortable, errTxnAbortable},
		{"MaxTransactionBytes TV2 abort", true, perTxn, 0, errTxnAbortable, 0},
		{"MaxBufferBytes TV2", true, func(o *txnstate.Options) { o.MaxBufferBytes = 5*batch + 500 }, 2, errTxnAbortable, errTxnAbortable},
		{"MaxBufferBytes TV1", false, func(o *txnstate.Options) { o.MaxBufferBytes = 5*batch + 500 }, 2, errInvalidTxnState, errInvalidTxnState},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, envConfig{opts: tc.opts})
			a0 := tp("a", 0)
			from := ends(e.be, a0)
			if tc.other > 0 {
				o := e.initProducer("other", true, 60_000)
				for range tc.other {
					o.send(tp("o", 0), 1, batch-100)
				}
			}
			otherBytes := e.c.Buffered()
			p := e.initProducer("tx", tc.tv2, 60_000)
			p.begin(a0)
			for range 3 {
				p.send(a0, 1, batch-100)
			}
			buffered := e.c.Buffered()
			ans := p.produce(a0, p.build(a0, 1, batch-100), p.produceVersion())
			if ans.Err != kerr.PolicyViolation.Code || ans.Msg == "" {
				t.Fatalf("over the limit: %+v, want POLICY_VIOLATION with a message", ans)
			}
			if e.c.Buffered() != buffered {
				t.Fatal("the refused batch was buffered")
			}
			// Even a batch that would fit is refused now.
			if code := wait(p.produce(a0, p.build(a0, 1, 10), p.produceVersion())); code != tc.after {
				t.Fatalf("produce after the refusal: %s, want %s", txnstate.ErrorName(code), txnstate.ErrorName(tc.after))
			}
			if tc.commit != 0 {
				epoch := p.epoch
				if r := p.end(true); r.Err != tc.commit {
					t.Fatalf("EndTxn(commit) of a transaction missing a batch: %s, want %s", txnstate.ErrorName(r.Err), txnstate.ErrorName(tc.commit))
				}
				if tc.tv2 {
					// Already aborted, with the epoch bumped; the client
					// resumes its producer id and learns the new epoch.
					tx := e.c.Get("tx")
					if tx.State != txnstate.CompleteAbort || tx.Epoch <= epoch {
						t.Fatalf("after the refused TV2 commit: %v at epoch %d (was %d)", tx.State, tx.Epoch, epoch)
					}
					// CONCURRENT_TRANSACTIONS (retried, as clients do)
					// until the abort is carried out.
					var r txnstate.Result
					waitFor(t, "InitProducerId", func() bool {
						r = e.c.InitProducerID(context.Background(), txnstate.InitProducerIDRequest{TransactionalID: "tx", TimeoutMs: 60_000, ProducerID: p.pid, Epoch: p.epoch, Version: 4})
						return r.Err != kerr.ConcurrentTransactions.Code
					})
					if r.Err != 0 || r.ProducerID != p.pid || r.Epoch <= epoch {
						t.Fatalf("KIP-360 resume after the abort: %s %d/%d", txnstate.ErrorName(r.Err), r.ProducerID, r.Epoch)
					}
					p.epoch, p.seq, p.open = r.Epoch, map[TP]int32{}, map[TP][][32]byte{}
				} else if tx := e.c.Get("tx"); tx.State != txnstate.Ongoing {
					t.Fatalf("state %v after the refused commit", tx.State)
				}
			}
			if e.c.Get("tx").State == txnstate.Ongoing {
				if r := p.end(false); r.Err != 0 {
					t.Fatalf("abort: %s", txnstate.ErrorName(r.Err))
				}
				e.waitState("tx", txnstate.CompleteAbort)
			}
			if attempts, _ := e.be.counts(); attempts != 0 {
				t.Fatalf("%d batches forwarded", attempts)
			}
			e.waitState("tx", e.c.Get("tx").State) // the abort carried out
			if e.c.Buffered() != otherBytes {
				t.Fatalf("Buffered() = %d after the abort, the other transaction holds %d", e.c.Buffered(), otherBytes)
			}
			// The next transaction may commit again.
			p.begin(a0)
			p.send(a0, 1, batch-100)
			if r := p.end(true); r.Err != 0 {
				t.Fatalf("next commit: %s", txnstate.ErrorName(r.Err))
			}
			e.waitState("tx", txnstate.CompleteCommit)
			checkForwarded(t, e.be, from, p.committed)
			if total(p.committed) != 1 {
				t.Fatalf("%d batches committed, want 1", total(p.committed))
			}
		})
	}
}

// TestManyBatches commits and aborts transactions of more batches than are
// deleted together with Complete, produced pipelined (the flusher
// group-commits them).
func TestManyBatches(t *testing.T) {
	for _, commit := range []bool{true, false} {
		t.Run(fmt.Sprint("commit=", commit), func(t *testing.T) {
			const segBytes = 64 << 10
			e := newEnv(t, envConfig{segBytes: segBytes})
			parts := []TP{tp("m", 0), tp("m", 1), tp("m", 2)}
			from := ends(e.be, parts...)
			p := e.initProducer("tx", true, 60_000)
			var answers []txnstate.ProduceAnswer
			for i := range 1200 {
				part := parts[i%3]
				raw := p.build(part, 1, 50)
				a := p.produce(part, raw, 12)
				if a.Err != 0 {
					t.Fatalf("produce %d: %s", i, txnstate.ErrorName(a.Err))
				}
				p.accepted(part, raw)
				answers = append(answers, a)
			}
			for i, a := range answers {
				if code := wait(a); code != 0 {
					t.Fatalf("produce %d: %s", i, txnstate.ErrorName(code))
				}
			}
			if n := len(e.indexed()); n != 1200 {
				t.Fatalf("%d batches indexed", n)
			}
			if r := p.end(commit); r.Err != 0 {
				t.Fatalf("EndTxn: %s", txnstate.ErrorName(r.Err))
			}
			if commit {
				e.waitState("tx", txnstate.CompleteCommit)
				checkForwarded(t, e.be, from, p.committed)
			} else {
				e.waitState("tx", txnstate.CompleteAbort)
				if a, _ := e.be.counts(); a != 0 {
					t.Fatalf("abort forwarded %d batches", a)
				}
			}
			waitFor(t, "Buffered() to drop to 0", func() bool { return e.c.Buffered() == 0 })
			if n := len(e.indexed()); n != 0 {
				t.Fatalf("%d batches left in the index", n)
			}
			if got := e.sp.DiskBytes(); got > segBytes {
				t.Fatalf("DiskBytes %d: spool data not released", got)
			}
		})
	}
}

// refusingReplica is a store.Replicator that refuses every write, as the
// cluster's log does once this instance no longer owns the state.
type refusingReplica struct{}

func (refusingReplica) Append([]byte) func() error {
	return func() error { return errors.New("cluster: fenced by another owner") }
}

// TestProduceWhenNoLongerOwner: in cluster mode, a batch whose index the
// cluster's log refuses (this instance was deposed) is answered
// NOT_LEADER_OR_FOLLOWER, which its producer retries with the next owner,
// and the transaction is not marked broken: the mark could not reach the
// log either, so the next owner would commit the transaction without the
// batch while the producer had been told to abort (TRANSACTION_ABORTABLE,
// which eoscheck caught as committed records missing from the output).
func TestProduceWhenNoLongerOwner(t *testing.T) {
	e := newEnv(t, envConfig{})
	a0 := tp("a", 0)
	p := e.initProducer("tx", true, 60_000)
	p.begin(a0)
	p.send(a0, 2, 100)
	e.db.SetReplicator(refusingReplica{})
	defer e.db.SetReplicator(nil)
	v := p.produceVersion()
	for i := range 2 {
		if code := wait(p.produce(a0, p.build(a0, 2, 100), v)); code != kerr.NotLeaderForPartition.Code {
			t.Fatalf("batch %d after the deposition: %s, want NOT_LEADER_OR_FOLLOWER", i, txnstate.ErrorName(code))
		}
		p.seq[a0] += 2
	}
}

// gatedReplica is a store.Replicator whose writes are confirmed only when
// the test releases them, as the cluster's log confirms a set once it is
// acknowledged and read back.
type gatedReplica struct {
	appended chan int // the number of each write, as it is queued
	mu       sync.Mutex
	gates    []chan error
}

func (g *gatedReplica) Append([]byte) func() error {
	g.mu.Lock()
	gate := make(chan error, 1)
	g.gates = append(g.gates, gate)
	n := len(g.gates) - 1
	g.mu.Unlock()
	g.appended <- n
	return func() error { return <-gate }
}

func (g *gatedReplica) confirm(n int, err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.gates[n] <- err
}

// TestBufferedWritesPipelinedToTheLog: in cluster mode a transactional
// id's buffered batches go to the cluster's log one write after another
// without waiting for the one before to be confirmed (a confirmation is a
// round trip to the backend and a read-back; waiting for each made a
// transactional producer's throughput one write per round trip), and are
// still answered in the order they were written, each only once its own
// write is confirmed; a write that is refused (this instance deposed) is
// answered NOT_LEADER_OR_FOLLOWER while the one before it stands.
func TestBufferedWritesPipelinedToTheLog(t *testing.T) {
	e := newEnv(t, envConfig{})
	a0 := tp("a", 0)
	p := e.initProducer("tx", true, 60_000)
	p.begin(a0)
	g := &gatedReplica{appended: make(chan int, 16)}
	e.db.SetReplicator(g)
	defer e.db.SetReplicator(nil)
	v := p.produceVersion()

	type answer struct {
		n    int
		code int16
	}
	answers := make(chan answer, 3)
	produce := func(n int) {
		raw := p.build(a0, 2, 100)
		a := p.produce(a0, raw, v)
		p.accepted(a0, raw)
		go func() { answers <- answer{n, wait(a)} }()
	}
	queued := func(want int) {
		t.Helper()
		select {
		case n := <-g.appended:
			if n != want {
				t.Fatalf("write %d queued as %d", want, n)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("write %d not queued to the log while the writes before it are unconfirmed", want)
		}
	}
	for n := range 3 {
		produce(n)
		queued(n)
	}
	// Confirmed out of order, answered in order.
	g.confirm(1, nil)
	g.confirm(2, errors.New("cluster: fenced by another owner"))
	select {
	case a := <-answers:
		t.Fatalf("batch %d answered (%s) before the first write was confirmed", a.n, txnstate.ErrorName(a.code))
	case <-time.After(50 * time.Millisecond):
	}
	g.confirm(0, nil)
	got := map[int]int16{}
	for range 3 {
		a := <-answers
		got[a.n] = a.code
	}
	want := map[int]int16{0: txnstate.ErrNone, 1: txnstate.ErrNone, 2: kerr.NotLeaderForPartition.Code}
	if !maps.Equal(got, want) {
		t.Fatalf("answers %v, want %v", got, want)
	}
}

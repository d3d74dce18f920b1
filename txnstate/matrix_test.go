package txnstate

import (
	"math"
	"reflect"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
)

const (
	pid   int64 = 1000
	epoch int16 = 5
	now   int64 = 10_000
)

var (
	tp0 = TopicPartition{"out", 0}
	tp1 = TopicPartition{"out", 1}
	cfg = Config{MaxTimeoutMs: 900_000, TxnVersion: 2}
)

// fixture returns a transactional id in state s, as the decision functions
// would leave it: producer 1000 at epoch 5 (previous epoch 4), with tp0 and
// group "g" in the transaction while one is open.
func fixture(s State) *Txn {
	t := &Txn{
		TransactionalID: "tx", ProducerID: pid, LastProducerID: pid, NextProducerID: NoProducerID,
		Epoch: epoch, LastEpoch: epoch - 1, TimeoutMs: 60_000, State: s,
		StartTimeMs: -1, LastUpdateMs: now - 1, TxnVersion: 1,
	}
	if s == Ongoing || s == PrepareCommit || s == PrepareAbort || s == PrepareEpochFence {
		t.Partitions = map[TopicPartition]struct{}{tp0: {}}
		t.PendingOffsets = map[string]GroupOffsets{"g": {}}
		t.StartTimeMs = now - 100
	}
	return t
}

// pids hands out producer ids 2000, 2001, …
func pids() func() int64 {
	n := int64(1999)
	return func() int64 { n++; return n }
}

type request struct {
	name string
	do   func(*Txn) Result
}

func initReq(p int64, e int16, v int16) func(*Txn) Result {
	return func(t *Txn) Result {
		return InitProducerID(cfg, t, InitProducerIDRequest{TransactionalID: "tx", TimeoutMs: 60_000, ProducerID: p, Epoch: e, Version: v}, now, pids())
	}
}

func addReq(p int64, e int16, tp TopicPartition, v int16) func(*Txn) Result {
	return func(t *Txn) Result {
		return AddPartitions(t, AddPartitionsRequest{ProducerID: p, Epoch: e, Partitions: []TopicPartition{tp}, Version: v}, now)
	}
}

func offsetsReq(p int64, e int16, v int16) func(*Txn) Result {
	return func(t *Txn) Result {
		return TxnOffsetCommit(t, TxnOffsetCommitRequest{ProducerID: p, Epoch: e, Group: "g", MemberID: "m", GenerationID: 3,
			Offsets: map[TopicPartition]Offset{{"in", 0}: {Offset: 42}}, Version: v}, now)
	}
}

func produceReq(p int64, e int16, tp TopicPartition, v int16) func(*Txn) Result {
	return func(t *Txn) Result {
		return AdmitBatch(t, ProduceRequest{ProducerID: p, Epoch: e, Partition: tp, Version: v}, now)
	}
}

func endReq(e int16, commit bool, v int16) func(*Txn) Result {
	return func(t *Txn) Result {
		return EndTxn(t, EndTxnRequest{ProducerID: pid, Epoch: e, Commit: commit, Version: v}, now, pids())
	}
}

// Error codes, short, so the matrix below stays readable.
var (
	OK   = ErrNone
	CONC = kerr.ConcurrentTransactions.Code
	PF   = kerr.ProducerFenced.Code
	IPE  = kerr.InvalidProducerEpoch.Code
	ITS  = kerr.InvalidTxnState.Code
	IPIM = kerr.InvalidProducerIDMapping.Code
	TA   = kerr.TransactionAbortable.Code
	NER  = kerr.NotEnoughReplicas.Code
)

// TestMatrix asserts the error code of every request in every state. Columns:
//
//	Empty, Ongoing, PrepareCommit, PrepareAbort, CompleteCommit, CompleteAbort, Dead, PrepareEpochFence
//
// Dead answers as an unknown id; PrepareEpochFence (a fence being written)
// as CONCURRENT_TRANSACTIONS once the producer checks pass.
func TestMatrix(t *testing.T) {
	cases := []struct {
		request
		want [numStates]int16
	}{
		{request{"InitProducerId", initReq(NoProducerID, NoEpoch, 4)}, [8]int16{OK, CONC, CONC, CONC, OK, OK, OK, CONC}},
		{request{"InitProducerId resume current", initReq(pid, epoch, 4)}, [8]int16{OK, CONC, CONC, CONC, OK, OK, OK, CONC}},
		{request{"InitProducerId resume previous epoch (retry)", initReq(pid, epoch-1, 4)}, [8]int16{OK, CONC, CONC, CONC, OK, OK, OK, CONC}},
		{request{"InitProducerId resume stale epoch v4", initReq(pid, epoch-2, 4)}, [8]int16{PF, CONC, CONC, CONC, PF, PF, OK, CONC}},
		{request{"InitProducerId resume stale epoch v3", initReq(pid, epoch-2, 3)}, [8]int16{IPE, CONC, CONC, CONC, IPE, IPE, OK, CONC}},
		{request{"InitProducerId resume other pid", initReq(pid+1, epoch, 4)}, [8]int16{PF, PF, PF, PF, PF, PF, OK, PF}},

		{request{"AddPartitions new v3", addReq(pid, epoch, tp1, 3)}, [8]int16{OK, OK, CONC, CONC, OK, OK, IPIM, CONC}},
		{request{"AddPartitions present v3", addReq(pid, epoch, tp0, 3)}, [8]int16{OK, OK, CONC, CONC, OK, OK, IPIM, CONC}},
		{request{"AddPartitions stale epoch v1", addReq(pid, epoch-1, tp1, 1)}, [8]int16{IPE, IPE, IPE, IPE, IPE, IPE, IPIM, IPE}},
		{request{"AddPartitions stale epoch v2", addReq(pid, epoch-1, tp1, 2)}, [8]int16{PF, PF, PF, PF, PF, PF, IPIM, PF}},
		{request{"AddPartitions newer epoch v3", addReq(pid, epoch+1, tp1, 3)}, [8]int16{PF, PF, PF, PF, PF, PF, IPIM, PF}},
		{request{"AddPartitions other pid", addReq(pid+1, epoch, tp1, 3)}, [8]int16{IPIM, IPIM, IPIM, IPIM, IPIM, IPIM, IPIM, IPIM}},

		{request{"AddOffsets v3", func(t *Txn) Result {
			return AddOffsets(t, AddOffsetsRequest{ProducerID: pid, Epoch: epoch, Group: "g2", Version: 3}, now)
		}}, [8]int16{OK, OK, CONC, CONC, OK, OK, IPIM, CONC}},
		{request{"AddOffsets stale epoch v1", func(t *Txn) Result {
			return AddOffsets(t, AddOffsetsRequest{ProducerID: pid, Epoch: epoch - 1, Group: "g", Version: 1}, now)
		}}, [8]int16{IPE, IPE, IPE, IPE, IPE, IPE, IPIM, IPE}},

		{request{"TxnOffsetCommit v3", offsetsReq(pid, epoch, 3)}, [8]int16{ITS, OK, CONC, CONC, ITS, ITS, IPIM, CONC}},
		{request{"TxnOffsetCommit v4", offsetsReq(pid, epoch, 4)}, [8]int16{TA, OK, CONC, CONC, TA, TA, IPIM, CONC}},
		{request{"TxnOffsetCommit v5 (TV2)", offsetsReq(pid, epoch, 5)}, [8]int16{OK, OK, CONC, CONC, OK, OK, IPIM, CONC}},
		{request{"TxnOffsetCommit stale epoch v5", offsetsReq(pid, epoch-1, 5)}, [8]int16{IPE, IPE, IPE, IPE, IPE, IPE, IPIM, IPE}},
		{request{"TxnOffsetCommit other pid v3", offsetsReq(pid+1, epoch, 3)}, [8]int16{IPIM, IPIM, IPIM, IPIM, IPIM, IPIM, IPIM, IPIM}},

		{request{"Produce added partition v10", produceReq(pid, epoch, tp0, 10)}, [8]int16{ITS, OK, NER, NER, ITS, ITS, IPIM, NER}},
		{request{"Produce other partition v10", produceReq(pid, epoch, tp1, 10)}, [8]int16{ITS, ITS, NER, NER, ITS, ITS, IPIM, NER}},
		{request{"Produce other partition v11", produceReq(pid, epoch, tp1, 11)}, [8]int16{TA, TA, NER, NER, TA, TA, IPIM, NER}},
		{request{"Produce other partition v12 (TV2)", produceReq(pid, epoch, tp1, 12)}, [8]int16{OK, OK, NER, NER, OK, OK, IPIM, NER}},
		{request{"Produce stale epoch v11", produceReq(pid, epoch-1, tp0, 11)}, [8]int16{IPE, IPE, IPE, IPE, IPE, IPE, IPIM, IPE}},
		{request{"Produce stale epoch v12", produceReq(pid, epoch-1, tp0, 12)}, [8]int16{IPE, IPE, IPE, IPE, IPE, IPE, IPIM, IPE}},

		{request{"EndTxn commit v4", endReq(epoch, true, 4)}, [8]int16{ITS, OK, CONC, ITS, OK, ITS, IPIM, CONC}},
		{request{"EndTxn abort v4", endReq(epoch, false, 4)}, [8]int16{ITS, OK, ITS, CONC, ITS, OK, IPIM, CONC}},
		{request{"EndTxn commit stale epoch v1", endReq(epoch-1, true, 1)}, [8]int16{IPE, IPE, IPE, IPE, IPE, IPE, IPIM, IPE}},
		{request{"EndTxn commit stale epoch v4", endReq(epoch-1, true, 4)}, [8]int16{PF, PF, PF, PF, PF, PF, IPIM, PF}},
		{request{"EndTxn commit v5 current", endReq(epoch, true, 5)}, [8]int16{ITS, OK, PF, PF, ITS, ITS, IPIM, CONC}},
		{request{"EndTxn abort v5 current", endReq(epoch, false, 5)}, [8]int16{OK, OK, PF, PF, OK, OK, IPIM, CONC}},
		{request{"EndTxn commit v5 retry", endReq(epoch-1, true, 5)}, [8]int16{PF, PF, CONC, ITS, OK, ITS, IPIM, PF}},
		{request{"EndTxn abort v5 retry", endReq(epoch-1, false, 5)}, [8]int16{PF, PF, ITS, CONC, ITS, OK, IPIM, PF}},
		{request{"EndTxn commit v5 older", endReq(epoch-2, true, 5)}, [8]int16{PF, PF, PF, PF, PF, PF, IPIM, PF}},

		{request{"Complete", func(t *Txn) Result { return Complete(t, now) }}, [8]int16{ITS, ITS, OK, OK, ITS, ITS, IPIM, ITS}},
		{request{"Timeout", func(t *Txn) Result { return Timeout(cfg, t, now+1_000_000) }}, [8]int16{OK, OK, OK, OK, OK, OK, OK, OK}},
	}
	for _, c := range cases {
		for _, s := range States() {
			cur := fixture(s)
			before := cur.Clone()
			r := c.do(cur)
			if r.Err != c.want[s] {
				t.Errorf("%s in %v: %s, want %s", c.name, s, ErrorName(r.Err), ErrorName(c.want[s]))
			}
			if !reflect.DeepEqual(cur, before) {
				t.Errorf("%s in %v modified its input", c.name, s)
			}
			checkResult(t, c.name, cur, r)
		}
	}
}

// checkResult asserts what holds for every Result: a new state is a legal
// transition, an error comes without one unless it is the fence-and-abort of
// InitProducerId, and the invariants of the state hold.
func checkResult(t *testing.T, name string, cur *Txn, r Result) {
	t.Helper()
	if r.Err == kerr.UnknownServerError.Code {
		t.Errorf("%s: the transition gate fired", name)
	}
	if r.Txn == nil {
		if r.Action != NoAction {
			t.Errorf("%s: action %v without a new state", name, r.Action)
		}
		return
	}
	from := Empty // a Dead or unknown id is replaced by a fresh one
	if known(cur) {
		from = cur.State
	}
	if !CanTransition(from, r.Txn.State) {
		t.Errorf("%s: illegal transition %v → %v", name, from, r.Txn.State)
	}
	if r.Err != ErrNone && !(r.Err == CONC && r.Txn.State == PrepareAbort && r.Action == Discard) {
		t.Errorf("%s: error %s with new state %v", name, ErrorName(r.Err), r.Txn.State)
	}
	n := r.Txn
	switch n.State {
	case Empty, CompleteCommit, CompleteAbort, Dead:
		if len(n.Partitions) != 0 || len(n.PendingOffsets) != 0 {
			t.Errorf("%s: %v still holds partitions or offsets", name, n.State)
		}
	}
	if n.State != Dead && n.Epoch < 0 {
		t.Errorf("%s: negative epoch %d", name, n.Epoch)
	}
	wantAction := NoAction
	if r.Txn.State != from {
		switch r.Txn.State {
		case PrepareCommit:
			wantAction = Forward
		case PrepareAbort:
			wantAction = Discard
		}
	}
	if r.Action != wantAction {
		t.Errorf("%s: action %v for %v → %v, want %v", name, r.Action, from, n.State, wantAction)
	}
	if n.Epoch == math.MaxInt16 && n.State == Ongoing {
		t.Errorf("%s: ongoing at MaxInt16", name)
	}
}

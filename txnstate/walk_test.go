package txnstate

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestRandomWalk drives one transactional id with random requests from a
// current producer, its predecessors and strangers, at random versions,
// applying each new state as the caller would, and checks every Result:
// only legal transitions, no gate firing, invariants kept.
func TestRandomWalk(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for run := 0; run < 200; run++ {
		var cur *Txn
		newPID := pids()
		c := Config{MaxTimeoutMs: 1000, TxnVersion: int8(1 + run%2)}
		clock := int64(0)
		for step := 0; step < 300; step++ {
			clock += rng.Int64N(300)
			p, e := NoProducerID, NoEpoch
			if cur != nil {
				p, e = cur.ProducerID, cur.Epoch
				switch rng.IntN(6) {
				case 0:
					e--
				case 1:
					p = cur.LastProducerID
				case 2:
					if rng.IntN(20) == 0 {
						e = math.MaxInt16 - 1
					}
				}
			}
			tp := TopicPartition{"t", rng.Int32N(3)}
			var r Result
			var name string
			switch rng.IntN(10) {
			case 0:
				name = "init"
				rp, re := NoProducerID, NoEpoch
				if cur != nil && rng.IntN(2) == 0 {
					rp, re = p, e
				}
				r = InitProducerID(c, cur, InitProducerIDRequest{TransactionalID: "tx", TimeoutMs: 500, ProducerID: rp, Epoch: re, Version: int16(rng.IntN(6))}, clock, newPID)
			case 1:
				name = "add"
				r = AddPartitions(cur, AddPartitionsRequest{ProducerID: p, Epoch: e, Partitions: []TopicPartition{tp}, Version: int16(rng.IntN(4))}, clock)
			case 2:
				name = "offsets"
				r = AddOffsets(cur, AddOffsetsRequest{ProducerID: p, Epoch: e, Group: "g", Version: int16(rng.IntN(4))}, clock)
			case 3:
				name = "txnoffsetcommit"
				r = TxnOffsetCommit(cur, TxnOffsetCommitRequest{ProducerID: p, Epoch: e, Group: "g", Offsets: map[TopicPartition]Offset{tp: {Offset: 1}}, Version: int16(rng.IntN(6))}, clock)
			case 4:
				name = "produce"
				r = AdmitBatch(cur, ProduceRequest{ProducerID: p, Epoch: e, Partition: tp, Version: int16(3 + rng.IntN(11))}, clock)
			case 5, 6:
				name = "endtxn"
				r = EndTxn(cur, EndTxnRequest{ProducerID: p, Epoch: e, Commit: rng.IntN(2) == 0, Version: int16(rng.IntN(6))}, clock, newPID)
			case 7, 8:
				name = "complete"
				r = Complete(cur, clock)
			case 9:
				name = "timeout"
				r = Timeout(c, cur, clock)
			}
			before := cur.Clone()
			checkResult(t, name, cur, r)
			if cur != nil && !equalTxn(cur, before) {
				t.Fatalf("%s modified its input", name)
			}
			if r.Txn != nil {
				if cur != nil && known(cur) && r.Txn.ProducerID == cur.ProducerID && r.Txn.Epoch < cur.Epoch {
					t.Fatalf("%s: epoch went back from %d to %d", name, cur.Epoch, r.Txn.Epoch)
				}
				cur = r.Txn
			}
			if t.Failed() {
				t.Fatalf("run %d step %d", run, step)
			}
		}
	}
}

func equalTxn(a, b *Txn) bool {
	if a.State != b.State || a.Epoch != b.Epoch || a.ProducerID != b.ProducerID || len(a.Partitions) != len(b.Partitions) || len(a.PendingOffsets) != len(b.PendingOffsets) {
		return false
	}
	for g, o := range a.PendingOffsets {
		if len(o.Offsets) != len(b.PendingOffsets[g].Offsets) {
			return false
		}
	}
	return true
}

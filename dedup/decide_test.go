package dedup

import (
	"math"
	"reflect"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
)

// w is a remembered batch of epoch 0 from first to last at offset off.
func w(first, last int32, off int64) Written {
	return Written{Epoch: 0, FirstSeq: first, LastSeq: last, BaseOffset: off}
}

// we is w for another epoch.
func we(epoch int16, first, last int32, off int64) Written {
	return Written{Epoch: epoch, FirstSeq: first, LastSeq: last, BaseOffset: off}
}

func write() Decision            { return Decision{Verdict: Write} }
func dup(off int64) Decision     { return Decision{Verdict: Duplicate, BaseOffset: off} }
func reject(code int16) Decision { return Decision{Verdict: Reject, Err: code} }
func bi(epoch int16, first, count int32) BatchInfo {
	return BatchInfo{Epoch: epoch, FirstSeq: first, Count: count}
}

// fiveBatches is a producer at epoch 2 that wrote seqs 0..24 in five batches
// of five, at offsets 100, 110, ..., 140.
func fiveBatches() *State {
	return &State{Epoch: 2, LowWater: 145, Batches: []Written{
		we(2, 0, 4, 100), we(2, 5, 9, 110), we(2, 10, 14, 120), we(2, 15, 19, 130), we(2, 20, 24, 140),
	}}
}

// fiveAfterEviction is a producer at epoch 0 that wrote seqs 0..34 in seven
// batches of five: the first two (0..4 at 0, 5..9 at 5) are no longer
// remembered.
func fiveAfterEviction() *State {
	return &State{Epoch: 0, LowWater: 35, Batches: []Written{
		w(10, 14, 10), w(15, 19, 15), w(20, 24, 20), w(25, 29, 25), w(30, 34, 30),
	}}
}

func TestDecide(t *testing.T) {
	const maxSeq = math.MaxInt32
	cases := []struct {
		name string
		st   *State
		b    BatchInfo
		want Decision
	}{
		// Unknown producer: Kafka accepts it at any sequence and epoch.
		{"unknown producer at seq 0", nil, bi(0, 0, 1), write()},
		{"unknown producer at arbitrary seq", nil, bi(0, 12345, 7), write()},
		{"unknown producer at MaxInt32", nil, bi(0, maxSeq, 1), write()},
		{"unknown producer at arbitrary epoch and seq", nil, bi(9, 77, 3), write()},
		{"unknown producer with a batch spanning the wrap", nil, bi(0, maxSeq-1, 5), write()},

		// A state that only has a low-water mark (first batch settled but
		// not yet written, or written with a failure) accepts any sequence
		// of its epoch.
		{"no batches: seq 0", &State{Epoch: 1, LowWater: 50}, bi(1, 0, 1), write()},
		{"no batches: arbitrary seq", &State{Epoch: 1, LowWater: 50}, bi(1, 4242, 10), write()},
		{"no batches: MaxInt32", &State{Epoch: 1, LowWater: 50}, bi(1, maxSeq, 1), write()},
		{"no batches: older epoch fenced", &State{Epoch: 1, LowWater: 50}, bi(0, 0, 1), reject(kerr.InvalidProducerEpoch.Code)},
		{"no batches: newer epoch at 0", &State{Epoch: 1, LowWater: 50}, bi(2, 0, 1), write()},
		{"no batches: newer epoch not at 0", &State{Epoch: 1, LowWater: 50}, bi(2, 3, 1), reject(kerr.OutOfOrderSequenceNumber.Code)},

		// In sequence, gaps and older sequences.
		{"next in sequence", fiveBatches(), bi(2, 25, 5), write()},
		{"next in sequence, single record", fiveBatches(), bi(2, 25, 1), write()},
		{"next in sequence, different batch size", fiveBatches(), bi(2, 25, 100), write()},
		{"gap of one", fiveBatches(), bi(2, 26, 1), reject(kerr.OutOfOrderSequenceNumber.Code)},
		{"large gap", fiveBatches(), bi(2, 1000, 1), reject(kerr.OutOfOrderSequenceNumber.Code)},
		{"older seq inside the last batch", fiveBatches(), bi(2, 22, 3), reject(kerr.OutOfOrderSequenceNumber.Code)},
		{"same first seq as last batch, other count", fiveBatches(), bi(2, 20, 3), reject(kerr.OutOfOrderSequenceNumber.Code)},
		{"same last seq as last batch, other first", fiveBatches(), bi(2, 21, 4), reject(kerr.OutOfOrderSequenceNumber.Code)},
		{"restart at 0 within the same epoch", fiveBatches(), bi(2, 0, 1), reject(kerr.OutOfOrderSequenceNumber.Code)},
		{"negative seq", fiveBatches(), bi(2, -1, 1), reject(kerr.OutOfOrderSequenceNumber.Code)},

		// Duplicates of each of the last five batches: answered with the
		// original base offset.
		{"duplicate of 1st remembered batch", fiveBatches(), bi(2, 0, 5), dup(100)},
		{"duplicate of 2nd remembered batch", fiveBatches(), bi(2, 5, 5), dup(110)},
		{"duplicate of 3rd remembered batch", fiveBatches(), bi(2, 10, 5), dup(120)},
		{"duplicate of 4th remembered batch", fiveBatches(), bi(2, 15, 5), dup(130)},
		{"duplicate of 5th (last) remembered batch", fiveBatches(), bi(2, 20, 5), dup(140)},
		{"duplicate with the first offset 0", &State{Batches: []Written{w(0, 0, 0)}}, bi(0, 0, 1), dup(0)},

		// Older than the last five: no longer known, so out of order.
		{"retry of the batch just evicted", fiveAfterEviction(), bi(0, 5, 5), reject(kerr.OutOfOrderSequenceNumber.Code)},
		{"retry of the oldest batch", fiveAfterEviction(), bi(0, 0, 5), reject(kerr.OutOfOrderSequenceNumber.Code)},
		{"retry of the oldest still remembered", fiveAfterEviction(), bi(0, 10, 5), dup(10)},

		// Duplicate whose offset is unknown: DUPLICATE_SEQUENCE_NUMBER.
		{"duplicate with unknown offset", &State{Batches: []Written{w(0, 4, 0), w(5, 9, -1)}}, bi(0, 5, 5), reject(kerr.DuplicateSequenceNumber.Code)},
		{"duplicate of the known one next to an unknown", &State{Batches: []Written{w(0, 4, 7), w(5, 9, -1)}}, bi(0, 0, 5), dup(7)},
		{"next after a batch with unknown offset", &State{Batches: []Written{w(0, 4, 0), w(5, 9, -1)}}, bi(0, 10, 1), write()},

		// Epochs.
		{"stale epoch, next seq", fiveBatches(), bi(1, 25, 1), reject(kerr.InvalidProducerEpoch.Code)},
		{"stale epoch even if it matches a remembered batch", fiveBatches(), bi(1, 20, 5), reject(kerr.InvalidProducerEpoch.Code)},
		{"stale epoch at 0", fiveBatches(), bi(0, 0, 1), reject(kerr.InvalidProducerEpoch.Code)},
		{"stale epoch, negative", fiveBatches(), bi(-1, 25, 1), reject(kerr.InvalidProducerEpoch.Code)},
		{"new epoch at 0", fiveBatches(), bi(3, 0, 5), write()},
		{"much newer epoch at 0", fiveBatches(), bi(math.MaxInt16, 0, 1), write()},
		{"new epoch at the next seq of the old epoch", fiveBatches(), bi(3, 25, 1), reject(kerr.OutOfOrderSequenceNumber.Code)},
		{"new epoch at a non-zero seq", fiveBatches(), bi(3, 1, 1), reject(kerr.OutOfOrderSequenceNumber.Code)},
		{"new epoch, same seqs as a remembered batch but not at 0", fiveBatches(), bi(3, 5, 5), reject(kerr.OutOfOrderSequenceNumber.Code)},
		{"new epoch, same seqs as remembered batch at 0: written, not a duplicate", fiveBatches(), bi(3, 0, 5), write()},

		// Wraparound at math.MaxInt32.
		{"wrap: after MaxInt32 comes 0", &State{Batches: []Written{w(maxSeq-4, maxSeq, 10)}}, bi(0, 0, 5), write()},
		{"wrap: after MaxInt32, 1 is a gap", &State{Batches: []Written{w(maxSeq-4, maxSeq, 10)}}, bi(0, 1, 5), reject(kerr.OutOfOrderSequenceNumber.Code)},
		{"wrap: after MaxInt32, MaxInt32 is old", &State{Batches: []Written{w(maxSeq-4, maxSeq, 10)}}, bi(0, maxSeq, 1), reject(kerr.OutOfOrderSequenceNumber.Code)},
		{"wrap: duplicate of the batch ending at MaxInt32", &State{Batches: []Written{w(maxSeq-4, maxSeq, 10)}}, bi(0, maxSeq-4, 5), dup(10)},
		{"wrap: single record at MaxInt32 then 0", &State{Batches: []Written{w(maxSeq, maxSeq, 10)}}, bi(0, 0, 1), write()},
		{"wrap: batch spanning the wrap is next", &State{Batches: []Written{w(maxSeq-6, maxSeq-2, 10)}}, bi(0, maxSeq-1, 5), write()},
		{"wrap: after a spanning batch, next is 3", &State{Batches: []Written{w(maxSeq-1, 2, 10)}}, bi(0, 3, 1), write()},
		{"wrap: after a spanning batch, 0 is old", &State{Batches: []Written{w(maxSeq-1, 2, 10)}}, bi(0, 0, 1), reject(kerr.OutOfOrderSequenceNumber.Code)},
		{"wrap: duplicate of a spanning batch", &State{Batches: []Written{w(maxSeq-6, maxSeq-2, 5), w(maxSeq-1, 2, 10)}}, bi(0, maxSeq-1, 5), dup(10)},
		{"wrap: spanning batch with other count is not its duplicate", &State{Batches: []Written{w(maxSeq-1, 2, 10)}}, bi(0, maxSeq-1, 4), reject(kerr.OutOfOrderSequenceNumber.Code)},
		{"wrap: remembered batches on both sides, duplicate of the one before", &State{Batches: []Written{w(maxSeq-9, maxSeq-5, 1), w(maxSeq-4, maxSeq, 6), w(0, 4, 11)}}, bi(0, maxSeq-4, 5), dup(6)},
		{"wrap: remembered batches on both sides, next", &State{Batches: []Written{w(maxSeq-9, maxSeq-5, 1), w(maxSeq-4, maxSeq, 6), w(0, 4, 11)}}, bi(0, 5, 5), write()},

		// Unverified does not change the pure decision (Table settles it).
		{"unverified: duplicate still answered", &State{Unverified: true, Batches: []Written{w(0, 4, 3)}}, bi(0, 0, 5), dup(3)},
		{"unverified: next is a write", &State{Unverified: true, Batches: []Written{w(0, 4, 3)}}, bi(0, 5, 5), write()},
	}
	seen := map[string]bool{}
	for _, c := range cases {
		if seen[c.name] {
			t.Fatalf("duplicate case name %q", c.name)
		}
		seen[c.name] = true
		t.Run(c.name, func(t *testing.T) {
			var before *State
			if c.st != nil {
				cp := *c.st
				cp.Batches = append([]Written(nil), c.st.Batches...)
				before = &cp
			}
			got := Decide(c.st, c.b)
			if got != c.want {
				t.Errorf("Decide(%+v, %+v) = %+v, want %+v", c.st, c.b, got, c.want)
			}
			if !reflect.DeepEqual(c.st, before) {
				t.Errorf("Decide modified its state: %+v, was %+v", c.st, before)
			}
		})
	}
}

func TestLastSeq(t *testing.T) {
	const maxSeq = math.MaxInt32
	cases := []struct {
		first, count, want int32
	}{
		{0, 1, 0},
		{0, 5, 4},
		{10, 1, 10},
		{10, 10, 19},
		{maxSeq, 1, maxSeq},
		{maxSeq - 4, 5, maxSeq},
		{maxSeq - 3, 5, 0},
		{maxSeq - 1, 5, 2}, // spans the wrap: MaxInt32-1, MaxInt32, 0, 1, 2
		{maxSeq, 2, 0},
		{maxSeq, 5, 3},
		{maxSeq - 1, 2, maxSeq},
		{1, maxSeq, maxSeq},
		{2, maxSeq, 0},
		{0, maxSeq, maxSeq - 1},
		{maxSeq, maxSeq, maxSeq - 2},
	}
	for _, c := range cases {
		if got := bi(0, c.first, c.count).LastSeq(); got != c.want {
			t.Errorf("BatchInfo{FirstSeq: %d, Count: %d}.LastSeq() = %d, want %d", c.first, c.count, got, c.want)
		}
	}
}

func TestApply(t *testing.T) {
	t.Run("first batch on an empty state", func(t *testing.T) {
		got := Apply(State{LowWater: 40, Unverified: true}, bi(0, 7, 3), 42, 1000)
		want := State{Epoch: 0, LowWater: 45, LastUpdateMs: 1000, Batches: []Written{w(7, 9, 42)}}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("got %+v, want %+v", got, want)
		}
	})
	t.Run("appends oldest first, LowWater is base+count", func(t *testing.T) {
		st := State{}
		st = Apply(st, bi(0, 0, 5), 100, 1)
		st = Apply(st, bi(0, 5, 2), 105, 2)
		want := State{LowWater: 107, LastUpdateMs: 2, Batches: []Written{w(0, 4, 100), w(5, 6, 105)}}
		if !reflect.DeepEqual(st, want) {
			t.Fatalf("got %+v, want %+v", st, want)
		}
	})
	t.Run("keeps only the last five", func(t *testing.T) {
		st := State{}
		for i := int32(0); i < 8; i++ {
			st = Apply(st, bi(0, i*10, 10), int64(i)*10, int64(i))
			if n := len(st.Batches); n != min(int(i)+1, 5) {
				t.Fatalf("after %d batches: %d remembered", i+1, n)
			}
		}
		want := []Written{w(30, 39, 30), w(40, 49, 40), w(50, 59, 50), w(60, 69, 60), w(70, 79, 70)}
		if !reflect.DeepEqual(st.Batches, want) {
			t.Fatalf("batches %+v, want %+v", st.Batches, want)
		}
		if st.LowWater != 80 {
			t.Fatalf("LowWater %d, want 80", st.LowWater)
		}
		// The evicted batch is out of order now; the oldest kept is a duplicate.
		if d := Decide(&st, bi(0, 20, 10)); d != reject(kerr.OutOfOrderSequenceNumber.Code) {
			t.Fatalf("retry of evicted batch: %+v", d)
		}
		if d := Decide(&st, bi(0, 30, 10)); d != dup(30) {
			t.Fatalf("retry of oldest remembered batch: %+v", d)
		}
	})
	t.Run("does not write through the input's slice", func(t *testing.T) {
		orig := *fiveBatches()
		orig.Batches = append(make([]Written, 0, 10), orig.Batches...) // spare capacity
		keep := append([]Written(nil), orig.Batches...)
		a := Apply(orig, bi(2, 25, 5), 150, 9)
		b := Apply(orig, bi(2, 25, 1), 150, 9)
		if !reflect.DeepEqual(orig.Batches, keep) {
			t.Fatalf("input batches changed to %+v", orig.Batches)
		}
		if a.Batches[4].LastSeq != 29 || b.Batches[4].LastSeq != 25 {
			t.Fatalf("results alias each other: %+v / %+v", a.Batches, b.Batches)
		}
	})
	t.Run("epoch bump clears the old epoch's batches", func(t *testing.T) {
		st := Apply(*fiveBatches(), bi(3, 0, 2), 200, 5)
		want := State{Epoch: 3, LowWater: 202, LastUpdateMs: 5, Batches: []Written{we(3, 0, 1, 200)}}
		if !reflect.DeepEqual(st, want) {
			t.Fatalf("got %+v, want %+v", st, want)
		}
		// A retry of the old epoch is now fenced, not a duplicate.
		if d := Decide(&st, bi(2, 20, 5)); d != reject(kerr.InvalidProducerEpoch.Code) {
			t.Fatalf("old epoch retry: %+v", d)
		}
		if d := Decide(&st, bi(3, 0, 2)); d != dup(200) {
			t.Fatalf("new epoch retry: %+v", d)
		}
	})
	t.Run("unverified is cleared", func(t *testing.T) {
		st := *fiveBatches()
		st.Unverified = true
		if got := Apply(st, bi(2, 25, 1), 145, 1); got.Unverified {
			t.Fatal("Apply left the state unverified")
		}
	})
	t.Run("unknown offset keeps LowWater and answers a retry with 46", func(t *testing.T) {
		st := Apply(State{LowWater: 10}, bi(0, 0, 5), -1, 1)
		if st.LowWater != 10 || st.Batches[0].BaseOffset != -1 {
			t.Fatalf("got %+v", st)
		}
		if d := Decide(&st, bi(0, 0, 5)); d != reject(kerr.DuplicateSequenceNumber.Code) {
			t.Fatalf("retry: %+v", d)
		}
	})
	t.Run("wraparound", func(t *testing.T) {
		st := Apply(State{}, bi(0, math.MaxInt32-1, 5), 0, 1)
		if got := st.Batches[0]; got != w(math.MaxInt32-1, 2, 0) {
			t.Fatalf("spanning batch recorded as %+v", got)
		}
		if d := Decide(&st, bi(0, 3, 1)); d != write() {
			t.Fatalf("after spanning batch: %+v", d)
		}
	})
}

// TestDecideApplySequence drives one producer through Decide and Apply as
// the Table does, across the sequence wrap and an epoch bump.
func TestDecideApplySequence(t *testing.T) {
	var st *State
	var off int64
	step := func(b BatchInfo, want Decision) {
		t.Helper()
		d := Decide(st, b)
		if want.Verdict == Write {
			want.BaseOffset = 0
		}
		if d != want {
			t.Fatalf("batch %+v: got %+v, want %+v (state %+v)", b, d, want, st)
		}
		if d.Verdict == Write {
			var base State
			if st != nil {
				base = *st
			}
			ns := Apply(base, b, off, 0)
			st = &ns
			off += int64(b.Count)
		}
	}
	seq := int32(math.MaxInt32 - 12)
	step(bi(0, seq, 5), write()) // unknown producer, any seq
	for i := 0; i < 6; i++ {
		seq = addSeq(seq, 5)
		step(bi(0, seq, 5), write())
	}
	// seq is now the first of the last batch written; it wrapped on the way.
	if seq > 100 {
		t.Fatalf("sequence did not wrap: %d", seq)
	}
	step(bi(0, seq, 5), dup(off-5))
	step(bi(0, addSeq(seq, 5), 5), write())
	step(bi(0, addSeq(seq, 5), 5), dup(off-5))
	step(bi(0, addSeq(seq, 11), 5), reject(kerr.OutOfOrderSequenceNumber.Code))
	step(bi(1, 0, 5), write())
	step(bi(0, addSeq(seq, 10), 5), reject(kerr.InvalidProducerEpoch.Code))
	step(bi(1, 5, 1), write())
	step(bi(1, 0, 5), dup(off-6))
}

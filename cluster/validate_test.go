package cluster

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Builders of entries for the table: nonces 1 (A) and 2 (B).
func cl(n uint64) entry { return entry{kind: kindClaim, claim: &claimInfo{Nonce: n}, nonce: n} }
func st(n, seq uint64, data string) entry {
	return entry{kind: kindSet, nonce: n, seq: seq, data: []byte(data)}
}
func ch(n, seq uint64, idx uint32, more bool, data string) entry {
	return entry{kind: kindSet, nonce: n, seq: seq, idx: idx, more: more, data: []byte(data)}
}
func ck(n, seq uint64, data string) entry {
	return entry{kind: kindCheckpoint, nonce: n, seq: seq, data: []byte(data), claim: &claimInfo{Nonce: n}}
}
func rel(n uint64) entry { return entry{kind: kindRelease, nonce: n} }

// want: the outcome, and for outSet the data ("" for others); "!" prefix
// marks a torn drop; "dup" an outNone duplicate.
type want struct {
	out  outcome
	data string
	torn bool
	dup  bool
}

func TestValidator(t *testing.T) {
	set := func(d string) want { return want{out: outSet, data: d} }
	none, dup, void, claim := want{out: outNone}, want{out: outNone, dup: true}, want{out: outVoid}, want{out: outClaim}
	for _, tc := range []struct {
		name  string
		in    []entry
		start int64         // offset of the first entry
		gapAt map[int]int64 // entry index -> offset jump before it
		want  []want
	}{
		{name: "in order", in: []entry{cl(1), st(1, 0, "a"), st(1, 1, "b")},
			want: []want{claim, set("a"), set("b")}},
		{name: "zombie write after a newer claim is void", in: []entry{cl(1), st(1, 0, "a"), cl(2), st(1, 1, "z"), st(2, 0, "b")},
			want: []want{claim, set("a"), claim, void, set("b")}},
		{name: "an older claim written late wins by order", in: []entry{cl(2), cl(1), st(2, 0, "z"), st(1, 0, "a")},
			want: []want{claim, claim, void, set("a")}},
		{name: "duplicate set", in: []entry{cl(1), st(1, 0, "a"), st(1, 0, "a"), st(1, 1, "b")},
			want: []want{claim, set("a"), dup, set("b")}},
		{name: "chunks", in: []entry{cl(1), ch(1, 0, 0, true, "x"), ch(1, 0, 1, true, "y"), ch(1, 0, 2, false, "z")},
			want: []want{claim, none, none, set("xyz")}},
		{name: "duplicate chunk", in: []entry{cl(1), ch(1, 0, 0, true, "x"), ch(1, 0, 0, true, "x"), ch(1, 0, 1, false, "y")},
			want: []want{claim, none, dup, set("xy")}},
		{name: "retried batch spanning two sets", in: []entry{cl(1), ch(1, 0, 0, true, "x"), ch(1, 0, 1, false, "y"),
			ch(1, 1, 0, true, "p"), ch(1, 0, 1, false, "y"), ch(1, 1, 0, true, "p"), ch(1, 1, 1, false, "q")},
			want: []want{claim, none, set("xy"), none, dup, dup, set("pq")}},
		{name: "torn set dropped at the next claim", in: []entry{cl(1), ch(1, 0, 0, true, "x"), cl(2), st(2, 0, "b")},
			want: []want{claim, none, {out: outClaim, torn: true}, set("b")}},
		{name: "torn set voids the rest of its claim", in: []entry{cl(1), ch(1, 0, 0, true, "x"), st(1, 1, "b"), st(1, 2, "c")},
			want: []want{claim, none, {out: outVoid, torn: true}, void}},
		{name: "missing chunk", in: []entry{cl(1), ch(1, 0, 0, true, "x"), ch(1, 0, 2, false, "z"), st(1, 1, "b")},
			want: []want{claim, none, {out: outVoid, torn: true}, void}},
		{name: "missing first chunk", in: []entry{cl(1), ch(1, 0, 1, false, "y"), st(1, 1, "b")},
			want: []want{claim, void, void}},
		{name: "gap in sequence", in: []entry{cl(1), st(1, 0, "a"), st(1, 2, "c"), st(1, 3, "d")},
			want: []want{claim, set("a"), void, void}},
		{name: "a new claim restarts the chain", in: []entry{cl(1), st(1, 1, "x"), cl(1 + 2), st(3, 0, "a")},
			want: []want{claim, void, claim, set("a")}},
		{name: "release", in: []entry{cl(1), st(1, 0, "a"), rel(1), st(1, 1, "b"), rel(1)},
			want: []want{claim, set("a"), {out: outRelease}, void, void}},
		{name: "release of another claim", in: []entry{cl(1), rel(2), st(1, 0, "a")},
			want: []want{claim, void, set("a")}},
		{name: "set before any claim", in: []entry{st(1, 0, "a"), cl(1), st(1, 0, "a")},
			want: []want{void, claim, set("a")}},
		{name: "log trimmed to a checkpoint", start: 10, in: []entry{ck(1, 5, "img"), st(1, 6, "a")},
			want: []want{{out: outSet, data: "img"}, set("a")}},
		{name: "checkpoint not at the start of a fresh reader needs its claim", in: []entry{cl(2), ck(1, 0, "img"), st(1, 1, "a")},
			want: []want{claim, void, void}},
		{name: "trimmed under the reader", in: []entry{cl(1), st(1, 0, "a"), st(1, 1, "b"), ck(1, 3, "img"), st(1, 4, "c")},
			gapAt: map[int]int64{2: 3}, // st(1,1) is gone; the log now starts at the checkpoint
			want:  []want{claim, set("a"), void, {out: outSet, data: "img"}, set("c")}},
		{name: "offset jump without a checkpoint", in: []entry{cl(1), st(1, 0, "a"), st(1, 1, "b")},
			gapAt: map[int]int64{2: 4},
			want:  []want{claim, set("a"), void}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := newValidator()
			off := tc.start
			for i, e := range tc.in {
				off += tc.gapAt[i]
				e.offset = off
				off++
				got := v.feed(e)
				w := tc.want[i]
				if got.out != w.out || string(got.data()) != w.data || got.torn != w.torn || got.dup != w.dup {
					t.Fatalf("entry %d (%+v): got out=%d data=%q torn=%v dup=%v, want %+v", i, e, got.out, got.data(), got.torn, got.dup, w)
				}
				if w.out == outSet && got.checkpoint != (e.kind == kindCheckpoint) {
					t.Fatalf("entry %d: checkpoint=%v", i, got.checkpoint)
				}
			}
		})
	}
}

// Records as written decode to what was written, chunked.
func TestRecordsRoundTrip(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), (3*chunkSize)/16+7)
	c := claimInfo{Instance: "i", Advertise: "h:1", Generation: 4, Nonce: 99}
	recs := setRecords("t", kindCheckpoint, c, 0, big)
	if len(recs) != 4 {
		t.Fatalf("%d chunks, want 4", len(recs))
	}
	v := newValidator()
	v.feed(entry{offset: 0, kind: kindClaim, claim: &c})
	var got result
	for i, r := range append([]*kgo.Record{recs[0]}, recs...) { // the first chunk twice
		r.Offset = int64(i + 1)
		e := decode(r)
		if e.kind != kindCheckpoint || e.nonce != 99 || e.seq != 0 || (i <= 1) != (e.claim != nil) {
			t.Fatalf("record %d decoded as %+v", i, e)
		}
		got = v.feed(e)
	}
	if got.out != outSet || !got.checkpoint || !bytes.Equal(got.data(), big) {
		t.Fatalf("got %d checkpoint=%v %d bytes", got.out, got.checkpoint, len(got.data()))
	}
	e := decode(claimRecord("t", c))
	if e.kind != kindClaim || *e.claim != c {
		t.Fatalf("claim decoded as %+v", e)
	}
	if e := decode(releaseRecord("t", 5)); e.kind != kindRelease || e.nonce != 5 {
		t.Fatalf("release decoded as %+v", e)
	}
	if e := decode(&kgo.Record{Value: []byte("junk")}); e.kind != 0 {
		t.Fatalf("junk decoded as %+v", e)
	}
}

// The balancer keeps ownership where it is: the member that owns (of two,
// the later claim), else a ready one, else the first.
func TestOwnerBalancer(t *testing.T) {
	b := &ownerBalancer{m: &Member{ownerTopic: "o"}}
	meta := func(f byte, at int64) []byte {
		m := kmsg.NewConsumerMemberMetadata()
		m.Version = 3
		m.Topics = []string{"o"}
		m.UserData = binary.BigEndian.AppendUint64([]byte{f}, uint64(at))
		return m.AppendTo(nil)
	}
	type mem struct {
		id string
		f  byte
		at int64
	}
	for _, tc := range []struct {
		name    string
		members []mem
		want    string
	}{
		{"owner kept", []mem{{"a", flagReady, -1}, {"b", flagOwner, 5}, {"c", flagReady, -1}}, "b"},
		{"the later claim of two owners", []mem{{"a", flagOwner | flagReady, 3}, {"b", flagOwner | flagReady, 10}}, "b"},
		{"owner before ready", []mem{{"a", flagReady, -1}, {"b", flagOwner, 5}}, "b"},
		{"ready before dirty", []mem{{"a", 0, -1}, {"b", flagReady, -1}}, "b"},
		{"ties by member id", []mem{{"c", flagReady, -1}, {"a", flagReady, -1}, {"b", flagReady, -1}}, "a"},
		{"old members without user data", []mem{{"b", 0, 0}, {"a", 0, 0}}, "a"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ms []kmsg.JoinGroupResponseMember
			for _, m := range tc.members {
				md := meta(m.f, m.at)
				if m.at == 0 {
					old := kmsg.ConsumerMemberMetadata{Topics: []string{"o"}}
					md = old.AppendTo(nil)
				}
				ms = append(ms, kmsg.JoinGroupResponseMember{MemberID: m.id, ProtocolMetadata: md})
			}
			gb, _, err := b.MemberBalancer(ms)
			if err != nil {
				t.Fatal(err)
			}
			plan, err := gb.(*kgo.ConsumerBalancer).BalanceOrError(map[string]int32{"o": 1})
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, a := range plan.IntoSyncAssignment() {
				var ca kmsg.ConsumerMemberAssignment
				if err := ca.ReadFrom(a.MemberAssignment); err != nil {
					t.Fatal(err)
				}
				if len(ca.Topics) > 0 {
					got = append(got, a.MemberID)
				}
			}
			if len(got) != 1 || got[0] != tc.want {
				t.Fatalf("assigned to %v, want %s", got, tc.want)
			}
		})
	}
}

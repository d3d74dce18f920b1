package cluster

// The decision of which log records count, apart from any I/O, so that
// every reader (standbys, a replay, the owner confirming its own writes)
// decides the same way and the rules can be table-tested.
//
// Fencing is by log order, not by group generations (a group that empties
// and expires starts its generations again): a set is valid iff the latest
// claim before it in the log has the set's nonce. Within one claim, sets are
// valid only as a contiguous prefix of sequence numbers 0, 1, 2...: the
// writer never moves on past a set it failed to write (it gives up
// ownership), so a gap or a torn set (chunks flagged "more" and no final
// chunk) means everything after it from that claim is void, since later
// sets were computed on a state that includes the missing one.
// Producer retries without idempotence may repeat records; a chunk already
// seen is skipped, so each set is reported once.

type kind byte

const (
	kindClaim      kind = 'c'
	kindSet        kind = 's'
	kindCheckpoint kind = 'k' // a full image of the state; a set otherwise
	kindRelease    kind = 'r' // the owner gave up its claim (clean stop)
)

// claimInfo is a claim record's value.
type claimInfo struct {
	Instance   string `json:"instance"`
	Advertise  string `json:"advertise"`
	Generation int32  `json:"generation"`
	Nonce      uint64 `json:"nonce"`
	TimeMs     int64  `json:"time_ms"`
}

// entry is one decoded log record.
type entry struct {
	offset int64
	kind   kind
	claim  *claimInfo // kindClaim; kindCheckpoint's first chunk (the log may be trimmed to it)
	nonce  uint64     // all but kindClaim (whose nonce is claim.Nonce)
	seq    uint64     // sets: per-claim sequence number
	idx    uint32     // sets: chunk index
	more   bool       // sets: not the last chunk
	data   []byte
}

type outcome int

const (
	outNone    outcome = iota // a chunk kept for later, or a duplicate
	outClaim                  // a claim took effect
	outRelease                // the current claim was released
	outSet                    // a complete valid set (or checkpoint)
	outVoid                   // a record of no valid claim, or out of sequence
)

type result struct {
	out        outcome
	nonce      uint64
	seq        uint64
	parts      [][]byte // outSet: the set, chunk by chunk (see data)
	checkpoint bool     // outSet: the set is a checkpoint
	torn       bool     // this record dropped an unfinished set
	dup        bool     // outNone: the record repeats one already seen
}

// data returns an outSet's set in one piece. The chunks are joined only
// here, once, at their total size: an owner reading back its own sets
// only needs to know they are valid, and growing one buffer chunk by chunk
// copied every transactional byte about twice more (a fifth of an owner's
// CPU under transactional load, measured).
func (r result) data() []byte {
	switch len(r.parts) {
	case 0:
		return []byte{}
	case 1:
		return r.parts[0]
	}
	n := 0
	for _, p := range r.parts {
		n += len(p)
	}
	b := make([]byte, 0, n)
	for _, p := range r.parts {
		b = append(b, p...)
	}
	return b
}

// validator holds a reader's position in the claim/set sequence.
type validator struct {
	last     int64 // offset of the last record fed, -1 before any
	has      bool  // a claim is in effect
	released bool  // ... and was released
	claim    claimInfo
	next     uint64 // sequence number of the next set of the claim
	broken   bool   // the claim's chain has a gap: the rest of it is void

	cur struct {
		active     bool
		seq        uint64
		next       uint32 // next chunk index
		checkpoint bool
		parts      [][]byte // the chunks so far, as read (not copied)
	}
}

func newValidator() *validator { return &validator{last: -1} }

func (v *validator) dropCur() bool {
	torn := v.cur.active
	v.cur.active, v.cur.parts = false, nil
	return torn
}

// feed decides what record e means, given everything fed before.
func (v *validator) feed(e entry) result {
	if v.last >= 0 && e.offset != v.last+1 {
		// Offsets of a non-transactional delete-policy log are
		// contiguous; a jump means the log was trimmed (to a checkpoint)
		// under the reader. Start afresh: nothing is valid until a claim
		// or a checkpoint's first chunk.
		*v = validator{}
	}
	v.last = e.offset
	switch e.kind {
	case kindClaim:
		if e.claim == nil {
			return result{out: outVoid}
		}
		torn := v.dropCur()
		v.has, v.released, v.claim, v.next, v.broken = true, false, *e.claim, 0, false
		return result{out: outClaim, nonce: e.claim.Nonce, torn: torn}
	case kindRelease:
		if !v.has || v.released || e.nonce != v.claim.Nonce {
			return result{out: outVoid, nonce: e.nonce}
		}
		v.released = true
		return result{out: outRelease, nonce: e.nonce, torn: v.dropCur()}
	case kindSet, kindCheckpoint:
	default:
		return result{out: outVoid, nonce: e.nonce}
	}
	void := result{out: outVoid, nonce: e.nonce, seq: e.seq}
	if !v.has && e.kind == kindCheckpoint && e.idx == 0 && e.claim != nil && e.claim.Nonce == e.nonce {
		// The log starts at a checkpoint (it was trimmed to it): the
		// checkpoint was confirmed valid before the trim, so its claim is
		// the claim in effect.
		v.has, v.released, v.claim, v.next, v.broken = true, false, *e.claim, e.seq, false
	}
	if !v.has || v.released || e.nonce != v.claim.Nonce || v.broken {
		return void
	}
	if v.cur.active {
		switch {
		case e.seq < v.cur.seq, e.seq == v.cur.seq && e.idx < v.cur.next:
			return result{out: outNone, nonce: e.nonce, seq: e.seq, dup: true}
		case e.seq > v.cur.seq, e.idx > v.cur.next:
			// A chunk or the end of a set is missing.
			v.broken = true
			void.torn = v.dropCur()
			return void
		}
		v.cur.parts = append(v.cur.parts, e.data)
		v.cur.next++
	} else {
		switch {
		case e.seq < v.next:
			return result{out: outNone, nonce: e.nonce, seq: e.seq, dup: true}
		case e.seq > v.next, e.idx != 0:
			v.broken = true
			return void
		}
		v.cur.active, v.cur.seq, v.cur.next, v.cur.checkpoint = true, e.seq, 1, e.kind == kindCheckpoint
		v.cur.parts = [][]byte{e.data}
	}
	if e.more {
		return result{out: outNone, nonce: e.nonce, seq: e.seq}
	}
	r := result{out: outSet, nonce: e.nonce, seq: e.seq, parts: v.cur.parts, checkpoint: v.cur.checkpoint}
	v.cur.active, v.cur.parts = false, nil
	v.next = e.seq + 1
	return r
}

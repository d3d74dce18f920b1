package cluster

import "github.com/twmb/franz-go/pkg/kgo"

// Audit is what a cluster's log shows of fencing, for checkers (eoscheck
// --instances): the records every reader treats as void because a later
// claim superseded their writer's claim (a deposed owner's late writes, the
// fence at work), apart from other void records.
type Audit struct {
	Records  int `json:"records"`
	Claims   int `json:"claims"`
	Releases int `json:"releases"`
	Sets     int `json:"sets"` // valid sets and checkpoints
	// Superseded are set records written under a claim that an earlier
	// record of the log had superseded; by the writer's instance.
	Superseded   int            `json:"superseded"`
	SupersededBy map[string]int `json:"superseded_by_instance,omitempty"`
	// OtherVoid are the other void records: of the claim in effect after
	// a gap or a torn set, after its release, late releases, unreadable.
	OtherVoid int `json:"other_void"`
}

// AuditLog replays recs, a cluster log's records in offset order from its
// start (or from a checkpoint it was trimmed to), as every reader does.
func AuditLog(recs []*kgo.Record) Audit {
	a := Audit{SupersededBy: map[string]int{}}
	v := newValidator()
	writer := map[uint64]string{} // claim nonce → instance
	for _, r := range recs {
		e := decode(r)
		a.Records++
		if e.claim != nil {
			writer[e.claim.Nonce] = e.claim.Instance
		}
		res := v.feed(e)
		switch res.out {
		case outClaim:
			a.Claims++
		case outRelease:
			a.Releases++
		case outSet:
			a.Sets++
		case outVoid:
			if (e.kind == kindSet || e.kind == kindCheckpoint) && v.has && e.nonce != v.claim.Nonce {
				a.Superseded++
				a.SupersededBy[writer[e.nonce]]++
			} else {
				a.OtherVoid++
			}
		}
	}
	return a
}

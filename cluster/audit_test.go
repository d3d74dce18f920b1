package cluster

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
)

// A deposed owner's late sets, written after its successor's claim, are
// counted superseded (by the writer's instance); a set after its own
// claim's release is void for another reason.
func TestAuditLog(t *testing.T) {
	a := claimInfo{Instance: "a", Generation: 1, Nonce: 1}
	b := claimInfo{Instance: "b", Generation: 2, Nonce: 2}
	var recs []*kgo.Record
	add := func(rs ...*kgo.Record) {
		for _, r := range rs {
			r.Offset = int64(len(recs))
			recs = append(recs, r)
		}
	}
	add(claimRecord("l", a))
	add(setRecords("l", kindSet, a, 0, []byte("x"))...)
	add(claimRecord("l", b))
	add(setRecords("l", kindSet, a, 1, []byte("late"))...) // the zombie's
	add(setRecords("l", kindSet, b, 0, []byte("y"))...)
	add(releaseRecord("l", b.Nonce))
	add(setRecords("l", kindSet, b, 1, []byte("after release"))...)
	got := AuditLog(recs)
	if got.Records != 7 || got.Claims != 2 || got.Sets != 2 || got.Releases != 1 || got.Superseded != 1 ||
		got.SupersededBy["a"] != 1 || got.OtherVoid != 1 {
		t.Fatalf("%+v", got)
	}
}

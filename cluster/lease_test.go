package cluster

import (
	"errors"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// The lease is renewed only by a group that accepts the member. A group
// that answers every heartbeat UNKNOWN_MEMBER_ID (a zombie's first
// heartbeat after a pause, as the next owner serves) has not: the lease
// lapses and stays lapsed, although the answers arrive and the member
// rejoins and claims again. Taking any answer as a renewal let a resumed
// owner's forwarding write a commit its successor had written already.
func TestLeaseNotRenewedByRefusedHeartbeats(t *testing.T) {
	c := newBackend(t)
	if c.fake == nil {
		t.Skip("needs kfake's control of the group's answers")
	}
	a := join(t, c, "a", time.Second, nil)
	if owner := firstOwner(t, 10*time.Second, a); owner != a {
		t.Fatal("a does not own")
	}
	if err := a.WriteAllowed(); err != nil {
		t.Fatalf("the owner's lease: %v", err)
	}
	c.fake.ControlKey(int16(kmsg.Heartbeat), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.fake.KeepControl()
		resp := req.(*kmsg.HeartbeatRequest).ResponseKind().(*kmsg.HeartbeatResponse)
		resp.ErrorCode = kerr.UnknownMemberID.Code
		return resp, nil, true
	})
	lapsed := time.Now()
	eventually(t, 5*time.Second, "the lease lapses", func() bool { return errors.Is(a.WriteAllowed(), ErrNotOwner) })
	t.Logf("lapsed %v after the group stopped accepting heartbeats", time.Since(lapsed).Round(time.Millisecond))
	// Meanwhile the group client saw the errors, rejoined and a claimed
	// again; several heartbeat intervals later it is still refused.
	until := time.Now().Add(a.cfg.SessionTimeout)
	for time.Now().Before(until) {
		if err := a.WriteAllowed(); !errors.Is(err, ErrNotOwner) {
			t.Fatalf("the lease came back while the group refused every heartbeat: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

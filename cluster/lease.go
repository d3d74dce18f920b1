// The owner's lease: how long after the group last accepted this member
// it may still write to user topics (upstream.Fence).

package cluster

import (
	"context"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// leaseShare is the part of the session timeout that an owner writes to
// user topics for after the group last accepted it (WriteAllowed): the
// rest is margin for the backend's clock running faster than this one.
const leaseShare = 0.8

// WriteAllowed is the owner's lease (upstream.Fence): nil while the group
// cannot have expired this member, because it accepted a heartbeat this
// member sent less than leaseShare of the session timeout ago; the group
// counts the session from when it received it, later. An owner paused
// past the session timeout (SIGSTOP, a stalled VM) has been replaced when
// it runs again, and is refused here until it hears from the group, by
// which time it knows it was deposed, whereas its goroutines, resuming in
// any order, could otherwise write to a user topic what the next owner
// already wrote.
func (m *Member) WriteAllowed() error {
	silent := time.Since(m.base) - time.Duration(m.inGroup.Load())
	if lease := time.Duration(leaseShare * float64(m.cfg.SessionTimeout)); silent > lease {
		return fmt.Errorf("%w: the backend's group has not accepted this instance for %v (lease %v of the %v session): another instance may own the cluster", ErrNotOwner, silent.Round(time.Millisecond), lease, m.cfg.SessionTimeout)
	}
	return nil
}

// leaseLoop renews the lease with heartbeats of its own, every interval,
// as the member and generation the group client holds. Only an answer
// that shows the group still counts the member renews it: none or
// REBALANCE_IN_PROGRESS (a rebalance refreshes the session of a member
// that heartbeats). The group client's own heartbeats cannot serve: their
// answers are seen only as having arrived, and a paused owner's first
// heartbeat after it resumes is answered at once, with UNKNOWN_MEMBER_ID
// or FENCED_INSTANCE_ID, a few milliseconds before the group client acts
// on it; taken as a renewal, that answer let the resumed owner's
// forwarding write a commit's batches that its successor had written
// already (eoscheck --instance-stops, kfake without idempotence).
func (m *Member) leaseLoop(every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-t.C:
		}
		m.renew()
	}
}

// renew sends a heartbeat of its own, as the member and generation the
// group client holds, and renews the lease if the group accepts it.
func (m *Member) renew() {
	memberID, gen := m.grp.GroupMetadata()
	if memberID == "" || gen < 0 {
		return // not in the group (yet): nothing to renew
	}
	req := kmsg.NewPtrHeartbeatRequest()
	req.Group, req.Generation, req.MemberID = m.name, gen, memberID
	req.InstanceID = kmsg.StringPtr(staticID(m.cfg.Instance))
	sent := time.Since(m.base)
	ctx, cancel := context.WithTimeout(m.ctx, m.cfg.SessionTimeout)
	resp, err := req.RequestWith(ctx, m.grp)
	cancel()
	if err != nil {
		return
	}
	switch resp.ErrorCode {
	case 0, kerr.RebalanceInProgress.Code:
		raise(&m.inGroup, int64(sent))
	}
}

package proxy

import (
	"cmp"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/eosproxy/eosproxy/protocol"
)

// groupMembers is what eosproxy knows of each consumer group from the group
// traffic that passes through it: classic groups' generations and members
// (JoinGroup, SyncGroup and Heartbeat answers, LeaveGroup), KIP-848 groups'
// member epochs (ConsumerGroupHeartbeat answers). A backend's answer is the
// group's state when it was given, and the client sees it only after
// eosproxy has, so this knowledge trails the backend's and never leads the
// client's: a TxnOffsetCommit naming a generation or epoch below what
// eosproxy has seen is one Kafka refuses too (KIP-447 zombie fencing), and
// the generation and members known are the ones to commit a decided
// transaction's offsets as.
type groupMembers struct {
	mu     sync.Mutex
	groups map[string]*groupView
	// bypassGrace is how long eosproxy must have known a group before a
	// member it never saw counts as connecting around it: members that
	// joined before eosproxy started show up within a heartbeat interval.
	bypassGrace time.Duration
	auditEvery  time.Duration // 0: groupAuditEvery
	pruned      time.Time     // last pruneLocked
}

// groupView is one group as seen through eosproxy.
type groupView struct {
	consumer   bool                  // a KIP-848 group: members have their own epochs
	generation int32                 // classic: the newest generation seen; -1 none
	members    map[string]viewMember // classic: members of generation; KIP-848: current members
	complete   bool                  // classic: members is the whole generation (the leader's JoinGroup answer)
	gone       map[string]time.Time  // members seen leave or be fenced, when
	seen       map[string]time.Time  // members that passed through eosproxy, when last
	trust      time.Duration         // classic: from the latest JoinGroup's session timeout
	since      time.Time             // when eosproxy first saw the group
	audited    time.Time             // last comparison with the backend's members
	warned     bool                  // the bypass warning was logged
}

type viewMember struct {
	instance string
	epoch    int32 // KIP-848 member epoch (classic: the generation)
	// The backend last answered the member as current at confirmed; the
	// member is trusted current without asking the backend until
	// confirmed+trust, well within its session timeout: a member paused
	// past it may have been removed without eosproxy seeing it.
	confirmed time.Time
	trust     time.Duration
}

// fresh reports whether the member was confirmed current recently enough
// to be trusted without asking the backend.
func (m viewMember) fresh(now time.Time) bool {
	return !m.confirmed.IsZero() && now.Sub(m.confirmed) < m.trust
}

// groupMember is an identity to commit offsets as.
type groupMember struct {
	generation int32
	member     string
	instance   string
}

// defaultBypassGrace exceeds both protocols' default heartbeat intervals
// (3 s classic, 5 s KIP-848) several times over.
const defaultBypassGrace = 30 * time.Second

// Trust in a member's last confirmation: half its classic session timeout
// (Kafka's default 45 s when unknown), one KIP-848 heartbeat interval. The
// broker's KIP-848 session timeout is not told to clients, and Kafka only
// requires the heartbeat interval to be below it: with three intervals (15 s)
// a member stalled past a 6 s session was still taken as current and its
// zombie TxnOffsetCommit accepted (soak-real, seed 14063948920803057647).
const (
	defaultClassicTrust = 45 * time.Second / 2
	kip848TrustBeats    = 1
)

// forgetAfter is how long members not heard of stay remembered as seen or
// gone: longer than Kafka's largest default session timeout (30 min for
// classic groups), so a member still in the group keeps being heard of.
const forgetAfter = 35 * time.Minute

func (g *groupMembers) view(group string) *groupView {
	if g.groups == nil {
		g.groups = map[string]*groupView{}
	}
	if time.Since(g.pruned) > time.Minute {
		g.pruneLocked(time.Now())
	}
	v := g.groups[group]
	if v == nil {
		v = &groupView{generation: -1, members: map[string]viewMember{}, gone: map[string]time.Time{},
			seen: map[string]time.Time{}, since: time.Now()}
		g.groups[group] = v
	}
	return v
}

// pruneLocked forgets members not heard of for forgetAfter, and groups
// with nothing left: consumers that restart get new member ids, which would
// otherwise pile up.
func (g *groupMembers) pruneLocked(now time.Time) {
	g.pruned = now
	for name, v := range g.groups {
		maps.DeleteFunc(v.seen, func(_ string, at time.Time) bool { return now.Sub(at) > forgetAfter })
		maps.DeleteFunc(v.gone, func(_ string, at time.Time) bool { return now.Sub(at) > forgetAfter })
		maps.DeleteFunc(v.members, func(id string, _ viewMember) bool {
			_, heard := v.seen[id]
			return !heard
		})
		if len(v.seen) == 0 && len(v.members) == 0 && len(v.gone) == 0 && now.Sub(v.since) > forgetAfter {
			delete(g.groups, name)
		}
	}
}

func (v *groupView) sawMember(member string) {
	if member != "" {
		v.seen[member] = time.Now()
	}
}

// current records that the backend answered member, with instance, as in
// generation of a classic group (or, in a KIP-848 group, with that epoch);
// trust > 0 when the answer confirms it current now.
func (v *groupView) current(generation int32, member, instance string, trust time.Duration) {
	if member == "" || generation < 0 {
		return
	}
	delete(v.gone, member)
	if !v.consumer && generation != v.generation {
		// The backend's answer is its current generation, also when it is
		// lower than one seen before (the group was deleted and re-created).
		v.generation, v.complete = generation, false
		clear(v.members)
	}
	if instance != "" {
		// A static member that rejoins takes its instance over under a
		// new member id, in the same generation (KIP-345): the old id is
		// fenced.
		maps.DeleteFunc(v.members, func(id string, m viewMember) bool { return m.instance == instance && id != member })
	}
	m := v.members[member]
	if m.epoch != generation {
		m.confirmed = time.Time{}
	}
	m.instance, m.epoch = instance, generation
	if trust > 0 {
		m.confirmed, m.trust = time.Now(), trust
	}
	v.members[member] = m
}

type joinRequest struct {
	group    string
	instance string
	trust    time.Duration // half the member's session timeout
}

// parseJoin reads the group of a JoinGroup request; nil when it cannot.
func parseJoin(hdr protocol.RequestHeader, frame []byte) *joinRequest {
	if hdr.BodyOffset < 0 || hdr.APIVersion > protocol.MaxKnownVersion(hdr.APIKey) {
		return nil
	}
	req := kmsg.NewPtrJoinGroupRequest()
	req.SetVersion(hdr.APIVersion)
	if err := req.ReadFrom(frame[hdr.BodyOffset:]); err != nil {
		return nil // the backend judges it
	}
	j := &joinRequest{group: req.Group, trust: defaultClassicTrust}
	if req.SessionTimeoutMillis > 0 {
		j.trust = time.Duration(req.SessionTimeoutMillis) * time.Millisecond / 2
	}
	if req.InstanceID != nil {
		j.instance = *req.InstanceID
	}
	return j
}

func (g *groupMembers) noteJoin(j *joinRequest, version int16, body []byte) {
	resp := kmsg.NewPtrJoinGroupResponse()
	resp.SetVersion(version)
	if j == nil || resp.ReadFrom(body) != nil || resp.MemberID == "" {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	v := g.view(j.group)
	v.sawMember(resp.MemberID)
	if resp.ErrorCode != 0 || resp.Generation < 0 {
		return // MEMBER_ID_REQUIRED names the member; no generation yet
	}
	v.trust = j.trust
	v.current(resp.Generation, resp.MemberID, j.instance, j.trust)
	if len(resp.Members) > 0 {
		// The leader's answer lists the whole generation.
		for _, m := range resp.Members {
			inst := ""
			if m.InstanceID != nil {
				inst = *m.InstanceID
			}
			if _, known := v.members[m.MemberID]; !known {
				v.members[m.MemberID] = viewMember{instance: inst, epoch: resp.Generation}
			}
		}
		v.complete = !v.consumer
	}
}

// groupObservation parses a group request whose answer eosproxy notes
// (Heartbeat, SyncGroup, LeaveGroup, ConsumerGroupHeartbeat); it returns the
// function that notes the answer, nil when the request cannot be read (the
// backend judges it).
func (g *groupMembers) groupObservation(hdr protocol.RequestHeader, frame []byte) func(version int16, body []byte) {
	if hdr.BodyOffset < 0 || hdr.APIVersion > protocol.MaxKnownVersion(hdr.APIKey) {
		return nil
	}
	req := kmsg.RequestForKey(hdr.APIKey)
	if req == nil {
		return nil
	}
	req.SetVersion(hdr.APIVersion)
	if req.ReadFrom(frame[hdr.BodyOffset:]) != nil {
		return nil
	}
	inst := func(p *string) string {
		if p == nil {
			return ""
		}
		return *p
	}
	switch r := req.(type) {
	case *kmsg.HeartbeatRequest:
		return func(version int16, body []byte) {
			resp := kmsg.NewPtrHeartbeatResponse()
			resp.SetVersion(version)
			if resp.ReadFrom(body) != nil {
				return
			}
			g.classicAnswer(r.Group, r.Generation, r.MemberID, inst(r.InstanceID), resp.ErrorCode)
		}
	case *kmsg.SyncGroupRequest:
		return func(version int16, body []byte) {
			resp := kmsg.NewPtrSyncGroupResponse()
			resp.SetVersion(version)
			if resp.ReadFrom(body) != nil {
				return
			}
			g.classicAnswer(r.Group, r.Generation, r.MemberID, inst(r.InstanceID), resp.ErrorCode)
		}
	case *kmsg.LeaveGroupRequest:
		return func(version int16, body []byte) {
			resp := kmsg.NewPtrLeaveGroupResponse()
			resp.SetVersion(version)
			if resp.ReadFrom(body) != nil || resp.ErrorCode != 0 {
				return
			}
			left := []string{r.MemberID}
			for _, m := range resp.Members {
				if m.ErrorCode == 0 {
					left = append(left, m.MemberID)
				}
			}
			g.mu.Lock()
			defer g.mu.Unlock()
			v := g.view(r.Group)
			for _, m := range left {
				if m != "" {
					v.sawMember(m)
					delete(v.members, m)
					v.gone[m] = time.Now()
				}
			}
		}
	case *kmsg.ConsumerGroupHeartbeatRequest:
		return func(version int16, body []byte) {
			resp := kmsg.NewPtrConsumerGroupHeartbeatResponse()
			resp.SetVersion(version)
			if resp.ReadFrom(body) != nil {
				return
			}
			member := r.MemberID
			if resp.MemberID != nil && *resp.MemberID != "" {
				member = *resp.MemberID
			}
			if member == "" {
				return
			}
			g.mu.Lock()
			defer g.mu.Unlock()
			v := g.view(r.Group)
			v.consumer, v.complete = true, false
			v.sawMember(member)
			switch {
			case resp.ErrorCode == 0 && r.MemberEpoch < 0:
				// A leave (-1; -2 for a static member): its commits are
				// refused from now on.
				delete(v.members, member)
				v.gone[member] = time.Now()
			case resp.ErrorCode == 0:
				trust := defaultClassicTrust
				if resp.HeartbeatIntervalMillis > 0 {
					trust = kip848TrustBeats * time.Duration(resp.HeartbeatIntervalMillis) * time.Millisecond
				}
				v.current(resp.MemberEpoch, member, inst(r.InstanceID), trust)
			case resp.ErrorCode == kerr.FencedMemberEpoch.Code || resp.ErrorCode == kerr.UnknownMemberID.Code:
				// The member's epoch at the backend is not the one
				// asked with: unknown here until the backend says.
				delete(v.members, member)
			}
		}
	}
	return nil
}

// classicAnswer notes a Heartbeat or SyncGroup answer: NONE (and, for a
// Heartbeat, REBALANCE_IN_PROGRESS) means member is in generation now.
func (g *groupMembers) classicAnswer(group string, generation int32, member, instance string, code int16) {
	if member == "" {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	v := g.view(group)
	v.sawMember(member)
	switch code {
	case 0, kerr.RebalanceInProgress.Code:
		trust := v.trust
		if trust == 0 {
			trust = defaultClassicTrust
		}
		v.current(generation, member, instance, trust)
	case kerr.UnknownMemberID.Code, kerr.FencedInstanceID.Code:
		delete(v.members, member)
	}
}

// noteAccepted records a TxnOffsetCommit's member once the commit was
// accepted. It does not count as the member passing through eosproxy: the
// producer names it, and the consumer's own group traffic (its OffsetFetch
// above all) may still go around eosproxy.
func (g *groupMembers) noteAccepted(group string, generation int32, member, instance string) {
	if member == "" {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	v := g.view(group)
	if v.consumer || generation >= v.generation {
		// Not a confirmation: the commit was judged from what eosproxy
		// knew, or from a backend description without generations.
		v.current(generation, member, instance, 0)
	}
}

// judge decides a TxnOffsetCommit's member as Kafka's group coordinator
// would (ClassicGroup and ConsumerGroup validateOffsetCommit; a KIP-848
// STALE_MEMBER_EPOCH is answered ILLEGAL_GENERATION on TxnOffsetCommit),
// from what passed through eosproxy; known is false when that is not
// enough and the backend must be asked.
func (g *groupMembers) judge(group, member, instance string, generation int32) (code int16, known bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	v := g.groups[group]
	if v == nil {
		return 0, false
	}
	now := time.Now()
	m, in := v.members[member]
	if _, gone := v.gone[member]; gone && !in {
		return kerr.UnknownMemberID.Code, true
	}
	if v.consumer {
		switch {
		case !in || generation > m.epoch:
			return 0, false
		case generation < m.epoch:
			return kerr.IllegalGeneration.Code, true
		}
		return 0, m.fresh(now)
	}
	if v.generation < 0 || generation > v.generation || generation < 0 {
		// Behind the backend, or an admin-style commit whose fate hangs on
		// whether the group is empty.
		return 0, false
	}
	if instance != "" && v.complete {
		owner := ""
		for id, vm := range v.members {
			if vm.instance == instance {
				owner = id
			}
		}
		switch {
		case owner == "":
			return kerr.UnknownMemberID.Code, true
		case owner != member:
			return kerr.FencedInstanceID.Code, true
		}
	}
	switch {
	case !in && v.complete:
		return kerr.UnknownMemberID.Code, true
	case generation < v.generation:
		return kerr.IllegalGeneration.Code, true
	case !in:
		return 0, false
	}
	return 0, m.fresh(now)
}

// candidates lists the members eosproxy knows to be current in group, to
// commit a decided transaction's offsets as: the newest generation's
// members of a classic group, the members with their epochs of a KIP-848
// group; most recently seen first.
func (g *groupMembers) candidates(group string) []groupMember {
	g.mu.Lock()
	defer g.mu.Unlock()
	v := g.groups[group]
	if v == nil {
		return nil
	}
	var out []groupMember
	for id, m := range v.members {
		out = append(out, groupMember{generation: m.epoch, member: id, instance: m.instance})
	}
	slices.SortFunc(out, func(a, b groupMember) int {
		if c := cmp.Compare(b.generation, a.generation); c != 0 {
			return c
		}
		if c := v.seen[b.member].Compare(v.seen[a.member]); c != 0 {
			return c
		}
		return cmp.Compare(a.member, b.member)
	})
	return out
}

// learn replaces a KIP-848 group's members with the backend's description.
// A description shows a member in the group, not that it is alive: its
// session may end right after (a copier paused since before eosproxy
// started), so it confirms nothing for later commits. Only the member's
// own heartbeat answers do; their confirmation is kept while the epoch is
// the same.
func (g *groupMembers) learn(group string, d describedGroup) {
	g.mu.Lock()
	defer g.mu.Unlock()
	v := g.view(group)
	if !d.consumer {
		return // no generation in DescribeGroups: nothing to replace
	}
	v.consumer, v.complete = true, false
	before := v.members
	v.members = make(map[string]viewMember, len(d.members))
	for _, m := range d.members {
		vm := viewMember{instance: m.instance, epoch: m.generation}
		if old, ok := before[m.member]; ok && old.epoch >= m.generation {
			// The heartbeat answer eosproxy passed on may be newer than
			// the description.
			vm = old
		}
		v.members[m.member] = vm
		delete(v.gone, m.member)
	}
}

// bypassing lists the members of the backend's description of group that
// never passed through eosproxy although eosproxy has known the group for
// bypassGrace; warn is true the first time for the group (the caller logs
// it once).
func (g *groupMembers) bypassing(group string, d describedGroup) (unseen []string, warn bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	v := g.view(group)
	v.audited = time.Now()
	grace := g.bypassGrace
	if grace == 0 {
		grace = defaultBypassGrace
	}
	if grace > 0 && time.Since(v.since) < grace {
		return nil, false
	}
	for _, m := range d.members {
		if _, ok := v.seen[m.member]; !ok {
			unseen = append(unseen, m.member)
		}
	}
	slices.Sort(unseen)
	if len(unseen) > 0 && !v.warned {
		v.warned, warn = true, true
	}
	return unseen, warn
}

// auditDue reports whether group's members were last compared with the
// backend's longer than every ago, and if so marks them compared now.
func (g *groupMembers) auditDue(group string, every time.Duration) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	v := g.view(group)
	if v.warned || time.Since(v.audited) < every {
		return false
	}
	v.audited = time.Now()
	return true
}

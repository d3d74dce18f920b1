package proxy

import (
	"cmp"
	"slices"
	"sync"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/eosproxy/eosproxy/protocol"
)

// groupMembers remembers, per consumer group, the members of its latest
// generations as their JoinGroup answers passed through eosproxy. A
// transaction's offsets were accepted at TxnOffsetCommit, when Kafka checks
// the member and generation; if the group has moved on by the time eosproxy
// commits them to the backend (a rebalance in between), they are committed
// as a member of the current generation, which Kafka's commit marker would
// have done regardless of the generation.
type groupMembers struct {
	mu     sync.Mutex
	groups map[string][]groupMember
}

type groupMember struct {
	generation int32
	member     string
	instance   string
}

// keptGenerations bounds what is remembered per group.
const keptGenerations = 3

type joinRequest struct {
	group    string
	instance string
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
	j := &joinRequest{group: req.Group}
	if req.InstanceID != nil {
		j.instance = *req.InstanceID
	}
	return j
}

func (g *groupMembers) noteJoin(j *joinRequest, version int16, body []byte) {
	resp := kmsg.NewPtrJoinGroupResponse()
	resp.SetVersion(version)
	if j == nil || resp.ReadFrom(body) != nil || resp.ErrorCode != 0 || resp.MemberID == "" {
		return
	}
	g.note(j.group, resp.Generation, resp.MemberID, j.instance)
}

// noteHeartbeat records the member a Heartbeat request names: members that
// joined before eosproxy (re)started are learnt within a heartbeat interval.
func (g *groupMembers) noteHeartbeat(hdr protocol.RequestHeader, frame []byte) {
	if hdr.BodyOffset < 0 || hdr.APIVersion > protocol.MaxKnownVersion(hdr.APIKey) {
		return
	}
	req := kmsg.NewPtrHeartbeatRequest()
	req.SetVersion(hdr.APIVersion)
	if req.ReadFrom(frame[hdr.BodyOffset:]) != nil || req.MemberID == "" || req.Generation < 0 {
		return
	}
	instance := ""
	if req.InstanceID != nil {
		instance = *req.InstanceID
	}
	g.note(req.Group, req.Generation, req.MemberID, instance)
}

// note records that member was in group at generation.
func (g *groupMembers) note(group string, generation int32, member, instance string) {
	if member == "" || generation < 0 {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.groups == nil {
		g.groups = map[string][]groupMember{}
	}
	ms := slices.DeleteFunc(g.groups[group], func(m groupMember) bool { return m.member == member })
	ms = append(ms, groupMember{generation: generation, member: member, instance: instance})
	slices.SortStableFunc(ms, func(a, b groupMember) int { return cmp.Compare(b.generation, a.generation) })
	if len(ms) > 0 {
		newest := int64(ms[0].generation)
		ms = slices.DeleteFunc(ms, func(m groupMember) bool { return int64(m.generation) < newest-keptGenerations })
	}
	g.groups[group] = ms
}

// candidates lists the known members of group, newest generation first.
func (g *groupMembers) candidates(group string) []groupMember {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.groups[group])
}

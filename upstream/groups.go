package upstream

import (
	"context"
	"fmt"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// GroupMember is one identity of a consumer group member.
type GroupMember struct {
	Generation int32 // the member epoch (KIP-848), or the generation; -1: none
	Member     string
	Instance   string
}

// DescribedGroup is the backend's description of a group.
type DescribedGroup struct {
	Exists   bool
	Consumer bool // a KIP-848 group (ConsumerGroupDescribe knows it)
	Empty    bool
	Members  []GroupMember // Generation: the member epoch (KIP-848), -1 (classic: not described)
}

// Groups is what the client traffic through eosproxy tells about consumer
// groups: CommitOffsets commits as a member it names current, and hands it
// what the backend said of a group.
type Groups interface {
	// Candidates lists identities of group that may be current, best first.
	Candidates(group string) []GroupMember
	// Learn takes in the backend's description of group.
	Learn(group string, d DescribedGroup)
	// NoteBypass returns (and logs, once) the members of group that never
	// connected through eosproxy.
	NoteBypass(group string, d DescribedGroup) []string
}

// noGroups knows no group: offsets are committed as their sender, else as
// the backend's members.
type noGroups struct{}

func (noGroups) Candidates(string) []GroupMember            { return nil }
func (noGroups) Learn(string, DescribedGroup)               {}
func (noGroups) NoteBypass(string, DescribedGroup) []string { return nil }

// DescribeGroup asks the backend about group: ConsumerGroupDescribe first
// (GROUP_ID_NOT_FOUND for a classic group), then DescribeGroups.
func (c *Client) DescribeGroup(ctx context.Context, group string) (DescribedGroup, error) {
	var d DescribedGroup
	creq := kmsg.NewPtrConsumerGroupDescribeRequest()
	creq.Groups = []string{group}
	cresp, err := creq.RequestWith(ctx, c.admin)
	switch {
	case err == nil && len(cresp.Groups) == 1 && cresp.Groups[0].ErrorCode == 0:
		cg := cresp.Groups[0]
		d.Exists, d.Consumer = true, true
		d.Empty = len(cg.Members) == 0
		for _, m := range cg.Members {
			gm := GroupMember{Generation: m.MemberEpoch, Member: m.MemberID}
			if m.InstanceID != nil {
				gm.Instance = *m.InstanceID
			}
			d.Members = append(d.Members, gm)
		}
		return d, nil
	case err == nil && len(cresp.Groups) == 1 && cresp.Groups[0].ErrorCode != kerr.GroupIDNotFound.Code:
		return d, fmt.Errorf("describe consumer group %q: %w", group, kerr.ErrorForCode(cresp.Groups[0].ErrorCode))
	}
	// A classic group, or a backend before KIP-848 (kgo refuses the key;
	// were the backend unreachable, DescribeGroups fails as well).
	dreq := kmsg.NewPtrDescribeGroupsRequest()
	dreq.Groups = []string{group}
	dresp, err := dreq.RequestWith(ctx, c.admin)
	if err != nil {
		return d, fmt.Errorf("describe group %q: %w", group, err)
	}
	if len(dresp.Groups) != 1 {
		return d, fmt.Errorf("describe group %q: %d groups answered", group, len(dresp.Groups))
	}
	dg := dresp.Groups[0]
	switch {
	case dg.ErrorCode == kerr.GroupIDNotFound.Code || (dg.ErrorCode == 0 && dg.State == "Dead"):
		return d, nil
	case dg.ErrorCode != 0:
		return d, fmt.Errorf("describe group %q: %w", group, kerr.ErrorForCode(dg.ErrorCode))
	}
	d.Exists, d.Empty = true, dg.State == "Empty" || len(dg.Members) == 0
	for _, m := range dg.Members {
		gm := GroupMember{Generation: -1, Member: m.MemberID}
		if m.InstanceID != nil {
			gm.Instance = *m.InstanceID
		}
		d.Members = append(d.Members, gm)
	}
	return d, nil
}

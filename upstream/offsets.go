package upstream

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/eosproxy/eosproxy/txnstate"
)

// CommitOffsets commits a decided transaction's held offsets to the
// backend's group coordinator. Kafka's commit marker writes them whatever the
// group did since TxnOffsetCommit; an OffsetCommit must name a current member,
// so they are committed as the member that sent them, else as a current
// member eosproxy knows (classic: the newest generation's, from the group
// traffic through it; KIP-848: a member with its current epoch, from
// ConsumerGroupHeartbeat answers or else the backend's ConsumerGroupDescribe),
// else with the admin identity (no member, generation -1), which Kafka
// accepts while the group is empty. A group with no identity that works yet
// (mid-rebalance, or members connecting around eosproxy) is retried: a
// decided commit's offsets are never dropped for the group's sake.
func (b *Client) CommitOffsets(ctx context.Context, group string, g txnstate.GroupOffsets) error {
	var topics []string
	for tp := range g.Offsets {
		if !slices.Contains(topics, tp.Topic) {
			topics = append(topics, tp.Topic)
		}
	}
	// OffsetCommit v10 names topics by id; kgo picks the version.
	meta, err := kadm.NewClient(b.admin).Metadata(ctx, topics...)
	if err != nil {
		return fmt.Errorf("metadata: %w", err)
	}
	tried := map[GroupMember]bool{}
	var last error
	// try commits as id; done when it worked, neither done nor an error
	// when id is not a current identity of the group.
	try := func(id GroupMember) (done bool, err error) {
		if tried[id] {
			return false, nil
		}
		tried[id] = true
		code, err := b.commitAs(ctx, group, g, id, meta)
		if err != nil {
			return false, err
		}
		switch code {
		case 0:
			if id.Member != g.MemberID || id.Generation != g.GenerationID {
				b.log.Info().Str("group", group).Int32("generation", id.Generation).Str("member", id.Member).
					Msg("group moved on since TxnOffsetCommit: committed the transaction's offsets as a current member")
			}
			return true, nil
		case kerr.IllegalGeneration.Code, kerr.UnknownMemberID.Code, kerr.FencedInstanceID.Code,
			kerr.StaleMemberEpoch.Code, kerr.GroupIDNotFound.Code, kerr.UnsupportedVersion.Code:
			// Not (or no longer) a current identity of the group; a
			// consumer-protocol member needs OffsetCommit v9+.
			last = kerr.ErrorForCode(code)
			return false, nil
		}
		err = kerr.ErrorForCode(code)
		switch code {
		case kerr.RebalanceInProgress.Code, kerr.GroupAuthorizationFailed.Code, kerr.TopicAuthorizationFailed.Code:
			// Passes (a rebalance), or eosproxy's own identity lacks an
			// ACL the client had: an operator can fix it, and the offsets
			// must not be dropped meanwhile.
			return false, err
		}
		if ke := (*kerr.Error)(nil); errors.As(err, &ke) && !ke.Retriable {
			return false, fmt.Errorf("%w: %v", txnstate.ErrPermanent, err)
		}
		return false, err // retried by the caller
	}
	// Each list is tried in turn; a few of each bound the requests.
	const perList = 4
	lists := [][]GroupMember{
		{{Generation: g.GenerationID, Member: g.MemberID, Instance: g.GroupInstanceID}},
		b.cfg.Groups.Candidates(group),
	}
	var described *DescribedGroup
	for li := 0; ; li++ {
		if li == len(lists) && described == nil {
			// What passed through eosproxy is not current: ask the backend
			// (a KIP-848 group's members come with their epochs).
			dctx, cancel := context.WithTimeout(ctx, b.cfg.DialTimeout)
			d, err := b.DescribeGroup(dctx, group)
			cancel()
			if err != nil {
				return fmt.Errorf("commit offsets of group %q: no known member is current, and the backend cannot be asked: %w", group, err)
			}
			described = &d
			b.cfg.Groups.Learn(group, d)
			if d.Consumer {
				lists = append(lists, d.Members)
			}
			lists = append(lists, []GroupMember{{Generation: -1}})
		}
		if li == len(lists) {
			break
		}
		for i, id := range lists[li] {
			if i == perList && li > 0 {
				break
			}
			if done, err := try(id); done || err != nil {
				return err
			}
		}
	}
	// Every identity refused: the group is mid-rebalance with members
	// eosproxy has not seen join yet, or its members connect around
	// eosproxy. Retried; the log says which.
	if unseen := b.cfg.Groups.NoteBypass(group, *described); len(unseen) > 0 {
		return fmt.Errorf("no current member of group %q accepted the commit (members %v never connected through eosproxy; every member of the group must): %w", group, unseen, last)
	}
	return fmt.Errorf("no current member of group %q accepted the commit: %w", group, last)
}

func (b *Client) commitAs(ctx context.Context, group string, g txnstate.GroupOffsets, id GroupMember, meta kadm.Metadata) (int16, error) {
	req := kmsg.NewPtrOffsetCommitRequest()
	req.Group, req.Generation, req.MemberID = group, id.Generation, id.Member
	if id.Instance != "" {
		req.InstanceID = &id.Instance
	}
	byTopic := map[string][]kmsg.OffsetCommitRequestTopicPartition{}
	for tp, o := range g.Offsets {
		rp := kmsg.NewOffsetCommitRequestTopicPartition()
		rp.Partition, rp.Offset, rp.LeaderEpoch = tp.Partition, o.Offset, o.LeaderEpoch
		md := o.Metadata
		rp.Metadata = &md
		byTopic[tp.Topic] = append(byTopic[tp.Topic], rp)
	}
	for topic, parts := range byTopic {
		rt := kmsg.NewOffsetCommitRequestTopic()
		rt.Topic, rt.TopicID, rt.Partitions = topic, meta.Topics[topic].ID, parts
		req.Topics = append(req.Topics, rt)
	}
	resp, err := req.RequestWith(ctx, b.admin)
	if err != nil {
		return 0, err
	}
	var code int16
	for _, t := range resp.Topics {
		for _, p := range t.Partitions {
			if p.ErrorCode != 0 {
				code = p.ErrorCode
			}
		}
	}
	return code, nil
}

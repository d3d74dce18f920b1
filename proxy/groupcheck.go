package proxy

import (
	"context"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
)

// A TxnOffsetCommit names the consumer group member that read the offsets
// (KIP-447). Kafka's group coordinator refuses it when that member is no
// longer the group's (validateTransactionalOffsetCommit): the copier was
// paused past its session timeout, its partitions went to another member
// with another transactional id, and the zombie must abort rather than
// commit what the new owner copies too. eosproxy holds the offsets itself,
// so it checks the member the same way, from the group traffic it has seen
// (groupMembers) and, where that is not enough, from the backend's
// description of the group.

// groupAuditEvery is how often a group's members are compared with the
// backend's to detect members that connect around eosproxy.
const groupAuditEvery = 30 * time.Second

// describedGroup is the backend's description of a group.
type describedGroup struct {
	exists   bool
	consumer bool // a KIP-848 group (ConsumerGroupDescribe knows it)
	empty    bool
	members  []groupMember // generation: the member epoch (KIP-848), -1 (classic: not described)
}

// checkTxnMember decides a TxnOffsetCommit's member, generation (member
// epoch in KIP-848 groups) and instance as Kafka does; 0 accepts. Answers
// are Kafka's: UNKNOWN_MEMBER_ID for a member not in the group,
// FENCED_INSTANCE_ID for a static instance now held by another member,
// ILLEGAL_GENERATION for an older generation or member epoch, or for a
// group that does not exist; COORDINATOR_NOT_AVAILABLE (retried) when the
// backend cannot be asked.
func (p *Proxy) checkTxnMember(ctx context.Context, group, member, instance string, generation int32) int16 {
	if generation < 0 && member == "" && instance == "" {
		// The member fields are optional on TxnOffsetCommit (before v3
		// they do not exist): only checked when given.
		return 0
	}
	if code, known := p.groups.judge(group, member, instance, generation); known {
		return code
	}
	ctx, cancel := context.WithTimeout(ctx, p.cfg.DialTimeout)
	defer cancel()
	for try := 1; ; try++ {
		d, err := p.describeGroup(ctx, group)
		if err != nil {
			p.log.Warn().Err(err).Str("group", group).Msg("cannot check a TxnOffsetCommit's member with the backend; the client retries")
			return kerr.CoordinatorNotAvailable.Code
		}
		p.groups.learn(group, d)
		p.noteBypass(group, d)
		if try < describeLagTries && d.behind(member, generation) {
			// The member's newest epoch, from a heartbeat answer, may not
			// be in the description yet.
			select {
			case <-ctx.Done():
				return kerr.CoordinatorNotAvailable.Code
			case <-time.After(describeLagWait):
			}
			continue
		}
		return judgeDescribed(d, member, instance, generation)
	}
}

// A description that has the member at an older epoch than its commit
// names is asked again a few times before the commit is refused.
const (
	describeLagTries = 5
	describeLagWait  = 100 * time.Millisecond
)

// behind reports whether the KIP-848 description has member at an epoch
// below generation.
func (d describedGroup) behind(member string, generation int32) bool {
	if !d.consumer {
		return false
	}
	for _, m := range d.members {
		if m.member == member {
			return m.generation < generation
		}
	}
	return false
}

// judgeDescribed is checkTxnMember's verdict from the backend's description.
// DescribeGroups does not give a classic group's generation: a member
// present in it is taken to be in the current generation.
func judgeDescribed(d describedGroup, member, instance string, generation int32) int16 {
	if !d.exists {
		if generation < 0 {
			return 0 // Kafka creates a simple group
		}
		return kerr.IllegalGeneration.Code
	}
	if generation < 0 && d.empty {
		return 0
	}
	if !d.consumer && instance != "" {
		owner := ""
		for _, m := range d.members {
			if m.instance == instance {
				owner = m.member
			}
		}
		switch {
		case owner == "":
			return kerr.UnknownMemberID.Code
		case owner != member:
			return kerr.FencedInstanceID.Code
		}
	}
	for _, m := range d.members {
		if m.member != member {
			continue
		}
		if d.consumer && m.generation != generation {
			return kerr.IllegalGeneration.Code // STALE_MEMBER_EPOCH, as TxnOffsetCommit answers it
		}
		if !d.consumer && generation < 0 {
			return kerr.IllegalGeneration.Code
		}
		return 0
	}
	return kerr.UnknownMemberID.Code
}

// noteBypass logs, once per group, members of the backend's group that
// never connected through eosproxy: such a group gets neither
// UNSTABLE_OFFSET_COMMIT nor the decided offsets on its members' offset
// fetches, and can copy records twice.
func (p *Proxy) noteBypass(group string, d describedGroup) []string {
	unseen, warn := p.groups.bypassing(group, d)
	if warn {
		p.log.Warn().Str("group", group).Strs("members", unseen).
			Msg("consumer group has members that do not connect through eosproxy: every member of a group whose offsets transactions commit must, or records can be copied twice and the transactions' offset commits can be refused")
	}
	return unseen
}

// auditGroup compares group's members with the backend's now and then, in
// the background, to detect members that connect around eosproxy.
func (p *Proxy) auditGroup(group string) {
	every := p.groups.auditEvery
	if every == 0 {
		every = groupAuditEvery
	}
	if !p.groups.auditDue(group, every) {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), p.cfg.DialTimeout)
		defer cancel()
		d, err := p.describeGroup(ctx, group)
		if err != nil {
			p.log.Debug().Err(err).Str("group", group).Msg("cannot compare the group's members with the backend's")
			return
		}
		p.noteBypass(group, d)
	}()
}

package proxy

// OffsetFetch v0–v9, passed on unless a transaction's offsets are involved.
//
// eosproxy holds transactions' group offsets itself (TxnOffsetCommit) and
// writes a commit's to the backend after deciding it. So while a group has
// offsets in an open transaction, a fetch with RequireStable that names them
// is answered by eosproxy with UNSTABLE_OFFSET_COMMIT, which clients retry,
// as Kafka answers it. While a group has decided offsets not yet written,
// the backend's answer gets them filled in, as Kafka's answer has them once
// the commit is decided. Otherwise the request and answer pass untouched.
// v10 names topics by id while held offsets are kept by topic name; eosproxy
// does not advertise it and closes the connection on it.

import (
	"fmt"
	"maps"
	"slices"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/eosproxy/eosproxy/protocol"
	"github.com/eosproxy/eosproxy/txnstate"
)

func handleOffsetFetch(c *conn, r *request) error {
	if err := passMapped(c, r); err != nil {
		return err
	}
	if !c.p.coord.AnyOffsetsPending() {
		return nil
	}
	if body := c.p.unstableOffsets(r.hdr, r.body()); body != nil {
		r.answer(body)
	} else if req := c.p.decidedOffsetsFor(r.hdr, r.body()); req != nil {
		r.slot.answer = decidedOffsets{req}
	}
	return nil
}

// decidedOffsets fills decided commits' offsets into the backend's answer.
type decidedOffsets struct{ req *kmsg.OffsetFetchRequest }

func (d decidedOffsets) respond(c *conn, s *slot, body []byte) ([]byte, error) {
	return c.p.patchOffsets(d.req, body)
}

// unstableOffsets answers an OffsetFetch with RequireStable that names
// offsets a transaction still holds with UNSTABLE_OFFSET_COMMIT, which
// clients retry, as Kafka does; nil lets the request pass.
func (p *Proxy) unstableOffsets(hdr protocol.RequestHeader, body []byte) []byte {
	r := kmsg.NewPtrOffsetFetchRequest()
	r.SetVersion(hdr.APIVersion)
	if err := r.ReadFrom(body); err != nil || !r.RequireStable {
		return nil // the backend judges what eosproxy cannot read
	}
	pending := func(group, topic string, parts []int32, all bool) bool {
		if all {
			return p.coord.OffsetsPending(group, nil)
		}
		for _, part := range parts {
			if p.coord.OffsetsPending(group, &txnstate.TopicPartition{Topic: topic, Partition: part}) {
				return true
			}
		}
		return false
	}
	resp := r.ResponseKind().(*kmsg.OffsetFetchResponse)
	requested := p.requestedOffsets
	unstable := false
	if r.Version < 8 {
		for _, t := range r.Topics {
			unstable = unstable || pending(r.Group, t.Topic, t.Partitions, false)
		}
		unstable = unstable || (r.Topics == nil && pending(r.Group, "", nil, true))
		if !unstable {
			return nil
		}
		for _, t := range requested(r.Group, r.Topics == nil, r.Topics) {
			rt := kmsg.NewOffsetFetchResponseTopic()
			rt.Topic = t.Topic
			for _, part := range t.Partitions {
				rp := kmsg.NewOffsetFetchResponseTopicPartition()
				rp.Partition, rp.Offset, rp.LeaderEpoch, rp.ErrorCode = part, -1, -1, kerr.UnstableOffsetCommit.Code
				rt.Partitions = append(rt.Partitions, rp)
			}
			resp.Topics = append(resp.Topics, rt)
		}
		return resp.AppendTo(nil)
	}
	for _, g := range r.Groups {
		for _, t := range g.Topics {
			unstable = unstable || pending(g.Group, t.Topic, t.Partitions, false)
		}
		unstable = unstable || (g.Topics == nil && pending(g.Group, "", nil, true))
	}
	if !unstable {
		return nil
	}
	for _, g := range r.Groups {
		rg := kmsg.NewOffsetFetchResponseGroup()
		rg.Group = g.Group
		var topics []kmsg.OffsetFetchRequestTopic
		for _, t := range g.Topics {
			topics = append(topics, kmsg.OffsetFetchRequestTopic{Topic: t.Topic, Partitions: t.Partitions})
		}
		for _, t := range requested(g.Group, g.Topics == nil, topics) {
			rt := kmsg.NewOffsetFetchResponseGroupTopic()
			rt.Topic = t.Topic
			for _, part := range t.Partitions {
				rp := kmsg.NewOffsetFetchResponseGroupTopicPartition()
				rp.Partition, rp.Offset, rp.LeaderEpoch, rp.ErrorCode = part, -1, -1, kerr.UnstableOffsetCommit.Code
				rt.Partitions = append(rt.Partitions, rp)
			}
			rg.Topics = append(rg.Topics, rt)
		}
		resp.Groups = append(resp.Groups, rg)
	}
	return resp.AppendTo(nil)
}

// requested is what an unstable OffsetFetch answer lists: the partitions
// asked for, or for "all of the group's" (Topics null) the ones a
// transaction holds. Every one gets UNSTABLE_OFFSET_COMMIT: clients retry the
// whole fetch on the first, so none of them is used.
func (p *Proxy) requestedOffsets(group string, all bool, topics []kmsg.OffsetFetchRequestTopic) []kmsg.OffsetFetchRequestTopic {
	if !all {
		return topics
	}
	var out []kmsg.OffsetFetchRequestTopic
	for _, tp := range p.coord.PendingPartitions(group) {
		if n := len(out); n == 0 || out[n-1].Topic != tp.Topic {
			out = append(out, kmsg.OffsetFetchRequestTopic{Topic: tp.Topic})
		}
		out[len(out)-1].Partitions = append(out[len(out)-1].Partitions, tp.Partition)
	}
	return out
}

// decidedOffsetsFor decodes an OffsetFetch whose groups have offsets that
// decided commits have not written to the backend yet; nil when none has
// (the request then passes untouched).
func (p *Proxy) decidedOffsetsFor(hdr protocol.RequestHeader, body []byte) *kmsg.OffsetFetchRequest {
	r := kmsg.NewPtrOffsetFetchRequest()
	r.SetVersion(hdr.APIVersion)
	if err := r.ReadFrom(body); err != nil {
		return nil
	}
	if r.Version < 8 {
		if p.coord.DecidedOffsets(r.Group) != nil {
			return r
		}
		return nil
	}
	for _, g := range r.Groups {
		if p.coord.DecidedOffsets(g.Group) != nil {
			return r
		}
	}
	return nil
}

// patchOffsets puts into the backend's OffsetFetch answer the offsets that
// decided commits hold and eosproxy has not written yet: committed offsets,
// as Kafka's are once its marker is written. A member joining meanwhile thus
// starts where the transaction left off, and does not wait for the backend.
func (p *Proxy) patchOffsets(req *kmsg.OffsetFetchRequest, body []byte) ([]byte, error) {
	resp := req.ResponseKind().(*kmsg.OffsetFetchResponse)
	if err := resp.ReadFrom(body); err != nil {
		return nil, fmt.Errorf("decode OffsetFetch v%d response: %w", req.Version, err)
	}
	if req.Version >= 8 {
		all := map[string]bool{}
		for _, g := range req.Groups {
			all[g.Group] = g.Topics == nil
		}
		for gi := range resp.Groups {
			g := &resp.Groups[gi]
			g.Topics = p.patchGroup(g.Group, &g.ErrorCode, all[g.Group], g.Topics)
		}
		return resp.AppendTo(nil), nil
	}
	// Up to v7 the answer is one group's, in its own types: patched in the
	// v8+ form and converted back.
	topics := make([]kmsg.OffsetFetchResponseGroupTopic, len(resp.Topics))
	for i, t := range resp.Topics {
		topics[i] = kmsg.OffsetFetchResponseGroupTopic{Topic: t.Topic}
		for _, rp := range t.Partitions {
			topics[i].Partitions = append(topics[i].Partitions, kmsg.OffsetFetchResponseGroupTopicPartition(rp))
		}
	}
	topics = p.patchGroup(req.Group, &resp.ErrorCode, req.Topics == nil, topics)
	resp.Topics = make([]kmsg.OffsetFetchResponseTopic, len(topics))
	for i, t := range topics {
		resp.Topics[i] = kmsg.OffsetFetchResponseTopic{Topic: t.Topic}
		for _, rp := range t.Partitions {
			resp.Topics[i].Partitions = append(resp.Topics[i].Partitions, kmsg.OffsetFetchResponseTopicPartition(rp))
		}
	}
	return resp.AppendTo(nil), nil
}

// patchGroup fills group's decided offsets into its answered topics (and,
// when the request asked for all of the group's, adds those missing).
func (p *Proxy) patchGroup(group string, code *int16, all bool, topics []kmsg.OffsetFetchResponseGroupTopic) []kmsg.OffsetFetchResponseGroupTopic {
	decided := p.coord.DecidedOffsets(group)
	if decided == nil {
		return topics
	}
	if *code == kerr.GroupIDNotFound.Code {
		// A backend that does not know the group yet (kfake says so;
		// Kafka answers no offsets): it has committed offsets now.
		*code = 0
	}
	if *code != 0 {
		return topics
	}
	fill := func(rp *kmsg.OffsetFetchResponseGroupTopicPartition, o txnstate.Offset) {
		md := o.Metadata
		rp.Offset, rp.LeaderEpoch, rp.Metadata, rp.ErrorCode = o.Offset, o.LeaderEpoch, &md, 0
	}
	seen := map[txnstate.TopicPartition]bool{}
	for ti := range topics {
		t := &topics[ti]
		for pi := range t.Partitions {
			tp := txnstate.TopicPartition{Topic: t.Topic, Partition: t.Partitions[pi].Partition}
			seen[tp] = true
			if o, ok := decided[tp]; ok {
				fill(&t.Partitions[pi], o)
			}
		}
	}
	if !all {
		return topics
	}
	tps := slices.Collect(maps.Keys(decided))
	slices.SortFunc(tps, txnstate.CompareTopicPartition)
	for _, tp := range tps {
		if seen[tp] {
			continue
		}
		i := slices.IndexFunc(topics, func(t kmsg.OffsetFetchResponseGroupTopic) bool { return t.Topic == tp.Topic })
		if i < 0 {
			topics = append(topics, kmsg.NewOffsetFetchResponseGroupTopic())
			i = len(topics) - 1
			topics[i].Topic = tp.Topic
		}
		rp := kmsg.NewOffsetFetchResponseGroupTopicPartition()
		rp.Partition = tp.Partition
		fill(&rp, decided[tp])
		topics[i].Partitions = append(topics[i].Partitions, rp)
	}
	return topics
}

package proxy

// TxnOffsetCommit v0–v5, answered by eosproxy itself; never passed on.
//
// eosproxy is the transaction coordinator and holds a transaction's group
// offsets until EndTxn commits them (then written to the backend with an
// OffsetCommit of eosproxy's own) or aborts them. Like Kafka's group
// coordinator it first checks that the member named is still the group's
// (groupcheck.go), so a zombie consumer cannot commit offsets. v6 names
// topics by id while held offsets are kept by topic name; eosproxy does not
// advertise it and closes the connection on it.

import (
	"context"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/eosproxy/eosproxy/txnstate"
)

func handleTxnOffsetCommit(c *conn, r *request) error {
	return answerLocal(r, kmsg.NewPtrTxnOffsetCommitRequest(), func(req *kmsg.TxnOffsetCommitRequest) []byte {
		code := c.authorizeTxn("TxnOffsetCommit", req.TransactionalID, req.ProducerID)
		if code == 0 {
			code = c.authorizeGroupRead(req.Group, "a transaction's group offsets") // topicauth.go
		}
		if code != 0 {
			return txnOffsetCommitAnswer(req, code)
		}
		// Kafka answers a topic the principal may not READ with
		// TOPIC_AUTHORIZATION_FAILED and takes the others (topicauth.go).
		allowed, refused := *req, *req
		allowed.Topics, refused.Topics = nil, nil
		for _, t := range req.Topics {
			if c.authorizeTopic(t.Topic, aclOpRead, "a transaction's group offset") != 0 {
				refused.Topics = append(refused.Topics, t)
			} else {
				allowed.Topics = append(allowed.Topics, t)
			}
		}
		if len(refused.Topics) == 0 {
			return c.p.txnOffsetCommit(c.ctx, req)
		}
		resp := req.ResponseKind().(*kmsg.TxnOffsetCommitResponse)
		if len(allowed.Topics) > 0 {
			if err := resp.ReadFrom(c.p.txnOffsetCommit(c.ctx, &allowed)); err != nil {
				c.log.Error().Err(err).Msg("cannot read eosproxy's own TxnOffsetCommit answer")
				return txnOffsetCommitAnswer(req, kerr.UnknownServerError.Code)
			}
		}
		resp.Topics = append(resp.Topics, txnOffsetCommitTopics(&refused, kerr.TopicAuthorizationFailed.Code)...)
		return resp.AppendTo(nil)
	})
}

// txnOffsetCommit holds a TxnOffsetCommit's offsets in its transaction once
// its member is found current in the group (checkTxnMember), as Kafka's
// group coordinator checks it before it writes the offsets.
func (p *Proxy) txnOffsetCommit(ctx context.Context, r *kmsg.TxnOffsetCommitRequest) []byte {
	offs := map[txnstate.TopicPartition]txnstate.Offset{}
	for _, t := range r.Topics {
		for _, part := range t.Partitions {
			o := txnstate.Offset{Offset: part.Offset, LeaderEpoch: part.LeaderEpoch}
			if part.Metadata != nil {
				o.Metadata = *part.Metadata
			}
			offs[txnstate.TopicPartition{Topic: t.Topic, Partition: part.Partition}] = o
		}
	}
	req := txnstate.TxnOffsetCommitRequest{
		ProducerID: r.ProducerID, Epoch: r.ProducerEpoch, Group: r.Group,
		MemberID: r.MemberID, GenerationID: r.Generation, Offsets: offs, Version: r.Version,
	}
	if r.Version < 3 {
		req.GenerationID = -1
	}
	if r.InstanceID != nil {
		req.GroupInstanceID = *r.InstanceID
	}
	code := p.checkTxnMember(ctx, r.Group, req.MemberID, req.GroupInstanceID, req.GenerationID)
	if code != 0 {
		// Kafka verifies the transaction before the group coordinator
		// judges the member: a producer that is not the transactional id's
		// current one is told that instead.
		switch t := p.coord.Get(r.TransactionalID); {
		case t == nil || t.ProducerID != r.ProducerID:
			code = kerr.InvalidProducerIDMapping.Code
		case t.Epoch != r.ProducerEpoch:
			code = kerr.InvalidProducerEpoch.Code
		}
	}
	if code == 0 {
		code = p.coord.TxnOffsetCommit(r.TransactionalID, req).Err
	}
	if code == 0 {
		p.groups.noteAccepted(r.Group, req.GenerationID, req.MemberID, req.GroupInstanceID)
		p.auditGroup(r.Group)
	} else {
		p.log.Debug().Str("txn", r.TransactionalID).Str("group", r.Group).Str("member", req.MemberID).
			Int32("generation", req.GenerationID).Str("err", errName(code)).Msg("TxnOffsetCommit refused")
	}
	return txnOffsetCommitAnswer(r, code)
}

// txnOffsetCommitAnswer answers every partition of r with code.
func txnOffsetCommitAnswer(r *kmsg.TxnOffsetCommitRequest, code int16) []byte {
	resp := r.ResponseKind().(*kmsg.TxnOffsetCommitResponse)
	resp.Topics = txnOffsetCommitTopics(r, code)
	return resp.AppendTo(nil)
}

// txnOffsetCommitTopics are the answers to every partition of r, all code.
func txnOffsetCommitTopics(r *kmsg.TxnOffsetCommitRequest, code int16) []kmsg.TxnOffsetCommitResponseTopic {
	var out []kmsg.TxnOffsetCommitResponseTopic
	for _, t := range r.Topics {
		rt := kmsg.NewTxnOffsetCommitResponseTopic()
		rt.Topic, rt.TopicID = t.Topic, t.TopicID
		for _, part := range t.Partitions {
			rp := kmsg.NewTxnOffsetCommitResponseTopicPartition()
			rp.Partition, rp.ErrorCode = part.Partition, code
			rt.Partitions = append(rt.Partitions, rp)
		}
		out = append(out, rt)
	}
	return out
}

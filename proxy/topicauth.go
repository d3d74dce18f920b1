package proxy

// A client authenticated by the backend itself (SASL pass-through) writes
// under its own principal, and the backend refuses what that principal may
// not write. A transactional batch does not reach the backend until its
// commit, and then under eosproxy's own principal; nor do a transaction's
// group offsets. So before buffering either, eosproxy asks the backend, on
// the client's own connection, what the client's principal may do on the
// topic (Metadata with the topic's authorized operations, KIP-430): WRITE
// for a batch, READ for an offset, and refuses as Kafka would,
// TOPIC_AUTHORIZATION_FAILED. Otherwise a principal without WRITE on a
// topic could write it through a transaction.
//
// Likewise READ on the group for AddOffsetsToTxn and TxnOffsetCommit
// (GROUP_AUTHORIZATION_FAILED), whose offsets eosproxy commits as itself.
// A group's authorized operations come only from its coordinator, which
// the client's connection need not reach; but Kafka checks READ on the
// group first thing in OffsetCommit, on any broker, before it looks at
// topics or the coordinator. So eosproxy sends an OffsetCommit for the
// group naming only a topic that cannot exist: the backend answers
// GROUP_AUTHORIZATION_FAILED, or an error about the topic, and commits
// nothing either way.

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/eosproxy/eosproxy/protocol"
)

// Kafka's AclOperation numbers, bits of AuthorizedOperations.
const (
	aclOpRead  = 3
	aclOpWrite = 4
)

// authorizeTopicWrite returns TOPIC_AUTHORIZATION_FAILED if the backend
// says the connection's principal may not write topic, else 0.
func (c *conn) authorizeTopicWrite(topic string) int16 {
	return c.authorizeTopic(topic, aclOpWrite, "a transactional batch")
}

// authorizeTopic returns TOPIC_AUTHORIZATION_FAILED if the backend says
// the connection's principal may not do op on topic, else 0 (also when it
// cannot say: UNKNOWN_TOPIC_OR_PARTITION and the like are others' to
// answer). Only for a connection the backend authenticated (pass-through
// SASL); the topic's operations are kept authFor, so that a grant or a
// revocation takes effect soon, as it does in Kafka at once.
func (c *conn) authorizeTopic(topic string, op int, what string) int16 {
	if !c.passAuthed.Load() {
		return 0
	}
	known, ok := c.topicOps[topic]
	ops := known.ops
	if !ok || !time.Now().Before(known.until) {
		var code int16
		if ops, code = c.askTopicOps(topic); code != 0 {
			return code
		}
		if ops == opsUnknown {
			return 0
		}
		if c.topicOps == nil {
			c.topicOps = map[string]topicOps{}
		}
		c.topicOps[topic] = topicOps{ops: ops, until: time.Now().Add(authFor)}
	}
	if ops == math.MinInt32 || ops&(1<<op) != 0 {
		return 0 // allowed, or the backend has no authorizer to ask
	}
	c.log.Warn().Str("principal", c.principal()).Str("topic", topic).Int("operation", op).
		Msgf("refusing %s: the backend does not allow the client's principal the operation on the topic (TOPIC_AUTHORIZATION_FAILED)", what)
	return kerr.TopicAuthorizationFailed.Code
}

// authFor is how long an answer of the backend's authorizer is taken as
// still true (a topic's operations, a yes to READ on a group; a no to the
// group is never kept): Kafka asks its authorizer on every request, so a
// grant or a revocation takes effect at once; eosproxy asks again after
// this, rather than add a round trip to every transactional request.
const authFor = 10 * time.Second

// topicOps are a topic's authorized operations, as asked at until-authFor.
type topicOps struct {
	ops   int32
	until time.Time
}

// probeTopic is a topic name Kafka can never have ('!' is not allowed in
// a topic name), so an OffsetCommit naming it commits nothing.
const probeTopic = "__eosproxy!group-read-probe"

// probeMember names the probe's OffsetCommit, as a member of no group.
const probeMember = "eosproxy-group-read-probe"

// authorizeGroupRead returns GROUP_AUTHORIZATION_FAILED if the backend
// says the connection's principal may not READ group, else 0 (also when
// it cannot say). Only for a connection the backend authenticated
// (pass-through SASL).
func (c *conn) authorizeGroupRead(group, what string) int16 {
	if !c.passAuthed.Load() {
		return 0
	}
	if until, ok := c.groupRead[group]; ok && time.Now().Before(until) {
		return 0
	}
	req := kmsg.NewPtrOffsetCommitRequest()
	req.SetVersion(2) // from Kafka 0.9 to 4.x
	// And a member and generation no group has: a backend that took the
	// topic anyway would refuse the commit as a stale member's.
	req.Group, req.MemberID, req.Generation, req.RetentionTimeMillis = group, probeMember, math.MaxInt32, -1
	rt := kmsg.NewOffsetCommitRequestTopic()
	rt.Topic = probeTopic
	rp := kmsg.NewOffsetCommitRequestTopicPartition()
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	answer, err := c.askUpstreamDecoded(req)
	if err != nil {
		c.log.Warn().Err(err).Str("group", group).Msg("cannot ask the backend whether the client may read the group; refusing (retriable)")
		return kerr.NetworkException.Code
	}
	for _, t := range answer.(*kmsg.OffsetCommitResponse).Topics {
		for _, p := range t.Partitions {
			if p.ErrorCode == kerr.GroupAuthorizationFailed.Code {
				c.log.Warn().Str("principal", c.principal()).Str("group", group).
					Msgf("refusing %s: the backend does not allow the client's principal to read the group (GROUP_AUTHORIZATION_FAILED)", what)
				return kerr.GroupAuthorizationFailed.Code
			}
		}
	}
	if c.groupRead == nil {
		c.groupRead = map[string]time.Time{}
	}
	c.groupRead[group] = time.Now().Add(authFor)
	return 0
}

// opsUnknown: the backend answered the topic with another error; nothing
// is kept.
const opsUnknown = math.MinInt32 + 1

// askTopicOps asks the backend, on the client's connection, for the
// operations the principal may do on topic (0: none, not even DESCRIBE).
func (c *conn) askTopicOps(topic string) (int32, int16) {
	req := kmsg.NewPtrMetadataRequest()
	req.SetVersion(8) // Kafka 2.3 on: the first with authorized operations
	rt := kmsg.NewMetadataRequestTopic()
	rt.Topic = kmsg.StringPtr(topic)
	req.Topics = append(req.Topics, rt)
	req.IncludeTopicAuthorizedOperations = true
	answer, err := c.askUpstreamDecoded(req)
	var resp *kmsg.MetadataResponse
	if err == nil {
		resp = answer.(*kmsg.MetadataResponse)
	}
	if err == nil && len(resp.Topics) != 1 {
		err = fmt.Errorf("%d topics answered", len(resp.Topics))
	}
	if err != nil {
		c.log.Warn().Err(err).Str("topic", topic).Msg("cannot ask the backend what the client may do on the topic; refusing (retriable)")
		return 0, kerr.NetworkException.Code
	}
	switch t := resp.Topics[0]; t.ErrorCode {
	case 0:
		return t.AuthorizedOperations, 0
	case kerr.TopicAuthorizationFailed.Code:
		return 0, 0 // no DESCRIBE either: Kafka refuses the same way
	default:
		return opsUnknown, 0
	}
}

// askUpstream sends req, a request of eosproxy's own, on the client's
// upstream connection in line with the client's requests, and returns the
// answer's body once the writer has read it. Called by the reader.
func (c *conn) askUpstream(req kmsg.Request) ([]byte, error) {
	c.ownCorr-- // negative: never one of the client's
	ch := make(chan []byte, 1)
	s := slot{corr: c.ownCorr, key: req.Key(), ver: req.GetVersion(), start: time.Now(), answer: ownAnswer{ch}, own: true}
	if !c.enqueue(s) {
		return nil, errors.New("connection closing")
	}
	frame := kmsg.NewRequestFormatter(kmsg.FormatterClientID("eosproxy")).AppendRequest(nil, req, s.corr)
	if _, err := c.uw.Write(frame); err != nil {
		return nil, &upstreamError{err}
	}
	if err := c.uw.Flush(); err != nil {
		return nil, &upstreamError{err}
	}
	select {
	case b, ok := <-ch:
		if !ok {
			return nil, errors.New("connection closed before the answer")
		}
		return b, nil
	case <-c.ctx.Done():
		return nil, errors.New("connection closed before the answer")
	}
}

// askUpstreamDecoded is askUpstream with the answer decoded, as req's
// response kind.
func (c *conn) askUpstreamDecoded(req kmsg.Request) (kmsg.Response, error) {
	body, err := c.askUpstream(req)
	if err != nil {
		return nil, err
	}
	resp := req.ResponseKind()
	resp.SetVersion(req.GetVersion())
	if err := resp.ReadFrom(body); err != nil {
		return nil, fmt.Errorf("decode %s answer: %w", keyName(req.Key()), err)
	}
	return resp, nil
}

// ownAnswer hands the upstream's answer to a request of eosproxy's own to
// the reader waiting for it; the client sees nothing of it.
type ownAnswer struct{ ch chan []byte }

func (a ownAnswer) respond(_ *conn, _ *slot, body []byte) ([]byte, error) {
	a.ch <- bytes.Clone(body)
	return nil, nil
}

func (a ownAnswer) fail() { close(a.ch) }

// answerOwn reads the header off an own request's answer resp (correlation
// id onwards) and hands the body over.
func (c *conn) answerOwn(s slot, resp []byte) error {
	hlen, err := protocol.ResponseHeaderLen(s.key, s.ver, resp)
	if err != nil {
		return fmt.Errorf("upstream answer to eosproxy's own %s: %w", keyName(s.key), err)
	}
	_, err = s.answer.respond(c, &s, resp[hlen:])
	return err
}

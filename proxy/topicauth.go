package proxy

// A client authenticated by the backend itself (SASL pass-through) writes
// under its own principal, and the backend refuses what that principal may
// not write. A transactional batch does not reach the backend until its
// commit, and then under eosproxy's own principal: so before buffering one,
// eosproxy asks the backend, on the client's own connection, whether the
// client's principal may write the topic (Metadata with the topic's
// authorized operations, KIP-430), and refuses it as Kafka would,
// TOPIC_AUTHORIZATION_FAILED. Otherwise a principal without WRITE on a
// topic could write it through a transaction.

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

// aclOpWrite is Kafka's AclOperation WRITE, a bit of AuthorizedOperations.
const aclOpWrite = 4

// ownRequests formats eosproxy's own requests on a client's connection.
var ownRequests = kmsg.NewRequestFormatter(kmsg.FormatterClientID("eosproxy"))

// authorizeTopicWrite returns TOPIC_AUTHORIZATION_FAILED if the backend
// says the connection's principal may not write topic, else 0. Only for a
// connection the backend authenticated (pass-through SASL); the answer is
// kept for the connection's life, as its principal is.
func (c *conn) authorizeTopicWrite(topic string) int16 {
	if !c.passAuthed.Load() {
		return 0
	}
	if ok, known := c.topicWrite[topic]; known {
		if ok {
			return 0
		}
		return kerr.TopicAuthorizationFailed.Code
	}
	req := kmsg.NewPtrMetadataRequest()
	req.SetVersion(8) // Kafka 2.3 on: the first with authorized operations
	rt := kmsg.NewMetadataRequestTopic()
	rt.Topic = kmsg.StringPtr(topic)
	req.Topics = append(req.Topics, rt)
	req.IncludeTopicAuthorizedOperations = true
	body, err := c.askUpstream(req)
	var resp *kmsg.MetadataResponse
	if err == nil {
		resp = kmsg.NewPtrMetadataResponse()
		resp.SetVersion(req.GetVersion())
		err = resp.ReadFrom(body)
	}
	if err == nil && len(resp.Topics) != 1 {
		err = fmt.Errorf("%d topics answered", len(resp.Topics))
	}
	if err != nil {
		c.log.Warn().Err(err).Str("topic", topic).Msg("cannot ask the backend whether the client may write the topic; refusing its transactional batch (retriable)")
		return kerr.NetworkException.Code
	}
	t := resp.Topics[0]
	var ok bool
	switch code := t.ErrorCode; {
	case code == kerr.TopicAuthorizationFailed.Code:
		ok = false // no DESCRIBE either: Kafka refuses the Produce the same way
	case code != 0:
		return 0 // UNKNOWN_TOPIC_OR_PARTITION and the like: checkTopicLimits answers
	case t.AuthorizedOperations == math.MinInt32:
		ok = true // the backend did not say (it has no authorizer to ask)
	default:
		ok = t.AuthorizedOperations&(1<<aclOpWrite) != 0
	}
	if c.topicWrite == nil {
		c.topicWrite = map[string]bool{}
	}
	c.topicWrite[topic] = ok
	if !ok {
		c.log.Warn().Str("principal", c.principal()).Str("topic", topic).
			Msg("refusing a transactional batch: the backend does not let the client's principal write the topic (TOPIC_AUTHORIZATION_FAILED)")
		return kerr.TopicAuthorizationFailed.Code
	}
	return 0
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
	if _, err := c.uw.Write(ownRequests.AppendRequest(nil, req, s.corr)); err != nil {
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

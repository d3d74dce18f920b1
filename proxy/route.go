package proxy

import (
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/eosproxy/eosproxy/protocol"
)

// request is one client request on its way through its handler, which
// decides how it is answered (the slot) and what goes upstream.
type request struct {
	hdr   protocol.RequestHeader
	frame []byte // forwarded upstream unless the slot is answered locally
	slot  slot
	// noResponse: the client expects none (Produce with acks=0), so no
	// slot is queued.
	noResponse bool
	// closeAfter closes the connection once the answer is sent, as Kafka
	// does after a failed authentication.
	closeAfter bool
}

// body is the request's body, after the header.
func (r *request) body() []byte { return r.frame[r.hdr.BodyOffset:] }

// answer makes eosproxy answer the request itself with body; nothing goes
// upstream.
func (r *request) answer(body []byte) {
	r.slot.local, r.slot.body, r.slot.answer = true, body, nil
}

// handler decides how one API key's requests are served. An error closes the
// client's connection.
type handler func(c *conn, r *request) error

// routes maps each API key eosproxy intercepts to its handler, found in the
// file named for the key (22_init_producer_id.go). Every other key, and any
// key newer than eosproxy, passes through untouched both ways.
var routes = [...]handler{
	protocol.KeyProduce:                handleProduce,
	protocol.KeyFetch:                  handleFetch,
	protocol.KeyMetadata:               handleMetadata,
	protocol.KeyOffsetFetch:            handleOffsetFetch,
	protocol.KeyFindCoordinator:        handleFindCoordinator,
	protocol.KeyJoinGroup:              handleJoinGroup,
	protocol.KeyHeartbeat:              handleHeartbeat,
	protocol.KeyLeaveGroup:             handleLeaveGroup,
	protocol.KeySyncGroup:              handleSyncGroup,
	protocol.KeySASLHandshake:          handleSASLHandshake,
	protocol.KeyApiVersions:            handleApiVersions,
	protocol.KeyInitProducerID:         handleInitProducerID,
	protocol.KeyAddPartitionsTxn:       handleAddPartitionsToTxn,
	protocol.KeyAddOffsetsTxn:          handleAddOffsetsToTxn,
	protocol.KeyEndTxn:                 handleEndTxn,
	protocol.KeyTxnOffsetCommit:        handleTxnOffsetCommit,
	protocol.KeySASLAuthenticate:       handleSASLAuthenticate,
	protocol.KeyDescribeCluster:        handleDescribeCluster,
	protocol.KeyDescribeProducers:      handleDescribeProducers,
	protocol.KeyDescribeTxns:           handleDescribeTransactions,
	protocol.KeyListTxns:               handleListTransactions,
	protocol.KeyConsumerGroupHeartbeat: handleConsumerGroupHeartbeat,
	protocol.KeyShareFetch:             handleShareFetch,
	protocol.KeyShareAcknowledge:       handleShareAcknowledge,
}

// route is the handler for key; nil passes the request through.
func route(key int16) handler {
	if key < 0 || int(key) >= len(routes) {
		return nil
	}
	return routes[key]
}

// checkVersion refuses a version of a key eosproxy decodes or answers that
// is newer than eosproxy advertises. Kafka closes the connection on a
// request version it does not support.
func checkVersion(r *request) error {
	if r.hdr.BodyOffset < 0 || r.hdr.APIVersion > protocol.MaxProxyVersion(r.hdr.APIKey) {
		return bad("%s v%d is newer than eosproxy supports", keyName(r.hdr.APIKey), r.hdr.APIVersion)
	}
	return nil
}

// decodeLocal checks the version of a request eosproxy answers itself and
// decodes it into req.
func decodeLocal(r *request, req kmsg.Request) error {
	if err := checkVersion(r); err != nil {
		return err
	}
	req.SetVersion(r.hdr.APIVersion)
	if err := req.ReadFrom(r.body()); err != nil {
		return bad("decode %s v%d: %w", keyName(r.hdr.APIKey), r.hdr.APIVersion, err)
	}
	return nil
}

// answerLocal decodes a request eosproxy answers itself into req and
// answers it with what answer makes of it.
func answerLocal[R kmsg.Request](r *request, req R, answer func(R) []byte) error {
	if err := decodeLocal(r, req); err != nil {
		return err
	}
	r.answer(answer(req))
	return nil
}

// passMapped passes on a request whose answer may name brokers (checking
// its version first): their addresses are replaced with the listeners
// eosproxy opens for them, so clients reach every broker through eosproxy.
func passMapped(c *conn, r *request) error {
	if err := checkVersion(r); err != nil {
		return err
	}
	if protocol.AddressesPossible(r.hdr.APIKey, r.hdr.APIVersion) {
		r.slot.answer = mapAddresses{}
	}
	return nil
}

// mapAddresses rewrites the broker addresses in an upstream response.
type mapAddresses struct{}

func (mapAddresses) respond(c *conn, s *slot, body []byte) ([]byte, error) {
	may, err := protocol.MayCarryAddresses(s.key, s.ver, body)
	if !may {
		return nil, err
	}
	var extra []protocol.Broker
	if (s.key == protocol.KeyMetadata || s.key == protocol.KeyDescribeCluster) && c.p.cfg.Peers != nil {
		extra = c.p.cfg.Peers()
	}
	return protocol.RewriteAddresses(s.key, s.ver, body, c.p.mapBroker, extra...)
}

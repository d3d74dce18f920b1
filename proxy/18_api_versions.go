package proxy

// ApiVersions, every version kmsg decodes (v0–v5), passed on; eosproxy
// rewrites the answer (protocol.RewriteApiVersions): each key capped to the
// versions eosproxy can decode or serve, the keys of the transaction
// coordinator added (eosproxy answers them even when the backend does not),
// and transaction.version set to eosproxy's own. A newer version is answered
// by eosproxy itself in v0 form with UNSUPPORTED_VERSION and ApiVersions'
// own range, as Kafka answers one (KIP-511), so the client retries with a
// version both know.

import (
	"encoding/binary"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/eosproxy/eosproxy/protocol"
)

func handleApiVersions(c *conn, r *request) error {
	if r.hdr.APIVersion > protocol.MaxKnownVersion(r.hdr.APIKey) {
		r.slot.ver = 0
		r.answer(protocol.ApiVersionsFallback())
		return nil
	}
	if err := c.expectedPeer(r); err != nil {
		return err
	}
	r.slot.answer = capVersions{}
	return nil
}

// expectedPeer handles ApiVersions v5's expected node (KIP-1242): the
// client names the cluster and node its metadata sent it to, and a broker
// that is not that node answers REBOOTSTRAP_REQUIRED, upon which the client
// drops every broker it knows and starts over from its seeds. In cluster
// mode the owner names the other instances as brokers (peers); a client
// that connects to one is relayed to the owner's bootstrap listener,
// whose backend connection is to another node. So there the peer's node
// id is taken out of the request (as a client that does not know the node
// sends it) and the backend is not asked to be that node. Without it, every
// client connection to a peer ended in REBOOTSTRAP_REQUIRED, which kills
// the client's other connections too (franz-go v1.22): eoscheck found an
// idempotent producer whose retried batches died with its connections for
// minutes, never answered. A node id that is neither this listener's nor a
// peer's goes to the backend unchanged, which refuses it as misrouted.
func (c *conn) expectedPeer(r *request) error {
	if r.hdr.APIVersion < 5 || c.brokerID >= 0 || c.p.cfg.Peers == nil {
		return nil
	}
	req := kmsg.NewPtrApiVersionsRequest()
	req.SetVersion(r.hdr.APIVersion)
	if err := req.ReadFrom(r.body()); err != nil {
		return bad("ApiVersions request: %w", err)
	}
	if req.NodeID == -1 {
		return nil
	}
	for _, b := range c.p.cfg.Peers() {
		if b.NodeID == req.NodeID {
			req.NodeID, req.ClusterID = -1, nil
			r.frame = req.AppendTo(append([]byte(nil), r.frame[:r.hdr.BodyOffset]...))
			return nil
		}
	}
	return nil
}

// capVersions rewrites the upstream's ApiVersions answer.
type capVersions struct{}

func (capVersions) respond(c *conn, s *slot, body []byte) ([]byte, error) {
	out, _, err := protocol.RewriteApiVersions(s.ver, body)
	if err != nil || c.p.cfg.SASLUsers == nil {
		return out, err
	}
	return saslVersions(s.ver, out)
}

// saslVersions advertises eosproxy's own SASL versions when it terminates
// SASL, whatever the backend's: SaslHandshake v0–v1 (clients that see v1
// use SaslAuthenticate; librdkafka wants v0 listed) and SaslAuthenticate
// v0–v2.
func saslVersions(version int16, body []byte) ([]byte, error) {
	if len(body) < 2 || binary.BigEndian.Uint16(body) != 0 {
		// A failed answer (the KIP-511 fallback, in v0 form whatever the
		// request's version) lists only what the client needs to retry.
		return body, nil
	}
	resp := kmsg.NewPtrApiVersionsResponse()
	resp.SetVersion(version)
	if err := resp.ReadFrom(body); err != nil || resp.ErrorCode != 0 {
		return body, err
	}
	own := map[int16]int16{protocol.KeySASLHandshake: 1, protocol.KeySASLAuthenticate: 2}
	for i := range resp.ApiKeys {
		k := &resp.ApiKeys[i]
		if max, ok := own[k.ApiKey]; ok {
			k.MinVersion, k.MaxVersion = 0, max
			delete(own, k.ApiKey)
		}
	}
	for key, max := range own {
		resp.ApiKeys = append(resp.ApiKeys, kmsg.ApiVersionsResponseApiKey{ApiKey: key, MaxVersion: max})
	}
	return resp.AppendTo(nil), nil
}

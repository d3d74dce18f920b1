package proxy

// ApiVersions, every version kmsg decodes (v0–v5), passed on; eosproxy
// rewrites the answer (protocol.RewriteApiVersions): each key capped to the
// versions eosproxy can decode or serve, the keys of the transaction
// coordinator added (eosproxy answers them even when the backend does not),
// and transaction.version set to eosproxy's own. A newer version is answered
// by eosproxy itself in v0 form with UNSUPPORTED_VERSION and ApiVersions'
// own range, as Kafka answers one (KIP-511), so the client retries with a
// version both know.

import "github.com/eosproxy/eosproxy/protocol"

func handleApiVersions(c *conn, r *request) error {
	if r.hdr.APIVersion > protocol.MaxKnownVersion(r.hdr.APIKey) {
		r.slot.ver = 0
		r.answer(protocol.ApiVersionsFallback())
		return nil
	}
	r.slot.answer = capVersions{}
	return nil
}

// capVersions rewrites the upstream's ApiVersions answer.
type capVersions struct{}

func (capVersions) respond(c *conn, s *slot, body []byte) ([]byte, error) {
	out, _, err := protocol.RewriteApiVersions(s.ver, body)
	return out, err
}

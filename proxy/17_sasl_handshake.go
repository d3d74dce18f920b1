package proxy

// SaslHandshake v1 (v0, whose tokens follow without Kafka framing, only
// passes through).
//
// Pass-through (no --sasl-users): the handshake goes to the paired
// upstream connection and the backend authenticates the client; eosproxy
// notes the mechanism, to learn the principal from the exchange
// (36_sasl_authenticate.go). Termination (--sasl-users): eosproxy answers
// it itself, as Kafka's SaslServerAuthenticator does: the mechanism chosen,
// or UNSUPPORTED_SASL_MECHANISM with the enabled ones and the connection
// closed; after authentication ILLEGAL_SASL_STATE, as KafkaApis answers.

import (
	"slices"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func handleSASLHandshake(c *conn, r *request) error {
	users := c.p.cfg.SASLUsers
	req := kmsg.NewPtrSASLHandshakeRequest()
	if users == nil {
		req.SetVersion(r.hdr.APIVersion)
		if r.hdr.BodyOffset >= 0 && req.ReadFrom(r.body()) == nil {
			c.sasl = &saslSession{mech: req.Mechanism}
		}
		return nil
	}
	if r.hdr.APIVersion < 1 {
		return bad("SaslHandshake v0 (unframed SASL tokens) is not served with --sasl-users")
	}
	return answerLocal(r, req, func(req *kmsg.SASLHandshakeRequest) []byte {
		resp := req.ResponseKind().(*kmsg.SASLHandshakeResponse)
		resp.SupportedMechanisms = users.mechs
		switch {
		case c.sasl != nil:
			resp.ErrorCode = kerr.IllegalSaslState.Code
			if !c.sasl.done {
				r.closeAfter = true
				c.log.Warn().Str("principal", c.principal()).Msg("closing client connection: second SaslHandshake during authentication")
			}
		case !slices.Contains(users.mechs, req.Mechanism):
			resp.ErrorCode = kerr.UnsupportedSaslMechanism.Code
			r.closeAfter = true
			c.log.Warn().Str("mechanism", req.Mechanism).Strs("enabled", users.mechs).
				Msg("closing client connection: unsupported SASL mechanism")
		default:
			c.sasl = &saslSession{mech: req.Mechanism}
		}
		return resp.AppendTo(nil)
	})
}

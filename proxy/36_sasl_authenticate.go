package proxy

// SaslAuthenticate v0–v2.
//
// Pass-through: passed on to the backend, which authenticates the client;
// eosproxy reads the user from the exchange's first message and makes it the
// connection's principal once the backend has accepted the exchange's last
// step. Termination: eosproxy runs the exchange itself (sasl.go) and
// answers as Kafka does: SASL_AUTHENTICATION_FAILED with Kafka's message,
// the connection then closed; ILLEGAL_SASL_STATE without a handshake.

import (
	"encoding/binary"
	"errors"
	"strings"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func handleSASLAuthenticate(c *conn, r *request) error {
	req := kmsg.NewPtrSASLAuthenticateRequest()
	if c.p.cfg.SASLUsers == nil {
		return c.passSASLAuthenticate(r, req)
	}
	return answerLocal(r, req, func(req *kmsg.SASLAuthenticateRequest) []byte {
		resp := req.ResponseKind().(*kmsg.SASLAuthenticateResponse)
		fail := func(code int16, msg string) []byte {
			resp.ErrorCode, resp.ErrorMessage = code, &msg
			return resp.AppendTo(nil)
		}
		switch {
		case c.sasl == nil:
			r.closeAfter = true
			c.log.Warn().Msg("closing client connection: SaslAuthenticate before SaslHandshake")
			return fail(kerr.IllegalSaslState.Code, "Unexpected SaslAuthenticate request before SaslHandshake")
		case c.sasl.done:
			return fail(kerr.SaslAuthenticationFailed.Code, "SaslAuthenticate request received after successful authentication")
		}
		out, user, err := c.p.cfg.SASLUsers.step(c.sasl, req.SASLAuthBytes)
		if err != nil {
			r.closeAfter = true
			ev := c.log.Warn().Str("mechanism", c.sasl.mech).Str("user", user).Str("reason", err.Error())
			if cause := errors.Unwrap(err); cause != nil {
				ev = ev.AnErr("cause", cause)
			}
			ev.Msg("closing client connection: SASL authentication failed")
			return fail(kerr.SaslAuthenticationFailed.Code, err.Error())
		}
		resp.SASLAuthBytes = out
		if user != "" {
			c.sasl.done = true
			c.setPrincipal("User:" + user)
			c.log.Debug().Str("mechanism", c.sasl.mech).Str("principal", c.principal()).Msg("client authenticated")
		}
		return resp.AppendTo(nil)
	})
}

// passSASLAuthenticate passes the request on, reading the user from the
// exchange's first message; the backend's answer to its last step says
// whether the user is the connection's principal.
func (c *conn) passSASLAuthenticate(r *request, req *kmsg.SASLAuthenticateRequest) error {
	s := c.sasl
	if s == nil {
		return nil // the backend answers what it makes of it
	}
	s.steps++
	if s.steps == 1 {
		req.SetVersion(r.hdr.APIVersion)
		if req.ReadFrom(r.body()) == nil {
			s.user = saslUser(s.mech, req.SASLAuthBytes)
		}
	}
	// SCRAM takes two steps (client-first, client-final); PLAIN and
	// OAUTHBEARER one. Of another mechanism (GSSAPI) eosproxy knows
	// neither the steps nor the user: its first accepted step counts.
	last := 1
	if strings.HasPrefix(s.mech, "SCRAM-") {
		last = 2
	}
	if s.steps == last {
		l := learnPrincipal{}
		if s.user != "" {
			l.principal = "User:" + s.user
		}
		r.slot.answer = l
	}
	return nil
}

// learnPrincipal marks the connection authenticated, with principal if
// known, once the backend accepts the exchange's last step; the answer
// passes on unchanged. It runs before the client sees the answer, so
// before the client's next request.
type learnPrincipal struct{ principal string }

func (l learnPrincipal) respond(c *conn, s *slot, body []byte) ([]byte, error) {
	// The error code leads the body in every version.
	if len(body) >= 2 && int16(binary.BigEndian.Uint16(body)) == 0 {
		if l.principal != "" {
			c.setPrincipal(l.principal)
		}
		c.passAuthed.Store(true)
		c.log.Debug().Str("principal", c.principal()).Msg("client authenticated by the backend")
	}
	return body, nil
}

package proxy

import (
	"bytes"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/xdg-go/scram"

	"github.com/eosproxy/eosproxy/protocol"
	"gopkg.in/yaml.v3"
)

// SASL termination (--sasl-users): eosproxy authenticates clients itself,
// with the users of a YAML file, and its upstream connections use its own
// credentials. The SCRAM server side is github.com/xdg-go/scram's; PLAIN is
// a comparison of the password.

const (
	mechPlain     = "PLAIN"
	mechScram256  = "SCRAM-SHA-256"
	mechScram512  = "SCRAM-SHA-512"
	scramMinIters = 4096 // Kafka's minimum for SCRAM credentials
)

// SASLUsers are the users eosproxy authenticates clients against.
type SASLUsers struct {
	plain  map[string][]byte
	scram  map[string]*scram.Server // by mechanism
	mechs  []string                 // mechanisms some user has, for the handshake's answer
	byMech map[string]map[string]scram.StoredCredentials
}

type saslUserEntry struct {
	Name      string `yaml:"name"`
	Mechanism string `yaml:"mechanism"`
	Password  string `yaml:"password"`
	// SCRAM credentials as kafka-configs takes them (salt, stored and
	// server key base64): the password need not be on eosproxy's disk.
	Scram *struct {
		Salt       string `yaml:"salt"`
		Iterations int    `yaml:"iterations"`
		StoredKey  string `yaml:"stored_key"`
		ServerKey  string `yaml:"server_key"`
	} `yaml:"scram"`
}

// LoadSASLUsers reads a --sasl-users file: a YAML list of users, each with
// name, mechanism (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512) and a password or,
// for SCRAM, the scram credentials.
func LoadSASLUsers(file string) (*SASLUsers, error) {
	raw, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("SASL users file: %w", err)
	}
	var entries []saslUserEntry
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&entries); err != nil {
		return nil, fmt.Errorf("SASL users file %s: %w", file, err)
	}
	u, err := newSASLUsers(entries)
	if err != nil {
		return nil, fmt.Errorf("SASL users file %s: %w", file, err)
	}
	return u, nil
}

func newSASLUsers(entries []saslUserEntry) (*SASLUsers, error) {
	u := &SASLUsers{plain: map[string][]byte{}, scram: map[string]*scram.Server{},
		byMech: map[string]map[string]scram.StoredCredentials{}}
	if len(entries) == 0 {
		return nil, errors.New("no users")
	}
	for i, e := range entries {
		if e.Name == "" {
			return nil, fmt.Errorf("user %d has no name", i+1)
		}
		switch e.Mechanism {
		case mechPlain:
			if e.Password == "" || e.Scram != nil {
				return nil, fmt.Errorf("user %q: PLAIN takes a password", e.Name)
			}
			u.plain[e.Name] = []byte(e.Password)
		case mechScram256, mechScram512:
			creds, err := scramCredentials(e)
			if err != nil {
				return nil, fmt.Errorf("user %q: %w", e.Name, err)
			}
			if u.byMech[e.Mechanism] == nil {
				u.byMech[e.Mechanism] = map[string]scram.StoredCredentials{}
			}
			u.byMech[e.Mechanism][e.Name] = creds
		default:
			return nil, fmt.Errorf("user %q: mechanism %q: want PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", e.Name, e.Mechanism)
		}
		if !slices.Contains(u.mechs, e.Mechanism) {
			u.mechs = append(u.mechs, e.Mechanism)
		}
	}
	for mech, users := range u.byMech {
		lookup := func(name string) (scram.StoredCredentials, error) {
			c, ok := users[name]
			if !ok {
				return c, errors.New("unknown user")
			}
			return c, nil
		}
		srv, err := scramHash(mech).NewServer(lookup)
		if err != nil {
			return nil, fmt.Errorf("%s server: %w", mech, err)
		}
		u.scram[mech] = srv
	}
	return u, nil
}

func scramHash(mech string) scram.HashGeneratorFcn {
	if mech == mechScram512 {
		return scram.SHA512
	}
	return scram.SHA256
}

// scramCredentials are a SCRAM user's stored credentials: given, or derived
// from the password with a fresh salt.
func scramCredentials(e saslUserEntry) (scram.StoredCredentials, error) {
	if (e.Password == "") == (e.Scram == nil) {
		return scram.StoredCredentials{}, errors.New("SCRAM takes a password or scram credentials, one of them")
	}
	if e.Scram == nil {
		salt := make([]byte, 16)
		rand.Read(salt)
		cl, err := scramHash(e.Mechanism).NewClient(e.Name, e.Password, "")
		if err != nil {
			return scram.StoredCredentials{}, err
		}
		return cl.GetStoredCredentialsWithError(scram.KeyFactors{Salt: string(salt), Iters: scramMinIters})
	}
	s := e.Scram
	salt, err1 := base64.StdEncoding.DecodeString(s.Salt)
	stored, err2 := base64.StdEncoding.DecodeString(s.StoredKey)
	server, err3 := base64.StdEncoding.DecodeString(s.ServerKey)
	if err := errors.Join(err1, err2, err3); err != nil {
		return scram.StoredCredentials{}, fmt.Errorf("scram credentials are base64: %w", err)
	}
	if len(salt) == 0 || len(stored) == 0 || len(server) == 0 || s.Iterations < scramMinIters {
		return scram.StoredCredentials{}, fmt.Errorf("scram credentials need salt, stored_key, server_key and iterations ≥ %d", scramMinIters)
	}
	return scram.StoredCredentials{KeyFactors: scram.KeyFactors{Salt: string(salt), Iters: s.Iterations},
		StoredKey: stored, ServerKey: server}, nil
}

// authFailure is a failed authentication: msg is what the client is told,
// as Kafka tells it; cause is for the log.
type authFailure struct {
	msg   string
	cause error
}

func (e *authFailure) Error() string { return e.msg }
func (e *authFailure) Unwrap() error { return e.cause }

// saslSession is one connection's authentication by eosproxy: the
// mechanism its handshake chose and, for SCRAM, the conversation.
type saslSession struct {
	mech string
	conv *scram.ServerConversation
	done bool // authenticated

	// Pass-through: the SaslAuthenticate requests passed on, and the user
	// named in the first.
	steps int
	user  string
}

// step runs one SaslAuthenticate of the exchange: the bytes to answer with,
// and the user once authenticated. An error is an authentication failure,
// its message the one Kafka gives.
func (u *SASLUsers) step(s *saslSession, in []byte) (out []byte, user string, err error) {
	switch s.mech {
	case mechPlain:
		parts := bytes.Split(in, []byte{0})
		if len(parts) != 3 {
			//lint:ignore ST1005 Kafka's message, sent to the client as Kafka words it
			return nil, "", errors.New("Authentication failed: Invalid SASL/PLAIN message")
		}
		name, pass := string(parts[1]), parts[2]
		want, ok := u.plain[name]
		if authz := string(parts[0]); authz != "" && authz != name {
			//lint:ignore ST1005 Kafka's message, sent to the client as Kafka words it
			return nil, "", errors.New("Authentication failed: Client requested an authorization id that is different from username")
		}
		if !ok || subtle.ConstantTimeCompare(want, pass) != 1 {
			//lint:ignore ST1005 Kafka's message, sent to the client as Kafka words it
			return nil, name, errors.New("Authentication failed: Invalid username or password")
		}
		return nil, name, nil
	default:
		if s.conv == nil {
			s.conv = u.scram[s.mech].NewConversation()
		}
		resp, err := s.conv.Step(string(in))
		name := s.conv.Username()
		if err == nil && s.conv.Done() && !s.conv.Valid() {
			err = errors.New("invalid proof")
		}
		if err != nil || strings.HasPrefix(resp, "e=") {
			// Kafka's message; the cause (never a secret) after it.
			return nil, name, &authFailure{fmt.Sprintf("Authentication failed during authentication due to invalid credentials with SASL mechanism %s", s.mech), err}
		}
		if !s.conv.Done() {
			return []byte(resp), "", nil
		}
		return []byte(resp), name, nil
	}
}

// checkAuthenticated closes a connection that sends anything but
// ApiVersions and the SASL exchange before it has authenticated, as Kafka
// closes it: when eosproxy authenticates clients, and in pass-through when
// the backend takes SASL (eosproxy has credentials of its own for it), so
// that a client the backend has not authenticated gets no answer from
// eosproxy either. A client certificate authenticates too.
func (c *conn) checkAuthenticated(key int16) error {
	switch {
	case c.p.cfg.SASLUsers != nil:
		if c.sasl != nil && c.sasl.done {
			return nil
		}
	case c.p.cfg.UpstreamSASL != nil:
		if c.passAuthed.Load() || c.principal() != anonymous {
			return nil
		}
	default:
		return nil
	}
	switch key {
	case protocol.KeyApiVersions, protocol.KeySASLHandshake, protocol.KeySASLAuthenticate:
		return nil
	}
	return bad("%s request before SASL authentication", keyName(key))
}

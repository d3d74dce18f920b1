package main

import (
	"flag"
	"fmt"

	"github.com/rs/zerolog"

	"github.com/eosproxy/eosproxy/proxy"
	"github.com/eosproxy/eosproxy/upstream"
)

// security holds the TLS, SASL and ACL flags. Each takes its environment
// form too (EOSPROXY_UPSTREAM_SASL_PASSWORD), which keeps secrets off the
// command line.
type security struct {
	TLSCert, TLSKey, TLSClientCA string
	SASLUsers                    string
	ACLFile                      string

	UpstreamTLS                                                  bool
	UpstreamTLSCA, UpstreamTLSCert, UpstreamTLSKey, UpstreamName string
	UpstreamSASLMech, UpstreamSASLUser, UpstreamSASLPass         string
	UpstreamSASLTokenFile                                        string
}

func (s *security) flags(fs *flag.FlagSet) {
	fs.StringVar(&s.TLSCert, "tls-cert", "", "PEM certificate `file` of the client listeners (bootstrap and brokers): with --tls-key they serve TLS; both files are read again on a handshake after they change")
	fs.StringVar(&s.TLSKey, "tls-key", "", "PEM private key `file` of --tls-cert")
	fs.StringVar(&s.TLSClientCA, "tls-client-ca", "", "PEM CA `file`: clients must present a certificate it signed (mTLS); its subject is the client's principal, User:CN=...")
	fs.StringVar(&s.SASLUsers, "sasl-users", "", "YAML `file` of users (name, mechanism PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512, password or SCRAM credentials): eosproxy authenticates clients itself (SASL termination); without it a client's SASL exchange passes through to the backend")
	fs.StringVar(&s.ACLFile, "acl-file", "", "YAML `file`: which transactional-id prefixes each principal may use and whether it may write idempotently (default: everything allowed)")
	fs.BoolVar(&s.UpstreamTLS, "upstream-tls", false, "connect to the backend over TLS (implied by any other --upstream-tls-* flag)")
	fs.StringVar(&s.UpstreamTLSCA, "upstream-tls-ca", "", "PEM CA `file` verifying the backend (default: the system roots)")
	fs.StringVar(&s.UpstreamTLSCert, "upstream-tls-cert", "", "PEM client certificate `file` for the backend")
	fs.StringVar(&s.UpstreamTLSKey, "upstream-tls-key", "", "PEM private key `file` of --upstream-tls-cert")
	fs.StringVar(&s.UpstreamName, "upstream-tls-server-name", "", "`name` the backend's certificates are verified against (default: each broker's host)")
	fs.StringVar(&s.UpstreamSASLMech, "upstream-sasl-mechanism", "", "SASL `mechanism` of eosproxy's own backend connections: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER")
	fs.StringVar(&s.UpstreamSASLUser, "upstream-sasl-username", "", "SASL `user` of eosproxy's own backend connections")
	fs.StringVar(&s.UpstreamSASLPass, "upstream-sasl-password", "", "SASL `password` (OAUTHBEARER: a static token) of eosproxy's own backend connections; prefer EOSPROXY_UPSTREAM_SASL_PASSWORD to the command line")
	fs.StringVar(&s.UpstreamSASLTokenFile, "upstream-sasl-token-file", "", "OAUTHBEARER token `file`, read again on every authentication (for a token another process refreshes), instead of a static token")
}

// proxyConfig loads the files the flags name.
func (s security) proxyConfig(log zerolog.Logger) (proxy.Config, error) {
	var cfg proxy.Config
	var err error
	if s.TLSCert != "" || s.TLSKey != "" || s.TLSClientCA != "" {
		cfg.TLS, err = proxy.ServerTLS(s.TLSCert, s.TLSKey, s.TLSClientCA, func(err error) {
			log.Error().Err(err).Msg("TLS certificate reload failed")
		})
		if err != nil {
			return cfg, fmt.Errorf("--tls-cert/--tls-key/--tls-client-ca: %w", err)
		}
	}
	if s.SASLUsers != "" {
		if cfg.SASLUsers, err = proxy.LoadSASLUsers(s.SASLUsers); err != nil {
			return cfg, fmt.Errorf("--sasl-users: %w", err)
		}
	}
	if s.ACLFile != "" {
		if cfg.ACL, err = proxy.LoadACL(s.ACLFile); err != nil {
			return cfg, fmt.Errorf("--acl-file: %w", err)
		}
	}
	if s.UpstreamTLS || s.UpstreamTLSCA != "" || s.UpstreamTLSCert != "" || s.UpstreamTLSKey != "" || s.UpstreamName != "" {
		if cfg.UpstreamTLS, err = upstream.TLSConfig(s.UpstreamTLSCA, s.UpstreamTLSCert, s.UpstreamTLSKey, s.UpstreamName); err != nil {
			return cfg, err
		}
	}
	cfg.UpstreamSASL, err = upstream.SASLMechanism(s.UpstreamSASLMech, s.UpstreamSASLUser, s.UpstreamSASLPass, s.UpstreamSASLTokenFile)
	if err != nil {
		return cfg, fmt.Errorf("--upstream-sasl-*: %w", err)
	}
	return cfg, nil
}

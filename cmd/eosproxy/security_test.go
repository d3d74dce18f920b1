package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

// Every security flag takes its environment form; secrets need not be on
// the command line.
func TestSecurityFlagsFromEnv(t *testing.T) {
	env := map[string]string{
		"EOSPROXY_UPSTREAM_SASL_MECHANISM": "SCRAM-SHA-512",
		"EOSPROXY_UPSTREAM_SASL_USERNAME":  "eosproxy",
		"EOSPROXY_UPSTREAM_SASL_PASSWORD":  "s3cret",
		"EOSPROXY_UPSTREAM_TLS":            "true",
		"EOSPROXY_TLS_CLIENT_CA":           "/ca.pem",
		"EOSPROXY_ACL_FILE":                "/acl.yaml",
	}
	c, err := parseConfig(nil, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	s := c.security
	if s.UpstreamSASLMech != "SCRAM-SHA-512" || s.UpstreamSASLUser != "eosproxy" || s.UpstreamSASLPass != "s3cret" ||
		!s.UpstreamTLS || s.TLSClientCA != "/ca.pem" || s.ACLFile != "/acl.yaml" {
		t.Fatalf("security flags from the environment: %+v", s)
	}
	s.TLSClientCA, s.ACLFile = "", "" // no such files here
	sec, err := s.proxyConfig(zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if sec.UpstreamTLS == nil || sec.UpstreamSASL == nil || sec.UpstreamSASL.Name() != "SCRAM-SHA-512" {
		t.Fatalf("upstream TLS %v, SASL %v", sec.UpstreamTLS, sec.UpstreamSASL)
	}
}

// The OAUTHBEARER token file is read on every authentication.
func TestUpstreamOAuthTokenFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "token")
	s := security{UpstreamSASLMech: "OAUTHBEARER", UpstreamSASLTokenFile: file}
	sec, err := s.proxyConfig(zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range []string{"first-token", "refreshed-token"} {
		os.WriteFile(file, []byte(tok+"\n"), 0o600)
		_, msg, err := sec.UpstreamSASL.Authenticate(context.Background(), "broker")
		if err != nil || !strings.Contains(string(msg), "auth=Bearer "+tok+"\x01") {
			t.Fatalf("token %s: %q %v", tok, msg, err)
		}
	}
}

// Bad security settings stop eosproxy at start with the flag named.
func TestSecurityConfigErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(content), 0o600)
		return p
	}
	for _, c := range []struct {
		s    security
		want string
	}{
		{security{TLSCert: "/nonexistent.pem"}, "--tls-cert"},
		{security{SASLUsers: write("u1.yaml", "- name: a\n  mechanism: GSSAPI\n  password: x\n")}, "mechanism"},
		{security{SASLUsers: write("u2.yaml", "- name: a\n  mechanism: SCRAM-SHA-256\n")}, "password or scram"},
		{security{SASLUsers: write("u3.yaml", "- name: a\n  mechanism: PLAIN\n  pasword: x\n")}, "pasword"},
		{security{ACLFile: write("a1.yaml", "alice: {transactional_ids: [x]}\n")}, "TYPE:NAME"},
		{security{ACLFile: write("a2.yaml", "\"User:a\": {idempotnt: true}\n")}, "idempotnt"},
		{security{UpstreamSASLMech: "PLAIN"}, "username and a password"},
		{security{UpstreamSASLUser: "x"}, "without a mechanism"},
		{security{UpstreamTLSCert: "/c.pem"}, "both"},
	} {
		_, err := c.s.proxyConfig(zerolog.Nop())
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: error %v, want one mentioning %q", c.s, err, c.want)
		}
	}
}

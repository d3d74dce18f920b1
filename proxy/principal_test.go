package proxy

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"math/big"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/eosproxy/eosproxy/protocol"
	"github.com/eosproxy/eosproxy/store"
)

// The principal of a client certificate is written as Kafka's default
// principal builder writes it: RFC 2253, most specific name first, Java's
// keywords, special characters escaped, unknown types as OID=#hex.
func TestCertPrincipal(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for _, c := range []struct {
		subject pkix.Name
		want    string
	}{
		{pkix.Name{CommonName: "alice"}, "User:CN=alice"},
		{pkix.Name{CommonName: "alice", OrganizationalUnit: []string{"eng"}, Organization: []string{"Example, Inc"}, Country: []string{"US"}},
			`User:CN=alice,OU=eng,O=Example\, Inc,C=US`},
		{pkix.Name{CommonName: " #x+y "}, `User:CN=\ #x\+y\ `},
		{pkix.Name{CommonName: "svc", ExtraNames: []pkix.AttributeTypeAndValue{
			{Type: asn1.ObjectIdentifier{0, 9, 2342, 19200300, 100, 1, 25}, Value: "example"},
			{Type: asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 1}, Value: "a@b"}}},
			"User:1.2.840.113549.1.9.1=#0c03614062,DC=example,CN=svc"},
	} {
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: c.subject,
			NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			t.Fatal(err)
		}
		cert, _ := x509.ParseCertificate(der)
		if got := certPrincipal(cert); got != c.want {
			t.Errorf("%v: principal %q, want %q", c.subject, got, c.want)
		}
	}
}

// In pass-through, the user comes from the exchange's first message as the
// backend's principal builder reads it.
func TestSASLUserOfFirstMessage(t *testing.T) {
	payload := base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"svc-1","exp":1}`))
	for _, c := range []struct{ mech, first, want string }{
		{"PLAIN", "\x00alice\x00secret", "alice"},
		{"PLAIN", "alice\x00alice\x00secret", "alice"},
		{"PLAIN", "garbage", ""},
		{"SCRAM-SHA-256", "n,,n=bob,r=abc", "bob"},
		{"SCRAM-SHA-512", "n,a=x,n=a=2Cb=3Dc,r=abc", "a,b=c"},
		{"OAUTHBEARER", "n,,\x01auth=Bearer e30." + payload + ".sig\x01\x01", "svc-1"},
		{"GSSAPI", "whatever", ""},
	} {
		if got := saslUser(c.mech, []byte(c.first)); got != c.want {
			t.Errorf("%s %q: user %q, want %q", c.mech, c.first, got, c.want)
		}
	}
}

// A producer id's principal is kept with the producer state: it is there
// after a restart.
func TestProducerIDPrincipalSurvivesRestart(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	db, err := store.Open(dir, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	o, err := openOwners(db)
	if err != nil {
		t.Fatal(err)
	}
	if !o.mayUse(7, anonymous) || o.bound.Load() {
		t.Fatal("without authentication every id is anonymous's")
	}
	if err := o.bind(7, "User:alice"); err != nil {
		t.Fatal(err)
	}
	if err := o.bind(8, anonymous); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if db, err = store.Open(dir, zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if o, err = openOwners(db); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		pid       int64
		principal string
		may       bool
	}{{7, "User:alice", true}, {7, "User:bob", false}, {7, anonymous, false}, {8, anonymous, true}, {8, "User:alice", false}} {
		if got := o.mayUse(c.pid, c.principal); got != c.may {
			t.Errorf("after a restart, %s may use producer id %d: %v, want %v", c.principal, c.pid, got, c.may)
		}
	}

	// Bindings of producer ids whose state is gone are pruned once old
	// enough; those in use, and young ones, are kept.
	if err := o.bind(9, "User:carol"); err != nil {
		t.Fatal(err)
	}
	inUse := func() map[int64]bool { return map[int64]bool{7: true} }
	if n, err := o.prune(time.Hour, inUse); err != nil || n != 0 {
		t.Fatalf("young bindings pruned: %d %v", n, err)
	}
	if n, err := o.prune(-time.Second, inUse); err != nil || n != 1 {
		t.Fatalf("pruned %d (%v), want the binding of 9 (8, anonymous, has none)", n, err)
	}
	if !o.mayUse(7, "User:alice") || o.mayUse(9, "User:carol") {
		t.Error("prune dropped a binding in use or kept a stale one")
	}
}

// With SASL termination ApiVersions lists eosproxy's own SASL versions;
// the KIP-511 fallback answer is left as it is.
func TestSASLVersionsAdvertised(t *testing.T) {
	fallback := protocol.ApiVersionsFallback()
	if out, err := saslVersions(4, fallback); err != nil || string(out) != string(fallback) {
		t.Fatalf("fallback answer changed: %v", err)
	}
	up := kmsg.NewPtrApiVersionsResponse()
	up.SetVersion(3)
	up.ApiKeys = []kmsg.ApiVersionsResponseApiKey{{ApiKey: protocol.KeySASLHandshake, MinVersion: 1, MaxVersion: 1}}
	out, err := saslVersions(3, up.AppendTo(nil))
	if err != nil {
		t.Fatal(err)
	}
	got := kmsg.NewPtrApiVersionsResponse()
	got.SetVersion(3)
	if err := got.ReadFrom(out); err != nil {
		t.Fatal(err)
	}
	want := map[int16][2]int16{protocol.KeySASLHandshake: {0, 1}, protocol.KeySASLAuthenticate: {0, 2}}
	for _, k := range got.ApiKeys {
		if w := want[k.ApiKey]; w != [2]int16{k.MinVersion, k.MaxVersion} {
			t.Errorf("key %d: v%d-%d, want v%d-%d", k.ApiKey, k.MinVersion, k.MaxVersion, w[0], w[1])
		}
		delete(want, k.ApiKey)
	}
	if len(want) > 0 {
		t.Errorf("not listed: %v", want)
	}
}

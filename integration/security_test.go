package integration

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
	xscram "github.com/xdg-go/scram"

	"github.com/eosproxy/eosproxy/proxy"
	"github.com/eosproxy/eosproxy/upstream"
)

// testCA makes certificates for a test: nothing is checked in.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	dir  string
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "eosproxy test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	ca := &testCA{cert: cert, key: key, dir: t.TempDir()}
	writePEM(t, ca.path("ca.pem"), "CERTIFICATE", der)
	return ca
}

func (ca *testCA) path(name string) string { return filepath.Join(ca.dir, name) }

func (ca *testCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// issue makes a certificate for subject (server: for 127.0.0.1) and writes
// name.pem and name-key.pem.
func (ca *testCA) issue(t *testing.T, name string, subject pkix.Name, server bool) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: subject,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
		tmpl.DNSNames = []string{"localhost"}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, ca.path(name+".pem"), "CERTIFICATE", der)
	writePEM(t, ca.path(name+"-key.pem"), "EC PRIVATE KEY", kder)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// secureBackend is a kfake cluster that takes TLS and SASL only:
// eosproxy's own user "eosproxy" (SCRAM-SHA-512) and the clients' users
// for pass-through.
type secureBackend struct {
	backend
	ca   *testCA
	opts []kgo.Opt // a direct client's, as eosproxy's own user
}

func newSecureBackend(t *testing.T) secureBackend {
	if secureTier {
		t.Skip("these tests set up TLS and SASL of their own; the secure tier (EOSPROXY_TEST_SECURE) is for the others")
	}
	ca := newTestCA(t)
	cert := ca.issue(t, "backend", pkix.Name{CommonName: "backend"}, true)
	b := newFake(t, kfake.TLS(&tls.Config{Certificates: []tls.Certificate{cert}}), kfake.EnableSASL(),
		kfake.Superuser("SCRAM-SHA-512", "eosproxy", "backend-secret"),
		kfake.Superuser("PLAIN", "alice", "alice-backend"),
		kfake.Superuser("SCRAM-SHA-256", "bob", "bob-backend"))
	return secureBackend{backend: b, ca: ca, opts: []kgo.Opt{
		kgo.DialTLSConfig(&tls.Config{RootCAs: ca.pool()}),
		kgo.SASL(scram.Auth{User: "eosproxy", Pass: "backend-secret"}.AsSha512Mechanism()),
	}}
}

// upstream points the proxy at the backend with TLS and its own user.
func (b secureBackend) upstream(t *testing.T) func(*proxy.Config) {
	up, err := upstream.TLSConfig(b.ca.path("ca.pem"), "", "", "")
	if err != nil {
		t.Fatal(err)
	}
	mech, err := upstream.SASLMechanism("SCRAM-SHA-512", "eosproxy", "backend-secret", "")
	if err != nil {
		t.Fatal(err)
	}
	return func(c *proxy.Config) { c.UpstreamTLS, c.UpstreamSASL = up, mech }
}

// records is how many records the backend holds in topic.
func (b secureBackend) records(t *testing.T, topic string) int64 {
	t.Helper()
	cl, err := kgo.NewClient(append(b.opts, kgo.SeedBrokers(b.addrs...))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListEndOffsets(testCtx(t), topic)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	ends.Each(func(o kadm.ListedOffset) { n += o.Offset })
	return n
}

// proxyTLS serves the proxy's listeners with a certificate of ca, and
// requires client certificates of it if mTLS.
func proxyTLS(t *testing.T, ca *testCA, mTLS bool) func(*proxy.Config) {
	ca.issue(t, "proxy", pkix.Name{CommonName: "eosproxy"}, true)
	clientCA := ""
	if mTLS {
		clientCA = ca.path("ca.pem")
	}
	cfg, err := proxy.ServerTLS(ca.path("proxy.pem"), ca.path("proxy-key.pem"), clientCA, nil)
	if err != nil {
		t.Fatal(err)
	}
	return func(c *proxy.Config) { c.TLS = cfg }
}

// scramCreds are a user's SCRAM-SHA-512 credentials as kafka-configs takes
// them, so the users file need not hold the password.
func scramCreds(t *testing.T, user, pass string) string {
	cl, err := xscram.SHA512.NewClient(user, pass, "")
	if err != nil {
		t.Fatal(err)
	}
	salt := []byte("0123456789abcdef")
	c, err := cl.GetStoredCredentialsWithError(xscram.KeyFactors{Salt: string(salt), Iters: 4096})
	if err != nil {
		t.Fatal(err)
	}
	b64 := base64.StdEncoding.EncodeToString
	return "  scram: {salt: " + b64(salt) + ", iterations: 4096, stored_key: " + b64(c.StoredKey) + ", server_key: " + b64(c.ServerKey) + "}\n"
}

const saslUsersYAML = `- name: alice
  mechanism: PLAIN
  password: alice-secret
- name: bob
  mechanism: SCRAM-SHA-256
  password: bob-secret
`

func terminatingProxy(t *testing.T, b secureBackend, aclYAML string) *testProxy {
	dir := t.TempDir()
	users, err := proxy.LoadSASLUsers(writeFile(t, dir, "users.yaml",
		saslUsersYAML+"- name: carol\n  mechanism: SCRAM-SHA-512\n"+scramCreds(t, "carol", "carol-secret")))
	if err != nil {
		t.Fatal(err)
	}
	var acl *proxy.ACL
	if aclYAML != "" {
		if acl, err = proxy.LoadACL(writeFile(t, dir, "acl.yaml", aclYAML)); err != nil {
			t.Fatal(err)
		}
	}
	return startProxy(t, b.backend, b.upstream(t), proxyTLS(t, b.ca, false),
		func(c *proxy.Config) { c.SASLUsers, c.ACL = users, acl })
}

func clientTLS(ca *testCA, certs ...tls.Certificate) kgo.Opt {
	return kgo.DialTLSConfig(&tls.Config{RootCAs: ca.pool(), Certificates: certs})
}

// Clients with TLS and SASL to eosproxy, which authenticates them itself
// and reaches a TLS+SASL backend with its own user: transactions and
// idempotent writes work with each mechanism, read_committed sees the
// committed records.
func TestSecuritySASLTerminationOverTLS(t *testing.T) {
	b := newSecureBackend(t)
	p := terminatingProxy(t, b, "")
	mechs := map[string]sasl.Mechanism{
		"PLAIN":         plain.Auth{User: "alice", Pass: "alice-secret"}.AsMechanism(),
		"SCRAM-SHA-256": scram.Auth{User: "bob", Pass: "bob-secret"}.AsSha256Mechanism(),
		"SCRAM-SHA-512": scram.Auth{User: "carol", Pass: "carol-secret"}.AsSha512Mechanism(),
	}
	adm := kadm.NewClient(newClient(t, p.Addr(), clientTLS(b.ca), kgo.SASL(mechs["PLAIN"])))
	topic := createTopic(t, adm, 2)
	want := int64(0)
	for name, mech := range mechs {
		t.Run(name, func(t *testing.T) {
			cl := newClient(t, p.Addr(), clientTLS(b.ca), kgo.SASL(mech), kgo.DefaultProduceTopic(topic),
				kgo.TransactionalID("txn-"+name))
			if err := cl.BeginTransaction(); err != nil {
				t.Fatal(err)
			}
			produceAndFlush(t, cl, topic, 0, 5)
			if err := cl.EndTransaction(testCtx(t), kgo.TryCommit); err != nil {
				t.Fatal(err)
			}
			idem := newClient(t, p.Addr(), clientTLS(b.ca), kgo.SASL(mech), kgo.DefaultProduceTopic(topic))
			if err := idem.ProduceSync(testCtx(t), kgo.StringRecord("idempotent")).FirstErr(); err != nil {
				t.Fatal(err)
			}
			want += 6
		})
	}
	// Committed data reaches the backend after the answer.
	deadline := time.Now().Add(30 * time.Second)
	for b.records(t, topic) < want && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if got := b.records(t, topic); got != want {
		t.Fatalf("backend holds %d records, want %d", got, want)
	}
	cons := newClient(t, p.Addr(), clientTLS(b.ca), kgo.SASL(mechs["SCRAM-SHA-256"]), kgo.ConsumeTopics(topic),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	var n int64
	for n < want {
		fs := cons.PollFetches(testCtx(t))
		if err := fs.Err0(); err != nil {
			t.Fatal(err)
		}
		n += int64(fs.NumRecords())
	}
}

// A wrong password is refused with SASL_AUTHENTICATION_FAILED and a log
// line; nothing is written.
func TestSecurityWrongPasswordRefused(t *testing.T) {
	b := newSecureBackend(t)
	p := terminatingProxy(t, b, "")
	adm := kadm.NewClient(newClient(t, p.Addr(), clientTLS(b.ca), kgo.SASL(plain.Auth{User: "alice", Pass: "alice-secret"}.AsMechanism())))
	topic := createTopic(t, adm, 1)
	for _, mech := range []sasl.Mechanism{
		plain.Auth{User: "alice", Pass: "wrong"}.AsMechanism(),
		scram.Auth{User: "bob", Pass: "wrong"}.AsSha256Mechanism(),
		scram.Auth{User: "nobody", Pass: "wrong"}.AsSha512Mechanism(),
	} {
		err := wrongPasswordRefused(t, p, b.ca, mech, topic)
		if !strings.Contains(err.Error(), "Authentication failed") {
			t.Errorf("error without Kafka's message: %v", err)
		}
	}
	if !strings.Contains(p.logs.String(), "SASL authentication failed") {
		t.Error("no log line for the failed authentication")
	}
	if strings.Contains(p.logs.String(), "wrong") {
		t.Error("a password reached the log")
	}
	if n := b.records(t, topic); n != 0 {
		t.Fatalf("backend holds %d records", n)
	}
}

// wrongPasswordRefused produces to topic through p as mech's user, whose
// password is wrong, and fails unless SASL_AUTHENTICATION_FAILED refuses it.
func wrongPasswordRefused(t *testing.T, p *testProxy, ca *testCA, mech sasl.Mechanism, topic string) error {
	t.Helper()
	cl := newClient(t, p.Addr(), clientTLS(ca), kgo.SASL(mech), kgo.DefaultProduceTopic(topic),
		kgo.RecordRetries(1), kgo.RecordDeliveryTimeout(5*time.Second))
	err := cl.ProduceSync(testCtx(t), kgo.StringRecord("x")).FirstErr()
	if !errors.Is(err, kerr.SaslAuthenticationFailed) {
		t.Fatalf("%s with a wrong password: %v, want SASL_AUTHENTICATION_FAILED", mech.Name(), err)
	}
	return err
}

// Before authenticating, only ApiVersions and the SASL exchange are
// served: anything else closes the connection, as Kafka does; an unknown
// mechanism is UNSUPPORTED_SASL_MECHANISM.
func TestSecurityRequestBeforeAuthentication(t *testing.T) {
	b := newSecureBackend(t)
	p := terminatingProxy(t, b, "")
	cl := newClient(t, p.Addr(), clientTLS(b.ca), kgo.RequestRetries(0))
	_, err := kmsg.NewPtrMetadataRequest().RequestWith(testCtx(t), cl)
	if err == nil {
		t.Fatal("Metadata before authentication was answered")
	}
	hs := kmsg.NewPtrSASLHandshakeRequest()
	hs.Mechanism = "GSSAPI"
	resp, err := hs.RequestWith(testCtx(t), cl)
	if err != nil {
		t.Fatal(err)
	}
	if resp.ErrorCode != kerr.UnsupportedSaslMechanism.Code || len(resp.SupportedMechanisms) != 3 {
		t.Fatalf("GSSAPI handshake: %+v", resp)
	}
	auth := kmsg.NewPtrSASLAuthenticateRequest()
	auth.SASLAuthBytes = []byte("\x00alice\x00alice-secret")
	aresp, err := auth.RequestWith(testCtx(t), newClient(t, p.Addr(), clientTLS(b.ca)))
	if err != nil || aresp.ErrorCode != kerr.IllegalSaslState.Code {
		t.Fatalf("SaslAuthenticate before SaslHandshake: %v %+v, want ILLEGAL_SASL_STATE", err, aresp)
	}
	// Once authenticated, the exchange cannot start again.
	authed := newClient(t, p.Addr(), clientTLS(b.ca), kgo.SASL(plain.Auth{User: "alice", Pass: "alice-secret"}.AsMechanism()))
	hs.Mechanism = "PLAIN"
	if resp, err := hs.RequestWith(testCtx(t), authed); err != nil || resp.ErrorCode != kerr.IllegalSaslState.Code {
		t.Fatalf("SaslHandshake after authentication: %v %+v, want ILLEGAL_SASL_STATE", err, resp)
	}
	if aresp, err := auth.RequestWith(testCtx(t), authed); err != nil || aresp.ErrorCode != kerr.SaslAuthenticationFailed.Code {
		t.Fatalf("SaslAuthenticate after authentication: %v %+v, want SASL_AUTHENTICATION_FAILED", err, aresp)
	}
	if !strings.Contains(p.logs.String(), "request before SASL authentication") {
		t.Error("no log line for the unauthenticated request")
	}
}

// mTLS: a client without a certificate is refused (with a log line); the
// certificate's subject is the principal the ACL file names, and a
// transactional id it does not grant is refused with
// TRANSACTIONAL_ID_AUTHORIZATION_FAILED, nothing written.
func TestSecurityMTLSPrincipalAndACL(t *testing.T) {
	b := newSecureBackend(t)
	acl := writeFile(t, t.TempDir(), "acl.yaml", `"User:CN=alice,O=Example":
  transactional_ids: ["alice-"]
  idempotent: true
`)
	rules, err := proxy.LoadACL(acl)
	if err != nil {
		t.Fatal(err)
	}
	p := startProxy(t, b.backend, b.upstream(t), proxyTLS(t, b.ca, true), func(c *proxy.Config) { c.ACL = rules })
	alice := b.ca.issue(t, "alice", pkix.Name{CommonName: "alice", Organization: []string{"Example"}}, false)
	mallory := b.ca.issue(t, "mallory", pkix.Name{CommonName: "mallory"}, false)

	noCert := newClient(t, p.Addr(), clientTLS(b.ca), kgo.RequestRetries(0))
	if _, err := kmsg.NewPtrMetadataRequest().RequestWith(testCtx(t), noCert); err == nil {
		t.Fatal("a client without a certificate was served")
	}
	waitLog(t, p, "TLS handshake failed")

	adm := kadm.NewClient(newClient(t, p.Addr(), clientTLS(b.ca, alice)))
	topic := createTopic(t, adm, 1)
	ok := newClient(t, p.Addr(), clientTLS(b.ca, alice), kgo.DefaultProduceTopic(topic), kgo.TransactionalID("alice-1"))
	if err := ok.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	produceAndFlush(t, ok, topic, 0, 3)
	if err := ok.EndTransaction(testCtx(t), kgo.TryCommit); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		cert tls.Certificate
		id   string
	}{{alice, "bob-1"}, {mallory, "alice-2"}} {
		cl := newClient(t, p.Addr(), clientTLS(b.ca, c.cert), kgo.DefaultProduceTopic(topic), kgo.TransactionalID(c.id))
		// franz-go initialises the producer id on the first Produce.
		err := cl.BeginTransaction()
		if err == nil {
			err = cl.ProduceSync(testCtx(t), kgo.StringRecord("refused")).FirstErr()
		}
		if !errors.Is(err, kerr.TransactionalIDAuthorizationFailed) {
			t.Fatalf("transactional id %s: %v, want TRANSACTIONAL_ID_AUTHORIZATION_FAILED", c.id, err)
		}
	}
	// Nor may mallory see alice's transactions: DescribeTransactions is
	// refused and ListTransactions leaves them out, as Kafka does.
	malAdm := kadm.NewClient(newClient(t, p.Addr(), clientTLS(b.ca, mallory)))
	described, err := malAdm.DescribeTransactions(testCtx(t), "alice-1")
	if err == nil { // kadm returns the one id's error as the call's
		err = described["alice-1"].Err
	}
	if !errors.Is(err, kerr.TransactionalIDAuthorizationFailed) {
		t.Fatalf("mallory's DescribeTransactions of alice-1: %v, want TRANSACTIONAL_ID_AUTHORIZATION_FAILED", err)
	}
	// Nor find its coordinator: Kafka wants DESCRIBE on the id for that.
	fc := kmsg.NewPtrFindCoordinatorRequest()
	fc.CoordinatorType, fc.CoordinatorKeys = 1, []string{"alice-1"}
	fcResp, err := fc.RequestWith(testCtx(t), newClient(t, p.Addr(), clientTLS(b.ca, mallory)))
	if err != nil {
		t.Fatal(err)
	}
	if co := fcResp.Coordinators[0]; co.ErrorCode != kerr.TransactionalIDAuthorizationFailed.Code || co.NodeID != -1 {
		t.Fatalf("mallory's FindCoordinator of alice-1: %v node %d, want TRANSACTIONAL_ID_AUTHORIZATION_FAILED and no node", kerr.ErrorForCode(co.ErrorCode), co.NodeID)
	}
	for who, cl := range map[string]*kadm.Client{"alice": adm, "mallory": malAdm} {
		listed, err := cl.ListTransactions(testCtx(t), nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, seen := listed["alice-1"]; seen != (who == "alice") {
			t.Errorf("%s's ListTransactions lists alice-1: %v", who, seen)
		}
	}
	// mallory has no idempotent writes either.
	idem := newClient(t, p.Addr(), clientTLS(b.ca, mallory), kgo.DefaultProduceTopic(topic))
	if err := idem.ProduceSync(testCtx(t), kgo.StringRecord("refused")).FirstErr(); !errors.Is(err, kerr.ClusterAuthorizationFailed) {
		t.Fatalf("idempotent write without the grant: %v, want CLUSTER_AUTHORIZATION_FAILED", err)
	}
	logs := p.logs.String()
	for _, want := range []string{`"principal":"User:CN=mallory"`, `"principal":"User:CN=alice,O=Example"`, "TRANSACTIONAL_ID_AUTHORIZATION_FAILED", "CLUSTER_AUTHORIZATION_FAILED"} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %s", want)
		}
	}
	backendReaches3(t, b, topic)
}

func backendReaches3(t *testing.T, b secureBackend, topic string) {
	deadline := time.Now().Add(30 * time.Second)
	for b.records(t, topic) < 3 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := b.records(t, topic); n != 3 {
		t.Fatalf("backend holds %d records, want the 3 committed", n)
	}
}

func waitLog(t *testing.T, p *testProxy, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(p.logs.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("no log line %q", want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A producer id belongs to the principal that initialised it: another
// principal's AddPartitionsToTxn, EndTxn or Produce with it is refused as
// Kafka refuses a missing authorization, and nothing is written. The
// principals here are learnt from the SASL exchange passed through to the
// backend.
func TestSecurityAnotherPrincipalsProducerID(t *testing.T) {
	b := newSecureBackend(t)
	p := startProxy(t, b.backend, b.upstream(t), proxyTLS(t, b.ca, false))
	aliceMech := plain.Auth{User: "alice", Pass: "alice-backend"}.AsMechanism()
	alice := newClient(t, p.Addr(), clientTLS(b.ca), kgo.SASL(aliceMech))
	bob := newClient(t, p.Addr(), clientTLS(b.ca), kgo.SASL(scram.Auth{User: "bob", Pass: "bob-backend"}.AsSha256Mechanism()))
	topic := createTopic(t, kadm.NewClient(alice), 1)
	ctx := testCtx(t)

	// The backend takes SASL: a client it has not authenticated gets no
	// answer from eosproxy either, not even to what eosproxy answers itself.
	anon := newClient(t, p.Addr(), clientTLS(b.ca), kgo.RequestRetries(0))
	anonTxn := "anon-1"
	anonInit := kmsg.NewPtrInitProducerIDRequest()
	anonInit.TransactionalID, anonInit.TransactionTimeoutMillis = &anonTxn, 60000
	if resp, err := anonInit.RequestWith(ctx, anon); err == nil {
		t.Fatalf("InitProducerId without authentication answered: %+v", resp)
	}
	waitLog(t, p, "request before SASL authentication")

	initPID := func(txn *string) *kmsg.InitProducerIDResponse {
		req := kmsg.NewPtrInitProducerIDRequest()
		req.TransactionalID, req.TransactionTimeoutMillis = txn, 60000
		resp, err := req.RequestWith(ctx, alice)
		if err != nil || resp.ErrorCode != 0 {
			t.Fatalf("InitProducerId: %v %v", err, resp)
		}
		return resp
	}
	txnID := "shared-1"
	txn := initPID(&txnID)
	add := kmsg.NewPtrAddPartitionsToTxnRequest()
	add.TransactionalID, add.ProducerID, add.ProducerEpoch = txnID, txn.ProducerID, txn.ProducerEpoch
	add.Topics = []kmsg.AddPartitionsToTxnRequestTopic{{Topic: topic, Partitions: []int32{0}}}
	addResp, err := add.RequestWith(ctx, bob)
	if err != nil || addResp.Topics[0].Partitions[0].ErrorCode != kerr.TransactionalIDAuthorizationFailed.Code {
		t.Fatalf("bob's AddPartitionsToTxn with alice's producer id: %v %+v", err, addResp)
	}
	end := kmsg.NewPtrEndTxnRequest()
	end.TransactionalID, end.ProducerID, end.ProducerEpoch, end.Commit = txnID, txn.ProducerID, txn.ProducerEpoch, true
	endResp, err := end.RequestWith(ctx, bob)
	if err != nil || endResp.ErrorCode != kerr.TransactionalIDAuthorizationFailed.Code {
		t.Fatalf("bob's EndTxn with alice's producer id: %v %+v", err, endResp)
	}

	idem := initPID(nil)
	produce := produceRequest(7, topic, map[int32][]byte{0: idempotentBatch(idem.ProducerID, idem.ProducerEpoch, 0, "bob's")})
	leader := bob.Broker(int(mustLeader(t, alice, topic)))
	raw, err := leader.Request(ctx, produce)
	if err != nil {
		t.Fatal(err)
	}
	if code := raw.(*kmsg.ProduceResponse).Topics[0].Partitions[0].ErrorCode; code != kerr.ClusterAuthorizationFailed.Code {
		t.Fatalf("bob's Produce with alice's idempotent producer id: %v, want CLUSTER_AUTHORIZATION_FAILED", kerr.ErrorForCode(code))
	}
	// alice's own still works.
	raw, err = alice.Broker(int(mustLeader(t, alice, topic))).Request(ctx, produce)
	if err != nil || raw.(*kmsg.ProduceResponse).Topics[0].Partitions[0].ErrorCode != 0 {
		t.Fatalf("alice's Produce with her producer id: %v %+v", err, raw)
	}
	if n := b.records(t, topic); n != 1 {
		t.Fatalf("backend holds %d records, want alice's 1", n)
	}
	for _, want := range []string{`"principal":"User:bob"`, "another principal initialised the producer id"} {
		if !strings.Contains(p.logs.String(), want) {
			t.Errorf("log lacks %s", want)
		}
	}
}

func mustLeader(t *testing.T, cl *kgo.Client, topic string) int32 {
	t.Helper()
	meta, err := kadm.NewClient(cl).Metadata(testCtx(t), topic)
	if err != nil {
		t.Fatal(err)
	}
	return meta.Topics[topic].Partitions[0].Leader
}

// The listener's certificate is read again when its files change.
func TestSecurityCertificateReload(t *testing.T) {
	ca := newTestCA(t)
	ca.issue(t, "proxy", pkix.Name{CommonName: "first"}, true)
	cfg, err := proxy.ServerTLS(ca.path("proxy.pem"), ca.path("proxy-key.pem"), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	served := func() string {
		ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			c, err := ln.Accept()
			if err == nil {
				c.(*tls.Conn).Handshake()
				c.Close()
			}
		}()
		c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: ca.pool()})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].Subject.CommonName
	}
	if got := served(); got != "first" {
		t.Fatalf("served %q", got)
	}
	ca.issue(t, "proxy", pkix.Name{CommonName: "second"}, true)
	later := time.Now().Add(time.Second) // a coarse file clock must see a change
	os.Chtimes(ca.path("proxy.pem"), later, later)
	if got := served(); got != "second" {
		t.Fatalf("after the files changed, served %q", got)
	}
}

// The secure tier: EOSPROXY_TEST_SECURE=1 runs the in-process tests with
// TLS and SASL on both sides: every kfake backend takes only TLS and
// SCRAM-SHA-512, eosproxy serves TLS and terminates SASL, and every client
// of newClient (of eosproxy or of the backend) uses TLS and that user;
// securetier_test.go carries it to the eosproxy binary, librdkafka, raw
// connections, fault hooks and eoscheck. The TestSecurity tests (which set up their
// own) and the real-broker tests skip under it. It is meant for the
// exactly-once tests, as integration/test-all.sh runs them:
//
//	EOSPROXY_TEST_SECURE=1 go test ./integration -run "$SECURE_TIER_TESTS"
var secureTier = os.Getenv("EOSPROXY_TEST_SECURE") != ""

var tierSec struct {
	once   sync.Once
	server tls.Certificate
	pool   *x509.CertPool
	files  string // PEM files for ServerTLS and UpstreamTLS
	users  *proxy.SASLUsers
}

// tierSecurity makes the tier's CA, certificate and user once per process.
func tierSecurity() {
	tierSec.once.Do(func() {
		must := func(err error) {
			if err != nil {
				panic("secure tier: " + err.Error())
			}
		}
		dir, err := os.MkdirTemp("", "eosproxy-secure-tier-")
		must(err)
		caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		must(err)
		caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "secure tier CA"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(48 * time.Hour),
			IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
		caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
		must(err)
		caCert, _ := x509.ParseCertificate(caDER)
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		must(err)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(48 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		must(err)
		kder, err := x509.MarshalECPrivateKey(key)
		must(err)
		write := func(name, typ string, b []byte) {
			must(os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), 0o600))
		}
		write("ca.pem", "CERTIFICATE", caDER)
		write("server.pem", "CERTIFICATE", der)
		write("server-key.pem", "EC PRIVATE KEY", kder)
		must(os.WriteFile(filepath.Join(dir, "users.yaml"), []byte(tierUsersYAML), 0o600))
		tierSec.users, err = proxy.LoadSASLUsers(filepath.Join(dir, "users.yaml"))
		must(err)
		tierSec.server = tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
		tierSec.pool = x509.NewCertPool()
		tierSec.pool.AddCert(caCert)
		tierSec.files = dir
	})
}

func tierKfakeOpts() []kfake.Opt {
	tierSecurity()
	return []kfake.Opt{kfake.TLS(&tls.Config{Certificates: []tls.Certificate{tierSec.server}}), kfake.EnableSASL(),
		kfake.Superuser("SCRAM-SHA-512", "tier", "tier-secret")}
}

func tierClientOpts() []kgo.Opt {
	tierSecurity()
	return []kgo.Opt{kgo.DialTLSConfig(&tls.Config{RootCAs: tierSec.pool}),
		kgo.SASL(scram.Auth{User: "tier", Pass: "tier-secret"}.AsSha512Mechanism())}
}

func tierProxy(cfg *proxy.Config) {
	tierSecurity()
	f := func(name string) string { return filepath.Join(tierSec.files, name) }
	var err error
	if cfg.TLS, err = proxy.ServerTLS(f("server.pem"), f("server-key.pem"), "", nil); err != nil {
		panic(err)
	}
	if cfg.UpstreamTLS, err = upstream.TLSConfig(f("ca.pem"), "", "", ""); err != nil {
		panic(err)
	}
	cfg.UpstreamSASL = scram.Auth{User: "tier", Pass: "tier-secret"}.AsSha512Mechanism()
	cfg.SASLUsers = tierSec.users
}

// DescribeProducers needs READ on the topic in Kafka; the ACL file names no
// topics, so with one a principal sees only the producers it initialised:
// another principal's producer id and sequences stay hidden.
func TestSecurityDescribeProducersFiltered(t *testing.T) {
	b := newSecureBackend(t)
	p := terminatingProxy(t, b, `"User:alice": {idempotent: true}
"User:bob": {idempotent: true}
`)
	opts := map[string][]kgo.Opt{
		"alice": {clientTLS(b.ca), kgo.SASL(plain.Auth{User: "alice", Pass: "alice-secret"}.AsMechanism())},
		"bob":   {clientTLS(b.ca), kgo.SASL(scram.Auth{User: "bob", Pass: "bob-secret"}.AsSha256Mechanism())},
	}
	topic := createTopic(t, kadm.NewClient(newClient(t, p.Addr(), opts["alice"]...)), 1)
	pids := map[string]int64{}
	for who, o := range opts {
		cl := newClient(t, p.Addr(), append(o, kgo.DefaultProduceTopic(topic))...)
		if err := cl.ProduceSync(testCtx(t), kgo.StringRecord(who)).FirstErr(); err != nil {
			t.Fatal(err)
		}
		pid, _, err := cl.ProducerID(testCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		pids[who] = pid
	}
	for who, o := range opts {
		described, err := kadm.NewClient(newClient(t, p.Addr(), o...)).DescribeProducers(testCtx(t), kadm.TopicsSet{topic: {0: {}}})
		if err != nil {
			t.Fatal(err)
		}
		var seen []int64
		for _, d := range described.SortedPartitions() {
			if d.Err != nil {
				t.Fatalf("%s's DescribeProducers: %v", who, d.Err)
			}
			for _, pr := range d.ActiveProducers {
				seen = append(seen, pr.ProducerID)
			}
		}
		if len(seen) != 1 || seen[0] != pids[who] {
			t.Errorf("%s's DescribeProducers lists %v, want only its own %d (of %v)", who, seen, pids[who], pids)
		}
	}
}

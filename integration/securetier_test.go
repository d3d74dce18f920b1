package integration

// The secure tier's reach beyond the in-process proxy (security_test.go has
// its set-up): the eosproxy binary's flags, the librdkafka scripts'
// settings, franz-go sessions built without newClient, and the tests' fault
// hooks, which read Kafka frames and so must see them in the clear.

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"sync"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl/scram"
	xscram "github.com/xdg-go/scram"

	"github.com/eosproxy/eosproxy/cmd/eoscheck/check"
	"github.com/eosproxy/eosproxy/integration/faults"
)

// The tier's PLAIN user, for librdkafka: Debian's librdkafka (2.0.2) sends
// its nonce twice in SCRAM's client-final message (fixed in 2.6.1), which
// eosproxy's termination refuses as Kafka 4.1 does.
const tierPlainUser, tierPlainPass = "tier-plain", "tier-plain-secret"

// tierUsersYAML is the users file of the tier's eosproxy: "tier" for
// franz-go (SCRAM-SHA-512, also eosproxy's own user on the backend) and
// tierPlainUser for librdkafka.
const tierUsersYAML = "- {name: tier, mechanism: SCRAM-SHA-512, password: tier-secret}\n" +
	"- {name: " + tierPlainUser + ", mechanism: PLAIN, password: " + tierPlainPass + "}\n"

// sessionOpts are opts with the tier's TLS and user in front, for the
// franz-go clients a test builds itself (GroupTransactSession).
func sessionOpts(opts ...kgo.Opt) []kgo.Opt {
	if !secureTier {
		return opts
	}
	return append(tierClientOpts(), opts...)
}

// tierBinaryArgs are the eosproxy binary's flags for the tier: TLS and SASL
// termination on its listeners, TLS and SCRAM to the backend. The
// password goes in the environment (tierBinaryEnv), as a deployment keeps
// it off the command line.
func tierBinaryArgs() []string {
	if !secureTier {
		return nil
	}
	tierSecurity()
	f := func(name string) string { return filepath.Join(tierSec.files, name) }
	return []string{"--tls-cert", f("server.pem"), "--tls-key", f("server-key.pem"), "--sasl-users", f("users.yaml"),
		"--upstream-tls-ca", f("ca.pem"), "--upstream-sasl-mechanism", "SCRAM-SHA-512", "--upstream-sasl-username", "tier"}
}

func tierBinaryEnv() []string {
	if !secureTier {
		return nil
	}
	return []string{"EOSPROXY_UPSTREAM_SASL_PASSWORD=tier-secret"}
}

// rdkafkaTierArgs are a librdkafka script's --config settings for the
// tier: SASL_SSL as the PLAIN user.
func rdkafkaTierArgs() []string {
	if !secureTier {
		return nil
	}
	tierSecurity()
	return []string{"--config", "security.protocol=SASL_SSL", "--config", "ssl.ca.location=" + filepath.Join(tierSec.files, "ca.pem"),
		"--config", "sasl.mechanisms=PLAIN", "--config", "sasl.username=" + tierPlainUser, "--config", "sasl.password=" + tierPlainPass}
}

// backendDial opens a connection to a backend broker for a test's fault
// hook: plain TCP, or in the tier TLS, so the hook sees the Kafka frames
// eosproxy writes in the clear (hookDial puts it in eosproxy's path).
func backendDial(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, network, addr)
	if err != nil || !secureTier {
		return c, err
	}
	tierSecurity()
	host, _, _ := net.SplitHostPort(addr)
	tc := tls.Client(c, &tls.Config{RootCAs: tierSec.pool, ServerName: host})
	if err := tc.HandshakeContext(ctx); err != nil {
		c.Close()
		return nil, fmt.Errorf("tier TLS to %s: %w", addr, err)
	}
	return tc, nil
}

// hookDial is proxy.Config.Dial for a fault hook dialling with backendDial.
// In the tier eosproxy's TLS ends in the test, with the certificate the
// backend has, and the hook's connection carries the frames on: eosproxy
// still speaks TLS and SASL, and the hook still reads requests. A hook
// closing its connection closes eosproxy's.
func hookDial(hook faults.DialFunc) func(ctx context.Context, network, addr string) (net.Conn, error) {
	if !secureTier {
		return hook
	}
	tierSecurity()
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		up, err := hook(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		theirs, ours := net.Pipe()
		srv := tls.Server(ours, &tls.Config{Certificates: []tls.Certificate{tierSec.server}})
		var once sync.Once
		closeBoth := func() { once.Do(func() { srv.Close(); up.Close() }) }
		go func() { io.Copy(up, srv); closeBoth() }()
		go func() { io.Copy(srv, up); closeBoth() }()
		return theirs, nil
	}
}

// tierInjector is faults.NewInjector dialling with backendDial; its Dial
// goes through hookDial as proxy.Config.Dial.
func tierInjector(cfg faults.Config) (*faults.Injector, func(ctx context.Context, network, addr string) (net.Conn, error)) {
	cfg.Dial = backendDial
	inj := faults.NewInjector(cfg)
	return inj, hookDial(inj.Dial)
}

// sendFrame writes a request frame eosproxy wrote (size, header, body) to
// the broker at addr and waits for its answer: as is on a plain connection
// or, in the tier, decoded and sent by a franz-go client with the tier's
// TLS and user (a raw frame cannot pass SASL).
func sendFrame(t *testing.T, addr string, frame []byte) {
	t.Helper()
	if !secureTier {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write(frame); err != nil {
			t.Fatal(err)
		}
		var size [4]byte
		if _, err := io.ReadFull(c, size[:]); err != nil {
			t.Fatalf("answer to the held request: %v", err)
		}
		if _, err := io.CopyN(io.Discard, c, int64(binary.BigEndian.Uint32(size[:]))); err != nil {
			t.Fatalf("answer to the held request: %v", err)
		}
		return
	}
	req, err := decodeRequestFrame(frame)
	if err != nil {
		t.Fatalf("held request: %v", err)
	}
	seed := newClient(t, addr).SeedBrokers()[0] // the broker it was meant for
	if _, err := seed.Request(testCtx(t), req); err != nil {
		t.Fatalf("answer to the held request: %v", err)
	}
}

// decodeRequestFrame reads a request frame's header (v1, or v2 for a
// flexible version) and body.
func decodeRequestFrame(frame []byte) (kmsg.Request, error) {
	if len(frame) < 14 {
		return nil, fmt.Errorf("frame of %d bytes", len(frame))
	}
	b := frame[4:]
	key, version := int16(binary.BigEndian.Uint16(b)), int16(binary.BigEndian.Uint16(b[2:]))
	req := kmsg.RequestForKey(key)
	if req == nil {
		return nil, fmt.Errorf("unknown API key %d", key)
	}
	req.SetVersion(version)
	b = b[8:] // key, version, correlation id
	idLen := int16(binary.BigEndian.Uint16(b))
	b = b[2:]
	if idLen > 0 {
		b = b[idLen:]
	}
	if req.IsFlexible() {
		if len(b) == 0 || b[0] != 0 {
			return nil, fmt.Errorf("request header with tagged fields")
		}
		b = b[1:]
	}
	if err := req.ReadFrom(b); err != nil {
		return nil, fmt.Errorf("decode %s v%d: %w", kmsg.NameForKey(key), version, err)
	}
	return req, nil
}

// tierRawConn makes c, a test's raw connection to eosproxy, one the tier
// serves: TLS, then SCRAM-SHA-512 as the tier's user, in frames the test
// writes itself (correlation ids below 0, out of the test's way).
func tierRawConn(t *testing.T, c net.Conn) net.Conn {
	t.Helper()
	tierSecurity()
	host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
	tc := tls.Client(c, &tls.Config{RootCAs: tierSec.pool, ServerName: host})
	corr := int32(-1)
	roundTrip := func(req kmsg.Request, resp kmsg.Response) {
		t.Helper()
		if _, err := tc.Write(rawRequest(req, corr)); err != nil {
			t.Fatalf("tier SASL: %v", err)
		}
		corr--
		_, body := readResponse(t, tc)
		resp.SetVersion(req.GetVersion())
		if err := resp.ReadFrom(body); err != nil {
			t.Fatalf("tier SASL: decode %s: %v", kmsg.NameForKey(req.Key()), err)
		}
	}
	hs := kmsg.NewPtrSASLHandshakeRequest()
	hs.SetVersion(1)
	hs.Mechanism = "SCRAM-SHA-512"
	hsResp := kmsg.NewPtrSASLHandshakeResponse()
	if roundTrip(hs, hsResp); hsResp.ErrorCode != 0 {
		t.Fatalf("tier SASL handshake: %v", kerr.ErrorForCode(hsResp.ErrorCode))
	}
	client, err := xscram.SHA512.NewClient("tier", "tier-secret", "")
	if err != nil {
		t.Fatal(err)
	}
	conv := client.NewConversation()
	msg, err := conv.Step("")
	for err == nil && !conv.Done() {
		auth := kmsg.NewPtrSASLAuthenticateRequest()
		auth.SetVersion(1)
		auth.SASLAuthBytes = []byte(msg)
		resp := kmsg.NewPtrSASLAuthenticateResponse()
		if roundTrip(auth, resp); resp.ErrorCode != 0 {
			t.Fatalf("tier SASL authenticate: %v", kerr.ErrorForCode(resp.ErrorCode))
		}
		msg, err = conv.Step(string(resp.SASLAuthBytes))
	}
	if err != nil || !conv.Valid() {
		t.Fatalf("tier SCRAM exchange: %v (valid %v)", err, conv.Valid())
	}
	return tc
}

// tierEoscheck puts the tier's TLS and SASL on an eoscheck run: its kfake
// backend, its clients, the eosproxy binary's flags, and its drop relays
// (which end eosproxy's TLS with the backend's certificate and open their
// own to the backend, so the drops still read Kafka frames).
func tierEoscheck(cfg *check.Config) {
	if !secureTier {
		return
	}
	tierSecurity()
	cfg.Security = &check.Security{Kfake: tierKfakeOpts(),
		TLS:      &tls.Config{RootCAs: tierSec.pool},
		SASL:     scram.Auth{User: "tier", Pass: "tier-secret"}.AsSha512Mechanism(),
		RelayTLS: &tls.Config{Certificates: []tls.Certificate{tierSec.server}}}
	// eoscheck sets no environment: the password goes on the command line.
	cfg.ProxyArgs = append(append(cfg.ProxyArgs, tierBinaryArgs()...), "--upstream-sasl-password", "tier-secret")
}

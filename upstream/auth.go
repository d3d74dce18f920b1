package upstream

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/oauth"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// eosproxy's connections to the backend: TLS (Config.TLS) on every one, and
// eosproxy's own SASL credentials (Config.SASL) on its own connections (kgo
// clients, forwarding pipes) and on the paired connections of clients that
// eosproxy authenticated itself. The mechanisms are franz-go's.

const (
	mechPlain    = "PLAIN"
	mechScram256 = "SCRAM-SHA-256"
	mechScram512 = "SCRAM-SHA-512"
)

// SASLMechanism is the mechanism eosproxy authenticates to the backend with:
// PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 with user and password, or
// OAUTHBEARER with a static token (password) or a token file, read anew on
// every authentication so a refreshed token is used. "" is none.
func SASLMechanism(mechanism, user, password, tokenFile string) (sasl.Mechanism, error) {
	switch strings.ToUpper(mechanism) {
	case "":
		if user != "" || password != "" || tokenFile != "" {
			return nil, errors.New("upstream SASL credentials given without a mechanism")
		}
		return nil, nil
	case mechPlain:
		return plain.Auth{User: user, Pass: password}.AsMechanism(), needUser(user, password)
	case mechScram256:
		return scram.Auth{User: user, Pass: password}.AsSha256Mechanism(), needUser(user, password)
	case mechScram512:
		return scram.Auth{User: user, Pass: password}.AsSha512Mechanism(), needUser(user, password)
	case "OAUTHBEARER":
		if (password == "") == (tokenFile == "") {
			return nil, errors.New("upstream OAUTHBEARER takes a token (the password) or a token file, one of them")
		}
		if tokenFile == "" {
			return oauth.Auth{Token: password}.AsMechanism(), nil
		}
		return oauth.Oauth(func(context.Context) (oauth.Auth, error) {
			tok, err := os.ReadFile(tokenFile)
			if err != nil {
				return oauth.Auth{}, fmt.Errorf("upstream OAUTHBEARER token file: %w", err)
			}
			return oauth.Auth{Token: strings.TrimSpace(string(tok))}, nil
		}), nil
	}
	return nil, fmt.Errorf("upstream SASL mechanism %q: want PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER", mechanism)
}

func needUser(user, password string) error {
	if user == "" || password == "" {
		return errors.New("upstream SASL needs a username and a password")
	}
	return nil
}

// KgoOpts are the kgo options of every client eosproxy opens on the
// backend: TLS and SASL as configured (either may be nil).
func KgoOpts(tlsCfg *tls.Config, mech sasl.Mechanism) []kgo.Opt {
	var opts []kgo.Opt
	if tlsCfg != nil {
		opts = append(opts, kgo.DialTLSConfig(tlsCfg.Clone()))
	}
	if mech != nil {
		opts = append(opts, kgo.SASL(mech))
	}
	return opts
}

// TLSConfig is the TLS configuration of eosproxy's connections to the
// backend: caFile's CAs (default: the system roots), a client certificate
// if certFile and keyFile are given, and serverName to verify instead of
// each broker's host.
func TLSConfig(caFile, certFile, keyFile, serverName string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: serverName}
	if caFile != "" {
		pool, err := CertPool(caFile)
		if err != nil {
			return nil, fmt.Errorf("upstream TLS: %w", err)
		}
		cfg.RootCAs = pool
	}
	if (certFile == "") != (keyFile == "") {
		return nil, errors.New("upstream TLS: a client certificate needs both its certificate and key files")
	}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("upstream TLS client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// CertPool reads the PEM certificates of a CA file.
func CertPool(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("CA file %s holds no PEM certificate", file)
	}
	return pool, nil
}

// secure puts TLS on a new connection to the backend at addr and, if own,
// authenticates it with eosproxy's credentials. The connection is closed
// on failure.
func (c *Client) secure(ctx context.Context, conn net.Conn, addr string, own bool) (net.Conn, error) {
	host, _, _ := net.SplitHostPort(addr)
	if cfg := c.cfg.TLS; cfg != nil {
		cfg = cfg.Clone()
		if cfg.ServerName == "" {
			cfg.ServerName = host
		}
		tc := tls.Client(conn, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			conn.Close()
			return nil, fmt.Errorf("TLS to %s: %w", addr, err)
		}
		conn = tc
	}
	if own && c.cfg.SASL != nil {
		if d, ok := ctx.Deadline(); ok {
			conn.SetDeadline(d)
		}
		err := saslClient(ctx, conn, c.cfg.SASL, host)
		conn.SetDeadline(time.Time{})
		if err != nil {
			conn.Close()
			return nil, fmt.Errorf("SASL to %s: %w", addr, err)
		}
	}
	return conn, nil
}

// saslClient runs mech's client side of a SASL exchange on conn:
// SaslHandshake v1, then SaslAuthenticate v1 until the mechanism is done,
// as Kafka clients do.
func saslClient(ctx context.Context, conn net.Conn, mech sasl.Mechanism, host string) error {
	format := kmsg.NewRequestFormatter(kmsg.FormatterClientID("eosproxy"))
	var corr int32
	roundTrip := func(req kmsg.Request, resp kmsg.Response) error {
		corr++
		if _, err := conn.Write(format.AppendRequest(nil, req, corr)); err != nil {
			return err
		}
		var size [4]byte
		if _, err := io.ReadFull(conn, size[:]); err != nil {
			return err
		}
		n := int32(binary.BigEndian.Uint32(size[:]))
		if n < 4 || n > 1<<20 {
			return fmt.Errorf("%s answer of %d bytes", kmsg.NameForKey(req.Key()), n)
		}
		body := make([]byte, n)
		if _, err := io.ReadFull(conn, body); err != nil {
			return err
		}
		resp.SetVersion(req.GetVersion())
		return resp.ReadFrom(body[4:]) // after the correlation id (v1: no header tags)
	}
	hs := kmsg.NewPtrSASLHandshakeRequest()
	hs.Version, hs.Mechanism = 1, mech.Name()
	hsResp := kmsg.NewPtrSASLHandshakeResponse()
	if err := roundTrip(hs, hsResp); err != nil {
		return fmt.Errorf("SaslHandshake: %w", err)
	}
	if err := kerr.ErrorForCode(hsResp.ErrorCode); err != nil {
		return fmt.Errorf("SaslHandshake %s (enabled: %v): %w", mech.Name(), hsResp.SupportedMechanisms, err)
	}
	session, msg, err := mech.Authenticate(ctx, host)
	if err != nil {
		return err
	}
	for {
		a := kmsg.NewPtrSASLAuthenticateRequest()
		a.Version, a.SASLAuthBytes = 1, msg
		aResp := kmsg.NewPtrSASLAuthenticateResponse()
		if err := roundTrip(a, aResp); err != nil {
			return fmt.Errorf("SaslAuthenticate: %w", err)
		}
		if err := kerr.ErrorForCode(aResp.ErrorCode); err != nil {
			if aResp.ErrorMessage != nil {
				err = fmt.Errorf("%w: %s", err, *aResp.ErrorMessage)
			}
			return err
		}
		done, next, err := session.Challenge(aResp.SASLAuthBytes)
		if err != nil {
			return err
		}
		if done {
			return nil
		}
		msg = next
	}
}

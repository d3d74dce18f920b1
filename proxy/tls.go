package proxy

import (
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/eosproxy/eosproxy/upstream"
)

// ServerTLS is the TLS configuration of the client listeners: the
// certificate and key in certFile and keyFile and, with clientCAFile, client
// certificates required and verified against its CAs (mTLS). The files are
// read again on a handshake after any of them changed (a cheap stat per
// handshake), so a renewed certificate is served without a restart; a
// renewal that cannot be loaded keeps the previous one, with a log line.
func ServerTLS(certFile, keyFile, clientCAFile string, log func(error)) (*tls.Config, error) {
	if certFile == "" || keyFile == "" {
		return nil, errors.New("TLS needs both a certificate and a key file")
	}
	r := &tlsFiles{cert: certFile, key: keyFile, ca: clientCAFile, log: log}
	if _, err := r.current(); err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return r.current()
		},
	}, nil
}

// tlsFiles caches the server configuration made from its files, remade when
// a file's modification time or size changes.
type tlsFiles struct {
	cert, key, ca string
	log           func(error)

	mu    sync.Mutex
	stamp [3]fileStamp
	cfg   *tls.Config
}

type fileStamp struct {
	mod  time.Time
	size int64
}

func stampOf(path string) fileStamp {
	if path == "" {
		return fileStamp{}
	}
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{size: -1}
	}
	return fileStamp{fi.ModTime(), fi.Size()}
}

func (r *tlsFiles) current() (*tls.Config, error) {
	stamp := [3]fileStamp{stampOf(r.cert), stampOf(r.key), stampOf(r.ca)}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cfg != nil && stamp == r.stamp {
		return r.cfg, nil
	}
	cfg, err := r.load()
	if err != nil {
		if r.cfg == nil {
			return nil, err
		}
		if r.log != nil && stamp != r.stamp {
			r.log(fmt.Errorf("keeping the previous TLS certificate: %w", err))
		}
		r.stamp = stamp // logged once per change
		return r.cfg, nil
	}
	r.cfg, r.stamp = cfg, stamp
	return cfg, nil
}

func (r *tlsFiles) load() (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(r.cert, r.key)
	if err != nil {
		return nil, fmt.Errorf("TLS certificate %s / key %s: %w", r.cert, r.key, err)
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	if r.ca != "" {
		pool, err := upstream.CertPool(r.ca)
		if err != nil {
			return nil, err
		}
		cfg.ClientCAs, cfg.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

package integration

// A client connection that eosproxy must close before answering anything
// (its paired backend connection cannot be made, or dies during the first
// request) is reset, never closed in order: franz-go reads an orderly close
// before the first answer as a TLS or SASL misconfiguration, fails the
// records it was sending without retrying them, and GroupTransactSession
// then commits the transaction without them (data loss that eoscheck's
// secure tier met, eosproxy's paired dial failing while its relays dropped
// SASL exchanges). A dial that fails only for a moment is tried again while
// the client waits, so the client is answered.

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/eosproxy/eosproxy/proxy"
)

// faultyDial is eosproxy's upstream dial with faults the test turns on.
type faultyDial struct {
	failNext  atomic.Bool  // the next dial fails at once
	failAll   atomic.Bool  // every dial fails at once
	dropFirst atomic.Bool  // the next connection closes after its first write
	failed    atomic.Int32 // dials failed
}

func (f *faultyDial) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if f.failAll.Load() || f.failNext.CompareAndSwap(true, false) {
		f.failed.Add(1)
		return nil, &net.OpError{Op: "dial", Net: network, Err: syscall.ECONNREFUSED}
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, network, addr)
	if err != nil || !f.dropFirst.CompareAndSwap(true, false) {
		return c, err
	}
	return &dropAfterWrite{Conn: c}, nil
}

// dropAfterWrite closes itself once a write went through: the backend got
// the request, its answer is lost.
type dropAfterWrite struct{ net.Conn }

func (d *dropAfterWrite) Write(b []byte) (int, error) {
	n, err := d.Conn.Write(b)
	d.Conn.Close()
	return n, err
}

// firstAnswer sends ApiVersions on a new connection to addr and reads the
// answer's size: nil when answered.
func firstAnswer(t *testing.T, addr string) error {
	t.Helper()
	var c net.Conn
	var err error
	if secureTier {
		// eosproxy's TLS: an orderly close then sends close_notify first.
		c, err = tls.Dial("tcp", addr, &tls.Config{RootCAs: tierSec.pool})
	} else {
		c, err = net.Dial("tcp", addr)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	req := kmsg.NewPtrApiVersionsRequest()
	req.Version = 0
	if _, err := c.Write(kmsg.NewRequestFormatter().AppendRequest(nil, req, 1)); err != nil {
		return err
	}
	var size [4]byte
	if _, err := io.ReadFull(c, size[:]); err != nil {
		return err
	}
	if n := binary.BigEndian.Uint32(size[:]); n < 4 {
		t.Fatalf("answer of %d bytes", n)
	}
	return nil
}

func TestNewConnectionResetNotClosedBeforeFirstAnswer(t *testing.T) {
	b := newFake(t)
	f := &faultyDial{}
	p := startProxy(t, b, func(c *proxy.Config) {
		c.Dial = f.dial
		c.DialTimeout = 500 * time.Millisecond
	})
	// A broker's listener: its connections pair with that broker only
	// (the bootstrap listener's try every seed).
	brokers, err := kadm.NewClient(newClient(t, p.Addr())).BrokerMetadata(testCtx(t))
	if err != nil || len(brokers.Brokers) == 0 {
		t.Fatalf("brokers: %v %v", brokers, err)
	}
	addr := net.JoinHostPort(brokers.Brokers[0].Host, strconv.Itoa(int(brokers.Brokers[0].Port)))
	if err := firstAnswer(t, addr); err != nil {
		t.Fatalf("no fault: %v", err)
	}

	t.Run("dial fails once", func(t *testing.T) {
		before := f.failed.Load()
		f.failNext.Store(true)
		if err := firstAnswer(t, addr); err != nil {
			t.Fatalf("not answered after a dial that failed once: %v", err)
		}
		if f.failed.Load() == before {
			t.Fatal("no dial failed")
		}
	})

	wantReset := func(t *testing.T) {
		t.Helper()
		err := firstAnswer(t, addr)
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("closed in order before the first answer (%v): franz-go would not retry", err)
		}
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("want a connection reset, got %v", err)
		}
	}
	t.Run("backend unreachable", func(t *testing.T) {
		f.failAll.Store(true)
		defer f.failAll.Store(false)
		start := time.Now()
		wantReset(t)
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("reset after %v; dials are tried for 500 ms", d)
		}
	})
	t.Run("backend connection dies during the first request", func(t *testing.T) {
		if secureTier {
			t.Skip("the first write on eosproxy's backend connection is its own TLS and SASL, not the client's request")
		}
		f.dropFirst.Store(true)
		wantReset(t)
	})
	if err := firstAnswer(t, addr); err != nil {
		t.Fatalf("after the faults: %v", err)
	}
}

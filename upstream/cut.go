package upstream

import (
	"context"
	"errors"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Cut partitions this process from the backend while it is on, for fault
// tests (eoscheck's backend cuts): the clients can still reach eosproxy,
// eosproxy cannot reach the backend. It acts as a firewall that drops
// packets, not one that rejects them, because that is the harder case: no
// error tells eosproxy that it is cut off, its requests just go
// unanswered. So, while the cut is on, reads and writes of the connections
// it dialled block until their deadline (then fail as timeouts) or the end
// of the cut, and new dials block until their context ends. Nothing sent
// is lost: bytes not yet read stay in the kernel and arrive after the cut,
// as TCP's retransmission would deliver them, so a connection that
// outlives the cut carries on.
type Cut struct {
	dial func(ctx context.Context, network, addr string) (net.Conn, error)

	mu     sync.Mutex
	on     bool
	healed chan struct{} // closed when the cut ends; replaced when it starts
}

// NewCut is a cut, off, whose connections dial; nil: net.Dialer's.
func NewCut(dial func(ctx context.Context, network, addr string) (net.Conn, error)) *Cut {
	if dial == nil {
		d := &net.Dialer{}
		dial = d.DialContext
	}
	c := &Cut{dial: dial, healed: make(chan struct{})}
	close(c.healed)
	return c
}

// KgoOpts adds to opts what makes a kgo client dial through the cut (not
// with TLS, which kgo dials by itself); opts as they are for a nil Cut (no
// fault test).
func (c *Cut) KgoOpts(opts []kgo.Opt) []kgo.Opt {
	if c == nil {
		return opts
	}
	return append(opts, kgo.Dialer(c.Dial))
}

// Set turns the cut on or off.
func (c *Cut) Set(on bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if on == c.on {
		return
	}
	c.on = on
	if on {
		c.healed = make(chan struct{})
	} else {
		close(c.healed)
	}
}

// On reports whether the cut is on.
func (c *Cut) On() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.on
}

// healedCh is closed once the cut is off (already closed if it is).
func (c *Cut) healedCh() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.healed
}

// WatchFile turns the cut on while path exists, checking every interval
// until ctx ends: a test process outside can then cut eosproxy off without
// a signal of its own.
func (c *Cut) WatchFile(ctx context.Context, path string, interval time.Duration, log zerolog.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		_, err := os.Stat(path)
		on := err == nil
		if on != c.On() {
			c.Set(on)
			if on {
				log.Warn().Str("file", path).Msg("test fault: cut off from the backend (packets dropped) while the file exists")
			} else {
				log.Warn().Str("file", path).Msg("test fault: backend reachable again")
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// errCutDial is what a dial attempted during a cut fails with once its
// context ends, as a dial whose SYNs are dropped times out.
var errCutDial = errors.New("i/o timeout: backend cut off (test fault)")

// Dial dials addr, or, while the cut is on, waits for the cut to end or ctx
// to end first.
func (c *Cut) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	select {
	case <-c.healedCh():
	case <-ctx.Done():
		return nil, &net.OpError{Op: "dial", Net: network, Err: errCutDial}
	}
	conn, err := c.dial(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return &cutConn{Conn: conn, cut: c, closed: make(chan struct{})}, nil
}

// cutConn is a connection whose reads and writes wait out the cut.
type cutConn struct {
	net.Conn
	cut *Cut
	// Deadlines as set, in Unix nanoseconds (0: none): a wait during the
	// cut ends at them, as the blocked read or write would.
	rdl, wdl  atomic.Int64
	closeOnce sync.Once
	closed    chan struct{}
	// pending holds bytes read from the socket while the cut was on and
	// not yet handed out (a read that was blocked when the cut started);
	// only Read uses it, and reads are not concurrent.
	pending []byte
}

// wait blocks while the cut is on, until it ends (nil), the deadline dl
// passes (a timeout) or the connection is closed.
func (k *cutConn) wait(dl int64) error {
	healed := k.cut.healedCh()
	select {
	case <-healed:
		return nil
	default:
	}
	var timeout <-chan time.Time
	if dl != 0 {
		d := time.Until(time.Unix(0, dl))
		if d <= 0 {
			return os.ErrDeadlineExceeded
		}
		t := time.NewTimer(d)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case <-healed:
		return nil
	case <-timeout:
		return os.ErrDeadlineExceeded
	case <-k.closed:
		return net.ErrClosed
	}
}

func (k *cutConn) Read(p []byte) (int, error) {
	if err := k.wait(k.rdl.Load()); err != nil {
		return 0, &net.OpError{Op: "read", Net: "tcp", Err: err}
	}
	if len(k.pending) > 0 {
		n := copy(p, k.pending)
		k.pending = k.pending[n:]
		return n, nil
	}
	n, err := k.Conn.Read(p)
	if n > 0 && k.cut.On() {
		// These bytes arrived after the cut started: hold them until it
		// ends.
		k.pending = append(k.pending[:0], p[:n]...)
		if werr := k.wait(k.rdl.Load()); werr != nil {
			return 0, &net.OpError{Op: "read", Net: "tcp", Err: werr}
		}
		n = copy(p, k.pending)
		k.pending = k.pending[n:]
	}
	return n, err
}

func (k *cutConn) Write(p []byte) (int, error) {
	if err := k.wait(k.wdl.Load()); err != nil {
		return 0, &net.OpError{Op: "write", Net: "tcp", Err: err}
	}
	return k.Conn.Write(p)
}

func (k *cutConn) Close() error {
	k.closeOnce.Do(func() { close(k.closed) })
	return k.Conn.Close()
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func (k *cutConn) SetDeadline(t time.Time) error {
	k.rdl.Store(unixNano(t))
	k.wdl.Store(unixNano(t))
	return k.Conn.SetDeadline(t)
}

func (k *cutConn) SetReadDeadline(t time.Time) error {
	k.rdl.Store(unixNano(t))
	return k.Conn.SetReadDeadline(t)
}

func (k *cutConn) SetWriteDeadline(t time.Time) error {
	k.wdl.Store(unixNano(t))
	return k.Conn.SetWriteDeadline(t)
}

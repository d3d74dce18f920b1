package upstream

import (
	"context"
	"crypto/tls"
	"net"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Fence says whether eosproxy may still write to the backend: nil, or why
// not. In cluster mode it is the owner's lease (cluster.Member.WriteAllowed):
// an owner paused past its group session (SIGSTOP, a stalled VM) has been
// replaced by the time it runs again, and the goroutines that resume first
// may be in the middle of forwarding a commit or a client's batch that the
// next owner has written already. The log's fencing voids the paused
// owner's state changes, but a write to a user topic is not in the log: on
// a backend without idempotence nothing would drop it. Asking the fence
// before every write closes that window down to the instant between the
// check and the write's system call. A fence that refuses closes the
// connection, so that nothing queued behind the refused write goes out
// either.
type Fence func() error

// DialFunc dials a connection, as net.Dialer.DialContext does.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// Dial wraps dial so that every connection it makes asks f before each
// write; dial as it is for a nil Fence.
func (f Fence) Dial(dial DialFunc) DialFunc {
	if f == nil {
		return dial
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &fencedConn{Conn: c, fence: f}, nil
	}
}

// kgoOpt makes a kgo client dial through dial and f, with TLS on top when
// tlsCfg is set: kgo applies its own TLS dialing only to connections it
// dials itself.
func (f Fence) kgoOpt(dial DialFunc, tlsCfg *tls.Config, timeout time.Duration) kgo.Opt {
	fenced := f.Dial(dial)
	return kgo.Dialer(func(ctx context.Context, network, addr string) (net.Conn, error) {
		if timeout > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, timeout)
			defer cancel()
		}
		c, err := fenced(ctx, network, addr)
		if err != nil || tlsCfg == nil {
			return c, err
		}
		cfg := tlsCfg.Clone()
		if cfg.ServerName == "" {
			host, _, err := net.SplitHostPort(addr)
			if err != nil {
				c.Close()
				return nil, err
			}
			cfg.ServerName = host
		}
		tc := tls.Client(c, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			c.Close()
			return nil, err
		}
		return tc, nil
	})
}

// fencedConn is a connection whose writes ask the fence first.
type fencedConn struct {
	net.Conn
	fence Fence
}

func (c *fencedConn) Write(p []byte) (int, error) {
	if err := c.fence(); err != nil {
		c.Conn.Close()
		return 0, &net.OpError{Op: "write", Net: "tcp", Addr: c.RemoteAddr(), Err: err}
	}
	return c.Conn.Write(p)
}

package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/eosproxy/eosproxy/protocol"
)

const (
	ioBufSize = 64 << 10
	// maxInFlight bounds pipelined requests per connection awaiting a
	// response; Kafka clients default to 5, admin tools to 100.
	maxInFlight = 1024
	// keepBuf is the largest frame buffer a connection keeps between
	// requests: big enough for a producer's multi-partition requests (1 MiB
	// batches each by default), so a rare huge request does not pin memory.
	keepBuf = 8 << 20
	// spliceMin is the response remainder above which bytes go socket to
	// socket (splice on Linux) instead of through user space.
	spliceMin = 64 << 10
)

// conn is one client connection paired with one upstream connection. The
// reader forwards requests in order; the writer takes slots in the same order
// and answers each from the upstream's stream or locally, so responses reach
// the client in request order whichever source they come from.
type conn struct {
	p        *Proxy
	brokerID int32 // the upstream broker this listener stands for; -1: bootstrap
	log      zerolog.Logger
	cl       net.Conn
	up       net.Conn
	cr       *bufio.Reader
	cw       *bufio.Writer
	ur       *bufio.Reader
	uw       *bufio.Writer
	slots    chan slot
	ww       writerWait // order.go

	// who is the connection's principal once known (principal.go); sasl
	// its SASL exchange, used by the reader only.
	who  atomic.Pointer[string]
	sasl *saslSession
	// passAuthed: the backend accepted the client's SASL exchange
	// (pass-through); set by the writer before the client sees the answer.
	passAuthed atomic.Bool
	// topicOps: what the backend lets the connection's principal do on
	// each topic asked about, and until when that holds (topicauth.go);
	// groupRead: until when the backend's last yes to READ on each group
	// holds; ownCorr the last correlation id of eosproxy's own requests.
	// All the reader's.
	topicOps  map[string]topicOps
	groupRead map[string]time.Time
	ownCorr   int32

	writerDone chan struct{}
	stopping   atomic.Bool
	// held counts the queued requests, not yet answered, that a clean stop
	// waits for: all but the parked reads (parked).
	held      atomic.Int32
	closeOnce sync.Once
	// answered: bytes of a response reached the client's socket. Until
	// then the connection is closed with a reset (resetClose).
	answered atomic.Bool
	// ctx ends when the connection closes, releasing waits on other
	// connections' batches.
	ctx    context.Context
	cancel context.CancelFunc
}

func newConn(p *Proxy, cl, up net.Conn, log zerolog.Logger) *conn {
	ctx, cancel := context.WithCancel(context.Background())
	c := &conn{
		ctx:        ctx,
		cancel:     cancel,
		p:          p,
		log:        log,
		cl:         cl,
		up:         up,
		cr:         bufio.NewReaderSize(cl, ioBufSize),
		ur:         bufio.NewReaderSize(up, ioBufSize),
		uw:         bufio.NewWriterSize(up, ioBufSize),
		slots:      make(chan slot, maxInFlight),
		writerDone: make(chan struct{}),
	}
	c.cw = bufio.NewWriterSize(clientWriter{c}, ioBufSize)
	return c
}

// clientWriter writes to the client's socket and notes that it did.
type clientWriter struct{ c *conn }

func (w clientWriter) Write(b []byte) (int, error) {
	n, err := w.c.cl.Write(b)
	if n > 0 {
		w.c.answered.Store(true)
	}
	return n, err
}

// run serves the connection until either side closes it.
func (c *conn) run() {
	go func() {
		defer close(c.writerDone)
		if err := c.writeLoop(); err != nil && !c.stopping.Load() {
			c.logClose(err, "upstream")
		}
		c.close()
	}()
	err := c.readLoop()
	if err != nil {
		// Logged before the queue ends: the writer closes the connection
		// once it has drained the queue, and a client that sees the close
		// finds the reason in the log already.
		side := "client"
		if errors.As(err, new(*upstreamError)) {
			side = "upstream"
		}
		c.logClose(err, side)
	}
	c.endQueue()
	switch {
	case err != nil:
		c.close()
	case c.stopping.Load() && c.held.Load() == 0:
		// A clean stop, and all that is left in flight are parked reads:
		// cut them now rather than wait out their long polls.
		c.close()
	}
	<-c.writerDone
	c.close()
	// Requests read but never answered: their batches' fate is unknown.
	for s := range c.slots {
		s.abandon()
	}
}

// stop makes the connection finish the requests it has read and then close:
// the reader stops at its next read, the writer drains what is in flight.
func (c *conn) stop() {
	c.stopping.Store(true)
	c.cl.SetReadDeadline(aLongTimeAgo)
}

func (c *conn) close() {
	c.closeOnce.Do(func() {
		c.cancel()
		if c.answered.Load() {
			c.cl.Close()
		} else {
			resetClose(c.cl)
		}
		c.up.Close()
	})
}

// resetClose closes a client connection that has had no answer yet with a
// TCP reset rather than an orderly close. franz-go (v1.22) takes an orderly
// close before the first answer for a TLS or SASL misconfiguration: it does
// not retry, fails the records it was sending, and a transaction whose
// records failed that way can still commit without them (GroupTransactSession
// commits it). A reset is a network failure to every client: it reconnects
// and retries. A TLS connection is reset under its TLS layer, with no
// close_notify, which a client also reads as an orderly close.
func resetClose(cl net.Conn) {
	nc := cl
	if tc, ok := cl.(*tls.Conn); ok {
		nc = tc.NetConn()
	}
	if tcp, ok := nc.(*net.TCPConn); ok {
		tcp.SetLinger(0)
	}
	nc.Close()
}

func (c *conn) logClose(err error, side string) {
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
		c.log.Debug().Str("side", side).Msg("connection closed")
	case errors.As(err, new(*badRequest)):
		c.log.Warn().Err(err).Msg("closing client connection: bad request")
	default:
		c.log.Info().Err(err).Str("side", side).Msg("closing connection")
	}
}

// badRequest marks input from a client that eosproxy cannot handle; it is
// logged as a warning naming the reason, and only this connection closes.
type badRequest struct{ err error }

func (e *badRequest) Error() string { return e.err.Error() }
func (e *badRequest) Unwrap() error { return e.err }

// upstreamError marks a failed write toward the upstream broker seen by the
// client-side loop, so the log names the side that failed.
type upstreamError struct{ err error }

func (e *upstreamError) Error() string { return "write upstream: " + e.err.Error() }
func (e *upstreamError) Unwrap() error { return e.err }

func bad(format string, args ...any) error {
	return &badRequest{fmt.Errorf(format, args...)}
}

// readLoop reads and routes the client's requests until it stops; run
// ends the slot queue after it.
func (c *conn) readLoop() error {
	src := flushingReader{c.cr, c.uw}
	var buf []byte
	var szb [4]byte
	for {
		if idle := c.p.cfg.IdleTimeout; idle > 0 {
			c.cl.SetReadDeadline(time.Now().Add(idle))
			if c.stopping.Load() { // stop's deadline must win
				c.cl.SetReadDeadline(aLongTimeAgo)
			}
		}
		frame, err := protocol.ReadFrame(src, c.p.cfg.MaxRequestBytes, buf)
		if err != nil {
			switch {
			case c.stopping.Load() && errors.Is(err, os.ErrDeadlineExceeded):
				return c.uw.Flush()
			case errors.Is(err, os.ErrDeadlineExceeded):
				return bad("no complete request for %s (--idle-timeout)", c.p.cfg.IdleTimeout)
			case errors.Is(err, protocol.ErrFrameTooLarge), errors.Is(err, protocol.ErrFrameNegative),
				errors.Is(err, io.ErrUnexpectedEOF):
				return bad("read request: %w", err)
			}
			return err
		}
		if cap(frame) <= keepBuf {
			buf = frame[:0]
		}
		hdr, err := protocol.ParseRequestHeader(frame)
		if err != nil {
			return bad("request header: %w", err)
		}
		c.p.m.Request(hdr.APIKey, len(frame)+4)
		r := request{hdr: hdr, frame: frame, slot: slot{corr: hdr.CorrelationID, key: hdr.APIKey, ver: hdr.APIVersion, start: time.Now()}}
		if err := c.checkAuthenticated(hdr.APIKey); err != nil {
			return err
		}
		if h := route(hdr.APIKey); h != nil {
			if err := h(c, &r); err != nil {
				return err
			}
		}
		if !r.noResponse {
			if !parked(r.slot.key) {
				c.held.Add(1)
			}
			if !c.enqueue(r.slot) {
				return nil
			}
		}
		if r.closeAfter {
			return nil // the writer sends what is queued, then closes
		}
		if r.slot.local {
			continue
		}
		binary.BigEndian.PutUint32(szb[:], uint32(len(r.frame)))
		if _, err := c.uw.Write(szb[:]); err != nil {
			return &upstreamError{err}
		}
		if _, err := c.uw.Write(r.frame); err != nil {
			return &upstreamError{err}
		}
	}
}

// copyUpstream streams n response bytes from upstream to client without
// holding the whole response, flushing the client side before any read that
// could block so earlier responses are never held back.
func (c *conn) copyUpstream(n int) error {
	for n > 0 {
		if n-c.ur.Buffered() >= spliceMin {
			return c.spliceUpstream(n)
		}
		if c.ur.Buffered() == 0 {
			if err := c.cw.Flush(); err != nil {
				return err
			}
			if _, err := c.ur.Peek(1); err != nil {
				return fmt.Errorf("read upstream: %w", err)
			}
		}
		chunk, _ := c.ur.Peek(min(n, c.ur.Buffered()))
		if _, err := c.cw.Write(chunk); err != nil {
			return err
		}
		c.ur.Discard(len(chunk))
		n -= len(chunk)
	}
	return nil
}

// spliceUpstream sends what is buffered and then the rest of an n-byte
// response from the upstream socket straight to the client socket.
func (c *conn) spliceUpstream(n int) error {
	buffered, _ := c.ur.Peek(c.ur.Buffered())
	if _, err := c.cw.Write(buffered); err != nil {
		return err
	}
	c.ur.Discard(len(buffered))
	if err := c.cw.Flush(); err != nil {
		return err
	}
	rest := int64(n - len(buffered))
	if m, err := io.CopyN(c.cl, c.up, rest); err != nil {
		return fmt.Errorf("stream upstream response (%d of %d bytes): %w", m, rest, err)
	}
	return nil
}

// flushingReader flushes w before any read from r that could block, so data
// written to w is never held back while eosproxy waits for more input.
type flushingReader struct {
	r *bufio.Reader
	w *bufio.Writer
}

func (f flushingReader) Read(p []byte) (int, error) {
	if f.r.Buffered() == 0 && f.w.Buffered() > 0 {
		if err := f.w.Flush(); err != nil {
			return 0, err
		}
	}
	return f.r.Read(p)
}

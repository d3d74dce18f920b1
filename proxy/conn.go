package proxy

import (
	"bufio"
	"context"
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
	"github.com/twmb/franz-go/pkg/kmsg"

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

type respMode uint8

const (
	passThrough   respMode = iota // stream the upstream's bytes unchanged
	rewriteAddrs                  // decode, map broker addresses, re-encode
	capVersions                   // ApiVersions: cap to what eosproxy decodes
	localAnswer                   // answered by eosproxy, nothing upstream
	produceAnswer                 // idempotent Produce: record outcomes, merge local answers
	observeJoin                   // JoinGroup: passed unchanged, the member's generation noted
	observeGroup                  // Heartbeat, SyncGroup, LeaveGroup, ConsumerGroupHeartbeat: passed unchanged, the answer noted
	patchOffsets                  // OffsetFetch: decided commits' offsets filled in
)

// slot is one request awaiting its response, in the order the client sent it.
type slot struct {
	corr     int32
	key, ver int16
	mode     respMode
	body     []byte                   // localAnswer: the response body
	wait     func() []byte            // localAnswer made later: blocks until the body is ready
	plan     *producePlan             // produceAnswer
	join     *joinRequest             // observeJoin
	observe  func(int16, []byte)      // observeGroup
	fetch    *kmsg.OffsetFetchRequest // patchOffsets
}

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

	writerDone chan struct{}
	stopping   atomic.Bool
	closeOnce  sync.Once
	// ctx ends when the connection closes, releasing waits on other
	// connections' batches.
	ctx    context.Context
	cancel context.CancelFunc
}

func newConn(p *Proxy, cl, up net.Conn, log zerolog.Logger) *conn {
	ctx, cancel := context.WithCancel(context.Background())
	return &conn{
		ctx:        ctx,
		cancel:     cancel,
		p:          p,
		log:        log,
		cl:         cl,
		up:         up,
		cr:         bufio.NewReaderSize(cl, ioBufSize),
		cw:         bufio.NewWriterSize(cl, ioBufSize),
		ur:         bufio.NewReaderSize(up, ioBufSize),
		uw:         bufio.NewWriterSize(up, ioBufSize),
		slots:      make(chan slot, maxInFlight),
		writerDone: make(chan struct{}),
	}
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
		side := "client"
		if errors.As(err, new(*upstreamError)) {
			side = "upstream"
		}
		c.logClose(err, side)
		c.close()
	}
	<-c.writerDone
	c.close()
	// Requests read but never answered: their batches' fate is unknown.
	for s := range c.slots {
		s.plan.fail()
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
		c.cl.Close()
		c.up.Close()
	})
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

func (c *conn) readLoop() error {
	defer close(c.slots)
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
		s := slot{corr: hdr.CorrelationID, key: hdr.APIKey, ver: hdr.APIVersion}
		expectResponse := true
		switch {
		case hdr.APIKey == protocol.KeyApiVersions:
			s.mode = capVersions
			if hdr.APIVersion > protocol.MaxKnownVersion(hdr.APIKey) {
				s.mode, s.ver, s.body = localAnswer, 0, protocol.ApiVersionsFallback()
			}
		case protocol.IsDecoded(hdr.APIKey):
			if hdr.APIVersion > protocol.MaxProxyVersion(hdr.APIKey) {
				// eosproxy never advertises such a version; Kafka closes the
				// connection on a request version it does not support.
				return bad("%s v%d is newer than eosproxy supports", keyName(hdr.APIKey), hdr.APIVersion)
			}
			if protocol.AddressesPossible(hdr.APIKey, hdr.APIVersion) {
				s.mode = rewriteAddrs
			}
			switch hdr.APIKey {
			case protocol.KeyProduce:
				acks, err := protocol.ProduceAcks(hdr.APIVersion, frame[hdr.BodyOffset:])
				if err != nil {
					return bad("produce request: %w", err)
				}
				expectResponse = acks != 0
				if frame, err = c.produce(&s, frame, hdr, acks); err != nil {
					return err
				}
			case protocol.KeyFindCoordinator:
				body, err := c.p.findTxnCoordinator(c.ctx, hdr, frame[hdr.BodyOffset:])
				if err != nil {
					return err
				}
				if body != nil {
					s.mode, s.body = localAnswer, body
				}
			case protocol.KeyOffsetFetch:
				if c.p.coord.AnyOffsetsPending() {
					if body := c.p.unstableOffsets(hdr, frame[hdr.BodyOffset:]); body != nil {
						s.mode, s.body = localAnswer, body
					} else if req := c.p.decidedOffsetsFor(hdr, frame[hdr.BodyOffset:]); req != nil {
						s.mode, s.fetch = patchOffsets, req
					}
				}
			}
		case hdr.APIKey == protocol.KeyHeartbeat || hdr.APIKey == kmsg.SyncGroup.Int16() ||
			hdr.APIKey == kmsg.LeaveGroup.Int16() || hdr.APIKey == kmsg.ConsumerGroupHeartbeat.Int16():
			if obs := c.p.groups.groupObservation(hdr, frame); obs != nil {
				s.mode, s.observe = observeGroup, obs
			}
		case hdr.APIKey == protocol.KeyJoinGroup:
			if join := parseJoin(hdr, frame); join != nil {
				s.mode, s.join = observeJoin, join
			}
		case hdr.APIKey == protocol.KeyInitProducerID || hdr.APIKey == protocol.KeyDescribeProducers ||
			protocol.IsTxnKey(hdr.APIKey):
			if hdr.BodyOffset < 0 || hdr.APIVersion > protocol.MaxProxyVersion(hdr.APIKey) {
				return bad("%s v%d is newer than eosproxy supports", keyName(hdr.APIKey), hdr.APIVersion)
			}
			var body []byte
			var err error
			if protocol.IsTxnKey(hdr.APIKey) {
				body, err = c.answerTxn(c.ctx, hdr, frame[hdr.BodyOffset:])
			} else {
				body, err = c.p.answerLocally(c.ctx, hdr, frame[hdr.BodyOffset:])
			}
			if err != nil {
				return err
			}
			if body != nil {
				s.mode, s.body = localAnswer, body
			}
		}
		if expectResponse {
			select {
			case c.slots <- s:
			case <-c.writerDone:
				s.plan.fail()
				return nil
			}
		}
		if s.mode == localAnswer {
			continue
		}
		binary.BigEndian.PutUint32(szb[:], uint32(len(frame)))
		if _, err := c.uw.Write(szb[:]); err != nil {
			return &upstreamError{err}
		}
		if _, err := c.uw.Write(frame); err != nil {
			return &upstreamError{err}
		}
	}
}

func (c *conn) writeLoop() (err error) {
	var cur slot // the slot whose answer is being read
	defer func() {
		if err != nil {
			cur.plan.fail()
		}
	}()
	src := flushingReader{c.ur, c.cw}
	var hdr [8]byte
	var buf []byte
	for {
		var s slot
		var ok bool
		select {
		case s, ok = <-c.slots:
		default:
			if err := c.cw.Flush(); err != nil {
				return err
			}
			s, ok = <-c.slots
		}
		if !ok {
			return c.cw.Flush()
		}
		if s.mode == localAnswer {
			if s.wait != nil {
				if c.cw.Buffered() > 0 {
					if err := c.cw.Flush(); err != nil {
						return err
					}
				}
				s.body = s.wait()
			}
			if err := c.writeResponse(s, s.body); err != nil {
				return err
			}
			continue
		}
		cur = s
		if _, err := io.ReadFull(src, hdr[:]); err != nil {
			return fmt.Errorf("read upstream response to %s: %w", keyName(s.key), err)
		}
		size := int32(binary.BigEndian.Uint32(hdr[:4]))
		corr := int32(binary.BigEndian.Uint32(hdr[4:]))
		if corr != s.corr {
			return fmt.Errorf("upstream answered correlation id %d, expected %d for %s", corr, s.corr, keyName(s.key))
		}
		if size < 4 {
			return fmt.Errorf("upstream response of %d bytes", size)
		}
		if s.mode == passThrough {
			if _, err := c.cw.Write(hdr[:]); err != nil {
				return err
			}
			if err := c.copyUpstream(int(size) - 4); err != nil {
				return err
			}
			continue
		}
		if cap(buf) < int(size) {
			buf = make([]byte, size)
		}
		resp := buf[:size]
		copy(resp, hdr[4:])
		if _, err := io.ReadFull(src, resp[4:]); err != nil {
			return fmt.Errorf("read upstream response to %s: %w", keyName(s.key), err)
		}
		if err := c.rewrite(s, resp); err != nil {
			return err
		}
		if cap(buf) > keepBuf {
			buf = nil
		}
	}
}

// rewrite sends the client the upstream's response resp (correlation id
// onwards), rewritten as the slot's mode requires.
func (c *conn) rewrite(s slot, resp []byte) error {
	hlen, err := protocol.ResponseHeaderLen(s.key, s.ver, resp)
	if err != nil {
		return fmt.Errorf("upstream %s response: %w", keyName(s.key), err)
	}
	var body []byte
	switch s.mode {
	case produceAnswer:
		body, err = c.answerProduce(s.plan, s.ver, resp[hlen:])
	case capVersions:
		body, _, err = protocol.RewriteApiVersions(s.ver, resp[hlen:])
	case observeJoin:
		c.p.groups.noteJoin(s.join, s.ver, resp[hlen:])
	case observeGroup:
		s.observe(s.ver, resp[hlen:])
	case patchOffsets:
		body, err = c.p.patchOffsets(s.fetch, resp[hlen:])
	case rewriteAddrs:
		var may bool
		if may, err = protocol.MayCarryAddresses(s.key, s.ver, resp[hlen:]); may {
			body, err = protocol.RewriteAddresses(s.key, s.ver, resp[hlen:], c.p.mapBroker)
		}
	}
	if err != nil {
		return fmt.Errorf("upstream %s v%d response: %w", keyName(s.key), s.ver, err)
	}
	if body == nil {
		return c.writeFrame(resp)
	}
	return c.writeFrame(resp[:hlen], body)
}

// writeResponse frames a locally made response body with the header the
// client expects for the slot's key and version.
func (c *conn) writeResponse(s slot, body []byte) error {
	var hdr [5]byte
	binary.BigEndian.PutUint32(hdr[:], uint32(s.corr))
	h := hdr[:4]
	if flexible, _ := protocol.RequestIsFlexible(s.key, s.ver); flexible && s.key != protocol.KeyApiVersions {
		h = hdr[:5] // empty tag section
	}
	return c.writeFrame(h, body)
}

func (c *conn) writeFrame(parts ...[]byte) error {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	var szb [4]byte
	binary.BigEndian.PutUint32(szb[:], uint32(n))
	if _, err := c.cw.Write(szb[:]); err != nil {
		return err
	}
	for _, p := range parts {
		if _, err := c.cw.Write(p); err != nil {
			return err
		}
	}
	return nil
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

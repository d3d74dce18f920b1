package proxy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/eosproxy/eosproxy/protocol"
)

// Responses go back to the client in the order of its requests. Kafka
// processes one connection's requests in order and answers them so, and
// clients rely on it: the Java client takes each response for its oldest
// request in flight and closes the connection on a correlation id that does
// not match. eosproxy answers some requests itself, some only once a batch is
// durable, and passes the rest on, so answers come ready out of order. The
// reader therefore queues a slot for every request that expects a response,
// in request order, and the writer takes the slots in that order, waiting
// for each one's answer, whether it comes from the upstream connection (which
// answers in order too) or from eosproxy.

// slot is one request awaiting its response, in the order the client sent it.
// A slot is answered in one of three ways: locally (nothing was sent
// upstream), from the upstream's response made over by a responder, or from
// the upstream's bytes streamed through unchanged.
type slot struct {
	corr     int32
	key, ver int16
	start    time.Time     // when the request was read, for its latency
	local    bool          // answered by eosproxy: nothing went upstream
	body     []byte        // local: the response body
	wait     func() []byte // local, made later: blocks until the body is ready
	// answer makes the client's response from the upstream's; nil streams
	// the upstream's bytes through untouched.
	answer responder
	// own: a request of eosproxy's own (topicauth.go), whose answer goes
	// to answer and never to the client.
	own bool
}

// responder makes the client's response body from the upstream's body (the
// correlation id and header tags stripped); nil sends the upstream's
// response unchanged.
type responder interface {
	respond(c *conn, s *slot, body []byte) ([]byte, error)
}

// failer is a responder that holds something waiting for the upstream's
// answer (an idempotent Produce's batches): fail releases it when that
// answer will never be read.
type failer interface{ fail() }

// abandon releases what waits on the slot's answer.
func (s *slot) abandon() {
	if f, ok := s.answer.(failer); ok {
		f.fail()
	}
}

// enqueue hands the writer a slot; false when the writer is gone.
func (c *conn) enqueue(s slot) bool {
	select {
	case c.slots <- s:
	case <-c.writerDone:
		s.abandon()
		return false
	}
	if s.local {
		c.nudge()
	}
	return true
}

// The writer waits for the next response on the upstream socket itself,
// not on the slot queue: a slot that goes upstream is queued before its
// request is sent, so when the upstream's bytes arrive the slot is there.
// The reader then hands over a forwarded request without waking the writer
// (a goroutine wake-up, and often an OS thread's, per request), and only
// a slot answered locally, or the end of the requests, needs to wake it:
// nudge interrupts its wait with a read deadline in the past.
type writerWait struct {
	mu     sync.Mutex
	idle   bool // the writer waits on the upstream socket with nothing queued
	nudged bool // its wait was interrupted (the deadline is to be cleared)
	ended  bool // the reader has closed the queue
}

// nudge wakes the writer if it waits on the upstream socket.
func (c *conn) nudge() {
	c.ww.mu.Lock()
	if c.ww.idle {
		c.ww.idle, c.ww.nudged = false, true
		c.up.SetReadDeadline(aLongTimeAgo)
	}
	c.ww.mu.Unlock()
}

// endQueue closes the slot queue and wakes the writer to drain it.
func (c *conn) endQueue() {
	c.ww.mu.Lock()
	c.ww.ended = true
	c.ww.mu.Unlock()
	close(c.slots)
	c.nudge()
}

// nextSlot returns the next slot in request order (ok false once the queue
// is closed and drained), flushing what the client has been sent before it
// waits.
func (c *conn) nextSlot() (slot, bool, error) {
	select {
	case s, ok := <-c.slots:
		return s, ok, nil
	default:
	}
	if err := c.cw.Flush(); err != nil {
		return slot{}, false, err
	}
	for {
		c.ww.mu.Lock()
		if len(c.slots) > 0 || c.ww.ended {
			c.ww.mu.Unlock()
			s, ok := <-c.slots
			return s, ok, nil
		}
		c.ww.idle = true
		c.ww.mu.Unlock()
		_, err := c.ur.Peek(1)
		c.ww.mu.Lock()
		c.ww.idle = false
		nudged := c.ww.nudged
		c.ww.nudged = false
		if nudged {
			c.up.SetReadDeadline(time.Time{})
		}
		c.ww.mu.Unlock()
		switch {
		case err == nil:
			// A response: its slot was queued before its request went out.
			select {
			case s, ok := <-c.slots:
				return s, ok, nil
			default:
				return slot{}, false, errors.New("upstream sent a response to no request")
			}
		case nudged && errors.Is(err, os.ErrDeadlineExceeded):
			// Woken for a local slot or the end: look again.
		default:
			return slot{}, false, fmt.Errorf("read upstream: %w", err)
		}
	}
}

func (c *conn) writeLoop() (err error) {
	var cur slot // the slot whose answer is being read
	defer func() {
		if err != nil {
			cur.abandon()
		}
	}()
	src := flushingReader{c.ur, c.cw}
	var hdr [8]byte
	var buf []byte
	for {
		s, ok, err := c.nextSlot()
		if err != nil {
			return err
		}
		if !ok {
			return c.cw.Flush()
		}
		if c.onlyParked() {
			// A clean stop, the reader done, and s and every slot after it
			// parked reads: nothing left that the stop waits for.
			return c.cw.Flush()
		}
		if s.local {
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
			c.p.m.Answered(s.key, true, s.start)
			c.release(s)
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
		if s.answer == nil {
			if _, err := c.cw.Write(hdr[:]); err != nil {
				return err
			}
			if err := c.copyUpstream(int(size) - 4); err != nil {
				return err
			}
			c.p.m.Sent(int(size) + 4)
			c.p.m.Answered(s.key, false, s.start)
			c.release(s)
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
		if s.own {
			if err := c.answerOwn(s, resp); err != nil {
				return err
			}
			if cap(buf) > keepBuf {
				buf = nil
			}
			continue
		}
		if err := c.rewrite(s, resp); err != nil {
			return err
		}
		c.p.m.Answered(s.key, false, s.start)
		c.release(s)
		if cap(buf) > keepBuf {
			buf = nil
		}
	}
}

// parked says whether a request of this key may be cut unanswered at a
// clean stop. A Fetch waits upstream until data arrives or its max wait
// ends (franz-go's default is 5 s), a JoinGroup or SyncGroup until the
// group's rebalance completes; none changes anything that a cut loses
// (the backend holds the group, and the client fetches or rejoins
// elsewhere), while waiting for them holds up a restart, or in cluster
// mode the handover to the next owner.
func parked(key int16) bool {
	switch key {
	case protocol.KeyFetch, protocol.KeyJoinGroup, protocol.KeySyncGroup:
		return true
	}
	return false
}

// release notes that s was answered.
func (c *conn) release(s slot) {
	if !parked(s.key) {
		c.held.Add(-1)
	}
}

// onlyParked says whether the connection is stopping cleanly, the reader
// has queued its last request, and every request still unanswered is a
// parked read.
func (c *conn) onlyParked() bool {
	if !c.stopping.Load() || c.held.Load() != 0 {
		return false
	}
	c.ww.mu.Lock()
	defer c.ww.mu.Unlock()
	return c.ww.ended
}

// rewrite sends the client the upstream's response resp (correlation id
// onwards), made over by the slot's responder.
func (c *conn) rewrite(s slot, resp []byte) error {
	hlen, err := protocol.ResponseHeaderLen(s.key, s.ver, resp)
	if err != nil {
		return fmt.Errorf("upstream %s response: %w", keyName(s.key), err)
	}
	body, err := s.answer.respond(c, &s, resp[hlen:])
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
	c.p.m.Sent(n + 4)
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

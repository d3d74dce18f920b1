package integration

import (
	"context"
	"encoding/binary"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eosproxy/eosproxy/proxy"
)

// An idempotent batch whose first send reaches the backend only after
// eosproxy has looked for it, not found it and written it again (a write
// still in flight on the broker when eosproxy settled the unknown outcome:
// the window the content-digest look-up leaves open). Against a backend
// with idempotence eosproxy forwards under a producer id the backend gave it,
// with the client's epoch and sequences, so the backend drops the late copy.
func TestIdempotentLateWriteDroppedByBackend(t *testing.T) {
	b := newFake(t) // with idempotence
	h := &holder{held: make(chan struct{})}
	p := startProxy(t, b, func(c *proxy.Config) { c.Dial = hookDial(h.dial) })
	topic := createTopic(t, kadm.NewClient(newClient(t, p.Addr())), 1)
	prod := newClient(t, p.Addr(), kgo.DefaultProduceTopic(topic), kgo.ProducerLinger(0))
	ctx := testCtx(t)
	produce := func(from, to int) {
		for i := from; i < to; i++ {
			if err := prod.ProduceSync(ctx, &kgo.Record{Value: []byte(strconv.Itoa(i))}).FirstErr(); err != nil {
				t.Fatalf("produce %d: %v", i, err)
			}
		}
	}
	produce(0, 50)

	// The next Produce eosproxy forwards is held before it reaches the
	// backend, and eosproxy's connection breaks: the outcome is unknown.
	h.armed.Store(true)
	done := make(chan error, 1)
	go func() { done <- prod.ProduceSync(ctx, &kgo.Record{Value: []byte("50")}).FirstErr() }()
	<-h.held
	// The client retries; eosproxy looks for the batch in the backend, does
	// not find it (the backend has not got it) and writes it.
	if err := <-done; err != nil {
		t.Fatalf("produce 50: %v", err)
	}
	// Now the held first send reaches the backend.
	h.release(t)
	produce(51, 100)

	got, total := readBackendCommitted(t, b, topic)
	if total != 100 {
		t.Fatalf("backend holds %d records, want 100 (the late copy was written: %v)", total, got[0][45:])
	}
	checkAllOnceInOrder(t, got, 100)
}

// holder wraps eosproxy's backend connections: when armed, the next Produce
// request written is kept back and the connection closed, as if it were
// lost; release delivers it to the backend later, on a connection of its
// own, and waits for the answer.
type holder struct {
	armed atomic.Bool
	held  chan struct{}
	mu    sync.Mutex
	addr  string
	frame []byte
}

func (h *holder) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := backendDial(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return &holdConn{Conn: c, h: h, addr: addr}, nil
}

func (h *holder) release(t *testing.T) {
	t.Helper()
	h.mu.Lock()
	addr, frame := h.addr, h.frame
	h.mu.Unlock()
	sendFrame(t, addr, frame)
}

type holdConn struct {
	net.Conn
	h    *holder
	addr string
	buf  []byte
}

// Write passes whole request frames on; an armed holder takes the first
// Produce (API key 0) and the connection is closed under eosproxy.
func (c *holdConn) Write(b []byte) (int, error) {
	c.buf = append(c.buf, b...)
	for len(c.buf) >= 6 {
		n := 4 + int(binary.BigEndian.Uint32(c.buf))
		if len(c.buf) < n {
			break
		}
		frame := c.buf[:n]
		if binary.BigEndian.Uint16(frame[4:]) == 0 && c.h.armed.CompareAndSwap(true, false) {
			c.h.mu.Lock()
			c.h.addr, c.h.frame = c.addr, append([]byte(nil), frame...)
			c.h.mu.Unlock()
			c.Conn.Close()
			close(c.h.held)
			c.buf = nil
			return len(b), nil
		}
		if _, err := c.Conn.Write(frame); err != nil {
			return 0, err
		}
		c.buf = c.buf[n:]
	}
	return len(b), nil
}

// Package faults injects network faults between eosproxy and its backend, for
// the integration tests and, later, a chaos tool.
//
// Two tools:
//
//   - Injector.Dial, a drop-in for proxy.Config.Dial: it dials the real
//     address and returns a connection that follows the Kafka request frames
//     written through it (the 4-byte size prefix, across partial writes) and,
//     for chosen requests, closes the connection right after the whole frame
//     has been written. The backend receives and applies the request; the
//     writer never reads the answer. That is the "applied but unanswered"
//     outcome an idempotent proxy must resolve without writing twice.
//   - Relay, a real TCP relay on 127.0.0.1 that forwards to a target and can
//     drop every connection, or stop and start listening on the same port.
//
// Choices are made from a seeded math/rand/v2 source; the seed is logged so a
// failing run's fault schedule can be asked for again (with one connection
// the schedule repeats exactly; with several it also depends on how their
// requests interleave).
package faults

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// DialFunc opens a connection, as net.Dialer.DialContext does.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// Config chooses which requests lose their connection.
type Config struct {
	// Seed seeds the random choices; 0 takes one from the clock. Either
	// way Seed() returns it and Logf reports it.
	Seed uint64
	// Probability is the chance, per matching request, that the connection
	// is closed right after the request is written.
	Probability float64
	// EveryNth, if positive, also closes the connection after every Nth
	// matching request (counted over all connections of the Injector).
	EveryNth int64
	// Keys limits the faults to requests with these API keys (0 is
	// Produce); empty means every request.
	Keys []int16
	// Dial opens the real connection; default: a net.Dialer.
	Dial DialFunc
	// Logf reports the seed and every drop; nil is silent.
	Logf func(format string, args ...any)
}

// Injector hands out connections that drop after chosen requests.
type Injector struct {
	cfg  Config
	seed uint64
	keys map[int16]bool

	mu  sync.Mutex // guards rng
	rng *rand.Rand

	disabled atomic.Bool
	conns    atomic.Int64
	frames   atomic.Int64 // whole request frames written, any key
	matched  atomic.Int64 // frames whose key the faults apply to
	drops    atomic.Int64
}

// NewInjector returns an Injector for cfg; it is enabled.
func NewInjector(cfg Config) *Injector {
	seed := cfg.Seed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	if cfg.Dial == nil {
		d := &net.Dialer{}
		cfg.Dial = d.DialContext
	}
	in := &Injector{cfg: cfg, seed: seed, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
	if len(cfg.Keys) > 0 {
		in.keys = map[int16]bool{}
		for _, k := range cfg.Keys {
			in.keys[k] = true
		}
	}
	in.logf("faults: injector seed %d (probability %g, every-nth %d, keys %v)", seed, cfg.Probability, cfg.EveryNth, cfg.Keys)
	return in
}

func (in *Injector) logf(format string, args ...any) {
	if in.cfg.Logf != nil {
		in.cfg.Logf(format, args...)
	}
}

// Seed is the seed the random choices come from.
func (in *Injector) Seed() uint64 { return in.seed }

// SetEnabled turns the faults on or off (connections keep working either
// way); e.g. off while a test reads back what was written.
func (in *Injector) SetEnabled(on bool) { in.disabled.Store(!on) }

// Drops is how many connections the Injector has closed.
func (in *Injector) Drops() int64 { return in.drops.Load() }

// Matched is how many whole requests of the chosen keys were written.
func (in *Injector) Matched() int64 { return in.matched.Load() }

// Frames is how many whole requests were written, of any key.
func (in *Injector) Frames() int64 { return in.frames.Load() }

// Conns is how many connections the Injector has opened.
func (in *Injector) Conns() int64 { return in.conns.Load() }

// Dial opens a connection to addr through cfg.Dial and wraps it; it has the
// signature of proxy.Config.Dial.
func (in *Injector) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := in.cfg.Dial(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	in.conns.Add(1)
	return &frameConn{Conn: c, in: in, addr: addr}, nil
}

// Wrap wraps an open connection as Dial does (for a Relay's upstream side,
// or a connection made elsewhere).
func (in *Injector) Wrap(c net.Conn) net.Conn {
	in.conns.Add(1)
	return &frameConn{Conn: c, in: in, addr: c.RemoteAddr().String()}
}

// shouldDrop decides, after a whole request with API key key was written,
// whether to close the connection. key is -1 for a frame too short to hold
// one.
func (in *Injector) shouldDrop(key int16) bool {
	in.frames.Add(1)
	if in.keys != nil && !in.keys[key] {
		return false
	}
	n := in.matched.Add(1)
	if in.disabled.Load() {
		return false
	}
	if in.cfg.EveryNth > 0 && n%in.cfg.EveryNth == 0 {
		return true
	}
	if in.cfg.Probability <= 0 {
		return false
	}
	in.mu.Lock()
	r := in.rng.Float64()
	in.mu.Unlock()
	return r < in.cfg.Probability
}

// Dropped is the error a dropped connection's reads and writes return. It
// reads as a connection reset (errors.Is(err, syscall.ECONNRESET)), what a
// real broker going away looks like, and says that it was injected.
type Dropped struct {
	Addr string
	Key  int16
}

func (e *Dropped) Error() string {
	return fmt.Sprintf("connection to %s reset (fault injected after a request with API key %d)", e.Addr, e.Key)
}

func (e *Dropped) Unwrap() error { return syscall.ECONNRESET }

// frameConn follows the request frames written through it.
type frameConn struct {
	net.Conn
	in   *Injector
	addr string

	wmu sync.Mutex // serialises Write and the parser state
	// Parser state of the frame being written.
	sizeBuf [4]byte
	sizeN   int   // size prefix bytes seen
	left    int64 // body bytes still to come
	keyBuf  [2]byte
	keyN    int // API key bytes seen

	dropped atomic.Pointer[Dropped]
}

// scan advances the parser over b, stopping at the end of a frame. It
// returns how many bytes of b it consumed and, if a frame ended there, its
// API key.
func (c *frameConn) scan(b []byte) (n int, ended bool, key int16) {
	for n < len(b) {
		if c.sizeN < 4 {
			c.sizeBuf[c.sizeN] = b[n]
			c.sizeN++
			n++
			if c.sizeN == 4 {
				c.left = int64(int32(binary.BigEndian.Uint32(c.sizeBuf[:])))
				c.keyN = 0
				if c.left <= 0 {
					// An empty or negative frame: nothing follows its
					// prefix; the backend will close on it anyway.
					c.sizeN = 0
					return n, true, -1
				}
			}
			continue
		}
		if c.keyN < 2 {
			c.keyBuf[c.keyN] = b[n]
			c.keyN++
			n++
			c.left--
		} else {
			k := min(int64(len(b)-n), c.left)
			n += int(k)
			c.left -= k
		}
		if c.left == 0 {
			c.sizeN = 0
			key = -1
			if c.keyN == 2 {
				key = int16(binary.BigEndian.Uint16(c.keyBuf[:]))
			}
			return n, true, key
		}
	}
	return n, false, 0
}

// Write passes p on; if a request chosen for a fault ends within p, it
// writes up to the end of that request, closes the connection and returns
// the count written (with a Dropped error if p went on past the request).
func (c *frameConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if d := c.dropped.Load(); d != nil {
		return 0, d
	}
	written := 0
	for i := 0; i < len(p); {
		n, ended, key := c.scan(p[i:])
		i += n
		if !ended || !c.in.shouldDrop(key) {
			continue
		}
		w, err := c.Conn.Write(p[written:i])
		written += w
		if err != nil {
			return written, err
		}
		d := c.drop(key)
		if i < len(p) {
			return written, d
		}
		return written, nil
	}
	w, err := c.Conn.Write(p[written:])
	return written + w, err
}

func (c *frameConn) drop(key int16) *Dropped {
	d := &Dropped{Addr: c.addr, Key: key}
	c.dropped.Store(d)
	c.Conn.Close()
	n := c.in.drops.Add(1)
	c.in.logf("faults: drop %d: closed connection to %s after a whole request with API key %d", n, c.addr, key)
	return d
}

// Read reads from the connection; after a drop it fails as a reset
// connection does.
func (c *frameConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil {
		if d := c.dropped.Load(); d != nil {
			return n, d
		}
	}
	return n, err
}

// Close closes the connection; closing a dropped one is not an error.
func (c *frameConn) Close() error {
	err := c.Conn.Close()
	if c.dropped.Load() != nil {
		return nil
	}
	return err
}

// RelayConfig configures a Relay.
type RelayConfig struct {
	// Target is the address connections are forwarded to.
	Target string
	// Listen is the relay's address; default 127.0.0.1:0. After the first
	// start the relay keeps the port it got.
	Listen string
	// Dial opens the connection to Target; default a net.Dialer. An
	// Injector's Dial here makes the relay drop after chosen requests.
	Dial DialFunc
	// Logf reports drops and stops; nil is silent.
	Logf func(format string, args ...any)
	// TLS, if set, ends the clients' TLS at the relay (Dial then opens
	// the relay's own to Target), so an Injector in Dial reads the Kafka
	// frames in the clear.
	TLS *tls.Config
}

// Relay is a TCP relay on loopback in front of one target.
type Relay struct {
	cfg RelayConfig

	mu    sync.Mutex
	addr  string // fixed after the first listen
	ln    net.Listener
	pairs map[*pair]struct{}

	wg       sync.WaitGroup
	accepted atomic.Int64
	drops    atomic.Int64 // connections closed by Drop or Stop
}

type pair struct {
	client, upstream net.Conn
	once             sync.Once
}

func (p *pair) close() {
	p.once.Do(func() {
		p.client.Close()
		p.upstream.Close()
	})
}

// NewRelay starts a relay listening on cfg.Listen.
func NewRelay(cfg RelayConfig) (*Relay, error) {
	if cfg.Target == "" {
		return nil, errors.New("faults: relay without a target")
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	if cfg.Dial == nil {
		d := &net.Dialer{}
		cfg.Dial = d.DialContext
	}
	r := &Relay{cfg: cfg, addr: cfg.Listen, pairs: map[*pair]struct{}{}}
	if err := r.Start(); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *Relay) logf(format string, args ...any) {
	if r.cfg.Logf != nil {
		r.cfg.Logf(format, args...)
	}
}

// Addr is where the relay listens (the same across Stop and Start).
func (r *Relay) Addr() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.addr
}

// Start listens again after Stop, on the same address. Starting a running
// relay does nothing.
func (r *Relay) Start() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ln != nil {
		return nil
	}
	ln, err := net.Listen("tcp", r.addr)
	if err != nil {
		return fmt.Errorf("faults: relay listen on %s: %w", r.addr, err)
	}
	r.ln, r.addr = ln, ln.Addr().String()
	r.wg.Add(1)
	go r.accept(ln)
	return nil
}

func (r *Relay) accept(ln net.Listener) {
	defer r.wg.Done()
	for {
		cl, err := ln.Accept()
		if err != nil {
			return
		}
		r.accepted.Add(1)
		r.wg.Add(1)
		go r.serve(cl)
	}
}

func (r *Relay) serve(cl net.Conn) {
	defer r.wg.Done()
	if r.cfg.TLS != nil {
		cl = tls.Server(cl, r.cfg.TLS) // the handshake happens on the first read
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	up, err := r.cfg.Dial(ctx, "tcp", r.cfg.Target)
	cancel()
	if err != nil {
		r.logf("faults: relay %s: dial %s: %v", r.Addr(), r.cfg.Target, err)
		cl.Close()
		return
	}
	p := &pair{client: cl, upstream: up}
	r.mu.Lock()
	if r.ln == nil { // stopped while dialing
		r.mu.Unlock()
		p.close()
		return
	}
	r.pairs[p] = struct{}{}
	r.mu.Unlock()
	done := make(chan struct{}, 2)
	pump := func(dst, src net.Conn) {
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				if _, werr := dst.Write(buf[:n]); werr != nil {
					break
				}
			}
			if err != nil {
				break
			}
		}
		p.close() // Kafka does not half-close: one side gone ends both
		done <- struct{}{}
	}
	go pump(up, cl)
	go pump(cl, up)
	<-done
	<-done
	r.mu.Lock()
	delete(r.pairs, p)
	r.mu.Unlock()
}

// Drop closes every connection open through the relay and returns how many
// it closed; the relay keeps accepting new ones.
func (r *Relay) Drop() int {
	r.mu.Lock()
	ps := make([]*pair, 0, len(r.pairs))
	for p := range r.pairs {
		ps = append(ps, p)
		delete(r.pairs, p)
	}
	r.mu.Unlock()
	for _, p := range ps {
		p.close()
	}
	r.drops.Add(int64(len(ps)))
	if len(ps) > 0 {
		r.logf("faults: relay %s: dropped %d connections", r.Addr(), len(ps))
	}
	return len(ps)
}

// Stop stops listening and drops every connection: to a client the target
// is down. Start brings it back on the same address.
func (r *Relay) Stop() {
	r.mu.Lock()
	ln := r.ln
	r.ln = nil
	r.mu.Unlock()
	if ln != nil {
		ln.Close()
	}
	r.Drop()
}

// Close stops the relay and waits for its goroutines.
func (r *Relay) Close() {
	r.Stop()
	r.wg.Wait()
}

// Drops is how many connections Drop and Stop have closed.
func (r *Relay) Drops() int64 { return r.drops.Load() }

// Accepted is how many connections the relay has accepted.
func (r *Relay) Accepted() int64 { return r.accepted.Load() }

// Open is how many connections are open through the relay.
func (r *Relay) Open() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.pairs)
}

package faults

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

// frame builds a request frame: size prefix, API key, version 0, then pad
// bytes of filler.
func frame(key int16, pad int) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(4+pad))
	b = binary.BigEndian.AppendUint16(b, uint16(key))
	b = append(b, 0, 0)
	return append(b, bytes.Repeat([]byte{byte(key)}, pad)...)
}

// sink accepts one connection and returns everything written to it until
// the writer closes it.
func sink(t *testing.T) (addr string, got <-chan []byte) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	ch := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			ch <- nil
			return
		}
		defer c.Close()
		b, _ := io.ReadAll(c)
		ch <- b
	}()
	return ln.Addr().String(), ch
}

func TestDropAfterWholeFrameAcrossPartialWrites(t *testing.T) {
	frames := [][]byte{frame(0, 10), frame(3, 5), frame(0, 0), frame(0, 300)}
	var stream []byte
	for _, f := range frames {
		stream = append(stream, f...)
	}
	// The Produce frames are frames[0], [2] and [3]: every 2nd Produce
	// request is frames[2], so the connection closes right after it.
	want := len(frames[0]) + len(frames[1]) + len(frames[2])
	for _, chunk := range []int{1, 3, 7, len(stream)} {
		addr, got := sink(t)
		in := NewInjector(Config{EveryNth: 2, Keys: []int16{0}, Seed: 1, Logf: t.Logf})
		c, err := in.Dial(context.Background(), "tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		written := 0
		var werr error
		for written < len(stream) && werr == nil {
			var n int
			n, werr = c.Write(stream[written:min(written+chunk, len(stream))])
			written += n
		}
		if written != want {
			t.Fatalf("chunk %d: %d bytes written before the drop, want %d (err %v)", chunk, written, want, werr)
		}
		if werr == nil {
			t.Fatalf("chunk %d: writing on after the drop succeeded", chunk)
		}
		if !errors.Is(werr, syscall.ECONNRESET) {
			t.Fatalf("chunk %d: error %v does not read as a reset", chunk, werr)
		}
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("chunk %d: read after the drop: %v", chunk, err)
		}
		if b := <-got; !bytes.Equal(b, stream[:want]) {
			t.Fatalf("chunk %d: upstream received %d bytes, want the %d up to the end of the dropped frame", chunk, len(b), want)
		}
		if in.Drops() != 1 || in.Matched() != 2 || in.Frames() != 3 {
			t.Fatalf("chunk %d: drops %d matched %d frames %d, want 1 2 3", chunk, in.Drops(), in.Matched(), in.Frames())
		}
		c.Close()
	}
}

func TestProbabilityIsSeeded(t *testing.T) {
	schedule := func(seed uint64) []bool {
		in := NewInjector(Config{Seed: seed, Probability: 0.3})
		var out []bool
		for range 200 {
			out = append(out, in.shouldDrop(0))
		}
		return out
	}
	a, b := schedule(42), schedule(42)
	n := 0
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("seed 42 gives different schedules at %d", i)
		}
		if a[i] {
			n++
		}
	}
	if n < 30 || n > 90 {
		t.Fatalf("%d drops of 200 at probability 0.3", n)
	}
	in := NewInjector(Config{Seed: 42, Probability: 1})
	in.SetEnabled(false)
	if in.shouldDrop(0) {
		t.Fatal("a disabled injector dropped")
	}
}

func TestRelayDropStopStart(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() { // echo server
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	r, err := NewRelay(RelayConfig{Target: ln.Addr().String(), Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	echo := func() net.Conn {
		t.Helper()
		c, err := net.DialTimeout("tcp", r.Addr(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		b := make([]byte, 4)
		if _, err := io.ReadFull(c, b); err != nil || string(b) != "ping" {
			t.Fatalf("echo through relay: %q %v", b, err)
		}
		return c
	}
	c := echo()
	if n := r.Drop(); n != 1 {
		t.Fatalf("Drop closed %d connections, want 1", n)
	}
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("connection still open after Drop")
	}
	addr := r.Addr()
	echo().Close()
	r.Stop()
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatal("relay accepts while stopped")
	}
	if err := r.Start(); err != nil {
		t.Fatal(err)
	}
	if r.Addr() != addr {
		t.Fatalf("relay moved from %s to %s", addr, r.Addr())
	}
	echo().Close()
	if r.Drops() < 1 {
		t.Fatalf("drops %d", r.Drops())
	}
}

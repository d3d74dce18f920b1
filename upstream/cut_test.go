package upstream

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// TestCut: during a cut, reads and writes time out at their deadline and
// dials at their context's end; bytes sent meanwhile arrive, whole and in
// order, once the cut ends.
func TestCut(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 2)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	cut := NewCut(nil)
	conn, err := cut.Dial(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	peer := <-accepted
	defer peer.Close()

	cut.Set(true)
	if _, err := peer.Write([]byte("during")); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	buf := make([]byte, 6)
	if _, err := conn.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read during the cut: %v, want a timeout", err)
	}
	conn.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := conn.Write([]byte("x")); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("write during the cut: %v, want a timeout", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	var ne net.Error
	if _, err := cut.Dial(ctx, "tcp", ln.Addr().String()); !errors.As(err, &ne) || !errors.Is(err, errCutDial) {
		t.Fatalf("dial during the cut: %v, want a dial timeout", err)
	}

	// A read blocked when the cut ends carries on with what was sent.
	conn.SetDeadline(time.Time{})
	got := make(chan string, 1)
	go func() {
		b := make([]byte, 6)
		_, err := io.ReadFull(conn, b)
		if err != nil {
			got <- err.Error()
			return
		}
		got <- string(b)
	}()
	cut.Set(false)
	if s := <-got; s != "during" {
		t.Fatalf("after the cut read %q, want %q", s, "during")
	}
	if _, err := conn.Write([]byte("after")); err != nil {
		t.Fatalf("write after the cut: %v", err)
	}
	b := make([]byte, 5)
	if _, err := io.ReadFull(peer, b); err != nil || string(b) != "after" {
		t.Fatalf("peer read %q, %v", b, err)
	}
}

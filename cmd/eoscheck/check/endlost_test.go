package check

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// endLostFault makes a copier's first EndTxn never reach the coordinator,
// as when eosproxy is killed between a transaction's TxnOffsetCommit and its
// EndTxn: the write of the EndTxn request closes every connection of the
// copier, and dials are refused until the copier's End has failed and its
// group session ended (its heartbeat failed, or it was closed), so that it
// rejoins and fetches its offsets (RequireStable) while its transaction is
// still open at the coordinator, holding them.
type endLostFault struct {
	armed, down atomic.Bool
	endFailed   func() bool // the copier's End returned an error
	lost        atomic.Bool // the group session ended after the fault began
	mu          sync.Mutex
	conns       map[net.Conn]bool
}

func (f *endLostFault) check() {
	if f.down.Load() && f.endFailed() && f.lost.Load() {
		f.down.Store(false)
	}
}

func (f *endLostFault) dial(ctx context.Context, network, host string) (net.Conn, error) {
	f.check()
	if f.down.Load() {
		return nil, &net.OpError{Op: "dial", Net: network, Err: syscall.ECONNREFUSED}
	}
	conn, err := (&net.Dialer{}).DialContext(ctx, network, host)
	if err != nil {
		return nil, err
	}
	fc := &faultConn{Conn: conn, f: f}
	f.mu.Lock()
	f.conns[fc] = true
	f.mu.Unlock()
	return fc, nil
}

type faultConn struct {
	net.Conn
	f *endLostFault
}

func (c *faultConn) Write(p []byte) (int, error) {
	f := c.f
	f.check()
	// franz-go writes a request in one Write: length, then the key.
	if len(p) >= 6 && int16(binary.BigEndian.Uint16(p[4:6])) == kmsg.EndTxn.Int16() && f.armed.CompareAndSwap(true, false) {
		f.down.Store(true)
		f.mu.Lock()
		for cn := range f.conns {
			cn.(*faultConn).Conn.Close()
		}
		f.mu.Unlock()
	}
	if f.down.Load() {
		c.Conn.Close()
		return 0, errors.New("connection reset (fault)")
	}
	return c.Conn.Write(p)
}

// A copier whose EndTxn was lost (eosproxy killed after the transaction's
// TxnOffsetCommit, before its EndTxn) and whose group session was lost
// meanwhile must go on copying well within the transaction timeout. Against
// kfake directly: the backend answers as Kafka does (the open transaction's
// offsets are unstable until it ends), so this is the copier's recovery,
// whatever eosproxy does.
func TestCopierRecoversFromLostEndTxn(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	fake, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer fake.Close()
	addr := fake.ListenAddrs()[0]
	seed := uint64(time.Now().UnixNano())
	in, out, group := fmt.Sprintf("endlost-%d", seed), fmt.Sprintf("endlost-%d-out", seed), fmt.Sprintf("endlost-%d-g", seed)
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.DefaultProduceTopic(in))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	for _, topic := range []string{in, out} {
		if _, err := adm.CreateTopic(ctx, 1, 1, nil, topic); err != nil {
			t.Fatal(err)
		}
	}
	const records = 3000
	for i := range records {
		cl.Produce(ctx, &kgo.Record{Value: fmt.Appendf(nil, "0-%d", i)}, nil)
	}
	if err := cl.Flush(ctx); err != nil {
		t.Fatal(err)
	}

	log := &txnLog{start: time.Now()}
	f := &endLostFault{conns: map[net.Conn]bool{}, endFailed: func() bool { return log.unknown.Load() > 0 }}
	f.armed.Store(true)
	gone := func(context.Context, *kgo.Client, map[string][]int32) {
		if f.down.Load() {
			f.lost.Store(true)
		}
	}
	w := &copyWork{seed: seed, bootstrap: addr, in: in, out: out, group: group, log: log, adm: adm,
		// The transaction timeout far exceeds the wait below: only the
		// copier's own recovery can end the open transaction in time.
		sessionTimeout: 6 * time.Second, txnTimeout: 10 * time.Minute, commitHook: make(chan struct{}, 1),
		dial: f.dial,
		// The session is over once its partitions are lost (heartbeat
		// failed) or revoked (the copier closed it).
		clientOpts: []kgo.Opt{kgo.OnPartitionsLost(gone), kgo.OnPartitionsRevoked(gone)},
	}
	if err := w.start(ctx, 1); err != nil {
		t.Fatal(err)
	}
	defer w.finish()

	deadline := time.Now().Add(45 * time.Second)
	for {
		offs, err := adm.FetchOffsets(ctx, group)
		if err == nil {
			if o, ok := offs.Lookup(in, 0); ok && o.At == records {
				if log.unknown.Load() == 0 {
					t.Fatal("the fault did not happen: no End failed")
				}
				t.Logf("copied everything; %d commits, %d ends failed; notes %v", log.commits.Load(), log.unknown.Load(), log.examples)
				return
			}
		}
		if time.Now().After(deadline) {
			offs, _ := adm.FetchOffsets(ctx, group)
			o, _ := offs.Lookup(in, 0)
			t.Fatalf("the copier did not commit the whole input within 45 s (group offset %d of %d; fault down %v, lost %v; %d commits, %d ends failed); notes %v",
				o.At, records, f.down.Load(), f.lost.Load(), log.commits.Load(), log.unknown.Load(), log.examples)
		}
		select {
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

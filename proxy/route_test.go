package proxy

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/eosproxy/eosproxy/protocol"
)

// Each intercepted key goes to the handler in the file named for it; every
// other key has none and passes through.
func TestRouteTable(t *testing.T) {
	want := map[int16]string{
		0: "handleProduce", 1: "handleFetch", 3: "handleMetadata", 9: "handleOffsetFetch",
		10: "handleFindCoordinator", 11: "handleJoinGroup", 12: "handleHeartbeat", 13: "handleLeaveGroup",
		14: "handleSyncGroup", 17: "handleSASLHandshake", 18: "handleApiVersions", 22: "handleInitProducerID",
		24: "handleAddPartitionsToTxn", 25: "handleAddOffsetsToTxn", 26: "handleEndTxn",
		28: "handleTxnOffsetCommit", 36: "handleSASLAuthenticate", 60: "handleDescribeCluster", 61: "handleDescribeProducers",
		65: "handleDescribeTransactions", 66: "handleListTransactions", 68: "handleConsumerGroupHeartbeat",
		78: "handleShareFetch", 79: "handleShareAcknowledge",
	}
	for k := int16(-2); k < 1100; k++ {
		h := route(k)
		name := ""
		if h != nil {
			name = runtime.FuncForPC(reflect.ValueOf(h).Pointer()).Name()
			name = name[strings.LastIndexByte(name, '.')+1:]
		}
		if name != want[k] {
			t.Errorf("key %d (%s) routed to %q, want %q", k, keyName(k), name, want[k])
		}
	}
	// Every key eosproxy advertises as its own has a handler.
	for _, k := range protocol.AnsweredLocally {
		if route(k) == nil {
			t.Errorf("%s is answered locally but has no handler", keyName(k))
		}
	}
}

// connEnv is one client connection served by a conn of a Proxy in front of
// kfake. The conn's upstream is kfake's broker, or a connection the test
// plays the broker on (up).
type connEnv struct {
	p  *Proxy
	kf *kfake.Cluster
	cl net.Conn // the client's end
	cr *bufio.Reader
	up net.Conn // the broker's end, when the test plays it
	ur *bufio.Reader

	mu    sync.Mutex
	seen  []int16    // keys kfake was asked, by anyone
	asked chan int16 // the same, as they come (dropped when full)
}

func newConnEnv(t *testing.T, rawUpstream bool) *connEnv {
	t.Helper()
	kf, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kf.Close)
	env := &connEnv{kf: kf, asked: make(chan int16, 64)}
	kf.Control(func(req kmsg.Request) (kmsg.Response, error, bool) {
		kf.KeepControl()
		env.mu.Lock()
		env.seen = append(env.seen, req.Key())
		env.mu.Unlock()
		select {
		case env.asked <- req.Key():
		default:
		}
		return nil, nil, false
	})
	env.p, err = New(Config{Listen: "127.0.0.1:0", Upstreams: kf.ListenAddrs(), NoInstanceLease: true, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(env.p.Close)
	var up net.Conn
	if rawUpstream {
		up, env.up = net.Pipe()
		env.ur = bufio.NewReader(env.up)
	} else if up, err = net.Dial("tcp", kf.ListenAddrs()[0]); err != nil {
		t.Fatal(err)
	}
	var srv net.Conn
	env.cl, srv = net.Pipe()
	env.cr = bufio.NewReader(env.cl)
	c := newConn(env.p, srv, up, zerolog.Nop())
	done := make(chan struct{})
	go func() { defer close(done); c.run() }()
	t.Cleanup(func() {
		env.cl.Close()
		<-done
	})
	return env
}

// kfakeSaw reports whether kfake was asked for key.
func (env *connEnv) kfakeSaw(key int16) bool {
	env.mu.Lock()
	defer env.mu.Unlock()
	return slices.Contains(env.seen, key)
}

// send writes size-prefixed requests in one write, as a pipelining client.
func (env *connEnv) send(t *testing.T, frames ...[]byte) {
	t.Helper()
	var b []byte
	for _, f := range frames {
		b = append(b, f...)
	}
	go func() { env.cl.Write(b) }() // net.Pipe: the write completes as the conn reads
}

// req is a size-prefixed request frame with correlation id corr.
func req(key, version int16, corr int32, body []byte) []byte {
	f := requestFrame(key, version, body)
	binary.BigEndian.PutUint32(f[4:], uint32(corr))
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(f))), f...)
}

// readFrame reads one size-prefixed frame.
func readFrame(t *testing.T, r *bufio.Reader) []byte {
	t.Helper()
	f, err := protocol.ReadFrame(r, 1<<20, nil)
	if err != nil {
		t.Fatalf("read frame: %v", err)
	}
	return f
}

// response reads the client's next response, checks its correlation id and
// decodes its body as key's response at version.
func (env *connEnv) response(t *testing.T, key, version int16, corr int32) kmsg.Response {
	t.Helper()
	f := readFrame(t, env.cr)
	if got := int32(binary.BigEndian.Uint32(f)); got != corr {
		t.Fatalf("response with correlation id %d, want %d (%s)", got, corr, keyName(key))
	}
	hlen, err := protocol.ResponseHeaderLen(key, version, f)
	if err != nil {
		t.Fatal(err)
	}
	resp := kmsg.ResponseForKey(key)
	resp.SetVersion(version)
	if err := resp.ReadFrom(f[hlen:]); err != nil {
		t.Fatalf("%s v%d response: %v", keyName(key), version, err)
	}
	return resp
}

// Requests eosproxy does not intercept, or intercepts at no version it
// knows, reach the upstream byte for byte and its answers the client.
func TestRoutePassesThrough(t *testing.T) {
	env := newConnEnv(t, true)
	offsetCommit := kmsg.NewPtrOffsetCommitRequest()
	offsetCommit.Group = "g"
	cases := []struct {
		name string
		req  []byte
	}{
		{"unknown key", req(1000, 0, 1, []byte("whatever eosproxy cannot read"))},
		{"OffsetCommit", req(kmsg.OffsetCommit.Int16(), offsetCommit.Version, 2, offsetCommit.AppendTo(nil))},
		{"OffsetCommit, newer than kmsg", req(kmsg.OffsetCommit.Int16(), 99, 3, []byte{1, 2, 3})},
		{"JoinGroup, newer than kmsg", req(protocol.KeyJoinGroup, 99, 4, []byte{1, 2, 3})},
		{"Heartbeat, unreadable", req(protocol.KeyHeartbeat, 4, 5, []byte{0xff})},
		{"plain Produce, acks=1", req(protocol.KeyProduce, 9, 6, produceBody(9, nil, 1, oneRecordBatch("plain")))},
	}
	for _, tc := range cases {
		env.send(t, tc.req)
		got := readFrame(t, env.ur)
		if !bytes.Equal(got, tc.req[4:]) {
			t.Fatalf("%s: upstream got %x, client sent %x", tc.name, got, tc.req[4:])
		}
		// The upstream's answer, whatever it holds, reaches the client
		// unchanged.
		answer := append(slices.Clone(got[4:8]), "an answer eosproxy does not read"...)
		go env.up.Write(append(binary.BigEndian.AppendUint32(nil, uint32(len(answer))), answer...))
		if f := readFrame(t, env.cr); !bytes.Equal(f, answer) {
			t.Fatalf("%s: client got %x, upstream answered %x", tc.name, f, answer)
		}
	}
	// A Produce with acks=0 goes upstream and gets no answer: the next
	// response the client reads is the next request's.
	env.send(t, req(protocol.KeyProduce, 9, 7, produceBody(9, nil, 0, oneRecordBatch("fire and forget"))))
	if f := readFrame(t, env.ur); binary.BigEndian.Uint32(f[4:]) != 7 {
		t.Fatalf("acks=0 Produce: upstream got %x", f)
	}
	env.send(t, req(1000, 0, 8, nil))
	readFrame(t, env.ur)
	go env.up.Write([]byte{0, 0, 0, 4, 0, 0, 0, 8})
	if f := readFrame(t, env.cr); binary.BigEndian.Uint32(f) != 8 {
		t.Fatalf("after an acks=0 Produce, client got %x", f)
	}
}

// A version of a key eosproxy decodes or answers that is newer than it
// advertises closes the connection, as Kafka does, and nothing goes
// upstream.
func TestRouteClosesOnNewerVersion(t *testing.T) {
	for _, key := range []int16{protocol.KeyMetadata, protocol.KeyProduce, protocol.KeyEndTxn} {
		t.Run(keyName(key), func(t *testing.T) {
			env := newConnEnv(t, true)
			env.send(t, req(key, protocol.MaxProxyVersion(key)+1, 1, []byte{0}))
			if _, err := env.cr.ReadByte(); !errors.Is(err, io.EOF) {
				t.Fatalf("client connection: %v, want closed", err)
			}
			if _, err := env.ur.ReadByte(); !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrClosedPipe) {
				t.Fatalf("upstream got a byte or %v, want the connection closed", err)
			}
		})
	}
}

// Intercepted keys reach their handlers over a real connection to kfake:
// answers made by eosproxy never reach kfake, answers from kfake are made
// over, and all come back in request order.
func TestRouteHandlers(t *testing.T) {
	env := newConnEnv(t, false)
	meta := kmsg.NewPtrMetadataRequest()
	meta.SetVersion(12)
	find := kmsg.NewPtrFindCoordinatorRequest()
	find.SetVersion(3)
	find.CoordinatorType, find.CoordinatorKey = coordinatorTypeTxn, "txn"
	describe := kmsg.NewPtrDescribeTransactionsRequest()
	describe.TransactionalIDs = []string{"nope"}
	// Metadata first: its answer names the broker, which eosproxy then
	// names as the transaction coordinator.
	env.send(t, req(protocol.KeyMetadata, 12, 1, meta.AppendTo(nil)))
	m := env.response(t, protocol.KeyMetadata, 12, 1).(*kmsg.MetadataResponse)
	if len(m.Brokers) != 1 {
		t.Fatalf("Metadata: %d brokers", len(m.Brokers))
	}
	b := m.Brokers[0]
	listener, _ := env.p.brokers.lookup(b.NodeID)
	if listener == nil {
		t.Fatalf("Metadata names broker %d, which eosproxy has no listener for", b.NodeID)
	}
	if b.Host != env.p.advHost || b.Port != listener.port {
		t.Fatalf("Metadata names %s:%d, want eosproxy's listener %s:%d", b.Host, b.Port, env.p.advHost, listener.port)
	}
	// Pipelined: a request kfake answers between two eosproxy answers
	// ready at once; the answers keep request order.
	env.send(t,
		req(protocol.KeyFindCoordinator, 3, 2, find.AppendTo(nil)),
		req(protocol.KeyMetadata, 12, 3, meta.AppendTo(nil)),
		req(protocol.KeyDescribeTxns, 0, 4, describe.AppendTo(nil)),
		req(protocol.KeyApiVersions, 99, 5, nil),
	)
	fc := env.response(t, protocol.KeyFindCoordinator, 3, 2).(*kmsg.FindCoordinatorResponse)
	if fc.ErrorCode != 0 || fc.NodeID != b.NodeID || fc.Host != env.p.advHost || fc.Port != listener.port {
		t.Fatalf("FindCoordinator(txn) answered %d: node %d at %s:%d", fc.ErrorCode, fc.NodeID, fc.Host, fc.Port)
	}
	if m := env.response(t, protocol.KeyMetadata, 12, 3).(*kmsg.MetadataResponse); m.Brokers[0].Port != listener.port {
		t.Fatalf("second Metadata names port %d", m.Brokers[0].Port)
	}
	dt := env.response(t, protocol.KeyDescribeTxns, 0, 4).(*kmsg.DescribeTransactionsResponse)
	if len(dt.TransactionStates) != 1 || dt.TransactionStates[0].ErrorCode != kerr.TransactionalIDNotFound.Code {
		t.Fatalf("DescribeTransactions answered %+v", dt.TransactionStates)
	}
	// ApiVersions newer than eosproxy knows: Kafka's v0 fallback.
	if av := env.response(t, protocol.KeyApiVersions, 0, 5).(*kmsg.ApiVersionsResponse); av.ErrorCode != kerr.UnsupportedVersion.Code {
		t.Fatalf("ApiVersions v99 answered %d", av.ErrorCode)
	}
	for _, k := range []int16{protocol.KeyFindCoordinator, protocol.KeyDescribeTxns} {
		if env.kfakeSaw(k) {
			t.Errorf("%s reached kfake; eosproxy answers it", keyName(k))
		}
	}
	if !env.kfakeSaw(protocol.KeyMetadata) {
		t.Error("Metadata never reached kfake")
	}
}

package integration

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/eosproxy/eosproxy/proxy"
)

// rawRequest encodes req as a request frame with correlation id corr.
func rawRequest(req kmsg.Request, corr int32) []byte {
	hdr := binary.BigEndian.AppendUint16(nil, uint16(req.Key()))
	hdr = binary.BigEndian.AppendUint16(hdr, uint16(req.GetVersion()))
	hdr = binary.BigEndian.AppendUint32(hdr, uint32(corr))
	hdr = binary.BigEndian.AppendUint16(hdr, 4)
	hdr = append(hdr, "test"...)
	if req.IsFlexible() {
		hdr = append(hdr, 0)
	}
	body := req.AppendTo(hdr)
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(body))), body...)
}

// readResponse reads one response frame and returns its correlation id and
// everything after it.
func readResponse(t *testing.T, c net.Conn) (int32, []byte) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	var sz [4]byte
	if _, err := io.ReadFull(c, sz[:]); err != nil {
		t.Fatalf("read response: %v", err)
	}
	b := make([]byte, binary.BigEndian.Uint32(sz[:]))
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatalf("read response: %v", err)
	}
	return int32(binary.BigEndian.Uint32(b)), b[4:]
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if secureTier {
		return tierRawConn(t, c)
	}
	return c
}

// expectClosed fails unless the proxy closes c.
func expectClosed(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := io.ReadAll(c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("proxy kept the connection open")
	}
}

func TestBadInputClosesOnlyThatConnection(t *testing.T) {
	b := newFake(t)
	p := startProxy(t, b, func(c *proxy.Config) { c.MaxRequestBytes = 1 << 20 })
	adm := kadm.NewClient(newClient(t, p.Addr()))
	topic := createTopic(t, adm, 1)
	good := newClient(t, p.Addr(), kgo.DefaultProduceTopic(topic))
	produceN(t, good, topic, 0, 10)

	metaV99 := kmsg.NewPtrMetadataRequest()
	metaV99.SetVersion(12)
	tooNew := rawRequest(metaV99, 1)
	binary.BigEndian.PutUint16(tooNew[6:], 99)

	cases := []struct {
		name, reason string
		send         []byte
		halfClose    bool
	}{
		{"negative size", "negative frame size", []byte{0xff, 0xff, 0xff, 0xfe, 1, 2, 3}, false},
		{"oversized", "frame larger than the configured maximum", binary.BigEndian.AppendUint32(nil, 1<<20+1), false},
		{"truncated", "truncated frame", append(binary.BigEndian.AppendUint32(nil, 100), make([]byte, 10)...), true},
		{"short header", "frame too short", []byte{0, 0, 0, 3, 0, 3, 0}, false},
		{"garbage client id", "client id", []byte{0, 0, 0, 10, 0, 3, 0, 1, 0, 0, 0, 1, 0x7f, 0xff}, false},
		{"version too new", "Metadata v99 is newer", tooNew, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, p.Addr())
			if _, err := c.Write(tc.send); err != nil {
				t.Fatal(err)
			}
			if tc.halfClose {
				c.(*net.TCPConn).CloseWrite()
			}
			expectClosed(t, c)
			// Everyone else carries on.
			produceN(t, good, topic, 0, 10)
			if !strings.Contains(p.logs.String(), tc.reason) {
				t.Fatalf("no log line naming %q; logs:\n%s", tc.reason, p.logs.String())
			}
			if !strings.Contains(p.logs.String(), c.LocalAddr().String()) {
				t.Fatalf("log does not name client %s", c.LocalAddr())
			}
		})
	}
}

func TestApiVersions(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		p := startProxy(t, b)
		c := dial(t, p.Addr())

		// KIP-511: an unknown version gets a v0 answer with
		// UNSUPPORTED_VERSION and ApiVersions' own range.
		req := kmsg.NewPtrApiVersionsRequest()
		req.SetVersion(3)
		frame := rawRequest(req, 7)
		binary.BigEndian.PutUint16(frame[6:], 42)
		c.Write(frame)
		corr, body := readResponse(t, c)
		fb := kmsg.NewPtrApiVersionsResponse()
		if err := fb.ReadFrom(body); corr != 7 || err != nil || fb.ErrorCode != 35 || len(fb.ApiKeys) != 1 || fb.ApiKeys[0].ApiKey != 18 {
			t.Fatalf("fallback answer: corr %d err %v %+v", corr, err, fb)
		}

		req.ClientSoftwareName, req.ClientSoftwareVersion = "test", "1"
		c.Write(rawRequest(req, 8))
		corr, body = readResponse(t, c)
		resp := kmsg.NewPtrApiVersionsResponse()
		resp.SetVersion(3)
		if err := resp.ReadFrom(body); corr != 8 || err != nil || resp.ErrorCode != 0 {
			t.Fatalf("ApiVersions v3: corr %d err %v code %d", corr, err, resp.ErrorCode)
		}
		seen := map[int16]bool{}
		for _, k := range resp.ApiKeys {
			seen[k.ApiKey] = true
			if mk := kmsg.RequestForKey(k.ApiKey); mk != nil && isRewritten(k.ApiKey) && k.MaxVersion > mk.MaxVersion() {
				t.Fatalf("key %d advertised up to v%d, eosproxy decodes up to v%d", k.ApiKey, k.MaxVersion, mk.MaxVersion())
			}
		}
		for _, k := range []int16{0, 1, 3, 10, 18} {
			if !seen[k] {
				t.Fatalf("key %d not advertised", k)
			}
		}
		// eosproxy is the transaction coordinator: the transaction protocol
		// is its own (KIP-890's), whatever the backend finalized.
		var tv []string
		for _, f := range resp.FinalizedFeatures {
			if f.Name == "transaction.version" {
				tv = append(tv, fmt.Sprintf("%d..%d", f.MinVersionLevel, f.MaxVersionLevel))
			}
		}
		if fmt.Sprint(tv) != "[2..2]" {
			t.Fatalf("finalized transaction.version %v, want eosproxy's [2..2]", tv)
		}
		for _, k := range []int16{22, 24, 25, 26, 28, 65, 66} {
			if !seen[k] {
				t.Fatalf("transaction coordinator key %d not advertised", k)
			}
		}
	})
}

func isRewritten(key int16) bool {
	switch key {
	case 0, 1, 3, 10, 18, 60, 78, 79:
		return true
	}
	return false
}

// A request eosproxy answers itself must wait for the earlier requests that
// are still upstream: responses go out in request order.
func TestLocalAnswerWaitsForEarlierResponses(t *testing.T) {
	b := newFake(t)
	p := startProxy(t, b)
	// Learn the broker set first so the held Metadata below is the test's.
	if _, err := kadm.NewClient(newClient(t, p.Addr())).Metadata(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	arrived, release := make(chan struct{}), make(chan struct{})
	b.fake.ControlKey(int16(kmsg.Metadata), func(req kmsg.Request) (kmsg.Response, error, bool) {
		if req.GetVersion() != 9 { // the proxy's own look-ups use the newest
			return nil, nil, false
		}
		b.fake.DropControl()
		close(arrived)
		<-release
		return nil, nil, false
	})
	c := dial(t, p.Addr())
	meta := kmsg.NewPtrMetadataRequest()
	meta.SetVersion(9)
	c.Write(rawRequest(meta, 1))
	<-arrived
	av := kmsg.NewPtrApiVersionsRequest()
	av.SetVersion(3)
	frame := rawRequest(av, 2)
	binary.BigEndian.PutUint16(frame[6:], 42) // answered locally
	c.Write(frame)
	meta2 := kmsg.NewPtrMetadataRequest()
	meta2.SetVersion(9)
	c.Write(rawRequest(meta2, 3))
	close(release)
	for want := int32(1); want <= 3; want++ {
		if corr, _ := readResponse(t, c); corr != want {
			t.Fatalf("response %d has correlation id %d", want, corr)
		}
	}
}

func TestUpstreamDownThenBack(t *testing.T) {
	ports := freePorts(t, 3)
	b := newFake(t, kfake.Ports(ports...))
	p := startProxy(t, b)
	adm := kadm.NewClient(newClient(t, p.Addr()))
	topic := createTopic(t, adm, 1)
	b.fake.Close()

	// Down: a fresh client's request fails cleanly instead of hanging.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if _, err := kadm.NewClient(newClient(t, p.Addr(), kgo.RequestRetries(0))).Metadata(ctx); err == nil {
		t.Fatal("metadata succeeded with the upstream down")
	}
	// Logged once eosproxy has stopped trying (it tries again for a while
	// after quick failures).
	waitFor(t, "a log line for the unreachable upstream", 10*time.Second, func() bool {
		return strings.Contains(p.logs.String(), "upstream unreachable")
	})

	// Back on the same addresses: the proxy reconnects, nothing restarted.
	back, err := kfake.NewCluster(kfake.NumBrokers(3), kfake.Ports(ports...), kfake.AllowAutoTopicCreation())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(back.Close)
	prod := newClient(t, p.Addr(), kgo.DefaultProduceTopic(topic), kgo.AllowAutoTopicCreation())
	produceN(t, prod, topic, 0, 20)
	cons := newClient(t, p.Addr(), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	checkAllOnceInOrder(t, consumeAll(t, cons, 20), 20)
}

func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	var lns []net.Listener
	for i := 0; i < n; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	for _, ln := range lns {
		ln.Close()
	}
	return ports
}

// TestShutdownCutsParkedFetch: a clean stop finishes an in-flight produce
// and closes the listeners, but does not wait out a consumer's long poll (a Fetch parked
// upstream for up to its max wait, here far longer than the stop may take):
// the fetch's connection is cut and the consumer fetches again elsewhere.
func TestShutdownCutsParkedFetch(t *testing.T) {
	b := newFake(t)
	p := startProxy(t, b)
	adm := kadm.NewClient(newClient(t, p.Addr()))
	topic := createTopic(t, adm, 1)
	prod := newClient(t, p.Addr(), kgo.DefaultProduceTopic(topic), kgo.DisableIdempotentWrite())
	if _, err := kadm.NewClient(prod).Metadata(testCtx(t), topic); err != nil {
		t.Fatal(err)
	}

	// The consumer's fetch of an empty topic parks in the backend for a
	// minute, well past the stop's 30 s.
	idle := createTopic(t, adm, 1)
	fetching := make(chan struct{})
	var once sync.Once
	b.fake.ControlKey(int16(kmsg.Fetch), func(kmsg.Request) (kmsg.Response, error, bool) {
		b.fake.KeepControl()
		once.Do(func() { close(fetching) })
		return nil, nil, false
	})
	cons := newClient(t, p.Addr(), kgo.ConsumeTopics(idle), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(time.Minute), kgo.RequestTimeoutOverhead(time.Minute))
	go cons.PollFetches(testCtx(t))
	<-fetching

	arrived, release := make(chan struct{}), make(chan struct{})
	b.fake.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		b.fake.DropControl()
		close(arrived)
		<-release
		return nil, nil, false
	})
	produced := make(chan error, 1)
	prod.Produce(testCtx(t), &kgo.Record{Value: []byte("in flight")}, func(_ *kgo.Record, err error) { produced <- err })
	<-arrived

	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		shut <- p.Shutdown(ctx)
	}()
	close(release)
	if err := <-produced; err != nil {
		t.Fatalf("in-flight produce failed across shutdown: %v", err)
	}
	if err := <-shut; err != nil {
		t.Fatalf("shutdown waited for the parked fetch: %v", err)
	}
	if c, err := net.DialTimeout("tcp", p.Addr(), time.Second); err == nil {
		c.Close()
		t.Fatal("bootstrap listener still accepting after shutdown")
	}
}

func TestIdleTimeoutDropsSlowClient(t *testing.T) {
	b := newFake(t)
	p := startProxy(t, b, func(c *proxy.Config) { c.IdleTimeout = 300 * time.Millisecond })
	slow := dial(t, p.Addr())
	// Half a frame, then nothing: the proxy must not hold it for ever.
	slow.Write(append(binary.BigEndian.AppendUint32(nil, 100), 0, 3, 0))
	expectClosed(t, slow)
	if !strings.Contains(p.logs.String(), "--idle-timeout") {
		t.Fatalf("no log line naming the idle timeout:\n%s", p.logs.String())
	}
	// A client that keeps talking is not affected.
	cl := newClient(t, p.Addr())
	for i := 0; i < 3; i++ {
		if _, err := kadm.NewClient(cl).Metadata(testCtx(t)); err != nil {
			t.Fatal(err)
		}
	}
}

func TestMaxConnectionsRefusesWithLogLine(t *testing.T) {
	b := newFake(t)
	p := startProxy(t, b, func(c *proxy.Config) { c.MaxConnections = 2 })
	// Two connections that are known to be registered: each got an answer.
	for i := 0; i < 2; i++ {
		c := dial(t, p.Addr())
		av := kmsg.NewPtrApiVersionsRequest()
		av.SetVersion(3)
		c.Write(rawRequest(av, 1))
		readResponse(t, c)
	}
	// The refusal is a reset at once: it may reach the dialer before its
	// connect returns, which then fails with ECONNRESET (seen in CI).
	third, err := net.DialTimeout("tcp", p.Addr(), 5*time.Second)
	switch {
	case err == nil:
		t.Cleanup(func() { third.Close() })
		expectClosed(t, third)
	case !errors.Is(err, syscall.ECONNRESET):
		t.Fatal(err)
	}
	if !strings.Contains(p.logs.String(), "--max-connections reached") {
		t.Fatalf("no log line for the refusal:\n%s", p.logs.String())
	}
}

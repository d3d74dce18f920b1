package integration

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"
	"github.com/twmb/franz-go/pkg/sasl/plain"

	"github.com/eosproxy/eosproxy/proxy"
)

// produceN writes n records "i" to topic and fails on any error.
func produceN(t *testing.T, cl *kgo.Client, topic string, from, n int) {
	t.Helper()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for i := from; i < from+n; i++ {
		wg.Add(1)
		cl.Produce(testCtx(t), &kgo.Record{Topic: topic, Key: []byte(strconv.Itoa(i % 7)), Value: []byte(strconv.Itoa(i))}, func(_ *kgo.Record, err error) {
			defer wg.Done()
			if err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		t.Fatalf("produce: %v", firstErr)
	}
}

// consumeAll reads exactly want records of topic with cl and returns their
// values by partition, failing on timeout.
func consumeAll(t *testing.T, cl *kgo.Client, want int) map[int32][]int {
	t.Helper()
	ctx := testCtx(t)
	got := map[int32][]int{}
	n := 0
	for n < want {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("consumed %d of %d records before timeout", n, want)
		}
		for _, e := range fs.Errors() {
			t.Fatalf("fetch %s/%d: %v", e.Topic, e.Partition, e.Err)
		}
		fs.EachRecord(func(r *kgo.Record) {
			v, err := strconv.Atoi(string(r.Value))
			if err != nil {
				t.Fatalf("bad value %q", r.Value)
			}
			got[r.Partition] = append(got[r.Partition], v)
			n++
		})
	}
	if n != want {
		t.Fatalf("consumed %d records, want %d", n, want)
	}
	return got
}

// checkAllOnceInOrder asserts values 0..n-1 each appear once and ascend within
// each partition (the producer sends in ascending order per key).
func checkAllOnceInOrder(t *testing.T, got map[int32][]int, n int) {
	t.Helper()
	for p, vs := range got {
		for i := 1; i < len(vs); i++ {
			if vs[i-1] >= vs[i] {
				t.Fatalf("partition %d: %d after %d", p, vs[i], vs[i-1])
			}
		}
	}
	for v, c := range countValues(t, got, n) {
		if c != 1 {
			t.Fatalf("value %d seen %d times", v, c)
		}
	}
}

func TestProduceConsumeGroup(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		p := startProxy(t, b)
		adm := kadm.NewClient(newClient(t, p.Addr()))
		topic := createTopic(t, adm, 3)
		const n = 5000
		prod := newClient(t, p.Addr(), kgo.DefaultProduceTopic(topic))
		produceN(t, prod, topic, 0, n)

		group := topic + "-group"
		cons := newClient(t, p.Addr(), kgo.ConsumeTopics(topic), kgo.ConsumerGroup(group),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.DisableAutoCommit())
		got := consumeAll(t, cons, n)
		checkAllOnceInOrder(t, got, n)
		if err := cons.CommitUncommittedOffsets(testCtx(t)); err != nil {
			t.Fatalf("commit: %v", err)
		}
		offs, err := adm.FetchOffsets(testCtx(t), group)
		if err != nil {
			t.Fatal(err)
		}
		var total int64
		offs.Each(func(o kadm.OffsetResponse) {
			if o.Err != nil {
				t.Fatalf("offset %s/%d: %v", o.Topic, o.Partition, o.Err)
			}
			total += o.At
		})
		if total != n {
			t.Fatalf("committed offsets sum to %d, want %d", total, n)
		}
	})
}

func TestAdminThroughProxy(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		p := startProxy(t, b)
		adm := kadm.NewClient(newClient(t, p.Addr()))
		topic := createTopic(t, adm, 2)

		meta, err := adm.Metadata(testCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		if len(meta.Brokers) == 0 {
			t.Fatal("no brokers in metadata")
		}
		for _, br := range meta.Brokers {
			assertProxyAddr(t, p, b, br.Host, br.Port)
		}
		if _, ok := meta.Topics[topic]; !ok {
			t.Fatalf("topic %s missing from metadata", topic)
		}

		dc, err := kmsg.NewPtrDescribeClusterRequest().RequestWith(testCtx(t), newClient(t, p.Addr()))
		if err != nil || dc.ErrorCode != 0 {
			t.Fatalf("describe cluster: %v %v", err, dc)
		}
		if len(dc.Brokers) != len(meta.Brokers) {
			t.Fatalf("describe cluster lists %d brokers, metadata %d", len(dc.Brokers), len(meta.Brokers))
		}
		for _, br := range dc.Brokers {
			assertProxyAddr(t, p, b, br.Host, br.Port)
		}

		// FindCoordinator, batched (v4+) and single-key (v3) forms.
		for _, v := range []int16{3, 4} {
			req := kmsg.NewPtrFindCoordinatorRequest()
			req.SetVersion(v)
			req.CoordinatorKey = "g-" + topic
			req.CoordinatorKeys = []string{"g-" + topic}
			raw := newClient(t, p.Addr(), kgo.MaxVersions(maxVersion(int16(kmsg.FindCoordinator), v)))
			resp, err := req.RequestWith(testCtx(t), raw)
			if err != nil {
				t.Fatal(err)
			}
			if v < 4 {
				if resp.ErrorCode != 0 {
					t.Fatalf("find coordinator v%d: error %d", v, resp.ErrorCode)
				}
				assertProxyAddr(t, p, b, resp.Host, resp.Port)
				continue
			}
			for _, c := range resp.Coordinators {
				if c.ErrorCode != 0 {
					t.Fatalf("find coordinator v%d: error %d", v, c.ErrorCode)
				}
				assertProxyAddr(t, p, b, c.Host, c.Port)
			}
		}

		del, err := adm.DeleteTopics(testCtx(t), topic)
		if err != nil || del[topic].Err != nil {
			t.Fatalf("delete topic: %v %v", err, del[topic].Err)
		}
	})
}

func TestLeaderMoveFollowed(t *testing.T) {
	b := newFake(t)
	p := startProxy(t, b)
	adm := kadm.NewClient(newClient(t, p.Addr()))
	topic := createTopic(t, adm, 1)
	prod := newClient(t, p.Addr(), kgo.DefaultProduceTopic(topic))
	produceN(t, prod, topic, 0, 100)

	leader := b.fake.LeaderFor(topic, 0)
	next := (leader + 1) % 3
	if err := b.fake.MoveTopicPartition(topic, 0, next); err != nil {
		t.Fatal(err)
	}
	produceN(t, prod, topic, 100, 100)

	// KIP-951: the old leader answers NOT_LEADER with the new leader's node
	// endpoint, which must name eosproxy, not the upstream.
	meta, err := adm.Metadata(testCtx(t), topic)
	if err != nil {
		t.Fatal(err)
	}
	var oldAddr string
	for _, br := range meta.Brokers {
		if br.NodeID == leader {
			oldAddr = fmt.Sprintf("%s:%d", br.Host, br.Port)
		}
	}
	req := produceRequest(12, topic, map[int32][]byte{0: oneRecordBatch("to the old leader")})
	c := dial(t, oldAddr)
	c.Write(rawRequest(req, 1))
	_, body := readResponse(t, c)
	resp := kmsg.NewPtrProduceResponse()
	resp.SetVersion(12)
	if err := resp.ReadFrom(body[1:]); err != nil { // skip the empty header tags
		t.Fatal(err)
	}
	if code := resp.Topics[0].Partitions[0].ErrorCode; code != 6 {
		t.Fatalf("old leader answered error %d, want NOT_LEADER_OR_FOLLOWER", code)
	}
	if len(resp.Brokers) == 0 {
		t.Fatal("no node endpoints in the NOT_LEADER answer")
	}
	for _, br := range resp.Brokers {
		assertProxyAddr(t, p, b, br.Host, br.Port)
	}

	// The records after the move must have gone to the new leader; kfake
	// answers NOT_LEADER from the old one, so the client followed through
	// the proxy's listener for the new leader.
	cons := newClient(t, p.Addr(), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	checkAllOnceInOrder(t, consumeAll(t, cons, 200), 200)
}

func TestAcksZero(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		p := startProxy(t, b)
		adm := kadm.NewClient(newClient(t, p.Addr()))
		topic := createTopic(t, adm, 1)
		// With acks=0 the broker sends no response; the proxy must not wait
		// for one, or every later response on the connection would be
		// matched to the wrong request.
		prod := newClient(t, p.Addr(), kgo.DefaultProduceTopic(topic), kgo.RequiredAcks(kgo.NoAck()),
			kgo.DisableIdempotentWrite(), kgo.MaxBufferedRecords(1))
		for i := 0; i < 50; i++ {
			if err := prod.ProduceSync(testCtx(t), &kgo.Record{Value: []byte(strconv.Itoa(i))}).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
		// Metadata on the same client after the acks=0 produces still gets
		// its own answer.
		if _, err := kadm.NewClient(prod).Metadata(testCtx(t), topic); err != nil {
			t.Fatal(err)
		}
		cons := newClient(t, p.Addr(), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
		checkAllOnceInOrder(t, consumeAll(t, cons, 50), 50)
	})
}

func maxVersion(key int16, v int16) *kversion.Versions {
	vs := kversion.Stable()
	vs.SetMaxKeyVersion(key, v)
	return vs
}

func TestProxyRestartKeepsBrokerPorts(t *testing.T) {
	b := newFake(t)
	ports := &fixedPorts{m: map[int32]int32{}}
	p := startProxy(t, b, func(c *proxy.Config) { c.Ports = ports })
	adm := kadm.NewClient(newClient(t, p.Addr()))
	meta, err := adm.Metadata(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	// A restarted proxy reopens every broker listener at once, before any
	// client asks for metadata: clients holding cached addresses reconnect.
	p2 := startProxy(t, b, func(c *proxy.Config) { c.Ports = ports })
	for _, br := range meta.Brokers {
		assertProxyAddr(t, p2, b, br.Host, br.Port)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, br := range meta.Brokers {
		cl := newClient(t, fmt.Sprintf("%s:%d", br.Host, br.Port))
		if err := cl.Ping(ctx); err != nil {
			t.Fatalf("broker %d listener after restart: %v", br.NodeID, err)
		}
	}
}

// SASL handshake and authenticate frames pass through on the paired
// upstream connection: the backend authenticates the client.
func TestSASLPassesThrough(t *testing.T) {
	b := newFake(t, kfake.EnableSASL(), kfake.Superuser("PLAIN", "alice", "secret"))
	p := startProxy(t, b)
	cl := newClient(t, p.Addr(), kgo.SASL(plain.Auth{User: "alice", Pass: "secret"}.AsMechanism()))
	if _, err := kadm.NewClient(cl).Metadata(testCtx(t)); err != nil {
		t.Fatalf("authenticated client: %v", err)
	}
	wrong := newClient(t, p.Addr(), kgo.SASL(plain.Auth{User: "alice", Pass: "wrong"}.AsMechanism()), kgo.RequestRetries(0))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := kadm.NewClient(wrong).Metadata(ctx); err == nil {
		t.Fatal("a wrong password was accepted")
	}
}

package integration

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"
)

// A transaction's offsets were accepted at TxnOffsetCommit for a member of
// generation N; before eosproxy commits them to the backend, a second member
// joins and the group moves to N+1. Kafka's commit marker would apply them
// regardless; eosproxy commits them as a member of the new generation, so
// they are not lost (which would make the group copy the records again).
func TestTxnOffsetsSurviveRebalance(t *testing.T) {
	b := newNoEOSFake(t)
	p := startProxy(t, b)
	adm := kadm.NewClient(newClient(t, p.Addr()))
	topic := createTopic(t, adm, 4)
	group := topic + "-group"

	joined := func(cl *kgo.Client) (string, int32) {
		t.Helper()
		ctx := testCtx(t)
		for {
			cl.PollRecords(ctxWithin(ctx, 50*time.Millisecond), 1)
			if m, g := cl.GroupMetadata(); m != "" && g > 0 && len(cl.GetConsumeTopics()) > 0 {
				return m, g
			}
			if ctx.Err() != nil {
				t.Fatal("consumer never joined its group")
			}
		}
	}
	first := newClient(t, p.Addr(), kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic))
	member, gen := joined(first)

	x := initRawTxn(t, newClient(t, p.Addr()), topic+"-txn")
	x.addOffsets(group)
	req := kmsg.NewPtrTxnOffsetCommitRequest()
	req.TransactionalID, req.Group, req.ProducerID, req.ProducerEpoch = x.id, group, x.pid, x.epoch
	req.Generation, req.MemberID = gen, member
	rt := kmsg.NewTxnOffsetCommitRequestTopic()
	rt.Topic = topic
	for part := range int32(4) {
		rp := kmsg.NewTxnOffsetCommitRequestTopicPartition()
		rp.Partition, rp.Offset, rp.LeaderEpoch = part, int64(10+part), -1
		rt.Partitions = append(rt.Partitions, rp)
	}
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(testCtx(t), x.cl)
	if err != nil || resp.Topics[0].Partitions[0].ErrorCode != 0 {
		t.Fatalf("TxnOffsetCommit: %v %+v", err, resp)
	}

	// A second member joins: the group rebalances to a new generation.
	second := newClient(t, p.Addr(), kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic))
	_, gen2 := joined(second)
	ctx := testCtx(t)
	for {
		if _, g := first.GroupMetadata(); g == gen2 {
			break
		}
		first.PollRecords(ctxWithin(ctx, 50*time.Millisecond), 1)
		if ctx.Err() != nil {
			t.Fatal("the first member never rejoined")
		}
	}
	if gen2 <= gen {
		t.Fatalf("generation %d after the second member joined, was %d", gen2, gen)
	}
	if code := x.end(true); code != 0 {
		t.Fatalf("EndTxn(commit): %d", code)
	}
	backendOffsetsReach(t, b, group, topic, map[int32]int64{0: 10, 1: 11, 2: 12, 3: 13})
}

// ctxWithin is ctx bounded to d more.
func ctxWithin(ctx context.Context, d time.Duration) context.Context {
	c, cancel := context.WithTimeout(ctx, d)
	time.AfterFunc(d, cancel)
	return c
}

// A transactional Produce must use acks=all: Kafka answers any other
// INVALID_REQUIRED_ACKS, and so does eosproxy (acks=0 has no answer to carry
// it; the connection closes).
func TestTxnProduceRequiresAcksAll(t *testing.T) {
	b := newNoEOSFake(t)
	p := startProxy(t, b)
	topic := createTopic(t, kadm.NewClient(newClient(t, p.Addr())), 1)
	raw := newClient(t, p.Addr())
	x := initRawTxn(t, raw, topic+"-txn")
	req := produceRequest(12, topic, map[int32][]byte{0: transactionalBatch(x.pid, x.epoch, 0, "v")})
	req.TransactionID = &x.id
	// kgo sends a raw Produce with its client's acks setting.
	acks1 := newClient(t, p.Addr(), kgo.RequiredAcks(kgo.LeaderAck()), kgo.DisableIdempotentWrite())
	resp, err := req.RequestWith(testCtx(t), acks1)
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.Topics[0].Partitions[0].ErrorCode; got != 21 {
		t.Fatalf("transactional Produce with acks=1 answered %d, want INVALID_REQUIRED_ACKS (21)", got)
	}
	if n := endOffsetsSum(t, b, topic); n != 0 {
		t.Fatalf("backend holds %d records", n)
	}
}

// Offsets of a decided commit are the group's committed offsets even before
// eosproxy has written them to the backend (as Kafka's are once its marker is
// written): an OffsetFetch through eosproxy answers them at once, so a member
// joining meanwhile starts where the transaction left off.
func TestTxnDecidedOffsetsServedBeforeWritten(t *testing.T) {
	b := newNoEOSFake(t)
	p := startProxy(t, b)
	topic := createTopic(t, kadm.NewClient(newClient(t, p.Addr())), 2)
	group := topic + "-group"
	// Hold eosproxy's OffsetCommit to the backend until released.
	release := make(chan struct{})
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(release) }) })
	b.fake.ControlKey(int16(kmsg.OffsetCommit), func(kmsg.Request) (kmsg.Response, error, bool) {
		b.fake.KeepControl()
		// SleepControl lets the cluster serve other requests meanwhile.
		b.fake.SleepControl(func() { <-release })
		return nil, nil, false
	})
	x := initRawTxn(t, newClient(t, p.Addr()), topic+"-txn")
	x.addOffsets(group)
	x.commitOffsets(group, topic, map[int32]int64{0: 42, 1: 7})
	if code := x.end(true); code != 0 {
		t.Fatalf("EndTxn(commit): %d", code)
	}
	for _, v := range []int16{7, 8} {
		cl := newClient(t, p.Addr(), kgo.MaxVersions(versionsUpTo(kmsg.OffsetFetch, v)))
		offs, err := kadm.NewClient(cl).FetchOffsets(testCtx(t), group)
		if err != nil {
			t.Fatalf("OffsetFetch v%d: %v", v, err)
		}
		for part, want := range map[int32]int64{0: 42, 1: 7} {
			if o, ok := offs.Lookup(topic, part); !ok || o.Err != nil || o.At != want {
				t.Fatalf("OffsetFetch v%d through eosproxy, %s/%d: %+v (found %v), want %d", v, topic, part, o, ok, want)
			}
		}
	}
	direct := kadm.NewClient(newClient(t, b.addrs[0]))
	backendAt := func() int64 {
		offs, err := direct.FetchOffsets(testCtx(t), group)
		if err != nil { // kfake: GROUP_ID_NOT_FOUND before the first commit
			return -1
		}
		if o, ok := offs.Lookup(topic, 0); ok {
			return o.At
		}
		return -1
	}
	if backendAt() == 42 {
		t.Fatal("the backend already holds the offsets: the test did not hold the OffsetCommit")
	}
	once.Do(func() { close(release) })
	backendOffsetsReach(t, b, group, topic, map[int32]int64{0: 42, 1: 7})
}

func versionsUpTo(key kmsg.Key, v int16) *kversion.Versions {
	vs := kversion.Stable()
	vs.SetMaxKeyVersion(int16(key), v)
	return vs
}

package proxy

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func waitFor(t *testing.T, within time.Duration, fn func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		done, state := fn()
		if done {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", within, state)
		}
		time.Sleep(20 * time.Millisecond) // poll interval, not synchronisation
	}
}

func groupClient(t *testing.T, addr string, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(addr)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// A group whose members do not all connect through eosproxy is detected
// (a member in the backend's group that never passed through eosproxy) and
// logged once per group; a decided commit whose offsets no identity can
// commit says why on each retry, and is written once the group lets it
// (here: the member that bypasses eosproxy leaves, the group is empty).
func TestGroupMembersBypassingEosproxy(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, "in"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	logs := &syncBuf{}
	p, err := New(Config{Listen: "127.0.0.1:0", Upstreams: c.ListenAddrs(), Log: zerolog.New(logs).Level(zerolog.InfoLevel)})
	if err != nil {
		t.Fatal(err)
	}
	p.groups.bypassGrace, p.groups.auditEvery = -1, -1 // at once, at every commit
	p.Start(context.Background())
	t.Cleanup(p.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const group = "g"

	through := groupClient(t, p.Addr(), kgo.ConsumerGroup(group), kgo.ConsumeTopics("in"))
	around := groupClient(t, c.ListenAddrs()[0], kgo.ConsumerGroup(group), kgo.ConsumeTopics("in"))
	var member string
	var gen int32
	waitFor(t, 30*time.Second, func() (bool, string) {
		for _, cl := range []*kgo.Client{through, around} {
			poll, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
			cl.PollRecords(poll, 1)
			cancel()
		}
		m1, g1 := through.GroupMetadata()
		m2, g2 := around.GroupMetadata()
		member, gen = m1, g1
		return m1 != "" && m2 != "" && g1 == g2 && g1 > 0, fmt.Sprintf("members %s/%d and %s/%d", m1, g1, m2, g2)
	})
	bypasser, _ := around.GroupMetadata()

	cl := groupClient(t, p.Addr())
	id := "copier"
	ireq := kmsg.NewPtrInitProducerIDRequest()
	ireq.TransactionalID, ireq.TransactionTimeoutMillis, ireq.ProducerID, ireq.ProducerEpoch = &id, 60_000, -1, -1
	iresp, err := ireq.RequestWith(ctx, cl)
	if err != nil || iresp.ErrorCode != 0 {
		t.Fatalf("InitProducerId: %v %v", err, kerr.ErrorForCode(iresp.ErrorCode))
	}
	commit := func(member string, gen int32) int16 {
		areq := kmsg.NewPtrAddOffsetsToTxnRequest()
		areq.TransactionalID, areq.ProducerID, areq.ProducerEpoch, areq.Group = id, iresp.ProducerID, iresp.ProducerEpoch, group
		if aresp, err := areq.RequestWith(ctx, cl); err != nil || aresp.ErrorCode != 0 {
			t.Fatalf("AddOffsetsToTxn: %v %+v", err, aresp)
		}
		req := kmsg.NewPtrTxnOffsetCommitRequest()
		req.TransactionalID, req.Group, req.ProducerID, req.ProducerEpoch = id, group, iresp.ProducerID, iresp.ProducerEpoch
		req.MemberID, req.Generation = member, gen
		rt := kmsg.NewTxnOffsetCommitRequestTopic()
		rt.Topic = "in"
		rp := kmsg.NewTxnOffsetCommitRequestTopicPartition()
		rp.Partition, rp.Offset, rp.LeaderEpoch = 0, 42, -1
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		resp, err := req.RequestWith(ctx, cl)
		if err != nil {
			t.Fatalf("TxnOffsetCommit: %v", err)
		}
		return resp.Topics[0].Partitions[0].ErrorCode
	}
	if code := commit(member, gen); code != 0 {
		t.Fatalf("TxnOffsetCommit as %s/%d: %v", member, gen, kerr.ErrorForCode(code))
	}
	const warning = "consumer group has members that do not connect through eosproxy"
	waitFor(t, 30*time.Second, func() (bool, string) {
		return strings.Contains(logs.String(), warning) && strings.Contains(logs.String(), bypasser),
			"no warning naming " + bypasser + " in the log: " + logs.String()
	})

	// The member that sent the offsets leaves; the one left bypasses
	// eosproxy, whose generation eosproxy cannot know: the commit's offsets
	// wait, and each retry says why.
	through.Close()
	waitFor(t, 30*time.Second, func() (bool, string) {
		// The group rebalances without it: a generation eosproxy never
		// sees, the member bypassing it being the only one left.
		poll, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		around.PollRecords(poll, 1)
		cancel()
		d, err := kadm.NewClient(around).DescribeGroups(ctx, group)
		if err != nil {
			return false, err.Error()
		}
		return d[group].State == "Stable" && len(d[group].Members) == 1,
			fmt.Sprintf("group %s %s with %d members", group, d[group].State, len(d[group].Members))
	})
	ereq := kmsg.NewPtrEndTxnRequest()
	ereq.TransactionalID, ereq.ProducerID, ereq.ProducerEpoch, ereq.Commit = id, iresp.ProducerID, iresp.ProducerEpoch, true
	if eresp, err := ereq.RequestWith(ctx, cl); err != nil || eresp.ErrorCode != 0 {
		t.Fatalf("EndTxn: %v %+v", err, eresp)
	}
	waitFor(t, 30*time.Second, func() (bool, string) {
		return strings.Contains(logs.String(), "never connected through eosproxy; every member of the group must"),
			"the commit's retries do not name the member bypassing eosproxy: " + logs.String()
	})
	if n := strings.Count(logs.String(), warning); n != 1 {
		t.Fatalf("bypass warning logged %d times, want once per group", n)
	}
	around.Close() // the group is empty: the admin identity commits
	adm := kadm.NewClient(groupClient(t, c.ListenAddrs()[0]))
	waitFor(t, 30*time.Second, func() (bool, string) {
		offs, err := adm.FetchOffsets(ctx, group)
		if err != nil {
			return false, err.Error()
		}
		o, ok := offs.Lookup("in", 0)
		return ok && o.At == 42, fmt.Sprintf("group offsets %+v", offs)
	})
}

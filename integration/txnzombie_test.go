package integration

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/eosproxy/eosproxy/integration/faults"
	"github.com/eosproxy/eosproxy/proxy"
)

// commitAs sends a TxnOffsetCommit for offsets of topic in group as the
// given member and returns the error code of its first partition (they are
// all answered alike).
func (x *rawTxn) commitAs(group, topic string, offsets map[int32]int64, member string, gen int32, instance *string) int16 {
	x.t.Helper()
	req := kmsg.NewPtrTxnOffsetCommitRequest()
	req.TransactionalID, req.Group, req.ProducerID, req.ProducerEpoch = x.id, group, x.pid, x.epoch
	req.Generation, req.MemberID, req.InstanceID = gen, member, instance
	rt := kmsg.NewTxnOffsetCommitRequestTopic()
	rt.Topic = topic
	for part, o := range offsets {
		rp := kmsg.NewTxnOffsetCommitRequestTopicPartition()
		rp.Partition, rp.Offset, rp.LeaderEpoch = part, o, -1
		rt.Partitions = append(rt.Partitions, rp)
	}
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(testCtx(x.t), x.cl)
	if err != nil {
		x.t.Fatalf("TxnOffsetCommit %s %s as %s/%d: %v", x.id, group, member, gen, err)
	}
	if len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != len(offsets) {
		x.t.Fatalf("TxnOffsetCommit %s %s: answer %+v", x.id, group, resp)
	}
	return resp.Topics[0].Partitions[0].ErrorCode
}

// joinedGroup polls cl until it is a member of its group with an
// assignment and returns its member id and generation (member epoch in a
// KIP-848 group).
func joinedGroup(t *testing.T, cl *kgo.Client) (string, int32) {
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

// assignedMember polls cl until it has read a record of its group's
// topics, so that it holds an assignment, and returns its member id and
// generation (member epoch in a KIP-848 group).
func assignedMember(t *testing.T, cl *kgo.Client) (string, int32) {
	t.Helper()
	ctx := testCtx(t)
	for {
		if fs := cl.PollRecords(ctxWithin(ctx, 50*time.Millisecond), 1); fs.NumRecords() > 0 {
			if m, g := cl.GroupMetadata(); m != "" && g > 0 {
				return m, g
			}
		}
		if ctx.Err() != nil {
			t.Fatal("consumer never read a record of its group's topics")
		}
	}
}

func wantCode(t *testing.T, what string, got, want int16) {
	t.Helper()
	if got != want {
		t.Fatalf("%s: %v, want %v", what, kerr.ErrorForCode(got), kerr.ErrorForCode(want))
	}
}

// eachGroupBackend runs fn against a kfake cluster without transactions
// (eosproxy is the only coordinator) and, when configured, the real broker.
func eachGroupBackend(t *testing.T, fn func(t *testing.T, b backend)) {
	t.Run("kfake", func(t *testing.T) { fn(t, newNoEOSFake(t)) })
	t.Run("kafka", func(t *testing.T) { fn(t, backend{name: "kafka", addrs: []string{realKafka(t)}}) })
}

// txnCommits sends the same TxnOffsetCommit through eosproxy and, on the
// real broker, straight to Kafka in a transaction of Kafka's own, and checks
// both answer want: Kafka is the reference.
type txnCommits struct {
	t      *testing.T
	group  string
	topic  string
	via    *rawTxn
	direct *rawTxn // nil on kfake
}

func newTxnCommits(t *testing.T, b backend, p *testProxy, group, topic, id string) *txnCommits {
	t.Helper()
	c := &txnCommits{t: t, group: group, topic: topic}
	c.via = initRawTxn(t, newClient(t, p.Addr()), id)
	c.via.addOffsets(group)
	if b.fake == nil {
		c.direct = initRawTxn(t, newClient(t, b.addrs[0]), id+"-direct")
		c.direct.addOffsets(group)
	}
	return c
}

// fence starts a new instance of the transactional ids (InitProducerId),
// fencing the producer c commits as.
func (c *txnCommits) fence() {
	c.t.Helper()
	for _, x := range []*rawTxn{c.via, c.direct} {
		if x == nil {
			continue
		}
		// The open transaction is aborted first: CONCURRENT_TRANSACTIONS
		// until it is.
		pollUntil(c.t, 30*time.Second, func() (bool, string) {
			req := kmsg.NewPtrInitProducerIDRequest()
			req.TransactionalID, req.TransactionTimeoutMillis = &x.id, 60_000
			req.ProducerID, req.ProducerEpoch = -1, -1
			resp, err := req.RequestWith(testCtx(c.t), x.cl)
			if err != nil {
				return false, err.Error()
			}
			return resp.ErrorCode == 0, fmt.Sprintf("InitProducerId %s: %v", x.id, kerr.ErrorForCode(resp.ErrorCode))
		})
	}
}

func (c *txnCommits) want(what string, offs map[int32]int64, member string, gen int32, instance *string, want int16) {
	c.t.Helper()
	if c.direct != nil {
		wantCode(c.t, what+" (Kafka itself)", c.direct.commitAs(c.group, c.topic, offs, member, gen, instance), want)
	}
	wantCode(c.t, what, c.via.commitAs(c.group, c.topic, offs, member, gen, instance), want)
}

// KIP-447: a TxnOffsetCommit from a member the group has moved past is
// refused as Kafka's group coordinator refuses it, so a zombie copier (paused
// past its session timeout, its partitions now another member's) aborts
// instead of committing what the new owner copies again: UNKNOWN_MEMBER_ID
// for a member no longer in the group, ILLEGAL_GENERATION for an older
// generation, FENCED_INSTANCE_ID for a static instance another member now
// holds. Checked from the group traffic eosproxy saw and, by a second
// eosproxy that saw none of it, from the backend.
func TestTxnOffsetCommitFencesZombieMembers(t *testing.T) {
	eachGroupBackend(t, testTxnOffsetCommitFencesZombieMembers)
}

func testTxnOffsetCommitFencesZombieMembers(t *testing.T, b backend) {
	p := startProxy(t, b)
	adm := kadm.NewClient(newClient(t, p.Addr()))
	topic := createTopic(t, adm, 2)
	group := topic + "-group"
	offs := map[int32]int64{0: 5, 1: 7}

	zombie := newClient(t, p.Addr(), kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic))
	zMember, zGen := joinedGroup(t, zombie)
	zombie.Close() // leaves the group, as a consumer timed out would be removed
	live := newClient(t, p.Addr(), kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic))
	member, gen := joinedGroup(t, live)
	if gen <= zGen {
		t.Fatalf("generation %d after the zombie left, was %d", gen, zGen)
	}

	x := newTxnCommits(t, b, p, group, topic, topic+"-zombie")
	x.want("zombie's TxnOffsetCommit", offs, zMember, zGen, nil, kerr.UnknownMemberID.Code)
	x.want("live member, older generation", offs, member, gen-1, nil, kerr.IllegalGeneration.Code)
	x.want("live member, current generation", offs, member, gen, nil, 0)

	// A second eosproxy has seen none of the group's traffic: it asks the
	// backend, then knows the generation its accepted commit named.
	q := startProxy(t, b, secondInstance)
	y := newTxnCommits(t, b, q, group, topic, topic+"-other")
	y.want("zombie's TxnOffsetCommit via a fresh eosproxy", offs, zMember, zGen, nil, kerr.UnknownMemberID.Code)
	y.want("live member via a fresh eosproxy", offs, member, gen, nil, 0)
	y.want("live member, older generation, via a fresh eosproxy", offs, member, gen-1, nil, kerr.IllegalGeneration.Code)
	// Admin-style commits (no member, generation -1) are not checked.
	y.want("admin-style TxnOffsetCommit", offs, "", -1, nil, 0)

	// A fenced producer is told so before its member is judged: Kafka
	// verifies the transaction first.
	f := newTxnCommits(t, b, p, group, topic, topic+"-fenced")
	f.fence()
	f.want("a fenced producer, zombie member", offs, zMember, zGen, nil, kerr.InvalidProducerEpoch.Code)

	// Static membership: the instance is held by the live static member.
	sgroup := group + "-static"
	inst := "copier-1"
	static := newClient(t, p.Addr(), kgo.ConsumerGroup(sgroup), kgo.ConsumeTopics(topic), kgo.InstanceID(inst))
	sMember, sGen := joinedGroup(t, static)
	z := newTxnCommits(t, b, p, sgroup, topic, topic+"-static")
	z.want("another member with the static instance", offs, sMember+"-old", sGen, &inst, kerr.FencedInstanceID.Code)
	z.want("the static member", offs, sMember, sGen, &inst, 0)
}

// KIP-848 groups (group.protocol=consumer): a TxnOffsetCommit is checked
// against the member epochs ConsumerGroupHeartbeat answers carried: a member
// that left is UNKNOWN_MEMBER_ID, an older epoch ILLEGAL_GENERATION (Kafka's
// answer to STALE_MEMBER_EPOCH on TxnOffsetCommit).
func TestTxnOffsetCommitKIP848Zombie(t *testing.T) {
	eachGroupBackend(t, testTxnOffsetCommitKIP848Zombie)
}

func testTxnOffsetCommitKIP848Zombie(t *testing.T, b backend) {
	p := startProxy(t, b)
	adm := kadm.NewClient(newClient(t, p.Addr()))
	topic := createTopic(t, adm, 4)
	group := topic + "-group"
	offs := map[int32]int64{0: 10, 1: 11, 2: 12, 3: 13}

	first := newClient(t, p.Addr(), kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic), kgo.ServerSideBalancer())
	m1, e1 := joinedGroup(t, first)
	second := newClient(t, p.Addr(), kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic), kgo.ServerSideBalancer())
	m2, e2 := joinedGroup(t, second)
	first.Close()

	y := newTxnCommits(t, b, p, group, topic, topic+"-zombie")
	y.want("a member that left", offs, m1, e1, nil, kerr.UnknownMemberID.Code)
	// The second member's epoch moves on as the first's partitions come
	// to it; an epoch below the one eosproxy saw is refused.
	pollUntil(t, 30*time.Second, func() (bool, string) {
		second.PollRecords(ctxWithin(testCtx(t), 50*time.Millisecond), 1)
		_, e := second.GroupMetadata()
		return e > e2, fmt.Sprintf("second member's epoch still %d", e)
	})
	y.want("an older member epoch", offs, m2, e2, nil, kerr.IllegalGeneration.Code)
	_, e := second.GroupMetadata()
	y.want("the current member epoch", offs, m2, e, nil, 0)

	// A fresh eosproxy asks the backend (ConsumerGroupDescribe).
	q := startProxy(t, b, secondInstance)
	z := newTxnCommits(t, b, q, group, topic, topic+"-fresh")
	z.want("a member that left, via a fresh eosproxy", offs, m1, e1, nil, kerr.UnknownMemberID.Code)
	z.want("an older member epoch, via a fresh eosproxy", offs, m2, e2, nil, kerr.IllegalGeneration.Code)
	z.want("the current member epoch, via a fresh eosproxy", offs, m2, e, nil, 0)
}

// A decided commit's offsets of a KIP-848 group reach the backend although
// the member that sent them has left the group since: they are committed as
// a current member with its epoch (learnt from ConsumerGroupHeartbeat
// answers), never dropped nor retried for ever.
func TestTxnOffsetsKIP848MemberLeft(t *testing.T) {
	eachGroupBackend(t, testTxnOffsetsKIP848MemberLeft)
}

// kip848HeldCommit has a KIP-848 member join a new group through eosproxy,
// a transaction commit offs as that member (TxnOffsetCommit accepted, EndTxn
// not yet sent), and a second member join: the group then moves on under
// the transaction's feet.
type kip848HeldCommit struct {
	group, topic string
	first        *kgo.Client
	epoch        int32 // the first member's when its offsets were committed
	x            *rawTxn
	second       *kgo.Client
}

func newKIP848HeldCommit(t *testing.T, b backend, offs map[int32]int64) *kip848HeldCommit {
	t.Helper()
	p := startProxy(t, b)
	adm := kadm.NewClient(newClient(t, p.Addr()))
	h := &kip848HeldCommit{topic: createTopic(t, adm, 4)}
	h.group = h.topic + "-group"
	// A KIP-848 member is first given an epoch with nothing assigned, and
	// a new epoch once its partitions are (seen in CI: the commit as the
	// first epoch refused ILLEGAL_GENERATION, rightly). A record read
	// shows the partitions are assigned: one in each, none committed
	// (no autocommit).
	w := newClient(t, p.Addr(), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	for part := range int32(4) {
		if err := w.ProduceSync(testCtx(t), &kgo.Record{Topic: h.topic, Partition: part, Value: []byte("v")}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	h.first = newClient(t, p.Addr(), kgo.ConsumerGroup(h.group), kgo.ConsumeTopics(h.topic), kgo.ServerSideBalancer(), kgo.DisableAutoCommit())
	m1, e1 := assignedMember(t, h.first)
	h.epoch = e1
	h.x = initRawTxn(t, newClient(t, p.Addr()), h.topic+"-txn")
	h.x.addOffsets(h.group)
	wantCode(t, "TxnOffsetCommit with the current epoch", h.x.commitAs(h.group, h.topic, offs, m1, e1, nil), 0)
	h.second = newClient(t, p.Addr(), kgo.ConsumerGroup(h.group), kgo.ConsumeTopics(h.topic), kgo.ServerSideBalancer())
	joinedGroup(t, h.second)
	return h
}

// commitReaches ends the transaction with a commit and waits for its
// offsets in the backend.
func (h *kip848HeldCommit) commitReaches(t *testing.T, b backend, offs map[int32]int64) {
	t.Helper()
	if code := h.x.end(true); code != 0 {
		t.Fatalf("EndTxn(commit): %v", kerr.ErrorForCode(code))
	}
	backendOffsetsReach(t, b, h.group, h.topic, offs)
}

func testTxnOffsetsKIP848MemberLeft(t *testing.T, b backend) {
	offs := map[int32]int64{0: 10, 1: 11, 2: 12, 3: 13}
	h := newKIP848HeldCommit(t, b, offs)
	h.first.Close() // leaves the group: the commit's member is gone
	h.commitReaches(t, b, offs)
}

// A decided commit's offsets of a KIP-848 group reach the backend although
// the member's epoch moved on after its TxnOffsetCommit (a member joined and
// the assignment changed): Kafka answers the OffsetCommit with the old epoch
// STALE_MEMBER_EPOCH, which must lead to the current epoch, not to dropping
// the offsets.
func TestTxnOffsetsKIP848EpochMoved(t *testing.T) {
	eachGroupBackend(t, testTxnOffsetsKIP848EpochMoved)
}

func testTxnOffsetsKIP848EpochMoved(t *testing.T, b backend) {
	offs := map[int32]int64{0: 20, 1: 21, 2: 22, 3: 23}
	h := newKIP848HeldCommit(t, b, offs)
	pollUntil(t, 30*time.Second, func() (bool, string) {
		h.first.PollRecords(ctxWithin(testCtx(t), 50*time.Millisecond), 1)
		h.second.PollRecords(ctxWithin(testCtx(t), 50*time.Millisecond), 1)
		_, e := h.first.GroupMetadata()
		return e > h.epoch, fmt.Sprintf("first member's epoch still %d", e)
	})
	h.commitReaches(t, b, offs)
}

// rawClassicMember joins group through cl as a classic consumer with the
// given session timeout, syncs as the leader, and then never heartbeats:
// a copier paused right after joining.
func rawClassicMember(t *testing.T, cl *kgo.Client, group, topic string, sessionMs int32) (string, int32) {
	t.Helper()
	meta := kmsg.NewConsumerMemberMetadata()
	meta.Version, meta.Topics = 0, []string{topic}
	join := kmsg.NewPtrJoinGroupRequest()
	join.Group, join.SessionTimeoutMillis, join.RebalanceTimeoutMillis, join.ProtocolType = group, sessionMs, 10_000, "consumer"
	join.Protocols = []kmsg.JoinGroupRequestProtocol{{Name: "range", Metadata: meta.AppendTo(nil)}}
	var resp *kmsg.JoinGroupResponse
	for range 3 {
		var err error
		if resp, err = join.RequestWith(testCtx(t), cl); err != nil {
			t.Fatalf("JoinGroup: %v", err)
		}
		if resp.ErrorCode != kerr.MemberIDRequired.Code {
			break
		}
		join.MemberID = resp.MemberID
	}
	if resp.ErrorCode != 0 {
		t.Fatalf("JoinGroup: %v", kerr.ErrorForCode(resp.ErrorCode))
	}
	sync := kmsg.NewPtrSyncGroupRequest()
	sync.Group, sync.Generation, sync.MemberID = group, resp.Generation, resp.MemberID
	proto := "range"
	sync.ProtocolType, sync.Protocol = &join.ProtocolType, &proto
	for _, m := range resp.Members {
		a := kmsg.NewConsumerMemberAssignment()
		sync.GroupAssignment = append(sync.GroupAssignment, kmsg.SyncGroupRequestGroupAssignment{MemberID: m.MemberID, MemberAssignment: a.AppendTo(nil)})
	}
	sresp, err := sync.RequestWith(testCtx(t), cl)
	if err != nil || sresp.ErrorCode != 0 {
		t.Fatalf("SyncGroup: %v %+v", err, sresp)
	}
	return resp.MemberID, resp.Generation
}

// A copier paused past its session timeout is removed from its group by
// the backend; eosproxy sees nothing pass (no rebalance answer reaches
// another member through it), so it does not trust its last sight of the
// member past half the session timeout and asks the backend: the zombie's
// TxnOffsetCommit is UNKNOWN_MEMBER_ID, as Kafka answers.
func TestTxnOffsetCommitAfterSessionTimeout(t *testing.T) {
	eachGroupBackend(t, func(t *testing.T, b backend) {
		p := startProxy(t, b)
		adm := kadm.NewClient(newClient(t, p.Addr()))
		topic := createTopic(t, adm, 2)
		group := topic + "-group"
		offs := map[int32]int64{0: 3, 1: 4}
		member, gen := rawClassicMember(t, newClient(t, p.Addr()), group, topic, 6000)
		x := newTxnCommits(t, b, p, group, topic, topic+"-paused")
		x.want("a member just joined", offs, member, gen, nil, 0)

		direct := kadm.NewClient(newClient(t, b.addrs[0]))
		pollUntil(t, 30*time.Second, func() (bool, string) {
			d, err := direct.DescribeGroups(testCtx(t), group)
			if err != nil {
				return false, err.Error()
			}
			return len(d[group].Members) == 0, fmt.Sprintf("group %s still has members %+v", group, d[group].Members)
		})
		x.want("the member after its session timed out", offs, member, gen, nil, kerr.UnknownMemberID.Code)
	})
}

// The same for a KIP-848 member: its last ConsumerGroupHeartbeat answer is
// trusted for one heartbeat interval only.
func TestTxnOffsetCommitKIP848AfterSessionTimeout(t *testing.T) {
	b := newFake(t, kfake.MaxVersions(faults.NoEOSVersions()),
		kfake.BrokerConfigs(map[string]string{"group.consumer.session.timeout.ms": "1000", "group.consumer.heartbeat.interval.ms": "400"}))
	p := startProxy(t, b)
	adm := kadm.NewClient(newClient(t, p.Addr()))
	topic := createTopic(t, adm, 2)
	group := topic + "-group"
	offs := map[int32]int64{0: 3, 1: 4}

	hb := kmsg.NewPtrConsumerGroupHeartbeatRequest()
	hb.Group, hb.MemberID, hb.MemberEpoch, hb.RebalanceTimeoutMillis = group, "paused-copier-0000000001", 0, 10_000
	hb.SubscribedTopicNames, hb.Topics = []string{topic}, []kmsg.ConsumerGroupHeartbeatRequestTopic{}
	hresp, err := hb.RequestWith(testCtx(t), newClient(t, p.Addr()))
	if err != nil || hresp.ErrorCode != 0 {
		msg := ""
		if hresp != nil && hresp.ErrorMessage != nil {
			msg = *hresp.ErrorMessage
		}
		t.Fatalf("ConsumerGroupHeartbeat: %v %+v %s", err, hresp, msg)
	}
	x := newTxnCommits(t, b, p, group, topic, topic+"-paused")
	x.want("a member just joined", offs, hb.MemberID, hresp.MemberEpoch, nil, 0)
	direct := kadm.NewClient(newClient(t, b.addrs[0]))
	pollUntil(t, 30*time.Second, func() (bool, string) {
		d, err := direct.DescribeConsumerGroups(testCtx(t), group)
		if err != nil {
			return false, err.Error()
		}
		return len(d[group].Members) == 0, fmt.Sprintf("group %s still has members %+v", group, d[group].Members)
	})
	x.want("the member after its session timed out", offs, hb.MemberID, hresp.MemberEpoch, nil, kerr.UnknownMemberID.Code)
}

// A KIP-848 member eosproxy knows only from the backend's description (it
// never heartbeated through this eosproxy, e.g. one started while the
// member was paused) is not trusted current past that description: the
// description shows the member in the group, not that it is alive, and its
// session may end right after. Once the backend removed it, its
// TxnOffsetCommit is UNKNOWN_MEMBER_ID, as Kafka answers (soak-real: a
// copier stalled 5 s after eosproxy restarted had its stale commit
// accepted, trusted from a description made for another member's commit).
func TestTxnOffsetCommitKIP848DescribedMemberTimesOut(t *testing.T) {
	t.Run("kfake", func(t *testing.T) {
		testKIP848DescribedMemberTimesOut(t, newFake(t, kfake.MaxVersions(faults.NoEOSVersions()),
			kfake.BrokerConfigs(map[string]string{"group.consumer.session.timeout.ms": "1000", "group.consumer.heartbeat.interval.ms": "400"})))
	})
	t.Run("kafka", func(t *testing.T) {
		testKIP848DescribedMemberTimesOut(t, backend{name: "kafka", addrs: []string{realKafka(t)}})
	})
}

func testKIP848DescribedMemberTimesOut(t *testing.T, b backend) {
	p := startProxy(t, b)
	direct := newClient(t, b.addrs[0])
	adm := kadm.NewClient(direct)
	topic := createTopic(t, adm, 2)
	group := topic + "-group"
	offs := map[int32]int64{0: 5, 1: 6}
	if b.fake == nil {
		// Kafka's smallest KIP-848 session (integration/kafka/kafka.sh
		// lowers the broker's minimum to 6 s).
		alterGroupConfig(t, direct, group, map[string]string{"consumer.session.timeout.ms": "6000", "consumer.heartbeat.interval.ms": "1000"})
	}

	// The member joins straight at the backend and then never heartbeats
	// again: a copier paused.
	hb := kmsg.NewPtrConsumerGroupHeartbeatRequest()
	hb.Group, hb.MemberID, hb.MemberEpoch, hb.RebalanceTimeoutMillis = group, "described-member-000000001", 0, 10_000
	hb.SubscribedTopicNames, hb.Topics = []string{topic}, []kmsg.ConsumerGroupHeartbeatRequestTopic{}
	hresp, err := hb.RequestWith(testCtx(t), direct)
	if err != nil || hresp.ErrorCode != 0 {
		t.Fatalf("ConsumerGroupHeartbeat: %v %+v", err, hresp)
	}
	x := newTxnCommits(t, b, p, group, topic, topic+"-described")
	x.want("a member eosproxy only knows from the backend", offs, hb.MemberID, hresp.MemberEpoch, nil, 0)
	adm2 := kadm.NewClient(newClient(t, b.addrs[0]))
	pollUntil(t, 60*time.Second, func() (bool, string) {
		d, err := adm2.DescribeConsumerGroups(testCtx(t), group)
		if err != nil {
			return false, err.Error()
		}
		return len(d[group].Members) == 0, fmt.Sprintf("group %s still has members %+v", group, d[group].Members)
	})
	x.want("the described member after its session timed out", offs, hb.MemberID, hresp.MemberEpoch, nil, kerr.UnknownMemberID.Code)
}

// alterGroupConfig sets group configs (KIP-848 session and heartbeat).
func alterGroupConfig(t *testing.T, cl *kgo.Client, group string, configs map[string]string) {
	t.Helper()
	req := kmsg.NewPtrIncrementalAlterConfigsRequest()
	res := kmsg.NewIncrementalAlterConfigsRequestResource()
	res.ResourceType, res.ResourceName = kmsg.ConfigResourceTypeGroupConfig, group
	for k, v := range configs {
		c := kmsg.NewIncrementalAlterConfigsRequestResourceConfig()
		c.Name, c.Value = k, kmsg.StringPtr(v)
		res.Configs = append(res.Configs, c)
	}
	req.Resources = append(req.Resources, res)
	resp, err := req.RequestWith(testCtx(t), cl)
	if err != nil {
		t.Fatalf("IncrementalAlterConfigs: %v", err)
	}
	for _, r := range resp.Resources {
		if r.ErrorCode != 0 {
			t.Fatalf("IncrementalAlterConfigs %s: %v", group, kerr.ErrorForCode(r.ErrorCode))
		}
	}
	// The broker applies group configs from its metadata log: wait until
	// it describes them, or a member joining now gets the defaults.
	pollUntil(t, 30*time.Second, func() (bool, string) {
		dreq := kmsg.NewPtrDescribeConfigsRequest()
		dres := kmsg.NewDescribeConfigsRequestResource()
		dres.ResourceType, dres.ResourceName = kmsg.ConfigResourceTypeGroupConfig, group
		dreq.Resources = append(dreq.Resources, dres)
		dresp, err := dreq.RequestWith(testCtx(t), cl)
		if err != nil {
			return false, err.Error()
		}
		got := map[string]string{}
		for _, r := range dresp.Resources {
			for _, c := range r.Configs {
				if c.Value != nil {
					got[c.Name] = *c.Value
				}
			}
		}
		for k, v := range configs {
			if got[k] != v {
				return false, fmt.Sprintf("group config %s=%q, want %q", k, got[k], v)
			}
		}
		return true, ""
	})
}

// A decided commit's offsets are not dropped when the backend refuses
// eosproxy's OffsetCommit for want of an ACL (eosproxy's own identity, not
// the client's, which Kafka checked at TxnOffsetCommit): retried until an
// operator grants it.
func TestTxnOffsetsRetriedOnAuthorizationFailure(t *testing.T) {
	b := newNoEOSFake(t)
	p := startProxy(t, b)
	adm := kadm.NewClient(newClient(t, p.Addr()))
	topic := createTopic(t, adm, 2)
	group := topic + "-group"
	offs := map[int32]int64{0: 8, 1: 9}
	var refused atomic.Int32
	b.fake.ControlKey(int16(kmsg.OffsetCommit), func(req kmsg.Request) (kmsg.Response, error, bool) {
		b.fake.KeepControl()
		r := req.(*kmsg.OffsetCommitRequest)
		if r.Group != group || refused.Add(1) > 3 {
			return nil, nil, false
		}
		resp := r.ResponseKind().(*kmsg.OffsetCommitResponse)
		for _, t := range r.Topics {
			rt := kmsg.NewOffsetCommitResponseTopic()
			rt.Topic, rt.TopicID = t.Topic, t.TopicID
			for _, p := range t.Partitions {
				rp := kmsg.NewOffsetCommitResponseTopicPartition()
				rp.Partition, rp.ErrorCode = p.Partition, kerr.GroupAuthorizationFailed.Code
				rt.Partitions = append(rt.Partitions, rp)
			}
			resp.Topics = append(resp.Topics, rt)
		}
		return resp, nil, true
	})
	x := initRawTxn(t, newClient(t, p.Addr()), topic+"-txn")
	x.addOffsets(group)
	wantCode(t, "admin-style TxnOffsetCommit", x.commitAs(group, topic, offs, "", -1, nil), 0)
	if code := x.end(true); code != 0 {
		t.Fatalf("EndTxn(commit): %v", kerr.ErrorForCode(code))
	}
	backendOffsetsReach(t, b, group, topic, offs)
}

// secondInstance lets a test start a second eosproxy on the same backend (one
// that has seen none of the group's traffic): eosproxy refuses that outside
// tests, through its lease on the backend.
func secondInstance(c *proxy.Config) { c.NoInstanceLease = true }

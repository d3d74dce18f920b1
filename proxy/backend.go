package proxy

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/eosproxy/eosproxy/protocol"
	"github.com/eosproxy/eosproxy/txnstate"
)

// upstreamBackend answers dedup's questions about the backend with
// eosproxy's own client; only used to settle unknown outcomes, never on the
// hot path.
type upstreamBackend struct{ p *Proxy }

func (b upstreamBackend) EndOffset(ctx context.Context, topic string, partition int32) (int64, error) {
	offs, err := kadm.NewClient(b.p.admin).ListEndOffsets(ctx, topic)
	if err != nil {
		return 0, err
	}
	o, ok := offs.Lookup(topic, partition)
	if !ok {
		return 0, fmt.Errorf("no end offset for %s/%d", topic, partition)
	}
	return o.Offset, o.Err
}

// FindBatch reads the partition from offset from to its high watermark,
// read_uncommitted, and compares each batch's content digest.
//
// Offsets below the log start (deleted by retention or DeleteRecords since
// from was recorded) cannot be read: the look-up starts at the log start
// instead, and a batch that landed in the deleted range is not found. The
// caller then writes it again: where the batch goes under a producer id the
// backend gave eosproxy, the backend drops the resend (Kafka keeps producer
// state past the log start, KAFKA-7190); without one the record is in the
// log twice, its first copy deleted. Failing instead would fail every
// retry for as long as the state lives (24 h by default), and on the commit
// path hold back every later commit of the transactional id.
//
// It first waits (awaitReplicated) until the high watermark has reached
// the leader's log end offset: a first copy appended but not yet
// replicated would otherwise be missed and the batch written twice. It
// then reads from that leader under that leader epoch, whose high
// watermark only grows.
func (b upstreamBackend) FindBatch(ctx context.Context, topic string, partition int32, from int64, digest [32]byte) (int64, bool, error) {
	mark, err := b.awaitReplicated(ctx, topic, partition, from, digest)
	if err != nil {
		return 0, false, err
	}
	broker := b.p.admin.Broker(int(mark.leader))
	for offset := from; ; {
		req := kmsg.NewPtrFetchRequest()
		req.ReplicaID = -1
		req.MaxWaitMillis = 0
		req.MaxBytes = 16 << 20
		rt := kmsg.NewFetchRequestTopic()
		rt.Topic = topic
		rt.TopicID = mark.topic
		rp := kmsg.NewFetchRequestTopicPartition()
		rp.Partition = partition
		rp.FetchOffset = offset
		rp.PartitionMaxBytes = 16 << 20
		rp.CurrentLeaderEpoch = mark.epoch
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		resp, err := req.RequestWith(ctx, broker)
		if err != nil {
			return 0, false, err
		}
		if len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 1 {
			return 0, false, fmt.Errorf("fetch %s/%d: malformed answer", topic, partition)
		}
		fp := resp.Topics[0].Partitions[0]
		if fp.ErrorCode == kerr.OffsetOutOfRange.Code {
			next, done, err := b.outOfRange(ctx, topic, partition, from, offset)
			if err != nil {
				return 0, false, err
			}
			if done {
				return 0, false, nil
			}
			offset = next
			continue
		}
		if err := kerr.ErrorForCode(fp.ErrorCode); err != nil {
			return 0, false, fmt.Errorf("fetch %s/%d at %d: %w", topic, partition, offset, err)
		}
		next := offset
		for rest := fp.RecordBatches; len(rest) >= protocol.BatchHeaderLen; {
			bt, err := protocol.ParseBatch(rest)
			if err != nil {
				break // a partial batch at the end of the answer
			}
			base := protocol.BatchBaseOffset(rest)
			if base >= from && protocol.Digest(rest, bt.Length) == digest {
				return base, true, nil
			}
			next = base + int64(protocol.BatchLastOffsetDelta(rest)) + 1
			rest = rest[bt.Length:]
		}
		if next >= fp.HighWatermark {
			return 0, false, nil
		}
		if next == offset {
			return 0, false, fmt.Errorf("fetch %s/%d at %d made no progress", topic, partition, offset)
		}
		offset = next
	}
}

// outOfRange handles OFFSET_OUT_OF_RANGE for a look-up from from that has
// reached offset: it says where to go on reading (the log start, when offset
// was deleted meanwhile), or done when nothing at or after offset is left to
// read (the log ends before it: truncated by an unclean election, or the
// topic was deleted and created again), or an error when the broker's
// answer does not fit its own bounds (retried by the caller).
func (b upstreamBackend) outOfRange(ctx context.Context, topic string, partition int32, from, offset int64) (next int64, done bool, err error) {
	adm := kadm.NewClient(b.p.admin)
	starts, err := adm.ListStartOffsets(ctx, topic)
	if err != nil {
		return 0, false, fmt.Errorf("log start of %s/%d: %w", topic, partition, err)
	}
	start, ok := starts.Lookup(topic, partition)
	if !ok || start.Err != nil {
		return 0, false, fmt.Errorf("log start of %s/%d: %v", topic, partition, start.Err)
	}
	if offset < start.Offset {
		b.p.log.Warn().Str("topic", topic).Int32("partition", partition).Int64("from", from).Int64("log_start", start.Offset).
			Msg("look-up for a batch with an unknown outcome: the log below its start was deleted (retention or DeleteRecords), so a batch that landed there cannot be found and would be written again; reading from the log start")
		return start.Offset, false, nil
	}
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return 0, false, fmt.Errorf("end offset of %s/%d: %w", topic, partition, err)
	}
	end, ok := ends.Lookup(topic, partition)
	if !ok || end.Err != nil {
		return 0, false, fmt.Errorf("end offset of %s/%d: %v", topic, partition, end.Err)
	}
	if offset >= end.Offset {
		b.p.log.Warn().Str("topic", topic).Int32("partition", partition).Int64("from", offset).Int64("end", end.Offset).
			Msg("look-up for a batch with an unknown outcome: the partition ends before the low-water offset (log truncated or topic re-created); the batch is not there")
		return 0, true, nil
	}
	return 0, false, fmt.Errorf("fetch %s/%d at %d: %w (log %d..%d)", topic, partition, offset, kerr.OffsetOutOfRange, start.Offset, end.Offset)
}

// txnBackend carries out commits for the transaction coordinator with
// eosproxy's own client.
type txnBackend struct {
	upstreamBackend
	leaders *leaderCache
	pipes   *pipes
}

// leaderCache remembers partition leaders and topic ids between forwarding
// rounds; an entry is dropped when a write through it fails.
type leaderCache struct {
	mu     sync.Mutex
	leader map[txnstate.TopicPartition]int32
	ids    map[string][16]byte
}

func (lc *leaderCache) lookup(ctx context.Context, b upstreamBackend, tps []txnstate.TopicPartition) (map[txnstate.TopicPartition]int32, map[string][16]byte, error) {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	if lc.leader == nil {
		lc.leader, lc.ids = map[txnstate.TopicPartition]int32{}, map[string][16]byte{}
	}
	var missing []string
	for _, tp := range tps {
		if _, ok := lc.leader[tp]; !ok && !slices.Contains(missing, tp.Topic) {
			missing = append(missing, tp.Topic)
		}
	}
	if len(missing) > 0 {
		meta, err := kadm.NewClient(b.p.admin).Metadata(ctx, missing...)
		if err != nil {
			return nil, nil, fmt.Errorf("metadata: %w", err)
		}
		for _, t := range meta.Topics {
			lc.ids[t.Topic] = t.ID
			for _, pd := range t.Partitions {
				if pd.Err == nil && pd.Leader >= 0 {
					lc.leader[txnstate.TopicPartition{Topic: t.Topic, Partition: pd.Partition}] = pd.Leader
				}
			}
		}
	}
	return maps.Clone(lc.leader), maps.Clone(lc.ids), nil
}

func (lc *leaderCache) forget(tp txnstate.TopicPartition) {
	lc.mu.Lock()
	delete(lc.leader, tp)
	lc.mu.Unlock()
}

func (b txnBackend) EndOffsets(ctx context.Context, tps []txnstate.TopicPartition) (map[txnstate.TopicPartition]int64, error) {
	var topics []string
	for _, tp := range tps {
		if !slices.Contains(topics, tp.Topic) {
			topics = append(topics, tp.Topic)
		}
	}
	offs, err := kadm.NewClient(b.p.admin).ListEndOffsets(ctx, topics...)
	if err != nil {
		return nil, err
	}
	out := make(map[txnstate.TopicPartition]int64, len(tps))
	for _, tp := range tps {
		o, ok := offs.Lookup(tp.Topic, tp.Partition)
		if !ok {
			return nil, fmt.Errorf("no end offset for %s/%d", tp.Topic, tp.Partition)
		}
		if o.Err != nil {
			return nil, fmt.Errorf("end offset of %s/%d: %w", tp.Topic, tp.Partition, o.Err)
		}
		out[tp] = o.Offset
	}
	return out, nil
}

// Produce sends the batches to their leaders, one request per leader, in
// parallel, with acks=all.
func (b txnBackend) Produce(ctx context.Context, batches map[txnstate.TopicPartition][]byte) map[txnstate.TopicPartition]txnstate.ProduceResult {
	out := make(map[txnstate.TopicPartition]txnstate.ProduceResult, len(batches))
	failAll := func(tps []txnstate.TopicPartition, err error, ambiguous bool) {
		for _, tp := range tps {
			out[tp] = txnstate.ProduceResult{Err: err, Ambiguous: ambiguous}
		}
	}
	var all []txnstate.TopicPartition
	for tp := range batches {
		all = append(all, tp)
	}
	leaders, ids, err := b.leaders.lookup(ctx, b.upstreamBackend, all)
	if err != nil {
		failAll(all, err, false)
		return out
	}
	byID := map[[16]byte]string{}
	for topic, id := range ids {
		byID[id] = topic
	}
	byLeader, sent, noLeader := produceRequests(batches, leaders, ids)
	failAll(noLeader, errors.New("no leader"), false)
	type answer struct {
		leader int32
		resp   *kmsg.ProduceResponse
		err    error
	}
	answers := make(chan answer, len(byLeader))
	for leader, req := range byLeader {
		go func() {
			resp, err := req.RequestWith(ctx, b.p.admin.Broker(int(leader)))
			answers <- answer{leader, resp, err}
		}()
	}
	for range byLeader {
		a := <-answers
		if a.err != nil {
			// The request may have been written before the connection failed.
			failAll(sent[a.leader], fmt.Errorf("produce to broker %d: %w", a.leader, a.err), true)
			continue
		}
		for _, t := range a.resp.Topics {
			topic := t.Topic
			if topic == "" {
				topic = byID[t.TopicID]
			}
			for _, rp := range t.Partitions {
				tp := txnstate.TopicPartition{Topic: topic, Partition: rp.Partition}
				if _, ok := batches[tp]; !ok {
					continue
				}
				if err := kerr.ErrorForCode(rp.ErrorCode); err != nil {
					out[tp] = txnstate.ProduceResult{Err: err, Ambiguous: ambiguous(rp.ErrorCode)}
					continue
				}
				out[tp] = txnstate.ProduceResult{BaseOffset: rp.BaseOffset}
			}
		}
	}
	for tp, r := range out {
		if r.Err != nil {
			b.leaders.forget(tp)
		}
	}
	return out
}

// produceRequests groups one batch per partition into one acks=all Produce
// request per leader; sent lists each request's partitions, noLeader those
// without a known leader.
func produceRequests(batches map[txnstate.TopicPartition][]byte, leaders map[txnstate.TopicPartition]int32, ids map[string][16]byte) (byLeader map[int32]*kmsg.ProduceRequest, sent map[int32][]txnstate.TopicPartition, noLeader []txnstate.TopicPartition) {
	byLeader, sent = map[int32]*kmsg.ProduceRequest{}, map[int32][]txnstate.TopicPartition{}
	for tp, batch := range batches {
		leader, ok := leaders[tp]
		if !ok {
			noLeader = append(noLeader, tp)
			continue
		}
		req := byLeader[leader]
		if req == nil {
			req = kmsg.NewPtrProduceRequest()
			req.Acks, req.TimeoutMillis = -1, 30000
			byLeader[leader] = req
		}
		i := slices.IndexFunc(req.Topics, func(t kmsg.ProduceRequestTopic) bool { return t.Topic == tp.Topic })
		if i < 0 {
			t := kmsg.NewProduceRequestTopic()
			// Produce v13 names topics by id; the version decides which is sent.
			t.Topic, t.TopicID = tp.Topic, ids[tp.Topic]
			req.Topics = append(req.Topics, t)
			i = len(req.Topics) - 1
		}
		rp := kmsg.NewProduceRequestTopicPartition()
		rp.Partition, rp.Records = tp.Partition, batch
		req.Topics[i].Partitions = append(req.Topics[i].Partitions, rp)
		sent[leader] = append(sent[leader], tp)
	}
	return byLeader, sent, noLeader
}

// CommitOffsets commits a decided transaction's held offsets to the
// backend's group coordinator. Kafka's commit marker writes them whatever the
// group did since TxnOffsetCommit; an OffsetCommit must name a current member,
// so they are committed as the member that sent them, else as a current
// member eosproxy knows (classic: the newest generation's, from the group
// traffic through it; KIP-848: a member with its current epoch, from
// ConsumerGroupHeartbeat answers or else the backend's ConsumerGroupDescribe),
// else with the admin identity (no member, generation -1), which Kafka
// accepts while the group is empty. A group with no identity that works yet
// (mid-rebalance, or members connecting around eosproxy) is retried: a
// decided commit's offsets are never dropped for the group's sake.
func (b txnBackend) CommitOffsets(ctx context.Context, group string, g txnstate.GroupOffsets) error {
	var topics []string
	for tp := range g.Offsets {
		if !slices.Contains(topics, tp.Topic) {
			topics = append(topics, tp.Topic)
		}
	}
	// OffsetCommit v10 names topics by id; kgo picks the version.
	meta, err := kadm.NewClient(b.p.admin).Metadata(ctx, topics...)
	if err != nil {
		return fmt.Errorf("metadata: %w", err)
	}
	tried := map[groupMember]bool{}
	var last error
	// try commits as id; done when it worked, neither done nor an error
	// when id is not a current identity of the group.
	try := func(id groupMember) (done bool, err error) {
		if tried[id] {
			return false, nil
		}
		tried[id] = true
		code, err := b.commitAs(ctx, group, g, id, meta)
		if err != nil {
			return false, err
		}
		switch code {
		case 0:
			if id.member != g.MemberID || id.generation != g.GenerationID {
				b.p.log.Info().Str("group", group).Int32("generation", id.generation).Str("member", id.member).
					Msg("group moved on since TxnOffsetCommit: committed the transaction's offsets as a current member")
			}
			return true, nil
		case kerr.IllegalGeneration.Code, kerr.UnknownMemberID.Code, kerr.FencedInstanceID.Code,
			kerr.StaleMemberEpoch.Code, kerr.GroupIDNotFound.Code, kerr.UnsupportedVersion.Code:
			// Not (or no longer) a current identity of the group; a
			// consumer-protocol member needs OffsetCommit v9+.
			last = kerr.ErrorForCode(code)
			return false, nil
		}
		err = kerr.ErrorForCode(code)
		switch code {
		case kerr.RebalanceInProgress.Code, kerr.GroupAuthorizationFailed.Code, kerr.TopicAuthorizationFailed.Code:
			// Passes (a rebalance), or eosproxy's own identity lacks an
			// ACL the client had: an operator can fix it, and the offsets
			// must not be dropped meanwhile.
			return false, err
		}
		if ke := (*kerr.Error)(nil); errors.As(err, &ke) && !ke.Retriable {
			return false, fmt.Errorf("%w: %v", txnstate.ErrPermanent, err)
		}
		return false, err // retried by the caller
	}
	// Each list is tried in turn; a few of each bound the requests.
	const perList = 4
	lists := [][]groupMember{
		{{generation: g.GenerationID, member: g.MemberID, instance: g.GroupInstanceID}},
		b.p.groups.candidates(group),
	}
	var described *describedGroup
	for li := 0; ; li++ {
		if li == len(lists) && described == nil {
			// What passed through eosproxy is not current: ask the backend
			// (a KIP-848 group's members come with their epochs).
			dctx, cancel := context.WithTimeout(ctx, b.p.cfg.DialTimeout)
			d, err := b.p.describeGroup(dctx, group)
			cancel()
			if err != nil {
				return fmt.Errorf("commit offsets of group %q: no known member is current, and the backend cannot be asked: %w", group, err)
			}
			described = &d
			b.p.groups.learn(group, d)
			if d.consumer {
				lists = append(lists, d.members)
			}
			lists = append(lists, []groupMember{{generation: -1}})
		}
		if li == len(lists) {
			break
		}
		for i, id := range lists[li] {
			if i == perList && li > 0 {
				break
			}
			if done, err := try(id); done || err != nil {
				return err
			}
		}
	}
	// Every identity refused: the group is mid-rebalance with members
	// eosproxy has not seen join yet, or its members connect around
	// eosproxy. Retried; the log says which.
	if unseen := b.p.noteBypass(group, *described); len(unseen) > 0 {
		return fmt.Errorf("no current member of group %q accepted the commit (members %v never connected through eosproxy; every member of the group must): %w", group, unseen, last)
	}
	return fmt.Errorf("no current member of group %q accepted the commit: %w", group, last)
}

func (b txnBackend) commitAs(ctx context.Context, group string, g txnstate.GroupOffsets, id groupMember, meta kadm.Metadata) (int16, error) {
	req := kmsg.NewPtrOffsetCommitRequest()
	req.Group, req.Generation, req.MemberID = group, id.generation, id.member
	if id.instance != "" {
		req.InstanceID = &id.instance
	}
	byTopic := map[string][]kmsg.OffsetCommitRequestTopicPartition{}
	for tp, o := range g.Offsets {
		rp := kmsg.NewOffsetCommitRequestTopicPartition()
		rp.Partition, rp.Offset, rp.LeaderEpoch = tp.Partition, o.Offset, o.LeaderEpoch
		md := o.Metadata
		rp.Metadata = &md
		byTopic[tp.Topic] = append(byTopic[tp.Topic], rp)
	}
	for topic, parts := range byTopic {
		rt := kmsg.NewOffsetCommitRequestTopic()
		rt.Topic, rt.TopicID, rt.Partitions = topic, meta.Topics[topic].ID, parts
		req.Topics = append(req.Topics, rt)
	}
	resp, err := req.RequestWith(ctx, b.p.admin)
	if err != nil {
		return 0, err
	}
	var code int16
	for _, t := range resp.Topics {
		for _, p := range t.Partitions {
			if p.ErrorCode != 0 {
				code = p.ErrorCode
			}
		}
	}
	return code, nil
}

// pipes holds eosproxy's own pipelined connections, one per broker.
type pipes struct {
	mu sync.Mutex
	by map[int32]*pipe
}

func (ps *pipes) get(ctx context.Context, p *Proxy, id int32) (*pipe, error) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if pp := ps.by[id]; pp != nil && !pp.closed() {
		if time.Since(time.UnixMilli(pp.lastUsed.Load())) < pipeIdle {
			return pp, nil
		}
		pp.fail(errors.New("replaced after being idle"))
	}
	pp, err := dialPipe(ctx, p, id)
	if err != nil {
		return nil, err
	}
	if ps.by == nil {
		ps.by = map[int32]*pipe{}
	}
	ps.by[id] = pp
	return pp, nil
}

func (ps *pipes) close() {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	for _, pp := range ps.by {
		pp.fail(errors.New("eosproxy is shutting down"))
	}
	ps.by = nil
}

// InitProducerID asks the backend for a producer id of eosproxy's own for
// idempotent forwarding; a backend without idempotence answers an error.
func (b upstreamBackend) InitProducerID(ctx context.Context) (int64, int16, error) {
	if b.p.cfg.NoBackendIdempotence {
		return 0, 0, fmt.Errorf("backend idempotence disabled (--no-backend-idempotence): %w", kerr.UnsupportedVersion)
	}
	req := kmsg.NewPtrInitProducerIDRequest()
	req.ProducerID, req.ProducerEpoch = -1, -1
	req.TransactionTimeoutMillis = -1
	resp, err := req.RequestWith(ctx, b.p.admin)
	if err != nil {
		return 0, 0, err
	}
	if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
		return 0, 0, err
	}
	return resp.ProducerID, resp.ProducerEpoch, nil
}

// ServesInitProducerID tells whether the backend has idempotence: whether
// it lists InitProducerId among its API keys.
func (b upstreamBackend) ServesInitProducerID(ctx context.Context) (bool, error) {
	if b.p.cfg.NoBackendIdempotence {
		return false, nil
	}
	resp, err := kmsg.NewPtrApiVersionsRequest().RequestWith(ctx, b.p.admin)
	if err != nil {
		return false, fmt.Errorf("ApiVersions: %w", err)
	}
	if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
		return false, fmt.Errorf("ApiVersions: %w", err)
	}
	for _, k := range resp.ApiKeys {
		if k.ApiKey == int16(kmsg.InitProducerID) {
			return k.MaxVersion >= 0, nil
		}
	}
	return false, nil
}

// Send writes one batch per partition to the partitions' leaders, one
// request per leader on eosproxy's pipelined connection to it: the batches
// of a partition reach the broker in the order Send is called.
func (b txnBackend) Send(ctx context.Context, batches map[txnstate.TopicPartition][]byte) func(context.Context) map[txnstate.TopicPartition]txnstate.ProduceResult {
	out := make(map[txnstate.TopicPartition]txnstate.ProduceResult, len(batches))
	all := slices.Collect(maps.Keys(batches))
	leaders, ids, err := b.leaders.lookup(ctx, b.upstreamBackend, all)
	if err != nil {
		for tp := range batches {
			out[tp] = txnstate.ProduceResult{Err: err}
		}
		return func(context.Context) map[txnstate.TopicPartition]txnstate.ProduceResult { return out }
	}
	byLeader, sent, noLeader := produceRequests(batches, leaders, ids)
	for _, tp := range noLeader {
		out[tp] = txnstate.ProduceResult{Err: fmt.Errorf("no leader for %s/%d", tp.Topic, tp.Partition)}
	}
	var answers []<-chan map[txnstate.TopicPartition]txnstate.ProduceResult
	// In leader order, so that two calls never interleave differently.
	for _, leader := range slices.Sorted(maps.Keys(byLeader)) {
		pp, err := b.pipes.get(ctx, b.p, leader)
		if err != nil {
			for _, tp := range sent[leader] {
				out[tp] = txnstate.ProduceResult{Err: fmt.Errorf("connect to broker %d: %w", leader, err)}
			}
			continue
		}
		answers = append(answers, pp.send(byLeader[leader], sent[leader]))
	}
	return func(ctx context.Context) map[txnstate.TopicPartition]txnstate.ProduceResult {
		for _, ch := range answers {
			select {
			case m := <-ch:
				maps.Copy(out, m)
			case <-ctx.Done():
			}
		}
		for tp := range batches {
			if _, ok := out[tp]; !ok {
				out[tp] = txnstate.ProduceResult{Err: ctx.Err(), Ambiguous: true}
			}
		}
		for tp, r := range out {
			if r.Err != nil {
				b.leaders.forget(tp)
			}
		}
		return out
	}
}

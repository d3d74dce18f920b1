package upstream

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

	"github.com/eosproxy/eosproxy/txnstate"
)

// Writes of eosproxy's own: a commit's batches, with acks=all, one request
// per leader; in order on a pipe where the backend gave eosproxy a producer
// id (Send), else as rounds (Produce).

// leaderCache remembers partition leaders and topic ids between forwarding
// rounds; an entry is dropped when a write through it fails.
type leaderCache struct {
	mu     sync.Mutex
	leader map[txnstate.TopicPartition]int32
	ids    map[string][16]byte
}

func (lc *leaderCache) lookup(ctx context.Context, b *Client, tps []txnstate.TopicPartition) (map[txnstate.TopicPartition]int32, map[string][16]byte, error) {
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
		meta, err := kadm.NewClient(b.admin).Metadata(ctx, missing...)
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

// Produce sends the batches to their leaders, one request per leader, in
// parallel, with acks=all.
func (b *Client) Produce(ctx context.Context, batches map[txnstate.TopicPartition][]byte) map[txnstate.TopicPartition]txnstate.ProduceResult {
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
	leaders, ids, err := b.leaders.lookup(ctx, b, all)
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
			resp, err := req.RequestWith(ctx, b.admin.Broker(int(leader)))
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
					out[tp] = txnstate.ProduceResult{Err: err, Ambiguous: Ambiguous(rp.ErrorCode)}
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

// pipes holds eosproxy's own pipelined connections, one per broker.
type pipes struct {
	mu     sync.Mutex
	by     map[int32]*pipe
	closed bool // by close: no new pipe, so nothing is written after it
}

// errPipesClosed: eosproxy's own writes have stopped (shut down, or in
// cluster mode deposed).
var errPipesClosed = errors.New("eosproxy is shutting down")

func (ps *pipes) get(ctx context.Context, c *Client, id int32) (*pipe, error) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.closed {
		return nil, errPipesClosed
	}
	if pp := ps.by[id]; pp != nil && !pp.closed() {
		if time.Since(time.UnixMilli(pp.lastUsed.Load())) < pipeIdle {
			return pp, nil
		}
		pp.fail(errors.New("replaced after being idle"))
	}
	pp, err := dialPipe(ctx, c, id)
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
		pp.fail(errPipesClosed)
	}
	ps.by, ps.closed = nil, true
}

// InitProducerID asks the backend for a producer id of eosproxy's own for
// idempotent forwarding; a backend without idempotence answers an error.
func (b *Client) InitProducerID(ctx context.Context) (int64, int16, error) {
	if b.cfg.NoIdempotence {
		return 0, 0, fmt.Errorf("backend idempotence disabled (--no-backend-idempotence): %w", kerr.UnsupportedVersion)
	}
	req := kmsg.NewPtrInitProducerIDRequest()
	req.ProducerID, req.ProducerEpoch = -1, -1
	req.TransactionTimeoutMillis = -1
	resp, err := req.RequestWith(ctx, b.admin)
	if err != nil {
		return 0, 0, err
	}
	if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
		return 0, 0, err
	}
	return resp.ProducerID, resp.ProducerEpoch, nil
}

// servesInitProducerID tells whether the backend has idempotence: whether
// it lists InitProducerId among its API keys.
func (b *Client) servesInitProducerID(ctx context.Context) (bool, error) {
	if b.cfg.NoIdempotence {
		return false, nil
	}
	resp, err := kmsg.NewPtrApiVersionsRequest().RequestWith(ctx, b.admin)
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
func (b *Client) Send(ctx context.Context, batches map[txnstate.TopicPartition][]byte) func(context.Context) map[txnstate.TopicPartition]txnstate.ProduceResult {
	out := make(map[txnstate.TopicPartition]txnstate.ProduceResult, len(batches))
	all := slices.Collect(maps.Keys(batches))
	leaders, ids, err := b.leaders.lookup(ctx, b, all)
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
		pp, err := b.pipes.get(ctx, b, leader)
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

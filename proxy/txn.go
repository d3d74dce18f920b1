package proxy

import (
	"context"
	"fmt"
	"maps"
	"regexp"
	"regexp/syntax"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/eosproxy/eosproxy/dedup"
	"github.com/eosproxy/eosproxy/protocol"
	"github.com/eosproxy/eosproxy/txnstate"
)

// eosproxy is the transaction coordinator: the requests below never reach
// the backend. Each handler decodes the request, asks txnstate's Coordinator
// and encodes Kafka's answer for the request's version.
//
//	InitProducerId v0–v5 (with a transactional id)   initProducerIDTxn
//	AddPartitionsToTxn v0–v3 (the client form)        addPartitionsToTxn
//	AddOffsetsToTxn v0–v4                             addOffsetsToTxn
//	EndTxn v0–v5 (v5: KIP-890 epoch bump)             endTxn
//	TxnOffsetCommit v0–v5                             txnOffsetCommit
//	DescribeTransactions v0, ListTransactions v0–v2   describeTxns, listTxns
//	FindCoordinator for transactional ids (type 1)    findTxnCoordinator
//	OffsetFetch with RequireStable while offsets are pending: UNSTABLE_OFFSET_COMMIT
//	Produce with a transactional id                   produceTxn

const (
	errUnstableOffsetCommit int16 = 88
	errGroupIDNotFound      int16 = 69
	coordinatorTypeTxn      int8  = 1
)

func (c *conn) answerTxn(ctx context.Context, hdr protocol.RequestHeader, body []byte) ([]byte, error) {
	p := c.p
	req := kmsg.RequestForKey(hdr.APIKey)
	req.SetVersion(hdr.APIVersion)
	if err := req.ReadFrom(body); err != nil {
		return nil, bad("decode %s v%d: %w", keyName(hdr.APIKey), hdr.APIVersion, err)
	}
	switch r := req.(type) {
	case *kmsg.AddPartitionsToTxnRequest:
		return p.addPartitionsToTxn(r), nil
	case *kmsg.AddOffsetsToTxnRequest:
		res := p.coord.AddOffsets(r.TransactionalID, txnstate.AddOffsetsRequest{
			ProducerID: r.ProducerID, Epoch: r.ProducerEpoch, Group: r.Group, Version: r.Version})
		resp := r.ResponseKind().(*kmsg.AddOffsetsToTxnResponse)
		resp.ErrorCode = res.Err
		return resp.AppendTo(nil), nil
	case *kmsg.EndTxnRequest:
		res := p.coord.EndTxn(ctx, r.TransactionalID, txnstate.EndTxnRequest{
			ProducerID: r.ProducerID, Epoch: r.ProducerEpoch, Commit: r.Commit, Version: r.Version})
		resp := r.ResponseKind().(*kmsg.EndTxnResponse)
		resp.ErrorCode, resp.ProducerID, resp.ProducerEpoch = res.Err, res.ProducerID, res.Epoch
		return resp.AppendTo(nil), nil
	case *kmsg.TxnOffsetCommitRequest:
		return p.txnOffsetCommit(ctx, r), nil
	case *kmsg.DescribeTransactionsRequest:
		return p.describeTxns(r), nil
	case *kmsg.ListTransactionsRequest:
		return p.listTxns(r, c.brokerID), nil
	}
	return nil, bad("%s is not a transaction request", keyName(hdr.APIKey))
}

func (p *Proxy) initProducerIDTxn(ctx context.Context, r *kmsg.InitProducerIDRequest) []byte {
	res := p.coord.InitProducerID(ctx, txnstate.InitProducerIDRequest{
		TransactionalID: *r.TransactionalID, TimeoutMs: r.TransactionTimeoutMillis,
		ProducerID: r.ProducerID, Epoch: r.ProducerEpoch, Version: r.Version,
	})
	resp := r.ResponseKind().(*kmsg.InitProducerIDResponse)
	resp.ErrorCode, resp.ProducerID, resp.ProducerEpoch = res.Err, res.ProducerID, res.Epoch
	return resp.AppendTo(nil)
}

func (p *Proxy) addPartitionsToTxn(r *kmsg.AddPartitionsToTxnRequest) []byte {
	var parts []txnstate.TopicPartition
	for _, t := range r.Topics {
		for _, part := range t.Partitions {
			parts = append(parts, txnstate.TopicPartition{Topic: t.Topic, Partition: part})
		}
	}
	res := p.coord.AddPartitions(r.TransactionalID, txnstate.AddPartitionsRequest{
		ProducerID: r.ProducerID, Epoch: r.ProducerEpoch, Partitions: parts, Version: r.Version})
	resp := r.ResponseKind().(*kmsg.AddPartitionsToTxnResponse)
	for _, t := range r.Topics {
		rt := kmsg.NewAddPartitionsToTxnResponseTopic()
		rt.Topic = t.Topic
		for _, part := range t.Partitions {
			rp := kmsg.NewAddPartitionsToTxnResponseTopicPartition()
			rp.Partition, rp.ErrorCode = part, res.Err
			rt.Partitions = append(rt.Partitions, rp)
		}
		resp.Topics = append(resp.Topics, rt)
	}
	return resp.AppendTo(nil)
}

// txnOffsetCommit holds a TxnOffsetCommit's offsets in its transaction once
// its member is found current in the group (checkTxnMember), as Kafka's
// group coordinator checks it before it writes the offsets.
func (p *Proxy) txnOffsetCommit(ctx context.Context, r *kmsg.TxnOffsetCommitRequest) []byte {
	offs := map[txnstate.TopicPartition]txnstate.Offset{}
	for _, t := range r.Topics {
		for _, part := range t.Partitions {
			o := txnstate.Offset{Offset: part.Offset, LeaderEpoch: part.LeaderEpoch}
			if part.Metadata != nil {
				o.Metadata = *part.Metadata
			}
			offs[txnstate.TopicPartition{Topic: t.Topic, Partition: part.Partition}] = o
		}
	}
	req := txnstate.TxnOffsetCommitRequest{
		ProducerID: r.ProducerID, Epoch: r.ProducerEpoch, Group: r.Group,
		MemberID: r.MemberID, GenerationID: r.Generation, Offsets: offs, Version: r.Version,
	}
	if r.Version < 3 {
		req.GenerationID = -1
	}
	if r.InstanceID != nil {
		req.GroupInstanceID = *r.InstanceID
	}
	code := p.checkTxnMember(ctx, r.Group, req.MemberID, req.GroupInstanceID, req.GenerationID)
	if code != 0 {
		// Kafka verifies the transaction before the group coordinator
		// judges the member: a producer that is not the transactional id's
		// current one is told that instead.
		switch t := p.coord.Get(r.TransactionalID); {
		case t == nil || t.ProducerID != r.ProducerID:
			code = txnstate.ErrInvalidProducerIDMapping
		case t.Epoch != r.ProducerEpoch:
			code = txnstate.ErrInvalidProducerEpoch
		}
	}
	if code == 0 {
		code = p.coord.TxnOffsetCommit(r.TransactionalID, req).Err
	}
	if code == 0 {
		p.groups.noteAccepted(r.Group, req.GenerationID, req.MemberID, req.GroupInstanceID)
		p.auditGroup(r.Group)
	} else {
		p.log.Debug().Str("txn", r.TransactionalID).Str("group", r.Group).Str("member", req.MemberID).
			Int32("generation", req.GenerationID).Str("err", txnstate.ErrorName(code)).Msg("TxnOffsetCommit refused")
	}
	resp := r.ResponseKind().(*kmsg.TxnOffsetCommitResponse)
	for _, t := range r.Topics {
		rt := kmsg.NewTxnOffsetCommitResponseTopic()
		rt.Topic, rt.TopicID = t.Topic, t.TopicID
		for _, part := range t.Partitions {
			rp := kmsg.NewTxnOffsetCommitResponseTopicPartition()
			rp.Partition, rp.ErrorCode = part.Partition, code
			rt.Partitions = append(rt.Partitions, rp)
		}
		resp.Topics = append(resp.Topics, rt)
	}
	return resp.AppendTo(nil)
}

func (p *Proxy) describeTxns(r *kmsg.DescribeTransactionsRequest) []byte {
	resp := r.ResponseKind().(*kmsg.DescribeTransactionsResponse)
	for _, id := range r.TransactionalIDs {
		st := kmsg.NewDescribeTransactionsResponseTransactionState()
		st.TransactionalID = id
		t := p.coord.Get(id)
		if t == nil {
			st.ErrorCode = txnstate.ErrTransactionalIDNotFound
			st.ProducerID, st.ProducerEpoch, st.StartTimestamp = -1, -1, -1
			resp.TransactionStates = append(resp.TransactionStates, st)
			continue
		}
		st.State, st.TimeoutMillis, st.StartTimestamp = t.State.String(), t.TimeoutMs, t.StartTimeMs
		st.ProducerID, st.ProducerEpoch = t.ProducerID, t.Epoch
		byTopic := map[string][]int32{}
		for tp := range t.Partitions {
			byTopic[tp.Topic] = append(byTopic[tp.Topic], tp.Partition)
		}
		for _, topic := range slices.Sorted(maps.Keys(byTopic)) {
			rt := kmsg.NewDescribeTransactionsResponseTransactionStateTopic()
			rt.Topic, rt.Partitions = topic, byTopic[topic]
			slices.Sort(rt.Partitions)
			st.Topics = append(st.Topics, rt)
		}
		resp.TransactionStates = append(resp.TransactionStates, st)
	}
	return resp.AppendTo(nil)
}

// listTxns answers ListTransactions. Admin clients ask every broker and
// merge the answers, so only the broker eosproxy names as coordinator lists
// the transactions; the others answer with none.
func (p *Proxy) listTxns(r *kmsg.ListTransactionsRequest, brokerID int32) []byte {
	resp := r.ResponseKind().(*kmsg.ListTransactionsResponse)
	states := map[txnstate.State]bool{}
	for _, name := range r.StateFilters {
		s, ok := txnstate.ParseState(name)
		if !ok {
			resp.UnknownStateFilters = append(resp.UnknownStateFilters, name)
			continue
		}
		states[s] = true
	}
	var pattern *regexp.Regexp
	if r.TransactionalIDPattern != nil && *r.TransactionalIDPattern != "" {
		var err error
		if pattern, err = compileBounded(*r.TransactionalIDPattern); err != nil {
			resp.ErrorCode = 42 // INVALID_REQUEST
			return resp.AppendTo(nil)
		}
	}
	if coord, ok := p.txnCoordinatorID(); !ok || (brokerID >= 0 && brokerID != coord) {
		return resp.AppendTo(nil)
	}
	now := time.Now().UnixMilli()
	for _, t := range p.coord.List() {
		switch {
		case len(r.StateFilters) > 0 && !states[t.State],
			len(r.ProducerIDFilters) > 0 && !slices.Contains(r.ProducerIDFilters, t.ProducerID),
			r.DurationFilterMillis >= 0 && r.Version >= 1 && (t.State != txnstate.Ongoing || now-t.StartTimeMs < r.DurationFilterMillis),
			pattern != nil && !pattern.MatchString(t.TransactionalID):
			continue
		}
		st := kmsg.NewListTransactionsResponseTransactionState()
		st.TransactionalID, st.ProducerID, st.TransactionState = t.TransactionalID, t.ProducerID, t.State.String()
		resp.TransactionStates = append(resp.TransactionStates, st)
	}
	return resp.AppendTo(nil)
}

// maxPatternSize bounds a client's ListTransactions pattern once its
// counted repeats are expanded: Go's compiler expands a{1000} into a
// thousand instructions, so a few hundred bytes of pattern could cost
// hundreds of MiB.
const maxPatternSize = 10_000

// compileBounded compiles a client's regular expression unless its
// expansion would exceed maxPatternSize.
func compileBounded(pattern string) (*regexp.Regexp, error) {
	re, err := syntax.Parse(pattern, syntax.Perl)
	if err != nil {
		return nil, err
	}
	if expandedSize(re) > maxPatternSize {
		return nil, fmt.Errorf("pattern too complex")
	}
	return regexp.Compile(pattern)
}

// expandedSize estimates the instructions re compiles to, stopping early
// past maxPatternSize.
func expandedSize(re *syntax.Regexp) int {
	n := 1
	for _, sub := range re.Sub {
		if n += expandedSize(sub); n > maxPatternSize {
			return n
		}
	}
	if re.Op == syntax.OpRepeat {
		m := max(re.Max, re.Min, 1)
		if n > maxPatternSize/m {
			return maxPatternSize + 1
		}
		n *= m
	}
	return n
}

// txnCoordinatorID is the broker id eosproxy names as the coordinator of
// every transactional id: the lowest upstream broker id, whose listener, like
// every eosproxy listener, serves the coordinator requests itself.
func (p *Proxy) txnCoordinatorID() (int32, bool) {
	p.brokers.mu.RLock()
	defer p.brokers.mu.RUnlock()
	id, found := int32(0), false
	for bid, b := range p.brokers.byID {
		if b.upstream == "" {
			continue
		}
		if !found || bid < id {
			id, found = bid, true
		}
	}
	return id, found
}

// findTxnCoordinator answers FindCoordinator for transactional ids with
// eosproxy itself; other FindCoordinator requests pass (nil).
func (p *Proxy) findTxnCoordinator(ctx context.Context, hdr protocol.RequestHeader, body []byte) ([]byte, error) {
	r := kmsg.NewPtrFindCoordinatorRequest()
	r.SetVersion(hdr.APIVersion)
	if err := r.ReadFrom(body); err != nil {
		return nil, bad("decode FindCoordinator v%d: %w", hdr.APIVersion, err)
	}
	if r.CoordinatorType != coordinatorTypeTxn {
		return nil, nil
	}
	id, ok := p.txnCoordinatorID()
	if !ok {
		rctx, cancel := context.WithTimeout(ctx, p.cfg.DialTimeout)
		err := p.refreshBrokers(rctx)
		cancel()
		if err != nil {
			p.log.Warn().Err(err).Msg("cannot learn upstream brokers to name a transaction coordinator")
		}
		id, ok = p.txnCoordinatorID()
	}
	var code int16
	var port int32
	if ok {
		b, _ := p.brokers.lookup(id)
		port = b.port
	} else {
		code = errCoordinatorNotAvailable
		id = -1
	}
	resp := r.ResponseKind().(*kmsg.FindCoordinatorResponse)
	if r.Version < 4 {
		resp.ErrorCode, resp.NodeID, resp.Host, resp.Port = code, id, p.advHost, port
		return resp.AppendTo(nil), nil
	}
	for _, key := range r.CoordinatorKeys {
		co := kmsg.NewFindCoordinatorResponseCoordinator()
		co.Key, co.ErrorCode, co.NodeID, co.Host, co.Port = key, code, id, p.advHost, port
		resp.Coordinators = append(resp.Coordinators, co)
	}
	return resp.AppendTo(nil), nil
}

// unstableOffsets answers an OffsetFetch with RequireStable that names
// offsets a transaction still holds with UNSTABLE_OFFSET_COMMIT, which
// clients retry, as Kafka does; nil lets the request pass.
func (p *Proxy) unstableOffsets(hdr protocol.RequestHeader, body []byte) []byte {
	r := kmsg.NewPtrOffsetFetchRequest()
	r.SetVersion(hdr.APIVersion)
	if err := r.ReadFrom(body); err != nil || !r.RequireStable {
		return nil // the backend judges what eosproxy cannot read
	}
	pending := func(group, topic string, parts []int32, all bool) bool {
		if all {
			return p.coord.OffsetsPending(group, nil)
		}
		for _, part := range parts {
			if p.coord.OffsetsPending(group, &txnstate.TopicPartition{Topic: topic, Partition: part}) {
				return true
			}
		}
		return false
	}
	resp := r.ResponseKind().(*kmsg.OffsetFetchResponse)
	requested := p.requestedOffsets
	unstable := false
	if r.Version < 8 {
		for _, t := range r.Topics {
			unstable = unstable || pending(r.Group, t.Topic, t.Partitions, false)
		}
		unstable = unstable || (r.Topics == nil && pending(r.Group, "", nil, true))
		if !unstable {
			return nil
		}
		for _, t := range requested(r.Group, r.Topics == nil, r.Topics) {
			rt := kmsg.NewOffsetFetchResponseTopic()
			rt.Topic = t.Topic
			for _, part := range t.Partitions {
				rp := kmsg.NewOffsetFetchResponseTopicPartition()
				rp.Partition, rp.Offset, rp.LeaderEpoch, rp.ErrorCode = part, -1, -1, errUnstableOffsetCommit
				rt.Partitions = append(rt.Partitions, rp)
			}
			resp.Topics = append(resp.Topics, rt)
		}
		return resp.AppendTo(nil)
	}
	for _, g := range r.Groups {
		for _, t := range g.Topics {
			unstable = unstable || pending(g.Group, t.Topic, t.Partitions, false)
		}
		unstable = unstable || (g.Topics == nil && pending(g.Group, "", nil, true))
	}
	if !unstable {
		return nil
	}
	for _, g := range r.Groups {
		rg := kmsg.NewOffsetFetchResponseGroup()
		rg.Group = g.Group
		var topics []kmsg.OffsetFetchRequestTopic
		for _, t := range g.Topics {
			topics = append(topics, kmsg.OffsetFetchRequestTopic{Topic: t.Topic, Partitions: t.Partitions})
		}
		for _, t := range requested(g.Group, g.Topics == nil, topics) {
			rt := kmsg.NewOffsetFetchResponseGroupTopic()
			rt.Topic = t.Topic
			for _, part := range t.Partitions {
				rp := kmsg.NewOffsetFetchResponseGroupTopicPartition()
				rp.Partition, rp.Offset, rp.LeaderEpoch, rp.ErrorCode = part, -1, -1, errUnstableOffsetCommit
				rt.Partitions = append(rt.Partitions, rp)
			}
			rg.Topics = append(rg.Topics, rt)
		}
		resp.Groups = append(resp.Groups, rg)
	}
	return resp.AppendTo(nil)
}

// requested is what an unstable OffsetFetch answer lists: the partitions
// asked for, or for "all of the group's" (Topics null) the ones a
// transaction holds. Every one gets UNSTABLE_OFFSET_COMMIT: clients retry the
// whole fetch on the first, so none of them is used.
func (p *Proxy) requestedOffsets(group string, all bool, topics []kmsg.OffsetFetchRequestTopic) []kmsg.OffsetFetchRequestTopic {
	if !all {
		return topics
	}
	var out []kmsg.OffsetFetchRequestTopic
	for _, tp := range p.coord.PendingPartitions(group) {
		if n := len(out); n == 0 || out[n-1].Topic != tp.Topic {
			out = append(out, kmsg.OffsetFetchRequestTopic{Topic: tp.Topic})
		}
		out[len(out)-1].Partitions = append(out[len(out)-1].Partitions, tp.Partition)
	}
	return out
}

// produceTxn buffers a transactional Produce request's batches in the
// coordinator; nothing is forwarded. The answer is NONE with base offset -1
// for each accepted batch (its offset is known only once it is committed),
// given once the batch is durable: wait builds it.
func (c *conn) produceTxn(req *kmsg.ProduceRequest) (wait func() []byte) {
	id := *req.TransactionID
	type pending struct {
		rp   *kmsg.ProduceResponseTopicPartition
		wait func() int16
	}
	var waits []pending
	resp := req.ResponseKind().(*kmsg.ProduceResponse)
	for _, t := range req.Topics {
		rt := kmsg.NewProduceResponseTopic()
		rt.Topic, rt.TopicID = t.Topic, t.TopicID
		rt.Partitions = make([]kmsg.ProduceResponseTopicPartition, len(t.Partitions))
		for i, part := range t.Partitions {
			rp := &rt.Partitions[i]
			*rp = kmsg.NewProduceResponseTopicPartition()
			rp.Partition = part.Partition
			rp.BaseOffset, rp.LogAppendTime, rp.LogStartOffset = -1, -1, -1
			code, msg, w := c.bufferTxnBatch(id, req.Version, t.Topic, part.Partition, part.Records)
			rp.ErrorCode = code
			if msg != "" {
				rp.ErrorMessage = &msg
			}
			if w != nil {
				waits = append(waits, pending{rp, w})
			}
		}
		resp.Topics = append(resp.Topics, rt)
	}
	return func() []byte {
		for _, w := range waits {
			w.rp.ErrorCode = w.wait()
		}
		return resp.AppendTo(nil)
	}
}

func (c *conn) bufferTxnBatch(id string, version int16, topic string, partition int32, records []byte) (int16, string, func() int16) {
	if len(records) == 0 {
		return errInvalidRecord, "", nil
	}
	bt, err := protocol.ParseBatch(records)
	if err != nil {
		c.log.Warn().Err(err).Str("txn", id).Str("topic", topic).Int32("partition", partition).
			Msg("rejecting corrupt transactional record batch")
		return errCorruptMessage, "", nil
	}
	if bt.Length != len(records) || !bt.Transactional || bt.ProducerID < 0 || bt.Control {
		return errInvalidRecord, "a transactional Produce takes one transactional batch per partition", nil
	}
	batch := append([]byte(nil), records...)
	protocol.ClearTransactional(batch, bt.Length)
	ans := c.p.coord.BufferBatch(id, txnstate.ProduceRequest{
		ProducerID: bt.ProducerID, Epoch: bt.ProducerEpoch,
		Partition: txnstate.TopicPartition{Topic: topic, Partition: partition}, Version: version,
	}, dedup.BatchInfo{Epoch: bt.ProducerEpoch, FirstSeq: bt.BaseSequence, Count: bt.Count}, batch)
	if ans.Err != 0 {
		c.log.Debug().Str("txn", id).Str("topic", topic).Int32("partition", partition).
			Str("err", txnstate.ErrorName(ans.Err)).Int16("code", ans.Err).Msg("transactional batch refused")
	}
	return ans.Err, ans.Msg, ans.Wait
}

// decidedOffsetsFor decodes an OffsetFetch whose groups have offsets that
// decided commits have not written to the backend yet; nil when none has
// (the request then passes untouched).
func (p *Proxy) decidedOffsetsFor(hdr protocol.RequestHeader, body []byte) *kmsg.OffsetFetchRequest {
	r := kmsg.NewPtrOffsetFetchRequest()
	r.SetVersion(hdr.APIVersion)
	if err := r.ReadFrom(body); err != nil {
		return nil
	}
	if r.Version < 8 {
		if p.coord.DecidedOffsets(r.Group) != nil {
			return r
		}
		return nil
	}
	for _, g := range r.Groups {
		if p.coord.DecidedOffsets(g.Group) != nil {
			return r
		}
	}
	return nil
}

// patchOffsets puts into the backend's OffsetFetch answer the offsets that
// decided commits hold and eosproxy has not written yet: committed offsets,
// as Kafka's are once its marker is written. A member joining meanwhile thus
// starts where the transaction left off, and does not wait for the backend.
func (p *Proxy) patchOffsets(req *kmsg.OffsetFetchRequest, body []byte) ([]byte, error) {
	resp := req.ResponseKind().(*kmsg.OffsetFetchResponse)
	if err := resp.ReadFrom(body); err != nil {
		return nil, fmt.Errorf("decode OffsetFetch v%d response: %w", req.Version, err)
	}
	if req.Version >= 8 {
		all := map[string]bool{}
		for _, g := range req.Groups {
			all[g.Group] = g.Topics == nil
		}
		for gi := range resp.Groups {
			g := &resp.Groups[gi]
			g.Topics = p.patchGroup(g.Group, &g.ErrorCode, all[g.Group], g.Topics)
		}
		return resp.AppendTo(nil), nil
	}
	// Up to v7 the answer is one group's, in its own types: patched in the
	// v8+ form and converted back.
	topics := make([]kmsg.OffsetFetchResponseGroupTopic, len(resp.Topics))
	for i, t := range resp.Topics {
		topics[i] = kmsg.OffsetFetchResponseGroupTopic{Topic: t.Topic}
		for _, rp := range t.Partitions {
			topics[i].Partitions = append(topics[i].Partitions, kmsg.OffsetFetchResponseGroupTopicPartition(rp))
		}
	}
	topics = p.patchGroup(req.Group, &resp.ErrorCode, req.Topics == nil, topics)
	resp.Topics = make([]kmsg.OffsetFetchResponseTopic, len(topics))
	for i, t := range topics {
		resp.Topics[i] = kmsg.OffsetFetchResponseTopic{Topic: t.Topic}
		for _, rp := range t.Partitions {
			resp.Topics[i].Partitions = append(resp.Topics[i].Partitions, kmsg.OffsetFetchResponseTopicPartition(rp))
		}
	}
	return resp.AppendTo(nil), nil
}

// patchGroup fills group's decided offsets into its answered topics (and,
// when the request asked for all of the group's, adds those missing).
func (p *Proxy) patchGroup(group string, code *int16, all bool, topics []kmsg.OffsetFetchResponseGroupTopic) []kmsg.OffsetFetchResponseGroupTopic {
	decided := p.coord.DecidedOffsets(group)
	if decided == nil {
		return topics
	}
	if *code == errGroupIDNotFound {
		// A backend that does not know the group yet (kfake says so;
		// Kafka answers no offsets): it has committed offsets now.
		*code = 0
	}
	if *code != 0 {
		return topics
	}
	fill := func(rp *kmsg.OffsetFetchResponseGroupTopicPartition, o txnstate.Offset) {
		md := o.Metadata
		rp.Offset, rp.LeaderEpoch, rp.Metadata, rp.ErrorCode = o.Offset, o.LeaderEpoch, &md, 0
	}
	seen := map[txnstate.TopicPartition]bool{}
	for ti := range topics {
		t := &topics[ti]
		for pi := range t.Partitions {
			tp := txnstate.TopicPartition{Topic: t.Topic, Partition: t.Partitions[pi].Partition}
			seen[tp] = true
			if o, ok := decided[tp]; ok {
				fill(&t.Partitions[pi], o)
			}
		}
	}
	if !all {
		return topics
	}
	tps := slices.Collect(maps.Keys(decided))
	slices.SortFunc(tps, txnstate.CompareTopicPartition)
	for _, tp := range tps {
		if seen[tp] {
			continue
		}
		i := slices.IndexFunc(topics, func(t kmsg.OffsetFetchResponseGroupTopic) bool { return t.Topic == tp.Topic })
		if i < 0 {
			topics = append(topics, kmsg.NewOffsetFetchResponseGroupTopic())
			i = len(topics) - 1
			topics[i].Topic = tp.Topic
		}
		rp := kmsg.NewOffsetFetchResponseGroupTopicPartition()
		rp.Partition = tp.Partition
		fill(&rp, decided[tp])
		topics[i].Partitions = append(topics[i].Partitions, rp)
	}
	return topics
}

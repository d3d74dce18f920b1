package txnstate

import "github.com/twmb/franz-go/pkg/kerr"

// AddPartitionsRequest is an AddPartitionsToTxn request of the client form
// (v0–v3, one transaction).
type AddPartitionsRequest struct {
	ProducerID int64
	Epoch      int16
	Partitions []TopicPartition
	Version    int16
}

// AddPartitions decides an AddPartitionsToTxn
// (TransactionCoordinator.handleAddPartitionsToTransaction). Partitions
// already in an ongoing transaction are answered NONE without a new state;
// otherwise the transaction becomes (or stays) Ongoing with them added.
func AddPartitions(cur *Txn, req AddPartitionsRequest, nowMs int64) Result {
	r := add(cur, req.ProducerID, req.Epoch, req.Partitions, "", 1, nowMs)
	r.Err = fencedFor(r.Err, req.Version >= 2)
	return r
}

// AddOffsetsRequest is an AddOffsetsToTxn request.
type AddOffsetsRequest struct {
	ProducerID int64
	Epoch      int16
	Group      string
	Version    int16
}

// AddOffsets decides an AddOffsetsToTxn. Kafka handles it as adding the
// group's __consumer_offsets partition; here the group itself is added, and
// its offsets are later held in PendingOffsets.
func AddOffsets(cur *Txn, req AddOffsetsRequest, nowMs int64) Result {
	r := add(cur, req.ProducerID, req.Epoch, nil, req.Group, 1, nowMs)
	r.Err = fencedFor(r.Err, req.Version >= 2)
	return r
}

// add is prepareAddPartitions behind the coordinator's checks, for explicit
// adds (version 1) and KIP-890's implicit ones (version 2). group is "" when
// only partitions are added.
func add(cur *Txn, producerID int64, epoch int16, parts []TopicPartition, group string, version int8, nowMs int64) Result {
	if code := checkProducer(cur, producerID, epoch); code != ErrNone {
		return fail(code)
	}
	if cur.State == Ongoing && covers(cur, parts, group) {
		return ok()
	}
	n := transition(cur, Ongoing, nowMs)
	if cur.State != Ongoing {
		// Empty or Complete*: a new transaction starts now.
		n.StartTimeMs = nowMs
		n.Partitions = nil
		n.PendingOffsets = nil
	}
	if len(parts) > 0 && n.Partitions == nil {
		n.Partitions = make(map[TopicPartition]struct{}, len(parts))
	}
	for _, tp := range parts {
		n.Partitions[tp] = struct{}{}
	}
	if group != "" && !n.HasGroup(group) {
		if n.PendingOffsets == nil {
			n.PendingOffsets = make(map[string]GroupOffsets, 1)
		}
		n.PendingOffsets[group] = GroupOffsets{}
	}
	n.TxnVersion = version
	r := ok()
	r.Txn = n
	return checked(cur.State, r)
}

func covers(t *Txn, parts []TopicPartition, group string) bool {
	for _, tp := range parts {
		if !t.HasPartition(tp) {
			return false
		}
	}
	return group == "" || t.HasGroup(group)
}

// TxnOffsetCommitRequest is a TxnOffsetCommit request, as far as the
// transaction is concerned.
type TxnOffsetCommitRequest struct {
	ProducerID      int64
	Epoch           int16
	Group           string
	MemberID        string
	GenerationID    int32
	GroupInstanceID string
	Offsets         map[TopicPartition]Offset
	Version         int16
}

// TxnOffsetCommit decides a TxnOffsetCommit and, when accepted, holds its
// offsets in the transaction until commit. Kafka's group coordinator verifies
// the transaction first (AddPartitionsToTxnManager): up to v4 the group must
// have been added by AddOffsetsToTxn (else INVALID_TXN_STATE, or
// TRANSACTION_ABORTABLE from v4); from v5 (TV2) the group is added
// implicitly. A fenced producer gets INVALID_PRODUCER_EPOCH.
func TxnOffsetCommit(cur *Txn, req TxnOffsetCommitRequest, nowMs int64) Result {
	var r Result
	if req.Version >= 5 {
		r = add(cur, req.ProducerID, req.Epoch, nil, req.Group, 2, nowMs)
	} else {
		r = verifyInTransaction(cur, req.ProducerID, req.Epoch, func(t *Txn) bool { return t.HasGroup(req.Group) })
	}
	r.Err = verificationError(r.Err, req.Version >= 4)
	if r.Err != ErrNone {
		return r
	}
	base := r.Txn
	if base == nil {
		base = cur
	}
	n := base.Clone()
	n.LastUpdateMs = nowMs
	g := n.PendingOffsets[req.Group]
	g.MemberID, g.GenerationID, g.GroupInstanceID = req.MemberID, req.GenerationID, req.GroupInstanceID
	if g.Offsets == nil {
		g.Offsets = make(map[TopicPartition]Offset, len(req.Offsets))
	}
	for tp, o := range req.Offsets {
		g.Offsets[tp] = o
	}
	n.PendingOffsets[req.Group] = g
	r.Txn = n
	return checked(cur.State, r)
}

// verifyInTransaction is Kafka's verification of a transactional write
// (handleVerifyPartitionsInTransaction): the producer is current, no
// commit/abort is under way, and the target was added to the transaction,
// else TRANSACTION_ABORTABLE. It never changes the state.
func verifyInTransaction(cur *Txn, producerID int64, epoch int16, added func(*Txn) bool) Result {
	if code := checkProducer(cur, producerID, epoch); code != ErrNone {
		return fail(code)
	}
	if !added(cur) {
		return fail(kerr.TransactionAbortable.Code)
	}
	return ok()
}

// ProduceRequest is one transactional batch of a Produce request.
type ProduceRequest struct {
	ProducerID int64
	Epoch      int16
	Partition  TopicPartition
	Version    int16
}

// AdmitBatch decides whether a transactional batch may join the transaction
// (the partition leader's verification, ReplicaManager and
// AddPartitionsToTxnManager). Up to v11 the partition must already be in the
// transaction: else INVALID_TXN_STATE, or TRANSACTION_ABORTABLE from v11.
// From v12 (TV2) the partition is added implicitly and the Result may carry
// a new state. A fenced producer gets INVALID_PRODUCER_EPOCH; a commit or
// abort under way gets NOT_ENOUGH_REPLICAS, which every producer retries
// (Kafka's translation of CONCURRENT_TRANSACTIONS for Produce). Epoch and
// sequence checks of the batch itself belong to the dedup package.
func AdmitBatch(cur *Txn, req ProduceRequest, nowMs int64) Result {
	var r Result
	if req.Version >= 12 {
		r = add(cur, req.ProducerID, req.Epoch, []TopicPartition{req.Partition}, "", 2, nowMs)
	} else {
		r = verifyInTransaction(cur, req.ProducerID, req.Epoch, func(t *Txn) bool { return t.HasPartition(req.Partition) })
	}
	r.Err = verificationError(r.Err, req.Version >= 11)
	if r.Err == kerr.ConcurrentTransactions.Code {
		r.Err = kerr.NotEnoughReplicas.Code
	}
	return r
}

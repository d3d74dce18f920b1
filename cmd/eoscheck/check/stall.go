package check

// Faults of the copiers themselves (issue 9):
//
//   - stall: a copier that consumed and produced a transaction's records
//     stops dead — every connection of its client frozen, as SIGSTOP would
//     freeze a process: no heartbeat, no poll — until the backend's group
//     has removed it (its session timed out) and handed its partitions to a
//     copier with another transactional id. Then it wakes and, at once,
//     commits the transaction's offsets with the member id and generation
//     it had (AddOffsetsToTxn, TxnOffsetCommit, as Java's
//     sendOffsetsToTransaction with the consumer's groupMetadata does
//     after a long pause; franz-go's GroupTransactSession would often
//     notice the revocation first and never send them). Kafka answers that
//     TxnOffsetCommit UNKNOWN_MEMBER_ID / ILLEGAL_GENERATION /
//     STALE_MEMBER_EPOCH, so the zombie aborts; if it is accepted, the
//     zombie commits, and the records are copied twice.
//   - init read: a new instance of a copier's transactional id reads the
//     output read_committed right after InitProducerId and checks that
//     every transaction its predecessors committed is there whole, as Kafka
//     Connect's exactly-once sources do (Kafka answers InitProducerId only
//     once the previous transaction's markers are written).

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// gate holds every connection of one copier's client still while closed:
// reads and writes wait (a read already blocked in the socket may still
// return what arrives). Deadlines the client set pass meanwhile, as they
// would for a stopped process.
type gate struct {
	mu     sync.Mutex
	closed chan struct{}                                                     // nil: open
	dial   func(ctx context.Context, network, host string) (net.Conn, error) // nil: net.Dialer
}

func (g *gate) pause() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed == nil {
		g.closed = make(chan struct{})
	}
}

func (g *gate) resume() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed != nil {
		close(g.closed)
		g.closed = nil
	}
}

func (g *gate) wait() {
	g.mu.Lock()
	c := g.closed
	g.mu.Unlock()
	if c != nil {
		<-c
	}
}

type gatedConn struct {
	net.Conn
	g *gate
}

func (c *gatedConn) Read(p []byte) (int, error) {
	c.g.wait()
	return c.Conn.Read(p)
}

func (c *gatedConn) Write(p []byte) (int, error) {
	c.g.wait()
	return c.Conn.Write(p)
}

// tlsOver is dial with TLS on top, if cfg is set: kgo takes a dialer or a
// TLS configuration, not both.
func tlsOver(dial func(ctx context.Context, network, host string) (net.Conn, error), cfg *tls.Config) func(ctx context.Context, network, host string) (net.Conn, error) {
	if cfg == nil {
		return dial
	}
	return func(ctx context.Context, network, host string) (net.Conn, error) {
		conn, err := dial(ctx, network, host)
		if err != nil {
			return nil, err
		}
		c := cfg.Clone()
		if c.ServerName == "" {
			c.ServerName, _, _ = net.SplitHostPort(host)
		}
		tc := tls.Client(conn, c)
		if err := tc.HandshakeContext(ctx); err != nil {
			conn.Close()
			return nil, fmt.Errorf("TLS to %s: %w", host, err)
		}
		return tc, nil
	}
}

// dialer dials through g.
func (g *gate) dialer() func(ctx context.Context, network, host string) (net.Conn, error) {
	dial := g.dial
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	return func(ctx context.Context, network, host string) (net.Conn, error) {
		conn, err := dial(ctx, network, host)
		if err != nil {
			return nil, err
		}
		return &gatedConn{Conn: conn, g: g}, nil
	}
}

// stallTimeout bounds how long a stalled copier waits for the group to
// remove it: a few session timeouts and a rebalance.
const stallTimeout = 60 * time.Second

// StallReport counts the stalls of copiers past their session timeout.
type StallReport struct {
	Stalls int64 `json:"stalls"` // copiers frozen mid-transaction
	// GroupMovedOn: the backend's group removed the stalled member before
	// it woke (the case that matters); the rest woke after stallTimeout
	// with the member still in the group.
	GroupMovedOn int64 `json:"group_moved_on"`
	// Refused: its TxnOffsetCommit with the old member and generation was
	// refused (by error name), and it aborted.
	Refused       int64            `json:"stale_offsets_refused"`
	RefusedByCode map[string]int64 `json:"stale_offsets_refused_by_error,omitempty"`
	// Accepted: the group had moved on, yet the old member's
	// TxnOffsetCommit was accepted (Kafka refuses it): an anomaly, and
	// its commit copies the records a second time.
	Accepted int64 `json:"stale_offsets_accepted"`
	// AcceptedCommitted: of those, the zombie's EndTxn committed.
	AcceptedCommitted int64   `json:"stale_commits_committed"`
	Errors            int64   `json:"errors"` // the attempt failed otherwise (request error): outcome unknown
	LongestSeconds    float64 `json:"longest_seconds"`
}

// InitReadReport counts the checks new copier instances make of their
// output right after InitProducerId.
type InitReadReport struct {
	Checks int64 `json:"checks"`
	// Records of the predecessors' committed transactions that were looked
	// for, and those missing (an anomaly: the new instance would copy
	// them again).
	Expected int64 `json:"expected_records"`
	Missing  int64 `json:"missing_records"`
	// Errors: the read could not finish (not an anomaly; noted).
	Errors int64 `json:"errors"`
}

// stallTxn freezes the copier mid-transaction (records produced and
// acknowledged), waits until the backend's group no longer has its member,
// wakes it and has it commit the transaction's offsets with its old member
// id and generation. Whatever the outcome, the instance is then replaced.
func (c *copier) stallTxn(ctx context.Context, t *txnRec) {
	w, log := c.w, c.w.log
	c.flush(ctx, t)
	cl := c.sess.Client()
	member, gen := cl.GroupMetadata()
	offsets := cl.UncommittedOffsets()
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	pid, epoch, perr := cl.ProducerID(pctx)
	cancel()
	if member == "" || perr != nil || len(offsets) == 0 {
		// Not a member (yet), no producer id, or no offsets (a
		// rebalance revoked this transaction's partitions after the
		// poll): nothing to stall; end the transaction as an abort on
		// purpose and stall the next one instead, so that a stall asked
		// for still happens (a test waiting for its outcome would
		// otherwise wait forever).
		w.trace.printf("copier %d.%d txn %d: no stall (member %q, producer id err %v, %d topics of offsets); aborting, and stalling the next transaction instead", c.slot, c.inc, t.id, member, perr, len(offsets))
		w.stallReq[c.slot].Store(true)
		c.endAbort(ctx, t)
		return
	}
	w.stalls.mu.Lock()
	w.stalls.r.Stalls++
	w.stalls.mu.Unlock()
	g := w.gates[c.slot]
	w.trace.printf("copier %d.%d txn %d: STALL: client frozen as member %q generation %d (producer %d/%d)", c.slot, c.inc, t.id, member, gen, pid, epoch)
	t0 := time.Now()
	g.pause()
	moved, err := w.waitMemberGone(ctx, member, stallTimeout)
	g.resume()
	d := time.Since(t0)
	w.trace.printf("copier %d.%d txn %d: STALL over after %v: group moved on %v (%v); committing its offsets as the old member", c.slot, c.inc, t.id, d.Round(time.Millisecond), moved, err)
	t.endAt.Store(log.since())

	code, reqErr := staleOffsetCommit(ctx, cl, w.txnID(c.slot), w.group, pid, epoch, member, gen, offsets)
	w.trace.printf("copier %d.%d txn %d: stale TxnOffsetCommit → %v (request error %v)", c.slot, c.inc, t.id, code, reqErr)
	w.stalls.mu.Lock()
	w.stalls.r.LongestSeconds = max(w.stalls.r.LongestSeconds, d.Seconds())
	if moved {
		w.stalls.r.GroupMovedOn++
	}
	w.stalls.mu.Unlock()
	ectx, ecancel := context.WithTimeout(ctx, 30*time.Second)
	defer ecancel()
	switch {
	case reqErr != nil:
		w.stalls.mu.Lock()
		w.stalls.r.Errors++
		w.stalls.mu.Unlock()
		log.note("copier %d txn %d: stale offset commit after a stall: %v", c.slot, t.id, reqErr)
		err := cl.EndTransaction(ectx, kgo.TryAbort)
		c.endState(t, false, err)
	case code != nil:
		w.stalls.mu.Lock()
		w.stalls.r.Refused++
		var ke *kerr.Error
		name := code.Error()
		if errors.As(code, &ke) {
			name = ke.Message
		}
		w.stalls.r.RefusedByCode[name]++
		w.stalls.mu.Unlock()
		err := cl.EndTransaction(ectx, kgo.TryAbort)
		c.endState(t, false, err)
	default:
		if moved {
			w.stalls.mu.Lock()
			w.stalls.r.Accepted++
			w.stalls.mu.Unlock()
			log.note("copier %d txn %d: TxnOffsetCommit of member %q generation %d ACCEPTED after the group removed that member", c.slot, t.id, member, gen)
		}
		err := cl.EndTransaction(ectx, kgo.TryCommit)
		c.endState(t, true, err)
		if moved && err == nil {
			w.stalls.mu.Lock()
			w.stalls.r.AcceptedCommitted++
			w.stalls.mu.Unlock()
		}
	}
	t.doneAt = log.since()
	// The instance's group membership is gone, its consumer state stale:
	// a new instance takes over the transactional id.
	c.replace(ctx)
}

// endState records the end of t after EndTransaction(commit) returned err.
func (c *copier) endState(t *txnRec, commit bool, err error) {
	log := c.w.log
	switch {
	case err != nil:
		t.state.Store(int32(txnUnknown))
		log.unknown.Add(1)
		log.note("copier %d txn %d: end after a stall: %v", c.slot, t.id, err)
	case commit:
		t.state.Store(int32(txnCommitted))
		log.commits.Add(1)
		log.copied.Add(int64(len(t.inputs)))
	default:
		t.state.Store(int32(txnForced))
		log.forced.Add(1)
	}
}

// endAbort ends t as an abort on purpose.
func (c *copier) endAbort(ctx context.Context, t *txnRec) {
	ectx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	_, err := c.sess.End(ectx, kgo.TryAbort) // never commits
	cancel()
	t.doneAt = c.w.log.since()
	if err != nil {
		t.state.Store(int32(txnUnknown))
		c.w.log.unknown.Add(1)
		return
	}
	t.state.Store(int32(txnAborted))
	c.w.log.aborts.Add(1)
}

// staleOffsetCommit adds the group to the open transaction and commits
// offsets in it as member/generation. It returns the first error code of
// the answers (nil: accepted), or the request error.
func staleOffsetCommit(ctx context.Context, cl *kgo.Client, txnID, group string, pid int64, epoch int16,
	member string, gen int32, offsets map[string]map[int32]kgo.EpochOffset) (error, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	add := kmsg.NewPtrAddOffsetsToTxnRequest()
	add.TransactionalID, add.ProducerID, add.ProducerEpoch, add.Group = txnID, pid, epoch, group
	addResp, err := add.RequestWith(ctx, cl)
	if err != nil {
		return nil, fmt.Errorf("AddOffsetsToTxn: %w", err)
	}
	if err := kerr.ErrorForCode(addResp.ErrorCode); err != nil {
		return err, nil
	}
	// TxnOffsetCommit v6+ names topics by id: both are set, the version
	// the client picks uses one.
	var names []string
	for topic := range offsets {
		names = append(names, topic)
	}
	details, err := kadm.NewClient(cl).ListTopics(ctx, names...)
	if err != nil {
		return nil, fmt.Errorf("topic ids: %w", err)
	}
	req := kmsg.NewPtrTxnOffsetCommitRequest()
	req.TransactionalID, req.Group, req.ProducerID, req.ProducerEpoch = txnID, group, pid, epoch
	req.Generation, req.MemberID = gen, member
	for topic, parts := range offsets {
		rt := kmsg.NewTxnOffsetCommitRequestTopic()
		rt.Topic, rt.TopicID = topic, details[topic].ID
		for p, eo := range parts {
			rp := kmsg.NewTxnOffsetCommitRequestTopicPartition()
			rp.Partition, rp.Offset, rp.LeaderEpoch = p, eo.Offset, eo.Epoch
			rt.Partitions = append(rt.Partitions, rp)
		}
		req.Topics = append(req.Topics, rt)
	}
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return nil, fmt.Errorf("TxnOffsetCommit: %w", err)
	}
	for _, t := range resp.Topics {
		for _, p := range t.Partitions {
			if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
				return err, nil
			}
		}
	}
	return nil, nil
}

// waitMemberGone waits until the backend's group has no member named
// member, for up to timeout. It reports whether it saw that.
func (w *copyWork) waitMemberGone(ctx context.Context, member string, timeout time.Duration) (bool, error) {
	deadline := time.Now().Add(timeout)
	var lastErr error
	for {
		present, err := w.memberPresent(ctx, member)
		if err == nil && !present {
			return true, nil
		}
		lastErr = err
		if time.Now().After(deadline) {
			return false, lastErr
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// memberPresent asks the backend whether member is in the copiers' group.
func (w *copyWork) memberPresent(ctx context.Context, member string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var ids []string
	var gerr error
	if w.consumerProtocol {
		gs, err := w.adm.DescribeConsumerGroups(ctx, w.group)
		if err != nil {
			return false, err
		}
		g, ok := gs[w.group]
		if !ok || g.Err != nil {
			gerr = fmt.Errorf("describe %s: %v", w.group, g.Err)
		}
		for _, m := range g.Members {
			ids = append(ids, m.MemberID)
		}
	} else {
		gs, err := w.adm.DescribeGroups(ctx, w.group)
		if err != nil {
			return false, err
		}
		g, ok := gs[w.group]
		if !ok || g.Err != nil {
			gerr = fmt.Errorf("describe %s: %v", w.group, g.Err)
		}
		for _, m := range g.Members {
			ids = append(ids, m.MemberID)
		}
	}
	if gerr != nil {
		return false, gerr
	}
	return slices.Contains(ids, member), nil
}

// setGroupSessionTimeout sets the KIP-848 group's session timeout to 6 s
// and its heartbeat interval to 1 s (group configs; the broker's
// group.consumer.min.session.timeout.ms and
// group.consumer.min.heartbeat.interval.ms must allow them, as
// integration/kafka/kafka.sh sets them).
func setGroupSessionTimeout(ctx context.Context, cl *kgo.Client, group string) error {
	req := kmsg.NewPtrIncrementalAlterConfigsRequest()
	res := kmsg.NewIncrementalAlterConfigsRequestResource()
	res.ResourceType, res.ResourceName = kmsg.ConfigResourceTypeGroupConfig, group
	for k, v := range map[string]string{"consumer.session.timeout.ms": "6000", "consumer.heartbeat.interval.ms": "1000"} {
		c := kmsg.NewIncrementalAlterConfigsRequestResourceConfig()
		c.Name, c.Value = k, kmsg.StringPtr(v)
		res.Configs = append(res.Configs, c)
	}
	req.Resources = append(req.Resources, res)
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return err
	}
	for _, r := range resp.Resources {
		if err := kerr.ErrorForCode(r.ErrorCode); err != nil {
			msg := ""
			if r.ErrorMessage != nil {
				msg = *r.ErrorMessage
			}
			return fmt.Errorf("%w: %s", err, msg)
		}
	}
	return nil
}

// groupType is the backend's type of the copiers' group ("classic",
// "consumer"), empty if it does not know the group.
func groupType(ctx context.Context, adm *kadm.Client, group string) (string, error) {
	ls, err := adm.ListGroups(ctx)
	if err != nil {
		return "", err
	}
	for _, g := range ls {
		if g.Group == group {
			return g.GroupType, nil
		}
	}
	return "", nil
}

// initRead reads the output topic through eosproxy, read_committed, up to
// its end offsets as they are right after a new instance of slot's
// transactional id got its producer id, and checks that every transaction
// the slot's earlier instances committed before is there whole.
func (c *copier) initRead(ctx context.Context, before int64) {
	w := c.w
	want := map[int64]int{} // txn id → records
	var expected int64
	for _, t := range w.log.all() {
		if t.slot == c.slot && t.st() == txnCommitted && t.doneAt <= before {
			want[t.id] = len(t.inputs)
			expected += int64(len(t.inputs))
		}
	}
	opts := w.clientOpts
	if w.tls != nil {
		opts = append(slices.Clip(opts), kgo.DialTLSConfig(w.tls.Clone()))
	}
	got, err := readOutputCommitted(ctx, w.bootstrap, w.out, opts)
	w.initReads.mu.Lock()
	defer w.initReads.mu.Unlock()
	w.initReads.r.Checks++
	if err != nil {
		w.initReads.r.Errors++
		w.log.note("copier %d.%d: read of the output right after InitProducerId: %v", c.slot, c.inc, err)
		w.trace.printf("copier %d.%d: init read failed: %v", c.slot, c.inc, err)
		return
	}
	w.initReads.r.Expected += expected
	var missing int64
	for id, n := range want {
		if k := got[id]; k < n {
			missing += int64(n - k)
			if w.initReads.examples < 5 {
				w.initReads.examples++
				w.log.note("copier %d.%d: right after InitProducerId, the output holds %d of the %d records of %s", c.slot, c.inc, k, n, w.log.get(id).describe())
			}
		}
	}
	w.initReads.r.Missing += missing
	w.trace.printf("copier %d.%d: init read: %d committed transactions of the slot (%d records), %d records missing", c.slot, c.inc, len(want), expected, missing)
}

// readOutputCommitted reads topic read_committed through bootstrap from the
// start to the end offsets it has now, and counts the records by copier
// transaction. eosproxy writes committed batches as plain batches, so the
// last record before an end offset is a record, never a marker.
func readOutputCommitted(ctx context.Context, bootstrap, topic string, opts []kgo.Opt) (map[int64]int, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	meta, err := kgo.NewClient(append(append([]kgo.Opt(nil), opts...), kgo.SeedBrokers(seeds(bootstrap)...),
		kgo.MetadataMinAge(100*time.Millisecond),
		kgo.RetryBackoffFn(func(n int) time.Duration { return min(time.Duration(n)*10*time.Millisecond, 200*time.Millisecond) }))...)
	if err != nil {
		return nil, err
	}
	defer meta.Close()
	adm := kadm.NewClient(meta)
	var ends kadm.ListedOffsets
	for {
		// read_committed end offsets (the last stable offsets).
		if ends, err = adm.ListCommittedOffsets(ctx, topic); err == nil && ends.Error() == nil {
			break
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("end offsets: %v", err)
		}
		time.Sleep(100 * time.Millisecond) // a killed eosproxy is back within a second
	}
	offs := map[int32]kgo.Offset{}
	left := map[int32]int64{}
	ends.Each(func(e kadm.ListedOffset) {
		if e.Offset > 0 {
			offs[e.Partition] = kgo.NewOffset().AtStart()
			left[e.Partition] = e.Offset
		}
	})
	got := map[int64]int{}
	if len(left) == 0 {
		return got, nil
	}
	cl, err := kgo.NewClient(append(append([]kgo.Opt(nil), opts...), kgo.SeedBrokers(seeds(bootstrap)...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: offs}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.MetadataMinAge(100*time.Millisecond),
		kgo.RetryBackoffFn(func(n int) time.Duration { return min(time.Duration(n)*10*time.Millisecond, 200*time.Millisecond) }),
		kgo.FetchMaxWait(200*time.Millisecond))...)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	for len(left) > 0 {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%d partitions not read up to their end offsets %v within a minute", len(left), left)
		}
		fs.EachRecord(func(r *kgo.Record) {
			if _, _, txn, ok := parseOutput(string(r.Value)); ok {
				got[txn]++
			}
			if end, ok := left[r.Partition]; ok && r.Offset+1 >= end {
				delete(left, r.Partition)
			}
		})
	}
	return got, nil
}

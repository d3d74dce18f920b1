package integration

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"

	"github.com/eosproxy/eosproxy/proxy"
)

// Kafka error codes the tests below expect by number, as they travel on the
// wire.
const (
	codeUnstableOffsetCommit int16 = 88
	codePolicyViolation      int16 = 44
	codeInvalidTxnState      int16 = 48
	codeTransactionAbortable int16 = 120
)

// pollUntil calls fn until it reports done, failing the test with what fn
// last described once the deadline passes.
func pollUntil(t *testing.T, within time.Duration, fn func() (bool, string)) {
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

// offsetFetchClient is a client that issues OffsetFetch at version v at most:
// kgo picks the highest version both sides support, so capping it is how a
// test gets the old single-group form (v7) or the batched one (v8+).
func offsetFetchClient(t *testing.T, addr string, v int16) *kgo.Client {
	vs := kversion.Stable()
	vs.SetMaxKeyVersion(int16(kmsg.OffsetFetch), v)
	return newClient(t, addr, kgo.MaxVersions(vs))
}

type fetchedOffset struct {
	offset int64
	code   int16
}

// fetchGroupOffsets sends one OffsetFetch for group's parts of topic (all
// topics when parts is nil) and returns the answer by partition. It fails
// unless the answer came at version v and carries no group-level error.
func fetchGroupOffsets(t *testing.T, cl *kgo.Client, v int16, group, topic string, parts []int32, stable bool) map[int32]fetchedOffset {
	t.Helper()
	req := kmsg.NewPtrOffsetFetchRequest()
	req.Group, req.RequireStable = group, stable
	if parts != nil {
		rt := kmsg.NewOffsetFetchRequestTopic()
		rt.Topic, rt.Partitions = topic, parts
		req.Topics = append(req.Topics, rt)
	}
	resp, err := req.RequestWith(testCtx(t), cl)
	if err != nil {
		t.Fatalf("OffsetFetch v%d %s (stable=%v): %v", v, group, stable, err)
	}
	if resp.GetVersion() != v {
		t.Fatalf("OffsetFetch went out at v%d, want v%d", resp.GetVersion(), v)
	}
	if resp.ErrorCode != 0 {
		t.Fatalf("OffsetFetch v%d %s (stable=%v): top-level error %v", v, group, stable, kerr.ErrorForCode(resp.ErrorCode))
	}
	// kgo presents both forms: Groups built from the top level below v8,
	// the top level filled from the one group at v8+.
	if len(resp.Groups) != 1 || resp.Groups[0].Group != group {
		t.Fatalf("OffsetFetch v%d %s: answer names groups %+v", v, group, resp.Groups)
	}
	g := resp.Groups[0]
	if g.ErrorCode != 0 {
		t.Fatalf("OffsetFetch v%d %s (stable=%v): group error %v", v, group, stable, kerr.ErrorForCode(g.ErrorCode))
	}
	out := map[int32]fetchedOffset{}
	for _, rt := range g.Topics {
		if rt.Topic != topic {
			t.Fatalf("OffsetFetch v%d %s: answer names topic %q, want %q", v, group, rt.Topic, topic)
		}
		for _, rp := range rt.Partitions {
			if _, dup := out[rp.Partition]; dup {
				t.Fatalf("OffsetFetch v%d %s: partition %d answered twice", v, group, rp.Partition)
			}
			out[rp.Partition] = fetchedOffset{rp.Offset, rp.ErrorCode}
		}
	}
	for _, part := range parts {
		if _, ok := out[part]; !ok {
			t.Fatalf("OffsetFetch v%d %s: partition %d not answered: %+v", v, group, part, out)
		}
	}
	return out
}

// fetchStable polls a RequireStable OffsetFetch until no partition is
// UNSTABLE_OFFSET_COMMIT: the transaction's completion may still be running
// when EndTxn is answered.
func fetchStable(t *testing.T, cl *kgo.Client, v int16, group, topic string, parts []int32) map[int32]fetchedOffset {
	t.Helper()
	var got map[int32]fetchedOffset
	pollUntil(t, 30*time.Second, func() (bool, string) {
		got = fetchGroupOffsets(t, cl, v, group, topic, parts, true)
		for _, o := range got {
			if o.code == codeUnstableOffsetCommit {
				return false, fmt.Sprintf("offsets of %s still unstable: %+v", group, got)
			}
		}
		return true, ""
	})
	return got
}

// rawTxn drives one transactional id with raw requests through cl, which
// routes them to the transaction or group coordinator.
type rawTxn struct {
	t     *testing.T
	cl    *kgo.Client
	id    string
	pid   int64
	epoch int16
}

func initRawTxn(t *testing.T, cl *kgo.Client, id string) *rawTxn {
	t.Helper()
	req := kmsg.NewPtrInitProducerIDRequest()
	req.TransactionalID = &id
	req.TransactionTimeoutMillis = 60_000
	req.ProducerID, req.ProducerEpoch = -1, -1
	// CONCURRENT_TRANSACTIONS while the id's previous commit is still on its
	// way to the backend: retried, as clients do.
	var resp *kmsg.InitProducerIDResponse
	pollUntil(t, 30*time.Second, func() (bool, string) {
		var err error
		resp, err = req.RequestWith(testCtx(t), cl)
		if err != nil {
			t.Fatalf("InitProducerId %s: %v", id, err)
		}
		return resp.ErrorCode != kerr.ConcurrentTransactions.Code, "InitProducerId " + id + " still CONCURRENT_TRANSACTIONS"
	})
	if resp.ErrorCode != 0 || resp.ProducerID < 0 {
		t.Fatalf("InitProducerId %s: %v, producer id %d", id, kerr.ErrorForCode(resp.ErrorCode), resp.ProducerID)
	}
	return &rawTxn{t: t, cl: cl, id: id, pid: resp.ProducerID, epoch: resp.ProducerEpoch}
}

func (x *rawTxn) addOffsets(group string) {
	x.t.Helper()
	req := kmsg.NewPtrAddOffsetsToTxnRequest()
	req.TransactionalID, req.ProducerID, req.ProducerEpoch, req.Group = x.id, x.pid, x.epoch, group
	resp, err := req.RequestWith(testCtx(x.t), x.cl)
	if err != nil || resp.ErrorCode != 0 {
		x.t.Fatalf("AddOffsetsToTxn %s %s: %v %v", x.id, group, err, kerr.ErrorForCode(resp.ErrorCode))
	}
}

// commitOffsets holds offsets of topic in the transaction as an admin-style
// member: no member id, generation -1.
func (x *rawTxn) commitOffsets(group, topic string, offsets map[int32]int64) {
	x.t.Helper()
	req := kmsg.NewPtrTxnOffsetCommitRequest()
	req.TransactionalID, req.Group, req.ProducerID, req.ProducerEpoch = x.id, group, x.pid, x.epoch
	req.Generation, req.MemberID = -1, ""
	rt := kmsg.NewTxnOffsetCommitRequestTopic()
	rt.Topic = topic
	for _, part := range slices.Sorted(func(yield func(int32) bool) {
		for p := range offsets {
			if !yield(p) {
				return
			}
		}
	}) {
		rp := kmsg.NewTxnOffsetCommitRequestTopicPartition()
		rp.Partition, rp.Offset, rp.LeaderEpoch = part, offsets[part], -1
		rt.Partitions = append(rt.Partitions, rp)
	}
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(testCtx(x.t), x.cl)
	if err != nil {
		x.t.Fatalf("TxnOffsetCommit %s %s: %v", x.id, group, err)
	}
	n := 0
	for _, t := range resp.Topics {
		for _, p := range t.Partitions {
			n++
			if p.ErrorCode != 0 {
				x.t.Fatalf("TxnOffsetCommit %s %s: %s/%d: %v", x.id, group, t.Topic, p.Partition, kerr.ErrorForCode(p.ErrorCode))
			}
		}
	}
	if n != len(offsets) {
		x.t.Fatalf("TxnOffsetCommit %s %s: %d partitions answered, want %d", x.id, group, n, len(offsets))
	}
}

// end sends EndTxn and returns its error code; on success it takes the
// epoch a KIP-890 EndTxn answers with.
func (x *rawTxn) end(commit bool) int16 {
	x.t.Helper()
	req := kmsg.NewPtrEndTxnRequest()
	req.TransactionalID, req.ProducerID, req.ProducerEpoch, req.Commit = x.id, x.pid, x.epoch, commit
	resp, err := req.RequestWith(testCtx(x.t), x.cl)
	if err != nil {
		x.t.Fatalf("EndTxn %s (commit=%v): %v", x.id, commit, err)
	}
	if resp.ErrorCode == 0 && resp.GetVersion() >= 5 && resp.ProducerID >= 0 {
		x.pid, x.epoch = resp.ProducerID, resp.ProducerEpoch
	}
	return resp.ErrorCode
}

// backendOffsets reads group's committed offsets straight from the backend.
func backendOffsets(t *testing.T, b backend, group string) kadm.OffsetResponses {
	t.Helper()
	offs, err := kadm.NewClient(newClient(t, b.addrs[0])).FetchOffsets(testCtx(t), group)
	if err != nil {
		t.Fatalf("FetchOffsets %s from the backend: %v", group, err)
	}
	if err := offs.Error(); err != nil {
		t.Fatalf("FetchOffsets %s from the backend: %v", group, err)
	}
	return offs
}

// backendOffsetsReach waits until the backend holds want (partition →
// offset) as group's committed offsets of topic: eosproxy answers a commit
// once it is decided and durable and writes the held offsets right after.
func backendOffsetsReach(t *testing.T, b backend, group, topic string, want map[int32]int64) {
	t.Helper()
	direct := kadm.NewClient(newClient(t, b.addrs[0]))
	pollUntil(t, 30*time.Second, func() (bool, string) {
		offs, err := direct.FetchOffsets(testCtx(t), group)
		if err == nil { // kfake: GROUP_ID_NOT_FOUND before the first commit
			err = offs.Error()
		}
		if err != nil {
			return false, fmt.Sprintf("the backend's offsets of %s: %v", group, err)
		}
		for part, at := range want {
			if o, ok := offs.Lookup(topic, part); !ok || o.At != at {
				return false, fmt.Sprintf("the backend's offsets of %s: %+v, want %v", group, offs, want)
			}
		}
		return true, ""
	})
}

// commitDirect commits offset for topic/part in group straight to the
// backend (the admin identity), so the group exists there.
func commitDirect(t *testing.T, b backend, group, topic string, part int32, offset int64) {
	t.Helper()
	var offs kadm.Offsets
	offs.Add(kadm.Offset{Topic: topic, Partition: part, At: offset, LeaderEpoch: -1})
	resp, err := kadm.NewClient(newClient(t, b.addrs[0])).CommitOffsets(testCtx(t), group, offs)
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		t.Fatalf("commit %s %s/%d=%d to the backend: %v", group, topic, part, offset, err)
	}
}

// While a transaction holds a group's offsets, a RequireStable OffsetFetch is
// answered UNSTABLE_OFFSET_COMMIT by eosproxy, in the v7 form and the batched
// v8/v9 one; without RequireStable the backend answers. Committed, the
// offsets reach the backend; aborted, they do not.
func TestTxnUnstableOffsetFetch(t *testing.T) {
	b := newNoEOSFake(t)
	p := startProxy(t, b)
	raw := newClient(t, p.Addr())
	topic := createTopic(t, kadm.NewClient(raw), 3)
	versions := []int16{7, 8, 9}
	fetchers := map[int16]*kgo.Client{}
	for _, v := range versions {
		fetchers[v] = offsetFetchClient(t, p.Addr(), v)
	}
	held := []int32{0}
	both := []int32{0, 1}

	// prepare opens a transaction holding p0=42 for a group in which the
	// backend already holds p1=7, and checks what each OffsetFetch sees.
	prepare := func(t *testing.T, group string) *rawTxn {
		t.Helper()
		commitDirect(t, b, group, topic, 1, 7)
		x := initRawTxn(t, raw, group+"-txn")
		x.addOffsets(group)
		x.commitOffsets(group, topic, map[int32]int64{0: 42})
		for _, v := range versions {
			got := fetchGroupOffsets(t, fetchers[v], v, group, topic, held, true)
			if o := got[0]; o.code != codeUnstableOffsetCommit || o.offset != -1 {
				t.Fatalf("v%d RequireStable fetch of a held partition: offset %d, %v; want -1, UNSTABLE_OFFSET_COMMIT",
					v, o.offset, kerr.ErrorForCode(o.code))
			}
			got = fetchGroupOffsets(t, fetchers[v], v, group, topic, both, true)
			if o := got[0]; o.code != codeUnstableOffsetCommit {
				t.Fatalf("v%d RequireStable fetch of p0,p1: p0 answered offset %d, %v; want UNSTABLE_OFFSET_COMMIT",
					v, o.offset, kerr.ErrorForCode(o.code))
			}
			// Without RequireStable the backend answers: p0 has no
			// committed offset there yet, p1 has the direct commit.
			got = fetchGroupOffsets(t, fetchers[v], v, group, topic, both, false)
			if o := got[0]; o.code != 0 || o.offset != -1 {
				t.Fatalf("v%d fetch without RequireStable: p0 = %d, %v; want the backend's -1, no error", v, o.offset, kerr.ErrorForCode(o.code))
			}
			if o := got[1]; o.code != 0 || o.offset != 7 {
				t.Fatalf("v%d fetch without RequireStable: p1 = %d, %v; want the backend's 7", v, o.offset, kerr.ErrorForCode(o.code))
			}
		}
		if o, ok := backendOffsets(t, b, group).Lookup(topic, 0); ok && o.At >= 0 {
			t.Fatalf("backend holds %+v for p0 while the transaction is open", o)
		}
		return x
	}

	t.Run("commit", func(t *testing.T) {
		group := topic + "-commit"
		x := prepare(t, group)
		if code := x.end(true); code != 0 {
			t.Fatalf("EndTxn(commit): %v", kerr.ErrorForCode(code))
		}
		for _, v := range versions {
			got := fetchStable(t, fetchers[v], v, group, topic, both)
			if o := got[0]; o.code != 0 || o.offset != 42 {
				t.Fatalf("v%d RequireStable fetch after commit: p0 = %d, %v; want 42", v, o.offset, kerr.ErrorForCode(o.code))
			}
			if o := got[1]; o.code != 0 || o.offset != 7 {
				t.Fatalf("v%d RequireStable fetch after commit: p1 = %d, %v; want 7", v, o.offset, kerr.ErrorForCode(o.code))
			}
		}
		backendOffsetsReach(t, b, group, topic, map[int32]int64{0: 42, 1: 7})

		// A second transaction holds p0=50 over the committed 42. An
		// all-topics RequireStable fetch in the v7 form must not answer
		// as if the group had no offsets: Kafka lists the group's
		// committed partitions, the held one UNSTABLE_OFFSET_COMMIT.
		x = initRawTxn(t, raw, group+"-txn")
		x.addOffsets(group)
		x.commitOffsets(group, topic, map[int32]int64{0: 50})
		all := fetchGroupOffsets(t, fetchers[7], 7, group, topic, nil, true)
		if o, ok := all[0]; !ok || o.code != codeUnstableOffsetCommit {
			t.Errorf("v7 all-topics RequireStable fetch while p0 is held: answered %+v; want p0 listed UNSTABLE_OFFSET_COMMIT (and p1 at 7), not an error-free answer without p0", all)
		}
		if code := x.end(false); code != 0 {
			t.Fatalf("EndTxn(abort): %v", kerr.ErrorForCode(code))
		}
		if o := fetchStable(t, fetchers[9], 9, group, topic, held)[0]; o.code != 0 || o.offset != 42 {
			t.Fatalf("after aborting the second transaction p0 = %d, %v; want the committed 42", o.offset, kerr.ErrorForCode(o.code))
		}
	})

	t.Run("abort", func(t *testing.T) {
		group := topic + "-abort"
		x := prepare(t, group)
		if code := x.end(false); code != 0 {
			t.Fatalf("EndTxn(abort): %v", kerr.ErrorForCode(code))
		}
		for _, v := range versions {
			got := fetchStable(t, fetchers[v], v, group, topic, both)
			if o := got[0]; o.code != 0 || o.offset != -1 {
				t.Fatalf("v%d RequireStable fetch after abort: p0 = %d, %v; want -1, no error", v, o.offset, kerr.ErrorForCode(o.code))
			}
			if o := got[1]; o.code != 0 || o.offset != 7 {
				t.Fatalf("v%d RequireStable fetch after abort: p1 = %d, %v; want 7", v, o.offset, kerr.ErrorForCode(o.code))
			}
		}
		offs := backendOffsets(t, b, group)
		if o, ok := offs.Lookup(topic, 0); ok && o.At >= 0 {
			t.Fatalf("backend holds %+v for p0 after the abort", o)
		}
		if o, ok := offs.Lookup(topic, 1); !ok || o.At != 7 {
			t.Fatalf("backend's committed offset of p1 = %+v (found %v), want the untouched 7", o, ok)
		}
	})
}

// sizedValue is value i as a decimal of size bytes (zero-padded, so
// readBackendAll still parses it).
func sizedValue(i, size int) []byte { return fmt.Appendf(nil, "%0*d", size, i) }

// produceUntilRefused produces values from, from+1, ... of size bytes one at
// a time until a produce fails or max were acknowledged; it returns how many
// were acknowledged and the error.
func produceUntilRefused(t *testing.T, cl *kgo.Client, topic string, from, max, size int) (int, error) {
	t.Helper()
	for i := range max {
		v := from + i
		r := &kgo.Record{Topic: topic, Key: []byte(strconv.Itoa(v % 7)), Value: sizedValue(v, size)}
		if err := cl.ProduceSync(testCtx(t), r).FirstErr(); err != nil {
			return i, err
		}
	}
	return max, nil
}

func produceSized(t *testing.T, cl *kgo.Client, topic string, from, n, size int) {
	t.Helper()
	if ok, err := produceUntilRefused(t, cl, topic, from, n, size); err != nil {
		t.Fatalf("produce of value %d (after %d acknowledged): %v", from+ok, ok, err)
	}
}

// transactionalBatch is a one-record transactional batch from pid.
func transactionalBatch(pid int64, epoch int16, seq int32, value string) []byte {
	raw := idempotentBatch(pid, epoch, seq, value)
	raw[22] |= 0x10 // attributes: transactional
	binary.BigEndian.PutUint32(raw[17:], crc32.Checksum(raw[21:], crc32.MakeTable(crc32.Castagnoli)))
	return raw
}

// A transaction that would buffer more than MaxTransactionBytes, or push
// eosproxy's buffer past TransactionBufferBytes, has its Produce refused with
// POLICY_VIOLATION and a message, cannot commit, aborts cleanly; the next
// transaction under the limit commits.
func TestTxnLimits(t *testing.T) {
	const (
		limit = 256 << 10
		size  = 1 << 10
	)
	txnOpts := func(id, topic string) []kgo.Opt {
		return []kgo.Opt{
			kgo.DefaultProduceTopic(topic), kgo.TransactionalID(id),
			kgo.ProducerBatchCompression(kgo.NoCompression()), // the limits count the batches' bytes
		}
	}
	// refusedAtLimit checks the produce that crossed the limit failed with
	// POLICY_VIOLATION, and neither before the room (between roomLo and
	// roomHi bytes) was used up nor after. Each record is a batch of its
	// own, of size bytes plus less than batchOverhead.
	const batchOverhead = 100
	refusedAtLimit := func(t *testing.T, acked int, err error, roomLo, roomHi int) {
		t.Helper()
		if err == nil {
			t.Fatalf("%d records of %d bytes acknowledged with at most %d bytes of room", acked, size, roomHi)
		}
		if !errors.Is(err, kerr.PolicyViolation) {
			t.Fatalf("produce past the limit failed with %v, want POLICY_VIOLATION", err)
		}
		if acked*size > roomHi || (acked+1)*(size+batchOverhead) <= roomLo {
			t.Fatalf("refused after %d records of %d bytes, with %d..%d bytes of room", acked, size, roomLo, roomHi)
		}
	}
	// abortRefused checks a refused transaction can neither take more
	// records nor commit, then aborts it and checks the backend holds
	// nothing of it.
	//
	// franz-go (v1.22.3) takes the INVALID_TXN_STATE answer to its commit as
	// a fatal error of its producer id; its EndTransaction(TryAbort) then
	// returns nil without sending EndTxn (it assumes a producer id reload
	// aborted the transaction, which a fatal id never does). So unless
	// kgo's abort ended the transaction, it is aborted here with EndTxn
	// under the producer id kgo used, as any client that keeps the id can.
	abortRefused := func(t *testing.T, b backend, p *testProxy, adm *kadm.Client, prod *kgo.Client, id, topic string) {
		t.Helper()
		_, epoch, err := prod.ProducerID(testCtx(t))
		if err != nil {
			t.Fatalf("producer id of the refused transaction: %v", err)
		}
		if err := prod.ProduceSync(testCtx(t), &kgo.Record{Value: sizedValue(99_999, size)}).FirstErr(); err == nil {
			t.Fatal("a transaction refused for its size accepted another record")
		}
		// franz-go commits even after a failed record; eosproxy refuses
		// with TRANSACTION_ABORTABLE (EndTxn v5, KIP-890), which franz-go
		// recovers from by aborting.
		if err := prod.EndTransaction(testCtx(t), kgo.TryCommit); err == nil {
			t.Fatal("a transaction refused for its size committed")
		} else if !errors.Is(err, kerr.TransactionAbortable) {
			t.Fatalf("commit of a refused transaction failed with %v, want TRANSACTION_ABORTABLE", err)
		}
		// The refused commit aborted the transaction, the one outcome left.
		if d := describeTxn(t, adm, id); d.State != "CompleteAbort" {
			t.Fatalf("after the refused commit the transaction is %s, want CompleteAbort", d.State)
		}
		if err := prod.EndTransaction(testCtx(t), kgo.TryAbort); err != nil {
			t.Fatalf("abort after the refused commit: %v", err)
		}
		// franz-go aborts by reloading its producer id (InitProducerId
		// naming the old id and epoch, KIP-360) when it next needs it.
		if err := prod.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		if err := prod.ProduceSync(testCtx(t), &kgo.Record{Value: sizedValue(99_998, size)}).FirstErr(); err != nil {
			t.Fatalf("produce after recovering from the refused transaction: %v", err)
		}
		if err := prod.EndTransaction(testCtx(t), kgo.TryAbort); err != nil {
			t.Fatalf("abort of the transaction after recovery: %v", err)
		}
		if d := describeTxn(t, adm, id); d.State != "CompleteAbort" || d.ProducerEpoch <= epoch {
			t.Fatalf("after recovery and abort: %s at epoch %d (refused at %d), want CompleteAbort at a later epoch", d.State, d.ProducerEpoch, epoch)
		}
		if got := endOffsetsSum(t, b, topic); got != 0 {
			t.Fatalf("backend holds %d records after the refused transaction aborted", got)
		}
	}

	t.Run("MaxTransactionBytes", func(t *testing.T) {
		b := newNoEOSFake(t)
		p := startProxy(t, b, func(c *proxy.Config) { c.MaxTransactionBytes = limit })
		adm := kadm.NewClient(newClient(t, p.Addr()))
		topic := createTopic(t, adm, 3)
		id := topic + "-txn"

		prod := newClient(t, p.Addr(), txnOpts(id, topic)...)
		if err := prod.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		acked, err := produceUntilRefused(t, prod, topic, 10_000, 2*limit/size, size)
		refusedAtLimit(t, acked, err, limit, limit)
		abortRefused(t, b, p, adm, prod, id, topic)

		// kgo holds INVALID_TXN_STATE from the refused commit as fatal for
		// its producer id: a new instance (InitProducerId) carries on.
		next := newClient(t, p.Addr(), txnOpts(id, topic)...)
		if err := next.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		produceSized(t, next, topic, 0, 100, size)
		if err := next.EndTransaction(testCtx(t), kgo.TryCommit); err != nil {
			t.Fatalf("commit of a transaction under the limit: %v", err)
		}
		backendReaches(t, b, topic, 100)
		got, total := readBackendAll(t, b, topic)
		if total != 100 {
			t.Fatalf("backend holds %d records, want the 100 committed", total)
		}
		checkAllOnceInOrder(t, got, 100)

		// On the wire: the refusal names the limit, and the transaction
		// can only abort.
		raw := newClient(t, p.Addr())
		x := initRawTxn(t, raw, id+"-raw")
		req := produceRequest(12, topic, map[int32][]byte{0: transactionalBatch(x.pid, x.epoch, 0, strings.Repeat("7", limit+size))})
		req.TransactionID = &x.id
		resp, err := req.RequestWith(testCtx(t), raw)
		if err != nil {
			t.Fatalf("raw transactional Produce: %v", err)
		}
		if len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 1 {
			t.Fatalf("raw transactional Produce answered %+v", resp.Topics)
		}
		rp := resp.Topics[0].Partitions[0]
		if rp.ErrorCode != codePolicyViolation {
			t.Fatalf("Produce v%d of a batch over the limit: %v, want POLICY_VIOLATION", resp.GetVersion(), kerr.ErrorForCode(rp.ErrorCode))
		}
		if rp.ErrorMessage == nil || !strings.Contains(*rp.ErrorMessage, strconv.Itoa(limit)) {
			t.Fatalf("POLICY_VIOLATION message %v does not name the limit %d", rp.ErrorMessage, limit)
		}
		t.Logf("refusal message: %s", *rp.ErrorMessage)
		// A classic client (EndTxn v4) is told INVALID_TXN_STATE and
		// aborts; a KIP-890 one (v5) is told TRANSACTION_ABORTABLE, the
		// abort done for it.
		classic := &rawTxn{t: t, cl: newClient(t, p.Addr(), kgo.MaxVersions(classicVersions())), id: x.id, pid: x.pid, epoch: x.epoch}
		if code := classic.end(true); code != codeInvalidTxnState {
			t.Fatalf("EndTxn v4 (commit) of the refused transaction: %v, want INVALID_TXN_STATE", kerr.ErrorForCode(code))
		}
		if code := x.end(true); code != codeTransactionAbortable {
			t.Fatalf("EndTxn v5 (commit) of the refused transaction: %v, want TRANSACTION_ABORTABLE", kerr.ErrorForCode(code))
		}
		if d := describeTxn(t, adm, x.id); d.State != "CompleteAbort" {
			t.Fatalf("after the refused commit the transaction is %s, want CompleteAbort", d.State)
		}
		if got := backendReaches(t, b, topic, 100); got != 100 {
			t.Fatalf("backend holds %d records, want the 100 committed", got)
		}
	})

	t.Run("TransactionBufferBytes", func(t *testing.T) {
		b := newNoEOSFake(t)
		p := startProxy(t, b, func(c *proxy.Config) { c.TransactionBufferBytes = limit })
		adm := kadm.NewClient(newClient(t, p.Addr()))
		topic := createTopic(t, adm, 3)

		// Transaction a holds 150 KiB, well within the buffer.
		a := newClient(t, p.Addr(), txnOpts(topic+"-a", topic)...)
		if err := a.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		const aN = 150
		produceSized(t, a, topic, 0, aN, size)

		// Transaction b is refused once both together would pass the
		// buffer, far below the limit on its own.
		idB := topic + "-b"
		bp := newClient(t, p.Addr(), txnOpts(idB, topic)...)
		if err := bp.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		acked, err := produceUntilRefused(t, bp, topic, 10_000, 2*limit/size, size)
		refusedAtLimit(t, acked, err, limit-aN*(size+batchOverhead), limit-aN*size)
		abortRefused(t, b, p, adm, bp, idB, topic)

		// a was never refused: it commits all of its records.
		if d := describeTxn(t, adm, topic+"-a"); d.State != "Ongoing" {
			t.Fatalf("transaction a is %s, want Ongoing", d.State)
		}
		if err := a.EndTransaction(testCtx(t), kgo.TryCommit); err != nil {
			t.Fatalf("commit of the transaction within the buffer: %v", err)
		}
		// Its commit freed the buffer: b's next transaction fits.
		bNext := newClient(t, p.Addr(), txnOpts(idB, topic)...)
		if err := bNext.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		produceSized(t, bNext, topic, aN, 200, size)
		if err := bNext.EndTransaction(testCtx(t), kgo.TryCommit); err != nil {
			t.Fatalf("commit after the buffer was freed: %v", err)
		}
		backendReaches(t, b, topic, int64(aN+200))
		got, total := readBackendAll(t, b, topic)
		if total != aN+200 {
			t.Fatalf("backend holds %d records, want %d", total, aN+200)
		}
		checkAllOnceInOrder(t, got, aN+200)
	})
}

// DescribeTransactions and ListTransactions are answered from eosproxy's
// state; ListTransactions lists each transaction once across the brokers.
func TestTxnDescribeAndList(t *testing.T) {
	b := newNoEOSFake(t)
	p := startProxy(t, b)
	cl := newClient(t, p.Addr())
	adm := kadm.NewClient(cl)
	t1, t2 := createTopic(t, adm, 3), createTopic(t, adm, 3)
	idA, idB := t1+"-ongoing", t1+"-committed"
	start := time.Now()

	manual := kgo.RecordPartitioner(kgo.ManualPartitioner())
	prodA := newClient(t, p.Addr(), kgo.TransactionalID(idA), kgo.TransactionTimeout(47*time.Second), manual)
	if err := prodA.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	for i, tp := range []struct {
		topic string
		part  int32
	}{{t1, 0}, {t2, 1}, {t2, 2}, {t1, 0}} {
		r := &kgo.Record{Topic: tp.topic, Partition: tp.part, Value: []byte(strconv.Itoa(i))}
		if err := prodA.ProduceSync(testCtx(t), r).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	prodB := newClient(t, p.Addr(), kgo.TransactionalID(idB), kgo.TransactionTimeout(53*time.Second), kgo.DefaultProduceTopic(t2))
	if err := prodB.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	produceAndFlush(t, prodB, t2, 0, 10)
	if err := prodB.EndTransaction(testCtx(t), kgo.TryCommit); err != nil {
		t.Fatal(err)
	}
	pidA, epochA, err := prodA.ProducerID(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	pidB, epochB, err := prodB.ProducerID(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if pidA == pidB {
		t.Fatalf("two transactional ids share producer id %d", pidA)
	}

	const unknown = "no-such-transactional-id"
	// As in Kafka, the commit shows PrepareCommit until it is carried out
	// in the backend.
	var ds kadm.DescribedTransactions
	pollUntil(t, 30*time.Second, func() (bool, string) {
		var err error
		if ds, err = adm.DescribeTransactions(testCtx(t), idA, idB, unknown); err != nil {
			return false, err.Error()
		}
		return ds[idB].State != "PrepareCommit", "committed transaction still PrepareCommit"
	})
	a, bd := ds[idA], ds[idB]
	if a.Err != nil || a.State != "Ongoing" || a.ProducerID != pidA || a.ProducerEpoch != epochA || a.TimeoutMillis != 47_000 {
		t.Fatalf("ongoing transaction described as %+v; want Ongoing, producer %d/%d, timeout 47000", a, pidA, epochA)
	}
	if a.StartTimestamp < start.Add(-time.Second).UnixMilli() || a.StartTimestamp > time.Now().UnixMilli() {
		t.Fatalf("ongoing transaction started at %d, not during the test (%d..%d)", a.StartTimestamp, start.UnixMilli(), time.Now().UnixMilli())
	}
	wantTopics := map[string][]int32{t1: {0}, t2: {1, 2}}
	if len(a.Topics) != len(wantTopics) {
		t.Fatalf("ongoing transaction's partitions %v, want %v", a.Topics, wantTopics)
	}
	for topic, want := range wantTopics {
		if got := a.Topics.Sorted(); !slices.ContainsFunc(got, func(tp kadm.TopicPartitions) bool {
			return tp.Topic == topic && slices.Equal(tp.Partitions, want)
		}) {
			t.Fatalf("ongoing transaction's partitions %v, want %s %v", got, topic, want)
		}
	}
	if bd.Err != nil || bd.State != "CompleteCommit" || bd.ProducerID != pidB || bd.ProducerEpoch != epochB || bd.TimeoutMillis != 53_000 {
		t.Fatalf("committed transaction described as %+v; want CompleteCommit, producer %d/%d, timeout 53000", bd, pidB, epochB)
	}
	if len(bd.Topics) != 0 {
		t.Fatalf("completed transaction still lists partitions %v", bd.Topics)
	}
	if u, ok := ds[unknown]; !ok || !errors.Is(u.Err, kerr.TransactionalIDNotFound) {
		t.Fatalf("unknown transactional id described as %+v (present %v), want TRANSACTIONAL_ID_NOT_FOUND", u, ok)
	}

	// Raw, per broker: each id on exactly one broker, the coordinator.
	shards := cl.RequestSharded(testCtx(t), kmsg.NewPtrListTransactionsRequest())
	if len(shards) != len(b.addrs) {
		t.Fatalf("ListTransactions went to %d brokers, want %d", len(shards), len(b.addrs))
	}
	listedOn := map[string][]int32{}
	for _, s := range shards {
		if s.Err != nil {
			t.Fatalf("ListTransactions on broker %d: %v", s.Meta.NodeID, s.Err)
		}
		resp := s.Resp.(*kmsg.ListTransactionsResponse)
		if resp.ErrorCode != 0 {
			t.Fatalf("ListTransactions on broker %d: %v", s.Meta.NodeID, kerr.ErrorForCode(resp.ErrorCode))
		}
		for _, st := range resp.TransactionStates {
			listedOn[st.TransactionalID] = append(listedOn[st.TransactionalID], s.Meta.NodeID)
		}
	}
	if len(listedOn) != 2 || len(listedOn[idA]) != 1 || len(listedOn[idB]) != 1 {
		t.Fatalf("ListTransactions across the brokers listed %v, want %s and %s once each", listedOn, idA, idB)
	}
	if listedOn[idA][0] != a.Coordinator || listedOn[idB][0] != bd.Coordinator {
		t.Fatalf("listed on brokers %v, described by coordinators %d and %d", listedOn, a.Coordinator, bd.Coordinator)
	}
	req := kmsg.NewPtrListTransactionsRequest()
	req.StateFilters = []string{"Bogus"}
	shards = cl.RequestSharded(testCtx(t), req)
	for _, s := range shards {
		if s.Err != nil {
			t.Fatalf("ListTransactions(Bogus) on broker %d: %v", s.Meta.NodeID, s.Err)
		}
		resp := s.Resp.(*kmsg.ListTransactionsResponse)
		if !slices.Equal(resp.UnknownStateFilters, []string{"Bogus"}) || len(resp.TransactionStates) != 0 {
			t.Fatalf("ListTransactions with state filter Bogus on broker %d: unknown filters %v, listed %+v",
				s.Meta.NodeID, resp.UnknownStateFilters, resp.TransactionStates)
		}
	}

	list := func(pids []int64, states ...string) kadm.ListedTransactions {
		t.Helper()
		l, err := adm.ListTransactions(testCtx(t), pids, states)
		if err != nil {
			t.Fatalf("ListTransactions(%v, %v): %v", pids, states, err)
		}
		return l
	}
	all := list(nil)
	if len(all) != 2 || all[idA].State != "Ongoing" || all[idA].ProducerID != pidA ||
		all[idB].State != "CompleteCommit" || all[idB].ProducerID != pidB {
		t.Fatalf("ListTransactions: %+v", all)
	}
	for _, c := range []struct {
		pids   []int64
		states []string
		want   []string
	}{
		{nil, []string{"Ongoing"}, []string{idA}},
		{nil, []string{"CompleteCommit"}, []string{idB}},
		{nil, []string{"Ongoing", "CompleteCommit"}, []string{idA, idB}},
		{nil, []string{"CompleteAbort", "PrepareCommit"}, nil},
		{[]int64{pidB}, nil, []string{idB}},
		{[]int64{pidB}, []string{"Ongoing"}, nil},
	} {
		got := list(c.pids, c.states...).TransactionalIDs()
		slices.Sort(got)
		want := slices.Clone(c.want)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Fatalf("ListTransactions(producers %v, states %v) = %v, want %v", c.pids, c.states, got, want)
		}
	}
}

// The OffsetCommit eosproxy sends the backend for a committed transaction
// carries the group member's id and generation from the TxnOffsetCommit.
func TestTxnOffsetCommitCarriesMember(t *testing.T) {
	const n = 10_000
	b := newNoEOSFake(t)
	p := startProxy(t, b)
	adm := kadm.NewClient(newClient(t, p.Addr()))
	in, out := createTopic(t, adm, 3), createTopic(t, adm, 3)
	plain := newClient(t, p.Addr(), kgo.DefaultProduceTopic(in))
	produceN(t, plain, in, 0, n)
	if err := plain.Flush(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	group := in + "-group"

	type commit struct {
		member   string
		gen      int32
		instance *string
		parts    int
	}
	var mu sync.Mutex
	var seen []commit
	b.fake.ControlKey(int16(kmsg.OffsetCommit), func(req kmsg.Request) (kmsg.Response, error, bool) {
		b.fake.KeepControl()
		r := req.(*kmsg.OffsetCommitRequest)
		if r.Group != group {
			return nil, nil, false
		}
		c := commit{member: r.MemberID, gen: r.Generation, instance: r.InstanceID}
		for _, t := range r.Topics {
			c.parts += len(t.Partitions)
		}
		mu.Lock()
		seen = append(seen, c)
		mu.Unlock()
		return nil, nil, false
	})

	sess, err := kgo.NewGroupTransactSession(sessionOpts(
		kgo.SeedBrokers(p.Addr()), kgo.TransactionalID(in+"-copier"),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumerGroup(group), kgo.ConsumeTopics(in), kgo.DefaultProduceTopic(out),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
	)...)
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	type membership struct {
		member string
		gen    int32
	}
	members := map[membership]bool{}
	copied, commits := 0, 0
	for copied < n {
		var member string
		var gen int32
		batch, committed, ok := copyTxn(t, ctx, sess, 1000, func() {
			// The membership the commit's TxnOffsetCommit carries.
			member, gen = sess.Client().GroupMetadata()
		})
		if !ok {
			t.Fatalf("copied %d of %d before timeout", copied, n)
		}
		if committed && batch > 0 {
			copied += batch
			commits++
			members[membership{member, gen}] = true
			if after, afterGen := sess.Client().GroupMetadata(); after != member || afterGen != gen {
				t.Logf("membership moved during a transaction: %s/%d → %s/%d", member, gen, after, afterGen)
				members[membership{after, afterGen}] = true
			}
		}
	}
	t.Logf("copied %d records in %d transactions; memberships %v", copied, commits, members)

	// And they committed: the group's offsets in the backend cover the
	// input.
	ends, err := kadm.NewClient(newClient(t, b.addrs[0])).ListEndOffsets(testCtx(t), in)
	if err != nil {
		t.Fatal(err)
	}
	pollUntil(t, 30*time.Second, func() (bool, string) {
		offs := backendOffsets(t, b, group)
		var behind []string
		ends.Each(func(e kadm.ListedOffset) {
			if o, ok := offs.Lookup(in, e.Partition); !ok || o.At != e.Offset {
				behind = append(behind, fmt.Sprintf("%d: %+v want %d", e.Partition, o.At, e.Offset))
			}
		})
		return len(behind) == 0, fmt.Sprintf("group offsets in the backend behind the input: %v", behind)
	})
	// Every OffsetCommit the backend saw carried the member's identity. A
	// commit's offsets that a later commit of the group already holds are
	// not written (the later ones are), so there may be fewer than commits.
	mu.Lock()
	got := slices.Clone(seen)
	mu.Unlock()
	t.Logf("backend saw %d OffsetCommits for the group", len(got))
	if len(got) == 0 {
		t.Fatal("the backend saw no OffsetCommit for the group")
	}
	for i, c := range got {
		if c.member == "" || c.gen < 1 {
			t.Fatalf("OffsetCommit %d of %d for %s carried member %q generation %d, want the group member's", i, len(got), group, c.member, c.gen)
		}
		if !members[membership{c.member, c.gen}] {
			t.Fatalf("OffsetCommit %d carried member %q generation %d; the session was %v", i, c.member, c.gen, members)
		}
		if c.instance != nil {
			t.Fatalf("OffsetCommit %d carried instance id %q; the session has none", i, *c.instance)
		}
		if c.parts == 0 {
			t.Fatalf("OffsetCommit %d carried no partitions", i)
		}
	}
	backendReaches(t, b, out, int64(n))
	got2, total := readBackendAll(t, b, out)
	if total != n {
		t.Fatalf("output holds %d records, want %d", total, n)
	}
	seenV := make([]bool, n)
	for _, vs := range got2 {
		for _, v := range vs {
			if seenV[v] {
				t.Fatalf("value %d copied twice", v)
			}
			seenV[v] = true
		}
	}
}

// classicVersions caps a client below KIP-890's EndTxn v5 and Produce v12.
func classicVersions() *kversion.Versions {
	v := kversion.Stable()
	v.SetMaxKeyVersion(int16(kmsg.EndTxn), 4)
	v.SetMaxKeyVersion(int16(kmsg.Produce), 11)
	return v
}

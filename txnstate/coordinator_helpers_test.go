package txnstate_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/eosproxy/eosproxy/dedup"
	"github.com/eosproxy/eosproxy/protocol"
	"github.com/eosproxy/eosproxy/store"
	"github.com/eosproxy/eosproxy/txnstate"
	"github.com/eosproxy/eosproxy/txnstate/spool"
)

type TP = txnstate.TopicPartition

func tp(topic string, p int32) TP { return TP{Topic: topic, Partition: p} }

// ---------------------------------------------------------------------------
// Record batches

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// txnBatch encodes a magic-2 transactional record batch of producer
// pid/epoch starting at sequence seq, one record per value, the way a client
// sends it.
func txnBatch(pid int64, epoch int16, seq int32, ts int64, values ...[]byte) []byte {
	var recs []byte
	for i, v := range values {
		rec := kmsg.Record{OffsetDelta: int32(i), Value: v}
		rec.Length = int32(len(rec.AppendTo(nil)) - len(binary.AppendVarint(nil, 0)))
		recs = rec.AppendTo(recs)
	}
	b := kmsg.RecordBatch{
		Magic:           2,
		Attributes:      0x10, // transactional
		LastOffsetDelta: int32(len(values) - 1),
		FirstTimestamp:  ts,
		MaxTimestamp:    ts,
		ProducerID:      pid,
		ProducerEpoch:   epoch,
		FirstSequence:   seq,
		NumRecords:      int32(len(values)),
		Records:         recs,
	}
	raw := b.AppendTo(nil)
	b.Length = int32(len(raw) - 12)
	raw = b.AppendTo(nil)
	b.CRC = int32(crc32.Checksum(raw[21:], castagnoli))
	return b.AppendTo(nil)
}

func digest(b []byte) [32]byte { return protocol.Digest(b, len(b)) }

// ---------------------------------------------------------------------------
// Fake backend

// fault is what the fake backend does with one batch of a Produce.
type fault int

const (
	apply          fault = iota
	writeAmbiguous       // written, but answered with an ambiguous error (a timeout)
	loseAmbiguous        // not written, answered with an ambiguous error
	reject               // not written, answered with a definite error
	hang                 // in flight until the coordinator gives up (ctx done)
)

var (
	errTimeout   = errors.New("fake: request timed out")
	errNotLeader = errors.New("fake: not leader for partition")
)

type stored struct {
	base  int64
	batch []byte
}

type groupCommit struct {
	group string
	g     txnstate.GroupOffsets
}

// fakeBackend is a Kafka cluster in memory: per partition a log of batches
// with offsets assigned as a broker does, digest look-up over it, group
// offset commits, and injectable failures.
type fakeBackend struct {
	mu      sync.Mutex
	logs    map[TP][]stored
	ends    map[TP]int64
	commits []groupCommit
	bad     []string // batches a real broker would have refused

	attempts int // batches the coordinator asked to write
	finds    int // FindBatch calls
	// fault decides, for the n-th batch attempt (from 1), what happens.
	fault      func(n int, tp TP) fault
	endErrs    []error                           // consumed one per EndOffsets call
	findErrs   []error                           // consumed one per FindBatch call
	commitErrs []error                           // consumed one per CommitOffsets call
	commitFail func(txnstate.GroupOffsets) error // fails chosen commits while set

	hung     chan struct{} // receives when a Produce hangs
	inflight map[TP][]byte // batches of a hung Produce, not (yet) written

	// idem: the backend has idempotence (idemBackend); batches carry
	// eosproxy's own producer fields and are checked as Kafka checks them.
	idem      bool
	producers map[TP]*producerState
	nextPID   int64
}

func newFakeBackend() *fakeBackend {
	return &fakeBackend{logs: map[TP][]stored{}, ends: map[TP]int64{}, hung: make(chan struct{}, 16)}
}

// append writes b at the partition's end, as a broker would (base offset
// assigned, everything else kept). Called with mu held.
func (f *fakeBackend) append(p TP, b []byte) int64 {
	bt, err := protocol.ParseBatch(b)
	switch {
	case err != nil:
		f.bad = append(f.bad, fmt.Sprintf("%v: %v", p, err))
	case bt.Length != len(b), bt.Transactional, bt.Control:
		f.bad = append(f.bad, fmt.Sprintf("%v: batch not cleared for the backend: %+v", p, bt))
	case !f.idem && (bt.ProducerID != -1 || bt.ProducerEpoch != -1 || bt.BaseSequence != -1):
		f.bad = append(f.bad, fmt.Sprintf("%v: producer fields sent to a backend without idempotence: %+v", p, bt))

	}
	c := slices.Clone(b)
	base := f.ends[p]
	binary.BigEndian.PutUint64(c, uint64(base))
	f.logs[p] = append(f.logs[p], stored{base, c})
	f.ends[p] = base + int64(protocol.BatchLastOffsetDelta(c)) + 1
	return base
}

// seed writes n batches of other producers to the partition.
func (f *fakeBackend) seed(p TP, n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range n {
		b := txnBatch(-1, -1, -1, 1, fmt.Appendf(nil, "other %v %d", p, i), []byte("x"))
		binary.BigEndian.PutUint16(b[21:], 0)
		binary.BigEndian.PutUint32(b[17:], crc32.Checksum(b[21:], castagnoli))
		f.append(p, b)
	}
}

// nextFault counts a batch attempt and says what happens to it; called
// with mu held.
func (f *fakeBackend) nextFault(p TP) fault {
	f.attempts++
	if f.fault == nil {
		return apply
	}
	return f.fault(f.attempts, p)
}

func (f *fakeBackend) setFault(fn func(n int, tp TP) fault) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fault = fn
}

// MissingPartitions: the fake has every partition.
func (f *fakeBackend) MissingPartitions(ctx context.Context, tps []TP) (map[TP]bool, error) {
	return map[TP]bool{}, nil
}

func (f *fakeBackend) EndOffsets(ctx context.Context, tps []TP) (map[TP]int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.endErrs) > 0 {
		err := f.endErrs[0]
		f.endErrs = f.endErrs[1:]
		return nil, err
	}
	out := map[TP]int64{}
	for _, p := range tps {
		out[p] = f.ends[p]
	}
	return out, nil
}

func (f *fakeBackend) Produce(ctx context.Context, batches map[TP][]byte) map[TP]txnstate.ProduceResult {
	out := map[TP]txnstate.ProduceResult{}
	hung := map[TP][]byte{}
	f.mu.Lock()
	tps := slices.SortedFunc(maps.Keys(batches), func(a, b TP) int {
		if a.Topic != b.Topic {
			if a.Topic < b.Topic {
				return -1
			}
			return 1
		}
		return int(a.Partition - b.Partition)
	})
	if f.idem {
		f.bad = append(f.bad, "a batch was sent one at a time (Produce) to a backend with idempotence")
	}
	for _, p := range tps {
		b := batches[p]
		switch f.nextFault(p) {
		case apply:
			out[p] = txnstate.ProduceResult{BaseOffset: f.append(p, b)}
		case writeAmbiguous:
			f.append(p, b)
			out[p] = txnstate.ProduceResult{Err: errTimeout, Ambiguous: true}
		case loseAmbiguous:
			out[p] = txnstate.ProduceResult{Err: errTimeout, Ambiguous: true}
		case reject:
			out[p] = txnstate.ProduceResult{Err: errNotLeader}
		case hang:
			hung[p] = slices.Clone(b)
		}
	}
	f.mu.Unlock()
	if len(hung) > 0 {
		f.hung <- struct{}{}
		<-ctx.Done()
		f.mu.Lock()
		f.inflight = hung
		f.mu.Unlock()
		for p := range hung {
			out[p] = txnstate.ProduceResult{Err: ctx.Err(), Ambiguous: true}
		}
	}
	return out
}

// land writes the batches of a hung Produce: the broker got the request
// and carried it out although its sender is gone.
func (f *fakeBackend) land() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, p := range slices.SortedFunc(maps.Keys(f.inflight), func(a, b TP) int { return int(a.Partition - b.Partition) }) {
		if f.idem {
			idemBackend{f}.write(p, f.inflight[p]) // checked as any other
		} else {
			f.append(p, f.inflight[p])
		}
	}
	f.inflight = nil
}

func (f *fakeBackend) FindBatch(ctx context.Context, topic string, partition int32, from int64, d [32]byte) (int64, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.finds++
	if len(f.findErrs) > 0 {
		err := f.findErrs[0]
		f.findErrs = f.findErrs[1:]
		return 0, false, err
	}
	for _, s := range f.logs[TP{Topic: topic, Partition: partition}] {
		if s.base >= from && digest(s.batch) == d {
			return s.base, true, nil
		}
	}
	return 0, false, nil
}

func (f *fakeBackend) CommitOffsets(ctx context.Context, group string, g txnstate.GroupOffsets) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.commitErrs) > 0 {
		err := f.commitErrs[0]
		f.commitErrs = f.commitErrs[1:]
		return err
	}
	if f.commitFail != nil {
		if err := f.commitFail(g); err != nil {
			return err
		}
	}
	g.Offsets = maps.Clone(g.Offsets)
	f.commits = append(f.commits, groupCommit{group, g})
	return nil
}

// digests returns the digests of what the partition holds from offset from.
func (f *fakeBackend) digests(p TP, from int64) [][32]byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out [][32]byte
	for _, s := range f.logs[p] {
		if s.base >= from {
			out = append(out, digest(s.batch))
		}
	}
	return out
}

func (f *fakeBackend) end(p TP) int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ends[p]
}

func (f *fakeBackend) counts() (attempts, finds int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.attempts, f.finds
}

func (f *fakeBackend) groupCommits() []groupCommit {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.commits)
}

// holdOffset makes every group commit holding offset off for tp fail (a
// timeout) until the returned flag is cleared.
func (f *fakeBackend) holdOffset(tp TP, off int64) *atomic.Bool {
	hold := new(atomic.Bool)
	hold.Store(true)
	f.mu.Lock()
	f.commitFail = func(g txnstate.GroupOffsets) error {
		if g.Offsets[tp].Offset == off && hold.Load() {
			return errTimeout
		}
		return nil
	}
	f.mu.Unlock()
	return hold
}

// lastGroupOffset is the offset of tp the latest group commit wrote, -1 if
// none wrote one.
func (f *fakeBackend) lastGroupOffset(tp TP) int64 {
	last := int64(-1)
	for _, c := range f.groupCommits() {
		if o, ok := c.g.Offsets[tp]; ok {
			last = o.Offset
		}
	}
	return last
}

// producerState is what a Kafka broker keeps of one producer on a partition:
// its epoch, the next sequence and the last five batches (to answer a
// resent one with its offset).
type producerState struct {
	pid   int64
	epoch int16
	next  int32
	last  []struct {
		seq  int32
		base int64
	}
}

// idemBackend is fakeBackend with idempotence: InitProducerID hands out
// producer ids and Send checks each batch's producer fields as a broker does
// (ProducerAppendInfo): an older epoch is fenced, a newer one must start at
// sequence 0, a sequence of one of the last five batches is a duplicate
// answered with its first offset, any other gap is OUT_OF_ORDER_SEQUENCE.
type idemBackend struct{ *fakeBackend }

var (
	errFakeOutOfOrder = fmt.Errorf("fake: %w", kerr.OutOfOrderSequenceNumber)
	errFenced         = fmt.Errorf("fake: %w", kerr.InvalidProducerEpoch)
)

func (f idemBackend) InitProducerID(context.Context) (int64, int16, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nextPID++
	return 900 + f.nextPID, 0, nil
}

// check decides one batch by its producer fields; called with mu held.
// written reports a new batch to append, dup a resent one's offset.
func (f idemBackend) check(p TP, b []byte) (written bool, dupBase int64, err error) {
	bt, perr := protocol.ParseBatch(b)
	if perr != nil {
		return false, 0, perr
	}
	if bt.ProducerID < 0 || bt.BaseSequence < 0 {
		f.bad = append(f.bad, fmt.Sprintf("%v: batch without producer fields sent to an idempotent backend: %+v", p, bt))
	}
	st := f.producers[p]
	if st == nil || st.pid != bt.ProducerID {
		// Kafka 2.5+ takes any first sequence of an unknown producer;
		// one producer per partition is all this fake tracks.
		st = &producerState{pid: bt.ProducerID, epoch: bt.ProducerEpoch, next: bt.BaseSequence}
		f.producers[p] = st
	}
	switch {
	case bt.ProducerEpoch < st.epoch:
		return false, 0, errFenced
	case bt.ProducerEpoch > st.epoch:
		if bt.BaseSequence != 0 {
			return false, 0, errFakeOutOfOrder
		}
		st.epoch, st.next, st.last = bt.ProducerEpoch, 0, nil
	}
	for _, l := range st.last {
		if l.seq == bt.BaseSequence {
			return false, l.base, nil
		}
	}
	if bt.BaseSequence != st.next {
		return false, 0, errFakeOutOfOrder
	}
	st.next += bt.Count
	st.last = append(st.last, struct {
		seq  int32
		base int64
	}{bt.BaseSequence, f.ends[p]})
	if len(st.last) > 5 {
		st.last = st.last[1:]
	}
	return true, 0, nil
}

// write appends b if its producer fields allow; called with mu held.
func (f idemBackend) write(p TP, b []byte) txnstate.ProduceResult {
	ok, dup, err := f.check(p, b)
	switch {
	case err != nil:
		return txnstate.ProduceResult{Err: err}
	case !ok:
		return txnstate.ProduceResult{BaseOffset: dup}
	}
	return txnstate.ProduceResult{BaseOffset: f.append(p, b)}
}

func (f idemBackend) Send(ctx context.Context, batches map[TP][]byte) func(context.Context) map[TP]txnstate.ProduceResult {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[TP]txnstate.ProduceResult{}
	hung := false
	for _, p := range slices.SortedFunc(maps.Keys(batches), func(a, b TP) int { return txnstate.CompareTopicPartition(a, b) }) {
		b := batches[p]
		switch f.nextFault(p) {
		case apply:
			out[p] = f.write(p, b)
		case writeAmbiguous:
			if r := f.write(p, b); r.Err != nil {
				out[p] = r
			} else {
				out[p] = txnstate.ProduceResult{Err: errTimeout, Ambiguous: true}
			}
		case loseAmbiguous:
			out[p] = txnstate.ProduceResult{Err: errTimeout, Ambiguous: true}
		case reject:
			out[p] = txnstate.ProduceResult{Err: errNotLeader}
		case hang:
			// In flight until the sender gives up; land() may write it later.
			if f.inflight == nil {
				f.inflight = map[TP][]byte{}
			}
			f.inflight[p] = slices.Clone(b)
			hung = true
		}
	}
	if hung {
		f.hung <- struct{}{}
	}
	return func(ctx context.Context) map[TP]txnstate.ProduceResult {
		if hung {
			<-ctx.Done()
			for p := range batches {
				if _, ok := out[p]; !ok {
					out[p] = txnstate.ProduceResult{Err: ctx.Err(), Ambiguous: true}
				}
			}
		}
		return out
	}
}

func (f *fakeBackend) checkValid(t *testing.T) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, b := range f.bad {
		t.Error(b)
	}
}

// ---------------------------------------------------------------------------
// Clock

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// ---------------------------------------------------------------------------
// Environment: a coordinator over badger, a spool and the fake backend,
// which can be restarted on the same files.

type envConfig struct {
	disk     bool  // badger on disk (else in memory, kept across restarts)
	segBytes int64 // spool segment size; 0: default
	opts     func(*txnstate.Options)
	idem     bool // the backend has idempotence: commits are forwarded pipelined
}

type env struct {
	t        *testing.T
	cfg      envConfig
	dbDir    string
	spoolDir string
	db       *store.DB
	sp       *spool.Spool
	c        *txnstate.Coordinator
	be       *fakeBackend
	clock    *clock
	pids     atomic.Int64
}

func newEnv(t *testing.T, cfg envConfig) *env {
	t.Helper()
	e := &env{t: t, cfg: cfg, spoolDir: t.TempDir(), be: newFakeBackend(),
		clock: &clock{now: time.Unix(1_700_000_000, 0)}}
	if cfg.disk {
		e.dbDir = t.TempDir()
	}
	e.pids.Store(5000)
	if cfg.idem {
		e.be.idem, e.be.producers = true, map[TP]*producerState{}
	}
	e.open()
	t.Cleanup(func() {
		e.shutdown()
		if e.db != nil {
			e.db.Close()
		}
	})
	return e
}

func (e *env) open() {
	e.t.Helper()
	var err error
	if e.db == nil {
		if e.cfg.disk {
			e.db, err = store.Open(e.dbDir, zerolog.Nop())
		} else {
			e.db, err = store.OpenInMemory(zerolog.Nop())
		}
		if err != nil {
			e.t.Fatal(err)
		}
	}
	if e.sp, err = spool.Open(e.spoolDir, e.cfg.segBytes, zerolog.Nop()); err != nil {
		e.t.Fatal(err)
	}
	opt := txnstate.Options{
		Config:        txnstate.Config{MaxTimeoutMs: 900_000, TxnVersion: 2},
		CheckInterval: time.Hour,
		Spool:         e.sp,
		NewProducerID: func() (int64, error) { return e.pids.Add(1), nil },
		Backend:       e.backend(),
		Log:           zerolog.Nop(),
		Now:           e.clock.Now,
	}
	if e.cfg.opts != nil {
		e.cfg.opts(&opt)
	}
	if e.c, err = txnstate.Open(e.db, opt); err != nil {
		e.t.Fatalf("open coordinator: %v", err)
	}
}

func (e *env) backend() txnstate.Backend {
	if e.cfg.idem {
		return idemBackend{e.be}
	}
	return e.be
}

// shutdown stops the coordinator and closes the spool (and, on disk, the
// database): what a process exit leaves behind.
func (e *env) shutdown() {
	if e.c != nil {
		e.c.Close()
		e.c = nil
	}
	if e.sp != nil {
		e.sp.Close()
		e.sp = nil
	}
	if e.cfg.disk && e.db != nil {
		if err := e.db.Close(); err != nil {
			e.t.Errorf("close badger: %v", err)
		}
		e.db = nil
	}
}

func (e *env) restart() {
	e.t.Helper()
	e.shutdown()
	e.open()
}

// waitFor polls cond until it holds or a deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func (e *env) waitState(id string, s txnstate.State) *txnstate.Txn {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.c.Wait(ctx, id); err != nil {
		e.t.Fatalf("decisions of %q not carried out: %v", id, err)
	}
	var last *txnstate.Txn
	waitFor(e.t, fmt.Sprintf("%q to reach %v", id, s), func() bool {
		last = e.c.Get(id)
		return last != nil && last.State == s
	})
	return last
}

// indexed returns the spool content of every buffered batch in the index.
func (e *env) indexed() [][]byte {
	e.t.Helper()
	var out [][]byte
	err := e.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte("txn/b/"), PrefetchValues: true})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			r, err := spool.UnmarshalRef(v)
			if err != nil {
				return err
			}
			b, err := e.sp.Read(r)
			if err != nil {
				return err
			}
			out = append(out, b)
		}
		return nil
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

// ---------------------------------------------------------------------------
// Producer: a transactional client, TV1 (AddPartitions, Produce v9,
// EndTxn v3) or TV2 (Produce v12, TxnOffsetCommit v5, EndTxn v5).

type producer struct {
	e     *env
	t     *testing.T
	id    string
	tv2   bool
	pid   int64
	epoch int16
	seq   map[TP]int32
	ts    int64
	// batches of the open transaction, per partition in order
	open map[TP][][32]byte
	// committed batches, per partition in order
	committed map[TP][][32]byte
	// noWait: end does not wait for the decision to be carried out
	noWait bool
}

func (e *env) initProducer(id string, tv2 bool, timeoutMs int32) *producer {
	e.t.Helper()
	p := &producer{e: e, t: e.t, id: id, tv2: tv2, seq: map[TP]int32{}, open: map[TP][][32]byte{}, committed: map[TP][][32]byte{}}
	p.reinit(timeoutMs)
	return p
}

// reinit is InitProducerId, retried while the coordinator answers
// CONCURRENT_TRANSACTIONS.
func (p *producer) reinit(timeoutMs int32) {
	p.t.Helper()
	var r txnstate.Result
	waitFor(p.t, "InitProducerId", func() bool {
		r = p.e.c.InitProducerID(context.Background(), txnstate.InitProducerIDRequest{
			TransactionalID: p.id, TimeoutMs: timeoutMs, ProducerID: txnstate.NoProducerID, Epoch: txnstate.NoEpoch, Version: 4})
		return r.Err != kerr.ConcurrentTransactions.Code
	})
	if r.Err != txnstate.ErrNone {
		p.t.Fatalf("InitProducerId(%q): %s", p.id, txnstate.ErrorName(r.Err))
	}
	p.pid, p.epoch = r.ProducerID, r.Epoch
	p.seq = map[TP]int32{}
	p.open = map[TP][][32]byte{}
}

func (p *producer) produceVersion() int16 {
	if p.tv2 {
		return 12
	}
	return 9
}

// begin adds the partitions (TV1; TV2 adds them implicitly).
func (p *producer) begin(tps ...TP) {
	p.t.Helper()
	if p.tv2 {
		return
	}
	r := p.e.c.AddPartitions(p.id, txnstate.AddPartitionsRequest{ProducerID: p.pid, Epoch: p.epoch, Partitions: tps, Version: 3})
	if r.Err != txnstate.ErrNone {
		p.t.Fatalf("AddPartitions: %s", txnstate.ErrorName(r.Err))
	}
}

// build encodes the producer's next batch for the partition (n records of
// size bytes each) without sending it.
func (p *producer) build(part TP, n, size int) []byte {
	p.ts++
	vals := make([][]byte, n)
	for i := range vals {
		v := fmt.Appendf(nil, "%s %v seq %d rec %d ", p.id, part, p.seq[part], i)
		for len(v) < size {
			v = append(v, 'a'+byte(len(v)%26))
		}
		vals[i] = v
	}
	return txnBatch(p.pid, p.epoch, p.seq[part], 1_700_000_000_000+p.ts, vals...)
}

// produce hands one client batch to the coordinator as the proxy does.
func (p *producer) produce(part TP, raw []byte, version int16) txnstate.ProduceAnswer {
	p.t.Helper()
	bt, err := protocol.ParseBatch(raw)
	if err != nil || bt.Length != len(raw) || !bt.Transactional {
		p.t.Fatalf("bad test batch: %+v %v", bt, err)
	}
	batch := slices.Clone(raw)
	protocol.ClearTransactional(batch, bt.Length)
	return p.e.c.BufferBatch(p.id, txnstate.ProduceRequest{ProducerID: bt.ProducerID, Epoch: bt.ProducerEpoch, Partition: part, Version: version},
		dedup.BatchInfo{Epoch: bt.ProducerEpoch, FirstSeq: bt.BaseSequence, Count: bt.Count}, batch)
}

func wait(a txnstate.ProduceAnswer) int16 {
	if a.Err != txnstate.ErrNone || a.Wait == nil {
		return a.Err
	}
	return a.Wait()
}

// send produces the next batch and waits for it to be durable; it must
// succeed. It returns the batch as the client sent it.
func (p *producer) send(part TP, n, size int) []byte {
	p.t.Helper()
	raw := p.build(part, n, size)
	if code := wait(p.produce(part, raw, p.produceVersion())); code != txnstate.ErrNone {
		p.t.Fatalf("produce to %v: %s (%d)", part, txnstate.ErrorName(code), code)
	}
	p.accepted(part, raw)
	return raw
}

func (p *producer) accepted(part TP, raw []byte) {
	bt, _ := protocol.ParseBatch(raw)
	p.seq[part] += bt.Count
	p.open[part] = append(p.open[part], digest(raw))
}

// offsets sends the transaction's consumer offsets for group.
func (p *producer) offsets(group, member string, gen int32, instance string, offs map[TP]txnstate.Offset) {
	p.t.Helper()
	v := int16(5)
	if !p.tv2 {
		v = 3
		r := p.e.c.AddOffsets(p.id, txnstate.AddOffsetsRequest{ProducerID: p.pid, Epoch: p.epoch, Group: group, Version: 3})
		if r.Err != txnstate.ErrNone {
			p.t.Fatalf("AddOffsets: %s", txnstate.ErrorName(r.Err))
		}
	}
	r := p.e.c.TxnOffsetCommit(p.id, txnstate.TxnOffsetCommitRequest{ProducerID: p.pid, Epoch: p.epoch, Group: group,
		MemberID: member, GenerationID: gen, GroupInstanceID: instance, Offsets: offs, Version: v})
	if r.Err != txnstate.ErrNone {
		p.t.Fatalf("TxnOffsetCommit: %s", txnstate.ErrorName(r.Err))
	}
}

func (p *producer) endVersion() int16 {
	if p.tv2 {
		return 5
	}
	return 3
}

// end sends EndTxn and, when accepted, moves on as a client would: TV2
// continues with the id and epoch of the answer, sequences from 0. EndTxn
// answers once the decision is durable; unless noWait, end then waits until
// it has been carried out (the backend written), so callers can check it.
func (p *producer) end(commit bool) txnstate.Result {
	p.t.Helper()
	r := p.e.c.EndTxn(context.Background(), p.id, txnstate.EndTxnRequest{ProducerID: p.pid, Epoch: p.epoch, Commit: commit, Version: p.endVersion()})
	if r.Err != txnstate.ErrNone {
		return r
	}
	if !p.noWait {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := p.e.c.Wait(ctx, p.id); err != nil {
			p.t.Fatalf("commit/abort of %s not carried out: %v", p.id, err)
		}
	}
	if commit {
		for part, ds := range p.open {
			p.committed[part] = append(p.committed[part], ds...)
		}
	}
	p.open = map[TP][][32]byte{}
	if p.tv2 {
		p.pid, p.epoch = r.ProducerID, r.Epoch
		p.seq = map[TP]int32{}
	}
	return r
}

// checkForwarded checks that each partition holds, from offset from, exactly
// the batches of want, in order.
func checkForwarded(t *testing.T, be *fakeBackend, from map[TP]int64, want map[TP][][32]byte) {
	t.Helper()
	be.checkValid(t)
	for part, ds := range want {
		got := be.digests(part, from[part])
		if !slices.Equal(got, ds) {
			t.Errorf("%v holds %d batches from offset %d, want the %d committed ones exactly once, in order (got %s)",
				part, len(got), from[part], len(ds), describe(got, ds))
		}
	}
}

func describe(got, want [][32]byte) string {
	idx := map[[32]byte]int{}
	for i, d := range want {
		idx[d] = i
	}
	s := "["
	for i, d := range got {
		if i > 0 {
			s += " "
		}
		if j, ok := idx[d]; ok {
			s += fmt.Sprint(j)
		} else {
			s += "?"
		}
	}
	return s + "]"
}

func total(m map[TP][][32]byte) int {
	n := 0
	for _, ds := range m {
		n += len(ds)
	}
	return n
}

package txnstate

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/rs/zerolog"

	"github.com/eosproxy/eosproxy/dedup"
	"github.com/eosproxy/eosproxy/store"
	"github.com/eosproxy/eosproxy/txnstate/spool"
)

// Error codes the coordinator answers with besides the state machine's.
const (
	ErrCoordinatorNotAvailable int16 = 15
	ErrPolicyViolation         int16 = 44
	ErrTransactionalIDNotFound int16 = 105
)

// Backend is what the coordinator needs of the real cluster to carry out a
// commit: package upstream implements it over eosproxy's own client.
type Backend interface {
	// EndOffsets returns each partition's log end offset.
	EndOffsets(ctx context.Context, tps []TopicPartition) (map[TopicPartition]int64, error)
	// Produce writes one batch per partition (acks=all) and reports each.
	Produce(ctx context.Context, batches map[TopicPartition][]byte) map[TopicPartition]ProduceResult
	// FindBatch reads the partition from offset from and reports where a
	// batch with this content digest is (protocol.Digest), if anywhere: the
	// look-up dedup.Backend makes, by the same method.
	FindBatch(ctx context.Context, topic string, partition int32, from int64, digest [32]byte) (int64, bool, error)
	// CommitOffsets commits a group's offsets as the member that sent them.
	// An error wrapping ErrPermanent will not succeed on a retry.
	CommitOffsets(ctx context.Context, group string, g GroupOffsets) error
}

// ErrPermanent marks a backend failure that retrying cannot fix.
var ErrPermanent = errors.New("permanent failure")

// ProduceResult is the backend's answer for one batch.
type ProduceResult struct {
	BaseOffset int64
	Err        error
	// Ambiguous: the batch may have been written although Err says otherwise
	// (a timeout, a dropped connection).
	Ambiguous bool
}

// Options configure a Coordinator.
type Options struct {
	Config
	// MaxTransactionBytes bounds the data buffered for one transaction;
	// MaxBufferBytes all buffered data. 0: no bound.
	MaxTransactionBytes int64
	MaxBufferBytes      int64
	// Expiration is transactional.id.expiration.ms (default 7 days).
	Expiration time.Duration
	// AnswerWithin is how long EndTxn waits for a decided commit or abort to
	// be carried out before answering on the strength of the durable
	// decision; 0 answers at once.
	AnswerWithin time.Duration
	// CheckInterval is how often timed-out transactions are looked for.
	CheckInterval time.Duration
	// Spool holds the buffered batches' bytes; the index is in badger.
	Spool *spool.Spool
	// NewProducerID allocates a producer id (shared with idempotent producers).
	NewProducerID func() (int64, error)
	Backend       Backend
	Log           zerolog.Logger
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Coordinator is eosproxy's transaction coordinator: the pure decisions of
// this package, made durable in badger, with the buffered batches and their
// forwarding on commit.
type Coordinator struct {
	opt Options
	db  *store.DB
	log zerolog.Logger

	mu   sync.Mutex
	txns map[string]*entry

	buffered atomic.Int64  // bytes buffered in all open transactions
	counter  atomic.Uint64 // orders buffered batches
	pending  atomic.Int32  // transactions holding group offsets
	// noUpstreamUntil: the backend gave no producer id for forwarding;
	// not asked again before this time (unix ms).
	noUpstreamUntil atomic.Int64

	// ends is, per partition, an offset the backend's log is known to
	// reach (the end of eosproxy's last write there), in this process only.
	endsMu sync.Mutex
	ends   map[TopicPartition]knownEnd

	// offLatest is, per group and partition, the decision order (job.seq)
	// of the latest decided commit holding an offset for it. Commits of
	// different transactional ids are carried out independently, so an
	// earlier one (a previous owner of the partition, held up by retries)
	// can finish after a later one: its offset must then neither be written
	// over the later one nor served in its place. offMu guards it;
	// groupLocks serialise each group's check-and-commit.
	offMu      sync.Mutex
	offLatest  map[string]map[TopicPartition]uint64
	groupLocks map[string]*sync.Mutex

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// entry is one transactional id. mu serialises its decisions; txn is readable
// without it (Describe, List, OffsetFetch).
type entry struct {
	id  string
	mu  sync.Mutex
	txn atomic.Pointer[Txn]
	// seqs is the producer's sequence state per partition, for seqPID.
	seqs   map[TopicPartition]dedup.State
	seqPID int64
	// bytes buffered in the open transaction.
	bytes int64
	// writes in flight; a decision that reads buffered data waits for them.
	writes sync.WaitGroup
	last   *write
	// queue holds index writes waiting for the flusher (flushing).
	qmu      sync.Mutex
	queue    []*write
	flushing bool
	broken   atomic.Bool // a buffered write failed: the transaction can only abort
	// gen is the generation of the id's latest transaction.
	gen uint64
	// jobs are decided commits and aborts not yet carried out, oldest
	// first; one runner (running) carries them out in order.
	jmu     sync.Mutex
	jobs    []*job
	running bool
}

// job is a decided commit or abort of one generation: its batches are to be
// forwarded (then its offsets committed) or dropped.
type job struct {
	gen    uint64
	seq    uint64 // decision order, across transactional ids
	txn    *Txn   // the prepared state: partitions and offsets
	commit bool
	bytes  int64
	fresh  bool // nothing was sent yet: decided in this process, or stopped cleanly before it started
	// started: carryOut began (something may have been sent); read by
	// Close once the jobs have stopped.
	started bool
	done    chan struct{}
}

type write struct {
	done chan struct{}
	err  error
	ref  spool.Ref
	kvs  []kv
}

// Open loads the coordinator's state and resumes every commit or abort a
// previous run had decided but not finished (roll forward).
func Open(db *store.DB, opt Options) (*Coordinator, error) {
	if opt.MaxTimeoutMs <= 0 {
		opt.MaxTimeoutMs = 15 * 60 * 1000
	}
	if opt.TxnVersion == 0 {
		opt.TxnVersion = 2
	}
	if opt.Expiration <= 0 {
		opt.Expiration = 7 * 24 * time.Hour
	}
	if opt.CheckInterval <= 0 {
		opt.CheckInterval = time.Second
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	c := &Coordinator{opt: opt, db: db, log: opt.Log.With().Str("component", "txn").Logger(), txns: map[string]*entry{}}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	if err := c.load(); err != nil {
		return nil, err
	}
	for _, e := range c.txns {
		if len(e.jobs) > 0 {
			c.log.Info().Str("txn", e.id).Int("pending", len(e.jobs)).Msg("resuming decided commits and aborts")
			c.startJobs(e)
		}
	}
	c.wg.Add(1)
	go c.timeoutLoop()
	return c, nil
}

func (c *Coordinator) load() error {
	err := c.db.Scan([]byte(prefixMeta), func(k, v []byte) error {
		t, err := decodeTxn(v)
		if err != nil {
			return err
		}
		e := &entry{id: t.TransactionalID, seqs: map[TopicPartition]dedup.State{}, seqPID: t.ProducerID}
		e.txn.Store(t)
		c.txns[e.id] = e
		if len(t.PendingOffsets) > 0 {
			c.pending.Add(1)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("load transactions: %w", err)
	}
	err = c.db.Scan([]byte(prefixSeq), func(k, v []byte) error {
		id, tp, err := parseTPKey(prefixSeq, k)
		if err != nil || len(v) < 8 {
			return fmt.Errorf("corrupt sequence key %q", k)
		}
		e := c.txns[id]
		if e == nil || int64(binary.BigEndian.Uint64(v)) != e.seqPID {
			return nil // an earlier producer id's: irrelevant
		}
		st, err := dedup.UnmarshalState(v[8:])
		if err != nil {
			return fmt.Errorf("sequence state of %q: %w", id, err)
		}
		e.seqs[tp] = st
		return nil
	})
	if err != nil {
		return fmt.Errorf("load transaction sequences: %w", err)
	}
	err = c.db.Scan([]byte(prefixBroken), func(k, _ []byte) error {
		id, _, err := readStr(k[len(prefixBroken):])
		if err != nil {
			return fmt.Errorf("corrupt key %q", k)
		}
		if e := c.txns[id]; e != nil && e.txn.Load().State == Ongoing {
			e.broken.Store(true)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("load refused transactions: %w", err)
	}
	var top uint64
	err = c.db.Scan([]byte(prefixGen), func(k, v []byte) error {
		id, _, err := readStr(k[len(prefixGen):])
		if err != nil || len(v) != 8 {
			return fmt.Errorf("corrupt generation key %q", k)
		}
		if e := c.txns[id]; e != nil {
			e.gen = binary.BigEndian.Uint64(v)
			top = max(top, e.gen)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("load transaction generations: %w", err)
	}
	err = c.db.Scan([]byte(prefixOffsetOrder), func(k, v []byte) error {
		group, tp, err := parseGroupTPKey(k)
		if err != nil || len(v) != 8 {
			return fmt.Errorf("corrupt offset order key %q", k)
		}
		seq := binary.BigEndian.Uint64(v)
		c.noteOffset(group, tp, seq)
		// New decisions must come after every one whose order is kept.
		top = max(top, seq)
		return nil
	})
	if err != nil {
		return fmt.Errorf("load the decision order of group offsets: %w", err)
	}
	jobs := map[string]map[uint64]*job{}
	var unsent [][]byte
	err = c.db.Scan([]byte(prefixJob), func(k, v []byte) error {
		id, gen, err := parseGenKey(prefixJob, k)
		if err != nil {
			return fmt.Errorf("corrupt job key %q", k)
		}
		t, err := decodeTxn(v)
		if err != nil {
			return err
		}
		e := c.txns[id]
		if e == nil {
			return nil
		}
		j := &job{gen: gen, txn: t, commit: t.State == PrepareCommit, done: make(chan struct{})}
		order, err := c.db.Get(genKey(prefixDecided, id, gen))
		if err != nil {
			return err
		}
		if j.fresh, err = c.loadUnsent(id, gen, &unsent); err != nil {
			return err
		}
		if len(order) == 8 { // absent before decision orders were kept: 0, the oldest
			j.seq = binary.BigEndian.Uint64(order)
			top = max(top, j.seq)
		}
		e.jobs = append(e.jobs, j)
		if jobs[id] == nil {
			jobs[id] = map[uint64]*job{}
		}
		jobs[id][gen] = j
		if j.commit && len(t.PendingOffsets) > 0 {
			c.pending.Add(1)
			c.noteDecided(j)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("load decided transactions: %w", err)
	}
	// Before any job runs: a job that sends and is then killed must be
	// looked for after the next start.
	if err := c.deleteKeys(unsent); err != nil {
		return fmt.Errorf("delete unsent commit marks: %w", err)
	}
	for _, e := range c.txns {
		slices.SortFunc(e.jobs, func(a, b *job) int { return cmp.Compare(a.gen, b.gen) })
	}
	var orphans [][]byte
	err = c.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(prefixBatch)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			id, gen, _, rest, err := parseGenTPKey(prefixBatch, item.Key())
			if err != nil || len(rest) != 8 {
				return fmt.Errorf("corrupt batch key %q", item.Key())
			}
			top = max(top, binary.BigEndian.Uint64(rest), gen)
			e := c.txns[id]
			j := jobs[id][gen]
			open := e != nil && e.gen == gen && e.txn.Load().State == Ongoing
			if j == nil && !open {
				// Left by a crash while its abort was being carried out.
				orphans = append(orphans, item.KeyCopy(nil))
				continue
			}
			v, err := item.ValueCopy(nil)
			if err != nil {
				return err
			}
			ref, err := spool.UnmarshalRef(v)
			if err != nil {
				return fmt.Errorf("batch key %q: %w", item.Key(), err)
			}
			if err := c.opt.Spool.Retain(ref); err != nil {
				return fmt.Errorf("batch of %q: %w", id, err)
			}
			if j != nil {
				j.bytes += int64(ref.Length)
			} else {
				e.bytes += int64(ref.Length)
			}
			c.buffered.Add(int64(ref.Length))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("load buffered batches: %w", err)
	}
	if err := c.deleteKeys(orphans); err != nil {
		return fmt.Errorf("delete abandoned batches: %w", err)
	}
	c.counter.Store(top)
	c.opt.Spool.Sweep()
	return nil
}

// Close stops the coordinator's background work; a commit being forwarded
// resumes on the next Open.
func (c *Coordinator) Close() {
	c.cancel()
	c.wg.Wait()
	c.markUnsent()
}

func (c *Coordinator) nowMs() int64 { return c.opt.Now().UnixMilli() }

func (c *Coordinator) entry(id string, create bool) *entry {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.txns[id]
	if e == nil && create {
		e = &entry{id: id, seqs: map[TopicPartition]dedup.State{}, seqPID: NoProducerID}
		c.txns[id] = e
	}
	return e
}

// lock returns id's entry locked (nil if unknown and !create), retrying if
// an expiry removed the entry while this caller waited for it.
func (c *Coordinator) lock(id string, create bool) *entry {
	for {
		e := c.entry(id, create)
		if e == nil {
			return nil
		}
		e.mu.Lock()
		c.mu.Lock()
		live := c.txns[id] == e
		c.mu.Unlock()
		if live {
			return e
		}
		e.mu.Unlock()
	}
}

// newPID adapts the allocator to the decisions' signature, remembering a
// failure so the caller can answer COORDINATOR_NOT_AVAILABLE.
func (c *Coordinator) newPID(errp *error) func() int64 {
	return func() int64 {
		id, err := c.opt.NewProducerID()
		if err != nil {
			*errp = err
			return NoProducerID
		}
		return id
	}
}

// commit makes n the durable state of e (together with extra writes) and
// swaps it in. Called with e.mu held.
func (c *Coordinator) commit(e *entry, n *Txn, extra func(*badger.Txn) error) error {
	old := e.txn.Load()
	err := c.db.Update(func(txn *badger.Txn) error {
		if n.ProducerID != e.seqPID {
			// A new producer id starts with no sequence state.
			for tp := range e.seqs {
				if err := txn.Delete(tpKey(prefixSeq, e.id, tp)); err != nil {
					return err
				}
			}
		}
		if extra != nil {
			if err := extra(txn); err != nil {
				return err
			}
		}
		return txn.Set(idKey(prefixMeta, e.id), encodeTxn(n))
	})
	if err != nil {
		return fmt.Errorf("persist transaction %q: %w", e.id, err)
	}
	c.swap(e, old, n)
	return nil
}

func (c *Coordinator) swap(e *entry, old, n *Txn) {
	if n.ProducerID != e.seqPID {
		e.seqs = map[TopicPartition]dedup.State{}
		e.seqPID = n.ProducerID
	}
	had := old != nil && len(old.PendingOffsets) > 0
	if has := len(n.PendingOffsets) > 0; has != had {
		if has {
			c.pending.Add(1)
		} else {
			c.pending.Add(-1)
		}
	}
	e.txn.Store(n)
}

// apply persists a decision's new state and queues what its Action asks.
// A decided commit or abort is completed in the same write: from then on the
// id answers from the Complete state, and the next transaction can start
// while a job carries the decision out (forwarding or dropping the
// generation's batches), as Kafka answers EndTxn before its markers are
// written. Called with e.mu held.
func (c *Coordinator) apply(e *entry, r Result) (Result, *job) {
	if r.Txn == nil {
		return r, nil
	}
	cur := e.txn.Load()
	n := r.Txn
	gen := e.gen
	var kvs []kv
	if (cur == nil || cur.State != Ongoing) && (n.State == Ongoing || r.Action != NoAction) {
		// A new transaction (or an abort with none open) is a new generation.
		gen = c.counter.Add(1)
		kvs = append(kvs, kv{idKey(prefixGen, e.id), binary.BigEndian.AppendUint64(nil, gen)})
	}
	var j *job
	if r.Action != NoAction {
		comp := Complete(n, c.nowMs())
		if comp.Err != ErrNone {
			return fail(ErrUnknownServerError), nil
		}
		j = &job{gen: gen, seq: c.counter.Add(1), txn: n, commit: r.Action == Forward, bytes: e.bytes, fresh: true, done: make(chan struct{})}
		kvs = append(kvs, kv{genKey(prefixJob, e.id, gen), encodeTxn(n)},
			kv{genKey(prefixDecided, e.id, gen), binary.BigEndian.AppendUint64(nil, j.seq)})
		if j.commit {
			kvs = append(kvs, c.knownLowWater(e, gen, n)...)
		}
		n = comp.Txn
	}
	err := c.commit(e, n, func(txn *badger.Txn) error {
		for _, w := range kvs {
			if err := txn.Set(w.k, w.v); err != nil {
				return err
			}
		}
		if j != nil {
			return txn.Delete(idKey(prefixBroken, e.id))
		}
		return nil
	})
	if err != nil {
		c.log.Error().Err(err).Msg("cannot persist transaction state")
		return fail(ErrCoordinatorNotAvailable), nil
	}
	e.gen = gen
	if j != nil {
		e.bytes = 0
		e.broken.Store(false)
		e.last = nil
		if j.commit && len(j.txn.PendingOffsets) > 0 {
			c.pending.Add(1)
			c.noteDecided(j)
		}
		e.jmu.Lock()
		e.jobs = append(e.jobs, j)
		e.jmu.Unlock()
		c.startJobs(e)
	}
	return r, j
}

// knownLowWater gives, for a commit decision, the forwarding low-water
// offsets eosproxy already knows for the transaction's partitions: the end
// of its own last write there. The partition's real end can only be at or
// past it, and any offset at or before where the commit's first batch will
// land is a valid starting point for finding it after a crash; a commit then
// needs no ListOffsets round trip and no extra write before forwarding.
//
// Not for a partition an earlier commit of the id is still to write to:
// its batches land past that end, and the look-up would take one of them
// with the same content (a copier keeping its input's timestamps) for this
// commit's and skip writing it. Such a partition gets its low-water offset
// when forwarding starts, after the earlier commit (jobs run in order).
// Called with e.mu held.
//
// Nor is a known end older than knownEndFresh used: other producers may have
// written much since, and a look-up from it would read all of that; the
// partition's end read when forwarding starts bounds it to what arrived
// during the commit.
func (c *Coordinator) knownLowWater(e *entry, gen uint64, t *Txn) []kv {
	e.jmu.Lock()
	earlier := map[TopicPartition]bool{}
	for _, j := range e.jobs {
		if j.commit {
			for tp := range j.txn.Partitions {
				earlier[tp] = true
			}
		}
	}
	e.jmu.Unlock()
	now := c.nowMs()
	c.endsMu.Lock()
	defer c.endsMu.Unlock()
	var out []kv
	for tp := range t.Partitions {
		if k, ok := c.ends[tp]; ok && !earlier[tp] && now-k.atMs <= knownEndFresh.Milliseconds() {
			out = append(out, kv{genTPKey(prefixLow, e.id, gen, tp), binary.BigEndian.AppendUint64(nil, uint64(k.offset))})
		}
	}
	return out
}

// knownEnd is an offset a partition is known to reach, and when it was
// learnt (unix ms).
type knownEnd struct{ offset, atMs int64 }

// knownEndFresh is how long a known end serves as a commit's low-water
// offset.
const knownEndFresh = 2 * time.Second

// noteEnd records that the backend's partition tp reaches at least end.
func (c *Coordinator) noteEnd(tp TopicPartition, end int64) {
	now := c.nowMs()
	c.endsMu.Lock()
	if c.ends == nil {
		c.ends = map[TopicPartition]knownEnd{}
	}
	if k, ok := c.ends[tp]; !ok || end >= k.offset {
		c.ends[tp] = knownEnd{end, now}
	}
	c.endsMu.Unlock()
}

// InitProducerID answers InitProducerId with a transactional id.
func (c *Coordinator) InitProducerID(ctx context.Context, req InitProducerIDRequest) Result {
	e := c.lock(req.TransactionalID, true)
	defer e.mu.Unlock()
	e.writes.Wait()
	var allocErr error
	r := InitProducerID(c.opt.Config, e.preparing(), req, c.nowMs(), c.newPID(&allocErr))
	if allocErr != nil {
		c.log.Error().Err(allocErr).Msg("cannot allocate a producer id")
		return fail(ErrCoordinatorNotAvailable)
	}
	if r.Action == Discard {
		c.log.Info().Str("txn", req.TransactionalID).Msg("new producer instance: aborting the previous one's open transaction")
	}
	r, _ = c.apply(e, r)
	return r
}

// AddPartitions answers AddPartitionsToTxn.
func (c *Coordinator) AddPartitions(id string, req AddPartitionsRequest) Result {
	return c.decide(id, func(t *Txn, now int64) Result { return AddPartitions(t, req, now) })
}

// AddOffsets answers AddOffsetsToTxn.
func (c *Coordinator) AddOffsets(id string, req AddOffsetsRequest) Result {
	return c.decide(id, func(t *Txn, now int64) Result { return AddOffsets(t, req, now) })
}

// TxnOffsetCommit holds a group's offsets in the transaction.
func (c *Coordinator) TxnOffsetCommit(id string, req TxnOffsetCommitRequest) Result {
	return c.decide(id, func(t *Txn, now int64) Result { return TxnOffsetCommit(t, req, now) })
}

func (c *Coordinator) decide(id string, fn func(*Txn, int64) Result) Result {
	e := c.lock(id, false)
	if e == nil {
		return fn(nil, c.nowMs())
	}
	defer e.mu.Unlock()
	// A Produce's state change (a partition added by v12) is written by the
	// flusher: it must land before this one, not overwrite it later.
	e.writes.Wait()
	r, _ := c.apply(e, fn(e.txn.Load(), c.nowMs()))
	return r
}

// EndTxn answers EndTxn once the decision is durable (the id is then in
// CompleteCommit or CompleteAbort), or, with Options.AnswerWithin, once the
// decision has been carried out or that long has passed.
func (c *Coordinator) EndTxn(ctx context.Context, id string, req EndTxnRequest) Result {
	e := c.lock(id, false)
	if e == nil {
		return EndTxn(nil, req, c.nowMs(), nil)
	}
	e.writes.Wait()
	var allocErr error
	r := EndTxn(e.txn.Load(), req, c.nowMs(), c.newPID(&allocErr))
	if allocErr != nil {
		e.mu.Unlock()
		c.log.Error().Err(allocErr).Msg("cannot allocate a producer id")
		return fail(ErrCoordinatorNotAvailable)
	}
	if r.Action == Forward && e.broken.Load() {
		// A batch of the transaction was refused (a limit) or is not
		// durable: it cannot commit. Older clients get INVALID_TXN_STATE,
		// as Kafka answers an EndTxn it cannot carry out, and abort. For a
		// KIP-890 client (EndTxn v5+) the abort, the only outcome left, is
		// carried out now (bumping the epoch, as its own abort would) and
		// the answer is TRANSACTION_ABORTABLE: franz-go, which commits
		// whatever succeeded, then resumes with its producer id (KIP-360),
		// which a completed abort answers with the bumped epoch.
		defer e.mu.Unlock()
		if req.Version < 5 {
			return fail(ErrInvalidTxnState)
		}
		abort := req
		abort.Commit = false
		if ar, _ := c.apply(e, EndTxn(e.txn.Load(), abort, c.nowMs(), c.newPID(&allocErr))); ar.Err == ErrNone {
			c.log.Info().Str("txn", id).Msg("commit of a transaction missing a refused batch: aborted it instead")
		}
		return fail(ErrTransactionAbortable)
	}
	r, j := c.apply(e, r)
	e.mu.Unlock()
	if j != nil {
		// Flow control: the client goes on with its next transaction
		// while decided ones are carried out, but while more than
		// maxBacklogBytes of them wait ahead of this one, the answer waits:
		// undelivered data never piles up.
		for prev := e.backlog(j); prev != nil; prev = e.backlog(j) {
			select {
			case <-prev.done:
			case <-ctx.Done():
				return r
			}
		}
	}
	if j != nil && c.opt.AnswerWithin > 0 {
		t := time.NewTimer(c.opt.AnswerWithin)
		defer t.Stop()
		select {
		case <-j.done:
		case <-t.C:
		case <-ctx.Done():
		}
	}
	return r
}

// Wait blocks until every decided commit and abort of id has been carried
// out (committed data in the backend), or ctx ends.
func (c *Coordinator) Wait(ctx context.Context, id string) error {
	e := c.entry(id, false)
	if e == nil {
		return nil
	}
	last := e.lastJob()
	if last == nil {
		return nil
	}
	select {
	case <-last.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ProduceAnswer is the outcome of buffering one transactional batch.
type ProduceAnswer struct {
	Err int16
	Msg string
	// Wait, when set, blocks until the batch is durable and returns the
	// error code to answer with then.
	Wait func() int16
}

// Produce buffers one transactional batch, already cleared of its producer
// fields (protocol.ClearTransactional), after the transaction's and the
// sequence checks. batch is kept; the caller must not reuse it.
func (c *Coordinator) Produce(id string, req ProduceRequest, info dedup.BatchInfo, batch []byte) ProduceAnswer {
	e := c.lock(id, false)
	if e == nil {
		r := Produce(nil, req, c.nowMs())
		return ProduceAnswer{Err: r.Err}
	}
	defer e.mu.Unlock()
	now := c.nowMs()
	r := Produce(e.txn.Load(), req, now)
	if r.Err != ErrNone {
		return ProduceAnswer{Err: r.Err}
	}
	if e.broken.Load() {
		return ProduceAnswer{Err: verificationError(ErrTransactionAbortable, req.Version >= 11), Msg: "an earlier batch of the transaction could not be stored"}
	}
	tp := req.Partition
	var st *dedup.State
	if s, ok := e.seqs[tp]; ok && e.seqPID == req.ProducerID {
		st = &s
	}
	d := dedup.Decide(st, info)
	switch {
	case d.Verdict == dedup.Duplicate, d.Verdict == dedup.Reject && d.Err == dedup.ErrDuplicateSequence:
		// A retry of a batch already buffered: answered as written, once the
		// original is durable.
		last := e.last
		if last == nil {
			return ProduceAnswer{}
		}
		return ProduceAnswer{Wait: func() int16 { <-last.done; return storageCode(last.err) }}
	case d.Verdict == dedup.Reject:
		return ProduceAnswer{Err: d.Err}
	}
	n := int64(len(batch))
	var over string
	if lim := c.opt.MaxTransactionBytes; lim > 0 && e.bytes+n > lim {
		over = fmt.Sprintf("transaction %q would exceed --max-transaction-bytes (%d bytes); it can only abort", id, lim)
	} else if lim := c.opt.MaxBufferBytes; lim > 0 && c.buffered.Load()+n > lim {
		over = fmt.Sprintf("eosproxy's transaction buffer is full (--transaction-buffer-bytes %d bytes); the transaction can only abort", lim)
	}
	if over != "" {
		// A transaction missing a batch must not commit: Kafka's producers
		// abort after a failed batch, and eosproxy holds them to it. The
		// refused batch still opens the transaction (Produce v12 adds its
		// partition), so that the mark applies to this transaction.
		e.writes.Wait()
		if r.Txn != nil {
			// The refused batch still opens the transaction (Produce v12
			// adds its partition), so that the mark applies to it.
			if ar, _ := c.apply(e, Result{Txn: r.Txn}); ar.Err != ErrNone {
				return ProduceAnswer{Err: errStorage}
			}
		}
		if err := c.markBroken(e, nil); err != nil {
			c.log.Error().Err(err).Msg("cannot persist transaction state")
			return ProduceAnswer{Err: errStorage}
		}
		c.log.Warn().Str("txn", id).Int64("buffered", e.bytes).Msg(over)
		return ProduceAnswer{Err: ErrPolicyViolation, Msg: over}
	}
	var prev dedup.State
	if st != nil {
		prev = *st
	}
	ns := dedup.Apply(prev, info, -1, now)
	gen, newGen := e.gen, false
	if r.Txn != nil && e.txn.Load().State != Ongoing {
		// Produce v12 opens a new transaction: a new generation.
		gen, newGen = c.counter.Add(1), true
	}
	ref, err := c.opt.Spool.Append(batch)
	if err != nil {
		c.log.Error().Err(err).Str("txn", id).Msg("cannot buffer transactional batch")
		return ProduceAnswer{Err: errStorage}
	}
	writes := []kv{
		{batchKey(id, gen, tp, c.counter.Add(1)), ref.Marshal()},
		{tpKey(prefixSeq, id, tp), append(binary.BigEndian.AppendUint64(nil, uint64(req.ProducerID)), dedup.MarshalState(ns)...)},
	}
	if r.Txn != nil {
		writes = append(writes, kv{idKey(prefixMeta, id), encodeTxn(r.Txn)})
		if newGen {
			writes = append(writes, kv{idKey(prefixGen, id), binary.BigEndian.AppendUint64(nil, gen)})
		}
		c.swap(e, e.txn.Load(), r.Txn)
		e.gen = gen
	}
	e.seqs[tp] = ns
	e.bytes += n
	c.buffered.Add(n)
	w := &write{done: make(chan struct{}), ref: ref, kvs: writes}
	e.last = w
	e.writes.Add(1)
	c.enqueue(e, w)
	return ProduceAnswer{Wait: func() int16 { <-w.done; return storageCode(w.err) }}
}

// markBroken records, durably, that e's open transaction lost a batch and
// can only abort; n is the transaction's new state if the refused batch
// opened it (Produce v12 adds its partition), else nil. Called with e.mu
// held and no index writes in flight.
func (c *Coordinator) markBroken(e *entry, n *Txn) error {
	if n == nil {
		n = e.txn.Load()
	}
	err := c.commit(e, n, func(txn *badger.Txn) error {
		return txn.Set(idKey(prefixBroken, e.id), nil)
	})
	if err == nil {
		e.broken.Store(true)
	}
	return err
}

// enqueue hands a batch's index writes to e's flusher. One flusher per
// transactional id makes them durable in decision order (a later sequence
// state must never be overwritten by an earlier one), each batch's data in
// the spool before the index that points to it, and everything that queued
// up meanwhile in one badger write: one fsync for many batches.
func (c *Coordinator) enqueue(e *entry, w *write) {
	e.qmu.Lock()
	e.queue = append(e.queue, w)
	start := !e.flushing
	e.flushing = true
	e.qmu.Unlock()
	if start {
		go c.flush(e)
	}
}

func (c *Coordinator) flush(e *entry) {
	for {
		e.qmu.Lock()
		// At most maxFlushKeys keys a write: one badger transaction holds
		// only so many (tens of thousands), and a fast producer can queue
		// more while one write is being synced.
		n, keys := 0, 0
		for n < len(e.queue) && (n == 0 || keys+len(e.queue[n].kvs) <= maxFlushKeys) {
			keys += len(e.queue[n].kvs)
			n++
		}
		ws := e.queue[:n:n]
		e.queue = e.queue[n:]
		if len(ws) == 0 {
			e.flushing = false
			e.qmu.Unlock()
			return
		}
		e.qmu.Unlock()
		var err error
		for _, w := range ws {
			if err = c.opt.Spool.Sync(w.ref); err != nil {
				break
			}
		}
		if err == nil {
			err = c.db.Update(func(txn *badger.Txn) error {
				for _, w := range ws {
					for _, kv := range w.kvs {
						if err := txn.Set(kv.k, kv.v); err != nil {
							return err
						}
					}
				}
				return nil
			})
		}
		if err != nil {
			e.broken.Store(true)
			c.log.Error().Err(err).Str("txn", e.id).Msg("buffered transactional batch not durable; the transaction can only abort")
		}
		for _, w := range ws {
			w.err = err
			close(w.done)
			e.writes.Done()
		}
	}
}

type kv struct{ k, v []byte }

// maxFlushKeys bounds the keys the flusher writes in one badger transaction.
const maxFlushKeys = 4000

const errStorage int16 = 56

func storageCode(err error) int16 {
	if err != nil {
		return errStorage
	}
	return ErrNone
}

// Get returns the state of a transactional id, nil if unknown.
func (c *Coordinator) Get(id string) *Txn {
	if e := c.entry(id, false); e != nil {
		if t := e.txn.Load(); t != nil && t.State != Dead {
			return t
		}
	}
	return nil
}

// List returns every known transactional id's state, sorted by id.
func (c *Coordinator) List() []*Txn {
	c.mu.Lock()
	es := slices.Collect(maps.Values(c.txns))
	c.mu.Unlock()
	var out []*Txn
	for _, e := range es {
		if t := e.txn.Load(); t != nil && t.State != Dead {
			out = append(out, t)
		}
	}
	slices.SortFunc(out, func(a, b *Txn) int { return compareStr(a.TransactionalID, b.TransactionalID) })
	return out
}

// OffsetsPending reports whether an open or committing transaction holds
// offsets for group on tp (any partition when tp is nil): what Kafka calls
// an unstable offset.
func (c *Coordinator) OffsetsPending(group string, tp *TopicPartition) bool {
	if c.pending.Load() == 0 {
		return false
	}
	c.mu.Lock()
	es := slices.Collect(maps.Values(c.txns))
	c.mu.Unlock()
	for _, e := range es {
		for _, t := range e.holding() {
			g, ok := t.PendingOffsets[group]
			if !ok {
				continue
			}
			if tp == nil {
				if len(g.Offsets) > 0 {
					return true
				}
				continue
			}
			if _, ok := g.Offsets[*tp]; ok {
				return true
			}
		}
	}
	return false
}

// holding lists the open transaction of e holding offsets: those are
// unstable. Offsets of decided commits not yet in the backend are committed
// already (DecidedOffsets).
func (e *entry) holding() []*Txn {
	if t := e.txn.Load(); t != nil && t.State == Ongoing {
		return []*Txn{t}
	}
	return nil
}

// DecidedOffsets returns the offsets of group that commits have decided but
// not yet written to the backend, the latest per partition: they are the
// group's committed offsets, as Kafka's are once its commit marker is
// written, and OffsetFetch answers carry them. Nil when there are none.
func (c *Coordinator) DecidedOffsets(group string) map[TopicPartition]Offset {
	if c.pending.Load() == 0 {
		return nil
	}
	c.mu.Lock()
	es := slices.Collect(maps.Values(c.txns))
	c.mu.Unlock()
	out := map[TopicPartition]Offset{}
	for _, e := range es {
		e.jmu.Lock()
		for _, j := range e.jobs {
			if !j.commit {
				continue
			}
			for tp, o := range j.txn.PendingOffsets[group].Offsets {
				// Only the latest decision's offset is the group's: an
				// earlier one still waiting to be written is stale, and
				// if the latest is written already the backend has it.
				if c.latestFor(group, tp, j.seq) {
					out[tp] = o
				}
			}
		}
		e.jmu.Unlock()
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// noteDecided records a decided commit's offsets in the decision order.
func (c *Coordinator) noteDecided(j *job) {
	for group, g := range j.txn.PendingOffsets {
		for tp := range g.Offsets {
			c.noteOffset(group, tp, j.seq)
		}
	}
}

// noteOffset records that the commit decided at seq holds an offset of group
// for tp.
func (c *Coordinator) noteOffset(group string, tp TopicPartition, seq uint64) {
	c.offMu.Lock()
	defer c.offMu.Unlock()
	if c.offLatest == nil {
		c.offLatest = map[string]map[TopicPartition]uint64{}
	}
	m := c.offLatest[group]
	if m == nil {
		m = map[TopicPartition]uint64{}
		c.offLatest[group] = m
	}
	m[tp] = max(m[tp], seq)
}

// latestFor reports whether no commit decided after seq holds an offset of
// group for tp.
func (c *Coordinator) latestFor(group string, tp TopicPartition, seq uint64) bool {
	c.offMu.Lock()
	defer c.offMu.Unlock()
	return c.offLatest[group][tp] <= seq
}

// commitOffsets writes a decided commit's offsets of group to the backend,
// leaving out those a later decided commit holds (its own offsets are newer
// and are, or will be, written). Per group the check and the write are one
// step, so a later commit's offsets cannot be written between them.
func (c *Coordinator) commitOffsets(ctx context.Context, group string, g GroupOffsets, seq uint64) error {
	lock := c.groupLock(group)
	lock.Lock()
	defer lock.Unlock()
	mine := g
	mine.Offsets = map[TopicPartition]Offset{}
	for tp, o := range g.Offsets {
		if c.latestFor(group, tp, seq) {
			mine.Offsets[tp] = o
		}
	}
	if len(mine.Offsets) == 0 {
		return nil
	}
	return c.opt.Backend.CommitOffsets(ctx, group, mine)
}

func (c *Coordinator) groupLock(group string) *sync.Mutex {
	c.offMu.Lock()
	defer c.offMu.Unlock()
	if c.groupLocks == nil {
		c.groupLocks = map[string]*sync.Mutex{}
	}
	lock := c.groupLocks[group]
	if lock == nil {
		lock = &sync.Mutex{}
		c.groupLocks[group] = lock
	}
	return lock
}

// keepOffsetOrder, for a commit holding offsets that is being retired,
// writes within the retiring write the decision order of the latest commit
// holding each of its group partitions (txn/l/), and returns the group locks
// to release once that write is done. The locks make these writes land in
// the order their values were read: the value kept only grows.
func (c *Coordinator) keepOffsetOrder(j *job) (write func(*badger.Txn) error, unlock func()) {
	if !j.commit || len(j.txn.PendingOffsets) == 0 {
		return func(*badger.Txn) error { return nil }, func() {}
	}
	groups := slices.Sorted(maps.Keys(j.txn.PendingOffsets)) // one lock order
	var locks []*sync.Mutex
	for _, g := range groups {
		l := c.groupLock(g)
		l.Lock()
		locks = append(locks, l)
	}
	unlock = func() {
		for _, l := range locks {
			l.Unlock()
		}
	}
	write = func(txn *badger.Txn) error {
		c.offMu.Lock()
		var kvs []kv
		for _, g := range groups {
			for tp := range j.txn.PendingOffsets[g].Offsets {
				seq := max(c.offLatest[g][tp], j.seq)
				kvs = append(kvs, kv{groupTPKey(g, tp), binary.BigEndian.AppendUint64(nil, seq)})
			}
		}
		c.offMu.Unlock()
		for _, w := range kvs {
			if err := txn.Set(w.k, w.v); err != nil {
				return err
			}
		}
		return nil
	}
	return write, unlock
}

// AnyOffsetsPending reports cheaply whether any transaction holds offsets.
func (c *Coordinator) AnyOffsetsPending() bool { return c.pending.Load() > 0 }

// PendingPartitions lists the partitions for which an open or committing
// transaction holds offsets of group.
func (c *Coordinator) PendingPartitions(group string) []TopicPartition {
	if c.pending.Load() == 0 {
		return nil
	}
	c.mu.Lock()
	es := slices.Collect(maps.Values(c.txns))
	c.mu.Unlock()
	seen := map[TopicPartition]bool{}
	var out []TopicPartition
	for _, e := range es {
		for _, t := range e.holding() {
			for tp := range t.PendingOffsets[group].Offsets {
				if !seen[tp] {
					seen[tp] = true
					out = append(out, tp)
				}
			}
		}
	}
	slices.SortFunc(out, compareTP)
	return out
}

// Buffered returns the bytes of transactional data waiting for a commit.
func (c *Coordinator) Buffered() int64 { return c.buffered.Load() }

// maxBacklogBytes is how much decided, not yet carried out, data of one
// transactional id may be ahead of a new decision before EndTxn waits.
const maxBacklogBytes = 64 << 20

// backlog returns the oldest job ahead of j when the jobs ahead of it hold
// more than maxBacklogBytes, else nil.
func (e *entry) backlog(j *job) *job {
	e.jmu.Lock()
	defer e.jmu.Unlock()
	var ahead int64
	for _, q := range e.jobs {
		if q == j {
			break
		}
		ahead += q.bytes
	}
	if ahead > maxBacklogBytes && len(e.jobs) > 0 && e.jobs[0] != j {
		return e.jobs[0]
	}
	return nil
}

// preparing is e's state as InitProducerId sees it: while a decided commit
// or abort is not yet carried out (its batches and offsets not all in the
// backend), the id is in PrepareCommit or PrepareAbort, as in Kafka until
// the transaction's markers are written, although e is already Complete
// (so that its producer can go on with its next transaction meanwhile). A
// new instance is then answered CONCURRENT_TRANSACTIONS and retries: once
// it gets its producer id, everything the previous instance committed is
// readable read_committed, and the group offsets it committed are in the
// backend, as Kafka's marker makes them visible at the same moment. An open
// transaction (Ongoing) is shown as it is: InitProducerId fences and aborts
// it at once.
func (e *entry) preparing() *Txn {
	t := e.txn.Load()
	if t == nil || t.State == Ongoing {
		return t
	}
	last := e.lastJob()
	if last == nil {
		return t
	}
	p := *t
	p.State = PrepareAbort
	if last.commit {
		p.State = PrepareCommit
	}
	return &p
}

// busy reports whether e has decided commits or aborts not carried out.
func (e *entry) busy() bool {
	e.jmu.Lock()
	defer e.jmu.Unlock()
	return len(e.jobs) > 0
}

// startJobs makes sure a runner carries out e's queued jobs.
func (c *Coordinator) startJobs(e *entry) {
	e.jmu.Lock()
	if e.running || len(e.jobs) == 0 {
		e.jmu.Unlock()
		return
	}
	e.running = true
	e.jmu.Unlock()
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.runJobs(e)
	}()
}

// runJobs carries out e's decided commits and aborts, oldest first, so a
// transactional id's committed data reaches the backend in commit order.
func (c *Coordinator) runJobs(e *entry) {
	for {
		e.jmu.Lock()
		if len(e.jobs) == 0 || c.ctx.Err() != nil {
			e.running = false
			e.jmu.Unlock()
			return
		}
		j := e.jobs[0]
		e.jmu.Unlock()
		if !c.carryOut(e, j) {
			e.jmu.Lock()
			e.running = false
			e.jmu.Unlock()
			return // closing: the next Open resumes it
		}
		e.jmu.Lock()
		e.jobs = e.jobs[1:]
		e.jmu.Unlock()
		if j.commit && len(j.txn.PendingOffsets) > 0 {
			c.pending.Add(-1)
		}
		c.buffered.Add(-j.bytes)
		close(j.done)
	}
}

// carryOut forwards (commit) or drops (abort) one generation's batches,
// retrying until it succeeds; false when the coordinator closes first.
func (c *Coordinator) carryOut(e *entry, j *job) bool {
	log := c.log.With().Str("txn", e.id).Int64("producer", j.txn.ProducerID).Uint64("gen", j.gen).Logger()
	j.started = true
	for attempt, wait := 0, 50*time.Millisecond; ; attempt, wait = attempt+1, min(2*wait, 5*time.Second) {
		var err error
		if j.commit {
			err = c.forward(c.ctx, j.txn, j.gen, j.seq, attempt == 0 && j.fresh, log)
		}
		if err == nil {
			err = c.retire(e.id, j)
		}
		if err == nil {
			if j.commit {
				log.Debug().Msg("transaction committed")
			} else {
				log.Debug().Msg("transaction aborted")
			}
			return true
		}
		if c.ctx.Err() != nil {
			return false
		}
		log.Warn().Err(err).Bool("commit", j.commit).Dur("retry_in", wait).Msg("carrying out a transaction's end failed; retrying")
		select {
		case <-c.ctx.Done():
			return false
		case <-time.After(wait):
		}
	}
}

// retire deletes a carried-out generation: its batches (index, then spool
// data), its forwarding low-water offsets and its job. The low-water offsets
// go last, with the job: were a commit's job found again after a crash, its
// remaining batches would be looked for in the backend from them, never
// sent again blindly.
//
// A commit holding group offsets also keeps, for each of its group
// partitions, the decision order of the latest commit holding it: after a
// restart that order is what an earlier commit still unfinished is checked
// against (commitOffsets), its own job being gone.
func (c *Coordinator) retire(id string, j *job) error {
	gen := j.gen
	keys, refs, err := c.batchKeys(id, gen)
	if err != nil {
		return err
	}
	if len(keys) > maxKeysWithComplete {
		if err := c.deleteKeys(keys); err != nil {
			return err
		}
		keys = nil
	}
	keepOrder, unlock := c.keepOffsetOrder(j)
	err = c.db.Update(func(txn *badger.Txn) error {
		for _, k := range keys {
			if err := txn.Delete(k); err != nil {
				return err
			}
		}
		if err := keepOrder(txn); err != nil {
			return err
		}
		if err := c.deleteLowWater(id, gen)(txn); err != nil {
			return err
		}
		if err := txn.Delete(genKey(prefixGenProducer, id, gen)); err != nil {
			return err
		}
		if err := txn.Delete(genKey(prefixDecided, id, gen)); err != nil {
			return err
		}
		return txn.Delete(genKey(prefixJob, id, gen))
	})
	unlock()
	if err != nil {
		return fmt.Errorf("retire transaction %q generation %d: %w", id, gen, err)
	}
	for _, r := range refs {
		c.opt.Spool.Release(r)
	}
	return nil
}

// deleteLowWater deletes a generation's forwarding low-water offsets within
// a write.
func (c *Coordinator) deleteLowWater(id string, gen uint64) func(*badger.Txn) error {
	return func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: genKey(prefixLow, id, gen)})
		var keys [][]byte
		for it.Rewind(); it.Valid(); it.Next() {
			keys = append(keys, it.Item().KeyCopy(nil))
		}
		it.Close()
		for _, k := range keys {
			if err := txn.Delete(k); err != nil {
				return err
			}
		}
		return nil
	}
}

// maxKeysWithComplete is how many buffered batches' index entries are
// deleted in the same badger write that retires their generation.
const maxKeysWithComplete = 1000

// batchKeys lists a generation's buffered batches: index keys and spool
// references.
func (c *Coordinator) batchKeys(id string, gen uint64) (keys [][]byte, refs []spool.Ref, err error) {
	err = c.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: genKey(prefixBatch, id, gen), PrefetchValues: true})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			keys = append(keys, it.Item().KeyCopy(nil))
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			if r, err := spool.UnmarshalRef(v); err == nil {
				refs = append(refs, r)
			}
		}
		return nil
	})
	return keys, refs, err
}

func (c *Coordinator) deleteKeys(keys [][]byte) error {
	wb := c.db.NewWriteBatch()
	defer wb.Cancel()
	for _, k := range keys {
		if err := wb.Delete(k); err != nil {
			return err
		}
	}
	return wb.Flush()
}

func (c *Coordinator) timeoutLoop() {
	defer c.wg.Done()
	t := time.NewTicker(c.opt.CheckInterval)
	defer t.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
		}
		c.mu.Lock()
		es := slices.Collect(maps.Values(c.txns))
		c.mu.Unlock()
		for _, e := range es {
			c.expire(e)
		}
	}
}

// expire aborts e's transaction if it timed out, and forgets e if it was
// unused for Expiration.
func (c *Coordinator) expire(e *entry) {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := c.nowMs()
	cur := e.txn.Load()
	if r := Timeout(c.opt.Config, cur, now); r.Txn != nil {
		e.writes.Wait()
		c.log.Info().Str("txn", e.id).Int32("timeout_ms", cur.TimeoutMs).Msg("transaction timed out: aborting it and fencing its producer")
		c.apply(e, r)
		return
	}
	if r := Expire(cur, now, c.opt.Expiration.Milliseconds()); r.Txn != nil && !e.busy() {
		err := c.db.Update(func(txn *badger.Txn) error {
			for tp := range e.seqs {
				if err := txn.Delete(tpKey(prefixSeq, e.id, tp)); err != nil {
					return err
				}
			}
			for _, prefix := range []string{prefixGen, prefixBroken, prefixUpstream} {
				if err := txn.Delete(idKey(prefix, e.id)); err != nil {
					return err
				}
			}
			return txn.Delete(idKey(prefixMeta, e.id))
		})
		if err != nil {
			c.log.Warn().Err(err).Str("txn", e.id).Msg("cannot expire transactional id")
			return
		}
		c.swap(e, cur, r.Txn)
		c.mu.Lock()
		delete(c.txns, e.id)
		c.mu.Unlock()
		c.log.Info().Str("txn", e.id).Msg("transactional id expired")
	}
}

// lastJob is the id's latest decided commit or abort not yet carried out.
func (e *entry) lastJob() *job {
	e.jmu.Lock()
	defer e.jmu.Unlock()
	if n := len(e.jobs); n > 0 {
		return e.jobs[n-1]
	}
	return nil
}

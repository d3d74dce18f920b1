// The Coordinator and its registry of transactional ids: Options, Open and
// Close, the map of entries with the lock that guards it (mu), and each
// entry's own lock, which serialises the decisions on its id (lock). The
// locks of an entry's flush queue and jobs live with them (buffer.go, jobs.go).

package txnstate

import (
	"context"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/eosproxy/eosproxy/dedup"
	"github.com/eosproxy/eosproxy/store"
	"github.com/eosproxy/eosproxy/txnstate/spool"
)

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
	// OnTimeout is told of each transaction aborted for its timeout (metrics).
	OnTimeout func(id string)
	// CrashPoint, for tests only (nil: off), is called at the named
	// instants below (CrashDecisionLogged, CrashHalfForwarded), where a
	// test may kill the process to check recovery from exactly there.
	CrashPoint func(point string)
}

// Crash points of the coordinator (Options.CrashPoint).
const (
	// CrashDecisionLogged: a commit's decision is durable (in cluster
	// mode: confirmed in the cluster's log), nothing of it forwarded yet.
	// Recovery must roll it forward: were the decision lost, the client
	// could be answered a commit whose data never arrives; were it
	// ignored, its batches would be dropped as an abort.
	CrashDecisionLogged = "decision-logged"
	// CrashHalfForwarded: a commit's forwarding has written some but not
	// all of its batches, or its batches but not its group offsets.
	// Recovery must find what was written (look-ups from the low-water
	// offsets) and send only the rest: a resend duplicates, a skip loses,
	// and offsets never committed make the group read the input again.
	CrashHalfForwarded = "half-forwarded"
)

// crashPoint calls the test hook, if any, at point.
func (c *Coordinator) crashPoint(point string) {
	if c.opt.CrashPoint != nil {
		c.opt.CrashPoint(point)
	}
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
	backlog  atomic.Int64  // bytes of decided commits not yet carried out
	counter  atomic.Uint64 // orders buffered batches
	// noUpstreamUntil: the backend gave no producer id for forwarding;
	// not asked again before this time (unix ms).
	noUpstreamUntil atomic.Int64

	knownEnds               // partition ends known from eosproxy's writes (ends.go)
	missing    missingSince // partitions the backend says it lacks (deleted.go)
	offsetBook              // group offsets held by transactions (offsets.go)

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
	// gen is the generation of the id's latest transaction.
	gen uint64

	// Buffering of the open transaction (buffer.go).
	// seqs is the producer's sequence state per partition, for seqPID.
	seqs   map[TopicPartition]dedup.State
	seqPID int64
	// bytes buffered in the open transaction.
	bytes int64
	// writes in flight; a decision that reads buffered data waits for them.
	writes sync.WaitGroup
	last   *write
	broken atomic.Bool // a buffered write failed: the transaction can only abort
	flushQueue

	jobQueue // decided commits and aborts (jobs.go)
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

// Stop cancels the coordinator's background work without waiting for it
// (a forced stop: Close waits).
func (c *Coordinator) Stop() { c.cancel() }

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

// entries returns every id's entry, for a walk that must not hold mu.
func (c *Coordinator) entries() []*entry {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Collect(maps.Values(c.txns))
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

// Get returns the state of a transactional id, nil if unknown.
func (c *Coordinator) Get(id string) *Txn {
	if e := c.entry(id, false); e != nil {
		if t := e.txn.Load(); t != nil && t.State != Dead {
			return t
		}
	}
	return nil
}

// Describe returns a transactional id's state as Kafka's coordinator shows
// it (DescribeTransactions, ListTransactions): a decided transaction is in
// PrepareCommit or PrepareAbort until it is carried out in the backend, as
// Kafka's is until its markers are written; nil if unknown.
func (c *Coordinator) Describe(id string) *Txn {
	if e := c.entry(id, false); e != nil {
		if t := e.preparing(); t != nil && t.State != Dead {
			return t
		}
	}
	return nil
}

// DescribeAll is Describe of every known transactional id, sorted by id.
func (c *Coordinator) DescribeAll() []*Txn {
	var out []*Txn
	for _, e := range c.entries() {
		if t := e.preparing(); t != nil && t.State != Dead {
			out = append(out, t)
		}
	}
	slices.SortFunc(out, func(a, b *Txn) int { return compareStr(a.TransactionalID, b.TransactionalID) })
	return out
}

// List returns every known transactional id's state, sorted by id.
func (c *Coordinator) List() []*Txn {
	es := c.entries()
	var out []*Txn
	for _, e := range es {
		if t := e.txn.Load(); t != nil && t.State != Dead {
			out = append(out, t)
		}
	}
	slices.SortFunc(out, func(a, b *Txn) int { return compareStr(a.TransactionalID, b.TransactionalID) })
	return out
}

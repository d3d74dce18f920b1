package proxy

// Operations: what the metrics read at scrape time, the backends observed
// for their errors and unclear outcomes, and readiness.

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/eosproxy/eosproxy/dedup"
	"github.com/eosproxy/eosproxy/metrics"
	"github.com/eosproxy/eosproxy/txnstate"
)

// ops is the proxy's readiness.
type ops struct {
	started       atomic.Bool // listeners serve
	rolledForward atomic.Bool // the previous run's decided commits and aborts are carried out
	// backlog counts commits decided and not yet carried out: the
	// coordinator's state shows a decided commit as complete already.
	backlog atomic.Int64
}

// watch makes every scrape read the coordinator's, the producer table's and
// the disk's state.
func (p *Proxy) watch() {
	p.m.Watch(metrics.State{
		Transactions: p.txnStats,
		ProducersTracked: func() int {
			return len(p.producers.ProducerIDs())
		},
		SpoolBytes: p.spool.DiskBytes,
		DataDirFree: func() (int64, bool) {
			if p.cfg.Space == nil {
				return 0, false
			}
			n, ok := p.cfg.Space.Free()
			return int64(n), ok
		},
		BadgerBytes: func() int64 {
			opt := p.cfg.DB.Opts()
			if opt.InMemory {
				return 0
			}
			return metrics.DirBytes(opt.Dir, opt.ValueDir)
		},
	})
}

// timeoutsCounted: txnstate reports a timed-out transaction's abort
// (eosproxy_transactions_total{result="timed_out"}). It does not yet: to be
// set with the hook (txnstate.Options.OnTimeout).
const timeoutsCounted = true

// backlogBytes is a coordinator that can tell how many bytes its decided
// commits still have to write. txnstate does not export it yet; until it
// does, eosproxy_forward_backlog_bytes is left out.
type backlogBytes interface{ BacklogBytes() int64 }

func (p *Proxy) txnStats() metrics.Transactions {
	s := metrics.Transactions{BufferedBytes: p.coord.Buffered(), BacklogBytes: -1, BacklogCommits: int(p.ops.backlog.Load())}
	if b, ok := any(p.coord).(backlogBytes); ok {
		s.BacklogBytes = b.BacklogBytes()
	}
	oldest := int64(-1)
	for _, t := range p.coord.List() {
		switch t.State {
		case txnstate.Ongoing:
			s.Open++
			if t.StartTimeMs >= 0 && (oldest < 0 || t.StartTimeMs < oldest) {
				oldest = t.StartTimeMs
			}
		}
	}
	if oldest >= 0 {
		s.OldestStart = time.UnixMilli(oldest)
	}
	return s
}

// newProducerID hands out a producer id, idempotent or transactional.
func (p *Proxy) newProducerID() (int64, error) {
	id, err := p.producers.NewProducerID()
	if err == nil {
		p.m.ProducerID()
	}
	return id, err
}

// awaitRollForward marks the proxy ready once every commit and abort that
// the previous run decided (the coordinator resumed them on Open) is
// carried out, and logs it. A decided transaction's state reads complete at
// once, so every id is waited for: Wait returns at once for an id with
// nothing left to do.
func (p *Proxy) awaitRollForward() {
	start := time.Now()
	txns := p.coord.List()
	for _, t := range txns {
		if err := p.coord.Wait(p.life, t.TransactionalID); err != nil {
			return // shutting down
		}
	}
	p.log.Info().Int("transactional_ids", len(txns)).Dur("took", time.Since(start)).
		Msg("roll-forward finished: the previous run's decided commits and aborts are carried out")
	p.ops.rolledForward.Store(true)
}

// Ready returns nil when the proxy serves clients fully: its listeners are
// up, its state loaded (New returned), the previous run's decisions carried
// out, and a bootstrap broker of the backend accepts a connection. Otherwise the error says what is missing.
func (p *Proxy) Ready(ctx context.Context) error {
	p.mu.Lock()
	closed := p.closed
	p.mu.Unlock()
	switch {
	case closed:
		return errors.New("shutting down")
	case !p.ops.started.Load():
		return errors.New("listeners not started")
	case !p.ops.rolledForward.Load():
		return errors.New("rolling forward the previous run's decided commits and aborts")
	}
	// A connection to a bootstrap broker, not a request: a client retries a
	// refused dial until its own timeout, and a probe wants the reason now.
	var errs []error
	for _, addr := range p.cfg.Upstreams {
		c, err := p.cfg.Dial(ctx, "tcp", addr)
		if err == nil {
			c.Close()
			return nil
		}
		errs = append(errs, err)
	}
	return fmt.Errorf("backend unreachable: %w", errors.Join(errs...))
}

// refused counts an answer that refuses a request for its producer's
// sequence or epoch, and logs a fenced producer's refusal with the client's
// address (in c.log) and the transactional id, if any.
func (c *conn) refused(code int16, txnID string, producerID int64) {
	c.p.m.Refused(code)
	if code != kerr.InvalidProducerEpoch.Code && code != kerr.ProducerFenced.Code {
		return
	}
	ev := c.log.Info().Int64("producer", producerID).Str("err", errName(code))
	if txnID != "" {
		ev = ev.Str("txn", txnID)
	}
	ev.Msg("refusing a fenced producer's request")
}

// observedDedup counts what the producer table's look-ups settle.
type observedDedup struct {
	dedup.Backend
	m *metrics.Metrics
}

func (o observedDedup) FindBatch(ctx context.Context, topic string, partition int32, from int64, digest [32]byte) (int64, bool, error) {
	off, found, err := o.Backend.FindBatch(ctx, topic, partition, from, digest)
	observeFind(o.m, found, err)
	return off, found, err
}

// observeFind counts a look-up for a batch whose write had an unknown
// outcome: found, it is not written again; not found, it is written.
func observeFind(m *metrics.Metrics, found bool, err error) {
	switch {
	case err != nil:
	case found:
		m.Unclear(metrics.SettledFound)
	default:
		m.Unclear(metrics.SettledWritten)
	}
}

// observeTxnBackend counts the errors in the backend's answers to commits'
// writes and what their look-ups settle, keeping the backend's pipelining
// (txnstate.IdempotentBackend) where it has it.
func observeTxnBackend(b txnstate.Backend, m *metrics.Metrics) txnstate.Backend {
	o := observedTxn{b, m}
	if idem, ok := b.(txnstate.IdempotentBackend); ok {
		return observedIdem{o, idem}
	}
	return o
}

type observedTxn struct {
	txnstate.Backend
	m *metrics.Metrics
}

func (o observedTxn) Produce(ctx context.Context, batches map[txnstate.TopicPartition][]byte) map[txnstate.TopicPartition]txnstate.ProduceResult {
	res := o.Backend.Produce(ctx, batches)
	o.results(res)
	return res
}

func (o observedTxn) results(res map[txnstate.TopicPartition]txnstate.ProduceResult) {
	for _, r := range res {
		o.err(r.Err)
	}
}

func (o observedTxn) err(err error) {
	var ke *kerr.Error
	if errors.As(err, &ke) {
		o.m.BackendError(ke.Code)
		if ke.Code == kerr.DuplicateSequenceNumber.Code {
			o.m.Unclear(metrics.SettledBackendDuplicate)
		}
	}
}

func (o observedTxn) FindBatch(ctx context.Context, topic string, partition int32, from int64, digest [32]byte) (int64, bool, error) {
	off, found, err := o.Backend.FindBatch(ctx, topic, partition, from, digest)
	observeFind(o.m, found, err)
	return off, found, err
}

func (o observedTxn) CommitOffsets(ctx context.Context, group string, g txnstate.GroupOffsets) error {
	err := o.Backend.CommitOffsets(ctx, group, g)
	o.err(err)
	return err
}

type observedIdem struct {
	observedTxn
	idem txnstate.IdempotentBackend
}

func (o observedIdem) InitProducerID(ctx context.Context) (int64, int16, error) {
	return o.idem.InitProducerID(ctx)
}

func (o observedIdem) Send(ctx context.Context, batches map[txnstate.TopicPartition][]byte) func(context.Context) map[txnstate.TopicPartition]txnstate.ProduceResult {
	wait := o.idem.Send(ctx, batches)
	return func(ctx context.Context) map[txnstate.TopicPartition]txnstate.ProduceResult {
		res := wait(ctx)
		o.results(res)
		return res
	}
}

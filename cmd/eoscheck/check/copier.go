package check

// The transactional workload: M consume-transform-produce copiers
// (franz-go GroupTransactSession, one consumer group, read_committed,
// RequireStable offset fetches) copy the input topic to the output topic
// through eosproxy, and read_committed readers read the output through
// eosproxy while they do.
//
// Every output record names the attempt that wrote it:
// "<input value>:<copier slot>:<transaction number>", the transaction number
// unique across copiers and their incarnations. The log of transactions
// (which input ids each one carried, whether it committed, was aborted on
// purpose, aborted by the client, or was left open by a copier that was
// replaced) decides exactly which output records may exist.

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// txnState is what became of a copier transaction.
type txnState int32

const (
	txnOpen      txnState = iota // begun, not ended (yet)
	txnCommitted                 // End returned committed
	txnAborted                   // End(TryAbort): aborted on purpose
	txnForced                    // End(TryCommit) aborted (rebalance, fencing, failed commit)
	txnUnknown                   // End returned an error: the outcome is not known
	txnCrashed                   // the copier was closed with it open and replaced
	txnZombie                    // a successor fenced it; it then tried to commit
)

func (s txnState) String() string {
	switch s {
	case txnOpen:
		return "open"
	case txnCommitted:
		return "committed"
	case txnAborted:
		return "aborted on purpose"
	case txnForced:
		return "aborted by the client (commit not possible)"
	case txnUnknown:
		return "outcome unknown (End failed)"
	case txnCrashed:
		return "left open by a closed copier (fenced by its successor)"
	case txnZombie:
		return "of a fenced zombie copier"
	}
	return "?"
}

// aborted reports whether the transaction's records must never be read.
func (s txnState) aborted() bool {
	return s == txnAborted || s == txnForced || s == txnCrashed || s == txnZombie
}

// inputID packs an input value "<producer>-<seq>".
type inputID uint64

func packID(p, s int) inputID { return inputID(uint64(p)<<32 | uint64(uint32(s))) }

func (id inputID) split() (int, int) { return int(id >> 32), int(uint32(id)) }

func (id inputID) String() string {
	p, s := id.split()
	return strconv.Itoa(p) + "-" + strconv.Itoa(s)
}

// txnRec is one copier transaction.
type txnRec struct {
	id     int64
	slot   int
	inc    int       // incarnation of the copier slot
	inputs []inputID // the input records it copied, in poll order
	// endAt is when End(TryCommit) was called, in ns since the run began
	// (0: never): the earliest moment its records may be visible.
	endAt atomic.Int64
	// beganAt and doneAt (End returned, or the copier was replaced) are in
	// ns since the run began.
	beganAt, doneAt int64
	state           atomic.Int32
	// readerSeen counts its records read by the concurrent readers.
	readerSeen atomic.Int64
	// produceFailed: a record of it failed to produce.
	produceFailed atomic.Bool
}

func (t *txnRec) st() txnState { return txnState(t.state.Load()) }

// describe is the transaction in an anomaly's example. Call it once the
// copiers have stopped.
func (t *txnRec) describe() string {
	end := "-"
	if e := t.endAt.Load(); e > 0 {
		end = fmt.Sprintf("%.3fs", float64(e)/1e9)
	}
	return fmt.Sprintf("txn %d (copier %d instance %d, %d records, began %.3fs, commit asked %s, done %.3fs: %s)",
		t.id, t.slot, t.inc, len(t.inputs), float64(t.beganAt)/1e9, end, float64(t.doneAt)/1e9, t.st())
}

// txnLog is every copier transaction, by number (1-based).
type txnLog struct {
	start time.Time

	mu   sync.RWMutex
	txns []*txnRec

	commits, aborts, forced, unknown, crashed, zombies atomic.Int64
	copied                                             atomic.Int64 // input records in committed transactions
	zombieCommits                                      atomic.Int64 // a fenced copier's commit that succeeded
	produceErrs                                        atomic.Int64
	produceAborts                                      atomic.Int64 // aborted instead of committed: a record failed
	pollErrs                                           atomic.Int64
	sessionErrs                                        atomic.Int64

	exMu     sync.Mutex
	examples []string // notable client errors
}

func (l *txnLog) begin(slot, inc int, inputs []inputID) *txnRec {
	l.mu.Lock()
	defer l.mu.Unlock()
	t := &txnRec{id: int64(len(l.txns) + 1), slot: slot, inc: inc, inputs: inputs, beganAt: l.since()}
	l.txns = append(l.txns, t)
	return t
}

func (l *txnLog) get(id int64) *txnRec {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if id < 1 || id > int64(len(l.txns)) {
		return nil
	}
	return l.txns[id-1]
}

func (l *txnLog) all() []*txnRec {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return append([]*txnRec(nil), l.txns...)
}

func (l *txnLog) note(format string, args ...any) {
	l.exMu.Lock()
	defer l.exMu.Unlock()
	if len(l.examples) < 10 {
		l.examples = append(l.examples, fmt.Sprintf(format, args...))
	}
}

func (l *txnLog) since() int64 { return int64(time.Since(l.start)) }

// outputValue is the value an attempt writes for an input record.
func outputValue(in []byte, slot int, txn int64) []byte {
	v := make([]byte, 0, len(in)+16)
	v = append(v, in...)
	v = append(v, ':')
	v = strconv.AppendInt(v, int64(slot), 10)
	v = append(v, ':')
	return strconv.AppendInt(v, txn, 10)
}

// parseOutput splits "<p>-<s>:<slot>:<txn>".
func parseOutput(s string) (id inputID, slot int, txn int64, ok bool) {
	in, rest, ok1 := strings.Cut(s, ":")
	sl, tx, ok2 := strings.Cut(rest, ":")
	if !ok1 || !ok2 {
		return 0, 0, 0, false
	}
	p, q, ok := parseValue(in)
	if !ok {
		return 0, 0, 0, false
	}
	slot, err1 := strconv.Atoi(sl)
	txn, err2 := strconv.ParseInt(tx, 10, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, 0, false
	}
	return packID(p, q), slot, txn, true
}

// copyWork runs the copiers.
type copyWork struct {
	clientOpts        []kgo.Opt // extra options of every copier client
	seed              uint64
	bootstrap         string
	in, out, group    string
	abortRate         float64
	log               *txnLog
	trace             *tracer
	kgoLog            io.Writer // copiers' franz-go debug logs; nil: none
	stop              atomic.Bool
	wg                sync.WaitGroup
	restartReq        []atomic.Bool // by slot: replace the copier during its next transaction
	restartsCrash     atomic.Int64  // closed mid-transaction, then replaced
	restartsZombie    atomic.Int64  // replaced while alive; the old one then tried to commit
	restartsRequested atomic.Int64
	incarnations      atomic.Int64
	cancel            context.CancelFunc

	// adm reads the backend directly (the group's members, for stalls).
	adm *kadm.Client
	// consumerProtocol: the copiers join with KIP-848's consumer
	// protocol (ConsumerGroupHeartbeat), the server assigning partitions.
	consumerProtocol bool
	// sessionTimeout of the copiers' classic group membership; 0: 15 s.
	sessionTimeout time.Duration
	// kfakeGroup: the copiers' classic group is in the in-process kfake,
	// whose rebalance timeout must then stay below the session timeout
	// (see session), and whose closed copiers' members must have left
	// (closeSession) through backend.
	kfakeGroup bool
	backend    *kgo.Client // straight to the backend
	// txnTimeout of the copiers' transactions; 0: 20 s.
	txnTimeout time.Duration
	gates      []*gate     // by slot: freezes the slot's client connections
	tls        *tls.Config // the copiers' TLS (clientOpts has none), done over the gates
	// dial, when set, dials the copiers' connections (tests inject
	// faults with it); nil: net.Dialer.
	dial     func(ctx context.Context, network, host string) (net.Conn, error)
	stallReq []atomic.Bool // by slot: stall in the next transaction
	// commitRestartReq, by slot: replace the copier right after its next
	// committed transaction; the new instance then checks its output.
	commitRestartReq []atomic.Bool
	restartsCommit   atomic.Int64
	// initReadAll: every new instance checks its output right after
	// InitProducerId, not only those replacing a copier right after a
	// commit.
	initReadAll bool
	// commitHook, when armed, gets a value as a copier asks to commit
	// (End(TryCommit) about to be called): the fault schedule then
	// restarts eosproxy while the commit's offsets are in flight.
	commitHook      chan struct{}
	commitHookArmed atomic.Bool

	stalls struct {
		mu sync.Mutex
		r  StallReport
	}
	initReads struct {
		mu       sync.Mutex
		r        InitReadReport
		examples int
	}
}

func (w *copyWork) txnID(slot int) string {
	return fmt.Sprintf("eoscheck-%d-copier-%d", w.seed, slot)
}

func (w *copyWork) session(slot int) (*kgo.GroupTransactSession, error) {
	n := w.incarnations.Add(1)
	logOpts := append([]kgo.Opt(nil), w.clientOpts...)
	if w.kgoLog != nil {
		start := w.log.start
		logOpts = append(logOpts, kgo.WithLogger(kgo.BasicLogger(w.kgoLog, kgo.LogLevelDebug, func() string {
			return fmt.Sprintf("%8.3fs [copier %d session %d] ", time.Since(start).Seconds(), slot, n)
		})))
	}
	if w.consumerProtocol {
		// KIP-848: the broker assigns (the "range" assignor); franz-go
		// falls back to the classic protocol silently when the broker
		// does not offer ConsumerGroupHeartbeat v1, which the run checks
		// in the backend's group type.
		logOpts = append(logOpts, kgo.ServerSideBalancer(), kgo.Balancers(kgo.RangeBalancer()))
	}
	if slot < len(w.gates) {
		logOpts = append(logOpts, kgo.Dialer(tlsOver(w.gates[slot].dialer(), w.tls)))
	} else if w.tls != nil {
		logOpts = append(logOpts, kgo.DialTLSConfig(w.tls.Clone()))
	}
	sessionTimeout, txnTimeout := w.sessionTimeout, w.txnTimeout
	if sessionTimeout <= 0 {
		sessionTimeout = 15 * time.Second
	}
	if txnTimeout <= 0 {
		txnTimeout = 20 * time.Second
	}
	rebalanceTimeout := 20 * time.Second
	if w.kfakeGroup && !w.consumerProtocol {
		// kfake, unlike Kafka, expires a member waiting for its SyncGroup
		// answer (franz-go does not heartbeat meanwhile) after its session
		// timeout without answering it, and then miscounts the members
		// joining. A kill of eosproxy leaves such waits behind: a
		// replaced copier's JoinGroup pending on a closed connection
		// makes it the leader of the next generation without a SyncGroup,
		// and the group stalled past the copy timeout
		// (TestEoscheckDeleteRecords, seed 1796611692423062525). Below
		// the session timeout, the rebalance timeout drops such a leader
		// first (kfake's pending sync timeout) and answers the others
		// REBALANCE_IN_PROGRESS, as Kafka does (it never expires members
		// awaiting a rebalance).
		rebalanceTimeout = sessionTimeout * 2 / 3
	}
	return kgo.NewGroupTransactSession(append(logOpts,
		kgo.SeedBrokers(seeds(w.bootstrap)...),
		kgo.TransactionalID(w.txnID(slot)),
		kgo.TransactionTimeout(txnTimeout),
		// read_committed; RequireStable OffsetFetch is always on for group
		// consumers in this franz-go (kgo.RequireStableFetchOffsets is a
		// deprecated no-op).
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumerGroup(w.group), kgo.ConsumeTopics(w.in), kgo.DefaultProduceTopic(w.out),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.HeartbeatInterval(time.Second), kgo.SessionTimeout(sessionTimeout), kgo.RebalanceTimeout(rebalanceTimeout),
		kgo.RequestRetries(1<<30), kgo.RetryTimeout(2*time.Minute),
		kgo.RetryBackoffFn(func(n int) time.Duration { return min(time.Duration(n)*10*time.Millisecond, 200*time.Millisecond) }),
		kgo.MetadataMinAge(100*time.Millisecond),
		kgo.ProducerBatchMaxBytes(16<<10),
		kgo.FetchMaxWait(500*time.Millisecond),
	)...)
}

// start runs one goroutine per copier slot.
func (w *copyWork) start(parent context.Context, copiers int) error {
	ctx, cancel := context.WithCancel(parent)
	w.cancel = cancel
	w.restartReq = make([]atomic.Bool, copiers)
	w.stallReq = make([]atomic.Bool, copiers)
	w.commitRestartReq = make([]atomic.Bool, copiers)
	w.gates = make([]*gate, copiers)
	for i := range w.gates {
		w.gates[i] = &gate{dial: w.dial}
	}
	if w.stalls.r.RefusedByCode == nil {
		w.stalls.r.RefusedByCode = map[string]int64{}
	}
	sessions := make([]*kgo.GroupTransactSession, copiers)
	for slot := range sessions {
		s, err := w.session(slot)
		if err != nil {
			for _, o := range sessions[:slot] {
				o.Close()
			}
			cancel()
			return err
		}
		sessions[slot] = s
	}
	for slot, s := range sessions {
		c := &copier{w: w, slot: slot, sess: s,
			rng: rand.New(rand.NewPCG(w.seed+uint64(slot)+1, uint64(slot)<<8|1))}
		w.wg.Add(1)
		go c.run(ctx)
	}
	return nil
}

// requestRestart asks copier slot to replace itself in its next transaction.
func (w *copyWork) requestRestart(slot int) {
	if slot < len(w.restartReq) {
		w.restartReq[slot].Store(true)
		w.restartsRequested.Add(1)
	}
}

// requestStall asks copier slot to stall past its session timeout in its
// next transaction.
func (w *copyWork) requestStall(slot int) {
	if slot < len(w.stallReq) {
		w.stallReq[slot].Store(true)
	}
}

// requestCommitRestart asks copier slot to replace itself right after its
// next committed transaction.
func (w *copyWork) requestCommitRestart(slot int) {
	if slot < len(w.commitRestartReq) {
		w.commitRestartReq[slot].Store(true)
	}
}

// finish stops the copiers after their current transaction, or after 15 s
// by cancelling what they wait for.
func (w *copyWork) finish() {
	w.stop.Store(true)
	for _, g := range w.gates {
		g.resume()
	}
	done := make(chan struct{})
	go func() { w.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		w.log.note("copiers did not stop within 15 s; cancelled")
		w.cancel()
		<-done
	}
	w.cancel()
}

type copier struct {
	w    *copyWork
	slot int
	inc  int
	sess *kgo.GroupTransactSession
	rng  *rand.Rand
	// restarts counts this slot's replacements (alternating crash/zombie).
	restarts int
	// initReadNext: the next new instance checks its output right after
	// InitProducerId.
	initReadNext bool
}

func (c *copier) run(ctx context.Context) {
	defer c.w.wg.Done()
	defer func() {
		if c.sess != nil {
			c.sess.Close()
		}
	}()
	for !c.w.stop.Load() && ctx.Err() == nil {
		recs := c.poll(ctx)
		if len(recs) == 0 {
			continue
		}
		c.transact(ctx, recs)
	}
}

// poll gathers a transaction's worth of input: a few hundred records, or
// what arrives within 300 ms.
func (c *copier) poll(ctx context.Context) []*kgo.Record {
	target := 100 + c.rng.IntN(400)
	deadline := time.Now().Add(300 * time.Millisecond)
	var recs []*kgo.Record
	for len(recs) < target {
		left := time.Until(deadline)
		if left <= 0 || c.w.stop.Load() {
			break
		}
		pctx, cancel := context.WithTimeout(ctx, left)
		fs := c.sess.PollRecords(pctx, target-len(recs))
		cancel()
		fs.EachError(func(topic string, part int32, err error) {
			if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
				return
			}
			if c.w.log.pollErrs.Add(1) <= 3 {
				c.w.log.note("copier %d poll %s/%d: %v", c.slot, topic, part, err)
			}
		})
		recs = append(recs, fs.Records()...)
		if ctx.Err() != nil {
			break
		}
	}
	return recs
}

// replace closes the session and opens a new one with the same
// transactional id, which at once gets its producer id, as Java's
// initTransactions does: that fences the old instance and aborts its open
// transaction. (franz-go would do it only at the first Begin; until then
// offsets the old transaction holds for the group keep the new instance's
// OffsetFetch answered UNSTABLE_OFFSET_COMMIT, up to the transaction
// timeout.)
func (c *copier) replace(ctx context.Context) {
	c.w.closeSession(c.sess)
	c.sess = nil
	c.sess = c.newInstance(ctx)
}

// newInstance opens a new session for the copier's transactional id and
// initializes its producer id, retrying (with a new session) until it has
// one or the run stops, as initTransactions must succeed before a Java
// application goes on: until InitProducerId, a predecessor's transaction
// may still be open at the coordinator holding the group's offsets, and
// the session's OffsetFetch (RequireStable) is answered
// UNSTABLE_OFFSET_COMMIT until that transaction times out, while franz-go
// would send InitProducerId only with its first produce, after that fetch.
func (c *copier) newInstance(ctx context.Context) *kgo.GroupTransactSession {
	var (
		s     *kgo.GroupTransactSession
		epoch int16
		err   error
	)
	c.inc++
	for {
		for {
			if s, err = c.w.session(c.slot); err == nil {
				break
			}
			c.w.log.note("copier %d: new session: %v", c.slot, err)
			time.Sleep(100 * time.Millisecond)
		}
		pctx, cancel := context.WithTimeout(ctx, time.Minute)
		_, epoch, err = s.Client().ProducerID(pctx)
		cancel()
		if err == nil || ctx.Err() != nil || c.w.stop.Load() {
			break
		}
		c.w.log.note("copier %d: new instance's InitProducerId: %v", c.slot, err)
		c.w.trace.printf("copier %d.%d: new instance's InitProducerId failed (%v); retrying with a new session", c.slot, c.inc, err)
		c.w.closeSession(s)
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		c.w.log.note("copier %d: new instance's InitProducerId: %v", c.slot, err)
	}
	c.w.trace.printf("copier %d.%d: new instance (epoch %d, err %v)", c.slot, c.inc, epoch, err)
	if err == nil && (c.w.initReadAll || c.initReadNext) {
		c.initRead(ctx, c.w.log.since())
	}
	c.initReadNext = false
	return s
}

// transact copies recs in one transaction: commit, or (at the abort rate)
// produce everything and abort, or (when asked) produce everything and be
// replaced by a new instance with the same transactional id.
func (c *copier) transact(ctx context.Context, recs []*kgo.Record) {
	log := c.w.log
	if err := c.sess.Begin(); err != nil {
		log.sessionErrs.Add(1)
		log.note("copier %d: begin: %v", c.slot, err)
		c.replace(ctx)
		return
	}
	inputs := make([]inputID, 0, len(recs))
	for _, r := range recs {
		p, s, ok := parseValue(string(r.Value))
		if !ok {
			p, s = 1<<31-1, 1<<31-1 // never an input id: any copy of it is unexpected
		}
		inputs = append(inputs, packID(p, s))
	}
	t := log.begin(c.slot, c.inc, inputs)
	for _, r := range recs {
		c.sess.Produce(ctx, &kgo.Record{Key: r.Key, Value: outputValue(r.Value, c.slot, t.id)}, func(_ *kgo.Record, err error) {
			if err == nil {
				return
			}
			t.produceFailed.Store(true)
			if log.produceErrs.Add(1) <= 3 {
				log.note("copier %d txn %d: produce: %v", c.slot, t.id, err)
			}
		})
	}
	if c.w.restartReq[c.slot].Swap(false) {
		c.restartMidTxn(ctx, t)
		return
	}
	if c.w.stallReq[c.slot].Swap(false) {
		c.stallTxn(ctx, t)
		return
	}
	abort := c.rng.Float64() < c.w.abortRate
	// Get the records to eosproxy (buffered there, acknowledged) before
	// ending: an abort then has something to drop, and a commit is asked
	// only if every record was written. franz-go would commit a
	// transaction some of whose records failed (an EOF on a new
	// connection's first read fails them without failing the
	// transaction), losing them; an application must abort it instead,
	// as Kafka's Java producer does on its own.
	c.flush(ctx, t)
	failedProduce := !abort && t.produceFailed.Load()
	if failedProduce {
		abort = true
		c.w.trace.printf("copier %d.%d txn %d: a record failed to produce: aborting instead of committing", c.slot, c.inc, t.id)
	}
	if !abort {
		t.endAt.Store(log.since())
		if c.w.commitHookArmed.CompareAndSwap(true, false) {
			select {
			case c.w.commitHook <- struct{}{}:
			default:
			}
		}
	}
	ectx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	member, gen := c.sess.Client().GroupMetadata()
	c.w.trace.printf("copier %d.%d txn %d: End(commit=%v) of %d records as member %q generation %d", c.slot, c.inc, t.id, !abort, len(inputs), member, gen)
	t0 := time.Now()
	committed, err := c.sess.End(ectx, kgo.TransactionEndTry(!abort))
	cancel()
	t.doneAt = log.since()
	if d := time.Since(t0); d > 10*time.Second {
		log.note("copier %d txn %d: End took %v", c.slot, t.id, d.Round(time.Millisecond))
	}
	c.w.trace.printf("copier %d.%d txn %d: End → committed=%v err=%v", c.slot, c.inc, t.id, committed, err)
	switch {
	case err != nil:
		// franz-go aborts when committing the offsets fails; an error of
		// EndTxn itself leaves the outcome open. Either way the client
		// rewinds to the committed offsets; if the producer is now in a
		// fatal state, the next Begin fails and the copier is replaced.
		t.state.Store(int32(txnUnknown))
		log.unknown.Add(1)
		log.note("copier %d txn %d: end: %v", c.slot, t.id, err)
		// An EndTxn that failed at the transport may not have reached
		// the coordinator: the transaction is then still open there,
		// holding the group's offsets. franz-go leaves it to an
		// InitProducerId sent with the next produce, but a rejoin's
		// OffsetFetch (RequireStable) comes first and is answered
		// UNSTABLE_OFFSET_COMMIT until the transaction times out (Kafka
		// and eosproxy alike). A new instance's InitProducerId aborts it
		// at once, as a Java application's new producer would.
		c.w.trace.printf("copier %d.%d txn %d: replacing the copier after its End failed", c.slot, c.inc, t.id)
		c.replace(ctx)
	case committed && abort:
		// End(TryAbort) never reports a commit; if it did, its records
		// must still not be in the output.
		t.state.Store(int32(txnAborted))
		log.aborts.Add(1)
		log.note("copier %d txn %d: End(TryAbort) reported committed", c.slot, t.id)
	case committed:
		t.state.Store(int32(txnCommitted))
		log.commits.Add(1)
		log.copied.Add(int64(len(inputs)))
		if c.w.commitRestartReq[c.slot].Swap(false) {
			// Replaced right after a commit: the new instance must
			// find the commit in the output as soon as InitProducerId
			// returns, although eosproxy may still be writing it.
			c.w.restartsCommit.Add(1)
			c.w.trace.printf("copier %d.%d txn %d: replacing the copier right after its commit", c.slot, c.inc, t.id)
			c.initReadNext = true
			c.replace(ctx)
		}
	case failedProduce:
		t.state.Store(int32(txnForced))
		log.forced.Add(1)
		log.produceAborts.Add(1)
	case abort:
		t.state.Store(int32(txnAborted))
		log.aborts.Add(1)
	default:
		t.state.Store(int32(txnForced))
		log.forced.Add(1)
	}
}

// flush waits until t's records are acknowledged (buffered in eosproxy),
// for up to a minute; a slow flush is noted.
func (c *copier) flush(ctx context.Context, t *txnRec) {
	t0 := time.Now()
	fctx, cancel := context.WithTimeout(ctx, time.Minute)
	err := c.sess.Client().Flush(fctx)
	cancel()
	if d := time.Since(t0); d > 10*time.Second || err != nil {
		c.w.log.note("copier %d txn %d: flush took %v (err %v)", c.slot, t.id, d.Round(time.Millisecond), err)
		c.w.trace.printf("copier %d.%d txn %d: flush took %v (err %v)", c.slot, c.inc, t.id, d.Round(time.Millisecond), err)
	}
}

// restartMidTxn replaces the copier while transaction t is open, its
// records produced and acknowledged (buffered in eosproxy). Alternately:
//   - crash: the old instance is closed as is, then a new instance with the
//     same transactional id starts (its InitProducerId must abort t);
//   - zombie: the new instance starts (and gets its producer id, fencing the
//     old one) while the old one is alive; the old one then tries to commit
//     t, which must fail.
//
// Either way t's records must never be read.
func (c *copier) restartMidTxn(ctx context.Context, t *txnRec) {
	log := c.w.log
	c.flush(ctx, t)
	c.restarts++
	t.doneAt = log.since()
	c.w.trace.printf("copier %d.%d txn %d: replacing the copier mid-transaction (%s)", c.slot, c.inc, t.id, map[bool]string{true: "close", false: "zombie"}[c.restarts%2 == 1])
	if c.restarts%2 == 1 {
		t.state.Store(int32(txnCrashed))
		log.crashed.Add(1)
		c.w.restartsCrash.Add(1)
		c.replace(ctx)
		return
	}
	old := c.sess
	fresh := c.newInstance(ctx)
	c.sess = fresh
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	_, _, perr := fresh.Client().ProducerID(pctx) // loaded by newInstance, unless that failed
	cancel()
	if perr != nil {
		// The successor has no producer id: the old instance is not
		// fenced yet. Close it as in the crash variant.
		t.state.Store(int32(txnCrashed))
		log.crashed.Add(1)
		c.w.restartsCrash.Add(1)
		c.w.closeSession(old)
		return
	}
	t.state.Store(int32(txnZombie))
	log.zombies.Add(1)
	c.w.restartsZombie.Add(1)
	ectx, cancel := context.WithTimeout(ctx, 30*time.Second)
	committed, err := old.End(ectx, kgo.TryCommit)
	cancel()
	c.w.trace.printf("copier %d.%d txn %d: zombie End(commit) → committed=%v err=%v", c.slot, c.inc, t.id, committed, err)
	if committed && err == nil {
		log.zombieCommits.Add(1)
		log.note("copier %d txn %d: a fenced instance COMMITTED after its successor got its producer id", c.slot, t.id)
	}
	c.w.closeSession(old)
}

// closeSession closes a copier's session, whose client then leaves the
// group. In kfake, a member whose LeaveGroup did not get through (eosproxy
// was down) and whose JoinGroup answer went to a connection a kill of
// eosproxy closed is never removed: kfake starts its session timer only
// when an answer reaches it, and drops members that do not sync only until
// the leader has synced. Its partitions were then never consumed, or, as
// the leader, it kept the group from ever syncing (Kafka times out both).
// So on kfake the leave is completed straight at the backend, as if it had
// got through.
func (w *copyWork) closeSession(s *kgo.GroupTransactSession) {
	s.Close()
	if !w.kfakeGroup || w.consumerProtocol || w.backend == nil {
		return
	}
	member, _ := s.Client().GroupMetadata()
	if member == "" {
		return
	}
	req := kmsg.NewPtrLeaveGroupRequest()
	req.Group, req.MemberID = w.group, member
	m := kmsg.NewLeaveGroupRequestMember()
	m.MemberID = member
	req.Members = append(req.Members, m)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := req.RequestWith(ctx, w.backend)
	if err == nil && resp.ErrorCode == 0 && len(resp.Members) == 1 && resp.Members[0].ErrorCode == 0 {
		// Unknown when the client's own leave got through.
		w.trace.printf("member %q of a closed copier left the group straight at kfake", member)
	}
}

type earlyRead struct {
	txn  int64
	desc string
}

// reader is a read_committed consumer of the output, through eosproxy,
// running while the copiers copy.
type reader struct {
	id  int
	cl  *kgo.Client
	log *txnLog

	mu    sync.Mutex
	parts [][]uint64 // value hash by offset; 0: not read

	// early are records read before their copier asked to commit them
	// (classified at the end: uncommitted reads, or aborted reads).
	early []earlyRead

	records atomic.Int64
	rereads atomic.Int64 // an offset read again with another value
	errs    atomic.Int64

	exMu     sync.Mutex
	examples []string
	done     chan struct{}
}

func newReader(id int, bootstrap, topic string, partitions int, log *txnLog, opts ...kgo.Opt) (*reader, error) {
	cl, err := kgo.NewClient(append(opts, kgo.SeedBrokers(seeds(bootstrap)...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.MetadataMinAge(100*time.Millisecond),
		kgo.RetryBackoffFn(func(n int) time.Duration { return min(time.Duration(n)*10*time.Millisecond, 200*time.Millisecond) }),
		kgo.FetchMaxWait(500*time.Millisecond))...)
	if err != nil {
		return nil, err
	}
	return &reader{id: id, cl: cl, log: log, parts: make([][]uint64, partitions), done: make(chan struct{})}, nil
}

func (r *reader) example(format string, args ...any) {
	r.exMu.Lock()
	defer r.exMu.Unlock()
	if len(r.examples) < 10 {
		r.examples = append(r.examples, fmt.Sprintf(format, args...))
	}
}

func valueHash(v []byte) uint64 {
	h := fnv.New64a()
	h.Write(v)
	if s := h.Sum64(); s != 0 {
		return s
	}
	return 1
}

// run reads until ctx ends.
func (r *reader) run(ctx context.Context) {
	defer close(r.done)
	for ctx.Err() == nil {
		fs := r.cl.PollFetches(ctx)
		if fs.IsClientClosed() {
			return
		}
		fs.EachError(func(topic string, part int32, err error) {
			if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, kgo.ErrClientClosed) {
				return
			}
			if r.errs.Add(1) <= 3 {
				r.example("reader %d: fetch %s/%d: %v (retried)", r.id, topic, part, err)
			}
		})
		now := r.log.since()
		fs.EachRecord(func(rec *kgo.Record) {
			r.records.Add(1)
			r.store(rec)
			_, _, txn, ok := parseOutput(string(rec.Value))
			if !ok {
				return // unexpected: counted by the verdict from the backend
			}
			t := r.log.get(txn)
			if t == nil {
				return
			}
			t.readerSeen.Add(1)
			if end := t.endAt.Load(); end == 0 || end > now {
				when := "before its copier asked to commit it"
				if end == 0 {
					when = "while no commit of it had been asked for"
				}
				r.mu.Lock()
				r.early = append(r.early, earlyRead{txn: txn,
					desc: fmt.Sprintf("reader %d read %q at %d/%d at %.3fs, %s", r.id, rec.Value, rec.Partition, rec.Offset, float64(now)/1e9, when)})
				r.mu.Unlock()
			}
		})
	}
}

func (r *reader) store(rec *kgo.Record) {
	h := valueHash(rec.Value)
	r.mu.Lock()
	defer r.mu.Unlock()
	if int(rec.Partition) >= len(r.parts) || rec.Offset < 0 {
		return
	}
	p := r.parts[rec.Partition]
	for int64(len(p)) <= rec.Offset {
		p = append(p, 0)
	}
	if old := p[rec.Offset]; old != 0 && old != h {
		r.rereads.Add(1)
		r.example("reader %d read offset %d/%d again with another value %q", r.id, rec.Partition, rec.Offset, rec.Value)
	}
	p[rec.Offset] = h
	r.parts[rec.Partition] = p
}

// caughtUp reports whether the reader has read up to ends (by partition).
func (r *reader) caughtUp(ends map[int32]int64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for p, end := range ends {
		if int(p) >= len(r.parts) {
			return false
		}
		if int64(len(r.parts[p])) < end {
			return false
		}
	}
	return true
}

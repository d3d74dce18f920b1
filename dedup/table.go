package dedup

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/rs/zerolog"

	"github.com/eosproxy/eosproxy/store"
)

// Key names one producer on one partition.
type Key struct {
	ProducerID int64
	Topic      string
	Partition  int32
}

// Backend is the I/O the table needs to settle what the backend holds.
type Backend interface {
	// EndOffset is the partition's current end (high watermark).
	EndOffset(ctx context.Context, topic string, partition int32) (int64, error)
	// FindBatch looks from offset from onwards for the batch whose content
	// digest is digest and returns its base offset.
	FindBatch(ctx context.Context, topic string, partition int32, from int64, digest [32]byte) (int64, bool, error)
}

// Table is the persisted map of producer states with the batches in flight.
type Table struct {
	log        zerolog.Logger
	db         *store.DB
	backend    Backend
	expiration time.Duration
	// idleAfter is how long a producer's partition goes without a batch
	// before its intent is cleared: its next batch then takes a fresh
	// low-water offset (bounding a look-up to what the partition received
	// since) and a state that needs no look-up after a crash.
	idleAfter time.Duration
	now       func() time.Time

	mu      sync.Mutex
	entries map[Key]*entry

	// pidMu guards the producer id allocator, apart from mu: reserving a
	// block may take a round trip to the backend.
	pidMu   sync.Mutex
	pidNext int64
	pidTop  int64 // ids below this are reserved on disk
	reserve func(floor int64) (int64, error)

	commits chan commit
	stop    chan struct{}
	wg      sync.WaitGroup
	// closing orders submit against Close, so no write is queued after the
	// commit loop's last drain.
	closing sync.RWMutex
	closed  bool
	// beforeCommit, if set, runs before each group commit (tests hold
	// commits with it).
	beforeCommit atomic.Pointer[func()]
}

type entry struct {
	st       *State // nil until the producer's first batch here is settled
	inflight *Token
	// write is the durable write of st under way (WrittenAll), or one that
	// failed; nil once st is durable. A retry is answered as a duplicate
	// only from a durable state: answered "ok" from a state lost in a
	// crash, the client's next batch would meet the older state and get
	// OUT_OF_ORDER_SEQUENCE_NUMBER.
	write *stateWrite
}

// stateWrite is one queued durable write of an entry's state.
type stateWrite struct {
	done chan struct{}
	err  error // set before done closes
}

// Token is a batch cleared for writing; exactly one of Written or Failed
// must follow, which lets the next batch of the same producer and partition
// go ahead.
type Token struct {
	t     *Table
	key   Key
	batch BatchInfo
	done  chan struct{}
}

var (
	statePrefix = []byte("dedup/ps/")
	pidKey      = []byte("dedup/pid-reserved")
)

// ProducerIDBlock is how many producer ids are reserved at a time.
const ProducerIDBlock = 1000

const pidBlock = ProducerIDBlock

// Open loads the producer states from db. A state recorded with its intent
// set is unverified: eosproxy may have stopped between forwarding a batch and
// recording it. One recorded without (an idle producer, a clean stop) is not.
func Open(db *store.DB, backend Backend, expiration time.Duration, log zerolog.Logger) (*Table, error) {
	return open(db, backend, expiration, DefaultIdleAfter, log)
}

func open(db *store.DB, backend Backend, expiration, idleAfter time.Duration, log zerolog.Logger) (*Table, error) {
	t := &Table{
		log: log, db: db, backend: backend, expiration: expiration, idleAfter: idleAfter, now: time.Now,
		entries: map[Key]*entry{},
		commits: make(chan commit, 1024),
		stop:    make(chan struct{}),
	}
	raw, err := db.Get(pidKey)
	if err != nil {
		return nil, fmt.Errorf("load producer id allocator: %w", err)
	}
	if len(raw) == 8 {
		t.pidTop = int64(binary.BigEndian.Uint64(raw))
	}
	t.pidNext = t.pidTop
	cutoff := t.now().Add(-expiration).UnixMilli()
	var expired [][]byte
	unverified := 0
	err = db.Scan(statePrefix, func(k, v []byte) error {
		key, err := decodeKey(k)
		if err != nil {
			return err
		}
		st, err := UnmarshalState(v)
		if err != nil {
			return fmt.Errorf("producer state %+v: %w", key, err)
		}
		if st.LastUpdateMs < cutoff {
			expired = append(expired, append([]byte{}, k...))
			return nil
		}
		// Only a state recorded with a batch possibly in flight needs a
		// look-up before the next write.
		st.Unverified = st.Intent
		if st.Unverified {
			unverified++
		}
		t.entries[key] = &entry{st: &st}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("load producer states: %w", err)
	}
	if err := t.deleteKeys(expired); err != nil {
		return nil, err
	}
	log.Info().Int("producers", len(t.entries)).Int("unverified", unverified).Int("expired", len(expired)).Msg("producer states loaded")
	t.wg.Add(3)
	go t.commitLoop()
	go t.expireLoop()
	go t.idleLoop()
	return t, nil
}

// Close stops the background work; pending commits finish first. Every
// state with nothing in flight is recorded as such, so that after a clean
// stop only the producers whose last outcome is unknown need a look-up.
func (t *Table) Close() {
	t.closing.RLock()
	closed := t.closed
	t.closing.RUnlock()
	if closed {
		return
	}
	t.clearIntents(func(*State) bool { return true })
	t.stopLoops()
}

// stopLoops stops the background work as a crash would leave the state:
// whatever was queued is written, nothing more.
func (t *Table) stopLoops() {
	t.closing.Lock()
	if t.closed {
		t.closing.Unlock()
		return
	}
	t.closed = true
	t.closing.Unlock()
	close(t.stop)
	t.wg.Wait()
}

// SetReserve makes NewProducerID take each block of ProducerIDBlock ids
// from reserve, which returns the first id of a block, at or above floor,
// that it hands to no one else (eosproxy reserves them through the
// backend, so that instances sharing it never hand out the same id),
// instead of counting on from this store's last block.
func (t *Table) SetReserve(reserve func(floor int64) (int64, error)) {
	t.pidMu.Lock()
	defer t.pidMu.Unlock()
	t.reserve = reserve
}

// NewProducerID hands out a producer id never handed out before, even across
// restarts: ids are reserved on disk a block at a time.
func (t *Table) NewProducerID() (int64, error) {
	t.pidMu.Lock()
	defer t.pidMu.Unlock()
	if t.pidNext >= t.pidTop {
		start := t.pidNext
		if t.reserve != nil {
			// Above every id this store handed out, whatever the
			// reservation's own numbering.
			s, err := t.reserve(t.pidTop)
			if err != nil {
				return 0, fmt.Errorf("reserve producer ids: %w", err)
			}
			if s < t.pidTop {
				return 0, fmt.Errorf("reserve producer ids: block at %d is below this store's ids (%d)", s, t.pidTop)
			}
			start = s
		}
		top := start + pidBlock
		if err := t.db.Put(pidKey, binary.BigEndian.AppendUint64(nil, uint64(top))); err != nil {
			return 0, fmt.Errorf("reserve producer ids: %w", err)
		}
		t.pidNext, t.pidTop = start, top
	}
	id := t.pidNext
	t.pidNext++
	return id, nil
}

// Begin decides batch b of key. For a Write it returns a Token and the batch
// must then be written; every other verdict is final. Begin waits while an
// earlier batch of the same producer and partition is in flight, and settles
// an unverified state by looking at the backend, so that a batch is never
// written before the one ahead of it is known to be written.
func (t *Table) Begin(ctx context.Context, key Key, b BatchInfo, digest func() [32]byte) (Decision, *Token, error) {
	for {
		t.mu.Lock()
		e := t.entries[key]
		if e == nil {
			e = &entry{}
			t.entries[key] = e
		}
		if e.inflight != nil {
			done := e.inflight.done
			t.mu.Unlock()
			select {
			case <-done:
				continue
			case <-ctx.Done():
				return Decision{}, nil, ctx.Err()
			}
		}
		d := Decide(e.st, b)
		if d.Verdict == Write && (e.st == nil || e.st.Unverified || !e.st.Intent) {
			// Hold the key while the backend is consulted.
			tok := t.newToken(e, key, b)
			st := e.st
			t.mu.Unlock()
			var err error
			if st != nil && !st.Unverified {
				err = t.arm(ctx, key, *st)
			} else {
				err = t.settle(ctx, key, st, b, digest)
			}
			if err != nil {
				tok.release(nil)
				t.mu.Lock()
				if e.st == nil && e.inflight == nil && t.entries[key] == e {
					delete(t.entries, key) // nothing learned; keep the map small
				}
				t.mu.Unlock()
				return Decision{}, nil, err
			}
			tok.release(nil)
			continue
		}
		if d.Verdict == Duplicate && e.write != nil {
			w := e.write
			st := *e.st
			t.mu.Unlock()
			if err := t.awaitWrite(ctx, key, e, w, st); err != nil {
				return Decision{}, nil, err
			}
			continue
		}
		if d.Verdict != Write {
			t.mu.Unlock()
			return d, nil, nil
		}
		tok := t.newToken(e, key, b)
		t.mu.Unlock()
		return d, tok, nil
	}
}

// awaitWrite waits until the state a duplicate is answered from is durable:
// for the write under way, or, if it failed, by writing st (the state as
// the duplicate saw it) again.
func (t *Table) awaitWrite(ctx context.Context, key Key, e *entry, w *stateWrite, st State) error {
	select {
	case <-w.done:
	case <-ctx.Done():
		return fmt.Errorf("wait for the state of producer %d on %s/%d to be durable: %w", key.ProducerID, key.Topic, key.Partition, ctx.Err())
	}
	if w.err == nil {
		return nil
	}
	st.Unverified = false
	if err := t.persist(key, st); err != nil {
		return err
	}
	t.mu.Lock()
	if e.write == w {
		e.write = nil
	}
	t.mu.Unlock()
	return nil
}

func (t *Table) newToken(e *entry, key Key, b BatchInfo) *Token {
	tok := &Token{t: t, key: key, batch: b, done: make(chan struct{})}
	e.inflight = tok
	return tok
}

// settle brings an unverified or absent state up to date with the backend.
// For a producer seen for the first time on a partition it records the
// partition's end as the low-water mark before any write. For an unverified
// one it looks for b past the low-water mark: if b is there, b was written
// before eosproxy could record it, and it is recorded now. Begin calls it
// only for a batch Decide would write, so b is the one batch that can have
// landed unrecorded: batches are written one at a time per key.
func (t *Table) settle(ctx context.Context, key Key, st *State, b BatchInfo, digest func() [32]byte) error {
	if st == nil {
		end, err := t.backend.EndOffset(ctx, key.Topic, key.Partition)
		if err != nil {
			return fmt.Errorf("end offset of %s/%d: %w", key.Topic, key.Partition, err)
		}
		ns := State{Epoch: b.Epoch, LowWater: end, LastUpdateMs: t.now().UnixMilli(), Intent: true}
		return t.store(key, ns, true)
	}
	off, found, err := t.backend.FindBatch(ctx, key.Topic, key.Partition, st.LowWater, digest())
	if err != nil {
		return fmt.Errorf("look for an unacknowledged batch in %s/%d from offset %d: %w", key.Topic, key.Partition, st.LowWater, err)
	}
	ns := *st
	ns.Intent = true
	if found {
		t.log.Info().Int64("producer", key.ProducerID).Str("topic", key.Topic).Int32("partition", key.Partition).
			Int32("seq", b.FirstSeq).Int64("offset", off).Msg("batch found in the backend after an unknown outcome; not writing it again")
		ns = Apply(ns, b, off, t.now().UnixMilli())
	}
	// Batches are released to the backend before their state is durable
	// (WrittenAll), so after a crash several may have landed unrecorded, one
	// after another: the key stays unverified until a batch is not found.
	ns.Unverified = found
	return t.store(key, ns, found)
}

// arm records, durably and before a batch of an idle producer goes out,
// that one may be in flight (the intent), with a low-water offset moved up
// to the partition's end: after a crash the look-up reads only what the
// partition received since, not everything since the producer's last
// batch. If the end cannot be read the old low-water offset (still at or
// before where the batch can land) is kept: the bound is an economy, not a
// condition for writing.
func (t *Table) arm(ctx context.Context, key Key, st State) error {
	ns := st
	ns.Intent = true
	if end, err := t.backend.EndOffset(ctx, key.Topic, key.Partition); err != nil {
		t.log.Debug().Err(err).Str("topic", key.Topic).Int32("partition", key.Partition).
			Msg("end offset before an idle producer's batch unknown; keeping its low-water offset")
	} else {
		ns.LowWater = max(ns.LowWater, end)
	}
	return t.store(key, ns, true)
}

// clearIntents records, for every state that matches and has nothing in
// flight or unknown, that no batch was sent after it. Queued under mu, so
// each write is ordered after the state's earlier ones and before any
// later arm of the same key.
func (t *Table) clearIntents(match func(*State) bool) int {
	var waits []chan error
	t.mu.Lock()
	for k, e := range t.entries {
		if e.inflight != nil || e.st == nil || e.st.Unverified || !e.st.Intent || !match(e.st) {
			continue
		}
		cp := *e.st
		cp.Intent = false
		e.st = &cp
		waits = append(waits, t.submit(k, cp))
	}
	t.mu.Unlock()
	for _, w := range waits {
		if err := <-w; err != nil {
			// The state on disk keeps its intent: a needless look-up
			// after a crash, nothing worse.
			t.log.Warn().Err(err).Msg("record idle producer states")
			break
		}
	}
	return len(waits)
}

// DefaultIdleAfter is how long a producer's partition must see no batch
// before its intent is cleared.
const DefaultIdleAfter = 2 * time.Second

// sweepIdle clears the intent of every producer idle on a partition for
// idleAfter.
func (t *Table) sweepIdle() int {
	cutoff := t.now().Add(-t.idleAfter).UnixMilli()
	return t.clearIntents(func(st *State) bool { return st.LastUpdateMs < cutoff })
}

func (t *Table) idleLoop() {
	t.tickLoop(max(t.idleAfter/2, 10*time.Millisecond), func() { t.sweepIdle() })
}

// store replaces key's state, durably first if persist is set.
func (t *Table) store(key Key, st State, persist bool) error {
	if persist {
		if err := t.persist(key, st); err != nil {
			return err
		}
	}
	t.mu.Lock()
	if e := t.entries[key]; e != nil {
		cp := st
		e.st = &cp
	}
	t.mu.Unlock()
	return nil
}

// WrittenAll records each token's batch at its base offset and makes the
// new states durable in one group commit. The next batch of each key may go
// to the backend as soon as this one's answer is known, before the state is
// on disk (the wait for the disk is the caller's, before it answers the
// client): a crash in between leaves batches in the backend that the state
// does not know, which settle finds when they are retried. A state that
// could not be made durable gets an error and becomes unverified: eosproxy
// must not answer "ok" for it.
func WrittenAll(toks []*Token, offsets []int64) []error {
	if len(toks) == 0 {
		return nil
	}
	t := toks[0].t
	waits := make([]chan error, len(toks))
	writes := make([]*stateWrite, len(toks))
	now := t.now().UnixMilli()
	for i, tok := range toks {
		t.mu.Lock()
		var base State
		e := t.entries[tok.key]
		if e != nil && e.st != nil {
			base = *e.st
		}
		ns := Apply(base, tok.batch, offsets[i], now)
		// The next batch may follow before anything else is written.
		ns.Intent = true
		waits[i] = t.submit(tok.key, ns)
		writes[i] = &stateWrite{done: make(chan struct{})}
		if e != nil {
			e.write = writes[i]
		}
		t.mu.Unlock()
		tok.release(&ns)
	}
	errs := make([]error, len(toks))
	for i, tok := range toks {
		errs[i] = <-waits[i]
		t.mu.Lock()
		w := writes[i]
		w.err = errs[i]
		e := t.entries[tok.key]
		if e != nil && errs[i] != nil && e.st != nil {
			cp := *e.st
			cp.Unverified = true
			e.st = &cp
		}
		if e != nil && e.write == w && errs[i] == nil {
			e.write = nil // a later write, queued after this one, keeps its own
		}
		t.mu.Unlock()
		close(w.done)
	}
	return errs
}

// Failed releases the token after the backend did not take the batch. If the
// backend may have written it anyway (ambiguous), the state becomes
// unverified and the retry is checked against the backend first.
func (tok *Token) Failed(ambiguous bool) {
	t := tok.t
	var ns *State
	if ambiguous {
		t.mu.Lock()
		if e := t.entries[tok.key]; e != nil && e.st != nil {
			cp := *e.st
			cp.Unverified = true
			ns = &cp
		}
		t.mu.Unlock()
	}
	tok.release(ns)
}

func (tok *Token) release(ns *State) {
	t := tok.t
	t.mu.Lock()
	if e := t.entries[tok.key]; e != nil && e.inflight == tok {
		e.inflight = nil
		if ns != nil {
			e.st = ns
		}
	}
	t.mu.Unlock()
	close(tok.done)
}

// Producer is one producer's state on a partition, for DescribeProducers.
type Producer struct {
	ProducerID   int64
	Epoch        int16
	LastSequence int32
	LastUpdateMs int64
}

// Producers lists the producers eosproxy holds state for on a partition.
func (t *Table) Producers(topic string, partition int32) []Producer {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []Producer
	for k, e := range t.entries {
		if k.Topic != topic || k.Partition != partition || e.st == nil {
			continue
		}
		last := int32(-1)
		if n := len(e.st.Batches); n > 0 {
			last = e.st.Batches[n-1].LastSeq
		}
		out = append(out, Producer{k.ProducerID, e.st.Epoch, last, e.st.LastUpdateMs})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ProducerID < out[j].ProducerID })
	return out
}

// commit is one durable write (or delete, when val is nil) waiting for the
// group commit.
type commit struct {
	key  []byte
	val  []byte
	done chan error
}

func (t *Table) persist(key Key, st State) error { return <-t.submit(key, st) }

// submit queues a durable write of key's state and returns where its
// outcome will be sent.
func (t *Table) submit(key Key, st State) chan error {
	return t.enqueue(commit{key: encodeKey(key), val: MarshalState(st), done: make(chan error, 1)})
}

func (t *Table) enqueue(c commit) chan error {
	t.closing.RLock()
	defer t.closing.RUnlock()
	if t.closed {
		c.done <- errors.New("producer state table closed")
		return c.done
	}
	t.commits <- c
	return c.done
}

// commitLoop writes every state update waiting at the time in one badger
// transaction, so concurrent producers share each fsync.
func (t *Table) commitLoop() {
	defer t.wg.Done()
	for {
		var batch []commit
		stopping := false
		select {
		case c := <-t.commits:
			batch = append(batch, c)
		case <-t.stop:
			stopping = true // drain what was queued before Close
		}
	more:
		for len(batch) < 512 {
			select {
			case c := <-t.commits:
				batch = append(batch, c)
			default:
				break more
			}
		}
		if len(batch) == 0 && stopping {
			return
		}
		if hook := t.beforeCommit.Load(); hook != nil {
			(*hook)()
		}
		err := t.db.Update(func(txn *badger.Txn) error {
			for _, c := range batch {
				var err error
				if c.val == nil {
					err = txn.Delete(c.key)
				} else {
					err = txn.Set(c.key, c.val)
				}
				if err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			err = fmt.Errorf("persist producer state: %w", err)
			t.log.Error().Err(err).Msg("producer state not durable")
		}
		for _, c := range batch {
			c.done <- err
		}
	}
}

// expireLoop drops producers idle for longer than the expiration, as Kafka
// does after producer.id.expiration.ms.
func (t *Table) expireLoop() {
	every := min(t.expiration/10, time.Minute)
	if every <= 0 {
		every = time.Second
	}
	t.tickLoop(every, func() { t.expire() })
}

// tickLoop calls fn every d until the table is closed.
func (t *Table) tickLoop(d time.Duration, fn func()) {
	defer t.wg.Done()
	tick := time.NewTicker(d)
	defer tick.Stop()
	for {
		select {
		case <-t.stop:
			return
		case <-tick.C:
			fn()
		}
	}
}

func (t *Table) expire() {
	cutoff := t.now().Add(-t.expiration).UnixMilli()
	var waits []chan error
	t.mu.Lock()
	for k, e := range t.entries {
		if e.inflight == nil && (e.st == nil || e.st.LastUpdateMs < cutoff) {
			delete(t.entries, k)
			// Queued under mu, so it is ordered before any later write of
			// the same key through the same commit loop.
			waits = append(waits, t.enqueue(commit{key: encodeKey(k), done: make(chan error, 1)}))
		}
	}
	t.mu.Unlock()
	for _, w := range waits {
		if err := <-w; err != nil {
			t.log.Warn().Err(err).Msg("expire producer states")
			return
		}
	}
}

func (t *Table) deleteKeys(keys [][]byte) error {
	if len(keys) == 0 {
		return nil
	}
	return t.db.Update(func(txn *badger.Txn) error {
		for _, k := range keys {
			if err := txn.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
}

func encodeKey(k Key) []byte {
	b := append([]byte{}, statePrefix...)
	b = binary.BigEndian.AppendUint64(b, uint64(k.ProducerID))
	b = binary.BigEndian.AppendUint32(b, uint32(k.Partition))
	return append(b, k.Topic...)
}

func decodeKey(b []byte) (Key, error) {
	b = b[len(statePrefix):]
	if len(b) < 12 {
		return Key{}, fmt.Errorf("corrupt producer state key %q", b)
	}
	return Key{
		ProducerID: int64(binary.BigEndian.Uint64(b)),
		Partition:  int32(binary.BigEndian.Uint32(b[8:])),
		Topic:      string(b[12:]),
	}, nil
}

// Version 1 has no flags (every state is taken as having a batch in
// flight); version 2 adds a flags byte before the batch count.
const (
	stateVersion1 = 1
	stateVersion  = 2
	flagIntent    = 1
)

// MarshalState encodes a producer's state for badger; the transaction
// coordinator keeps its producers' sequence state in the same form.
func MarshalState(st State) []byte {
	b := []byte{stateVersion}
	b = binary.BigEndian.AppendUint16(b, uint16(st.Epoch))
	b = binary.BigEndian.AppendUint64(b, uint64(st.LowWater))
	b = binary.BigEndian.AppendUint64(b, uint64(st.LastUpdateMs))
	var flags byte
	if st.Intent {
		flags |= flagIntent
	}
	b = append(b, flags, byte(len(st.Batches)))
	for _, w := range st.Batches {
		b = binary.BigEndian.AppendUint16(b, uint16(w.Epoch))
		b = binary.BigEndian.AppendUint32(b, uint32(w.FirstSeq))
		b = binary.BigEndian.AppendUint32(b, uint32(w.LastSeq))
		b = binary.BigEndian.AppendUint64(b, uint64(w.BaseOffset))
	}
	return b
}

// UnmarshalState decodes what MarshalState encoded.
func UnmarshalState(b []byte) (State, error) {
	const per = 2 + 4 + 4 + 8
	head := 1 + 2 + 8 + 8 + 1
	if len(b) > 0 && b[0] == stateVersion {
		head++
	}
	if len(b) < head || b[0] != stateVersion && b[0] != stateVersion1 {
		return State{}, errors.New("corrupt or unknown state encoding")
	}
	st := State{
		Epoch:        int16(binary.BigEndian.Uint16(b[1:])),
		LowWater:     int64(binary.BigEndian.Uint64(b[3:])),
		LastUpdateMs: int64(binary.BigEndian.Uint64(b[11:])),
		Intent:       b[0] == stateVersion1 || b[19]&flagIntent != 0,
	}
	n := int(b[head-1])
	if n > maxRememberedBatches || len(b) != head+n*per {
		return State{}, errors.New("corrupt state batches")
	}
	for i := 0; i < n; i++ {
		p := b[head+i*per:]
		st.Batches = append(st.Batches, Written{
			Epoch:      int16(binary.BigEndian.Uint16(p)),
			FirstSeq:   int32(binary.BigEndian.Uint32(p[2:])),
			LastSeq:    int32(binary.BigEndian.Uint32(p[6:])),
			BaseOffset: int64(binary.BigEndian.Uint64(p[10:])),
		})
	}
	return st, nil
}

// ProducerIDs lists the producer ids with state or a batch in flight in the
// table (never nil).
func (t *Table) ProducerIDs() map[int64]struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[int64]struct{}, len(t.entries))
	for k, e := range t.entries {
		if e.st != nil || e.inflight != nil {
			out[k.ProducerID] = struct{}{}
		}
	}
	return out
}

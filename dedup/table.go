// The producer state table: its entries by producer and partition under one
// lock (mu), Open and Close, expiry, and what DescribeProducers reads. The
// pure decision is decide.go; one batch's steps (batch.go), the look-ups
// (settle.go), persistence and the id allocator have files of their own.

package dedup

import (
	"context"
	"encoding/binary"
	"fmt"
	"sort"
	"sync"
	"time"

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
	// DropsLateCopies reports whether the backend keeps producer state of
	// its own for every batch eosproxy forwards (each goes under a paired
	// producer id, with the client's epoch and sequences): it drops a
	// second copy itself, so a look-up need not wait for a first copy
	// still queued in the broker, an answer need not wait for eosproxy's
	// state on disk, and a batch eosproxy's state cannot place is left to
	// the backend to decide (WrittenAll, Begin).
	DropsLateCopies() bool
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
	// lateGrace is how long after an unclear outcome its look-up waits
	// (lateWriteGrace); sleep waits (tests replace it).
	lateGrace time.Duration
	sleep     func(ctx context.Context, d time.Duration) error

	mu      sync.Mutex
	entries map[Key]*entry

	pidAllocator // pid.go
	commitQueue  // persist.go

	stop chan struct{}
	wg   sync.WaitGroup
}

type entry struct {
	st       *State // nil until the producer's first batch here is settled
	inflight *Token // the last batch cleared for writing, until its outcome is known
	// proj is st as it will be once every batch in flight is written: a
	// batch following them may be pipelined behind them (Table.pipeline).
	proj *State
	// write is the durable write of st under way (WrittenAll), or one that
	// failed; nil once st is durable. A retry is answered as a duplicate
	// only from a durable state: answered "ok" from a state lost in a
	// crash, the client's next batch would meet the older state and get
	// OUT_OF_ORDER_SEQUENCE_NUMBER.
	write *stateWrite
	// unclearAt is when the last batch's outcome became unclear in this
	// process (zero: never, or unclear since before it started).
	unclearAt time.Time
}

// stateWrite is one queued durable write of an entry's state.
type stateWrite struct {
	done chan struct{}
	err  error // set before done closes
}

var (
	statePrefix = []byte("dedup/ps/")
	pidKey      = []byte("dedup/pid-reserved")
)

// Open loads the producer states from db. A state recorded with its intent
// set is unverified: eosproxy may have stopped between forwarding a batch and
// recording it. One recorded without (an idle producer, a clean stop) is not.
func Open(db *store.DB, backend Backend, expiration time.Duration, log zerolog.Logger) (*Table, error) {
	return open(db, backend, expiration, DefaultIdleAfter, log)
}

func open(db *store.DB, backend Backend, expiration, idleAfter time.Duration, log zerolog.Logger) (*Table, error) {
	t := &Table{
		log: log, db: db, backend: backend, expiration: expiration, idleAfter: idleAfter, now: time.Now,
		lateGrace: lateWriteGrace, sleep: sleepCtx,
		entries:     map[Key]*entry{},
		commitQueue: commitQueue{kick: make(chan struct{}, 1)},
		stop:        make(chan struct{}),
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
			waits = append(waits, t.enqueueWait(commit{key: encodeKey(k)}))
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

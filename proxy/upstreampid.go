package proxy

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/rs/zerolog"

	"github.com/eosproxy/eosproxy/store"
)

// upstreamIDs pairs each producer id eosproxy hands an idempotent client
// with a producer id the backend gave eosproxy, where the backend has
// idempotence. The client's batches are then forwarded under that id with
// the client's own epoch and sequences (which eosproxy has checked): the
// backend keeps the client's sequence stream and drops a batch written
// twice — which closes the window the content-digest look-up leaves open (a
// write still in flight when eosproxy looked for it). A backend without
// idempotence gets batches without producer fields, as before.
type upstreamIDs struct {
	db   *store.DB
	init func(context.Context) (int64, int16, error)
	log  zerolog.Logger

	// pool holds backend producer ids fetched ahead, so that InitProducerId
	// is answered without a round trip to the backend (a client killed
	// off while waiting for it fails its buffered records); refilled in
	// the background.
	pool      chan int64
	refilling atomic.Bool
	stop      chan struct{}
	closeOnce sync.Once

	mu    sync.Mutex
	cache map[int64]int64 // client id → backend id; -1: none
	prev  map[int64]int64 // the generation before cache
	// noneUntil: the backend gave no producer id; not asked before then
	// (unix ms), so a backend without idempotence costs one try a minute.
	noneUntil atomic.Int64
}

const (
	prefixUpstreamPID = "idem/u/"
	// upstreamPIDTTL bounds how long a pairing is kept: far longer than a
	// producer's state lives in Kafka (producer.id.expiration.ms, 1 day by
	// default) or in eosproxy (--producer-id-expiration).
	upstreamPIDTTL = 30 * 24 * time.Hour
)

func upstreamPIDKey(pid int64) []byte {
	return binary.BigEndian.AppendUint64([]byte(prefixUpstreamPID), uint64(pid))
}

func newUpstreamIDs(db *store.DB, init func(context.Context) (int64, int16, error), log zerolog.Logger) *upstreamIDs {
	return &upstreamIDs{db: db, init: init, log: log, cache: map[int64]int64{},
		pool: make(chan int64, 32), stop: make(chan struct{})}
}

func (u *upstreamIDs) close() { u.closeOnce.Do(func() { close(u.stop) }) }

// refill tops the pool up in the background unless it is at least half
// full, a refill is running, or the backend recently gave none.
func (u *upstreamIDs) refill() {
	if len(u.pool) >= cap(u.pool)/2 || !u.refilling.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer u.refilling.Store(false)
		for len(u.pool) < cap(u.pool) {
			if until := u.noneUntil.Load(); until != 0 && time.Now().UnixMilli() < until {
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			go func() {
				select {
				case <-u.stop:
					cancel()
				case <-ctx.Done():
				}
			}()
			up, _, err := u.init(ctx)
			cancel()
			select {
			case <-u.stop:
				return
			default:
			}
			if err != nil {
				if u.noneUntil.Swap(time.Now().Add(time.Minute).UnixMilli()) == 0 {
					u.log.Info().Err(err).Msg("the backend gives eosproxy no producer id: idempotent batches are forwarded without producer fields")
				}
				return
			}
			u.noneUntil.Store(0)
			u.pool <- up
		}
	}()
}

// pair gives the client's new id a backend producer id from the pool. With the
// pool empty (the backend has no idempotence, is unreachable, or many
// producers start at once) the client's batches are forwarded without
// producer fields.
func (u *upstreamIDs) pair(pid int64) {
	defer u.refill()
	var up int64
	select {
	case up = <-u.pool:
	default:
		if !u.refilling.Load() {
			u.refill()
		}
		if !u.refilling.Load() {
			return
		}
		// A refill is under way (eosproxy just started, or a burst of
		// producers emptied the pool): wait for it, briefly.
		t := time.NewTimer(200 * time.Millisecond)
		defer t.Stop()
		select {
		case up = <-u.pool:
		case <-t.C:
			return
		}
	}
	// The pairing is used at once and stored without holding up the
	// answer (an fsync widens the window in which a client killed off
	// with eosproxy fails its InitProducerId). Lost in a crash, the
	// client's later batches go without producer fields for good: it
	// loses the backend's duplicate check, not its order.
	u.remember(pid, up)
	go func() {
		err := u.db.Update(func(txn *badger.Txn) error {
			return txn.SetEntry(badger.NewEntry(upstreamPIDKey(pid), binary.BigEndian.AppendUint64(nil, uint64(up))).WithTTL(upstreamPIDTTL))
		})
		if err != nil {
			u.log.Warn().Err(err).Int64("producer", pid).Msg("cannot store the backend's producer id paired with a client's")
		}
	}()
}

// remember caches a pairing. The cache keeps two generations of up to
// 100,000 entries: many short-lived producers cost bounded memory, and a
// recent pairing (whose write may still be under way) is never dropped.
func (u *upstreamIDs) remember(pid, up int64) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.cache) >= 100_000 {
		u.prev, u.cache = u.cache, map[int64]int64{}
	}
	u.cache[pid] = up
}

// lookup returns the backend's producer id paired with the client's.
func (u *upstreamIDs) lookup(pid int64) (int64, bool, error) {
	u.mu.Lock()
	up, ok := u.cache[pid]
	if !ok {
		up, ok = u.prev[pid]
	}
	u.mu.Unlock()
	if ok {
		return up, up >= 0, nil
	}
	v, err := u.db.Get(upstreamPIDKey(pid))
	if err != nil {
		return 0, false, fmt.Errorf("read the backend producer id of producer %d: %w", pid, err)
	}
	up = -1
	if len(v) == 8 {
		up = int64(binary.BigEndian.Uint64(v))
	}
	u.remember(pid, up)
	return up, up >= 0, nil
}

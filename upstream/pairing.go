package upstream

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

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
//
// On a backend with idempotence no batch is ever forwarded unpaired: a
// pairing is durable before the first batch goes out under it (lookup waits
// for the write started at InitProducerId), a producer whose pairing was
// lost before any batch went out is paired afresh on its first batch, and
// with no backend id at hand the client is asked to retry
// (COORDINATOR_LOAD_IN_PROGRESS for InitProducerId, as Kafka answers while
// its producer id block is not ready). A pairing is kept as long as its
// producer has state, and then for the producer id expiration.
type upstreamIDs struct {
	db   *store.DB
	init func(context.Context) (int64, int16, error)
	// supported tells whether the backend serves InitProducerId at all,
	// to tell a backend without idempotence from a failing one.
	supported func(context.Context) (bool, error)
	// inUse lists the client producer ids with producer state.
	inUse      func() map[int64]struct{}
	expiration time.Duration
	log        zerolog.Logger
	now        func() time.Time
	// put writes a pairing durably; tests hold it to stand for a crash
	// before the write.
	put func(pid int64, val []byte) error

	// pool holds backend producer ids fetched ahead, so that InitProducerId
	// is answered without a round trip to the backend (a client killed
	// off while waiting for it fails its buffered records); refilled in
	// the background.
	pool      chan int64
	refilling atomic.Bool
	stop      chan struct{}
	closeOnce sync.Once
	mode      atomic.Int32 // backendUnknown, backendIdempotent or backendPlain
	// retryAt: no refill before then (unix ms): a minute for a backend
	// without idempotence, briefly after an error.
	retryAt atomic.Int64
	warned  atomic.Bool // the refill's failure is logged once until it recovers

	mu      sync.Mutex
	pending map[int64]*pairing // not yet durable, never rotated out
	cache   map[int64]int64    // client id → backend id; -1: unpaired (backendPlain)
	prev    map[int64]int64    // the generation before cache
}

// pairing is a pairing whose durable write is under way.
type pairing struct {
	up   int64 // -1 while a lazy pairing waits for the pool
	done chan struct{}
	err  error // set before done closes
}

const (
	backendUnknown int32 = iota
	backendIdempotent
	backendPlain
)

const (
	prefixUpstreamPID = "idem/u/"
	// pairWait bounds how long InitProducerId waits for the pool before
	// answering COORDINATOR_LOAD_IN_PROGRESS; lazyPairWait how long a first
	// batch waits for it before being answered a retriable error.
	pairWait     = 200 * time.Millisecond
	lazyPairWait = time.Second
	// refillBackoff spaces refills after the backend failed one.
	refillBackoff = 500 * time.Millisecond
)

// errNoUpstreamID: the backend has idempotence but eosproxy holds none of
// its producer ids at the moment; the client must retry.
var errNoUpstreamID = errors.New("no producer id of the backend's at hand yet")

func upstreamPIDKey(pid int64) []byte {
	return binary.BigEndian.AppendUint64([]byte(prefixUpstreamPID), uint64(pid))
}

// A pairing's value: the backend id and when the pairing was made (unix
// ms). Values of 8 bytes (the backend id only) come from versions that
// stored pairings with a TTL counted from creation.
func pairingValue(up, createdMs int64) []byte {
	return binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, uint64(up)), uint64(createdMs))
}

func parsePairing(v []byte) (up, createdMs int64, ok bool) {
	switch len(v) {
	case 8:
		return int64(binary.BigEndian.Uint64(v)), 0, true
	case 16:
		return int64(binary.BigEndian.Uint64(v)), int64(binary.BigEndian.Uint64(v[8:])), true
	}
	return 0, 0, false
}

func newUpstreamIDs(db *store.DB, init func(context.Context) (int64, int16, error), supported func(context.Context) (bool, error),
	inUse func() map[int64]struct{}, expiration time.Duration, log zerolog.Logger) *upstreamIDs {
	u := &upstreamIDs{db: db, init: init, supported: supported, inUse: inUse, expiration: expiration, log: log, now: time.Now,
		cache: map[int64]int64{}, pending: map[int64]*pairing{},
		pool: make(chan int64, 32), stop: make(chan struct{})}
	u.put = func(pid int64, val []byte) error { return db.Put(upstreamPIDKey(pid), val) }
	return u
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
			if at := u.retryAt.Load(); at != 0 && u.now().UnixMilli() < at {
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
			if err != nil {
				u.failed(ctx, err)
				cancel()
				return
			}
			cancel()
			select {
			case <-u.stop:
				return
			default:
			}
			u.mode.Store(backendIdempotent)
			u.retryAt.Store(0)
			if u.warned.Swap(false) {
				u.log.Info().Msg("the backend gives eosproxy producer ids again")
			}
			u.pool <- up
		}
	}()
}

// failed classifies a refill's error: a backend that does not serve
// InitProducerId has no idempotence (asked again in a minute); any other
// failure is passing and the pool is refilled again soon, clients being
// asked to retry meanwhile.
func (u *upstreamIDs) failed(ctx context.Context, err error) {
	ok, serr := false, errors.New("not known")
	if u.supported != nil {
		ok, serr = u.supported(ctx)
	}
	if serr == nil && !ok {
		u.retryAt.Store(u.now().Add(time.Minute).UnixMilli())
		if u.mode.Swap(backendPlain) != backendPlain {
			u.log.Info().Err(err).Msg("the backend gives eosproxy no producer id: idempotent batches are forwarded without producer fields")
		}
		return
	}
	if serr == nil {
		u.mode.Store(backendIdempotent)
	}
	u.retryAt.Store(u.now().Add(refillBackoff).UnixMilli())
	if !u.warned.Swap(true) {
		u.log.Warn().Err(err).Msg("the backend gives eosproxy no producer id for now: idempotent clients are asked to retry until it does")
	}
}

// take returns a backend producer id from the pool, waiting up to wait
// while a refill can still bring one.
func (u *upstreamIDs) take(ctx context.Context, wait time.Duration) (int64, bool) {
	defer u.refill()
	select {
	case up := <-u.pool:
		return up, true
	default:
	}
	u.refill()
	if u.mode.Load() == backendPlain {
		return -1, false
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case up := <-u.pool:
		return up, true
	case <-t.C:
	case <-ctx.Done():
	}
	return -1, false
}

// pair gives the client's new id a backend producer id from the pool and
// starts the pairing's durable write, without waiting for it: the first
// batch waits for it instead (lookup), which keeps InitProducerId fast
// (a client killed off with eosproxy while its InitProducerId is pending
// fails its buffered records). It fails with errNoUpstreamID when the
// backend has idempotence and the pool stays empty.
func (u *upstreamIDs) pair(ctx context.Context, pid int64) error {
	up, ok := u.take(ctx, pairWait)
	if !ok {
		if u.mode.Load() == backendPlain {
			return nil
		}
		return errNoUpstreamID
	}
	pw := &pairing{up: up, done: make(chan struct{})}
	u.mu.Lock()
	u.pending[pid] = pw
	u.mu.Unlock()
	go u.store(pid, pw)
	return nil
}

// store writes a pending pairing durably and, once it is, moves it to the
// cache. A failed write stays pending with its error, for lookup to retry.
func (u *upstreamIDs) store(pid int64, pw *pairing) {
	err := u.put(pid, pairingValue(pw.up, u.now().UnixMilli()))
	if err != nil {
		err = fmt.Errorf("store the backend's producer id %d paired with producer %d: %w", pw.up, pid, err)
		u.log.Warn().Err(err).Msg("pairing not durable; the producer's first batch retries the write")
	}
	u.mu.Lock()
	pw.err = err
	if err == nil && u.pending[pid] == pw {
		delete(u.pending, pid)
		u.rememberLocked(pid, pw.up)
	}
	u.mu.Unlock()
	close(pw.done)
}

// rememberLocked caches a durable pairing. The cache keeps two generations
// of up to 100,000 entries: many short-lived producers cost bounded memory.
func (u *upstreamIDs) rememberLocked(pid, up int64) {
	if len(u.cache) >= 100_000 {
		u.prev, u.cache = u.cache, map[int64]int64{}
	}
	u.cache[pid] = up
}

// lookup returns the backend's producer id paired with the client's, for a
// batch about to be forwarded: the pairing is durable when it returns. On a
// backend with idempotence it never returns unpaired; it fails (the client
// is to retry) while no pairing can be made durable.
func (u *upstreamIDs) lookup(ctx context.Context, pid int64) (int64, bool, error) {
	for {
		u.mu.Lock()
		if pw := u.pending[pid]; pw != nil {
			u.mu.Unlock()
			if err := u.awaitPending(ctx, pid, pw); err != nil {
				return 0, false, err
			}
			continue
		}
		up, ok := u.cache[pid]
		if !ok {
			up, ok = u.prev[pid]
		}
		u.mu.Unlock()
		if ok && (up >= 0 || u.mode.Load() == backendPlain) {
			return up, up >= 0, nil
		}
		v, err := u.db.Get(upstreamPIDKey(pid))
		if err != nil {
			return 0, false, fmt.Errorf("read the backend producer id of producer %d: %w", pid, err)
		}
		u.mu.Lock()
		if u.pending[pid] != nil {
			u.mu.Unlock()
			continue
		}
		if up, _, ok := parsePairing(v); ok {
			u.rememberLocked(pid, up)
			u.mu.Unlock()
			return up, true, nil
		}
		if u.mode.Load() == backendPlain {
			u.rememberLocked(pid, -1)
			u.mu.Unlock()
			return -1, false, nil
		}
		// No pairing: no batch of this producer went out under one (a
		// pairing is durable before its first batch), because the write
		// started at InitProducerId was lost in a crash, the pool was
		// empty then, or the backend had no idempotence. Pair it now,
		// durably, before its batch goes out.
		pw := &pairing{up: -1, done: make(chan struct{})}
		u.pending[pid] = pw
		u.mu.Unlock()
		return u.pairNow(ctx, pid, pw)
	}
}

// awaitPending waits for a pending pairing's write and retries it if it
// failed.
func (u *upstreamIDs) awaitPending(ctx context.Context, pid int64, pw *pairing) error {
	select {
	case <-pw.done:
	case <-ctx.Done():
		return fmt.Errorf("wait for the pairing of producer %d to be durable: %w", pid, ctx.Err())
	}
	if pw.err == nil || pw.up < 0 {
		return nil // stored, or a lazy pairing that found no id: look again
	}
	if err := u.put(pid, pairingValue(pw.up, u.now().UnixMilli())); err != nil {
		return fmt.Errorf("store the backend's producer id %d paired with producer %d: %w", pw.up, pid, err)
	}
	u.mu.Lock()
	if u.pending[pid] == pw {
		delete(u.pending, pid)
		u.rememberLocked(pid, pw.up)
	}
	u.mu.Unlock()
	return nil
}

// pairNow makes a pairing for a producer's first batch and stores it before
// returning.
func (u *upstreamIDs) pairNow(ctx context.Context, pid int64, pw *pairing) (int64, bool, error) {
	up, ok := u.take(ctx, lazyPairWait)
	var err error
	if ok {
		if err = u.put(pid, pairingValue(up, u.now().UnixMilli())); err != nil {
			err = fmt.Errorf("store the backend's producer id %d paired with producer %d: %w", up, pid, err)
		}
	} else if u.mode.Load() != backendPlain {
		err = errNoUpstreamID
	}
	u.mu.Lock()
	delete(u.pending, pid)
	if ok && err == nil {
		u.rememberLocked(pid, up)
	}
	pw.err = err
	u.mu.Unlock()
	close(pw.done) // waiters look again
	switch {
	case err != nil:
		return 0, false, err
	case !ok:
		return -1, false, nil // the backend turned out to have no idempotence
	}
	return up, true, nil
}

// expireLoop (started by Client.Start, until close) drops pairings whose
// producers have no state left, once they are older than the producer id
// expiration: a pairing lives as long as its producer's state does, not a
// fixed time from its creation.
func (u *upstreamIDs) expireLoop() {
	every := min(u.expiration/10, time.Minute)
	if every <= 0 {
		every = time.Second
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-u.stop:
			return
		case <-tick.C:
			if err := u.expire(); err != nil {
				u.log.Warn().Err(err).Msg("expire pairings with backend producer ids")
			}
		}
	}
}

func (u *upstreamIDs) expire() error {
	cutoff := u.now().Add(-u.expiration).UnixMilli()
	type old struct {
		pid, up int64
		legacy  bool
	}
	var olds []old
	err := u.db.Scan([]byte(prefixUpstreamPID), func(k, v []byte) error {
		if len(k) != len(prefixUpstreamPID)+8 {
			return nil
		}
		up, created, ok := parsePairing(v)
		if ok && created < cutoff {
			olds = append(olds, old{int64(binary.BigEndian.Uint64(k[len(prefixUpstreamPID):])), up, len(v) == 8})
		}
		return nil
	})
	if err != nil || len(olds) == 0 {
		return err
	}
	// Under mu, so that no lookup hands out a pairing being dropped: a
	// producer looked up now has an entry in the producer table already.
	u.mu.Lock()
	defer u.mu.Unlock()
	var inUse map[int64]struct{}
	if u.inUse != nil {
		inUse = u.inUse()
	}
	if inUse == nil {
		return nil // which producers have state is not known (yet)
	}
	now := u.now().UnixMilli()
	var dropped []int64
	err = u.db.Update(func(txn *store.Txn) error {
		for _, o := range olds {
			if u.pending[o.pid] != nil {
				continue
			}
			if _, live := inUse[o.pid]; live {
				if o.legacy {
					// Stored with a TTL from creation: rewritten without.
					if err := txn.Set(upstreamPIDKey(o.pid), pairingValue(o.up, now)); err != nil {
						return err
					}
				}
				continue
			}
			if err := txn.Delete(upstreamPIDKey(o.pid)); err != nil {
				return err
			}
			dropped = append(dropped, o.pid)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, pid := range dropped {
		delete(u.cache, pid)
		delete(u.prev, pid)
	}
	return nil
}

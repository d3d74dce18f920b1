package upstream

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/rs/zerolog"

	"github.com/eosproxy/eosproxy/store"
)

// fakeIDs is a backend's InitProducerId for upstreamIDs: ids from 1000 on,
// or err while failing is set.
type fakeIDs struct {
	next      atomic.Int64
	failing   atomic.Bool
	supported bool
	calls     atomic.Int64
}

func (f *fakeIDs) init(context.Context) (int64, int16, error) {
	f.calls.Add(1)
	if f.failing.Load() {
		return 0, 0, errors.New("backend InitProducerId failed")
	}
	return 1000 + f.next.Add(1), 0, nil
}

func (f *fakeIDs) serves(context.Context) (bool, error) { return f.supported, nil }

// testClock is a settable clock for the refill back-off and the expiry.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newTestIDs(t *testing.T, db *store.DB, f *fakeIDs, inUse func() map[int64]struct{}) *upstreamIDs {
	t.Helper()
	u := newUpstreamIDs(db, f.init, f.serves, inUse, 24*time.Hour, zerolog.New(zerolog.NewTestWriter(t)))
	t.Cleanup(u.close)
	return u
}

func memDB(t *testing.T) *store.DB {
	t.Helper()
	db, err := store.OpenInMemory(zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// The pairing made at InitProducerId is written in the background, but the
// producer's first batch is not forwarded before it is durable; and if
// eosproxy dies before the write, the restarted eosproxy pairs the producer
// afresh rather than forwarding its batches without producer fields (issue
// 9, item 5: before, the lost pairing left the producer without the
// backend's duplicate check for life).
func TestPairingDurableBeforeFirstBatch(t *testing.T) {
	db := memDB(t)
	f := &fakeIDs{supported: true}
	u := newTestIDs(t, db, f, nil)
	stored := make(chan struct{})
	u.put = func(int64, []byte) error { <-stored; return errors.New("eosproxy was killed before the write") }
	defer close(stored)

	ctx := ctxFor(t)
	if err := u.pair(ctx, 7); err != nil {
		t.Fatalf("pair: %v", err)
	}
	// The write is held: the first batch must not go out.
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if up, ok, err := u.lookup(cancelled, 7); err == nil {
		t.Fatalf("lookup before the pairing is durable = %d, %v: the batch would go out under a pairing a crash can lose", up, ok)
	}

	// Killed now: the pairing never reached the disk. The next eosproxy
	// on the same data pairs the producer before its first batch.
	u2 := newTestIDs(t, db, f, nil)
	u2.refill()
	up, ok, err := u2.lookup(ctx, 7)
	if err != nil || !ok {
		t.Fatalf("lookup after the crash = %d, %v, %v: want a durable pairing", up, ok, err)
	}
	v, err := db.Get(upstreamPIDKey(7))
	if err != nil {
		t.Fatal(err)
	}
	if got, _, ok := parsePairing(v); !ok || got != up {
		t.Fatalf("stored pairing %x, want backend id %d", v, up)
	}
	// And a third instance finds the same pairing.
	u3 := newTestIDs(t, db, f, nil)
	if up3, ok, err := u3.lookup(ctx, 7); err != nil || !ok || up3 != up {
		t.Fatalf("lookup after a restart = %d, %v, %v; want %d", up3, ok, err, up)
	}
}

// A pairing written in the background that succeeded is found at once by
// the first batch, and is durable.
func TestPairingWrittenAtInitProducerID(t *testing.T) {
	db := memDB(t)
	f := &fakeIDs{supported: true}
	u := newTestIDs(t, db, f, nil)
	ctx := ctxFor(t)
	u.refill()
	if err := u.pair(ctx, 3); err != nil {
		t.Fatal(err)
	}
	up, ok, err := u.lookup(ctx, 3)
	if err != nil || !ok {
		t.Fatalf("lookup = %d, %v, %v", up, ok, err)
	}
	if v, _ := db.Get(upstreamPIDKey(3)); len(v) != 16 {
		t.Fatalf("pairing not durable when lookup returned: %x", v)
	}
}

// With the backend failing InitProducerId (or the pool empty), the client
// is asked to retry instead of being left unpaired; once the backend gives
// ids again it is paired. A backend without idempotence (no InitProducerId
// at all) leaves clients unpaired, as before.
func TestPairingEmptyPoolAsksToRetry(t *testing.T) {
	db := memDB(t)
	f := &fakeIDs{supported: true}
	f.failing.Store(true)
	u := newTestIDs(t, db, f, nil)
	clock := &testClock{t: time.Now()}
	u.now = clock.now
	ctx := ctxFor(t)
	if err := u.pair(ctx, 1); !errors.Is(err, errNoUpstreamID) {
		t.Fatalf("pair with the backend failing: %v, want errNoUpstreamID", err)
	}
	if _, _, err := u.lookup(ctx, 1); !errors.Is(err, errNoUpstreamID) {
		t.Fatalf("first batch with the backend failing: %v, want errNoUpstreamID", err)
	}
	if u.mode.Load() != backendIdempotent {
		t.Fatalf("mode %d, want backendIdempotent", u.mode.Load())
	}
	f.failing.Store(false)
	clock.add(refillBackoff)
	if err := u.pair(ctx, 2); err != nil {
		t.Fatalf("pair once the backend gives ids: %v", err)
	}
	for _, pid := range []int64{1, 2} {
		if up, ok, err := u.lookup(ctx, pid); err != nil || !ok {
			t.Fatalf("lookup(%d) = %d, %v, %v: want paired", pid, up, ok, err)
		}
	}

	plain := &fakeIDs{supported: false}
	plain.failing.Store(true)
	up2 := newTestIDs(t, memDB(t), plain, nil)
	up2.refill()
	if err := up2.pair(ctx, 1); err != nil && !errors.Is(err, errNoUpstreamID) {
		t.Fatal(err)
	}
	// The refill has learnt the backend has no idempotence by now (pair
	// waited for it) or learns it on this look-up.
	for up2.mode.Load() != backendPlain {
		if _, _, err := up2.lookup(ctx, 1); err != nil && !errors.Is(err, errNoUpstreamID) {
			t.Fatal(err)
		}
	}
	if err := up2.pair(ctx, 2); err != nil {
		t.Fatalf("pair on a backend without idempotence: %v", err)
	}
	if up, ok, err := up2.lookup(ctx, 2); err != nil || ok {
		t.Fatalf("lookup on a backend without idempotence = %d, %v, %v; want unpaired", up, ok, err)
	}
}

// A pairing lives as long as its producer has state, however old it is,
// and is dropped once the producer's state is gone and it is older than the
// expiration. A pairing stored with a TTL (older versions) is rewritten
// without one while its producer lives.
func TestPairingOutlivesItsAge(t *testing.T) {
	db := memDB(t)
	f := &fakeIDs{supported: true}
	var mu sync.Mutex
	live := map[int64]struct{}{1: {}, 3: {}}
	u := newTestIDs(t, db, f, func() map[int64]struct{} {
		mu.Lock()
		defer mu.Unlock()
		out := map[int64]struct{}{}
		for k := range live {
			out[k] = struct{}{}
		}
		return out
	})
	clock := &testClock{t: time.Now()}
	u.now = clock.now
	ctx := ctxFor(t)
	u.refill()
	for _, pid := range []int64{1, 2} {
		if err := u.pair(ctx, pid); err != nil {
			t.Fatal(err)
		}
		if _, ok, err := u.lookup(ctx, pid); err != nil || !ok {
			t.Fatalf("lookup(%d): %v %v", pid, ok, err)
		}
	}
	// A legacy pairing of producer 3, with a TTL counted from creation.
	if err := db.Update(func(txn *store.Txn) error {
		return txn.SetEntry(badger.NewEntry(upstreamPIDKey(3), []byte{0, 0, 0, 0, 0, 0, 0, 42}).WithTTL(time.Hour))
	}); err != nil {
		t.Fatal(err)
	}

	clock.add(31 * 24 * time.Hour)
	if err := u.expire(); err != nil {
		t.Fatal(err)
	}
	if v, _ := db.Get(upstreamPIDKey(1)); len(v) == 0 {
		t.Fatal("the pairing of a producer with state was dropped for its age")
	}
	if v, _ := db.Get(upstreamPIDKey(2)); len(v) != 0 {
		t.Fatal("the pairing of a producer without state was kept past the expiration")
	}
	err := db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(upstreamPIDKey(3))
		if err != nil {
			return err
		}
		if item.ExpiresAt() != 0 {
			t.Errorf("legacy pairing still expires at %d", item.ExpiresAt())
		}
		v, err := item.ValueCopy(nil)
		if up, _, ok := parsePairing(v); !ok || up != 42 {
			t.Errorf("legacy pairing rewritten as %x", v)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	// Producer 1's state expires: its pairing goes with the next sweep.
	mu.Lock()
	delete(live, 1)
	mu.Unlock()
	if err := u.expire(); err != nil {
		t.Fatal(err)
	}
	if v, _ := db.Get(upstreamPIDKey(1)); len(v) != 0 {
		t.Fatal("pairing kept after its producer's state expired")
	}
	// Coming back, producer 1 is paired afresh before its batch.
	if _, ok, err := u.lookup(ctx, 1); err != nil || !ok {
		t.Fatalf("lookup of a returning producer: %v %v", ok, err)
	}
}

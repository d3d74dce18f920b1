package store

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

// Space watches the room left on the filesystem of the data dir. Badger
// writes its write-ahead log and tables through memory maps of sparse
// files: on a full filesystem a write to such a map is not an error but a
// SIGBUS, and eosproxy dies mid-write (safe, as any crash is, but down
// until there is room again). So eosproxy keeps a reserve: while less
// than it is free, writes that bring data (transactional and idempotent
// batches) are refused, retriably, and what is already taken (its
// commits, aborts and their small writes) still has room to finish.
type Space struct {
	dir     string
	reserve uint64
	log     zerolog.Logger

	// Every batch asks, so the answer is read without a lock; only the
	// caller that looks at the filesystem (at most every spaceEvery)
	// holds mu, which guards free.
	mu    sync.Mutex
	free  func(dir string) (uint64, error)
	next  atomic.Int64               // unix ns from which the last look is stale
	state atomic.Pointer[spaceState] // nil: never looked
}

// spaceState is what the last look found.
type spaceState struct {
	low, known bool
	avail      uint64
}

// spaceEvery is how often Space looks at the filesystem at most: often
// enough that a burst of writes cannot use the reserve up in between.
const spaceEvery = 100 * time.Millisecond

// NewSpace watches dir's filesystem for fewer than reserve free bytes.
func NewSpace(dir string, reserve uint64, log zerolog.Logger) *Space {
	return &Space{dir: dir, reserve: reserve, free: freeBytes, log: log}
}

// SetFree replaces how free bytes are found (tests); the next Low looks.
func (s *Space) SetFree(f func(dir string) (uint64, error)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.free = f
	s.next.Store(0)
}

// Low reports whether fewer than the reserve's bytes are free, and how
// many are. When the system cannot tell, it is not low.
func (s *Space) Low() (low bool, avail uint64) {
	if now := time.Now(); now.UnixNano() >= s.next.Load() && s.mu.TryLock() {
		// Another caller may have looked since: then its look stands.
		if now.UnixNano() >= s.next.Load() {
			s.look()
			s.next.Store(now.Add(spaceEvery).UnixNano())
		}
		s.mu.Unlock()
	}
	st := s.state.Load()
	if st == nil {
		return false, 0
	}
	return st.low, st.avail
}

// look asks the filesystem and logs a change; called with mu held.
func (s *Space) look() {
	prev := s.state.Load()
	if prev == nil {
		prev = &spaceState{}
	}
	n, err := s.free(s.dir)
	if err != nil {
		if prev.known {
			s.log.Warn().Err(err).Str("dir", s.dir).Msg("cannot tell the data dir's free space")
		}
		s.state.Store(&spaceState{})
		return
	}
	low := n < s.reserve
	switch {
	case low && !prev.low:
		s.log.Error().Str("dir", s.dir).Uint64("free_bytes", n).Uint64("reserve_bytes", s.reserve).
			Msg("the data dir's filesystem is almost full: refusing transactional and idempotent batches (KAFKA_STORAGE_ERROR, retried by producers) until there is room")
	case !low && prev.low:
		s.log.Info().Str("dir", s.dir).Uint64("free_bytes", n).Msg("the data dir's filesystem has room again: taking batches")
	}
	s.state.Store(&spaceState{low: low, known: true, avail: n})
}

// Free is the free bytes last seen, and whether the system told them.
func (s *Space) Free() (uint64, bool) {
	s.Low()
	if st := s.state.Load(); st != nil {
		return st.avail, st.known
	}
	return 0, false
}

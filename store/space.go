package store

import (
	"sync"
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
	free    func(dir string) (uint64, error)
	log     zerolog.Logger

	mu    sync.Mutex
	at    time.Time // of the last look; zero: never
	avail uint64
	known bool
	low   bool
}

// spaceEvery is how often Space looks at the filesystem at most: often
// enough that a burst of writes cannot use the reserve up in between.
const spaceEvery = 100 * time.Millisecond

// NewSpace watches dir's filesystem for fewer than reserve free bytes.
func NewSpace(dir string, reserve uint64, log zerolog.Logger) *Space {
	return &Space{dir: dir, reserve: reserve, free: freeBytes, log: log}
}

// SetFree replaces how free bytes are found (tests).
func (s *Space) SetFree(f func(dir string) (uint64, error)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.free, s.at = f, time.Time{}
}

// Low reports whether fewer than the reserve's bytes are free, and how
// many are. When the system cannot tell, it is not low.
func (s *Space) Low() (low bool, avail uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if now := time.Now(); now.Sub(s.at) >= spaceEvery {
		s.at = now
		n, err := s.free(s.dir)
		if err != nil {
			if s.known {
				s.log.Warn().Err(err).Str("dir", s.dir).Msg("cannot tell the data dir's free space")
			}
			s.known, s.low = false, false
			return false, 0
		}
		s.avail, s.known = n, true
		switch low := n < s.reserve; {
		case low && !s.low:
			s.log.Error().Str("dir", s.dir).Uint64("free_bytes", n).Uint64("reserve_bytes", s.reserve).
				Msg("the data dir's filesystem is almost full: refusing transactional and idempotent batches (KAFKA_STORAGE_ERROR, retried by producers) until there is room")
			s.low = true
		case !low && s.low:
			s.log.Info().Str("dir", s.dir).Uint64("free_bytes", n).Msg("the data dir's filesystem has room again: taking batches")
			s.low = false
		}
	}
	return s.low, s.avail
}

// Free is the free bytes last seen, and whether the system told them.
func (s *Space) Free() (uint64, bool) {
	s.Low()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.avail, s.known
}

// The producer id allocator, with its own lock apart from the table's:
// reserving a block of ids may take a round trip to the backend.

package dedup

import (
	"encoding/binary"
	"fmt"
	"sync"
)

// pidAllocator hands out producer ids; pidMu guards it, apart from the
// table's mu: reserving a block may take a round trip to the backend.
type pidAllocator struct {
	pidMu   sync.Mutex
	pidNext int64
	pidTop  int64 // ids below this are reserved on disk
	reserve func(floor int64) (int64, error)
}

// ProducerIDBlock is how many producer ids are reserved at a time.
const ProducerIDBlock = 1000

const pidBlock = ProducerIDBlock

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

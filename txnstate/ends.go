// The partition ends eosproxy knows from its own writes, in this process
// only: a commit decided soon after one takes its forwarding low-water
// offsets from them and needs no ListOffsets round trip. Its own lock
// (endsMu), as deciding and forwarding both use it.

package txnstate

import (
	"encoding/binary"
	"sync"
	"time"
)

// knownEnds is, per partition, an offset the backend's log is known to
// reach (the end of eosproxy's last write there), in this process only.
type knownEnds struct {
	endsMu sync.Mutex
	ends   map[TopicPartition]knownEnd
}

// knownEnd is an offset a partition is known to reach, and when it was
// learnt (unix ms).
type knownEnd struct{ offset, atMs int64 }

// knownEndFresh is how long a known end serves as a commit's low-water
// offset.
const knownEndFresh = 2 * time.Second

// knownLowWater gives, for a commit decision, the forwarding low-water
// offsets eosproxy already knows for the transaction's partitions: the end
// of its own last write there. The partition's real end can only be at or
// past it, and any offset at or before where the commit's first batch will
// land is a valid starting point for finding it after a crash; a commit then
// needs no ListOffsets round trip and no extra write before forwarding.
//
// Not for a partition an earlier commit of the id is still to write to:
// its batches land past that end, and the look-up would take one of them
// with the same content (a copier keeping its input's timestamps) for this
// commit's and skip writing it. Such a partition gets its low-water offset
// when forwarding starts, after the earlier commit (jobs run in order).
// Called with e.mu held.
//
// Nor is a known end older than knownEndFresh used: other producers may have
// written much since, and a look-up from it would read all of that; the
// partition's end read when forwarding starts bounds it to what arrived
// during the commit.
func (c *Coordinator) knownLowWater(e *entry, gen uint64, t *Txn) []kv {
	e.jmu.Lock()
	earlier := map[TopicPartition]bool{}
	for _, j := range e.jobs {
		if j.commit {
			for tp := range j.txn.Partitions {
				earlier[tp] = true
			}
		}
	}
	e.jmu.Unlock()
	now := c.nowMs()
	c.endsMu.Lock()
	defer c.endsMu.Unlock()
	var out []kv
	for tp := range t.Partitions {
		if k, ok := c.ends[tp]; ok && !earlier[tp] && now-k.atMs <= knownEndFresh.Milliseconds() {
			out = append(out, kv{genTPKey(prefixLow, e.id, gen, tp), binary.BigEndian.AppendUint64(nil, uint64(k.offset))})
		}
	}
	return out
}

// noteEnd records that the backend's partition tp reaches at least end.
func (c *Coordinator) noteEnd(tp TopicPartition, end int64) {
	now := c.nowMs()
	c.endsMu.Lock()
	if c.ends == nil {
		c.ends = map[TopicPartition]knownEnd{}
	}
	if k, ok := c.ends[tp]; !ok || end >= k.offset {
		c.ends[tp] = knownEnd{end, now}
	}
	c.endsMu.Unlock()
}

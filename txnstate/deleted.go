// Partitions deleted under a decided commit. Kafka's coordinator skips the
// markers of a partition whose topic is gone (its data went with it); the
// same here: the commit's batches for such a partition are dropped, and so
// are its group offsets (Kafka's OffsetCommit refuses an unknown topic),
// and the rest of the commit goes on, instead of retrying forever and
// holding up the transactional id.

package txnstate

import (
	"context"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/eosproxy/eosproxy/store"
)

// deletedGrace is how long the backend must go on saying a partition does
// not exist before a commit's batches for it are dropped: a broker may
// lag behind a topic's creation for a moment, never this long.
const deletedGrace = 3 * time.Second

// missingSince remembers when each partition was first reported missing,
// across attempts and commits; a partition seen again is forgotten.
type missingSince struct {
	mu    sync.Mutex
	since map[TopicPartition]time.Time
}

// note records tp as missing (now) or present, and says since when it has
// been missing.
func (m *missingSince) note(tp TopicPartition, missing bool, now time.Time) time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !missing {
		delete(m.since, tp)
		return time.Time{}
	}
	if m.since == nil {
		m.since = map[TopicPartition]time.Time{}
	}
	t, ok := m.since[tp]
	if !ok {
		m.since[tp] = now
		t = now
	}
	return t
}

// dropDeleted drops the remaining batches of every partition the backend
// has reported missing for deletedGrace, each in one badger write with its
// low-water offset. Asked only after an attempt failed: a look-up that
// fails changes nothing.
func (f *forwarding) dropDeleted(ctx context.Context) error {
	tps := f.sorted()
	if len(tps) == 0 {
		return nil
	}
	missing, err := f.c.opt.Backend.MissingPartitions(ctx, tps)
	if err != nil {
		f.log.Debug().Err(err).Msg("cannot ask the backend which partitions it has")
		return nil
	}
	now := time.Now()
	for _, tp := range tps {
		since := f.c.missing.note(tp, missing[tp], now)
		if !missing[tp] || now.Sub(since) < deletedGrace {
			continue
		}
		n, err := f.dropPartition(tp)
		if err != nil {
			return err
		}
		f.log.Warn().Str("topic", tp.Topic).Int32("partition", tp.Partition).Int("batches", n).
			Dur("missing_for", now.Sub(since)).
			Msg("a committed transaction's partition is gone from the backend (topic deleted): its batches are dropped, as Kafka skips its markers")
	}
	return nil
}

// dropPartition deletes tp's buffered batches of the generation and its
// low-water offset, and forgets the partition.
func (f *forwarding) dropPartition(tp TopicPartition) (int, error) {
	keys, refs, err := f.c.batchKeysUnder(genTPKey(prefixBatch, f.id, f.gen, tp))
	if err == nil {
		keys = append(keys, genTPKey(prefixLow, f.id, f.gen, tp))
		err = f.c.db.Update(func(txn *store.Txn) error {
			for _, k := range keys {
				if err := txn.Delete(k); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err != nil {
		return 0, err
	}
	for _, r := range refs {
		f.c.opt.Spool.Release(r)
	}
	delete(f.remaining, tp)
	delete(f.low, tp)
	delete(f.seqs, tp)
	return len(keys) - 1, nil
}

// withoutDeleted returns g without the offsets of partitions the backend has
// reported missing for deletedGrace, logging each one dropped. Asked only
// after an attempt failed.
func (c *Coordinator) withoutDeleted(ctx context.Context, group string, g GroupOffsets, log zerolog.Logger) GroupOffsets {
	tps := slices.SortedFunc(maps.Keys(g.Offsets), compareTP)
	missing, err := c.opt.Backend.MissingPartitions(ctx, tps)
	if err != nil {
		log.Debug().Err(err).Msg("cannot ask the backend which partitions it has")
		return g
	}
	now := time.Now()
	out := g
	for _, tp := range tps {
		since := c.missing.note(tp, missing[tp], now)
		if !missing[tp] || now.Sub(since) < deletedGrace {
			continue
		}
		if len(out.Offsets) == len(g.Offsets) {
			out.Offsets = maps.Clone(g.Offsets) // the job's Txn is shared
		}
		delete(out.Offsets, tp)
		log.Warn().Str("group", group).Str("topic", tp.Topic).Int32("partition", tp.Partition).
			Int64("offset", g.Offsets[tp].Offset).Dur("missing_for", now.Sub(since)).
			Msg("a committed transaction's group offset is for a partition gone from the backend (topic deleted): dropped")
	}
	return out
}

package txnstate

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/dgraph-io/badger/v4"
	"github.com/rs/zerolog"

	"github.com/eosproxy/eosproxy/protocol"
)

// roundBytes bounds the data one forwarding round holds in memory.
const roundBytes = 16 << 20

// forward writes a committed transaction's buffered batches to the backend,
// exactly once and in order per partition, then its held group offsets.
//
// Per partition one batch is in flight at a time, and a batch's buffered
// copy is deleted, together with the partition's low-water offset moving past
// it, in one badger write once the backend acknowledged it. So whatever
// happens — an error after the write, a dropped connection, eosproxy killed —
// only the first remaining batch of a partition can be in the backend
// without eosproxy knowing, and it can only be there at or after the
// low-water offset: before resending it, the partition is read from there
// for the batch's content digest (the same check the idempotent path uses).
// The low-water offsets are taken before the first batch is sent.
func (c *Coordinator) forward(ctx context.Context, t *Txn, log zerolog.Logger) error {
	id := t.TransactionalID
	remaining, low, err := c.forwardState(id)
	if err != nil {
		return err
	}
	// A partition with a low-water offset from before this call may have
	// had its first remaining batch sent by an earlier attempt.
	unverified := map[TopicPartition]bool{}
	for tp := range low {
		unverified[tp] = true
	}
	var need []TopicPartition
	for tp := range remaining {
		if _, ok := low[tp]; !ok {
			need = append(need, tp)
		}
	}
	if len(need) > 0 {
		offs, err := c.opt.Backend.EndOffsets(ctx, need)
		if err != nil {
			return fmt.Errorf("end offsets before forwarding: %w", err)
		}
		err = c.db.Update(func(txn *badger.Txn) error {
			for _, tp := range need {
				o, ok := offs[tp]
				if !ok {
					return fmt.Errorf("no end offset for %s/%d", tp.Topic, tp.Partition)
				}
				low[tp] = o
				if err := txn.Set(tpKey(prefixLow, id, tp), binary.BigEndian.AppendUint64(nil, uint64(o))); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("persist forwarding low-water offsets: %w", err)
		}
	}
	cursor := map[TopicPartition]uint64{}
	for len(remaining) > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		round, keys, err := c.nextRound(id, remaining, cursor)
		if err != nil {
			return err
		}
		acked := map[TopicPartition]int64{}
		for tp, b := range round {
			if !unverified[tp] {
				continue
			}
			off, found, err := c.opt.Backend.FindBatch(ctx, tp, low[tp], protocol.Digest(b, len(b)))
			if err != nil {
				return fmt.Errorf("look for %s/%d's batch in the backend: %w", tp.Topic, tp.Partition, err)
			}
			unverified[tp] = false
			if found {
				log.Info().Str("topic", tp.Topic).Int32("partition", tp.Partition).Int64("offset", off).
					Msg("batch of an interrupted commit found in the backend; not resending it")
				acked[tp] = off + int64(protocol.BatchLastOffsetDelta(b)) + 1
				delete(round, tp)
			}
		}
		var failures []error
		if len(round) > 0 {
			results := c.opt.Backend.Produce(ctx, round)
			for tp, b := range round {
				res, ok := results[tp]
				switch {
				case !ok:
					unverified[tp] = true
					failures = append(failures, fmt.Errorf("%s/%d: no answer", tp.Topic, tp.Partition))
				case res.Err == nil:
					acked[tp] = res.BaseOffset + int64(protocol.BatchLastOffsetDelta(b)) + 1
				case res.Ambiguous:
					unverified[tp] = true
					failures = append(failures, fmt.Errorf("%s/%d: %w", tp.Topic, tp.Partition, res.Err))
				default:
					failures = append(failures, fmt.Errorf("%s/%d: %w", tp.Topic, tp.Partition, res.Err))
				}
			}
		}
		if len(acked) > 0 {
			err := c.db.Update(func(txn *badger.Txn) error {
				for tp, next := range acked {
					if err := txn.Delete(keys[tp]); err != nil {
						return err
					}
					if err := txn.Set(tpKey(prefixLow, id, tp), binary.BigEndian.AppendUint64(nil, uint64(next))); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				// The batches are in the backend; the next attempt finds them.
				for tp := range acked {
					unverified[tp] = true
				}
				return fmt.Errorf("record forwarding progress: %w", err)
			}
			for tp, next := range acked {
				low[tp] = next
				cursor[tp] = binary.BigEndian.Uint64(keys[tp][len(keys[tp])-8:]) + 1
				if remaining[tp]--; remaining[tp] == 0 {
					delete(remaining, tp)
				}
			}
		}
		if len(failures) > 0 {
			return fmt.Errorf("forward batches: %w", errors.Join(failures...))
		}
	}
	for group, g := range t.PendingOffsets {
		if len(g.Offsets) == 0 {
			continue
		}
		if err := c.opt.Backend.CommitOffsets(ctx, group, g); err != nil {
			if errors.Is(err, ErrPermanent) {
				log.Error().Err(err).Str("group", group).Msg("transaction committed but its group offsets could not be; the group will re-read from its last committed offsets")
				continue
			}
			return fmt.Errorf("commit offsets of group %q: %w", group, err)
		}
	}
	return c.deletePrefix(idKey(prefixLow, id))
}

// forwardState counts id's buffered batches per partition and loads the
// forwarding low-water offsets of an earlier attempt.
func (c *Coordinator) forwardState(id string) (map[TopicPartition]int, map[TopicPartition]int64, error) {
	remaining := map[TopicPartition]int{}
	low := map[TopicPartition]int64{}
	err := c.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: idKey(prefixBatch, id)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			_, tp, _, err := parseTPKey(prefixBatch, it.Item().Key())
			if err != nil {
				return err
			}
			remaining[tp]++
		}
		it2 := txn.NewIterator(badger.IteratorOptions{Prefix: idKey(prefixLow, id), PrefetchValues: true})
		defer it2.Close()
		for it2.Rewind(); it2.Valid(); it2.Next() {
			_, tp, _, err := parseTPKey(prefixLow, it2.Item().Key())
			if err != nil {
				return err
			}
			v, err := it2.Item().ValueCopy(nil)
			if err != nil || len(v) != 8 {
				return fmt.Errorf("corrupt low-water offset of %s/%d", tp.Topic, tp.Partition)
			}
			low[tp] = int64(binary.BigEndian.Uint64(v))
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("read buffered transaction %q: %w", id, err)
	}
	return remaining, low, nil
}

// nextRound reads the next buffered batch of each partition with data left,
// up to roundBytes, seeking past what earlier rounds forwarded.
func (c *Coordinator) nextRound(id string, remaining map[TopicPartition]int, cursor map[TopicPartition]uint64) (map[TopicPartition][]byte, map[TopicPartition][]byte, error) {
	tps := make([]TopicPartition, 0, len(remaining))
	for tp := range remaining {
		tps = append(tps, tp)
	}
	slices.SortFunc(tps, compareTP)
	round := map[TopicPartition][]byte{}
	keys := map[TopicPartition][]byte{}
	size := 0
	err := c.db.View(func(txn *badger.Txn) error {
		for _, tp := range tps {
			if size >= roundBytes {
				break
			}
			prefix := tpKey(prefixBatch, id, tp)
			it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
			it.Seek(batchKey(id, tp, cursor[tp]))
			if !it.Valid() {
				it.Close()
				return fmt.Errorf("buffered batch of %s/%d missing", tp.Topic, tp.Partition)
			}
			item := it.Item()
			v, err := item.ValueCopy(nil)
			if err == nil {
				round[tp], keys[tp] = v, item.KeyCopy(nil)
				size += len(v)
			}
			it.Close()
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("read buffered transaction %q: %w", id, err)
	}
	return round, keys, nil
}

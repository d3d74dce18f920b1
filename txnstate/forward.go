package txnstate

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/rs/zerolog"

	"github.com/eosproxy/eosproxy/protocol"
	"github.com/eosproxy/eosproxy/txnstate/spool"
)

// roundBytes bounds the data one forwarding round holds in memory;
// persistEvery is how much forwarded data may be recorded only in memory.
const (
	roundBytes   = 16 << 20
	persistEvery = 64 << 20
)

// forward writes a committed transaction's buffered batches to the backend,
// exactly once and in order per partition, then its held group offsets.
//
// Per partition one batch is in flight at a time, and a batch is sent only
// once the backend acknowledged the one before it: the batches of a
// partition in the backend are always a prefix of its buffered ones. Before
// the first batch goes out, each partition's end offset is recorded (the
// low-water offset): everything eosproxy writes lands after it. Progress —
// acknowledged batches deleted, low-water offsets moved past them — is made
// durable only every persistEvery bytes and when an attempt fails; after a
// crash or an unclear answer (a timeout, a dropped connection) the next
// attempt reads the partition from its low-water offset and skips, in order,
// every remaining batch it finds there by content digest (the look-up the
// idempotent path uses), then resends from the first one missing.
func (c *Coordinator) forward(ctx context.Context, t *Txn, gen uint64, firstAttempt bool, log zerolog.Logger) (err error) {
	id := t.TransactionalID
	remaining, low, err := c.forwardState(id, gen)
	if err != nil {
		return err
	}
	// A partition with a low-water offset from an earlier attempt may have
	// had batches sent by it; one recorded with the decision has not.
	unverified := map[TopicPartition]bool{}
	for tp := range low {
		unverified[tp] = !firstAttempt
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
				c.noteEnd(tp, o)
				if err := txn.Set(genTPKey(prefixLow, id, gen, tp), binary.BigEndian.AppendUint64(nil, uint64(o))); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("persist forwarding low-water offsets: %w", err)
		}
	}

	// One read snapshot and one iterator per partition for the whole
	// attempt: the buffered batches do not change while a commit runs.
	rd := c.db.NewTransaction(false)
	defer rd.Discard()
	its := map[TopicPartition]*badger.Iterator{}
	defer func() {
		for _, it := range its {
			it.Close()
		}
	}()
	type buffered struct {
		key, batch []byte
		ref        spool.Ref
	}
	next := func(tp TopicPartition) (buffered, error) {
		it := its[tp]
		if it == nil {
			it = rd.NewIterator(badger.IteratorOptions{Prefix: genTPKey(prefixBatch, id, gen, tp)})
			it.Rewind()
			its[tp] = it
		}
		if !it.Valid() {
			return buffered{}, fmt.Errorf("buffered batch of %s/%d missing", tp.Topic, tp.Partition)
		}
		v, err := it.Item().ValueCopy(nil)
		var ref spool.Ref
		if err == nil {
			ref, err = spool.UnmarshalRef(v)
		}
		var batch []byte
		if err == nil {
			batch, err = c.opt.Spool.Read(ref)
		}
		if err != nil {
			return buffered{}, fmt.Errorf("read buffered batch of %s/%d: %w", tp.Topic, tp.Partition, err)
		}
		b := buffered{it.Item().KeyCopy(nil), batch, ref}
		it.Next()
		return b, nil
	}

	// Forwarded but not yet recorded as such.
	var done [][]byte
	var doneRefs []spool.Ref
	doneBytes := 0
	persist := func() error {
		if len(done) == 0 {
			return nil
		}

		wb := c.db.NewWriteBatch()
		defer wb.Cancel()
		for _, k := range done {
			if err := wb.Delete(k); err != nil {
				return err
			}
		}
		for tp, o := range low {
			if err := wb.Set(genTPKey(prefixLow, id, gen, tp), binary.BigEndian.AppendUint64(nil, uint64(o))); err != nil {
				return err
			}
		}
		if err := wb.Flush(); err != nil {
			return fmt.Errorf("record forwarding progress: %w", err)
		}
		for _, r := range doneRefs {
			c.opt.Spool.Release(r)
		}
		done, doneRefs, doneBytes = nil, nil, 0
		return nil
	}
	defer func() {
		if err != nil {
			// Spare the next attempt the look-ups for what is known.
			if perr := persist(); perr != nil {
				log.Warn().Err(perr).Msg("cannot record forwarding progress")
			}
		}
	}()
	acked := func(tp TopicPartition, b buffered, base int64) {
		low[tp] = base + int64(protocol.BatchLastOffsetDelta(b.batch)) + 1
		c.noteEnd(tp, low[tp])
		done = append(done, b.key)
		doneRefs = append(doneRefs, b.ref)
		doneBytes += len(b.batch)
		if remaining[tp]--; remaining[tp] == 0 {
			delete(remaining, tp)
		}
	}

	current := map[TopicPartition]buffered{}
	start, rounds, batches, found := time.Now(), 0, 0, 0
	for len(remaining) > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		rounds++
		tps := make([]TopicPartition, 0, len(remaining))
		for tp := range remaining {
			tps = append(tps, tp)
		}
		slices.SortFunc(tps, compareTP)
		round := map[TopicPartition][]byte{}
		size := 0
		for _, tp := range tps {
			if size >= roundBytes {
				break
			}
			b, ok := current[tp]
			if !ok {
				if b, err = next(tp); err != nil {
					return err
				}
				current[tp] = b
			}
			// Skip the batches an earlier attempt wrote (a prefix).
			for unverified[tp] {
				off, hit, err := c.opt.Backend.FindBatch(ctx, tp, low[tp], protocol.Digest(b.batch, len(b.batch)))
				if err != nil {
					return fmt.Errorf("look for %s/%d's batch in the backend: %w", tp.Topic, tp.Partition, err)
				}
				if !hit {
					unverified[tp] = false
					break
				}
				found++
				log.Info().Str("topic", tp.Topic).Int32("partition", tp.Partition).Int64("offset", off).
					Msg("batch of an interrupted commit found in the backend; not resending it")
				acked(tp, b, off)
				delete(current, tp)
				if remaining[tp] == 0 {
					break
				}
				if b, err = next(tp); err != nil {
					return err
				}
				current[tp] = b
			}
			if remaining[tp] > 0 {
				round[tp] = b.batch
				size += len(b.batch)
			}
		}
		if len(round) == 0 {
			continue
		}
		batches += len(round)
		results := c.opt.Backend.Produce(ctx, round)
		var failures []error
		for tp := range round {
			res, ok := results[tp]
			switch {
			case !ok:
				unverified[tp] = true
				failures = append(failures, fmt.Errorf("%s/%d: no answer", tp.Topic, tp.Partition))
			case res.Err == nil:
				acked(tp, current[tp], res.BaseOffset)
				delete(current, tp)
			case res.Ambiguous:
				unverified[tp] = true
				failures = append(failures, fmt.Errorf("%s/%d: %w", tp.Topic, tp.Partition, res.Err))
			default:
				failures = append(failures, fmt.Errorf("%s/%d: %w", tp.Topic, tp.Partition, res.Err))
			}
		}
		if len(failures) > 0 {
			return fmt.Errorf("forward batches: %w", errors.Join(failures...))
		}
		if doneBytes >= persistEvery {
			if err := persist(); err != nil {
				return err
			}
		}
	}
	log.Debug().Int("rounds", rounds).Int("batches", batches).Int("found", found).Dur("took", time.Since(start)).
		Msg("transaction data forwarded")
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
	return nil
}

// forwardState counts id's buffered batches per partition and loads the
// forwarding low-water offsets of an earlier attempt.
func (c *Coordinator) forwardState(id string, gen uint64) (map[TopicPartition]int, map[TopicPartition]int64, error) {
	remaining := map[TopicPartition]int{}
	low := map[TopicPartition]int64{}
	err := c.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: genKey(prefixBatch, id, gen)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			_, _, tp, _, err := parseGenTPKey(prefixBatch, it.Item().Key())
			if err != nil {
				return err
			}
			remaining[tp]++
		}
		it2 := txn.NewIterator(badger.IteratorOptions{Prefix: genKey(prefixLow, id, gen), PrefetchValues: true})
		defer it2.Close()
		for it2.Rewind(); it2.Valid(); it2.Next() {
			_, _, tp, _, err := parseGenTPKey(prefixLow, it2.Item().Key())
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

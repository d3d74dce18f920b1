// Forwarding one decided commit: its buffered batches to the backend exactly
// once and in order per partition, then its group offsets. Here: one
// attempt's state, reading the batches back, the look-up of what an earlier
// attempt wrote, and the durable record of progress; send.go sends.

package txnstate

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/rs/zerolog"

	"github.com/eosproxy/eosproxy/protocol"
	"github.com/eosproxy/eosproxy/store"
	"github.com/eosproxy/eosproxy/txnstate/spool"
)

// persistEvery is how much forwarded data may be recorded only in memory.
const (
	persistEvery = 64 << 20
	// persistBatches bounds the batches one progress write deletes, so
	// that it fits in one badger transaction (tens of thousands of keys).
	persistBatches = 1000
)

// lowWater is a partition's forwarding position: the offset from which the
// backend is searched for the generation's first remaining batch, and, in
// the idempotent mode, that batch's sequence number.
func marshalLow(offset int64, seq int32) []byte {
	return binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint64(nil, uint64(offset)), uint32(seq))
}

func unmarshalLow(v []byte) (int64, int32, error) {
	switch len(v) {
	case 8: // recorded with the decision: nothing sent yet, sequence 0
		return int64(binary.BigEndian.Uint64(v)), 0, nil
	case 12:
		return int64(binary.BigEndian.Uint64(v)), int32(binary.BigEndian.Uint32(v[8:])), nil
	}
	return 0, 0, errors.New("corrupt low-water offset")
}

// forward writes a committed transaction's buffered batches to the backend,
// exactly once and in order per partition, then its held group offsets.
//
// Before the first batch of a partition goes out, its end offset is
// recorded (the low-water offset): everything eosproxy writes lands after
// it. Progress — acknowledged batches deleted, low-water offsets moved past
// them — is made durable every persistEvery bytes and when an attempt
// fails; after a crash or an unclear answer the next attempt first reads
// each partition from its low-water offset and skips, in order, every
// remaining batch it finds there by content digest (the look-up the
// idempotent path uses), then sends from the first one missing.
//
// Sending has two modes. Where the backend gives eosproxy a producer id,
// each generation writes under an epoch of its own (the id's previous one
// plus one, so a late write of an earlier attempt is fenced) with sequence
// numbers from 0 per partition, up to maxInFlight batches of a partition in
// flight: the backend keeps them in order, and a batch resent while an
// unclear earlier send of it lands is dropped by it as a duplicate. Without
// one, batches are cleared of producer fields and one per partition is in
// flight, sent only once the one before it is acknowledged, so that the
// backend's batches of a partition are always a prefix of the buffered ones.
func (c *Coordinator) forward(ctx context.Context, t *Txn, gen, seq uint64, firstAttempt bool, log zerolog.Logger) (err error) {
	f := &forwarding{c: c, id: t.TransactionalID, gen: gen, log: log, peek: map[TopicPartition]buffered{}}
	if err := f.load(); err != nil {
		return err
	}
	if !firstAttempt {
		if err := f.dropDeleted(ctx); err != nil {
			return err
		}
	}
	// A partition with a low-water offset from an earlier attempt may have
	// had batches sent by it; one recorded with the decision has not, nor
	// has a commit that a clean stop left unsent (fresh).
	unverified := map[TopicPartition]bool{}
	for tp := range f.low {
		unverified[tp] = !firstAttempt
	}
	if err := f.lowWater(ctx); err != nil {
		return err
	}
	f.rd = c.db.NewTransaction(false)
	defer f.close()
	defer func() {
		if err != nil {
			// Spare the next attempt the look-ups for what is known.
			if perr := f.persist(); perr != nil {
				log.Warn().Err(perr).Msg("cannot record forwarding progress")
			}
		}
	}()
	start := time.Now()
	found, err := f.skipWritten(ctx, unverified)
	if err != nil {
		return err
	}
	idem, err := f.chooseMode(ctx)
	if err != nil {
		return err
	}
	var batches int
	if idem != nil {
		batches, err = f.pipelined(ctx, idem)
	} else {
		batches, err = f.rounds(ctx)
	}
	if err != nil {
		return err
	}
	log.Debug().Int("batches", batches).Int("found", found).Bool("pipelined", idem != nil).Dur("took", time.Since(start)).
		Msg("transaction data forwarded")
	for _, g := range t.PendingOffsets {
		if len(g.Offsets) > 0 {
			c.crashPoint(CrashHalfForwarded) // batches written, offsets not yet
			break
		}
	}
	for group, g := range t.PendingOffsets {
		if len(g.Offsets) > 0 && !firstAttempt {
			g = c.withoutDeleted(ctx, group, g, log)
		}
		if len(g.Offsets) == 0 {
			continue
		}
		if err := c.commitOffsets(ctx, group, g, seq); err != nil {
			if errors.Is(err, ErrPermanent) {
				log.Error().Err(err).Str("group", group).Msg("transaction committed but its group offsets could not be; the group will re-read from its last committed offsets")
				continue
			}
			return fmt.Errorf("commit offsets of group %q: %w", group, err)
		}
	}
	return nil
}

// forwarding is one attempt at forwarding a generation.
type forwarding struct {
	c   *Coordinator
	id  string
	gen uint64
	log zerolog.Logger

	remaining map[TopicPartition]int   // batches not yet acknowledged
	low       map[TopicPartition]int64 // low-water offsets
	seqs      map[TopicPartition]int32 // sequence of the first remaining batch (idempotent mode)
	producer  *upstreamProducer        // the generation's producer, if it has one
	dropProd  bool                     // the producer's state at the backend is off: next attempt takes a new epoch

	// One read snapshot and one iterator per partition for the whole
	// attempt: the buffered batches do not change while a commit runs.
	rd   *badger.Txn
	its  map[TopicPartition]*badger.Iterator
	peek map[TopicPartition]buffered // read by skipWritten, not found in the backend

	// Forwarded but not yet recorded as such.
	done      [][]byte
	doneRefs  []spool.Ref
	doneBytes int
}

type buffered struct {
	key, batch []byte
	ref        spool.Ref
}

// load counts the generation's buffered batches per partition and loads the
// forwarding state of an earlier attempt.
func (f *forwarding) load() error {
	f.remaining, f.low, f.seqs = map[TopicPartition]int{}, map[TopicPartition]int64{}, map[TopicPartition]int32{}
	err := f.c.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: genKey(prefixBatch, f.id, f.gen)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			_, _, tp, _, err := parseGenTPKey(prefixBatch, it.Item().Key())
			if err != nil {
				return err
			}
			f.remaining[tp]++
		}
		it2 := txn.NewIterator(badger.IteratorOptions{Prefix: genKey(prefixLow, f.id, f.gen), PrefetchValues: true})
		defer it2.Close()
		for it2.Rewind(); it2.Valid(); it2.Next() {
			_, _, tp, _, err := parseGenTPKey(prefixLow, it2.Item().Key())
			if err != nil {
				return err
			}
			v, err := it2.Item().ValueCopy(nil)
			if err == nil {
				f.low[tp], f.seqs[tp], err = unmarshalLow(v)
			}
			if err != nil {
				return fmt.Errorf("low-water offset of %s/%d: %w", tp.Topic, tp.Partition, err)
			}
		}
		item, err := txn.Get(genKey(prefixGenProducer, f.id, f.gen))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		var v []byte
		if err == nil {
			v, err = item.ValueCopy(nil)
		}
		if err != nil {
			return err
		}
		u, err := unmarshalUpstream(v)
		if err != nil {
			return err
		}
		f.producer = &u
		return nil
	})
	if err != nil {
		return fmt.Errorf("read buffered transaction %q: %w", f.id, err)
	}
	return nil
}

// lowWater records the end offset of each partition that has no low-water
// offset yet, before anything is sent to it.
func (f *forwarding) lowWater(ctx context.Context) error {
	var need []TopicPartition
	for tp := range f.remaining {
		if _, ok := f.low[tp]; !ok {
			need = append(need, tp)
		}
	}
	if len(need) == 0 {
		return nil
	}
	offs, err := f.c.opt.Backend.EndOffsets(ctx, need)
	if err != nil {
		return fmt.Errorf("end offsets before forwarding: %w", err)
	}
	err = f.c.db.Update(func(txn *store.Txn) error {
		for _, tp := range need {
			o, ok := offs[tp]
			if !ok {
				return fmt.Errorf("no end offset for %s/%d", tp.Topic, tp.Partition)
			}
			f.low[tp], f.seqs[tp] = o, 0
			f.c.noteEnd(tp, o)
			if err := txn.Set(genTPKey(prefixLow, f.id, f.gen, tp), marshalLow(o, 0)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("persist forwarding low-water offsets: %w", err)
	}
	return nil
}

func (f *forwarding) close() {
	for _, it := range f.its {
		it.Close()
	}
	f.rd.Discard()
}

// nextBatch reads tp's next buffered batch.
func (f *forwarding) nextBatch(tp TopicPartition) (buffered, error) {
	if b, ok := f.peek[tp]; ok {
		delete(f.peek, tp)
		return b, nil
	}
	if f.its == nil {
		f.its = map[TopicPartition]*badger.Iterator{}
	}
	it := f.its[tp]
	if it == nil {
		it = f.rd.NewIterator(badger.IteratorOptions{Prefix: genTPKey(prefixBatch, f.id, f.gen, tp)})
		it.Rewind()
		f.its[tp] = it
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
		batch, err = f.c.opt.Spool.Read(ref)
	}
	if err != nil {
		return buffered{}, fmt.Errorf("read buffered batch of %s/%d: %w", tp.Topic, tp.Partition, err)
	}
	b := buffered{it.Item().KeyCopy(nil), batch, ref}
	it.Next()
	return b, nil
}

// sent notes that b, tp's first remaining batch, was written by this
// process at base: its end is past every commit completed before, so it is
// also the coordinator's known end of the partition. Not so for a batch
// found by a look-up (acked alone): a killed process may have written it
// ahead of other commits it completed.
func (f *forwarding) sent(tp TopicPartition, b buffered, base int64) {
	f.acked(tp, b, base)
	f.c.noteEnd(tp, f.low[tp])
	if len(f.remaining) > 0 {
		f.c.crashPoint(CrashHalfForwarded)
	}
}

// acked notes that b, tp's first remaining batch, is in the backend at base.
func (f *forwarding) acked(tp TopicPartition, b buffered, base int64) {
	f.low[tp] = base + int64(protocol.BatchLastOffsetDelta(b.batch)) + 1
	f.seqs[tp] = nextSeq(f.seqs[tp], protocol.BatchRecordCount(b.batch))
	f.done = append(f.done, b.key)
	f.doneRefs = append(f.doneRefs, b.ref)
	f.doneBytes += len(b.batch)
	if f.remaining[tp]--; f.remaining[tp] == 0 {
		delete(f.remaining, tp)
	}
}

// nextSeq is Kafka's sequence arithmetic: it wraps at MaxInt32.
func nextSeq(seq, count int32) int32 {
	return int32((int64(seq) + int64(count)) % math.MaxInt32)
}

// putLow writes every partition's low-water offset and sequence with set.
func (f *forwarding) putLow(set func(k, v []byte) error) error {
	for tp, o := range f.low {
		if err := set(genTPKey(prefixLow, f.id, f.gen, tp), marshalLow(o, f.seqs[tp])); err != nil {
			return err
		}
	}
	return nil
}

// persistDue reports whether enough progress is recorded only in memory
// that it is time to persist it.
func (f *forwarding) persistDue() bool {
	return f.doneBytes >= persistEvery || len(f.done) >= persistBatches
}

// persist makes the progress durable: acknowledged batches deleted, the
// low-water offsets (and sequences) moved past them, in one badger
// transaction — a crash must never leave one without the other (a
// WriteBatch commits in several once it grows large).
func (f *forwarding) persist() error { return f.persistWith(nil) }

// persistWith is persist with more writes (extra) in the same transaction.
func (f *forwarding) persistWith(extra func(*store.Txn) error) error {
	if len(f.done) == 0 && !f.dropProd && extra == nil {
		return nil
	}
	err := f.c.db.Update(func(txn *store.Txn) error {
		for _, k := range f.done {
			if err := txn.Delete(k); err != nil {
				return err
			}
		}
		if err := f.putLow(txn.Set); err != nil {
			return err
		}
		if f.dropProd {
			if err := txn.Delete(genKey(prefixGenProducer, f.id, f.gen)); err != nil {
				return err
			}
		}
		if extra != nil {
			return extra(txn)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("record forwarding progress: %w", err)
	}
	for _, r := range f.doneRefs {
		f.c.opt.Spool.Release(r)
	}
	f.done, f.doneRefs, f.doneBytes = nil, nil, 0
	return nil
}

// skipWritten skips, per unverified partition, the remaining batches an
// earlier attempt wrote (a prefix), found by digest from the low-water offset.
func (f *forwarding) skipWritten(ctx context.Context, unverified map[TopicPartition]bool) (found int, err error) {
	for _, tp := range f.sorted() {
		if !unverified[tp] {
			continue
		}
		for f.remaining[tp] > 0 {
			b, err := f.nextBatch(tp)
			if err != nil {
				return found, err
			}
			off, hit, err := f.c.opt.Backend.FindBatch(ctx, tp.Topic, tp.Partition, f.low[tp], protocol.Digest(b.batch, len(b.batch)))
			if err != nil {
				return found, fmt.Errorf("look for %s/%d's batch in the backend: %w", tp.Topic, tp.Partition, err)
			}
			if !hit {
				f.peek[tp] = b // the first to send
				break
			}
			found++
			f.log.Info().Str("topic", tp.Topic).Int32("partition", tp.Partition).Int64("offset", off).
				Msg("batch of an interrupted commit found in the backend; not resending it")
			f.acked(tp, b, off)
			if f.persistDue() { // one progress write must fit in a badger transaction
				if err := f.persist(); err != nil {
					return found, err
				}
			}
		}
	}
	return found, nil
}

func (f *forwarding) sorted() []TopicPartition {
	tps := make([]TopicPartition, 0, len(f.remaining))
	for tp := range f.remaining {
		tps = append(tps, tp)
	}
	slices.SortFunc(tps, compareTP)
	return tps
}

// Sending a commit's batches: pipelined under a producer id of eosproxy's own
// where the backend gives one, else one batch per partition at a time. Apart
// from forward.go because choosing the mode and each mode stand alone; the
// progress they report is recorded there.

package txnstate

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/eosproxy/eosproxy/protocol"
	"github.com/eosproxy/eosproxy/store"
)

// roundBytes bounds the data one forwarding attempt holds in memory at once.
const (
	roundBytes = 16 << 20
	// maxInFlight is how many batches of one partition are pipelined
	// toward an idempotent backend: Kafka keeps the last five batches of a
	// producer per partition to recognise a resent one.
	maxInFlight = 5
)

// upstreamProducer is one producer id and epoch of eosproxy's own.
type upstreamProducer struct {
	pid   int64
	epoch int16
}

func (u upstreamProducer) marshal() []byte {
	return binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint64(nil, uint64(u.pid)), uint16(u.epoch))
}

func unmarshalUpstream(v []byte) (upstreamProducer, error) {
	if len(v) != 10 {
		return upstreamProducer{}, errors.New("corrupt upstream producer record")
	}
	return upstreamProducer{int64(binary.BigEndian.Uint64(v)), int16(binary.BigEndian.Uint16(v[8:]))}, nil
}

// chooseMode decides how this attempt sends: with the generation's producer
// (continuing its sequences), with a new epoch (sequences from 0, after
// skipWritten, so every partition restarts at its first missing batch), or,
// when the backend gives no producer id, without one.
func (f *forwarding) chooseMode(ctx context.Context) (IdempotentBackend, error) {
	idem, ok := f.c.opt.Backend.(IdempotentBackend)
	if ok && f.producer != nil && !f.dropProd {
		return idem, nil
	}
	var u upstreamProducer
	if ok {
		var err error
		u, err = f.c.nextUpstream(ctx, idem, f.id)
		if err != nil {
			ok = false
		}
	}
	if !ok {
		if f.producer != nil {
			f.dropProd = true // sequences continue no more
			if err := f.persist(); err != nil {
				return nil, err
			}
			f.producer, f.dropProd = nil, false
		}
		return nil, nil
	}
	// What skipWritten found is made durable with the low-water offsets it
	// moved and the new producer, in one write: were those offsets recorded
	// without the found batches' deletion, a crash would leave batches
	// behind their low-water offset, where the next attempt would not look
	// for them, and send them again.
	prev := maps.Clone(f.seqs)
	for tp := range f.remaining {
		f.seqs[tp] = 0
	}
	err := f.persistWith(func(txn *store.Txn) error {
		if err := txn.Set(idKey(prefixUpstream, f.id), u.marshal()); err != nil {
			return err
		}
		return txn.Set(genKey(prefixGenProducer, f.id, f.gen), u.marshal())
	})
	if err != nil {
		f.seqs = prev // still the generation's previous producer's
		return nil, fmt.Errorf("record the forwarding producer: %w", err)
	}
	f.producer, f.dropProd = &u, false
	return idem, nil
}

// nextUpstream is the producer a new forwarding epoch of id writes with:
// the id's last one with its epoch bumped (an idempotent producer may bump
// its own epoch; the backend then wants sequence 0), or a fresh producer id
// from the backend when there is none or the epoch is exhausted. A backend
// that gives none is asked again only after a while.
func (c *Coordinator) nextUpstream(ctx context.Context, idem IdempotentBackend, id string) (upstreamProducer, error) {
	var u upstreamProducer
	err := c.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(idKey(prefixUpstream, id))
		if err != nil {
			return err
		}
		v, err := item.ValueCopy(nil)
		if err != nil {
			return err
		}
		u, err = unmarshalUpstream(v)
		return err
	})
	if err == nil && u.epoch < math.MaxInt16-1 {
		u.epoch++
		return u, nil
	}
	if at := c.noUpstreamUntil.Load(); at != 0 && c.nowMs() < at {
		return u, errors.New("backend gives no producer id")
	}
	pid, epoch, err := idem.InitProducerID(ctx)
	if err != nil {
		if c.noUpstreamUntil.Swap(c.nowMs()+time.Minute.Milliseconds()) == 0 {
			c.log.Info().Err(err).Msg("the backend gives eosproxy no producer id: commits are forwarded one batch per partition at a time")
		}
		return u, err
	}
	c.noUpstreamUntil.Store(0)
	return upstreamProducer{pid, epoch}, nil
}

// rounds sends without a producer id: one batch per partition per round,
// the next round once the backend acknowledged the previous one.
func (f *forwarding) rounds(ctx context.Context) (int, error) {
	current := map[TopicPartition]buffered{}
	batches := 0
	for len(f.remaining) > 0 {
		if err := ctx.Err(); err != nil {
			return batches, err
		}
		round := map[TopicPartition][]byte{}
		size := 0
		for _, tp := range f.sorted() {
			if size >= roundBytes {
				break
			}
			b, ok := current[tp]
			if !ok {
				var err error
				if b, err = f.nextBatch(tp); err != nil {
					return batches, err
				}
				current[tp] = b
			}
			round[tp] = b.batch
			size += len(b.batch)
		}
		batches += len(round)
		results := f.c.opt.Backend.Produce(ctx, round)
		var failures []error
		for tp := range round {
			res, ok := results[tp]
			switch {
			case !ok:
				failures = append(failures, fmt.Errorf("%s/%d: no answer", tp.Topic, tp.Partition))
			case res.Err == nil:
				f.sent(tp, current[tp], res.BaseOffset)
				delete(current, tp)
			default:
				failures = append(failures, fmt.Errorf("%s/%d: %w", tp.Topic, tp.Partition, res.Err))
			}
		}
		if len(failures) > 0 {
			return batches, fmt.Errorf("forward batches: %w", errors.Join(failures...))
		}
		if f.persistDue() {
			if err := f.persist(); err != nil {
				return batches, err
			}
		}
	}
	return batches, nil
}

// pipelined sends with the generation's producer in waves — one batch per
// partition, one request per leader, like a client's produce request — with
// up to maxInFlight waves and roundBytes in flight, and takes the answers in
// send order. After a failure nothing more is sent; what is in flight is
// waited for, and a partition's answers behind its failed batch are left to
// the next attempt's look-up (with idempotence they cannot be ahead of the
// failed one in the backend).
func (f *forwarding) pipelined(ctx context.Context, idem IdempotentBackend) (int, error) {
	type wave struct {
		batches map[TopicPartition]buffered
		size    int
		wait    func(context.Context) map[TopicPartition]ProduceResult
	}
	var queue []wave
	inflight := map[TopicPartition]int{}
	sendSeq := map[TopicPartition]int32{}
	for tp := range f.remaining {
		sendSeq[tp] = f.seqs[tp]
	}
	failed := map[TopicPartition]bool{}
	var failures []error
	bytes, batches := 0, 0
	u := *f.producer
	for {
		for len(failures) == 0 && ctx.Err() == nil && len(queue) < maxInFlight && bytes < roundBytes {
			w := wave{batches: map[TopicPartition]buffered{}}
			send := map[TopicPartition][]byte{}
			for _, tp := range f.sorted() {
				// Kafka takes any first sequence from a producer it has
				// no state for on a partition: were a partition's first
				// batch refused while the next is in flight, the next
				// would be written ahead of it. So a partition gets one
				// batch in flight until the backend has acknowledged one
				// of this epoch there (sequence > 0).
				if inflight[tp] >= f.remaining[tp] || inflight[tp] > 0 && f.seqs[tp] == 0 {
					continue
				}
				b, err := f.nextBatch(tp)
				if err != nil {
					failures = append(failures, err)
					break
				}
				protocol.SetProducer(b.batch, len(b.batch), u.pid, u.epoch, sendSeq[tp])
				sendSeq[tp] = nextSeq(sendSeq[tp], protocol.BatchRecordCount(b.batch))
				w.batches[tp], send[tp] = b, b.batch
				w.size += len(b.batch)
				inflight[tp]++
			}
			if len(send) == 0 {
				break
			}
			w.wait = idem.Send(ctx, send)
			queue = append(queue, w)
			bytes += w.size
			batches += len(send)
		}
		if len(queue) == 0 {
			break
		}
		w := queue[0]
		queue = queue[1:]
		results := w.wait(ctx)
		bytes -= w.size
		for _, tp := range slices.SortedFunc(maps.Keys(w.batches), compareTP) {
			b := w.batches[tp]
			inflight[tp]--
			if failed[tp] {
				continue
			}
			res, ok := results[tp]
			if !ok {
				res = ProduceResult{Err: errors.New("no answer"), Ambiguous: true}
			}
			if res.Err == nil {
				f.sent(tp, b, res.BaseOffset)
				continue
			}
			failed[tp] = true
			failures = append(failures, fmt.Errorf("%s/%d: %w", tp.Topic, tp.Partition, res.Err))
			if producerStateError(res.Err) {
				// All before this batch is acknowledged, so the backend's
				// state for the producer is not what eosproxy's is (it lost
				// it, or a late write moved it): start a new epoch.
				f.dropProd = true
			}
		}
		if f.persistDue() && len(failures) == 0 {
			if err := f.persist(); err != nil {
				failures = append(failures, err)
			}
		}
	}
	if err := ctx.Err(); err != nil && len(failures) == 0 {
		failures = append(failures, err)
	}
	if len(failures) > 0 {
		return batches, fmt.Errorf("forward batches: %w", errors.Join(failures...))
	}
	return batches, nil
}

// producerStateError: the backend's idea of eosproxy's producer differs.
func producerStateError(err error) bool {
	for _, e := range []error{kerr.OutOfOrderSequenceNumber, kerr.DuplicateSequenceNumber, kerr.UnknownProducerID,
		kerr.InvalidProducerEpoch, kerr.InvalidProducerIDMapping, kerr.InvalidTxnState} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

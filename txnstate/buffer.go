// Buffering a transactional batch: a Produce checked against the transaction
// and the producer's sequences, its bytes appended to the spool, and the
// flusher that makes the index durable in order, many batches per fsync.
// Apart because it runs per batch; the rest of the coordinator per transaction.

package txnstate

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/eosproxy/eosproxy/dedup"
	"github.com/eosproxy/eosproxy/store"
	"github.com/eosproxy/eosproxy/txnstate/spool"

	"github.com/twmb/franz-go/pkg/kerr"
)

// flushQueue holds an entry's index writes waiting for the flusher; qmu
// guards it, and flushing says a flusher is running.
type flushQueue struct {
	qmu      sync.Mutex
	queue    []*write
	flushing bool
	// answered is closed once the last group written has been answered
	// (nil: nothing pending); only the running flusher uses it.
	answered chan struct{}
}

// write is one buffered batch: its spool reference and index writes, and
// the flusher's outcome once done is closed.
type write struct {
	done chan struct{}
	err  error
	ref  spool.Ref
	kvs  []kv   // the first is the batch's index entry, pointing at ref
	blob []byte // the batch: in cluster mode the log carries it, not ref
}

// ProduceAnswer is the outcome of buffering one transactional batch.
type ProduceAnswer struct {
	Err int16
	Msg string
	// Wait, when set, blocks until the batch is durable and returns the
	// error code to answer with then.
	Wait func() int16
}

// BufferBatch buffers one transactional batch of a Produce, already cleared
// of its producer fields (protocol.ClearTransactional), after the
// transaction's and the sequence checks. batch is kept; the caller must not
// reuse it.
func (c *Coordinator) BufferBatch(id string, req ProduceRequest, info dedup.BatchInfo, batch []byte) ProduceAnswer {
	e := c.lock(id, false)
	if e == nil {
		r := AdmitBatch(nil, req, c.nowMs())
		return ProduceAnswer{Err: r.Err}
	}
	defer e.mu.Unlock()
	now := c.nowMs()
	r := AdmitBatch(e.txn.Load(), req, now)
	if r.Err != ErrNone {
		return ProduceAnswer{Err: r.Err}
	}
	if e.broken.Load() {
		return ProduceAnswer{Err: verificationError(kerr.TransactionAbortable.Code, req.Version >= 11), Msg: "an earlier batch of the transaction could not be stored"}
	}
	tp := req.Partition
	var st *dedup.State
	if s, ok := e.seqs[tp]; ok && e.seqPID == req.ProducerID {
		st = &s
	}
	d := dedup.Decide(st, info)
	switch {
	case d.Verdict == dedup.Duplicate, d.Verdict == dedup.Reject && d.Err == kerr.DuplicateSequenceNumber.Code:
		// A retry of a batch already buffered: answered as written, once the
		// original is durable.
		last := e.last
		if last == nil {
			return ProduceAnswer{}
		}
		return ProduceAnswer{Wait: func() int16 { <-last.done; return storageCode(last.err) }}
	case d.Verdict == dedup.Reject:
		return ProduceAnswer{Err: d.Err}
	}
	n := int64(len(batch))
	var over string
	if lim := c.opt.MaxTransactionBytes; lim > 0 && e.bytes+n > lim {
		over = fmt.Sprintf("transaction %q would exceed --max-transaction-bytes (%d bytes); it can only abort", id, lim)
	} else if lim := c.opt.MaxBufferBytes; lim > 0 && c.buffered.Load()+n > lim {
		over = fmt.Sprintf("eosproxy's transaction buffer is full (--transaction-buffer-bytes %d bytes); the transaction can only abort", lim)
	}
	if over != "" {
		// A transaction missing a batch must not commit: Kafka's producers
		// abort after a failed batch, and eosproxy holds them to it.
		e.writes.Wait()
		if r.Txn != nil {
			// The refused batch still opens the transaction (Produce v12
			// adds its partition), so that the mark applies to it.
			if ar, _ := c.apply(e, Result{Txn: r.Txn}); ar.Err != ErrNone {
				return ProduceAnswer{Err: kerr.KafkaStorageError.Code}
			}
		}
		if err := c.markBroken(e); err != nil {
			c.log.Error().Err(err).Msg("cannot persist transaction state")
			return ProduceAnswer{Err: kerr.KafkaStorageError.Code}
		}
		c.log.Warn().Str("txn", id).Int64("buffered", e.bytes).Msg(over)
		return ProduceAnswer{Err: kerr.PolicyViolation.Code, Msg: over}
	}
	var prev dedup.State
	if st != nil {
		prev = *st
	}
	ns := dedup.Apply(prev, info, -1, now)
	gen, newGen := e.gen, false
	if r.Txn != nil && e.txn.Load().State != Ongoing {
		// Produce v12 opens a new transaction: a new generation.
		gen, newGen = c.counter.Add(1), true
	}
	ref, err := c.opt.Spool.Append(batch)
	if err != nil {
		c.log.Error().Err(err).Str("txn", id).Msg("cannot buffer transactional batch")
		return ProduceAnswer{Err: kerr.KafkaStorageError.Code}
	}
	writes := []kv{
		{batchKey(id, gen, tp, c.counter.Add(1)), ref.Marshal()},
		{tpKey(prefixSeq, id, tp), append(binary.BigEndian.AppendUint64(nil, uint64(req.ProducerID)), dedup.MarshalState(ns)...)},
	}
	if r.Txn != nil {
		writes = append(writes, kv{idKey(prefixMeta, id), encodeTxn(r.Txn)})
		if newGen {
			writes = append(writes, kv{idKey(prefixGen, id), binary.BigEndian.AppendUint64(nil, gen)})
		}
		c.swap(e, e.txn.Load(), r.Txn)
		e.gen = gen
	}
	e.seqs[tp] = ns
	e.bytes += n
	c.buffered.Add(n)
	w := &write{done: make(chan struct{}), ref: ref, kvs: writes, blob: batch}
	e.last = w
	e.writes.Add(1)
	c.enqueue(e, w)
	return ProduceAnswer{Wait: func() int16 { <-w.done; return storageCode(w.err) }}
}

// markBroken records that e's open transaction is missing a refused batch and
// can only abort: the mark (prefixBroken) is written with the id's current
// state, which load reads back while the transaction is open, and e.broken
// is set, so that later batches are refused and EndTxn does not commit. A
// refused batch that opens the transaction has been applied by the caller
// first, so the mark belongs to it. Called with e.mu held and no index
// writes in flight.
func (c *Coordinator) markBroken(e *entry) error {
	err := c.commit(e, e.txn.Load(), func(txn *store.Txn) error {
		return txn.Set(idKey(prefixBroken, e.id), nil)
	})
	if err == nil {
		e.broken.Store(true)
	}
	return err
}

// enqueue hands a batch's index writes to e's flusher. One flusher per
// transactional id makes them durable in decision order (a later sequence
// state must never be overwritten by an earlier one), each batch's data in
// the spool before the index that points to it, and everything that queued
// up meanwhile in one badger write: one fsync for many batches.
func (c *Coordinator) enqueue(e *entry, w *write) {
	e.qmu.Lock()
	e.queue = append(e.queue, w)
	start := !e.flushing
	e.flushing = true
	e.qmu.Unlock()
	if start {
		go c.flush(e)
	}
}

func (c *Coordinator) flush(e *entry) {
	// In cluster mode a write is confirmed by the cluster's log, a round
	// trip to the backend and a read-back: the next group is queued to the
	// log while the previous one waits (the log keeps their order), and
	// the groups are answered in order.
	for {
		e.qmu.Lock()
		// At most maxFlushKeys keys a write: one badger transaction holds
		// only so many (tens of thousands), and a fast producer can queue
		// more while one write is being synced.
		n, keys := 0, 0
		for n < len(e.queue) && (n == 0 || keys+len(e.queue[n].kvs) <= maxFlushKeys) {
			keys += len(e.queue[n].kvs)
			n++
		}
		ws := e.queue[:n:n]
		e.queue = e.queue[n:]
		if len(ws) == 0 {
			e.flushing = false
			e.qmu.Unlock()
			return
		}
		e.qmu.Unlock()
		wait := c.writeGroup(ws)
		after := e.answered
		if !c.db.Replicated() {
			err := wait()
			if after != nil {
				<-after
				e.answered = nil
			}
			c.finishGroup(e, ws, err)
			continue
		}
		done := make(chan struct{})
		e.answered = done
		go func() {
			err := wait()
			if after != nil {
				<-after
			}
			c.finishGroup(e, ws, err)
			close(done)
		}()
	}
}

// writeGroup makes a group of buffered batches durable: each batch's data
// in the spool before the index that points to it, all of the index in one
// badger write (one fsync), or in cluster mode one set of the log, which
// wait confirms.
func (c *Coordinator) writeGroup(ws []*write) (wait func() error) {
	for _, w := range ws {
		if err := c.opt.Spool.Sync(w.ref); err != nil {
			return func() error { return err }
		}
	}
	return c.db.UpdateAsync(func(txn *store.Txn) error {
		for _, w := range ws {
			if err := txn.SetBlob(w.kvs[0].k, w.kvs[0].v, w.blob); err != nil {
				return err
			}
			for _, kv := range w.kvs[1:] {
				if err := txn.Set(kv.k, kv.v); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// finishGroup answers a group's batches with the outcome of its write.
func (c *Coordinator) finishGroup(e *entry, ws []*write, err error) {
	switch {
	case errors.Is(err, store.ErrReplication):
		// Cluster mode, and this instance no longer owns the state:
		// the batches are not in the cluster's log, so the next owner
		// has the transaction without them. They are answered
		// NOT_LEADER_OR_FOLLOWER and their producer sends them again,
		// to the next owner; marking the transaction broken here
		// would be lost with this instance's state, and the next
		// owner would commit it without them.
		c.log.Warn().Err(err).Str("txn", e.id).Msg("buffered transactional batch not in the cluster's log (no longer the owner); its producer retries with the next owner")
	case err != nil:
		e.broken.Store(true)
		c.log.Error().Err(err).Str("txn", e.id).Msg("buffered transactional batch not durable; the transaction can only abort")
	}
	for _, w := range ws {
		w.err, w.blob = err, nil
		close(w.done)
		e.writes.Done()
	}
}

// maxFlushKeys bounds the keys the flusher writes in one badger transaction.
const maxFlushKeys = 4000

func storageCode(err error) int16 {
	if errors.Is(err, store.ErrReplication) {
		return kerr.NotLeaderForPartition.Code
	}
	if err != nil {
		return kerr.KafkaStorageError.Code
	}
	return ErrNone
}

// Buffered returns the bytes of transactional data waiting for a commit.
func (c *Coordinator) Buffered() int64 { return c.buffered.Load() }

// BacklogBytes returns the bytes decided commits still have to write.
func (c *Coordinator) BacklogBytes() int64 { return c.backlog.Load() }

// Blob returns the batch a buffered batch's index entry points to, for an
// image of the store (cluster mode's checkpoints): the image carries the
// bytes, as the log does, never a reference into this instance's spool.
func (c *Coordinator) Blob(key, value []byte) ([]byte, bool, error) {
	if !bytes.HasPrefix(key, []byte(prefixBatch)) {
		return nil, false, nil
	}
	ref, err := spool.UnmarshalRef(value)
	if err != nil {
		return nil, false, err
	}
	b, err := c.opt.Spool.Read(ref)
	return b, err == nil, err
}

// One batch through the table: Begin decides it, after waiting for the batch
// ahead of it and settling an unknown outcome, and exactly one of WrittenAll
// or Failed ends it. Apart from the table because this is the path every
// idempotent Produce takes.

package dedup

import (
	"context"
	"fmt"

	"github.com/twmb/franz-go/pkg/kerr"
)

// Token is a batch cleared for writing; exactly one of Written or Failed
// must follow, which lets the next batch of the same producer and partition
// go ahead.
type Token struct {
	t     *Table
	key   Key
	batch BatchInfo
	done  chan struct{}
}

// Begin decides batch b of key. For a Write it returns a Token and the batch
// must then be written; every other verdict is final. Begin waits while an
// earlier batch of the same producer and partition is in flight, and settles
// an unverified state by looking at the backend, so that a batch is never
// written before the one ahead of it is known to be written.
func (t *Table) Begin(ctx context.Context, key Key, b BatchInfo, digest func() [32]byte) (Decision, *Token, error) {
	for {
		t.mu.Lock()
		e := t.entries[key]
		if e == nil {
			e = &entry{}
			t.entries[key] = e
		}
		if e.inflight != nil {
			if tok, d, ok := t.pipeline(e, key, b); ok {
				t.mu.Unlock()
				return d, tok, nil
			}
			done := e.inflight.done
			t.mu.Unlock()
			select {
			case <-done:
				continue
			case <-ctx.Done():
				return Decision{}, nil, ctx.Err()
			}
		}
		d := Decide(e.st, b)
		if d.Verdict == Reject && e.st != nil && t.backend.DropsLateCopies() &&
			(d.Err == kerr.OutOfOrderSequenceNumber.Code || d.Err == kerr.DuplicateSequenceNumber.Code) {
			// eosproxy's state may lack batches the backend holds: answers
			// WrittenAll sent before their state was on disk, then a
			// crash; or a batch whose answer was unclear (not in the
			// state) that the backend did write, followed by the next one.
			// The backend holds this producer's exact state (the batch
			// goes under the pairing, with the client's epoch and
			// sequence), so it decides as Kafka would: it writes the
			// batch, answers a retry with its first copy's offset, or
			// refuses it with Kafka's own code; the batch is recorded
			// from that answer. (Should the batch go unpaired after all,
			// the caller answers Err.)
			tok := t.newToken(e, key, b)
			lagging := e.st.Unverified
			t.mu.Unlock()
			if lagging {
				t.log.Info().Int64("producer", key.ProducerID).Str("topic", key.Topic).Int32("partition", key.Partition).
					Int32("seq", b.FirstSeq).Msg(LaggingStateMsg)
			}
			return Decision{Verdict: Write, Err: d.Err, Deferred: true}, tok, nil
		}
		if d.Verdict == Write && (e.st == nil || e.st.Unverified || !e.st.Intent) {
			// Hold the key while the backend is consulted.
			tok := t.newToken(e, key, b)
			st, unclearAt := e.st, e.unclearAt
			t.mu.Unlock()
			var err error
			if st != nil && !st.Unverified {
				err = t.arm(ctx, key, *st)
			} else {
				err = t.settle(ctx, key, st, unclearAt, b, digest)
			}
			if err != nil {
				tok.release(nil)
				t.mu.Lock()
				if e.st == nil && e.inflight == nil && t.entries[key] == e {
					delete(t.entries, key) // nothing learned; keep the map small
				}
				t.mu.Unlock()
				return Decision{}, nil, err
			}
			tok.release(nil)
			continue
		}
		if d.Verdict == Duplicate && e.write != nil {
			w := e.write
			st := *e.st
			t.mu.Unlock()
			if err := t.awaitWrite(ctx, key, e, w, st); err != nil {
				return Decision{}, nil, err
			}
			continue
		}
		if d.Verdict != Write {
			t.mu.Unlock()
			return d, nil, nil
		}
		tok := t.newToken(e, key, b)
		t.mu.Unlock()
		return d, tok, nil
	}
}

// LaggingStateMsg is logged when a batch of a producer whose state is
// unverified (after a crash or an unclear answer) is left to the backend to
// decide.
const LaggingStateMsg = "producer state may be behind the backend; the backend decides this batch"

// awaitWrite waits until the state a duplicate is answered from is durable:
// for the write under way, or, if it failed, by writing st (the state as
// the duplicate saw it) again.
func (t *Table) awaitWrite(ctx context.Context, key Key, e *entry, w *stateWrite, st State) error {
	select {
	case <-w.done:
	case <-ctx.Done():
		return fmt.Errorf("wait for the state of producer %d on %s/%d to be durable: %w", key.ProducerID, key.Topic, key.Partition, ctx.Err())
	}
	if w.err == nil {
		return nil
	}
	st.Unverified = false
	if err := t.persist(key, st); err != nil {
		return err
	}
	t.mu.Lock()
	if e.write == w {
		e.write = nil
	}
	t.mu.Unlock()
	return nil
}

// Key is the producer and partition of the token's batch.
func (tok *Token) Key() Key { return tok.key }

func (t *Table) newToken(e *entry, key Key, b BatchInfo) *Token {
	tok := &Token{t: t, key: key, batch: b, done: make(chan struct{})}
	e.inflight = tok
	if e.st != nil {
		proj := Apply(*e.st, b, unknownOffset, 0)
		e.proj = &proj
	}
	return tok
}

// pipeline clears b for writing while earlier batches of its key are still
// in flight, when the backend orders and deduplicates them itself: every
// batch goes to it under the pairing with the client's epoch and sequences,
// so a batch whose predecessor fails is refused by the backend
// (OUT_OF_ORDER_SEQUENCE_NUMBER) as Kafka refuses a client's pipelined
// batches, and the client retries both in order. Only a batch that follows
// the last one in flight goes ahead, and only from a settled state (no
// look-up pending); anything else waits as before. Called with mu held.
func (t *Table) pipeline(e *entry, key Key, b BatchInfo) (*Token, Decision, bool) {
	if e.proj == nil || e.st == nil || e.st.Unverified || !e.st.Intent || e.write != nil && e.write.err != nil ||
		!t.backend.DropsLateCopies() {
		return nil, Decision{}, false
	}
	if d := Decide(e.proj, b); d.Verdict != Write || len(e.proj.Batches) == 0 {
		return nil, Decision{}, false
	}
	return t.newToken(e, key, b), Decision{Verdict: Write}, true
}

// store replaces key's state, durably first if persist is set.
func (t *Table) store(key Key, st State, persist bool) error {
	if persist {
		if err := t.persist(key, st); err != nil {
			return err
		}
	}
	t.mu.Lock()
	if e := t.entries[key]; e != nil {
		cp := st
		e.st = &cp
	}
	t.mu.Unlock()
	return nil
}

// WrittenAll records each token's batch at its base offset and makes the
// new states durable in one group commit. The next batch of each key may go
// to the backend as soon as this one's answer is known, before the state is
// on disk: a crash in between leaves batches in the backend that the state
// does not know, which settle finds when they are retried.
//
// Whether the caller must wait for the disk before it answers the client
// depends on who else remembers the batch. A backend that deduplicates
// (DropsLateCopies: every batch goes to it under a durable pairing with the
// client's epoch and sequences) holds the exact producer state itself, so
// the answer goes out at once and a state a crash loses is made up by the
// backend (Begin lets it decide for a state that may lag it). Otherwise the
// state must be durable first: a retry answered from a state a crash then
// lost would meet the older one. There, a state that could not be made
// durable gets an error and becomes unverified: eosproxy must not answer
// "ok" for it.
func WrittenAll(toks []*Token, offsets []int64) []error {
	if len(toks) == 0 {
		return nil
	}
	t := toks[0].t
	now := t.now().UnixMilli()
	lazy := t.backend.DropsLateCopies()
	var waits []chan error
	var writes []*stateWrite
	if !lazy {
		waits, writes = make([]chan error, len(toks)), make([]*stateWrite, len(toks))
	}
	for i, tok := range toks {
		t.mu.Lock()
		var base State
		e := t.entries[tok.key]
		if e != nil && e.st != nil {
			base = *e.st
		}
		ns := Apply(base, tok.batch, offsets[i], now)
		// The next batch may follow before anything else is written.
		ns.Intent = true
		w := &stateWrite{done: make(chan struct{})}
		if lazy {
			key := tok.key
			t.submitLazy(key, ns, func(err error) {
				if err != nil {
					t.log.Warn().Err(err).Msg("producer state not recorded; the backend's own state covers it")
				}
				t.settleWrite(key, w, err)
			})
		} else {
			waits[i], writes[i] = t.submit(tok.key, ns), w
		}
		if e != nil {
			e.write = w
		}
		t.mu.Unlock()
		tok.release(&ns)
	}
	if lazy {
		return make([]error, len(toks))
	}
	return t.settleWrites(toks, waits, writes)
}

// settleWrites waits for WrittenAll's durable writes and marks a state whose
// write failed unverified.
func (t *Table) settleWrites(toks []*Token, waits []chan error, writes []*stateWrite) []error {
	errs := make([]error, len(toks))
	for i, tok := range toks {
		errs[i] = <-waits[i]
		t.settleWrite(tok.key, writes[i], errs[i])
	}
	return errs
}

// settleWrite records the outcome of key's state write w: a state whose
// write failed becomes unverified.
func (t *Table) settleWrite(key Key, w *stateWrite, err error) {
	t.mu.Lock()
	w.err = err
	e := t.entries[key]
	if e != nil && err != nil && e.st != nil {
		cp := *e.st
		cp.Unverified = true
		e.st = &cp
	}
	if e != nil && e.write == w && err == nil {
		e.write = nil // a later write, queued after this one, keeps its own
	}
	t.mu.Unlock()
	close(w.done)
}

// Failed releases the token after the backend did not take the batch. If the
// backend may have written it anyway (ambiguous), the state becomes
// unverified and the retry is checked against the backend first.
func (tok *Token) Failed(ambiguous bool) {
	t := tok.t
	var ns *State
	if ambiguous {
		t.mu.Lock()
		if e := t.entries[tok.key]; e != nil && e.st != nil {
			cp := *e.st
			cp.Unverified = true
			ns = &cp
			e.unclearAt = t.now()
		}
		t.mu.Unlock()
	}
	tok.release(ns)
}

func (tok *Token) release(ns *State) {
	t := tok.t
	t.mu.Lock()
	if e := t.entries[tok.key]; e != nil {
		// With batches pipelined (pipeline), later tokens may still be in
		// flight: the state takes this one's outcome all the same.
		if ns != nil {
			e.st = ns
		}
		if e.inflight == tok {
			e.inflight, e.proj = nil, nil
		} else if ns == nil || ns.Unverified {
			// A pipelined batch behind this one is refused by the
			// backend or settled later; nothing more is projected on
			// this outcome.
			e.proj = nil
		}
	}
	t.mu.Unlock()
	close(tok.done)
}

// Persistence of producer states: one loop writes every queued state in one
// badger transaction (one fsync for many producers), and the states'
// encoding, which the transaction coordinator shares. Apart from the table
// because writes are queued and answered asynchronously.

package dedup

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eosproxy/eosproxy/store"
)

// commitQueue holds the writes waiting for the commit loop, in the order
// they were queued (a later state of a key must win over an earlier one).
type commitQueue struct {
	qmu    sync.Mutex
	queue  []commit
	urgent bool // a queued write that someone waits for
	// kick wakes the commit loop: for a write someone waits for, and for
	// the first write into an empty queue. A lazy write into a queue that
	// already holds one wakes nobody: the loop collects it with the rest.
	kick chan struct{}
	// closing orders enqueue against Close, so no write is queued after the
	// commit loop's last drain.
	closing sync.RWMutex
	closed  bool
	// beforeCommit, if set, runs before each group commit (tests hold
	// commits with it).
	beforeCommit atomic.Pointer[func()]
}

// commit is one durable write (or delete, when val is nil) waiting for the
// group commit.
type commit struct {
	key  []byte
	val  []byte
	done func(error) // called by the commit loop with the write's outcome
	// lazy: nobody waits for it (WrittenAll on a backend that keeps the
	// producer state itself); it may wait up to lazyWindow for company.
	lazy bool
}

// lazyWindow is how long a group commit of lazy writes only waits for more:
// one fsync for all the states written meanwhile (a state written twice is
// written once), instead of one per answer. Nothing waits on it, and a
// crash costs what the backend's own producer state makes up for.
const lazyWindow = 10 * time.Millisecond

// maxCommitKeys bounds one badger transaction (it holds only so many keys);
// a larger queue is written in several.
const maxCommitKeys = 4096

func (t *Table) persist(key Key, st State) error { return <-t.submit(key, st) }

// submit queues a durable write of key's state and returns where its
// outcome will be sent.
func (t *Table) submit(key Key, st State) chan error {
	return t.enqueueWait(commit{key: encodeKey(key), val: MarshalState(st)})
}

// submitLazy is submit for a write nobody waits for: then runs on the
// commit loop once it is written (or failed), instead of a goroutine per
// write waiting for it.
func (t *Table) submitLazy(key Key, st State, then func(error)) {
	t.enqueue(commit{key: encodeKey(key), val: MarshalState(st), done: then, lazy: true})
}

// enqueueWait queues c and returns where its outcome will be sent.
func (t *Table) enqueueWait(c commit) chan error {
	ch := make(chan error, 1)
	c.done = func(err error) { ch <- err }
	t.enqueue(c)
	return ch
}

func (t *Table) enqueue(c commit) {
	t.closing.RLock()
	defer t.closing.RUnlock()
	if t.closed {
		// Not on this goroutine: a lazy write's callback takes the table's
		// lock, which WrittenAll holds while it queues.
		go c.done(errors.New("producer state table closed"))
		return
	}
	t.qmu.Lock()
	t.queue = append(t.queue, c)
	wake := len(t.queue) == 1 || len(t.queue) == maxCommitKeys || !c.lazy
	if !c.lazy {
		t.urgent = true
	}
	t.qmu.Unlock()
	if wake {
		select {
		case t.kick <- struct{}{}:
		default: // a wake-up is pending already
		}
	}
}

// commitLoop writes every state update waiting at the time in one badger
// transaction, so concurrent producers share each fsync. Writes nobody
// waits for wait up to lazyWindow for more before they go.
func (t *Table) commitLoop() {
	defer t.wg.Done()
	for {
		stopping := false
		select {
		case <-t.kick:
		case <-t.stop:
			stopping = true // drain what was queued before Close
		}
		if !stopping && t.lazyOnly() {
			timer := time.NewTimer(lazyWindow)
		gather:
			for {
				select {
				case <-t.kick:
					if !t.lazyOnly() {
						break gather
					}
				case <-timer.C:
					break gather
				case <-t.stop:
					stopping = true
					break gather
				}
			}
			timer.Stop()
		}
		t.qmu.Lock()
		batch := t.queue
		t.queue, t.urgent = nil, false
		t.qmu.Unlock()
		for len(batch) > 0 {
			n := min(len(batch), maxCommitKeys)
			t.commit(batch[:n])
			batch = batch[n:]
		}
		if stopping {
			return
		}
	}
}

// lazyOnly says whether the queue holds writes, none of which anybody
// waits for, and fewer than one transaction takes.
func (t *Table) lazyOnly() bool {
	t.qmu.Lock()
	defer t.qmu.Unlock()
	return len(t.queue) > 0 && len(t.queue) < maxCommitKeys && !t.urgent
}

// commit writes batch in one badger transaction and reports the outcome to
// each write.
func (t *Table) commit(batch []commit) {
	if hook := t.beforeCommit.Load(); hook != nil {
		(*hook)()
	}
	err := t.db.Update(func(txn *store.Txn) error {
		for _, c := range batch {
			var err error
			if c.val == nil {
				err = txn.Delete(c.key)
			} else {
				err = txn.Set(c.key, c.val)
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		err = fmt.Errorf("persist producer state: %w", err)
		t.log.Error().Err(err).Msg("producer state not durable")
	}
	for _, c := range batch {
		c.done(err)
	}
}

func (t *Table) deleteKeys(keys [][]byte) error {
	if len(keys) == 0 {
		return nil
	}
	return t.db.Update(func(txn *store.Txn) error {
		for _, k := range keys {
			if err := txn.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
}

func encodeKey(k Key) []byte {
	b := append([]byte{}, statePrefix...)
	b = binary.BigEndian.AppendUint64(b, uint64(k.ProducerID))
	b = binary.BigEndian.AppendUint32(b, uint32(k.Partition))
	return append(b, k.Topic...)
}

func decodeKey(b []byte) (Key, error) {
	b = b[len(statePrefix):]
	if len(b) < 12 {
		return Key{}, fmt.Errorf("corrupt producer state key %q", b)
	}
	return Key{
		ProducerID: int64(binary.BigEndian.Uint64(b)),
		Partition:  int32(binary.BigEndian.Uint32(b[8:])),
		Topic:      string(b[12:]),
	}, nil
}

// Version 1 has no flags (every state is taken as having a batch in
// flight); version 2 adds a flags byte before the batch count.
const (
	stateVersion1 = 1
	stateVersion  = 2
	flagIntent    = 1
)

// MarshalState encodes a producer's state for badger; the transaction
// coordinator keeps its producers' sequence state in the same form.
func MarshalState(st State) []byte {
	b := []byte{stateVersion}
	b = binary.BigEndian.AppendUint16(b, uint16(st.Epoch))
	b = binary.BigEndian.AppendUint64(b, uint64(st.LowWater))
	b = binary.BigEndian.AppendUint64(b, uint64(st.LastUpdateMs))
	var flags byte
	if st.Intent {
		flags |= flagIntent
	}
	b = append(b, flags, byte(len(st.Batches)))
	for _, w := range st.Batches {
		b = binary.BigEndian.AppendUint16(b, uint16(w.Epoch))
		b = binary.BigEndian.AppendUint32(b, uint32(w.FirstSeq))
		b = binary.BigEndian.AppendUint32(b, uint32(w.LastSeq))
		b = binary.BigEndian.AppendUint64(b, uint64(w.BaseOffset))
	}
	return b
}

// UnmarshalState decodes what MarshalState encoded.
func UnmarshalState(b []byte) (State, error) {
	const per = 2 + 4 + 4 + 8
	head := 1 + 2 + 8 + 8 + 1
	if len(b) > 0 && b[0] == stateVersion {
		head++
	}
	if len(b) < head || b[0] != stateVersion && b[0] != stateVersion1 {
		return State{}, errors.New("corrupt or unknown state encoding")
	}
	st := State{
		Epoch:        int16(binary.BigEndian.Uint16(b[1:])),
		LowWater:     int64(binary.BigEndian.Uint64(b[3:])),
		LastUpdateMs: int64(binary.BigEndian.Uint64(b[11:])),
		Intent:       b[0] == stateVersion1 || b[19]&flagIntent != 0,
	}
	n := int(b[head-1])
	if n > maxRememberedBatches || len(b) != head+n*per {
		return State{}, errors.New("corrupt state batches")
	}
	for i := 0; i < n; i++ {
		p := b[head+i*per:]
		st.Batches = append(st.Batches, Written{
			Epoch:      int16(binary.BigEndian.Uint16(p)),
			FirstSeq:   int32(binary.BigEndian.Uint32(p[2:])),
			LastSeq:    int32(binary.BigEndian.Uint32(p[6:])),
			BaseOffset: int64(binary.BigEndian.Uint64(p[10:])),
		})
	}
	return st, nil
}

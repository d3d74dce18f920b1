// Replication of the store's writes, for eosproxy's cluster mode: every
// write transaction's changes, in commit order, go to a Replicator (the
// cluster's log in the backend) and a writer proceeds only once they are
// durable there. The badger database is then a local materialisation of
// that log, rebuilt from it whenever this instance is not sure it matches.
// Without a Replicator nothing here is used.

package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/dgraph-io/badger/v4"
)

// Replicator makes a committed set of changes durable outside this store.
// Append is called in commit order, under the store's replication lock, so
// it must only queue; the returned wait blocks until the set is durable (or
// refused: then this instance must stop writing).
type Replicator interface {
	Append(set []byte) (wait func() error)
}

// Blobs keeps large values (buffered record batches) outside badger: a Set
// through SetBlob stores a reference to the blob locally, and a replica
// stores the blob in its own Blobs and the reference Put returns.
type Blobs interface {
	Put(blob []byte) (ref []byte, err error)
}

// Mutation is one key's change in a replicated set.
type Mutation struct {
	Key    []byte
	Value  []byte
	Blob   []byte // with Value a local reference to it (SetBlob)
	Delete bool
}

// Txn is a read-write transaction; its writes are captured for the
// Replicator when one is set.
type Txn struct {
	*badger.Txn
	capture bool
	muts    []Mutation
}

// Set stores value at key.
func (t *Txn) Set(key, value []byte) error {
	if err := t.Txn.Set(key, value); err != nil {
		return err
	}
	if t.capture {
		t.muts = append(t.muts, Mutation{Key: key, Value: value})
	}
	return nil
}

// SetBlob stores ref, a local reference to blob, at key; replicas get the
// blob itself and store their own reference.
func (t *Txn) SetBlob(key, ref, blob []byte) error {
	if err := t.Txn.Set(key, ref); err != nil {
		return err
	}
	if t.capture {
		t.muts = append(t.muts, Mutation{Key: key, Value: ref, Blob: blob})
	}
	return nil
}

// Delete removes key.
func (t *Txn) Delete(key []byte) error {
	if err := t.Txn.Delete(key); err != nil {
		return err
	}
	if t.capture {
		t.muts = append(t.muts, Mutation{Key: key, Delete: true})
	}
	return nil
}

// ErrReplication wraps every write the Replicator refused or could not make
// durable. In cluster mode that means this instance no longer owns the
// state (the log's contract: a failed write gives ownership up), so the
// caller should answer as a broker that lost leadership does, retriably,
// and not record anything about the failure: its own state is about to be
// dropped and rebuilt from the log, where the next owner continues.
var ErrReplication = errors.New("the state's replica refused the write")

// Checkpointer is a Replicator that can also take a full image of the
// state, after which a replay needs nothing older.
type Checkpointer interface {
	AppendCheckpoint(image []byte) (wait func() error)
}

// replication is the DB's replication state.
type replication struct {
	mu    sync.Mutex // held from a write's commit until its set is queued: log order is commit order
	to    Replicator
	local [][]byte // key prefixes that are this instance's own: neither replicated nor reset
	since int64    // bytes replicated since the last checkpoint
}

// SetReplicator sends every later write to r. Keys under the local prefixes
// belong to this instance (its id, its ports) and are not replicated.
func (d *DB) SetReplicator(r Replicator, local ...[]byte) {
	d.repl.mu.Lock()
	defer d.repl.mu.Unlock()
	d.repl.to, d.repl.local = r, local
}

// Replicated reports whether writes go to a Replicator: the local files
// are then a cache, rebuilt from it, and need no fsync of their own.
func (d *DB) Replicated() bool {
	d.repl.mu.Lock()
	defer d.repl.mu.Unlock()
	return d.repl.to != nil
}

func (d *DB) isLocal(key []byte) bool {
	for _, p := range d.repl.local {
		if bytes.HasPrefix(key, p) {
			return true
		}
	}
	return false
}

// Update runs fn in a read-write transaction and commits it; with a
// Replicator, it returns once the changes are durable there too.
func (d *DB) Update(fn func(*Txn) error) error { return d.UpdateAsync(fn)() }

// UpdateAsync is Update in two steps: it commits fn's transaction locally
// and, with a Replicator, queues the changes there, after every write
// queued before; wait returns once they are durable there. A caller with
// more writes in order need not wait for one before queueing the next,
// as the log keeps their order. Without a Replicator it returns after
// the local commit, and wait only gives its error.
func (d *DB) UpdateAsync(fn func(*Txn) error) (wait func() error) {
	d.repl.mu.Lock()
	r := d.repl.to
	if r == nil {
		d.repl.mu.Unlock()
		err := d.DB.Update(func(t *badger.Txn) error { return fn(&Txn{Txn: t}) })
		return func() error { return err }
	}
	var tx *Txn
	err := d.DB.Update(func(t *badger.Txn) error {
		tx = &Txn{Txn: t, capture: true}
		return fn(tx)
	})
	var appended func() error
	if err == nil {
		muts := tx.muts[:0:0]
		for _, m := range tx.muts {
			if !d.isLocal(m.Key) {
				muts = append(muts, m)
			}
		}
		if len(muts) > 0 {
			set := EncodeSet(muts)
			d.repl.since += int64(len(set))
			appended = r.Append(set)
		}
	}
	d.repl.mu.Unlock()
	if err != nil || appended == nil {
		return func() error { return err }
	}
	return func() error {
		if err := appended(); err != nil {
			return fmt.Errorf("%w: %w", ErrReplication, err)
		}
		return nil
	}
}

// ReplicatedSinceCheckpoint is how many bytes of sets went to the
// Replicator since the last Checkpoint.
func (d *DB) ReplicatedSinceCheckpoint() int64 {
	d.repl.mu.Lock()
	defer d.repl.mu.Unlock()
	return d.repl.since
}

// Checkpoint sends the Replicator an image of every replicated key, taken
// with writes held back so that it stands exactly where it goes in the
// log; blob says which values are references to blobs and returns the
// blob. It returns the image's size once the image is durable.
func (d *DB) Checkpoint(blob func(key, value []byte) ([]byte, bool, error)) (int, error) {
	d.repl.mu.Lock()
	cp, ok := d.repl.to.(Checkpointer)
	if !ok {
		d.repl.mu.Unlock()
		return 0, errors.New("checkpoint: the store is not replicated to a log that takes checkpoints")
	}
	var muts []Mutation
	err := d.View(func(t *badger.Txn) error {
		it := t.NewIterator(badger.IteratorOptions{PrefetchValues: true, PrefetchSize: 64})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			k := item.KeyCopy(nil)
			if d.isLocal(k) {
				continue
			}
			v, err := item.ValueCopy(nil)
			if err != nil {
				return err
			}
			m := Mutation{Key: k, Value: v}
			if b, isBlob, err := blob(k, v); err != nil {
				return fmt.Errorf("key %q: %w", k, err)
			} else if isBlob {
				m.Blob = b
			}
			muts = append(muts, m)
		}
		return nil
	})
	if err != nil {
		d.repl.mu.Unlock()
		return 0, fmt.Errorf("checkpoint: read the state: %w", err)
	}
	image := EncodeSet(muts)
	wait := cp.AppendCheckpoint(image)
	d.repl.since = 0
	d.repl.mu.Unlock()
	if err := wait(); err != nil {
		return 0, fmt.Errorf("checkpoint: %w", err)
	}
	return len(image), nil
}

// DeleteKeys removes keys, many at a time.
func (d *DB) DeleteKeys(keys [][]byte) error {
	d.repl.mu.Lock()
	replicated := d.repl.to != nil
	d.repl.mu.Unlock()
	if !replicated {
		wb := d.DB.NewWriteBatch()
		defer wb.Cancel()
		for _, k := range keys {
			if err := wb.Delete(k); err != nil {
				return err
			}
		}
		return wb.Flush()
	}
	// A badger transaction holds only so many keys.
	for len(keys) > 0 {
		n := min(len(keys), 2000)
		chunk := keys[:n]
		keys = keys[n:]
		if err := d.Update(func(t *Txn) error {
			for _, k := range chunk {
				if err := t.Delete(k); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return err
		}
	}
	return nil
}

// Apply writes a set another instance replicated: blobs go to b first.
func (d *DB) Apply(set []byte, b Blobs) error {
	muts, err := DecodeSet(set)
	if err != nil {
		return err
	}
	for len(muts) > 0 {
		n := min(len(muts), 2000)
		chunk := muts[:n]
		muts = muts[n:]
		err := d.DB.Update(func(t *badger.Txn) error {
			for _, m := range chunk {
				var err error
				switch {
				case m.Delete:
					err = t.Delete(m.Key)
				case m.Blob != nil:
					if b == nil {
						return errors.New("a replicated value needs a blob store")
					}
					var ref []byte
					if ref, err = b.Put(m.Blob); err == nil {
						err = t.Set(m.Key, ref)
					}
				default:
					err = t.Set(m.Key, m.Value)
				}
				if err != nil {
					return fmt.Errorf("apply replicated key %q: %w", m.Key, err)
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// Reset drops everything but the local keys: the state is about to be
// replayed from the cluster's log.
func (d *DB) Reset() error {
	type kv struct{ k, v []byte }
	var keep []kv
	for _, p := range d.repl.local {
		if err := d.Scan(p, func(k, v []byte) error {
			keep = append(keep, kv{bytes.Clone(k), bytes.Clone(v)})
			return nil
		}); err != nil {
			return fmt.Errorf("keep local keys: %w", err)
		}
	}
	if err := d.DB.DropAll(); err != nil {
		return fmt.Errorf("drop the local state: %w", err)
	}
	return d.DB.Update(func(t *badger.Txn) error {
		for _, e := range keep {
			if err := t.Set(e.k, e.v); err != nil {
				return err
			}
		}
		return nil
	})
}

// A set is: per mutation a kind byte (0 set, 1 delete, 2 blob), then the
// key, and for a set or blob the value, each as a uvarint length and bytes.
const (
	kindSet byte = iota
	kindDelete
	kindBlob
)

// EncodeSet encodes muts for a Replicator.
func EncodeSet(muts []Mutation) []byte {
	n := 0
	for _, m := range muts {
		n += 1 + 2*binary.MaxVarintLen32 + len(m.Key) + len(m.Value) + len(m.Blob)
	}
	b := make([]byte, 0, n)
	for _, m := range muts {
		switch {
		case m.Delete:
			b = append(b, kindDelete)
			b = appendBytes(b, m.Key)
		case m.Blob != nil:
			b = append(b, kindBlob)
			b = appendBytes(b, m.Key)
			b = appendBytes(b, m.Blob)
		default:
			b = append(b, kindSet)
			b = appendBytes(b, m.Key)
			b = appendBytes(b, m.Value)
		}
	}
	return b
}

func appendBytes(b, v []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

// DecodeSet decodes what EncodeSet encoded.
func DecodeSet(b []byte) ([]Mutation, error) {
	var muts []Mutation
	next := func() ([]byte, error) {
		n, w := binary.Uvarint(b)
		if w <= 0 || uint64(len(b)-w) < n {
			return nil, errors.New("truncated replicated set")
		}
		v := b[w : w+int(n) : w+int(n)]
		b = b[w+int(n):]
		return v, nil
	}
	for len(b) > 0 {
		kind := b[0]
		b = b[1:]
		k, err := next()
		if err != nil {
			return nil, err
		}
		m := Mutation{Key: k}
		switch kind {
		case kindDelete:
			m.Delete = true
		case kindSet, kindBlob:
			v, err := next()
			if err != nil {
				return nil, err
			}
			if kind == kindBlob {
				m.Blob = v
			} else {
				m.Value = v
			}
		default:
			return nil, fmt.Errorf("replicated set: unknown kind %d", kind)
		}
		muts = append(muts, m)
	}
	return muts, nil
}

// Package store opens eosproxy's badger database and holds the small helpers
// the other packages use over it. Everything eosproxy must remember across a
// restart lives here, under key prefixes owned by one package each.
package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"github.com/rs/zerolog"
)

// DB is eosproxy's durable state.
type DB struct {
	*badger.DB
	stop, done chan struct{} // value-log garbage collection; nil in memory
	repl       replication
}

// Open opens (creating if needed) the badger database under dir.
func Open(dir string, log zerolog.Logger) (*DB, error) { return open(dir, true, log) }

// OpenCache opens the badger database under dir as a cache of state kept
// durable elsewhere (a cluster's log): its writes are not synced.
func OpenCache(dir string, log zerolog.Logger) (*DB, error) { return open(dir, false, log) }

func open(dir string, sync bool, log zerolog.Logger) (*DB, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	opts := badger.DefaultOptions(dir).
		WithLogger(badgerLogger{log.With().Str("component", "badger").Logger()}).
		// eosproxy keeps little state per producer; the defaults size badger
		// for bulk ingest and would cost hundreds of MiB of RSS.
		WithMemTableSize(16 << 20).
		WithNumMemtables(2).
		WithBlockCacheSize(16 << 20).
		WithIndexCacheSize(8 << 20).
		WithValueLogFileSize(64 << 20).
		// Buffered transactional batches (up to a MiB each) go to the value
		// log, written once; only small values and pointers live in the LSM
		// tree. Inline, every compaction would rewrite them, through
		// table builders holding hundreds of MiB.
		WithValueThreshold(4 << 10).
		WithNumCompactors(2).
		// Record batches are often compressed by their producers already.
		WithCompression(options.None).
		WithSyncWrites(sync)
	if err := removeEmptyMemtables(dir, log); err != nil {
		return nil, err
	}
	db, err := badger.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("open badger at %s: %w", dir, err)
	}
	d := &DB{DB: db, stop: make(chan struct{}), done: make(chan struct{})}
	go d.gcLoop(log)
	return d, nil
}

// removeEmptyMemtables deletes memtable files of length zero. Badger creates
// a memtable file and then sizes it; killed in between (eosproxy is
// SIGKILLed at any instant), it leaves an empty file that its next Open
// refuses ("while opening fid: N err: Create a new file",
// dgraph-io/badger#2207). An empty file holds no write, so removing it loses
// nothing.
func removeEmptyMemtables(dir string, log zerolog.Logger) error {
	mems, err := filepath.Glob(filepath.Join(dir, "*.mem"))
	if err != nil {
		return fmt.Errorf("list memtables in %s: %w", dir, err)
	}
	for _, m := range mems {
		fi, err := os.Stat(m)
		if err != nil || fi.Size() != 0 {
			continue
		}
		if err := os.Remove(m); err != nil {
			return fmt.Errorf("remove empty memtable %s: %w", m, err)
		}
		log.Warn().Str("file", m).Msg("removed an empty memtable file left by a crash")
	}
	return nil
}

// gcLoop reclaims value-log space: committed or aborted transactions leave
// whole value-log files of deleted batches behind.
func (d *DB) gcLoop(log zerolog.Logger) {
	defer close(d.done)
	t := time.NewTicker(30 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-d.stop:
			return
		case <-t.C:
		}
		for n := 0; ; n++ {
			err := d.RunValueLogGC(0.5)
			if err != nil {
				if !errors.Is(err, badger.ErrNoRewrite) && !errors.Is(err, badger.ErrRejected) {
					log.Warn().Err(err).Msg("value log garbage collection failed")
				}
				break
			}
			if n > 100 {
				break
			}
		}
	}
}

// Close stops the garbage collection and closes the database.
func (d *DB) Close() error {
	if d.stop != nil {
		close(d.stop)
		<-d.done
		d.stop = nil
	}
	return d.DB.Close()
}

// OpenInMemory opens a database that lives only as long as the process: for
// tests and tools that need eosproxy's logic but not its durability.
func OpenInMemory(log zerolog.Logger) (*DB, error) {
	opts := badger.DefaultOptions("").WithInMemory(true).
		WithLogger(badgerLogger{log.With().Str("component", "badger").Logger()}).
		WithMemTableSize(8 << 20).WithBlockCacheSize(4 << 20).WithIndexCacheSize(4 << 20)
	db, err := badger.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("open in-memory badger: %w", err)
	}
	return &DB{DB: db}, nil
}

// Get returns the value stored at key, or nil if there is none.
func (d *DB) Get(key []byte) ([]byte, error) {
	var v []byte
	err := d.View(func(txn *badger.Txn) error {
		item, err := txn.Get(key)
		if err != nil {
			return err
		}
		v, err = item.ValueCopy(nil)
		return err
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, nil
	}
	return v, err
}

// Put durably stores value at key.
func (d *DB) Put(key, value []byte) error {
	return d.Update(func(txn *Txn) error { return txn.Set(key, value) })
}

// Scan calls fn for every key with the given prefix, in key order.
func (d *DB) Scan(prefix []byte, fn func(key, value []byte) error) error {
	return d.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true, PrefetchSize: 64})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			if err := item.Value(func(v []byte) error { return fn(item.Key(), v) }); err != nil {
				return err
			}
		}
		return nil
	})
}

type badgerLogger struct{ log zerolog.Logger }

func (l badgerLogger) Errorf(f string, a ...any)   { l.log.Error().Msgf(f, a...) }
func (l badgerLogger) Warningf(f string, a ...any) { l.log.Warn().Msgf(f, a...) }
func (l badgerLogger) Infof(f string, a ...any)    { l.log.Debug().Msgf(f, a...) }
func (l badgerLogger) Debugf(f string, a ...any)   { l.log.Trace().Msgf(f, a...) }

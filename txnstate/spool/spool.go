// Package spool keeps the record batches of open transactions on disk: it
// appends them to segment files and reads them back with pread. Unlike a
// memory-mapped store (badger's value log), the data then lives in the
// kernel's page cache, not in eosproxy's own resident memory, however much
// is buffered; only the latest appends, up to a bound, are also kept in
// memory until they are read once, as a commit forwards them. The index of
// what is where lives in badger, written after the data it points to is
// durable (Sync).
package spool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/rs/zerolog"
)

// DefaultSegmentBytes is the size at which a new segment file is started.
const DefaultSegmentBytes = 64 << 20

// DefaultMemoryBytes bounds the appended bytes a spool also keeps in memory
// for their first Read: a few commits' worth, far below the RSS that a
// large buffered transaction is allowed (the rest is read back from disk).
const DefaultMemoryBytes = 16 << 20

const suffix = ".spool"

// Ref locates one stored blob.
type Ref struct {
	Segment uint64
	Offset  int64
	Length  int32
}

// RefLen is the size of a marshalled Ref.
const RefLen = 8 + 8 + 4

// Marshal encodes r in RefLen bytes.
func (r Ref) Marshal() []byte {
	b := binary.BigEndian.AppendUint64(make([]byte, 0, RefLen), r.Segment)
	b = binary.BigEndian.AppendUint64(b, uint64(r.Offset))
	return binary.BigEndian.AppendUint32(b, uint32(r.Length))
}

// UnmarshalRef decodes what Marshal encoded.
func UnmarshalRef(b []byte) (Ref, error) {
	if len(b) != RefLen {
		return Ref{}, fmt.Errorf("spool reference of %d bytes, want %d", len(b), RefLen)
	}
	r := Ref{
		Segment: binary.BigEndian.Uint64(b),
		Offset:  int64(binary.BigEndian.Uint64(b[8:])),
		Length:  int32(binary.BigEndian.Uint32(b[16:])),
	}
	if r.Offset < 0 || r.Length < 0 {
		return Ref{}, errors.New("corrupt spool reference")
	}
	return r, nil
}

type segment struct {
	id     uint64
	f      *os.File
	size   int64 // bytes written
	synced int64 // bytes known durable
	refs   int
}

// Spool is a set of append-only segment files in one directory.
type Spool struct {
	dir     string
	segSize int64
	log     zerolog.Logger

	mu     sync.Mutex
	segs   map[uint64]*segment
	cur    *segment
	closed bool

	// syncMu serialises fsyncs; callers queued behind one usually find
	// their data covered by it when their turn comes (group commit).
	syncMu sync.Mutex
	cache  bool // the bytes are durable elsewhere: no fsync

	// mem holds appended bytes until their first Read or their Release,
	// up to memMax in all: most transactions commit soon after their
	// batches are buffered, and forwarding them from memory saves a pread
	// and a fresh copy of every byte (a tenth of eosproxy's CPU under
	// transactions).
	mem      map[Ref][]byte
	memBytes int64
	memMax   int64
}

// AsCache makes the spool a cache of bytes kept durable elsewhere (a
// cluster's log carries every buffered batch): Sync and new segments no
// longer wait for the disk.
func (s *Spool) AsCache() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cache = true
}

// Open opens the spool in dir, creating it if needed. Segments of an earlier
// run stay readable; new data goes to a new segment. Call Retain for every
// reference the index still holds, then Sweep.
func Open(dir string, segmentBytes int64, log zerolog.Logger) (*Spool, error) {
	if segmentBytes <= 0 {
		segmentBytes = DefaultSegmentBytes
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create spool dir: %w", err)
	}
	s := &Spool{dir: dir, segSize: segmentBytes, log: log, segs: map[uint64]*segment{},
		mem: map[Ref][]byte{}, memMax: DefaultMemoryBytes}
	names, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read spool dir: %w", err)
	}
	for _, de := range names {
		name := de.Name()
		if !strings.HasSuffix(name, suffix) {
			continue
		}
		id, err := strconv.ParseUint(strings.TrimSuffix(name, suffix), 16, 64)
		if err != nil {
			continue
		}
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			s.closeFiles()
			return nil, fmt.Errorf("open spool segment: %w", err)
		}
		st, err := f.Stat()
		if err != nil {
			f.Close()
			s.closeFiles()
			return nil, fmt.Errorf("stat spool segment: %w", err)
		}
		s.segs[id] = &segment{id: id, f: f, size: st.Size(), synced: st.Size()}
	}
	return s, nil
}

func (s *Spool) path(id uint64) string {
	return filepath.Join(s.dir, fmt.Sprintf("%016x%s", id, suffix))
}

// KeepInMemory sets how many appended bytes the spool keeps in memory for
// their first Read (DefaultMemoryBytes; 0: none).
func (s *Spool) KeepInMemory(n int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.memMax = n
}

// Append writes b to the current segment and returns where it is. It is not
// durable until Sync returns for it. The spool may keep b itself for the
// first Read of the reference: the caller must not change it afterwards.
func (s *Spool) Append(b []byte) (Ref, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return Ref{}, errors.New("spool closed")
	}
	if s.cur == nil || (s.cur.size > 0 && s.cur.size+int64(len(b)) > s.segSize) {
		if err := s.rotate(); err != nil {
			return Ref{}, err
		}
	}
	seg := s.cur
	if _, err := seg.f.WriteAt(b, seg.size); err != nil {
		// A partial write leaves garbage past size, overwritten next.
		return Ref{}, fmt.Errorf("append to spool segment %x: %w", seg.id, err)
	}
	r := Ref{Segment: seg.id, Offset: seg.size, Length: int32(len(b))}
	seg.size += int64(len(b))
	seg.refs++
	if s.memBytes+int64(len(b)) <= s.memMax {
		s.mem[r] = b
		s.memBytes += int64(len(b))
	}
	return r, nil
}

// rotate starts a new segment. Called with mu held.
func (s *Spool) rotate() error {
	var id uint64
	for sid := range s.segs {
		id = max(id, sid+1)
	}
	f, err := os.OpenFile(s.path(id), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("create spool segment: %w", err)
	}
	// The new file's name must survive a crash as well as its data.
	if err := s.syncDirUnlessCache(); err != nil {
		f.Close()
		os.Remove(s.path(id))
		return err
	}
	old := s.cur
	s.cur = &segment{id: id, f: f}
	s.segs[id] = s.cur
	if old != nil && old.refs == 0 {
		s.drop(old)
	}
	return nil
}

func (s *Spool) syncDirUnlessCache() error {
	if s.cache {
		return nil
	}
	return syncDir(s.dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open spool dir: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync spool dir: %w", err)
	}
	return nil
}

// Sync returns once r's bytes are durable.
func (s *Spool) Sync(r Ref) error {
	end := r.Offset + int64(r.Length)
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	s.mu.Lock()
	seg := s.segs[r.Segment]
	if seg == nil {
		s.mu.Unlock()
		return fmt.Errorf("spool segment %x is gone", r.Segment)
	}
	if seg.synced >= end || s.cache {
		s.mu.Unlock()
		return nil
	}
	size := seg.size
	s.mu.Unlock()
	if err := seg.f.Sync(); err != nil {
		return fmt.Errorf("sync spool segment %x: %w", seg.id, err)
	}
	s.mu.Lock()
	seg.synced = max(seg.synced, size)
	s.mu.Unlock()
	return nil
}

// Read returns the bytes r points to, which the caller may change: the
// first Read of a reference appended by this process usually returns the
// appended slice itself, from memory; any other reads the disk.
func (s *Spool) Read(r Ref) ([]byte, error) {
	s.mu.Lock()
	if b, ok := s.mem[r]; ok {
		s.forget(r, b)
		s.mu.Unlock()
		return b, nil
	}
	seg := s.segs[r.Segment]
	s.mu.Unlock()
	if seg == nil {
		return nil, fmt.Errorf("spool segment %x is gone", r.Segment)
	}
	b := make([]byte, r.Length)
	if _, err := seg.f.ReadAt(b, r.Offset); err != nil {
		return nil, fmt.Errorf("read spool segment %x at %d: %w", r.Segment, r.Offset, err)
	}
	return b, nil
}

// Retain registers a reference found in the index after Open.
func (s *Spool) Retain(r Ref) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	seg := s.segs[r.Segment]
	if seg == nil || r.Offset+int64(r.Length) > seg.size {
		return fmt.Errorf("spool reference %+v points past the data on disk", r)
	}
	seg.refs++
	return nil
}

// forget drops r's bytes b from memory. Called with mu held.
func (s *Spool) forget(r Ref, b []byte) {
	delete(s.mem, r)
	s.memBytes -= int64(len(b))
}

// Release gives up a reference; a segment no reference needs is deleted.
func (s *Spool) Release(r Ref) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if b, ok := s.mem[r]; ok {
		s.forget(r, b)
	}
	seg := s.segs[r.Segment]
	if seg == nil {
		return
	}
	if seg.refs--; seg.refs <= 0 && seg != s.cur {
		s.drop(seg)
	}
}

// Sweep deletes the segments no retained reference points into: data whose
// index entry was never written (a crash in between) or already deleted.
func (s *Spool) Sweep() {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := make([]uint64, 0, len(s.segs))
	for id := range s.segs {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	for _, id := range ids {
		if seg := s.segs[id]; seg.refs <= 0 && seg != s.cur {
			s.drop(seg)
		}
	}
}

// drop closes and deletes seg. Called with mu held.
func (s *Spool) drop(seg *segment) {
	delete(s.segs, seg.id)
	seg.f.Close()
	if err := os.Remove(s.path(seg.id)); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.log.Warn().Err(err).Uint64("segment", seg.id).Msg("cannot delete spool segment")
	}
}

// DiskBytes is the size of every segment file: what the spool takes on disk.
func (s *Spool) DiskBytes() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var n int64
	for _, seg := range s.segs {
		n += seg.size
	}
	return n
}

// Close closes the segment files.
func (s *Spool) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	clear(s.mem)
	s.memBytes = 0
	s.closeFiles()
	return nil
}

func (s *Spool) closeFiles() {
	for _, seg := range s.segs {
		seg.f.Close()
	}
}

package spool_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/rs/zerolog"

	"github.com/eosproxy/eosproxy/txnstate/spool"
)

func open(t *testing.T, dir string, segmentBytes int64) *spool.Spool {
	t.Helper()
	s, err := spool.Open(dir, segmentBytes, zerolog.Nop())
	if err != nil {
		t.Fatalf("open spool: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// blob returns n bytes that identify (tag, i) and differ from every other
// blob of the test.
func blob(tag, i, n int) []byte {
	b := make([]byte, n)
	rng := rand.New(rand.NewPCG(uint64(tag), uint64(i)))
	for j := range b {
		b[j] = byte(rng.Uint32())
	}
	if n >= 8 {
		binary.BigEndian.PutUint32(b, uint32(tag))
		binary.BigEndian.PutUint32(b[4:], uint32(i))
	}
	return b
}

// segmentFiles lists the ids of the segment files in dir.
func segmentFiles(t *testing.T, dir string) []uint64 {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(dir, "*.spool"))
	if err != nil {
		t.Fatal(err)
	}
	var ids []uint64
	for _, n := range names {
		id, err := strconv.ParseUint(strings.TrimSuffix(filepath.Base(n), ".spool"), 16, 64)
		if err != nil {
			t.Fatalf("segment file %s: %v", n, err)
		}
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

func segmentPath(dir string, id uint64) string {
	return filepath.Join(dir, fmt.Sprintf("%016x.spool", id))
}

func mustAppend(t *testing.T, s *spool.Spool, b []byte) spool.Ref {
	t.Helper()
	r, err := s.Append(b)
	if err != nil {
		t.Fatalf("append %d bytes: %v", len(b), err)
	}
	return r
}

func mustRead(t *testing.T, s *spool.Spool, r spool.Ref, want []byte) {
	t.Helper()
	got, err := s.Read(r)
	if err != nil {
		t.Fatalf("read %+v: %v", r, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("read %+v: content differs from what was appended", r)
	}
}

func TestRefMarshalRoundTrip(t *testing.T) {
	for _, r := range []spool.Ref{
		{},
		{Segment: 1, Offset: 2, Length: 3},
		{Segment: 1<<64 - 1, Offset: 1<<63 - 1, Length: 1<<31 - 1},
	} {
		b := r.Marshal()
		if len(b) != spool.RefLen {
			t.Fatalf("%+v marshals to %d bytes, want %d", r, len(b), spool.RefLen)
		}
		got, err := spool.UnmarshalRef(b)
		if err != nil || got != r {
			t.Fatalf("round trip of %+v: %+v, %v", r, got, err)
		}
	}
}

func TestUnmarshalRefRejects(t *testing.T) {
	good := spool.Ref{Segment: 7, Offset: 100, Length: 20}.Marshal()
	negOffset := slices.Clone(good)
	binary.BigEndian.PutUint64(negOffset[8:], 1<<63)
	negLength := slices.Clone(good)
	binary.BigEndian.PutUint32(negLength[16:], 1<<31)
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"nil", nil},
		{"empty", []byte{}},
		{"one short", good[:spool.RefLen-1]},
		{"one long", append(slices.Clone(good), 0)},
		{"double", append(slices.Clone(good), good...)},
		{"negative offset", negOffset},
		{"negative length", negLength},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if r, err := spool.UnmarshalRef(tc.b); err == nil {
				t.Fatalf("UnmarshalRef accepted %d bytes as %+v", len(tc.b), r)
			}
		})
	}
}

// TestRoundTripAcrossRotation appends blobs of assorted sizes into small
// segments and reads every one back, before and after Sync.
func TestRoundTripAcrossRotation(t *testing.T) {
	const segBytes = 1000
	dir := t.TempDir()
	s := open(t, dir, segBytes)
	rng := rand.New(rand.NewPCG(3, 4))
	var refs []spool.Ref
	var blobs [][]byte
	var total int64
	for i := range 500 {
		n := 1 + rng.IntN(300)
		if i%97 == 0 {
			n = 3 * segBytes // larger than a segment: gets one of its own
		}
		b := blob(1, i, n)
		r := mustAppend(t, s, b)
		if r.Length != int32(n) {
			t.Fatalf("blob %d: ref length %d, want %d", i, r.Length, n)
		}
		if r.Offset+int64(r.Length) > segBytes && r.Offset != 0 {
			t.Fatalf("blob %d at %+v crosses the segment size %d", i, r, segBytes)
		}
		if len(refs) > 0 {
			p := refs[len(refs)-1]
			if r.Segment < p.Segment || (r.Segment == p.Segment && r.Offset != p.Offset+int64(p.Length)) {
				t.Fatalf("blob %d at %+v does not follow %+v", i, r, p)
			}
		}
		// Readable before it is durable.
		mustRead(t, s, r, b)
		if i%3 == 0 {
			if err := s.Sync(r); err != nil {
				t.Fatalf("sync %+v: %v", r, err)
			}
		}
		refs, blobs = append(refs, r), append(blobs, b)
		total += int64(n)
	}
	for _, r := range refs {
		if err := s.Sync(r); err != nil {
			t.Fatalf("sync %+v: %v", r, err)
		}
	}
	for i, r := range refs {
		mustRead(t, s, r, blobs[i])
	}
	segs := map[uint64]bool{}
	for _, r := range refs {
		segs[r.Segment] = true
	}
	if len(segs) < 50 {
		t.Fatalf("only %d segments for %d bytes in %d-byte segments", len(segs), total, segBytes)
	}
	if files := segmentFiles(t, dir); len(files) != len(segs) {
		t.Fatalf("%d segment files, refs name %d segments", len(files), len(segs))
	}
	if got := s.DiskBytes(); got != total {
		t.Fatalf("DiskBytes %d, appended %d", got, total)
	}
	// A ref into a segment that never existed.
	if _, err := s.Read(spool.Ref{Segment: 1 << 40, Length: 1}); err == nil {
		t.Fatal("read from a missing segment succeeded")
	}
	if err := s.Sync(spool.Ref{Segment: 1 << 40, Length: 1}); err == nil {
		t.Fatal("sync of a missing segment succeeded")
	}
}

// TestReopenRetainSweep reopens a spool, retains the references an index
// would still hold and checks that Sweep deletes exactly the segments none
// of them points into.
func TestReopenRetainSweep(t *testing.T) {
	dir := t.TempDir()
	s, err := spool.Open(dir, 512, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	var refs []spool.Ref
	var blobs [][]byte
	for i := range 60 {
		b := blob(2, i, 100)
		r := mustAppend(t, s, b)
		if err := s.Sync(r); err != nil {
			t.Fatal(err)
		}
		refs, blobs = append(refs, r), append(blobs, b)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append([]byte("x")); err == nil {
		t.Fatal("append after Close succeeded")
	}
	before := segmentFiles(t, dir)
	if len(before) < 10 {
		t.Fatalf("want many segments, got %v", before)
	}

	s = open(t, dir, 512)
	// Every segment of the earlier run is readable straight after Open.
	for i, r := range refs {
		mustRead(t, s, r, blobs[i])
	}
	// The index still holds the blobs of even segments, and in segment 1
	// (odd) nothing at all; in the last segment one blob only.
	last := refs[len(refs)-1].Segment
	live := map[uint64]bool{}
	var kept []int
	for i, r := range refs {
		if r.Segment%2 == 0 && (r.Segment != last || r == refs[len(refs)-1]) {
			if err := s.Retain(r); err != nil {
				t.Fatalf("retain %+v: %v", r, err)
			}
			live[r.Segment] = true
			kept = append(kept, i)
		}
	}
	s.Sweep()
	var want []uint64
	for _, id := range before {
		if live[id] {
			want = append(want, id)
		}
	}
	if got := segmentFiles(t, dir); !slices.Equal(got, want) {
		t.Fatalf("after Sweep: segment files %v, want %v", got, want)
	}
	var disk int64
	for _, i := range kept {
		mustRead(t, s, refs[i], blobs[i])
	}
	for _, id := range want {
		st, err := os.Stat(segmentPath(dir, id))
		if err != nil {
			t.Fatal(err)
		}
		disk += st.Size()
	}
	if got := s.DiskBytes(); got != disk {
		t.Fatalf("DiskBytes %d, files hold %d", got, disk)
	}
	for _, r := range refs {
		if !live[r.Segment] {
			if _, err := s.Read(r); err == nil {
				t.Fatalf("read of swept %+v succeeded", r)
			}
			break
		}
	}

	// New data goes to a new segment after every remaining one (the id of
	// a swept segment may be reused: nothing points there any more).
	r := mustAppend(t, s, []byte("after reopen"))
	if r.Segment <= want[len(want)-1] || r.Offset != 0 {
		t.Fatalf("first append after reopen at %+v, remaining segments %v", r, want)
	}
	if err := s.Sync(r); err != nil {
		t.Fatal(err)
	}
	mustRead(t, s, r, []byte("after reopen"))

	// Releasing the retained refs of an old segment deletes its file.
	for _, i := range kept {
		s.Release(refs[i])
	}
	if got := segmentFiles(t, dir); !slices.Equal(got, []uint64{r.Segment}) {
		t.Fatalf("after releasing every old ref: files %v, want only the current %d", got, r.Segment)
	}
}

func TestReleaseDeletesSegment(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, 100)
	a := mustAppend(t, s, blob(3, 0, 40))
	b := mustAppend(t, s, blob(3, 1, 40))
	c := mustAppend(t, s, blob(3, 2, 40)) // rotates: 120 > 100
	if a.Segment != b.Segment || c.Segment == a.Segment {
		t.Fatalf("unexpected layout %+v %+v %+v", a, b, c)
	}
	for _, r := range []spool.Ref{a, b, c} {
		if err := s.Sync(r); err != nil {
			t.Fatal(err)
		}
	}
	if got := s.DiskBytes(); got != 120 {
		t.Fatalf("DiskBytes %d, want 120", got)
	}
	s.Release(a)
	if _, err := os.Stat(segmentPath(dir, a.Segment)); err != nil {
		t.Fatalf("segment deleted while b still needs it: %v", err)
	}
	mustRead(t, s, b, blob(3, 1, 40))
	s.Release(b)
	if _, err := os.Stat(segmentPath(dir, a.Segment)); !os.IsNotExist(err) {
		t.Fatalf("segment %d still there after its last ref was released: %v", a.Segment, err)
	}
	if got := s.DiskBytes(); got != 40 {
		t.Fatalf("DiskBytes %d after deleting a segment, want 40", got)
	}
	if _, err := s.Read(b); err == nil {
		t.Fatal("read from a deleted segment succeeded")
	}
	s.Release(b) // unknown segment: a no-op

	// The current segment stays while it is current, even unreferenced…
	s.Release(c)
	if _, err := os.Stat(segmentPath(dir, c.Segment)); err != nil {
		t.Fatalf("current segment deleted: %v", err)
	}
	// …and goes at the next rotation.
	d := mustAppend(t, s, blob(3, 3, 90))
	if d.Segment == c.Segment {
		t.Fatalf("no rotation: %+v", d)
	}
	if got := segmentFiles(t, dir); !slices.Equal(got, []uint64{d.Segment}) {
		t.Fatalf("files %v, want only %d", got, d.Segment)
	}
	if got := s.DiskBytes(); got != 90 {
		t.Fatalf("DiskBytes %d, want 90", got)
	}
}

func TestRetainPastData(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, 0)
	r := mustAppend(t, s, blob(4, 0, 64))
	if err := s.Sync(r); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = open(t, dir, 0)
	for _, tc := range []struct {
		name string
		ref  spool.Ref
		ok   bool
	}{
		{"exact", r, true},
		{"prefix", spool.Ref{Segment: r.Segment, Offset: 0, Length: 10}, true},
		{"ends at the end", spool.Ref{Segment: r.Segment, Offset: 60, Length: 4}, true},
		{"one byte past", spool.Ref{Segment: r.Segment, Offset: 60, Length: 5}, false},
		{"starts past", spool.Ref{Segment: r.Segment, Offset: 64, Length: 1}, false},
		{"far past", spool.Ref{Segment: r.Segment, Offset: 1 << 40, Length: 1}, false},
		{"unknown segment", spool.Ref{Segment: r.Segment + 1, Offset: 0, Length: 1}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := s.Retain(tc.ref)
			if tc.ok != (err == nil) {
				t.Fatalf("Retain(%+v) = %v, want ok=%v", tc.ref, err, tc.ok)
			}
		})
	}
}

// TestConcurrentAppendSync appends, syncs and reads from many goroutines
// into small segments (run with -race).
func TestConcurrentAppendSync(t *testing.T) {
	const workers, each = 16, 150
	dir := t.TempDir()
	s := open(t, dir, 4096)
	refs := make([][]spool.Ref, workers)
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 9))
			for i := range each {
				b := blob(100+w, i, 8+rng.IntN(700))
				r, err := s.Append(b)
				if err != nil {
					errs <- err
					return
				}
				if err := s.Sync(r); err != nil {
					errs <- fmt.Errorf("sync %+v: %w", r, err)
					return
				}
				got, err := s.Read(r)
				if err != nil || !bytes.Equal(got, b) {
					errs <- fmt.Errorf("worker %d blob %d at %+v: read back %v", w, i, r, err)
					return
				}
				refs[w] = append(refs[w], r)
				_ = s.DiskBytes()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// Every blob intact, no two overlapping.
	type span struct {
		seg        uint64
		start, end int64
	}
	var spans []span
	var total int64
	for w := range workers {
		rng := rand.New(rand.NewPCG(uint64(w), 9))
		for i, r := range refs[w] {
			mustRead(t, s, r, blob(100+w, i, 8+rng.IntN(700)))
			spans = append(spans, span{r.Segment, r.Offset, r.Offset + int64(r.Length)})
			total += int64(r.Length)
		}
	}
	slices.SortFunc(spans, func(a, b span) int {
		if a.seg != b.seg {
			return int(a.seg) - int(b.seg)
		}
		return int(a.start - b.start)
	})
	for i := 1; i < len(spans); i++ {
		if p, c := spans[i-1], spans[i]; p.seg == c.seg && c.start < p.end {
			t.Fatalf("overlapping blobs %+v and %+v", p, c)
		}
	}
	if got := s.DiskBytes(); got != total {
		t.Fatalf("DiskBytes %d, appended %d", got, total)
	}
	// And after a reopen, from the files alone.
	s.Close()
	s = open(t, dir, 4096)
	for w := range workers {
		rng := rand.New(rand.NewPCG(uint64(w), 9))
		for i, r := range refs[w] {
			if err := s.Retain(r); err != nil {
				t.Fatal(err)
			}
			mustRead(t, s, r, blob(100+w, i, 8+rng.IntN(700)))
		}
	}
}

// TestTruncatedSegment simulates a crash: part of a segment was synced,
// the rest was lost (the file is cut back to what was synced, or to the
// middle of an unsynced blob). The synced refs stay readable, the lost ones
// are refused by Retain, and new data does not land on top of old.
func TestTruncatedSegment(t *testing.T) {
	for _, tc := range []struct {
		name  string
		extra int64 // bytes of the first unsynced blob that survived
	}{
		{"at the synced length", 0},
		{"within an unsynced blob", 7},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s, err := spool.Open(dir, 0, zerolog.Nop())
			if err != nil {
				t.Fatal(err)
			}
			var refs []spool.Ref
			for i := range 10 {
				refs = append(refs, mustAppend(t, s, blob(5, i, 50+i)))
			}
			const synced = 5
			if err := s.Sync(refs[synced-1]); err != nil {
				t.Fatal(err)
			}
			syncedLen := refs[synced-1].Offset + int64(refs[synced-1].Length)
			s.Close()
			seg := refs[0].Segment
			if err := os.Truncate(segmentPath(dir, seg), syncedLen+tc.extra); err != nil {
				t.Fatal(err)
			}

			s = open(t, dir, 0)
			for i, r := range refs {
				err := s.Retain(r)
				if i < synced && err != nil {
					t.Fatalf("retain synced %+v: %v", r, err)
				}
				if i >= synced && err == nil {
					t.Fatalf("retain of lost %+v succeeded", r)
				}
			}
			s.Sweep()
			for i := range synced {
				mustRead(t, s, refs[i], blob(5, i, 50+i))
			}
			if got := s.DiskBytes(); got != syncedLen+tc.extra {
				t.Fatalf("DiskBytes %d, file holds %d", got, syncedLen+tc.extra)
			}
			n := mustAppend(t, s, blob(5, 99, 200))
			if n.Segment == seg {
				t.Fatalf("append after reopen went into the old segment: %+v", n)
			}
			if err := s.Sync(n); err != nil {
				t.Fatal(err)
			}
			mustRead(t, s, n, blob(5, 99, 200))
			for i := range synced {
				mustRead(t, s, refs[i], blob(5, i, 50+i))
			}
		})
	}
}

// TestFirstReadFromMemory: the first Read of a fresh append comes from
// memory (the disk's copy is spoiled here, and the read still returns what
// was appended), any later Read from disk, and the memory kept stays within
// its bound and is given back on Release.
func TestFirstReadFromMemory(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, 1<<20)
	s.KeepInMemory(3000)
	var refs []spool.Ref
	var want [][]byte
	for i := range 4 { // 4 × 1000 bytes: the fourth is over the bound
		b := blob(7, i, 1000)
		r, err := s.Append(b)
		if err != nil {
			t.Fatal(err)
		}
		refs, want = append(refs, r), append(want, bytes.Clone(b))
		if err := s.Sync(r); err != nil {
			t.Fatal(err)
		}
	}
	// Spoil the disk's copy of every blob.
	ids := segmentFiles(t, dir)
	if len(ids) != 1 {
		t.Fatalf("segments %v, want one", ids)
	}
	path := filepath.Join(dir, fmt.Sprintf("%016x.spool", ids[0]))
	if err := os.WriteFile(path, make([]byte, 4000), 0o644); err != nil {
		t.Fatal(err)
	}
	for i, r := range refs {
		got, err := s.Read(r)
		if err != nil {
			t.Fatal(err)
		}
		fromMemory := bytes.Equal(got, want[i])
		if fromMemory != (i < 3) {
			t.Errorf("blob %d: first read from memory %v, want %v (3000 bytes kept)", i, fromMemory, i < 3)
		}
		got[0] ^= 0xff // the caller owns what Read returns
		again, err := s.Read(r)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(again, make([]byte, 1000)) {
			t.Errorf("blob %d: second read did not come from disk", i)
		}
	}
	// Read gave the memory back: three more fit, and Release frees one.
	for i := range 3 {
		r, err := s.Append(blob(8, i, 1000))
		if err != nil {
			t.Fatal(err)
		}
		refs = append(refs, r)
	}
	s.Release(refs[4])
	r, err := s.Append(blob(8, 3, 1000))
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.Read(r)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, blob(8, 3, 1000)) {
		t.Error("an append after a Release was not kept in memory")
	}
}

package protocol

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// testBatch describes a magic-2 record batch for makeBatch.
type testBatch struct {
	attrs    int16
	pid      int64
	epoch    int16
	seq      int32
	n        int // records
	baseOff  int64
	leaderEp int32
}

// makeBatch encodes tb as Kafka does, with real records (gzip-compressed
// when the codec bits say gzip, opaque bytes for the other codecs, which
// nothing here decompresses) and a CRC-32C computed here, independently of
// batch.go.
func makeBatch(t testing.TB, tb testBatch) []byte {
	t.Helper()
	var recs []byte
	for i := 0; i < tb.n; i++ {
		r := kmsg.Record{
			OffsetDelta:    int32(i),
			TimestampDelta: int32(3 * i),
			Key:            []byte(fmt.Sprintf("key-%d", i)),
			Value:          bytes.Repeat([]byte{byte('a' + i%26)}, 10+i),
			Headers:        []kmsg.Header{{Key: "h", Value: []byte{byte(i)}}},
		}
		body := r.AppendTo(nil)
		r.Length = int32(len(body) - 1) // the zero length took one byte
		recs = r.AppendTo(recs)
	}
	switch tb.attrs & 0x07 {
	case 0:
	case 1:
		var buf bytes.Buffer
		w := gzip.NewWriter(&buf)
		if _, err := w.Write(recs); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		recs = buf.Bytes()
	default:
		recs = append([]byte("opaque compressed records "), recs...)
	}
	b := kmsg.RecordBatch{
		FirstOffset:          tb.baseOff,
		PartitionLeaderEpoch: tb.leaderEp,
		Magic:                2,
		Attributes:           tb.attrs,
		LastOffsetDelta:      int32(tb.n - 1),
		FirstTimestamp:       1_700_000_000_000,
		MaxTimestamp:         1_700_000_000_000 + int64(3*(tb.n-1)),
		ProducerID:           tb.pid,
		ProducerEpoch:        tb.epoch,
		FirstSequence:        tb.seq,
		NumRecords:           int32(tb.n),
		Records:              recs,
	}
	out := b.AppendTo(nil)
	binary.BigEndian.PutUint32(out[8:], uint32(len(out)-12))
	binary.BigEndian.PutUint32(out[17:], crc32.Checksum(out[21:], crc32.MakeTable(crc32.Castagnoli)))
	return out
}

func TestClearTransactional(t *testing.T) {
	cases := []struct {
		name string
		in   testBatch
	}{
		{"transactional, uncompressed", testBatch{attrs: 0x10, pid: 1234, epoch: 5, seq: 0, n: 3}},
		{"transactional, gzip", testBatch{attrs: 0x11, pid: 77, epoch: 0, seq: 40, n: 5}},
		{"transactional, snappy", testBatch{attrs: 0x12, pid: 1, epoch: 1, seq: 1, n: 2}},
		{"transactional, lz4", testBatch{attrs: 0x13, pid: 2, epoch: 2, seq: 2, n: 2}},
		{"transactional, zstd", testBatch{attrs: 0x14, pid: 3, epoch: 3, seq: 3, n: 2}},
		{"transactional, log-append time, gzip", testBatch{attrs: 0x19, pid: 9, epoch: 9, seq: 9, n: 4}},
		{"transactional, delete horizon", testBatch{attrs: 0x50, pid: 10, epoch: 1, seq: 0, n: 1}},
		{"transactional, largest producer fields", testBatch{attrs: 0x10, pid: 1<<63 - 1, epoch: 32767, seq: 1<<31 - 1, n: 1}},
		{"transactional, producer id 0", testBatch{attrs: 0x10, pid: 0, epoch: 0, seq: 0, n: 1}},
		{"transactional, base offset and leader epoch set", testBatch{attrs: 0x10, pid: 5, epoch: 2, seq: 8, n: 6, baseOff: 12345, leaderEp: 17}},
		{"every other bit set", testBatch{attrs: -1, pid: 4, epoch: 4, seq: 4, n: 2}},
		{"idempotent, not transactional", testBatch{attrs: 0x00, pid: 6, epoch: 0, seq: 100, n: 3}},
		{"idempotent, zstd", testBatch{attrs: 0x04, pid: 6, epoch: 0, seq: 100, n: 3}},
		{"already cleared", testBatch{attrs: 0x01, pid: -1, epoch: -1, seq: -1, n: 2}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			orig := makeBatch(t, tc.in)
			before, err := ParseBatch(orig)
			if err != nil {
				t.Fatalf("test batch refused: %v", err)
			}
			if before.Transactional != (tc.in.attrs&0x10 != 0) || before.ProducerID != tc.in.pid {
				t.Fatalf("test batch parsed as %+v", before)
			}
			// Another batch follows: ClearTransactional must stay within
			// length.
			next := makeBatch(t, testBatch{attrs: 0x10, pid: 99, epoch: 9, seq: 9, n: 1})
			buf := append(bytes.Clone(orig), next...)
			digest := Digest(buf, len(orig))

			ClearTransactional(buf, len(orig))

			b := buf[:len(orig)]
			if !bytes.Equal(buf[len(orig):], next) {
				t.Fatal("bytes past length modified")
			}
			wantAttrs := uint16(tc.in.attrs) &^ 0x10
			if got := binary.BigEndian.Uint16(b[21:]); got != wantAttrs {
				t.Fatalf("attributes %#04x, want %#04x", got, wantAttrs)
			}
			got, err := ParseBatch(b)
			if err != nil {
				t.Fatalf("ParseBatch of the result: %v", err)
			}
			want := Batch{Length: len(orig), ProducerID: -1, ProducerEpoch: -1, BaseSequence: -1,
				Count: int32(tc.in.n), Transactional: false, Control: tc.in.attrs&0x20 != 0}
			if got != want {
				t.Fatalf("result = %+v, want %+v", got, want)
			}
			if crc := crc32.Checksum(b[21:], crc32.MakeTable(crc32.Castagnoli)); crc != binary.BigEndian.Uint32(b[17:]) {
				t.Fatalf("CRC %#08x, want %#08x", binary.BigEndian.Uint32(b[17:]), crc)
			}
			if d := Digest(b, len(b)); d != digest {
				t.Fatal("digest changed")
			}
			// Byte for byte the batch a non-transactional producer without
			// idempotence would have sent, kmsg agreeing.
			wantB := tc.in
			wantB.attrs, wantB.pid, wantB.epoch, wantB.seq = int16(wantAttrs), -1, -1, -1
			if w := makeBatch(t, wantB); !bytes.Equal(b, w) {
				t.Fatalf("result\n got %x\nwant %x", b, w)
			}
			var kb kmsg.RecordBatch
			if err := kb.ReadFrom(b); err != nil {
				t.Fatalf("kmsg: %v", err)
			}
			if kb.Attributes&0x10 != 0 || kb.ProducerID != -1 || kb.ProducerEpoch != -1 || kb.FirstSequence != -1 ||
				kb.FirstOffset != tc.in.baseOff || kb.PartitionLeaderEpoch != tc.in.leaderEp || kb.NumRecords != int32(tc.in.n) {
				t.Fatalf("kmsg reads %+v", kb)
			}

			// Idempotent.
			again := bytes.Clone(b)
			ClearTransactional(again, len(again))
			if !bytes.Equal(again, b) {
				t.Fatal("a second ClearTransactional changed the batch")
			}
			// ClearProducer on the same input differs only in keeping the
			// transactional bit (and so in the CRC).
			cp := bytes.Clone(orig)
			ClearProducer(cp, len(cp))
			if bt, err := ParseBatch(cp); err != nil || bt.Transactional != before.Transactional || bt.ProducerID != -1 {
				t.Fatalf("ClearProducer: %+v, %v", bt, err)
			}
			binary.BigEndian.PutUint16(cp[21:], wantAttrs)
			if !bytes.Equal(cp[21:], b[21:]) {
				t.Fatal("ClearProducer and ClearTransactional differ beyond the attribute bit")
			}
		})
	}
}

// SetProducer gives a cleared batch eosproxy's upstream producer fields: the
// result is byte for byte what an idempotent producer with those fields
// would have sent, and its content digest is unchanged.
func TestSetProducer(t *testing.T) {
	for _, in := range []testBatch{
		{attrs: 0x00, pid: -1, epoch: -1, seq: -1, n: 3},
		{attrs: 0x04, pid: -1, epoch: -1, seq: -1, n: 7, baseOff: 99, leaderEp: 4},
	} {
		orig := makeBatch(t, in)
		next := makeBatch(t, testBatch{attrs: 0x10, pid: 99, epoch: 9, seq: 9, n: 1})
		buf := append(bytes.Clone(orig), next...)
		SetProducer(buf, len(orig), 4242, 17, 1<<31-2)
		if !bytes.Equal(buf[len(orig):], next) {
			t.Fatal("bytes past length modified")
		}
		want := in
		want.pid, want.epoch, want.seq = 4242, 17, 1<<31-2
		if w := makeBatch(t, want); !bytes.Equal(buf[:len(orig)], w) {
			t.Fatalf("result\n got %x\nwant %x", buf[:len(orig)], w)
		}
		if _, err := ParseBatch(buf); err != nil {
			t.Fatalf("ParseBatch of the result: %v", err)
		}
		if Digest(buf, len(orig)) != Digest(orig, len(orig)) {
			t.Fatal("digest changed")
		}
		if n := BatchRecordCount(buf); n != int32(in.n) {
			t.Fatalf("BatchRecordCount = %d, want %d", n, in.n)
		}
	}
}

func TestFirstKeyless(t *testing.T) {
	rec := func(key []byte) []byte {
		r := kmsg.Record{Key: key, Value: []byte("v"), Headers: []kmsg.Header{{Key: "h", Value: []byte("x")}}}
		body := r.AppendTo(nil)
		r.Length = int32(len(body) - 1)
		return r.AppendTo(nil)
	}
	keyed, keyless := rec([]byte("k")), rec(nil)
	cases := []struct {
		name    string
		recs    []byte
		count   int32
		want    int
		wantErr bool
	}{
		{"all keyed", append(append([]byte(nil), keyed...), keyed...), 2, -1, false},
		{"empty key counts as a key", rec([]byte{}), 1, -1, false},
		{"second keyless", append(append([]byte(nil), keyed...), keyless...), 2, 1, false},
		{"first keyless", append(append([]byte(nil), keyless...), keyed...), 2, 0, false},
		{"truncated", keyed[:len(keyed)-2], 1, 0, true},
		{"count past the records", keyed, 2, 0, true},
	}
	for _, c := range cases {
		got, err := FirstKeyless(c.recs, c.count)
		if (err != nil) != c.wantErr || (err == nil && got != c.want) {
			t.Errorf("%s: got %d, %v; want %d (error %v)", c.name, got, err, c.want, c.wantErr)
		}
	}
	// A whole batch from makeBatch: every record keyed.
	b := makeBatch(t, testBatch{n: 5, pid: -1, epoch: -1, seq: -1})
	bt, err := ParseBatch(b)
	if err != nil {
		t.Fatal(err)
	}
	if i, err := FirstKeyless(BatchRecords(b, bt.Length), bt.Count); err != nil || i != -1 || BatchCodec(b) != 0 {
		t.Errorf("makeBatch's batch: keyless %d, %v, codec %d", i, err, BatchCodec(b))
	}
}

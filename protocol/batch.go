package protocol

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// Offsets of the fields of a magic-2 record batch header.
const (
	batchLengthOff   = 8
	batchMagicOff    = 16
	batchCRCOff      = 17
	batchAttrOff     = 21
	batchLastDelta   = 23
	batchFirstTSOff  = 27
	batchProducerOff = 43
	batchEpochOff    = 51
	batchSeqOff      = 53
	batchCountOff    = 57
	// BatchHeaderLen is the size of a magic-2 record batch header.
	BatchHeaderLen = 61
)

const (
	attrTransactional = 0x10
	attrControl       = 0x20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Errors for record batches Kafka would refuse with CORRUPT_MESSAGE.
var (
	ErrBatchCorrupt = errors.New("corrupt record batch")
)

// Batch is the header of one magic-2 record batch, as eosproxy needs it.
type Batch struct {
	Length        int // whole batch, including offset and length fields
	ProducerID    int64
	ProducerEpoch int16
	BaseSequence  int32
	Count         int32
	Transactional bool
	Control       bool
}

// ParseBatch reads the header of the record batch at the start of b and
// checks its CRC-32C, so that eosproxy never re-signs a corrupt batch when it
// rewrites the header.
func ParseBatch(b []byte) (Batch, error) {
	bt, err := ParseBatchHeader(b)
	if err != nil {
		return bt, err
	}
	if crc := crc32.Checksum(b[batchAttrOff:bt.Length], castagnoli); crc != binary.BigEndian.Uint32(b[batchCRCOff:]) {
		return Batch{}, fmt.Errorf("%w: CRC mismatch", ErrBatchCorrupt)
	}
	return bt, nil
}

// ParseBatchHeader is ParseBatch without the CRC check, for batches that
// pass through unchanged: the backend checks those itself.
func ParseBatchHeader(b []byte) (Batch, error) {
	if len(b) < BatchHeaderLen {
		return Batch{}, fmt.Errorf("%w: %d bytes, header needs %d", ErrBatchCorrupt, len(b), BatchHeaderLen)
	}
	if m := b[batchMagicOff]; m != 2 {
		return Batch{}, fmt.Errorf("%w: magic %d, want 2", ErrBatchCorrupt, m)
	}
	n := int(int32(binary.BigEndian.Uint32(b[batchLengthOff:]))) + 12
	if n < BatchHeaderLen || n > len(b) {
		return Batch{}, fmt.Errorf("%w: length field says %d bytes of %d", ErrBatchCorrupt, n, len(b))
	}
	attrs := binary.BigEndian.Uint16(b[batchAttrOff:])
	bt := Batch{
		Length:        n,
		ProducerID:    int64(binary.BigEndian.Uint64(b[batchProducerOff:])),
		ProducerEpoch: int16(binary.BigEndian.Uint16(b[batchEpochOff:])),
		BaseSequence:  int32(binary.BigEndian.Uint32(b[batchSeqOff:])),
		Count:         int32(binary.BigEndian.Uint32(b[batchCountOff:])),
		Transactional: attrs&attrTransactional != 0,
		Control:       attrs&attrControl != 0,
	}
	if bt.Count <= 0 {
		return Batch{}, fmt.Errorf("%w: %d records", ErrBatchCorrupt, bt.Count)
	}
	return bt, nil
}

// ClearProducer sets the batch's producer id, epoch and base sequence to -1
// and updates its CRC-32C in place, so a backend without idempotence
// stores it as an ordinary batch.
func ClearProducer(b []byte, length int) { SetProducer(b, length, -1, -1, -1) }

// ClearTransactional is ClearProducer for a committed transactional batch:
// it also drops the transactional flag, since eosproxy writes only committed
// data and a backend must not wait for a commit marker that never comes.
func ClearTransactional(b []byte, length int) {
	setHeader(b, length, func() {
		attrs := binary.BigEndian.Uint16(b[batchAttrOff:])
		binary.BigEndian.PutUint16(b[batchAttrOff:], attrs&^attrTransactional)
		setProducerFields(b, -1, -1, -1)
	})
}

// SetProducer stamps the batch with eosproxy's own upstream producer id,
// epoch and base sequence and updates its CRC-32C in place (crc.go), so a
// backend with idempotence keeps eosproxy's pipelined batches in order and
// drops a resent one it already holds.
func SetProducer(b []byte, length int, pid int64, epoch int16, seq int32) {
	setHeader(b, length, func() { setProducerFields(b, pid, epoch, seq) })
}

func setProducerFields(b []byte, pid int64, epoch int16, seq int32) {
	binary.BigEndian.PutUint64(b[batchProducerOff:], uint64(pid))
	binary.BigEndian.PutUint16(b[batchEpochOff:], uint16(epoch))
	binary.BigEndian.PutUint32(b[batchSeqOff:], uint32(seq))
}

// setHeader runs set, which changes header fields of the batch b between
// its attributes and its record count, and updates the CRC to match.
func setHeader(b []byte, length int, set func()) {
	var old [batchCountOff - batchAttrOff]byte
	copy(old[:], b[batchAttrOff:])
	set()
	patchCRC(b, length, old[:])
}

// BatchRecordCount reads the record count of the batch at the start of b.
func BatchRecordCount(b []byte) int32 { return int32(binary.BigEndian.Uint32(b[batchCountOff:])) }

// Digest identifies a batch's content across eosproxy's rewrite and the
// backend's storage: it covers what neither changes (the records, their
// count, offset span and first timestamp) and leaves out what they do
// (offset, leader epoch, producer fields, max timestamp, CRC).
func Digest(b []byte, length int) [32]byte {
	h := sha256.New()
	h.Write(b[batchLastDelta : batchLastDelta+4])
	h.Write(b[batchFirstTSOff : batchFirstTSOff+8])
	h.Write(b[batchCountOff:length])
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// BatchBaseOffset reads the base offset of the batch at the start of b.
func BatchBaseOffset(b []byte) int64 { return int64(binary.BigEndian.Uint64(b)) }

// BatchLastOffsetDelta reads the offset span of the batch at the start of b.
func BatchLastOffsetDelta(b []byte) int32 { return int32(binary.BigEndian.Uint32(b[batchLastDelta:])) }

// BatchCodec is the compression codec of the batch at the start of b, as
// Kafka numbers them (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd).
func BatchCodec(b []byte) int8 { return int8(binary.BigEndian.Uint16(b[batchAttrOff:]) & 0x07) }

// BatchRecords is the records section of the batch at the start of b (of
// length bytes), compressed as BatchCodec says.
func BatchRecords(b []byte, length int) []byte { return b[BatchHeaderLen:length] }

// FirstKeyless returns the index of the first record without a key (a
// key length of -1) among the count records in recs, the uncompressed
// records section of a batch, or -1 if every record has a key. A compacted
// topic refuses a batch with such a record (INVALID_RECORD).
func FirstKeyless(recs []byte, count int32) (int, error) {
	for i := 0; i < int(count); i++ {
		n, w := binary.Varint(recs)
		if w <= 0 || n < 0 || int64(len(recs)-w) < n {
			return 0, fmt.Errorf("%w: record %d truncated", ErrBatchCorrupt, i)
		}
		rec := recs[w : w+int(n)]
		recs = recs[w+int(n):]
		if len(rec) < 1 {
			return 0, fmt.Errorf("%w: record %d empty", ErrBatchCorrupt, i)
		}
		rest := rec[1:]                      // attributes
		for field := 0; field < 3; field++ { // timestamp delta, offset delta, key length
			v, w := binary.Varint(rest)
			if w <= 0 {
				return 0, fmt.Errorf("%w: record %d header truncated", ErrBatchCorrupt, i)
			}
			rest = rest[w:]
			if field == 2 && v < 0 {
				return i, nil
			}
		}
	}
	return -1, nil
}

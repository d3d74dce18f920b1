package integration

import (
	"encoding/binary"
	"hash/crc32"
	"sync"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// fixedPorts is a port store shared by two proxies in one test, standing in
// for the badger-backed one across a restart.
type fixedPorts struct {
	mu sync.Mutex
	m  map[int32]int32
}

func (f *fixedPorts) LoadPorts() (map[int32]int32, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[int32]int32{}
	for k, v := range f.m {
		out[k] = v
	}
	return out, nil
}

func (f *fixedPorts) SavePort(id, port int32) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.m[id] = port
	return nil
}

// oneRecordBatch encodes a valid magic-2 record batch holding value.
func oneRecordBatch(value string) []byte {
	rec := kmsg.Record{Value: []byte(value)}
	recBytes := rec.AppendTo(nil)
	rec.Length = int32(len(recBytes) - varintLen(0))
	recBytes = rec.AppendTo(nil)
	b := kmsg.RecordBatch{
		Magic:           2,
		LastOffsetDelta: 0,
		ProducerID:      -1,
		ProducerEpoch:   -1,
		FirstSequence:   -1,
		NumRecords:      1,
		Records:         recBytes,
	}
	raw := b.AppendTo(nil)
	b.Length = int32(len(raw) - 12)
	raw = b.AppendTo(nil)
	// CRC-32C covers everything after the crc field (offset 21).
	b.CRC = int32(crc32.Checksum(raw[21:], crc32.MakeTable(crc32.Castagnoli)))
	return b.AppendTo(nil)
}

func varintLen(v int64) int { return len(binary.AppendVarint(nil, v)) }

// idempotentBatch encodes a one-record batch from producer pid.
func idempotentBatch(pid int64, epoch int16, seq int32, value string) []byte {
	raw := oneRecordBatch(value)
	binary.BigEndian.PutUint64(raw[43:], uint64(pid))
	binary.BigEndian.PutUint16(raw[51:], uint16(epoch))
	binary.BigEndian.PutUint32(raw[53:], uint32(seq))
	binary.BigEndian.PutUint32(raw[17:], crc32.Checksum(raw[21:], crc32.MakeTable(crc32.Castagnoli)))
	return raw
}

package integration

import (
	"encoding/binary"
	"hash/crc32"
	"slices"
	"sync"
	"testing"

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

// produceRequest is an acks=all Produce of version v carrying one batch per
// partition of topic.
func produceRequest(v int16, topic string, batches map[int32][]byte) *kmsg.ProduceRequest {
	req := kmsg.NewPtrProduceRequest()
	req.SetVersion(v)
	req.Acks = -1
	req.TimeoutMillis = 5000
	rt := kmsg.NewProduceRequestTopic()
	rt.Topic = topic
	parts := make([]int32, 0, len(batches))
	for part := range batches {
		parts = append(parts, part)
	}
	slices.Sort(parts)
	for _, part := range parts {
		rp := kmsg.NewProduceRequestTopicPartition()
		rp.Partition, rp.Records = part, batches[part]
		rt.Partitions = append(rt.Partitions, rp)
	}
	req.Topics = append(req.Topics, rt)
	return req
}

// produceAnswer decodes a flexible (v9+) Produce response body read by
// readResponse, by partition of its first topic.
func produceAnswer(t *testing.T, v int16, body []byte) map[int32]kmsg.ProduceResponseTopicPartition {
	t.Helper()
	resp := kmsg.NewPtrProduceResponse()
	resp.SetVersion(v)
	if err := resp.ReadFrom(body[1:]); err != nil { // after the empty header tags
		t.Fatal(err)
	}
	out := map[int32]kmsg.ProduceResponseTopicPartition{}
	for _, rp := range resp.Topics[0].Partitions {
		out[rp.Partition] = rp
	}
	return out
}

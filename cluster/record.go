package cluster

import (
	"encoding/binary"
	"encoding/json"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Log records carry what the validator needs in headers, and the claim or
// the set's bytes (one chunk of them) in the value.
const (
	hKind  = "eos-kind"
	hNonce = "eos-nonce"
	hSeq   = "eos-seq"
	hIdx   = "eos-idx"
	hMore  = "eos-more"
	hClaim = "eos-claim" // a checkpoint's first chunk: its claim
)

// chunkSize bounds a record's value, well under Kafka's default
// max.message.bytes (1 MiB) and the producer's batch size, whatever the
// size of the set.
const chunkSize = 512 << 10

func u64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

func claimRecord(topic string, c claimInfo) *kgo.Record {
	v, _ := json.Marshal(c)
	return &kgo.Record{Topic: topic, Partition: 0, Value: v,
		Headers: []kgo.RecordHeader{{Key: hKind, Value: []byte{byte(kindClaim)}}}}
}

func releaseRecord(topic string, nonce uint64) *kgo.Record {
	return &kgo.Record{Topic: topic, Partition: 0,
		Headers: []kgo.RecordHeader{{Key: hKind, Value: []byte{byte(kindRelease)}}, {Key: hNonce, Value: u64(nonce)}}}
}

// setRecords splits a set into chunk records. A checkpoint's first chunk
// also carries the claim, so that a log trimmed to it starts valid.
func setRecords(topic string, k kind, c claimInfo, seq uint64, set []byte) []*kgo.Record {
	n := max(1, (len(set)+chunkSize-1)/chunkSize)
	recs := make([]*kgo.Record, n)
	for i := range recs {
		chunk := set[i*chunkSize : min(len(set), (i+1)*chunkSize)]
		h := []kgo.RecordHeader{
			{Key: hKind, Value: []byte{byte(k)}},
			{Key: hNonce, Value: u64(c.Nonce)},
			{Key: hSeq, Value: u64(seq)},
			{Key: hIdx, Value: binary.BigEndian.AppendUint32(nil, uint32(i))},
		}
		if i < n-1 {
			h = append(h, kgo.RecordHeader{Key: hMore, Value: []byte{1}})
		}
		if k == kindCheckpoint && i == 0 {
			v, _ := json.Marshal(c)
			h = append(h, kgo.RecordHeader{Key: hClaim, Value: v})
		}
		recs[i] = &kgo.Record{Topic: topic, Partition: 0, Headers: h, Value: chunk}
	}
	return recs
}

// decode reads a record; one it cannot read has kind 0, which the
// validator counts void.
func decode(r *kgo.Record) entry {
	e := entry{offset: r.Offset}
	var k kind
	for _, h := range r.Headers {
		switch h.Key {
		case hKind:
			if len(h.Value) == 1 {
				k = kind(h.Value[0])
			}
		case hNonce:
			if len(h.Value) == 8 {
				e.nonce = binary.BigEndian.Uint64(h.Value)
			}
		case hSeq:
			if len(h.Value) == 8 {
				e.seq = binary.BigEndian.Uint64(h.Value)
			}
		case hIdx:
			if len(h.Value) == 4 {
				e.idx = binary.BigEndian.Uint32(h.Value)
			}
		case hMore:
			e.more = true
		case hClaim:
			var c claimInfo
			if json.Unmarshal(h.Value, &c) == nil {
				e.claim = &c
			}
		}
	}
	switch k {
	case kindClaim:
		var c claimInfo
		if json.Unmarshal(r.Value, &c) != nil || c.Nonce == 0 {
			return e
		}
		e.claim, e.nonce = &c, c.Nonce
	case kindSet, kindCheckpoint, kindRelease:
		if e.nonce == 0 {
			return e
		}
		e.data = r.Value
	default:
		return e
	}
	e.kind = k
	return e
}

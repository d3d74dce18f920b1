package protocol

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

func produceBody(v int16, txnID *string, acks int16) []byte {
	r := kmsg.NewPtrProduceRequest()
	r.SetVersion(v)
	r.TransactionID = txnID
	r.Acks = acks
	r.TimeoutMillis = 30000
	t := kmsg.NewProduceRequestTopic()
	t.Topic, t.TopicID = "orders", topicID1
	p := kmsg.NewProduceRequestTopicPartition()
	p.Partition, p.Records = 3, records
	t.Partitions = []kmsg.ProduceRequestTopicPartition{p}
	r.Topics = []kmsg.ProduceRequestTopic{t}
	return r.AppendTo(nil)
}

// acksOffset is where acks sits in a Produce body, from the protocol
// specification rather than from produce.go.
func acksOffset(v int16, txnID *string) int {
	switch {
	case v < 3:
		return 0
	case v < 9:
		if txnID == nil {
			return 2
		}
		return 2 + len(*txnID)
	default:
		if txnID == nil {
			return 1
		}
		return len(binary.AppendUvarint(nil, uint64(len(*txnID)+1))) + len(*txnID)
	}
}

func TestProduceAcksEveryVersion(t *testing.T) {
	long := strings.Repeat("t", 200) // a two-byte compact length
	txnIDs := []*string{nil, strp(""), strp("t"), strp("txn-1"), strp(long)}
	maxV := kmsg.NewPtrProduceRequest().MaxVersion()
	if maxV < 9 {
		t.Fatalf("kmsg Produce max version %d", maxV)
	}
	for v := int16(0); v <= maxV; v++ {
		for _, txn := range txnIDs {
			for _, acks := range []int16{-1, 0, 1} {
				txnName := "nil"
				if txn != nil {
					txnName = fmt.Sprintf("%.8q", *txn)
				}
				t.Run(fmt.Sprintf("v%d/txn=%s/acks=%d", v, txnName, acks), func(t *testing.T) {
					body := produceBody(v, txn, acks)
					got, err := ProduceAcks(v, body)
					if err != nil {
						t.Fatalf("ProduceAcks: %v", err)
					}
					if got != acks {
						t.Fatalf("acks = %d, want %d", got, acks)
					}
					var tx *string
					if v >= 3 {
						tx = txn
					}
					off := acksOffset(v, tx)
					if a := int16(binary.BigEndian.Uint16(body[off:])); a != acks {
						t.Fatalf("test bug: acks offset %d holds %d", off, a)
					}
					// Only the bytes up to acks are needed; any shorter
					// prefix is an error, never a panic or a wrong value.
					for n := 0; n <= len(body); n++ {
						got, err := ProduceAcks(v, body[:n:n])
						switch {
						case n < off+2 && err == nil:
							t.Fatalf("%d of %d bytes (acks at %d): no error, acks %d", n, len(body), off, got)
						case n >= off+2 && (err != nil || got != acks):
							t.Fatalf("%d of %d bytes (acks at %d): %d, %v", n, len(body), off, got, err)
						}
					}
				})
			}
		}
	}
}

func TestProduceAcksMalformed(t *testing.T) {
	cases := []struct {
		name string
		v    int16
		body []byte
	}{
		{"v9 empty", 9, nil},
		{"v9 huge compact length", 9, append(binary.AppendUvarint(nil, 1<<40), 0xff, 0xff)},
		{"v13 max uint64 length", 13, append(binary.AppendUvarint(nil, ^uint64(0)), 0, 1)},
		{"v9 length just past the end", 9, []byte{4, 'a', 'b', 0, 1}},
		{"v9 varint overflow", 9, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0, 1}},
		{"v9 varint cut", 9, []byte{0x80}},
		{"v9 string but no acks", 9, []byte{3, 'a', 'b'}},
		{"v9 string and one byte of acks", 9, []byte{3, 'a', 'b', 0}},
		{"v3 empty", 3, nil},
		{"v3 one byte", 3, []byte{0}},
		{"v3 max int16 length", 3, []byte{0x7f, 0xff, 'a', 0, 1}},
		{"v8 length past the end", 8, []byte{0, 4, 'a', 'b', 'c', 0}},
		{"v3 null, no acks", 3, []byte{0xff, 0xff}},
		{"v0 empty", 0, nil},
		{"v2 one byte", 2, []byte{0xff}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if acks, err := ProduceAcks(tc.v, tc.body); err == nil {
				t.Fatalf("no error, acks %d", acks)
			}
		})
	}
}

func TestProduceAcksNullAndNegativeLengths(t *testing.T) {
	// Nullable string lengths: -1 is null; Kafka reads any negative length
	// as null in the header-style decoders, and so does eosproxy.
	cases := []struct {
		name string
		v    int16
		body []byte
		want int16
	}{
		{"v3 null", 3, []byte{0xff, 0xff, 0xff, 0xff}, -1},
		{"v8 empty", 8, []byte{0, 0, 0, 1}, 1},
		{"v9 null", 9, []byte{0, 0, 0}, 0},
		{"v9 empty", 9, []byte{1, 0xff, 0xff}, -1},
		{"v9 two-byte length", 9, append(append(binary.AppendUvarint(nil, 129), make([]byte, 128)...), 0, 1), 1},
		{"v14 above known, flexible", 14, []byte{2, 'x', 0, 1}, 1},
		{"v1 acks first", 1, []byte{0xff, 0xff, 0, 0, 0x75, 0x30}, -1},
	}
	for _, tc := range cases {
		got, err := ProduceAcks(tc.v, tc.body)
		if err != nil || got != tc.want {
			t.Errorf("%s: %d, %v; want %d", tc.name, got, err, tc.want)
		}
	}
}

func TestProduceAcksGarbageNeverPanics(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	for i := 0; i < 50000; i++ {
		b := make([]byte, rng.IntN(24))
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		v := int16(rng.IntN(20)) - 2
		checkProduceAcks(t, v, b)
	}
}

func checkProduceAcks(t *testing.T, v int16, body []byte) {
	t.Helper()
	acks, err := ProduceAcks(v, body)
	if err != nil {
		return
	}
	if len(body) < 2 {
		t.Fatalf("v%d: acks %d from %d bytes", v, acks, len(body))
	}
}

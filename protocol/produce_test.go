package protocol

import (
	"bytes"
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

// txnIDPrefixLen is how many bytes of a Produce body the transactional id's
// length takes, from the protocol specification: none below v3, an int16
// until v8, a uvarint from v9 (flexible).
func txnIDPrefixLen(v int16, txnID *string) int {
	switch {
	case v < 3:
		return 0
	case v < 9:
		return 2
	case txnID == nil:
		return 1
	default:
		return len(binary.AppendUvarint(nil, uint64(len(*txnID)+1)))
	}
}

func TestProduceIsTransactionalEveryVersion(t *testing.T) {
	long := strings.Repeat("t", 200) // a two-byte compact length
	txnIDs := []*string{nil, strp(""), strp("t"), strp("txn-1"), strp(long)}
	maxV := kmsg.NewPtrProduceRequest().MaxVersion()
	if maxV < 12 {
		t.Fatalf("kmsg Produce max version %d", maxV)
	}
	for v := int16(0); v <= maxV; v++ {
		for _, txn := range txnIDs {
			txnName := "nil"
			if txn != nil {
				txnName = fmt.Sprintf("%.8q", *txn)
			}
			t.Run(fmt.Sprintf("v%d/txn=%s", v, txnName), func(t *testing.T) {
				body := produceBody(v, txn, -1)
				// Kafka's rule: a non-null transactional id, which exists
				// from v3; an empty one is not null.
				want := v >= 3 && txn != nil
				if got := produceIsTransactionalAllocs(t, v, body); got != want {
					t.Fatalf("ProduceIsTransactional = %v, want %v", got, want)
				}
				req := kmsg.NewPtrProduceRequest()
				req.SetVersion(v)
				if err := req.ReadFrom(body); err != nil {
					t.Fatalf("kmsg: %v", err)
				}
				if (req.TransactionID != nil) != want {
					t.Fatalf("test bug: kmsg reads transactional id %v", req.TransactionID)
				}
				// Every prefix: no panic; one too short to hold the length
				// of the transactional id is never transactional; from
				// there on the answer is the whole body's, as only the
				// length is read (the caller decodes the rest).
				n0 := txnIDPrefixLen(v, txn)
				for n := 0; n <= len(body); n++ {
					got := ProduceIsTransactional(v, body[:n:n])
					checkProduceIsTransactional(t, v, body[:n:n], got)
					switch {
					case n < n0 && got:
						t.Fatalf("%d of %d bytes (length in %d): transactional", n, len(body), n0)
					case n >= n0 && got != want:
						t.Fatalf("%d of %d bytes (length in %d): %v, want %v", n, len(body), n0, got, want)
					}
				}
			})
		}
	}
}

func TestProduceIsTransactionalMalformed(t *testing.T) {
	cases := []struct {
		name string
		v    int16
		body []byte
		want bool
	}{
		{"v0 empty", 0, nil, false},
		{"v2 looks transactional", 2, []byte{0, 5, 't', 'x', 'n', '-', '1', 0xff, 0xff}, false},
		{"v-1", -1, []byte{0, 1, 'x'}, false},
		{"v3 empty", 3, nil, false},
		{"v3 one byte", 3, []byte{0}, false},
		{"v8 one byte", 8, []byte{0x7f}, false},
		{"v3 null", 3, []byte{0xff, 0xff}, false},
		{"v3 length -2, read as null", 3, []byte{0xff, 0xfe, 0, 1}, false},
		{"v5 min int16 length", 5, []byte{0x80, 0x00}, false},
		{"v3 empty id", 3, []byte{0, 0}, true},
		{"v8 id cut short", 8, []byte{0, 4, 'a'}, true},
		{"v8 max int16 length", 8, []byte{0x7f, 0xff}, true},
		{"v9 empty", 9, nil, false},
		{"v9 null", 9, []byte{0}, false},
		{"v9 null, overlong varint", 9, []byte{0x80, 0x00}, false},
		{"v9 empty id", 9, []byte{1}, true},
		{"v9 varint cut", 9, []byte{0x80}, false},
		{"v12 varint cut after four bytes", 12, []byte{0xff, 0xff, 0xff, 0xff}, false},
		{"v9 varint overflow", 9, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0, 1}, false},
		{"v12 id cut short", 12, []byte{6, 't', 'x'}, true},
		{"v13 huge length", 13, append(binary.AppendUvarint(nil, 1<<40), 0, 1), true},
		{"v14 above known, flexible", 14, []byte{2, 'x', 0, 1}, true},
		{"max int16 version, null", 32767, []byte{0}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := produceIsTransactionalAllocs(t, tc.v, tc.body)
			if got != tc.want {
				t.Fatalf("ProduceIsTransactional = %v, want %v", got, tc.want)
			}
			checkProduceIsTransactional(t, tc.v, tc.body, got)
		})
	}
}

func TestProduceIsTransactionalGarbageNeverPanics(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	seeds := [][]byte{produceBody(3, nil, -1), produceBody(8, strp("txn-1"), -1), produceBody(9, nil, 1), produceBody(12, strp("txn-2"), -1)}
	for i := 0; i < 50000; i++ {
		var b []byte
		if i%2 == 0 {
			b = make([]byte, rng.IntN(24))
			for j := range b {
				b[j] = byte(rng.Uint32())
			}
		} else {
			b = bytes.Clone(seeds[rng.IntN(len(seeds))])
			for range 1 + rng.IntN(3) {
				b[rng.IntN(min(len(b), 8))] = byte(rng.Uint32())
			}
		}
		v := int16(rng.IntN(20)) - 2
		checkProduceIsTransactional(t, v, b, ProduceIsTransactional(v, b))
	}
}

// checkProduceIsTransactional checks what holds for any input, got being
// ProduceIsTransactional(v, body): never a transactional request below v3
// or without the bytes of the id's length, and the same answer as kmsg's
// whenever kmsg decodes the body.
func checkProduceIsTransactional(t *testing.T, v int16, body []byte, got bool) {
	t.Helper()
	if again := ProduceIsTransactional(v, body); again != got {
		t.Fatalf("v%d: %v, then %v", v, got, again)
	}
	if got && (v < 3 || len(body) == 0 || (v < 9 && len(body) < 2)) {
		t.Fatalf("v%d: transactional from %x", v, body)
	}
	if v >= 0 && v <= kmsg.NewPtrProduceRequest().MaxVersion() {
		req := kmsg.NewPtrProduceRequest()
		req.SetVersion(v)
		if err := req.ReadFrom(body); err == nil && (req.TransactionID != nil) != got {
			t.Fatalf("v%d: ProduceIsTransactional %v, kmsg reads transactional id %v\ninput %x", v, got, req.TransactionID, body)
		}
	}
}

// produceIsTransactionalAllocs checks that ProduceIsTransactional allocates
// at most the error of a bad varint, which frame.go's uvarint makes afresh;
// never anything sized by the input, which it leaves as it was.
func produceIsTransactionalAllocs(t *testing.T, v int16, body []byte) bool {
	t.Helper()
	orig := bytes.Clone(body)
	var got bool
	if n := testing.AllocsPerRun(1, func() { got = ProduceIsTransactional(v, body) }); n > 1 {
		t.Fatalf("v%d: %v allocations", v, n)
	}
	if !bytes.Equal(body, orig) {
		t.Fatalf("v%d: input modified", v)
	}
	return got
}

package protocol

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// scanCases builds Produce and Fetch responses at every version that may
// carry node endpoints, with and without them, with fields that move the
// scanner's position (aborted transactions, record errors, tags).
func scanCases() []struct {
	key, ver int16
	body     []byte
	want     bool
} {
	var out []struct {
		key, ver int16
		body     []byte
		want     bool
	}
	msg := "oops"
	for v := int16(10); v <= MaxKnownVersion(KeyProduce); v++ {
		for _, withBrokers := range []bool{false, true} {
			r := kmsg.NewPtrProduceResponse()
			r.SetVersion(v)
			r.ThrottleMillis = 7
			for ti := 0; ti < 2; ti++ {
				t := kmsg.NewProduceResponseTopic()
				t.Topic = "topic-a"
				t.TopicID = [16]byte{1, 2, 3}
				for pi := int32(0); pi < 3; pi++ {
					p := kmsg.NewProduceResponseTopicPartition()
					p.Partition = pi
					p.BaseOffset = 100
					p.ErrorMessage = &msg
					p.ErrorRecords = append(p.ErrorRecords, kmsg.ProduceResponseTopicPartitionErrorRecord{RelativeOffset: 1, ErrorMessage: &msg})
					p.CurrentLeader.LeaderID = 2
					p.CurrentLeader.LeaderEpoch = 9
					t.Partitions = append(t.Partitions, p)
				}
				r.Topics = append(r.Topics, t)
			}
			if withBrokers {
				r.Brokers = []kmsg.ProduceResponseBroker{{NodeID: 2, Host: "up", Port: 9092}}
			}
			r.UnknownTags.Set(7, []byte("x"))
			out = append(out, struct {
				key, ver int16
				body     []byte
				want     bool
			}{KeyProduce, v, r.AppendTo(nil), withBrokers})
		}
	}
	for v := int16(16); v <= MaxKnownVersion(KeyFetch); v++ {
		for _, withBrokers := range []bool{false, true} {
			r := kmsg.NewPtrFetchResponse()
			r.SetVersion(v)
			r.SessionID = 5
			for ti := 0; ti < 2; ti++ {
				t := kmsg.NewFetchResponseTopic()
				t.TopicID = [16]byte{9}
				for pi := int32(0); pi < 2; pi++ {
					p := kmsg.NewFetchResponseTopicPartition()
					p.Partition = pi
					p.AbortedTransactions = []kmsg.FetchResponseTopicPartitionAbortedTransaction{{ProducerID: 1, FirstOffset: 2}}
					p.RecordBatches = make([]byte, 300+int(pi))
					p.CurrentLeader.LeaderID = 1
					p.DivergingEpoch.Epoch = 3
					t.Partitions = append(t.Partitions, p)
				}
				r.Topics = append(r.Topics, t)
			}
			if withBrokers {
				r.Brokers = []kmsg.FetchResponseBroker{{NodeID: 1, Host: "up", Port: 9092}}
			}
			out = append(out, struct {
				key, ver int16
				body     []byte
				want     bool
			}{KeyFetch, v, r.AppendTo(nil), withBrokers})
		}
	}
	return out
}

func TestMayCarryAddresses(t *testing.T) {
	for _, c := range scanCases() {
		got, err := MayCarryAddresses(c.key, c.ver, c.body)
		if err != nil || got != c.want {
			t.Fatalf("key %d v%d: got %v %v, want %v", c.key, c.ver, got, err, c.want)
		}
		// Every proper prefix is an error, never a wrong "no".
		for cut := 0; cut < len(c.body); cut += 1 + len(c.body)/97 {
			if got, err := MayCarryAddresses(c.key, c.ver, c.body[:cut]); err == nil && !got && c.want {
				t.Fatalf("key %d v%d cut at %d: clean 'no' for a truncated body", c.key, c.ver, cut)
			}
		}
	}
	// Versions without node endpoints never need a look.
	for _, kv := range [][2]int16{{KeyProduce, 9}, {KeyFetch, 15}} {
		if got, err := MayCarryAddresses(kv[0], kv[1], nil); got || err != nil {
			t.Fatalf("key %d v%d: %v %v", kv[0], kv[1], got, err)
		}
	}
	if got, _ := MayCarryAddresses(KeyMetadata, 12, nil); !got {
		t.Fatal("Metadata must always be rewritten")
	}
}

// FuzzMayCarryAddresses checks the scanner against kmsg's decoder: whenever
// kmsg decodes a body with node endpoints, the scanner must say so.
func FuzzMayCarryAddresses(f *testing.F) {
	for _, c := range scanCases() {
		f.Add(c.key == KeyFetch, c.ver, c.body)
	}
	f.Fuzz(func(t *testing.T, fetch bool, ver int16, body []byte) {
		key, lo := KeyProduce, int16(10)
		if fetch {
			key, lo = KeyFetch, 16
		}
		if ver < lo || ver > MaxKnownVersion(key) {
			return
		}
		got, err := MayCarryAddresses(key, ver, body)
		resp := kmsg.ResponseForKey(key)
		resp.SetVersion(ver)
		if resp.ReadFrom(body) != nil {
			return
		}
		var n int
		switch r := resp.(type) {
		case *kmsg.ProduceResponse:
			n = len(r.Brokers)
		case *kmsg.FetchResponse:
			n = len(r.Brokers)
		}
		if n > 0 && (err != nil || !got) {
			t.Fatalf("kmsg decodes %d node endpoints, scanner says %v %v", n, got, err)
		}
	})
}

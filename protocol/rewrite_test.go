package protocol

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

type addr struct {
	id   int32
	host string
	port int32
}

var upstreamBrokers = []addr{
	{1, "broker-1.upstream.internal", 9092},
	{2, "b2.up", 19093},
	{7, "10.0.0.7", 29094},
}

const proxyHost = "proxy.example"

func proxied(a addr) addr { return addr{a.id, proxyHost, 10000 + a.id} }

func proxiedAll(as []addr) []addr {
	out := make([]addr, len(as))
	for i, a := range as {
		out[i] = proxied(a)
	}
	return out
}

var errBoom = errors.New("boom: no listener")

// recorder is a Mapper that maps id → proxy.example:10000+id and records
// its calls; it fails for failOn when that is not zero.
type recorder struct {
	calls  []addr
	failOn int32
}

func (r *recorder) mapper(id int32, host string, port int32) (string, int32, error) {
	r.calls = append(r.calls, addr{id, host, port})
	if r.failOn != 0 && id == r.failOn {
		return "", 0, errBoom
	}
	a := proxied(addr{id, host, port})
	return a.host, a.port, nil
}

var (
	topicID1 = [16]byte{0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}
	topicID2 = [16]byte{15: 0x42}
	// records stands for a record batch; the proxy must pass it on byte
	// for byte.
	records = append([]byte{0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 60, 0, 0, 0, 0, 2}, bytes.Repeat([]byte("rec\x00\xff"), 40)...)
)

// A rewriteCase builds a response of one key at version v naming brokers,
// and returns the addresses it expects RewriteAddresses to map, in order.
type rewriteCase struct {
	key   int16
	build func(v int16, brokers []addr) (kmsg.Response, []addr)
	// slots returns pointers to every address field of a decoded response
	// (mapped or not), so the test can restore upstream addresses and
	// compare the rest byte for byte.
	slots func(r kmsg.Response) []slot
}

type slot struct {
	id   int32
	host *string
	port *int32
}

func metadataCase() rewriteCase {
	return rewriteCase{
		key: KeyMetadata,
		build: func(v int16, brokers []addr) (kmsg.Response, []addr) {
			r := kmsg.NewPtrMetadataResponse()
			r.SetVersion(v)
			r.ThrottleMillis = 17
			for i, b := range brokers {
				mb := kmsg.NewMetadataResponseBroker()
				mb.NodeID, mb.Host, mb.Port = b.id, b.host, b.port
				if i == 0 {
					mb.Rack = strp("rack-a")
				}
				if v >= 9 && i == 1 {
					mb.UnknownTags.Set(9, []byte("broker-tag"))
				}
				r.Brokers = append(r.Brokers, mb)
			}
			r.ClusterID = strp("cluster-Xy7")
			r.ControllerID = 2
			r.AuthorizedOperations = 0x0ff8
			t1 := kmsg.NewMetadataResponseTopic()
			t1.Topic = strp("orders")
			t1.TopicID = topicID1
			t1.AuthorizedOperations = 0x1234
			p0 := kmsg.NewMetadataResponseTopicPartition()
			p0.Partition, p0.Leader, p0.LeaderEpoch = 0, 1, 5
			p0.Replicas, p0.ISR, p0.OfflineReplicas = []int32{1, 2, 7}, []int32{1, 2}, []int32{7}
			p1 := kmsg.NewMetadataResponseTopicPartition()
			p1.Partition, p1.Leader, p1.ErrorCode = 1, 2, 9
			p1.Replicas, p1.ISR = []int32{2}, []int32{2}
			t1.Partitions = []kmsg.MetadataResponseTopicPartition{p0, p1}
			t2 := kmsg.NewMetadataResponseTopic()
			t2.Topic, t2.ErrorCode, t2.IsInternal = strp("__consumer_offsets"), 3, true
			t2.TopicID = topicID2
			r.Topics = []kmsg.MetadataResponseTopic{t1, t2}
			if v >= 9 {
				r.UnknownTags.Set(20, []byte("future-field"))
			}
			return r, brokers
		},
		slots: func(r kmsg.Response) []slot {
			var s []slot
			m := r.(*kmsg.MetadataResponse)
			for i := range m.Brokers {
				s = append(s, slot{m.Brokers[i].NodeID, &m.Brokers[i].Host, &m.Brokers[i].Port})
			}
			return s
		},
	}
}

func findCoordinatorCase() rewriteCase {
	return rewriteCase{
		key: KeyFindCoordinator,
		build: func(v int16, brokers []addr) (kmsg.Response, []addr) {
			r := kmsg.NewPtrFindCoordinatorResponse()
			r.SetVersion(v)
			r.ThrottleMillis = 3
			if v < 4 {
				if len(brokers) == 0 {
					r.ErrorCode, r.NodeID, r.Host, r.Port = 15, -1, "", -1
					r.ErrorMessage = strp("The coordinator is not available.")
					return r, nil
				}
				b := brokers[len(brokers)/2]
				r.NodeID, r.Host, r.Port = b.id, b.host, b.port
				if v >= 3 {
					r.UnknownTags.Set(11, []byte("t"))
				}
				return r, []addr{b}
			}
			for i, b := range brokers {
				c := kmsg.NewFindCoordinatorResponseCoordinator()
				c.Key = fmt.Sprintf("group-%d", i)
				c.NodeID, c.Host, c.Port = b.id, b.host, b.port
				r.Coordinators = append(r.Coordinators, c)
			}
			// A key whose lookup failed stays as it is.
			bad := kmsg.NewFindCoordinatorResponseCoordinator()
			bad.Key, bad.NodeID, bad.Host, bad.Port = "txn-unknown", -1, "", -1
			bad.ErrorCode, bad.ErrorMessage = 15, strp("not available")
			r.Coordinators = append(r.Coordinators, bad)
			return r, brokers
		},
		slots: func(r kmsg.Response) []slot {
			f := r.(*kmsg.FindCoordinatorResponse)
			if f.Version < 4 {
				return []slot{{f.NodeID, &f.Host, &f.Port}}
			}
			var s []slot
			for i := range f.Coordinators {
				c := &f.Coordinators[i]
				s = append(s, slot{c.NodeID, &c.Host, &c.Port})
			}
			return s
		},
	}
}

func describeClusterCase() rewriteCase {
	return rewriteCase{
		key: KeyDescribeCluster,
		build: func(v int16, brokers []addr) (kmsg.Response, []addr) {
			r := kmsg.NewPtrDescribeClusterResponse()
			r.SetVersion(v)
			r.ThrottleMillis = 5
			r.EndpointType = 1
			r.ClusterID = "dc-cluster"
			r.ControllerID = 7
			r.ClusterAuthorizedOperations = 0x7ff
			for i, b := range brokers {
				db := kmsg.NewDescribeClusterResponseBroker()
				db.NodeID, db.Host, db.Port = b.id, b.host, b.port
				db.IsFenced = i == 2
				if i == 1 {
					db.Rack = strp("rack-b")
				}
				r.Brokers = append(r.Brokers, db)
			}
			r.UnknownTags.Set(30, []byte{1, 2, 3})
			return r, brokers
		},
		slots: func(r kmsg.Response) []slot {
			var s []slot
			d := r.(*kmsg.DescribeClusterResponse)
			for i := range d.Brokers {
				s = append(s, slot{d.Brokers[i].NodeID, &d.Brokers[i].Host, &d.Brokers[i].Port})
			}
			return s
		},
	}
}

func produceCase() rewriteCase {
	return rewriteCase{
		key: KeyProduce,
		build: func(v int16, brokers []addr) (kmsg.Response, []addr) {
			r := kmsg.NewPtrProduceResponse()
			r.SetVersion(v)
			r.ThrottleMillis = 11
			t := kmsg.NewProduceResponseTopic()
			t.Topic, t.TopicID = "orders", topicID1
			p0 := kmsg.NewProduceResponseTopicPartition()
			p0.Partition, p0.BaseOffset, p0.LogAppendTime, p0.LogStartOffset = 0, 123456789, 1700000000000, 100
			p1 := kmsg.NewProduceResponseTopicPartition()
			p1.Partition, p1.ErrorCode, p1.BaseOffset = 3, 6, -1 // NOT_LEADER_OR_FOLLOWER
			p1.ErrorMessage = strp("not the leader")
			p1.ErrorRecords = []kmsg.ProduceResponseTopicPartitionErrorRecord{{RelativeOffset: 2, ErrorMessage: strp("bad record")}}
			p1.CurrentLeader.LeaderID, p1.CurrentLeader.LeaderEpoch = 7, 12
			t.Partitions = []kmsg.ProduceResponseTopicPartition{p0, p1}
			r.Topics = []kmsg.ProduceResponseTopic{t}
			if v < 10 {
				// Node endpoints exist from v10 on (KIP-951). kmsg would
				// write them as tag 0 of any flexible version (v9), but
				// Kafka does not.
				return r, nil
			}
			for _, b := range brokers {
				pb := kmsg.NewProduceResponseBroker()
				pb.NodeID, pb.Host, pb.Port, pb.Rack = b.id, b.host, b.port, strp("r")
				r.Brokers = append(r.Brokers, pb)
			}
			return r, brokers
		},
		slots: func(r kmsg.Response) []slot {
			var s []slot
			p := r.(*kmsg.ProduceResponse)
			for i := range p.Brokers {
				s = append(s, slot{p.Brokers[i].NodeID, &p.Brokers[i].Host, &p.Brokers[i].Port})
			}
			return s
		},
	}
}

func fetchCase() rewriteCase {
	return rewriteCase{
		key: KeyFetch,
		build: func(v int16, brokers []addr) (kmsg.Response, []addr) {
			r := kmsg.NewPtrFetchResponse()
			r.SetVersion(v)
			r.ThrottleMillis, r.SessionID = 2, 0x5e55
			t := kmsg.NewFetchResponseTopic()
			t.Topic, t.TopicID = "orders", topicID1
			p0 := kmsg.NewFetchResponseTopicPartition()
			p0.Partition, p0.HighWatermark, p0.LastStableOffset, p0.LogStartOffset = 0, 1000, 990, 10
			p0.AbortedTransactions = []kmsg.FetchResponseTopicPartitionAbortedTransaction{{ProducerID: 4000, FirstOffset: 995}}
			p0.PreferredReadReplica = -1
			p0.RecordBatches = records
			p1 := kmsg.NewFetchResponseTopicPartition()
			p1.Partition, p1.ErrorCode = 1, 6
			p1.CurrentLeader.LeaderID, p1.CurrentLeader.LeaderEpoch = 2, 9
			p1.RecordBatches = []byte{} // empty, not null
			p2 := kmsg.NewFetchResponseTopicPartition()
			p2.Partition, p2.HighWatermark = 2, 5
			p2.RecordBatches = nil // null
			t.Partitions = []kmsg.FetchResponseTopicPartition{p0, p1, p2}
			r.Topics = []kmsg.FetchResponseTopic{t}
			if v < 16 {
				return r, nil // node endpoints exist from v16 on
			}
			for _, b := range brokers {
				fb := kmsg.NewFetchResponseBroker()
				fb.NodeID, fb.Host, fb.Port = b.id, b.host, b.port
				r.Brokers = append(r.Brokers, fb)
			}
			return r, brokers
		},
		slots: func(r kmsg.Response) []slot {
			var s []slot
			f := r.(*kmsg.FetchResponse)
			for i := range f.Brokers {
				s = append(s, slot{f.Brokers[i].NodeID, &f.Brokers[i].Host, &f.Brokers[i].Port})
			}
			return s
		},
	}
}

func shareFetchCase() rewriteCase {
	return rewriteCase{
		key: KeyShareFetch,
		build: func(v int16, brokers []addr) (kmsg.Response, []addr) {
			r := kmsg.NewPtrShareFetchResponse()
			r.SetVersion(v)
			r.ThrottleMillis, r.AcquisitionLockTimeoutMillis = 1, 30000
			t := kmsg.NewShareFetchResponseTopic()
			t.TopicID = topicID2
			p := kmsg.NewShareFetchResponseTopicPartition()
			p.Partition, p.Records = 4, records
			p.AcknowledgeErrorCode, p.AcknowledgeErrorMessage = 0, nil
			p.CurrentLeader.LeaderID, p.CurrentLeader.LeaderEpoch = 1, 3
			p.AcquiredRecords = []kmsg.ShareFetchResponseTopicPartitionAcquiredRecord{{FirstOffset: 5, LastOffset: 9, DeliveryCount: 1}}
			p2 := kmsg.NewShareFetchResponseTopicPartition()
			p2.Partition, p2.ErrorCode, p2.ErrorMessage = 5, 6, strp("moved")
			t.Partitions = []kmsg.ShareFetchResponseTopicPartition{p, p2}
			r.Topics = []kmsg.ShareFetchResponseTopic{t}
			for _, b := range brokers {
				e := kmsg.NewShareFetchResponseNodeEndpoint()
				e.NodeID, e.Host, e.Port = b.id, b.host, b.port
				r.NodeEndpoints = append(r.NodeEndpoints, e)
			}
			return r, brokers
		},
		slots: func(r kmsg.Response) []slot {
			var s []slot
			f := r.(*kmsg.ShareFetchResponse)
			for i := range f.NodeEndpoints {
				e := &f.NodeEndpoints[i]
				s = append(s, slot{e.NodeID, &e.Host, &e.Port})
			}
			return s
		},
	}
}

func shareAcknowledgeCase() rewriteCase {
	return rewriteCase{
		key: KeyShareAcknowledge,
		build: func(v int16, brokers []addr) (kmsg.Response, []addr) {
			r := kmsg.NewPtrShareAcknowledgeResponse()
			r.SetVersion(v)
			r.ThrottleMillis, r.AcquisitionLockTimeoutMillis = 4, 15000
			t := kmsg.NewShareAcknowledgeResponseTopic()
			t.TopicID = topicID1
			p := kmsg.NewShareAcknowledgeResponseTopicPartition()
			p.Partition, p.ErrorCode, p.ErrorMessage = 2, 6, strp("not leader")
			p.CurrentLeader.LeaderID, p.CurrentLeader.LeaderEpoch = 7, 8
			t.Partitions = []kmsg.ShareAcknowledgeResponseTopicPartition{p}
			r.Topics = []kmsg.ShareAcknowledgeResponseTopic{t}
			for _, b := range brokers {
				e := kmsg.NewShareAcknowledgeResponseNodeEndpoint()
				e.NodeID, e.Host, e.Port = b.id, b.host, b.port
				e.Rack = strp("rack-z")
				r.NodeEndpoints = append(r.NodeEndpoints, e)
			}
			return r, brokers
		},
		slots: func(r kmsg.Response) []slot {
			var s []slot
			a := r.(*kmsg.ShareAcknowledgeResponse)
			for i := range a.NodeEndpoints {
				e := &a.NodeEndpoints[i]
				s = append(s, slot{e.NodeID, &e.Host, &e.Port})
			}
			return s
		},
	}
}

func rewriteCases() []rewriteCase {
	return []rewriteCase{
		metadataCase(), findCoordinatorCase(), describeClusterCase(), produceCase(),
		fetchCase(), shareFetchCase(), shareAcknowledgeCase(),
	}
}

func maxResponseVersion(key int16) int16 { return kmsg.ResponseForKey(key).MaxVersion() }

func decodeResponse(t *testing.T, key, v int16, b []byte) kmsg.Response {
	t.Helper()
	r := kmsg.ResponseForKey(key)
	r.SetVersion(v)
	if err := r.ReadFrom(b); err != nil {
		t.Fatalf("decode %s v%d: %v", kmsg.NameForKey(key), v, err)
	}
	return r
}

func TestRewriteAddressesEveryVersion(t *testing.T) {
	for _, tc := range rewriteCases() {
		for v := int16(0); v <= maxResponseVersion(tc.key); v++ {
			for _, brokers := range [][]addr{upstreamBrokers, upstreamBrokers[:1], nil} {
				name := fmt.Sprintf("%s/v%d/%dbrokers", kmsg.NameForKey(tc.key), v, len(brokers))
				t.Run(name, func(t *testing.T) {
					resp, wantCalls := tc.build(v, brokers)
					body := resp.AppendTo(nil)
					orig := bytes.Clone(body)
					rec := &recorder{}
					got, err := RewriteAddresses(tc.key, v, body, rec.mapper)
					if err != nil {
						t.Fatalf("RewriteAddresses: %v", err)
					}
					if !bytes.Equal(body, orig) {
						t.Fatal("the input body was modified")
					}
					if fmt.Sprint(rec.calls) != fmt.Sprint(wantCalls) {
						t.Fatalf("mapper calls = %v, want %v", rec.calls, wantCalls)
					}
					if len(wantCalls) == 0 {
						if got != nil {
							t.Fatalf("a response naming no broker was re-encoded (%d bytes); want nil", len(got))
						}
						return
					}
					if got == nil {
						t.Fatal("nil result for a response naming brokers")
					}

					// Exactly the response kmsg encodes with the mapped
					// addresses: nothing else changed.
					wantResp, _ := tc.build(v, proxiedAll(brokers))
					if want := wantResp.AppendTo(nil); !bytes.Equal(got, want) {
						t.Fatalf("rewritten body differs from the expected encoding\n got %x\nwant %x", got, want)
					}

					// Independently: every address in the decoded result
					// is a mapped one (or an untouched failed lookup), and
					// putting the upstream addresses back yields the
					// original bytes.
					dec := decodeResponse(t, tc.key, v, got)
					upByID := map[int32]addr{}
					for _, b := range brokers {
						upByID[b.id] = b
					}
					mappedSlots := 0
					for _, s := range tc.slots(dec) {
						if s.id < 0 {
							if *s.host == proxyHost {
								t.Fatalf("failed lookup (node %d) was mapped", s.id)
							}
							continue
						}
						want := proxied(addr{id: s.id})
						if *s.host != want.host || *s.port != want.port {
							t.Fatalf("node %d at %s:%d, want %s:%d", s.id, *s.host, *s.port, want.host, want.port)
						}
						up := upByID[s.id]
						*s.host, *s.port = up.host, up.port
						mappedSlots++
					}
					if mappedSlots != len(wantCalls) {
						t.Fatalf("%d addresses in the result, want %d", mappedSlots, len(wantCalls))
					}
					if back := dec.AppendTo(nil); !bytes.Equal(back, orig) {
						t.Fatalf("apart from addresses the response changed\n got %x\nwant %x", back, orig)
					}
				})
			}
		}
	}
}

// TestRewriteAddressesKeepsPayload checks the fields a client acts on
// directly, in case kmsg's encoder and decoder were both wrong the same way.
func TestRewriteAddressesKeepsPayload(t *testing.T) {
	rec := &recorder{}
	{
		v := maxResponseVersion(KeyFetch)
		resp, _ := fetchCase().build(v, upstreamBrokers)
		out, err := RewriteAddresses(KeyFetch, v, resp.AppendTo(nil), rec.mapper)
		if err != nil {
			t.Fatal(err)
		}
		f := decodeResponse(t, KeyFetch, v, out).(*kmsg.FetchResponse)
		p := f.Topics[0].Partitions
		if f.SessionID != 0x5e55 || f.Topics[0].TopicID != topicID1 || len(p) != 3 ||
			!bytes.Equal(p[0].RecordBatches, records) || p[0].HighWatermark != 1000 ||
			p[0].LastStableOffset != 990 || len(p[0].AbortedTransactions) != 1 ||
			p[1].ErrorCode != 6 || p[1].CurrentLeader.LeaderID != 2 ||
			p[1].RecordBatches == nil || len(p[1].RecordBatches) != 0 || p[2].RecordBatches != nil {
			t.Fatalf("fetch payload changed: %+v", f)
		}
		if len(f.Brokers) != 3 || f.Brokers[2].Host != proxyHost || f.Brokers[2].Port != 10007 {
			t.Fatalf("fetch brokers = %+v", f.Brokers)
		}
	}
	{
		v := int16(12)
		resp, _ := metadataCase().build(v, upstreamBrokers)
		out, err := RewriteAddresses(KeyMetadata, v, resp.AppendTo(nil), rec.mapper)
		if err != nil {
			t.Fatal(err)
		}
		m := decodeResponse(t, KeyMetadata, v, out).(*kmsg.MetadataResponse)
		if m.ClusterID == nil || *m.ClusterID != "cluster-Xy7" || m.ControllerID != 2 || len(m.Topics) != 2 ||
			*m.Topics[0].Topic != "orders" || m.Topics[0].TopicID != topicID1 ||
			fmt.Sprint(m.Topics[0].Partitions[0].Replicas) != "[1 2 7]" || m.Topics[1].ErrorCode != 3 ||
			m.Brokers[0].Rack == nil || *m.Brokers[0].Rack != "rack-a" {
			t.Fatalf("metadata payload changed: %+v", m)
		}
		var tag []byte
		m.UnknownTags.Each(func(k uint32, v []byte) {
			if k == 20 {
				tag = v
			}
		})
		if string(tag) != "future-field" {
			t.Fatalf("unknown tagged field lost: %q", tag)
		}
	}
}

func TestRewriteAddressesFindCoordinatorErrors(t *testing.T) {
	for v := int16(0); v <= maxResponseVersion(KeyFindCoordinator); v++ {
		resp := kmsg.NewPtrFindCoordinatorResponse()
		resp.SetVersion(v)
		if v < 4 {
			resp.ErrorCode, resp.NodeID, resp.Host, resp.Port = 15, -1, "", -1
		} else {
			for _, key := range []string{"g1", "g2"} {
				c := kmsg.NewFindCoordinatorResponseCoordinator()
				c.Key, c.ErrorCode, c.NodeID, c.Host, c.Port = key, 15, -1, "", -1
				resp.Coordinators = append(resp.Coordinators, c)
			}
		}
		variants := map[string]*kmsg.FindCoordinatorResponse{"not available": resp}
		// An error code with a stale node still set, and node -1 without
		// an error code: neither is an address to map.
		withNode := *resp
		withNode.Coordinators = append([]kmsg.FindCoordinatorResponseCoordinator(nil), resp.Coordinators...)
		if v < 4 {
			withNode.NodeID, withNode.Host, withNode.Port = 2, "b2.up", 19093
		} else {
			withNode.Coordinators[0].NodeID, withNode.Coordinators[0].Host = 2, "b2.up"
		}
		variants["error with node"] = &withNode
		noErr := *resp
		noErr.Coordinators = append([]kmsg.FindCoordinatorResponseCoordinator(nil), resp.Coordinators...)
		if v < 4 {
			noErr.ErrorCode = 0
		} else {
			noErr.Coordinators[1].ErrorCode = 0
		}
		variants["node -1 without error"] = &noErr
		for name, r := range variants {
			rec := &recorder{failOn: -1}
			got, err := RewriteAddresses(KeyFindCoordinator, v, r.AppendTo(nil), rec.mapper)
			if err != nil || got != nil || len(rec.calls) != 0 {
				t.Errorf("v%d %s: got %x, %v; mapper calls %v; want nil, nil, none", v, name, got, err, rec.calls)
			}
		}
	}
}

func TestRewriteAddressesMapperError(t *testing.T) {
	for _, tc := range rewriteCases() {
		for v := int16(0); v <= maxResponseVersion(tc.key); v++ {
			resp, want := tc.build(v, upstreamBrokers)
			if len(want) == 0 {
				continue
			}
			rec := &recorder{failOn: want[0].id}
			got, err := RewriteAddresses(tc.key, v, resp.AppendTo(nil), rec.mapper)
			if !errors.Is(err, errBoom) {
				t.Errorf("%s v%d: err = %v, want the mapper's error", kmsg.NameForKey(tc.key), v, err)
				continue
			}
			if got != nil {
				t.Errorf("%s v%d: a body came back with the error", kmsg.NameForKey(tc.key), v)
			}
			if !strings.Contains(err.Error(), want[0].host) {
				t.Errorf("%s v%d: error %q does not name the broker", kmsg.NameForKey(tc.key), v, err)
			}
		}
	}
}

func TestRewriteAddressesOtherKeys(t *testing.T) {
	// Keys that carry no addresses, and keys unknown to kmsg, are errors
	// rather than silently passed on.
	for _, key := range []int16{2, 8, 9, KeyApiVersions, 22, 26, 94} {
		resp := kmsg.ResponseForKey(key)
		resp.SetVersion(0)
		rec := &recorder{}
		got, err := RewriteAddresses(key, 0, resp.AppendTo(nil), rec.mapper)
		if err == nil || got != nil || len(rec.calls) != 0 {
			t.Errorf("key %d: got %x, %v", key, got, err)
		}
	}
	for _, key := range []int16{-1, 999, 1023, 32767} {
		if got, err := RewriteAddresses(key, 0, []byte{0, 0, 0, 0}, (&recorder{}).mapper); err == nil || got != nil {
			t.Errorf("key %d: got %x, %v", key, got, err)
		}
	}
}

func TestRewriteAddressesTruncated(t *testing.T) {
	for _, tc := range rewriteCases() {
		for v := int16(0); v <= maxResponseVersion(tc.key); v++ {
			resp, _ := tc.build(v, upstreamBrokers)
			body := resp.AppendTo(nil)
			for n := 0; n < len(body); n++ {
				rec := &recorder{}
				got, err := RewriteAddresses(tc.key, v, body[:n:n], rec.mapper)
				if err == nil {
					t.Fatalf("%s v%d: %d of %d bytes decoded without error (result %d bytes)",
						kmsg.NameForKey(tc.key), v, n, len(body), len(got))
				}
				if got != nil || len(rec.calls) != 0 {
					t.Fatalf("%s v%d: truncated body gave a result or mapper calls", kmsg.NameForKey(tc.key), v)
				}
			}
		}
	}
}

func TestRewriteAddressesGarbageNeverPanics(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	var seeds [][]byte
	type kv struct{ key, v int16 }
	var kvs []kv
	for _, tc := range rewriteCases() {
		for v := int16(0); v <= maxResponseVersion(tc.key); v++ {
			resp, _ := tc.build(v, upstreamBrokers)
			seeds = append(seeds, resp.AppendTo(nil))
			kvs = append(kvs, kv{tc.key, v})
		}
	}
	for i := 0; i < 30000; i++ {
		j := rng.IntN(len(seeds))
		body := bytes.Clone(seeds[j])
		// Flip a few bytes, or random bytes entirely.
		if rng.IntN(4) == 0 {
			body = make([]byte, rng.IntN(64))
			for k := range body {
				body[k] = byte(rng.Uint32())
			}
		} else {
			for range 1 + rng.IntN(4) {
				body[rng.IntN(len(body))] = byte(rng.Uint32())
			}
		}
		key, v := kvs[j].key, kvs[j].v
		if rng.IntN(8) == 0 {
			v = int16(rng.IntN(25))
		}
		checkRewriteAddresses(t, key, v, body)
	}
}

// checkRewriteAddresses runs RewriteAddresses on arbitrary input and checks
// what must hold whatever the input: a result decodes at the same version,
// every address in it was mapped, and re-encoding it is stable.
func checkRewriteAddresses(t *testing.T, key, v int16, body []byte) {
	t.Helper()
	orig := bytes.Clone(body)
	rec := &recorder{}
	got, err := RewriteAddresses(key, v, body, rec.mapper)
	if !bytes.Equal(orig, body) {
		t.Fatalf("%s v%d: input modified", kmsg.NameForKey(key), v)
	}
	if err != nil {
		if got != nil {
			t.Fatalf("%s v%d: result with error %v", kmsg.NameForKey(key), v, err)
		}
		return
	}
	if got == nil {
		if len(rec.calls) != 0 {
			t.Fatalf("%s v%d: mapper called %d times but nil result", kmsg.NameForKey(key), v, len(rec.calls))
		}
		return
	}
	if len(rec.calls) == 0 {
		t.Fatalf("%s v%d: re-encoded without mapping anything", kmsg.NameForKey(key), v)
	}
	dec := kmsg.ResponseForKey(key)
	dec.SetVersion(v)
	if err := dec.ReadFrom(got); err != nil {
		t.Fatalf("%s v%d: result does not decode: %v\ninput %x", kmsg.NameForKey(key), v, err, body)
	}
	if again := dec.AppendTo(nil); !bytes.Equal(again, got) {
		t.Fatalf("%s v%d: result does not re-encode to itself\ninput %x", kmsg.NameForKey(key), v, body)
	}
}

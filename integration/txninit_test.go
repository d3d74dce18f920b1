package integration

import (
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Issue 9, item 3: a new instance of a transactional id gets its producer
// id only once everything the previous instance committed is readable
// read_committed in the backend, as Kafka answers CONCURRENT_TRANSACTIONS
// until the commit's markers are written. Kafka Connect's exactly-once
// sources read their own output right after initTransactions(): a commit
// still on its way would be missed and produced again. The backend holds
// eosproxy's forwarding of the commit until the new instance has been
// refused at least once.
func TestInitProducerIDAfterCommitIsInBackend(t *testing.T) {
	t.Run("backend without EOS", func(t *testing.T) { initAfterCommit(t, newNoEOSFake(t)) })
	t.Run("backend with idempotence", func(t *testing.T) { initAfterCommit(t, newFake(t)) })
}

func initAfterCommit(t *testing.T, b backend) {
	p := startProxy(t, b)
	topic := createTopic(t, kadm.NewClient(newClient(t, p.Addr())), 1)
	id := topic + "-txn"

	// While held, eosproxy's forwarding to the topic is refused as not
	// written, and retried.
	topics, err := kadm.NewClient(newClient(t, b.addrs[0])).ListTopics(testCtx(t), topic)
	if err != nil {
		t.Fatal(err)
	}
	topicID := topics[topic].ID
	var held atomic.Bool
	held.Store(true)
	b.fake.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		b.fake.KeepControl()
		pr, ok := req.(*kmsg.ProduceRequest)
		if !ok || !held.Load() || !slices.ContainsFunc(pr.Topics, func(rt kmsg.ProduceRequestTopic) bool {
			return rt.Topic == topic || rt.TopicID == topicID
		}) {
			return nil, nil, false
		}
		resp := pr.ResponseKind().(*kmsg.ProduceResponse)
		for _, rt := range pr.Topics {
			st := kmsg.NewProduceResponseTopic()
			st.Topic, st.TopicID = rt.Topic, rt.TopicID
			for _, rp := range rt.Partitions {
				sp := kmsg.NewProduceResponseTopicPartition()
				sp.Partition, sp.ErrorCode = rp.Partition, kerr.NotEnoughReplicas.Code
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})

	const n = 50
	prev := newClient(t, p.Addr(), kgo.DefaultProduceTopic(topic), kgo.TransactionalID(id))
	if err := prev.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	produceAndFlush(t, prev, topic, 0, n)
	if err := prev.EndTransaction(testCtx(t), kgo.TryCommit); err != nil {
		t.Fatalf("commit: %v", err)
	}

	// refused closes on the new instance's second InitProducerId answer:
	// it was refused (and asked again) while the commit was held.
	var inits atomic.Int32
	refused := make(chan struct{})
	next := newClient(t, p.Addr(), kgo.DefaultProduceTopic(topic), kgo.TransactionalID(id),
		kgo.WithHooks(brokerReadHook(func(key int16) {
			if key == int16(kmsg.InitProducerID) && inits.Add(1) == 2 {
				close(refused)
			}
		})))
	initDone := make(chan error, 1)
	go func() {
		_, _, err := next.ProducerID(testCtx(t))
		initDone <- err
	}()
	select {
	case err := <-initDone:
		committed := committedEnd(t, b, topic)
		t.Fatalf("InitProducerId answered (%v) while the previous instance's commit was held: the backend holds %d of its %d records read_committed", err, committed, n)
	case <-refused:
	}
	held.Store(false)
	if err := <-initDone; err != nil {
		t.Fatalf("InitProducerId: %v", err)
	}
	if got := committedEnd(t, b, topic); got != n {
		t.Fatalf("InitProducerId answered while the backend holds %d of the previous instance's %d committed records read_committed", got, n)
	}
}

// committedEnd is the partition's last stable offset in the backend: what
// read_committed consumers can read.
func committedEnd(t *testing.T, b backend, topic string) int64 {
	t.Helper()
	offs, err := kadm.NewClient(newClient(t, b.addrs[0])).ListCommittedOffsets(testCtx(t), topic)
	if err != nil {
		t.Fatal(err)
	}
	o, _ := offs.Lookup(topic, 0)
	return o.Offset
}

// brokerReadHook calls fn with the key of every response a client reads.
type brokerReadHook func(key int16)

func (h brokerReadHook) OnBrokerRead(_ kgo.BrokerMetadata, key int16, _ int, _, _ time.Duration, _ error) {
	h(key)
}

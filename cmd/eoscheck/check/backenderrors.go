package check

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// backendErrors makes the in-process kfake backend answer a fraction of
// the requests eosproxy writes with on its own account with an error
// although the write happened: Produce to the input and output topics (the
// idempotent producers' forwarded batches, the batches of forwarded
// commits) with REQUEST_TIMED_OUT or NOT_ENOUGH_REPLICAS_AFTER_APPEND, and
// OffsetCommit of the copiers' group (forwarded commits' offsets) with
// REQUEST_TIMED_OUT.
//
// kfake.Fault answers those codes on those keys after doing the work (it
// appends the batch, stores the offsets): a real broker answers them when
// the append is in its log but replication did not confirm it in time.
// Other codes would be answered instead of the work.
//
// Whether a request is answered with an error is decided once per request,
// by a kfake control that runs before the request is handled (the faults'
// When callbacks run once per topic and partition): every partition of the
// chosen request then gets the error.
type backendErrors struct {
	enabled atomic.Bool
	rate    float64
	trace   *tracer
	names   map[[16]byte]string // topic names by id, for the trace

	mu  sync.Mutex
	rng *rand.Rand
	// cur is the decision about the request being handled, by key (kfake
	// handles requests one at a time: the control and the faults' When
	// callbacks of one request run before the next request's control).
	cur map[kmsg.Key]*errDecision

	counts [numErrKinds]atomic.Int64
}

// errKind is an injected answer.
type errKind int

const (
	noErr errKind = iota
	produceTimedOut
	produceNotEnoughReplicas
	commitTimedOut
	numErrKinds
)

func (k errKind) String() string {
	switch k {
	case produceTimedOut:
		return "Produce REQUEST_TIMED_OUT"
	case produceNotEnoughReplicas:
		return "Produce NOT_ENOUGH_REPLICAS_AFTER_APPEND"
	case commitTimedOut:
		return "OffsetCommit REQUEST_TIMED_OUT"
	}
	return "none"
}

func (k errKind) err() *kerr.Error {
	if k == produceNotEnoughReplicas {
		return kerr.NotEnoughReplicasAfterAppend
	}
	return kerr.RequestTimedOut
}

func (k errKind) key() kmsg.Key {
	if k == commitTimedOut {
		return kmsg.OffsetCommit
	}
	return kmsg.Produce
}

// errDecision is the decision about one request.
type errDecision struct {
	kind    errKind
	counted bool // the request was answered with kind (one of its partitions matched)
}

func newBackendErrors(seed uint64, rate float64, trace *tracer) *backendErrors {
	return &backendErrors{
		rate:  rate,
		trace: trace,
		rng:   rand.New(rand.NewPCG(seed^0x9e3779b9, seed>>3|1)),
		cur:   map[kmsg.Key]*errDecision{},
	}
}

// install adds the controls and faults to the cluster: Produce to any of
// produceTopics, OffsetCommit of commitTopic's offsets. ids names the
// topics' ids (requests that name topics by id are traced by name).
func (b *backendErrors) install(fake *kfake.Cluster, produceTopics []string, commitTopic string, ids map[[16]byte]string) {
	b.names = ids
	for _, key := range []kmsg.Key{kmsg.Produce, kmsg.OffsetCommit} {
		fake.ControlKey(int16(key), func(kmsg.Request) (kmsg.Response, error, bool) {
			fake.KeepControl()
			b.decide(key)
			return nil, nil, false
		})
	}
	var faults []kfake.Fault
	add := func(kind errKind, topic string) {
		faults = append(faults, kfake.Fault{
			Keys:  []kmsg.Key{kind.key()},
			Topic: topic,
			Count: -1,
			Err:   kind.err(),
			When:  func(req kmsg.Request) bool { return b.answer(kind, req) },
		})
	}
	for _, t := range produceTopics {
		add(produceTimedOut, t)
		add(produceNotEnoughReplicas, t)
	}
	add(commitTimedOut, commitTopic)
	fake.Fault(faults...)
}

// decide is the control of every Produce and OffsetCommit request: it
// chooses whether the request is answered with an error.
func (b *backendErrors) decide(key kmsg.Key) {
	b.mu.Lock()
	defer b.mu.Unlock()
	d := &errDecision{}
	if b.enabled.Load() && b.rng.Float64() < b.rate {
		switch {
		case key == kmsg.OffsetCommit:
			d.kind = commitTimedOut
		case b.rng.IntN(2) == 0:
			d.kind = produceTimedOut
		default:
			d.kind = produceNotEnoughReplicas
		}
	}
	b.cur[key] = d
}

// answer is the When of the fault answering kind: whether the request being
// handled was chosen for kind. The first time it is, it is counted and
// traced.
func (b *backendErrors) answer(kind errKind, req kmsg.Request) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	d := b.cur[kind.key()]
	if d == nil || d.kind != kind {
		return false
	}
	if !d.counted {
		d.counted = true
		b.counts[kind].Add(1)
		b.trace.printf("backend: %s answered %s, applied anyway", b.describe(req), kind.err().Message)
	}
	return true
}

// describe names a Produce or OffsetCommit request's partitions.
func (b *backendErrors) describe(req kmsg.Request) string {
	name := func(topic string, id [16]byte) string {
		if topic == "" {
			if n, ok := b.names[id]; ok {
				return n
			}
			return fmt.Sprintf("%x", id)
		}
		return topic
	}
	var parts []string
	switch r := req.(type) {
	case *kmsg.ProduceRequest:
		for _, t := range r.Topics {
			for _, p := range t.Partitions {
				parts = append(parts, fmt.Sprintf("%s/%d", name(t.Topic, t.TopicID), p.Partition))
			}
		}
		return "Produce " + strings.Join(parts, " ")
	case *kmsg.OffsetCommitRequest:
		for _, t := range r.Topics {
			for _, p := range t.Partitions {
				parts = append(parts, fmt.Sprintf("%s/%d:%d", name(t.Topic, t.TopicID), p.Partition, p.Offset))
			}
		}
		return fmt.Sprintf("OffsetCommit member %q generation %d offsets %v", r.MemberID, r.Generation, parts)
	}
	return fmt.Sprintf("key %d", req.Key())
}

func (b *backendErrors) setEnabled(on bool) { b.enabled.Store(on) }

// total is how many requests were answered with an injected error.
func (b *backendErrors) total() int64 {
	var n int64
	for k := range b.counts {
		n += b.counts[k].Load()
	}
	return n
}

// byKind counts the injected errors by request key and code.
func (b *backendErrors) byKind() map[string]int64 {
	out := map[string]int64{}
	for k := produceTimedOut; k < numErrKinds; k++ {
		out[k.String()] = b.counts[k].Load()
	}
	return out
}

// sortedKeys returns m's keys in order.
func sortedKeys(m map[string]int64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

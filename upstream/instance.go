package upstream

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eosproxy/eosproxy/dedup"
	"github.com/eosproxy/eosproxy/store"
)

// One eosproxy instance per backend, until several are supported: each
// instance is the coordinator of every transactional id and the owner of
// every producer id it hands out, and two of them would fence nothing across
// each other. Both guarantees live in the backend, in two single-partition
// topics eosproxy creates:
//
//   - __eosproxy_ids: reserving a block of producer ids is writing a record
//     there; the record's offset, which no other write gets, numbers the
//     block. This needs nothing of the backend but appends (no idempotence)
//     and keeps ids unique across instances and data dirs. The store's own
//     reservation (dedup) stays the durable cache: ids are handed out from
//     a block until it is used up, and never below an earlier block.
//   - __eosproxy_instances: the instance lease. An instance (a random id
//     kept in its data dir) claims the backend with a record there and
//     renews it with a heartbeat every leaseTimeout/5; a clean stop writes a
//     release. A starting instance that finds another instance's lease
//     alive (a heartbeat seen while it watches, or a claim it lost a race
//     to) refuses to start, with an error naming it; a lease not renewed
//     for leaseTimeout is taken over, and its holder, should it come back,
//     stops on seeing the take-over.
const (
	idsTopic      = "__eosproxy_ids"
	instanceTopic = "__eosproxy_instances"
	// leaseScanBack is how many of the lease topic's last records a
	// starting instance reads: minutes of a live instance's heartbeats.
	leaseScanBack = 500
)

// InstanceIDKey is where a data dir keeps its instance's id.
var InstanceIDKey = []byte("instance/id")

// ErrNoOwnAccess: the backend closes eosproxy's own connections at once,
// which is what a backend requiring SASL does (eosproxy does not yet
// authenticate its own connections; clients' SASL passes through).
var ErrNoOwnAccess = errors.New("the backend closes eosproxy's own connections (SASL required?)")

// ErrAnotherInstance is returned by StartInstance when another eosproxy
// instance serves the same backend.
var ErrAnotherInstance = errors.New("another eosproxy instance serves this backend")

type leaseRecord struct {
	Instance   string `json:"instance"`
	Kind       string `json:"kind"`                 // claim, heartbeat or release
	Supersedes string `json:"supersedes,omitempty"` // a claim's: the instance whose lease it took over
	Host       string `json:"host,omitempty"`
	PID        int    `json:"pid,omitempty"`
	Listen     string `json:"listen,omitempty"`
	TimeMs     int64  `json:"time_ms"`
}

func (r leaseRecord) describe() string {
	return fmt.Sprintf("instance %s (host %s, pid %d, listening on %s)", r.Instance, r.Host, r.PID, r.Listen)
}

// Instance holds this eosproxy's lease on the backend and reserves its
// producer id blocks.
type Instance struct {
	id    string
	seeds []string
	opts  []kgo.Opt // TLS and SASL to the backend
	log   zerolog.Logger
	cl    *kgo.Client // writes: acks=all, no idempotence (a backend may have none)
	self  leaseRecord

	timeout, every time.Duration
	lost           chan error // receives once if another instance took over
	stop, done     chan struct{}
	stopOnce       sync.Once
	closeOnce      sync.Once
}

// InstanceID returns the id of this data dir's instance, made on first use.
func InstanceID(db *store.DB) (string, error) {
	v, err := db.Get(InstanceIDKey)
	if err != nil {
		return "", fmt.Errorf("load instance id: %w", err)
	}
	if len(v) > 0 {
		return string(v), nil
	}
	b := make([]byte, 8)
	rand.Read(b)
	id := hex.EncodeToString(b)
	if err := db.Put(InstanceIDKey, []byte(id)); err != nil {
		return "", fmt.Errorf("store instance id: %w", err)
	}
	return id, nil
}

// StartInstance takes this instance's lease on the backend (waiting out a
// lease that may have expired) and starts renewing it. It retries while the
// backend cannot be reached, until ctx ends.
func StartInstance(ctx context.Context, db *store.DB, seeds []string, opts []kgo.Opt, listen string, timeout time.Duration, log zerolog.Logger) (*Instance, error) {
	id, err := InstanceID(db)
	if err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	in := &Instance{
		id: id, seeds: seeds, log: log.With().Str("component", "instance").Str("instance", id).Logger(),
		self:    leaseRecord{Instance: id, Host: host, PID: os.Getpid(), Listen: listen},
		timeout: timeout, every: timeout / 5,
		lost: make(chan error, 1), stop: make(chan struct{}), done: make(chan struct{}),
	}
	in.opts = opts
	// UnknownTopicRetries(1): a missing topic (a new cluster behind the
	// same addresses) must come back as UNKNOWN_TOPIC_OR_PARTITION, which
	// write answers by creating it, before a write's deadline; kgo's
	// default of four metadata loads, spaced by a backoff that grew while
	// the backend was down, outlasts it.
	in.cl, err = kgo.NewClient(append(opts[:len(opts):len(opts)], kgo.SeedBrokers(seeds...), kgo.DisableIdempotentWrite(),
		kgo.RequiredAcks(kgo.AllISRAcks()), kgo.ProducerLinger(0), kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.UnknownTopicRetries(1))...)
	if err != nil {
		return nil, fmt.Errorf("instance client: %w", err)
	}
	var claimed int64
	for attempt := 0; ; attempt++ {
		claimed, err = in.acquire(ctx)
		if err == nil {
			break
		}
		if errors.Is(err, ErrAnotherInstance) || ctx.Err() != nil {
			in.cl.Close()
			return nil, err
		}
		var eof *kgo.ErrFirstReadEOF
		if errors.As(err, &eof) && attempt >= 2 {
			in.cl.Close()
			return nil, fmt.Errorf("%w: %w", ErrNoOwnAccess, err)
		}
		if attempt == 0 {
			in.log.Info().Err(err).Msg("cannot take the instance lease on the backend yet; retrying")
		}
		select {
		case <-ctx.Done():
			in.cl.Close()
			return nil, fmt.Errorf("take the instance lease on the backend: %w", err)
		case <-time.After(500 * time.Millisecond):
		}
	}
	go in.heartbeats(claimed)
	return in, nil
}

// ensureTopics creates the two topics if they do not exist.
func (in *Instance) ensureTopics(ctx context.Context) error {
	adm := kadm.NewClient(in.cl)
	meta, err := adm.BrokerMetadata(ctx)
	if err != nil {
		return fmt.Errorf("backend brokers: %w", err)
	}
	// Replicated as Kafka's own internal topics are by default, where the
	// cluster has the brokers for it.
	rf := int16(min(3, max(1, len(meta.Brokers))))
	hour := "3600000"
	for topic, configs := range map[string]map[string]*string{
		idsTopic: nil,
		// Only the last minutes matter; old heartbeats may go.
		instanceTopic: {"retention.ms": &hour, "segment.ms": &hour},
	} {
		resp, err := adm.CreateTopic(ctx, 1, rf, configs, topic)
		if err == nil {
			err = resp.Err
		}
		if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
			return fmt.Errorf("create %s: %w", topic, err)
		}
	}
	return nil
}

func (in *Instance) write(ctx context.Context, topic string, n int, value []byte) (int64, error) {
	recs := make([]*kgo.Record, n)
	for i := range recs {
		recs[i] = &kgo.Record{Topic: topic, Partition: 0, Key: []byte(in.id), Value: value}
	}
	res := in.cl.ProduceSync(ctx, recs...)
	if err := res.FirstErr(); errors.Is(err, kerr.UnknownTopicOrPartition) {
		// Deleted, or a new cluster behind the same addresses.
		if err := in.ensureTopics(ctx); err != nil {
			return 0, err
		}
		res = in.cl.ProduceSync(ctx, recs...)
	}
	if err := res.FirstErr(); err != nil {
		return 0, fmt.Errorf("write to %s: %w", topic, err)
	}
	var last int64 = -1
	for _, r := range res {
		last = max(last, r.Record.Offset)
	}
	return last, nil
}

func (in *Instance) writeLease(ctx context.Context, kind, supersedes string) (int64, error) {
	r := in.self
	r.Kind, r.Supersedes, r.TimeMs = kind, supersedes, time.Now().UnixMilli()
	v, _ := json.Marshal(r)
	return in.write(ctx, instanceTopic, 1, v)
}

// ReserveBlock reserves a block of dedup.ProducerIDBlock producer ids at or
// above floor: each record this instance writes to idsTopic owns the block
// its offset numbers. Below floor (a data dir that counted its own ids
// before), as many records are written at once as it takes to get past it.
func (in *Instance) ReserveBlock(floor int64) (int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	v := []byte(in.id)
	n := 1
	for {
		off, err := in.write(ctx, idsTopic, n, v)
		if err != nil {
			return 0, err
		}
		if start := off * dedup.ProducerIDBlock; start >= floor {
			return start, nil
		}
		n = int(min((floor-off*dedup.ProducerIDBlock)/dedup.ProducerIDBlock+1, 10000))
	}
}

// leaseReader reads the lease topic from an offset on, in order.
type leaseReader struct {
	cl  *kgo.Client
	buf []*kgo.Record // fetched, not yet handed to a read
}

func (in *Instance) newReader(from int64) (*leaseReader, error) {
	cl, err := kgo.NewClient(append(in.opts[:len(in.opts):len(in.opts)], kgo.SeedBrokers(in.seeds...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{instanceTopic: {0: kgo.NewOffset().At(from)}}),
		kgo.FetchMaxWait(200*time.Millisecond))...)
	if err != nil {
		return nil, fmt.Errorf("lease reader: %w", err)
	}
	return &leaseReader{cl: cl}, nil
}

// read calls fn for each next record until fn says stop, the record at
// offset to-1 has been read (to >= 0), or ctx ends (nil error then).
func (r *leaseReader) read(ctx context.Context, to int64, fn func(off int64, rec leaseRecord) bool) error {
	for {
		for len(r.buf) > 0 {
			rec := r.buf[0]
			r.buf = r.buf[1:]
			var lr leaseRecord
			if json.Unmarshal(rec.Value, &lr) == nil && lr.Instance != "" && !fn(rec.Offset, lr) {
				return nil
			}
			if to >= 0 && rec.Offset >= to-1 {
				return nil
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		fs := r.cl.PollFetches(ctx)
		var err error
		fs.EachError(func(_ string, _ int32, e error) {
			if !errors.Is(e, context.Canceled) && !errors.Is(e, context.DeadlineExceeded) {
				err = e
			}
		})
		if err != nil {
			return fmt.Errorf("read %s: %w", instanceTopic, err)
		}
		r.buf = append(r.buf, fs.Records()...)
	}
}

// acquire takes the lease and returns the offset of this instance's claim.
func (in *Instance) acquire(ctx context.Context) (int64, error) {
	if err := in.ensureTopics(ctx); err != nil {
		return 0, err
	}
	adm := kadm.NewClient(in.cl)
	ends, err := adm.ListEndOffsets(ctx, instanceTopic)
	if err != nil {
		return 0, fmt.Errorf("end of %s: %w", instanceTopic, err)
	}
	starts, err := adm.ListStartOffsets(ctx, instanceTopic)
	if err != nil {
		return 0, fmt.Errorf("start of %s: %w", instanceTopic, err)
	}
	eo, _ := ends.Lookup(instanceTopic, 0)
	so, _ := starts.Lookup(instanceTopic, 0)
	if eo.Err != nil || so.Err != nil {
		return 0, fmt.Errorf("offsets of %s: %v %v", instanceTopic, eo.Err, so.Err)
	}
	end := eo.Offset
	from := max(so.Offset, end-leaseScanBack)
	rd, err := in.newReader(from)
	if err != nil {
		return 0, err
	}
	defer rd.cl.Close()

	// The holder: the latest other instance whose last record is no
	// release and whose lease no later claim took over.
	last := map[string]leaseRecord{}
	var order []string
	if end > from {
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := rd.read(rctx, end, func(_ int64, r leaseRecord) bool {
			if r.Kind == "claim" && r.Supersedes != "" {
				delete(last, r.Supersedes)
			}
			if r.Instance != in.id {
				last[r.Instance] = r
				order = append(order, r.Instance)
			}
			return true
		})
		timedOut := rctx.Err() != nil
		cancel()
		if err != nil {
			return 0, err
		}
		if timedOut {
			return 0, fmt.Errorf("read %s up to %d: timed out", instanceTopic, end)
		}
	}
	var holder *leaseRecord
	for i := len(order) - 1; i >= 0; i-- {
		if r, ok := last[order[i]]; ok && r.Kind != "release" {
			holder = &r
			break
		}
	}
	supersedes := ""
	if holder != nil {
		age := time.Since(time.UnixMilli(holder.TimeMs))
		if age < in.timeout {
			// Alive only if it renews its lease: watch for that until the
			// lease runs out (at least two heartbeats' time, whatever the
			// clocks say).
			wait := max(in.timeout-age, 2*in.every)
			in.log.Info().Str("holder", holder.describe()).Dur("last_heartbeat_ago", age).Dur("waiting", wait).
				Msg("another instance's lease on the backend may still be live; watching for its heartbeat")
			wctx, cancel := context.WithTimeout(ctx, wait)
			var alive *leaseRecord
			err := rd.read(wctx, -1, func(_ int64, r leaseRecord) bool {
				if r.Instance != in.id && r.Kind != "release" {
					alive = &r
					return false
				}
				if r.Instance == holder.Instance && r.Kind == "release" {
					holder = nil
					return false
				}
				return true
			})
			cancel()
			if ctx.Err() != nil {
				return 0, ctx.Err()
			}
			if err != nil {
				return 0, err
			}
			if alive != nil {
				return 0, fmt.Errorf("%w: %s renewed its lease %s ago; eosproxy does not yet support several instances on one backend (they would coordinate the same transactional ids without fencing each other); stop it or point this one at another backend",
					ErrAnotherInstance, alive.describe(), time.Since(time.UnixMilli(alive.TimeMs)).Round(time.Millisecond))
			}
		}
		if holder != nil {
			supersedes = holder.Instance
			in.log.Warn().Str("holder", holder.describe()).Msg("taking over an expired instance lease on the backend")
		}
	}
	claim, err := in.writeLease(ctx, "claim", supersedes)
	if err != nil {
		return 0, err
	}
	// Another instance that claimed between the look and the claim got
	// there first.
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var first *leaseRecord
	err = rd.read(rctx, claim+1, func(off int64, r leaseRecord) bool {
		if off < claim && r.Instance != in.id && r.Kind != "release" {
			first = &r
			return false
		}
		return true
	})
	if err == nil && rctx.Err() != nil && ctx.Err() == nil {
		err = fmt.Errorf("read %s up to this instance's claim: timed out", instanceTopic)
	}
	if err == nil && first != nil {
		err = fmt.Errorf("%w: %s claimed it at the same time; eosproxy does not yet support several instances on one backend", ErrAnotherInstance, first.describe())
	}
	if err != nil {
		rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		in.writeLease(rctx, "release", "")
		cancel()
		return 0, err
	}
	in.log.Info().Int64("offset", claim).Msg("holding the instance lease on the backend")
	return claim, nil
}

// heartbeats renews the lease until close, and watches for a take-over.
func (in *Instance) heartbeats(claim int64) {
	defer close(in.done)
	rd, err := in.newReader(claim + 1)
	if err != nil {
		in.log.Error().Err(err).Msg("cannot watch the instance lease")
	}
	if rd != nil {
		defer rd.cl.Close()
	}
	t := time.NewTicker(in.every)
	defer t.Stop()
	renewed := time.Now()
	warned := false
	for {
		select {
		case <-in.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), in.every)
		off, err := in.writeLease(ctx, "heartbeat", "")
		cancel()
		if err != nil {
			if since := time.Since(renewed); since > in.timeout/2 && !warned {
				warned = true
				in.log.Warn().Err(err).Dur("since", since).Msg("cannot renew the instance lease on the backend")
			}
			continue
		}
		renewed, warned = time.Now(), false
		if rd == nil {
			continue
		}
		ctx, cancel = context.WithTimeout(context.Background(), in.every)
		var by *leaseRecord
		rd.read(ctx, off+1, func(_ int64, r leaseRecord) bool {
			if r.Kind == "claim" && r.Supersedes == in.id {
				by = &r
				return false
			}
			return true
		})
		cancel()
		if by != nil {
			err := fmt.Errorf("%w: %s took over this instance's lease (it was not renewed for %s)", ErrAnotherInstance, by.describe(), in.timeout)
			in.log.Error().Err(err).Msg("lost the instance lease on the backend")
			in.lost <- err
			return
		}
	}
}

// halt stops renewing the lease, without releasing it.
func (in *Instance) halt() {
	in.stopOnce.Do(func() { close(in.stop) })
	<-in.done
}

// Close stops renewing the lease and releases it.
func (in *Instance) Close() {
	in.closeOnce.Do(func() {
		in.halt()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if _, err := in.writeLease(ctx, "release", ""); err != nil {
			in.log.Info().Err(err).Msg("cannot release the instance lease; another instance can take it once it expires")
		}
		in.cl.Close()
	})
}

// Lost receives an error if another instance took over this one's lease
// (it was not renewed in time): this instance must stop.
func (in *Instance) Lost() <-chan error { return in.lost }

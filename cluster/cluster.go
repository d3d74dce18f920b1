// Package cluster makes several eosproxy instances one: membership in a
// consumer group of the backend, one owner at a time with fencing, and the
// owner's state as a replicated log in a backend topic, so that any standby
// can take over.
//
// Topics and group, for a cluster NAME:
//
//   - __eosproxy_NAME_owner: one partition, never written. The member of
//     group __eosproxy_NAME that the group assigns it is the one that may
//     own the cluster. The group only elects; it fences nothing (a paused
//     member may still believe it is assigned).
//   - __eosproxy_NAME_log: one partition, kept forever (until trimmed to a
//     checkpoint). A member that is assigned the owner partition writes a
//     claim there and owns the cluster once it has read its claim back;
//     its state changes follow as sets. Fencing is by log order (see
//     validate.go): a set counts only if the latest claim before it is the
//     writer's, so a deposed owner's late writes are void for every reader,
//     and the writer itself learns it before it answers anyone, because an
//     Append is confirmed only by reading it back as valid.
//
// The group's balancer (ownerBalancer) keeps the owner partition with the
// member that owns, so members joining and leaving do not move ownership;
// only the owner leaving (Close: a release record and LeaveGroup) or
// falling silent past the session timeout does. Bounds, with heartbeats
// every min(session/10, 500ms):
//
//   - clean stop: about one heartbeat interval plus a claim's round trip
//     (0.3 to 0.6 s measured, kfake and Kafka 4.1.2, session 10 s);
//   - crash or pause: the session timeout, plus the same;
//   - a write that cannot be confirmed within max(2 sessions, 5 s) makes
//     the owner give up rather than hang.
//
// Nothing here needs the backend's idempotence or transactions: retried
// writes are recognised by (claim nonce, sequence, chunk) and read once.
package cluster

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

var (
	// ErrNotOwner: this member does not own the cluster (any more).
	ErrNotOwner = errors.New("cluster: this member is not the owner")
	// ErrFenced: another member's claim superseded this member's, or
	// this member's write came out void; the write does not count.
	ErrFenced = errors.New("cluster: fenced by another owner")
)

// Config of a Member.
type Config struct {
	Name      string    // cluster name: topics __eosproxy_<Name>_log, __eosproxy_<Name>_owner; group __eosproxy_<Name>
	Seeds     []string  // backend bootstrap brokers
	Opts      []kgo.Opt // TLS/SASL dial options to the backend
	Instance  string    // this instance's stable id (logs, claims)
	Advertise string    // host:port where the other instances reach this one's bootstrap listener, published in its claims
	// ClientAddr is host:port where clients reach this instance's
	// bootstrap listener, published to the other instances (peers.go).
	ClientAddr string
	// SessionTimeout of the group membership (default 10s): how long a
	// silent owner keeps the cluster before another is elected. Kafka
	// accepts group.min.session.timeout.ms (6s) to ...max... (30 min).
	SessionTimeout time.Duration
	Log            zerolog.Logger
	// Apply is called in log order with each valid set that this member
	// did not write itself during its current ownership; a checkpoint's
	// image comes after a Reset.
	Apply func(set []byte) error
	// Reset drops the local materialisation (before a replay from the
	// start of the log, or before a checkpoint's image).
	Reset func() error

	// CrashPoint, for tests only (nil: off), is called at the named
	// instants below (CrashSetSent, CrashSetAcked), where a test may kill
	// the process to check recovery from exactly there.
	CrashPoint func(point string)

	// For tests: dial the group client's and the log reader's
	// connections, so that a test can freeze this member's heartbeats and
	// reads as a SIGSTOP would, and resume them one after the other.
	groupDialer, tailDialer, prodDialer func(ctx context.Context, network, host string) (net.Conn, error)
	// For tests of a zombie's late writes: no watchdog deposing a member
	// that the backend has not heard from.
	noWatchdog bool
}

// Crash points of a Member (Config.CrashPoint). A set carries a batch's
// bytes and its index together, so these are cluster mode's "staged, not
// yet indexed": the instants a set is torn or unconfirmed.
const (
	// CrashSetSent: a set's records (each chunk, after the first too)
	// were handed to the log's producer, not yet acknowledged or read
	// back. The log may end up with none, some or all of its chunks:
	// readers must drop a torn set, and no answer may have depended on
	// it (its client retries with the next owner).
	CrashSetSent = "set-sent"
	// CrashSetAcked: the set is confirmed in the log (acknowledged, read
	// back valid) but its writer has not yet answered or gone on. The
	// next owner must have it (its replay applies it), even though
	// nobody was told: a retry of the request must then find its effect
	// (a duplicate otherwise), and a decision in it must be carried out.
	CrashSetAcked = "set-acked"
)

func (m *Member) crashPoint(point string) {
	if m.cfg.CrashPoint != nil {
		m.cfg.CrashPoint(point)
	}
}

// Change of this member's ownership.
type Change struct {
	Owner      bool
	Generation int32 // group generation of the assignment
	At         time.Time
	Reason     string
}

// Failover is one time this member became the owner.
type Failover struct {
	At         time.Time
	Generation int32
	Previous   string // instance of the claim before, if any
	// Took: from when this member saw the previous owner go (its release
	// record read, or the group's rebalance starting) to owning. Zero if
	// not known (first owner of the cluster). A crashed owner's session
	// timeout comes before this.
	Took time.Duration
}

// Stats of a Member.
type Stats struct {
	// Fencings: claims of others that superseded this member's ownership,
	// plus own writes read back void.
	Fencings   int64
	Failovers  []Failover
	Appended   int64 // sets (and checkpoints) confirmed
	Applied    int64 // sets (and checkpoints) applied
	Void       int64 // records read that belong to no valid claim
	Duplicates int64 // records read twice (producer retries)
	Torn       int64 // unfinished sets dropped
	Rebalances int64 // group assignments received
}

type state int

const (
	standby  state = iota
	claiming       // claim written or being written, not yet read back
	owning
)

type pending struct {
	timer         *time.Timer // gives up if the set is not confirmed in time
	chunks, acked int
	valid         bool
	first         int64 // offset of the first chunk
	err           error
	done          chan struct{}
}

// Member is this instance's membership in the cluster.
type Member struct {
	aborted                    chan struct{} // closed once a given-up ownership's records are failed; guarded by mu
	cfg                        Config
	log                        zerolog.Logger
	logTopic, ownerTopic, name string
	prod, grp                  *kgo.Client // prod: admin requests (topics, offsets, trims)
	popts                      []kgo.Opt   // the log writer's options
	ctx                        context.Context
	cancel                     context.CancelFunc
	loopDone                   chan struct{}
	confirmWithin              time.Duration

	appendMu sync.Mutex // orders the Produce calls of sets

	mu sync.Mutex
	// writer writes the log: claims, sets, releases. Each ownership given
	// up gets a fresh one (giveUp), so that nothing of the old one (a
	// request stuck on a connection to an unreachable broker, records
	// failed while in flight) holds up the next claim behind it.
	writer      *kgo.Client
	changed     chan struct{} // closed and replaced on tail progress and state changes
	st          state
	claim       claimInfo // this member's claim while claiming or owning
	claimOffset int64     // where the log holds it, once read back
	releasing   map[uint64]bool
	nextSeq     uint64
	pending     map[uint64]*pending
	mine        map[uint64]bool // nonces of this member's claims
	assigned    bool            // the group assigns this member the owner partition
	gen         int32
	epoch, held int  // assignments so far; held: the assignment in which another's claim fenced this member
	dirty       bool // the store may differ from the log (was owner): no Apply until Rebuild
	rebuilding  bool
	closed      bool
	chClosed    bool
	leader      claimInfo
	leaderOK    bool
	peers       []Peer    // the group's instances, from the latest assignment
	lostAt      time.Time // when the previous owner was seen to go
	tailPos     int64     // next offset the tail processes
	tailStop    context.CancelFunc
	tailDone    chan struct{}
	stats       Stats
	changes     chan Change
	kick        chan struct{}
	// heard is when the latest request of the group client or the log
	// reader that the backend answered was sent (Unix ns): how long the
	// backend has not heard from this member, for the watchdog.
	heard atomic.Int64
	// inGroup is when the latest heartbeat of this member's own that the
	// group accepted was sent, as time since base (monotonic, ns): the
	// group keeps this member at least a session timeout after it
	// (lease.go).
	inGroup atomic.Int64
	base    time.Time
}

// heardHook records in heard when requests that the backend answered were
// sent.
type heardHook struct{ heard *atomic.Int64 }

func (h heardHook) OnBrokerE2E(_ kgo.BrokerMetadata, _ int16, e2e kgo.BrokerE2E) {
	if e2e.Err() != nil {
		return
	}
	raise(h.heard, time.Now().Add(-e2e.DurationE2E()).UnixNano())
}

func raise(v *atomic.Int64, to int64) {
	for {
		old := v.Load()
		if old >= to || v.CompareAndSwap(old, to) {
			return
		}
	}
}

// Join ensures the topics exist, replays the log to its end into Apply
// (after a Reset), joins the group and keeps tailing the log.
func Join(ctx context.Context, cfg Config) (*Member, error) {
	if cfg.Name == "" || cfg.Apply == nil || cfg.Reset == nil {
		return nil, errors.New("cluster: Name, Apply and Reset are required")
	}
	if cfg.SessionTimeout <= 0 {
		cfg.SessionTimeout = 10 * time.Second
	}
	m := &Member{
		cfg: cfg, name: "__eosproxy_" + cfg.Name,
		log:       cfg.Log.With().Str("component", "cluster").Str("cluster", cfg.Name).Str("instance", cfg.Instance).Logger(),
		changed:   make(chan struct{}),
		pending:   map[uint64]*pending{},
		mine:      map[uint64]bool{},
		releasing: map[uint64]bool{},
		held:      -1,
		changes:   make(chan Change, 1024),
		kick:      make(chan struct{}, 1),
		loopDone:  make(chan struct{}),
		base:      time.Now(),
	}
	m.logTopic, m.ownerTopic = m.name+"_log", m.name+"_owner"
	m.ctx, m.cancel = context.WithCancel(context.Background())
	// An owner that cannot get a write confirmed gives up rather than
	// hang: by then its session has expired and another may own.
	m.confirmWithin = max(2*cfg.SessionTimeout, 5*time.Second)
	// Writes as upstream.Instance's: acks=all, no idempotence (a backend
	// may have none), so one request in flight keeps retries in order; the
	// reader drops what a retry repeats.
	// With one request in flight, a request carries what queued while the
	// one before was out: up to a batch, three chunks (under the log's
	// max.message.bytes of 2 MiB). A batch of 1 MiB held one 512 KiB
	// chunk, and a transactional producer's flush waited a round trip
	// for every half MiB.
	popts := []kgo.Opt{kgo.DisableIdempotentWrite(), kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerLinger(0), kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.MaxProduceRequestsInflightPerBroker(1), kgo.ProducerBatchMaxBytes(logMaxMessageBytes - 64<<10),
		kgo.RecordDeliveryTimeout(m.confirmWithin),
		// A failed produce is retried after a metadata refresh, by
		// default at most every 5s: too long a stall for the owner.
		kgo.MetadataMinAge(250 * time.Millisecond)}
	if cfg.prodDialer != nil {
		popts = append(popts, kgo.Dialer(cfg.prodDialer))
	}
	m.popts = popts
	var err error
	m.prod, err = kgo.NewClient(m.opts(popts...)...)
	if err != nil {
		return nil, fmt.Errorf("cluster %s: log writer: %w", cfg.Name, err)
	}
	if m.writer, err = kgo.NewClient(m.opts(popts...)...); err != nil {
		m.prod.Close()
		return nil, fmt.Errorf("cluster %s: log writer: %w", cfg.Name, err)
	}
	fail := func(err error) (*Member, error) {
		m.stopTail()
		m.cancel()
		m.writer.Close()
		m.prod.Close()
		return nil, fmt.Errorf("cluster %s: %w", cfg.Name, err)
	}
	if err := m.retry(ctx, "create the cluster's topics", m.ensureTopics); err != nil {
		return fail(err)
	}
	if err := m.replay(ctx); err != nil {
		return fail(err)
	}
	// A member learns of a rebalance at its next heartbeat: after a clean
	// leave, the handover takes about one interval plus a claim's round
	// trip, so keep it short (heartbeats are cheap).
	hb := min(max(cfg.SessionTimeout/10, 100*time.Millisecond), 500*time.Millisecond)
	gopts := []kgo.Opt{
		kgo.ConsumerGroup(m.name), kgo.ConsumeTopics(m.ownerTopic), kgo.DisableAutoCommit(),
		kgo.Balancers(&ownerBalancer{m}),
		kgo.SessionTimeout(cfg.SessionTimeout), kgo.HeartbeatInterval(hb), kgo.RebalanceTimeout(cfg.SessionTimeout),
		kgo.OnPartitionsAssigned(m.onAssigned), kgo.OnPartitionsRevoked(m.onRevoked), kgo.OnPartitionsLost(m.onLost),
		// Static membership (KIP-345), keyed by the instance's id (kept in
		// its data dir): an instance that restarts after a crash replaces
		// its dead self in the group at once, instead of the group waiting
		// a session timeout for the dead member before it rebalances.
		kgo.InstanceID(staticID(cfg.Instance)),
	}
	if cfg.groupDialer != nil {
		gopts = append(gopts, kgo.Dialer(cfg.groupDialer))
	}
	gopts = append(gopts, kgo.WithHooks(heardHook{heard: &m.heard}))
	if m.grp, err = kgo.NewClient(m.opts(gopts...)...); err != nil {
		return fail(fmt.Errorf("group client: %w", err))
	}
	m.heard.Store(time.Now().UnixNano())
	m.inGroup.Store(int64(time.Since(m.base)))
	go m.leaseLoop(hb)
	go m.claimLoop()
	go m.watchdog()
	return m, nil
}

// watchdog deposes an owner that the backend has not heard from for longer
// than the session timeout: cut off from it, a partitioned owner would
// otherwise go on thinking it owns (no heartbeat error comes back, the
// packets are just lost) and hold its clients until the partition heals,
// while the group has expired it and another instance serves. Deposed, it
// closes its clients' connections, and they find the new owner through the
// other instances. The log's fencing keeps this safe either way: this is
// about liveness. Reads of the log come every FetchMaxWait (500 ms), so a
// member in contact with the backend is always heard from well within the
// session timeout.
func (m *Member) watchdog() {
	every := min(max(m.cfg.SessionTimeout/20, 50*time.Millisecond), 500*time.Millisecond)
	t := time.NewTicker(every)
	defer t.Stop()
	last := time.Now()
	var grace time.Time
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		if now.Sub(last) > m.cfg.SessionTimeout/2 {
			// This process was paused (SIGSTOP, a stalled host), not the
			// backend silent: let the log reader catch up first, so that
			// the log tells what happened meanwhile (the claim that fenced
			// this member) rather than the silence.
			grace = now.Add(2 * time.Second)
		}
		last = now
		if now.Before(grace) || m.cfg.noWatchdog {
			continue
		}
		silent := now.Sub(time.Unix(0, m.heard.Load()))
		if silent <= m.cfg.SessionTimeout {
			continue
		}
		m.mu.Lock()
		if m.st != standby {
			m.giveUp(ErrNotOwner, fmt.Sprintf("the backend has not heard from this member for %v, longer than the session timeout: the group has expired it", silent.Round(time.Millisecond)))
		}
		m.mu.Unlock()
	}
}

func (m *Member) opts(more ...kgo.Opt) []kgo.Opt {
	o := slices.Clone(m.cfg.Opts)
	return append(append(o, kgo.SeedBrokers(m.cfg.Seeds...)), more...)
}

// logMaxMessageBytes is the log topic's max.message.bytes, as created
// (logs created by earlier versions have the same).
const logMaxMessageBytes = 2 << 20

// ensureTopics creates the two topics if they do not exist.
func (m *Member) ensureTopics(ctx context.Context) error {
	adm := kadm.NewClient(m.prod)
	meta, err := adm.BrokerMetadata(ctx)
	if err != nil {
		return fmt.Errorf("backend brokers: %w", err)
	}
	// Replicated as Kafka's own internal topics are by default, where the
	// cluster has the brokers for it (as upstream.Instance chooses).
	rf := int16(min(3, max(1, len(meta.Brokers))))
	isr := fmt.Sprint(min(2, rf))
	del, forever, maxMsg := "delete", "-1", fmt.Sprint(logMaxMessageBytes)
	for topic, configs := range map[string]map[string]*string{
		// Kept until trimmed to a checkpoint, never compacted: fencing
		// is by order, and the log's records have no keys.
		m.logTopic: {"cleanup.policy": &del, "retention.ms": &forever, "retention.bytes": &forever,
			"max.message.bytes": &maxMsg, "min.insync.replicas": &isr},
		m.ownerTopic: nil,
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

// retry runs f until it succeeds, fails with an error that a retry cannot
// mend (a Kafka error that is not retriable: authorization, a bad
// configuration), or ctx ends: an instance started while the backend is
// unreachable or dropping connections waits for it, as Kafka's clients do,
// rather than exit.
func (m *Member) retry(ctx context.Context, what string, f func(context.Context) error) error {
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, 5*time.Second) {
		err := f(ctx)
		var ke *kerr.Error
		if err == nil || (errors.As(err, &ke) && !ke.Retriable) {
			return err
		}
		m.log.Warn().Err(err).Dur("retry_in", wait).Msg("cannot " + what + "; retrying")
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w (%w)", what, err, ctx.Err())
		case <-time.After(wait):
		}
	}
}

// notify wakes waiters on m.changed; m.mu held.
func (m *Member) notify() {
	close(m.changed)
	m.changed = make(chan struct{})
}

// emit queues a Change; m.mu held.
func (m *Member) emit(c Change) {
	if m.chClosed {
		return
	}
	select {
	case m.changes <- c:
	default:
		m.log.Error().Bool("owner", c.Owner).Msg("ownership changes not read; dropping one")
	}
}

func (m *Member) kickLoop() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// giveUp ends this member's claim or ownership; m.mu held.
func (m *Member) giveUp(err error, reason string) {
	if m.st == standby {
		return
	}
	wasOwner := m.st == owning
	m.st = standby
	for _, p := range m.pending {
		p.timer.Stop()
		p.err = err
		close(p.done)
	}
	clear(m.pending)
	// Records of the given-up ownership still buffered, being retried or
	// in flight are void whatever becomes of them (after this member's
	// next claim or another's, or after a gap in its sets); left, they
	// would hold up this member's next claim behind them (one request in
	// flight, in order) for up to their delivery timeout, or, on a
	// connection waiting out a partition, longer. So the writer is
	// replaced and the old one closed, which fails its records at once.
	old := m.writer
	if w, err := kgo.NewClient(m.opts(m.popts...)...); err == nil {
		m.writer = w
	} else {
		// Not expected (the options were valid at Join): abort in place.
		m.log.Error().Err(err).Msg("cannot make a new log writer; aborting the old one's records")
		old = nil
		m.writer.UnsafeAbortBufferedRecords()
	}
	m.aborted = make(chan struct{})
	go func(done chan struct{}) {
		if old != nil {
			old.Close()
		}
		close(done)
	}(m.aborted)
	if wasOwner {
		// The store holds this member's writes, some perhaps void.
		m.dirty = true
		m.log.Warn().Str("reason", reason).Int32("generation", m.claim.Generation).Msg("no longer the owner of the cluster")
		m.emit(Change{Owner: false, Generation: m.claim.Generation, At: time.Now(), Reason: reason})
	}
	m.notify()
	m.kickLoop()
}

// Changes receives this member's ownership changes: Owner:true once it
// owns (claim written, read back, everything before it applied), Owner:false
// when it no longer does. A standby whose Apply failed also gets an
// Owner:false: both mean "stop using the store, then Rebuild". Closed by
// Close.
func (m *Member) Changes() <-chan Change { return m.changes }

// Leader is the owner per the latest claim read from the log.
//
// self is also true for a claim of this instance's previous run (the same
// instance id, kept in its data dir): that run is gone, and its address is
// this instance's own, where a relay would only reach itself.
func (m *Member) Leader() (advertise string, self bool, ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.leaderOK {
		return "", false, false
	}
	return m.leader.Advertise, m.leader.Instance == m.cfg.Instance, true
}

// Stats returns a copy of this member's counters.
func (m *Member) Stats() Stats {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.stats
	s.Failovers = slices.Clone(s.Failovers)
	return s
}

// Append writes set to the log, after every set appended before it. Owner
// only. wait returns nil once the set is acknowledged (acks=all) and the
// log has been read past it as valid (no other claim before it); else
// ErrFenced or ErrNotOwner, and this member has given up ownership.
func (m *Member) Append(set []byte) (wait func() error) {
	p, err := m.append(kindSet, set)
	if err != nil {
		return func() error { return err }
	}
	return func() error {
		<-p.done
		if p.err == nil {
			m.crashPoint(CrashSetAcked)
		}
		return p.err
	}
}

func (m *Member) append(k kind, set []byte) (*pending, error) {
	m.appendMu.Lock()
	defer m.appendMu.Unlock()
	m.mu.Lock()
	if m.st != owning {
		m.mu.Unlock()
		return nil, ErrNotOwner
	}
	c, seq, w := m.claim, m.nextSeq, m.writer
	m.nextSeq++
	recs := setRecords(m.logTopic, k, c, seq, set)
	p := &pending{chunks: len(recs), done: make(chan struct{})}
	m.pending[seq] = p
	p.timer = time.AfterFunc(m.confirmWithin, func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		if m.pending[seq] == p && m.claim.Nonce == c.Nonce {
			m.giveUp(fmt.Errorf("%w: set %d not confirmed within %s", ErrNotOwner, seq, m.confirmWithin), "log write not confirmed in time")
		}
	})
	m.mu.Unlock()
	for i, r := range recs {
		w.Produce(m.ctx, r, func(r *kgo.Record, err error) {
			m.mu.Lock()
			defer m.mu.Unlock()
			if m.st != owning || m.claim.Nonce != c.Nonce {
				return
			}
			if err != nil {
				m.giveUp(fmt.Errorf("%w: write to %s: %w", ErrNotOwner, m.logTopic, err), "log write failed: "+err.Error())
				return
			}
			if p := m.pending[seq]; p != nil {
				if i == 0 {
					p.first = r.Offset
				}
				p.acked++
				m.maybeDone(seq, p)
			}
		})
		m.crashPoint(CrashSetSent)
	}
	return p, nil
}

// maybeDone confirms a set acknowledged and read back valid; m.mu held.
func (m *Member) maybeDone(seq uint64, p *pending) {
	if p.acked == p.chunks && p.valid {
		p.timer.Stop()
		delete(m.pending, seq)
		m.stats.Appended++
		close(p.done)
	}
}

// Checkpoint writes a full image of the state, as Append writes a set,
// then trims the log before it: a replay starts at the image (Reset, then
// Apply(image)). The caller must not Append concurrently with the image's
// capture, so that the image is the state after every set appended before.
func (m *Member) Checkpoint(image []byte) error { return m.AppendCheckpoint(image)() }

// AppendCheckpoint is Checkpoint in two steps, as Append: it queues the
// image after every set appended before, and wait returns once the image
// is confirmed and the log trimmed to it. The caller's lock that keeps
// Appends out need only cover the capture and this call, not the wait.
func (m *Member) AppendCheckpoint(image []byte) (wait func() error) {
	p, err := m.append(kindCheckpoint, image)
	if err != nil {
		return func() error { return err }
	}
	return func() error {
		<-p.done
		if p.err != nil {
			return p.err
		}
		m.crashPoint(CrashSetAcked)
		ctx, cancel := context.WithTimeout(m.ctx, 30*time.Second)
		defer cancel()
		var os kadm.Offsets
		os.Add(kadm.Offset{Topic: m.logTopic, Partition: 0, At: p.first})
		resp, err := kadm.NewClient(m.prod).DeleteRecords(ctx, os)
		if err == nil {
			err = resp.Error()
		}
		if err != nil {
			return fmt.Errorf("cluster %s: trim the log to the checkpoint at %d: %w", m.cfg.Name, p.first, err)
		}
		return nil
	}
}

// Rebuild, once the caller no longer uses the store after a
// Change{Owner:false}: Reset, replay every valid set to the end of the log,
// and tail as a standby again, which may be given ownership again. The
// member does not claim until Rebuild is done.
func (m *Member) Rebuild(ctx context.Context) error {
	m.mu.Lock()
	if m.st != standby || m.rebuilding || m.closed {
		m.mu.Unlock()
		return fmt.Errorf("cluster %s: rebuild: the member owns the cluster, rebuilds or is closed", m.cfg.Name)
	}
	m.rebuilding = true
	m.mu.Unlock()
	m.stopTail()
	err := m.replay(ctx)
	m.mu.Lock()
	m.rebuilding = false
	m.notify()
	m.mu.Unlock()
	m.kickLoop()
	if err != nil {
		return fmt.Errorf("cluster %s: rebuild: %w", m.cfg.Name, err)
	}
	return nil
}

// replay Resets the store and tails the log from its start, returning once
// the tail has reached the end the log had.
func (m *Member) replay(ctx context.Context) error {
	so, eo, err := m.logBounds(ctx)
	if err != nil {
		return err
	}
	if err := m.cfg.Reset(); err != nil {
		return fmt.Errorf("reset the store: %w", err)
	}
	topts := []kgo.Opt{
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{m.logTopic: {0: kgo.NewOffset().At(so.Offset)}}),
		// Trimmed under the reader: go on from the new start (the
		// validator notices the jump).
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(500 * time.Millisecond),
		// The owner reads every set back before it answers, and a
		// request of the writer now carries up to 2 MiB: a fetch of 1
		// MiB (the default) would read back less than one write.
		kgo.FetchMaxPartitionBytes(16 << 20),
		kgo.MetadataMinAge(250 * time.Millisecond), // as the writer's
	}
	if m.cfg.tailDialer != nil {
		topts = append(topts, kgo.Dialer(m.cfg.tailDialer))
	}
	topts = append(topts, kgo.WithHooks(heardHook{heard: &m.heard}))
	cl, err := kgo.NewClient(m.opts(topts...)...)
	if err != nil {
		return fmt.Errorf("log reader: %w", err)
	}
	tctx, stop := context.WithCancel(m.ctx)
	done := make(chan struct{})
	m.mu.Lock()
	m.dirty = false
	m.tailPos, m.tailStop, m.tailDone = so.Offset, stop, done
	m.mu.Unlock()
	go m.tail(tctx, cl, done)
	for {
		m.mu.Lock()
		pos, ch := m.tailPos, m.changed
		m.mu.Unlock()
		if pos >= eo.Offset {
			m.log.Info().Int64("from", so.Offset).Int64("to", eo.Offset).Msg("replayed the cluster log")
			return nil
		}
		select {
		case <-ch:
		case <-done:
			return errors.New("log reader stopped")
		case <-ctx.Done():
			return fmt.Errorf("replay %s from %d to %d (at %d): %w", m.logTopic, so.Offset, eo.Offset, pos, ctx.Err())
		}
	}
}

// tailPosition is the next log offset the tail reads.
func (m *Member) tailPosition() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.tailPos
}

// logBounds returns the log's start and end offsets, retrying while the
// topic is new (its leader not yet known everywhere) or the backend is
// unreachable, until ctx ends.
func (m *Member) logBounds(ctx context.Context) (so, eo kadm.ListedOffset, err error) {
	adm := kadm.NewClient(m.prod)
	for {
		var starts, ends kadm.ListedOffsets
		starts, err = adm.ListStartOffsets(ctx, m.logTopic)
		if err == nil {
			ends, err = adm.ListEndOffsets(ctx, m.logTopic)
		}
		if err == nil {
			so, _ = starts.Lookup(m.logTopic, 0)
			eo, _ = ends.Lookup(m.logTopic, 0)
			err = errors.Join(so.Err, eo.Err)
		}
		if err == nil {
			return so, eo, nil
		}
		select {
		case <-ctx.Done():
			return so, eo, fmt.Errorf("offsets of %s: %w (%w)", m.logTopic, err, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (m *Member) stopTail() {
	m.mu.Lock()
	stop, done := m.tailStop, m.tailDone
	m.tailStop, m.tailDone = nil, nil
	m.mu.Unlock()
	if stop != nil {
		stop()
		<-done
	}
}

// tail reads the log in order and acts on what the validator decides.
func (m *Member) tail(ctx context.Context, cl *kgo.Client, done chan struct{}) {
	defer close(done)
	defer cl.Close()
	v := newValidator()
	for {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return
		}
		fs.EachError(func(t string, p int32, err error) {
			m.log.Warn().Err(err).Str("topic", t).Msg("reading the cluster log")
		})
		fs.EachPartition(func(p kgo.FetchTopicPartition) {
			for _, r := range p.Records {
				if ctx.Err() != nil {
					return
				}
				m.process(v, r)
			}
			if n := len(p.Records); n > 0 && p.Records[n-1].Offset+1 >= p.HighWatermark {
				m.mu.Lock()
				m.caughtUp()
				m.mu.Unlock()
			}
		})
	}
}

func (m *Member) process(v *validator, r *kgo.Record) {
	e := decode(r)
	res := v.feed(e)
	var apply []byte
	var checkpoint bool
	m.mu.Lock()
	if res.torn {
		m.stats.Torn++
	}
	switch res.out {
	case outNone:
		if res.dup {
			m.stats.Duplicates++
		}
	case outClaim:
		m.onClaim(*e.claim, r.Offset)
	case outRelease:
		m.leaderOK = false
		if m.st != owning && m.lostAt.IsZero() {
			m.lostAt = time.Now()
		}
		if m.st == standby {
			if m.held == m.epoch {
				// The claim that fenced this member is gone.
				m.held = -1
				m.kickLoop()
			}
		}
	case outSet:
		switch {
		case m.st != standby && res.nonce == m.claim.Nonce:
			if p := m.pending[res.seq]; p != nil {
				p.valid = true
				m.maybeDone(res.seq, p)
			}
		case !m.dirty:
			apply, checkpoint = res.data(), res.checkpoint
		}
	case outVoid:
		m.stats.Void++
		if m.st != standby && res.nonce == m.claim.Nonce && (e.kind == kindSet || e.kind == kindCheckpoint) {
			m.stats.Fencings++
			m.giveUp(ErrFenced, "own write read back void (out of sequence)")
		}
	}
	m.tailPos = r.Offset + 1
	m.notify()
	m.mu.Unlock()
	if apply == nil {
		return
	}
	// Only this goroutine calls Apply and Reset while it runs; Rebuild
	// stops it first.
	var err error
	if checkpoint {
		err = m.cfg.Reset()
	}
	if err == nil {
		err = m.cfg.Apply(apply)
	}
	m.mu.Lock()
	if err != nil {
		// The store no longer matches the log: apply nothing more, and
		// claim nothing, until a Rebuild, which the Change asks for.
		if !m.dirty {
			m.dirty = true
			m.log.Error().Err(err).Int64("offset", r.Offset).Msg("cannot apply a set of the cluster log; rebuild needed")
			m.emit(Change{Owner: false, Generation: m.gen, At: time.Now(), Reason: "apply failed, rebuild needed: " + err.Error()})
		}
	} else {
		m.stats.Applied++
	}
	m.mu.Unlock()
}

// onClaim: a claim took effect; m.mu held.
func (m *Member) onClaim(c claimInfo, offset int64) {
	prev, prevOK := m.leader, m.leaderOK
	m.leader, m.leaderOK = c, true
	switch {
	case m.st == claiming && c.Nonce == m.claim.Nonce:
		m.st, m.claimOffset = owning, offset
		now := time.Now()
		f := Failover{At: now, Generation: c.Generation}
		if prevOK || prev.Nonce != 0 {
			f.Previous = prev.Instance
		}
		if !m.lostAt.IsZero() {
			f.Took = now.Sub(m.lostAt)
		}
		m.lostAt = time.Time{}
		m.stats.Failovers = append(m.stats.Failovers, f)
		m.log.Info().Int32("generation", c.Generation).Str("previous", f.Previous).Dur("took", f.Took).Msg("owner of the cluster")
		m.emit(Change{Owner: true, Generation: c.Generation, At: now, Reason: "claim read back"})
	case m.st == owning:
		m.stats.Fencings++
		m.held = m.epoch
		m.giveUp(ErrFenced, fmt.Sprintf("fenced by the claim of %s (generation %d)", c.Instance, c.Generation))
	case m.st == claiming:
		// Before this member's own claim, which supersedes it.
	default:
		m.lostAt = time.Time{}
	}
}

// caughtUp: the tail has read the whole log; m.mu held.
func (m *Member) caughtUp() {
	if c := m.leader; m.st == standby && m.leaderOK && m.mine[c.Nonce] && !m.releasing[c.Nonce] {
		// The latest claim is this member's own, given up before it
		// landed (or from before a restart of the same process): it
		// would fence whoever the group chooses next; release it.
		m.releasing[c.Nonce] = true
		go m.release(c.Nonce)
	}
}

func (m *Member) release(nonce uint64) {
	ctx, cancel := context.WithTimeout(m.ctx, 5*time.Second)
	defer cancel()
	m.appendMu.Lock()
	defer m.appendMu.Unlock()
	m.mu.Lock()
	w := m.writer
	m.mu.Unlock()
	if err := w.ProduceSync(ctx, releaseRecord(m.logTopic, nonce)).FirstErr(); err != nil {
		m.log.Info().Err(err).Msg("cannot release this member's claim")
	}
}

// claimLoop claims ownership whenever the group assigns it and the store
// is a clean replay.
func (m *Member) claimLoop() {
	defer close(m.loopDone)
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-m.kick:
		}
		m.mu.Lock()
		if m.st != standby || !m.assigned || m.dirty || m.rebuilding || m.closed || m.tailDone == nil || m.held == m.epoch {
			m.mu.Unlock()
			continue
		}
		m.st = claiming
		m.claim = claimInfo{Instance: m.cfg.Instance, Advertise: m.cfg.Advertise, Generation: m.gen,
			Nonce: newNonce(), TimeMs: time.Now().UnixMilli()}
		m.mine[m.claim.Nonce] = true
		m.nextSeq = 0
		c, w := m.claim, m.writer
		aborted := m.aborted
		m.mu.Unlock()
		if aborted != nil {
			<-aborted
		}
		m.log.Info().Int32("generation", c.Generation).Msg("assigned the cluster; claiming it")
		// An owner starts with its lease renewed (lease.go), not a
		// heartbeat interval later.
		m.renew()
		ctx, cancel := context.WithTimeout(m.ctx, m.cfg.SessionTimeout)
		start := time.Now()
		m.appendMu.Lock()
		res := w.ProduceSync(ctx, claimRecord(m.logTopic, c))
		m.appendMu.Unlock()
		cancel()
		err := res.FirstErr()
		if err == nil {
			m.log.Info().Int32("generation", c.Generation).Int64("offset", res[0].Record.Offset).Dur("took", time.Since(start)).Msg("claim written; reading the log up to it")
		}
		if err != nil {
			m.mu.Lock()
			if m.st == claiming && m.claim.Nonce == c.Nonce {
				m.st = standby
			}
			m.mu.Unlock()
			if m.ctx.Err() != nil {
				return
			}
			m.log.Warn().Err(err).Msg("cannot write the claim; retrying")
			time.AfterFunc(500*time.Millisecond, m.kickLoop)
		}
		// The tail makes this member the owner when it reads the claim.
	}
}

func newNonce() uint64 {
	var b [8]byte
	for {
		rand.Read(b[:])
		if n := binary.BigEndian.Uint64(b[:]); n != 0 {
			return n
		}
	}
}

func hasOwnerPartition(assigned map[string][]int32, topic string) bool {
	return slices.Contains(assigned[topic], 0)
}

func (m *Member) onAssigned(_ context.Context, cl *kgo.Client, assigned map[string][]int32) {
	_, gen := cl.GroupMetadata()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.gen = gen
	m.stats.Rebalances++
	if hasOwnerPartition(assigned, m.ownerTopic) {
		m.assigned = true
		m.epoch++
		if m.st == standby && m.lostAt.IsZero() {
			m.lostAt = time.Now()
		}
		m.kickLoop()
		return
	}
	m.assigned = false
	m.lostAt = time.Time{} // another member owns or will claim
	m.giveUp(ErrNotOwner, fmt.Sprintf("the group (generation %d) chose another member", gen))
}

// onRevoked: the eager protocol revokes everything when any rebalance
// starts. An owner keeps owning through it (the balancer gives the owner
// partition back to the member that says it owns), so a standby joining
// does not move ownership; it gives up if the assignment goes elsewhere.
func (m *Member) onRevoked(context.Context, *kgo.Client, map[string][]int32) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.assigned = false
	if m.st == standby && m.lostAt.IsZero() {
		m.lostAt = time.Now()
	}
}

func (m *Member) onLost(context.Context, *kgo.Client, map[string][]int32) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.assigned = false
	m.giveUp(ErrNotOwner, "group membership lost")
}

// Close gives up ownership (writing a release so that others see it at
// once), leaves the group so that another member takes over, and closes the
// clients.
func (m *Member) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	owned, nonce := m.st == owning, m.claim.Nonce
	m.giveUp(ErrNotOwner, "closing")
	m.mu.Unlock()
	if owned {
		// On giveUp's fresh writer: nothing of the ownership's own
		// writes, being failed on the old one, can take the release down
		// with them.
		m.release(nonce)
	}
	if m.grp != nil {
		// A static member does not leave the group when its client
		// closes; leave explicitly, so that the rebalance starts now, not
		// a session timeout later.
		m.leave()
		m.grp.Close()
	}
	m.cancel()
	if m.grp != nil {
		<-m.loopDone
	}
	m.stopTail()
	m.mu.Lock()
	w := m.writer
	m.mu.Unlock()
	w.Close()
	m.prod.Close()
	m.mu.Lock()
	m.chClosed = true
	close(m.changes)
	m.mu.Unlock()
	return nil
}

// staticID is the group instance id of the instance named id.
func staticID(id string) string { return "eosproxy-" + id }

// leave removes this member from the group (LeaveGroup with its instance
// id, as Kafka's clients do for a static member that goes for good).
func (m *Member) leave() {
	memberID, _ := m.grp.GroupMetadata()
	if memberID == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req := kmsg.NewPtrLeaveGroupRequest()
	req.Group = m.name
	lm := kmsg.NewLeaveGroupRequestMember()
	lm.MemberID = memberID
	lm.InstanceID = kmsg.StringPtr(staticID(m.cfg.Instance))
	req.Members = append(req.Members, lm)
	resp, err := req.RequestWith(ctx, m.grp)
	if err == nil {
		err = kerr.ErrorForCode(resp.ErrorCode)
	}
	if err != nil {
		m.log.Info().Err(err).Msg("cannot leave the cluster's group; the others take over once its session times out")
	}
}

// ownerBalancer gives the owner partition to the member that says it owns
// the cluster, else to one whose store is a clean replay, else to any:
// rebalances for members coming and going do not move ownership. Members
// say so in their join metadata's user data: flags, then the log offset of
// their claim, so that of two members that both believe they own (a zombie
// rejoining before it has read the newer claim) the later claim wins.
type ownerBalancer struct{ m *Member }

const (
	flagOwner byte = 1 << iota
	flagReady
)

func (*ownerBalancer) ProtocolName() string { return "eosproxy-owner" }
func (*ownerBalancer) IsCooperative() bool  { return false }

func (b *ownerBalancer) JoinGroupMetadata(interests []string, _ map[string][]int32, generation int32) []byte {
	b.m.mu.Lock()
	var f byte
	var at int64 = -1
	if b.m.st != standby {
		f |= flagOwner
		if b.m.st == owning {
			at = b.m.claimOffset
		}
	}
	if !b.m.dirty && !b.m.rebuilding {
		f |= flagReady
	}
	b.m.mu.Unlock()
	meta := kmsg.NewConsumerMemberMetadata()
	meta.Version = 3
	meta.Topics = interests
	meta.Generation = generation
	meta.UserData = binary.BigEndian.AppendUint64([]byte{f}, uint64(at))
	meta.UserData = appendPeer(meta.UserData, Peer{Instance: b.m.cfg.Instance, Addr: b.m.cfg.ClientAddr})
	return meta.AppendTo(nil)
}

// ParseSyncAssignment also takes the group's instance list that the
// leader's Balance put in the assignment's user data.
func (b *ownerBalancer) ParseSyncAssignment(assignment []byte) (map[string][]int32, error) {
	var a kmsg.ConsumerMemberAssignment
	if err := a.ReadFrom(assignment); err == nil && len(a.UserData) > 0 {
		if ps, err := decodePeers(a.UserData); err == nil {
			b.m.setPeers(ps)
		} else {
			b.m.log.Warn().Err(err).Msg("ignoring the cluster's instance list in this assignment")
		}
	}
	return kgo.ParseConsumerSyncAssignment(assignment)
}

func (b *ownerBalancer) MemberBalancer(members []kmsg.JoinGroupResponseMember) (kgo.GroupMemberBalancer, map[string]struct{}, error) {
	cb, err := kgo.NewConsumerBalancer(b, members)
	return cb, cb.MemberTopics(), err
}

func (b *ownerBalancer) Balance(cb *kgo.ConsumerBalancer, topics map[string]int32) kgo.IntoSyncAssignment {
	plan := cb.NewPlan()
	if topics[b.m.ownerTopic] < 1 {
		return plan
	}
	var best *kmsg.JoinGroupResponseMember
	var bestScore [3]int64
	var peers []Peer
	cb.EachMember(func(mem *kmsg.JoinGroupResponseMember, meta *kmsg.ConsumerMemberMetadata) {
		if !slices.Contains(meta.Topics, b.m.ownerTopic) {
			return
		}
		var score [3]int64 // owner, claim offset, ready
		if u := meta.UserData; len(u) >= 9 {
			score = [3]int64{int64(u[0] & flagOwner), int64(binary.BigEndian.Uint64(u[1:])), int64(u[0] & flagReady)}
			// An instance of an earlier version publishes no address.
			if p, _, err := readPeer(u[9:]); err == nil && p.Addr != "" {
				peers = append(peers, p)
			}
		}
		if c := slices.Compare(score[:], bestScore[:]); best == nil || c > 0 || c == 0 && mem.MemberID < best.MemberID {
			best, bestScore = mem, score
		}
	})
	if best != nil {
		plan.AddPartition(best, b.m.ownerTopic, 0)
	}
	return withPeers{plan, encodePeers(peers)}
}

// withPeers is a plan whose every assignment carries the group's instance
// list in its user data.
type withPeers struct {
	plan  *kgo.BalancePlan
	peers []byte
}

func (w withPeers) IntoSyncAssignment() []kmsg.SyncGroupRequestGroupAssignment {
	out := w.plan.IntoSyncAssignment()
	for i := range out {
		var a kmsg.ConsumerMemberAssignment
		if err := a.ReadFrom(out[i].MemberAssignment); err != nil {
			continue // kgo's own encoding: cannot fail
		}
		a.UserData = w.peers
		out[i].MemberAssignment = a.AppendTo(nil)
	}
	return out
}

package cluster

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// backend is where a test's cluster lives: an in-process kfake, or the
// Kafka broker at EOSPROXY_TEST_KAFKA (the real tier).
type backend struct {
	seeds []string
	name  string // the test's cluster name, unique per test
	real  bool
	fake  *kfake.Cluster // nil on the real tier
}

func newBackend(t *testing.T) *backend {
	t.Helper()
	b := &backend{name: fmt.Sprintf("test%x", newNonce())}
	if addr := os.Getenv("EOSPROXY_TEST_KAFKA"); addr != "" {
		b.seeds, b.real = []string{addr}, true
		return b
	}
	// Sessions shorter than Kafka's 6s minimum keep the zombie test short.
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.GroupMinSessionTimeout(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	b.seeds, b.fake = c.ListenAddrs(), c
	return b
}

// session is d, or Kafka's minimum session timeout on the real tier.
func (b *backend) session(d time.Duration) time.Duration {
	if b.real {
		return max(d, 6*time.Second)
	}
	return d
}

// member is a Member with a store that records what it was given.
type member struct {
	*Member
	adv     string
	mu      sync.Mutex
	applied [][]byte
	resets  int
}

func (tm *member) sets() [][]byte {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	return append([][]byte(nil), tm.applied...)
}

func join(t *testing.T, c *backend, inst string, session time.Duration, mod func(*Config)) *member {
	t.Helper()
	tm := &member{adv: inst + ".example:9092"}
	cfg := Config{
		Name: c.name, Seeds: c.seeds, Instance: inst, Advertise: tm.adv, SessionTimeout: c.session(session),
		Log: zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr}).Level(zerolog.WarnLevel).With().Timestamp().Logger(),
		Apply: func(set []byte) error {
			tm.mu.Lock()
			tm.applied = append(tm.applied, bytes.Clone(set))
			tm.mu.Unlock()
			return nil
		},
		Reset: func() error {
			tm.mu.Lock()
			tm.applied = nil
			tm.resets++
			tm.mu.Unlock()
			return nil
		},
	}
	if mod != nil {
		mod(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	m, err := Join(ctx, cfg)
	if err != nil {
		t.Fatalf("join %s: %v", inst, err)
	}
	tm.Member = m
	t.Cleanup(func() { m.Close() })
	return tm
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// nextChange waits for tm's next ownership change.
func nextChange(t *testing.T, tm *member, d time.Duration) Change {
	t.Helper()
	select {
	case c := <-tm.Changes():
		return c
	case <-time.After(d):
		t.Fatalf("%s: no ownership change within %s", tm.adv, d)
		return Change{}
	}
}

// firstOwner waits until one of ms owns, and returns it.
func firstOwner(t *testing.T, d time.Duration, ms ...*member) *member {
	t.Helper()
	var owner *member
	eventually(t, d, "an owner", func() bool {
		for _, tm := range ms {
			select {
			case c := <-tm.Changes():
				if !c.Owner {
					t.Fatalf("%s: %+v before owning", tm.adv, c)
				}
				if c.Generation <= 0 {
					t.Fatalf("%s: owner with generation %d", tm.adv, c.Generation)
				}
				owner = tm
				return true
			default:
			}
		}
		return false
	})
	return owner
}

func appendAll(t *testing.T, tm *member, sets ...[]byte) {
	t.Helper()
	waits := make([]func() error, len(sets))
	for i, s := range sets {
		waits[i] = tm.Append(s)
	}
	for i, w := range waits {
		if err := w(); err != nil {
			t.Fatalf("%s: append %d: %v", tm.adv, i, err)
		}
	}
}

func numbered(prefix string, n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = fmt.Appendf(nil, "%s-%d", prefix, i)
	}
	return out
}

func equalSets(a, b [][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

// waitApplied waits until tm has applied exactly want.
func waitApplied(t *testing.T, tm *member, want [][]byte) {
	t.Helper()
	eventually(t, 10*time.Second, tm.adv+" applies every valid set in order", func() bool { return equalSets(tm.sets(), want) })
}

func other(tm, a, b *member) *member {
	if tm == a {
		return b
	}
	return a
}

// Exactly one of two members owns; the other applies the owner's sets in
// order; both name the owner as the leader.
func TestOneOwnerOthersFollow(t *testing.T) {
	c := newBackend(t)
	a, b := join(t, c, "a", time.Second, nil), join(t, c, "b", time.Second, nil)
	owner := firstOwner(t, 10*time.Second, a, b)
	standby := other(owner, a, b)
	sets := numbered("s", 20)
	appendAll(t, owner, sets...)
	waitApplied(t, standby, sets)
	if got := owner.sets(); len(got) != 0 {
		t.Fatalf("the owner applied its own sets: %d", len(got))
	}
	select {
	case ch := <-standby.Changes():
		t.Fatalf("the standby changed too: %+v", ch)
	default:
	}
	for _, tm := range []*member{a, b} {
		adv, self, ok := tm.Leader()
		if !ok || adv != owner.adv || self != (tm == owner) {
			t.Fatalf("%s: Leader() = %q %v %v, want %q", tm.adv, adv, self, ok, owner.adv)
		}
	}
	if err := standby.Append([]byte("x"))(); !errors.Is(err, ErrNotOwner) {
		t.Fatalf("a standby's Append: %v", err)
	}
	// A third member joining (a rebalance) does not move ownership.
	d := join(t, c, "d", time.Second, nil)
	waitApplied(t, d, sets)
	more := numbered("t", 5)
	appendAll(t, owner, more...)
	waitApplied(t, d, append(sets, more...))
	if s := owner.Stats(); s.Appended != 25 || len(s.Failovers) != 1 || s.Fencings != 0 {
		t.Fatalf("owner stats %+v", s)
	}
}

// A clean stop hands ownership over in ≤ 3 s (plus 1 s of slack for this
// shared machine), with a 10 s session timeout: the leave, not the session,
// moves it; the new owner has applied every set acknowledged before.
func TestCloseHandsOver(t *testing.T) {
	c := newBackend(t)
	a, b := join(t, c, "a", 10*time.Second, nil), join(t, c, "b", 10*time.Second, nil)
	owner := firstOwner(t, 15*time.Second, a, b)
	next := other(owner, a, b)
	sets := numbered("s", 10)
	appendAll(t, owner, sets...)
	// A settled group (else the leave completes b's joining rebalance).
	eventually(t, 15*time.Second, "a settled group", func() bool {
		return next.Stats().Rebalances >= 1 && owner.Stats().Rebalances >= 2
	})
	start := time.Now()
	owner.Close()
	if ch := <-owner.Changes(); ch.Owner {
		t.Fatalf("closing owner: %+v", ch)
	}
	ch := nextChange(t, next, 10*time.Second)
	took := time.Since(start)
	if !ch.Owner {
		t.Fatalf("%+v", ch)
	}
	t.Logf("handover took %s", took)
	if took > 4*time.Second {
		t.Fatalf("handover took %s, want ≤ 3s (+1s slack)", took)
	}
	if got := next.sets(); !equalSets(got, sets) {
		t.Fatalf("the new owner has %d sets, want %d", len(got), len(sets))
	}
	more := numbered("t", 3)
	appendAll(t, next, more...)
	if adv, self, ok := next.Leader(); !ok || !self || adv != next.adv {
		t.Fatalf("Leader() = %q %v %v", adv, self, ok)
	}
	fo := next.Stats().Failovers
	if len(fo) != 1 || fo[0].Previous != owner.cfg.Instance || fo[0].Took <= 0 || fo[0].Took > took {
		t.Fatalf("failovers %+v", fo)
	}
}

// An owner closed with writes still buffered writes its release all the
// same: the records it gives up are aborted first, the release after them.
// It was aborted with them (ErrAborting) whenever the abort reached the
// release's buffer after it, so that every clean stop of eosproxy's owner
// handed over by the group's rebalance, not at once. Several rounds: the
// race was lost in about half of them.
func TestCloseWritesRelease(t *testing.T) {
	c := newBackend(t)
	for round := range 8 {
		cr := *c
		cr.name = fmt.Sprintf("%s-%d", c.name, round)
		a := join(t, &cr, "a", time.Second, nil)
		if firstOwner(t, 10*time.Second, a) != a {
			t.Fatal()
		}
		appendAll(t, a, []byte("first"))
		for range 300 {
			a.Append(make([]byte, 64<<10))
		}
		a.Close()
		if got := readAudit(t, &cr, a); got.Releases != 1 {
			t.Fatalf("round %d: log audit %+v: want the closing owner's release", round, got)
		}
	}
}

// readAudit reads the cluster's log from its start to its end and audits
// it as eoscheck does.
func readAudit(t *testing.T, c *backend, tm *member) Audit {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.seeds...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{tm.logTopic: {0: kgo.NewOffset().AtStart()}}))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, tm.logTopic)
	if err != nil {
		t.Fatal(err)
	}
	end, _ := ends.Lookup(tm.logTopic, 0)
	var recs []*kgo.Record
	for len(recs) == 0 || recs[len(recs)-1].Offset < end.Offset-1 {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %d records of the log up to %d: %v", len(recs), end.Offset, ctx.Err())
		}
		recs = append(recs, fs.Records()...)
	}
	return AuditLog(recs)
}

// freezer holds a connection's reads and writes while frozen, as a
// SIGSTOP holds the process.
type freezer struct {
	mu     sync.Mutex
	thawed chan struct{} // nil while not frozen
}

func (f *freezer) freeze() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.thawed == nil {
		f.thawed = make(chan struct{})
	}
}

func (f *freezer) thaw() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.thawed != nil {
		close(f.thawed)
		f.thawed = nil
	}
}

func (f *freezer) wait() {
	f.mu.Lock()
	ch := f.thawed
	f.mu.Unlock()
	if ch != nil {
		<-ch
	}
}

func (f *freezer) dial(ctx context.Context, network, host string) (net.Conn, error) {
	f.wait()
	c, err := (&net.Dialer{}).DialContext(ctx, network, host)
	if err != nil {
		return nil, err
	}
	return &frozenConn{c, f}, nil
}

type frozenConn struct {
	net.Conn
	f *freezer
}

func (c *frozenConn) Write(b []byte) (int, error) { c.f.wait(); return c.Conn.Write(b) }
func (c *frozenConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.f.wait()
	return n, err
}

// A zombie owner (heartbeats and reads frozen past the session timeout,
// its writes not) is deposed; its write after the new claim is void for
// every reader, and it learns so itself: the Append fails with ErrFenced
// and it gives ownership up. Then it rebuilds to exactly the valid sets.
func TestZombieFencedAndRebuild(t *testing.T) {
	c := newBackend(t)
	var grp, rd freezer
	a := join(t, c, "a", time.Second, func(cfg *Config) {
		cfg.groupDialer, cfg.tailDialer = grp.dial, rd.dial
		// A zombie that does not notice its silence by itself, as one
		// paused in the middle of a write.
		cfg.noWatchdog = true
	})
	t.Cleanup(grp.thaw) // before a's Close, which runs later
	t.Cleanup(rd.thaw)
	if owner := firstOwner(t, 10*time.Second, a); owner != a {
		t.Fatal("a does not own")
	}
	b := join(t, c, "b", time.Second, nil)
	s1 := numbered("a", 3)
	appendAll(t, a, s1...)
	waitApplied(t, b, s1)

	if err := a.WriteAllowed(); err != nil {
		t.Fatalf("the owner's lease: %v", err)
	}
	grp.freeze()
	rd.freeze()
	frozen := time.Now()
	ch := nextChange(t, b, 15*time.Second)
	if !ch.Owner {
		t.Fatalf("b: %+v", ch)
	}
	// The bound for a failover: session timeout + 5 s.
	took, bound := time.Since(frozen), b.cfg.SessionTimeout+5*time.Second
	t.Logf("failover after the owner froze took %s (session %s); b's count: %+v", took, b.cfg.SessionTimeout, b.Stats().Failovers)
	if took > bound {
		t.Fatalf("failover took %s, want ≤ %s", took, bound)
	}
	// a still believes it owns: it has read nothing since. But its lease
	// lapsed: the group had not answered it for longer than it, so it
	// writes nothing to the backend's user topics (upstream.Fence).
	if _, self, _ := a.Leader(); !self {
		t.Fatal("a already knows it was deposed")
	}
	if err := a.WriteAllowed(); !errors.Is(err, ErrNotOwner) {
		t.Fatalf("the zombie's lease: %v, want ErrNotOwner", err)
	}
	if err := b.WriteAllowed(); err != nil {
		t.Fatalf("the new owner's lease: %v", err)
	}
	void := []byte("zombie write")
	wait := a.Append(void)
	b1 := numbered("b", 2)
	appendAll(t, b, b1...)
	// a's write is in the log (its writer is not frozen) after b's claim.
	eventually(t, 10*time.Second, "a's write in the log", func() bool {
		ends, err := kadm.NewClient(a.prod).ListEndOffsets(context.Background(), a.logTopic)
		o, _ := ends.Lookup(a.logTopic, 0)
		return err == nil && o.Offset >= 1+3+1+2+1 // claim a, 3 sets, claim b, 2 sets, a's
	})
	rd.thaw() // a reads again (resumed), its heartbeats not yet
	if err := wait(); !errors.Is(err, ErrFenced) {
		t.Fatalf("the zombie's append: %v, want ErrFenced", err)
	}
	ch = nextChange(t, a, 5*time.Second)
	if ch.Owner {
		t.Fatalf("a: %+v", ch)
	}
	t.Logf("a gave up: %s", ch.Reason)
	if s := a.Stats(); s.Fencings < 1 {
		t.Fatalf("a's fencings: %d", s.Fencings)
	}
	if err := a.Append([]byte("after"))(); !errors.Is(err, ErrNotOwner) {
		t.Fatalf("append after being fenced: %v", err)
	}
	if adv, self, ok := a.Leader(); !ok || self || adv != b.adv {
		t.Fatalf("a's Leader() = %q %v %v", adv, self, ok)
	}
	grp.thaw()

	valid := append(append([][]byte(nil), s1...), b1...)
	// Rebuild: a's store becomes exactly the valid sets (its own of its
	// ownership, b's; not the void one).
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.Rebuild(ctx); err != nil {
		t.Fatal(err)
	}
	if got := a.sets(); !equalSets(got, valid) {
		t.Fatalf("a rebuilt to %q, want %q", got, valid)
	}
	b2 := numbered("b2", 2)
	appendAll(t, b, b2...)
	valid = append(valid, b2...)
	waitApplied(t, a, valid)
	// b has never applied the void set; a reader replaying from scratch
	// neither.
	if got := b.sets(); !equalSets(got, s1) {
		t.Fatalf("b applied %q, want %q", got, s1)
	}
	waitApplied(t, join(t, c, "e", time.Second, nil), valid)
	// a rejoined the group; b keeps ownership.
	if _, self, _ := b.Leader(); !self {
		t.Fatal("b lost ownership")
	}
}

// A set of several MiB goes through in chunks; a checkpoint trims the log
// and a replay starts from it.
func TestLargeSetAndCheckpoint(t *testing.T) {
	c := newBackend(t)
	a := join(t, c, "a", time.Second, nil)
	if firstOwner(t, 10*time.Second, a) != a {
		t.Fatal()
	}
	b := join(t, c, "b", time.Second, nil)
	big := make([]byte, 3<<20+12345)
	rand.Read(big)
	sets := [][]byte{[]byte("small"), big, {}}
	appendAll(t, a, sets...)
	waitApplied(t, b, sets)

	image := []byte("image of everything")
	if err := a.Checkpoint(image); err != nil {
		t.Fatal(err)
	}
	after := numbered("after", 2)
	appendAll(t, a, after...)
	want := append([][]byte{image}, after...)
	waitApplied(t, b, want) // b: Reset at the checkpoint, then the image
	starts, err := kadm.NewClient(a.prod).ListStartOffsets(context.Background(), a.logTopic)
	if err != nil {
		t.Fatal(err)
	}
	if o, _ := starts.Lookup(a.logTopic, 0); o.Offset == 0 {
		t.Fatal("log not trimmed")
	}
	e := join(t, c, "e", time.Second, nil)
	waitApplied(t, e, want)
}

// dropper loses the answer to a produce request while armed: the broker
// appends the batch and answers, the writer never hears so and sends it
// again (no idempotence), and the log holds it twice.
type dropper struct {
	mu    sync.Mutex
	armed int // produce requests still to lose the answer of
}

func (d *dropper) arm(n int) { d.mu.Lock(); d.armed = n; d.mu.Unlock() }

func (d *dropper) dial(ctx context.Context, network, host string) (net.Conn, error) {
	c, err := (&net.Dialer{}).DialContext(ctx, network, host)
	if err != nil {
		return nil, err
	}
	return &dropConn{Conn: c, d: d}, nil
}

type dropConn struct {
	net.Conn
	d        *dropper
	dropNext atomic.Bool
}

func (c *dropConn) Write(b []byte) (int, error) {
	// A request: int32 size, int16 API key (0: produce), ...
	if len(b) >= 6 && b[4] == 0 && b[5] == 0 {
		c.d.mu.Lock()
		if c.d.armed > 0 {
			c.d.armed--
			c.dropNext.Store(true)
		}
		c.d.mu.Unlock()
	}
	return c.Conn.Write(b)
}

func (c *dropConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 && c.dropNext.Load() {
		// The broker answered, so it has appended the batch.
		c.Conn.Close()
		return 0, errors.New("test: answer lost")
	}
	return n, err
}

// Writes retried after a lost answer land twice in the log; every reader
// applies them once, and the owner's Appends succeed.
func TestRetriedWritesAppliedOnce(t *testing.T) {
	c := newBackend(t)
	var d dropper
	a := join(t, c, "a", time.Second, func(cfg *Config) {
		cfg.prodDialer = d.dial
		if os.Getenv("DBG") != "" {
			cfg.Opts = append(cfg.Opts, kgo.WithLogger(kgo.BasicLogger(os.Stderr, kgo.LogLevelDebug, nil)))
		}
	})
	if firstOwner(t, 10*time.Second, a) != a {
		t.Fatal()
	}
	b := join(t, c, "b", time.Second, nil)
	d.arm(2)
	sets := numbered("s", 6)
	appendAll(t, a, sets...)
	waitApplied(t, b, sets)
	more := numbered("t", 2)
	appendAll(t, a, more...)
	waitApplied(t, b, append(sets, more...))
	if s := b.Stats(); s.Duplicates == 0 {
		t.Fatalf("no duplicate read (the test did not cause any): %+v", s)
	}
	waitApplied(t, join(t, c, "e", time.Second, nil), append(sets, more...))
}

// A standby whose store fails to apply a set is told to rebuild (a
// Change{Owner:false}), applies nothing more until then, and the rebuild
// brings it back to every valid set.
func TestApplyFailureAsksForRebuild(t *testing.T) {
	c := newBackend(t)
	a := join(t, c, "a", time.Second, nil)
	if firstOwner(t, 10*time.Second, a) != a {
		t.Fatal()
	}
	var fail atomic.Bool
	b := join(t, c, "b", time.Second, func(cfg *Config) {
		apply := cfg.Apply
		cfg.Apply = func(set []byte) error {
			if string(set) == "s-1" && fail.CompareAndSwap(false, true) {
				return errors.New("disk full")
			}
			return apply(set)
		}
	})
	sets := numbered("s", 4)
	appendAll(t, a, sets...)
	ch := nextChange(t, b, 10*time.Second)
	if ch.Owner {
		t.Fatalf("%+v", ch)
	}
	t.Logf("b: %s", ch.Reason)
	eventually(t, 10*time.Second, "b reads on", func() bool {
		_, _, ok := b.Leader()
		return ok && b.tailPosition() >= 5
	})
	if got := b.sets(); !equalSets(got, sets[:1]) {
		t.Fatalf("b applied %q after the failure", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.Rebuild(ctx); err != nil {
		t.Fatal(err)
	}
	if got := b.sets(); !equalSets(got, sets) {
		t.Fatalf("b rebuilt to %q", got)
	}
}

// The owner of three falls silent (every connection frozen, as a crashed
// host): exactly one of the other two takes over within the session
// timeout + 5 s, the other follows it, and nothing acknowledged is lost.
func TestCrashOneOfThree(t *testing.T) {
	c := newBackend(t)
	var fa freezer
	a := ownerThrough(t, c, fa.dial)
	t.Cleanup(fa.thaw) // before a's Close (cleanups run last first)
	b, d := join(t, c, "b", time.Second, nil), join(t, c, "d", time.Second, nil)
	sets := numbered("a", 5)
	appendAll(t, a, sets...)
	fa.freeze()
	start := time.Now()
	owner := firstOwner(t, b.cfg.SessionTimeout+5*time.Second, b, d)
	t.Logf("failover took %s (session %s)", time.Since(start), b.cfg.SessionTimeout)
	follower := other(owner, b, d)
	if got := owner.sets(); !equalSets(got, sets) {
		t.Fatalf("the new owner has %q", got)
	}
	more := numbered("n", 3)
	appendAll(t, owner, more...)
	waitApplied(t, follower, append(sets, more...))
	select {
	case ch := <-follower.Changes():
		t.Fatalf("the follower changed too: %+v", ch)
	default:
	}
	if adv, _, ok := follower.Leader(); !ok || adv != owner.adv {
		t.Fatalf("follower's Leader() = %q %v", adv, ok)
	}
}

// ownerThrough joins a member "a" whose every connection dial opens, and
// waits until it owns the cluster.
func ownerThrough(t *testing.T, c *backend, dial func(ctx context.Context, network, host string) (net.Conn, error)) *member {
	t.Helper()
	a := join(t, c, "a", time.Second, func(cfg *Config) {
		cfg.groupDialer, cfg.tailDialer, cfg.prodDialer = dial, dial, dial
	})
	if firstOwner(t, 20*time.Second, a) != a {
		t.Fatal("a does not own")
	}
	return a
}

// An instance started while the backend drops its connections (the first
// ones end as the first answer is read, which kgo does not retry: it
// suspects a TLS mismatch) waits for the backend instead of failing to
// start.
func TestJoinWaitsForBackend(t *testing.T) {
	c := newBackend(t)
	var mu sync.Mutex
	closing := 3
	refuse := func(ctx context.Context, network, host string) (net.Conn, error) {
		conn, err := (&net.Dialer{}).DialContext(ctx, network, host)
		if err != nil {
			return nil, err
		}
		mu.Lock()
		defer mu.Unlock()
		if closing > 0 {
			closing--
			return eofConn{conn}, nil
		}
		return conn, nil
	}
	a := join(t, c, "a", time.Second, func(cfg *Config) { cfg.prodDialer = refuse })
	if firstOwner(t, 20*time.Second, a) != a {
		t.Fatal("a does not own")
	}
	mu.Lock()
	left := closing
	mu.Unlock()
	if left > 0 {
		t.Fatalf("%d connections left to close: the test did not exercise the retry", left)
	}
	appendAll(t, a, numbered("a", 2)...)
}

// eofConn is a connection the backend ends before its first answer.
type eofConn struct{ net.Conn }

func (c eofConn) Read([]byte) (int, error) { c.Conn.Close(); return 0, io.EOF }

// The crash points come where their names say: set-sent once per chunk
// handed to the log's writer, set-acked once the set is confirmed (counted
// appended), for sets and checkpoints alike.
func TestCrashPointsWhere(t *testing.T) {
	c := newBackend(t)
	var mu sync.Mutex
	var hits []string
	var tm *member
	tm = join(t, c, "a", time.Second, func(cfg *Config) {
		cfg.CrashPoint = func(point string) {
			if point == CrashSetAcked {
				point = fmt.Sprintf("%s(%d)", point, tm.Stats().Appended)
			}
			mu.Lock()
			hits = append(hits, point)
			mu.Unlock()
		}
	})
	if firstOwner(t, 10*time.Second, tm) != tm {
		t.Fatal()
	}
	got := func() []string {
		mu.Lock()
		defer mu.Unlock()
		h := hits
		hits = nil
		return h
	}
	appendAll(t, tm, []byte("small"))
	if h := got(); !slices.Equal(h, []string{"set-sent", "set-acked(1)"}) {
		t.Fatalf("small set: %v", h)
	}
	big := make([]byte, 2*chunkSize+1) // three chunks
	appendAll(t, tm, big)
	if h := got(); !slices.Equal(h, []string{"set-sent", "set-sent", "set-sent", "set-acked(2)"}) {
		t.Fatalf("set of three chunks: %v", h)
	}
	if err := tm.Checkpoint([]byte("image")); err != nil {
		t.Fatal(err)
	}
	if h := got(); !slices.Equal(h, []string{"set-sent", "set-acked(3)"}) {
		t.Fatalf("checkpoint: %v", h)
	}
}

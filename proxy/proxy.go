package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl"

	"github.com/eosproxy/eosproxy/dedup"
	"github.com/eosproxy/eosproxy/metrics"
	"github.com/eosproxy/eosproxy/protocol"
	"github.com/eosproxy/eosproxy/store"
	"github.com/eosproxy/eosproxy/txnstate"
	"github.com/eosproxy/eosproxy/txnstate/spool"
	"github.com/eosproxy/eosproxy/upstream"
)

// Config is what the proxy needs to run. Zero values get Kafka-like defaults.
type Config struct {
	// Listen is the bootstrap listener's address. Broker listeners bind to
	// its host, on BrokerPorts or else on the ports after its port.
	Listen string
	// AdvertiseHost is the host clients are told; default: Listen's host.
	AdvertiseHost string
	// Upstreams are the real cluster's bootstrap brokers.
	Upstreams []string
	// BrokerPortMin/Max, if set, is the range broker listeners use.
	BrokerPortMin, BrokerPortMax int
	// MaxRequestBytes bounds a request frame (Kafka's socket.request.max.bytes).
	MaxRequestBytes int32
	DialTimeout     time.Duration
	// IdleTimeout closes a client connection that sends no complete request
	// for this long (Kafka's connections.max.idle.ms); 0 disables it.
	IdleTimeout time.Duration
	// MaxConnections bounds concurrent client connections; 0: no bound.
	MaxConnections int
	// Dial opens upstream connections; default net.Dialer. Tests put fault
	// injection here.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// BackendCut, for fault tests, partitions every connection to the
	// backend while it is on: Dial's, and those of eosproxy's kgo clients.
	// Not with UpstreamTLS.
	BackendCut *upstream.Cut
	// Peers, if set, lists brokers to name in Metadata and DescribeCluster
	// answers besides the backend's: in cluster mode the other instances,
	// so that clients know where to go when this one is gone.
	Peers func() []protocol.Broker
	// WriteFence, if set, is asked before every write on a connection to
	// the backend, the clients' paired ones and eosproxy's own: in cluster
	// mode the owner's lease (upstream.Fence).
	WriteFence upstream.Fence
	// DB holds eosproxy's durable state; nil keeps it in memory (tests).
	DB *store.DB
	// SpoolDir holds the record batches of open transactions; default: a
	// temporary directory removed by Shutdown (for an in-memory DB).
	SpoolDir string
	// Space, if set, refuses batches that bring data while the data dir's
	// filesystem is below its reserve (KAFKA_STORAGE_ERROR).
	Space *store.Space
	// ProducerIDExpiration is how long an idle producer's state is kept
	// (Kafka's producer.id.expiration.ms, default 24 h).
	ProducerIDExpiration time.Duration
	// NoBackendIdempotence forwards idempotent batches without producer
	// fields and commits without a producer id of eosproxy's own, as on a
	// backend that does not serve InitProducerId (tests; backends whose
	// idempotence is broken).
	NoBackendIdempotence bool
	// Ports persists broker ports across restarts; default: in DB.
	Ports PortStore
	// TransactionMaxTimeout is Kafka's transaction.max.timeout.ms (15 min).
	TransactionMaxTimeout time.Duration
	// MaxTransactionBytes bounds one transaction's buffered data;
	// TransactionBufferBytes all of it. 0: no bound.
	MaxTransactionBytes    int64
	TransactionBufferBytes int64
	// TransactionalIDExpiration is transactional.id.expiration.ms (7 days).
	TransactionalIDExpiration time.Duration
	// CommitAnswerWithin is how long EndTxn(commit) waits for the committed
	// data to reach the backend before answering on the durable decision.
	CommitAnswerWithin time.Duration
	// InstanceLeaseTimeout is how long this instance's lease on the backend
	// outlives its last renewal (renewed every fifth of it): another
	// instance is refused while the lease lives and may take it over
	// after. Default 10 s.
	InstanceLeaseTimeout time.Duration
	// NoInstanceLease runs without the lease, with producer ids counted in
	// this data dir only: for tests and tools that have no backend.
	NoInstanceLease bool
	// Metrics receives eosproxy's Prometheus collectors (package metrics);
	// nil: none are registered. Shutdown unregisters them.
	Metrics prometheus.Registerer
	Log     zerolog.Logger

	// TLS, if set, serves the client listeners over TLS (ServerTLS); with
	// client certificates required, a certificate's subject is its
	// connection's principal.
	TLS *tls.Config
	// SASLUsers, if set, makes eosproxy authenticate clients itself
	// (termination); nil passes their SASL exchange to the backend.
	SASLUsers *SASLUsers
	// ACL, if set, limits what each principal may do; nil allows all.
	ACL *ACL
	// UpstreamTLS, if set, is used on every connection to the backend;
	// UpstreamSASL authenticates eosproxy's own (upstreamauth.go).
	UpstreamTLS  *tls.Config
	UpstreamSASL sasl.Mechanism

	// CrashPoint, for tests only (nil: off): the coordinator's crash
	// points (txnstate.Options.CrashPoint).
	CrashPoint func(point string)
}

// Stats are counters for tests and operators.
type Stats struct {
	// Duplicates counts retried batches answered without a second write.
	Duplicates int64
}

// Proxy is a running eosproxy front end.
type Proxy struct {
	cfg       Config
	log       zerolog.Logger
	bootstrap net.Listener
	brokers   *brokerMap
	up        *upstream.Client // every connection of eosproxy's own to the backend
	advHost   string
	producers *dedup.Table
	coord     *txnstate.Coordinator
	groups    groupMembers
	ownDB     *store.DB // opened by New, closed by Shutdown
	spool     *spool.Spool
	owners    *owners            // the principal each producer id belongs to
	inst      *upstream.Instance // the lease on the backend and producer id blocks
	ownSpool  string             // a temporary SpoolDir to remove
	metrics   struct{ duplicates atomic.Int64 }
	m         *metrics.Metrics
	// life ends at Shutdown, releasing waits that outlive a request.
	life    context.Context
	endLife context.CancelFunc
	ops     ops           // readiness (metrics.go)
	ready   chan struct{} // closed when New has set every field a connection uses

	// decompress reads the compressed transactional batches whose records
	// eosproxy must check (checkTopicLimits).
	decompress kgo.Decompressor

	mu     sync.Mutex
	conns  map[*conn]struct{}
	wg     sync.WaitGroup
	closed bool
}

// New validates cfg and binds the bootstrap listener and the listeners of
// brokers known from an earlier run. Serve starts accepting.
func New(cfg Config) (*Proxy, error) {
	if len(cfg.Upstreams) == 0 {
		return nil, errors.New("no upstream brokers configured")
	}
	if cfg.MaxRequestBytes <= 0 {
		cfg.MaxRequestBytes = 100 << 20
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 10 * time.Second
	}
	if cfg.BackendCut != nil {
		if cfg.UpstreamTLS != nil {
			return nil, errors.New("a backend cut (fault test) needs a backend without TLS")
		}
		cfg.Dial = cfg.BackendCut.Dial
	}
	if cfg.Dial == nil {
		d := &net.Dialer{}
		cfg.Dial = d.DialContext
	}
	cfg.Dial = cfg.WriteFence.Dial(cfg.Dial)
	if cfg.ProducerIDExpiration <= 0 {
		cfg.ProducerIDExpiration = 24 * time.Hour
	}
	host, portStr, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen address %q: %w", cfg.Listen, err)
	}
	listenPort, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("listen port %q: %w", portStr, err)
	}
	p := &Proxy{cfg: cfg, log: cfg.Log, conns: map[*conn]struct{}{}, m: metrics.New(cfg.Metrics)}
	p.life, p.endLife = context.WithCancel(context.Background())
	p.advHost = cfg.AdvertiseHost
	if p.advHost == "" {
		p.advHost = host
	}
	if p.advHost == "" || p.advHost == "0.0.0.0" || p.advHost == "::" {
		return nil, fmt.Errorf("listen host %q is not an address clients can use: set the advertise host", host)
	}
	if cfg.DB == nil {
		if p.ownDB, err = store.OpenInMemory(p.log); err != nil {
			return nil, err
		}
		cfg.DB = p.ownDB
	}
	if cfg.Ports == nil {
		cfg.Ports = DBPorts{DB: cfg.DB}
	}
	p.cfg = cfg
	// Bound first, so that the instance lease names the address it serves.
	if p.bootstrap, err = net.Listen("tcp", cfg.Listen); err != nil {
		p.closeState()
		return nil, fmt.Errorf("bootstrap listener: %w", err)
	}
	// Decided commits resumed by txnstate.Open dial brokers (upstreamAddr)
	// before New returns, so the map must exist first; its listeners accept
	// only once New is done (serveListener waits for ready).
	p.ready = make(chan struct{})
	p.brokers = &brokerMap{
		log:      p.log,
		host:     host,
		persist:  p.cfg.Ports,
		nextPort: portAllocator(listenPort, cfg.BrokerPortMin, cfg.BrokerPortMax),
		serve:    func(b *broker) { p.serveListener(b.ln, b.id) },
		byID:     map[int32]*broker{},
	}
	// Clients that cached broker addresses before a restart reconnect to
	// them directly: their listeners must be back before anything else.
	ports, err := p.cfg.Ports.LoadPorts()
	if err != nil {
		p.closeState()
		return nil, fmt.Errorf("load broker ports: %w", err)
	}
	p.brokers.mu.Lock()
	for id, port := range ports {
		if _, err := p.brokers.listen(id, port); err != nil {
			p.log.Warn().Err(err).Int32("broker", id).Msg("cannot reopen broker listener")
		}
	}
	p.brokers.mu.Unlock()
	if err := p.startLease(); err != nil {
		p.closeState()
		return nil, err
	}
	if p.owners, err = openOwners(cfg.DB); err != nil {
		p.closeState()
		return nil, err
	}
	p.decompress = kgo.DefaultDecompressor()
	p.up, err = upstream.New(upstream.Config{
		Seeds: cfg.Upstreams, DialTimeout: cfg.DialTimeout, Dial: cfg.Dial, Cut: cfg.BackendCut, BrokerAddr: p.upstreamAddr,
		DB: cfg.DB, ProducerIDExpiration: cfg.ProducerIDExpiration,
		InUse: func() map[int64]struct{} {
			if p.producers == nil {
				return nil
			}
			return p.producers.ProducerIDs()
		},
		NoIdempotence: cfg.NoBackendIdempotence, Groups: backendGroups{p}, Log: p.log,
		TLS: cfg.UpstreamTLS, SASL: cfg.UpstreamSASL, Fence: cfg.WriteFence,
	})
	if err != nil {
		p.closeState()
		return nil, err
	}
	p.producers, err = dedup.Open(cfg.DB, observedDedup{p.up, p.m}, cfg.ProducerIDExpiration, p.log)
	if err != nil {
		p.closeState()
		return nil, err
	}
	if p.inst != nil {
		p.producers.SetReserve(p.inst.ReserveBlock)
	}
	if cfg.TransactionMaxTimeout <= 0 {
		cfg.TransactionMaxTimeout = 15 * time.Minute
	}
	if cfg.SpoolDir == "" {
		if p.ownSpool, err = os.MkdirTemp("", "eosproxy-spool-"); err != nil {
			p.closeState()
			return nil, fmt.Errorf("spool dir: %w", err)
		}
		cfg.SpoolDir = p.ownSpool
	}
	if p.spool, err = spool.Open(cfg.SpoolDir, 0, p.log); err != nil {
		p.closeState()
		return nil, err
	}
	if cfg.DB.Replicated() {
		// Cluster mode: the log holds every buffered batch's bytes before
		// its Produce is answered; the spool is a cache rebuilt from it.
		p.spool.AsCache()
	}
	p.coord, err = txnstate.Open(cfg.DB, txnstate.Options{
		Config:              txnstate.Config{MaxTimeoutMs: int32(min(cfg.TransactionMaxTimeout.Milliseconds(), math.MaxInt32)), TxnVersion: int8(protocol.TxnVersion)},
		MaxTransactionBytes: cfg.MaxTransactionBytes,
		MaxBufferBytes:      cfg.TransactionBufferBytes,
		Expiration:          cfg.TransactionalIDExpiration,
		AnswerWithin:        cfg.CommitAnswerWithin,
		NewProducerID:       p.newProducerID,
		Spool:               p.spool,
		Backend:             observeTxnBackend(p.up, p.m),
		OnTimeout:           func(string) { p.m.TxnEnded(metrics.TxnTimedOut) },
		CrashPoint:          cfg.CrashPoint,
		Log:                 p.log,
	})
	if err != nil {
		p.closeState()
		return nil, err
	}
	p.watch()
	close(p.ready)
	return p, nil
}

// portAllocator hands out broker listener ports: from [lo, hi] if set, else
// the ports after the bootstrap port; 0 (any port) if that is 0.
func portAllocator(listenPort, lo, hi int) func(map[int32]bool) (int32, error) {
	return func(used map[int32]bool) (int32, error) {
		if lo == 0 && hi == 0 {
			if listenPort == 0 {
				return 0, nil
			}
			lo, hi = listenPort+1, 65535
		}
		for port := lo; port <= hi; port++ {
			if !used[int32(port)] && port != listenPort {
				return int32(port), nil
			}
		}
		return 0, fmt.Errorf("broker port range %d-%d exhausted", lo, hi)
	}
}

// Addr is the bootstrap address clients connect to.
func (p *Proxy) Addr() string {
	_, port, _ := net.SplitHostPort(p.bootstrap.Addr().String())
	return net.JoinHostPort(p.advHost, port)
}

// Start learns the upstream's brokers (in the background if the upstream is
// not reachable yet) and starts accepting clients.
func (p *Proxy) Start(ctx context.Context) {
	p.serveListener(p.bootstrap, -1)
	p.ops.started.Store(true)
	go p.awaitRollForward()
	p.up.Start()
	go p.owners.pruneLoop(time.Hour, max(p.cfg.ProducerIDExpiration, p.cfg.TransactionalIDExpiration), p.producerIDsInUse, p.log)
	go func() {
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := p.refreshBrokers(ctx); err != nil {
			p.log.Warn().Err(err).Msg("cannot learn upstream brokers yet; will on first client request")
		}
	}()
}

// producerIDsInUse are the producer ids with state: idempotent producers'
// and transactional ids' current ones.
func (p *Proxy) producerIDsInUse() map[int64]bool {
	used := map[int64]bool{}
	for pid := range p.producers.ProducerIDs() {
		used[pid] = true
	}
	for _, t := range p.coord.DescribeAll() {
		used[t.ProducerID] = true
	}
	return used
}

// refreshBrokers asks the upstream for its brokers and maps each one.
func (p *Proxy) refreshBrokers(ctx context.Context) error {
	brokers, err := p.up.Brokers(ctx)
	if err != nil {
		return err
	}
	for _, b := range brokers {
		if _, _, err := p.mapBroker(b.NodeID, b.Host, b.Port); err != nil {
			return err
		}
	}
	return nil
}

// mapBroker is the protocol.Mapper for every rewritten response.
func (p *Proxy) mapBroker(id int32, host string, port int32) (string, int32, error) {
	cport, err := p.brokers.ensure(id, net.JoinHostPort(host, strconv.Itoa(int(port))))
	return p.advHost, cport, err
}

func (p *Proxy) serveListener(ln net.Listener, brokerID int32) {
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		select {
		case <-p.ready:
		case <-p.life.Done():
			return
		}
		for {
			cl, err := ln.Accept()
			if err != nil {
				if !errors.Is(err, net.ErrClosed) {
					p.log.Error().Err(err).Str("listener", ln.Addr().String()).Msg("accept failed")
				}
				return
			}
			if p.cfg.TLS != nil {
				cl = tls.Server(cl, p.cfg.TLS) // handshake in handle, off the accept loop
			}
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				p.handle(cl, brokerID)
			}()
		}
	}()
}

// handle pairs a client connection with an upstream connection to the broker
// its listener stands for (any bootstrap broker for the bootstrap listener).
func (p *Proxy) handle(cl net.Conn, brokerID int32) {
	log := p.log.With().Str("client", cl.RemoteAddr().String()).Int32("broker", brokerID).Logger()
	p.mu.Lock()
	n := len(p.conns)
	p.mu.Unlock()
	if p.cfg.MaxConnections > 0 && n >= p.cfg.MaxConnections {
		log.Warn().Int("max", p.cfg.MaxConnections).Msg("refusing client connection: --max-connections reached")
		p.m.ConnRefused(metrics.RefusedMaxConnections)
		resetClose(cl)
		return
	}
	principal := anonymous
	if tc, ok := cl.(*tls.Conn); ok {
		ctx, cancel := context.WithTimeout(context.Background(), p.cfg.DialTimeout)
		err := tc.HandshakeContext(ctx)
		cancel()
		if err != nil {
			log.Warn().Err(err).Msg("closing client connection: TLS handshake failed")
			cl.Close()
			return
		}
		if certs := tc.ConnectionState().PeerCertificates; len(certs) > 0 {
			principal = certPrincipal(certs[0])
		}
	}
	// A client that eosproxy authenticated (SASL termination, a client
	// certificate) is eosproxy's to vouch for: its paired connection uses
	// eosproxy's credentials. Otherwise the client's own SASL exchange
	// passes through it.
	up, err := p.dialPaired(brokerID, p.cfg.SASLUsers != nil || principal != anonymous)
	if err != nil {
		log.Warn().Err(err).Msg("closing client connection: upstream unreachable")
		p.m.ConnRefused(metrics.RefusedUpstreamUnreachable)
		resetClose(cl)
		return
	}
	c := newConn(p, cl, up, log)
	c.brokerID = brokerID
	if principal != anonymous {
		c.setPrincipal(principal)
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		log.Info().Msg("refusing client connection: shutting down")
		p.m.ConnRefused(metrics.RefusedShuttingDown)
		resetClose(cl)
		up.Close()
		return
	}
	p.conns[c] = struct{}{}
	p.mu.Unlock()
	p.m.ConnOpened()
	log.Debug().Str("upstream", up.RemoteAddr().String()).Msg("connection opened")
	c.run()
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	p.m.ConnClosed()
}

// pairedDialFor bounds how long a new client connection waits for its
// backend connection while quick failures are tried again: long enough for
// a moment's failure, short of clients' own request timeouts (10 s and more).
const pairedDialFor = 2 * time.Second

// dialPaired opens the upstream connection a new client connection is
// paired with, trying again for up to pairedDialFor (or DialTimeout, if
// shorter) after quick failures (a connection dropped during eosproxy's
// SASL exchange, a refused dial) while the client waits for its first
// answer: a moment's failure then costs it a delay, not a closed connection.
func (p *Proxy) dialPaired(brokerID int32, own bool) (net.Conn, error) {
	deadline := time.Now().Add(min(p.cfg.DialTimeout, pairedDialFor))
	for wait := 50 * time.Millisecond; ; wait = min(2*wait, time.Second) {
		up, err := p.up.DialAs(brokerID, own)
		if err == nil || time.Now().Add(wait).After(deadline) {
			return up, err
		}
		time.Sleep(wait)
		p.mu.Lock()
		closed := p.closed
		p.mu.Unlock()
		if closed {
			return nil, err
		}
	}
}

// upstreamAddr is where broker id listens, for upstream.Client.Dial; ""
// when the backend does not name it.
func (p *Proxy) upstreamAddr(brokerID int32) (string, error) {
	_, addr := p.brokers.lookup(brokerID)
	if addr != "" {
		return addr, nil
	}
	// Listener reopened from an earlier run: learn where the broker is.
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.DialTimeout)
	err := p.refreshBrokers(ctx)
	cancel()
	_, addr = p.brokers.lookup(brokerID)
	return addr, err
}

// Shutdown stops accepting, lets every connection finish the requests it has
// already read, and closes what is left when ctx ends.
func (p *Proxy) Shutdown(ctx context.Context) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	if ctx.Err() != nil {
		// A forced stop (Close; in cluster mode a deposed owner): no
		// write of eosproxy's own may reach the backend from now on, since
		// the next owner carries on from what the backend holds. Stop the
		// coordinator's forwarding and cut every connection eosproxy
		// opened itself before waiting for anything: a write left blocked
		// (a partition from the backend) would otherwise go out once the
		// backend is reachable again, after the next owner forwarded the
		// same batches, and on a backend without idempotence nothing
		// would drop the second copy.
		if p.coord != nil {
			p.coord.Stop()
		}
		if p.up != nil {
			p.up.Close()
		}
	}
	p.bootstrap.Close()
	p.brokers.closeAll()
	for c := range p.conns {
		c.stop()
	}
	p.mu.Unlock()
	done := make(chan struct{})
	go func() { p.wg.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = fmt.Errorf("in-flight requests not finished: %w", ctx.Err())
		p.mu.Lock()
		for c := range p.conns {
			c.close()
		}
		p.mu.Unlock()
		<-done
	}
	p.closeState()
	return err
}

// closeState stops the producer table and closes a DB that New opened.
func (p *Proxy) closeState() {
	p.endLife()
	p.m.Close()
	if p.bootstrap != nil {
		p.bootstrap.Close() // New failed after binding it
	}
	if p.brokers != nil {
		p.brokers.closeAll() // idem
	}
	if p.coord != nil {
		p.coord.Close()
	}
	if p.owners != nil {
		p.owners.close()
	}
	if p.up != nil {
		p.up.Close() // once the coordinator's forwarding has stopped
	}
	if p.producers != nil {
		p.producers.Close()
	}
	if p.inst != nil {
		p.inst.Close() // once nothing is served any more
	}
	if p.spool != nil {
		p.spool.Close()
	}
	if p.ownSpool != "" {
		os.RemoveAll(p.ownSpool)
	}
	if p.ownDB != nil {
		p.ownDB.Close()
	}
}

// Lost receives an error if another instance took over this one's lease on
// the backend (it was not renewed in time): this instance must stop.
func (p *Proxy) Lost() <-chan error {
	if p.inst == nil {
		return nil
	}
	return p.inst.Lost()
}

// ErrAnotherInstance is returned by New when another eosproxy instance
// serves the same backend.
var ErrAnotherInstance = upstream.ErrAnotherInstance

// startLease takes the instance lease before anything is served: no second
// instance on the backend, and producer ids from blocks reserved through it.
// A backend still starting gets a minute.
func (p *Proxy) startLease() error {
	if p.cfg.NoInstanceLease {
		return nil
	}
	timeout := p.cfg.InstanceLeaseTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	opts := p.cfg.BackendCut.KgoOpts(upstream.KgoOpts(p.cfg.UpstreamTLS, p.cfg.UpstreamSASL))
	in, err := upstream.StartInstance(ctx, p.cfg.DB, p.cfg.Upstreams, opts,
		p.Addr(), timeout, p.log)
	if errors.Is(err, upstream.ErrNoOwnAccess) {
		// As before the lease: clients' traffic still passes through.
		p.log.Error().Err(err).Msg("no instance lease on the backend (another instance there is not detected) and producer ids are counted in this data dir only; committed transactions cannot be forwarded")
		return nil
	}
	p.inst = in
	return err
}

// Stats returns the proxy's counters.
func (p *Proxy) Stats() Stats {
	return Stats{Duplicates: p.metrics.duplicates.Load()}
}

// Close stops everything at once.
func (p *Proxy) Close() {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	p.Shutdown(ctx)
}

var aLongTimeAgo = time.Unix(1, 0)

func keyName(key int16) string {
	if n := kmsg.NameForKey(key); n != "" {
		return n
	}
	return "key " + strconv.Itoa(int(key))
}

// Checkpoint writes an image of the state to the cluster's log (cluster
// mode), after which a replay starts there; it returns the image's size.
func (p *Proxy) Checkpoint() (int, error) {
	if p.cfg.DB == nil {
		return 0, errors.New("checkpoint: the state is in memory")
	}
	return p.cfg.DB.Checkpoint(p.coord.Blob)
}

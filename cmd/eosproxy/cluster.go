// Cluster mode (--cluster NAME): several eosproxy instances in front of one
// backend act as one. At any time one of them, the owner, serves all
// exactly-once work; its state goes through the cluster's log in the
// backend (package cluster) before any answer depends on it, so any other
// instance can take over with nothing acknowledged lost. The others are
// warm standbys: they replay the log into their own data dir (a cache) and
// relay clients that reach them to the owner, so clients may bootstrap from
// any instance.

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/eosproxy/eosproxy/admin"
	"github.com/eosproxy/eosproxy/cluster"
	"github.com/eosproxy/eosproxy/protocol"
	"github.com/eosproxy/eosproxy/proxy"
	"github.com/eosproxy/eosproxy/store"
	"github.com/eosproxy/eosproxy/txnstate/spool"
	"github.com/eosproxy/eosproxy/upstream"
)

// localKeys are this instance's own: its id and its broker ports. They are
// neither replicated nor dropped when the state is rebuilt from the log.
var localKeys = [][]byte{upstream.InstanceIDKey, proxy.PortKeyPrefix}

// runCluster serves as one instance of the cluster cfg.Cluster until ctx
// ends; pc is the proxy's configuration for the times it owns.
func runCluster(ctx context.Context, cfg config, pc proxy.Config, ops *admin.Server, reg prometheus.Registerer, log zerolog.Logger) error {
	db := pc.DB
	db.SetReplicator(nil, localKeys...)
	id, err := upstream.InstanceID(db)
	if err != nil {
		return err
	}
	log = log.With().Str("cluster", cfg.Cluster).Str("instance", id).Logger()
	pc.Log = log
	pc.NoInstanceLease = true // the cluster's group and log decide who serves
	advertise, err := advertiseAddr(cfg)
	if err != nil {
		return err
	}
	clientAddr, err := clientAddr(cfg)
	if err != nil {
		return err
	}
	blobs := &standbySpool{dir: pc.SpoolDir, log: log}
	defer blobs.close()

	opts := pc.BackendCut.KgoOpts(upstream.KgoOpts(pc.UpstreamTLS, pc.UpstreamSASL))
	m, err := cluster.Join(ctx, cluster.Config{
		Name:           cfg.Cluster,
		Seeds:          pc.Upstreams,
		Opts:           opts,
		Instance:       id,
		Advertise:      advertise,
		ClientAddr:     clientAddr,
		SessionTimeout: cfg.ClusterSession,
		CrashPoint:     pc.CrashPoint,
		Log:            log,
		Apply:          func(set []byte) error { return db.Apply(set, blobs) },
		Reset: func() error {
			if err := blobs.reset(); err != nil {
				return err
			}
			return db.Reset()
		},
	})
	if err != nil {
		return fmt.Errorf("join eosproxy cluster %s: %w", cfg.Cluster, err)
	}
	defer m.Close()
	var serving atomic.Bool
	registerClusterMetrics(reg, m, serving.Load)

	for first := true; ; first = false {
		// Standby: relay clients to the owner until this instance owns.
		rl, err := startRelay(cfg.Listen, m, log)
		if err != nil {
			return err
		}
		ops.SetReady(func(context.Context) error {
			if _, _, ok := m.Leader(); !ok {
				return errors.New("no owner of the cluster known yet")
			}
			return nil
		})
		log.Info().Str("listen", cfg.Listen).Msg("standby: relaying clients to the cluster's owner")
		if first {
			log.Info().Str("bootstrap", cfg.Listen).Strs("upstream", pc.Upstreams).Msg("eosproxy ready")
		}
		var ch cluster.Change
		select {
		case <-ctx.Done():
			rl.close()
			return nil
		case ch = <-m.Changes():
		}
		rl.close()
		if !ch.Owner {
			// A standby whose replay failed: start it afresh.
			log.Warn().Str("reason", ch.Reason).Msg("standby: rebuilding from the cluster's log")
			if !rebuild(ctx, m, log) {
				return nil
			}
			continue
		}

		// Owner: serve, with every store write going through the log.
		blobs.close()
		db.SetReplicator(m, localKeys...)
		pc.WriteFence = m.WriteAllowed
		pc.Peers = func() []protocol.Broker { return peerBrokers(m.Peers(), log) }
		p, err := proxy.New(pc)
		if err != nil {
			db.SetReplicator(nil, localKeys...)
			log.Error().Err(err).Msg("cannot serve as the cluster's owner; giving ownership up")
			m.Close()
			return fmt.Errorf("serve as owner: %w", err)
		}
		pctx, stop := context.WithCancel(ctx)
		p.Start(pctx)
		serving.Store(true)
		ops.SetReady(p.Ready)
		log.Info().Int32("generation", ch.Generation).Str("bootstrap", p.Addr()).Msg("owner of the cluster: serving")
		cpDone := make(chan struct{})
		go func() {
			defer close(cpDone)
			checkpoints(pctx, cfg.CheckpointBytes, db, p, log)
		}()
		select {
		case <-ctx.Done():
			// A clean stop: finish what is in flight, then hand over. The
			// next owner waits meanwhile, so in-flight requests get at
			// most handoverWait (a JoinGroup held by a rebalance would
			// otherwise hold the whole cluster up); the rest are cut, and
			// their clients retry with the next owner.
			stop()
			<-cpDone
			sctx, cancel := context.WithTimeout(context.Background(), min(cfg.ShutdownTimeout, handoverWait))
			if err := p.Shutdown(sctx); err != nil {
				log.Warn().Err(err).Msg("shutdown cut short")
			}
			cancel()
			db.SetReplicator(nil, localKeys...)
			return nil
		case ch = <-m.Changes():
		}
		// Deposed (revoked, fenced, or the log refused a write): stop at
		// once; what this instance wrote past its ownership is void in the
		// log, so its data dir is rebuilt from the log.
		stop()
		serving.Store(false)
		log.Warn().Str("reason", ch.Reason).Msg("no longer the cluster's owner: stopping and rebuilding from the cluster's log")
		p.Close()
		// After the clients are let go: a checkpoint's trim of the log may
		// wait for a backend that this instance cannot reach (cut off).
		<-cpDone
		db.SetReplicator(nil, localKeys...)
		if !rebuild(ctx, m, log) {
			return nil
		}
	}
}

// rebuild replays the cluster's log into the data dir afresh, retrying
// while the backend cannot be read; false once ctx ends.
func rebuild(ctx context.Context, m *cluster.Member, log zerolog.Logger) bool {
	for wait := 500 * time.Millisecond; ; wait = min(2*wait, 10*time.Second) {
		err := m.Rebuild(ctx)
		if err == nil {
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		log.Error().Err(err).Dur("retry_in", wait).Msg("cannot rebuild the state from the cluster's log")
		select {
		case <-ctx.Done():
			return false
		case <-time.After(wait):
		}
	}
}

// checkpoints writes an image of the state to the cluster's log whenever
// enough went there since the last one, so that the log, and a standby's
// replay, stay about the size of the state.
func checkpoints(ctx context.Context, every int64, db *store.DB, p *proxy.Proxy, log zerolog.Logger) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	threshold := every
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if db.ReplicatedSinceCheckpoint() < threshold {
			continue
		}
		start := time.Now()
		n, err := p.Checkpoint()
		if err != nil {
			if ctx.Err() == nil {
				log.Warn().Err(err).Msg("checkpoint of the state in the cluster's log failed; retrying later")
			}
			continue
		}
		threshold = max(every, 2*int64(n))
		log.Info().Int("bytes", n).Dur("took", time.Since(start)).Msg("checkpoint of the state written to the cluster's log")
	}
}

// handoverWait bounds a clean stop's wait for in-flight requests while it
// owns the cluster: a clean stop hands over within about this.
const handoverWait = 2 * time.Second

// advertiseAddr is where the other instances reach this one's bootstrap
// listener.
func advertiseAddr(cfg config) (string, error) {
	if cfg.ClusterAddr != "" {
		if _, _, err := net.SplitHostPort(cfg.ClusterAddr); err != nil {
			return "", fmt.Errorf("--cluster-advertise %q: %w", cfg.ClusterAddr, err)
		}
		return cfg.ClusterAddr, nil
	}
	host, port, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return "", fmt.Errorf("--listen %q: %w", cfg.Listen, err)
	}
	if cfg.AdvertiseHost != "" {
		host = cfg.AdvertiseHost
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		return "", fmt.Errorf("listen host %q is not an address the other instances can use: set --cluster-advertise", host)
	}
	return net.JoinHostPort(host, port), nil
}

// clientAddr is where clients reach this instance's --listen: the host
// its broker listeners are advertised under, and --listen's port.
func clientAddr(cfg config) (string, error) {
	host, port, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return "", fmt.Errorf("--listen %q: %w", cfg.Listen, err)
	}
	if cfg.AdvertiseHost != "" {
		host = cfg.AdvertiseHost
	}
	return net.JoinHostPort(host, port), nil
}

// peerBrokers names the other instances as the brokers clients know them
// by (cluster/peers.go).
func peerBrokers(peers []cluster.Peer, log zerolog.Logger) []protocol.Broker {
	out := make([]protocol.Broker, 0, len(peers))
	for _, p := range peers {
		host, port, err := net.SplitHostPort(p.Addr)
		n, perr := strconv.ParseInt(port, 10, 32)
		if err != nil || perr != nil || host == "" || host == "0.0.0.0" || host == "::" {
			log.Debug().Str("instance", p.Instance).Str("addr", p.Addr).Msg("instance publishes no address clients can use; not naming it in Metadata")
			continue
		}
		out = append(out, protocol.Broker{NodeID: cluster.PeerNodeID(p.Instance), Host: host, Port: int32(n)})
	}
	return out
}

// standbySpool stores the buffered batches a standby replays, in the spool
// directory the proxy opens once this instance owns (closed before that).
type standbySpool struct {
	mu  sync.Mutex
	dir string
	log zerolog.Logger
	s   *spool.Spool
}

// Put implements store.Blobs. The bytes need no fsync: a standby's data
// dir is rebuilt from the log whenever it starts.
func (b *standbySpool) Put(blob []byte) ([]byte, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.s == nil {
		s, err := spool.Open(b.dir, 0, b.log)
		if err != nil {
			return nil, err
		}
		// A replayed blob is a slice of a whole log record, read by no one
		// until a takeover: kept in memory, it would hold the record.
		s.KeepInMemory(0)
		b.s = s
	}
	ref, err := b.s.Append(blob)
	if err != nil {
		return nil, err
	}
	return ref.Marshal(), nil
}

func (b *standbySpool) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.s != nil {
		b.s.Close()
		b.s = nil
	}
}

// reset empties the spool directory, before a replay from the log.
func (b *standbySpool) reset() error {
	b.close()
	if err := os.RemoveAll(b.dir); err != nil {
		return fmt.Errorf("empty the spool: %w", err)
	}
	return nil
}

var _ store.Blobs = (*standbySpool)(nil)

// relay passes the connections a standby accepts to the owner's bootstrap
// address as bytes: the owner answers them, TLS and SASL included, and its
// metadata then sends the client to the owner's own listeners.
type relay struct {
	ln     net.Listener
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed chan struct{}
	wg     sync.WaitGroup
}

func startRelay(listen string, m *cluster.Member, log zerolog.Logger) (*relay, error) {
	var ln net.Listener
	var err error
	// The owner this instance was a moment ago may still hold the port.
	for deadline := time.Now().Add(5 * time.Second); ; {
		if ln, err = net.Listen("tcp", listen); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		return nil, fmt.Errorf("standby listener: %w", err)
	}
	r := &relay{ln: ln, conns: map[net.Conn]struct{}{}, closed: make(chan struct{})}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			r.wg.Add(1)
			go func() {
				defer r.wg.Done()
				r.pass(c, m, log)
			}()
		}
	}()
	return r, nil
}

// relayHold is how long a standby holds a client's connection while no
// owner is known or the owner it knows cannot be reached (a failover): a
// connection closed at once would look to a client like a broker that
// refuses it (franz-go, for one, fails its records on an EOF during
// ApiVersions), one held is answered once the next owner serves.
const relayHold = 30 * time.Second

func (r *relay) track(c net.Conn, add bool) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.conns == nil {
		return false
	}
	if add {
		r.conns[c] = struct{}{}
	} else {
		delete(r.conns, c)
	}
	return true
}

func (r *relay) pass(c net.Conn, m *cluster.Member, log zerolog.Logger) {
	defer c.Close()
	if !r.track(c, true) {
		return
	}
	defer r.track(c, false)
	var up net.Conn
	deadline := time.Now().Add(relayHold)
	for tick := time.NewTicker(50 * time.Millisecond); ; {
		to, self, ok := m.Leader()
		if ok && !self {
			var err error
			if up, err = net.DialTimeout("tcp", to, 2*time.Second); err == nil {
				tick.Stop()
				break
			}
			log.Debug().Err(err).Str("owner", to).Msg("cannot reach the cluster's owner yet; holding the client's connection")
		}
		select {
		case <-r.closed:
			// This instance serves now: the client retries, here.
			tick.Stop()
			return
		case <-tick.C:
		}
		if time.Now().After(deadline) {
			tick.Stop()
			log.Info().Dur("held", relayHold).Msg("no reachable owner of the cluster; closing the client's connection")
			return
		}
	}
	defer up.Close()
	if !r.track(up, true) {
		return
	}
	defer r.track(up, false)
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		io.Copy(dst, src)
		// One side ended: end the other, as a broker closing would.
		dst.Close()
		src.Close()
		done <- struct{}{}
	}
	go cp(up, c)
	go cp(c, up)
	<-done
	<-done
}

// close stops accepting and cuts every relayed connection.
func (r *relay) close() {
	r.ln.Close()
	close(r.closed)
	r.mu.Lock()
	for c := range r.conns {
		c.Close()
	}
	r.conns = nil
	r.mu.Unlock()
	r.wg.Wait()
}

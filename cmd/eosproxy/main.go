// Command eosproxy is a Kafka-wire-compatible proxy that gives Kafka clients
// exactly-once semantics in front of any Kafka-compatible backend.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/eosproxy/eosproxy/admin"
	"github.com/eosproxy/eosproxy/metrics"
	"github.com/eosproxy/eosproxy/proxy"
	"github.com/eosproxy/eosproxy/store"
	"github.com/eosproxy/eosproxy/upstream"
)

func main() {
	cfg, err := parseConfig(os.Args[1:], os.Getenv)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "eosproxy:", err)
		os.Exit(2)
	}
	log, err := newLogger(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "eosproxy:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err = run(ctx, cfg, log)
	stop()
	if err != nil {
		log.Error().Err(err).Msg("eosproxy stopped")
		os.Exit(1)
	}
}

func newLogger(cfg config) (zerolog.Logger, error) {
	level, err := zerolog.ParseLevel(cfg.LogLevel)
	if err != nil {
		return zerolog.Logger{}, fmt.Errorf("--log-level: %w", err)
	}
	format := cfg.LogFormat
	if format == "" {
		format = "json"
		if isatty.IsTerminal(os.Stderr.Fd()) {
			format = "console"
		}
	}
	var log zerolog.Logger
	switch format {
	case "json":
		log = zerolog.New(os.Stderr)
	case "console":
		log = zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr, TimeFormat: time.RFC3339})
	default:
		return log, fmt.Errorf("--log-format %q: want json or console", format)
	}
	return log.Level(level).With().Timestamp().Logger(), nil
}

// run serves until ctx ends (SIGINT, SIGTERM) or the lease is lost.
func run(ctx context.Context, cfg config, log zerolog.Logger) error {
	lo, hi, err := cfg.brokerPortRange()
	if err != nil {
		return err
	}
	if cfg.DebugListen != "" {
		log.Warn().Msg("--debug-listen is deprecated: use --admin-listen, which serves /debug/pprof too")
	}
	reg := metrics.NewRegistry()
	ops := admin.New(reg)
	if cfg.AdminListen != "" {
		ln, err := net.Listen("tcp", cfg.AdminListen)
		switch {
		case err != nil && cfg.AdminListen != defaultAdminListen:
			return fmt.Errorf("admin listener: %w", err)
		case err != nil:
			// Several eosproxy processes on one machine (tests, one per
			// backend) would all want the default: only one gets it.
			log.Warn().Err(err).Msg("no admin endpoint: the default --admin-listen address is taken; give each eosproxy its own")
		default:
			srv := &http.Server{Handler: ops.Handler(), ReadHeaderTimeout: 10 * time.Second}
			defer srv.Close()
			go srv.Serve(ln)
			log.Info().Str("listen", ln.Addr().String()).Msg("serving /metrics, /healthz, /readyz and /debug/pprof")
		}
	}
	upstreams := cfg.upstreams()
	if cfg.Cluster != "" && len(upstreams) == 0 {
		return errors.New("--cluster needs --upstream: the cluster's state lives in the backend, which its instances share")
	}
	open := store.Open
	if cfg.Cluster != "" {
		// The data dir is a cache of the cluster's log, rebuilt from it
		// whenever this instance starts.
		open = store.OpenCache
	}
	db, err := open(filepath.Join(cfg.DataDir, "state"), log)
	if err != nil {
		return err
	}
	defer db.Close()

	if len(upstreams) == 0 {
		dir := filepath.Join(cfg.DataDir, "embedded-kafka")
		cluster, err := kfake.NewCluster(
			kfake.NumBrokers(cfg.EmbeddedBrokers),
			kfake.DataDir(dir),
			kfake.AllowAutoTopicCreation(),
		)
		if err != nil {
			return fmt.Errorf("start embedded backend: %w", err)
		}
		defer cluster.Close()
		upstreams = cluster.ListenAddrs()
		log.Warn().Strs("addrs", upstreams).Str("data", dir).
			Msg("no --upstream given: serving from an embedded in-process Kafka-compatible backend (franz-go kfake); use --upstream for a real cluster")
	}

	sec, err := cfg.security.proxyConfig(log)
	if err != nil {
		return err
	}
	pc := proxy.Config{
		Listen:                    cfg.Listen,
		AdvertiseHost:             cfg.AdvertiseHost,
		Upstreams:                 upstreams,
		BrokerPortMin:             lo,
		BrokerPortMax:             hi,
		MaxRequestBytes:           int32(cfg.MaxRequestBytes),
		DB:                        db,
		SpoolDir:                  filepath.Join(cfg.DataDir, "spool"),
		Space:                     dataDirSpace(cfg, log),
		ProducerIDExpiration:      cfg.ProducerIDExp,
		NoBackendIdempotence:      cfg.NoBackendIdem,
		IdleTimeout:               cfg.IdleTimeout,
		MaxConnections:            cfg.MaxConnections,
		TransactionMaxTimeout:     cfg.TxnMaxTimeout,
		MaxTransactionBytes:       cfg.MaxTxnBytes,
		TransactionBufferBytes:    cfg.TxnBufferBytes,
		TransactionalIDExpiration: cfg.TxnIDExp,
		InstanceLeaseTimeout:      cfg.LeaseTimeout,
		Metrics:                   reg,
		Log:                       log,
		TLS:                       sec.TLS,
		SASLUsers:                 sec.SASLUsers,
		ACL:                       sec.ACL,
		UpstreamTLS:               sec.UpstreamTLS,
		UpstreamSASL:              sec.UpstreamSASL,
		CrashPoint:                cfg.crash.hook(log),
	}
	if cfg.testCutFile != "" {
		if pc.UpstreamTLS != nil {
			return fmt.Errorf("%s: a backend cut (fault test) needs a backend without TLS", testCutEnv)
		}
		pc.BackendCut = upstream.NewCut(nil)
		cctx, cancel := context.WithCancel(ctx)
		defer cancel()
		go pc.BackendCut.WatchFile(cctx, cfg.testCutFile, 20*time.Millisecond, log)
	}
	if cfg.Cluster != "" {
		return runCluster(ctx, cfg, pc, ops, reg, log)
	}
	p, err := proxy.New(pc)
	if err != nil {
		return err
	}
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	p.Start(ctx)
	ops.SetReady(p.Ready)
	log.Info().Str("bootstrap", p.Addr()).Strs("upstream", upstreams).Msg("eosproxy ready")
	var lost error
	select {
	case <-ctx.Done():
	case lost = <-p.Lost():
	}
	stop()
	log.Info().Msg("shutting down: finishing in-flight requests")
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if err := p.Shutdown(sctx); err != nil {
		log.Warn().Err(err).Msg("shutdown cut short")
	}
	log.Info().Msg("stopped")
	return lost
}

// dataDirSpace watches the data dir's filesystem for --data-dir-reserve;
// nil when the reserve is 0.
func dataDirSpace(cfg config, log zerolog.Logger) *store.Space {
	if cfg.DataDirReserve <= 0 {
		return nil
	}
	return store.NewSpace(cfg.DataDir, uint64(cfg.DataDirReserve), log)
}

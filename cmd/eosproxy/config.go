package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// defaultAdminListen is --admin-listen's default; failing to bind it is
// not fatal, failing to bind an address given is.
const defaultAdminListen = "127.0.0.1:9190"

type config struct {
	Listen          string
	AdvertiseHost   string
	Upstream        string
	BrokerPorts     string
	DataDir         string
	LogLevel        string
	LogFormat       string
	MaxRequestBytes int
	ShutdownTimeout time.Duration
	EmbeddedBrokers int
	ProducerIDExp   time.Duration
	NoBackendIdem   bool
	IdleTimeout     time.Duration
	MaxConnections  int
	TxnMaxTimeout   time.Duration
	MaxTxnBytes     int64
	TxnBufferBytes  int64
	DataDirReserve  int64
	TxnIDExp        time.Duration
	LeaseTimeout    time.Duration
	AdminListen     string
	DebugListen     string
	Cluster         string
	ClusterSession  time.Duration
	ClusterAddr     string
	CheckpointBytes int64
	security
	// testCutFile (EOSPROXY_TEST_BACKEND_CUT_FILE, fault tests only, not a
	// flag): while this file exists, eosproxy is cut off from the backend
	// (upstream.Cut).
	testCutFile string
	crash       *crashPoints // EOSPROXY_TEST_CRASH, tests only
}

// testCutEnv names the file of a backend cut (fault tests: eoscheck).
const testCutEnv = "EOSPROXY_TEST_BACKEND_CUT_FILE"

// envName is the environment form of a flag: EOSPROXY_<FLAG>, upper case,
// "-" as "_".
func envName(name string) string {
	return "EOSPROXY_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// newFlagSet defines every flag on c. The usage strings are also the
// README's configuration table (configref.go renders it), so they say what
// an operator needs; a default that is not a value ends the usage as
// "(default: ...)".
func newFlagSet(c *config) (fs *flag.FlagSet, configFile *string) {
	fs = flag.NewFlagSet("eosproxy", flag.ContinueOnError)
	fs.StringVar(&c.Listen, "listen", "127.0.0.1:9092", "`host:port` of the bootstrap listener; each backend broker gets its own listener on the same host, by default on the following ports (9093, 9094, ... in order of discovery)")
	fs.StringVar(&c.AdvertiseHost, "advertise-host", "", "`host` clients are told to connect to; required when listening on 0.0.0.0 (default: the host of --listen)")
	fs.StringVar(&c.Upstream, "upstream", "", "the real cluster's bootstrap brokers, `host:port[,host:port...]`; empty starts the embedded backend")
	fs.StringVar(&c.BrokerPorts, "broker-ports", "", "port `range` LO-HI for the broker listeners (default: the ports after --listen's)")
	fs.StringVar(&c.DataDir, "data-dir", "./eosproxy-data", "`directory` of eosproxy's state (badger, under state/), open transactions' batches (spool/) and the embedded backend's data (embedded-kafka/)")
	fs.StringVar(&c.LogLevel, "log-level", "info", "log `level`: trace, debug, info, warn or error")
	fs.StringVar(&c.LogFormat, "log-format", "", "log `format`, json or console (default: console when stderr is a terminal, else json)")
	fs.IntVar(&c.MaxRequestBytes, "max-request-bytes", 100<<20, "largest request frame accepted, in `bytes`, 1 B to 1 GiB (Kafka's socket.request.max.bytes)")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", 10*time.Second, "how long in-flight requests may take to finish on SIGINT/SIGTERM (long-polling fetches and rebalance waits are cut at once)")
	fs.DurationVar(&c.ProducerIDExp, "producer-id-expiration", 24*time.Hour, "how long an idle idempotent producer's state is kept (Kafka's producer.id.expiration.ms)")
	fs.BoolVar(&c.NoBackendIdem, "no-backend-idempotence", false, "never ask the backend for producer ids: idempotent batches and commits are forwarded without them, as on a backend without idempotence, and duplicates are kept out by eosproxy's look-ups alone (for tests, or a backend whose idempotence cannot be used)")
	fs.DurationVar(&c.IdleTimeout, "idle-timeout", 10*time.Minute, "close a client connection that sends no complete request for this long, e.g. a slow client holding half a frame (Kafka's connections.max.idle.ms); 0 disables")
	fs.IntVar(&c.MaxConnections, "max-connections", 10000, "most concurrent client connections; more are refused with a log line (0: no limit)")
	fs.DurationVar(&c.TxnMaxTimeout, "transaction-max-timeout", 15*time.Minute, "longest transaction.timeout.ms a producer may ask for (Kafka's transaction.max.timeout.ms); more gets INVALID_TRANSACTION_TIMEOUT")
	fs.Int64Var(&c.MaxTxnBytes, "max-transaction-bytes", 2<<30, "most `bytes` of record batches one open transaction may buffer; past it Produce gets POLICY_VIOLATION with a message and the transaction can only abort (0: no limit)")
	fs.Int64Var(&c.TxnBufferBytes, "transaction-buffer-bytes", 20<<30, "disk budget, in `bytes`, for all uncommitted transactional data (under --data-dir's spool/); past it Produce gets the same answer (0: no limit)")
	fs.Int64Var(&c.DataDirReserve, "data-dir-reserve", 256<<20, "`bytes` to keep free on --data-dir's filesystem: below it transactional and idempotent batches get KAFKA_STORAGE_ERROR (producers retry) until there is room, so that badger, which writes through memory maps and dies of SIGBUS on a full filesystem, always has room to finish what is taken (0: no check)")
	fs.DurationVar(&c.LeaseTimeout, "instance-lease-timeout", 10*time.Second, "eosproxy holds a lease on the backend (topic __eosproxy_instances, renewed every fifth of this): a second instance with another data dir is refused while it lives, and may take over a lease not renewed for this long (the old holder then stops)")
	fs.DurationVar(&c.TxnIDExp, "transactional-id-expiration", 7*24*time.Hour, "how long an unused transactional id is remembered (Kafka's transactional.id.expiration.ms)")
	fs.StringVar(&c.AdminListen, "admin-listen", defaultAdminListen, "`host:port` of the operations endpoint: /metrics (Prometheus), /healthz, /readyz and /debug/pprof (see Operations; keep it off the clients' network); empty disables it")
	fs.StringVar(&c.DebugListen, "debug-listen", "", "deprecated: `host:port`, the same as --admin-listen, which it overrides")
	fs.StringVar(&c.Cluster, "cluster", "", "`name` of the eosproxy cluster this instance belongs to: instances with the same name in front of the same --upstream act as one, one of them serving and the others taking over when it stops (see Several instances); empty runs a single instance")
	fs.DurationVar(&c.ClusterSession, "cluster-session-timeout", 10*time.Second, "with --cluster: how long the serving instance may go unheard (its session in the backend's consumer group __eosproxy_<name>) before another takes over; 6s to 5m on Kafka's defaults")
	fs.StringVar(&c.ClusterAddr, "cluster-advertise", "", "with --cluster: `host:port` at which the other instances reach this one's --listen, to relay clients to it while it serves (default: --advertise-host with --listen's port)")
	fs.Int64Var(&c.CheckpointBytes, "cluster-checkpoint-bytes", 256<<20, "with --cluster: once this many `bytes` of state changes (buffered transactional data included) went to the cluster's log since the last checkpoint, and at least twice the last checkpoint's size, the serving instance writes an image of its state there and trims the log before it")
	fs.IntVar(&c.EmbeddedBrokers, "embedded-brokers", 1, "number of brokers of the embedded backend")
	c.security.flags(fs)
	configFile = fs.String("config", "", "YAML `file` whose keys are the other flags' names (an example with every key: cmd/eosproxy/testdata/eosproxy.example.yaml)")
	return fs, configFile
}

// parseConfig reads flags, then fills every flag not given on the command
// line from EOSPROXY_<FLAG> in the environment, then from the YAML file named
// by --config. Precedence is thus flag > env > file > default.
func parseConfig(args []string, getenv func(string) string) (config, error) {
	var c config
	fs, configFile := newFlagSet(&c)
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	c.testCutFile = getenv(testCutEnv)
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if !set["config"] {
		*configFile = getenv(envName("config"))
	}
	file := map[string]any{}
	if *configFile != "" {
		raw, err := os.ReadFile(*configFile)
		if err != nil {
			return c, fmt.Errorf("config file: %w", err)
		}
		if err := yaml.Unmarshal(raw, &file); err != nil {
			return c, fmt.Errorf("config file %s: %w", *configFile, err)
		}
		for k := range file {
			if fs.Lookup(k) == nil || k == "config" {
				return c, fmt.Errorf("config file %s: unknown key %q", *configFile, k)
			}
		}
	}
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || f.Name == "config" {
			return
		}
		env := envName(f.Name)
		if v := getenv(env); v != "" {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", env, err))
			}
			return
		}
		if v, ok := file[f.Name]; ok {
			if err := fs.Set(f.Name, yamlScalar(v)); err != nil {
				errs = append(errs, fmt.Errorf("config key %s: %w", f.Name, err))
			}
		}
	})
	if err := errors.Join(errs...); err != nil {
		return c, err
	}
	if c.DebugListen != "" {
		c.AdminListen = c.DebugListen
	}
	if c.MaxRequestBytes <= 0 || c.MaxRequestBytes > 1<<30 {
		return c, fmt.Errorf("--max-request-bytes %d out of range (1 B to 1 GiB)", c.MaxRequestBytes)
	}
	var err error
	c.crash, err = parseCrashPoints(getenv)
	return c, err
}

// yamlScalar turns a YAML value into the flag syntax; a list becomes the
// comma-separated form --upstream takes.
func yamlScalar(v any) string {
	if list, ok := v.([]any); ok {
		parts := make([]string, len(list))
		for i, x := range list {
			parts[i] = fmt.Sprint(x)
		}
		return strings.Join(parts, ",")
	}
	return fmt.Sprint(v)
}

func (c config) upstreams() []string {
	var out []string
	for _, u := range strings.Split(c.Upstream, ",") {
		if u = strings.TrimSpace(u); u != "" {
			out = append(out, u)
		}
	}
	return out
}

func (c config) brokerPortRange() (lo, hi int, err error) {
	if c.BrokerPorts == "" {
		return 0, 0, nil
	}
	a, b, ok := strings.Cut(c.BrokerPorts, "-")
	if lo, err = strconv.Atoi(strings.TrimSpace(a)); err == nil && ok {
		hi, err = strconv.Atoi(strings.TrimSpace(b))
	}
	if err != nil || !ok || lo <= 0 || hi < lo || hi > 65535 {
		return 0, 0, fmt.Errorf("--broker-ports %q: want LO-HI within 1-65535", c.BrokerPorts)
	}
	return lo, hi, nil
}

// Package check is the core of eoscheck, the exactly-once verifier: it
// drives idempotent franz-go producers and transactional consume-transform-
// produce copiers through an eosproxy child process while SIGKILLing and
// restarting it (and, with Drops, dropping its backend connections right
// after requests; with BackendErrors, making the backend answer some writes
// with errors although it applied them), then reads the backend directly
// and accounts for every record in the Jepsen Kafka workload's terms: lost,
// duplicated, aborted and uncommitted reads, order violations.
package check

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eosproxy/eosproxy/integration/faults"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Config is one eoscheck run.
type Config struct {
	Upstream   string        // backend bootstrap; empty starts kfake (without the EOS API keys) in-process
	ProxyBin   string        // eosproxy binary; empty builds cmd/eosproxy
	Producers  int           // idempotent producers
	Partitions int           // partitions of the topic
	Records    int           // records to send in total
	Duration   time.Duration // if set, spread the records over this long (the run ends when both this and Kills are reached)
	Rate       int           // records per second in total; 0 chooses one that spreads Records over the kill schedule
	KillEvery  time.Duration // fixed interval between SIGKILLs; 0: random 300 ms–1.5 s
	Kills      int           // at least this many SIGKILLs
	Seed       uint64        // 0: from the clock
	WorkDir    string        // data dir and logs go under it; empty: a temp dir
	LogFile    string        // eosproxy's JSON logs; empty: WorkDir/eosproxy.log
	Progress   io.Writer     // progress lines and the final table; nil: silent

	// Copiers is how many transactional consume-transform-produce copiers
	// (GroupTransactSession, one group) copy the producers' topic to an
	// output topic through eosproxy; 0: none (idempotent producers only).
	Copiers int
	// AbortRate is the fraction of copier transactions aborted on purpose
	// (records produced and acknowledged, then End(TryAbort)).
	AbortRate float64
	// CopierRestarts is how many times, spread over the kill schedule, a
	// copier is replaced mid-transaction by a new instance with the same
	// transactional id (alternately closed first, or left alive as a zombie
	// that then tries to commit).
	CopierRestarts int
	// Readers is how many read_committed consumers read the output through
	// eosproxy while the copiers run; 0 with copiers: 1.
	Readers int
	// CopyTimeout bounds how long the copiers may take, after the fault
	// schedule, to commit the whole input; 0: 2 minutes.
	CopyTimeout time.Duration
	// Drops puts a TCP relay (integration/faults) in front of every broker
	// of the in-process backend that drops eosproxy's connection right
	// after forwarding a request, during the fault schedule. In-process
	// kfake backend only.
	Drops bool
	// DropRate is the chance per Produce or OffsetCommit request (a tenth
	// of it for any other request) that the connection is dropped after
	// it; 0: 0.02.
	DropRate float64
	// BackendErrors makes the in-process kfake backend answer a fraction
	// of the Produce requests to the input and output topics with
	// REQUEST_TIMED_OUT or NOT_ENOUGH_REPLICAS_AFTER_APPEND, and of the
	// OffsetCommit requests of the copiers' group with REQUEST_TIMED_OUT,
	// after applying them (appending the batches, storing the offsets),
	// from the start until the producers have flushed and the copiers have
	// copied the whole input (the commits' batches are mostly forwarded
	// after the fault schedule). In-process kfake backend only.
	BackendErrors bool
	// BackendIdempotence keeps the idempotence/transaction API keys of the
	// in-process kfake backend, so eosproxy forwards commits pipelined
	// under its own producer id (the path a real Kafka backend takes).
	BackendIdempotence bool
	// BackendErrorRate is the fraction of those requests answered with an
	// error; 0: 0.03.
	BackendErrorRate float64
	// ProxyLogLevel is eosproxy's --log-level; empty: info.
	ProxyLogLevel string
	// ClientLog writes the copiers' franz-go debug logs to
	// <work-dir>/copiers-kgo.log (to explain an anomaly; verbose).
	ClientLog bool
	// RestartBroker is how many times, spread over the kill schedule, the
	// real backend (Upstream) is stopped and started again on its data
	// with BrokerRestartCmd, while the producers and copiers go on through
	// eosproxy. Needs Upstream.
	RestartBroker int
	// BrokerRestartCmd is a shell command (sh -c) that stops the broker
	// and starts it again keeping its data, and returns once it serves
	// metadata again (integration/kafka/kafka.sh restart).
	BrokerRestartCmd string
	// JavaCopiers is how many of Kafka's own TransactionalMessageCopier
	// (Java kafka-clients, random aborts) copy one input partition each
	// (partitions 0..JavaCopiers-1) to a second output topic through
	// eosproxy, once the producers are done, while the fault schedule goes
	// on. Needs Upstream (the real-broker tier, where Java and the Kafka
	// jars are) and KafkaSh; at most Partitions.
	JavaCopiers int
	// KafkaSh is integration/kafka/kafka.sh, whose "run" starts a Java
	// class on the Kafka jars.
	KafkaSh string
	// JavaKills is how many SIGKILLs of eosproxy, at most, go on while the
	// Java copiers run (the schedule stops killing when they are done);
	// 0: max(2, Kills/2). Every kill may crash a copier, whose restart
	// costs a JVM start, so killing without a bound could keep them from
	// ever finishing.
	JavaKills int
	// JavaCrashes is how many times eoscheck SIGKILLs a Java copier's JVM
	// (a client crash, likely mid-transaction), spread over the copiers
	// and their progress; the copier is started again with the same
	// transactional id and group.
	JavaCrashes int

	// Stalls is how many times, spread over the kill schedule, a copier
	// freezes mid-transaction (every connection of its client held, as
	// SIGSTOP would: no heartbeat) until the backend's group has removed
	// it and moved its partitions to a copier with another transactional
	// id, then commits the transaction's offsets as the member and
	// generation it was (Kafka refuses them). The copiers' session timeout
	// is then 6 s. Needs at least two copiers.
	Stalls int
	// GroupProtocol is the copiers' group protocol: "classic" (default)
	// or "consumer" (KIP-848, ConsumerGroupHeartbeat; the backend's group
	// must then be of type consumer, else the check cannot run).
	GroupProtocol string
	// CleanRestarts is how many of the restarts of eosproxy, spread over
	// the schedule, stop it with SIGTERM (a clean shutdown) instead of
	// SIGKILL.
	CleanRestarts int
	// CommitKills is how many of the restarts are timed to a copier's
	// commit (right after it asked to commit: offsets in flight),
	// alternately SIGTERM and SIGKILL.
	CommitKills int
	// CommitRestarts is how many times, spread over the kill schedule, a
	// copier is replaced right after a committed transaction by a new
	// instance with the same transactional id, which reads the output
	// read_committed right after InitProducerId and checks every
	// transaction its predecessors committed is there.
	CommitRestarts int
	// InitReads makes every new copier instance (also those replacing a
	// copier mid-transaction, or after a stall) make that check.
	InitReads bool
	// DeleteRecords is how many times, spread over the kill schedule, the
	// producers idle while the input's log start is moved up with
	// DeleteRecords (to the copiers' committed offsets: nothing not yet
	// copied is deleted; partitions of Java copiers are left alone), and
	// eosproxy is restarted soon after they resume.
	DeleteRecords int
	// RetentionDeletes is how many times, spread over the kill schedule,
	// the producers idle while the input's retention.ms is lowered until
	// the backend's retention has moved its log start, then restored
	// (retention.go); what it deleted is read first and kept for the
	// check. Skipped while the copiers are behind the input's end (the
	// retention would delete what they have not copied). The input topic
	// then has segment.ms=1000; a real broker must check retention often
	// (log.retention.check.interval.ms, 1 s in integration/kafka/kafka.sh).
	RetentionDeletes int
	// ReplicationFactor of the topics eoscheck creates; 0: 1.
	ReplicationFactor int
	// BrokerPauses is how many times, spread over the kill schedule, a
	// broker is paused (BrokerPauseCmd, e.g. SIGSTOP of the second broker
	// of a two-broker cluster) for BrokerPause, then resumed
	// (BrokerResumeCmd). Needs Upstream.
	BrokerPauses    int
	BrokerPause     time.Duration
	BrokerPauseCmd  string
	BrokerResumeCmd string
	// ProxyArgs are extra arguments of every eosproxy run.
	ProxyArgs []string
}

// Report is the outcome, written as JSON.
type Report struct {
	Seed          uint64   `json:"seed"`
	Topic         string   `json:"topic"`
	Backend       string   `json:"backend"`
	Producers     int      `json:"producers"`
	Partitions    int      `json:"partitions"`
	Seconds       float64  `json:"seconds"`
	Sent          int64    `json:"sent"`
	Acked         int64    `json:"acked"`
	Failed        int64    `json:"failed"`
	Kills         int      `json:"kills"`
	Restarts      int      `json:"restarts"`
	BackendTotal  int64    `json:"backend_records"`
	Lost          int64    `json:"lost"`
	Duplicates    int64    `json:"duplicates"`      // distinct values read more than once
	DuplicateRead int64    `json:"duplicate_extra"` // extra copies beyond the first
	OrderErrors   int64    `json:"order_violations"`
	Unexpected    int64    `json:"unexpected"`
	Anomalies     int64    `json:"anomalies"`
	Examples      []string `json:"examples,omitempty"`
	ProxyCrashes  []string `json:"proxy_crashes,omitempty"`
	LogFile       string   `json:"log_file"`
	Note          string   `json:"note"`

	// Connection drops between eosproxy and the backend.
	Drops      int64            `json:"drops"`
	DropsByKey map[string]int64 `json:"drops_by_api_key,omitempty"`

	// Backend answers that are errors although the write happened.
	BackendErrors       int64            `json:"backend_errors"`
	BackendErrorsByKind map[string]int64 `json:"backend_errors_by_kind,omitempty"`

	// Broker restarts (stop, start on the same data) of the real backend,
	// and the longest one, seconds.
	BrokerRestarts       int     `json:"broker_restarts"`
	BrokerRestartSeconds float64 `json:"broker_restart_max_seconds,omitempty"`

	// Transactional copiers (present when copiers > 0).
	Copy *CopyReport `json:"copy,omitempty"`

	// Kafka's TransactionalMessageCopier (present when java copiers > 0).
	JavaCopy *JavaCopyReport `json:"java_copy,omitempty"`

	// ProxyLog counts eosproxy's warnings and errors and the log lines
	// that show it resolving an unknown outcome, by message.
	ProxyLog map[string]int `json:"proxy_log,omitempty"`

	// Of the Kills restarts of eosproxy: stopped with SIGTERM (clean), and
	// timed to a copier's commit (of them with SIGTERM). CleanStopErrors
	// are clean stops that did not end with exit status 0.
	// Unanswered are the producers' Produce calls still unanswered
	// CopyTimeout+1 min after the fault schedule (a wedged producer), then
	// aborted: anomalies.
	Unanswered          int64    `json:"unanswered"`
	CleanRestarts       int      `json:"sigterm_restarts"`
	CommitKills         int      `json:"restarts_at_commit"`
	CommitKillsClean    int      `json:"restarts_at_commit_sigterm"`
	CleanStopErrors     []string `json:"clean_stop_errors,omitempty"`
	DeleteRecordsEvents int      `json:"delete_records"` // DeleteRecords on the input while the producers idled
	DeletedRecords      int64    `json:"deleted_records"`
	RetentionEvents     int      `json:"retention_deletes"` // short retention on the input while the producers idled
	RetentionDeleted    int64    `json:"retention_deleted_records"`
	ReplicationFactor   int      `json:"replication_factor"`
	BrokerPauses        int      `json:"broker_pauses"`
	BrokerPauseSeconds  float64  `json:"broker_pause_seconds,omitempty"`
}

// CopyReport is the transactional copiers' part of the report.
type CopyReport struct {
	Copiers      int     `json:"copiers"`
	Readers      int     `json:"readers"`
	OutputTopic  string  `json:"output_topic"`
	Group        string  `json:"group"`
	AbortRate    float64 `json:"abort_rate"`
	Transactions int64   `json:"transactions"`
	Commits      int64   `json:"commits"`
	Aborts       int64   `json:"aborts"`        // End(TryAbort), on purpose
	ForcedAborts int64   `json:"forced_aborts"` // End(TryCommit) that aborted (rebalance)
	Unknown      int64   `json:"unknown"`       // End failed: outcome unknown
	Crashed      int64   `json:"restarts_closed"`
	Zombies      int64   `json:"restarts_zombie"`
	Incarnations int64   `json:"incarnations"`
	Copied       int64   `json:"copied"` // input records in committed transactions
	InputTotal   int64   `json:"input_records"`
	OutputTotal  int64   `json:"output_records"`
	ReaderReads  int64   `json:"reader_records"`
	CopySeconds  float64 `json:"copy_seconds"` // from the end of the fault schedule until the group's offsets reached the input's end

	Lost             int64 `json:"lost"`                 // input records never in the output
	Duplicates       int64 `json:"duplicates"`           // input records copied more than once (committed copies)
	DuplicateExtra   int64 `json:"duplicate_extra"`      // extra copies beyond the first
	AbortedReads     int64 `json:"aborted_reads"`        // output records of aborted (or fenced) transactions
	UncommittedReads int64 `json:"uncommitted_reads"`    // read by a reader before the copier asked to commit (or of a transaction never ended)
	ReaderAborted    int64 `json:"reader_aborted_reads"` // of those aborted reads, records also seen by the concurrent readers
	CommitMissing    int64 `json:"committed_missing"`    // records of committed transactions not in the output
	Unexpected       int64 `json:"unexpected"`           // output records no attempt wrote, or of no input record
	ReaderMismatches int64 `json:"reader_mismatches"`    // a reader's view differs from the backend (skipped, changed or extra records)
	OffsetMismatches int64 `json:"offset_mismatches"`    // partitions whose group offset is not the input's end offset
	ZombieCommits    int64 `json:"zombie_commits"`       // a fenced copier's commit that succeeded
	OutputIsInput    bool  `json:"output_equals_input"`  // the output's input ids are the input's, once each

	ClientErrors []string `json:"client_errors,omitempty"`

	// GroupProtocol is the protocol the copiers asked for; GroupType the
	// type the backend gives their group.
	GroupProtocol string `json:"group_protocol"`
	GroupType     string `json:"group_type"`
	// Stalls past the session timeout, and what became of the stalled
	// copiers' stale offset commits.
	Stalls *StallReport `json:"stalls,omitempty"`
	// CommitRestarts: copiers replaced right after a commit.
	CommitRestarts int64 `json:"restarts_after_commit"`
	// InitReads: new instances' reads of the output right after
	// InitProducerId.
	InitReads *InitReadReport `json:"init_reads,omitempty"`
}

func (c *CopyReport) anomalies() int64 {
	n := c.Lost + c.Duplicates + c.AbortedReads + c.UncommittedReads + c.CommitMissing +
		c.Unexpected + c.ReaderMismatches + c.OffsetMismatches + c.ZombieCommits
	if c.Stalls != nil {
		n += c.Stalls.Accepted
	}
	if c.InitReads != nil {
		n += c.InitReads.Missing
	}
	return n
}

// Valid reports whether the run found no anomaly.
func (r *Report) Valid() bool { return r.Anomalies == 0 }

func (c *Config) defaults() {
	if c.Producers <= 0 {
		c.Producers = 4
	}
	if c.Partitions <= 0 {
		c.Partitions = 6
	}
	if c.Records <= 0 {
		c.Records = 200_000
	}
	if c.Kills < 0 {
		c.Kills = 0
	}
	if c.Seed == 0 {
		c.Seed = uint64(time.Now().UnixNano())
	}
	if c.Progress == nil {
		c.Progress = io.Discard
	}
	if c.Copiers < 0 {
		c.Copiers = 0
	}
	if c.Copiers > 0 && c.Readers == 0 {
		c.Readers = 1
	}
	if c.Readers < 0 {
		c.Readers = 0
	}
	if c.CopyTimeout <= 0 {
		c.CopyTimeout = 2 * time.Minute
	}
	if c.ProxyLogLevel == "" {
		c.ProxyLogLevel = "info"
		if c.JavaCopiers > 0 {
			// The Java copiers' commits and aborts are counted from
			// eosproxy's coordinator, which logs them at debug level:
			// the tool itself does not say when it aborts.
			c.ProxyLogLevel = "debug"
		}
	}
	if c.JavaCopiers < 0 {
		c.JavaCopiers = 0
	}
	if c.JavaKills <= 0 && c.Kills > 0 {
		c.JavaKills = max(2, c.Kills/2)
	}
	if c.Drops && c.DropRate <= 0 {
		c.DropRate = 0.02
	}
	if c.BackendErrors && c.BackendErrorRate <= 0 {
		c.BackendErrorRate = 0.03
	}
	if c.GroupProtocol == "" {
		c.GroupProtocol = "classic"
	}
	if c.ReplicationFactor <= 0 {
		c.ReplicationFactor = 1
	}
	if c.BrokerPause <= 0 {
		c.BrokerPause = 8 * time.Second
	}
}

// producer is one idempotent producer's bookkeeping.
type producer struct {
	closeOnce sync.Once
	cl        *kgo.Client
	sent      atomic.Int64  // values 0..sent-1 were handed to Produce
	acked     []atomic.Bool // by seq
}

// close closes the producer's client (once): what it still buffers fails.
func (p *producer) close() { p.closeOnce.Do(p.cl.Close) }

// Run runs one check. An error means the check could not be carried out
// (the report may be partial); anomalies are in the report.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	cfg.defaults()
	rng := rand.New(rand.NewPCG(cfg.Seed, cfg.Seed>>1|1))
	rep := &Report{Seed: cfg.Seed, Producers: cfg.Producers, Partitions: cfg.Partitions,
		Note: "idempotent producers, SIGKILLs of eosproxy"}
	if cfg.Copiers > 0 {
		rep.Note += fmt.Sprintf(", %d transactional copiers (abort rate %g, %d mid-transaction replacements), %d read_committed readers",
			cfg.Copiers, cfg.AbortRate, cfg.CopierRestarts, cfg.Readers)
	}
	if cfg.Drops {
		rep.Note += fmt.Sprintf(", backend connections dropped after requests (rate %g)", cfg.DropRate)
	}
	if cfg.BackendErrors {
		rep.Note += fmt.Sprintf(", backend errors answered after applying Produce/OffsetCommit (rate %g)", cfg.BackendErrorRate)
	}
	if cfg.RestartBroker > 0 {
		rep.Note += fmt.Sprintf(", %d restarts of the backend broker on its data", cfg.RestartBroker)
	}
	if cfg.JavaCopiers > 0 {
		rep.Note += fmt.Sprintf(", %d Java TransactionalMessageCopiers (random aborts, up to %d SIGKILLs while they run, %d of their JVMs SIGKILLed)", cfg.JavaCopiers, cfg.JavaKills, cfg.JavaCrashes)
	}
	if cfg.Copiers > 0 && cfg.GroupProtocol != "classic" {
		rep.Note += fmt.Sprintf(", copiers in a %s-protocol group", cfg.GroupProtocol)
	}
	if cfg.Stalls > 0 {
		rep.Note += fmt.Sprintf(", %d copier stalls past the session timeout", cfg.Stalls)
	}
	if cfg.CleanRestarts > 0 || cfg.CommitKills > 0 {
		rep.Note += fmt.Sprintf(", %d SIGTERM restarts and %d restarts at a commit", cfg.CleanRestarts, cfg.CommitKills)
	}
	if cfg.CommitRestarts > 0 || cfg.InitReads {
		rep.Note += fmt.Sprintf(", %d copier replacements right after a commit, output read after InitProducerId", cfg.CommitRestarts)
	}
	if cfg.DeleteRecords > 0 {
		rep.Note += fmt.Sprintf(", %d DeleteRecords on the input while the producers idle", cfg.DeleteRecords)
	}
	if cfg.RetentionDeletes > 0 {
		rep.Note += fmt.Sprintf(", %d short retentions of the input while the producers idle", cfg.RetentionDeletes)
	}
	if cfg.ReplicationFactor > 1 || cfg.BrokerPauses > 0 {
		rep.Note += fmt.Sprintf(", replication factor %d, %d broker pauses", cfg.ReplicationFactor, cfg.BrokerPauses)
	}
	rep.ReplicationFactor = cfg.ReplicationFactor
	start := time.Now()
	out := cfg.Progress

	if cfg.Drops && cfg.Upstream != "" {
		return rep, errors.New("--drops needs the in-process kfake backend: a real broker advertises its own addresses, so a relay in front of its bootstrap would see only eosproxy's first connection")
	}
	if cfg.BackendErrors && cfg.Upstream != "" {
		return rep, errors.New("--backend-errors needs the in-process kfake backend: the errors are kfake faults")
	}
	if cfg.RestartBroker > 0 && (cfg.Upstream == "" || cfg.BrokerRestartCmd == "") {
		return rep, errors.New("--restart-broker needs --upstream and a broker restart command")
	}
	if cfg.BrokerPauses > 0 && (cfg.Upstream == "" || cfg.BrokerPauseCmd == "" || cfg.BrokerResumeCmd == "") {
		return rep, errors.New("--pause-broker needs --upstream and broker pause and resume commands")
	}
	if cfg.Stalls > 0 && cfg.Copiers < 2 {
		return rep, errors.New("--stalls needs at least two copiers: the group must move the stalled copier's partitions to another")
	}
	if cfg.GroupProtocol != "classic" && cfg.GroupProtocol != "consumer" {
		return rep, fmt.Errorf("--group-protocol %q: classic or consumer", cfg.GroupProtocol)
	}
	if cfg.JavaCopiers > 0 {
		switch {
		case cfg.Upstream == "":
			return rep, errors.New("--java-copiers needs --upstream: the Java copiers belong to the real-broker tier")
		case cfg.KafkaSh == "":
			return rep, errors.New("--java-copiers needs kafka.sh (integration/kafka/kafka.sh) to run Java")
		case cfg.JavaCopiers > cfg.Partitions:
			return rep, fmt.Errorf("--java-copiers %d: each copies one partition, the topic has %d", cfg.JavaCopiers, cfg.Partitions)
		}
	}

	work := cfg.WorkDir
	if work == "" {
		d, err := os.MkdirTemp("", "eoscheck-")
		if err != nil {
			return rep, err
		}
		work = d
	}
	dataDir := filepath.Join(work, "data")
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return rep, err
	}
	logPath := cfg.LogFile
	if logPath == "" {
		logPath = filepath.Join(work, "eosproxy.log")
	}
	rep.LogFile = logPath
	logFile, err := os.Create(logPath)
	if err != nil {
		return rep, err
	}
	defer logFile.Close()
	traceFile, err := os.Create(filepath.Join(work, "trace.log"))
	if err != nil {
		return rep, err
	}
	defer traceFile.Close()
	trace := newTracer(traceFile, start)
	defer trace.flush()

	// Backend.
	var backend []string
	var drops *dropper
	var fake *kfake.Cluster
	if cfg.Upstream != "" {
		backend = strings.Split(cfg.Upstream, ",")
		rep.Backend = cfg.Upstream
	} else {
		opts := []kfake.Opt{kfake.NumBrokers(3)}
		if cfg.RetentionDeletes > 0 {
			// kfake applies retention every log.cleaner.backoff.ms (1 h
			// by default).
			opts = append(opts, kfake.BrokerConfigs(map[string]string{"log.cleaner.backoff.ms": "100"}))
		}
		if cfg.Stalls > 0 && cfg.GroupProtocol == "consumer" {
			// A stalled member is removed after the group's session
			// timeout (45 s by default).
			opts = append(opts, kfake.BrokerConfigs(map[string]string{
				"group.consumer.session.timeout.ms":    "6000",
				"group.consumer.heartbeat.interval.ms": "1000",
			}))
		}
		kind := "kfake (with idempotence: commits forwarded under eosproxy's producer id)"
		if !cfg.BackendIdempotence {
			opts = append(opts, kfake.MaxVersions(faults.NoEOSVersions()))
			kind = "kfake (no EOS API keys)"
		}
		if cfg.Drops {
			drops = newDropper(cfg.Seed, cfg.DropRate)
			defer drops.close()
			opts = append(opts, kfake.ListenFn(drops.listen))
		}
		if fake, err = kfake.NewCluster(opts...); err != nil {
			return rep, err
		}
		defer fake.Close()
		if cfg.Copiers > 0 {
			trace.watchGroup(fake, fmt.Sprintf("eoscheck-%d-copiers", cfg.Seed))
		}
		backend = fake.ListenAddrs()
		rep.Backend = kind + ": " + strings.Join(backend, ",")
		if drops != nil {
			rep.Backend = kind + " behind dropping relays: " + strings.Join(backend, ",")
		}
		if cfg.BackendErrors {
			rep.Backend += ", answering errors after writes"
		}
	}
	direct, err := kgo.NewClient(kgo.SeedBrokers(backend...))
	if err != nil {
		return rep, err
	}
	defer direct.Close()
	adm := kadm.NewClient(direct)
	brokers, err := adm.ListBrokers(ctx)
	if err != nil {
		return rep, fmt.Errorf("backend metadata: %w", err)
	}
	rep.Topic = fmt.Sprintf("eoscheck-%d", cfg.Seed)
	var inputConfigs map[string]*string
	if cfg.RetentionDeletes > 0 {
		// Short segments, so that retention can delete part of the input.
		inputConfigs = map[string]*string{"segment.ms": kmsg.StringPtr(retentionSegmentMs)}
	}
	if _, err := adm.CreateTopic(ctx, int32(cfg.Partitions), int16(cfg.ReplicationFactor), inputConfigs, rep.Topic); err != nil {
		return rep, fmt.Errorf("create topic: %w", err)
	}
	if cfg.Copiers > 0 {
		rep.Copy = &CopyReport{Copiers: cfg.Copiers, Readers: cfg.Readers, AbortRate: cfg.AbortRate,
			OutputTopic: rep.Topic + "-out", Group: fmt.Sprintf("eoscheck-%d-copiers", cfg.Seed)}
		rep.Copy.GroupProtocol = cfg.GroupProtocol
		if cfg.Stalls > 0 {
			rep.Copy.Stalls = &StallReport{}
		}
		if cfg.CommitRestarts > 0 || cfg.InitReads {
			rep.Copy.InitReads = &InitReadReport{}
		}
		if _, err := adm.CreateTopic(ctx, int32(cfg.Partitions), int16(cfg.ReplicationFactor), nil, rep.Copy.OutputTopic); err != nil {
			return rep, fmt.Errorf("create output topic: %w", err)
		}
	}
	if cfg.JavaCopiers > 0 {
		// The tool writes each record to the partition it read it from.
		rep.JavaCopy = &JavaCopyReport{Copiers: cfg.JavaCopiers, OutputTopic: rep.Topic + "-java-out", TransactionSize: javaTxnSize}
		if _, err := adm.CreateTopic(ctx, int32(cfg.Partitions), int16(cfg.ReplicationFactor), nil, rep.JavaCopy.OutputTopic); err != nil {
			return rep, fmt.Errorf("create java output topic: %w", err)
		}
	}
	var berrs *backendErrors
	if cfg.BackendErrors {
		berrs = newBackendErrors(cfg.Seed, cfg.BackendErrorRate, trace)
		topics := []string{rep.Topic}
		if rep.Copy != nil {
			topics = append(topics, rep.Copy.OutputTopic)
		}
		details, err := adm.ListTopics(ctx, topics...)
		if err != nil {
			return rep, fmt.Errorf("backend topics: %w", err)
		}
		ids := map[[16]byte]string{}
		for _, d := range details {
			ids[d.ID] = d.Topic
		}
		berrs.install(fake, topics, rep.Topic, ids)
	}

	// eosproxy.
	bin := cfg.ProxyBin
	if bin == "" {
		if bin, err = buildProxy(work); err != nil {
			return rep, err
		}
	}
	base, err := faults.FreePortRange(rng, 1+len(brokers))
	if err != nil {
		return rep, err
	}
	pp := &proxyProc{bin: bin, logs: newProxyLogs(logFile), args: []string{
		"--log-format", "json", "--log-level", cfg.ProxyLogLevel,
		"--listen", net.JoinHostPort("127.0.0.1", strconv.Itoa(base)),
		"--broker-ports", fmt.Sprintf("%d-%d", base+1, base+len(brokers)),
		"--upstream", strings.Join(backend, ","),
		"--data-dir", dataDir,
	}}
	pp.args = append(pp.args, cfg.ProxyArgs...)
	defer pp.stop()
	bootstrap, err := pp.start()
	if err != nil {
		return rep, err
	}
	fmt.Fprintf(out, "eoscheck: seed %d, backend %s, eosproxy %s (logs %s), topic %s\n", cfg.Seed, rep.Backend, bootstrap, logPath, rep.Topic)

	// While the broker restarts, eosproxy closes its clients' connections
	// right after they connect (upstream unreachable); franz-go takes an
	// EOF before the first response for a misconfiguration (TLS, SASL) and
	// fails the request unless told that the configuration is right.
	var clientOpts []kgo.Opt
	if cfg.RestartBroker > 0 {
		clientOpts = append(clientOpts, kgo.AlwaysRetryEOF())
	}

	// Producers.
	perProducer := (cfg.Records + cfg.Producers - 1) / cfg.Producers
	prods := make([]*producer, cfg.Producers)
	for i := range prods {
		cl, err := kgo.NewClient(append(clientOpts, kgo.SeedBrokers(bootstrap), kgo.DefaultProduceTopic(rep.Topic),
			kgo.RecordRetries(1<<30), kgo.RequestRetries(1<<30),
			kgo.RetryBackoffFn(func(n int) time.Duration { return min(time.Duration(n)*10*time.Millisecond, 200*time.Millisecond) }),
			kgo.RecordDeliveryTimeout(2*time.Minute),
			// Reconnect soon after a kill: the default waits up to 5 s
			// between metadata refreshes.
			kgo.MetadataMinAge(100*time.Millisecond),
			kgo.ProducerBatchMaxBytes(16<<10),
			kgo.MaxBufferedRecords(20_000))...)
		if err != nil {
			return rep, err
		}
		prods[i] = &producer{cl: cl, acked: make([]atomic.Bool, perProducer)}
		defer prods[i].close()
	}

	// Copiers and the readers of their output.
	var cw *copyWork
	var readers []*reader
	readCtx, stopReaders := context.WithCancel(ctx)
	defer stopReaders()
	tlog := &txnLog{start: start}
	if cfg.Copiers > 0 {
		var kgoLog io.Writer
		if cfg.ClientLog {
			f, err := os.Create(filepath.Join(work, "copiers-kgo.log"))
			if err != nil {
				return rep, err
			}
			defer f.Close()
			kgoLog = &syncWriter{w: f}
		}
		cw = &copyWork{clientOpts: clientOpts, kgoLog: kgoLog, seed: cfg.Seed, bootstrap: bootstrap, in: rep.Topic, out: rep.Copy.OutputTopic,
			group: rep.Copy.Group, abortRate: cfg.AbortRate, log: tlog, trace: trace,
			adm: adm, consumerProtocol: cfg.GroupProtocol == "consumer", initReadAll: cfg.InitReads,
			commitHook: make(chan struct{}, 1), kfakeGroup: fake != nil, backend: direct}
		if cfg.Stalls > 0 {
			// Short enough that a stall is a few seconds, long enough
			// for the group.min.session.timeout.ms of Kafka and kfake
			// (6 s); the transactions must outlive a stall.
			cw.sessionTimeout, cw.txnTimeout = 6*time.Second, 90*time.Second
			if cfg.GroupProtocol == "consumer" && cfg.Upstream != "" {
				if err := setGroupSessionTimeout(ctx, direct, rep.Copy.Group); err != nil {
					fmt.Fprintf(out, "copiers' group: could not lower its session timeout (stalls then last 45 s): %v\n", err)
				}
			}
		}
		if err := cw.start(ctx, cfg.Copiers); err != nil {
			return rep, fmt.Errorf("copiers: %w", err)
		}
		defer cw.finish() // idempotent: also on an early return
		for i := range cfg.Readers {
			r, err := newReader(i, bootstrap, rep.Copy.OutputTopic, cfg.Partitions, tlog, clientOpts...)
			if err != nil {
				return rep, err
			}
			defer r.cl.Close()
			readers = append(readers, r)
			go r.run(readCtx)
		}
	}
	if drops != nil {
		drops.setEnabled(true)
	}
	if berrs != nil {
		berrs.setEnabled(true)
	}

	rate := cfg.Rate
	if rate <= 0 {
		span := cfg.Duration
		if span <= 0 {
			every := cfg.KillEvery
			if every <= 0 {
				every = 900 * time.Millisecond
			}
			span = time.Duration(max(cfg.Kills, 1)) * (every + 150*time.Millisecond)
			// Keep producing across the broker restarts (each ~10-30 s).
			span += time.Duration(cfg.RestartBroker) * 15 * time.Second
		}
		rate = max(1000, int(float64(cfg.Records)/span.Seconds()))
	}

	// idle, write-locked, holds the producers between ticks while the
	// input's records are deleted; inflight counts Produce calls not yet
	// answered.
	var idle sync.RWMutex
	var inflight atomic.Int64
	var acked, failed, sent atomic.Int64
	var firstErr atomic.Pointer[string]
	var wg sync.WaitGroup // outstanding Produce callbacks
	var prodWG sync.WaitGroup
	// prodCtx ends the producers early when they are wedged (Produce
	// blocks once their buffers are full).
	prodCtx, stopProducers := context.WithCancel(ctx)
	defer stopProducers()
	for i, p := range prods {
		prodWG.Add(1)
		go func() {
			defer prodWG.Done()
			tick := time.NewTicker(10 * time.Millisecond)
			defer tick.Stop()
			perTick := max(1, rate/cfg.Producers/100)
			t0 := time.Now()
			for seq := 0; seq < perProducer && int(sent.Load()) < cfg.Records; {
				idle.RLock()
				// Catch up to the rate: records due by now.
				due := min(perProducer, int(time.Since(t0).Seconds()*float64(rate)/float64(cfg.Producers))+perTick)
				for ; seq < due && int(sent.Add(1)) <= cfg.Records; seq++ {
					s := seq
					wg.Add(1)
					inflight.Add(1)
					p.sent.Store(int64(s + 1))
					p.cl.Produce(prodCtx, &kgo.Record{
						Key:   []byte(strconv.Itoa(s % 64)),
						Value: []byte(strconv.Itoa(i) + "-" + strconv.Itoa(s)),
					}, func(_ *kgo.Record, err error) {
						defer wg.Done()
						defer inflight.Add(-1)
						if err != nil {
							failed.Add(1)
							msg := err.Error()
							firstErr.CompareAndSwap(nil, &msg)
							return
						}
						p.acked[s].Store(true)
						acked.Add(1)
					})
				}
				idle.RUnlock()
				select {
				case <-tick.C:
				case <-prodCtx.Done():
					return
				}
			}
		}()
	}
	producing := make(chan struct{})
	go func() { prodWG.Wait(); close(producing) }()
	// The Java copiers are told how many records to copy, so they start
	// once every Produce was answered: the input is then final.
	var inputDone chan struct{}
	if cfg.JavaCopiers > 0 {
		inputDone = make(chan struct{})
		go func() { prodWG.Wait(); wg.Wait(); close(inputDone) }()
	}
	var jw *javaWork
	var javaDone chan struct{}
	javaKills := 0 // SIGKILLs while a Java copier was in its copy loop
	defer func() {
		if jw != nil {
			jw.stop()
		}
	}()
	startJava := func() error {
		ends, err := adm.ListEndOffsets(ctx, rep.Topic)
		if err != nil {
			return fmt.Errorf("java copiers: input end offsets: %w", err)
		}
		// Short retention may have deleted the start of their partitions.
		starts, err := adm.ListStartOffsets(ctx, rep.Topic)
		if err != nil {
			return fmt.Errorf("java copiers: input start offsets: %w", err)
		}
		byPart := map[int32]int64{}
		ends.Each(func(e kadm.ListedOffset) { byPart[e.Partition] = e.Offset })
		startOf := map[int32]int64{}
		starts.Each(func(o kadm.ListedOffset) { startOf[o.Partition] = o.Offset })
		jw = newJavaWork(cfg.KafkaSh, bootstrap, rep.Topic, rep.JavaCopy.OutputTopic, work, cfg.Seed, startOf, byPart, cfg.JavaCopiers, cfg.JavaCrashes, trace)
		jw.start(ctx)
		javaDone = jw.done
		trace.printf("java copiers started on partitions 0-%d (%v records)", cfg.JavaCopiers-1, byPart)
		fmt.Fprintf(out, "java copiers: %d TransactionalMessageCopiers started (logs %s)\n", cfg.JavaCopiers, filepath.Join(work, "java-copier-*.log"))
		return nil
	}
	// javaOver: the Java copiers have run (or there are none) and the
	// schedule need not kill eosproxy under them any longer.
	javaOver := func() bool {
		if cfg.JavaCopiers == 0 {
			return true
		}
		return jw != nil && (jw.ended.Load() > 0 || javaKills >= cfg.JavaKills)
	}

	// Progress.
	kills := 0
	var killsA atomic.Int64
	var brokerRestartsA atomic.Int64
	var brokerDown atomic.Bool
	var javaA atomic.Pointer[javaWork]
	progDone := make(chan struct{})
	var progWG sync.WaitGroup
	progWG.Add(1)
	go func() {
		defer progWG.Done()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				line := fmt.Sprintf("[%5.1fs] sent %d  acked %d  failed %d  kills %d  restarts %d",
					time.Since(start).Seconds(), min(sent.Load(), int64(cfg.Records)), acked.Load(), failed.Load(), killsA.Load(), killsA.Load())
				if cw != nil {
					var read int64
					for _, r := range readers {
						read += r.records.Load()
					}
					line += fmt.Sprintf("  | copied %d  commits %d  aborts %d+%d forced  unknown %d  replaced %d  read %d",
						tlog.copied.Load(), tlog.commits.Load(), tlog.aborts.Load(), tlog.forced.Load(), tlog.unknown.Load(),
						cw.restartsCrash.Load()+cw.restartsZombie.Load(), read)
				}
				if drops != nil {
					line += fmt.Sprintf("  | drops %d", drops.drops())
				}
				if berrs != nil {
					line += fmt.Sprintf("  | backend errors %d", berrs.total())
				}
				if j := javaA.Load(); j != nil {
					got, want := j.copied()
					line += fmt.Sprintf("  | java copied %d/%d  runs %d", got, want, j.runs())
					if j.ended.Load() > 0 {
						line += " (done)"
					}
				}
				if cfg.RestartBroker > 0 {
					line += fmt.Sprintf("  | broker restarts %d", brokerRestartsA.Load())
					if brokerDown.Load() {
						line += " (broker down)"
					}
				}
				fmt.Fprintln(out, line)
			case <-progDone:
				return
			}
		}
	}()
	progStopped := false
	stopProgress := func() {
		if !progStopped {
			progStopped = true
			close(progDone)
			progWG.Wait()
		}
	}
	defer stopProgress()

	// Fault schedule: SIGKILL and restart at once on the same data dir and
	// ports, until the records are sent, the duration is over and at least
	// Kills kills were done, and, with Java copiers, until they are done or
	// JavaKills kills hit them while they copied. Copier replacements and
	// broker restarts are spread over the first Kills kills (broker restart
	// j of RestartBroker before kill ceil(j*Kills/(RestartBroker+1)));
	// eosproxy stays up while the broker is down. Stalls, replacements
	// after a commit, DeleteRecords and broker pauses are spread the same
	// way; restarts timed to a commit are armed while fewer than their
	// share of the kills so far were, and the next commit a copier asks
	// for then triggers the restart; the clean (SIGTERM) restarts are
	// spread over the others.
	var runErr error
	deadline := time.After(cfg.Duration)
	durationOver := cfg.Duration <= 0
	producersDone := false
	restartsAsked, stallsAsked, commitRestartsAsked := 0, 0, 0
	timerClean := 0 // SIGTERM restarts not timed to a commit
	var deleted deletedInput
	deleteAttempts := 0 // some delete nothing (copiers not yet committed) or are skipped
	retentionAttempts := 0
	idleFaults := &idleFault{idle: &idle, inflight: &inflight, deleted: &deleted, backend: backend, direct: direct,
		adm: adm, rep: rep, cfg: cfg, trace: trace, out: out}
	// A broker pause runs on its own, so that the pause lasts what it
	// should whatever the schedule waits for meanwhile.
	var pausing atomic.Bool
	var pauseWG sync.WaitGroup
	var pauseErr atomic.Pointer[string]
	pauseLog := filepath.Join(work, "broker-pauses.log")
	pauseBroker := func(n int) {
		pausing.Store(true)
		pauseWG.Add(1)
		go func() {
			defer pauseWG.Done()
			defer pausing.Store(false)
			if err := runCmd(ctx, cfg.BrokerPauseCmd, pauseLog); err != nil {
				msg := fmt.Sprintf("broker pause %d: %v", n, err)
				pauseErr.CompareAndSwap(nil, &msg)
				return
			}
			trace.printf("broker pause %d: paused for %v", n, cfg.BrokerPause)
			fmt.Fprintf(out, "broker pause %d: %s for %v\n", n, cfg.BrokerPauseCmd, cfg.BrokerPause)
			select {
			case <-time.After(cfg.BrokerPause):
			case <-ctx.Done():
			}
			// Resumed even when the run is cancelled: a broker left
			// stopped would hang every later user of it.
			if err := runCmd(context.Background(), cfg.BrokerResumeCmd, pauseLog); err != nil {
				msg := fmt.Sprintf("broker pause %d: resume: %v", n, err)
				pauseErr.CompareAndSwap(nil, &msg)
				return
			}
			trace.printf("broker pause %d: resumed", n)
			fmt.Fprintf(out, "broker pause %d: resumed\n", n)
		}()
	}
	defer pauseWG.Wait()
	soon := false // the next restart follows at once (after DeleteRecords)
	// A wedged producer never gets all its records answered: the schedule
	// waits for the producers to finish (and, with Java copiers, for every
	// Produce to be answered: they start only then) at most flushTimeout
	// after the rest of it is over.
	flushTimeout := max(cfg.CopyTimeout, time.Minute) + time.Minute
	var restOver time.Time
	producersStuck := false
	for runErr == nil && (!producersDone || !durationOver || kills < cfg.Kills || !javaOver()) {
		waitingForInput := !producersDone || (cfg.JavaCopiers > 0 && jw == nil)
		if waitingForInput && durationOver && kills >= cfg.Kills {
			if restOver.IsZero() {
				restOver = time.Now()
			} else if time.Since(restOver) > flushTimeout {
				producersStuck = true
				break
			}
		}
		interval := cfg.KillEvery
		if interval <= 0 {
			interval = 300*time.Millisecond + time.Duration(rng.Int64N(int64(1200*time.Millisecond)))
		}
		if soon {
			interval = 100*time.Millisecond + time.Duration(rng.Int64N(int64(300*time.Millisecond)))
			soon = false
		}
		var hook chan struct{}
		if cw != nil && rep.CommitKills < cfg.CommitKills && rep.CommitKills*max(cfg.Kills, 1) <= kills*cfg.CommitKills {
			hook = cw.commitHook
			cw.commitHookArmed.Store(true)
		}
		atCommit := false
		timer := time.NewTimer(interval)
	wait:
		for {
			select {
			case <-timer.C:
				break wait
			case <-hook:
				// The offsets of the commit are about to go out, or
				// on their way: restart eosproxy a moment later.
				atCommit = true
				time.Sleep(time.Duration(rng.Int64N(int64(30 * time.Millisecond))))
				break wait
			case <-producing:
				producing = nil
				producersDone = true
			case <-deadline:
				deadline = nil
				durationOver = true
			case <-inputDone:
				inputDone = nil
				if err := startJava(); err != nil {
					runErr = err
					break wait
				}
				javaA.Store(jw)
			case <-javaDone:
				javaDone = nil
			case <-ctx.Done():
				runErr = ctx.Err()
				break wait
			}
		}
		timer.Stop()
		if runErr != nil {
			break
		}
		if producersDone && durationOver && kills >= cfg.Kills && javaOver() {
			break
		}
		// Not while a broker is paused (the restart may stop the paused
		// one, whose resume would then fail).
		for !pausing.Load() && rep.BrokerRestarts < cfg.RestartBroker && (rep.BrokerRestarts+1)*max(cfg.Kills, 1) <= (kills+1)*(cfg.RestartBroker+1) {
			n := rep.BrokerRestarts + 1
			trace.printf("broker restart %d: stopping the broker", n)
			brokerDown.Store(true)
			fmt.Fprintf(out, "broker restart %d: %s\n", n, cfg.BrokerRestartCmd)
			d, err := restartBroker(ctx, cfg.BrokerRestartCmd, filepath.Join(work, "broker-restarts.log"))
			brokerDown.Store(false)
			if err != nil {
				trace.printf("broker restart %d failed after %v: %v", n, d.Round(time.Millisecond), err)
				runErr = fmt.Errorf("broker restart %d: %w", n, err)
				break
			}
			rep.BrokerRestarts = n
			rep.BrokerRestartSeconds = max(rep.BrokerRestartSeconds, d.Seconds())
			brokerRestartsA.Store(int64(n))
			trace.printf("broker restart %d: broker serves metadata again after %v", n, d.Round(time.Millisecond))
			fmt.Fprintf(out, "broker restart %d: back after %v\n", n, d.Round(time.Millisecond))
		}
		if runErr != nil {
			break
		}
		if cw != nil && !atCommit {
			cw.commitHookArmed.Store(false)
		}
		if p := pauseErr.Load(); p != nil {
			runErr = errors.New(*p)
			break
		}
		if !pausing.Load() && rep.BrokerPauses < cfg.BrokerPauses && (rep.BrokerPauses+1)*max(cfg.Kills, 1) <= (kills+1)*(cfg.BrokerPauses+1) {
			rep.BrokerPauses++
			rep.BrokerPauseSeconds += cfg.BrokerPause.Seconds()
			pauseBroker(rep.BrokerPauses)
		}
		// Not while a broker is paused: the producers' Produce calls to
		// its partitions would keep them idle for the whole pause.
		if !producersDone && !pausing.Load() && deleteAttempts < cfg.DeleteRecords && (deleteAttempts+1)*max(cfg.Kills, 1) <= (kills+1)*(cfg.DeleteRecords+1) {
			deleteAttempts++
			if err := deleteWhileIdle(ctx, &idle, &inflight, &deleted, backend, adm, rep, cfg, trace, out); err != nil {
				runErr = err
				break
			}
			soon = true
		}
		// A kill later than DeleteRecords' with as many of each.
		if !producersDone && !pausing.Load() && retentionAttempts < cfg.RetentionDeletes && (retentionAttempts+1)*max(cfg.Kills, 1) < kills*(cfg.RetentionDeletes+1) {
			retentionAttempts++
			if err := retentionWhileIdle(ctx, idleFaults); err != nil {
				runErr = err
				break
			}
			soon = true
		}
		clean := false
		if atCommit {
			rep.CommitKills++
			clean = rep.CommitKills%2 == 1
			if clean {
				rep.CommitKillsClean++
			}
		} else if timerClean < cfg.CleanRestarts && timerClean*max(cfg.Kills, 1) <= kills*cfg.CleanRestarts {
			timerClean++
			clean = true
		}
		if clean {
			unclean, err := pp.term()
			if err != nil {
				runErr = err
				break
			}
			rep.CleanRestarts++
			if unclean != "" {
				rep.CleanStopErrors = append(rep.CleanStopErrors, unclean)
				trace.printf("%s", unclean)
			}
		} else if err := pp.kill(); err != nil {
			runErr = err
			break
		}
		kills++
		killsA.Store(int64(kills))
		if jw != nil && jw.copying() {
			javaKills++
		}
		how := "SIGKILLed"
		if clean {
			how = "stopped with SIGTERM"
		}
		if atCommit {
			how += " as a copier committed"
		}
		trace.printf("eosproxy %s (kill %d)", how, kills)
		if _, err := pp.start(); err != nil {
			runErr = err
			break
		}
		if cw != nil {
			for restartsAsked < cfg.CopierRestarts && restartsAsked*max(cfg.Kills, 1) < kills*cfg.CopierRestarts {
				cw.requestRestart(restartsAsked % cfg.Copiers)
				restartsAsked++
			}
			for stallsAsked < cfg.Stalls && stallsAsked*max(cfg.Kills, 1) < kills*cfg.Stalls {
				cw.requestStall(stallsAsked % cfg.Copiers)
				stallsAsked++
			}
			for commitRestartsAsked < cfg.CommitRestarts && commitRestartsAsked*max(cfg.Kills, 1) < kills*cfg.CommitRestarts {
				// The other slot than the stalls and mid-transaction
				// replacements of the same kill.
				cw.requestCommitRestart((commitRestartsAsked + 1) % cfg.Copiers)
				commitRestartsAsked++
			}
		}
	}
	if cw != nil {
		cw.commitHookArmed.Store(false)
	}
	pauseWG.Wait()
	if p := pauseErr.Load(); p != nil && runErr == nil {
		runErr = errors.New(*p)
	}
	rep.DeleteRecordsEvents, rep.DeletedRecords = deleted.events, deleted.records
	rep.RetentionEvents = deleted.retentionEvents
	rep.Kills, rep.Restarts = kills, pp.runs-1
	if rep.JavaCopy != nil {
		rep.JavaCopy.KillsDuring = javaKills
	}
	if drops != nil {
		drops.setEnabled(false)
	}
	if runErr != nil {
		return rep, runErr
	}
	faultsOver := time.Now()

	// A producer whose Produce calls are still unanswered this long after
	// the faults is wedged (eosproxy keeps answering it retriable errors):
	// an anomaly, counted; its buffered records are then aborted, so the
	// input no longer changes, and the check goes on.
	if producersStuck {
		// Their Produce calls waiting for buffer space fail; what they
		// buffered is closed away below.
		stopProducers()
		prodWG.Wait()
		flushTimeout = time.Second
		fmt.Fprintf(out, "the producers' records were not all answered %v after the rest of the schedule\n", max(cfg.CopyTimeout, time.Minute)+time.Minute)
	}
	flushCtx, cancel := context.WithTimeout(ctx, flushTimeout)
	defer cancel()
	for _, p := range prods {
		if err := p.cl.Flush(flushCtx); err != nil {
			if ctx.Err() != nil {
				return rep, fmt.Errorf("flush: %v (%d acked, %d failed)", err, acked.Load(), failed.Load())
			}
			rep.Unanswered = inflight.Load()
			fmt.Fprintf(out, "producers wedged: %d Produce calls unanswered; closing the producers\n", rep.Unanswered)
			trace.printf("producers wedged: %d Produce calls unanswered after %v", rep.Unanswered, flushTimeout)
			// Closed, not AbortBufferedRecords: that waits for the
			// requests in flight, which eosproxy keeps answering with
			// retriable errors.
			for _, q := range prods {
				q.close()
			}
			break
		}
	}
	wg.Wait()
	rep.Sent, rep.Acked, rep.Failed = min(sent.Load(), int64(cfg.Records)), acked.Load(), failed.Load()
	if p := firstErr.Load(); p != nil {
		fmt.Fprintf(out, "first produce failure: %s\n", *p)
	}

	// The copiers run until the group's committed offsets, read from the
	// backend, reach the input's end offsets; the readers until they have
	// read the output up to its end.
	if cw != nil {
		done, err := waitCopied(ctx, adm, rep.Topic, rep.Copy.Group, cfg.CopyTimeout, tlog)
		if err != nil {
			return rep, err
		}
		rep.Copy.CopySeconds = time.Since(faultsOver).Seconds()
		if !done {
			fmt.Fprintf(out, "copiers did not commit the whole input (group offsets at the input's end) within %v, or stalled for %v\n", cfg.CopyTimeout, copyStall)
		}
		cw.finish()
		if err := waitReaders(ctx, adm, rep.Copy.OutputTopic, readers, time.Minute); err != nil {
			fmt.Fprintf(out, "readers: %v\n", err)
		}
		stopReaders()
		for _, r := range readers {
			<-r.done
		}
	}
	if jw != nil {
		// Like the Go copiers, the Java copiers have CopyTimeout after
		// the fault schedule to finish.
		select {
		case <-jw.done:
		case <-time.After(time.Until(faultsOver.Add(cfg.CopyTimeout))):
			fmt.Fprintf(out, "java copiers did not finish within %v after the fault schedule; stopped\n", cfg.CopyTimeout)
			jw.note("java copiers did not finish within %v after the fault schedule; stopped", cfg.CopyTimeout)
		case <-ctx.Done():
			return rep, ctx.Err()
		}
		jw.stop()
	}
	if berrs != nil {
		berrs.setEnabled(false)
	}
	stopProgress()

	// Verdict, from the backend directly. Retention may have deleted more
	// after its last event was counted.
	if deleted.retentionEvents > 0 {
		starts, err := adm.ListStartOffsets(ctx, rep.Topic)
		if err == nil {
			err = starts.Error()
		}
		if err != nil {
			return rep, fmt.Errorf("start offsets: %w", err)
		}
		deleted.settle(starts)
	}
	rep.RetentionDeleted = deleted.retentionRecords
	seen, err := verdict(ctx, backend, rep, prods, adm, deleted.parts)
	if err != nil {
		return rep, err
	}
	if cw != nil {
		rep.Copy.Incarnations = cw.incarnations.Load()
		rep.Copy.CommitRestarts = cw.restartsCommit.Load()
		if gt, err := groupType(ctx, adm, rep.Copy.Group); err != nil {
			rep.Copy.GroupType = "? (" + err.Error() + ")"
		} else {
			rep.Copy.GroupType = gt
		}
		if rep.Copy.GroupType != rep.Copy.GroupProtocol {
			fmt.Fprintf(out, "the copiers asked for the %s group protocol; the backend's group is of type %q\n", rep.Copy.GroupProtocol, rep.Copy.GroupType)
		}
		if rep.Copy.Stalls != nil {
			cw.stalls.mu.Lock()
			*rep.Copy.Stalls = cw.stalls.r
			cw.stalls.mu.Unlock()
		}
		if rep.Copy.InitReads != nil {
			cw.initReads.mu.Lock()
			*rep.Copy.InitReads = cw.initReads.r
			cw.initReads.mu.Unlock()
		}
		if err := copyVerdict(ctx, backend, rep, prods, seen, tlog, readers, adm); err != nil {
			return rep, err
		}
		rep.Anomalies += rep.Copy.anomalies()
	}
	if jw != nil {
		if err := javaCheck(ctx, out, backend, rep, jw, adm, pp.logs.txnEnds(), time.Minute); err != nil {
			return rep, err
		}
		rep.Anomalies += rep.JavaCopy.anomalies()
	}
	if drops != nil {
		rep.Drops, rep.DropsByKey = drops.drops(), drops.dropsByKey()
	}
	if berrs != nil {
		rep.BackendErrors, rep.BackendErrorsByKind = berrs.total(), berrs.byKind()
	}
	rep.ProxyLog = pp.logs.notableCounts()
	rep.ProxyCrashes = pp.logs.crashed()
	rep.Seconds = time.Since(start).Seconds()
	if len(rep.ProxyCrashes) > 0 {
		rep.Anomalies += int64(len(rep.ProxyCrashes))
	}
	printTable(out, rep)
	if cfg.WorkDir == "" && rep.Valid() && cfg.LogFile == "" {
		logFile.Close()
		os.RemoveAll(work)
		rep.LogFile += " (removed: no anomaly)"
	}
	return rep, nil
}

// copyStall is how long the copiers may go without beginning a transaction
// while the group's offsets are short of the input's end before waitCopied
// gives up: once a committed transaction's offsets are lost, a copier that
// has nothing new to read never commits those partitions again.
const copyStall = 30 * time.Second

// waitCopied waits until the group's committed offsets, read from the
// backend, equal the input topic's end offsets, or timeout, or the copiers
// stall.
func waitCopied(ctx context.Context, adm *kadm.Client, topic, group string, timeout time.Duration, tlog *txnLog) (bool, error) {
	deadline := time.Now().Add(timeout)
	lastTxns, lastChange := -1, time.Now()
	for {
		if ok, err := offsetsAtEnd(ctx, adm, topic, group); err == nil && ok {
			return true, nil
		}
		if n := len(tlog.all()); n != lastTxns {
			lastTxns, lastChange = n, time.Now()
		}
		if time.Now().After(deadline) || time.Since(lastChange) > copyStall {
			return false, nil
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func offsetsAtEnd(ctx context.Context, adm *kadm.Client, topic, group string) (bool, error) {
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return false, err
	}
	offs, err := adm.FetchOffsets(ctx, group)
	if err != nil {
		return false, err
	}
	ok := true
	ends.Each(func(e kadm.ListedOffset) {
		o, found := offs.Lookup(topic, e.Partition)
		if e.Err != nil || (found && o.At != e.Offset) || (!found && e.Offset != 0) {
			ok = false
		}
	})
	return ok, nil
}

// waitReaders waits until every reader has read the output up to its end
// offsets in the backend.
func waitReaders(ctx context.Context, adm *kadm.Client, topic string, readers []*reader, timeout time.Duration) error {
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return fmt.Errorf("output end offsets: %w", err)
	}
	want := map[int32]int64{}
	ends.Each(func(e kadm.ListedOffset) { want[e.Partition] = e.Offset })
	deadline := time.Now().Add(timeout)
	for _, r := range readers {
		for !r.caughtUp(want) {
			if time.Now().After(deadline) {
				return fmt.Errorf("reader %d has not read the output's %v after %v", r.id, want, timeout)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	return nil
}

// verdict reads every partition from the start up to its end offset,
// straight from the backend, and counts the anomalies.
//
// It returns how often each producer's value was read (by producer, seq).
//
// deleted are the records DeleteRecords removed from the input (read just
// before), by partition: they count as read before the rest.
func verdict(ctx context.Context, backend []string, rep *Report, prods []*producer, adm *kadm.Client, deleted map[int32][]*kgo.Record) ([][]int32, error) {
	ends, err := adm.ListEndOffsets(ctx, rep.Topic)
	if err != nil {
		return nil, fmt.Errorf("end offsets: %w", err)
	}
	starts, err := adm.ListStartOffsets(ctx, rep.Topic)
	if err != nil {
		return nil, fmt.Errorf("start offsets: %w", err)
	}
	var total int64
	ends.Each(func(o kadm.ListedOffset) { total += o.Offset })
	rep.BackendTotal = total
	var gone int64 // below the log start: deleted
	starts.Each(func(o kadm.ListedOffset) { gone += o.Offset })
	var kept int64
	for _, rs := range deleted {
		kept += int64(len(rs))
	}
	if kept != gone {
		return nil, fmt.Errorf("the input's log starts hold %d records, eoscheck deleted (and kept) %d", gone, kept)
	}
	total -= gone
	cl, err := kgo.NewClient(kgo.SeedBrokers(backend...), kgo.ConsumeTopics(rep.Topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	seen := make([][]int32, len(prods))
	for i, p := range prods {
		seen[i] = make([]int32, len(p.acked))
	}
	type key struct {
		part int32
		prod int
	}
	last := map[key]int{}
	example := func(format string, args ...any) {
		if len(rep.Examples) < 20 {
			rep.Examples = append(rep.Examples, fmt.Sprintf(format, args...))
		}
	}
	readCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	var n int64
	account := func(r *kgo.Record) {
		pi, seq, ok := parseValue(string(r.Value))
		if !ok || pi >= len(prods) || int64(seq) >= prods[pi].sent.Load() {
			rep.Unexpected++
			example("unexpected value %q at %d/%d", r.Value, r.Partition, r.Offset)
			return
		}
		if seen[pi][seq]++; seen[pi][seq] == 2 {
			rep.Duplicates++
			example("duplicate %d-%d at %d/%d", pi, seq, r.Partition, r.Offset)
		}
		if seen[pi][seq] > 1 {
			rep.DuplicateRead++
		}
		k := key{r.Partition, pi}
		if prev, ok := last[k]; ok && seq < prev {
			rep.OrderErrors++
			example("order: producer %d seq %d after %d in partition %d (offset %d)", pi, seq, prev, r.Partition, r.Offset)
		}
		last[k] = seq
	}
	for _, rs := range deleted {
		for _, r := range rs {
			account(r)
		}
	}
	for n < total {
		fs := cl.PollFetches(readCtx)
		if readCtx.Err() != nil {
			return nil, fmt.Errorf("read %d of the backend's %d records before timeout", n, total)
		}
		fs.EachRecord(func(r *kgo.Record) {
			n++
			account(r)
		})
	}
	for pi, p := range prods {
		for seq := range p.acked {
			if p.acked[seq].Load() && seen[pi][seq] == 0 {
				rep.Lost++
				example("lost: %d-%d acknowledged, not in the backend", pi, seq)
			}
		}
	}
	rep.Anomalies = rep.Lost + rep.Duplicates + rep.OrderErrors + rep.Unexpected + rep.Unanswered
	return seen, nil
}

func parseValue(s string) (int, int, bool) {
	a, b, ok := strings.Cut(s, "-")
	if !ok {
		return 0, 0, false
	}
	p, err1 := strconv.Atoi(a)
	q, err2 := strconv.Atoi(b)
	if err1 != nil || err2 != nil || p < 0 || q < 0 {
		return 0, 0, false
	}
	return p, q, true
}

func printTable(w io.Writer, r *Report) {
	fmt.Fprintf(w, "\n%-44s %10s\n", "eoscheck: idempotent producers", "count")
	row := func(name string, v int64) { fmt.Fprintf(w, "%-44s %10d\n", name, v) }
	row("records sent", r.Sent)
	row("acked", r.Acked)
	row("failed (allowed)", r.Failed)
	row("in backend", r.BackendTotal)
	row("SIGKILLs", int64(r.Kills-r.CleanRestarts))
	if r.CleanRestarts > 0 {
		row("SIGTERMs (clean stops)", int64(r.CleanRestarts))
		row("  clean stops not exiting 0", int64(len(r.CleanStopErrors)))
	}
	if r.CommitKills > 0 {
		row("restarts as a copier committed", int64(r.CommitKills))
		row("  of them SIGTERM", int64(r.CommitKillsClean))
	}
	row("restarts", int64(r.Restarts))
	if r.ReplicationFactor > 1 {
		row("replication factor", int64(r.ReplicationFactor))
	}
	if r.BrokerPauses > 0 {
		row("broker pauses", int64(r.BrokerPauses))
		fmt.Fprintf(w, "%-44s %10.1f\n", "  seconds paused in all", r.BrokerPauseSeconds)
	}
	if r.DeleteRecordsEvents > 0 {
		row("DeleteRecords on the input (producers idle)", int64(r.DeleteRecordsEvents))
		row("  input records deleted (kept for the check)", r.DeletedRecords)
	}
	if r.RetentionEvents > 0 {
		row("retention.ms lowered (producers idle)", int64(r.RetentionEvents))
		row("  input records deleted (kept for the check)", r.RetentionDeleted)
	}
	if r.BrokerRestarts > 0 {
		row("broker restarts (on its data)", int64(r.BrokerRestarts))
		fmt.Fprintf(w, "%-44s %10.1f\n", "  longest, seconds", r.BrokerRestartSeconds)
	}
	if r.DropsByKey != nil || r.Drops > 0 {
		row("connection drops", r.Drops)
		for _, k := range sortedKeys(r.DropsByKey) {
			row("  after "+k, r.DropsByKey[k])
		}
	}
	if r.BackendErrorsByKind != nil || r.BackendErrors > 0 {
		row("backend errors after the write", r.BackendErrors)
		for _, k := range sortedKeys(r.BackendErrorsByKind) {
			row("  "+k, r.BackendErrorsByKind[k])
		}
	}
	if r.Unanswered > 0 {
		row("Produce calls never answered (wedged)", r.Unanswered)
	}
	row("lost (acked, not read)", r.Lost)
	row("duplicates", r.Duplicates)
	row("order violations", r.OrderErrors)
	row("unexpected", r.Unexpected)
	if c := r.Copy; c != nil {
		fmt.Fprintf(w, "%-44s %10s\n", "transactional copiers", "")
		row("copiers", int64(c.Copiers))
		row("transactions", c.Transactions)
		row("  committed", c.Commits)
		row("  aborted on purpose", c.Aborts)
		row("  aborted by the client (rebalance)", c.ForcedAborts)
		row("  outcome unknown (End failed)", c.Unknown)
		row("  left open, copier closed+replaced", c.Crashed)
		row("  of a fenced zombie", c.Zombies)
		fmt.Fprintf(w, "%-44s %10s\n", "group protocol (backend's group type)", c.GroupProtocol+" ("+c.GroupType+")")
		if st := c.Stalls; st != nil {
			row("stalls past the session timeout", st.Stalls)
			row("  group moved on before it woke", st.GroupMovedOn)
			row("  stale offsets refused, aborted", st.Refused)
			for _, k := range sortedKeys(st.RefusedByCode) {
				row("    "+k, st.RefusedByCode[k])
			}
			row("  stale offsets ACCEPTED", st.Accepted)
			row("    then committed", st.AcceptedCommitted)
			row("  errors (outcome unknown)", st.Errors)
			fmt.Fprintf(w, "%-44s %10.1f\n", "  longest stall, seconds", st.LongestSeconds)
		}
		if c.CommitRestarts > 0 || c.InitReads != nil {
			row("replaced right after a commit", c.CommitRestarts)
		}
		if ir := c.InitReads; ir != nil {
			row("output reads after InitProducerId", ir.Checks)
			row("  predecessors' committed records sought", ir.Expected)
			row("  missing", ir.Missing)
			row("  reads that failed", ir.Errors)
		}
		row("input records", c.InputTotal)
		row("copied in committed transactions", c.Copied)
		row("output records", c.OutputTotal)
		row("read by concurrent readers", c.ReaderReads)
		row("lost (input, not in output)", c.Lost)
		row("duplicates (copied twice)", c.Duplicates)
		row("aborted reads", c.AbortedReads)
		row("  of them seen by readers", c.ReaderAborted)
		row("uncommitted reads", c.UncommittedReads)
		row("committed, missing from output", c.CommitMissing)
		row("unexpected output", c.Unexpected)
		row("reader/backend mismatches", c.ReaderMismatches)
		row("group offset != input end", c.OffsetMismatches)
		row("fenced zombie committed", c.ZombieCommits)
		fmt.Fprintf(w, "%-44s %10s\n", "output == input (once each)", yesNo(c.OutputIsInput))
	}
	if j := r.JavaCopy; j != nil {
		fmt.Fprintf(w, "%-44s %10s\n", "Java TransactionalMessageCopier", "")
		row("copiers (one input partition each)", int64(j.Copiers))
		row("finished", int64(j.Finished))
		row("runs (JVM launches)", j.Runs)
		row("  restarted after a crash", j.Restarts)
		row("    of them SIGKILLed by eoscheck", j.Crashes)
		for _, k := range sortedKeys(j.ExitReasons) {
			row("    "+k, j.ExitReasons[k])
		}
		row("SIGKILLs of eosproxy while they copied", int64(j.KillsDuring))
		if j.Commits >= 0 {
			row("transactions committed (eosproxy)", j.Commits)
			row("transactions aborted (eosproxy)", j.Aborts)
			row("  of them timed out", j.TimedOut)
		}
		row("input records (copied partitions)", j.InputRecords)
		row("processed (copiers' status)", j.Processed)
		row("output records (read_committed)", j.OutputRecords)
		row("lost (input, not in output)", j.Lost)
		row("duplicates (or aborted copies)", j.Duplicates)
		row("order violations", j.OrderErrors)
		row("unexpected output", j.Unexpected)
		row("group offset != input end", j.OffsetMismatches)
		fmt.Fprintf(w, "%-44s %10s\n", "output == input (record for record)", yesNo(j.OutputIsInput))
	}
	row("eosproxy crashes", int64(len(r.ProxyCrashes)))
	row("ANOMALIES", r.Anomalies)
	for _, e := range r.Examples {
		fmt.Fprintf(w, "  %s\n", e)
	}
	if r.Copy != nil {
		for _, e := range r.Copy.ClientErrors {
			fmt.Fprintf(w, "  client: %s\n", e)
		}
	}
	if r.JavaCopy != nil {
		for _, e := range r.JavaCopy.Errors {
			fmt.Fprintf(w, "  java: %s\n", e)
		}
	}
	verdict := "VALID"
	if !r.Valid() {
		verdict = "INVALID"
	}
	fmt.Fprintf(w, "%s in %.1fs\n", verdict, r.Seconds)
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "NO"
}

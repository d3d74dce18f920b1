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
	"crypto/tls"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"

	"github.com/eosproxy/eosproxy/cluster"
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
	// ClientLog writes the copiers' and the producers' franz-go debug
	// logs to <work-dir>/copiers-kgo.log and producers-kgo.log (to explain
	// an anomaly; verbose).
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
	// DiskFulls is how many times, spread over the kill schedule,
	// eosproxy's data dir (a tmpfs of its own: root only) is filled to
	// below eosproxy's reserve for DiskFullFor (diskfull.go). One
	// instance only.
	DiskFulls   int
	DiskFullFor time.Duration
	// Instances ≥ 2 runs that many eosproxy processes as one cluster
	// (--cluster, issue 13; cluster.go), each with its own ports, data dir
	// and log file (LogFile with "-<instance>" before ".log"); every
	// client gets them all as seeds. The kills go mostly to the owner
	// (every third of each kind to a standby), and each owner fault waits
	// for another instance to serve (a failover, timed). 0 or 1: one
	// eosproxy, as before.
	Instances int
	// ClusterSessionTimeout is the instances' --cluster-session-timeout;
	// 0: 6 s.
	ClusterSessionTimeout time.Duration
	// InstanceStops is how many times, spread over the kill schedule, the
	// owner is SIGSTOPped until another instance serves and for longer
	// than the session timeout, then SIGCONTed: a zombie, which must log
	// that it was deposed. Needs Instances ≥ 2.
	InstanceStops int
	// InstanceCuts is how many times, spread the same way, the owner is
	// cut off from the backend while its clients still reach it (packets
	// dropped: upstream.Cut, through EOSPROXY_TEST_BACKEND_CUT_FILE) until
	// another instance serves and for longer than the session timeout;
	// then the cut ends: a zombie that kept running, which must log that
	// it was deposed. Needs Instances ≥ 2.
	InstanceCuts int
	// CrashPoints arms eosproxy's test crash points in every run
	// (crashpoints.go): "all", or point=probability[,...]; empty: none.
	// The run fails unless every point armed was hit. CrashPointMax is
	// how many crashes of a point, at most, new runs are armed for
	// (default 2).
	CrashPoints   string
	CrashPointMax int
	// ProxyArgs are extra arguments of every eosproxy run.
	ProxyArgs []string
	// Security puts TLS and SASL on the in-process kfake backend and on
	// every client of it or of eosproxy (eosproxy's own flags go in
	// ProxyArgs); nil: none.
	Security *Security
}

// Security is what a run needs for TLS and SASL on both sides.
type Security struct {
	// Kfake are the backend's TLS, SASL and users.
	Kfake []kfake.Opt
	// TLS and SASL are every client's, of eosproxy or of the backend
	// (TLS also the drop relays' to the backend).
	TLS  *tls.Config
	SASL sasl.Mechanism
	// RelayTLS ends eosproxy's TLS at the drop relays, which open their
	// own to the backend: the drops read Kafka frames.
	RelayTLS *tls.Config
}

// opts are the TLS and SASL options of a client, of either side.
func (s *Security) opts() []kgo.Opt {
	if s == nil {
		return nil
	}
	return []kgo.Opt{kgo.DialTLSConfig(s.TLS.Clone()), kgo.SASL(s.SASL)}
}

// saslOpts are opts without TLS, for a client whose dialer does TLS.
func (s *Security) saslOpts() []kgo.Opt {
	if s == nil {
		return nil
	}
	return []kgo.Opt{kgo.SASL(s.SASL)}
}

func (s *Security) clientTLS() *tls.Config {
	if s == nil {
		return nil
	}
	return s.TLS
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
	// Disk fulls: fills of the data dir below eosproxy's reserve, how
	// many times eosproxy logged it was almost full (refusing batches),
	// and the failure when it never did (the fault not exercised).
	DiskFulls        int      `json:"disk_fulls,omitempty"`
	DiskFullSeconds  float64  `json:"disk_full_seconds,omitempty"`
	DiskFullRefusing int      `json:"disk_full_refusing_logged,omitempty"`
	DiskFullFailures []string `json:"disk_full_failures,omitempty"`

	// Cluster mode (Instances ≥ 2): the instances, fencings logged (a
	// deposed owner's reason naming a fencing, or another cluster line
	// telling of one), the owner faults and how long each left the
	// cluster without an owner, failover p99 (of kills and stops) and the
	// longest clean handover (SIGTERM of the owner), ms; ClusterFailures
	// are the pass conditions not met (the run is then not valid).
	Instances          int            `json:"instances"`
	ClusterName        string         `json:"cluster,omitempty"`
	SessionTimeoutMs   int64          `json:"cluster_session_timeout_ms,omitempty"`
	Fencings           int64          `json:"fencings"`
	Failovers          []Failover     `json:"failovers,omitempty"`
	FailoverP99Ms      int64          `json:"failover_p99_ms,omitempty"`
	CleanHandoverMaxMs int64          `json:"clean_handover_max_ms,omitempty"`
	InstanceStops      int            `json:"instance_stops,omitempty"`
	InstanceCuts       int            `json:"instance_cuts,omitempty"`
	Zombies            []ZombieReport `json:"zombies,omitempty"`
	StandbyKills       int            `json:"standby_kills,omitempty"`
	StandbyTerms       int            `json:"standby_sigterms,omitempty"`
	UnknownOwnerFaults int            `json:"faults_owner_unknown,omitempty"`
	Takeovers          int            `json:"owner_takeovers,omitempty"` // "serving" lines in all
	DeposedByReason    map[string]int `json:"deposed_by_reason,omitempty"`
	FencingLines       map[string]int `json:"fencing_lines,omitempty"`
	ClusterFailures    []string       `json:"cluster_failures,omitempty"`
	// ClusterLog is the cluster's log replayed at the end as its readers
	// do: its superseded writes are deposed owners' late writes, voided
	// (counted in Fencings). WritesRefused are the writes an instance
	// refused to send as it was no longer the owner (logged errors).
	ClusterLog    *cluster.Audit `json:"cluster_log,omitempty"`
	WritesRefused int64          `json:"writes_refused_not_owner,omitempty"`

	// Crash points (Config.CrashPoints): the points armed with their
	// probabilities, the runs that ended at each, in order, and the pass
	// conditions not met (a point never hit, a crashed run not started
	// again).
	CrashPointsArmed   map[string]float64 `json:"crash_points_armed,omitempty"`
	CrashPoints        map[string]int     `json:"crash_points,omitempty"`
	CrashEvents        []CrashEvent       `json:"crash_events,omitempty"`
	CrashPointFailures []string           `json:"crash_point_failures,omitempty"`
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
	ForcedAborts int64   `json:"forced_aborts"` // End(TryCommit) that aborted (rebalance), or aborted as a record failed
	// ProduceAborts of ForcedAborts: a record failed to produce, so the
	// copier aborted rather than commit without it.
	ProduceAborts int64   `json:"produce_aborts"`
	Unknown       int64   `json:"unknown"` // End failed: outcome unknown
	Crashed       int64   `json:"restarts_closed"`
	Zombies       int64   `json:"restarts_zombie"`
	Incarnations  int64   `json:"incarnations"`
	Copied        int64   `json:"copied"` // input records in committed transactions
	InputTotal    int64   `json:"input_records"`
	OutputTotal   int64   `json:"output_records"`
	ReaderReads   int64   `json:"reader_records"`
	CopySeconds   float64 `json:"copy_seconds"` // from the end of the fault schedule until the group's offsets reached the input's end

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

// Valid reports whether the run found no anomaly and, in cluster mode,
// met the failover conditions.
func (r *Report) Valid() bool {
	return r.Anomalies == 0 && len(r.ClusterFailures) == 0 && len(r.CrashPointFailures) == 0 && len(r.DiskFullFailures) == 0
}

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
	if c.DiskFullFor <= 0 {
		c.DiskFullFor = 4 * time.Second
	}
	if c.BrokerPause <= 0 {
		c.BrokerPause = 8 * time.Second
	}
	if c.Instances < 1 {
		c.Instances = 1
	}
	if c.ClusterSessionTimeout <= 0 {
		c.ClusterSessionTimeout = 6 * time.Second
	}
	if c.CrashPointMax <= 0 {
		c.CrashPointMax = 2
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

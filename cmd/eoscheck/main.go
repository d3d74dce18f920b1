// Command eoscheck is eosproxy's exactly-once verifier (test tier 4).
//
// It drives idempotent franz-go producers and transactional
// consume-transform-produce copiers (franz-go GroupTransactSession, one
// consumer group, read_committed) through an eosproxy child process while
// SIGKILLing and restarting it on the same data dir and ports, aborting some
// transactions on purpose, replacing copiers mid-transaction with a new
// instance of the same transactional id, and (--drops) dropping eosproxy's
// connections to the backend right after a request was sent, and
// (--backend-errors) making the backend answer some of eosproxy's writes
// with an error although it applied them. read_committed readers read the
// copiers' output through eosproxy meanwhile. With --java-copiers (real
// broker only), Kafka's own TransactionalMessageCopier copies input
// partitions through eosproxy too, while eosproxy and the copiers' JVMs are
// killed. At the end it reads every
// partition straight from the backend and counts, in the Jepsen Kafka
// workload's terms: lost writes, duplicates, aborted reads,
// uncommitted reads, per-partition order violations of a producer,
// unexpected values, whether the output is the input once each, and whether
// the group's committed offsets are the input's end offsets. It prints a
// progress line every second and a table at the end, writes a JSON report,
// and exits 1 on any anomaly (2 if the check itself could not run).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/eosproxy/eosproxy/cmd/eoscheck/check"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	var cfg check.Config
	var report string
	fs := flag.NewFlagSet("eoscheck", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `usage: eoscheck [flags]

Exactly-once verifier for eosproxy. Idempotent producers write the input
topic; --copiers transactional copiers (GroupTransactSession, read_committed,
RequireStable offset fetches) copy it to an output topic through eosproxy,
committing every few hundred records and aborting --abort-rate of their
transactions on purpose; --copier-restarts times a copier is replaced
mid-transaction by a new instance with the same transactional id; --readers
read_committed consumers read the output through eosproxy meanwhile. Faults:
SIGKILLs of eosproxy with restarts on the same data dir and ports, and with
--drops connections between eosproxy and the backend dropped right after a
request was forwarded (a TCP relay of integration/faults in front of each
broker; in-process backend only), and with --backend-errors the backend
answering --backend-error-rate of the Produce requests to the input and
output topics with REQUEST_TIMED_OUT or NOT_ENOUGH_REPLICAS_AFTER_APPEND, and
of the group's OffsetCommit requests with REQUEST_TIMED_OUT, although it
appended the batches or stored the offsets (kfake faults; in-process backend
only), and with --restart-broker (--upstream only) the real broker stopped
and started again on its data (--broker-restart-cmd, by default
integration/kafka/kafka.sh restart) while producers and copiers go on
through eosproxy. With --java-copiers (--upstream only), Kafka's own
TransactionalMessageCopier (Java kafka-clients, a third of its transactions
aborted) copies input partitions 0..N-1, one copier each, to a second output
topic through eosproxy once the producers are done, while eosproxy is still
SIGKILLed (up to --java-kills times), and --java-crashes times a copier's JVM
is SIGKILLed; a copier that dies or exits with an error is started again
with the same transactional id and group.

Issue 9's faults: --stalls freezes a copier mid-transaction (every
connection of its client held, as SIGSTOP would) until the backend's group
has removed it, then has it commit the transaction's offsets as the member
and generation it was (Kafka refuses them: UNKNOWN_MEMBER_ID,
ILLEGAL_GENERATION, STALE_MEMBER_EPOCH); --group-protocol consumer has the
copiers use KIP-848's consumer protocol; --clean-restarts stops eosproxy with
SIGTERM rather than SIGKILL, --commit-kills times restarts to a copier's
commit; --commit-restarts replaces a copier right after a commit and (as
--init-reads for every new instance) has the new instance read the output
read_committed right after InitProducerId and check that its predecessors'
commits are all there; --delete-records idles the producers and moves the
input's log start up with DeleteRecords, --retention-deletes with a short
retention.ms; --replication-factor and
--pause-broker (SIGSTOP of the second broker of KAFKA_BROKERS=2 kafka.sh)
and --restart-broker with --broker-restart-cmd 'kafka.sh restart-node 2'
exercise a two-broker cluster.

Cluster mode (issue 13): --instances N (2 or more) runs N eosproxy processes
as one cluster (--cluster eoscheck-<seed>, --cluster-session-timeout), each on
its own ports, data dir and log file, and gives every client all of them as
seeds. The kills and SIGTERMs go to the owner (the instance whose latest log
line says it serves), every third of each to a standby; after an owner fault
the schedule waits until an instance serves again and records the failover's
time. --instance-stops SIGSTOPs the owner until another serves and past the
session timeout, then SIGCONTs it: the zombie must log that it was deposed.
At the end the cluster's log is read back and replayed as its readers do: a
deposed owner's late writes there are void (fencings). The run fails unless
failover p99 <= session timeout + 5 s, every clean handover (SIGTERM of the
owner) <= 3 s, every zombie deposed, and fencings > 0 when an owner was
stopped. The other faults apply unchanged to the cluster (--drops cuts every
instance's backend connections, the cluster's own traffic included).
--crash-points all starts every eosproxy run (single or cluster) with
EOSPROXY_TEST_CRASH, so that it SIGKILLs itself now and then at the instants
kills from outside rarely hit (a commit's decision logged, a commit half
forwarded, a set of the cluster's log sent, or confirmed but not answered);
eoscheck starts it again at once, times an owner's takeover as for a kill,
and fails the run unless every point armed was hit.

Anomalies: lost (acknowledged input not in the input topic; input not in the
output), duplicates, aborted reads (output of an aborted or fenced
transaction), uncommitted reads (read before its copier asked to commit),
order violations, unexpected values, group offsets that are not the input's
end offsets, reader views that differ from the backend.

The work dir keeps eosproxy's log and trace.log, a timeline of the copiers'
transactions, kills and the backend's group requests (member, generation,
offsets), to explain an anomaly.

Without --upstream the backend is franz-go's kfake (3 brokers) in this
process, without the idempotence/transaction API keys (with them:
--backend-idempotence). Exit status: 0 no
anomaly, 1 anomalies, 2 the check could not run.

`)
		fs.PrintDefaults()
	}
	fs.StringVar(&cfg.Upstream, "upstream", "", "backend bootstrap `host:port[,...]`; empty: in-process kfake without EOS API keys")
	fs.StringVar(&cfg.ProxyBin, "proxy-bin", "", "eosproxy `binary`; empty: go build ./cmd/eosproxy")
	fs.IntVar(&cfg.Producers, "producers", 4, "idempotent producers")
	fs.IntVar(&cfg.Partitions, "partitions", 6, "partitions of the topic")
	fs.IntVar(&cfg.Records, "records", 200_000, "records to send in total")
	fs.DurationVar(&cfg.Duration, "duration", 0, "spread the records over this long and keep killing until then (0: follow the kill schedule)")
	fs.IntVar(&cfg.Rate, "rate", 0, "records per second in total (0: spread --records over the kill schedule)")
	fs.DurationVar(&cfg.KillEvery, "kill-every", 0, "interval between SIGKILLs (0: random 300ms-1.5s)")
	fs.IntVar(&cfg.Kills, "kills", 10, "at least this many SIGKILLs")
	fs.Uint64Var(&cfg.Seed, "seed", 0, "seed of the fault schedule and ports (0: from the clock)")
	fs.StringVar(&cfg.WorkDir, "work-dir", "", "`directory` for eosproxy's data dir and logs (default: a temp dir, removed when no anomaly)")
	fs.StringVar(&cfg.LogFile, "log-file", "", "eosproxy's JSON logs (default: <work-dir>/eosproxy.log)")
	fs.StringVar(&report, "report", "eoscheck-report.json", "JSON report `file`")
	fs.IntVar(&cfg.Copiers, "copiers", 2, "transactional consume-transform-produce copiers (0: idempotent producers only)")
	fs.Float64Var(&cfg.AbortRate, "abort-rate", 0.1, "fraction of copier transactions aborted on purpose")
	fs.IntVar(&cfg.CopierRestarts, "copier-restarts", 4, "copiers replaced mid-transaction by a new instance with the same transactional id, spread over the kill schedule")
	fs.IntVar(&cfg.Readers, "readers", 1, "read_committed readers of the output during the run")
	fs.DurationVar(&cfg.CopyTimeout, "copy-timeout", 2*time.Minute, "how long the copiers may take after the fault schedule to commit the whole input")
	fs.BoolVar(&cfg.Drops, "drops", false, "drop eosproxy's backend connections right after a request was forwarded (in-process backend only)")
	fs.StringVar(&cfg.ProxyLogLevel, "proxy-log-level", "", "eosproxy's --log-level (default info; debug with --java-copiers, whose commits and aborts are counted from eosproxy's debug lines)")
	fs.BoolVar(&cfg.ClientLog, "client-log", false, "write the copiers' and the producers' franz-go debug logs to <work-dir>/copiers-kgo.log and producers-kgo.log")
	fs.Float64Var(&cfg.DropRate, "drop-rate", 0.02, "with --drops: chance per Produce/OffsetCommit request of a drop (a tenth of it for other requests)")
	fs.BoolVar(&cfg.BackendErrors, "backend-errors", false, "make the backend answer some Produce requests with REQUEST_TIMED_OUT or NOT_ENOUGH_REPLICAS_AFTER_APPEND, and some OffsetCommit requests with REQUEST_TIMED_OUT, although it applied them (in-process backend only)")
	fs.Float64Var(&cfg.BackendErrorRate, "backend-error-rate", 0.03, "with --backend-errors: fraction of Produce (input and output topics) and OffsetCommit (the copiers' group) requests answered with an error after applying them")
	fs.BoolVar(&cfg.BackendIdempotence, "backend-idempotence", false, "keep the in-process kfake's idempotence/transaction API keys, so eosproxy forwards commits pipelined under its own producer id (the path a real Kafka takes)")
	fs.IntVar(&cfg.RestartBroker, "restart-broker", 0, "stop the real broker and start it again on its data this many times during the fault schedule (--upstream only)")
	fs.IntVar(&cfg.JavaCopiers, "java-copiers", 0, "Kafka's own TransactionalMessageCopier (Java, random aborts) on input partitions 0..N-1, one each, through eosproxy once the producers are done, restarted when they crash (--upstream only)")
	fs.IntVar(&cfg.JavaKills, "java-kills", 0, "with --java-copiers: SIGKILLs of eosproxy, at most, while they copy (0: max(2, kills/2))")
	fs.IntVar(&cfg.JavaCrashes, "java-crashes", 2, "with --java-copiers: SIGKILLs of a Java copier's JVM (a client crash), spread over the copiers and their progress; each is restarted")
	fs.StringVar(&cfg.KafkaSh, "kafka-sh", "", "with --java-copiers: `path` of kafka.sh, which runs Java classes on the Kafka jars (default: <repo>/integration/kafka/kafka.sh, found from the working directory upwards)")
	fs.StringVar(&cfg.BrokerRestartCmd, "broker-restart-cmd", "", "with --restart-broker: shell `command` that restarts the broker keeping its data and returns once it serves metadata (default: bash <repo>/integration/kafka/kafka.sh restart, found from the working directory upwards)")
	fs.IntVar(&cfg.Stalls, "stalls", 0, "copiers frozen mid-transaction (every connection held, as by SIGSTOP) until the backend's group removed them, then committing the offsets as their old member and generation (Kafka refuses them); the copiers' session timeout is then 6 s; needs --copiers 2 or more")
	fs.StringVar(&cfg.GroupProtocol, "group-protocol", "classic", "the copiers' group protocol: classic, or consumer (KIP-848, ConsumerGroupHeartbeat)")
	fs.IntVar(&cfg.CleanRestarts, "clean-restarts", 0, "restarts of eosproxy that stop it with SIGTERM (a clean shutdown) instead of SIGKILL, spread over the schedule")
	fs.IntVar(&cfg.CommitKills, "commit-kills", 0, "restarts of eosproxy timed to a copier's commit (offsets in flight), alternately SIGTERM and SIGKILL")
	fs.IntVar(&cfg.CommitRestarts, "commit-restarts", 0, "copiers replaced right after a committed transaction; the new instance reads the output read_committed right after InitProducerId and checks the predecessors' commits are there")
	fs.BoolVar(&cfg.InitReads, "init-reads", false, "every new copier instance reads the output read_committed right after InitProducerId and checks its predecessors' commits are there")
	fs.IntVar(&cfg.DeleteRecords, "delete-records", 0, "times the producers idle while the input's log start is moved up with DeleteRecords (to the copiers' committed offsets), eosproxy restarted soon after they resume")
	fs.IntVar(&cfg.RetentionDeletes, "retention-deletes", 0, "times the producers idle while the input's retention.ms is lowered (IncrementalAlterConfigs) until the backend's retention moved its log start, then restored; what it deleted is read first and kept for the check, and eosproxy is restarted soon after the producers resume. Skipped while the copiers are behind the input's end. Both tiers (kfake applies retention too); a real broker must check retention often: integration/kafka/kafka.sh sets log.retention.check.interval.ms=1000")
	fs.IntVar(&cfg.ReplicationFactor, "replication-factor", 1, "replication factor of the topics eoscheck creates (2 on a two-broker cluster)")
	fs.IntVar(&cfg.BrokerPauses, "pause-broker", 0, "times a broker is paused (--broker-pause-cmd, by default SIGSTOP of the second broker: integration/kafka/kafka.sh pause 2) for --broker-pause, then resumed (--upstream only)")
	fs.DurationVar(&cfg.BrokerPause, "broker-pause", 8*time.Second, "with --pause-broker: how long each pause lasts")
	fs.StringVar(&cfg.BrokerPauseCmd, "broker-pause-cmd", "", "with --pause-broker: shell `command` pausing the broker (default: bash <repo>/integration/kafka/kafka.sh pause 2)")
	fs.StringVar(&cfg.BrokerResumeCmd, "broker-resume-cmd", "", "with --pause-broker: shell `command` resuming it (default: bash <repo>/integration/kafka/kafka.sh resume 2)")
	fs.IntVar(&cfg.DiskFulls, "disk-fulls", 0, "times eosproxy's data dir, a tmpfs of its own (mounted by eoscheck: root only, Linux), is filled to below eosproxy's --data-dir-reserve (half of its default 256 MiB left free) for --disk-full-for: eosproxy must refuse batches with KAFKA_STORAGE_ERROR meanwhile (the run fails if it never logs that), stay up and lose nothing (one instance only)")
	fs.DurationVar(&cfg.DiskFullFor, "disk-full-for", 4*time.Second, "with --disk-fulls: how long each fill lasts")
	fs.IntVar(&cfg.Instances, "instances", 1, "eosproxy instances; 2 or more run them as one cluster (--cluster, a name of their own per run), each on its own ports, data dir and log file (<log-file>-N.log), every client seeded with all of them; the kills go mostly to the owner (every third to a standby) and each owner fault waits for a takeover, timed (failovers); the run fails unless failover p99 <= session timeout + 5 s and a clean handover (SIGTERM of the owner) <= 3 s")
	fs.DurationVar(&cfg.ClusterSessionTimeout, "cluster-session-timeout", 6*time.Second, "with --instances 2 or more: the instances' --cluster-session-timeout")
	fs.IntVar(&cfg.InstanceCuts, "instance-cuts", 0, "with --instances 2 or more: times the owner is cut off from the backend (its packets to and from the backend dropped; its clients still reach it) until another instance serves and past the session timeout, then reconnected (a zombie that kept running, which must log that it was deposed)")
	fs.IntVar(&cfg.InstanceStops, "instance-stops", 0, "with --instances 2 or more: times the owner is SIGSTOPped until another instance serves and past the session timeout, then SIGCONTed (a zombie, which must log that it was deposed); the run fails unless fencings were logged")
	fs.StringVar(&cfg.CrashPoints, "crash-points", "", "arm eosproxy's test crash points (EOSPROXY_TEST_CRASH, a seed per run): \"all\" (decision-logged, half-forwarded and, with --instances, set-sent and set-acked, at default probabilities) or `point=probability[,...]`; a run that SIGKILLs itself at one is started again at once (an owner's takeover timed); the run fails unless every point armed was hit")
	fs.IntVar(&cfg.CrashPointMax, "crash-point-max", 2, "with --crash-points: new eosproxy runs arm a point only while it was hit fewer times than this")
	fs.Func("proxy-arg", "extra `argument` of every eosproxy run (repeat the flag for several)", func(v string) error {
		cfg.ProxyArgs = append(cfg.ProxyArgs, v)
		return nil
	})
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	if cfg.Drops && cfg.Upstream != "" {
		fmt.Fprintln(os.Stderr, "eoscheck: --drops needs the in-process backend (no --upstream): a real broker advertises its own addresses, so a relay in front of its bootstrap would see only eosproxy's first connection")
		return 2
	}
	if cfg.BackendErrors && cfg.Upstream != "" {
		fmt.Fprintln(os.Stderr, "eoscheck: --backend-errors needs the in-process backend (no --upstream): the errors are faults of the in-process kfake")
		return 2
	}
	if cfg.RestartBroker > 0 {
		if cfg.Upstream == "" {
			fmt.Fprintln(os.Stderr, "eoscheck: --restart-broker needs --upstream: it restarts a real broker (the in-process backend has none to restart)")
			return 2
		}
		if cfg.BrokerRestartCmd == "" {
			script, err := findKafkaScript()
			if err != nil {
				fmt.Fprintf(os.Stderr, "eoscheck: --restart-broker: %v; give --broker-restart-cmd\n", err)
				return 2
			}
			cfg.BrokerRestartCmd = "bash " + shellQuote(script) + " restart"
		}
	}
	if cfg.BrokerPauses > 0 {
		if cfg.Upstream == "" {
			fmt.Fprintln(os.Stderr, "eoscheck: --pause-broker needs --upstream: it pauses a real broker")
			return 2
		}
		if cfg.BrokerPauseCmd == "" || cfg.BrokerResumeCmd == "" {
			script, err := findKafkaScript()
			if err != nil {
				fmt.Fprintf(os.Stderr, "eoscheck: --pause-broker: %v; give --broker-pause-cmd and --broker-resume-cmd\n", err)
				return 2
			}
			if cfg.BrokerPauseCmd == "" {
				cfg.BrokerPauseCmd = "bash " + shellQuote(script) + " pause 2"
			}
			if cfg.BrokerResumeCmd == "" {
				cfg.BrokerResumeCmd = "bash " + shellQuote(script) + " resume 2"
			}
		}
	}
	if cfg.JavaCopiers > 0 {
		if cfg.Upstream == "" {
			fmt.Fprintln(os.Stderr, "eoscheck: --java-copiers needs --upstream: Kafka's TransactionalMessageCopier runs on the real-broker tier (Java and the Kafka jars of integration/kafka/kafka.sh)")
			return 2
		}
		if cfg.KafkaSh == "" {
			script, err := findKafkaScript()
			if err != nil {
				fmt.Fprintf(os.Stderr, "eoscheck: --java-copiers: %v; give --kafka-sh\n", err)
				return 2
			}
			cfg.KafkaSh = script
		}
	}
	if cfg.Readers == 0 {
		cfg.Readers = -1 // none (Config's zero value means one)
	}
	cfg.Progress = os.Stdout
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	rep, err := check.Run(ctx, cfg)
	if b, jerr := json.MarshalIndent(rep, "", "  "); jerr == nil && report != "" {
		if werr := os.WriteFile(report, append(b, '\n'), 0o644); werr != nil {
			fmt.Fprintf(os.Stderr, "eoscheck: write report: %v\n", werr)
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "eoscheck: %v (log: %s)\n", err, rep.LogFile)
		return 2
	}
	if !rep.Valid() {
		fmt.Fprintf(os.Stderr, "eoscheck: %d anomalies (log: %s, report: %s)\n", rep.Anomalies, rep.LogFile, report)
		for _, f := range rep.ClusterFailures {
			fmt.Fprintf(os.Stderr, "eoscheck: cluster: %s\n", f)
		}
		for _, f := range rep.CrashPointFailures {
			fmt.Fprintf(os.Stderr, "eoscheck: crash points: %s\n", f)
		}
		return 1
	}
	return 0
}

// findKafkaScript looks for integration/kafka/kafka.sh in the working
// directory and its parents (eoscheck is run from within the repository).
func findKafkaScript() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		p := filepath.Join(dir, "integration", "kafka", "kafka.sh")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("integration/kafka/kafka.sh not found in the working directory or its parents")
		}
		dir = parent
	}
}

// shellQuote quotes s for sh.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

package integration

// Tier 4, short schedules of issue 9's faults, one schedule each so that a
// failure names its fault (each one is a flag of eoscheck):
//
//   - stall: a copier frozen mid-transaction past its 6 s session timeout
//     until the backend's group removed it and moved its partitions to the
//     other copier (another transactional id), then committing its offsets
//     as the member and generation it was: Kafka refuses them
//     (UNKNOWN_MEMBER_ID, ILLEGAL_GENERATION), so must eosproxy;
//   - consumer protocol: the copiers in a KIP-848 group
//     (ConsumerGroupHeartbeat), replaced mid-transaction and stalled;
//   - restarts at commits: eosproxy stopped right after a copier asked to
//     commit (offsets in flight), alternately with SIGTERM and SIGKILL,
//     and with SIGTERM at other times;
//   - init reads: copiers replaced right after a commit, the new instance
//     reading its output read_committed right after InitProducerId: every
//     record its predecessors committed must be there;
//   - DeleteRecords: the producers idle while the input's log start is
//     moved past what eosproxy last saw them write, then eosproxy is
//     restarted soon after they resume;
//   - short retention: the same, with the input's retention.ms lowered
//     until the backend's retention moved the log start (kfake applies
//     retention too);
//   - disk full: eosproxy's data dir, a tmpfs of its own, filled to below
//     eosproxy's reserve now and then (root only: skipped otherwise).
//
// On the real tier, a two-broker cluster (EOSPROXY_TEST_KAFKA_2B, started
// with KAFKA_BROKERS=2 integration/kafka/kafka.sh start) with replication
// factor 2: the second broker paused (SIGSTOP) and restarted while all of
// the above go on.

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/eosproxy/eosproxy/cmd/eoscheck/check"
)

// faultSchedule is a short eoscheck run with fault-specific settings.
func faultSchedule(t *testing.T, timeout time.Duration, set func(*check.Config)) *check.Report {
	t.Helper()
	if testing.Short() {
		t.Skip("eoscheck schedules take ~30 s each")
	}
	bin := buildProxy(t)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	work := eoscheckWorkDir(t, "eoscheck-fault-", "eosproxy.log, trace.log")
	var progress strings.Builder
	cfg := check.Config{
		ProxyBin:       bin,
		Producers:      4,
		Partitions:     6,
		Records:        20_000,
		Kills:          6,
		Seed:           faultSeed(t),
		WorkDir:        work,
		Progress:       &progress,
		Copiers:        2,
		AbortRate:      0.1,
		CopierRestarts: 1,
		Readers:        1,
		CopyTimeout:    time.Minute,
	}
	set(&cfg)
	tierEoscheck(&cfg)
	rep, err := check.Run(ctx, cfg)
	t.Logf("eoscheck output:\n%s", progress.String())
	if err != nil {
		t.Fatalf("eoscheck could not run: %v", err)
	}
	if b, err := json.MarshalIndent(rep, "", "  "); err == nil {
		t.Logf("report:\n%s", b)
	}
	if rep.Copy == nil {
		t.Fatal("no copier report")
	}
	if rep.Kills < cfg.Kills {
		t.Errorf("%d restarts of eosproxy, want at least %d", rep.Kills, cfg.Kills)
	}
	if !rep.Valid() {
		t.Errorf("%d anomalies (seed %d; eosproxy logs %s); examples:\n%s\nclient notes:\n%s\neosproxy warnings and errors: %v",
			rep.Anomalies, rep.Seed, rep.LogFile, strings.Join(rep.Examples, "\n"), strings.Join(rep.Copy.ClientErrors, "\n"), rep.ProxyLog)
	}
	return rep
}

func TestEoscheckStalls(t *testing.T) {
	rep := faultSchedule(t, 4*time.Minute, func(c *check.Config) { c.Stalls = 2 })
	if st := rep.Copy.Stalls; st == nil || st.GroupMovedOn == 0 {
		t.Errorf("no copier stalled until the group moved on: %+v", st)
	}
}

func TestEoscheckConsumerProtocol(t *testing.T) {
	rep := faultSchedule(t, 4*time.Minute, func(c *check.Config) {
		c.GroupProtocol = "consumer"
		c.CopierRestarts = 2
		c.Stalls = 1
	})
	if rep.Copy.GroupType != "consumer" {
		t.Errorf("the copiers' group is of type %q in the backend, want consumer (KIP-848)", rep.Copy.GroupType)
	}
	if st := rep.Copy.Stalls; st == nil || st.GroupMovedOn == 0 {
		t.Errorf("no copier stalled until the group moved on: %+v", st)
	}
}

func TestEoscheckRestartsAtCommits(t *testing.T) {
	rep := faultSchedule(t, 4*time.Minute, func(c *check.Config) {
		c.CommitKills = 3
		c.CleanRestarts = 1
	})
	if rep.CommitKills == 0 || rep.CommitKillsClean == 0 || rep.CleanRestarts <= rep.CommitKillsClean {
		t.Errorf("%d restarts at a commit (%d with SIGTERM), %d with SIGTERM in all: want restarts at commits with SIGTERM and SIGKILL, and a SIGTERM at another time",
			rep.CommitKills, rep.CommitKillsClean, rep.CleanRestarts)
	}
	if len(rep.CleanStopErrors) > 0 {
		t.Errorf("clean stops of eosproxy: %v", rep.CleanStopErrors)
	}
}

func TestEoscheckInitReads(t *testing.T) {
	rep := faultSchedule(t, 4*time.Minute, func(c *check.Config) {
		c.CommitRestarts = 3
		c.InitReads = true
	})
	ir := rep.Copy.InitReads
	if rep.Copy.CommitRestarts == 0 || ir == nil || ir.Checks == 0 || ir.Expected == 0 {
		t.Errorf("%d replacements after a commit, output reads after InitProducerId %+v: want some that looked for committed records", rep.Copy.CommitRestarts, ir)
	}
}

func TestEoscheckDeleteRecords(t *testing.T) {
	// A wedged producer is counted CopyTimeout+1 min after the schedule.
	rep := faultSchedule(t, 5*time.Minute, func(c *check.Config) {
		c.DeleteRecords = 2
		c.Kills = 8
		c.CopyTimeout = 30 * time.Second
	})
	if rep.DeleteRecordsEvents == 0 || rep.DeletedRecords == 0 {
		t.Errorf("DeleteRecords moved no log start (%d events, %d records)", rep.DeleteRecordsEvents, rep.DeletedRecords)
	}
}

func TestEoscheckRetention(t *testing.T) {
	rep := faultSchedule(t, 5*time.Minute, func(c *check.Config) {
		c.RetentionDeletes = 2
		c.Kills = 8
		c.CopyTimeout = 30 * time.Second
	})
	if rep.RetentionEvents == 0 || rep.RetentionDeleted == 0 {
		t.Errorf("short retention moved no log start (%d events, %d records)", rep.RetentionEvents, rep.RetentionDeleted)
	}
}

func TestEoscheckDiskFull(t *testing.T) {
	canMountTmpfs(t)
	rep := faultSchedule(t, 4*time.Minute, func(c *check.Config) { c.DiskFulls = 2 })
	if rep.DiskFulls == 0 || rep.DiskFullRefusing == 0 {
		t.Errorf("%d fills of the data dir, eosproxy logged refusing batches %d times: want both", rep.DiskFulls, rep.DiskFullRefusing)
	}
}

// canMountTmpfs skips the test unless this process may mount a tmpfs.
func canMountTmpfs(t *testing.T) {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs (root only): %v: %s", err, out)
	}
	if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
		t.Fatalf("umount %s: %v: %s", dir, err, out)
	}
}

// TestEoscheckTwoBrokers runs every new fault, and the Java copiers, on a
// real two-broker cluster with replication factor 2: the second broker
// paused (SIGSTOP, longer than replica.lag.time.max.ms, so it drops out of
// the ISR of the partitions it follows and acks=all writes go on without
// it; those it leads stop) and restarted on its data.
func TestEoscheckTwoBrokers(t *testing.T) {
	if secureTier {
		t.Skip("secure tier: the two-broker cluster is plaintext, and eoscheck secures only its in-process backend")
	}
	addr := os.Getenv("EOSPROXY_TEST_KAFKA_2B")
	if addr == "" {
		t.Skip("two-broker real tier skipped: EOSPROXY_TEST_KAFKA_2B is not set (start one with KAFKA_BROKERS=2 integration/kafka/kafka.sh start, on other ports than the single broker's)")
	}
	sh := kafkaSh(t)
	// kafka.sh finds the cluster from these (the run dir and ports).
	run := os.Getenv("EOSPROXY_KAFKA_RUN_2B")
	if run == "" {
		t.Fatal("EOSPROXY_TEST_KAFKA_2B is set without EOSPROXY_KAFKA_RUN_2B (the two-broker cluster's run dir)")
	}
	ksh := "EOSPROXY_KAFKA_RUN=" + shellQuote(run) + " bash " + shellQuote(sh)
	// Broker restarts take up to a minute; a wedged producer is counted
	// two minutes after the schedule.
	rep := faultSchedule(t, 8*time.Minute, func(c *check.Config) {
		c.Upstream = addr
		c.Records = 15_000
		c.Kills = 6
		c.ReplicationFactor = 2
		c.GroupProtocol = "consumer"
		c.Stalls = 1
		c.CommitKills = 2
		c.CleanRestarts = 1
		c.CommitRestarts = 1
		c.DeleteRecords = 1
		c.RetentionDeletes = 1
		c.BrokerPauses = 1
		c.BrokerPause = 8 * time.Second
		c.BrokerPauseCmd = ksh + " pause 2"
		c.BrokerResumeCmd = ksh + " resume 2"
		c.RestartBroker = 1
		c.BrokerRestartCmd = ksh + " restart-node 2"
		c.JavaCopiers = 2
		c.JavaKills = 2
		c.JavaCrashes = 1
		c.KafkaSh = sh
	})
	if rep.BrokerPauses == 0 || rep.BrokerRestarts == 0 {
		t.Errorf("%d broker pauses, %d broker restarts: want both", rep.BrokerPauses, rep.BrokerRestarts)
	}
	// Like DeleteRecords, skipped when the copiers lag behind the input
	// (the broker pauses and restarts): not an error here.
	t.Logf("%d DeleteRecords and %d short retentions moved the input's log start", rep.DeleteRecordsEvents, rep.RetentionEvents)
	if j := rep.JavaCopy; j == nil || j.Finished != 2 {
		t.Errorf("Java copiers: %+v", rep.JavaCopy)
	}
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

package integration

// Tier 4 on the real broker, short schedule: eoscheck's core drives
// idempotent producers and a GroupTransactSession copier through the
// eosproxy binary in front of the real Kafka while SIGKILLing it, and,
// once the input is complete, two of Kafka's own TransactionalMessageCopier
// (Java kafka-clients, a third of their transactions aborted at random),
// each copying one input partition through eosproxy while eosproxy is still
// being killed and each JVM is SIGKILLed once mid-run and started again with
// the same transactional id and group. Then it accounts for every record
// read straight from the backend: each Java output partition must be its
// input partition record for record, and each copier group's offset the
// input's end. Before that, a short retention of the input while the
// producers idle (issue 9) deletes its older part.

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/eosproxy/eosproxy/cmd/eoscheck/check"
)

func TestEoscheckJavaCopiers(t *testing.T) {
	addr := realKafka(t)
	sh := kafkaSh(t)
	if testing.Short() {
		t.Skip("eoscheck with Java copiers takes ~30 s")
	}
	bin := buildProxy(t)
	seed := faultSeed(t)
	// The short retention may hold the producers up to 30 s while the
	// copier catches up.
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	work := eoscheckWorkDir(t, "eoscheck-java-test-", "eosproxy.log, trace.log, java-copier-*.log")
	var progress strings.Builder
	const records, kills, javaCopiers, javaCrashes = 20_000, 5, 2, 2
	rep, err := check.Run(ctx, check.Config{
		Upstream:       addr,
		ProxyBin:       bin,
		Producers:      4,
		Partitions:     6,
		Records:        records,
		Kills:          kills,
		Seed:           seed,
		WorkDir:        work,
		Progress:       &progress,
		Copiers:        1,
		AbortRate:      0.1,
		CopierRestarts: 2,
		Readers:        1,
		CopyTimeout:    time.Minute,
		JavaCopiers:    javaCopiers,
		JavaKills:      3,
		JavaCrashes:    javaCrashes,
		KafkaSh:        sh,
		// While the producers idle, the input's retention deletes its
		// older part, also of the Java copiers' partitions before they
		// start.
		RetentionDeletes: 1,
	})
	t.Logf("eoscheck output:\n%s", progress.String())
	if err != nil {
		t.Fatalf("eoscheck could not run: %v", err)
	}
	if b, err := json.MarshalIndent(rep, "", "  "); err == nil {
		t.Logf("report:\n%s", b)
	}
	j := rep.JavaCopy
	if j == nil {
		t.Fatal("no Java copier report")
	}
	if j.Finished != javaCopiers {
		t.Errorf("%d of %d Java copiers finished; exits %v, errors %v", j.Finished, javaCopiers, j.ExitReasons, j.Errors)
	}
	// Processed (from the copiers' status lines) may fall short: a JVM
	// killed between a commit and its next status line never reports it.
	if j.InputRecords == 0 || j.OutputRecords != j.InputRecords {
		t.Errorf("Java copiers: input %d records, output %d: want every record of their partitions copied once",
			j.InputRecords, j.OutputRecords)
	}
	for _, c := range j.PerCopier {
		if c.GroupOffset != c.InputEnd || c.MaxMessages != c.InputEnd-c.InputStart {
			t.Errorf("Java copier of partition %d: group %s at %d, input ends at %d, told to copy %d", c.Partition, c.Group, c.GroupOffset, c.InputEnd, c.MaxMessages)
		}
	}
	if j.KillsDuring == 0 {
		t.Errorf("eosproxy was not SIGKILLed while the Java copiers copied")
	}
	if j.Crashes != javaCrashes || j.Restarts < javaCrashes {
		t.Errorf("Java copiers: %d SIGKILLed, %d restarts; want %d crashes, each restarted", j.Crashes, j.Restarts, javaCrashes)
	}
	if j.Commits <= 0 || j.Aborts <= 0 {
		t.Errorf("eosproxy logged %d commits and %d aborts of the Java copiers: want some of each", j.Commits, j.Aborts)
	}
	if !j.OutputIsInput || j.Lost+j.Duplicates+j.OrderErrors+j.Unexpected+j.OffsetMismatches != 0 {
		t.Errorf("Java copiers: %d lost, %d duplicates, %d order violations, %d unexpected, %d group offsets short of the input's end; output == input: %v",
			j.Lost, j.Duplicates, j.OrderErrors, j.Unexpected, j.OffsetMismatches, j.OutputIsInput)
	}
	if rep.Kills < kills {
		t.Errorf("%d SIGKILLs, want at least %d", rep.Kills, kills)
	}
	// Skipped when the copier lags behind the input: not an error here
	// (TestEoscheckRetention requires one on kfake).
	t.Logf("%d short retentions deleted %d input records", rep.RetentionEvents, rep.RetentionDeleted)
	if !rep.Valid() {
		t.Errorf("%d anomalies (seed %d; eosproxy logs %s); examples:\n%s\neosproxy warnings and errors: %v",
			rep.Anomalies, rep.Seed, rep.LogFile, strings.Join(rep.Examples, "\n"), rep.ProxyLog)
	}
}

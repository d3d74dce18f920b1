package integration

// Tier 4, short schedule: eoscheck's core drives idempotent producers and
// two transactional consume-transform-produce copiers (GroupTransactSession,
// one group, read_committed; 10% of their transactions aborted on purpose,
// copiers replaced mid-transaction) through the eosproxy binary while
// SIGKILLing and restarting it, dropping its backend connections right
// after requests and making the backend answer some of its Produce and
// OffsetCommit requests with REQUEST_TIMED_OUT or
// NOT_ENOUGH_REPLICAS_AFTER_APPEND although it applied them; a
// read_committed reader reads the copies meanwhile. Then
// it accounts for every record read straight from the backend (kfake
// without the EOS API keys): no loss, no duplicate, no aborted or
// uncommitted read, order kept, output == input, group offsets at the
// input's end.

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/eosproxy/eosproxy/cmd/eoscheck/check"
)

// It runs twice: against kfake without the EOS API keys (commits forwarded
// one batch per partition at a time, cleared of producer fields) and with
// them (commits pipelined under eosproxy's own producer id, as against a
// real Kafka).
func TestEoscheckShortSchedule(t *testing.T) {
	if testing.Short() {
		t.Skip("eoscheck short schedule takes ~30 s")
	}
	bin := buildProxy(t)
	t.Run("backend without EOS", func(t *testing.T) { eoscheckShort(t, bin, false) })
	t.Run("backend with idempotence", func(t *testing.T) { eoscheckShort(t, bin, true) })
}

func eoscheckShort(t *testing.T, bin string, backendIdempotence bool) {
	seed := faultSeed(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	work := eoscheckWorkDir(t, "eoscheck-test-", "eosproxy.log, trace.log")
	var progress strings.Builder
	const records, kills, copiers = 50_000, 10, 2
	cfg := check.Config{
		ProxyBin:         bin,
		Producers:        4,
		Partitions:       6,
		Records:          records,
		Kills:            kills,
		Seed:             seed,
		WorkDir:          work,
		Progress:         &progress,
		Copiers:          copiers,
		AbortRate:        0.1,
		CopierRestarts:   4,
		Readers:          1,
		CopyTimeout:      time.Minute,
		Drops:            true,
		DropRate:         0.02,
		BackendErrors:    true,
		BackendErrorRate: 0.03,

		BackendIdempotence: backendIdempotence,
	}
	tierEoscheck(&cfg)
	rep, err := check.Run(ctx, cfg)
	t.Logf("eoscheck output:\n%s", progress.String())
	if err != nil {
		t.Fatalf("eoscheck could not run: %v", err)
	}
	if b, err := json.MarshalIndent(rep, "", "  "); err == nil {
		t.Logf("report:\n%s", b)
	}
	if rep.Kills < kills || rep.Restarts < kills {
		t.Errorf("%d SIGKILLs and %d restarts, want at least %d", rep.Kills, rep.Restarts, kills)
	}
	if rep.Drops == 0 {
		t.Errorf("no connection between eosproxy and the backend was dropped")
	}
	if rep.BackendErrors == 0 {
		t.Errorf("the backend answered no write with an error: %v", rep.BackendErrorsByKind)
	}
	if rep.Sent != records || rep.Acked+rep.Failed != rep.Sent {
		t.Errorf("sent %d of %d; acked %d + failed %d", rep.Sent, records, rep.Acked, rep.Failed)
	}
	if rep.Acked == 0 || rep.BackendTotal < rep.Acked {
		t.Errorf("acked %d, backend holds %d", rep.Acked, rep.BackendTotal)
	}
	c := rep.Copy
	if c == nil {
		t.Fatal("no copier report")
	}
	if c.Commits == 0 || c.Aborts == 0 || c.Crashed+c.Zombies == 0 {
		t.Errorf("copiers: %d commits, %d aborts on purpose, %d replaced mid-transaction: want some of each", c.Commits, c.Aborts, c.Crashed+c.Zombies)
	}
	if rep.Lost+rep.Duplicates+rep.OrderErrors+rep.Unexpected != 0 {
		t.Errorf("idempotent producers: %d lost, %d duplicates, %d order violations, %d unexpected",
			rep.Lost, rep.Duplicates, rep.OrderErrors, rep.Unexpected)
	}
	if !c.OutputIsInput || c.Lost+c.Duplicates+c.AbortedReads+c.UncommittedReads+c.CommitMissing+c.Unexpected+c.ReaderMismatches+c.OffsetMismatches+c.ZombieCommits != 0 {
		t.Errorf("copiers: %d lost, %d duplicates, %d aborted reads, %d uncommitted reads, %d committed but missing, %d unexpected, %d reader mismatches, %d group offsets short of the input's end, %d fenced commits; output == input: %v",
			c.Lost, c.Duplicates, c.AbortedReads, c.UncommittedReads, c.CommitMissing, c.Unexpected, c.ReaderMismatches, c.OffsetMismatches, c.ZombieCommits, c.OutputIsInput)
	}
	if !rep.Valid() {
		t.Errorf("%d anomalies (seed %d; eosproxy logs %s); examples:\n%s\neosproxy warnings and errors: %v",
			rep.Anomalies, rep.Seed, rep.LogFile, strings.Join(rep.Examples, "\n"), rep.ProxyLog)
	}
}

// eoscheckWorkDir makes the work dir of an eoscheck run (eosproxy's data and
// logs, the trace of transactions and group requests): removed when the
// test passes, kept and named when it fails.
func eoscheckWorkDir(t *testing.T, prefix, keeps string) string {
	t.Helper()
	work, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("kept %s (%s)", work, keeps)
			return
		}
		os.RemoveAll(work)
	})
	return work
}

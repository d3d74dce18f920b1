package integration

// Tier 4, short schedule: eoscheck's core drives idempotent producers
// through the eosproxy binary while SIGKILLing and restarting it, then
// accounts for every record read straight from the backend (kfake without
// the EOS API keys). Idempotent producers only: eosproxy does not implement
// transactions yet.

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/eosproxy/eosproxy/cmd/eoscheck/check"
)

func TestEOSCheckShortSchedule(t *testing.T) {
	if testing.Short() {
		t.Skip("eoscheck short schedule takes ~20 s")
	}
	bin := buildProxy(t)
	seed := faultSeed(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var progress strings.Builder
	const records, kills = 50_000, 10
	rep, err := check.Run(ctx, check.Config{
		ProxyBin:   bin,
		Producers:  4,
		Partitions: 6,
		Records:    records,
		Kills:      kills,
		Seed:       seed,
		WorkDir:    t.TempDir(),
		Progress:   &progress,
	})
	t.Logf("eoscheck output:\n%s", progress.String())
	if err != nil {
		t.Fatalf("eoscheck could not run: %v", err)
	}
	t.Logf("report: %+v", *rep)
	if rep.Kills < kills || rep.Restarts < kills {
		t.Fatalf("%d SIGKILLs and %d restarts, want at least %d", rep.Kills, rep.Restarts, kills)
	}
	if rep.Sent != records || rep.Acked+rep.Failed != rep.Sent {
		t.Fatalf("sent %d of %d; acked %d + failed %d", rep.Sent, records, rep.Acked, rep.Failed)
	}
	if rep.Acked == 0 || rep.BackendTotal < rep.Acked {
		t.Fatalf("acked %d, backend holds %d", rep.Acked, rep.BackendTotal)
	}
	if !rep.Valid() || rep.Lost+rep.Duplicates+rep.OrderErrors+rep.Unexpected != 0 {
		t.Fatalf("anomalies: %d lost, %d duplicates, %d order violations, %d unexpected, %d eosproxy crashes; examples %v (logs %s)",
			rep.Lost, rep.Duplicates, rep.OrderErrors, rep.Unexpected, len(rep.ProxyCrashes), rep.Examples, rep.LogFile)
	}
}

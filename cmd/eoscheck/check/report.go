package check

import (
	"fmt"
	"io"
)

// printTable prints the report as the table eoscheck ends with.
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
	if r.DiskFulls > 0 {
		row("data dir fills below eosproxy's reserve", int64(r.DiskFulls))
		fmt.Fprintf(w, "%-44s %10.1f\n", "  seconds full in all", r.DiskFullSeconds)
		row("  eosproxy logged refusing batches", int64(r.DiskFullRefusing))
	}
	for _, f := range r.DiskFullFailures {
		fmt.Fprintf(w, "DISK FULL FAILURE: %s\n", f)
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
		row("  aborted by the client (rebalance)", c.ForcedAborts-c.ProduceAborts)
		row("  aborted: a record failed to produce", c.ProduceAborts)
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
	if r.Instances > 1 {
		printCluster(w, r)
	}
	printCrashPoints(w, r)
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
	for _, f := range r.ClusterFailures {
		fmt.Fprintf(w, "  cluster: %s\n", f)
	}
	for _, f := range r.CrashPointFailures {
		fmt.Fprintf(w, "  crash points: %s\n", f)
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

// printCluster prints the cluster's rows: instances, faults, failovers and
// the pass conditions on their times.
func printCluster(w io.Writer, r *Report) {
	row := func(name string, v int64) { fmt.Fprintf(w, "%-44s %10d\n", name, v) }
	ms := func(name string, v int64) {
		if v < 0 {
			fmt.Fprintf(w, "%-44s %10s\n", name, "-")
			return
		}
		fmt.Fprintf(w, "%-44s %10.1f\n", name, float64(v)/1000)
	}
	fmt.Fprintf(w, "%-44s %10s\n", "eosproxy cluster "+r.ClusterName, "")
	row("instances", int64(r.Instances))
	var kills, stops, terms, crashes int64
	for _, f := range r.Failovers {
		switch f.How {
		case "kill":
			kills++
		case "stop":
			stops++
		case "term":
			terms++
		case "crash":
			crashes++
		}
	}
	row("owner SIGKILLs", kills)
	if r.CrashPoints != nil {
		row("owner crashes at crash points", crashes)
	}
	row("owner SIGTERMs (clean handovers)", terms)
	row("owner SIGSTOPs past the session timeout", stops)
	row("standby SIGKILLs", int64(r.StandbyKills))
	row("standby SIGTERMs", int64(r.StandbyTerms))
	if r.UnknownOwnerFaults > 0 {
		row("faults while no owner was known", int64(r.UnknownOwnerFaults))
	}
	row("takeovers logged (serving)", int64(r.Takeovers))
	for _, k := range sortedKeys(toInt64(r.DeposedByReason)) {
		row("  deposed: "+k, int64(r.DeposedByReason[k]))
	}
	row("fencings", r.Fencings)
	if a := r.ClusterLog; a != nil {
		row("  cluster log: records", int64(a.Records))
		row("    claims", int64(a.Claims))
		row("    valid sets", int64(a.Sets))
		row("    late writes of deposed owners (void)", int64(a.Superseded))
		row("    other void records", int64(a.OtherVoid))
	}
	row("writes refused: no longer the owner", r.WritesRefused)
	for _, z := range r.Zombies {
		switch {
		case z.DuringCut:
			fmt.Fprintf(w, "%-44s %10s\n", fmt.Sprintf("  zombie %d (cut) deposed", z.Instance), "during it")
		case z.How == "cut":
			ms(fmt.Sprintf("  zombie %d deposed after its cut, s", z.Instance), z.DeposedMs)
		default:
			ms(fmt.Sprintf("  zombie %d deposed after SIGCONT, s", z.Instance), z.DeposedMs)
		}
		row("    writes it refused itself", int64(z.RefusedWrites))
	}
	limit := r.SessionTimeoutMs + 5000
	ms("failover p99, s", r.FailoverP99Ms)
	if r.FailoverP99Ms >= 0 {
		fmt.Fprintf(w, "%-44s %10s\n", fmt.Sprintf("  <= session timeout + 5 s (%.0f s)", float64(limit)/1000), yesNo(r.FailoverP99Ms <= limit))
	}
	ms("clean handover max, s", r.CleanHandoverMaxMs)
	if r.CleanHandoverMaxMs >= 0 {
		fmt.Fprintf(w, "%-44s %10s\n", "  <= 3 s", yesNo(r.CleanHandoverMaxMs <= 3000))
	}
	for _, f := range r.Failovers {
		took := "none"
		if f.TookMs >= 0 {
			took = fmt.Sprintf("%.1fs -> instance %d", float64(f.TookMs)/1000, f.NewOwner)
		}
		if f.How == "term" {
			took += fmt.Sprintf(" (exited after %.1fs)", float64(f.ExitedMs)/1000)
		}
		how := f.How
		if f.Point != "" {
			how += " at " + f.Point
		}
		fmt.Fprintf(w, "  %6.1fs %-4s of instance %d: %s\n", f.At, how, f.Victim, took)
	}
}

func toInt64(m map[string]int) map[string]int64 {
	out := make(map[string]int64, len(m))
	for k, v := range m {
		out[k] = int64(v)
	}
	return out
}

package check

import (
	"context"
	"fmt"
	"os"
	"time"
)

// finish runs after the fault schedule: it lets the producers, copiers,
// readers and Java copiers finish (drain), then judges what the backend
// holds (judge) and prints the table.
func (r *run) finish(ctx context.Context) error {
	if err := r.drain(ctx); err != nil {
		return err
	}
	if err := r.judge(ctx); err != nil {
		return err
	}
	cfg, rep := r.cfg, r.rep
	if cfg.DiskFulls > 0 {
		rep.DiskFullRefusing = r.pp.logs.countContaining("almost full")
		switch {
		case rep.DiskFulls == 0:
			rep.DiskFullFailures = append(rep.DiskFullFailures, "no disk fill: the producers were done first")
		case rep.DiskFullRefusing == 0:
			rep.DiskFullFailures = append(rep.DiskFullFailures, fmt.Sprintf("%d disk fills, and eosproxy never logged its data dir almost full: the reserve was not exercised", rep.DiskFulls))
		}
	}
	printTable(r.out, rep)
	if cfg.WorkDir == "" && rep.Valid() && cfg.LogFile == "" {
		if r.cl != nil {
			r.cl.stopAll()
		} else {
			r.logFile.Close()
		}
		os.RemoveAll(r.work)
		rep.LogFile += " (removed: no anomaly)"
	}
	return nil
}

// drain waits for the producers' records to be answered, the copiers to
// commit the whole input, the readers to read the output and the Java
// copiers to finish, each bounded.
func (r *run) drain(ctx context.Context) error {
	cfg, rep, out, cw := r.cfg, r.rep, r.out, r.cw
	// A producer whose Produce calls are still unanswered this long after
	// the faults is wedged (eosproxy keeps answering it retriable errors):
	// an anomaly, counted; its buffered records are then aborted, so the
	// input no longer changes, and the check goes on.
	if r.producersStuck {
		// Their Produce calls waiting for buffer space fail; what they
		// buffered is closed away below.
		r.stopProducers()
		r.prodWG.Wait()
		r.flushTimeout = time.Second
		fmt.Fprintf(out, "the producers' records were not all answered %v after the rest of the schedule\n", max(cfg.CopyTimeout, time.Minute)+time.Minute)
	}
	flushCtx, cancel := context.WithTimeout(ctx, r.flushTimeout)
	r.onReturn(cancel)
	for _, p := range r.prods {
		if err := p.cl.Flush(flushCtx); err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("flush: %v (%d acked, %d failed)", err, r.acked.Load(), r.failed.Load())
			}
			rep.Unanswered = r.inflight.Load()
			fmt.Fprintf(out, "producers wedged: %d Produce calls unanswered; closing the producers\n", rep.Unanswered)
			r.trace.printf("producers wedged: %d Produce calls unanswered after %v", rep.Unanswered, r.flushTimeout)
			// Closed, not AbortBufferedRecords: that waits for the
			// requests in flight, which eosproxy keeps answering with
			// retriable errors.
			for _, q := range r.prods {
				q.close()
			}
			break
		}
	}
	r.wg.Wait()
	rep.Sent, rep.Acked, rep.Failed = min(r.sent.Load(), int64(cfg.Records)), r.acked.Load(), r.failed.Load()
	if p := r.firstErr.Load(); p != nil {
		fmt.Fprintf(out, "first produce failure: %s\n", *p)
	}

	// The copiers run until the group's committed offsets, read from the
	// backend, reach the input's end offsets; the readers until they have
	// read the output up to its end.
	if cw != nil {
		done, err := waitCopied(ctx, r.adm, rep.Topic, rep.Copy.Group, cfg.CopyTimeout, r.tlog)
		if err != nil {
			return err
		}
		rep.Copy.CopySeconds = time.Since(r.faultsOver).Seconds()
		if !done {
			fmt.Fprintf(out, "copiers did not commit the whole input (group offsets at the input's end) within %v, or stalled for %v\n", cfg.CopyTimeout, copyStall)
		}
		cw.finish()
		if err := waitReaders(ctx, r.adm, rep.Copy.OutputTopic, r.readers, time.Minute); err != nil {
			fmt.Fprintf(out, "readers: %v\n", err)
		}
		r.stopReaders()
		for _, rd := range r.readers {
			<-rd.done
		}
	}
	if jw := r.jw; jw != nil {
		// Like the Go copiers, the Java copiers have CopyTimeout after
		// the fault schedule to finish.
		select {
		case <-jw.done:
		case <-time.After(time.Until(r.faultsOver.Add(cfg.CopyTimeout))):
			fmt.Fprintf(out, "java copiers did not finish within %v after the fault schedule; stopped\n", cfg.CopyTimeout)
			jw.note("java copiers did not finish within %v after the fault schedule; stopped", cfg.CopyTimeout)
		case <-ctx.Done():
			return ctx.Err()
		}
		jw.stop()
	}
	if r.berrs != nil {
		r.berrs.setEnabled(false)
	}
	r.stopProgress()
	return nil
}

// judge is the verdict, from the backend directly.
func (r *run) judge(ctx context.Context) error {
	rep, adm, cw, out := r.rep, r.adm, r.cw, r.out
	// Retention may have deleted more after its last event was counted.
	if r.deleted.retentionEvents > 0 {
		starts, err := adm.ListStartOffsets(ctx, rep.Topic)
		if err == nil {
			err = starts.Error()
		}
		if err != nil {
			return fmt.Errorf("start offsets: %w", err)
		}
		r.deleted.settle(starts)
	}
	rep.RetentionDeleted = r.deleted.retentionRecords
	seen, err := verdict(ctx, r.backend, rep, r.prods, adm, r.deleted.parts, r.cfg.Security.opts()...)
	if err != nil {
		return err
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
		if err := copyVerdict(ctx, r.backend, rep, r.prods, seen, r.tlog, r.readers, adm, r.cfg.Security.opts()...); err != nil {
			return err
		}
		rep.Anomalies += rep.Copy.anomalies()
	}
	if r.jw != nil {
		if err := javaCheck(ctx, out, r.backend, rep, r.jw, adm, r.txnEnds(), time.Minute); err != nil {
			return err
		}
		rep.Anomalies += rep.JavaCopy.anomalies()
	}
	if r.drops != nil {
		rep.Drops, rep.DropsByKey = r.drops.drops(), r.drops.dropsByKey()
	}
	if r.berrs != nil {
		rep.BackendErrors, rep.BackendErrorsByKind = r.berrs.total(), r.berrs.byKind()
	}
	rep.ProxyLog = map[string]int{}
	for _, p := range r.procs() {
		for msg, n := range p.logs.notableCounts() {
			rep.ProxyLog[msg] += n
		}
		rep.ProxyCrashes = append(rep.ProxyCrashes, p.logs.crashed()...)
	}
	if r.cl != nil {
		a, err := r.cl.auditLog(ctx, r.backend, r.cfg.Security.opts()...)
		if err != nil {
			return err
		}
		rep.ClusterLog = a
		r.cl.report(rep, r.cfg)
	}
	r.crash.report(rep)
	rep.Seconds = time.Since(r.start).Seconds()
	if len(rep.ProxyCrashes) > 0 {
		rep.Anomalies += int64(len(rep.ProxyCrashes))
	}
	return nil
}

// txnEnds are the transaction ends every eosproxy process logged, by
// transactional id; nil when none logged at debug level.
func (r *run) txnEnds() map[string]txnEnds {
	var all map[string]txnEnds
	for _, p := range r.procs() {
		ends := p.logs.txnEnds()
		if ends == nil {
			continue
		}
		if all == nil {
			all = map[string]txnEnds{}
		}
		for id, e := range ends {
			a := all[id]
			a.commits += e.commits
			a.aborts += e.aborts
			a.timedOut += e.timedOut
			all[id] = a
		}
	}
	return all
}

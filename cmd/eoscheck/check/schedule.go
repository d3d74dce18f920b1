package check

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// idleFaultKind is a fault run between two restarts of eosproxy while the
// producers idle (holdProducers), spread over the kill schedule; eosproxy
// is restarted soon after.
type idleFaultKind struct {
	times func(Config) int // how many in a run
	note  string           // the report's note, with times for %d
	// due reports whether attempt done+1 of times comes before the
	// restart after kills of planned restarts.
	due   func(done, kills, times, planned int) bool
	kfake []kfake.Opt                                   // kfake needs them for the fault
	input map[string]string                             // configs of the input topic it needs
	run   func(ctx context.Context, f *idleFault) error // skips (traced) what it cannot do safely
}

// idleFaultKinds are the faults run while the producers idle, in the order
// the schedule tries them; a new one is an entry here and its run
// function.
var idleFaultKinds = []idleFaultKind{
	{
		times: func(c Config) int { return c.DeleteRecords },
		note:  ", %d DeleteRecords on the input while the producers idle",
		due:   func(done, kills, times, planned int) bool { return (done+1)*planned <= (kills+1)*(times+1) },
		run:   deleteWhileIdle,
	},
	{
		times: func(c Config) int { return c.RetentionDeletes },
		note:  ", %d short retentions of the input while the producers idle",
		// A kill before DeleteRecords' with as many of each: the
		// producers of a short run are often done by DeleteRecords'
		// second kill, and a later slot never came (soak-real: 0 of 40).
		due: func(done, kills, times, planned int) bool { return (done+1)*planned <= (kills+2)*(times+1) },
		// kfake applies retention every log.cleaner.backoff.ms (1 h by
		// default).
		kfake: []kfake.Opt{kfake.BrokerConfigs(map[string]string{"log.cleaner.backoff.ms": "100"})},
		// Short segments, so that retention can delete part of the input.
		input: map[string]string{"segment.ms": retentionSegmentMs},
		run:   retentionWhileIdle,
	},
}

// copierRequest is a fault the copiers are asked for after a restart of
// eosproxy, spread over the kill schedule (request n of times after kill
// ceil(n*Kills/times)); they act on it in their next transaction.
type copierRequest struct {
	times func(Config) int
	ask   func(cw *copyWork, n, copiers int) // n counts from 0
}

// copierRequests are asked in this order after each restart; a new such
// fault is an entry here and its handling in the copier.
var copierRequests = []copierRequest{
	{ // replaced mid-transaction
		times: func(c Config) int { return c.CopierRestarts },
		ask:   func(cw *copyWork, n, copiers int) { cw.requestRestart(n % copiers) },
	},
	{ // stalled past the session timeout
		times: func(c Config) int { return c.Stalls },
		ask:   func(cw *copyWork, n, copiers int) { cw.requestStall(n % copiers) },
	},
	{ // replaced right after a commit
		times: func(c Config) int { return c.CommitRestarts },
		// The other slot than the stalls and mid-transaction
		// replacements of the same kill.
		ask: func(cw *copyWork, n, copiers int) { cw.requestCommitRestart((n + 1) % copiers) },
	},
}

// idleFault is what a fault run while the producers idle works with.
type idleFault struct {
	idle     *sync.RWMutex // write-locked: the producers pause between ticks
	inflight *atomic.Int64 // Produce calls not yet answered
	deleted  *deletedInput
	backend  []string
	direct   *kgo.Client
	adm      *kadm.Client
	rep      *Report
	cfg      Config
	trace    *tracer
	out      io.Writer
}

// holdProducers write-locks idle, so that the producers pause between
// ticks, and waits up to 20 s until every Produce is answered. held is
// false when the producers did not pause within a minute (a producer
// blocked in Produce holds its read lock: its buffer is full and eosproxy
// not answering); the caller unlocks idle when held. left is how many
// Produce calls are still unanswered.
func holdProducers(ctx context.Context, idle *sync.RWMutex, inflight *atomic.Int64) (left int64, held bool, err error) {
	t0 := time.Now()
	for !idle.TryLock() {
		if time.Since(t0) > time.Minute {
			return 0, false, nil
		}
		select {
		case <-ctx.Done():
			return 0, false, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
	for inflight.Load() > 0 && time.Since(t0) < 20*time.Second {
		select {
		case <-ctx.Done():
			idle.Unlock()
			return 0, false, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return inflight.Load(), true, nil
}

// waitCopiersAtEnd waits up to 30 s until the copiers' group has committed
// the input up to its end in the backend; true when it has (or there are
// no copiers).
func waitCopiersAtEnd(ctx context.Context, adm *kadm.Client, rep *Report) (bool, error) {
	if rep.Copy == nil {
		return true, nil
	}
	return pollWithin(ctx, 30*time.Second, func() bool {
		ok, err := offsetsAtEnd(ctx, adm, rep.Topic, rep.Copy.Group)
		return err == nil && ok
	})
}

// schedule is the fault schedule: SIGKILL and restart at once on the same
// data dir and ports, until the records are sent, the duration is over and
// at least Kills kills were done, and, with Java copiers, until they are
// done or JavaKills kills hit them while they copied. Copier replacements
// and broker restarts are spread over the first Kills kills (broker
// restart j of RestartBroker before kill ceil(j*Kills/(RestartBroker+1)));
// eosproxy stays up while the broker is down. Stalls, replacements after a
// commit, the idle faults (idleFaultKinds) and broker pauses are spread the
// same way; restarts timed to a commit are armed while fewer than their
// share of the kills so far were, and the next commit a copier asks for
// then triggers the restart; the clean (SIGTERM) restarts are spread over
// the others.
func (r *run) schedule(ctx context.Context) error {
	cfg, rep, trace, out, cw, pp := r.cfg, r.rep, r.trace, r.out, r.cw, r.pp
	var runErr error
	deadline := time.After(cfg.Duration)
	durationOver := cfg.Duration <= 0
	producersDone := false
	asked := make([]int, len(copierRequests))
	timerClean := 0 // SIGTERM restarts not timed to a commit
	// Some attempts delete nothing (copiers not yet committed) or are
	// skipped.
	idleAttempts := make([]int, len(idleFaultKinds))
	idleFaults := &idleFault{idle: &r.idle, inflight: &r.inflight, deleted: &r.deleted, backend: r.backend, direct: r.direct,
		adm: r.adm, rep: rep, cfg: cfg, trace: trace, out: out}
	// A broker pause runs on its own, so that the pause lasts what it
	// should whatever the schedule waits for meanwhile.
	var pausing atomic.Bool
	var pauseWG sync.WaitGroup
	var pauseErr atomic.Pointer[string]
	pauseLog := filepath.Join(r.work, "broker-pauses.log")
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
	r.onReturn(pauseWG.Wait)
	// A disk fill too, for the same reason.
	var filling atomic.Bool
	var fillErr atomic.Pointer[string]
	fillDataDir := func(n int) {
		filling.Store(true)
		pauseWG.Add(1)
		go func() {
			defer pauseWG.Done()
			defer filling.Store(false)
			empty, filled, err := fillDisk(r.dataDir, proxyReserve/2)
			if err != nil {
				msg := fmt.Sprintf("disk full %d: %v", n, err)
				fillErr.CompareAndSwap(nil, &msg)
				return
			}
			trace.printf("disk full %d: %d bytes filled, %d MiB left free, for %v", n, filled, proxyReserve/2>>20, cfg.DiskFullFor)
			fmt.Fprintf(out, "disk full %d: data dir filled to %d MiB free for %v\n", n, proxyReserve/2>>20, cfg.DiskFullFor)
			select {
			case <-time.After(cfg.DiskFullFor):
			case <-ctx.Done():
			}
			// Emptied even when the run is cancelled.
			if err := empty(); err != nil {
				msg := fmt.Sprintf("disk full %d: empty: %v", n, err)
				fillErr.CompareAndSwap(nil, &msg)
				return
			}
			trace.printf("disk full %d: emptied", n)
			fmt.Fprintf(out, "disk full %d: emptied\n", n)
		}()
	}
	soon := false // the next restart follows at once (after an idle fault)
	// A wedged producer never gets all its records answered: the schedule
	// waits for the producers to finish (and, with Java copiers, for every
	// Produce to be answered: they start only then) at most flushTimeout
	// after the rest of it is over.
	r.flushTimeout = max(cfg.CopyTimeout, time.Minute) + time.Minute
	var restOver time.Time
	producing, inputDone := r.producing, r.inputDone
	for runErr == nil && (!producersDone || !durationOver || r.kills < cfg.Kills || !r.javaOver()) {
		waitingForInput := !producersDone || (cfg.JavaCopiers > 0 && r.jw == nil)
		if waitingForInput && durationOver && r.kills >= cfg.Kills {
			if restOver.IsZero() {
				restOver = time.Now()
			} else if time.Since(restOver) > r.flushTimeout {
				r.producersStuck = true
				break
			}
		}
		interval := cfg.KillEvery
		if interval <= 0 {
			interval = 300*time.Millisecond + time.Duration(r.rng.Int64N(int64(1200*time.Millisecond)))
		}
		if soon {
			interval = 100*time.Millisecond + time.Duration(r.rng.Int64N(int64(300*time.Millisecond)))
			soon = false
		}
		var hook chan struct{}
		if cw != nil && rep.CommitKills < cfg.CommitKills && rep.CommitKills*max(cfg.Kills, 1) <= r.kills*cfg.CommitKills {
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
				time.Sleep(time.Duration(r.rng.Int64N(int64(30 * time.Millisecond))))
				break wait
			case <-producing:
				producing = nil
				producersDone = true
			case <-deadline:
				deadline = nil
				durationOver = true
			case <-inputDone:
				inputDone = nil
				if err := r.startJava(ctx); err != nil {
					runErr = err
					break wait
				}
				r.javaA.Store(r.jw)
			case <-r.javaDone:
				r.javaDone = nil
			case <-ctx.Done():
				runErr = ctx.Err()
				break wait
			}
		}
		timer.Stop()
		if runErr != nil {
			break
		}
		if producersDone && durationOver && r.kills >= cfg.Kills && r.javaOver() {
			break
		}
		// Not while a broker is paused (the restart may stop the paused
		// one, whose resume would then fail).
		for !pausing.Load() && rep.BrokerRestarts < cfg.RestartBroker && (rep.BrokerRestarts+1)*max(cfg.Kills, 1) <= (r.kills+1)*(cfg.RestartBroker+1) {
			n := rep.BrokerRestarts + 1
			trace.printf("broker restart %d: stopping the broker", n)
			r.brokerDown.Store(true)
			fmt.Fprintf(out, "broker restart %d: %s\n", n, cfg.BrokerRestartCmd)
			d, err := restartBroker(ctx, cfg.BrokerRestartCmd, filepath.Join(r.work, "broker-restarts.log"))
			r.brokerDown.Store(false)
			if err != nil {
				trace.printf("broker restart %d failed after %v: %v", n, d.Round(time.Millisecond), err)
				runErr = fmt.Errorf("broker restart %d: %w", n, err)
				break
			}
			rep.BrokerRestarts = n
			rep.BrokerRestartSeconds = max(rep.BrokerRestartSeconds, d.Seconds())
			r.brokerRestartsA.Store(int64(n))
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
		if !pausing.Load() && rep.BrokerPauses < cfg.BrokerPauses && (rep.BrokerPauses+1)*max(cfg.Kills, 1) <= (r.kills+1)*(cfg.BrokerPauses+1) {
			rep.BrokerPauses++
			rep.BrokerPauseSeconds += cfg.BrokerPause.Seconds()
			pauseBroker(rep.BrokerPauses)
		}
		if p := fillErr.Load(); p != nil {
			runErr = errors.New(*p)
			break
		}
		// Not while the producers are done: nothing would ask eosproxy
		// to take a batch.
		if !filling.Load() && !producersDone && rep.DiskFulls < cfg.DiskFulls && (rep.DiskFulls+1)*max(cfg.Kills, 1) <= (r.kills+1)*(cfg.DiskFulls+1) {
			rep.DiskFulls++
			rep.DiskFullSeconds += cfg.DiskFullFor.Seconds()
			fillDataDir(rep.DiskFulls)
		}
		// Stop j of InstanceStops before kill ceil(j*Kills/(InstanceStops+1)).
		for r.cl != nil && r.cl.stops < cfg.InstanceStops && (r.cl.stops+1)*max(cfg.Kills, 1) <= (r.kills+1)*(cfg.InstanceStops+1) {
			if err := r.cl.isolateOwner(ctx, cw, "stop"); err != nil {
				runErr = err
				break
			}
		}
		// Cuts the same way, between the stops.
		for r.cl != nil && runErr == nil && r.cl.cuts < cfg.InstanceCuts && (2*r.cl.cuts+1)*max(cfg.Kills, 1) <= (2*r.kills+1)*(cfg.InstanceCuts+1) {
			if err := r.cl.isolateOwner(ctx, cw, "cut"); err != nil {
				runErr = err
				break
			}
		}
		if runErr != nil {
			break
		}
		// Not while a broker is paused: the producers' Produce calls to
		// its partitions would keep them idle for the whole pause.
		for i, f := range idleFaultKinds {
			times := f.times(cfg)
			if producersDone || pausing.Load() || idleAttempts[i] >= times || !f.due(idleAttempts[i], r.kills, times, max(cfg.Kills, 1)) {
				continue
			}
			idleAttempts[i]++
			if err := f.run(ctx, idleFaults); err != nil {
				runErr = err
				break
			}
			soon = true
		}
		if runErr != nil {
			break
		}
		clean := false
		if atCommit {
			rep.CommitKills++
			clean = rep.CommitKills%2 == 1
			if clean {
				rep.CommitKillsClean++
			}
		} else if timerClean < cfg.CleanRestarts && timerClean*max(cfg.Kills, 1) <= r.kills*cfg.CleanRestarts {
			timerClean++
			clean = true
		}
		if r.cl != nil {
			// The victim is started again (and, an owner, succeeded)
			// before fault returns.
			unclean, err := r.cl.fault(clean, atCommit)
			if err != nil {
				runErr = err
				break
			}
			if clean {
				rep.CleanRestarts++
				if unclean != "" {
					rep.CleanStopErrors = append(rep.CleanStopErrors, unclean)
					trace.printf("%s", unclean)
				}
			}
		} else if clean {
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
		r.kills++
		r.killsA.Store(int64(r.kills))
		if r.jw != nil && r.jw.copying() {
			r.javaKills++
		}
		how := "SIGKILLed"
		if clean {
			how = "stopped with SIGTERM"
		}
		if atCommit {
			how += " as a copier committed"
		}
		trace.printf("eosproxy %s (kill %d)", how, r.kills)
		if r.cl == nil {
			if _, err := pp.start(); err != nil {
				runErr = err
				break
			}
		}
		if cw != nil {
			for i, q := range copierRequests {
				for times := q.times(cfg); asked[i] < times && asked[i]*max(cfg.Kills, 1) < r.kills*times; asked[i]++ {
					q.ask(cw, asked[i], cfg.Copiers)
				}
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
	rep.DeleteRecordsEvents, rep.DeletedRecords = r.deleted.events, r.deleted.records
	rep.RetentionEvents = r.deleted.retentionEvents
	rep.Kills = r.kills
	for _, p := range r.procs() {
		rep.Restarts += p.runCount() - 1
	}
	if rep.JavaCopy != nil {
		rep.JavaCopy.KillsDuring = r.javaKills
	}
	if r.drops != nil {
		r.drops.setEnabled(false)
	}
	if runErr != nil {
		return runErr
	}
	r.faultsOver = time.Now()
	return nil
}

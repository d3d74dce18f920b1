package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Transactional produce (the txn-* workloads): eosproxy as the transaction
// coordinator against the same client using the backend's native
// transactions. The target: committed throughput >= txnTarget x
// direct, commit p99 <= direct + txnCommitSlackMs.
const (
	txnRecordSize = 1024
	// txnTimeout is the producer's transaction.timeout.ms: long against any
	// one transaction of these workloads (at most a few hundred ms), well
	// under Kafka's default transaction.max.timeout.ms of 15 minutes.
	txnTimeout = 60 * time.Second
	// txnBufferedBytes bounds what the client buffers: Produce blocks once
	// this much is unacknowledged. With "produce as fast as possible" the
	// buffer is full whenever a commit is due, so its size is what the
	// flush before each commit has to send; 8 MiB keeps a full pipe (five
	// requests of up to 1 MiB in flight per broker) without making every
	// 100 ms transaction mostly a flush of a large backlog.
	txnBufferedBytes = 8 << 20
	txnTarget        = 0.9 // of Apache Kafka's native transactions
	txnTargetKfake   = 0.7 // of kfake's, whose native path costs almost nothing
	txnCommitSlackMs = 5.0
)

// txnWorkload is a transactional producer committing every interval (when
// every > 0) or every records records (when records > 0).
//
// Each phase runs one franz-go transactional producer (kgo's default
// idempotent producer with a transactional.id unique to the phase, so no
// phase fences or waits on another's, and a 60 s transaction timeout) that
// loops: BeginTransaction; Produce 1 KiB records asynchronously as fast as
// it can until the commit is due; Flush; EndTransaction(TryCommit). The
// direct side uses the backend's native transactions (kfake's or Apache
// Kafka's coordinator); the proxy side uses eosproxy's.
//
// Measured, over the transactions that begin in the measured part of the
// phase: committed records/s (records count only once EndTransaction has
// committed their transaction; any failed record or commit fails the phase)
// and two latencies per transaction: "commit", the EndTransaction call
// alone, after Flush has returned, i.e. only what ending the transaction
// costs (for eosproxy: forwarding the buffered batches to the backend; for
// Kafka: writing the markers); and "flush+commit", from the moment the
// commit is due to EndTransaction's return, which adds sending what the
// client still had buffered. The headline rows are commit p50/p99; with
// some 5-50 transactions per second a phase's p99 is close to its slowest
// transaction, so judge it over several rounds.
func txnWorkload(name string, every time.Duration, records int) *workload {
	trigger := fmt.Sprintf("every %v", every)
	if records > 0 {
		trigger = fmt.Sprintf("every %d records (flush, then commit)", records)
	}
	return &workload{
		name:  name,
		about: fmt.Sprintf("transactional producer, 1 KiB records produced async as fast as possible, EndTransaction(TryCommit) %s; commit = EndTransaction after Flush", trigger),
		phase: func(ctx context.Context, b *bench, slot string, seeds []string, topic string) (metrics, error) {
			return txnPhase(ctx, b, name, slot, seeds, topic, every, records)
		},
		cleanup: trimTopic,
		rows: []row{
			{label: name + " committed", metric: "rec/s", unit: "rec/s", also: "MB/s", alsoUnit: "MB/s", minRatio: txnTarget},
			{label: name + " commit p50", metric: "commit p50 ms", unit: "ms", latency: true},
			{label: name + " commit p99", metric: "commit p99 ms", unit: "ms", latency: true, maxDiffMs: txnCommitSlackMs},
			{label: name + " flush+commit p99", metric: "flush+commit p99 ms", unit: "ms", latency: true},
			{label: name + ": produce request p50", metric: "req p50 ms", unit: "ms", latency: true},
			{label: name + ": produce request p99", metric: "req p99 ms", unit: "ms", latency: true},
			{label: name + ": produce request p999", metric: "req p999 ms", unit: "ms", latency: true},
		},
		txn: true,
	}
}

// txnPhase runs one transactional phase. Whatever the path does, it returns
// by itself: every call it makes is bound by ctx (runPhase's deadline), and
// should the client still not return, the phase gives up a few seconds
// after the deadline with an error naming the step it was stuck in.
func txnPhase(ctx context.Context, b *bench, name, slot string, seeds []string, topic string, every time.Duration, records int) (metrics, error) {
	id := fmt.Sprintf("eosbench-%s-%s-%s-%08x", name, b.runID, slot, rand.Uint32())
	hook := newReqStats(produceKey)
	cl, err := kgo.NewClient(append(idemProducerOpts(seeds, topic),
		kgo.WithHooks(hook),
		kgo.TransactionalID(id),
		kgo.TransactionTimeout(txnTimeout),
		kgo.MaxBufferedBytes(txnBufferedBytes),
		kgo.MaxBufferedRecords(2*txnBufferedBytes/txnRecordSize),
	)...)
	if err != nil {
		return nil, err
	}
	var step atomic.Value
	step.Store("starting")
	type result struct {
		m   metrics
		err error
	}
	done := make(chan result, 1)
	go func() {
		m, err := txnLoop(ctx, b, cl, hook, &step, every, records)
		step.Store("closing the client")
		cl.Close()
		done <- result{m, err}
	}()
	select {
	case r := <-done:
		return r.m, r.err
	case <-ctx.Done():
	}
	select {
	case r := <-done:
		return r.m, r.err
	case <-time.After(5 * time.Second):
		// The client goroutine is abandoned; the run goes on without it.
		return nil, fmt.Errorf("transactional producer %s stuck %s after the phase's deadline (%v)", id, step.Load(), ctx.Err())
	}
}

func txnLoop(ctx context.Context, b *bench, cl *kgo.Client, hook *produceStats, step *atomic.Value, every time.Duration, records int) (metrics, error) {
	value := recordValues(txnRecordSize) // kgo does not modify a record's value
	var failed firstErr
	var anyFailed atomic.Bool // cheaper than failed.get on every record
	promise := func(_ *kgo.Record, err error) {
		if err != nil {
			failed.set(err)
			anyFailed.Store(true)
		}
	}
	var commit, flushCommit []time.Duration
	var committed int64
	var first, last time.Time
	// The measured part begins with the first transaction that begins after
	// the warm-up and lasts --phase from there: a slow first transaction
	// (a real broker creating __transaction_state, say) delays it rather
	// than eating it.
	measureFrom := time.Now().Add(warmUp(b.cfg.phase))
	var end time.Time
	for txn := 1; ; txn++ {
		begin := time.Now()
		if !end.IsZero() && !begin.Before(end) {
			break
		}
		if end.IsZero() && !begin.Before(measureFrom) {
			end = begin.Add(b.cfg.phase)
			b.markStart()
			hook.measure(true)
		}
		step.Store(fmt.Sprintf("in BeginTransaction (transaction %d)", txn))
		if err := cl.BeginTransaction(); err != nil {
			return nil, fmt.Errorf("transaction %d: begin: %w", txn, err)
		}
		step.Store(fmt.Sprintf("producing (transaction %d)", txn))
		n := 0
		for ctx.Err() == nil && !anyFailed.Load() {
			if every > 0 && time.Since(begin) >= every || records > 0 && n >= records {
				break
			}
			cl.Produce(ctx, &kgo.Record{Value: value()}, promise)
			n++
		}
		due := time.Now()
		step.Store(fmt.Sprintf("in Flush (transaction %d, %d records)", txn, n))
		err := cl.Flush(ctx)
		flushed := time.Now()
		if err == nil {
			err = failed.get()
		}
		if err != nil {
			abortQuietly(cl)
			return nil, fmt.Errorf("transaction %d: produce: %w", txn, err)
		}
		step.Store(fmt.Sprintf("in EndTransaction(TryCommit) (transaction %d, %d records)", txn, n))
		if err := cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
			abortQuietly(cl)
			return nil, fmt.Errorf("transaction %d: commit of %d records: %w", txn, n, err)
		}
		ended := time.Now()
		if begin.Before(measureFrom) {
			continue
		}
		if first.IsZero() {
			first = begin
		}
		last = ended
		committed += int64(n)
		commit = append(commit, ended.Sub(flushed))
		flushCommit = append(flushCommit, ended.Sub(due))
	}
	b.markEnd()
	hook.measure(false)
	if len(commit) == 0 {
		return nil, errors.New("no transaction committed in the measured part of the phase")
	}
	secs := last.Sub(first).Seconds()
	recs := float64(committed) / secs
	m := metrics{
		"rec/s":               recs,
		"MB/s":                recs * txnRecordSize / 1e6,
		"txn/s":               float64(len(commit)) / secs,
		"rec/txn":             float64(committed) / float64(len(commit)),
		"commit p50 ms":       quantileMs(commit, 0.50),
		"commit p99 ms":       quantileMs(commit, 0.99),
		"flush+commit p50 ms": quantileMs(flushCommit, 0.50),
		"flush+commit p99 ms": quantileMs(flushCommit, 0.99),
	}
	hook.latencies(m)
	return m, nil
}

// abortQuietly tries, briefly, to abort a transaction the phase gives up on,
// so that a real broker does not keep it open until it times out.
func abortQuietly(cl *kgo.Client) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cl.AbortBufferedRecords(ctx)
	cl.EndTransaction(ctx, kgo.TryAbort)
}

// quantileMs is the q-quantile of samples (nearest rank below), in ms.
func quantileMs(samples []time.Duration, q float64) float64 {
	s := slices.Clone(samples)
	slices.Sort(s)
	return float64(s[int(q*float64(len(s)-1))]) / 1e6
}

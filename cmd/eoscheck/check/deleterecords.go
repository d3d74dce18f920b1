package check

// DeleteRecords on the input while the producers idle (issue 9): the
// producers stop sending and every Produce is answered; then the input's
// log start is moved up (DeleteRecords, straight to the backend) to what
// the copiers' group has committed in the backend (nothing not yet copied
// is deleted; without copiers, to the end), so the offsets eosproxy last
// saw the idle producers write fall below the log start; then they send
// again, and the next restart of eosproxy follows soon, while their first
// batches after the pause are in flight. What is deleted is read first and
// kept, so the verdict accounts for it as if it were still there.

import (
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// deletedInput is what DeleteRecords removed from the input, by partition,
// in offset order.
type deletedInput struct {
	events  int
	records int64
	parts   map[int32][]*kgo.Record
}

// deleteInput moves the input's log start up to keep (by partition; a
// partition not in keep is left alone), first reading and keeping what it
// deletes. It returns how many records it deleted.
func (d *deletedInput) deleteInput(ctx context.Context, backend []string, adm *kadm.Client, topic string, keep map[int32]int64) (int64, error) {
	starts, err := adm.ListStartOffsets(ctx, topic)
	if err != nil {
		return 0, fmt.Errorf("start offsets: %w", err)
	}
	if err := starts.Error(); err != nil {
		return 0, fmt.Errorf("start offsets: %w", err)
	}
	ranges := map[int32][2]int64{}
	for p, to := range keep {
		s, ok := starts.Lookup(topic, p)
		if ok && to > s.Offset {
			ranges[p] = [2]int64{s.Offset, to}
		}
	}
	if len(ranges) == 0 {
		return 0, nil
	}
	recs, err := readRanges(ctx, backend, topic, ranges)
	if err != nil {
		return 0, err
	}
	offs := kadm.Offsets{}
	for p, r := range ranges {
		offs.AddOffset(topic, p, r[1], -1)
	}
	resps, err := adm.DeleteRecords(ctx, offs)
	if err != nil {
		return 0, fmt.Errorf("DeleteRecords: %w", err)
	}
	if err := resps.Error(); err != nil {
		return 0, fmt.Errorf("DeleteRecords: %w", err)
	}
	if d.parts == nil {
		d.parts = map[int32][]*kgo.Record{}
	}
	var n int64
	for p, rs := range recs {
		d.parts[p] = append(d.parts[p], rs...)
		n += int64(len(rs))
	}
	d.events++
	d.records += n
	return n, nil
}

// readRanges reads [from, to) of each partition of topic straight from the
// backend.
func readRanges(ctx context.Context, backend []string, topic string, ranges map[int32][2]int64) (map[int32][]*kgo.Record, error) {
	offs := map[int32]kgo.Offset{}
	left := map[int32]int64{}
	for p, r := range ranges {
		offs[p] = kgo.NewOffset().At(r[0])
		left[p] = r[1]
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(backend...), kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: offs}),
		kgo.FetchMaxWait(200*time.Millisecond))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	out := map[int32][]*kgo.Record{}
	for len(left) > 0 {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil, fmt.Errorf("read %s below the new log start: %d partitions not read within a minute", topic, len(left))
		}
		fs.EachRecord(func(r *kgo.Record) {
			end, ok := left[r.Partition]
			if !ok || r.Offset >= end {
				return
			}
			out[r.Partition] = append(out[r.Partition], r)
			if r.Offset+1 >= end {
				delete(left, r.Partition)
			}
		})
	}
	return out, nil
}

// deleteWhileIdle holds the producers (idle, write-locked, keeps them
// between ticks), waits until every Produce is answered and (for up to 30 s)
// the copiers have committed the input up to its end, then moves the
// input's log start up to the copiers' committed offsets in the backend
// (to the end without copiers), leaving the Java copiers' partitions alone.
func deleteWhileIdle(ctx context.Context, idle *sync.RWMutex, inflight *atomic.Int64, d *deletedInput, backend []string,
	adm *kadm.Client, rep *Report, cfg Config, trace *tracer, out io.Writer) error {
	// TryLock: a producer blocked in Produce (its buffer full, eosproxy
	// not answering) holds its read lock; the deletion is then skipped
	// rather than the schedule blocked.
	t0 := time.Now()
	for !idle.TryLock() {
		if time.Since(t0) > time.Minute {
			trace.printf("delete records: the producers did not pause within a minute; skipped")
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
	defer idle.Unlock()
	for inflight.Load() > 0 && time.Since(t0) < 2*time.Minute {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	left := inflight.Load()
	// The copiers catch up meanwhile (bounded), so that the log start can
	// move past every producer's last write: eosproxy's look-ups from
	// the offsets it knows then start below the log.
	if rep.Copy != nil {
		for t1 := time.Now(); time.Since(t1) < 30*time.Second; {
			if ok, err := offsetsAtEnd(ctx, adm, rep.Topic, rep.Copy.Group); err == nil && ok {
				break
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	ends, err := adm.ListEndOffsets(ctx, rep.Topic)
	if err != nil {
		return fmt.Errorf("delete records: input end offsets: %w", err)
	}
	var offs kadm.OffsetResponses
	if rep.Copy != nil {
		if offs, err = adm.FetchOffsets(ctx, rep.Copy.Group); err != nil {
			return fmt.Errorf("delete records: group offsets: %w", err)
		}
	}
	keep := map[int32]int64{}
	ends.Each(func(e kadm.ListedOffset) {
		if int(e.Partition) < cfg.JavaCopiers || e.Err != nil {
			return
		}
		to := e.Offset
		if rep.Copy != nil {
			o, ok := offs.Lookup(rep.Topic, e.Partition)
			if !ok || o.Err != nil {
				return
			}
			to = min(to, o.At)
		}
		keep[e.Partition] = to
	})
	n, err := d.deleteInput(ctx, backend, adm, rep.Topic, keep)
	if err != nil {
		return fmt.Errorf("delete records %d: %w", d.events+1, err)
	}
	trace.printf("delete records %d: producers idle after %v (%d Produce calls unanswered), input log starts moved to %v: %d records deleted", d.events, time.Since(t0).Round(time.Millisecond), left, keep, n)
	fmt.Fprintf(out, "delete records %d: %d input records deleted while the producers idled\n", d.events, n)
	return nil
}

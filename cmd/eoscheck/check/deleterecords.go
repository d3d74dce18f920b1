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
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// deletedInput is what DeleteRecords and short retention removed from the
// input, by partition, in offset order.
type deletedInput struct {
	events  int   // DeleteRecords
	records int64 // deleted by DeleteRecords
	parts   map[int32][]*kgo.Record
	// Short retention (retention.go): events, and records it deleted.
	retentionEvents  int
	retentionRecords int64
	// snap holds, by partition in offset order, what the input held at
	// the retention events (read before retention.ms was lowered): the
	// part of it below the log start is what retention deleted, also in
	// passes that ran after an event until the restored retention.ms
	// reached every broker.
	snap map[int32][]*kgo.Record
}

// keep adds recs, read before a retention event, to the snapshot; it
// returns their oldest and newest timestamps.
func (d *deletedInput) keep(recs map[int32][]*kgo.Record) (oldest, newest time.Time) {
	if d.snap == nil {
		d.snap = map[int32][]*kgo.Record{}
	}
	for p, rs := range recs {
		next := int64(0)
		if s := d.snap[p]; len(s) > 0 {
			next = s[len(s)-1].Offset + 1
		}
		for _, r := range rs {
			if oldest.IsZero() || r.Timestamp.Before(oldest) {
				oldest = r.Timestamp
			}
			if r.Timestamp.After(newest) {
				newest = r.Timestamp
			}
			if r.Offset >= next {
				d.snap[p] = append(d.snap[p], r)
			}
		}
	}
	return oldest, newest
}

// settle adds to parts the snapshot's records below the log starts: what
// retention deleted. It returns how many it added.
func (d *deletedInput) settle(starts kadm.ListedOffsets) int64 {
	if d.parts == nil {
		d.parts = map[int32][]*kgo.Record{}
	}
	var n int64
	starts.Each(func(o kadm.ListedOffset) {
		if o.Err != nil {
			return
		}
		next := int64(0)
		if rs := d.parts[o.Partition]; len(rs) > 0 {
			next = rs[len(rs)-1].Offset + 1
		}
		for _, r := range d.snap[o.Partition] {
			if r.Offset >= next && r.Offset < o.Offset {
				d.parts[o.Partition] = append(d.parts[o.Partition], r)
				n++
			}
		}
	})
	d.retentionRecords += n
	return n
}

// deleteInput moves the input's log start up to keep (by partition; a
// partition not in keep is left alone), first reading and keeping what it
// deletes. It returns how many records it deleted.
func (d *deletedInput) deleteInput(ctx context.Context, backend []string, adm *kadm.Client, topic string, keep map[int32]int64, opts ...kgo.Opt) (int64, error) {
	starts, err := adm.ListStartOffsets(ctx, topic)
	if err != nil {
		return 0, fmt.Errorf("start offsets: %w", err)
	}
	if err := starts.Error(); err != nil {
		return 0, fmt.Errorf("start offsets: %w", err)
	}
	// What retention deleted since its last event comes first.
	d.settle(starts)
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
	recs, err := readRanges(ctx, backend, topic, ranges, opts...)
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
func readRanges(ctx context.Context, backend []string, topic string, ranges map[int32][2]int64, opts ...kgo.Opt) (map[int32][]*kgo.Record, error) {
	offs := map[int32]kgo.Offset{}
	left := map[int32]int64{}
	for p, r := range ranges {
		offs[p] = kgo.NewOffset().At(r[0])
		left[p] = r[1]
	}
	cl, err := kgo.NewClient(append(opts, kgo.SeedBrokers(backend...), kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: offs}),
		kgo.FetchMaxWait(200*time.Millisecond))...)
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
// between ticks), waits until every Produce is answered (for up to 20 s:
// a wedged producer's never are) and (for up to 30 s)
// the copiers have committed the input up to its end, then moves the
// input's log start up to the copiers' committed offsets in the backend
// (to the end without copiers), leaving the Java copiers' partitions alone.
func deleteWhileIdle(ctx context.Context, f *idleFault) error {
	idle, d, backend, adm, rep, cfg, trace, out := f.idle, f.deleted, f.backend, f.adm, f.rep, f.cfg, f.trace, f.out
	t0 := time.Now()
	left, held, err := holdProducers(ctx, idle, f.inflight)
	if err != nil {
		return err
	}
	if !held {
		trace.printf("delete records: the producers did not pause within a minute; skipped")
		return nil
	}
	defer idle.Unlock()
	// The copiers catch up meanwhile (bounded), so that the log start can
	// move past every producer's last write: eosproxy's look-ups from
	// the offsets it knows then start below the log.
	if _, err := waitCopiersAtEnd(ctx, adm, rep); err != nil {
		return err
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
	n, err := d.deleteInput(ctx, backend, adm, rep.Topic, keep, cfg.Security.opts()...)
	if err != nil {
		return fmt.Errorf("delete records %d: %w", d.events+1, err)
	}
	trace.printf("delete records %d: producers idle after %v (%d Produce calls unanswered), input log starts moved to %v: %d records deleted", d.events, time.Since(t0).Round(time.Millisecond), left, keep, n)
	fmt.Fprintf(out, "delete records %d: %d input records deleted while the producers idled\n", d.events, n)
	return nil
}

package check

// The verdict: what the backend holds, read straight from it, against what
// the producers were told.

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// copyStall is how long the copiers may go without beginning a transaction
// while the group's offsets are short of the input's end before waitCopied
// gives up: once a committed transaction's offsets are lost, a copier that
// has nothing new to read never commits those partitions again.
const copyStall = 30 * time.Second

// waitCopied waits until the group's committed offsets, read from the
// backend, equal the input topic's end offsets, or timeout, or the copiers
// stall.
func waitCopied(ctx context.Context, adm *kadm.Client, topic, group string, timeout time.Duration, tlog *txnLog) (bool, error) {
	deadline := time.Now().Add(timeout)
	lastTxns, lastChange := -1, time.Now()
	for {
		if ok, err := offsetsAtEnd(ctx, adm, topic, group); err == nil && ok {
			return true, nil
		}
		if n := len(tlog.all()); n != lastTxns {
			lastTxns, lastChange = n, time.Now()
		}
		if time.Now().After(deadline) || time.Since(lastChange) > copyStall {
			return false, nil
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func offsetsAtEnd(ctx context.Context, adm *kadm.Client, topic, group string) (bool, error) {
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return false, err
	}
	offs, err := adm.FetchOffsets(ctx, group)
	if err != nil {
		return false, err
	}
	ok := true
	ends.Each(func(e kadm.ListedOffset) {
		o, found := offs.Lookup(topic, e.Partition)
		if e.Err != nil || (found && o.At != e.Offset) || (!found && e.Offset != 0) {
			ok = false
		}
	})
	return ok, nil
}

// waitReaders waits until every reader has read the output up to its end
// offsets in the backend.
func waitReaders(ctx context.Context, adm *kadm.Client, topic string, readers []*reader, timeout time.Duration) error {
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return fmt.Errorf("output end offsets: %w", err)
	}
	want := map[int32]int64{}
	ends.Each(func(e kadm.ListedOffset) { want[e.Partition] = e.Offset })
	deadline := time.Now().Add(timeout)
	for _, r := range readers {
		for !r.caughtUp(want) {
			if time.Now().After(deadline) {
				return fmt.Errorf("reader %d has not read the output's %v after %v", r.id, want, timeout)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	return nil
}

// verdict reads every partition from the start up to its end offset,
// straight from the backend, and counts the anomalies.
//
// It returns how often each producer's value was read (by producer, seq).
//
// deleted are the records DeleteRecords removed from the input (read just
// before), by partition: they count as read before the rest.
func verdict(ctx context.Context, backend []string, rep *Report, prods []*producer, adm *kadm.Client, deleted map[int32][]*kgo.Record, opts ...kgo.Opt) ([][]int32, error) {
	ends, err := adm.ListEndOffsets(ctx, rep.Topic)
	if err != nil {
		return nil, fmt.Errorf("end offsets: %w", err)
	}
	starts, err := adm.ListStartOffsets(ctx, rep.Topic)
	if err != nil {
		return nil, fmt.Errorf("start offsets: %w", err)
	}
	var total int64
	ends.Each(func(o kadm.ListedOffset) { total += o.Offset })
	rep.BackendTotal = total
	var gone int64 // below the log start: deleted
	starts.Each(func(o kadm.ListedOffset) { gone += o.Offset })
	var kept int64
	for _, rs := range deleted {
		kept += int64(len(rs))
	}
	if kept != gone {
		return nil, fmt.Errorf("the input's log starts hold %d records, eoscheck deleted (and kept) %d", gone, kept)
	}
	total -= gone
	cl, err := kgo.NewClient(append(opts, kgo.SeedBrokers(backend...), kgo.ConsumeTopics(rep.Topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	seen := make([][]int32, len(prods))
	for i, p := range prods {
		seen[i] = make([]int32, len(p.acked))
	}
	type key struct {
		part int32
		prod int
	}
	last := map[key]int{}
	example := func(format string, args ...any) {
		if len(rep.Examples) < 20 {
			rep.Examples = append(rep.Examples, fmt.Sprintf(format, args...))
		}
	}
	readCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	var n int64
	account := func(r *kgo.Record) {
		pi, seq, ok := parseValue(string(r.Value))
		if !ok || pi >= len(prods) || int64(seq) >= prods[pi].sent.Load() {
			rep.Unexpected++
			example("unexpected value %q at %d/%d", r.Value, r.Partition, r.Offset)
			return
		}
		if seen[pi][seq]++; seen[pi][seq] == 2 {
			rep.Duplicates++
			example("duplicate %d-%d at %d/%d", pi, seq, r.Partition, r.Offset)
		}
		if seen[pi][seq] > 1 {
			rep.DuplicateRead++
		}
		k := key{r.Partition, pi}
		if prev, ok := last[k]; ok && seq < prev {
			rep.OrderErrors++
			example("order: producer %d seq %d after %d in partition %d (offset %d)", pi, seq, prev, r.Partition, r.Offset)
		}
		last[k] = seq
	}
	for _, rs := range deleted {
		for _, r := range rs {
			account(r)
		}
	}
	for n < total {
		fs := cl.PollFetches(readCtx)
		if readCtx.Err() != nil {
			return nil, fmt.Errorf("read %d of the backend's %d records before timeout", n, total)
		}
		fs.EachRecord(func(r *kgo.Record) {
			n++
			account(r)
		})
	}
	for pi, p := range prods {
		for seq := range p.acked {
			if p.acked[seq].Load() && seen[pi][seq] == 0 {
				rep.Lost++
				example("lost: %d-%d acknowledged, not in the backend", pi, seq)
			}
		}
	}
	rep.Anomalies = rep.Lost + rep.Duplicates + rep.OrderErrors + rep.Unexpected + rep.Unanswered
	return seen, nil
}

func parseValue(s string) (int, int, bool) {
	a, b, ok := strings.Cut(s, "-")
	if !ok {
		return 0, 0, false
	}
	p, err1 := strconv.Atoi(a)
	q, err2 := strconv.Atoi(b)
	if err1 != nil || err2 != nil || p < 0 || q < 0 {
		return 0, 0, false
	}
	return p, q, true
}

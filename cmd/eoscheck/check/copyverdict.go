package check

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// copyVerdict reads the output topic straight from the backend and
// accounts for every record against the copiers' transaction log, the
// input (seen: how often each input id is in the input topic) and what the
// concurrent readers read; then compares the group's committed offsets in
// the backend with the input's end offsets.
func copyVerdict(ctx context.Context, backend []string, rep *Report, prods []*producer, seen [][]int32,
	tlog *txnLog, readers []*reader, adm *kadm.Client, opts ...kgo.Opt) error {
	c := rep.Copy
	example := func(format string, args ...any) {
		if len(rep.Examples) < 40 {
			rep.Examples = append(rep.Examples, fmt.Sprintf(format, args...))
		}
	}
	txns := tlog.all()
	c.Transactions = int64(len(txns))
	c.Commits, c.Aborts, c.ForcedAborts = tlog.commits.Load(), tlog.aborts.Load(), tlog.forced.Load()
	c.ProduceAborts = tlog.produceAborts.Load()
	c.Unknown, c.Crashed, c.Zombies = tlog.unknown.Load(), tlog.crashed.Load(), tlog.zombies.Load()
	c.Copied, c.ZombieCommits = tlog.copied.Load(), tlog.zombieCommits.Load()
	c.InputTotal = rep.BackendTotal
	tlog.exMu.Lock()
	c.ClientErrors = append(c.ClientErrors, tlog.examples...)
	tlog.exMu.Unlock()
	if n := tlog.produceErrs.Load() + tlog.pollErrs.Load() + tlog.sessionErrs.Load(); n > 0 {
		c.ClientErrors = append(c.ClientErrors, fmt.Sprintf("copiers: %d produce, %d poll, %d session errors (retried)",
			tlog.produceErrs.Load(), tlog.pollErrs.Load(), tlog.sessionErrs.Load()))
	}
	if c.ZombieCommits > 0 {
		example("zombie: %d commits of a copier instance fenced by its successor succeeded", c.ZombieCommits)
	}

	// The output, from the backend.
	ends, err := adm.ListEndOffsets(ctx, c.OutputTopic)
	if err != nil {
		return fmt.Errorf("output end offsets: %w", err)
	}
	hashes := make([][]uint64, rep.Partitions)
	var total int64
	ends.Each(func(o kadm.ListedOffset) {
		total += o.Offset
		if int(o.Partition) < len(hashes) {
			hashes[o.Partition] = make([]uint64, o.Offset)
		}
	})
	c.OutputTotal = total
	cl, err := kgo.NewClient(append(opts, kgo.SeedBrokers(backend...), kgo.ConsumeTopics(c.OutputTopic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
	if err != nil {
		return err
	}
	defer cl.Close()

	copies := make([][]int32, len(prods))
	for i := range prods {
		copies[i] = make([]int32, len(seen[i]))
	}
	type attempt struct {
		txn int64
		id  inputID
	}
	appeared := map[attempt]bool{}
	copiedBy := map[inputID][]int64{} // committed copies' transactions, of inputs copied more than once
	firstBy := make([][]int64, len(prods))
	for i := range prods {
		firstBy[i] = make([]int64, len(seen[i]))
	}
	inputsOf := map[int64]map[inputID]bool{}
	carried := func(t *txnRec, id inputID) bool {
		set, ok := inputsOf[t.id]
		if !ok {
			set = make(map[inputID]bool, len(t.inputs))
			for _, in := range t.inputs {
				set[in] = true
			}
			inputsOf[t.id] = set
		}
		return set[id]
	}
	var abortedOut, openOut int64
	readCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	var n int64
	for n < total {
		fs := cl.PollFetches(readCtx)
		if readCtx.Err() != nil {
			return fmt.Errorf("read %d of the output's %d records before timeout", n, total)
		}
		fs.EachRecord(func(r *kgo.Record) {
			n++
			if int(r.Partition) < len(hashes) && r.Offset < int64(len(hashes[r.Partition])) {
				hashes[r.Partition][r.Offset] = valueHash(r.Value)
			}
			id, slot, txn, ok := parseOutput(string(r.Value))
			if !ok {
				c.Unexpected++
				example("copy: unexpected output %q at %d/%d", r.Value, r.Partition, r.Offset)
				return
			}
			p, s := id.split()
			if p >= len(seen) || s >= len(seen[p]) || seen[p][s] == 0 {
				c.Unexpected++
				example("copy: output %q at %d/%d copies %s, which is not in the input", r.Value, r.Partition, r.Offset, id)
				return
			}
			t := tlog.get(txn)
			if t == nil || t.slot != slot || !carried(t, id) {
				c.Unexpected++
				example("copy: output %q at %d/%d: no copier transaction %d of copier %d carried %s", r.Value, r.Partition, r.Offset, txn, slot, id)
				return
			}
			switch st := t.st(); {
			case st.aborted():
				c.AbortedReads++
				abortedOut++
				example("copy: aborted read: %q at %d/%d, %s", r.Value, r.Partition, r.Offset, t.describe())
			case st == txnOpen:
				c.UncommittedReads++
				openOut++
				example("copy: uncommitted read: %q at %d/%d, transaction %d never ended", r.Value, r.Partition, r.Offset, txn)
			default: // committed, or unknown (then it did commit)
				copies[p][s]++
				appeared[attempt{txn, id}] = true
				if copies[p][s] == 1 {
					firstBy[p][s] = txn
				} else {
					if len(copiedBy[id]) == 0 {
						copiedBy[id] = []int64{firstBy[p][s]}
					}
					copiedBy[id] = append(copiedBy[id], txn)
				}
			}
		})
	}

	// Committed transactions must be in the output whole.
	for _, t := range txns {
		st := t.st()
		if st.aborted() {
			c.ReaderAborted += t.readerSeen.Load()
			continue
		}
		if st != txnCommitted && st != txnUnknown {
			continue
		}
		var in, missing int
		for _, id := range t.inputs {
			if appeared[attempt{t.id, id}] {
				in++
			} else {
				missing++
			}
		}
		if missing > 0 && (st == txnCommitted || in > 0) {
			c.CommitMissing += int64(missing)
			example("copy: %s has %d of its %d records in the output", t.describe(), in, len(t.inputs))
		}
	}

	// The output as a set of input ids: each input record exactly once
	// (a value the input holds k times, duplicated by its producer, k
	// times: that duplicate is the producers' anomaly, not the copiers').
	for p := range seen {
		for s, k := range seen[p] {
			if k == 0 {
				continue
			}
			switch m := copies[p][s]; {
			case m < k:
				c.Lost += int64(k - m)
				example("copy: lost: input %d-%d is in the input %d times, in the output %d times", p, s, k, m)
			case m > k:
				c.Duplicates++
				c.DuplicateExtra += int64(m - k)
				if c.Duplicates <= 3 {
					var by []string
					for _, tx := range copiedBy[packID(p, s)] {
						by = append(by, tlog.get(tx).describe())
					}
					example("copy: duplicate: input %d-%d is in the output %d times, by %s", p, s, m, strings.Join(by, " and "))
				} else {
					example("copy: duplicate: input %d-%d is in the output %d times", p, s, m)
				}
			}
		}
	}
	c.OutputIsInput = c.Lost == 0 && c.Duplicates == 0 && c.Unexpected == 0 && abortedOut == 0 && openOut == 0

	// The concurrent readers: what they read before it was committed, and
	// whether they read exactly what the backend holds.
	for _, r := range readers {
		c.ReaderReads += r.records.Load()
		r.mu.Lock()
		for _, e := range r.early {
			t := tlog.get(e.txn)
			if t != nil && t.st().aborted() {
				continue // an aborted read, counted from the backend
			}
			c.UncommittedReads++
			st := "unknown to the copiers"
			if t != nil {
				st = t.st().String()
			}
			example("copy: uncommitted read: %s (transaction %d: %s)", e.desc, e.txn, st)
		}
		for p := range hashes {
			var got []uint64
			if p < len(r.parts) {
				got = r.parts[p]
			}
			for off, want := range hashes[p] {
				switch {
				case off >= len(got) || got[off] == 0:
					c.ReaderMismatches++
					example("copy: reader %d did not read %d/%d", r.id, p, off)
				case got[off] != want:
					c.ReaderMismatches++
					example("copy: reader %d read another value at %d/%d than the backend holds", r.id, p, off)
				}
			}
			for off := len(hashes[p]); off < len(got); off++ {
				if got[off] != 0 {
					c.ReaderMismatches++
					example("copy: reader %d read %d/%d, past the output's end", r.id, p, off)
				}
			}
		}
		r.mu.Unlock()
		c.ReaderMismatches += r.rereads.Load()
		r.exMu.Lock()
		c.ClientErrors = append(c.ClientErrors, r.examples...)
		r.exMu.Unlock()
	}

	// The group's committed offsets, from the backend, against the input's
	// end offsets.
	inEnds, err := adm.ListEndOffsets(ctx, rep.Topic)
	if err != nil {
		return fmt.Errorf("input end offsets: %w", err)
	}
	offs, err := adm.FetchOffsets(ctx, c.Group)
	if err != nil {
		return fmt.Errorf("group offsets: %w", err)
	}
	inEnds.Each(func(e kadm.ListedOffset) {
		o, found := offs.Lookup(rep.Topic, e.Partition)
		at := int64(-1)
		if found {
			at = o.At
		}
		if e.Err != nil || (at != e.Offset && !(at == -1 && e.Offset == 0)) {
			c.OffsetMismatches++
			example("copy: group offset of %s/%d is %d, input ends at %d", rep.Topic, e.Partition, at, e.Offset)
		}
	})
	return nil
}

package upstream

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// A look-up for a batch with an unknown outcome reads the partition up to
// its high watermark. With acks=all and a follower lagging in the ISR, the
// leader may hold the first copy above the high watermark: unseen by the
// look-up, and visible once the follower catches up or drops out of the
// ISR. So a look-up is conclusive only once the high watermark has reached
// the leader's log end offset as read after the unknown outcome (every
// batch the leader had appended by then is below it), under the same
// leader epoch. After a leader change the old leader's unreplicated tail
// is either in the new leader's log or truncated for good, and the bound
// is read again under the new epoch.

// leaderMark is where a partition stood on its leader when a look-up began.
type leaderMark struct {
	leader int32
	epoch  int32
	end    int64 // the leader's log end offset in epoch (OffsetForLeaderEpoch)
	topic  [16]byte
}

// errNotReplicated: the high watermark has not reached the bound in time;
// the look-up is retried later (the client gets a retriable error).
var errNotReplicated = errors.New("the partition's high watermark has not yet reached the leader's log end offset (a follower in the ISR is lagging)")

// replicatedWait bounds one look-up's wait for the high watermark; past it
// the caller answers a retriable error and tries again on the retry.
const replicatedWait = 2 * time.Second

// replicatedPoll is the longest pause between reads of the high watermark.
const replicatedPoll = 50 * time.Millisecond

// awaitHW waits until the high watermark reaches the leader's log end
// offset read at the start, under the same leader epoch; a change of epoch
// (mark's epoch fenced) reads the mark again. It returns the mark the
// high watermark reached. readMark reads the current leader, epoch and log
// end offset; readHW reads the high watermark under mark's epoch and says
// fenced when that epoch is no longer the leader's.
//
// prev, if not nil, is the mark an earlier attempt of the same look-up
// read (after the same unknown outcome): it is kept, so that retries wait
// for one fixed bound, not for a log end that moves on under load while a
// slow follower stays in the ISR. On errNotReplicated the mark waited for
// is returned, for the next attempt.
func awaitHW(ctx context.Context, wait, poll time.Duration, prev *leaderMark,
	readMark func(context.Context) (leaderMark, error),
	readHW func(context.Context, leaderMark) (hw int64, fenced bool, err error),
) (leaderMark, error) {
	deadline := time.Now().Add(wait)
	// A healthy follower is a fetch behind: poll quickly first, so a
	// look-up under load waits milliseconds, not a full poll interval.
	interval := min(poll, 5*time.Millisecond)
	sleep := func() bool {
		ok := sleepUntil(ctx, deadline, interval)
		interval = min(2*interval, poll)
		return ok
	}
	var lastErr error
	for {
		var m leaderMark
		var err error
		if prev != nil {
			m, prev = *prev, nil
		} else {
			m, err = readMark(ctx)
		}
		if err == nil {
			for {
				hw, fenced, herr := readHW(ctx, m)
				if herr == nil && !fenced && hw >= m.end {
					return m, nil
				}
				if herr != nil || fenced {
					lastErr = herr
					if fenced {
						lastErr = fmt.Errorf("leader epoch %d fenced", m.epoch)
					}
					break // read the mark again, under the new leader
				}
				lastErr = fmt.Errorf("%w: high watermark %d, log end offset %d in leader epoch %d", errNotReplicated, hw, m.end, m.epoch)
				if !sleep() {
					return m, lastErr
				}
			}
		} else {
			lastErr = err
		}
		if !sleep() {
			return leaderMark{}, lastErr
		}
	}
}

// sleepUntil waits poll, or less, and reports false if the deadline or ctx
// is reached first.
func sleepUntil(ctx context.Context, deadline time.Time, poll time.Duration) bool {
	left := time.Until(deadline)
	if left <= 0 {
		return false
	}
	t := time.NewTimer(min(poll, left))
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// awaitReplicated is awaitHW against the backend: OffsetForLeaderEpoch
// (as a consumer, for the current epoch: Kafka answers the leader's log
// end offset, replicated or not) and ListOffsets latest read_uncommitted
// (the high watermark), both checked against the leader epoch.
//
// The mark of a look-up that did not become conclusive in time is kept
// (keyed by the look-up: partition, low-water offset and digest) for its
// retry.
func (b *Client) awaitReplicated(ctx context.Context, topic string, partition int32, from int64, digest [32]byte) (leaderMark, error) {
	readMark := func(ctx context.Context) (leaderMark, error) {
		meta, err := kadm.NewClient(b.admin).Metadata(ctx, topic)
		if err != nil {
			return leaderMark{}, err
		}
		pd, ok := meta.Topics[topic].Partitions[partition]
		if !ok || pd.Err != nil || pd.Leader < 0 {
			return leaderMark{}, fmt.Errorf("no leader for %s/%d: %v", topic, partition, pd.Err)
		}
		m := leaderMark{leader: pd.Leader, epoch: pd.LeaderEpoch, topic: meta.Topics[topic].ID}
		req := kmsg.NewPtrOffsetForLeaderEpochRequest()
		req.ReplicaID = -1
		rt := kmsg.NewOffsetForLeaderEpochRequestTopic()
		rt.Topic = topic
		rp := kmsg.NewOffsetForLeaderEpochRequestTopicPartition()
		rp.Partition = partition
		rp.CurrentLeaderEpoch, rp.LeaderEpoch = m.epoch, m.epoch
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		resp, err := req.RequestWith(ctx, b.admin.Broker(int(m.leader)))
		if err != nil && tooOld(err) {
			// Without the request there is no bound to wait for;
			// waiting for ever would wedge the producer instead.
			b.log.Warn().Err(err).Str("topic", topic).Int32("partition", partition).
				Msg("the backend does not answer OffsetForLeaderEpoch: an unknown outcome is settled up to the high watermark, and a first copy not yet replicated would be missed")
			m.end = -1
			return m, nil
		}
		if err != nil {
			return leaderMark{}, fmt.Errorf("log end offset of %s/%d: %w", topic, partition, err)
		}
		if len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 1 {
			return leaderMark{}, fmt.Errorf("log end offset of %s/%d: malformed answer", topic, partition)
		}
		ep := resp.Topics[0].Partitions[0]
		if err := kerr.ErrorForCode(ep.ErrorCode); err != nil {
			return leaderMark{}, fmt.Errorf("log end offset of %s/%d in leader epoch %d: %w", topic, partition, m.epoch, err)
		}
		m.end = ep.EndOffset
		return m, nil
	}
	readHW := func(ctx context.Context, m leaderMark) (int64, bool, error) {
		req := kmsg.NewPtrListOffsetsRequest()
		req.ReplicaID = -1
		req.IsolationLevel = 0
		rt := kmsg.NewListOffsetsRequestTopic()
		rt.Topic = topic
		rp := kmsg.NewListOffsetsRequestTopicPartition()
		rp.Partition = partition
		rp.CurrentLeaderEpoch = m.epoch
		rp.Timestamp = -1 // latest: the high watermark, read_uncommitted
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		resp, err := req.RequestWith(ctx, b.admin.Broker(int(m.leader)))
		if err != nil {
			return 0, false, fmt.Errorf("high watermark of %s/%d: %w", topic, partition, err)
		}
		if len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 1 {
			return 0, false, fmt.Errorf("high watermark of %s/%d: malformed answer", topic, partition)
		}
		lp := resp.Topics[0].Partitions[0]
		switch lp.ErrorCode {
		case 0:
			return lp.Offset, false, nil
		case kerr.FencedLeaderEpoch.Code, kerr.NotLeaderForPartition.Code, kerr.UnknownLeaderEpoch.Code:
			return 0, true, nil
		}
		return 0, false, fmt.Errorf("high watermark of %s/%d: %w", topic, partition, kerr.ErrorForCode(lp.ErrorCode))
	}
	key := markKey{topic: topic, partition: partition, from: from, digest: digest}
	prev := b.hwMarks.take(key)
	// A leader that does not answer (paused) must not hold the look-up
	// past its wait either.
	wctx, cancel := context.WithTimeout(ctx, replicatedWait+time.Second)
	defer cancel()
	m, err := awaitHW(wctx, replicatedWait, replicatedPoll, prev, readMark, readHW)
	if err != nil {
		if errors.Is(err, errNotReplicated) {
			b.hwMarks.put(key, m)
		}
		return leaderMark{}, fmt.Errorf("look-up in %s/%d not conclusive yet: %w", topic, partition, err)
	}
	return m, nil
}

// markKey names one look-up: its retries share the bound.
type markKey struct {
	topic     string
	partition int32
	from      int64
	digest    [32]byte
}

// hwMarks keeps the bounds of look-ups not yet conclusive, for their
// retries.
type hwMarks struct {
	mu sync.Mutex
	m  map[markKey]markEntry
}

type markEntry struct {
	mark leaderMark
	at   time.Time
}

// markTTL drops the bound of a look-up nobody retried (the client gave
// up): a later look-up reads a fresh one, which is as valid.
const markTTL = 10 * time.Minute

func (h *hwMarks) take(k markKey) *leaderMark {
	h.mu.Lock()
	defer h.mu.Unlock()
	e, ok := h.m[k]
	if !ok {
		return nil
	}
	delete(h.m, k)
	return &e.mark
}

func (h *hwMarks) put(k markKey, m leaderMark) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.m == nil {
		h.m = map[markKey]markEntry{}
	}
	now := time.Now()
	for k, e := range h.m {
		if now.Sub(e.at) > markTTL {
			delete(h.m, k)
		}
	}
	h.m[k] = markEntry{mark: m, at: now}
}

// tooOld tells whether err is franz-go refusing a request the broker does
// not serve (its errors for that are not exported).
func tooOld(err error) bool {
	msg := err.Error()
	return errors.Is(err, kerr.UnsupportedVersion) ||
		strings.Contains(msg, "request key is unknown") || strings.Contains(msg, "broker is too old")
}

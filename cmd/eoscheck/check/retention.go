package check

// Short retention on the input while the producers idle (issue 9): like
// DeleteRecords (deleterecords.go), but the backend's own retention moves
// the log start. The producers stop and every Produce is answered, the
// copiers commit the input up to its end (else the attempt is skipped:
// retention cannot be told to spare what they have not copied), everything
// the input holds is read and kept, then the input's retention.ms is
// lowered (IncrementalAlterConfigs) so that the broker's retention deletes
// its older part; once a log start moved, retention.ms is restored on every
// broker and the producers send again, eosproxy restarted soon after.
//
// A real broker deletes whole segments, so the input topic is created with
// segment.ms=1000 (segments of about a second) and the broker must check
// retention often (integration/kafka/kafka.sh sets
// log.retention.check.interval.ms=1000; the default is 5 minutes). kfake
// deletes whole batches, every log.cleaner.backoff.ms (set low in
// idleFaultKinds).

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// retentionSegmentMs is the input topic's segment.ms with RetentionDeletes.
const retentionSegmentMs = "1000"

// retentionWhileIdle is one short-retention event (see the top of the
// file). An attempt that cannot run safely is skipped (traced), not an
// error.
func retentionWhileIdle(ctx context.Context, f *idleFault) error {
	n := f.deleted.retentionEvents + 1
	skip := func(why string) error {
		f.trace.printf("retention %d: %s; skipped", n, why)
		return nil
	}
	t0 := time.Now()
	left, held, err := holdProducers(ctx, f.idle, f.inflight)
	if err != nil || !held {
		if err != nil {
			return err
		}
		return skip("the producers did not pause within a minute")
	}
	defer f.idle.Unlock()
	if left > 0 {
		// A batch written later could carry an old timestamp, and be
		// deleted without eoscheck having read it.
		return skip(fmt.Sprintf("%d Produce calls unanswered after 20 s", left))
	}
	if ok, err := waitCopiersAtEnd(ctx, f.adm, f.rep); err != nil {
		return err
	} else if !ok {
		return skip("the copiers did not commit the input up to its end within 30 s")
	}
	topic := f.rep.Topic
	before, err := f.adm.ListStartOffsets(ctx, topic)
	if err == nil {
		err = before.Error()
	}
	if err != nil {
		return fmt.Errorf("retention %d: start offsets: %w", n, err)
	}
	ends, err := f.adm.ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return fmt.Errorf("retention %d: end offsets: %w", n, err)
	}
	ranges := map[int32][2]int64{}
	ends.Each(func(e kadm.ListedOffset) {
		if s, ok := before.Lookup(topic, e.Partition); ok && s.Offset < e.Offset {
			ranges[e.Partition] = [2]int64{s.Offset, e.Offset}
		}
	})
	if len(ranges) == 0 {
		return skip("the input is empty")
	}
	recs, err := readRanges(ctx, f.backend, topic, ranges, f.cfg.Security.opts()...)
	if err != nil {
		return fmt.Errorf("retention %d: %w", n, err)
	}
	oldest, newest := f.deleted.keep(recs)
	// Half of what the input holds is past the retention, at first; as
	// time goes by while the broker gets to it, more may be.
	retention := max(time.Since(oldest.Add(newest.Sub(oldest)/2)), 2*time.Second).Round(time.Millisecond)

	prev, err := topicConfig(ctx, f.adm, topic, "retention.ms")
	if err != nil {
		return fmt.Errorf("retention %d: %w", n, err)
	}
	ms := strconv.FormatInt(retention.Milliseconds(), 10)
	if err := alterTopicConfig(ctx, f.adm, topic, "retention.ms", &ms); err != nil {
		return fmt.Errorf("retention %d: lower retention.ms: %w", n, err)
	}
	moved, waitErr := waitLogStartMoved(ctx, f.adm, topic, before, 30*time.Second)
	// Restored whatever happened, also when the run is cancelled: a short
	// retention left behind would delete what the producers write next.
	rctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := alterTopicConfig(rctx, f.adm, topic, "retention.ms", prev); err != nil {
		return fmt.Errorf("retention %d: restore retention.ms: %w", n, err)
	}
	if err := waitTopicConfig(rctx, f.direct, topic, "retention.ms", ms); err != nil {
		return fmt.Errorf("retention %d: restore retention.ms: %w", n, err)
	}
	if waitErr != nil {
		return fmt.Errorf("retention %d: %w", n, waitErr)
	}
	if !moved {
		f.trace.printf("retention %d: retention.ms %s did not move the input's log start within 30 s (does the broker check retention often? kafka.sh sets log.retention.check.interval.ms=1000)", n, ms)
		fmt.Fprintf(f.out, "retention %d: retention.ms %s deleted nothing within 30 s\n", n, ms)
		return nil
	}
	after, err := f.adm.ListStartOffsets(ctx, topic)
	if err == nil {
		err = after.Error()
	}
	if err != nil {
		return fmt.Errorf("retention %d: start offsets: %w", n, err)
	}
	f.deleted.retentionEvents = n
	deleted := f.deleted.settle(after)
	starts := map[int32]int64{}
	after.Each(func(o kadm.ListedOffset) { starts[o.Partition] = o.Offset })
	f.trace.printf("retention %d: producers idle after %v, retention.ms %s until the log starts moved to %v: %d records deleted", n, time.Since(t0).Round(time.Millisecond), ms, starts, deleted)
	fmt.Fprintf(f.out, "retention %d: %d input records deleted by retention.ms %s while the producers idled\n", n, deleted, ms)
	return nil
}

// waitLogStartMoved polls topic's start offsets until one is above what
// before lists, for up to timeout.
func waitLogStartMoved(ctx context.Context, adm *kadm.Client, topic string, before kadm.ListedOffsets, timeout time.Duration) (bool, error) {
	return pollWithin(ctx, timeout, func() bool {
		starts, err := adm.ListStartOffsets(ctx, topic)
		if err != nil {
			return false
		}
		moved := false
		starts.Each(func(o kadm.ListedOffset) {
			if b, ok := before.Lookup(topic, o.Partition); ok && o.Err == nil && o.Offset > b.Offset {
				moved = true
			}
		})
		return moved
	})
}

// pollWithin checks cond every 100 ms until it holds (true) or timeout
// passes (false); an error only when ctx ends.
func pollWithin(ctx context.Context, timeout time.Duration, cond func() bool) (bool, error) {
	for t0 := time.Now(); time.Since(t0) < timeout; {
		if cond() {
			return true, nil
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return false, nil
}

// topicConfig returns topic's own value of config (set on the topic, not a
// broker default), nil when it has none.
func topicConfig(ctx context.Context, adm *kadm.Client, topic, config string) (*string, error) {
	rcs, err := adm.DescribeTopicConfigs(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("describe %s's configs: %w", topic, err)
	}
	rc, err := rcs.On(topic, nil)
	if err != nil {
		return nil, fmt.Errorf("describe %s's configs: %w", topic, err)
	}
	for _, c := range rc.Configs {
		if c.Key == config && c.Source == kmsg.ConfigSourceDynamicTopicConfig {
			return c.Value, nil
		}
	}
	return nil, nil
}

// alterTopicConfig sets topic's config to value, or with nil deletes the
// topic's own value (back to the broker's default).
func alterTopicConfig(ctx context.Context, adm *kadm.Client, topic, config string, value *string) error {
	ac := kadm.AlterConfig{Op: kadm.SetConfig, Name: config, Value: value}
	if value == nil {
		ac.Op = kadm.DeleteConfig
	}
	resps, err := adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{ac}, topic)
	if err != nil {
		return err
	}
	for _, r := range resps {
		if r.Err != nil {
			return fmt.Errorf("%w (%s)", r.Err, r.ErrMessage)
		}
	}
	return nil
}

// waitTopicConfig waits until no broker reports topic's config as notValue
// any longer: a broker applies a config change when the metadata reaches
// it, and until then its retention goes on with the old value.
func waitTopicConfig(ctx context.Context, cl *kgo.Client, topic, config, notValue string) error {
	req := kmsg.NewPtrDescribeConfigsRequest()
	res := kmsg.NewDescribeConfigsRequestResource()
	res.ResourceType, res.ResourceName, res.ConfigNames = kmsg.ConfigResourceTypeTopic, topic, []string{config}
	req.Resources = append(req.Resources, res)
	brokers, err := kadm.NewClient(cl).ListBrokers(ctx)
	if err != nil {
		return fmt.Errorf("brokers: %w", err)
	}
	for _, b := range brokers {
		for {
			resp, err := req.RequestWith(ctx, cl.Broker(int(b.NodeID)))
			if err == nil && len(resp.Resources) == 1 && resp.Resources[0].ErrorCode == 0 {
				old := false
				for _, c := range resp.Resources[0].Configs {
					old = old || (c.Name == config && c.Value != nil && *c.Value == notValue)
				}
				if !old {
					break
				}
			}
			select {
			case <-ctx.Done():
				return errors.Join(fmt.Errorf("broker %d still reports %s=%s", b.NodeID, config, notValue), ctx.Err())
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	return nil
}

package upstream

import (
	"context"
	"errors"
	"testing"
	"time"
)

// awaitHW settles only once the high watermark has reached the log end
// offset read at the start, under the same leader epoch: not while a first
// copy can sit unreplicated above the high watermark.
func TestAwaitHW(t *testing.T) {
	ctx := context.Background()
	t.Run("already replicated", func(t *testing.T) {
		marks, hws := 0, 0
		m, err := awaitHW(ctx, time.Second, time.Millisecond, nil,
			func(context.Context) (leaderMark, error) {
				marks++
				return leaderMark{leader: 1, epoch: 3, end: 10}, nil
			},
			func(_ context.Context, m leaderMark) (int64, bool, error) { hws++; return 10, false, nil })
		if err != nil || m.end != 10 || m.epoch != 3 || marks != 1 || hws != 1 {
			t.Fatalf("mark %+v err %v after %d mark and %d hw reads", m, err, marks, hws)
		}
	})
	t.Run("waits for a lagging follower", func(t *testing.T) {
		hw := int64(4)
		marks := 0
		m, err := awaitHW(ctx, 10*time.Second, time.Millisecond, nil,
			func(context.Context) (leaderMark, error) {
				marks++
				// The log end moves on while waiting: the bound is the
				// one read first.
				return leaderMark{leader: 1, epoch: 3, end: 10 + int64(marks)*100}, nil
			},
			func(_ context.Context, m leaderMark) (int64, bool, error) {
				hw += 2
				return hw, false, nil
			})
		if err != nil || m.end != 110 || hw < 110 || marks != 1 {
			t.Fatalf("mark %+v err %v hw %d marks %d", m, err, hw, marks)
		}
	})
	t.Run("never replicated: retriable error", func(t *testing.T) {
		_, err := awaitHW(ctx, 20*time.Millisecond, time.Millisecond, nil,
			func(context.Context) (leaderMark, error) { return leaderMark{leader: 1, epoch: 3, end: 10}, nil },
			func(context.Context, leaderMark) (int64, bool, error) { return 4, false, nil })
		if !errors.Is(err, errNotReplicated) {
			t.Fatalf("err %v, want errNotReplicated", err)
		}
	})
	t.Run("a retry keeps the first bound", func(t *testing.T) {
		// Under load with a slow follower the log end moves on: a retry
		// reading a fresh bound each time might never see the HW reach it.
		m, err := awaitHW(ctx, 20*time.Millisecond, time.Millisecond, nil,
			func(context.Context) (leaderMark, error) { return leaderMark{leader: 1, epoch: 3, end: 10}, nil },
			func(context.Context, leaderMark) (int64, bool, error) { return 4, false, nil })
		if !errors.Is(err, errNotReplicated) || m.end != 10 {
			t.Fatalf("first attempt: mark %+v err %v", m, err)
		}
		marks := 0
		m, err = awaitHW(ctx, 20*time.Millisecond, time.Millisecond, &m,
			func(context.Context) (leaderMark, error) {
				marks++
				return leaderMark{leader: 1, epoch: 3, end: 1000}, nil
			},
			func(context.Context, leaderMark) (int64, bool, error) { return 10, false, nil })
		if err != nil || m.end != 10 || marks != 0 {
			t.Fatalf("retry: mark %+v err %v, %d fresh bounds read", m, err, marks)
		}
	})
	t.Run("leader change reads the bound again", func(t *testing.T) {
		epoch := int32(3)
		var ends []int64
		m, err := awaitHW(ctx, 10*time.Second, time.Millisecond, &leaderMark{leader: 3, epoch: 3, end: 10},
			func(context.Context) (leaderMark, error) {
				end := int64(10) // the old leader's unreplicated tail
				if epoch == 4 {
					end = 7 // truncated on the new leader
				}
				ends = append(ends, end)
				return leaderMark{leader: int32(epoch), epoch: epoch, end: end}, nil
			},
			func(_ context.Context, m leaderMark) (int64, bool, error) {
				if m.epoch == 3 {
					epoch = 4 // the old leader is fenced while HW < 10
					return 0, true, nil
				}
				return 7, false, nil
			})
		if err != nil || m.epoch != 4 || m.end != 7 || len(ends) != 1 { // the kept bound fenced: one fresh read
			t.Fatalf("mark %+v err %v ends %v", m, err, ends)
		}
	})
	t.Run("read errors retried until the deadline", func(t *testing.T) {
		fail := errors.New("broker gone")
		_, err := awaitHW(ctx, 20*time.Millisecond, time.Millisecond, nil,
			func(context.Context) (leaderMark, error) { return leaderMark{}, fail },
			func(context.Context, leaderMark) (int64, bool, error) { return 0, false, nil })
		if !errors.Is(err, fail) {
			t.Fatalf("err %v, want %v", err, fail)
		}
	})
}

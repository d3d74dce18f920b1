package check

import (
	"bufio"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// tracer writes a timeline of the copiers' transactions and of the
// backend's group requests (<work-dir>/trace.log), to explain an anomaly.
type tracer struct {
	start time.Time
	mu    sync.Mutex
	w     *bufio.Writer
}

func newTracer(w io.Writer, start time.Time) *tracer {
	return &tracer{start: start, w: bufio.NewWriterSize(w, 64<<10)}
}

func (t *tracer) printf(format string, args ...any) {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	fmt.Fprintf(t.w, "%8.3fs ", time.Since(t.start).Seconds())
	fmt.Fprintf(t.w, format, args...)
	t.w.WriteByte('\n')
}

func (t *tracer) flush() {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.w.Flush()
}

// watchGroup traces the in-process backend's requests about group (joins,
// leaves, syncs and offset commits, with member and generation), as they
// arrive; the cluster then handles them as usual.
func (t *tracer) watchGroup(fake *kfake.Cluster, group string) {
	for _, key := range []kmsg.Key{kmsg.JoinGroup, kmsg.SyncGroup, kmsg.LeaveGroup, kmsg.OffsetCommit} {
		fake.ControlKey(int16(key), func(req kmsg.Request) (kmsg.Response, error, bool) {
			fake.KeepControl()
			switch r := req.(type) {
			case *kmsg.JoinGroupRequest:
				if r.Group == group {
					t.printf("backend: JoinGroup member %q", r.MemberID)
				}
			case *kmsg.SyncGroupRequest:
				if r.Group == group {
					t.printf("backend: SyncGroup member %q generation %d", r.MemberID, r.Generation)
				}
			case *kmsg.LeaveGroupRequest:
				if r.Group == group {
					var ms []string
					for _, m := range r.Members {
						ms = append(ms, m.MemberID)
					}
					t.printf("backend: LeaveGroup %q %v", r.MemberID, ms)
				}
			case *kmsg.OffsetCommitRequest:
				if r.Group == group {
					var offs []string
					for _, tp := range r.Topics {
						for _, p := range tp.Partitions {
							offs = append(offs, fmt.Sprintf("%d:%d", p.Partition, p.Offset))
						}
					}
					t.printf("backend: OffsetCommit member %q generation %d offsets %v", r.MemberID, r.Generation, offs)
				}
			}
			return nil, nil, false
		})
	}
}

// syncWriter serialises writes to w.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

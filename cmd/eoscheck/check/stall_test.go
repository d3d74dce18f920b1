package check

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// The stall fault's premise: straight against a backend with transactions
// (no eosproxy), a copier stalled until the group removed it has its
// TxnOffsetCommit as the old member refused, and aborts. So an accepted one
// through eosproxy is eosproxy's anomaly, not the fault's. Against kfake,
// and against the real broker of EOSPROXY_TEST_KAFKA when set; both group
// protocols.
func TestStallRefusedByBackend(t *testing.T) {
	for _, proto := range []string{"classic", "consumer"} {
		t.Run("kfake/"+proto, func(t *testing.T) {
			fake, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.BrokerConfigs(map[string]string{
				"group.consumer.session.timeout.ms":    "6000",
				"group.consumer.heartbeat.interval.ms": "1000",
			}))
			if err != nil {
				t.Fatal(err)
			}
			defer fake.Close()
			stallDirect(t, fake.ListenAddrs()[0], proto)
		})
		t.Run("kafka/"+proto, func(t *testing.T) {
			addr := os.Getenv("EOSPROXY_TEST_KAFKA")
			if addr == "" {
				t.Skip("EOSPROXY_TEST_KAFKA not set")
			}
			stallDirect(t, strings.Split(addr, ",")[0], proto)
		})
	}
}

func stallDirect(t *testing.T, addr, proto string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	seed := uint64(time.Now().UnixNano())
	in, out, group := fmt.Sprintf("stall-%d", seed), fmt.Sprintf("stall-%d-out", seed), fmt.Sprintf("stall-%d-g", seed)
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.DefaultProduceTopic(in))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	for _, topic := range []string{in, out} {
		if _, err := adm.CreateTopic(ctx, 2, 1, nil, topic); err != nil {
			t.Fatal(err)
		}
	}
	if proto == "consumer" {
		// On Kafka: the group's session timeout (kfake has it from
		// the cluster's config).
		_ = setGroupSessionTimeout(ctx, cl, group)
	}
	// Input keeps coming until the stall is over, so that the stalled
	// copier has a transaction whatever partitions it gets.
	feedCtx, stopFeed := context.WithCancel(ctx)
	defer stopFeed()
	go func() {
		for i := 0; feedCtx.Err() == nil; i++ {
			cl.Produce(feedCtx, &kgo.Record{Value: fmt.Appendf(nil, "0-%d", i)}, nil)
			if i%50 == 49 {
				select {
				case <-feedCtx.Done():
				case <-time.After(50 * time.Millisecond):
				}
			}
		}
	}()
	// The copiers' franz-go logs and the trace, shown if the test fails.
	var logs bytes.Buffer
	sw := &syncWriter{w: &logs}
	start := time.Now()
	w := &copyWork{seed: seed, bootstrap: addr, in: in, out: out, group: group, abortRate: 0,
		log: &txnLog{start: start}, adm: adm, consumerProtocol: proto == "consumer",
		sessionTimeout: 6 * time.Second, txnTimeout: 90 * time.Second, commitHook: make(chan struct{}, 1),
		kgoLog: sw, trace: newTracer(sw, start)}
	defer func() {
		if t.Failed() {
			w.trace.flush()
			sw.mu.Lock()
			t.Logf("the stall's trace:\n%s", grepLines(logs.String(), "STALL", "no stall"))
			t.Logf("copiers' logs:\n%s", tail(logs.String(), 300))
			sw.mu.Unlock()
		}
	}()
	w.stalls.r.RefusedByCode = map[string]int64{}
	if err := w.start(ctx, 2); err != nil {
		t.Fatal(err)
	}
	defer w.finish()
	w.requestStall(0)
	for {
		w.stalls.mu.Lock()
		r := w.stalls.r
		w.stalls.mu.Unlock()
		if r.Refused+r.Accepted+r.Errors > 0 {
			t.Logf("stall: %+v", r)
			if r.GroupMovedOn != 1 || r.Refused != 1 || r.Accepted != 0 {
				t.Fatalf("the backend did not refuse the stalled member's offsets: %+v; client notes %v", r, w.log.examples)
			}
			for code := range r.RefusedByCode {
				switch code {
				case "UNKNOWN_MEMBER_ID", "ILLEGAL_GENERATION", "STALE_MEMBER_EPOCH", "FENCED_MEMBER_EPOCH":
				default:
					t.Errorf("refused with %s, not for its member or generation", code)
				}
			}
			if st := w.log.get(1); st == nil {
				t.Fatal("no transaction")
			}
			if gt, _ := groupType(ctx, adm, group); gt != proto {
				t.Errorf("group type %q, want %q", gt, proto)
			}
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no stall outcome: %+v; client notes %v", r, w.log.examples)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// tail is the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// grepLines is the lines of s that contain any of subs.
func grepLines(s string, subs ...string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		for _, sub := range subs {
			if strings.Contains(l, sub) {
				out = append(out, l)
				break
			}
		}
	}
	return strings.Join(out, "\n")
}

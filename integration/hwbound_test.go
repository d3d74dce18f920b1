package integration

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/eosproxy/eosproxy/proxy"
)

// TestUnreplicatedFirstCopyRealKafka: on a backend without idempotence, an
// unknown outcome whose first copy sits on the leader above the high
// watermark. Two brokers, replication factor 2, the partition led by node 1
// and followed by node 2, which is paused (SIGSTOP) while still in the ISR:
// an acks=all batch is appended by the leader and answered
// REQUEST_TIMED_OUT (the client's 1 s produce timeout, shorter than
// replica.lag.time.max.ms). The client retries; a look-up reading only up
// to the high watermark does not see the first copy, so eosproxy would
// write the batch again — and every retry once more — and all copies
// become visible when node 2 leaves the ISR. eosproxy must wait until the
// high watermark reaches the leader's log end offset before settling.
func TestUnreplicatedFirstCopyRealKafka(t *testing.T) {
	addr := os.Getenv("EOSPROXY_TEST_KAFKA_2B")
	if addr == "" {
		t.Skip("two-broker real tier skipped: EOSPROXY_TEST_KAFKA_2B is not set (start one with KAFKA_BROKERS=2 integration/kafka/kafka.sh start, on other ports than the single broker's)")
	}
	run := os.Getenv("EOSPROXY_KAFKA_RUN_2B")
	if run == "" {
		t.Fatal("EOSPROXY_TEST_KAFKA_2B is set without EOSPROXY_KAFKA_RUN_2B (the two-broker cluster's run dir)")
	}
	sh := kafkaSh(t)
	ksh := func(args ...string) {
		t.Helper()
		cmd := exec.Command("bash", append([]string{sh}, args...)...)
		cmd.Env = append(os.Environ(), "EOSPROXY_KAFKA_RUN="+run)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("kafka.sh %v: %v: %s", args, err, out)
		}
	}
	ctx := testCtx(t)
	b := backend{name: "kafka-2b", addrs: strings.Split(addr, ",")}
	direct := newClient(t, b.addrs[0])
	adm := kadm.NewClient(direct)

	// The partition on nodes 1 (leader) and 2 (follower).
	topic := "unreplicated-" + strconv.FormatInt(time.Now().UnixNano()%1e9, 10)
	req := kmsg.NewPtrCreateTopicsRequest()
	rt := kmsg.NewCreateTopicsRequestTopic()
	rt.Topic, rt.NumPartitions, rt.ReplicationFactor = topic, -1, -1
	ra := kmsg.NewCreateTopicsRequestTopicReplicaAssignment()
	ra.Partition, ra.Replicas = 0, []int32{1, 2}
	rt.ReplicaAssignment = append(rt.ReplicaAssignment, ra)
	req.Topics = append(req.Topics, rt)
	req.TimeoutMillis = 10_000
	resp, err := req.RequestWith(ctx, direct)
	if err != nil {
		t.Fatal(err)
	}
	if err := kerr.ErrorForCode(resp.Topics[0].ErrorCode); err != nil {
		t.Fatalf("create %s: %v", topic, err)
	}
	isr := func() []int32 {
		t.Helper()
		meta, err := adm.Metadata(ctx, topic)
		if err != nil {
			t.Fatal(err)
		}
		pd, ok := meta.Topics[topic].Partitions[0]
		if !ok || pd.Err != nil || pd.Leader != 1 {
			return nil // not led by node 1 yet
		}
		return pd.ISR
	}
	waitISR := func(want int) {
		t.Helper()
		for len(isr()) != want {
			if ctx.Err() != nil {
				t.Fatalf("ISR %v (led by node 1), want %d replicas", isr(), want)
			}
			time.Sleep(100 * time.Millisecond) // polling the cluster's state
		}
	}
	waitISR(2)

	p := startProxy(t, b, func(c *proxy.Config) { c.NoBackendIdempotence = true })
	prod := newClient(t, p.Addr(), kgo.DefaultProduceTopic(topic), kgo.ProducerLinger(0),
		kgo.RequiredAcks(kgo.AllISRAcks()), kgo.ProduceRequestTimeout(time.Second))
	produce := func(from, to int) {
		t.Helper()
		for i := from; i < to; i++ {
			if err := prod.ProduceSync(ctx, &kgo.Record{Value: []byte(strconv.Itoa(i))}).FirstErr(); err != nil {
				t.Fatalf("produce %d: %v", i, err)
			}
		}
	}
	produce(0, 10)
	// Node 2 follows: in the ISR with everything written so far (it may
	// have dropped out and rejoined, caught up, while records 0-9 went).
	waitISR(2)

	ksh("pause", "2")
	paused := true
	t.Cleanup(func() {
		if paused {
			cmd := exec.Command("bash", sh, "resume", "2")
			cmd.Env = append(os.Environ(), "EOSPROXY_KAFKA_RUN="+run)
			_ = cmd.Run()
		}
	})
	// Answered once node 2 has left the ISR (replica.lag.time.max.ms),
	// after REQUEST_TIMED_OUT answers meanwhile.
	start := time.Now()
	produce(10, 11)
	t.Logf("record 10 acknowledged after %v; ISR %v", time.Since(start).Round(time.Millisecond), isr())
	// Resumed before the controller fences node 2 (broker session timeout).
	ksh("resume", "2")
	paused = false
	produce(11, 20)
	// The follower back in the ISR: the cluster as the next test expects.
	waitISR(2)

	got, total := readBackendRecords(t, b, topic, false)
	if total != 20 {
		t.Fatalf("backend holds %d records, want 20: %v", total, got[0])
	}
	checkAllOnceInOrder(t, got, 20)
	if !strings.Contains(p.logs.String(), "not writing it again") {
		t.Errorf("the first copy was not found by a look-up (was the outcome ever unknown?)")
	}
}

package integration

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Issue 13: clients learn a cluster's instances from its Metadata, as they
// learn a Kafka cluster's brokers, and fail over through them. Java's
// producer bootstraps from the serving instance alone and never goes back
// to its bootstrap servers (metadata.recovery.strategy=none, every Java
// client's default before 4.0); the serving instance is SIGKILLed while it
// produces. It can only carry on through the standby that the owner's
// Metadata named, and every record must then be in the backend once.
func TestClusterJavaClientFailsOverThroughMetadata(t *testing.T) {
	if secureTier {
		t.Skip("secure tier: Failover.java speaks plaintext")
	}
	bin := buildProxy(t)
	dir := fetchedClient(t, "EOSPROXY_MATRIX_JAVA3")
	java := needBinary(t, "java")
	needBinary(t, "javac") // source-file mode compiles in the JVM
	eachBackend(t, func(t *testing.T, b backend) {
		insts, owner, _ := twoInstanceCluster(t, bin, b, "javafo")

		topic := createTopic(t, kadm.NewClient(newClient(t, b.addrs[0])), 3)
		const n, killAt = 300, 50
		cmd := exec.Command(java, "-Xmx256m", "-XX:TieredStopAtLevel=1", "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
			"-cp", filepath.Join(dir, "*"), filepath.Join(integrationDir(t), "clients", "Failover.java"),
			insts[owner].bootstrap, topic, strconv.Itoa(n))
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		lines := make(chan string)
		go func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
			exited <- cmd.Wait()
		}()
		timeout := time.After(3 * time.Minute)
		var killed time.Time
		last := ""
	read:
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					break read
				}
				last = l
				if l == "acked "+strconv.Itoa(killAt) {
					insts[owner].cp.kill()
					insts[owner].up = false
					killed = time.Now()
					t.Logf("SIGKILLed the serving instance %d after %d records", owner, killAt+1)
				}
			case <-timeout:
				cmd.Process.Kill()
				t.Fatalf("the Java producer did not finish within 3 minutes; last line %q\nstderr:\n%s", last, tail(stderr.String(), 3000))
			}
		}
		if err := <-exited; err != nil || last != "done" {
			t.Fatalf("the Java producer: %v, last line %q\nstderr:\n%s", err, last, tail(stderr.String(), 3000))
		}
		if killed.IsZero() {
			t.Fatal("the serving instance was never killed")
		}
		t.Logf("the producer finished %s after the kill", time.Since(killed).Round(time.Millisecond))

		cons := newClient(t, b.addrs[0], kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
		checkAllOnceInOrder(t, consumeAll(t, cons, n), n)
		ends, err := kadm.NewClient(newClient(t, b.addrs[0])).ListEndOffsets(testCtx(t), topic)
		if err != nil {
			t.Fatal(err)
		}
		total := int64(0)
		ends.Each(func(o kadm.ListedOffset) { total += o.Offset })
		if total != n {
			t.Fatalf("%d records in the backend, want %d", total, n)
		}
	})
}

// metadataNames says whether the Metadata answer through bootstrap names a
// broker at addr.
func metadataNames(bootstrap, addr string) bool {
	cl, err := kgo.NewClient(kgo.SeedBrokers(bootstrap), kgo.RequestRetries(0))
	if err != nil {
		return false
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	resp, err := kmsg.NewPtrMetadataRequest().RequestWith(ctx, cl)
	if err != nil {
		return false
	}
	for _, br := range resp.Brokers {
		if net.JoinHostPort(br.Host, strconv.Itoa(int(br.Port))) == addr {
			return true
		}
	}
	return false
}

// A client that connects to a standby as the broker the owner's Metadata
// named names that node in its ApiVersions (v5, KIP-1242, franz-go v1.22).
// The standby relays it to the owner, whose backend connection is to
// another node: eosproxy must not let the backend answer
// REBOOTSTRAP_REQUIRED, upon which franz-go drops every broker it knows and
// kills its connections, in-flight produces included (an idempotent
// producer's retries died that way for minutes in an eoscheck run).
func TestClusterStandbyAnswersAsTheNodeNamed(t *testing.T) {
	bin := buildProxy(t)
	eachBackend(t, func(t *testing.T, b backend) {
		insts, owner, standby := twoInstanceCluster(t, bin, b, "peerid")
		var logs logBuf
		cl := newClient(t, insts[owner].bootstrap, kgo.RequestRetries(0),
			kgo.WithLogger(kgo.BasicLogger(&logs, kgo.LogLevelWarn, nil)))
		ctx := testCtx(t)
		meta, err := kmsg.NewPtrMetadataRequest().RequestWith(ctx, cl)
		if err != nil {
			t.Fatal(err)
		}
		peer := int32(-1)
		for _, br := range meta.Brokers {
			if net.JoinHostPort(br.Host, strconv.Itoa(int(br.Port))) == insts[standby].bootstrap {
				peer = br.NodeID
			}
		}
		if peer < 0 {
			t.Fatalf("the owner's Metadata does not name the standby: %+v", meta.Brokers)
		}
		if _, err := kmsg.NewPtrMetadataRequest().RequestWith(ctx, cl.Broker(int(peer))); err != nil {
			t.Errorf("Metadata through the standby, as node %d: %v", peer, err)
		}
		if strings.Contains(logs.String(), "REBOOTSTRAP_REQUIRED") {
			t.Errorf("the client was told to rebootstrap:\n%s", logs.String())
		}
	})
}

// twoInstanceCluster starts a cluster of two instances in front of b (a
// 6 s session) and returns them, once the owner's Metadata names the
// standby, with the owner's index and the standby's.
func twoInstanceCluster(t *testing.T, bin string, b backend, name string) ([]*clusterInstance, int, int) {
	t.Helper()
	seed := faultSeed(t)
	rng := rand.New(rand.NewPCG(seed, seed>>1|1))
	insts := startCluster(t, bin, b, rng, fmt.Sprintf("%s%d", name, seed%100000), 2, 6*time.Second)
	owner := clusterOwner(t, insts, 30*time.Second)
	standby := 1 - owner
	waitFor(t, "the owner's Metadata names the standby", 30*time.Second, func() bool {
		return metadataNames(insts[owner].bootstrap, insts[standby].bootstrap)
	})
	return insts, owner, standby
}

package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// javaKIP848Copier is a kafka-clients consume-transform-produce copier
// whose consumer uses the KIP-848 protocol (group.protocol=consumer): each
// poll's records are copied in one transaction with the consumer's
// positions (sendOffsetsToTransaction with its group metadata: member id and
// member epoch). A commit Kafka refuses (a rebalance moved the member's
// epoch on) is aborted and the consumer rewound to the group's committed
// offsets, as a copier must. It ends once its assigned partitions are all
// at their end offsets with nothing fetched for idle ms (args[5]), takes
// args[6] ms to process each poll's records, and prints one JSON
// line: transactions committed and aborted, the first unexpected exception.
const javaKIP848Copier = `
import java.time.Duration;
import java.util.*;
import org.apache.kafka.clients.consumer.*;
import org.apache.kafka.clients.producer.*;
import org.apache.kafka.common.*;
import org.apache.kafka.common.errors.*;

public class EosproxyKip848Copier {
    public static void main(String[] args) {
        String bootstrap = args[0], in = args[1], out = args[2], group = args[3], txnId = args[4];
        long idleMs = Long.parseLong(args[5]), workMs = Long.parseLong(args[6]);
        Properties cp = new Properties();
        cp.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        cp.put(ConsumerConfig.GROUP_ID_CONFIG, group);
        cp.put(ConsumerConfig.GROUP_PROTOCOL_CONFIG, "consumer");
        cp.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
        cp.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        cp.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        cp.put(ConsumerConfig.MAX_POLL_RECORDS_CONFIG, "200");
        cp.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, "org.apache.kafka.common.serialization.ByteArrayDeserializer");
        cp.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, "org.apache.kafka.common.serialization.ByteArrayDeserializer");
        Properties pp = new Properties();
        pp.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        pp.put(ProducerConfig.TRANSACTIONAL_ID_CONFIG, txnId);
        pp.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, "org.apache.kafka.common.serialization.ByteArraySerializer");
        pp.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, "org.apache.kafka.common.serialization.ByteArraySerializer");
        long commits = 0, aborts = 0, copied = 0;
        String failure = null;
        try (KafkaConsumer<byte[], byte[]> c = new KafkaConsumer<>(cp); KafkaProducer<byte[], byte[]> p = new KafkaProducer<>(pp)) {
            p.initTransactions();
            long[] assignedAt = {System.currentTimeMillis()};
            c.subscribe(List.of(in), new ConsumerRebalanceListener() {
                public void onPartitionsRevoked(Collection<TopicPartition> ps) {
                    System.err.println(System.currentTimeMillis() + " " + txnId + " revoked " + ps);
                }
                public void onPartitionsAssigned(Collection<TopicPartition> ps) {
                    assignedAt[0] = System.currentTimeMillis();
                    System.err.println(System.currentTimeMillis() + " " + txnId + " assigned " + ps);
                }
            });
            System.err.println(System.currentTimeMillis() + " " + txnId + " subscribed");
            long lastRecord = System.currentTimeMillis();
            while (true) {
                ConsumerRecords<byte[], byte[]> recs = c.poll(Duration.ofMillis(200));
                if (recs.isEmpty()) {
                    Set<TopicPartition> asg = c.assignment();
                    boolean atEnd = !asg.isEmpty();
                    try {
                        if (atEnd) {
                            Map<TopicPartition, Long> ends = c.endOffsets(asg);
                            for (TopicPartition tp : asg) {
                                atEnd &= c.position(tp) >= ends.get(tp);
                            }
                        }
                    } catch (IllegalStateException e) {
                        atEnd = false; // revoked meanwhile (the consumer's background thread)
                    }
                    long quiet = System.currentTimeMillis() - Math.max(lastRecord, assignedAt[0]);
                    if (atEnd && quiet > idleMs) break;
                    continue;
                }
                lastRecord = System.currentTimeMillis();
                Thread.sleep(workMs); // the copier's processing time
                Map<TopicPartition, OffsetAndMetadata> offs = new HashMap<>();
                p.beginTransaction();
                for (ConsumerRecord<byte[], byte[]> r : recs) {
                    p.send(new ProducerRecord<>(out, r.partition(), r.key(), r.value()));
                    offs.put(new TopicPartition(r.topic(), r.partition()), new OffsetAndMetadata(r.offset() + 1));
                }
                try {
                    p.sendOffsetsToTransaction(offs, c.groupMetadata());
                    p.commitTransaction();
                    commits++;
                    copied += recs.count();
                } catch (ProducerFencedException | OutOfOrderSequenceException | AuthorizationException e) {
                    throw e;
                } catch (KafkaException e) {
                    // Refused (CommitFailedException for a member the group
                    // moved past): abort and copy again from the group's
                    // committed offsets.
                    p.abortTransaction();
                    aborts++;
                    Set<TopicPartition> asg = c.assignment();
                    Map<TopicPartition, OffsetAndMetadata> committed = c.committed(asg);
                    for (TopicPartition tp : asg) {
                        OffsetAndMetadata o = committed.get(tp);
                        try {
                            if (o != null) c.seek(tp, o.offset()); else c.seekToBeginning(List.of(tp));
                        } catch (IllegalStateException revoked) {
                            // no longer ours: its new owner starts from the committed offset
                        }
                    }
                }
            }
        } catch (Exception e) {
            failure = e.toString();
            for (Throwable t = e.getCause(); t != null; t = t.getCause()) failure += "; caused by " + t;
        }
        String f = failure == null ? "null" : "\"" + failure.replace("\\", "\\\\").replace("\"", "\\\"").replace("\n", "\\n") + "\"";
        System.out.println("{\"commits\":" + commits + ",\"aborts\":" + aborts + ",\"copied\":" + copied + ",\"failure\":" + f + "}");
    }
}
`

type kip848CopierReport struct {
	Commits, Aborts, Copied int64
	Failure                 *string
}

// Java copiers using the KIP-848 consumer protocol against Kafka 4.1 through
// eosproxy: a second copier, with another transactional id, joins the group
// while the first copies, so member epochs move on between the copiers'
// TxnOffsetCommits and the decided commits' offset writes. Every input
// record is in the output exactly once, and the group's offsets in the
// backend reach the input's end.
func TestRealKIP848JavaCopiers(t *testing.T) {
	b := realBackend(t)
	sh := kafkaSh(t)
	needBinary(t, "javac")
	src := filepath.Join(t.TempDir(), "EosproxyKip848Copier.java")
	if err := os.WriteFile(src, []byte(javaKIP848Copier), 0o644); err != nil {
		t.Fatal(err)
	}
	p := startProxy(t, b)
	adm := kadm.NewClient(newClient(t, p.Addr()))
	const parts, n = 4, 20_000
	in, out := createTopic(t, adm, parts), createTopic(t, adm, parts)
	group := in + "-copiers"
	prod := newClient(t, p.Addr(), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	inCounts := produceToPartitions(t, prod, in, parts, 0, n)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	type result struct {
		rep            kip848CopierReport
		stdout, stderr string
		err            error
	}
	run := func(id string) <-chan result {
		ch := make(chan result, 1)
		go func() {
			var so, se logBuf
			cmd := exec.CommandContext(ctx, "bash", sh, "run", src, p.Addr(), in, out, group, id, "3000", "150")
			cmd.Stdout, cmd.Stderr = &so, &se
			err := cmd.Run()
			r := result{stdout: so.String(), stderr: se.String(), err: err}
			lines := splitLines(r.stdout)
			if err == nil && (len(lines) == 0 || json.Unmarshal([]byte(lines[len(lines)-1]), &r.rep) != nil) {
				r.err = fmt.Errorf("output is not one JSON line")
			}
			ch <- r
		}()
		return ch
	}
	first := run(in + "-copier-1")
	// The second copier joins once the first has committed something.
	direct := kadm.NewClient(newClient(t, b.addrs[0]))
	pollUntil(t, 2*time.Minute, func() (bool, string) {
		offs, err := direct.FetchOffsets(testCtx(t), group)
		if err != nil {
			return false, err.Error()
		}
		var sum int64
		offs.Each(func(o kadm.OffsetResponse) { sum += o.At })
		return sum > 0, "the first copier has not committed yet"
	})
	second := run(in + "-copier-2")
	var copied int64
	for i, ch := range []<-chan result{first, second} {
		r := <-ch
		if r.err != nil || r.rep.Failure != nil {
			t.Fatalf("copier %d: %v, failure %s\nstdout:\n%s\nstderr:\n%s", i+1, r.err, deref(r.rep.Failure), tail(r.stdout, 2000), tail(r.stderr, 4000))
		}
		checkJavaStderr(t, fmt.Sprintf("copier %d", i+1), withoutCloseRace(r.stderr))
		t.Logf("copier %d: %+v", i+1, r.rep)
		copied += r.rep.Copied
	}

	got, total := readBackendCommitted(t, b, out)
	if total != n {
		t.Fatalf("the output holds %d records, want %d (copiers reported %d copied)", total, n, copied)
	}
	seen := map[int]int{}
	for part, vs := range got {
		for _, v := range vs {
			seen[v]++
			if int32(v%parts) != part {
				t.Fatalf("value %d in output partition %d", v, part)
			}
		}
	}
	for v := range n {
		if seen[v] != 1 {
			t.Fatalf("value %d is in the output %d times", v, seen[v])
		}
	}
	backendOffsetsReach(t, b, group, in, inCounts)
	// No decided commit's offsets were dropped (eosproxy logs an error
	// when one is) nor retried (a warning).
	assertQuietProxy(t, p)
}

// withoutCloseRace drops from a Java copier's stderr the log records of a
// reconciliation cut short by the consumer's own close (the group assigned it
// partitions as it was leaving, the other copier having just left):
// kafka-clients logs it as an ERROR with a stack trace; it is the copiers'
// shutdown race, not a fault.
func withoutCloseRace(stderr string) string {
	var out, rec []string
	flush := func() {
		if !strings.Contains(strings.Join(rec, "\n"), "could not be completed before the consumer closed") {
			out = append(out, rec...)
		}
		rec = nil
	}
	for _, line := range strings.Split(stderr, "\n") {
		if strings.HasPrefix(line, "[") || (line != "" && line[0] >= '0' && line[0] <= '9') {
			flush()
		}
		rec = append(rec, line)
	}
	flush()
	return strings.Join(out, "\n")
}

package integration

// Refusals on the real-broker security tier: Apache Kafka with a SASL_SSL
// listener and its StandardAuthorizer is the reference for what a principal
// without a grant is told; eosproxy's --acl-file must tell real clients the
// same. And eosproxy with --tls-client-ca in front of it refuses a client
// without a certificate.

import (
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/eosproxy/eosproxy/proxy"
)

// startRealAuthorizedKafka is startRealSecureKafka with Kafka's
// StandardAuthorizer on, and a user carol (SCRAM-SHA-512) granted WRITE on
// the transactional ids prefixed "carol-" and DESCRIBE on every topic (so
// a producer gets as far as InitProducerId), nothing else: no
// IDEMPOTENT_WRITE, and no WRITE on a topic, which Kafka takes for it
// (KIP-679). eosproxy's own user is a super user.
func startRealAuthorizedKafka(t *testing.T) realSecureKafka {
	b := startRealSecureKafka(t, "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
		"super.users=User:ANONYMOUS;User:eosproxy")
	adm := kadm.NewClient(newClient(t, b.plaintext))
	ctx := testCtx(t)
	altered, err := adm.AlterUserSCRAMs(ctx, nil, []kadm.UpsertSCRAM{
		{User: "carol", Mechanism: kadm.ScramSha512, Iterations: 4096, Password: "carol-secret"}})
	if err == nil {
		err = altered.Error()
	}
	if err != nil {
		t.Fatalf("create SCRAM user carol: %v", err)
	}
	for _, acl := range []*kadm.ACLBuilder{
		kadm.NewACLs().Allow("User:carol").TransactionalIDs("carol-").
			ResourcePatternType(kadm.ACLPatternPrefixed).Operations(kadm.OpWrite),
		kadm.NewACLs().Allow("User:carol").Topics("*").Operations(kadm.OpDescribe),
	} {
		created, err := adm.CreateACLs(ctx, acl)
		if err == nil {
			for _, c := range created {
				err = errors.Join(err, c.Err)
			}
		}
		if err != nil {
			t.Fatalf("create carol's ACLs: %v", err)
		}
	}
	// Credentials and ACLs reach the listener through the metadata log.
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := newClient(t, b.addrs[0], carolDirect(b)...).Ping(ctx)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("carol cannot reach the SASL_SSL listener: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	return b
}

// carolDirect are carol's options for the broker's SASL_SSL listener (and,
// with the same password, eosproxy's termination).
func carolDirect(b realSecureKafka) []kgo.Opt {
	return []kgo.Opt{clientTLS(b.ca), kgo.SASL(scram.Auth{User: "carol", Pass: "carol-secret"}.AsSha512Mechanism())}
}

// initCodes are the answers carol gets from the broker at addr (Kafka or
// eosproxy) to FindCoordinator and InitProducerId for each transactional id
// (nil: idempotent), asked of the bootstrap broker itself.
func initCodes(t *testing.T, addr string, opts []kgo.Opt, ids ...*string) string {
	t.Helper()
	seed := newClient(t, addr, opts...).SeedBrokers()[0]
	ctx := testCtx(t)
	// ask sends req until its answer's code is not retriable: a new
	// cluster's transaction log comes up on the first FindCoordinator.
	ask := func(what string, req kmsg.Request, code func(kmsg.Response) int16) string {
		for {
			resp, err := seed.Request(ctx, req)
			if err != nil {
				t.Fatalf("%s at %s: %v", what, addr, err)
			}
			c := code(resp)
			if !kerr.IsRetriable(kerr.ErrorForCode(c)) || ctx.Err() != nil {
				return fmt.Sprintf("%s: %v", what, kerr.ErrorForCode(c))
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	var out []string
	for _, id := range ids {
		name := "idempotent"
		if id != nil {
			name = *id
			fc := kmsg.NewPtrFindCoordinatorRequest()
			fc.CoordinatorType, fc.CoordinatorKeys = 1, []string{*id}
			var co kmsg.FindCoordinatorResponseCoordinator
			out = append(out, ask("FindCoordinator "+name, fc, func(r kmsg.Response) int16 {
				co = r.(*kmsg.FindCoordinatorResponse).Coordinators[0]
				return co.ErrorCode
			}))
			msg := "<null>"
			if co.ErrorMessage != nil {
				msg = fmt.Sprintf("%q", *co.ErrorMessage)
			}
			if co.ErrorCode != 0 { // Kafka names no node; eosproxy names itself
				msg = fmt.Sprintf("node %d %q:%d, %s", co.NodeID, co.Host, co.Port, msg)
			}
			out = append(out, "  "+msg)
		}
		req := kmsg.NewPtrInitProducerIDRequest()
		req.TransactionalID, req.TransactionTimeoutMillis = id, 60000
		out = append(out, ask("InitProducerId "+name, req, func(r kmsg.Response) int16 {
			return r.(*kmsg.InitProducerIDResponse).ErrorCode
		}))
	}
	return strings.Join(out, "\n")
}

// franzRefusal is the error a franz-go producer of carol's gets at addr:
// transactional with id, or idempotent if id is "".
func franzRefusal(t *testing.T, addr string, opts []kgo.Opt, topic, id string) error {
	t.Helper()
	opts = append(opts, kgo.DefaultProduceTopic(topic), kgo.RecordRetries(2), kgo.RecordDeliveryTimeout(20*time.Second))
	if id != "" {
		opts = append(opts, kgo.TransactionalID(id))
	}
	cl := newClient(t, addr, opts...)
	if id != "" {
		if err := cl.BeginTransaction(); err != nil {
			return err
		}
	}
	// franz-go initialises the producer id on the first Produce.
	return cl.ProduceSync(testCtx(t), kgo.StringRecord("refused")).FirstErr()
}

// carolJavaProps writes carol's Java client properties for SASL_SSL.
func carolJavaProps(t *testing.T, b realSecureKafka) string {
	return writeFile(t, t.TempDir(), "client.properties", fmt.Sprintf(`security.protocol=SASL_SSL
ssl.truststore.type=PEM
ssl.truststore.location=%s
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="carol" password="carol-secret";
max.block.ms=20000
delivery.timeout.ms=20000
request.timeout.ms=10000
`, b.ca.path("ca.pem")))
}

// javaIdempotentRefusal sends one record with Kafka's ProducerPerformance
// (enable.idempotence=true) as carol at addr and returns its output.
func javaIdempotentRefusal(t *testing.T, b realSecureKafka, addr, topic string) string {
	t.Helper()
	stdout, stderr, _ := runToolErrFor(t, txnToolTimeout, "", "bash", kafkaSh(t), "run", "org.apache.kafka.tools.ProducerPerformance",
		"--topic", topic, "--num-records", "1", "--record-size", "10", "--throughput", "-1",
		"--producer.config", carolJavaProps(t, b),
		"--producer-props", "bootstrap.servers="+addr, "enable.idempotence=true", "acks=all")
	return stdout + stderr
}

// javaRefusal runs the Java transactional producer as carol with id at
// addr and returns its failure.
func javaRefusal(t *testing.T, b realSecureKafka, addr, topic, id string) string {
	t.Helper()
	sh := kafkaSh(t)
	needBinary(t, "javac")
	src := writeFile(t, t.TempDir(), "EosproxyTxnProducer.java", javaTxnProducer)
	stdout, stderr := runToolFor(t, txnToolTimeout, "", "bash", sh, "run", src, addr, topic, id, "commit:1", "1", carolJavaProps(t, b))
	lines := splitLines(stdout)
	var rep clientTxnReport
	if len(lines) == 0 || json.Unmarshal([]byte(lines[len(lines)-1]), &rep) != nil || rep.Failure == nil {
		t.Fatalf("Java producer with %s at %s was not refused: %s\nstderr:\n%s", id, addr, tail(stdout, 2000), tail(stderr, 3000))
	}
	return *rep.Failure
}

// carol's refusals from eosproxy's --acl-file are Kafka's, for raw
// requests, franz-go and Java kafka-clients; nothing is written; each
// refusal has a log line.
func TestRealSASLSSLACLRefusals(t *testing.T) {
	b := startRealAuthorizedKafka(t)
	p := terminatingProxy(t, b.secureBackend, `"User:carol":
  transactional_ids: ["carol-"]
`)
	carol := carolDirect(b)
	topic := createTopic(t, kadm.NewClient(newClient(t, b.plaintext)), 1)
	allowed, other := "carol-1", "dave-1"

	t.Run("InitProducerId", func(t *testing.T) {
		kafka := initCodes(t, b.addrs[0], carol, &allowed, &other, nil)
		t.Logf("Kafka's answers:\n%s", kafka)
		for _, want := range []string{"InitProducerId dave-1: TRANSACTIONAL_ID_AUTHORIZATION_FAILED",
			"InitProducerId idempotent: CLUSTER_AUTHORIZATION_FAILED", "InitProducerId carol-1: <nil>"} {
			if !strings.Contains(kafka, want) {
				t.Fatalf("Kafka's answers lack %q: the reference is not what this test assumes", want)
			}
		}
		if got := initCodes(t, p.Addr(), carol, &allowed, &other, nil); got != kafka {
			t.Errorf("eosproxy answers\n%s\nKafka answers\n%s", got, kafka)
		}
	})

	t.Run("franz-go", func(t *testing.T) {
		for _, c := range []struct {
			id   string
			want error
		}{{other, kerr.TransactionalIDAuthorizationFailed}, {"", kerr.ClusterAuthorizationFailed}} {
			kafkaErr := franzRefusal(t, b.addrs[0], carol, topic, c.id)
			proxyErr := franzRefusal(t, p.Addr(), carol, topic, c.id)
			if !errors.Is(kafkaErr, c.want) || !errors.Is(proxyErr, c.want) {
				t.Errorf("franz-go producer %q: Kafka refuses with %v, eosproxy with %v; want %v", c.id, kafkaErr, proxyErr, c.want)
			}
		}
	})

	t.Run("java", func(t *testing.T) {
		const want = "org.apache.kafka.common.errors.TransactionalIdAuthorizationException"
		kafka := javaRefusal(t, b, b.addrs[0], topic, other)
		viaProxy := javaRefusal(t, b, p.Addr(), topic, other)
		if !strings.Contains(kafka, want) || !strings.Contains(viaProxy, want) {
			t.Errorf("Java producer with %s: Kafka: %s; eosproxy: %s; want %s", other, kafka, viaProxy, want)
		}
	})

	t.Run("java idempotent", func(t *testing.T) {
		const want = "org.apache.kafka.common.errors.ClusterAuthorizationException"
		kafka := javaIdempotentRefusal(t, b, b.addrs[0], topic)
		viaProxy := javaIdempotentRefusal(t, b, p.Addr(), topic)
		if !strings.Contains(kafka, want) || !strings.Contains(viaProxy, want) {
			t.Errorf("Java idempotent producer: want %s from both;\nKafka:\n%s\neosproxy:\n%s", want, tail(kafka, 3000), tail(viaProxy, 3000))
		}
	})

	if n := b.records(t, topic); n != 0 {
		t.Fatalf("backend holds %d records of the refused producers", n)
	}
	logs := p.logs.String()
	for _, want := range []string{`"principal":"User:carol"`, `"txn":"dave-1"`,
		"TRANSACTIONAL_ID_AUTHORIZATION_FAILED", "CLUSTER_AUTHORIZATION_FAILED"} {
		if !strings.Contains(logs, want) {
			t.Errorf("eosproxy's log lacks %s", want)
		}
	}
}

// eosproxy with --tls-client-ca in front of the SASL_SSL broker: a client
// without a certificate fails the handshake and is closed, with a log line;
// one with a certificate writes a transaction, its subject the principal.
func TestRealMTLSRequired(t *testing.T) {
	b := startRealSecureKafka(t)
	rules, err := proxy.LoadACL(writeFile(t, t.TempDir(), "acl.yaml", `"User:CN=alice,O=Example": {transactional_ids: ["alice-"]}`))
	if err != nil {
		t.Fatal(err)
	}
	p := startProxy(t, b.backend, b.upstream(t), proxyTLS(t, b.ca, true), func(c *proxy.Config) { c.ACL = rules })
	topic := createTopic(t, kadm.NewClient(newClient(t, b.plaintext)), 1)

	noCert := newClient(t, p.Addr(), clientTLS(b.ca), kgo.RequestRetries(0))
	if _, err := kmsg.NewPtrMetadataRequest().RequestWith(testCtx(t), noCert); err == nil {
		t.Fatal("a client without a certificate was served")
	} else {
		t.Logf("client without a certificate: %v", err)
	}
	waitLog(t, p, "TLS handshake failed")

	alice := b.ca.issue(t, "alice", pkix.Name{CommonName: "alice", Organization: []string{"Example"}}, false)
	cl := newClient(t, p.Addr(), clientTLS(b.ca, alice), kgo.DefaultProduceTopic(topic), kgo.TransactionalID("alice-1"))
	if err := cl.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	produceAndFlush(t, cl, topic, 0, 3)
	if err := cl.EndTransaction(testCtx(t), kgo.TryCommit); err != nil {
		t.Fatal(err)
	}
	backendReaches3(t, b.secureBackend, topic)
	// The principal is the certificate's: another id is not granted to it.
	if err := franzRefusal(t, p.Addr(), []kgo.Opt{clientTLS(b.ca, alice)}, topic, "bob-1"); !errors.Is(err, kerr.TransactionalIDAuthorizationFailed) {
		t.Fatalf("alice's certificate with transactional id bob-1: %v, want TRANSACTIONAL_ID_AUTHORIZATION_FAILED", err)
	}
	if !strings.Contains(p.logs.String(), `"principal":"User:CN=alice,O=Example"`) {
		t.Error("no log line names the certificate's principal")
	}
}

// Pass-through: a client authenticated by the backend writes under its own
// principal. carol may use her transactional ids but not write the topic:
// Kafka refuses her Produce with TOPIC_AUTHORIZATION_FAILED, and so must
// eosproxy, which buffers a transactional batch and forwards it at the
// commit under its own principal: without asking the backend first, carol
// would write the topic through a transaction.
func TestRealPassThroughTopicWriteRefused(t *testing.T) {
	b := startRealAuthorizedKafka(t)
	p := startProxy(t, b.backend, b.upstream(t), proxyTLS(t, b.ca, false))
	carol := carolDirect(b)
	topic := createTopic(t, kadm.NewClient(newClient(t, b.plaintext)), 1)
	kafkaErr := franzRefusal(t, b.addrs[0], carol, topic, "carol-direct")
	proxyErr := franzRefusal(t, p.Addr(), carol, topic, "carol-proxied")
	if !errors.Is(kafkaErr, kerr.TopicAuthorizationFailed) || !errors.Is(proxyErr, kerr.TopicAuthorizationFailed) {
		t.Errorf("carol's transactional Produce: Kafka refuses with %v, eosproxy with %v; want %v",
			kafkaErr, proxyErr, kerr.TopicAuthorizationFailed)
	}
	if n := b.records(t, topic); n != 0 {
		t.Fatalf("backend holds %d records of carol's", n)
	}

	// Nor may carol add a group's offsets to a transaction without READ on
	// the group: Kafka answers AddOffsetsToTxn and TxnOffsetCommit
	// GROUP_AUTHORIZATION_FAILED, and so must eosproxy, which would commit
	// them at the end under its own principal.
	groupCodes := func(addr, id string) (int16, int16) {
		x := initRawTxn(t, newClient(t, addr, carol...), id)
		req := kmsg.NewPtrAddOffsetsToTxnRequest()
		req.TransactionalID, req.ProducerID, req.ProducerEpoch, req.Group = x.id, x.pid, x.epoch, "carol-group"
		resp, err := req.RequestWith(testCtx(t), x.cl)
		if err != nil {
			t.Fatalf("AddOffsetsToTxn at %s: %v", addr, err)
		}
		// To the broker itself: a client finds the group's coordinator
		// first, which carol may not even DESCRIBE.
		commit := kmsg.NewPtrTxnOffsetCommitRequest()
		commit.TransactionalID, commit.Group, commit.ProducerID, commit.ProducerEpoch, commit.Generation = x.id, "carol-group", x.pid, x.epoch, -1
		rt := kmsg.NewTxnOffsetCommitRequestTopic()
		rt.Topic = topic
		rp := kmsg.NewTxnOffsetCommitRequestTopicPartition()
		rp.Offset, rp.LeaderEpoch = 1, -1
		rt.Partitions = append(rt.Partitions, rp)
		commit.Topics = append(commit.Topics, rt)
		cresp, err := commit.RequestWith(testCtx(t), x.cl.SeedBrokers()[0])
		if err != nil {
			t.Fatalf("TxnOffsetCommit at %s: %v", addr, err)
		}
		if len(cresp.Topics) != 1 || len(cresp.Topics[0].Partitions) != 1 {
			t.Fatalf("TxnOffsetCommit at %s: answer %+v", addr, cresp)
		}
		return resp.ErrorCode, cresp.Topics[0].Partitions[0].ErrorCode
	}
	kafkaAdd, kafkaCommit := groupCodes(b.addrs[0], "carol-group-direct")
	proxyAdd, proxyCommit := groupCodes(p.Addr(), "carol-group-proxied")
	want := kerr.GroupAuthorizationFailed.Code
	if kafkaAdd != want || kafkaCommit != want || proxyAdd != want || proxyCommit != want {
		t.Errorf("carol without READ on the group: Kafka answers AddOffsetsToTxn %v and TxnOffsetCommit %v, eosproxy %v and %v; want %v from all",
			kerr.ErrorForCode(kafkaAdd), kerr.ErrorForCode(kafkaCommit), kerr.ErrorForCode(proxyAdd), kerr.ErrorForCode(proxyCommit), kerr.GroupAuthorizationFailed)
	}
	if logs := p.logs.String(); !strings.Contains(logs, "GROUP_AUTHORIZATION_FAILED") {
		t.Errorf("eosproxy's log lacks the group refusal")
	}

	// Nor may carol commit a transaction's offsets of a topic she may not
	// READ: with READ on her groups, Kafka answers TxnOffsetCommit
	// TOPIC_AUTHORIZATION_FAILED, and so must eosproxy.
	adm := kadm.NewClient(newClient(t, b.plaintext))
	created, err := adm.CreateACLs(testCtx(t), kadm.NewACLs().Allow("User:carol").Groups("carol-").
		ResourcePatternType(kadm.ACLPatternPrefixed).Operations(kadm.OpRead))
	if err == nil {
		for _, c := range created {
			err = errors.Join(err, c.Err)
		}
	}
	if err != nil {
		t.Fatalf("grant carol READ on her groups: %v", err)
	}
	offsetCode := func(addr, id string) int16 {
		x := initRawTxn(t, newClient(t, addr, carol...), id)
		// ACLs reach the broker through the metadata log: retried until
		// the group's READ is there.
		pollUntil(t, 30*time.Second, func() (bool, string) {
			req := kmsg.NewPtrAddOffsetsToTxnRequest()
			req.TransactionalID, req.ProducerID, req.ProducerEpoch, req.Group = x.id, x.pid, x.epoch, "carol-group"
			resp, err := req.RequestWith(testCtx(t), x.cl)
			if err != nil {
				t.Fatalf("AddOffsetsToTxn at %s: %v", addr, err)
			}
			return resp.ErrorCode == 0, fmt.Sprintf("AddOffsetsToTxn at %s: %v", addr, kerr.ErrorForCode(resp.ErrorCode))
		})
		return x.commitAs("carol-group", topic, map[int32]int64{0: 1}, "", -1, nil)
	}
	kafkaCode, proxyCode := offsetCode(b.addrs[0], "carol-offsets-direct"), offsetCode(p.Addr(), "carol-offsets-proxied")
	if kafkaCode != kerr.TopicAuthorizationFailed.Code || proxyCode != kafkaCode {
		t.Errorf("carol's TxnOffsetCommit: Kafka answers %v, eosproxy %v; want %v from both",
			kerr.ErrorForCode(kafkaCode), kerr.ErrorForCode(proxyCode), kerr.TopicAuthorizationFailed)
	}
	if logs := p.logs.String(); !strings.Contains(logs, "TOPIC_AUTHORIZATION_FAILED") || !strings.Contains(logs, `"principal":"User:carol"`) {
		t.Errorf("eosproxy's log lacks the refusal naming User:carol")
	}
}

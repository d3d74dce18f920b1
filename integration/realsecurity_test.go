package integration

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// The real-broker security tier: an Apache Kafka broker of the test's own
// with a SASL_SSL listener (certificates made by the test, PLAIN users in
// its JAAS config, SCRAM users created as kafka-configs creates them), in
// front of it eosproxy with TLS and SASL on both sides, and franz-go, Java
// kafka-clients and librdkafka connecting with TLS and SASL.

// realSecureKafka is that broker: PLAINTEXT for the test's own setup,
// SASL_SSL for eosproxy.
type realSecureKafka struct {
	secureBackend
	plaintext string
}

// extra is more broker configuration (properties lines).
func startRealSecureKafka(t *testing.T, extra ...string) realSecureKafka {
	realKafka(t) // the real-broker tier is on
	sh := kafkaSh(t)
	ca := newTestCA(t)
	cert := ca.issue(t, "broker", pkix.Name{CommonName: "broker"}, true)
	// Kafka's PEM key store: an unencrypted PKCS#8 key, then the chain.
	key, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	keystore := append(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: key}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]})...)
	writeFile(t, ca.dir, "broker-keystore.pem", string(keystore))

	// Ports the kernel had free a moment ago may be taken by the time the
	// broker binds them (kafka.sh checks first): then try others.
	var plainPort, securePort int
	var kafka func(cmd string) error
	var run string
	start := time.Now()
	for attempt := 1; ; attempt++ {
		ports := freePorts(t, 3)
		plainPort, securePort = ports[0], ports[2]
		run = filepath.Join(t.TempDir(), "kafka")
		kafka = kafkaWithSASLSSL(t, sh, run, ports[0], ports[1], ports[2], ca.path("broker-keystore.pem"), extra...)
		err := kafka("start")
		if err == nil {
			break
		}
		if attempt == 3 || !strings.Contains(err.Error(), "already in use") {
			t.Fatal(err)
		}
		t.Logf("retrying on other ports: %v", err)
	}
	t.Cleanup(func() { kafka("stop") })
	t.Logf("SASL_SSL broker up in %s", time.Since(start).Round(time.Millisecond))

	plainAddr := "127.0.0.1:" + strconv.Itoa(plainPort)
	adm := kadm.NewClient(newClient(t, plainAddr))
	altered, err := adm.AlterUserSCRAMs(testCtx(t), nil, []kadm.UpsertSCRAM{
		{User: "eosproxy", Mechanism: kadm.ScramSha512, Iterations: 4096, Password: "backend-secret"},
		{User: "bob", Mechanism: kadm.ScramSha256, Iterations: 4096, Password: "bob-backend"},
	})
	if err == nil {
		err = altered.Error()
	}
	if err != nil {
		t.Fatalf("create SCRAM users: %v", err)
	}
	b := realSecureKafka{plaintext: plainAddr, secureBackend: secureBackend{
		backend: backend{name: "kafka-sasl-ssl", addrs: []string{"127.0.0.1:" + strconv.Itoa(securePort)}},
		ca:      ca,
		opts: []kgo.Opt{
			kgo.DialTLSConfig(clientTLSConfig(ca)),
			kgo.SASL(scram.Auth{User: "eosproxy", Pass: "backend-secret"}.AsSha512Mechanism()),
		},
	}}
	// SCRAM credentials reach the listener through the metadata log.
	deadline := time.Now().Add(30 * time.Second)
	for {
		cl, err := kgo.NewClient(append(b.opts, kgo.SeedBrokers(b.addrs...))...)
		if err == nil {
			err = cl.Ping(testCtx(t))
			cl.Close()
		}
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(run, "logs", "server.log"))
			t.Fatalf("eosproxy's SCRAM user cannot reach the SASL_SSL listener: %v\nbroker log (tail):\n%s", err, tail(string(log), 6000))
		}
		time.Sleep(200 * time.Millisecond)
	}
	return b
}

// kafkaWithSASLSSL runs kafka.sh for a broker on these ports with a
// SASL_SSL listener whose key and certificate are in keystore.
func kafkaWithSASLSSL(t *testing.T, sh, run string, plainPort, ctlPort, securePort int, keystore string, more ...string) func(cmd string) error {
	// Later keys win in a Java properties file: these replace kafka.sh's
	// listeners.
	extra := fmt.Sprintf(`listeners=PLAINTEXT://127.0.0.1:%[1]d,CONTROLLER://127.0.0.1:%[2]d,SASL_SSL://127.0.0.1:%[3]d
advertised.listeners=PLAINTEXT://127.0.0.1:%[1]d,SASL_SSL://127.0.0.1:%[3]d
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL
sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512
listener.name.sasl_ssl.ssl.keystore.type=PEM
listener.name.sasl_ssl.ssl.keystore.location=%[4]s
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_alice="alice-backend";
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
`, plainPort, ctlPort, securePort, keystore) + strings.Join(more, "\n")
	env := append(os.Environ(), "KAFKA_PORT="+strconv.Itoa(plainPort), "KAFKA_CONTROLLER_PORT="+strconv.Itoa(ctlPort),
		"EOSPROXY_KAFKA_RUN="+run, "KAFKA_EXTRA_CONFIG="+extra,
		"KAFKA_HEAP_OPTS=-Xmx512m -Xms128m", "KAFKA_BROKERS=1")
	return func(cmd string) error {
		c := exec.Command("bash", sh, cmd)
		c.Env = env
		out, err := c.CombinedOutput()
		if err != nil {
			return fmt.Errorf("kafka.sh %s: %w\n%s", cmd, err, tail(string(out), 3000))
		}
		return nil
	}
}

// realTxnPlan: commit, abort, commit; 200 records committed.
const realTxnPlan = "commit:100,abort:50,commit:100"

// checkCommitted waits until the backend holds the 200 committed records
// of topic (eosproxy writes only committed data to it) and reads them back
// through eosproxy with read_committed as the client with opts.
func checkCommitted(t *testing.T, b realSecureKafka, p *testProxy, topic string, opts ...kgo.Opt) {
	t.Helper()
	const want = 200
	deadline := time.Now().Add(60 * time.Second)
	for b.records(t, topic) < want && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := b.records(t, topic); n != want {
		t.Fatalf("backend holds %d records of %s, want the %d committed", n, topic, want)
	}
	cons := newClient(t, p.Addr(), append(opts, kgo.ConsumeTopics(topic),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
	seen := map[string]bool{}
	for len(seen) < want {
		fs := cons.PollFetches(testCtx(t))
		if err := fs.Err0(); err != nil {
			t.Fatal(err)
		}
		fs.EachRecord(func(r *kgo.Record) {
			if seen[string(r.Value)] {
				t.Fatalf("value %s read twice", r.Value)
			}
			seen[string(r.Value)] = true
		})
	}
}

// rdkafkaTxn runs librdkafka_txn.py's plan through p with TLS and SASL as
// user, then checks what was committed.
func rdkafkaTxn(t *testing.T, b realSecureKafka, p *testProxy, adm *kadm.Client, mech, user, pass string, check []kgo.Opt) {
	script := needRdkafkaPython(t, "librdkafka_txn.py")
	topic := createTopic(t, adm, 3)
	stdout, stderr := runToolFor(t, txnToolTimeout, "", debianPython, script, "--bootstrap", p.Addr(),
		"--topic", topic, "--transactional-id", topic+"-txn", "--plan", realTxnPlan, "--partitions", "3",
		"--config", "security.protocol=SASL_SSL", "--config", "ssl.ca.location="+b.ca.path("ca.pem"),
		"--config", "sasl.mechanisms="+mech, "--config", "sasl.username="+user, "--config", "sasl.password="+pass)
	var rep clientTxnReport
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil || rep.Exception != nil || len(rep.Errors) > 0 {
		t.Fatalf("librdkafka: %v %s\nstderr:\n%s", err, tail(stdout, 2000), tail(stderr, 3000))
	}
	checkCommitted(t, b, p, topic, check...)
}

func clientTLSConfig(ca *testCA) *tls.Config { return &tls.Config{RootCAs: ca.pool()} }

func TestRealSASLSSLTermination(t *testing.T) {
	b := startRealSecureKafka(t)
	p := terminatingProxy(t, b.secureBackend, "")
	bob := []kgo.Opt{clientTLS(b.ca), kgo.SASL(scram.Auth{User: "bob", Pass: "bob-secret"}.AsSha256Mechanism())}
	adm := kadm.NewClient(newClient(t, p.Addr(), bob...))

	t.Run("franz-go", func(t *testing.T) {
		topic := createTopic(t, adm, 3)
		cl := newClient(t, p.Addr(), append(bob, kgo.DefaultProduceTopic(topic), kgo.TransactionalID(topic+"-txn"))...)
		v := 0
		for _, step := range strings.Split(realTxnPlan, ",") {
			kind, count, _ := strings.Cut(step, ":")
			n, _ := strconv.Atoi(count)
			if err := cl.BeginTransaction(); err != nil {
				t.Fatal(err)
			}
			for range n {
				cl.Produce(testCtx(t), kgo.StringRecord(strconv.Itoa(v)), nil)
				v++
			}
			if err := cl.Flush(testCtx(t)); err != nil {
				t.Fatal(err)
			}
			if err := cl.EndTransaction(testCtx(t), kgo.TransactionEndTry(kind == "commit")); err != nil {
				t.Fatal(err)
			}
		}
		checkCommitted(t, b, p, topic, bob...)
	})

	t.Run("java", func(t *testing.T) {
		sh := kafkaSh(t)
		needBinary(t, "javac")
		dir := t.TempDir()
		src := writeFile(t, dir, "EosproxyTxnProducer.java", javaTxnProducer)
		props := writeFile(t, dir, "client.properties", fmt.Sprintf(`security.protocol=SASL_SSL
ssl.truststore.type=PEM
ssl.truststore.location=%s
sasl.mechanism=PLAIN
sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="alice" password="alice-secret";
`, b.ca.path("ca.pem")))
		topic := createTopic(t, adm, 3)
		stdout, stderr := runToolFor(t, txnToolTimeout, "", "bash", sh, "run", src,
			p.Addr(), topic, topic+"-txn", realTxnPlan, "3", props)
		lines := splitLines(stdout)
		var rep clientTxnReport
		if len(lines) == 0 || json.Unmarshal([]byte(lines[len(lines)-1]), &rep) != nil || rep.Failure != nil {
			t.Fatalf("Java producer: %s\nstderr:\n%s", tail(stdout, 2000), tail(stderr, 3000))
		}
		checkCommitted(t, b, p, topic, bob...)
	})

	// librdkafka before 2.6.1 (Debian's is 2.0.2) sends its own nonce
	// twice in SCRAM's client-final message, which github.com/xdg-go/scram
	// refuses, as Kafka 4.1 itself does: this client uses PLAIN.
	t.Run("librdkafka", func(t *testing.T) {
		rdkafkaTxn(t, b, p, adm, "PLAIN", "alice", "alice-secret", bob)
	})

	t.Run("wrong password", func(t *testing.T) {
		topic := createTopic(t, adm, 1)
		wrongPasswordRefused(t, p, b.ca, plain.Auth{User: "alice", Pass: "alice-backend"}.AsMechanism(), topic)
		if n := b.records(t, topic); n != 0 {
			t.Fatalf("backend holds %d records", n)
		}
	})
}

// Pass-through: the broker authenticates the clients' own users through
// eosproxy, which reaches it with its own user.
func TestRealSASLSSLPassThrough(t *testing.T) {
	b := startRealSecureKafka(t)
	p := startProxy(t, b.backend, b.upstream(t), proxyTLS(t, b.ca, false))
	alice := []kgo.Opt{clientTLS(b.ca), kgo.SASL(plain.Auth{User: "alice", Pass: "alice-backend"}.AsMechanism())}
	topic := createTopic(t, kadm.NewClient(newClient(t, p.Addr(), alice...)), 3)
	cl := newClient(t, p.Addr(), append(alice, kgo.DefaultProduceTopic(topic), kgo.TransactionalID(topic+"-txn"))...)
	if err := cl.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	produceAndFlush(t, cl, topic, 0, 200)
	if err := cl.EndTransaction(testCtx(t), kgo.TryCommit); err != nil {
		t.Fatal(err)
	}
	bob := []kgo.Opt{clientTLS(b.ca), kgo.SASL(scram.Auth{User: "bob", Pass: "bob-backend"}.AsSha256Mechanism())}
	checkCommitted(t, b, p, topic, bob...)

	// The broker's refusal, passed through.
	wrongPasswordRefused(t, p, b.ca, scram.Auth{User: "bob", Pass: "wrong"}.AsSha256Mechanism(), topic)
	if n := b.records(t, topic); n != 200 {
		t.Fatalf("backend holds %d records, want the 200 committed", n)
	}
	t.Run("librdkafka", func(t *testing.T) {
		// PLAIN: Debian's librdkafka 2.0.2 fails SCRAM against Kafka 4.1
		// itself (its client-final nonce, fixed in librdkafka 2.6.1).
		rdkafkaTxn(t, b, p, kadm.NewClient(newClient(t, p.Addr(), bob...)), "PLAIN", "alice", "alice-backend", bob)
	})
}

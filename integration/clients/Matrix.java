// Java kafka-clients side of the client matrix (integration/clientmatrix_test.go),
// run in source-file mode: java -cp 'DIR/*' Matrix.java ARGS. It is compiled
// against whichever kafka-clients DIR holds (3.x and 4.x), so it uses only
// API both have.
//
// Args: BOOTSTRAP COUNT PARTITIONS TXN_ID then MODE=TOPIC pairs, MODE one of
// plain, idempotent, transactional, read_committed:
//   plain, idempotent: produce COUNT records "<mode>-<i>" to partition
//     i % PARTITIONS (acks=all; idempotence off, on), then read the topic back
//     from the beginning until COUNT records have come;
//   transactional: commit COUNT records "c1-<i>", abort COUNT "a-<i>",
//     commit COUNT "c2-<i>" (the test reads the topic with read_committed);
//   read_committed: read the topic (written by the test: the same three
//     transactions) with isolation.level=read_committed until 2*COUNT
//     records have come.
// Prints one JSON line: {"version": ..., "modes": {MODE: {"consumed":
// [[partition, value], ...], "error": null or "..."}}}. The test judges.
import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;

import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

public class Matrix {
    static final long DEADLINE_MS = 30_000;

    public static void main(String[] args) {
        String bootstrap = args[0];
        int count = Integer.parseInt(args[1]);
        int partitions = Integer.parseInt(args[2]);
        String txnId = args[3];
        StringBuilder out = new StringBuilder("{\"version\":" + quote(version()) + ",\"modes\":{");
        for (int a = 4; a < args.length; a++) {
            String[] kv = args[a].split("=", 2);
            String mode = kv[0], topic = kv[1];
            List<String[]> consumed = new ArrayList<>();
            String err = null;
            try {
                switch (mode) {
                    case "plain":
                    case "idempotent":
                        produce(bootstrap, topic, count, partitions, mode.equals("idempotent"), mode);
                        consume(bootstrap, topic, partitions, count, "read_uncommitted", consumed);
                        break;
                    case "transactional":
                        transact(bootstrap, topic, count, partitions, txnId);
                        break;
                    case "read_committed":
                        consume(bootstrap, topic, partitions, 2 * count, "read_committed", consumed);
                        break;
                    default:
                        throw new IllegalArgumentException("unknown mode " + mode);
                }
            } catch (Exception e) {
                err = e.toString();
                for (Throwable c = e.getCause(); c != null; c = c.getCause()) {
                    err += "; caused by " + c;
                }
            }
            if (a > 4) out.append(',');
            out.append(quote(mode)).append(":{\"consumed\":[");
            for (int i = 0; i < consumed.size(); i++) {
                if (i > 0) out.append(',');
                out.append('[').append(consumed.get(i)[0]).append(',').append(quote(consumed.get(i)[1])).append(']');
            }
            out.append("],\"error\":").append(err == null ? "null" : quote(err)).append('}');
        }
        System.out.println(out.append("}}"));
    }

    // version reads the version kafka-clients was built as (AppInfoParser
    // moved to an internals package in 4.x).
    static String version() {
        Properties p = new Properties();
        try (java.io.InputStream in = KafkaProducer.class.getResourceAsStream("/kafka/kafka-version.properties")) {
            p.load(in);
        } catch (Exception e) {
            return "?";
        }
        return p.getProperty("version", "?");
    }

    static Properties producerProps(String bootstrap) {
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        p.put("key.serializer", StringSerializer.class.getName());
        p.put("value.serializer", StringSerializer.class.getName());
        p.put("acks", "all");
        p.put("delivery.timeout.ms", "60000"); // 3.x wants at least linger.ms + request.timeout.ms
        p.put("linger.ms", "5");
        return p;
    }

    static void produce(String bootstrap, String topic, int count, int partitions, boolean idempotent, String prefix) throws Exception {
        Properties p = producerProps(bootstrap);
        p.put("enable.idempotence", Boolean.toString(idempotent));
        try (KafkaProducer<String, String> prod = new KafkaProducer<>(p)) {
            send(prod, topic, count, partitions, prefix);
            prod.flush();
        }
    }

    // send sends count records and waits for every acknowledgement.
    static void send(KafkaProducer<String, String> prod, String topic, int count, int partitions, String prefix) throws Exception {
        List<java.util.concurrent.Future<?>> acks = new ArrayList<>();
        for (int i = 0; i < count; i++) {
            acks.add(prod.send(new ProducerRecord<>(topic, i % partitions, null, prefix + "-" + i)));
        }
        for (java.util.concurrent.Future<?> f : acks) {
            f.get();
        }
    }

    static void transact(String bootstrap, String topic, int count, int partitions, String txnId) throws Exception {
        Properties p = producerProps(bootstrap);
        p.put("transactional.id", txnId);
        p.put("max.block.ms", "30000");
        try (KafkaProducer<String, String> prod = new KafkaProducer<>(p)) {
            prod.initTransactions();
            String[][] plan = {{"c1", "commit"}, {"a", "abort"}, {"c2", "commit"}};
            for (String[] step : plan) {
                prod.beginTransaction();
                send(prod, topic, count, partitions, step[0]);
                if (step[1].equals("commit")) {
                    prod.commitTransaction();
                } else {
                    prod.abortTransaction();
                }
            }
        }
    }

    static void consume(String bootstrap, String topic, int partitions, int want, String isolation, List<String[]> into) {
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        p.put("key.deserializer", StringDeserializer.class.getName());
        p.put("value.deserializer", StringDeserializer.class.getName());
        p.put("enable.auto.commit", "false");
        p.put("isolation.level", isolation);
        List<TopicPartition> tps = new ArrayList<>();
        for (int i = 0; i < partitions; i++) {
            tps.add(new TopicPartition(topic, i));
        }
        long deadline = System.currentTimeMillis() + DEADLINE_MS;
        try (KafkaConsumer<String, String> c = new KafkaConsumer<>(p)) {
            c.assign(tps);
            c.seekToBeginning(tps);
            while (into.size() < want) {
                long left = deadline - System.currentTimeMillis();
                if (left <= 0) {
                    throw new IllegalStateException("read " + into.size() + " of " + want + " records in " + DEADLINE_MS + " ms");
                }
                for (ConsumerRecord<String, String> r : c.poll(Duration.ofMillis(Math.min(left, 500)))) {
                    into.add(new String[] {Integer.toString(r.partition()), r.value()});
                }
            }
        }
    }

    static String quote(String s) {
        StringBuilder b = new StringBuilder("\"");
        for (char ch : s.toCharArray()) {
            switch (ch) {
                case '"': b.append("\\\""); break;
                case '\\': b.append("\\\\"); break;
                case '\n': b.append("\\n"); break;
                case '\r': b.append("\\r"); break;
                case '\t': b.append("\\t"); break;
                default:
                    if (ch < 0x20) b.append(String.format("\\u%04x", (int) ch)); else b.append(ch);
            }
        }
        return b.append('"').toString();
    }
}

// An idempotent Java producer through a cluster of eosproxy instances,
// driven by integration/clusterclients_test.go: it sends records one at a
// time, each acknowledged before the next, printing "acked N" after each,
// while the test kills the instance serving. It bootstraps from one
// instance only and never rebootstraps (metadata.recovery.strategy=none,
// as every Java client before 4.0 by default), so it can carry on only
// through the other instances that the cluster's Metadata names.
//
// usage: java -cp 'kafka-clients/*' Failover.java BOOTSTRAP TOPIC COUNT

import java.util.Properties;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.serialization.StringSerializer;

public class Failover {
    public static void main(String[] args) throws Exception {
        String bootstrap = args[0], topic = args[1];
        int count = Integer.parseInt(args[2]);
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        p.put("key.serializer", StringSerializer.class.getName());
        p.put("value.serializer", StringSerializer.class.getName());
        p.put("enable.idempotence", "true");
        p.put("acks", "all");
        p.put("metadata.recovery.strategy", "none");
        p.put("request.timeout.ms", "5000");
        p.put("delivery.timeout.ms", "120000");
        p.put("reconnect.backoff.max.ms", "500");
        p.put("retry.backoff.max.ms", "500");
        try (KafkaProducer<String, String> prod = new KafkaProducer<>(p)) {
            for (int i = 0; i < count; i++) {
                prod.send(new ProducerRecord<>(topic, Integer.toString(i % 3), Integer.toString(i))).get();
                System.out.println("acked " + i);
                System.out.flush();
            }
        }
        System.out.println("done");
    }
}

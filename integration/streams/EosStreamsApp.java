// A small Kafka Streams application with processing.guarantee=exactly_once_v2,
// run through eosproxy by integration/streams_test.go (TestStreamsExactlyOnce).
//
// Topology: the input records' values are "KEY:PRODUCER:SEQ". They are
// re-keyed by KEY and sent through a repartition topic (<app>-bykey-repartition,
// which Streams purges with DeleteRecords once its records are committed), then
// counted per key in a persistent (RocksDB) key-value store whose changelog is
// <app>-counts-changelog. For each input record one output record is written,
// keyed by KEY, with the value "KEY:PRODUCER:SEQ COUNT", COUNT being the key's
// count after this record. With exactly-once each key's outputs carry the
// counts 1, 2, 3, ... with no gap or repeat and each input value appears once;
// a record processed twice or lost shows in the counts, even if the duplicate
// output itself were filtered away.
//
// Usage: EosStreamsApp BOOTSTRAP APPLICATION_ID INPUT_TOPIC OUTPUT_TOPIC STATE_DIR [GUARANTEE]
// GUARANTEE is processing.guarantee, exactly_once_v2 unless given
// (at_least_once shows that the test's check catches reprocessing).
// Runs until SIGTERM (closed cleanly: stores flushed, checkpoint written) or
// SIGKILL. Prints on stdout "started" once SIGTERM closes it cleanly,
// "state OLD NEW" as the client's state changes and "closed" once closed;
// Streams logs to stderr (log4j2 config from the command line).
import java.time.Duration;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.kstream.Repartitioned;
import org.apache.kafka.streams.processor.api.Processor;
import org.apache.kafka.streams.processor.api.ProcessorContext;
import org.apache.kafka.streams.processor.api.Record;
import org.apache.kafka.streams.state.KeyValueStore;
import org.apache.kafka.streams.state.Stores;

public final class EosStreamsApp {
    static final String STORE = "counts";

    /** Counts records per key and appends the count to the value. */
    static final class Count implements Processor<String, String, String, String> {
        private ProcessorContext<String, String> ctx;
        private KeyValueStore<String, Long> store;

        @Override
        public void init(ProcessorContext<String, String> ctx) {
            this.ctx = ctx;
            this.store = ctx.getStateStore(STORE);
        }

        @Override
        public void process(Record<String, String> r) {
            Long n = store.get(r.key());
            long next = n == null ? 1 : n + 1;
            store.put(r.key(), next);
            ctx.forward(r.withValue(r.value() + " " + next));
        }
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 5 && args.length != 6) {
            System.err.println("usage: EosStreamsApp BOOTSTRAP APPLICATION_ID INPUT_TOPIC OUTPUT_TOPIC STATE_DIR [GUARANTEE]");
            System.exit(2);
        }
        String bootstrap = args[0], appId = args[1], input = args[2], output = args[3], stateDir = args[4];
        String guarantee = args.length == 6 ? args[5] : StreamsConfig.EXACTLY_ONCE_V2;

        StreamsBuilder b = new StreamsBuilder();
        b.addStateStore(Stores.keyValueStoreBuilder(
                Stores.persistentKeyValueStore(STORE), Serdes.String(), Serdes.Long()));
        b.stream(input, Consumed.with(Serdes.String(), Serdes.String()))
                .selectKey((k, v) -> v.substring(0, v.indexOf(':')))
                .repartition(Repartitioned.<String, String>as("bykey")
                        .withKeySerde(Serdes.String()).withValueSerde(Serdes.String()))
                .process(Count::new, STORE)
                .to(output, Produced.with(Serdes.String(), Serdes.String()));

        Properties p = new Properties();
        p.put(StreamsConfig.APPLICATION_ID_CONFIG, appId);
        p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, guarantee);
        p.put(StreamsConfig.STATE_DIR_CONFIG, stateDir);
        p.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, 1);
        // Short commits: many transactions, so the kills land between and
        // inside them; every store update is sent on (no cache).
        p.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, 100);
        p.put(StreamsConfig.STATESTORE_CACHE_MAX_BYTES_CONFIG, 0);
        // Purge the repartition topic (DeleteRecords) soon after each commit.
        p.put(StreamsConfig.REPARTITION_PURGE_INTERVAL_MS_CONFIG, 500);
        // A SIGKILLed instance leaves the group after the broker's minimum
        // session timeout rather than the default 45 s.
        p.put(StreamsConfig.consumerPrefix(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG), 6000);
        p.put(StreamsConfig.consumerPrefix(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG), 1000);
        p.put(StreamsConfig.consumerPrefix(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG), "earliest");

        KafkaStreams streams = new KafkaStreams(b.build(), p);
        streams.setStateListener((next, old) -> {
            System.out.println("state " + old + " " + next);
            System.out.flush();
        });
        // A stream thread that dies is logged (the test counts these lines)
        // and replaced, so one error does not end the run.
        streams.setUncaughtExceptionHandler(e -> {
            System.err.println("EosStreamsApp: stream thread died: " + e);
            e.printStackTrace();
            return StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse.REPLACE_THREAD;
        });
        CountDownLatch closed = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            streams.close(Duration.ofSeconds(30));
            System.out.println("closed");
            System.out.flush();
            closed.countDown();
        }));
        streams.start();
        // The shutdown hook is in place: SIGTERM from now on closes cleanly.
        System.out.println("started");
        System.out.flush();
        closed.await();
    }
}

#!/usr/bin/python3
"""librdkafka round trip through eosproxy, driven by integration/realclients_test.go.

Run with Debian's /usr/bin/python3 (python3-confluent-kafka). It produces
--count records (key str(i % 7), value str(i)) with a non-idempotent producer,
reads them back with a consumer group from the earliest offset, commits, and
asks the AdminClient for cluster metadata. It prints one JSON object on stdout;
the Go test makes every judgement. Exit status is non-zero only when the
script itself could not run to the end.
"""
import argparse
import json
import sys
import time

from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--timeout", type=float, default=45.0, help="seconds for each phase")
    args = ap.parse_args()

    out = {
        "librdkafka": list(__import__("confluent_kafka").libversion()),
        "delivered": [],          # [partition, offset, value] per delivery report
        "delivery_errors": [],
        "unflushed": None,
        "consumed": [],           # [partition, offset, value]
        "consume_errors": [],
        "commit_error": None,
        "committed": [],          # [partition, offset] read back from the group coordinator
        "brokers": [],            # [id, host, port] from AdminClient.list_topics
        "orig_broker_name": None,
        "topic_partitions": None,
    }

    # --- produce -------------------------------------------------------------
    def on_delivery(err, msg):
        if err is not None:
            out["delivery_errors"].append(str(err))
        else:
            out["delivered"].append([msg.partition(), msg.offset(), msg.value().decode()])

    prod = Producer({
        "bootstrap.servers": args.bootstrap,
        "enable.idempotence": False,
        "acks": "all",
        "message.timeout.ms": int(args.timeout * 1000),
    })
    for i in range(args.count):
        while True:
            try:
                prod.produce(args.topic, key=str(i % 7), value=str(i), on_delivery=on_delivery)
                break
            except BufferError:
                prod.poll(0.1)  # local queue full: serve delivery reports
        prod.poll(0)
    out["unflushed"] = prod.flush(args.timeout)

    # --- consume -------------------------------------------------------------
    cons = Consumer({
        "bootstrap.servers": args.bootstrap,
        "group.id": args.group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })
    cons.subscribe([args.topic])
    deadline = time.monotonic() + args.timeout
    while len(out["consumed"]) < args.count and time.monotonic() < deadline:
        for msg in cons.consume(num_messages=500, timeout=1.0):
            if msg.error() is not None:
                if msg.error().code() != KafkaError._PARTITION_EOF:
                    out["consume_errors"].append(str(msg.error()))
                continue
            out["consumed"].append([msg.partition(), msg.offset(), msg.value().decode()])
    try:
        cons.commit(asynchronous=False)
        for tp in cons.committed(cons.assignment(), timeout=10):
            out["committed"].append([tp.partition, tp.offset])
    except Exception as e:  # noqa: BLE001 - reported, judged by the Go test
        out["commit_error"] = str(e)
    cons.close()

    # --- metadata ------------------------------------------------------------
    md = AdminClient({"bootstrap.servers": args.bootstrap}).list_topics(timeout=10)
    out["brokers"] = [[b.id, b.host, b.port] for b in md.brokers.values()]
    out["orig_broker_name"] = md.orig_broker_name
    t = md.topics.get(args.topic)
    if t is not None and t.error is None:
        out["topic_partitions"] = len(t.partitions)

    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""librdkafka (confluent-kafka-python) side of the client matrix, driven by
integration/clientmatrix_test.go.

Run with Debian's /usr/bin/python3 (python3-confluent-kafka) or with the
python of the venv integration/clients/fetch-clients.sh makes (the PyPI
wheel). Modes, each given as --mode MODE=TOPIC:
  plain, idempotent: produce --count records "<mode>-<i>" to partition
    i % --partitions (acks=all; idempotence off, on), then read the topic
    back from the beginning until --count records have come;
  transactional: commit --count records "c1-<i>", abort --count "a-<i>",
    commit --count "c2-<i>" (the test reads the topic with read_committed);
  read_committed: read the topic (the test wrote the same three
    transactions) with isolation.level=read_committed until 2 * --count
    records have come.
Prints one JSON object: {"version": [confluent-kafka, librdkafka], "modes":
{MODE: {"consumed": [[partition, value], ...], "error": null or "..."}}}.
The test makes every judgement.
"""
import argparse
import json
import sys
import time

import confluent_kafka
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

DEADLINE = 30.0


def producer(args, **extra):
    return Producer({
        "bootstrap.servers": args.bootstrap,
        "acks": "all",
        "linger.ms": 5,
        "message.timeout.ms": int(DEADLINE * 1000),
        **extra,
    })


def send(prod, topic, count, partitions, prefix):
    """Produces count records and waits until each is acknowledged."""
    errors = []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(str(err))

    for i in range(count):
        while True:
            try:
                prod.produce(topic, value="%s-%d" % (prefix, i), partition=i % partitions,
                             on_delivery=on_delivery)
                break
            except BufferError:
                prod.poll(0.1)  # local queue full: serve delivery reports
        prod.poll(0)
    left = prod.flush(DEADLINE)
    if left:
        raise RuntimeError("%d records not acknowledged in %ss" % (left, DEADLINE))
    if errors:
        raise RuntimeError("%d delivery errors, first: %s" % (len(errors), errors[0]))


def consume(args, topic, want, isolation):
    cons = Consumer({
        "bootstrap.servers": args.bootstrap,
        "group.id": topic + "-matrix",  # required by the client; assign() does not join it
        "enable.auto.commit": False,
        "isolation.level": isolation,
    })
    got = []
    try:
        cons.assign([TopicPartition(topic, p, confluent_kafka.OFFSET_BEGINNING) for p in range(args.partitions)])
        deadline = time.monotonic() + DEADLINE
        while len(got) < want:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError("read %d of %d records in %ss" % (len(got), want, DEADLINE))
            for m in cons.consume(num_messages=want - len(got), timeout=min(left, 0.5)):
                if m.error() is not None:
                    raise KafkaException(m.error())
                got.append([m.partition(), m.value().decode()])
    finally:
        cons.close()
    return got


def run_mode(args, mode, topic):
    if mode in ("plain", "idempotent"):
        prod = producer(args, **{"enable.idempotence": mode == "idempotent"})
        send(prod, topic, args.count, args.partitions, mode)
        return consume(args, topic, args.count, "read_uncommitted")
    if mode == "transactional":
        prod = producer(args, **{"transactional.id": args.transactional_id})
        prod.init_transactions(DEADLINE)
        for prefix, commit in (("c1", True), ("a", False), ("c2", True)):
            prod.begin_transaction()
            send(prod, topic, args.count, args.partitions, prefix)
            if commit:
                prod.commit_transaction(DEADLINE)
            else:
                prod.abort_transaction(DEADLINE)
        return []
    if mode == "read_committed":
        return consume(args, topic, 2 * args.count, "read_committed")
    raise ValueError("unknown mode " + mode)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--partitions", type=int, required=True)
    ap.add_argument("--transactional-id", required=True)
    ap.add_argument("--mode", action="append", default=[], metavar="MODE=TOPIC")
    args = ap.parse_args()

    ver = confluent_kafka.version()  # a (str, int) tuple in 1.x, a str in newer ones
    if isinstance(ver, tuple):
        ver = ver[0]
    out = {"version": [ver, confluent_kafka.libversion()[0]], "modes": {}}
    for spec in args.mode:
        mode, topic = spec.split("=", 1)
        res = {"consumed": [], "error": None}
        try:
            res["consumed"] = run_mode(args, mode, topic)
        except Exception as e:  # reported to the test, which judges
            res["error"] = "%s: %s" % (type(e).__name__, e)
        out["modes"][mode] = res
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""librdkafka idempotent producer through eosproxy, driven by
integration/realidempotence_test.go.

Run with Debian's /usr/bin/python3 (python3-confluent-kafka). It produces
--count records with enable.idempotence=true: value str(i), key "k<i % 3>" and
partition i % 3 (named explicitly, so the three partitions are all used
whatever librdkafka's partitioner makes of the keys, and each key's values go
to one partition in ascending order). It flushes and prints one JSON object on
stdout: the delivery reports, delivery errors, error_cb errors (with the fatal
flag: a fatal idempotence error is how librdkafka reports a broken sequence
contract) and the "eos" section of the last statistics callback, which names
the producer id librdkafka was given. The Go test makes every judgement; the
exit status is non-zero only when the script itself could not run to the end.
"""
import argparse
import json
import sys
import time

from confluent_kafka import Producer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--count", type=int, default=20000)
    ap.add_argument("--partitions", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds for the flush")
    ap.add_argument("--rate", type=float, default=0, help="records per second (0: as fast as it goes)")
    args = ap.parse_args()

    out = {
        "librdkafka": list(__import__("confluent_kafka").libversion()),
        "delivered": [],        # [partition, offset, value] per delivery report
        "delivery_errors": [],  # str(err) per failed delivery report
        "errors": [],           # [str(err), fatal] from error_cb
        "unflushed": None,
        "eos": None,            # last statistics' "eos" object
    }

    def on_delivery(err, msg):
        if err is not None:
            out["delivery_errors"].append(str(err))
        else:
            out["delivered"].append([msg.partition(), msg.offset(), msg.value().decode()])

    def on_error(err):
        out["errors"].append([str(err), bool(err.fatal())])

    def on_stats(raw):
        try:
            out["eos"] = json.loads(raw).get("eos")
        except ValueError:
            pass

    prod = Producer({
        "bootstrap.servers": args.bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "max.in.flight.requests.per.connection": 5,
        "linger.ms": 5,
        "message.timeout.ms": int(args.timeout * 1000),
        "statistics.interval.ms": 200,
        "error_cb": on_error,
        "stats_cb": on_stats,
    })
    start = time.monotonic()
    for i in range(args.count):
        if args.rate > 0:
            # Paced, so that a run spans the faults a test makes meanwhile;
            # waiting in poll serves the delivery reports.
            wait = start + i / args.rate - time.monotonic()
            if wait > 0:
                prod.poll(wait)
        part = i % args.partitions
        while True:
            try:
                prod.produce(args.topic, key="k%d" % part, value=str(i), partition=part,
                             on_delivery=on_delivery)
                break
            except BufferError:
                prod.poll(0.1)  # local queue full: serve delivery reports
        prod.poll(0)
    out["unflushed"] = prod.flush(args.timeout)
    prod.poll(0.5)  # one more statistics callback, after the last delivery

    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()

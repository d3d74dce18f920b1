#!/usr/bin/python3
"""librdkafka idempotent producer for the fault tests (integration/faults_test.go).

Run with Debian's /usr/bin/python3 (python3-confluent-kafka). It produces
--count records with enable.idempotence=true: value str(i), written to
partition i % --partitions (named explicitly, so each partition's values
ascend in send order). It flushes and prints one JSON object on stdout: the
number of delivery reports, the delivery errors, the error_cb errors (with the
fatal flag: a fatal idempotence error is how librdkafka reports a broken
sequence contract) and what is left unflushed. The Go test makes every
judgement; the exit status is non-zero only when the script could not run to
the end.
"""
import argparse
import json
import sys

from confluent_kafka import Producer, libversion


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--count", type=int, default=20000)
    ap.add_argument("--partitions", type=int, default=6)
    ap.add_argument("--linger-ms", type=int, default=1)
    ap.add_argument("--batch-num-messages", type=int, default=10000)
    ap.add_argument("--debug", default="", help="librdkafka debug contexts, logged to stderr (e.g. eos,msg,protocol)")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds for delivery and flush")
    ap.add_argument("--config", action="append", default=[], metavar="KEY=VALUE",
                    help="a librdkafka setting (e.g. security.protocol=SASL_SSL); repeatable")
    args = ap.parse_args()

    out = {
        "librdkafka": list(libversion()),
        "delivered": 0,
        "delivery_errors": [],  # str(err), at most 20
        "delivery_error_count": 0,
        "errors": [],           # [str(err), fatal] from error_cb, at most 50
        "unflushed": None,
    }

    def on_delivery(err, msg):
        if err is None:
            out["delivered"] += 1
            return
        out["delivery_error_count"] += 1
        if len(out["delivery_errors"]) < 20:
            out["delivery_errors"].append("%s: %s" % (msg.value().decode(), err))

    def on_error(err):
        if len(out["errors"]) < 50 or err.fatal():
            out["errors"].append([str(err), bool(err.fatal())])

    conf = {
        "bootstrap.servers": args.bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "max.in.flight.requests.per.connection": 5,
        "linger.ms": args.linger_ms,
        "batch.num.messages": args.batch_num_messages,
        "retry.backoff.ms": 5,
        # The faults drop a connection every few dozen requests; librdkafka's
        # default reconnect backoff grows to 10 s and would idle the run.
        "reconnect.backoff.ms": 10,
        "reconnect.backoff.max.ms": 100,
        "message.timeout.ms": int(args.timeout * 1000),
        "error_cb": on_error,
    }
    if args.debug:
        conf["debug"] = args.debug
    conf.update(kv.split("=", 1) for kv in args.config)
    prod = Producer(conf)
    for i in range(args.count):
        while True:
            try:
                prod.produce(args.topic, value=str(i), partition=i % args.partitions, on_delivery=on_delivery)
                break
            except BufferError:
                prod.poll(0.05)  # local queue full: serve delivery reports
        prod.poll(0)
    out["unflushed"] = prod.flush(args.timeout)

    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""librdkafka transactional producer, driven by integration/realtxn_test.go.

Run with Debian's /usr/bin/python3 (python3-confluent-kafka). It calls
init_transactions, then runs the transactions of --plan in order, e.g.
"commit:100,abort:50,commit:100": each begins a transaction, produces that
many records -- value str(v) for a counter v unique across the whole run, key
"k<p>", partition p = v % --partitions named explicitly, so each partition
gets ascending values -- flushes, so every record has been acknowledged by
the Produce answer before the transaction ends (an aborted transaction's
records have then really been sent), and commits or aborts as planned.

It prints one JSON object on stdout: per transaction whether it was meant to
commit, the values, the delivery reports ([partition, offset, value]; an
offset Python shows as None, i.e. negative, as -1), the
delivery errors and the error of the ending call, if any; error_cb errors;
and the first exception with the call that raised it, after which it stops.
The Go test makes every judgement; the exit status is non-zero only when the
script itself could not run to the end.
"""
import argparse
import json
import sys

from confluent_kafka import KafkaException, Producer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--transactional-id", required=True)
    ap.add_argument("--plan", default="commit:100,abort:50,commit:100")
    ap.add_argument("--partitions", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds for each transactional call")
    ap.add_argument("--config", action="append", default=[], metavar="KEY=VALUE",
                    help="more librdkafka settings (security.protocol, sasl.*, ssl.*)")
    args = ap.parse_args()

    out = {
        "librdkafka": list(__import__("confluent_kafka").libversion()),
        "txns": [],
        "errors": [],     # [str(err), fatal] from error_cb
        "exception": None,  # [call, str(err)] of the first exception
    }

    def on_error(err):
        out["errors"].append([str(err), bool(err.fatal())])

    conf = dict(kv.split("=", 1) for kv in args.config)
    prod = Producer({
        **conf,
        "bootstrap.servers": args.bootstrap,
        "transactional.id": args.transactional_id,
        "transaction.timeout.ms": 60000,
        "acks": "all",
        "linger.ms": 5,
        "batch.num.messages": 20,  # several batches per partition and transaction
        "message.timeout.ms": int(args.timeout * 1000),
        "error_cb": on_error,
    })

    def call(name, fn, *a):
        try:
            fn(*a)
            return True
        except KafkaException as e:
            out["exception"] = [name, str(e.args[0] if e.args else e)]
            return False

    if not call("init_transactions", prod.init_transactions, args.timeout):
        return finish(out)

    v = 0
    for step in args.plan.split(","):
        kind, count = step.split(":")
        txn = {"commit": kind == "commit", "values": [], "delivered": [],
               "delivery_errors": [], "unflushed": None, "end_error": None}
        out["txns"].append(txn)

        def on_delivery(err, msg, txn=txn):
            if err is not None:
                txn["delivery_errors"].append(str(err))
            else:
                # Message.offset() is None for a negative offset: through
                # eosproxy the first message of each transactional batch
                # (base offset -1); reported here as -1.
                off = msg.offset()
                txn["delivered"].append([msg.partition(), -1 if off is None else off, msg.value().decode()])

        if not call("begin_transaction", prod.begin_transaction):
            return finish(out)
        for _ in range(int(count)):
            part = v % args.partitions
            while True:
                try:
                    prod.produce(args.topic, key="k%d" % part, value=str(v), partition=part,
                                 on_delivery=on_delivery)
                    break
                except BufferError:
                    prod.poll(0.1)
            txn["values"].append(str(v))
            v += 1
            prod.poll(0)
        txn["unflushed"] = prod.flush(args.timeout)
        end = prod.commit_transaction if txn["commit"] else prod.abort_transaction
        try:
            end(args.timeout)
        except KafkaException as e:
            txn["end_error"] = str(e.args[0] if e.args else e)
            out["exception"] = ["commit_transaction" if txn["commit"] else "abort_transaction", txn["end_error"]]
            return finish(out)
        prod.poll(0)
    return finish(out)


def finish(out):
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()

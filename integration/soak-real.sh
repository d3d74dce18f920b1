#!/usr/bin/env bash
# Real-broker soak: runs eoscheck N times, each with a fresh seed, through
# eosproxy in front of a two-broker Apache Kafka (KRaft, replication factor
# 2, acks=all, min.insync.replicas=1) with every fault eoscheck has: SIGKILLs
# and SIGTERMs of eosproxy (also timed to a copier's commit), franz-go
# copiers replaced mid-transaction and right after a commit (the new
# instance reading its output read_committed right after InitProducerId),
# copiers stalled past their session timeout, DeleteRecords and a short
# retention.ms on the input while the producers idle, the second broker
# paused (SIGSTOP) and restarted on its data, and Kafka's own
# TransactionalMessageCopier (Java) with its JVMs SIGKILLed. Odd runs put
# the copiers in a classic group, even runs in a KIP-848 (consumer protocol)
# group. Prints one line per run and, last, "P passed, F failed".
#
# Usage: integration/soak-real.sh N
# Environment (all optional):
#   KAFKA_PORT, KAFKA_CONTROLLER_PORT, KAFKA_PORT2   the cluster's ports
#                          (default 39192, 39193, 39194)
#   EOSPROXY_KAFKA_RUN     the cluster's run dir (default /tmp/eosproxy-soak-real)
#   SOAK_USE_RUNNING=1     use the two-broker cluster already running there
#                          (started with KAFKA_BROKERS=2 kafka.sh start) instead
#                          of starting (and at the end stopping) one
#   SOAK_OUT               where each run's output, report and work dir go
#                          (default: a new temp dir; failed runs' work dirs kept)
#   SOAK_RECORDS, SOAK_KILLS   records and eosproxy restarts per run (30000, 10)
#   SOAK_ARGS              extra eoscheck arguments, after the soak's own, so they
#                          also turn a fault off or down (e.g. --delete-records 0,
#                          --proxy-arg=...)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
N="${1:-}"
[[ "$N" =~ ^[0-9]+$ && "$N" -gt 0 ]] || { echo "usage: $0 N" >&2; exit 2; }

export KAFKA_PORT="${KAFKA_PORT:-39192}"
export KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-39193}"
export KAFKA_PORT2="${KAFKA_PORT2:-39194}"
export EOSPROXY_KAFKA_RUN="${EOSPROXY_KAFKA_RUN:-/tmp/eosproxy-soak-real}"
KAFKA="$PWD/integration/kafka/kafka.sh"
OUT="${SOAK_OUT:-$(mktemp -d /tmp/eosproxy-soak-real-XXXXXX)}"
mkdir -p "$OUT"
RECORDS="${SOAK_RECORDS:-30000}"
KILLS="${SOAK_KILLS:-10}"

if [[ "${SOAK_USE_RUNNING:-}" != 1 ]]; then
  KAFKA_BROKERS=2 bash "$KAFKA" start >/dev/null
  trap 'bash "$KAFKA" stop >/dev/null 2>&1 || true' EXIT
fi
bash "$KAFKA" status >/dev/null || { echo "soak-real: the cluster at $EOSPROXY_KAFKA_RUN is not running" >&2; exit 2; }
BOOTSTRAP="$(bash "$KAFKA" env | sed -n 's/^EOSPROXY_TEST_KAFKA=//p' | tr -d '\\')"
[[ "$BOOTSTRAP" == *,* ]] || { echo "soak-real: need a two-broker cluster (KAFKA_BROKERS=2), got $BOOTSTRAP" >&2; exit 2; }

go build -o "$OUT/bin/" ./cmd/eoscheck ./cmd/eosproxy
echo "soak-real: $N runs against $BOOTSTRAP; output in $OUT"

passed=0 failed=0 failures=()
for ((i = 1; i <= N; i++)); do
  seed="$(od -An -N8 -tu8 /dev/urandom | tr -d ' ')"
  [[ "$seed" != 0 ]] || seed=1
  proto=classic
  ((i % 2 == 1)) || proto=consumer
  work="$OUT/run-$i"
  mkdir -p "$work"
  rc=0
  # shellcheck disable=SC2086
  "$OUT/bin/eoscheck" --upstream "$BOOTSTRAP" --proxy-bin "$OUT/bin/eosproxy" --seed "$seed" \
    --work-dir "$work" --report "$work/report.json" \
    --records "$RECORDS" --kills "$KILLS" --producers 4 --partitions 6 \
    --copiers 2 --copier-restarts 2 --group-protocol "$proto" --stalls 2 \
    --commit-kills 2 --clean-restarts 2 --commit-restarts 2 --init-reads \
    --delete-records 2 --retention-deletes 2 --replication-factor 2 \
    --pause-broker 1 --broker-pause 8s \
    --broker-pause-cmd "bash '$KAFKA' pause 2" --broker-resume-cmd "bash '$KAFKA' resume 2" \
    --restart-broker 1 --broker-restart-cmd "bash '$KAFKA' restart-node 2" \
    --java-copiers 2 --java-crashes 2 --kafka-sh "$KAFKA" \
    ${SOAK_ARGS:-} >"$work/output.txt" 2>&1 || rc=$?
  verdict="$(grep -E '^(VALID|INVALID) in' "$work/output.txt" | tail -n 1 || true)"
  anomalies="$(sed -n 's/^ANOMALIES *//p' "$work/output.txt" | tail -n 1)"
  case "$rc" in
    0) passed=$((passed + 1)); echo "run $i seed $seed ($proto group): passed ($verdict)"; rm -rf "$work/data" ;;
    1) failed=$((failed + 1)); failures+=("$seed"); echo "run $i seed $seed ($proto group): FAILED, ${anomalies:-?} anomalies ($verdict; $work)" ;;
    *) failed=$((failed + 1)); failures+=("$seed"); echo "run $i seed $seed ($proto group): FAILED, eoscheck could not run (exit $rc): $(tail -n 1 "$work/output.txt") ($work)" ;;
  esac
  if ! bash "$KAFKA" status >/dev/null; then
    echo "soak-real: the cluster is down after run $i; restarting it on its data" >&2
    bash "$KAFKA" restart >/dev/null
  fi
done
if ((failed > 0)); then
  echo "failed seeds: ${failures[*]}"
fi
echo "$passed passed, $failed failed"
((failed == 0))

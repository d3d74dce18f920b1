#!/usr/bin/env bash
# Runs every test tier: unit and in-process (kfake) tests, the real-broker
# tier against Apache Kafka started from Maven jars, and each fuzz target for
# a short while. Needs what integration/kafka/install-deps.sh installs.
#   FUZZTIME=10s   how long each fuzz target runs (0 skips fuzzing)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
FUZZTIME="${FUZZTIME:-10s}"
KAFKA=integration/kafka/kafka.sh

bash "$KAFKA" start
trap 'bash "$KAFKA" stop >/dev/null 2>&1 || true' EXIT
eval "$(bash "$KAFKA" env | sed 's/^/export /')"

echo "== go test ./... (all tiers, real broker at $EOSPROXY_TEST_KAFKA)"
go test -count=1 -timeout 20m ./...

if [[ "$FUZZTIME" != 0 ]]; then
  for pkg in $(go list ./...); do
    for target in $(go test -list '^Fuzz' "$pkg" | grep '^Fuzz' || true); do
      echo "== fuzz $pkg $target for $FUZZTIME"
      go test -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" "$pkg"
    done
  done
fi

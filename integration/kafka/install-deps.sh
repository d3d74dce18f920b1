#!/usr/bin/env bash
# Install what the real-broker test tier needs, idempotently and quietly:
#   - Debian packages: kcat, python3-confluent-kafka (import it with Debian's
#     /usr/bin/python3, not a pyenv/venv python3 that may come first on PATH),
#     docker-compose (only to validate docker-compose.yml; no engine needed),
#     plus a JDK 17 (javac) and Maven if they are missing;
#   - the Kafka jars, via `kafka.sh fetch` (cached; no-op when present);
#   - the client matrix's Java kafka-clients 4.x/3.x and confluent-kafka
#     wheel (in a venv: python3-venv), via clients/fetch-clients.sh (cached).
# `apt-get update` runs only when something must be installed and the package
# lists do not know it.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

SUDO=()
if [[ "$(id -u)" != 0 ]]; then
  command -v sudo >/dev/null 2>&1 || { echo "install-deps.sh: need root or sudo" >&2; exit 1; }
  SUDO=(sudo -n)
fi

pkgs=(kcat python3-confluent-kafka python3-venv docker-compose)
# javac too: the real tier compiles its Java clients (Kafka Streams app, producers).
command -v javac >/dev/null 2>&1 || pkgs+=(openjdk-17-jdk-headless)
command -v mvn >/dev/null 2>&1 || pkgs+=(maven)

missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if ((${#missing[@]} > 0)); then
  export DEBIAN_FRONTEND=noninteractive
  need_update=0
  for p in "${missing[@]}"; do
    cand="$(apt-cache policy "$p" 2>/dev/null | awk '/Candidate:/ {print $2}')"
    if [[ -z "$cand" || "$cand" == "(none)" ]]; then
      need_update=1
      break
    fi
  done
  if ((need_update)); then
    "${SUDO[@]}" apt-get update -qq >/dev/null
  fi
  log="$(mktemp)"
  if ! "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$log" 2>&1; then
    # Stale lists (404 on a package file): refresh once and retry.
    "${SUDO[@]}" apt-get update -qq >/dev/null
    if ! "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$log" 2>&1; then
      tail -n 30 "$log" >&2
      rm -f "$log"
      echo "install-deps.sh: apt-get install ${missing[*]} failed" >&2
      exit 1
    fi
  fi
  rm -f "$log"
fi

"$SCRIPT_DIR/kafka.sh" fetch
bash "$SCRIPT_DIR/../clients/fetch-clients.sh" fetch

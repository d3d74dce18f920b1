#!/usr/bin/env bash
# Real-broker test tier: fetch, start and stop a single-node Apache Kafka
# (KRaft, combined broker+controller, node.id=1) on loopback, and run Kafka's
# own Java tools against it.
#
# Usage:
#   kafka.sh fetch             download Kafka jars (+ runtime deps) from Maven Central
#                              into the cache; no-op if already there
#   kafka.sh start             wipe the run dir, format KRaft storage, start the
#                              broker in the background, wait until it serves
#                              metadata, print the bootstrap address
#   kafka.sh restart           stop the broker (as `stop`) and start it again on the
#                              same run dir, config and data (no wipe, no format);
#                              returns once it serves metadata again
#   kafka.sh stop              stop the broker(s) (SIGTERM, bounded wait, SIGKILL)
#   kafka.sh status            exit 0 if the broker process(es) are alive
#   kafka.sh pause N           SIGSTOP broker node N (1 or 2): a frozen broker, as in a
#                              long GC pause; its followers drop out of the ISR after
#                              replica.lag.time.max.ms
#   kafka.sh resume N          SIGCONT broker node N
#   kafka.sh restart-node N    stop broker node N and start it again on its data;
#                              returns once it serves metadata again (with
#                              KAFKA_BROKERS=2, node 2 is the one to restart: node 1
#                              is also the cluster's only controller)
#   kafka.sh run CLASS ARGS..  run a Java class on the cached Kafka classpath
#   kafka.sh env               print KEY=VALUE lines for tests
#                              (e.g. `set -a; eval "$(kafka.sh env)"; set +a`)
#
# Environment (all optional):
#   KAFKA_VERSION          Kafka version (default 4.1.2, newest 4.1.x on Maven Central)
#   EOSPROXY_KAFKA_CACHE   cache root (default $HOME/.cache/eosproxy-kafka);
#                          jars go to <cache>/<version>/libs
#   EOSPROXY_KAFKA_RUN     run dir, wiped by `start`, kept by `restart`
#                          (default /tmp/eosproxy-kafka-run)
#   KAFKA_PORT             PLAINTEXT listener port (default 39092)
#   KAFKA_CONTROLLER_PORT  CONTROLLER listener port (default 39093)
#   KAFKA_BROKERS          1 (default) or 2. With 2, `start` also starts node 2, a
#                          broker only (node 1 is broker and the only controller),
#                          on KAFKA_PORT2 (default KAFKA_PORT+2) with its data under
#                          <run dir>/node2; topics default to replication factor 2
#                          with min.insync.replicas=1 (so acks=all goes on with a
#                          paused follower once it drops out of the ISR, after
#                          replica.lag.time.max.ms=5000), and so do the internal
#                          topics. Commands other than start read the ports and
#                          the broker count from the run dir (cluster.env).
#   KAFKA_PORT2            node 2's PLAINTEXT listener port
#   KAFKA_START_TIMEOUT    seconds to wait for the broker (default 90)
#   KAFKA_EXTRA_CONFIG     extra server.properties lines appended verbatim
#   KAFKA_HEAP_OPTS        broker heap (default "-Xmx1G -Xms256m")
#   KAFKA_TOOL_OPTS        JVM options for `run` (default "-Xmx512m -XX:TieredStopAtLevel=1")
#
# Class names in Kafka 4.1 (verified with `unzip -l` on the 4.1.2 jars):
#   broker main               kafka.Kafka                                  (kafka_2.13)
#   storage format tool       kafka.tools.StorageTool                      (kafka_2.13)
#   console producer          org.apache.kafka.tools.ConsoleProducer       (kafka-tools)
#   console consumer          org.apache.kafka.tools.consumer.ConsoleConsumer (kafka-tools)
#   producer perf test        org.apache.kafka.tools.ProducerPerformance   (kafka-tools)
#   consumer perf test        org.apache.kafka.tools.ConsumerPerformance   (kafka-tools)
#   TransactionalMessageCopier org.apache.kafka.tools.TransactionalMessageCopier (kafka-tools)
#   topics command            org.apache.kafka.tools.TopicCommand          (kafka-tools)
#   transactions command      org.apache.kafka.tools.TransactionsCommand   (kafka-tools; kafka-transactions.sh)
#   broker api versions       org.apache.kafka.tools.BrokerApiVersionsCommand (kafka-tools)
#   verifiable producer/consumer org.apache.kafka.tools.VerifiableProducer / VerifiableConsumer
#   consumer groups command   org.apache.kafka.tools.consumer.group.ConsumerGroupCommand
#   metadata quorum           org.apache.kafka.tools.MetadataQuorumCommand
# Examples:
#   kafka.sh run org.apache.kafka.tools.TopicCommand --bootstrap-server 127.0.0.1:39092 \
#       --create --topic t --partitions 3
#   printf 'a\nb\n' | kafka.sh run org.apache.kafka.tools.ConsoleProducer \
#       --bootstrap-server 127.0.0.1:39092 --topic t
#   kafka.sh run org.apache.kafka.tools.consumer.ConsoleConsumer \
#       --bootstrap-server 127.0.0.1:39092 --topic t --from-beginning --max-messages 2
#   kafka.sh run org.apache.kafka.tools.TransactionalMessageCopier --broker-list 127.0.0.1:39092 \
#       --input-topic in --input-partition 0 --output-topic out --transactional-id tx1 \
#       --consumer-group g1 --transaction-size 10 --max-messages 100
#
# Logging: Kafka 4.x logs through log4j2 (slf4j 1.7 API). `fetch` adds the
# log4j-slf4j-impl binding; the broker logs to $RUN/logs/server.log (plus
# kafkaServer.out for raw stdout/stderr), tools log WARN+ to stderr.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SELF="$SCRIPT_DIR/$(basename "${BASH_SOURCE[0]}")"

KAFKA_VERSION="${KAFKA_VERSION:-4.1.2}"
# log4j2 version used by kafka-server 4.1.2; the slf4j binding must match it.
LOG4J_VERSION="${LOG4J_VERSION:-2.25.3}"
CACHE_ROOT="${EOSPROXY_KAFKA_CACHE:-${HOME:-/root}/.cache/eosproxy-kafka}"
CACHE_DIR="$CACHE_ROOT/$KAFKA_VERSION"
LIBS="$CACHE_DIR/libs"
RUN_DIR="${EOSPROXY_KAFKA_RUN:-/tmp/eosproxy-kafka-run}"
KAFKA_PORT="${KAFKA_PORT:-39092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-39093}"
KAFKA_PORT2="${KAFKA_PORT2:-$((KAFKA_PORT + 2))}"
BROKERS="${KAFKA_BROKERS:-1}"
# Every command but start takes the cluster's ports and size from what
# start recorded in the run dir, so that EOSPROXY_KAFKA_RUN alone names it.
if [[ "${1:-}" != start && -f "$RUN_DIR/cluster.env" ]]; then
  # shellcheck disable=SC1091
  source "$RUN_DIR/cluster.env"
fi
KAFKA_START_TIMEOUT="${KAFKA_START_TIMEOUT:-90}"
KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xmx1G -Xms256m}"
KAFKA_TOOL_OPTS="${KAFKA_TOOL_OPTS:--Xmx512m -XX:TieredStopAtLevel=1}"
BOOTSTRAP="127.0.0.1:$KAFKA_PORT"
LOG_DIR="$RUN_DIR/logs"
[[ "$BROKERS" == 1 || "$BROKERS" == 2 ]] || { echo "kafka.sh: KAFKA_BROKERS must be 1 or 2" >&2; exit 1; }
if [[ "$BROKERS" == 2 ]]; then
  BOOTSTRAP="127.0.0.1:$KAFKA_PORT,127.0.0.1:$KAFKA_PORT2"
fi

log() { echo "kafka.sh: $*" >&2; }
die() { log "$*"; exit 1; }

# node_vars N sets the NODE_* variables of broker node N.
node_vars() {
  case "$1" in
    1) NODE_ID=1 NODE_DIR="$RUN_DIR" NODE_PORT="$KAFKA_PORT" ;;
    2) [[ "$BROKERS" == 2 ]] || die "no node 2: the cluster was started with KAFKA_BROKERS=1"
       NODE_ID=2 NODE_DIR="$RUN_DIR/node2" NODE_PORT="$KAFKA_PORT2" ;;
    *) die "node must be 1 or 2, not '$1'" ;;
  esac
  NODE_PROPS="$NODE_DIR/server.properties"
  NODE_PID_FILE="$NODE_DIR/kafka.pid"
  NODE_LOG_DIR="$NODE_DIR/logs"
}
node_vars 1

need_java() { command -v java >/dev/null 2>&1 || die "java not found (need Java 17+)"; }

# The streams jar was added to the fetch later: a cache without it is fetched again.
have_libs() { [[ -f "$CACHE_DIR/.complete" && -f "$LIBS/kafka-streams-$KAFKA_VERSION.jar" ]]; }

ensure_libs() { have_libs || die "Kafka $KAFKA_VERSION not fetched; run: $SELF fetch"; }

# --- fetch -------------------------------------------------------------------
cmd_fetch() {
  if have_libs; then
    return 0
  fi
  command -v mvn >/dev/null 2>&1 || die "mvn not found (need Maven 3)"
  mkdir -p "$CACHE_DIR"
  local pom="$CACHE_DIR/pom.xml" tmp="$CACHE_DIR/libs.tmp" mlog="$CACHE_DIR/fetch.log"
  cat >"$pom" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<!-- generated by eosproxy integration/kafka/kafka.sh; safe to delete -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>eosproxy.integration</groupId>
  <artifactId>kafka-libs</artifactId>
  <version>$KAFKA_VERSION</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-clients</artifactId><version>$KAFKA_VERSION</version></dependency>
    <!-- integration/streams: a Kafka Streams application run through eosproxy -->
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-streams</artifactId><version>$KAFKA_VERSION</version></dependency>
    <!-- slf4j 1.7 -> log4j2 binding (the Kafka distribution ships it; the poms do not pull it in) -->
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>$LOG4J_VERSION</version></dependency>
  </dependencies>
</project>
EOF
  rm -rf "$tmp"
  log "fetching Kafka $KAFKA_VERSION jars into $LIBS"
  if ! mvn -B -q -f "$pom" dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$tmp" >"$mlog" 2>&1; then
    tail -n 40 "$mlog" >&2
    die "mvn dependency:copy-dependencies failed (full log: $mlog)"
  fi
  [[ -f "$tmp/kafka_2.13-$KAFKA_VERSION.jar" && -f "$tmp/kafka-tools-$KAFKA_VERSION.jar" ]] \
    || die "fetch incomplete: kafka jars missing in $tmp"
  rm -rf "$LIBS"
  mv "$tmp" "$LIBS"
  write_log_configs
  touch "$CACHE_DIR/.complete"
  local jars=("$LIBS"/*.jar)
  log "fetched ${#jars[@]} jars"
}

# log4j2 configs (properties format: needs no extra parser on the classpath).
write_log_configs() {
  cat >"$CACHE_DIR/log4j2-broker.properties" <<'EOF'
# Broker: everything to ${sys:kafka.logs.dir}/server.log, nothing to stdout.
status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = ${sys:kafka.logs.dir}/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.zk.name = org.apache.zookeeper
logger.zk.level = WARN
EOF
  cat >"$CACHE_DIR/log4j2-tools.properties" <<'EOF'
# Tools: WARN and above to stderr so stdout stays clean for test assertions.
status = warn
appender.err.type = Console
appender.err.name = STDERR
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.err.ref = STDERR
EOF
}

# --- process helpers -------------------------------------------------------
read_pid() {
  if [[ -f "$NODE_PID_FILE" ]]; then tr -dc '0-9' <"$NODE_PID_FILE"; fi
}

# True if $1 is a live kafka.Kafka JVM (guards against stale/reused pids).
is_broker_pid() {
  local pid="$1"
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null \
    && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'kafka\.Kafka'
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# JVM command line for short-lived tools (an array, so it works under `timeout`).
tool_java() {
  # shellcheck disable=SC2206
  TOOL_JAVA=(java $KAFKA_TOOL_OPTS -Djava.awt.headless=true
    "-Dlog4j2.configurationFile=$CACHE_DIR/log4j2-tools.properties"
    -cp "$LIBS/*")
}

# --- start -------------------------------------------------------------------
cmd_start() {
  need_java
  ensure_libs
  [[ -f "$CACHE_DIR/log4j2-broker.properties" ]] || write_log_configs
  cmd_stop >/dev/null
  BROKERS="${KAFKA_BROKERS:-1}"
  [[ "$BROKERS" == 1 || "$BROKERS" == 2 ]] || die "KAFKA_BROKERS must be 1 or 2"
  if [[ "$BROKERS" == 2 ]]; then
    BOOTSTRAP="127.0.0.1:$KAFKA_PORT,127.0.0.1:$KAFKA_PORT2"
  fi
  local p ports=("$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT")
  [[ "$BROKERS" == 1 ]] || ports+=("$KAFKA_PORT2")
  for p in "${ports[@]}"; do
    ! port_in_use "$p" || die "port 127.0.0.1:$p already in use"
  done

  rm -rf "$RUN_DIR"
  mkdir -p "$RUN_DIR/data" "$LOG_DIR"
  printf 'KAFKA_PORT=%q\nKAFKA_CONTROLLER_PORT=%q\nKAFKA_PORT2=%q\nBROKERS=%q\n' \
    "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT" "$KAFKA_PORT2" "$BROKERS" >"$RUN_DIR/cluster.env"
  local rf=1
  [[ "$BROKERS" == 1 ]] || rf=2
  local props="$RUN_DIR/server.properties"
  cat >"$props" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$RUN_DIR/data
num.partitions=3
default.replication.factor=$rf
min.insync.replicas=1
auto.create.topics.enable=true
offsets.topic.replication.factor=$rf
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=$rf
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
# KIP-848 groups may be given session timeouts down to the classic
# protocol's minimum (per-group config consumer.session.timeout.ms), so
# that eoscheck's stalled copiers are removed within seconds; the defaults
# (45 s, 5 s) are unchanged.
group.consumer.min.session.timeout.ms=6000
group.consumer.min.heartbeat.interval.ms=1000
# eoscheck --retention-deletes lowers a topic's retention.ms and waits for
# the retention to delete (the default check runs every 5 minutes).
log.retention.check.interval.ms=1000
EOF
  if [[ "$BROKERS" == 2 ]]; then
    # A paused follower leaves the ISR after 5 s (default 30 s).
    echo "replica.lag.time.max.ms=5000" >>"$props"
    mkdir -p "$RUN_DIR/node2/data" "$RUN_DIR/node2/logs"
    sed -e 's/^process.roles=.*/process.roles=broker/' -e 's/^node.id=.*/node.id=2/' \
        -e "s#^listeners=.*#listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT2#" \
        -e "s#^advertised.listeners=.*#advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT2#" \
        -e "s#^log.dirs=.*#log.dirs=$RUN_DIR/node2/data#" \
        "$props" >"$RUN_DIR/node2/server.properties"
  fi
  if [[ -n "${KAFKA_EXTRA_CONFIG:-}" ]]; then
    printf '%s\n' "$KAFKA_EXTRA_CONFIG" >>"$props"
    [[ "$BROKERS" == 1 ]] || printf '%s\n' "$KAFKA_EXTRA_CONFIG" >>"$RUN_DIR/node2/server.properties"
  fi

  # Cluster id: 16 random bytes, base64url without padding (Kafka Uuid format);
  # avoid a leading '-' which the CLI would parse as an option.
  local cid=""
  while [[ -z "$cid" || "$cid" == -* ]]; do
    cid="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
  done

  tool_java
  if ! "${TOOL_JAVA[@]}" kafka.tools.StorageTool format -t "$cid" -c "$props" \
        >"$LOG_DIR/format.log" 2>&1; then
    cat "$LOG_DIR/format.log" >&2
    die "storage format failed"
  fi
  if [[ "$BROKERS" == 2 ]]; then
    if ! "${TOOL_JAVA[@]}" kafka.tools.StorageTool format -t "$cid" -c "$RUN_DIR/node2/server.properties" \
          >"$RUN_DIR/node2/logs/format.log" 2>&1; then
      cat "$RUN_DIR/node2/logs/format.log" >&2
      die "storage format of node 2 failed"
    fi
  fi

  launch_broker >/dev/null
  if [[ "$BROKERS" == 2 ]]; then
    node_vars 2
    launch_broker >/dev/null
    node_vars 1
  fi
  echo "$BOOTSTRAP"
}

# --- restart -----------------------------------------------------------------
# Stop the broker and start it again on the existing run dir: same
# server.properties, same (already formatted) data; nothing is wiped.
cmd_restart() {
  need_java
  ensure_libs
  [[ -f "$CACHE_DIR/log4j2-broker.properties" ]] || write_log_configs
  [[ -f "$RUN_DIR/server.properties" && -f "$RUN_DIR/data/meta.properties" ]] \
    || die "no formatted run dir at $RUN_DIR; run: $SELF start"
  cmd_stop >/dev/null
  # The ports were ours: wait (bounded) until the old listeners are gone.
  local p i ports=("$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT")
  [[ "$BROKERS" == 1 ]] || ports+=("$KAFKA_PORT2")
  for p in "${ports[@]}"; do
    for ((i = 0; i < 100; i++)); do
      port_in_use "$p" || break
      sleep 0.1
    done
    ! port_in_use "$p" || die "port 127.0.0.1:$p still in use after stopping the broker"
  done
  mkdir -p "$LOG_DIR"
  tool_java
  launch_broker >/dev/null
  if [[ "$BROKERS" == 2 ]]; then
    node_vars 2
    launch_broker >/dev/null
    node_vars 1
  fi
  echo "$BOOTSTRAP"
}

# --- one node: pause, resume, restart ---------------------------------------
cmd_pause() {
  node_vars "${1:-}"
  local pid
  pid="$(read_pid)"
  is_broker_pid "$pid" || die "broker node $NODE_ID is not running"
  kill -STOP "$pid"
  echo "paused node $NODE_ID (pid $pid)"
}

cmd_resume() {
  node_vars "${1:-}"
  local pid
  pid="$(read_pid)"
  is_broker_pid "$pid" || die "broker node $NODE_ID is not running"
  kill -CONT "$pid"
  echo "resumed node $NODE_ID (pid $pid)"
}

cmd_restart_node() {
  need_java
  ensure_libs
  node_vars "${1:-}"
  [[ -f "$NODE_PROPS" && -f "$NODE_DIR/data/meta.properties" ]] \
    || die "no formatted node $NODE_ID at $NODE_DIR; run: $SELF start"
  stop_node >/dev/null
  local i
  for ((i = 0; i < 100; i++)); do
    port_in_use "$NODE_PORT" || break
    sleep 0.1
  done
  ! port_in_use "$NODE_PORT" || die "port 127.0.0.1:$NODE_PORT still in use after stopping node $NODE_ID"
  mkdir -p "$NODE_LOG_DIR"
  tool_java
  launch_broker
}

# Start the broker JVM on $RUN_DIR/server.properties in the background and
# wait until it serves metadata; prints the bootstrap address. Needs
# tool_java to have been called.
launch_broker() {
  local deadline=$((SECONDS + KAFKA_START_TIMEOUT)) pid
  # A restarted broker's port can still be held by connections of its
  # previous run (TIME_WAIT): the JVM then exits at once with "Address
  # already in use"; it is started again until the deadline.
  while :; do
    pid="$(spawn_broker)"
    until port_in_use "$NODE_PORT" || ! kill -0 "$pid" 2>/dev/null; do
      ((SECONDS < deadline)) || start_failed "timed out waiting for port $NODE_PORT"
      sleep 0.2
    done
    kill -0 "$pid" 2>/dev/null && break
    tail -n 50 "$NODE_LOG_DIR/server.log" 2>/dev/null | grep -q "Address already in use" \
      || start_failed "broker process exited"
    ((SECONDS < deadline)) || start_failed "broker port $NODE_PORT still in use"
    log "node $NODE_ID: port $NODE_PORT still held by the previous run's connections; starting again"
    sleep 1
  done
  wait_metadata "$pid" "$deadline"
}

# spawn_broker starts the broker JVM of the NODE_* variables in the
# background and prints its pid.
spawn_broker() {
  local props="$NODE_PROPS"
  # setsid: own session, so the broker outlives this script and its process group.
  # shellcheck disable=SC2086
  setsid java $KAFKA_HEAP_OPTS -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
      -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent \
      -Djava.awt.headless=true \
      -Dkafka.logs.dir="$NODE_LOG_DIR" \
      -Dlog4j2.configurationFile="$CACHE_DIR/log4j2-broker.properties" \
      -cp "$LIBS/*" kafka.Kafka "$props" \
      >>"$NODE_LOG_DIR/kafkaServer.out" 2>&1 </dev/null &
  local pid=$!
  echo "$pid" >"$NODE_PID_FILE"
  echo "$pid"
}

# wait_metadata PID DEADLINE waits for a metadata round-trip through the
# Admin client to the node's listener; prints the node's address.
wait_metadata() {
  local pid="$1" deadline="$2" out="" left
  while :; do
    kill -0 "$pid" 2>/dev/null || start_failed "broker process exited"
    left=$((deadline - SECONDS))
    if ((left <= 0)); then
      [[ -z "$out" ]] || log "last metadata probe said: $(tail -n 5 <<<"$out")"
      start_failed "timed out waiting for metadata"
    fi
    if out="$(timeout "$left" "${TOOL_JAVA[@]}" org.apache.kafka.tools.TopicCommand \
               --bootstrap-server "127.0.0.1:$NODE_PORT" --list 2>&1)"; then
      break
    fi
    sleep 0.5
  done
  echo "127.0.0.1:$NODE_PORT"
}

start_failed() {
  log "node $NODE_ID: $1; last lines of $NODE_LOG_DIR/server.log:"
  tail -n 40 "$NODE_LOG_DIR/server.log" >&2 2>/dev/null || true
  if [[ -s "$NODE_LOG_DIR/kafkaServer.out" ]]; then
    log "last lines of $NODE_LOG_DIR/kafkaServer.out:"
    tail -n 20 "$NODE_LOG_DIR/kafkaServer.out" >&2
  fi
  # A failed start or restart of the cluster leaves nothing running; a
  # failed restart of one node leaves the other alone.
  if [[ "${WHOLE_CLUSTER:-}" == 1 ]]; then
    cmd_stop >/dev/null 2>&1 || true
  else
    stop_node >/dev/null 2>&1 || true
  fi
  exit 1
}

# --- stop --------------------------------------------------------------------
cmd_stop() {
  # Node 2 first: node 1 is the controller it reports its shutdown to.
  # (Whatever the count start is about to use: the run dir may hold one.)
  if [[ -d "$RUN_DIR/node2" ]]; then
    local brokers="$BROKERS"
    BROKERS=2
    node_vars 2
    stop_node >/dev/null
    BROKERS="$brokers"
  fi
  node_vars 1
  stop_node
}

# stop_node stops the node of the NODE_* variables.
stop_node() {
  local pid
  pid="$(read_pid)"
  if ! is_broker_pid "$pid"; then
    rm -f "$NODE_PID_FILE"
    return 0
  fi
  # A paused broker ignores SIGTERM until it runs again.
  kill -CONT "$pid" 2>/dev/null || true
  kill -TERM "$pid" 2>/dev/null || true
  local i
  for ((i = 0; i < 300; i++)); do   # up to 30 s
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "broker $pid did not stop after SIGTERM, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
  fi
  rm -f "$NODE_PID_FILE"
  echo "stopped"
}

cmd_status() {
  local pid n rc=0
  for ((n = 1; n <= BROKERS; n++)); do
    node_vars "$n"
    pid="$(read_pid)"
    if is_broker_pid "$pid"; then
      echo "node $n running pid=$pid bootstrap=127.0.0.1:$NODE_PORT"
    else
      echo "node $n not running"
      rc=1
    fi
  done
  return "$rc"
}

# --- run / env ---------------------------------------------------------------
cmd_run() {
  (($# >= 1)) || die "usage: kafka.sh run CLASS [ARGS...]"
  need_java
  ensure_libs
  [[ -f "$CACHE_DIR/log4j2-tools.properties" ]] || write_log_configs
  tool_java
  exec "${TOOL_JAVA[@]}" "$@"
}

cmd_env() {
  printf '%s=%q\n' \
    EOSPROXY_TEST_KAFKA "$BOOTSTRAP" \
    EOSPROXY_KAFKA_VERSION "$KAFKA_VERSION" \
    EOSPROXY_KAFKA_LIBS "$LIBS" \
    EOSPROXY_KAFKA_RUN "$RUN_DIR" \
    EOSPROXY_KAFKA_SH "$SELF"
}

main() {
  local cmd="${1:-}"
  shift || true
  case "$cmd" in
    fetch) cmd_fetch ;;
    start) WHOLE_CLUSTER=1 cmd_start ;;
    stop) cmd_stop ;;
    restart) WHOLE_CLUSTER=1 cmd_restart ;;
    pause) cmd_pause "$@" ;;
    resume) cmd_resume "$@" ;;
    restart-node) cmd_restart_node "$@" ;;
    status) cmd_status ;;
    run) cmd_run "$@" ;;
    env) cmd_env ;;
    *) sed -n '2,/^set -euo/p' "$SELF" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
  esac
}

main "$@"

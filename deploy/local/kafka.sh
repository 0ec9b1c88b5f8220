#!/usr/bin/env bash
# Apache Kafka in KRaft mode (no ZooKeeper) for the local cluster, the benchmarks and the
# integration-test harness: one combined broker+controller on loopback.
#
# Interface (stable: the test harness runs this script as a subprocess; exit 0 = done):
#   kafka.sh install
#       Fetches the pinned Kafka ($KAFKA_VERSION) and its dependencies from Maven Central into
#       $RECALLOC_CACHE/kafka-<version>/libs (default cache ~/.cache/recalloc). Idempotent.
#   kafka.sh start DIR PORT [CONTROLLER_PORT]
#       Installs if needed, formats DIR/data on the first start only (a restart keeps the log),
#       starts the broker in the background on 127.0.0.1:PORT (controller on 127.0.0.1:
#       CONTROLLER_PORT, default PORT+1) and returns once it answers a metadata request.
#       Writes DIR/server.properties, DIR/log4j2.xml, DIR/kafka.log (the broker's log),
#       DIR/kafka.out (its stdout/stderr) and DIR/kafka.pid (the JVM's own pid: kill -9 of it
#       kills the broker). Exits non-zero with the tail of the log if it does not come up.
#       A broker already running from DIR (live pid in DIR/kafka.pid) is left as it is.
#   kafka.sh run DIR PORT [CONTROLLER_PORT]
#       Like start, but in the foreground: the script becomes the broker's JVM (exec) and does
#       not wait for it; its log goes to DIR/kafka.log, stdout/stderr to the caller's. For the
#       test harness, which owns the process and checks the metadata itself.
#   kafka.sh topics PORT PARTITIONS TOPIC...
#       Creates the topics (replication factor RECALLOC_KAFKA_REPLICATION_FACTOR, default 1) on
#       the broker at 127.0.0.1:PORT; one that already exists is left as it is.
#   kafka.sh stop DIR
#       TERM to the pid in DIR/kafka.pid, KILL after RECALLOC_KAFKA_STOP_SECONDS (default 30);
#       removes DIR/kafka.pid. Nothing to stop is not an error. (Stop the nodes of a cluster
#       at the same time: a last node left without a controller quorum waits out the grace.)
# Environment (all optional): JAVA_HOME (else `java` on PATH; Java 17 or newer), RECALLOC_CACHE,
# RECALLOC_KAFKA_HEAP (JVM heap flags, default "-Xms256m -Xmx512m"),
# RECALLOC_KAFKA_START_SECONDS (how long start waits, default 90),
# RECALLOC_KAFKA_BROKER_SESSION_MS (broker.session.timeout.ms, default 3000: a restart after
# kill -9 waits for the old session to expire), RECALLOC_KAFKA_PROPERTIES (lines appended to
# server.properties, overriding the defaults: e.g. node.id and controller.quorum.voters for a
# cluster of several nodes, whose `start`s must then run at the same time, since none answers
# before a quorum of controllers is up), RECALLOC_KAFKA_CLUSTER_ID (the id formatted into a new
# DIR, the same for every node of one cluster; default random).
# Progress goes to stderr; stdout stays empty. Ports in use make start fail at once.
set -euo pipefail
source "$(dirname "$0")/env.sh"

kafka_libs=$kafka_root/libs

java_bin() {
  local j
  if [ -n "${JAVA_HOME:-}" ]; then
    j=$JAVA_HOME/bin/java; [ -x "$j" ] || die "JAVA_HOME=$JAVA_HOME has no bin/java"
  else
    j=$(command -v java || true); [ -n "$j" ] || die "no java: set JAVA_HOME or put Java 17+ on PATH"
  fi
  local v; v=$("$j" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')
  [ "${v%%.*}" -ge 17 ] 2>/dev/null || die "$j is Java $v; Kafka $KAFKA_VERSION needs Java 17 or newer"
  echo "$j"
}

install() {
  [ -f "$kafka_root/.complete" ] && return 0
  command -v mvn >/dev/null || die "mvn is missing (Debian package maven)"
  mkdir -p "$kafka_root"
  # One install at a time (tests may start brokers in parallel on a fresh machine).
  exec 9>"$kafka_root.lock"; flock 9
  [ -f "$kafka_root/.complete" ] && { exec 9>&-; return 0; }
  say "kafka: fetching Apache Kafka $KAFKA_VERSION and its dependencies from Maven Central into $kafka_libs (once, about 55 MB)"
  local tmp; tmp=$(mktemp -d)
  local deps="" m
  for m in kafka_2.13 kafka-server kafka-raft kafka-metadata kafka-storage kafka-tools kafka-clients; do
    deps+="<dependency><groupId>org.apache.kafka</groupId><artifactId>$m</artifactId><version>$KAFKA_VERSION</version></dependency>"
  done
  # Kafka's jars reach slf4j 1.7 through Maven's nearest-wins; the log4j2 binding needs slf4j 2.
  for m in log4j-api log4j-core log4j-slf4j2-impl; do
    deps+="<dependency><groupId>org.apache.logging.log4j</groupId><artifactId>$m</artifactId><version>$KAFKA_LOG4J_VERSION</version></dependency>"
  done
  deps+="<dependency><groupId>org.slf4j</groupId><artifactId>slf4j-api</artifactId><version>$KAFKA_SLF4J_VERSION</version></dependency>"
  cat >"$tmp/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>recalloc.local</groupId><artifactId>kafka-broker</artifactId><version>$KAFKA_VERSION</version>
  <packaging>pom</packaging>
  <dependencies>$deps</dependencies>
</project>
EOF
  rm -rf "$kafka_libs"
  if ! (cd "$tmp" && mvn -q -B "org.apache.maven.plugins:maven-dependency-plugin:$KAFKA_MVN_DEP_PLUGIN:copy-dependencies" -DincludeScope=runtime \
      -DoutputDirectory="$kafka_libs") >"$kafka_root/install.log" 2>&1; then
    rm -rf "$tmp"
    die "fetching Kafka $KAFKA_VERSION with Maven failed; see $kafka_root/install.log: $(tail -5 "$kafka_root/install.log")"
  fi
  cp "$tmp/pom.xml" "$kafka_root/pom.xml"; rm -rf "$tmp"
  [ -f "$kafka_libs/kafka_2.13-$KAFKA_VERSION.jar" ] || die "Maven finished but $kafka_libs has no kafka_2.13-$KAFKA_VERSION.jar"
  touch "$kafka_root/.complete"; exec 9>&-
  say "kafka: $KAFKA_VERSION in $kafka_libs ($(ls "$kafka_libs" | wc -l) jars)"
}

# Runs one of Kafka's command-line tools (a main class) on the broker's classpath: a small
# heap, a quick start, errors only on stderr.
tool() {  # main-class args...
  local cfg=$kafka_root/tools-log4j2.xml
  [ -f "$cfg" ] || { cat >"$cfg.$$" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="error">
  <Appenders><Console name="stderr" target="SYSTEM_ERR"><PatternLayout pattern="%p %m%n"/></Console></Appenders>
  <Loggers><Root level="error"><AppenderRef ref="stderr"/></Root></Loggers>
</Configuration>
EOF
  mv -f "$cfg.$$" "$cfg"; }
  "$JAVA" -Xms32m -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$cfg" -cp "$kafka_libs/*" "$@"
}

# A process that runs (a zombie does not: kill -0 would still find it).
running() { case "$(ps -o stat= -p "$1" 2>/dev/null)" in ''|Z*) return 1 ;; esac; }
# A live broker of DIR: its pid runs and is a Kafka server of DIR's (not a process that reused
# a stale pid).
alive() {  # dir
  [ -f "$1/kafka.pid" ] || return 1
  local pid; pid=$(cat "$1/kafka.pid")
  running "$pid" || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "kafka.Kafka $1/server.properties"
}

# The admin client's timeouts for the tools: short, so a broker that is not up yet fails fast.
admin_config() {  # dir
  cat >"$1/admin.properties" <<EOF
request.timeout.ms=5000
default.api.timeout.ms=10000
EOF
  echo "$1/admin.properties"
}

# Writes DIR's configs and formats DIR/data on the first start; sets dir, port, cport, JAVA and
# broker (the broker's command line).
prepare() {  # usage dir port [cport]
  dir=${2:?usage: $1}; port=${3:?usage: $1}
  cport=${4:-$((port + 1))}
  mkdir -p "$dir"; dir=$(cd "$dir" && pwd)
  local p
  for p in "$port" "$cport"; do
    ! (echo >/dev/tcp/127.0.0.1/"$p") 2>/dev/null || die "127.0.0.1:$p is already in use: not starting Kafka from $dir"
  done
  install
  JAVA=$(java_bin)
  say "kafka: $KAFKA_VERSION on $JAVA ($("$JAVA" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.version = //p'))"
  cat >"$dir/server.properties" <<EOF
# Written by deploy/local/kafka.sh: one combined broker+controller on loopback.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs=$dir/data
num.partitions=4
default.replication.factor=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
# A restart after kill -9 waits for the old incarnation's session to time out before the broker
# may register again (9 s by default): a short session makes that restart quick.
broker.heartbeat.interval.ms=500
broker.session.timeout.ms=${RECALLOC_KAFKA_BROKER_SESSION_MS:-3000}
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
log.retention.hours=168
log.segment.bytes=67108864
EOF
  # The caller's own settings last: a later line wins over an earlier one of the same key.
  [ -z "${RECALLOC_KAFKA_PROPERTIES:-}" ] || printf '# RECALLOC_KAFKA_PROPERTIES\n%s\n' "$RECALLOC_KAFKA_PROPERTIES" >>"$dir/server.properties"
  cat >"$dir/log4j2.xml" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<!-- Written by deploy/local/kafka.sh: warnings and errors, and the server's start line. -->
<Configuration status="warn">
  <Appenders>
    <File name="file" fileName="$dir/kafka.log" append="true">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
    </File>
  </Appenders>
  <Loggers>
    <Logger name="kafka.server.KafkaRaftServer" level="info"/>
    <Root level="warn"><AppenderRef ref="file"/></Root>
  </Loggers>
</Configuration>
EOF
  if [ ! -f "$dir/data/meta.properties" ]; then
    # A cluster id is 16 random bytes in URL-safe base64 without padding (what `random-uuid`
    # prints); Kafka refuses one that starts with '-'.
    local id=${RECALLOC_KAFKA_CLUSTER_ID:-}
    while [ -z "$id" ] || [ "${id:0:1}" = - ]; do
      id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
    done
    local out
    out=$(tool kafka.tools.StorageTool format -t "$id" -c "$dir/server.properties" 2>&1) \
      || die "formatting $dir/data failed: $out"
    say "kafka: formatted $dir/data (cluster $id)"
  fi
  # shellcheck disable=SC2206 # the heap setting is a list of JVM flags
  broker=("$JAVA" ${RECALLOC_KAFKA_HEAP:--Xms256m -Xmx512m} -XX:+UseG1GC -XX:MaxGCPauseMillis=20
    -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true
    -Dlog4j2.configurationFile="$dir/log4j2.xml" -Dkafka.logs.dir="$dir"
    -cp "$kafka_libs/*" kafka.Kafka "$dir/server.properties")
}

start() {
  local usage="kafka.sh start DIR PORT [CONTROLLER_PORT]"
  local d; d=${1:?usage: $usage}; mkdir -p "$d"; d=$(cd "$d" && pwd)
  if alive "$d"; then say "kafka: already running from $d (pid $(cat "$d/kafka.pid"))"; return 0; fi
  local t0; t0=$(date +%s.%N)
  prepare "$usage" "$@"
  # exec: the pid written below is the JVM's own.
  ( exec "${broker[@]}" </dev/null >"$dir/kafka.out" 2>&1 ) &
  local pid=$!
  echo "$pid" >"$dir/kafka.pid"
  local limit=${RECALLOC_KAFKA_START_SECONDS:-90} cfg; cfg=$(admin_config "$dir")
  local deadline=$(( $(date +%s) + limit ))
  while :; do
    running "$pid" || { rm -f "$dir/kafka.pid"; die "kafka exited while starting; $dir/kafka.log: $(tail -20 "$dir/kafka.log" "$dir/kafka.out" 2>/dev/null)"; }
    # Cheap until the port is open, then a real metadata request (list topics).
    if (echo >/dev/tcp/127.0.0.1/"$port") 2>/dev/null \
      && tool org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$port" \
           --command-config "$cfg" --list >/dev/null 2>&1; then
      break
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
      die "kafka did not answer on 127.0.0.1:$port within $limit s (pid $pid still running); $dir/kafka.log: $(tail -20 "$dir/kafka.log" "$dir/kafka.out" 2>/dev/null)"
    fi
    sleep 0.2
  done
  say "kafka: answering on 127.0.0.1:$port (controller $cport, pid $pid) after $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}') s"
}

# The broker in the foreground: prepares DIR as `start` does, then becomes the JVM (exec), so
# the caller's child process is the broker itself (kill -9 of it kills the broker). For the
# test harness, which waits for metadata itself.
run() {
  prepare "kafka.sh run DIR PORT [CONTROLLER_PORT]" "$@"
  exec "${broker[@]}" </dev/null
}

topics() {
  local port=${1:?usage: kafka.sh topics PORT PARTITIONS TOPIC...} parts=${2:?usage: kafka.sh topics PORT PARTITIONS TOPIC...}
  shift 2
  [ $# -gt 0 ] || die "usage: kafka.sh topics PORT PARTITIONS TOPIC..."
  install
  JAVA=$(java_bin)
  local tmp; tmp=$(mktemp -d); local cfg; cfg=$(admin_config "$tmp")
  local t out
  for t in "$@"; do
    if ! out=$(tool org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$port" \
        --command-config "$cfg" --create --if-not-exists --topic "$t" --partitions "$parts" \
        --replication-factor "${RECALLOC_KAFKA_REPLICATION_FACTOR:-1}" 2>&1); then
      echo "$out" | grep -qi "already exists" || { rm -rf "$tmp"; die "creating topic $t on 127.0.0.1:$port: $out"; }
    fi
  done
  rm -rf "$tmp"
}

stop() {
  local dir=${1:?usage: kafka.sh stop DIR}
  [ -d "$dir" ] || return 0
  dir=$(cd "$dir" && pwd)
  if alive "$dir"; then
    local pid; pid=$(cat "$dir/kafka.pid")
    say "kafka: stopping (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    local grace=${RECALLOC_KAFKA_STOP_SECONDS:-30}
    for _ in $(seq $((grace * 10))); do running "$pid" || break; sleep 0.1; done
    if running "$pid"; then
      say "kafka: did not stop in $grace s, killing"; kill -KILL "$pid" 2>/dev/null || true
      for _ in $(seq 50); do running "$pid" || break; sleep 0.1; done
    fi
  fi
  rm -f "$dir/kafka.pid"
}

cmd=${1:-}; shift || true
case "$cmd" in
  install) install ;;
  start) start "$@" ;;
  run) run "$@" ;;
  topics) topics "$@" ;;
  stop) stop "$@" ;;
  *) die "usage: kafka.sh install | start DIR PORT [CONTROLLER_PORT] | run DIR PORT [CONTROLLER_PORT] | topics PORT PARTITIONS TOPIC... | stop DIR" ;;
esac

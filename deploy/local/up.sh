#!/usr/bin/env bash
# Starts the local cluster on loopback: Redis, Apache Kafka (one KRaft broker+controller, its
# log in .local/kafka, deploy/local/kafka.sh), the topics, then the services. Waits until each
# answers. Safe to run twice.
set -euo pipefail
source "$(dirname "$0")/env.sh"
bash "$root/deploy/local/install.sh"
mkdir -p "$logs" "$run" "$state/redis" "$state/kafka"

alive() { [ -f "$run/$1.pid" ] && kill -0 "$(cat "$run/$1.pid")" 2>/dev/null; }
wait_port() {  # name port seconds
  for _ in $(seq $(( $3 * 10 ))); do (echo >/dev/tcp/127.0.0.1/$2) 2>/dev/null && return 0; sleep 0.1; done
  die "$1 did not open port $2 within $3 s; see $logs/$1.log"
}

if redis-cli -p "$redis_port" ping >/dev/null 2>&1; then
  say "redis: answering on $redis_port"
else
  say "redis: starting on $redis_port"
  redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$state/redis" --appendonly yes \
    --daemonize no >"$logs/redis.log" 2>&1 &
  echo $! >"$run/redis.pid"
  wait_port redis "$redis_port" 20
fi

if alive kafka; then
  say "kafka: running (pid $(cat "$run/kafka.pid"))"
elif (echo >/dev/tcp/127.0.0.1/$kafka_port) 2>/dev/null; then
  say "kafka: something already answers on $kafka_port: using it"
else
  say "kafka: starting Apache Kafka $KAFKA_VERSION (KRaft) on $kafka_port"
  bash "$root/deploy/local/kafka.sh" start "$state/kafka" "$kafka_port" "$kafka_controller_port"
  # kafka.sh keeps its log and pid in its folder; the usual places point there.
  ln -sfn ../kafka/kafka.log "$logs/kafka.log"
  ln -sfn ../kafka/kafka.pid "$run/kafka.pid"
fi
bash "$root/deploy/local/kafka.sh" topics "$kafka_port" "$partitions" "${topics[@]}"

if [ ! -x "$bin/recalloc-ingest" ] || [ ! -x "$bin/recalloc-featurizer" ] || [ ! -x "$bin/recalloc-embed" ] || [ ! -x "$bin/recalloc-rank" ] || [ ! -x "$bin/recalloc-scheduler" ] || [ ! -x "$bin/recalloc-console" ] || [ ! -x "$bin/recalloc" ]; then
  say "building the services (cargo build --release)"
  (cd "$root" && cargo build --release --bins) >"$logs/build.log" 2>&1 || die "build failed; see $logs/build.log"
fi

start() {  # name binary health-port
  if alive "$1"; then say "$1: running"; return; fi
  say "$1: starting"
  "$bin/$2" >"$logs/$1.log" 2>&1 &
  echo $! >"$run/$1.pid"
}
# From the clone's root, where embed.model_dir (models/all-MiniLM-L6-v2) is relative to.
cd "$root"
start ingest recalloc-ingest
start featurizer recalloc-featurizer
start embed recalloc-embed
start rank recalloc-rank
# The scheduler never touches a Kubernetes cluster from here (a kubeconfig on this machine may
# point at a real one): it plans recalloc's own services from their /metrics and the
# featurizer's consumer lag, and serves the plan (`recalloc plan`).
RECALLOC_SCHEDULER_MODE=dry_run RECALLOC_SCHEDULER_TICK_SECONDS=${RECALLOC_SCHEDULER_TICK_SECONDS:-10} \
  start scheduler recalloc-scheduler
ready() {  # name port
  for _ in $(seq 300); do
    alive "$1" || die "$1 exited; see $logs/$1.log: $(tail -3 "$logs/$1.log")"
    curl -fsS "http://127.0.0.1:$2/readyz" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  die "$1 not ready after 60 s: $(curl -sS "http://127.0.0.1:$2/readyz" 2>&1 | tr '\n' ' ')"
}
ready ingest "$(echo "${RECALLOC_INGEST_METRICS_ADDR:-127.0.0.1:9101}" | sed 's/.*://')"
ready featurizer "$(echo "${RECALLOC_FEATURIZER_METRICS_ADDR:-127.0.0.1:9105}" | sed 's/.*://')"
ready embed "$(echo "${RECALLOC_EMBED_METRICS_ADDR:-127.0.0.1:9102}" | sed 's/.*://')"
ready rank "$(echo "${RECALLOC_RANK_METRICS_ADDR:-127.0.0.1:9103}" | sed 's/.*://')"
ready scheduler "$(echo "${RECALLOC_SCHEDULER_METRICS_ADDR:-127.0.0.1:9104}" | sed 's/.*://')"
# The web console last, once the services it reads answer (it turns ready after its first read).
start console recalloc-console
ready console "$(echo "$console_addr" | sed 's/.*://')"
say "up: console http://$console_addr/, ingest grpc ${RECALLOC_INGEST_GRPC_ADDR:-127.0.0.1:50051}, embed grpc ${RECALLOC_EMBED_GRPC_ADDR:-127.0.0.1:50052}, rank grpc ${RECALLOC_RANK_GRPC_ADDR:-127.0.0.1:50053}, scheduler grpc ${RECALLOC_SCHEDULER_GRPC_ADDR:-127.0.0.1:50054}, kafka $kafka, redis $redis_url; logs in $logs"

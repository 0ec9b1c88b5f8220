#!/usr/bin/env bash
# Stops what up.sh started, services first so they commit and drain, then the broker and Redis.
# Data stays in .local/ (`make reset` removes it).
set -uo pipefail
source "$(dirname "$0")/env.sh"
stop() {
  if [ "$1" = kafka ]; then
    bash "$root/deploy/local/kafka.sh" stop "$state/kafka"; rm -f "$run/kafka.pid"; return 0
  fi
  local f=$run/$1.pid
  [ -f "$f" ] || return 0
  local pid; pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    say "$1: stopping"
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && { say "$1: did not stop in 15 s, killing"; kill -KILL "$pid" 2>/dev/null; }
  fi
  rm -f "$f"
}
# `down.sh NAME…` stops only the named processes (the benchmarks use it).
if [ $# -gt 0 ]; then for s in "$@"; do stop "$s"; done; exit 0; fi
for s in console scheduler ingest rank embed featurizer kafka redis; do stop $s; done
exit 0

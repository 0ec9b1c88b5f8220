#!/usr/bin/env bash
# Soak: first the maximum Recommend rate (closed loop, 16 clients, 20 s, with the ingestion below
# running: that is the capacity the soak shares), then SOAK_SECONDS
# (default 600) of Recommend at 80 % of it, open loop, with ingestion beside it (RecordEvents at
# SOAK_EVENTS_PER_S, default 1000/s, fresh events the featurizer and embed apply). Per minute:
# p50/p99/p999, failed calls, calls the client could not send (more than 512 in flight), and
# the resident memory and CPU use of every service, the broker and Redis. The goal is flatness: p99 and
# memory of the last minute against the first, and no error. Starts the local cluster and loads
# and trains the goodbooks sample when Redis is empty; appends a row to bench/results.md and
# keeps the per-minute JSON in bench/soak-last.json.
set -euo pipefail
cd "$(dirname "$0")/.."
source deploy/local/env.sh
seconds=${SOAK_SECONDS:-600}; events=${SOAK_EVENTS_PER_S:-1000}
day=$(date -u +%Y-%m-%d); cores=$(nproc)
rank=${RECALLOC_RANK_GRPC_ADDR:-127.0.0.1:50053}; ingest=${RECALLOC_INGEST_GRPC_ADDR:-127.0.0.1:50051}
w=$(mktemp -d); trap 'rm -rf $w' EXIT
bash deploy/local/up.sh >/dev/null
if [ "$(redis-cli -p "$redis_port" scard '{rc}:items')" = 0 ]; then
  say "loading the goodbooks sample and training first"
  "$bin/recalloc" load goodbooks data/goodbooks >/dev/null
  bash deploy/local/settle.sh
  "$bin/recalloc" train --algorithm implicit_als --factors 64 >/dev/null
fi
redis-cli -p "$redis_port" srandmember '{rc}:users' 5000 >"$w/users.txt"
redis-cli -p "$redis_port" srandmember '{rc}:items' 5000 >"$w/items.txt"
[ -s "$w/users.txt" ] && [ -s "$w/items.txt" ] || die "no users or items in Redis: run make demo first"
pids=()
for s in ingest featurizer embed rank scheduler kafka redis; do
  [ -f "$run/$s.pid" ] && kill -0 "$(cat "$run/$s.pid")" 2>/dev/null && pids+=("$s=$(cat "$run/$s.pid")")
done
say "measuring the maximum Recommend rate with the ingestion running (closed loop, 16 clients, 20 s)"
"$bin/examples/soak" "$rank" "$ingest" "$w/users.txt" "$w/items.txt" 0 24 "$events" >/dev/null &
probe_ingest=$!
sleep 2
max=$("$bin/examples/serve_bench" "$rank" "$w/users.txt" 16 20)
wait $probe_ingest
rate=$(python3 -c "import json,sys; print(round(0.8*json.loads(sys.argv[1])['requests_per_s']))" "$max")
say "maximum $(python3 -c "import json,sys; print(round(json.loads(sys.argv[1])['requests_per_s']))" "$max") req/s; soaking at $rate req/s with $events events/s for $seconds s"
"$bin/examples/soak" "$rank" "$ingest" "$w/users.txt" "$w/items.txt" "$rate" "$seconds" "$events" "${pids[@]}" >bench/soak-last.json
row=$(python3 - "$day" "$cores" "$max" bench/soak-last.json <<'PY'
import json, sys
day, cores, mx, path = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
s = json.load(open(path))
w = [x for x in s["windows"] if x["requests"]]
first, last = w[0], w[-1]
mem = lambda name: (first["rss_mib_at_start"].get(name), s["rss_mib_at_end"].get(name))
m = " · ".join(f"{n} {a:.0f}→{b:.0f}" for n in ("rank", "ingest", "featurizer", "embed")
              for a, b in [mem(n)] if a is not None and b is not None)
print(f"| {day} | {cores} cores | {mx['requests_per_s']:.0f} | {s['rate']:.0f} | {s['seconds']} s | "
      f"{s['events_accepted']} ({s['events_failed']} failed) | {first['p99_ms']:.2f} → {last['p99_ms']:.2f} "
      f"({last['p99_ms'] / first['p99_ms']:.2f}×) | {m} | {s['errors']} | {s['dropped']} |")
PY
)
echo "soak: $row"
python3 bench/results.py bench/results.md "## Soak: Recommend at 80 % of its maximum with ingestion" \
  "bench/soak.sh: the maximum closed-loop rate (16 clients, 20 s, with the ingestion running), then Recommend at 80 % of it, open loop (latency from the scheduled send), with RecordEvents beside it, client and services on the same machine. p99 of the first minute → the last; resident memory (MiB) at the start → the end. Goal: both flat, no error. \"not sent\": calls due while 512 were in flight." \
  "| date | machine | max req/s | soak req/s | length | events ingested | p99 ms first → last | RSS MiB start → end | errors | not sent |" "|---|---|---|---|---|---|---|---|---|---|" "$row"

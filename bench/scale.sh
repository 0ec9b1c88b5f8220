#!/usr/bin/env bash
# Scale benchmarks, each against its reference measured in the same run:
#   - approximate top-k: `recalloc bench-ann` at 1,000,000 items × 64 factors (the index against
#     exact search on the same synthetic model, one thread);
#   - Recommend over gRPC, the existing benchmark (goodbooks catalogue in the running cluster,
#     64-factor ALS, 16 clients, 20 s): today's rank binary against the reference commit's
#     (REF, built once into $RECALLOC_CACHE/bench-ref), alternating, 3 rounds each;
#   - Recommend over gRPC on a 1,000,000-item synthetic model: the index against the reference
#     (exact scoring), on a Redis of their own;
#   - how cost grows (`cost_curve`): Redis write/read, ALS and hybrid fit, model and replica
#     size, peak memory at 1 M, 10 M and 50 M synthetic interactions (COST_CURVE_SIZES).
# Appends rows to bench/results.md.
set -euo pipefail
cd "$(dirname "$0")/.."
source deploy/local/env.sh
REF=${REF:-20c066a}   # the last commit before the index and the early-stopping scan
day=$(date -u +%Y-%m-%d); cores=$(nproc)
f=bench/results.md
w=$(mktemp -d)
ref_dir=${RECALLOC_CACHE:-$HOME/.cache/recalloc}/bench-ref
cleanup() {
  [ -f "$w/side.pid" ] && kill "$(cat "$w/side.pid")" 2>/dev/null || true
  redis-cli -p 6391 shutdown nosave >/dev/null 2>&1 || true
  rm -rf "$w"
}
trap cleanup EXIT

# The reference rank binary, built once per commit outside the clone.
ref_bin=$ref_dir/$REF/recalloc-rank
if [ ! -x "$ref_bin" ]; then
  echo "building the reference rank binary at $REF (once; a few minutes)"
  rm -rf "$ref_dir/src-$REF"; mkdir -p "$ref_dir/$REF"
  git worktree add --detach "$ref_dir/src-$REF" "$REF" >/dev/null
  (cd "$ref_dir/src-$REF" && CARGO_TARGET_DIR=$ref_dir/target cargo build --release -p recalloc-rank --bin recalloc-rank) >"$w/ref-build.log" 2>&1 \
    || { tail -20 "$w/ref-build.log"; exit 1; }
  cp "$ref_dir/target/release/recalloc-rank" "$ref_bin"
  git worktree remove --force "$ref_dir/src-$REF"
fi

# 1. The index against exact search.
j=$("$bin/recalloc" bench-ann --items 1000000 --factors 64 --json)
row=$(python3 - "$day" "$cores" "$j" <<'PY'
import json, sys
d = json.loads(sys.argv[3])
print(f"| {sys.argv[1]} | {sys.argv[2]} cores | {d['items']} × {d['factors']} | {d['lists']} / {d['probes']} | {d['recall_at_10']:.4f} | {d['exact_ms']:.3f} | {d['ann_ms']:.3f} | {d['speedup']:.1f}× | {d['ann_p99_ms']:.3f} | {d['build_s']:.1f} | {d['index_bytes'] / 2**20:.0f} |")
PY
)
echo "ann: $row"
python3 bench/results.py $f "## Ranking: approximate top-k (IVF), 1,000,000 items" \
  "\`recalloc bench-ann --items 1000000 --factors 64\`: a synthetic catalogue (taste clusters with noise as large as the signal, Zipf popularity in the factor norms), 200 top-10 queries on one thread, exact search (every item scored, then top-k) against the index (3·√n lists, lists/12 probed). Goal: recall@10 ≥ 0.95 and ≥ 20× faster." \
  "| date | machine | items × factors | lists / probes | recall@10 | exact (ms, median) | index (ms, median) | speed-up | index p99 (ms) | build (s) | index (MiB) |" "|---|---|---|---|---|---|---|---|---|---|---|" "$row"

# A second rank server beside the cluster's: `side BINARY REDIS_URL` on 51053 / 9193.
side() {
  [ -f "$w/side.pid" ] && { kill "$(cat "$w/side.pid")" 2>/dev/null || true; sleep 1; }
  RECALLOC_REDIS_URL=$2 RECALLOC_RANK_GRPC_ADDR=127.0.0.1:51053 RECALLOC_RANK_METRICS_ADDR=127.0.0.1:9193 \
    "$1" >"$w/side.log" 2>&1 &
  echo $! >"$w/side.pid"
  for _ in $(seq 240); do grep -q "model loaded" "$w/side.log" && return 0; sleep 0.5; done
  echo "the side rank server loaded no model; see its log:"; tail -5 "$w/side.log"; exit 1
}
median() { python3 -c 'import json,sys; r=sorted((json.loads(l) for l in sys.stdin), key=lambda d: d["requests_per_s"]); print(json.dumps(r[len(r)//2]))'; }
serve_row() {  # label catalogue json
  python3 - "$day" "$cores" "$@" <<'PY'
import json, sys
day, cores, label, catalogue, raw = sys.argv[1:6]
a = json.loads(raw)
print(f"| {day} | {cores} cores | {catalogue} | {label} | {a['clients']} | {a['requests_per_s']:.0f} | {a['p50_ms']:.2f} | {a['p99_ms']:.2f} | {a['errors']} |")
PY
}
section="## Ranking: Recommend over gRPC, today's rank against the reference"
intro="Closed loop as in \"Recommend over gRPC\" (top-10, seen items excluded, 16 clients, 20 s, first 2 s not counted), client and server on the same cores; the two servers answer in turns, 3 rounds each, median round shown. The reference is the rank binary of commit $REF (every item scored, a HashSet of seen items per request). Goal at 10,000 items: ≥ 10,000 req/s with p99 ≤ 5 ms; at 1,000,000: p99 ≤ 10 ms."
header="| date | machine | catalogue | server | clients | requests/s | p50 (ms) | p99 (ms) | errors |"; rule="|---|---|---|---|---|---|---|---|---|"

# 2. The existing benchmark: goodbooks in the running cluster.
bash deploy/local/up.sh >/dev/null
if [ "$("$bin/recalloc" stats | python3 -c 'import json,sys; print(json.load(sys.stdin)["events"])')" -lt 100000 ]; then
  "$bin/recalloc" load goodbooks data/goodbooks >/dev/null
  bash deploy/local/settle.sh
fi
"$bin/recalloc" train --algorithm implicit_als --factors 64 >/dev/null
redis-cli -p "$redis_port" srandmember "{rc}:users" 5000 >"$w/users.txt"
side "$ref_bin" "$redis_url"
for _ in 1 2 3; do
  "$bin/examples/serve_bench" "${RECALLOC_RANK_GRPC_ADDR:-127.0.0.1:50053}" "$w/users.txt" 16 20 >>"$w/ours.jsonl"
  "$bin/examples/serve_bench" 127.0.0.1:51053 "$w/users.txt" 16 20 >>"$w/ref.jsonl"
done
for who in ours ref; do
  row=$(serve_row "$([ $who = ours ] && echo today || echo "reference $REF")" "goodbooks, 10000 items, 64 factors" "$(median <"$w/$who.jsonl")")
  echo "serve: $row"; python3 bench/results.py $f "$section" "$intro" "$header" "$rule" "$row"
done

# 3. A million items, on a Redis of its own (the cluster keeps its model).
redis-server --port 6391 --bind 127.0.0.1 --save "" --appendonly no --daemonize yes >/dev/null
"$bin/examples/synthetic_model" redis://127.0.0.1:6391 1000000 20000 64 >/dev/null
seq 0 19999 | sed 's/^/u/' | shuf -n 5000 >"$w/synthetic-users.txt"
for who in ours ref; do
  side "$([ $who = ours ] && echo "$bin/recalloc-rank" || echo "$ref_bin")" redis://127.0.0.1:6391
  for c in 4 16; do
    for _ in 1 2 3; do "$bin/examples/serve_bench" 127.0.0.1:51053 "$w/synthetic-users.txt" $c 20; done >"$w/big-$who-$c.jsonl"
    row=$(serve_row "$([ $who = ours ] && echo "today (index)" || echo "reference $REF (exact)")" "synthetic, 1000000 items, 64 factors" "$(median <"$w/big-$who-$c.jsonl")")
    echo "serve: $row"; python3 bench/results.py $f "$section" "$intro" "$header" "$rule" "$row"
  done
done

# 4. How cost grows: 1 M, 10 M and 50 M synthetic interactions (Redis up to 10 M), on the Redis
#    of part 3, which it flushes. The cluster's services are stopped for idle cores.
bash deploy/local/down.sh >/dev/null 2>&1
[ -f "$w/side.pid" ] && { kill "$(cat "$w/side.pid")" 2>/dev/null || true; rm -f "$w/side.pid"; }
"$bin/examples/cost_curve" redis://127.0.0.1:6391 ${COST_CURVE_SIZES:-1000000 10000000 50000000} >"$w/cost.jsonl"
while read -r line; do
  row=$(python3 - "$day" "$cores" "$line" <<'PY'
import json, sys
d = json.loads(sys.argv[3]); g = lambda k, f: f.format(d[k]) if k in d else "—"
print(f"| {sys.argv[1]} | {sys.argv[2]} cores | {d['interactions']:,} | {d['users']:,} | {g('redis_write_s', '{:.0f}')} | {g('redis_bytes_per_event', '{:.0f}')} | {g('training_read_s', '{:.1f}')} | {d['als_fit_s']:.1f} | {d['hybrid_fit_s']:.1f} | {d['model_bytes'] / 2**20:.0f} | {d['served_bytes'] / 2**20:.0f} | {d['peak_rss_bytes'] / 2**30:.1f} |")
PY
)
  echo "cost: $row"
  python3 bench/results.py $f "## Scale: how cost grows with interactions" \
    "\`cost_curve\` (services/rank/examples): 100,000 items with 384-d text vectors, interactions / 50 users with 50 interactions each (Zipf within two tastes per user). Redis: every event through the featurizer's apply script, then the training read; training as the rank service does it (64 factors, 15 iterations, 2 threads); the model as stored and a serving replica's memory for it (decoded and indexed); the process's peak memory. Goal: 10× data ≤ 11× time and memory." \
    "| date | machine | interactions | users | Redis write (s) | Redis bytes / event | training read (s) | ALS fit (s) | hybrid fit (s) | model stored (MiB) | replica (MiB) | peak memory (GiB) |" "|---|---|---|---|---|---|---|---|---|---|---|---|" "$row"
done <"$w/cost.jsonl"

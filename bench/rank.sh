#!/usr/bin/env bash
# Ranking benchmarks, each against its reference measured in the same run:
#   - explicit: MovieLens-100k u1–u5, our biased MF against Surprise SVD() (defaults);
#   - implicit: MovieLens-100k u1, our ALS against `implicit` ALS (64 factors, λ 0.05, 15 it.);
#   - cold start: goodbooks items held out of training, hybrid against pure ALS (NDCG@10);
#   - serving: Recommend over gRPC, closed loop, 16 clients, goodbooks catalogue, 64 factors.
# MovieLens is read from ../shared/data (or $MOVIELENS); without it those rows are skipped.
# Appends rows to bench/results.md.
set -euo pipefail
cd "$(dirname "$0")/.."
source deploy/local/env.sh
venv=$(bash bench/peers-venv.sh)
ml=${MOVIELENS:-$root/../shared/data/movielens-100k}
day=$(date -u +%Y-%m-%d); cores=$(nproc)
f=bench/results.md
w=$(mktemp -d); trap 'rm -rf $w' EXIT
if [ -f "$ml/u1.base" ]; then
  bash deploy/local/down.sh >/dev/null 2>&1   # an idle machine for the fit timings
  ours=$("$bin/recalloc" eval movielens "$ml" --json)
  peer=$(OPENBLAS_NUM_THREADS=1 "$venv/bin/python" bench/peers/surprise_svd.py "$ml" 2>/dev/null)
  row=$(python3 bench/rank_rows.py explicit "$day" "$cores" "$ours" "$peer")
  echo "explicit: $row"
  python3 bench/results.py $f "## Ranking: explicit MF, MovieLens-100k u1–u5" \
    "Our biased MF (SGD, 64 factors, 25 epochs, 2 threads) against Surprise \`SVD()\` with its defaults, same folds, same run. Goal: RMSE ≤ Surprise's, fit ≤ 0.2×." \
    "| date | machine | RMSE ours | RMSE Surprise | fit ours (s/fold) | fit Surprise (s/fold) | fit ratio |" "|---|---|---|---|---|---|---|" "$row"
  ours=$("$bin/recalloc" eval movielens "$ml" --implicit --json)
  peer=$("$venv/bin/python" bench/peers/implicit_als.py "$ml" 2 2>/dev/null)
  row=$(python3 bench/rank_rows.py implicit "$day" "$cores" "$ours" "$peer")
  echo "implicit: $row"
  python3 bench/results.py $f "## Ranking: implicit ALS, MovieLens-100k u1" \
    "Every rating an interaction; 64 factors, λ = 0.05, 15 iterations, 2 threads for both; ours with α = 0.25 and 3 CG steps. Metrics at 10 with training items excluded, \`implicit\`'s definitions. Goal: NDCG ≥ 1.0×, fit ≤ 1.5×." \
    "| date | machine | NDCG@10 ours | NDCG@10 implicit | P@10 ours | P@10 implicit | fit ours (s) | fit implicit (s) |" "|---|---|---|---|---|---|---|---|" "$row"
else
  echo "MovieLens not found in $ml: explicit and implicit rows skipped (set MOVIELENS=DIR)"
fi

# The goodbooks catalogue in the running cluster, embedded, with a current 64-factor model.
bash deploy/local/up.sh >/dev/null
if [ "$("$bin/recalloc" stats | python3 -c 'import json,sys; print(json.load(sys.stdin)["events"])')" -lt 100000 ]; then
  "$bin/recalloc" load goodbooks data/goodbooks >/dev/null
fi
for _ in $(seq 120); do
  n=$("$bin/recalloc" stats | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["items"] - d["embedded_items"])')
  [ "$n" -le 0 ] && break; sleep 2
done
cold=$("$bin/examples/cold_start" "$redis_url")
row=$(python3 bench/rank_rows.py cold "$day" "$cores" "$cold")
echo "cold start: $row"
python3 bench/results.py $f "## Ranking: cold-start items, goodbooks" \
  "10% of the books with a MiniLM vector are held out of training entirely; for each user who had interacted with them, the held-out books are ranked and NDCG@10 measured against those interactions. Pure ALS has no factors for them (random order); hybrid maps text vectors into the factor space (ridge regression)." \
  "| date | held-out items | users | NDCG@10 hybrid | NDCG@10 pure ALS | ratio |" "|---|---|---|---|---|---|" "$row"
"$bin/recalloc" train --algorithm implicit_als --factors 64 >/dev/null
redis-cli -p "$redis_port" srandmember "{rc}:users" 5000 >"$w/users.txt"
serve=$("$bin/examples/serve_bench" "${RECALLOC_RANK_GRPC_ADDR:-127.0.0.1:50053}" "$w/users.txt" 16 20)
row=$(python3 bench/rank_rows.py serve "$day" "$cores" "$serve")
echo "serving: $row"
python3 bench/results.py $f "## Ranking: Recommend over gRPC" \
  "Closed loop: each client sends the next top-10 request (seen items excluded) when the last one answered, for random goodbooks users, 20 s (the first 2 s not counted); client and server share the machine. Goal: ≥ 5,000 req/s with p99 ≤ 10 ms." \
  "| date | machine | catalogue | clients | requests/s | p50 (ms) | p99 (ms) | errors |" "|---|---|---|---|---|---|---|---|" "$row"

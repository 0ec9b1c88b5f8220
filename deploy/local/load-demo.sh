#!/usr/bin/env bash
# Loads the demo's goodbooks subset unless the cluster already holds events (a later `make demo`
# over the state kept in .local/). Loading it again would be safe only within the exactly-once
# guard's window (featurizer.dedup_window_s, a day by default): after that the same events would
# count twice. DEMO_RELOAD=1 loads anyway; `make reset` starts from an empty state.
set -euo pipefail
source "$(dirname "$0")/env.sh"
dir=${1:?usage: load-demo.sh GOODBOOKS_DIR}
events=$("$bin/recalloc" stats | python3 -c 'import json,sys; print(json.load(sys.stdin)["events"])')
if [ "$events" -gt 0 ] && [ "${DEMO_RELOAD:-0}" != 1 ]; then
  say "the cluster already holds $events events: not loading $dir again (make reset starts over, DEMO_RELOAD=1 loads anyway)"
  exit 0
fi
# With the to-read marks when the folder has them: the ratings sample alone (2.25 a reader) is
# too sparse for anything to beat popularity.
if [ -f "$dir/to_read.csv" ]; then
  "$bin/recalloc" load goodbooks "$dir" --to-read
else
  "$bin/recalloc" load goodbooks "$dir"
fi

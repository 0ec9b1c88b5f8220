#!/usr/bin/env bash
# Waits until the cluster has caught up with what was loaded: the featurizer's counts stop
# changing and the embed worker has a vector for every item (all bundled books have text).
# Gives up after RECALLOC_SETTLE_SECONDS (default 600) and says what is missing.
set -euo pipefail
source "$(dirname "$0")/env.sh"
limit=${RECALLOC_SETTLE_SECONDS:-600}
prev=""; start=$(date +%s)
while :; do
  stats=$("$bin/recalloc" stats)
  read -r events items embedded <<<"$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(d["events"], d["items"], d["embedded_items"])' "$stats")"
  if [ "$events" = "$prev" ] && [ "$embedded" -ge "$items" ]; then break; fi
  if [ $(( $(date +%s) - start )) -ge "$limit" ]; then
    say "still not settled after ${limit}s: $stats"; break
  fi
  prev=$events
  printf '\r[recalloc] events %s, items %s, embedded %s ' "$events" "$items" "$embedded" >&2
  sleep 3
done
echo >&2
echo "$stats"

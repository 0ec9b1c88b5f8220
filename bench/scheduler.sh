#!/usr/bin/env bash
# Scheduler benchmarks:
#   - planner: 10 deployments × 288 steps with a shared GPU budget, solve time (goal ≤ 100 ms);
#   - allocation quality on the bundled load traces: recalloc's planner against the Kubernetes
#     HPA policy replayed on the same trace (goal: slack ≤ 0.5× HPA's, under-provisioned
#     time ≤ HPA's), and the seed model's running max;
#   - forecast accuracy on the same traces (rolling origin over the last 25 %).
# Traces are the bundled ones in data/traces (or $TRACES=DIR with the same layout).
# Appends rows to bench/results.md.
set -euo pipefail
cd "$(dirname "$0")/.."
source deploy/local/env.sh
traces=${TRACES:-$root/data/traces}
day=$(date -u +%Y-%m-%d); cores=$(nproc)
f=bench/results.md

p=$("$target/release/examples/planner_bench" 20)
row=$(python3 - "$day" "$cores" "$p" <<'PY'
import json, sys
day, cores, p = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
print(f"| {day} | {cores} cores | {p['median_ms']:.1f} | {p['min_ms']:.1f} | {p['rounds']} | {p['gap']*100:.2f} % |")
PY
)
echo "planner: $row"
python3 bench/results.py $f "## Scheduler: planner, 10 deployments × 288 steps, GPU budget" \
  "\`planner::benchmark_problem(10, 288, 42)\`: diurnal demand, every third deployment on GPUs, a GPU budget that binds at the peaks; exact DP per deployment, Lagrangian prices on the budget. Goal: ≤ 100 ms." \
  "| date | machine | median (ms) | min (ms) | Lagrangian rounds | gap to lower bound |" "|---|---|---|---|---|---|" "$row"

if [ ! -d "$traces" ]; then
  echo "traces not found in $traces (bundled in data/traces; TRACES=DIR overrides)" >&2; exit 1
fi
for spec in crane/input0.csv:15:30 crane/input6.csv:5:30 wikipedia/example_wp_log_peyton_manning.csv:1:7; do
  IFS=: read -r file cap horizon <<<"$spec"
  [ -f "$traces/$file" ] || { echo "missing $traces/$file" >&2; exit 1; }
  sim=$("$bin/recalloc" simulate --trace "$traces/$file" --capacity-per-pod "$cap" --startup 60s --policy all --json --chart none)
  acc=$("$target/release/examples/forecast_accuracy" "$traces/$file" "$horizon")
  row=$(python3 - "$day" "$cores" "$file" "$cap" "$sim" <<'PY'
import json, sys
day, cores, file, cap, sim = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], json.loads(sys.argv[5])
p = sim["policies"]
h, s, r = p["hpa"], p["seed"], p["recalloc"]
ok = "met" if r["slack"] <= 0.5 * h["slack"] and r["under_provisioned_seconds"] <= h["under_provisioned_seconds"] else "short"
print(f"| {day} | {cores} cores | {file} | {cap} | {r['slack']:.3f} | {h['slack']:.3f} | {s['slack']:.3f} | {r['slack']/h['slack']:.2f} "
      f"| {r['under_provisioned_seconds']:.0f} | {h['under_provisioned_seconds']:.0f} | {s['under_provisioned_seconds']:.0f} "
      f"| {r['scaling_actions']} | {h['scaling_actions']} | {ok} |")
PY
)
  echo "quality: $row"
  python3 bench/results.py $f "## Scheduler: allocation quality on real traces" \
    "\`recalloc simulate --startup 60s\`: slack = provisioned / needed − 1 (needed = the pods the demand needs at every instant), under = seconds with ready capacity below demand. Goal: recalloc's slack ≤ 0.5× HPA's with under ≤ HPA's." \
    "| date | machine | trace | capacity/pod | slack recalloc | slack HPA | slack seed | ratio | under recalloc (s) | under HPA (s) | under seed (s) | actions recalloc | actions HPA | goal |" "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|" "$row"
  row=$(python3 - "$day" "$file" "$acc" <<'PY'
import json, sys
day, file, a = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
pin = {q: v for q, v in a["pinball"]}; cov = {q: v for q, v in a["coverage"]}
mape = a["mape"] if a["mape"] is not None else float("nan")
print(f"| {day} | {file} | {a['method']} | {a['horizon']} | {pin[0.5]:.3f} | {pin[0.9]:.3f} | {pin[0.99]:.3f} | {cov[0.9]:.3f} | {cov[0.99]:.3f} | {mape:.3f} |")
PY
)
  echo "forecast: $row"
  python3 bench/results.py $f "## Scheduler: forecast accuracy" \
    "Fitted on the first 75 % of each trace, scored rolling over the rest (no refit) at horizons 1..=H; pinball loss per quantile (trace units), coverage = share of actuals at or below the quantile." \
    "| date | trace | method | H | pinball 0.5 | pinball 0.9 | pinball 0.99 | coverage 0.9 | coverage 0.99 | MAPE |" "|---|---|---|---|---|---|---|---|---|---|" "$row"
done

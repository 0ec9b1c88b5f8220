"""Formats one results.md row for bench/rank.sh: rank_rows.py KIND DAY CORES JSON [JSON]."""
import json, sys

kind, day, cores = sys.argv[1:4]  # (quality: the data set's label in place of cores)
a = json.loads(sys.argv[4])
b = json.loads(sys.argv[5]) if len(sys.argv) > 5 else {}
if kind == "explicit":
    r = a["fit_seconds_per_fold"] / b["fit_seconds_per_fold"]
    print(f"| {day} | {cores} cores | {a['rmse']:.4f} | {b['rmse']:.4f} | {a['fit_seconds_per_fold']:.3f} | {b['fit_seconds_per_fold']:.3f} | {r:.2f}× |")
elif kind == "implicit":
    print(f"| {day} | {cores} cores | {a['ndcg']:.4f} | {b['ndcg']:.4f} ({a['ndcg'] / b['ndcg']:.3f}×) | {a['precision']:.4f} | {b['precision']:.4f} "
          f"| {a['fit_seconds']:.3f} | {b['fit_seconds']:.3f} ({a['fit_seconds'] / b['fit_seconds']:.2f}×) |")
elif kind == "cold":
    h, p = a["hybrid"], a["implicit_als"]
    print(f"| {day} | {a['cold_items']} of 10000 | {h['users']} | {h['ndcg_at_10']:.4f} | {p['ndcg_at_10']:.4f} | {h['ndcg_at_10'] / max(p['ndcg_at_10'], 1e-9):.1f}× |")
elif kind == "serve":
    print(f"| {day} | {cores} cores | 10000 items, 64 factors | {a['clients']} | {a['requests_per_s']:.0f} | {a['p50_ms']:.2f} | {a['p99_ms']:.2f} | {a['errors']} |")
elif kind == "quality":
    m = a["models"]; s, p = m["served"]["ndcg"], m["popularity"]["ndcg"]
    als, bpr = b["als"]["ndcg"], b["bpr"]["ndcg"]
    print(f"| {day} | {cores} | {s:.4f} ({a['served']}) | {p:.4f} | {als:.4f} | {bpr:.4f} | {s / max(als, bpr):.2f}× | {s / p:.2f}× |")
elif kind == "cold_encoders":
    mini, mp = a["hybrid"]["ndcg_at_10"], b["hybrid"]["ndcg_at_10"]
    print(f"| {day} | {cores} cores | {a['cold_items']} of 10000 | {a['hybrid']['users']} | {mini:.4f} | {mp:.4f} ({mp / max(mini, 1e-9):.2f}×) | {a['implicit_als']['ndcg_at_10']:.4f} / {b['implicit_als']['ndcg_at_10']:.4f} |")

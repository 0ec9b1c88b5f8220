"""Reference: the `implicit` package's ALS and BPR on a split written by `recalloc eval …
--export-split DIR` (train.tsv / test.tsv: user item ms, dense ids; shape.tsv: users items).
Every training pair counts once (value 1); users without training interactions get the most
popular items (as a hand-made pipeline around `implicit` would; `implicit` cannot rank for
them). Metrics at 10 as recalloc computes them (precision = hits / min(10, relevant)). Each
model's hyperparameters: the best NDCG@10 of a small grid on a validation split of the training
pairs (the last 20 % by time when there are times, else a random 20 %), then refitted on all of
the training pairs. Prints one JSON object: {"als": {...}, "bpr": {...}, "popularity": {...}}."""
import json, sys, time
import numpy as np, scipy.sparse as sp
from implicit.als import AlternatingLeastSquares
from implicit.bpr import BayesianPersonalizedRanking

d, threads = sys.argv[1], int(sys.argv[2])
users, items = map(int, open(f"{d}/shape.tsv").read().split())
def read(name):
    a = np.loadtxt(f"{d}/{name}", dtype=np.int64, ndmin=2)
    return a.reshape(-1, 3)
train, test = read("train.tsv"), read("test.tsv")

def matrix(pairs):
    m = sp.csr_matrix((np.ones(len(pairs), dtype=np.float32), (pairs[:, 0], pairs[:, 1])), shape=(users, items))
    m.data[:] = 1.0
    return m

def evaluate(recommend, train_pairs, test_pairs, k=10):
    seen = matrix(train_pairs)
    pop = np.asarray(seen.sum(axis=0)).ravel()
    popular = np.lexsort((np.arange(items), -pop))
    relevant = {}
    for u, i, _ in test_pairs:
        relevant.setdefault(int(u), set()).add(int(i))
    sums = np.zeros(3)
    for u, rel in relevant.items():
        row = set(seen.indices[seen.indptr[u]:seen.indptr[u + 1]])
        if row:
            rec = recommend(u, seen)
        else:
            rec = [int(i) for i in popular[: k + len(row)] if int(i) not in row][:k]
        hits = [r in rel for r in rec[:k]]
        dcg = sum(1 / np.log2(n + 2) for n, h in enumerate(hits) if h)
        idcg = sum(1 / np.log2(n + 2) for n in range(min(k, len(rel))))
        sums += [sum(hits) / min(k, len(rel)), sum(hits) / len(rel), dcg / idcg]
    n = max(len(relevant), 1)
    return {"precision": sums[0] / n, "recall": sums[1] / n, "ndcg": sums[2] / n, "users": len(relevant)}

def fitted(kind, params, pairs):
    m = (AlternatingLeastSquares if kind == "als" else BayesianPersonalizedRanking)(random_state=1, num_threads=threads, **params)
    t = time.perf_counter()
    m.fit(matrix(pairs), show_progress=False)
    return m, time.perf_counter() - t

def recommender(m):
    def rec(u, seen):
        ids, _ = m.recommend(u, seen[u], N=10, filter_already_liked_items=True)
        return [int(i) for i in ids]
    return rec

if train[:, 2].any():
    cut = np.sort(train[:, 2])[int(0.8 * (len(train) - 1))]
    inner, labels = train[train[:, 2] <= cut], train[train[:, 2] > cut]
else:
    mask = np.random.default_rng(11).random(len(train)) < 0.2
    inner, labels = train[~mask], train[mask]
grids = {
    "als": [dict(factors=f, regularization=r, alpha=a, iterations=15) for f in (32, 64, 128) for r in (0.01, 0.1) for a in (1.0, 5.0, 20.0)],
    "bpr": [dict(factors=f, learning_rate=lr, regularization=0.01, iterations=it) for f in (32, 64, 128) for lr in (0.01, 0.05) for it in (100, 300)],
}
out = {"popularity": evaluate(lambda u, s: [], train, test)}
# Popularity: users with history get the popular unseen items too.
seen_all = matrix(train)
pop = np.asarray(seen_all.sum(axis=0)).ravel(); popular = np.lexsort((np.arange(items), -pop))
def popular_rec(u, seen):
    row = set(seen.indices[seen.indptr[u]:seen.indptr[u + 1]])
    return [int(i) for i in popular[: 10 + len(row)] if int(i) not in row][:10]
out["popularity"] = evaluate(popular_rec, train, test)
for kind, grid in grids.items():
    best = None
    for params in grid:
        m, _ = fitted(kind, params, inner)
        v = evaluate(recommender(m), inner, labels)["ndcg"]
        if best is None or v > best[0]:
            best = (v, params)
    m, fit = fitted(kind, best[1], train)
    r = evaluate(recommender(m), train, test)
    r.update(params=best[1], validation_ndcg=best[0], fit_seconds=fit)
    out[kind] = r
print(json.dumps(out))

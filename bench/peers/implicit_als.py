"""Reference: the `implicit` package's ALS on MovieLens fold u1 (DIR), every rating an
interaction; 64 factors, regularization 0.05, 15 iterations, THREADS threads. Prints one JSON
object: ranking metrics at 10 (training items excluded) and fit seconds."""
import json, sys, time
import numpy as np, scipy.sparse as sp
from implicit.als import AlternatingLeastSquares
from implicit.evaluation import ranking_metrics_at_k

d, threads = sys.argv[1], int(sys.argv[2])
def load(p):
    a = np.loadtxt(p, dtype=np.int64)
    n_users, n_items = 944, 1683
    return sp.csr_matrix((np.ones(len(a), dtype=np.float32), (a[:, 0], a[:, 1])), shape=(n_users, n_items))
train, test = load(f"{d}/u1.base"), load(f"{d}/u1.test")
m = AlternatingLeastSquares(factors=64, iterations=15, regularization=0.05, random_state=1, num_threads=threads)
m.fit(train[:50], show_progress=False)  # warm-up (thread pools, first-call costs)
m = AlternatingLeastSquares(factors=64, iterations=15, regularization=0.05, random_state=1, num_threads=threads)
t = time.perf_counter()
m.fit(train, show_progress=False)
fit = time.perf_counter() - t
r = ranking_metrics_at_k(m, train, test, K=10, show_progress=False)
print(json.dumps({"precision": r["precision"], "ndcg": r["ndcg"], "map": r["map"], "fit_seconds": fit}))

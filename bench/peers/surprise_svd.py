"""Reference: Surprise SVD() with its defaults on MovieLens folds u1..u5 (DIR).
Prints one JSON object: mean RMSE, MAE and fit seconds per fold."""
import json, sys, time
from surprise import SVD, Dataset, Reader, accuracy
from surprise.model_selection import PredefinedKFold

d = sys.argv[1]
reader = Reader(line_format="user item rating timestamp", sep="\t", rating_scale=(1, 5))
rmse, mae, fit = [], [], []
for k in range(1, 6):
    data = Dataset.load_from_folds([(f"{d}/u{k}.base", f"{d}/u{k}.test")], reader)
    for train, test in PredefinedKFold().split(data):
        algo = SVD(random_state=k)
        t = time.perf_counter()
        algo.fit(train)
        fit.append(time.perf_counter() - t)
        pred = algo.test(test)
        rmse.append(accuracy.rmse(pred, verbose=False))
        mae.append(accuracy.mae(pred, verbose=False))
print(json.dumps({"rmse": sum(rmse) / 5, "mae": sum(mae) / 5, "fit_seconds_per_fold": sum(fit) / 5}))

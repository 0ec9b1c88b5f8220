//! Offline evaluations on folds of `user item value [timestamp]` files (MovieLens `uN.base` /
//! `uN.test`): explicit rating error over folds u1–u5, implicit ranking quality on one fold.

use crate::als::{self, AlsParams};
use crate::data::{Csr, DataError, IdMap, Triple, read_triples};
use crate::linalg::dot;
use crate::metrics::{RankingAccumulator, RankingMetrics, rmse_mae};
use crate::pipeline::{self, PipelineSettings};
use crate::sgd::{self, SgdParams};
use crate::topk::top_k;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::time::Instant;

#[derive(Debug, Clone, serde::Serialize)]
pub struct FoldResult {
    pub fold: String,
    pub rmse: f64,
    pub mae: f64,
    pub fit_seconds: f64,
    pub train: usize,
    pub test: usize,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ExplicitReport {
    pub model: &'static str,
    pub rmse: f64,
    pub mae: f64,
    pub fit_seconds_per_fold: f64,
    pub folds: Vec<FoldResult>,
    pub params: SgdParams,
}

/// Train and test triples of one fold, sharing id maps.
pub struct Fold {
    pub name: String,
    pub users: IdMap,
    pub items: IdMap,
    pub train: Vec<Triple>,
    pub test: Vec<Triple>,
}

/// Reads `DIR/NAME.base` and `DIR/NAME.test`.
pub fn read_fold(dir: &Path, name: &str) -> Result<Fold, DataError> {
    let (mut users, mut items) = (IdMap::default(), IdMap::default());
    let train = read_triples(&dir.join(format!("{name}.base")), &mut users, &mut items)?;
    let (n_users, n_items) = (users.len(), items.len());
    let test = read_triples(&dir.join(format!("{name}.test")), &mut users, &mut items)?;
    // Ids first seen in the test file have no parameters; keep them distinguishable.
    let _ = (n_users, n_items);
    Ok(Fold {
        name: name.to_owned(),
        users,
        items,
        train,
        test,
    })
}

/// The folds `u1`…`u5` that exist in `dir` (at least one is required).
pub fn fold_names(dir: &Path) -> Result<Vec<String>, DataError> {
    let names: Vec<String> = (1..=5)
        .map(|k| format!("u{k}"))
        .filter(|n| {
            dir.join(format!("{n}.base")).is_file() && dir.join(format!("{n}.test")).is_file()
        })
        .collect();
    if names.is_empty() {
        return Err(DataError::Read {
            path: dir.join("u1.base").display().to_string(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no folds u1..u5 (.base and .test) in this directory",
            ),
        });
    }
    Ok(names)
}

/// Explicit MF over every fold: RMSE and MAE on the test file, fit time.
pub fn explicit(dir: &Path, p: &SgdParams) -> Result<ExplicitReport, DataError> {
    let mut folds = Vec::new();
    for name in fold_names(dir)? {
        let f = read_fold(dir, &name)?;
        let (n_users, n_items) = (
            f.train
                .iter()
                .map(|t| t.user)
                .max()
                .map_or(0, |m| m as usize + 1),
            f.train
                .iter()
                .map(|t| t.item)
                .max()
                .map_or(0, |m| m as usize + 1),
        );
        let t0 = Instant::now();
        let m = sgd::fit(&f.train, n_users, n_items, p);
        let fit_seconds = t0.elapsed().as_secs_f64();
        let (rmse, mae) = rmse_mae(f.test.iter().map(|t| {
            (
                m.predict(Some(t.user as usize), Some(t.item as usize)),
                t.value,
            )
        }));
        folds.push(FoldResult {
            fold: name,
            rmse,
            mae,
            fit_seconds,
            train: f.train.len(),
            test: f.test.len(),
        });
    }
    let n = folds.len() as f64;
    Ok(ExplicitReport {
        model: "biased MF (SGD)",
        rmse: folds.iter().map(|f| f.rmse).sum::<f64>() / n,
        mae: folds.iter().map(|f| f.mae).sum::<f64>() / n,
        fit_seconds_per_fold: folds.iter().map(|f| f.fit_seconds).sum::<f64>() / n,
        folds,
        params: *p,
    })
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ImplicitReport {
    pub model: &'static str,
    pub fold: String,
    pub k: usize,
    pub precision: f64,
    pub recall: f64,
    pub ndcg: f64,
    pub map: f64,
    pub users: usize,
    pub fit_seconds: f64,
    pub params: AlsParams,
}

/// Implicit ALS on one fold, every training rating an interaction of strength 1: ranking
/// metrics at `k` on the test file with training items excluded.
pub fn implicit(
    dir: &Path,
    fold: &str,
    p: &AlsParams,
    k: usize,
) -> Result<ImplicitReport, DataError> {
    let f = read_fold(dir, fold)?;
    let train: Vec<Triple> = f
        .train
        .iter()
        .map(|t| Triple { value: 1.0, ..*t })
        .collect();
    let n_users = f.users.len();
    let n_items = f.items.len();
    let by_user = Csr::build(&train, n_users, false);
    let by_item = Csr::build(&train, n_items, true);
    let t0 = Instant::now();
    let m = als::fit(&by_user, &by_item, p);
    let fit_seconds = t0.elapsed().as_secs_f64();
    let metrics = rank_test(
        &f.test,
        &by_user,
        |u, scores| {
            let x = m.user_vector(u);
            for (i, s) in scores.iter_mut().enumerate() {
                *s = dot(x, m.item_vector(i));
            }
        },
        n_items,
        k,
    );
    Ok(ImplicitReport {
        model: "implicit ALS (conjugate gradient)",
        fold: fold.to_owned(),
        k,
        precision: metrics.precision,
        recall: metrics.recall,
        ndcg: metrics.ndcg,
        map: metrics.map,
        users: metrics.users,
        fit_seconds,
        params: *p,
    })
}

/// Ranking metrics of a scorer: for each test user, scores of every item, training items
/// excluded, top `k` against the user's test items.
pub fn rank_test(
    test: &[Triple],
    train_by_user: &Csr,
    score: impl Fn(usize, &mut [f32]),
    n_items: usize,
    k: usize,
) -> RankingMetrics {
    let mut relevant: HashMap<u32, HashSet<u32>> = HashMap::new();
    for t in test {
        relevant.entry(t.user).or_default().insert(t.item);
    }
    let mut users: Vec<u32> = relevant.keys().copied().collect();
    users.sort_unstable();
    let mut acc = RankingAccumulator::new(k);
    let mut scores = vec![0f32; n_items];
    for u in users {
        // Users only in the test file are scored too (rows beyond the matrix are empty).
        score(u as usize, &mut scores);
        let seen: HashSet<u32> = train_by_user.row(u as usize).0.iter().copied().collect();
        let rec: Vec<u32> = top_k(&scores, k, |i| !seen.contains(&i))
            .iter()
            .map(|s| s.index)
            .collect();
        acc.add(&rec, &relevant[&u]);
    }
    acc.finish()
}

/// How to hold out test interactions from one file.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub enum Split {
    /// A seeded random `fraction` of the interactions.
    Random { fraction: f64, seed: u64 },
    /// The newest `fraction` of the interactions (one global time cut-off).
    Time { fraction: f64 },
}

/// Splits triples into (train, test).
pub fn split(triples: &[Triple], how: Split) -> Result<(Vec<Triple>, Vec<Triple>), String> {
    match how {
        Split::Random { fraction, seed } => {
            use rand::{Rng, SeedableRng};
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let (mut train, mut test) = (Vec::new(), Vec::new());
            for t in triples {
                if rng.random::<f64>() < fraction {
                    test.push(*t);
                } else {
                    train.push(*t);
                }
            }
            Ok((train, test))
        }
        Split::Time { fraction } => {
            if triples.iter().all(|t| t.ts == 0) {
                return Err("a time split needs timestamps, and this data has none".into());
            }
            let mut ts: Vec<i64> = triples.iter().map(|t| t.ts).collect();
            ts.sort_unstable();
            let cut = ts[((1.0 - fraction) * (ts.len() - 1) as f64) as usize];
            Ok(triples.iter().partition(|t| t.ts <= cut))
        }
    }
}

/// Every model of [`models_split`] on one split: ranking metrics at `k` per model.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModelsReport {
    pub split: Split,
    pub train: usize,
    pub test: usize,
    pub k: usize,
    /// `popularity`, `trending` (with times), `item_knn`, `als` and `served` (what Recommend
    /// answers: the pipeline's choice).
    pub models: BTreeMap<String, RankingMetrics>,
    /// What training chose to serve and its validation figures.
    pub served: String,
    pub validation: BTreeMap<String, f64>,
    pub fit_seconds: f64,
    pub als_params: AlsParams,
}

/// Ranking metrics of per-user recommendation lists (best first, training items excluded).
pub fn rank_lists(
    test: &[Triple],
    recommend: impl Fn(u32) -> Vec<u32> + Sync,
    k: usize,
) -> RankingMetrics {
    let mut relevant: BTreeMap<u32, HashSet<u32>> = BTreeMap::new();
    for t in test {
        relevant.entry(t.user).or_default().insert(t.item);
    }
    let users: Vec<(&u32, &HashSet<u32>)> = relevant.iter().collect();
    let lists: Vec<Vec<u32>> = {
        use rayon::prelude::*;
        users.par_iter().map(|(u, _)| recommend(**u)).collect()
    };
    let mut acc = RankingAccumulator::new(k);
    for ((_, rel), rec) in users.iter().zip(&lists) {
        acc.add(rec, rel);
    }
    acc.finish()
}

/// The whole pipeline (as the rank service trains and serves it), plain ALS, item-item
/// neighbours, trending and popularity on one split. `ts` in ms (0 = unknown).
pub fn models_split(
    triples: &[Triple],
    n_users: usize,
    n_items: usize,
    how: Split,
    p: &AlsParams,
    s: &PipelineSettings,
    k: usize,
) -> Result<ModelsReport, String> {
    let (train, test) = split(triples, how)?;
    let train: Vec<Triple> = train
        .into_iter()
        .map(|t| Triple { value: 1.0, ..t })
        .collect();
    let by_user = Csr::build(&train, n_users, false);
    let hist = pipeline::Histories::build(&train, n_users);
    let t0 = Instant::now();
    let trained = pipeline::train(&train, n_users, n_items, p, (&[], 0), &[], s);
    let fit_seconds = t0.elapsed().as_secs_f64();
    let sig = &trained.pipeline.signals;
    let m = &trained.model;
    let unseen = |u: u32| {
        let seen = by_user.row(u as usize).0;
        move |i: u32| seen.binary_search(&i).is_err()
    };
    let ranked = |order: &[u32], u: u32| -> Vec<u32> {
        let keep = unseen(u);
        order.iter().copied().filter(|&i| keep(i)).take(k).collect()
    };
    let cat = pipeline::Catalogue {
        factors: m.factors,
        item_factors: &m.item_factors,
        text_dim: 0,
        item_text: &[],
        tags: &[],
    };
    let mut models = BTreeMap::new();
    models.insert(
        "popularity".to_owned(),
        rank_lists(&test, |u| ranked(&sig.popular_order, u), k),
    );
    if sig.timed {
        models.insert(
            "trending".to_owned(),
            rank_lists(&test, |u| ranked(&sig.trending_order, u), k),
        );
    }
    // As the rank service does: a user without training interactions gets popular items.
    models.insert(
        "als".to_owned(),
        rank_lists(
            &test,
            |u| {
                let seen = by_user.row(u as usize).0;
                if seen.is_empty() {
                    return ranked(&sig.popular_order, u);
                }
                pipeline::cf_top(m, u as usize, k, seen)
                    .iter()
                    .map(|x| x.index)
                    .collect()
            },
            k,
        ),
    );
    models.insert(
        "item_knn".to_owned(),
        rank_lists(
            &test,
            |u| {
                let seen = by_user.row(u as usize).0;
                let mut near: HashMap<u32, f32> = HashMap::new();
                for &h in seen {
                    let (js, vs) = sig.neighbours.row(h as usize);
                    for (&j, &v) in js.iter().zip(vs) {
                        *near.entry(j).or_insert(0.0) += v;
                    }
                }
                let mut top = crate::topk::TopK::new(k);
                for (&j, &v) in &near {
                    top.offer(j, v, unseen(u));
                }
                let mut out: Vec<u32> = top.into_sorted().iter().map(|x| x.index).collect();
                for i in ranked(&sig.popular_order, u) {
                    if !out.contains(&i) {
                        out.push(i);
                    }
                }
                out.truncate(k);
                out
            },
            k,
        ),
    );
    models.insert(
        "served".to_owned(),
        rank_lists(
            &test,
            |u| pipeline::recommend_for(&trained, &by_user, &hist, &cat, u, k),
            k,
        ),
    );
    Ok(ModelsReport {
        split: how,
        train: train.len(),
        test: test.len(),
        k,
        models,
        served: trained.pipeline.choice.name().to_owned(),
        validation: trained.pipeline.validation.clone(),
        fit_seconds,
        als_params: *p,
    })
}

/// goodbooks-10k interactions: `ratings.csv` (or `ratings_sample_100k.csv`: user_id,book_id,
/// rating) and/or `to_read.csv` (or `to_read_head101k.csv`: user_id,book_id; optional when
/// ratings are read too), each pair once.
pub fn read_goodbooks(
    dir: &Path,
    ratings: bool,
    to_read: bool,
) -> Result<(Vec<Triple>, usize, usize), DataError> {
    let find = |names: &[&str]| {
        names
            .iter()
            .map(|f| dir.join(f))
            .find(|p| p.is_file())
            .unwrap_or_else(|| dir.join(names[0]))
    };
    let (mut users, mut items) = (IdMap::default(), IdMap::default());
    let mut triples = Vec::new();
    if ratings {
        triples = read_triples(
            &find(&["ratings.csv", "ratings_sample_100k.csv"]),
            &mut users,
            &mut items,
        )?;
    }
    let to_read_path = find(&["to_read.csv", "to_read_head101k.csv"]);
    // With ratings too, the to-read marks are optional.
    if to_read && (to_read_path.is_file() || !ratings) {
        let path = to_read_path;
        let before = triples.len();
        triples.extend(crate::data::read_pairs(&path, &mut users, &mut items)?);
        // A book both rated and marked to read is one interaction.
        let mut pairs: HashSet<(u32, u32)> =
            triples[..before].iter().map(|t| (t.user, t.item)).collect();
        let mut keep = vec![true; triples.len()];
        for (n, t) in triples.iter().enumerate().skip(before) {
            keep[n] = pairs.insert((t.user, t.item));
        }
        let mut n = 0;
        triples.retain(|_| {
            n += 1;
            keep[n - 1]
        });
    }
    Ok((triples, users.len(), items.len()))
}

#[cfg(test)]
mod split_tests {
    use super::*;

    fn t(ts: i64) -> Triple {
        Triple {
            user: 0,
            item: 0,
            value: 1.0,
            ts,
        }
    }

    #[test]
    fn splits_by_time_and_at_random() {
        let all: Vec<Triple> = (1..=10).map(t).collect();
        let (train, test) = split(&all, Split::Time { fraction: 0.2 }).unwrap();
        assert!(train.iter().all(|x| x.ts <= 8) && test.iter().all(|x| x.ts > 8));
        assert_eq!(test.len(), 2);
        let (a, b) = split(
            &all,
            Split::Random {
                fraction: 0.5,
                seed: 3,
            },
        )
        .unwrap();
        assert_eq!(a.len() + b.len(), 10);
        assert_eq!(
            split(
                &all,
                Split::Random {
                    fraction: 0.5,
                    seed: 3
                }
            )
            .unwrap()
            .0,
            a
        );
        assert!(split(&[t(0)], Split::Time { fraction: 0.2 }).is_err());
    }
}

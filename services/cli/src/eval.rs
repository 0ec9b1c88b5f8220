//! `recalloc eval`: offline evaluation of the ranking models on files, no cluster needed.

use anyhow::Result;
use recalloc_factor::als::AlsParams;
use recalloc_factor::eval::{self, Split};
use recalloc_factor::sgd::SgdParams;
use std::path::Path;

/// Command-line overrides of the models' defaults.
pub struct Overrides {
    pub threads: usize,
    pub factors: Option<usize>,
    pub regularization: Option<f32>,
    pub alpha: Option<f32>,
    pub iterations: Option<usize>,
}

impl Overrides {
    fn als(&self) -> AlsParams {
        let d = AlsParams::default();
        AlsParams {
            threads: self.threads,
            factors: self.factors.unwrap_or(d.factors),
            regularization: self.regularization.unwrap_or(d.regularization),
            alpha: self.alpha.unwrap_or(d.alpha),
            iterations: self.iterations.unwrap_or(d.iterations),
            ..d
        }
    }
    fn sgd(&self) -> SgdParams {
        let d = SgdParams::default();
        SgdParams {
            threads: self.threads,
            factors: self.factors.unwrap_or(d.factors),
            regularization: self.regularization.unwrap_or(d.regularization),
            epochs: self.iterations.unwrap_or(d.epochs),
            ..d
        }
    }
}

pub fn movielens(dir: &Path, implicit: bool, json: bool, o: &Overrides) -> Result<()> {
    if implicit {
        let p = o.als();
        let r = eval::implicit(dir, "u1", &p, 10)?;
        if json {
            println!("{}", serde_json::to_string(&r)?);
        } else {
            println!(
                "{} on {} ({} test users), at {}: precision {:.4}  recall {:.4}  ndcg {:.4}  map {:.4}  fit {:.3} s\n  factors {} iterations {} regularization {} alpha {} cg_steps {} threads {}",
                r.model,
                r.fold,
                r.users,
                r.k,
                r.precision,
                r.recall,
                r.ndcg,
                r.map,
                r.fit_seconds,
                p.factors,
                p.iterations,
                p.regularization,
                p.alpha,
                p.cg_steps,
                p.threads
            );
        }
        return Ok(());
    }
    let p = o.sgd();
    let r = eval::explicit(dir, &p)?;
    if json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "{} — factors {} epochs {} lr {} reg {} threads {}",
            r.model, p.factors, p.epochs, p.learning_rate, p.regularization, p.threads
        );
        println!("{:<5} {:>8} {:>8} {:>9}", "fold", "rmse", "mae", "fit (s)");
        for f in &r.folds {
            println!(
                "{:<5} {:>8.4} {:>8.4} {:>9.3}",
                f.fold, f.rmse, f.mae, f.fit_seconds
            );
        }
        println!(
            "{:<5} {:>8.4} {:>8.4} {:>9.3}",
            "mean", r.rmse, r.mae, r.fit_seconds_per_fold
        );
    }
    Ok(())
}

/// Parses `--split`: `random` or `time`, holding out `fraction`.
pub fn parse_split(s: &str, fraction: f64) -> Result<Split> {
    anyhow::ensure!(
        fraction > 0.0 && fraction < 1.0,
        "--test-fraction must be between 0 and 1"
    );
    match s {
        "random" => Ok(Split::Random { fraction, seed: 1 }),
        "time" => Ok(Split::Time { fraction }),
        other => anyhow::bail!("--split {other:?}: use random or time"),
    }
}

/// Implicit ALS and the popularity baseline on one split of a ratings file.
pub fn split_report(
    triples: &[recalloc_factor::data::Triple],
    users: usize,
    items: usize,
    how: Split,
    json: bool,
    o: &Overrides,
) -> Result<()> {
    let p = o.als();
    let r = eval::implicit_split(triples, users, items, how, &p, 10).map_err(anyhow::Error::msg)?;
    if json {
        println!("{}", serde_json::to_string(&r)?);
        return Ok(());
    }
    println!(
        "{:?}: {} train / {} test interactions, {} test users, at 10",
        r.split, r.train, r.test, r.als.users
    );
    println!(
        "{:<12} {:>9} {:>9} {:>9} {:>9}",
        "model", "precision", "recall", "ndcg", "map"
    );
    let a = &r.als;
    println!(
        "{:<12} {:>9.4} {:>9.4} {:>9.4} {:>9.4}   fit {:.2} s",
        "ALS", a.precision, a.recall, a.ndcg, a.map, a.fit_seconds
    );
    let b = &r.popularity;
    println!(
        "{:<12} {:>9.4} {:>9.4} {:>9.4} {:>9.4}",
        "popularity", b.precision, b.recall, b.ndcg, b.map
    );
    Ok(())
}

pub fn goodbooks(dir: &Path, split: &str, fraction: f64, json: bool, o: &Overrides) -> Result<()> {
    let how = parse_split(split, fraction)?;
    let (triples, users, items) = eval::read_goodbooks(dir)?;
    split_report(&triples, users, items, how, json, o)
}

pub fn movielens_split(
    dir: &Path,
    split: &str,
    fraction: f64,
    json: bool,
    o: &Overrides,
) -> Result<()> {
    let how = parse_split(split, fraction)?;
    let (mut users, mut items) = Default::default();
    let triples = recalloc_factor::data::read_triples(&dir.join("u.data"), &mut users, &mut items)?;
    split_report(&triples, users.len(), items.len(), how, json, o)
}

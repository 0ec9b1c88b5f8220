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
    /// Where to write the split evaluated (`--export-split`).
    pub export_split: Option<std::path::PathBuf>,
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

/// The served pipeline, plain ALS, item-item neighbours, trending and popularity on one split
/// of a file's interactions (`ts` in ms, 0 when unknown).
pub fn split_report(
    triples: &[recalloc_factor::data::Triple],
    users: usize,
    items: usize,
    how: Split,
    json: bool,
    o: &Overrides,
) -> Result<()> {
    let p = o.als();
    if let Some(dir) = &o.export_split {
        export_split(dir, triples, users, items, how)?;
    }
    let settings = recalloc_factor::pipeline::PipelineSettings::default();
    let r = eval::models_split(triples, users, items, how, &p, &settings, 10)
        .map_err(anyhow::Error::msg)?;
    if json {
        println!("{}", serde_json::to_string(&r)?);
        return Ok(());
    }
    println!(
        "{:?}: {} train / {} test interactions, {} test users, at {}",
        r.split, r.train, r.test, r.models["popularity"].users, r.k
    );
    println!(
        "{:<12} {:>9} {:>9} {:>9} {:>9}",
        "model", "precision", "recall", "ndcg", "map"
    );
    for (name, m) in &r.models {
        println!(
            "{:<12} {:>9.4} {:>9.4} {:>9.4} {:>9.4}",
            name, m.precision, m.recall, m.ndcg, m.map
        );
    }
    let pop = r.models["popularity"].ndcg;
    println!(
        "served = {} (chosen on validation: {}); NDCG@10 {:.2}x popularity; training {:.2} s",
        r.served,
        r.validation
            .iter()
            .filter(|(k, _)| k.starts_with("validation_ndcg_"))
            .map(|(k, v)| format!("{} {v:.4}", &k["validation_ndcg_".len()..]))
            .collect::<Vec<_>>()
            .join(", "),
        r.models["served"].ndcg / pop.max(1e-12),
        r.fit_seconds
    );
    Ok(())
}

/// Writes `train.tsv` and `test.tsv` (`user item ms`, dense ids, no header) and `shape.tsv`
/// (`users items`) of the split to `dir`.
fn export_split(
    dir: &Path,
    triples: &[recalloc_factor::data::Triple],
    users: usize,
    items: usize,
    how: Split,
) -> Result<()> {
    use std::io::Write;
    let (train, test) = eval::split(triples, how).map_err(anyhow::Error::msg)?;
    std::fs::create_dir_all(dir)?;
    for (name, part) in [("train.tsv", &train), ("test.tsv", &test)] {
        let mut w = std::io::BufWriter::new(std::fs::File::create(dir.join(name))?);
        for t in part {
            writeln!(w, "{}\t{}\t{}", t.user, t.item, t.ts)?;
        }
        w.flush()?;
    }
    std::fs::write(dir.join("shape.tsv"), format!("{users}\t{items}\n"))?;
    Ok(())
}

/// Which goodbooks interactions `recalloc eval goodbooks` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GoodbooksInteractions {
    /// ratings.csv (or ratings_sample_100k.csv), every rating an interaction.
    Ratings,
    /// to_read.csv (or to_read_head101k.csv): books marked to read.
    ToRead,
    /// Both (a user's rating and to-read mark of one book count once).
    All,
}

pub fn goodbooks(
    dir: &Path,
    interactions: GoodbooksInteractions,
    split: &str,
    fraction: f64,
    json: bool,
    o: &Overrides,
) -> Result<()> {
    let how = parse_split(split, fraction)?;
    let (ratings, to_read) = match interactions {
        GoodbooksInteractions::Ratings => (true, false),
        GoodbooksInteractions::ToRead => (false, true),
        GoodbooksInteractions::All => (true, true),
    };
    let (triples, users, items) = eval::read_goodbooks(dir, ratings, to_read)?;
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
    let mut triples =
        recalloc_factor::data::read_triples(&dir.join("u.data"), &mut users, &mut items)?;
    // u.data times are Unix seconds; the pipeline's trending half-lives are in ms.
    for t in triples.iter_mut() {
        t.ts *= 1000;
    }
    split_report(&triples, users.len(), items.len(), how, json, o)
}

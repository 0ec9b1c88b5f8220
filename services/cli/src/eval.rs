//! `recalloc eval`: offline evaluation of the ranking models on files, no cluster needed.

use anyhow::Result;
use recalloc_factor::als::AlsParams;
use recalloc_factor::eval;
use recalloc_factor::sgd::SgdParams;
use std::path::Path;

pub fn movielens(dir: &Path, implicit: bool, json: bool, threads: usize) -> Result<()> {
    if implicit {
        let p = AlsParams {
            threads,
            ..AlsParams::default()
        };
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
    let p = SgdParams {
        threads,
        ..SgdParams::default()
    };
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

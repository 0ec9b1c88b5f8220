//! Times the fits on one MovieLens fold with parameter overrides from the command line:
//! `fit_probe DIR [sgd|als] key=value…` (used to tune the defaults).
use recalloc_factor::{als, data, eval, sgd};
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = std::path::Path::new(&args[1]);
    let f = eval::read_fold(dir, "u1").unwrap();
    let kv: Vec<(String, f64)> = args[3..]
        .iter()
        .map(|a| {
            let (k, v) = a.split_once('=').unwrap();
            (k.to_owned(), v.parse().unwrap())
        })
        .collect();
    let get = |k: &str, d: f64| kv.iter().find(|(n, _)| n == k).map_or(d, |x| x.1);
    if args[2] == "sgd" {
        let d = sgd::SgdParams::default();
        let p = sgd::SgdParams {
            factors: get("factors", d.factors as f64) as usize,
            epochs: get("epochs", d.epochs as f64) as usize,
            learning_rate: get("lr", d.learning_rate as f64) as f32,
            regularization: get("reg", d.regularization as f64) as f32,
            bias_regularization: get("breg", d.bias_regularization as f64) as f32,
            init_std: get("std", d.init_std as f64) as f32,
            threads: get("threads", 2.0) as usize,
            ..d
        };
        let r = eval::explicit(dir, &p).unwrap();
        println!(
            "{:?}\nrmse {:.4} mae {:.4} fit {:.3}",
            p, r.rmse, r.mae, r.fit_seconds_per_fold
        );
        let _ = f;
    } else {
        let d = als::AlsParams::default();
        let p = als::AlsParams {
            factors: get("factors", d.factors as f64) as usize,
            iterations: get("iterations", d.iterations as f64) as usize,
            regularization: get("reg", d.regularization as f64) as f32,
            alpha: get("alpha", d.alpha as f64) as f32,
            cg_steps: get("cg", d.cg_steps as f64) as usize,
            threads: get("threads", 2.0) as usize,
            ..d
        };
        let t = Instant::now();
        let r = eval::implicit(dir, "u1", &p, 10).unwrap();
        println!(
            "{:?}\nndcg {:.4} p {:.4} map {:.4} fit {:.3} total {:.3}",
            p,
            r.ndcg,
            r.precision,
            r.map,
            r.fit_seconds,
            t.elapsed().as_secs_f64()
        );
    }
    let _ = data::IdMap::default();
}

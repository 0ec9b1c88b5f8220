//! A synthetic catalogue for serving benchmarks at sizes no bundled data set reaches:
//! `synthetic_model REDIS_URL ITEMS USERS [FACTORS]` stores an implicit-ALS model of ITEMS items
//! (low-rank tastes, Zipf popularity: `recalloc_factor::synthetic`) and USERS users (`u0`, …,
//! 20 seen items each) as the current model, where the rank service's poller loads it (and,
//! above `rank.ann_min_items`, builds its index). Prints the version.

use recalloc_factor::synthetic::TasteModel;

#[tokio::main]
async fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 4 {
        eprintln!("usage: synthetic_model REDIS_URL ITEMS USERS [FACTORS]");
        std::process::exit(2);
    }
    let parse = |s: &str, what: &str| -> usize {
        s.parse().unwrap_or_else(|_| {
            eprintln!("synthetic_model: {what} must be a whole number, not {s:?}");
            std::process::exit(2)
        })
    };
    let (items, users) = (parse(&a[2], "ITEMS"), parse(&a[3], "USERS"));
    let factors = a.get(4).map_or(64, |f| parse(f, "FACTORS"));
    let redis = recalloc_common::config::RedisConfig {
        url: a[1].clone(),
        ..Default::default()
    };
    let mut con = recalloc_common::redis_conn::connect(&redis)
        .await
        .unwrap_or_else(|e| {
            eprintln!("synthetic_model: cannot reach Redis at {}: {e}", a[1]);
            std::process::exit(1)
        });
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let version = format!("{now}-synthetic-{items}");
    let model = tokio::task::spawn_blocking(move || {
        TasteModel::new(items, factors, 42).model(users, 20, &version)
    })
    .await
    .expect("model generation");
    let meta = recalloc_rank::store::save_model(&mut con, &model, 1 << 20, 2)
        .await
        .unwrap_or_else(|e| {
            eprintln!("synthetic_model: cannot store the model: {e}");
            std::process::exit(1)
        });
    println!("{}", meta.version);
}

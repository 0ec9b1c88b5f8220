//! Cold-start items: `cold_start REDIS_URL` reads the running cluster's state (goodbooks loaded
//! and embedded), holds out 10% of the items that have a text vector — every interaction with
//! them is removed from training — trains implicit ALS and hybrid on the rest, and ranks the
//! held-out items for each user who had interacted with them: NDCG@10 (and precision@10)
//! against those interactions. Pure ALS has no factors for unseen items; hybrid maps them from
//! their MiniLM vectors. Ties (all of pure ALS's cold scores) are broken at random. Prints one
//! JSON object.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use recalloc_factor::metrics::RankingAccumulator;
use recalloc_factor::model::{Algorithm, Query, Served};
use recalloc_factor::topk::top_k;
use recalloc_rank::trainer::{TrainParams, train};
use std::collections::{HashMap, HashSet};

#[tokio::main]
async fn main() {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "redis://127.0.0.1:6379".into());
    let redis = recalloc_common::config::RedisConfig {
        url,
        ..Default::default()
    };
    let mut con = recalloc_common::redis_conn::connect(&redis)
        .await
        .expect("redis");
    let mut data = recalloc_store::training::training_data(&mut con)
        .await
        .expect("training data");
    let mut with_text: Vec<String> = data
        .items
        .iter()
        .filter(|c| c.vector.is_some())
        .map(|c| c.id.clone())
        .collect();
    assert!(
        !with_text.is_empty(),
        "no item vectors: load goodbooks and let embed finish"
    );
    with_text.sort();
    with_text.shuffle(&mut rand::rngs::StdRng::seed_from_u64(7));
    let cold: HashSet<String> = with_text[..with_text.len() / 10].iter().cloned().collect();
    let mut held: HashMap<String, HashSet<String>> = HashMap::new();
    for (user, h) in &mut data.histories {
        h.retain(|e| {
            let keep = !cold.contains(&e.item);
            if !keep && e.kind != "view" {
                held.entry(user.clone()).or_default().insert(e.item.clone());
            }
            keep
        });
    }
    data.histories.retain(|(_, h)| !h.is_empty());
    let mut out = serde_json::Map::new();
    for algorithm in [Algorithm::ImplicitAls, Algorithm::Hybrid] {
        let p = TrainParams {
            factors: 64,
            iterations: 15,
            threads: 2,
            ..TrainParams::from_config(&Default::default(), algorithm)
        };
        let (model, _) = train(&data, &p, "cold".into(), 0).expect("train");
        let s = Served::new(model);
        let cold_idx: HashSet<u32> = cold.iter().filter_map(|i| s.item(i)).collect();
        let mut acc = RankingAccumulator::new(10);
        let mut scores = Vec::new();
        for (user, items) in &held {
            let Some(u) = s.user(user) else { continue };
            let relevant: HashSet<u32> = items.iter().filter_map(|i| s.item(i)).collect();
            scores.clear();
            // Pure ALS scores every unseen item 0; ties are broken at random (goodbooks ids
            // follow popularity, so breaking them by id would leak information a new item
            // does not have).
            scores.extend(
                (0..s.model.items() as u32)
                    .map(|i| s.predict(&Query::Known(u), i) + 1e-6 * rand::random::<f32>()),
            );
            let rec: Vec<u32> = top_k(&scores, 10, |i| cold_idx.contains(&i))
                .iter()
                .map(|x| x.index)
                .collect();
            acc.add(&rec, &relevant);
        }
        let m = acc.finish();
        out.insert(
            algorithm.name().into(),
            serde_json::json!({"ndcg_at_10": m.ndcg, "precision_at_10": m.precision, "users": m.users}),
        );
    }
    out.insert("cold_items".into(), cold.len().into());
    println!("{}", serde_json::Value::Object(out));
}

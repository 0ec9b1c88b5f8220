//! How training and serving costs grow with the data: `cost_curve REDIS_URL|- SIZE…` generates,
//! for each SIZE (interactions, ascending), a synthetic data set (`recalloc_factor::synthetic`:
//! 100,000 items around taste directions with 384-d text vectors, SIZE / 50 users with 50
//! interactions each drawn by a Zipf law within their two tastes) and measures:
//! - Redis (sizes up to `COST_CURVE_REDIS_MAX`, default 10,000,000; skipped with `-`): every
//!   event written through the featurizer's own apply script (`derived::Scripts`), Redis memory
//!   per event, and the training read (`training_data`) time;
//! - training as the rank service does it (`trainer::train`): ALS and hybrid fit seconds, 64
//!   factors, 15 iterations, 2 threads;
//! - the model's size as stored (postcard bytes) and a serving replica's memory for it (RSS
//!   before and after building `Served`, index included);
//! - the process's peak memory so far (VmHWM; sizes ascend, so it is this size's peak).
//!
//! The Redis at REDIS_URL is flushed first: give it one of its own. Prints one JSON object per
//! size.

use recalloc_factor::ann::AnnSettings;
use recalloc_factor::model::{Algorithm, Served};
use recalloc_factor::synthetic::TasteModel;
use recalloc_proto::Record;
use recalloc_proto::v1::{EventKind, EventRecord};
use recalloc_rank::trainer::{TrainParams, train};
use recalloc_store::derived::Scripts;
use recalloc_store::derived::ToApply;
use recalloc_store::history::HistoryEntry;
use recalloc_store::training::{CatalogueItem, TrainingData};
use std::time::Instant;

const ITEMS: usize = 100_000;
const PER_USER: usize = 50;
const TEXT_DIM: usize = 384;

/// A line of /proc/self/status in bytes (`VmRSS`, `VmHWM`).
fn status_bytes(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Resident bytes once the allocator has handed freed pages back, so that a delta measures
/// what is held rather than what was freed and kept.
fn resident_after_trim() -> u64 {
    // SAFETY: malloc_trim only releases free memory of glibc's allocator.
    unsafe { libc::malloc_trim(0) };
    status_bytes("VmRSS:")
}

fn fail(msg: String) -> ! {
    eprintln!("cost_curve: {msg}");
    std::process::exit(1)
}

#[tokio::main]
async fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 3 {
        eprintln!("usage: cost_curve REDIS_URL|- SIZE…");
        std::process::exit(2);
    }
    let mut sizes: Vec<usize> = a[2..]
        .iter()
        .map(|s| {
            s.replace('_', "")
                .parse()
                .unwrap_or_else(|_| fail(format!("SIZE must be a whole number, not {s:?}")))
        })
        .collect();
    sizes.sort_unstable();
    let redis_max: usize = std::env::var("COST_CURVE_REDIS_MAX")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    let mut con = if a[1] == "-" {
        None
    } else {
        let cfg = recalloc_common::config::RedisConfig {
            url: a[1].clone(),
            ..Default::default()
        };
        Some(
            recalloc_common::redis_conn::connect(&cfg)
                .await
                .unwrap_or_else(|e| fail(format!("cannot reach Redis at {}: {e}", a[1]))),
        )
    };
    let taste = TasteModel::new(ITEMS, 64, 42);
    let text = taste.text_vectors(TEXT_DIM);
    let items: Vec<CatalogueItem> = (0..ITEMS)
        .map(|i| CatalogueItem {
            id: format!("i{i}"),
            title: format!("synthetic item {i}"),
            tags: Vec::new(),
            vector: Some(text[i * TEXT_DIM..(i + 1) * TEXT_DIM].to_vec()),
        })
        .collect();
    let params = |algorithm| TrainParams {
        factors: 64,
        iterations: 15,
        threads: 2,
        ..TrainParams::from_config(&Default::default(), algorithm)
    };
    for size in sizes {
        let users = (size / PER_USER).max(1);
        eprintln!("cost_curve: {size} interactions, {users} users: generating");
        let mut histories: Vec<(String, Vec<HistoryEntry>)> = Vec::with_capacity(users);
        taste.interactions(users, PER_USER, |u, i| {
            if histories.len() <= u as usize {
                histories.push((format!("u{u}"), Vec::with_capacity(PER_USER)));
            }
            histories[u as usize].1.push(HistoryEntry {
                item: format!("i{i}"),
                kind: "view".into(),
                value: 1.0,
                ts: 0,
            });
        });
        let mut row = serde_json::json!({
            "interactions": size, "users": users, "items": ITEMS, "factors": 64,
        });
        if let Some(con) = con.as_mut().filter(|_| size <= redis_max) {
            eprintln!("cost_curve: writing {size} events through the apply script");
            let (write_s, bytes, read_s) = redis_round_trip(con, &histories).await;
            row["redis_write_s"] = write_s.into();
            row["redis_bytes_per_event"] = (bytes as f64 / size as f64).into();
            row["training_read_s"] = read_s.into();
        }
        let data = TrainingData {
            histories,
            items: items.clone(),
            popular: Vec::new(),
            events: size as u64,
        };
        for (name, algorithm) in [
            ("als", Algorithm::ImplicitAls),
            ("hybrid", Algorithm::Hybrid),
        ] {
            eprintln!("cost_curve: training {name}");
            let t = Instant::now();
            let (model, fit_s) = train(&data, &params(algorithm), format!("cost-{size}"), 0)
                .unwrap_or_else(|e| fail(e.to_string()));
            row[format!("{name}_fit_s")] = fit_s.into();
            row[format!("{name}_train_s")] = t.elapsed().as_secs_f64().into();
            if algorithm == Algorithm::ImplicitAls {
                // What a replica holds: the model decoded from its stored bytes, then served.
                let stored = postcard::to_allocvec(&model).unwrap_or_else(|e| fail(e.to_string()));
                drop(model);
                let before = resident_after_trim();
                let decoded = recalloc_rank::store::decode_model("cost", &stored)
                    .unwrap_or_else(|e| fail(e.to_string()));
                let served = Served::with_ann(decoded, &AnnSettings::default_for_serving());
                row["model_bytes"] = stored.len().into();
                row["served_bytes"] = resident_after_trim().saturating_sub(before).into();
                drop(served);
            }
        }
        drop(data);
        row["peak_rss_bytes"] = status_bytes("VmHWM:").into();
        println!("{row}");
    }
}

/// Flushes the Redis, applies every event through the featurizer's script, measures the memory
/// the events take and how long the training read takes. (write seconds, bytes, read seconds)
async fn redis_round_trip(
    con: &mut recalloc_common::redis_conn::RedisConnection,
    histories: &[(String, Vec<HistoryEntry>)],
) -> (f64, u64, f64) {
    let used = |info: String| {
        info.lines()
            .find_map(|l| l.strip_prefix("used_memory:")?.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let _: () = redis::cmd("FLUSHALL")
        .query_async(con)
        .await
        .unwrap_or_else(|e| fail(format!("FLUSHALL: {e}")));
    let before: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(con)
        .await
        .unwrap_or_default();
    // The featurizer's defaults: history_len 200 (above the 50 per user here), no dedup window.
    let scripts = Scripts::new(200, 0);
    let t = Instant::now();
    let mut batch: Vec<Record> = Vec::with_capacity(2000);
    let mut n = 0u64;
    for (user, h) in histories {
        for e in h {
            n += 1;
            batch.push(Record::Event(EventRecord {
                event_id: format!("{user}:{n}"),
                user_id: user.clone(),
                item_id: e.item.clone(),
                kind: EventKind::View as i32,
                value: 1.0,
                normalized_value: 1.0,
                timestamp_ms: n as i64,
                ..Default::default()
            }));
            if batch.len() == 2000 {
                apply(&scripts, con, &batch).await;
                batch.clear();
            }
        }
    }
    apply(&scripts, con, &batch).await;
    let write_s = t.elapsed().as_secs_f64();
    let after: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(con)
        .await
        .unwrap_or_default();
    let t = Instant::now();
    let data = recalloc_store::training::training_data(con)
        .await
        .unwrap_or_else(|e| fail(format!("training read: {e}")));
    let read_s = t.elapsed().as_secs_f64();
    let read: usize = data.histories.iter().map(|(_, h)| h.len()).sum();
    if read as u64 != n {
        fail(format!("the training read found {read} of {n} events"));
    }
    (write_s, used(after).saturating_sub(used(before)), read_s)
}

async fn apply(
    scripts: &Scripts,
    con: &mut recalloc_common::redis_conn::RedisConnection,
    batch: &[Record],
) {
    let records: Vec<ToApply<'_>> = batch
        .iter()
        .map(|r| ToApply {
            record: r,
            produced_ms: 0,
            position: None,
        })
        .collect();
    scripts
        .apply(con, &records)
        .await
        .unwrap_or_else(|e| fail(format!("apply: {e}")));
}

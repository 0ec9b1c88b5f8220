//! Recommend over gRPC, closed loop: `serve_bench ADDR USERS_FILE CLIENTS SECONDS` — CLIENTS
//! tasks each send the next request as soon as the last one answered, for users read from
//! USERS_FILE (one id per line). Prints one JSON object with requests/s, p50/p99/p999 (ms,
//! hdrhistogram) and errors.

use recalloc_proto::v1::RecommendRequest;
use recalloc_proto::v1::ranker_client::RankerClient;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 5 {
        eprintln!("usage: serve_bench ADDR USERS_FILE CLIENTS SECONDS");
        std::process::exit(2);
    }
    let users: Arc<Vec<String>> = Arc::new(
        std::fs::read_to_string(&a[2])
            .expect("users file")
            .lines()
            .map(str::to_owned)
            .filter(|l| !l.is_empty())
            .collect(),
    );
    let clients: usize = a[3].parse().unwrap();
    let secs: u64 = a[4].parse().unwrap();
    // A few connections shared by the clients (HTTP/2 multiplexes the calls).
    let mut channels = Vec::new();
    for _ in 0..4 {
        channels.push(
            RankerClient::connect(format!("http://{}", a[1]))
                .await
                .expect("connect"),
        );
    }
    let errors = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + Duration::from_secs(secs);
    let warm = Instant::now() + Duration::from_secs(2);
    let mut tasks = Vec::new();
    for n in 0..clients {
        let mut client = channels[n % channels.len()].clone();
        let (users, errors) = (users.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let mut h = hdrhistogram::Histogram::<u64>::new(3).unwrap();
            let mut i = n;
            let mut count = 0u64;
            while Instant::now() < end {
                let t = Instant::now();
                let r = client
                    .recommend(RecommendRequest {
                        user_id: users[i % users.len()].clone(),
                        k: 10,
                        exclude_seen: true,
                        filter: None,
                    })
                    .await;
                if t > warm {
                    if r.is_err() {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    h.record(t.elapsed().as_micros() as u64).unwrap();
                    count += 1;
                }
                i += clients;
            }
            (h, count)
        }));
    }
    let mut all = hdrhistogram::Histogram::<u64>::new(3).unwrap();
    let mut total = 0;
    for t in tasks {
        let (h, c) = t.await.unwrap();
        all.add(h).unwrap();
        total += c;
    }
    let measured = secs.saturating_sub(2).max(1) as f64;
    println!(
        "{}",
        serde_json::json!({
            "clients": clients, "seconds": measured, "requests": total,
            "requests_per_s": total as f64 / measured,
            "p50_ms": all.value_at_quantile(0.5) as f64 / 1000.0,
            "p99_ms": all.value_at_quantile(0.99) as f64 / 1000.0,
            "p999_ms": all.value_at_quantile(0.999) as f64 / 1000.0,
            "errors": errors.load(Ordering::Relaxed),
        })
    );
}

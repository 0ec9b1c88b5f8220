//! Soak: Recommend at a fixed rate (open loop) with ingestion beside it, for a long time, to see
//! whether latency and memory stay flat.
//!
//! `soak RANK_ADDR INGEST_ADDR USERS_FILE ITEMS_FILE RATE SECONDS EVENTS_PER_S [NAME=PID ...]`
//!
//! - Recommend requests are *scheduled* at RATE per second and latency is measured from the
//!   scheduled time, so a stall shows as latency instead of silently lowering the rate
//!   (no coordinated omission). At most 512 calls are in flight; a request due beyond that is
//!   not sent and counts as `dropped` (the client's queue is full), apart from `errors` (calls
//!   that failed). RATE 0 sends no Recommend: ingestion only, e.g. beside a capacity probe.
//! - Ingestion: RecordEvents batches of 100 VIEW events at EVENTS_PER_S, for random users and
//!   items from the files, with fresh event ids (each one is new work for the featurizer).
//! - Every 60 s (a window): count, errors, p50/p99/p999 of Recommend, events accepted, and for
//!   each NAME=PID process its resident memory (VmRSS) at the window's start and the CPU it used
//!   during the window (in cores): on a shared machine a neighbour that takes more CPU over time
//!   raises the tail without any growth in the service measured.
//!
//! Prints one JSON object: the windows, and first-vs-last window comparisons.

use rand::Rng;
use recalloc_proto::v1::ingest_client::IngestClient;
use recalloc_proto::v1::ranker_client::RankerClient;
use recalloc_proto::v1::{Event, EventKind, RecommendRequest, RecordEventsRequest};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{Mutex, Semaphore};

const WINDOW: Duration = Duration::from_secs(60);
const MAX_IN_FLIGHT: usize = 512;
const BATCH: usize = 100;

#[derive(Default)]
struct Window {
    latency: Option<hdrhistogram::Histogram<u64>>,
    errors: u64,
    dropped: u64,
}

fn lines(path: &str) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Clock ticks per second of /proc's CPU times (USER_HZ, 100 on Linux whatever the kernel's HZ).
const USER_HZ: f64 = 100.0;

/// CPU time a process has used so far (user + system) in seconds, from /proc (None when gone).
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut f = rest.split_whitespace().skip(11);
    let utime: f64 = f.next()?.parse().ok()?;
    let stime: f64 = f.next()?.parse().ok()?;
    Some((utime + stime) / USER_HZ)
}

/// One sample of every process: (RSS MiB, CPU seconds so far) and when it was taken.
type Sample = (Instant, Vec<(Option<f64>, Option<f64>)>);

fn sample(pids: &[(String, u32)]) -> Sample {
    (
        Instant::now(),
        pids.iter()
            .map(|(_, p)| (rss_mib(*p), cpu_seconds(*p)))
            .collect(),
    )
}

/// Resident memory of a process in MiB, from /proc (None when it is gone).
fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

#[tokio::main]
async fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 8 {
        eprintln!(
            "usage: soak RANK_ADDR INGEST_ADDR USERS_FILE ITEMS_FILE RATE SECONDS EVENTS_PER_S [NAME=PID ...]"
        );
        std::process::exit(2);
    }
    let users = Arc::new(lines(&a[3]));
    let items = Arc::new(lines(&a[4]));
    let rate: f64 = a[5].parse().expect("RATE");
    let seconds: u64 = a[6].parse().expect("SECONDS");
    let events_per_s: f64 = a[7].parse().expect("EVENTS_PER_S");
    let pids: Vec<(String, u32)> = a[8..]
        .iter()
        .map(|p| {
            let (n, pid) = p.split_once('=').expect("NAME=PID");
            (n.to_owned(), pid.parse().expect("PID"))
        })
        .collect();
    let token = std::env::var("RECALLOC_SECURITY_TOKEN").unwrap_or_default();

    let rank = RankerClient::connect(format!("http://{}", a[1]))
        .await
        .expect("connect rank");
    let ingest = IngestClient::connect(format!("http://{}", a[2]))
        .await
        .expect("connect ingest");

    let start = Instant::now();
    let end = start + Duration::from_secs(seconds);
    let window_of = move |t: Instant| (t.saturating_duration_since(start).as_secs() / 60) as usize;
    let n_windows = seconds.div_ceil(60) as usize;
    let windows: Arc<Vec<Mutex<Window>>> = Arc::new(
        (0..n_windows)
            .map(|_| Mutex::new(Window::default()))
            .collect(),
    );
    let events_ok = Arc::new(AtomicU64::new(0));
    let events_failed = Arc::new(AtomicU64::new(0));

    // Ingestion beside the reads.
    let ingest_task = {
        let (users, items) = (users.clone(), items.clone());
        let (ok, failed) = (events_ok.clone(), events_failed.clone());
        let mut ingest = ingest;
        tokio::spawn(async move {
            if events_per_s <= 0.0 {
                return;
            }
            let every = Duration::from_secs_f64(BATCH as f64 / events_per_s);
            let mut tick = tokio::time::interval(every);
            let run = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_millis();
            let mut seq = 0u64;
            while Instant::now() < end {
                tick.tick().await;
                let now_ms = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap()
                    .as_millis() as i64;
                let events: Vec<Event> = {
                    let mut rng = rand::rng();
                    (0..BATCH)
                        .map(|_| {
                            seq += 1;
                            Event {
                                event_id: format!("soak-{run}-{seq}"),
                                user_id: users[rng.random_range(0..users.len())].clone(),
                                item_id: items[rng.random_range(0..items.len())].clone(),
                                kind: EventKind::View as i32,
                                value: None,
                                timestamp_ms: now_ms,
                                context: Default::default(),
                            }
                        })
                        .collect()
                };
                let mut req = tonic::Request::new(RecordEventsRequest { events });
                if !token.is_empty() {
                    req.metadata_mut()
                        .insert("authorization", format!("Bearer {token}").parse().unwrap());
                }
                match ingest.record_events(req).await {
                    Ok(r) => {
                        let r = r.into_inner();
                        ok.fetch_add(r.accepted as u64, Ordering::Relaxed);
                        failed.fetch_add(r.rejected.len() as u64, Ordering::Relaxed);
                    }
                    Err(_) => {
                        failed.fetch_add(BATCH as u64, Ordering::Relaxed);
                    }
                }
            }
        })
    };

    // Memory and CPU samples, one per window (at its start) and one at the end.
    let sampler = {
        let pids = pids.clone();
        tokio::spawn(async move {
            let mut samples: Vec<Sample> = Vec::new();
            loop {
                samples.push(sample(&pids));
                if Instant::now() + WINDOW > end + Duration::from_secs(1) {
                    break;
                }
                tokio::time::sleep(WINDOW).await;
            }
            tokio::time::sleep(end.saturating_duration_since(Instant::now())).await;
            samples.push(sample(&pids));
            samples
        })
    };

    // Open-loop Recommend.
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    // RATE 0: no reads, only the ingestion (the loop below then just waits out the time).
    let interval = if rate > 0.0 {
        Duration::from_secs_f64(1.0 / rate)
    } else {
        Duration::from_secs(seconds + 1)
    };
    let mut next = Instant::now();
    let mut i = 0usize;
    let mut calls = Vec::new();
    if rate <= 0.0 {
        tokio::time::sleep_until(end.into()).await;
    }
    while rate > 0.0 && next < end {
        tokio::time::sleep_until(next.into()).await;
        let scheduled = next;
        next += interval;
        i += 1;
        let w = window_of(scheduled).min(n_windows - 1);
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            windows[w].lock().await.dropped += 1;
            continue;
        };
        let (mut rank, users, windows) = (rank.clone(), users.clone(), windows.clone());
        calls.push(tokio::spawn(async move {
            let r = rank
                .recommend(RecommendRequest {
                    user_id: users[i % users.len()].clone(),
                    k: 10,
                    exclude_seen: true,
                    filter: None,
                })
                .await;
            let micros = scheduled.elapsed().as_micros() as u64;
            drop(permit);
            let mut win = windows[w].lock().await;
            if r.is_err() {
                win.errors += 1;
            }
            win.latency
                .get_or_insert_with(|| hdrhistogram::Histogram::new(3).unwrap())
                .record(micros.max(1))
                .unwrap();
        }));
        if calls.len() >= 4096 {
            calls.retain(|c| !c.is_finished());
        }
    }
    for c in calls {
        let _ = c.await;
    }
    ingest_task.await.unwrap();
    let samples = sampler.await.unwrap();

    let mut rows = Vec::new();
    for (n, w) in windows.iter().enumerate() {
        let w = w.lock().await;
        let ms = |q: f64| {
            w.latency
                .as_ref()
                .map(|h| h.value_at_quantile(q) as f64 / 1000.0)
                .unwrap_or(f64::NAN)
        };
        let count = w.latency.as_ref().map(|h| h.len()).unwrap_or(0);
        let rss: serde_json::Map<String, serde_json::Value> = pids
            .iter()
            .enumerate()
            .map(|(k, (name, _))| {
                (
                    name.clone(),
                    serde_json::json!(samples.get(n).and_then(|s| s.1[k].0)),
                )
            })
            .collect();
        // Cores used over the window: CPU seconds between its samples over the seconds between.
        let cpu: serde_json::Map<String, serde_json::Value> = pids
            .iter()
            .enumerate()
            .map(|(k, (name, _))| {
                let used = samples.get(n).zip(samples.get(n + 1)).and_then(|(a, b)| {
                    let (t0, t1) = (a.1[k].1?, b.1[k].1?);
                    let dt = b.0.duration_since(a.0).as_secs_f64();
                    (dt > 0.0).then(|| ((t1 - t0) / dt * 100.0).round() / 100.0)
                });
                (name.clone(), serde_json::json!(used))
            })
            .collect();
        rows.push(serde_json::json!({
            "minute": n, "requests": count, "requests_per_s": count as f64 / 60.0,
            "errors": w.errors, "dropped": w.dropped, "p50_ms": ms(0.5), "p99_ms": ms(0.99), "p999_ms": ms(0.999),
            "rss_mib_at_start": rss, "cpu_cores": cpu,
        }));
    }
    let last_rss: serde_json::Map<String, serde_json::Value> = pids
        .iter()
        .enumerate()
        .map(|(k, (name, _))| {
            (
                name.clone(),
                serde_json::json!(samples.last().and_then(|s| s.1[k].0)),
            )
        })
        .collect();
    let errors: u64 = rows.iter().map(|r| r["errors"].as_u64().unwrap()).sum();
    let dropped: u64 = rows.iter().map(|r| r["dropped"].as_u64().unwrap()).sum();
    println!(
        "{}",
        serde_json::json!({
            "rate": rate, "seconds": seconds, "events_per_s": events_per_s,
            "windows": rows, "rss_mib_at_end": last_rss,
            "errors": errors, "dropped": dropped,
            "events_accepted": events_ok.load(Ordering::Relaxed),
            "events_failed": events_failed.load(Ordering::Relaxed),
        })
    );
}

//! The bundled goodbooks data through the CLI, the real broker and the real Redis: every rating
//! counted once, a second load changes nothing, a replay or a rebuild gives the identical state,
//! and a featurizer or an ingest server killed with SIGKILL mid-stream ends in the state of a
//! clean run.

use recalloc_integration_tests::{
    Cluster, assert_same_state, fingerprint, repo_root, snapshot, wait_events, wait_quiet,
};
use recalloc_store::derived;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Counts computed straight from the bundled file.
struct Expected {
    events: u64,
    users: usize,
    /// item → (count, sum of ratings)
    per_item: BTreeMap<String, (u64, f64)>,
}

fn expected() -> Expected {
    let path = repo_root().join("data/goodbooks/ratings.csv");
    let mut rdr = csv::Reader::from_path(&path).expect("bundled ratings.csv");
    let mut seen = BTreeSet::new();
    let mut users = BTreeSet::new();
    let mut per_item: BTreeMap<String, (u64, f64)> = BTreeMap::new();
    for row in rdr.records() {
        let row = row.unwrap();
        let (u, b, r) = (
            row[0].to_owned(),
            row[1].to_owned(),
            row[2].parse::<f64>().unwrap(),
        );
        if !seen.insert((u.clone(), b.clone())) {
            continue;
        }
        users.insert(u);
        let e = per_item.entry(b).or_default();
        e.0 += 1;
        e.1 += r;
    }
    Expected {
        events: seen.len() as u64,
        users: users.len(),
        per_item,
    }
}

fn load(c: &Cluster) {
    let dir = repo_root().join("data/goodbooks");
    let out = c
        .cli(&["load", "goodbooks", dir.to_str().unwrap()])
        .unwrap();
    assert!(
        out.status.success(),
        "load failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn stats(c: &Cluster) -> serde_json::Value {
    let out = c.cli(&["stats"]).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_rating_is_counted_once_and_replays_change_nothing() {
    let exp = expected();
    let mut c = Cluster::start().unwrap();
    let mut con = c.redis_con().await.unwrap();
    load(&c);
    wait_events(&mut con, exp.events, Duration::from_secs(300))
        .await
        .unwrap();
    wait_quiet(&mut con, Duration::from_secs(120))
        .await
        .unwrap();

    let s = stats(&c);
    assert_eq!(s["events"], exp.events);
    assert_eq!(s["ratings"], exp.events);
    assert_eq!(s["users"], exp.users as u64);
    assert_eq!(s["items"], 10_000, "every book of books.csv is an item");

    // Per-item aggregates equal what the file says, for every item.
    let mut pipe = redis::pipe();
    for item in exp.per_item.keys() {
        pipe.hget(
            derived::item_key(item),
            &["ratings", "rating_sum", "mean_rating"],
        );
    }
    let got: Vec<(Option<u64>, Option<f64>, Option<f64>)> =
        pipe.query_async(&mut con).await.unwrap();
    for ((item, (n, sum)), (gn, gsum, gmean)) in exp.per_item.iter().zip(got) {
        assert_eq!(gn, Some(*n), "ratings of item {item}");
        assert!(
            (gsum.unwrap() - sum).abs() < 1e-9,
            "rating sum of item {item}"
        );
        assert!(
            (gmean.unwrap() - sum / *n as f64).abs() < 1e-9,
            "mean of item {item}"
        );
    }

    // Loading the same files again changes nothing but the items' upsert time.
    let before = snapshot(&mut con, &["updated_at_ms"]).await.unwrap();
    load(&c);
    wait_quiet(&mut con, Duration::from_secs(120))
        .await
        .unwrap();
    assert_same_state(
        &snapshot(&mut con, &["updated_at_ms"]).await.unwrap(),
        &before,
        "second load",
    );

    // A second consumer group replaying every topic from the beginning changes nothing.
    let full = snapshot(&mut con, &[]).await.unwrap();
    c.featurizer.as_mut().unwrap().terminate();
    c.extra_env.push((
        "RECALLOC_FEATURIZER_GROUP_ID".into(),
        "replay-from-start".into(),
    ));
    c.start_featurizer().unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    wait_quiet(&mut con, Duration::from_secs(120))
        .await
        .unwrap();
    assert_same_state(
        &snapshot(&mut con, &[]).await.unwrap(),
        &full,
        "replay by a new group",
    );

    // `recalloc rebuild`: wipe, replay, identical state.
    c.rebuild();
    assert_same_state(&snapshot(&mut con, &[]).await.unwrap(), &full, "rebuild");
}

#[tokio::test(flavor = "multi_thread")]
async fn featurizer_killed_mid_stream_ends_like_a_clean_run() {
    let exp = expected();
    let mut c = Cluster::start().unwrap();
    let mut con = c.redis_con().await.unwrap();
    load(&c);
    // Kill it while it is busy: somewhere inside the stream.
    let seen = wait_events(&mut con, exp.events / 4, Duration::from_secs(300))
        .await
        .unwrap();
    c.featurizer.as_mut().unwrap().kill9();
    assert!(
        seen < exp.events,
        "featurizer finished before it could be killed ({seen})"
    );
    let at_kill = fingerprint(&mut con).await.unwrap();
    c.start_featurizer().unwrap();
    wait_events(&mut con, exp.events, Duration::from_secs(300))
        .await
        .unwrap();
    let recovered = wait_quiet(&mut con, Duration::from_secs(120))
        .await
        .unwrap();
    assert_ne!(at_kill, recovered);
    let after_crash = snapshot(&mut con, &[]).await.unwrap();

    // The clean run: the same log replayed into an empty Redis.
    c.rebuild();
    let clean = snapshot(&mut con, &[]).await.unwrap();
    assert_same_state(&after_crash, &clean, "after the crash vs a clean run");
    assert_eq!(stats(&c)["events"], exp.events);
}

#[tokio::test(flavor = "multi_thread")]
async fn ingest_killed_mid_load_ends_like_a_clean_run() {
    let exp = expected();
    let mut c = Cluster::start().unwrap();
    let mut con = c.redis_con().await.unwrap();
    let dir = repo_root().join("data/goodbooks");
    let mut loading = c
        .cli_command(&["load", "goodbooks", dir.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill ingest while the load is streaming through it: once ingest has acknowledged a
    // quarter of the events (its own counter: the featurizer may lag far behind a fast broker).
    let end = std::time::Instant::now() + Duration::from_secs(300);
    let accepted = loop {
        let n = accepted_events(c.ingest_http);
        if n >= exp.events / 4 || std::time::Instant::now() > end {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    c.ingest.as_mut().unwrap().kill9();
    assert!(
        (exp.events / 4..exp.events).contains(&accepted),
        "ingest was not killed mid-load: it had acknowledged {accepted} of {} events",
        exp.events
    );
    // The load fails (its batches are refused, not half-taken); the client retries it whole.
    let status = loading.wait().unwrap();
    assert!(!status.success(), "the load did not notice ingest dying");
    c.start_ingest().unwrap();
    load(&c);
    wait_events(&mut con, exp.events, Duration::from_secs(300))
        .await
        .unwrap();
    wait_quiet(&mut con, Duration::from_secs(120))
        .await
        .unwrap();
    let after_crash = snapshot(&mut con, &[]).await.unwrap();
    assert_eq!(stats(&c)["events"], exp.events);

    // The clean run: the same log replayed into an empty Redis.
    c.rebuild();
    let clean = snapshot(&mut con, &[]).await.unwrap();
    assert_same_state(
        &after_crash,
        &clean,
        "after the ingest crash vs a clean run",
    );
}

/// Events ingest has acknowledged so far (its `/metrics`).
fn accepted_events(http: std::net::SocketAddr) -> u64 {
    let Ok((200, body)) = recalloc_integration_tests::http_get(http, "/metrics") else {
        return 0;
    };
    body.lines()
        .find(|l| {
            l.starts_with(
                "recalloc_ingest_records_total{topic=\"recalloc.events.v1\",outcome=\"accepted\"}",
            )
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

//! Featurizers as members of one consumer group on a real Kafka broker: replicas killed with
//! `kill -9`, added and removed during a load leave exactly the state a clean replay of the same
//! log builds; the log positions in Redis, not the event-id window, make a late redelivery
//! harmless; and a log recreated under a kept Redis is refused, not skipped.

use recalloc_integration_tests::{
    Cluster, Proc, assert_same_state, http_get, snapshot, wait_events, wait_quiet,
};
use recalloc_proto::v1::{Event, EventKind, EventRecord, RecordEventsRequest};
use recalloc_proto::{Record, topics};
use recalloc_store::derived::{Applied, Scripts, ToApply};
use recalloc_store::log_position::{self, LogPosition};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const BATCHES: u32 = 30;
const PER_BATCH: u32 = 400;

/// Batch `b` of the load: events of 300 users over 150 items, every id distinct.
fn batch(prefix: &str, b: u32) -> Vec<Event> {
    (0..PER_BATCH)
        .map(|i| {
            let n = b * PER_BATCH + i;
            let kind = [EventKind::View, EventKind::Click, EventKind::Purchase][(n % 3) as usize];
            Event {
                event_id: format!("{prefix}-{n}"),
                user_id: format!("u{}", n % 300),
                item_id: format!("i{}", (n * 7) % 150),
                kind: kind as i32,
                timestamp_ms: 1_700_000_000_000 + i64::from(n),
                ..Default::default()
            }
        })
        .collect()
}

/// A featurizer's `recalloc_featurizer_partitions_held`.
fn partitions_held(http: SocketAddr) -> Option<u32> {
    let (_, body) = http_get(http, "/metrics").ok()?;
    body.lines()
        .find_map(|l| l.strip_prefix("recalloc_featurizer_partitions_held "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u32)
}

/// Waits until the members at `https` hold every one of the `total` partitions between them,
/// each at least one.
fn wait_shared(https: &[SocketAddr], total: u32, within: Duration) -> Vec<u32> {
    let end = Instant::now() + within;
    loop {
        let held: Vec<u32> = https
            .iter()
            .map(|h| partitions_held(*h).unwrap_or(0))
            .collect();
        if held.iter().sum::<u32>() == total && held.iter().all(|&n| n > 0) {
            return held;
        }
        assert!(
            Instant::now() < end,
            "the group did not share the {total} partitions in {within:?}: members hold {held:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Sends the load, one batch every 100 ms, calling `at(b)` before batch `b`.
async fn send_load(c: &Cluster, prefix: &str, mut at: impl FnMut(u32)) -> u64 {
    let mut ingest = c.grpc().await.unwrap();
    for b in 0..BATCHES {
        at(b);
        let r = ingest
            .record_events(RecordEventsRequest {
                events: batch(prefix, b),
            })
            .await
            .unwrap_or_else(|e| panic!("batch {b}: {e}"))
            .into_inner();
        assert_eq!(r.accepted, PER_BATCH, "batch {b}: {r:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    u64::from(BATCHES * PER_BATCH)
}

/// The state once every event is applied, then the state `recalloc rebuild` replays from the
/// same log into an emptied Redis with one process: they must be equal, and the log positions
/// the members stored must be the end of every partition.
async fn assert_same_as_a_clean_replay(c: &mut Cluster, n: u64, others: &mut [Proc]) {
    let mut con = c.redis_con().await.unwrap();
    wait_events(&mut con, n, Duration::from_secs(120))
        .await
        .unwrap();
    wait_quiet(&mut con, Duration::from_secs(60)).await.unwrap();
    let stats: BTreeMap<String, u64> = redis::cmd("HGETALL")
        .arg(recalloc_store::derived::STATS)
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(stats.get("events"), Some(&n), "every event exactly once");
    let offsets: BTreeMap<String, i64> = redis::cmd("HGETALL")
        .arg(log_position::OFFSETS)
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(
        offsets,
        event_log_ends(&c.brokers()),
        "the stored positions are the ends of the event partitions"
    );
    let live = snapshot(&mut con, &[]).await.unwrap();
    for p in others.iter_mut() {
        p.terminate();
    }
    c.rebuild();
    let replayed = snapshot(&mut con, &[]).await.unwrap();
    assert_same_state(&live, &replayed, "the group's state vs a clean replay");
}

/// The end offset of each non-empty partition of the events topic, as `{rc}:offsets` names it.
fn event_log_ends(brokers: &str) -> BTreeMap<String, i64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    (0..4)
        .filter_map(|p| {
            let (_, high) = consumer
                .fetch_watermarks(topics::EVENTS, p, Duration::from_secs(10))
                .unwrap();
            (high > 0).then(|| (format!("{}/{p}", topics::EVENTS), high))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn three_featurizers_share_the_partitions_and_one_killed_loses_nothing() {
    let mut c = Cluster::start().unwrap();
    let (b, b_http) = c.spawn_featurizer_replica().unwrap();
    let (d, d_http) = c.spawn_featurizer_replica().unwrap();
    let mut members = vec![b, d];
    // 3 topics × 4 partitions among three members.
    let held = wait_shared(
        &[c.featurizer_http, b_http, d_http],
        12,
        Duration::from_secs(60),
    );
    eprintln!("partitions held: {held:?}");
    let mut killed_at = None;
    let n = send_load(&c, "k", |b| {
        if b == BATCHES / 3 {
            members[1].kill9();
            killed_at = Some(Instant::now());
        }
    })
    .await;
    // The survivors take the dead member's partitions within the session timeout (10 s)
    // plus a rebalance.
    let held = wait_shared(&[c.featurizer_http, b_http], 12, Duration::from_secs(40));
    eprintln!(
        "after the kill the survivors hold {held:?}, {:?} after it",
        killed_at.unwrap().elapsed()
    );
    let mut others = vec![members.remove(0)];
    assert_same_as_a_clean_replay(&mut c, n, &mut others).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn scaling_one_to_three_to_one_during_a_load_applies_each_event_once() {
    let mut c = Cluster::start().unwrap();
    let mut extra: Vec<Proc> = Vec::new();
    let mut https = vec![c.featurizer_http];
    let n = {
        let c = &c;
        send_load(c, "s", |b| {
            if b == BATCHES / 3 {
                for _ in 0..2 {
                    let (p, http) = c.spawn_featurizer_replica().unwrap();
                    extra.push(p);
                    https.push(http);
                }
            }
            if b == 2 * BATCHES / 3 {
                // Graceful: each leaves the group, committing what it applied.
                for p in &mut extra {
                    p.terminate();
                }
            }
        })
        .await
    };
    assert_eq!(https.len(), 3);
    // The one left holds everything again.
    wait_shared(&[c.featurizer_http], 12, Duration::from_secs(40));
    assert_same_as_a_clean_replay(&mut c, n, &mut extra).await;
}

/// An event record of `user` at `produced_ms`.
fn event(id: &str, user: &str) -> Record {
    Record::Event(EventRecord {
        event_id: id.into(),
        user_id: user.into(),
        item_id: "i1".into(),
        kind: EventKind::View as i32,
        timestamp_ms: 1_700_000_000_000,
        ..Default::default()
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redelivery_older_than_the_id_window_is_skipped_by_its_log_position() {
    let c = Cluster::infra().unwrap();
    let mut con = c.redis_con().await.unwrap();
    // A one-second id window: the id of the first event is forgotten once a later one of the
    // same user is applied ten seconds of produce time on.
    let scripts = Scripts::new(200, 1);
    let first = event("e1", "u");
    let second = event("e2", "u");
    let at = |offset| {
        Some(LogPosition {
            topic: topics::EVENTS,
            partition: 0,
            offset,
        })
    };
    let apply = |record, produced_ms, position| ToApply {
        record,
        produced_ms,
        position,
    };
    let a = scripts
        .apply(
            &mut con,
            &[apply(&first, 0, at(5)), apply(&second, 10_000, at(6))],
        )
        .await
        .unwrap();
    assert_eq!(a.new_events, 2);
    // The first record again, long after: its position is below the stored one.
    let again = scripts
        .apply(&mut con, &[apply(&first, 20_000, at(5))])
        .await
        .unwrap();
    assert_eq!(
        again,
        Applied {
            new_events: 0,
            already_applied: 1
        }
    );
    // Without its position only the window guards it, and that has forgotten the id: this is
    // the case the positions exist for.
    let unguarded = scripts
        .apply(&mut con, &[apply(&first, 20_000, None)])
        .await
        .unwrap();
    assert_eq!(unguarded.new_events, 1);
    // The next offset stored is 7.
    let next: i64 = redis::cmd("HGET")
        .arg(log_position::OFFSETS)
        .arg(format!("{}/0", topics::EVENTS))
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(next, 7);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_log_recreated_under_a_kept_redis_is_refused_with_a_way_out() {
    let mut c = Cluster::start().unwrap();
    c.grpc()
        .await
        .unwrap()
        .record_events(RecordEventsRequest {
            events: batch("r", 0),
        })
        .await
        .unwrap();
    let mut con = c.redis_con().await.unwrap();
    wait_events(&mut con, u64::from(PER_BATCH), Duration::from_secs(60))
        .await
        .unwrap();
    c.featurizer.as_mut().unwrap().terminate();
    // A new cluster on the same ports: its log starts again at offset 0.
    c.broker.as_mut().unwrap().kill9();
    std::fs::remove_dir_all(c.dir.path().join("kafka")).unwrap();
    c.start_broker().unwrap();
    recalloc_integration_tests::create_topics(&c.brokers(), &topics::ALL, 4).unwrap();
    let mut f = c
        .spawn_with("featurizer-new-log", "recalloc-featurizer", &[])
        .unwrap();
    let end = Instant::now() + Duration::from_secs(60);
    while f.is_running() {
        assert!(
            Instant::now() < end,
            "the featurizer consumed a foreign log"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = f.log();
    assert!(
        log.contains("the log was recreated") && log.contains("recalloc rebuild"),
        "{log}"
    );
    // The way out: a rebuild makes the state this log's; the featurizer then starts.
    c.rebuild();
    c.start_featurizer().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broker_of_three_killed_mid_load_loses_no_acknowledged_event() {
    // Replication factor 3, min.insync.replicas 2, a quorum of three controllers.
    let mut c = Cluster::infra_with_kafka_nodes(3).unwrap();
    c.start_ingest().unwrap();
    c.start_featurizer().unwrap();
    let mut ingest = c.grpc().await.unwrap();
    let mut retried = 0;
    let started = Instant::now();
    for b in 0..BATCHES {
        if b == BATCHES / 3 {
            // The first node of every client's bootstrap list, a controller and the leader of
            // about a third of the partitions.
            c.broker.as_mut().unwrap().kill9();
        }
        // A batch the broker did not acknowledge in full is sent again with the same ids, as a
        // client would: the event-id guard keeps the retry from counting twice.
        let mut tries = 0;
        loop {
            match ingest
                .record_events(RecordEventsRequest {
                    events: batch("b", b),
                })
                .await
            {
                Ok(r) => {
                    assert_eq!(r.get_ref().accepted, PER_BATCH, "batch {b}");
                    break;
                }
                Err(e) => {
                    tries += 1;
                    retried += 1;
                    assert!(tries < 30, "batch {b} never acknowledged: {e}");
                    assert_eq!(e.code(), tonic::Code::Unavailable, "batch {b}: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
    eprintln!(
        "load sent in {:?}, {retried} calls retried",
        started.elapsed()
    );
    let n = u64::from(BATCHES * PER_BATCH);
    assert_same_as_a_clean_replay(&mut c, n, &mut []).await;
}

//! Losing Redis: the rank service keeps answering from the model it holds in memory while
//! Redis is down and after it comes back empty, and `recalloc rebuild` restores every piece of
//! derived state from the Kafka log (trained models, which the log cannot bring back, aside).

use recalloc_integration_tests::{
    Cluster, assert_same_state, settled_stats, snapshot, two_taste_groups,
};
use recalloc_proto::v1::{EventKind, RecommendRequest, RecordEventsRequest, TrainRequest};
use recalloc_store::models;
use std::collections::BTreeMap;
use std::time::Duration;

fn derived(state: BTreeMap<String, String>) -> BTreeMap<String, String> {
    state
        .into_iter()
        .filter(|(k, _)| !k.starts_with(models::MODELS_PREFIX))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_redis_leaves_rank_serving_and_rebuild_restores_the_state() {
    let mut c = Cluster::start().unwrap();
    c.start_rank().unwrap();
    // Two taste groups; user u0 has not seen a9.
    let events = two_taste_groups("f", |_| (EventKind::Purchase, None));
    let n = events.len() as u64;
    c.grpc()
        .await
        .unwrap()
        .record_events(RecordEventsRequest { events })
        .await
        .unwrap();
    let mut con = c.redis_con().await.unwrap();
    settled_stats(&mut con, n).await.unwrap();
    let before = derived(snapshot(&mut con, &[]).await.unwrap());

    let mut rank = c.rank_client().await.unwrap();
    rank.train(TrainRequest {
        factors: 8,
        ..Default::default()
    })
    .await
    .unwrap();
    let ask = || RecommendRequest {
        user_id: "u0".into(),
        k: 3,
        exclude_seen: true,
        filter: None,
    };
    let items = |r: recalloc_proto::v1::RecommendResponse| -> Vec<String> {
        r.items.into_iter().map(|i| i.item_id).collect()
    };
    // The poller loads the new version within a second.
    let mut served = Vec::new();
    for _ in 0..50 {
        served = items(rank.recommend(ask()).await.unwrap().into_inner());
        if served.first().map(String::as_str) == Some("a9") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(served.first().map(String::as_str), Some("a9"), "{served:?}");

    // Redis dies: the model in memory still answers (exclusions come from the model too).
    c.redis.kill9();
    let during = items(rank.recommend(ask()).await.unwrap().into_inner());
    assert_eq!(during, served, "while Redis is down");
    // An empty Redis comes back: still the same answers, and nothing derived is left.
    c.restart_redis_empty().unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = items(rank.recommend(ask()).await.unwrap().into_inner());
    assert_eq!(after, served, "after an empty Redis came back");
    let mut con = c.redis_con().await.unwrap();
    assert!(derived(snapshot(&mut con, &[]).await.unwrap()).is_empty());

    // `recalloc rebuild` replays the topics into the identical derived state.
    c.rebuild();
    assert_same_state(
        &derived(snapshot(&mut con, &[]).await.unwrap()),
        &before,
        "rebuild after a lost Redis",
    );
}

/// A rank server killed with SIGKILL in the middle of training: its half-written version never
/// becomes current, the restarted server serves the last complete model, and the training lock
/// it held lapses within its 30 s expiry instead of blocking training.
#[tokio::test(flavor = "multi_thread")]
async fn rank_killed_mid_training_serves_the_last_model_and_frees_the_lock() {
    use recalloc_proto::v1::{GetModelInfoRequest, TrainRequest};
    let mut c = Cluster::start().unwrap();
    c.start_rank().unwrap();
    let dir = recalloc_integration_tests::repo_root().join("data/goodbooks");
    c.load_goodbooks(&dir);
    let mut con = c.redis_con().await.unwrap();
    recalloc_integration_tests::wait_quiet(&mut con, Duration::from_secs(120))
        .await
        .unwrap();
    let mut rank = c.rank_client().await.unwrap();
    let first = rank
        .train(TrainRequest {
            factors: 8,
            epochs: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .model
        .unwrap()
        .version;

    // A long training, killed while it runs.
    let mut long = c.rank_client().await.unwrap();
    let training = tokio::spawn(async move {
        long.train(TrainRequest {
            factors: 128,
            epochs: 1000,
            ..Default::default()
        })
        .await
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ttl: i64 = redis::cmd("TTL")
        .arg(models::TRAIN_LOCK)
        .query_async(&mut con)
        .await
        .unwrap();
    assert!((1..=30).contains(&ttl), "lock ttl {ttl}");
    c.rank.as_mut().unwrap().kill9();
    assert!(training.await.unwrap().is_err());
    let killed_at = std::time::Instant::now();

    c.start_rank().unwrap();
    let mut rank = c.rank_client().await.unwrap();
    let info = rank
        .get_model_info(GetModelInfoRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        info.version, first,
        "the half-trained version must not be current"
    );
    let r = rank
        .recommend(RecommendRequest {
            user_id: "25266".into(),
            k: 3,
            exclude_seen: true,
            filter: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.items.len(), 3);
    // Training is refused (ABORTED) while the dead holder's lock lasts, then works.
    let second = loop {
        match rank
            .train(TrainRequest {
                factors: 8,
                epochs: 2,
                ..Default::default()
            })
            .await
        {
            Ok(r) => break r.into_inner().model.unwrap().version,
            Err(s) => {
                assert_eq!(s.code(), tonic::Code::Aborted, "{s:?}");
                assert!(
                    killed_at.elapsed() < Duration::from_secs(40),
                    "the lock still blocks training {:?} after the kill",
                    killed_at.elapsed()
                );
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    assert_ne!(second, first);
}

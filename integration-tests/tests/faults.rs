//! Losing Redis: the rank service keeps answering from the model it holds in memory while
//! Redis is down and after it comes back empty, and `recalloc rebuild` restores every piece of
//! derived state from the Kafka log (trained models, which the log cannot bring back, aside).

use recalloc_integration_tests::{Cluster, assert_same_state, settled_stats, snapshot};
use recalloc_proto::v1::{Event, EventKind, RecommendRequest, RecordEventsRequest, TrainRequest};
use std::collections::BTreeMap;
use std::time::Duration;

fn derived(state: BTreeMap<String, String>) -> BTreeMap<String, String> {
    state
        .into_iter()
        .filter(|(k, _)| !k.starts_with("rc:model:"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_redis_leaves_rank_serving_and_rebuild_restores_the_state() {
    let mut c = Cluster::start().unwrap();
    c.start_rank().unwrap();
    // Two taste groups; user u0 has not seen a9.
    let events: Vec<Event> = (0..12)
        .flat_map(|u| {
            (0..10)
                .filter(move |i| !(u == 0 && *i == 9))
                .map(move |i| Event {
                    event_id: format!("f-{u}-{i}"),
                    user_id: format!("u{u}"),
                    item_id: format!("{}{i}", if u < 6 { "a" } else { "b" }),
                    kind: EventKind::Purchase as i32,
                    ..Default::default()
                })
        })
        .collect();
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
    c.featurizer.as_mut().unwrap().terminate();
    let out = c.cli(&["rebuild"]).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_same_state(
        &derived(snapshot(&mut con, &[]).await.unwrap()),
        &before,
        "rebuild after a lost Redis",
    );
}

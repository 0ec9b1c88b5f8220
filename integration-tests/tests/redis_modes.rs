//! The services against Redis as production runs it: an ACL user whose password comes from a
//! file (and a wrong one refused without printing it), TLS with a private CA, and a Redis
//! Cluster of three primaries, where nothing may fail with CROSSSLOT and `recalloc rebuild`
//! must find keys on every primary.

use recalloc_common::redis_conn::RedisConnection;
use recalloc_factor::model::Algorithm;
use recalloc_integration_tests::{
    Cluster, RedisOptions, settled_stats, two_taste_groups, wait_ready,
};
use recalloc_proto::v1::{
    Event, EventKind, GetStatsRequest, RecommendRequest, RecordEventsRequest, TrainRequest,
};
use recalloc_rank::store;
use recalloc_rank::trainer::{TrainParams, train};
use recalloc_store::{derived, models, training};
use std::time::Duration;

const PASSWORD: &str = "pw-8f3c1e77-not-for-logs";

fn acl() -> Option<(String, String)> {
    Some(("recalloc-svc".into(), PASSWORD.into()))
}

/// Two taste groups; ratings of 5 on every third item, purchases of the rest.
fn events() -> Vec<Event> {
    two_taste_groups("m", |i| {
        if i % 3 == 0 {
            (EventKind::Rating, Some(5.0))
        } else {
            (EventKind::Purchase, None)
        }
    })
}

/// Load → featurize → stats → train → recommend, the main flow, against whatever Redis `c` has.
async fn main_flow(c: &mut Cluster) -> RedisConnection {
    c.start_ingest().unwrap();
    c.start_featurizer().unwrap();
    c.start_rank().unwrap();
    let events = events();
    let n = events.len() as u64;
    let mut ingest = c.grpc().await.unwrap();
    ingest
        .record_events(RecordEventsRequest { events })
        .await
        .unwrap();
    let mut con = c.redis_con().await.unwrap();
    let stats = settled_stats(&mut con, n).await.unwrap();
    assert_eq!(stats["events"], n);
    // Stats as the CLI reads them: through ingest, which opens its own connection.
    let s = ingest
        .get_stats(GetStatsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!((s.events, s.users, s.items), (n, 12, 20), "{s:?}");

    let mut rank = c.rank_client().await.unwrap();
    rank.train(TrainRequest {
        factors: 8,
        ..Default::default()
    })
    .await
    .unwrap();
    let mut served = Vec::new();
    for _ in 0..50 {
        served = rank
            .recommend(RecommendRequest {
                user_id: "u0".into(),
                k: 3,
                exclude_seen: true,
                filter: None,
            })
            .await
            .unwrap()
            .into_inner()
            .items
            .into_iter()
            .map(|i| i.item_id)
            .collect();
        if served.first().map(String::as_str) == Some("a9") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(served.first().map(String::as_str), Some("a9"), "{served:?}");
    con
}

/// The process's log once it contains `needle` (or whatever it has after `within`).
async fn wait_log(p: &recalloc_integration_tests::Proc, needle: &str, within: Duration) -> String {
    let end = std::time::Instant::now() + within;
    loop {
        let log = p.log();
        if log.contains(needle) || std::time::Instant::now() > end {
            return log;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_acl_user_with_a_password_file_works_and_a_wrong_password_is_refused_unprinted() {
    let mut c = Cluster::infra_with(RedisOptions {
        acl: acl(),
        ..Default::default()
    })
    .unwrap();
    main_flow(&mut c).await;

    // Without credentials Redis refuses (so the flow above really used them).
    let anonymous = recalloc_common::config::RedisConfig {
        url: c.redis_url(),
        ..Default::default()
    };
    let mut plain = recalloc_common::redis_conn::connect(&anonymous)
        .await
        .unwrap();
    let e = redis::cmd("GET")
        .arg(derived::STATS)
        .query_async::<Option<String>>(&mut plain)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("NOAUTH"), "{e}");

    // A wrong password (the variable wins over the file): not ready, the log names redis and
    // never the password, neither the wrong one nor the file's.
    let wrong = "wrong-pw-5d2a9b";
    let http =
        std::net::SocketAddr::from(([127, 0, 0, 1], recalloc_integration_tests::free_port()));
    let mut featurizer = c
        .spawn_with(
            "featurizer-wrong",
            "recalloc-featurizer",
            &[
                ("RECALLOC_REDIS_PASSWORD", wrong),
                ("RECALLOC_FEATURIZER_METRICS_ADDR", &http.to_string()),
                ("RECALLOC_FEATURIZER_GROUP_ID", "wrong-password"),
            ],
        )
        .unwrap();
    let log = wait_log(&featurizer, "WRONGPASS", Duration::from_secs(40)).await;
    let not_ready = wait_ready(http, &mut featurizer, Duration::from_secs(2));
    assert!(not_ready.is_err(), "ready with a wrong redis password");
    assert!(
        log.contains("redis") && (log.contains("WRONGPASS") || log.contains("uthentication")),
        "{log}"
    );
    assert!(!log.contains(wrong) && !log.contains(PASSWORD), "{log}");
    // The rank binary too, at startup.
    let rank_http =
        std::net::SocketAddr::from(([127, 0, 0, 1], recalloc_integration_tests::free_port()));
    let rank_grpc =
        std::net::SocketAddr::from(([127, 0, 0, 1], recalloc_integration_tests::free_port()));
    let mut rank = c
        .spawn_with(
            "rank-wrong",
            "recalloc-rank",
            &[
                ("RECALLOC_REDIS_PASSWORD", wrong),
                ("RECALLOC_RANK_METRICS_ADDR", &rank_http.to_string()),
                ("RECALLOC_RANK_GRPC_ADDR", &rank_grpc.to_string()),
            ],
        )
        .unwrap();
    let log = wait_log(&rank, "WRONGPASS", Duration::from_secs(40)).await;
    assert!(log.contains("redis"), "{log}");
    assert!(!log.contains(wrong) && !log.contains(PASSWORD), "{log}");
    rank.terminate();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_main_flow_runs_over_tls_with_a_private_ca() {
    let mut c = Cluster::infra_with(RedisOptions {
        acl: acl(),
        tls: true,
        ..Default::default()
    })
    .unwrap();
    main_flow(&mut c).await;
    // Plain text to the TLS port gets nowhere.
    let plain = recalloc_common::config::RedisConfig {
        url: c.redis_url(),
        username: "recalloc-svc".into(),
        password: recalloc_common::auth::Secret::new(PASSWORD),
        ..Default::default()
    };
    let refused = tokio::time::timeout(
        Duration::from_secs(10),
        recalloc_common::redis_conn::connect(&plain),
    )
    .await;
    assert!(
        !matches!(refused, Ok(Ok(_))),
        "plain text reached TLS Redis"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_main_flow_and_rebuild_run_on_a_redis_cluster_with_models_spread_over_nodes() {
    let mut c = Cluster::infra_with(RedisOptions {
        cluster_primaries: 3,
        ..Default::default()
    })
    .unwrap();
    let mut con = main_flow(&mut c).await;
    let primaries = con.primaries().await.unwrap();
    assert_eq!(primaries.len(), 3, "{primaries:?}");

    // A model in 1 KiB chunks under a fixed version name: its chunk groups hash to slots on
    // more than one primary, while the bookkeeping stays in `{rc}`.
    let data = training::training_data(&mut con).await.unwrap();
    let params = TrainParams {
        factors: 256,
        iterations: 2,
        threads: 2,
        ..TrainParams::from_config(&Default::default(), Algorithm::ImplicitAls)
    };
    let (model, _) = train(&data, &params, "spread".into(), 1).unwrap();
    let meta = store::save_model(&mut con, &model, 1024, 5).await.unwrap();
    assert!(
        meta.chunks > 16,
        "{} chunks: too few to span groups",
        meta.chunks
    );
    let read = models::load_bytes(&mut con, "spread").await.unwrap();
    assert_eq!(read.len(), meta.bytes, "the spread model reads back");
    assert_eq!(store::decode_model("spread", &read).unwrap(), model);
    let mut nodes_with_chunks = 0;
    for node in &primaries {
        let keys: Vec<String> = {
            let mut found = Vec::new();
            let mut cursor = 0u64;
            loop {
                let mut cmd = redis::cmd("SCAN");
                cmd.arg(cursor).arg("MATCH").arg("rc:model-chunk:*");
                let (next, batch): (u64, Vec<String>) =
                    con.on_node(Some(node), &cmd).await.unwrap();
                found.extend(batch);
                if next == 0 {
                    break found;
                }
                cursor = next;
            }
        };
        nodes_with_chunks += usize::from(!keys.is_empty());
    }
    assert!(
        nodes_with_chunks >= 2,
        "model chunks on {nodes_with_chunks} node(s)"
    );

    // Rebuild wipes (a SCAN of every primary) and replays: the same counts come back.
    let before = settled_stats(&mut con, 119).await.unwrap();
    c.rebuild();
    let after = settled_stats(&mut con, 119).await.unwrap();
    assert_eq!(before, after);
    let users: u64 = redis::cmd("SCARD")
        .arg(derived::USERS)
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(users, 12);
}

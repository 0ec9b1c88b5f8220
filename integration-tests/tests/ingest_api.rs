//! The Ingest API against the real broker and Redis: duplicates, every validation rule, readiness
//! and metrics, a broker that dies mid-load, and a record written by a client that is not ours.

use recalloc_integration_tests::{
    Cluster, http_get, reflected_services, settled_stats, snapshot, wait_events, wait_quiet,
};
use recalloc_proto::v1::{
    Event, EventKind, Item, RecordEventsRequest, UpsertItemsRequest, UpsertUsersRequest, User,
};
use recalloc_store::{deadletter, derived};
use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn ev(id: &str, user: &str, item: &str, kind: EventKind, value: Option<f64>) -> Event {
    Event {
        event_id: id.into(),
        user_id: user.into(),
        item_id: item.into(),
        kind: kind as i32,
        value,
        timestamp_ms: now_ms() - 1000,
        context: HashMap::new(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn same_batch_twice_counts_once() {
    let c = Cluster::start().unwrap();
    let mut con = c.redis_con().await.unwrap();
    let mut client = c.grpc().await.unwrap();
    let ts = now_ms() - 5000;
    let mut batch = vec![
        ev("e1", "u1", "i1", EventKind::Rating, Some(4.0)),
        ev("e2", "u1", "i2", EventKind::Click, None),
        // No id: ingest derives one from the content, so the retry de-duplicates too.
        Event {
            event_id: String::new(),
            timestamp_ms: ts,
            ..ev("", "u2", "i1", EventKind::Purchase, Some(2.0))
        },
        // The same id twice inside one batch.
        ev("e1", "u1", "i1", EventKind::Rating, Some(4.0)),
    ];
    let r = client
        .record_events(RecordEventsRequest {
            events: batch.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.accepted, r.duplicates, r.filled), (3, 1, 1));
    wait_events(&mut con, 3, Duration::from_secs(60))
        .await
        .unwrap();
    let first = wait_quiet(&mut con, Duration::from_secs(60)).await.unwrap();
    let snap = snapshot(&mut con, &[]).await.unwrap();
    batch.pop();
    let r = client
        .record_events(RecordEventsRequest { events: batch })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        r.accepted, 3,
        "the broker gets the retry; the featurizer ignores it"
    );
    // A sentinel behind the retry in the same partition (same user) proves it was consumed.
    client
        .record_events(RecordEventsRequest {
            events: vec![ev("sentinel", "u1", "i9", EventKind::View, None)],
        })
        .await
        .unwrap();
    wait_events(&mut con, 4, Duration::from_secs(60))
        .await
        .unwrap();
    wait_quiet(&mut con, Duration::from_secs(60)).await.unwrap();
    let after = snapshot(&mut con, &[]).await.unwrap();
    assert_ne!(first, "");
    let stats: HashMap<String, u64> = redis::cmd("HGETALL")
        .arg(derived::STATS)
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(stats["events"], 4);
    assert_eq!(stats["ratings"], 1);
    let u2: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(derived::user_key("u2"))
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(u2["events"], "1");
    assert_eq!(
        snap[&derived::item_key("i1")],
        after[&derived::item_key("i1")]
    );
    assert_eq!(
        snap[&derived::user_key("u2")],
        after[&derived::user_key("u2")]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_inputs_get_their_documented_error_and_change_nothing() {
    let mut c = Cluster::infra().unwrap();
    c.extra_env
        .push(("RECALLOC_INGEST_MAX_BATCH".into(), "50".into()));
    c.start_ingest().unwrap();
    c.start_featurizer().unwrap();
    let mut con = c.redis_con().await.unwrap();
    let mut client = c.grpc().await.unwrap();
    let good = ev("ok-1", "u1", "i1", EventKind::Rating, Some(3.0));
    let cases: Vec<(Event, &str)> = vec![
        (
            Event {
                user_id: "".into(),
                ..good.clone()
            },
            "user_id: must not be empty",
        ),
        (
            Event {
                item_id: " ".into(),
                ..good.clone()
            },
            "item_id: must not be empty",
        ),
        (
            Event {
                user_id: "u".repeat(300),
                ..good.clone()
            },
            "user_id: is 300 bytes",
        ),
        (
            Event {
                event_id: "x\ny".into(),
                ..good.clone()
            },
            "event_id: must not contain control characters",
        ),
        (
            Event {
                kind: 0,
                ..good.clone()
            },
            "kind: must be set",
        ),
        (
            Event {
                kind: 42,
                ..good.clone()
            },
            "kind: unknown event kind 42",
        ),
        (
            Event {
                value: None,
                ..good.clone()
            },
            "value: is required for rating events",
        ),
        (
            Event {
                value: Some(9.0),
                ..good.clone()
            },
            "value: rating 9 is outside the scale [1, 5]",
        ),
        (
            Event {
                value: Some(f64::INFINITY),
                ..good.clone()
            },
            "value: must be a finite number",
        ),
        (
            Event {
                kind: EventKind::Click as i32,
                value: Some(-2.0),
                ..good.clone()
            },
            "value: must not be negative",
        ),
        (
            Event {
                timestamp_ms: 881_250_949,
                ..good.clone()
            },
            "looks like seconds",
        ),
        (
            Event {
                timestamp_ms: now_ms() + 3 * 86_400_000,
                ..good.clone()
            },
            "timestamp_ms:",
        ),
        (
            Event {
                timestamp_ms: -1,
                ..good.clone()
            },
            "timestamp_ms: must not be negative",
        ),
    ];
    for (e, want) in cases {
        let err = client
            .record_events(RecordEventsRequest { events: vec![e] })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{want}: {err:?}");
        assert!(
            err.message().contains("record 0") && err.message().contains(want),
            "want {want:?}, got {:?}",
            err.message()
        );
    }
    let err = client
        .record_events(RecordEventsRequest { events: vec![] })
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (tonic::Code::InvalidArgument, "events: empty batch")
    );
    let err = client
        .record_events(RecordEventsRequest {
            events: vec![good.clone(); 51],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message()
            .contains("batch of 51 records exceeds the limit of 50"),
        "{}",
        err.message()
    );
    let err = client
        .upsert_items(UpsertItemsRequest {
            items: vec![Item {
                item_id: "b1".into(),
                ..Default::default()
            }],
        })
        .await
        .unwrap_err();
    assert!(
        err.message().contains("title: must not be empty"),
        "{}",
        err.message()
    );
    let err = client
        .upsert_users(UpsertUsersRequest {
            users: vec![User {
                user_id: "u".into(),
                profile_text: "x".repeat(20_000),
                ..Default::default()
            }],
        })
        .await
        .unwrap_err();
    assert!(err.message().contains("profile_text"), "{}", err.message());

    // A mixed batch: the valid records are accepted, the others listed by index and field.
    let r = client
        .record_events(RecordEventsRequest {
            events: vec![
                good.clone(),
                Event {
                    item_id: "".into(),
                    ..good.clone()
                },
                ev("ok-2", "u2", "i1", EventKind::View, None),
            ],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.accepted, 2);
    assert_eq!(r.rejected.len(), 1);
    assert_eq!(
        (r.rejected[0].index, r.rejected[0].field.as_str()),
        (1, "item_id")
    );
    let stats = settled_stats(&mut con, 2).await.unwrap();
    assert_eq!(
        stats["events"], 2,
        "only the two valid events reached the state"
    );
    let items: Vec<String> = redis::cmd("SMEMBERS")
        .arg(derived::ITEMS)
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(items, vec!["i1".to_string()]);
}

#[tokio::test(flavor = "multi_thread")]
async fn readiness_health_reflection_and_metrics_follow_the_broker() {
    let mut c = Cluster::start().unwrap();
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", c.ingest_grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let serving =
        |s: i32| s == tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
    let req = || tonic_health::pb::HealthCheckRequest {
        service: "recalloc.v1.Ingest".into(),
    };
    assert!(serving(
        health.check(req()).await.unwrap().into_inner().status
    ));
    assert_eq!(http_get(c.ingest_http, "/readyz").unwrap().0, 200);
    assert_eq!(http_get(c.ingest_http, "/healthz").unwrap().0, 200);

    // Reflection lists exactly what the process serves.
    assert_eq!(
        reflected_services(c.ingest_grpc).await.unwrap(),
        [
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "recalloc.v1.Ingest"
        ]
    );

    let mut client = c.grpc().await.unwrap();
    client
        .record_events(RecordEventsRequest {
            events: vec![ev("m1", "u", "i", EventKind::View, None)],
        })
        .await
        .unwrap();
    let _ = client
        .record_events(RecordEventsRequest { events: vec![] })
        .await;
    let (code, metrics) = http_get(c.ingest_http, "/metrics").unwrap();
    assert_eq!(code, 200);
    assert!(
        metrics.contains(
            "recalloc_grpc_requests_total{method=\"/recalloc.v1.Ingest/RecordEvents\",code=\"0\",service=\"recalloc.v1.Ingest\"} 1"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "recalloc_grpc_requests_total{method=\"/recalloc.v1.Ingest/RecordEvents\",code=\"3\",service=\"recalloc.v1.Ingest\"} 1"
        ),
        "{metrics}"
    );
    assert!(metrics.contains("recalloc_grpc_request_duration_seconds{method=\"/recalloc.v1.Ingest/RecordEvents\",quantile=\"0.99\"}"), "{metrics}");
    assert!(
        metrics.contains(
            "recalloc_ingest_records_total{topic=\"recalloc.events.v1\",outcome=\"accepted\"} 1"
        ),
        "{metrics}"
    );

    // Lose the broker: both services report not ready, on HTTP and on grpc.health.v1.
    c.broker.as_mut().unwrap().kill9();
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let ingest_down = http_get(c.ingest_http, "/readyz").unwrap().0 == 503;
        let feat_down = http_get(c.featurizer_http, "/readyz").unwrap().0 == 503;
        if ingest_down && feat_down {
            break;
        }
        assert!(
            Instant::now() < end,
            "readiness did not notice the dead broker"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!serving(
        health.check(req()).await.unwrap().into_inner().status
    ));
    // …while the liveness service a Kubernetes liveness probe asks stays SERVING: a lost broker
    // makes the pod unready, it does not get it restarted.
    let liveness = tonic_health::pb::HealthCheckRequest {
        service: recalloc_common::health::LIVENESS.into(),
    };
    assert!(serving(
        health.check(liveness).await.unwrap().into_inner().status
    ));
    c.start_broker().unwrap();
    let end = Instant::now() + Duration::from_secs(60);
    while http_get(c.ingest_http, "/readyz").unwrap().0 != 200 {
        assert!(
            Instant::now() < end,
            "ingest not ready again after the broker came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(serving(
        health.check(req()).await.unwrap().into_inner().status
    ));

    // Graceful shutdown exits 0.
    let status = c.ingest.as_mut().unwrap().terminate().unwrap();
    assert!(status.success(), "ingest exit status {status:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn broker_stopped_mid_load_loses_nothing_acknowledged() {
    let mut c = Cluster::infra().unwrap();
    c.extra_env
        .push(("RECALLOC_KAFKA_MESSAGE_TIMEOUT_MS".into(), "4000".into()));
    c.start_ingest().unwrap();
    c.start_featurizer().unwrap();
    let mut con = c.redis_con().await.unwrap();
    let client = c.grpc().await.unwrap();
    let sender = tokio::spawn(async move {
        let mut client = client;
        let mut acked: Vec<String> = Vec::new();
        let mut unavailable = Vec::new();
        for b in 0..60 {
            let events: Vec<Event> = (0..200)
                .map(|i| {
                    ev(
                        &format!("b{b}-{i}"),
                        &format!("u{}", i % 37),
                        &format!("i{}", i % 11),
                        EventKind::Click,
                        Some(1.0),
                    )
                })
                .collect();
            let ids: Vec<String> = events.iter().map(|e| e.event_id.clone()).collect();
            match client.record_events(RecordEventsRequest { events }).await {
                Ok(r) => {
                    assert_eq!(r.into_inner().accepted, 200);
                    acked.extend(ids);
                }
                Err(s) => {
                    assert_eq!(s.code(), tonic::Code::Unavailable, "{s:?}");
                    assert!(
                        s.message().contains("not acknowledged by the broker"),
                        "{}",
                        s.message()
                    );
                    unavailable.push(b);
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        (acked, unavailable)
    });
    // Let some batches through, then stop the broker for longer than the message timeout.
    wait_events(&mut con, 400, Duration::from_secs(60))
        .await
        .unwrap();
    c.broker.as_mut().unwrap().kill9();
    tokio::time::sleep(Duration::from_secs(7)).await;
    c.start_broker().unwrap();
    let (acked, unavailable) = sender.await.unwrap();
    assert!(!unavailable.is_empty(), "no call saw the broker down");
    assert!(acked.len() >= 400);
    // Everything acknowledged reaches Redis once the broker is back.
    // On a timeout, still name the missing events below.
    let _ = wait_events(&mut con, acked.len() as u64, Duration::from_secs(180)).await;
    wait_quiet(&mut con, Duration::from_secs(60)).await.unwrap();
    let mut pipe = redis::pipe();
    for id in &acked {
        let i: u32 = id.split('-').nth(1).unwrap().parse().unwrap();
        pipe.zscore(derived::user_recent_key(&format!("u{}", i % 37)), id);
    }
    let scores: Vec<Option<f64>> = pipe.query_async(&mut con).await.unwrap();
    let present: Vec<bool> = scores.iter().map(Option::is_some).collect();
    let lost: Vec<&String> = acked
        .iter()
        .zip(&present)
        .filter(|(_, p)| !**p)
        .map(|(id, _)| id)
        .collect();
    let batches: std::collections::BTreeSet<&str> = lost
        .iter()
        .map(|id| id.split('-').next().unwrap())
        .collect();
    let in_log = if lost.is_empty() {
        0
    } else {
        count_in_log(&c.brokers(), &lost)
    };
    assert!(
        lost.is_empty(),
        "{in_log} of them are in the topic; {} acknowledged events lost, from batches {batches:?} (unavailable: {unavailable:?})",
        lost.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_record_from_python_confluent_kafka_is_consumed() {
    let c = Cluster::start().unwrap();
    let mut con = c.redis_con().await.unwrap();
    c.python_producer(
        r#"
now = int(time.time() * 1000)
item = pb.ItemRecord(item=pb.Item(item_id="py-book", title="Written by Python", tags=["python"]), updated_at_ms=now)
p.produce("recalloc.items.v1", key="py-book", value=item.SerializeToString())
ev = pb.EventRecord(event_id="py-1", user_id="py-user", item_id="py-book", kind=pb.EVENT_KIND_RATING,
                    raw_value=5.0, value=5.0, normalized_value=1.0, timestamp_ms=now)
p.produce("recalloc.events.v1", key="py-user", value=ev.SerializeToString())
p.produce("recalloc.events.v1", key="py-user", value=b"\xff\xff not protobuf")
"#,
    );
    wait_events(&mut con, 1, Duration::from_secs(60))
        .await
        .unwrap();
    wait_quiet(&mut con, Duration::from_secs(30)).await.unwrap();
    let user: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(derived::user_key("py-user"))
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(user["events"], "1");
    assert_eq!(user["mean_rating"].parse::<f64>().unwrap(), 5.0);
    let item: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(derived::item_key("py-book"))
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(item["title"], "Written by Python");
    assert_eq!(item["tags"], "[\"python\"]");
    // The undecodable record is parked, not applied and not blocking.
    let dead: Vec<String> = redis::cmd("LRANGE")
        .arg(deadletter::DEADLETTER)
        .arg(0)
        .arg(-1)
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert!(dead[0].contains("not a valid EventRecord"), "{}", dead[0]);
}

#[tokio::test(flavor = "multi_thread")]
async fn streamed_batches_are_indexed_across_the_stream() {
    let c = Cluster::start().unwrap();
    let mut con = c.redis_con().await.unwrap();
    let mut client = c.grpc().await.unwrap();
    let batches = vec![
        RecordEventsRequest {
            events: vec![
                ev("s1", "u1", "i1", EventKind::View, None),
                ev("s2", "u1", "i2", EventKind::View, None),
            ],
        },
        RecordEventsRequest {
            events: vec![
                ev("s3", "u2", "i1", EventKind::Purchase, Some(2.0)),
                Event {
                    user_id: "".into(),
                    ..ev("s4", "u2", "i1", EventKind::View, None)
                },
                // A duplicate of a record of the first batch.
                ev("s1", "u1", "i1", EventKind::View, None),
            ],
        },
    ];
    let r = client
        .stream_events(tokio_stream::iter(batches))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.accepted, r.duplicates), (3, 1));
    assert_eq!(r.rejected.len(), 1);
    assert_eq!(
        (r.rejected[0].index, r.rejected[0].field.as_str()),
        (3, "user_id")
    );
    let stats = settled_stats(&mut con, 3).await.unwrap();
    assert_eq!(stats["events"], 3);
}

/// How many of `ids` the events topic holds, read with an independent consumer from offset 0.
fn count_in_log(brokers: &str, ids: &[&String]) -> usize {
    use prost::Message as _;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "log-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..4 {
        tpl.add_partition_offset("recalloc.events.v1", p, rdkafka::Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let wanted: std::collections::HashSet<&str> = ids.iter().map(|s| s.as_str()).collect();
    let mut found = 0;
    let end = Instant::now() + Duration::from_secs(30);
    while Instant::now() < end {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(500)) {
            let rec =
                recalloc_proto::v1::EventRecord::decode(m.payload().unwrap_or_default()).unwrap();
            if wanted.contains(rec.event_id.as_str()) {
                found += 1;
            }
        }
    }
    found
}

/// The exactly-once guard remembers an event id for `featurizer.dedup_window_s` after the event
/// was produced, judged by the records' Kafka timestamps (not the clock, so a replay decides the
/// same): a copy inside the window is ignored, one produced later counts again, and the user's
/// guard holds only the ids of the last window, so its memory is bounded.
#[tokio::test(flavor = "multi_thread")]
async fn the_exactly_once_guard_remembers_an_id_for_one_window() {
    use prost::Message;
    use rdkafka::producer::{FutureProducer, FutureRecord};
    use recalloc_proto::v1::EventRecord;

    let mut c = Cluster::infra().unwrap();
    c.extra_env = vec![("RECALLOC_FEATURIZER_DEDUP_WINDOW_S".into(), "60".into())];
    c.start_featurizer().unwrap();
    let mut con = c.redis_con().await.unwrap();
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", c.brokers())
        .set("message.timeout.ms", "10000")
        .create()
        .unwrap();
    // An hour ago: only the produce times matter, not how long ago they were.
    let t0 = now_ms() - 3_600_000;
    // (event id, produced this many seconds after t0), one user, so one partition, in order.
    let sends = [
        ("a", 0),   // applied
        ("a", 30),  // a copy inside the window: ignored
        ("b", 40),  // applied
        ("a", 61),  // the first `a` is more than 60 s older: forgotten, so this counts
        ("c", 200), // applied; `a` and `b` are now out of the window
    ];
    for (id, s) in sends {
        let at = t0 + s * 1000;
        let record = EventRecord {
            event_id: id.into(),
            user_id: "w".into(),
            item_id: format!("i-{id}"),
            kind: EventKind::View as i32,
            value: 1.0,
            normalized_value: 1.0,
            timestamp_ms: at,
            ..Default::default()
        };
        let payload = record.encode_to_vec();
        producer
            .send(
                FutureRecord::to(recalloc_proto::topics::EVENTS)
                    .key("w")
                    .payload(&payload)
                    .timestamp(at),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
    let stats = settled_stats(&mut con, 4).await.unwrap();
    assert_eq!(stats["events"], 4, "a, b, a again after the window, c");
    let user: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(derived::user_key("w"))
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(user["events"], "4");
    let guard: Vec<(String, i64)> = redis::cmd("ZRANGE")
        .arg(derived::user_recent_key("w"))
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(
        guard,
        vec![("c".to_string(), t0 + 200_000)],
        "one window of ids"
    );
    let ttl_ms: i64 = redis::cmd("PTTL")
        .arg(derived::user_recent_key("w"))
        .query_async(&mut con)
        .await
        .unwrap();
    assert!(
        (1..=60_000).contains(&ttl_ms),
        "the guard expires a window after its last write: {ttl_ms}"
    );
}

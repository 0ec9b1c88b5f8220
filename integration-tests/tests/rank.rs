//! The rank service against real Redis, broker and featurizer: training from ingested events,
//! the model's exact round trip through Redis, every recommendation source, the documented
//! errors, batch equals single, and a hot swap under concurrent load that fails no request and
//! reaches a second replica.

use recalloc_factor::model::Algorithm;
use recalloc_integration_tests::{Cluster, wait_events, wait_quiet};
use recalloc_proto::v1::{
    Event, EventKind, ExplainRequest, GetModelInfoRequest, Item, ItemFilter, PredictRequest,
    RecommendBatchRequest, RecommendRequest, RecommendationSource, SimilarItemsRequest,
    TrainRequest, UpsertItemsRequest,
};
use recalloc_rank::store;
use recalloc_rank::trainer::{TrainParams, train};
use recalloc_store::vectors::{Encoding, encode};
use recalloc_store::{models, training, vector_store};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};
use tonic::Code;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn req(user: &str, k: u32) -> RecommendRequest {
    RecommendRequest {
        user_id: user.into(),
        k,
        exclude_seen: true,
        filter: None,
    }
}

/// 30 items in two tagged groups with 8-dimensional text vectors (written as the embed service
/// would), 40 users who each consume from their own group. Returns the number of events.
async fn load(c: &Cluster) -> u64 {
    let mut ingest = c.grpc().await.unwrap();
    let items: Vec<Item> = (0..30)
        .map(|i| Item {
            item_id: format!("i{i}"),
            title: format!("Book {i}"),
            tags: vec![if i < 15 { "a" } else { "b" }.into()],
            ..Default::default()
        })
        .collect();
    ingest
        .upsert_items(UpsertItemsRequest { items })
        .await
        .unwrap();
    let mut events = Vec::new();
    let t = now_ms() - 3_600_000;
    for u in 0..40 {
        let group = if u < 20 { 0 } else { 15 };
        for j in 0..6 {
            let item = group + (u * 7 + j * 3) % 15;
            events.push(Event {
                event_id: format!("e{u}-{j}"),
                user_id: format!("u{u}"),
                item_id: format!("i{item}"),
                kind: if j % 2 == 0 {
                    EventKind::Purchase
                } else {
                    EventKind::View
                } as i32,
                value: None,
                timestamp_ms: t + j as i64,
                context: HashMap::new(),
            });
        }
    }
    let n = events.len() as u64;
    ingest
        .record_events(recalloc_proto::v1::RecordEventsRequest { events })
        .await
        .unwrap();
    let mut con = c.redis_con().await.unwrap();
    wait_events(&mut con, n, Duration::from_secs(60))
        .await
        .unwrap();
    wait_quiet(&mut con, Duration::from_secs(60)).await.unwrap();
    let mut pipe = redis::pipe();
    for i in 0..30 {
        let mut v = vec![0f32; 8];
        v[if i < 15 { 0 } else { 1 }] = 1.0;
        v[2 + i % 6] = 0.5;
        pipe.cmd("HSET")
            .arg(vector_store::item_vector_key(&format!("i{i}")))
            .arg(vector_store::VECTOR_FIELD)
            .arg(encode(&v, Encoding::F32))
            .ignore();
    }
    let mut text = vec![0f32; 8];
    text[1] = 1.0;
    pipe.cmd("HSET")
        .arg(vector_store::user_vector_key("texty"))
        .arg(vector_store::VECTOR_FIELD)
        .arg(encode(&text, Encoding::F32))
        .ignore();
    pipe.query_async::<()>(&mut con).await.unwrap();
    n
}

#[tokio::test(flavor = "multi_thread")]
async fn trains_serves_every_source_and_answers_bad_input_with_its_documented_error() {
    let mut c = Cluster::start().unwrap();
    c.start_rank().unwrap();
    let mut rank = c.rank_client().await.unwrap();
    let e = rank.recommend(req("u1", 5)).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{}", e.message());
    let e = rank.train(TrainRequest::default()).await.unwrap_err();
    assert_eq!(
        e.code(),
        Code::FailedPrecondition,
        "nothing to train on: {}",
        e.message()
    );

    load(&c).await;
    let t = rank
        .train(TrainRequest::default())
        .await
        .unwrap()
        .into_inner();
    let info = t.model.unwrap();
    assert_eq!((info.users, info.items, info.factors), (40, 30, 64));

    // The model round trip through Redis is exact.
    let mut con = c.redis_con().await.unwrap();
    let data = training::training_data(&mut con).await.unwrap();
    let p = TrainParams {
        factors: 8,
        iterations: 5,
        threads: 2,
        ..TrainParams::from_config(&Default::default(), Algorithm::Hybrid)
    };
    let (model, _) = train(&data, &p, "roundtrip".into(), 1).unwrap();
    assert_eq!(model.text_dim, 8);
    store::save_model(&mut con, &model, 4096, 5).await.unwrap();
    let bytes = models::load_bytes(&mut con, "roundtrip").await.unwrap();
    assert_eq!(store::decode_model("roundtrip", &bytes).unwrap(), model);
    // Tampering is detected.
    let _: () = redis::cmd("SETRANGE")
        .arg(models::chunk_key("roundtrip", 0))
        .arg(10)
        .arg("x")
        .query_async(&mut con)
        .await
        .unwrap();
    assert!(models::load_bytes(&mut con, "roundtrip").await.is_err());
    // Put the served model back as current (the tampered one must not be loaded).
    rank.train(TrainRequest::default()).await.unwrap();

    // MODEL: a known user gets unseen items of their own group, with titles.
    let r = rank.recommend(req("u3", 5)).await.unwrap().into_inner();
    assert_eq!(r.source, RecommendationSource::Model as i32);
    assert_eq!(r.items.len(), 5);
    let seen: HashSet<String> = (0..6)
        .map(|j| format!("i{}", (3 * 7 + j * 3) % 15))
        .collect();
    assert!(r.items.iter().all(|i| !seen.contains(&i.item_id)));
    assert!(r.items.iter().all(|i| i.title.starts_with("Book ")));
    let own_group = r
        .items
        .iter()
        .filter(|i| i.item_id[1..].parse::<u32>().unwrap() < 15)
        .count();
    assert!(own_group >= 3, "{:?}", r.items);

    // FOLD_IN: a user who arrived after training.
    let mut ingest = c.grpc().await.unwrap();
    ingest
        .record_events(recalloc_proto::v1::RecordEventsRequest {
            events: (0..3)
                .map(|j| Event {
                    event_id: format!("late-{j}"),
                    user_id: "late".into(),
                    item_id: format!("i{}", 16 + j),
                    kind: EventKind::Purchase as i32,
                    value: None,
                    timestamp_ms: now_ms() - 1000,
                    context: HashMap::new(),
                })
                .collect(),
        })
        .await
        .unwrap();
    let mut fold = None;
    for _ in 0..100 {
        let r = rank.recommend(req("late", 5)).await.unwrap().into_inner();
        if r.source == RecommendationSource::FoldIn as i32 {
            fold = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let fold = fold.expect("the late user is folded in once the featurizer applied the events");
    assert!(
        fold.items
            .iter()
            .all(|i| !["i16", "i17", "i18"].contains(&i.item_id.as_str()))
    );
    let b_group = fold
        .items
        .iter()
        .filter(|i| i.item_id[1..].parse::<u32>().unwrap() >= 15)
        .count();
    assert!(
        b_group >= 3,
        "fold-in follows the history: {:?}",
        fold.items
    );

    // TEXT and POPULAR.
    let r = rank.recommend(req("texty", 3)).await.unwrap().into_inner();
    assert_eq!(r.source, RecommendationSource::Text as i32);
    assert!(
        r.items
            .iter()
            .all(|i| i.item_id[1..].parse::<u32>().unwrap() >= 15)
    );
    let r = rank
        .recommend(req("stranger", 3))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.source, RecommendationSource::Popular as i32);
    assert_eq!(r.items.len(), 3);

    // k beyond the catalogue: every unseen item. Filters.
    let r = rank.recommend(req("u3", 1000)).await.unwrap().into_inner();
    assert_eq!(r.items.len(), 30 - seen.len());
    let r = rank
        .recommend(RecommendRequest {
            filter: Some(ItemFilter {
                include_tags: vec!["b".into()],
                exclude_items: vec!["i20".into(), "not-an-item".into()],
                ..Default::default()
            }),
            ..req("u3", 100)
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.items.len(), 14);
    assert!(r.items.iter().all(|i| i.item_id != "i20"));

    // Documented errors.
    let bad = |code: Code, field: &str, s: tonic::Status| {
        assert_eq!(s.code(), code, "{}", s.message());
        assert!(s.message().starts_with(field), "{}", s.message());
    };
    bad(
        Code::InvalidArgument,
        "k",
        rank.recommend(req("u3", 0)).await.unwrap_err(),
    );
    bad(
        Code::InvalidArgument,
        "user_id",
        rank.recommend(req("", 3)).await.unwrap_err(),
    );
    bad(
        Code::InvalidArgument,
        "filter.include_items",
        rank.recommend(RecommendRequest {
            filter: Some(ItemFilter {
                include_items: vec!["zzz".into()],
                ..Default::default()
            }),
            ..req("u3", 3)
        })
        .await
        .unwrap_err(),
    );
    bad(
        Code::InvalidArgument,
        "filter.exclude_tags[1]",
        rank.recommend(RecommendRequest {
            filter: Some(ItemFilter {
                exclude_tags: vec!["a".into(), "".into()],
                ..Default::default()
            }),
            ..req("u3", 3)
        })
        .await
        .unwrap_err(),
    );
    let e = rank
        .predict(PredictRequest {
            user_id: "u3".into(),
            item_id: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = rank
        .similar_items(SimilarItemsRequest {
            item_id: "i1".into(),
            k: 0,
            by_text: false,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let sim = rank
        .similar_items(SimilarItemsRequest {
            item_id: "i1".into(),
            k: 3,
            by_text: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        sim.items
            .iter()
            .all(|i| i.item_id[1..].parse::<u32>().unwrap() < 15)
    );
    let e = rank
        .train(TrainRequest {
            regularization: -1.0,
            ..Default::default()
        })
        .await
        .unwrap_err();
    bad(Code::InvalidArgument, "regularization", e);

    // Explain: the user's own history items, largest first.
    let top = rank
        .recommend(req("u3", 1))
        .await
        .unwrap()
        .into_inner()
        .items[0]
        .item_id
        .clone();
    let ex = rank
        .explain(ExplainRequest {
            user_id: "u3".into(),
            item_id: top,
            k: 3,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ex.contributions.len(), 3);
    assert!(ex.contributions.iter().all(|i| seen.contains(&i.item_id)));
    assert!(
        ex.contributions
            .windows(2)
            .all(|w| w[0].score >= w[1].score)
    );
    let e = rank
        .explain(ExplainRequest {
            user_id: "stranger".into(),
            item_id: "i1".into(),
            k: 3,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);

    // A batch gives what single calls give.
    let users: Vec<String> = (0..40).map(|u| format!("u{u}")).collect();
    let batch = rank
        .recommend_batch(RecommendBatchRequest {
            requests: users.iter().map(|u| req(u, 5)).collect(),
        })
        .await
        .unwrap()
        .into_inner();
    for (u, b) in users.iter().zip(&batch.responses) {
        let single = rank.recommend(req(u, 5)).await.unwrap().into_inner();
        let ids = |r: &recalloc_proto::v1::RecommendResponse| {
            r.items
                .iter()
                .map(|i| i.item_id.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(b), ids(&single), "user {u}");
    }

    // A rebuild from the topics keeps the trained models (the log cannot bring them back).
    let out = c.cli(&["rebuild"]).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let current: Option<String> = redis::cmd("GET")
        .arg(models::CURRENT)
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(
        current.as_deref(),
        Some(info_version(&mut rank).await.as_str())
    );
    assert_eq!(
        rank.recommend(req("u3", 5))
            .await
            .unwrap()
            .into_inner()
            .items
            .len(),
        5
    );
}

async fn info_version(
    rank: &mut recalloc_proto::v1::ranker_client::RankerClient<tonic::transport::Channel>,
) -> String {
    rank.get_model_info(GetModelInfoRequest {})
        .await
        .unwrap()
        .into_inner()
        .version
}

#[tokio::test(flavor = "multi_thread")]
async fn hot_swap_under_load_fails_no_request_and_reaches_every_replica() {
    let mut c = Cluster::start().unwrap();
    c.extra_env = vec![("RECALLOC_RANK_POLL_INTERVAL_MS".into(), "200".into())];
    c.start_rank().unwrap();
    load(&c).await;
    let mut rank = c.rank_client().await.unwrap();
    let first = rank
        .train(TrainRequest::default())
        .await
        .unwrap()
        .into_inner()
        .model
        .unwrap()
        .version;
    let (_replica, replica_addr) = c.spawn_rank_replica().unwrap();
    let mut replica =
        recalloc_proto::v1::ranker_client::RankerClient::connect(format!("http://{replica_addr}"))
            .await
            .unwrap();

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let versions = Arc::new(std::sync::Mutex::new(HashSet::new()));
    let mut clients = Vec::new();
    for n in 0..4 {
        let (stop, ok, versions) = (stop.clone(), ok.clone(), versions.clone());
        let mut client = if n % 2 == 0 {
            rank.clone()
        } else {
            replica.clone()
        };
        clients.push(tokio::spawn(async move {
            let mut u = n;
            while !stop.load(Ordering::Relaxed) {
                let r = client
                    .recommend(req(&format!("u{}", u % 40), 5))
                    .await
                    .expect("no request fails during a swap")
                    .into_inner();
                assert_eq!(r.items.len(), 5);
                versions.lock().unwrap().insert(r.model_version);
                ok.fetch_add(1, Ordering::Relaxed);
                u += 4;
            }
        }));
    }
    // Two retrains while the clients run; the replica picks each up by polling.
    let mut last = first.clone();
    for factors in [16, 32] {
        tokio::time::sleep(Duration::from_millis(300)).await;
        last = rank
            .train(TrainRequest {
                factors,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .model
            .unwrap()
            .version;
    }
    let mut caught_up = false;
    for _ in 0..50 {
        let v = replica
            .get_model_info(GetModelInfoRequest {})
            .await
            .unwrap()
            .into_inner()
            .version;
        if v == last {
            caught_up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for t in clients {
        t.await.unwrap();
    }
    assert!(caught_up, "the replica loaded {last}");
    let seen = versions.lock().unwrap().clone();
    assert!(seen.len() >= 2, "requests saw versions {seen:?}");
    assert!(ok.load(Ordering::Relaxed) > 50);
    // Only `keep_versions` (2) versions stay in Redis.
    let mut con = c.redis_con().await.unwrap();
    let kept: Vec<String> = redis::cmd("ZRANGE")
        .arg(models::VERSIONS)
        .arg(0)
        .arg(-1)
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert!(!kept.contains(&first));
    let mut orphans = con.scan_match(&models::meta_key(&first)).await.unwrap();
    orphans.extend(
        con.scan_match(&format!("rc:model-chunk:{{{first}/*"))
            .await
            .unwrap(),
    );
    assert!(orphans.is_empty(), "{orphans:?}");
}

/// A reader with 1,000 events on the 1,000 most popular books, under a history cap of 200:
/// training sees only the newest 200, yet `exclude_seen` leaves out all 1,000 (the seen set),
/// and books read after training too, in Recommend and RecommendBatch alike.
#[tokio::test(flavor = "multi_thread")]
async fn exclude_seen_holds_for_every_item_ever_read_whatever_the_history_cap() {
    let mut c = Cluster::infra().unwrap();
    c.extra_env = vec![("RECALLOC_FEATURIZER_HISTORY_LEN".into(), "200".into())];
    c.start_ingest().unwrap();
    c.start_featurizer().unwrap();
    c.start_rank().unwrap();
    let mut ingest = c.grpc().await.unwrap();
    let t = now_ms() - 86_400_000;
    let event = |id: String, user: String, item: usize, at: i64| Event {
        event_id: id,
        user_id: user,
        item_id: format!("p{item}"),
        kind: EventKind::Purchase as i32,
        value: None,
        timestamp_ms: at,
        context: HashMap::new(),
    };
    // 1,200 books; 40 other readers, whose reading makes p0 the most popular and p1199 the
    // least (reader b reads p0 … p(1199 - 25 b)).
    let books: Vec<Item> = (0..1200)
        .map(|i| Item {
            item_id: format!("p{i}"),
            title: format!("Book {i}"),
            ..Default::default()
        })
        .collect();
    ingest
        .upsert_items(UpsertItemsRequest { items: books })
        .await
        .unwrap();
    let mut events = Vec::new();
    for b in 0..40usize {
        for item in (0..1200 - 25 * b).step_by(7 + b % 5) {
            events.push(event(format!("bg{b}-{item}"), format!("b{b}"), item, t));
        }
    }
    // The reader: the 1,000 most popular, oldest first.
    for item in 0..1000 {
        events.push(event(
            format!("r-{item}"),
            "reader".into(),
            item,
            t + item as i64,
        ));
    }
    let n = events.len() as u64;
    for chunk in events.chunks(500) {
        ingest
            .record_events(recalloc_proto::v1::RecordEventsRequest {
                events: chunk.to_vec(),
            })
            .await
            .unwrap();
    }
    let mut con = c.redis_con().await.unwrap();
    wait_events(&mut con, n, Duration::from_secs(120))
        .await
        .unwrap();
    wait_quiet(&mut con, Duration::from_secs(60)).await.unwrap();
    let hist: usize = redis::cmd("LLEN")
        .arg(recalloc_store::derived::user_history_key("reader"))
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(hist, 200, "the history list is capped");
    assert_eq!(
        recalloc_store::seen::seen_count(&mut con, "reader")
            .await
            .unwrap(),
        1000
    );

    let mut rank = c.rank_client().await.unwrap();
    rank.train(TrainRequest {
        factors: 8,
        ..Default::default()
    })
    .await
    .unwrap();
    let seen_by = |upto: usize| move |id: &str| id[1..].parse::<usize>().unwrap() < upto;
    let answer = |r: recalloc_proto::v1::RecommendResponse| -> Vec<String> {
        r.items.into_iter().map(|i| i.item_id).collect()
    };
    let got = answer(
        rank.recommend(req("reader", 100))
            .await
            .unwrap()
            .into_inner(),
    );
    assert_eq!(got.len(), 100);
    assert!(
        !got.iter().any(|i| seen_by(1000)(i)),
        "seen items served: {got:?}"
    );
    // Without exclude_seen the model's favourites include books the reader has read.
    let mut all = req("reader", 100);
    all.exclude_seen = false;
    let plain = answer(rank.recommend(all).await.unwrap().into_inner());
    assert!(plain.iter().any(|i| seen_by(1000)(i)), "{plain:?}");

    // Ten more books read after training: excluded from the next answers too.
    let more: Vec<Event> = (1000..1010)
        .map(|item| event(format!("r-{item}"), "reader".into(), item, now_ms()))
        .collect();
    ingest
        .record_events(recalloc_proto::v1::RecordEventsRequest { events: more })
        .await
        .unwrap();
    wait_events(&mut con, n + 10, Duration::from_secs(60))
        .await
        .unwrap();
    let got = answer(
        rank.recommend(req("reader", 150))
            .await
            .unwrap()
            .into_inner(),
    );
    assert_eq!(got.len(), 150);
    assert!(!got.iter().any(|i| seen_by(1010)(i)), "{got:?}");
    let batch = rank
        .recommend_batch(RecommendBatchRequest {
            requests: vec![req("reader", 150), req("b3", 10)],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer(batch.responses[0].clone()), got, "batch = single");
    assert_eq!(batch.responses[1].items.len(), 10);
    // k above what is left: every unseen book, and only those (1,200 − 1,010).
    let got = answer(
        rank.recommend(req("reader", 1000))
            .await
            .unwrap()
            .into_inner(),
    );
    assert_eq!(got.len(), 190);
    assert!(!got.iter().any(|i| seen_by(1010)(i)));
}

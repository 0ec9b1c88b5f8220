//! The embed service against the real model, Redis and broker: the API and its errors, batching
//! under concurrency, back-pressure, the worker's idempotent re-consumption, the sweep, profile
//! fusion through the API, and a missing model.

use recalloc_common::redis_conn::RedisConnection;
use recalloc_integration_tests::{Cluster, http_get, snapshot, wait_ready};
use recalloc_proto::v1::{
    EmbedRequest, Event, EventKind, GetEmbedModelInfoRequest, GetItemVectorRequest,
    GetUserProfileRequest, Item, RecordEventsRequest, UpsertItemsRequest, UpsertUsersRequest, User,
};
use recalloc_store::vector_store;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant, SystemTime};
use tonic::Code;

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let d: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let n = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    d / (n(a) * n(b))
}

fn texts(v: &[&str]) -> EmbedRequest {
    EmbedRequest {
        texts: v.iter().map(|s| s.to_string()).collect(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn embed_api_answers_in_order_and_names_bad_fields() {
    let mut c = Cluster::infra().unwrap();
    c.extra_env = vec![
        ("RECALLOC_EMBED_MAX_REQUEST_TEXTS".into(), "100".into()),
        ("RECALLOC_EMBED_MAX_TEXT_BYTES".into(), "1000".into()),
    ];
    c.start_embed().unwrap();
    let mut client = c.embed_client().await.unwrap();

    let info = client
        .get_model_info(GetEmbedModelInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (info.model.as_str(), info.dimension, info.max_seq_length),
        ("all-MiniLM-L6-v2", 384, 256)
    );

    let r = client
        .embed(texts(&["a book about whales", "", "a book about whales"]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.model.as_str(), r.dimension), ("all-MiniLM-L6-v2", 384));
    assert_eq!(r.vectors.len(), 3);
    assert!(r.vectors.iter().all(|v| v.values.len() == 384));
    assert!(cosine(&r.vectors[0].values, &r.vectors[2].values) > 0.99999);
    assert!(cosine(&r.vectors[0].values, &r.vectors[1].values) < 0.9);

    // Concurrent callers, each with its own texts, get their own vectors in their order: each
    // equals the vector of the same text encoded alone.
    let singles: Vec<String> = (0..24)
        .map(|i| format!("title number {i} {}", "word ".repeat(i % 9)))
        .collect();
    let mut alone = Vec::new();
    for t in &singles {
        alone.push(
            client
                .embed(texts(&[t]))
                .await
                .unwrap()
                .into_inner()
                .vectors[0]
                .values
                .clone(),
        );
    }
    let mut tasks = Vec::new();
    for caller in 0..8 {
        let mut client = client.clone();
        let mine: Vec<String> = (0..24)
            .map(|k| singles[(k * 5 + caller) % 24].clone())
            .collect();
        tasks.push(tokio::spawn(async move {
            let r = client
                .embed(EmbedRequest {
                    texts: mine.clone(),
                })
                .await
                .unwrap()
                .into_inner();
            (caller, r.vectors)
        }));
    }
    for t in tasks {
        let (caller, vectors) = t.await.unwrap();
        for (k, v) in vectors.iter().enumerate() {
            let want = &alone[(k * 5 + caller) % 24];
            assert!(
                cosine(&v.values, want) > 0.99999,
                "caller {caller} text {k}"
            );
        }
    }

    let e = client.embed(texts(&[])).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("texts: "), "{}", e.message());
    let many = vec!["x"; 101];
    let e = client.embed(texts(&many)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().contains("texts") && e.message().contains("100"),
        "{}",
        e.message()
    );
    let long = "y".repeat(1001);
    let e = client.embed(texts(&["ok", &long])).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().starts_with("texts[1]: 1001 bytes"),
        "{}",
        e.message()
    );

    let e = client
        .get_item_vector(GetItemVectorRequest {
            item_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("item_id"));
    let e = client
        .get_item_vector(GetItemVectorRequest {
            item_id: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = client
        .get_user_profile(GetUserProfileRequest {
            user_id: "nobody".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);

    // The service still answers after the errors, and its metrics show the batching.
    assert_eq!(
        client
            .embed(texts(&["still fine"]))
            .await
            .unwrap()
            .into_inner()
            .vectors
            .len(),
        1
    );
    let (status, metrics) = http_get(c.embed_http, "/metrics").unwrap();
    assert_eq!(status, 200);
    for m in [
        "recalloc_embed_texts_total",
        "recalloc_embed_batches_total",
        "recalloc_embed_queue_depth",
        "recalloc_embed_batch_duration_seconds",
    ] {
        assert!(metrics.contains(m), "{m} missing from /metrics");
    }
    assert_eq!(
        c.embed.as_mut().unwrap().terminate().map(|s| s.success()),
        Some(true),
        "SIGTERM exits 0"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_queue_answers_resource_exhausted_and_loses_nothing_accepted() {
    let mut c = Cluster::infra().unwrap();
    c.extra_env = vec![
        ("RECALLOC_EMBED_QUEUE_CAPACITY".into(), "64".into()),
        ("RECALLOC_EMBED_WORKERS".into(), "1".into()),
        ("RECALLOC_EMBED_MAX_BATCH_SIZE".into(), "8".into()),
    ];
    c.start_embed().unwrap();
    let client = c.embed_client().await.unwrap();
    let text = "a long text ".repeat(40);
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let mut client = client.clone();
        let req = EmbedRequest {
            texts: vec![text.clone(); 40],
        };
        tasks.push(tokio::spawn(async move { client.embed(req).await }));
    }
    let (mut ok, mut refused) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(r) => {
                assert_eq!(r.into_inner().vectors.len(), 40);
                ok += 1;
            }
            Err(s) => {
                assert_eq!(s.code(), Code::ResourceExhausted, "{}", s.message());
                assert!(s.message().contains("capacity 64"), "{}", s.message());
                refused += 1;
            }
        }
    }
    assert!(ok >= 1 && refused >= 1, "ok {ok} refused {refused}");
    let mut client = client.clone();
    assert_eq!(
        client
            .embed(texts(&["room again"]))
            .await
            .unwrap()
            .into_inner()
            .vectors
            .len(),
        1
    );
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

async fn vector_state(c: &Cluster) -> BTreeMap<String, String> {
    let mut con = c.redis_con().await.unwrap();
    snapshot(&mut con, &[])
        .await
        .unwrap()
        .into_iter()
        .filter(|(k, _)| k.starts_with("{rc}:vec:"))
        .collect()
}

async fn wait_embedded(c: &Cluster, items: u64, users: u64) {
    let mut con = c.redis_con().await.unwrap();
    let end = Instant::now() + Duration::from_secs(120);
    loop {
        let (i, u): (u64, u64) = redis::pipe()
            .scard(vector_store::VECTOR_ITEMS)
            .scard(vector_store::VECTOR_USERS)
            .query_async(&mut con)
            .await
            .unwrap();
        if i >= items && u >= users {
            return;
        }
        assert!(
            Instant::now() < end,
            "embedded items {i}/{items} users {u}/{users}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_worker_embeds_items_and_users_once_and_profiles_fuse_them() {
    let mut c = Cluster::start().unwrap();
    c.extra_env = vec![("RECALLOC_EMBED_SWEEP_INTERVAL_S".into(), "1".into())];
    c.start_embed().unwrap();
    let mut ingest = c.grpc().await.unwrap();
    let items: Vec<Item> = (0..40)
        .map(|i| Item {
            item_id: format!("b{i}"),
            title: format!(
                "Book {i}: a story of {}",
                ["whales", "war", "love", "space"][i % 4]
            ),
            description: if i % 3 == 0 {
                "a classic".into()
            } else {
                String::new()
            },
            tags: vec!["fiction".into()],
            attributes: HashMap::new(),
        })
        .collect();
    ingest
        .upsert_items(UpsertItemsRequest {
            items: items.clone(),
        })
        .await
        .unwrap();
    let users: Vec<User> = (0..5)
        .map(|u| User {
            user_id: format!("u{u}"),
            profile_text: format!("I like stories about {}", ["whales", "space"][u % 2]),
            attributes: HashMap::new(),
        })
        .collect();
    ingest
        .upsert_users(UpsertUsersRequest { users })
        .await
        .unwrap();
    let t = now_ms() - 60_000;
    // Events on b0..b3 by u0, and one on "blank", an item known only from an event: it has no
    // text, so it gets no vector (and the sweep leaves it alone).
    let events: Vec<Event> = (0..5)
        .map(|k| Event {
            event_id: format!("e{k}"),
            user_id: if k < 4 { "u0" } else { "u9" }.into(),
            item_id: if k < 4 {
                format!("b{k}")
            } else {
                "blank".into()
            },
            kind: EventKind::Purchase as i32,
            value: None,
            timestamp_ms: t + k as i64 * 1000,
            context: HashMap::new(),
        })
        .collect();
    ingest
        .record_events(RecordEventsRequest { events })
        .await
        .unwrap();
    wait_embedded(&c, 40, 5).await;

    // Stored item vectors are the model's vectors of the item text (f16 storage).
    let mut embed = c.embed_client().await.unwrap();
    let v = embed
        .get_item_vector(GetItemVectorRequest {
            item_id: "b3".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let direct = embed
        .embed(texts(&["Book 3: a story of space. a classic. fiction"]))
        .await
        .unwrap()
        .into_inner();
    assert!(cosine(&v.vector.unwrap().values, &direct.vectors[0].values) > 0.9999);
    assert_eq!(
        embed
            .get_item_vector(GetItemVectorRequest {
                item_id: "blank".into()
            })
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );

    // The fused profile of u0 uses the four purchased items and their text; u1 has text only.
    let mut con = c.redis_con().await.unwrap();
    let end = Instant::now() + Duration::from_secs(60);
    let p = loop {
        let p = embed
            .get_user_profile(GetUserProfileRequest {
                user_id: "u0".into(),
            })
            .await
            .unwrap()
            .into_inner();
        if p.items_used == 4 {
            break p;
        }
        assert!(Instant::now() < end, "profile used {} items", p.items_used);
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let fused = p.fused.unwrap().values;
    let text = p.text_vector.unwrap().values;
    let behaviour = p.behaviour_vector.unwrap().values;
    // β = 0.3 by default: fused ∝ 0.3·text + 0.7·behaviour.
    let mut expect: Vec<f32> = text
        .iter()
        .zip(&behaviour)
        .map(|(t, b)| 0.3 * t + 0.7 * b)
        .collect();
    let n = expect.iter().map(|x| x * x).sum::<f32>().sqrt();
    expect.iter_mut().for_each(|x| *x /= n);
    assert!(cosine(&fused, &expect) > 0.99999);
    let p1 = embed
        .get_user_profile(GetUserProfileRequest {
            user_id: "u1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p1.items_used, 0);
    assert!(cosine(&p1.fused.unwrap().values, &p1.text_vector.unwrap().values) > 0.99999);

    // Stats count what has a vector.
    let out = c.cli(&["stats"]).unwrap();
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stats["embedded_items"], 40, "{stats}");
    assert_eq!(stats["embedded_users"], 5, "{stats}");

    // Kill -9 and restart with a new consumer group, which replays both topics from offset 0:
    // nothing changes, byte for byte.
    let before = vector_state(&c).await;
    c.embed.as_mut().unwrap().kill9();
    c.extra_env
        .push(("RECALLOC_EMBED_GROUP_ID".into(), "replay".into()));
    c.start_embed().unwrap();
    let mut lag_zero = false;
    let end = Instant::now() + Duration::from_secs(60);
    while Instant::now() < end && !lag_zero {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (_, m) = http_get(c.embed_http, "/metrics").unwrap();
        let consumed: u64 = m
            .lines()
            .filter(|l| l.starts_with("recalloc_embed_records_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum();
        lag_zero = consumed >= 45;
    }
    assert!(lag_zero, "the replay consumed every record");
    assert_eq!(vector_state(&c).await, before, "replay changed nothing");

    // Losing the vectors (a wiped Redis) is repaired by the sweep from the entity state.
    let meta_before = vector_meta(&mut con).await;
    let sample = ["b0", "b17", "b39"].map(vector_store::item_vector_key);
    let mut vectors_before = Vec::new();
    for key in &sample {
        vectors_before.push(stored_vector(&mut con, key).await);
    }
    let keys: Vec<String> = con.scan_match("{rc}:vec:*").await.unwrap();
    let _: () = redis::cmd("DEL")
        .arg(&keys)
        .query_async(&mut con)
        .await
        .unwrap();
    wait_embedded(&c, 40, 5).await;
    // Same texts, model and times; the vectors themselves may differ in the last f16 bit, since
    // a batch's padding changes float rounding.
    assert_eq!(vector_meta(&mut con).await, meta_before);
    for (key, before) in sample.iter().zip(&vectors_before) {
        let after = stored_vector(&mut con, key).await;
        assert!(cosine(before, &after) > 0.99999, "{key}");
    }
}

/// The decoded vector stored at a key.
async fn stored_vector(con: &mut RedisConnection, key: &str) -> Vec<f32> {
    let raw: Vec<u8> = redis::cmd("HGET")
        .arg(key)
        .arg(vector_store::VECTOR_FIELD)
        .query_async(con)
        .await
        .unwrap();
    recalloc_store::vectors::decode(&raw).unwrap()
}

/// Every stored vector's sha, model and updated_at, by key.
async fn vector_meta(con: &mut RedisConnection) -> BTreeMap<String, Vec<Option<String>>> {
    let keys: Vec<String> = con.scan_match("{rc}:vec:*:*").await.unwrap();
    let mut out = BTreeMap::new();
    for k in keys {
        let m: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(&k)
            .arg("sha")
            .arg("model")
            .arg("updated_at_ms")
            .query_async(con)
            .await
            .unwrap();
        out.insert(k, m);
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_model_stops_the_service_with_the_path_and_the_fix() {
    let c = Cluster::infra().unwrap();
    let mut p = c
        .spawn_embed_with(&[("RECALLOC_EMBED_MODEL_DIR", "/nonexistent/minilm")])
        .unwrap();
    let end = Instant::now() + Duration::from_secs(30);
    while p.is_running() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!p.is_running(), "the service must exit");
    let log = p.log();
    assert!(
        log.contains("/nonexistent/minilm") && log.contains("make model"),
        "{log}"
    );
    let mut p = c
        .spawn_embed_with(&[("RECALLOC_EMBED_STORAGE", "q4")])
        .unwrap();
    while p.is_running() {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(p.log().contains("embed.storage"), "{}", p.log());
}

/// `embed.consume = false` (the chart's scaled API replicas): Embed answers, the topics are left
/// to the workers — nothing gets a vector until a consuming replica runs.
#[tokio::test(flavor = "multi_thread")]
async fn an_api_only_replica_serves_embed_and_leaves_the_topics_to_the_workers() {
    let mut c = Cluster::start().unwrap();
    c.extra_env = vec![("RECALLOC_EMBED_SWEEP_INTERVAL_S".into(), "1".into())];
    let mut api = c
        .spawn_embed_with(&[("RECALLOC_EMBED_CONSUME", "false")])
        .unwrap();
    wait_ready(c.embed_http, &mut api, Duration::from_secs(60)).unwrap();
    let mut ingest = c.grpc().await.unwrap();
    ingest
        .upsert_items(UpsertItemsRequest {
            items: vec![Item {
                item_id: "whales".into(),
                title: "A story of whales".into(),
                description: String::new(),
                tags: vec![],
                attributes: HashMap::new(),
            }],
        })
        .await
        .unwrap();
    let vectors = c
        .embed_client()
        .await
        .unwrap()
        .embed(texts(&["a story of whales"]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(vectors.vectors.len(), 1);
    // The featurizer has the item; give a consumer (and the sweep) ample time to embed it.
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(
        vector_state(&c).await.is_empty(),
        "an API-only replica stored vectors"
    );
    assert!(api.log().contains("embed.consume is off"), "{}", api.log());
    // A consuming replica embeds it: the check above could have failed.
    api.terminate().unwrap();
    c.start_embed().unwrap();
    wait_embedded(&c, 1, 0).await;
}

/// The model of every stored vector, by key, and the verified-model marker.
async fn vector_models(con: &mut RedisConnection) -> (BTreeMap<String, String>, Option<String>) {
    let keys: Vec<String> = con.scan_match("{rc}:vec:*:*").await.unwrap();
    let mut out = BTreeMap::new();
    for k in keys {
        let m: Option<String> = redis::cmd("HGET")
            .arg(&k)
            .arg(vector_store::MODEL_FIELD)
            .query_async(con)
            .await
            .unwrap();
        out.insert(k, m.unwrap_or_default());
    }
    let verified: Option<String> = redis::cmd("GET")
        .arg(vector_store::VECTOR_MODEL)
        .query_async(con)
        .await
        .unwrap();
    (out, verified)
}

/// Waits until all `n` stored vectors are of `model` and a sweep has verified it.
async fn wait_all_of(con: &mut RedisConnection, model: &str, n: usize) {
    let end = Instant::now() + Duration::from_secs(180);
    loop {
        let (models, verified) = vector_models(con).await;
        if models.len() == n
            && models.values().all(|m| m == model)
            && verified.as_deref() == Some(model)
        {
            return;
        }
        assert!(
            Instant::now() < end,
            "vectors not all of {model}: {:?}, verified {verified:?}",
            models
                .values()
                .fold(BTreeMap::<&str, usize>::new(), |mut c, m| {
                    *c.entry(m).or_default() += 1;
                    c
                })
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// A model change (all-MiniLM-L6-v2 → all-mpnet-base-v2, 384 → 768 dimensions) re-embeds every
/// stored vector in the background; a vector of another model written later is found again; the
/// embed API and training read only vectors of one model meanwhile.
#[tokio::test(flavor = "multi_thread")]
async fn a_model_change_re_embeds_in_the_background_and_models_never_mix() {
    let mpnet = recalloc_integration_tests::repo_root().join("models/all-mpnet-base-v2");
    assert!(
        mpnet.join("model.safetensors").is_file(),
        "{} missing: run `make model MODEL=all-mpnet-base-v2` (make test does)",
        mpnet.display()
    );
    let mut c = Cluster::start().unwrap();
    c.extra_env = vec![("RECALLOC_EMBED_SWEEP_INTERVAL_S".into(), "1".into())];
    c.start_embed().unwrap();
    let mut ingest = c.grpc().await.unwrap();
    let items: Vec<Item> = (0..24)
        .map(|i| Item {
            item_id: format!("m{i}"),
            title: format!("Volume {i} on {}", ["tides", "comets", "gardens"][i % 3]),
            description: String::new(),
            tags: vec!["nonfiction".into()],
            attributes: HashMap::new(),
        })
        .collect();
    ingest
        .upsert_items(UpsertItemsRequest { items })
        .await
        .unwrap();
    let users: Vec<User> = (0..3)
        .map(|u| User {
            user_id: format!("r{u}"),
            profile_text: format!("I read about {}", ["tides", "comets", "gardens"][u]),
            attributes: HashMap::new(),
        })
        .collect();
    ingest
        .upsert_users(UpsertUsersRequest { users })
        .await
        .unwrap();
    let events: Vec<Event> = (0..4)
        .map(|k| Event {
            event_id: format!("me{k}"),
            user_id: "r0".into(),
            item_id: format!("m{k}"),
            kind: EventKind::Purchase as i32,
            value: None,
            timestamp_ms: now_ms() - 10_000 + k,
            context: HashMap::new(),
        })
        .collect();
    ingest
        .record_events(RecordEventsRequest { events })
        .await
        .unwrap();
    let mut con = c.redis_con().await.unwrap();
    wait_all_of(&mut con, "all-MiniLM-L6-v2", 27).await;
    let meta_before = vector_meta(&mut con).await;

    // The same cluster, the embed service restarted on the larger model.
    c.embed.as_mut().unwrap().terminate();
    c.extra_env.push((
        "RECALLOC_EMBED_MODEL_DIR".into(),
        mpnet.display().to_string(),
    ));
    c.start_embed().unwrap();
    let mut embed = c.embed_client().await.unwrap();
    wait_all_of(&mut con, "all-mpnet-base-v2", 27).await;
    // Every vector re-made (a new sha, of model and text), its time kept.
    let meta_after = vector_meta(&mut con).await;
    assert_eq!(meta_after.len(), meta_before.len());
    for (k, before) in &meta_before {
        let after = &meta_after[k];
        assert_ne!(after[0], before[0], "{k}: sha");
        assert_eq!(after[2], before[2], "{k}: updated_at_ms");
    }
    let v = embed
        .get_item_vector(GetItemVectorRequest {
            item_id: "m4".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.model, "all-mpnet-base-v2");
    let direct = embed
        .embed(texts(&["Volume 4 on comets. nonfiction"]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(direct.dimension, 768);
    let stored = v.vector.unwrap().values;
    assert_eq!(stored.len(), 768);
    assert!(cosine(&stored, &direct.vectors[0].values) > 0.9999);
    let p = embed
        .get_user_profile(GetUserProfileRequest {
            user_id: "r0".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p.items_used, 4);
    assert_eq!(p.fused.unwrap().values.len(), 768);

    // With the service stopped, a vector of the old model arrives (as from an old replica still
    // running during a rollout): it drops the verified marker, training leaves it out, and the
    // API does not serve it as the current model's.
    c.embed.as_mut().unwrap().terminate();
    let old = vector_store::VectorStore::new(
        con.clone(),
        recalloc_store::vectors::Encoding::F16,
        "all-MiniLM-L6-v2",
    );
    // Of the same record as the stored one (the item's time as the featurizer keeps it).
    let at: String = redis::cmd("HGET")
        .arg(recalloc_store::derived::item_key("m5"))
        .arg("updated_at_ms")
        .query_async(&mut con)
        .await
        .unwrap();
    let target = vector_store::Target {
        owner: vector_store::Owner::Item,
        id: "m5".into(),
        text: "Volume 5 on gardens. nonfiction".into(),
        updated_at_ms: at.parse().unwrap(),
    };
    assert_eq!(old.write(&[target], &[vec![0.05; 384]]).await.unwrap(), 1);
    let (models, verified) = vector_models(&mut con).await;
    assert_eq!(verified, None);
    assert_eq!(
        models[&vector_store::item_vector_key("m5")],
        "all-MiniLM-L6-v2"
    );
    let data = recalloc_store::training::training_data(&mut con)
        .await
        .unwrap();
    assert_eq!(data.items.len(), 24);
    for item in &data.items {
        match item.id.as_str() {
            "m5" => assert!(
                item.vector.is_none(),
                "the other model's vector is left out"
            ),
            _ => assert_eq!(item.vector.as_ref().map(Vec::len), Some(768), "{}", item.id),
        }
    }
    // The sweep of the restarted service re-embeds it with the current model.
    c.start_embed().unwrap();
    wait_all_of(&mut con, "all-mpnet-base-v2", 27).await;
    let data = recalloc_store::training::training_data(&mut con)
        .await
        .unwrap();
    assert!(
        data.items
            .iter()
            .all(|i| i.vector.as_ref().map(Vec::len) == Some(768))
    );
    let (_, m) = http_get(c.embed_http, "/metrics").unwrap();
    assert!(
        m.contains("recalloc_embed_swept_total{reason=\"other_model\"}"),
        "{m}"
    );
}

//! Process wiring for the rank service: gRPC (Ranker, health, reflection), the HTTP endpoint,
//! the model poller (hot swap), scheduled training, readiness from Redis, phased shutdown.

use crate::service::{EVENTS_AT_TRAINING, ModelSlot, RankService, parse_algorithm};
use crate::store;
use arc_swap::ArcSwapOption;
use recalloc_common::config::Config;
use recalloc_common::redis_conn::{RedisConnection, RedisTarget};
use recalloc_common::{Metrics, Readiness};
use recalloc_factor::ann::AnnSettings;
use recalloc_factor::model::Served;
use recalloc_proto::v1::TrainRequest;
use recalloc_proto::v1::ranker_server::RankerServer;
use recalloc_store::models;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
pub const GRACE: Duration = Duration::from_secs(10);
/// The calls the bearer token guards.
pub const ADMIN: [&str; 1] = ["/recalloc.v1.Ranker/Train"];

pub use recalloc_common::serve::ServeError;

pub use recalloc_common::serve::Bound;

const SWAPS: &str = "recalloc_rank_model_swaps_total";
const SWAPS_HELP: &str = "model versions loaded by this server";

/// The approximate-index settings of `rank.ann_*`.
pub fn ann_settings(cfg: &Config) -> AnnSettings {
    AnnSettings {
        min_items: cfg.rank.ann_min_items as usize,
        lists: cfg.rank.ann_lists as usize,
        probes: cfg.rank.ann_probes as usize,
    }
}

/// Loads the current version when it differs from the one served. Returns whether it swapped.
pub async fn refresh(
    con: &mut RedisConnection,
    slot: &ModelSlot,
    ann: &AnnSettings,
) -> Result<bool, store::StoreError> {
    let Some(version) = models::current_version(con).await? else {
        return Ok(false);
    };
    if slot
        .load()
        .as_ref()
        .is_some_and(|s| s.model.version == version)
    {
        return Ok(false);
    }
    let bytes = models::load_bytes(con, &version).await?;
    let (v, ann) = (version.clone(), *ann);
    let started = std::time::Instant::now();
    let served = tokio::task::spawn_blocking(move || {
        store::decode_model(&v, &bytes).map(|m| Served::with_ann(m, &ann))
    })
    .await
    .map_err(|e| store::StoreError::Damaged {
        version: version.clone(),
        reason: e.to_string(),
    })??;
    tracing::info!(version = %version, users = served.model.users(), items = served.model.items(), index_lists = served.index().map_or(0, |i| i.lists()), load_seconds = started.elapsed().as_secs_f64(), "model loaded");
    // In-flight requests keep the Arc of the old model until they finish: no request fails.
    slot.store(Some(Arc::new(served)));
    Ok(true)
}

pub async fn run(
    cfg: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_bound: impl FnOnce(Bound),
) -> Result<(), ServeError> {
    if parse_algorithm(&cfg.rank.algorithm).is_none() {
        return Err(ServeError::config(
            "rank.algorithm",
            format!(
                "{:?} is not implicit_als, explicit_mf or hybrid",
                cfg.rank.algorithm
            ),
        ));
    }
    if cfg.rank.factors == 0 || cfg.rank.iterations == 0 {
        return Err(ServeError::config(
            "rank.factors",
            "rank.factors and rank.iterations must be at least 1",
        ));
    }
    let token = recalloc_common::auth::token(&cfg.security).map_err(ServeError::Config)?;
    // TLS files are checked before anything is bound or loaded.
    let server = recalloc_common::tls::server_builder(&cfg.security)?;
    let metrics = Metrics::new();
    let (reporter, health) = tonic_health::server::health_reporter();
    let readiness = Readiness::new(Some(reporter), &["recalloc.v1.Ranker"]);
    readiness.set(false).await;
    let redis_target = RedisTarget::from_config(&cfg.redis)?;
    let con = recalloc_common::serve::connect_redis(&redis_target, &readiness).await;
    let slot: ModelSlot = Arc::new(ArcSwapOption::empty());
    if let Err(e) = refresh(&mut con.clone(), &slot, &ann_settings(&cfg)).await {
        tracing::warn!(error = %e, "no model loaded at start");
    }
    let service = Arc::new(RankService::new(
        slot.clone(),
        con.clone(),
        cfg.clone(),
        metrics.clone(),
    ));
    let reflection = recalloc_common::serve::reflection("recalloc.v1.Ranker")?;
    let l = recalloc_common::serve::bind(
        cfg.rank.grpc_addr,
        cfg.rank.metrics_addr,
        metrics.clone(),
        readiness.clone(),
        on_bound,
    )
    .await?;
    let (grpc_addr, http_addr) = (l.grpc_addr, l.http_addr);
    tracing::info!(%grpc_addr, %http_addr, "rank serving");

    // Redis health, and the poller that hot-swaps new model versions.
    let poller = {
        let (mut con, slot, readiness, metrics) = (
            con.clone(),
            slot.clone(),
            readiness.clone(),
            metrics.clone(),
        );
        let every = Duration::from_millis(cfg.rank.poll_interval_ms.max(50) as u64);
        let ann = ann_settings(&cfg);
        tokio::spawn(async move {
            loop {
                recalloc_common::serve::check_redis(&mut con, &readiness).await;
                match refresh(&mut con, &slot, &ann).await {
                    Ok(true) => metrics.inc_counter(SWAPS, SWAPS_HELP, &[], 1),
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "model refresh failed; serving the loaded one")
                    }
                }
                tokio::time::sleep(every).await;
            }
        })
    };
    // Scheduled training: only when events arrived since the current model was trained.
    let scheduler = (cfg.rank.train_interval_s > 0).then(|| {
        let (service, mut con, slot) = (service.clone(), con.clone(), slot.clone());
        let every = Duration::from_secs(cfg.rank.train_interval_s as u64);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let events = recalloc_store::counts::events_applied(&mut con).await;
                let trained_at = slot
                    .load()
                    .as_ref()
                    .and_then(|s| s.model.metrics.get(EVENTS_AT_TRAINING).copied())
                    .map(|e| e as u64);
                if let Ok(Some(now)) = events
                    && trained_at != Some(now)
                {
                    match service.train(TrainRequest::default()).await {
                        Ok(r) => tracing::info!(version = %r.model.map(|m| m.version).unwrap_or_default(), "scheduled training done"),
                        Err(e) => tracing::info!(error = %e, "scheduled training skipped"),
                    }
                }
            }
        })
    });

    let grpc = server
        .layer(recalloc_common::serve::layers(
            metrics.clone(),
            token,
            &ADMIN,
        ))
        .add_service(health)
        .add_service(reflection)
        .add_service(
            RankerServer::from_arc(service)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .serve_with_incoming_shutdown(recalloc_common::net::incoming(l.grpc), l.stop.signal());
    let http_task = l.http;
    let grpc_task = tokio::spawn(grpc);
    shutdown.await;
    poller.abort();
    if let Some(s) = scheduler {
        s.abort();
    }
    readiness.set(false).await;
    recalloc_common::serve::drain_grpc(&l.stop, grpc_task, GRACE).await?;
    let _ = tokio::time::timeout(Duration::from_secs(1), http_task).await;
    tracing::info!("rank stopped");
    Ok(())
}

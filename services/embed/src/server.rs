//! Process wiring for the embed service: the model, gRPC (Embedder, health, reflection), the HTTP
//! endpoint, the worker, readiness from Redis and the broker, and phased shutdown.

use crate::engine::Engine;
use crate::fusion::FusionParams;
use crate::model::ModelError;
use crate::service::EmbedService;
use crate::worker;
use recalloc_common::config::Config;
use recalloc_common::{Metrics, Readiness};
use recalloc_proto::v1::embedder_server::EmbedderServer;
use recalloc_store::vector_store::VectorStore;
use recalloc_store::vectors::Encoding;
use std::future::Future;
use std::time::Duration;

/// Largest request the server decodes (4,096 texts of 16 KiB).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// How long shutdown waits for in-flight calls.
pub const GRACE: Duration = Duration::from_secs(10);

pub use recalloc_common::serve::ServeError;

pub use recalloc_common::serve::Bound;

pub fn fusion_params(cfg: &Config) -> FusionParams {
    FusionParams {
        text_weight: cfg.embed.profile_text_weight as f32,
        half_life_ms: cfg.embed.profile_half_life_hours * 3_600_000.0,
        max_items: cfg.embed.profile_max_items as usize,
        rating_min: cfg.ingest.rating_min,
        rating_max: cfg.ingest.rating_max,
    }
}

/// Serves until `shutdown` resolves: readiness off → stop the worker (it commits what it stored)
/// → drain calls → finish queued inference.
pub async fn run(
    cfg: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_bound: impl FnOnce(Bound),
) -> Result<(), ServeError> {
    let encoding = Encoding::parse(&cfg.embed.storage)
        .map_err(|message| ServeError::config("embed.storage", message))?;
    if !(0.0..=1.0).contains(&cfg.embed.profile_text_weight) {
        return Err(ServeError::config(
            "embed.profile_text_weight",
            "must be between 0 and 1",
        ));
    }
    // TLS files are checked before the model loads and anything is bound.
    let server = recalloc_common::tls::server_builder(&cfg.security)?;
    let metrics = Metrics::new();
    let (reporter, health) = tonic_health::server::health_reporter();
    let readiness = Readiness::new(Some(reporter), &["recalloc.v1.Embedder"]);
    readiness.set(false).await;
    // The model is loaded before anything listens, on a blocking thread: a missing or broken
    // model directory stops the process with the path and the make target in the message.
    let engine = {
        let e = cfg.embed.clone();
        let m = metrics.clone();
        tokio::task::spawn_blocking(move || Engine::start(&e, m))
            .await
            .map_err(|e| ModelError::Device(format!("model loading task: {e}")))
            .and_then(|r| r)
            .map_err(|e| ServeError::dependency("model", e))?
    };
    let redis_target = recalloc_common::redis_conn::RedisTarget::from_config(&cfg.redis)?;
    let con = recalloc_common::serve::connect_redis(&redis_target, &readiness).await;
    let store = VectorStore::new(con, encoding, &engine.spec().name);
    let service = EmbedService::new(
        engine.clone(),
        store.clone(),
        fusion_params(&cfg),
        cfg.embed.max_request_texts as usize,
    );
    let reflection = recalloc_common::serve::reflection("recalloc.v1.Embedder")?;
    let l = recalloc_common::serve::bind(
        cfg.embed.grpc_addr,
        cfg.embed.metrics_addr,
        metrics.clone(),
        readiness.clone(),
        on_bound,
    )
    .await?;
    let (grpc_addr, http_addr) = (l.grpc_addr, l.http_addr);
    tracing::info!(%grpc_addr, %http_addr, storage = encoding.name(), "embed serving");

    let redis_checker = {
        let mut con = store.connection();
        let readiness = readiness.clone();
        tokio::spawn(async move {
            loop {
                recalloc_common::serve::check_redis(&mut con, &readiness).await;
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        })
    };
    let worker_stop = recalloc_common::serve::Stop::default();
    // `embed.consume = false`: an API-only replica (scaled with the Embed demand, apart from
    // the consuming workers).
    let worker_task = cfg.embed.consume.then(|| {
        tokio::spawn(worker::run(
            cfg.clone(),
            engine.clone(),
            store.clone(),
            metrics.clone(),
            readiness.clone(),
            worker_stop.signal(),
        ))
    });
    if worker_task.is_none() {
        tracing::info!("embed.consume is off: serving Embed only, not consuming the topics");
    }
    let grpc = server
        .layer(recalloc_common::serve::layers(metrics.clone(), None, &[]))
        .add_service(health)
        .add_service(reflection)
        .add_service(
            EmbedderServer::new(service)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .serve_with_incoming_shutdown(recalloc_common::net::incoming(l.grpc), l.stop.signal());
    let http_task = l.http;
    let mut grpc_task = tokio::spawn(grpc);

    let worker_result = tokio::select! {
        _ = shutdown => None,
        r = &mut grpc_task => {
            tracing::error!("grpc server stopped unexpectedly");
            r.ok().and_then(|r| r.err()).map(|e| Err(ServeError::Transport(e)))
        }
    };
    // Phase 1: stop being chosen by load balancers.
    redis_checker.abort();
    readiness.set(false).await;
    // Phase 2: stop consuming; the worker commits what it stored.
    worker_stop.stop();
    let worker_outcome = match worker_task {
        None => Ok(()),
        Some(task) => match tokio::time::timeout(GRACE, task).await {
            Ok(Ok(r)) => r.map_err(|e| ServeError::dependency("worker", e)),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "worker task failed");
                Ok(())
            }
            Err(_) => {
                tracing::warn!("the worker did not stop within the grace period");
                Ok(())
            }
        },
    };
    // Phase 3: stop accepting calls and let in-flight ones finish (bounded).
    if !grpc_task.is_finished() {
        recalloc_common::serve::drain_grpc(&l.stop, grpc_task, GRACE).await?;
    } else {
        l.stop.stop();
    }
    // Phase 4: the inference threads finish what is queued.
    tokio::task::spawn_blocking(move || engine.shutdown())
        .await
        .ok();
    let _ = tokio::time::timeout(Duration::from_secs(1), http_task).await;
    tracing::info!("embed stopped");
    if let Some(r) = worker_result {
        r?;
    }
    worker_outcome
}

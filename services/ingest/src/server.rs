//! Process wiring for the ingest server: gRPC (Ingest, health, reflection) plus the HTTP
//! endpoint, readiness from the broker, and phased shutdown.

use crate::producer::EventProducer;
use crate::service::IngestService;
use crate::validate::{self, Limits};
use recalloc_common::config::Config;
use recalloc_common::redis_conn::RedisTarget;
use recalloc_common::{Metrics, Readiness};
use recalloc_proto::v1::ingest_server::IngestServer;
use std::future::Future;
use std::time::Duration;

/// Largest request the server decodes; batches are bounded by record count too.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// How long shutdown waits for in-flight calls and queued records.
pub const GRACE: Duration = Duration::from_secs(10);

/// The calls the bearer token guards (every write).
pub const WRITES: [&str; 4] = [
    "/recalloc.v1.Ingest/RecordEvents",
    "/recalloc.v1.Ingest/StreamEvents",
    "/recalloc.v1.Ingest/UpsertItems",
    "/recalloc.v1.Ingest/UpsertUsers",
];

pub use recalloc_common::serve::ServeError;

pub use recalloc_common::serve::Bound;

/// Serves until `shutdown` resolves: stop readiness → stop accepting and drain calls → flush
/// the producer. `on_bound` learns the bound addresses before serving starts.
pub async fn run(
    cfg: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_bound: impl FnOnce(Bound),
) -> Result<(), ServeError> {
    let limits = Limits::from(&cfg.ingest);
    validate::check_limits(&limits).map_err(ServeError::Config)?;
    // TLS files are checked before anything is bound or connected.
    let server = recalloc_common::tls::server_builder(&cfg.security)?;
    let metrics = Metrics::new();
    let (reporter, health) = tonic_health::server::health_reporter();
    let readiness = Readiness::new(Some(reporter), &["recalloc.v1.Ingest"]);
    readiness.set(false).await;
    let producer =
        EventProducer::new(&cfg.kafka).map_err(|e| ServeError::dependency("kafka producer", e))?;
    let service = IngestService::new(
        producer.clone(),
        limits,
        cfg.ingest.max_batch as usize,
        RedisTarget::from_config(&cfg.redis).map_err(|e| ServeError::Config(e.to_string()))?,
        metrics.clone(),
    );
    let reflection = recalloc_common::serve::reflection("recalloc.v1.Ingest")?;
    let l = recalloc_common::serve::bind(
        cfg.ingest.grpc_addr,
        cfg.ingest.metrics_addr,
        metrics.clone(),
        readiness.clone(),
        on_bound,
    )
    .await?;
    let (grpc_addr, http_addr) = (l.grpc_addr, l.http_addr);
    tracing::info!(%grpc_addr, %http_addr, brokers = %cfg.kafka.brokers, "ingest serving");

    let checker = {
        let producer = producer.clone();
        let readiness = readiness.clone();
        tokio::spawn(async move {
            loop {
                readiness.record("kafka", producer.check().await).await;
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        })
    };

    let token = recalloc_common::auth::token(&cfg.security).map_err(ServeError::Config)?;
    let grpc = server
        .layer(recalloc_common::serve::layers(
            metrics.clone(),
            token,
            &WRITES,
        ))
        .add_service(health)
        .add_service(reflection)
        .add_service(
            IngestServer::new(service)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .serve_with_incoming_shutdown(recalloc_common::net::incoming(l.grpc), l.stop.signal());
    let http_task = l.http;
    let grpc_task = tokio::spawn(grpc);

    shutdown.await;
    // Phase 1: tell load balancers to stop sending.
    checker.abort();
    readiness.set(false).await;
    // Phase 2: stop accepting, let in-flight calls finish (bounded).
    recalloc_common::serve::drain_grpc(&l.stop, grpc_task, GRACE).await?;
    // Phase 3: deliver whatever the producer still holds.
    producer.flush(GRACE).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), http_task).await;
    tracing::info!("ingest stopped");
    Ok(())
}

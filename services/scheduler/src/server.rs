//! Process wiring: builds the control loop ([`Controller`]), the leader election
//! ([`lease::run_election`]), the gRPC services (Scheduler, KEDA external scaler, health,
//! reflection) and the HTTP endpoint, runs them, and shuts down in phases: stop acting, give
//! the Lease back, then drain the calls in flight. What each part does lives in its module;
//! this file only decides what runs, in which order, and what stops first.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use recalloc_common::config::Config;
use recalloc_common::serve::Stop;
use recalloc_common::{Metrics, Readiness};
use recalloc_proto::externalscaler::external_scaler_server::ExternalScalerServer;
use recalloc_proto::v1::scheduler_server::SchedulerServer;

use crate::cluster::Cluster;
use crate::collect::Collector;
use crate::control::Controller;
use crate::lease;
use crate::planning;
use crate::service::{KedaScaler, SchedulerService};

pub use recalloc_common::serve::Bound;

pub const GRACE: Duration = Duration::from_secs(10);
/// Largest request accepted: a Simulate trace of `service::MAX_TRACE_POINTS` points (about
/// 12 MB on the wire) fits; tonic's default of 4 MB would refuse a third of it.
pub const MAX_MESSAGE_BYTES: usize = 32 * 1024 * 1024;
const SERVICES: [&str; 2] = ["recalloc.v1.Scheduler", "externalscaler.ExternalScaler"];

pub use recalloc_common::serve::ServeError;

/// Runs the scheduler until `shutdown` resolves. `cluster`: `None` connects as the config
/// says; tests pass their own.
pub async fn run(
    cfg: Config,
    cluster: Option<Cluster>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_bound: impl FnOnce(Bound),
) -> Result<(), ServeError> {
    planning::validate(&cfg.scheduler).map_err(|e| ServeError::Config(e.to_string()))?;
    // TLS files are checked before the cluster is contacted and anything is bound.
    let server = recalloc_common::tls::server_builder(&cfg.security)?;
    let cluster = match cluster {
        Some(c) => Some(c),
        None => Cluster::connect(&cfg).await?,
    };
    let collector = Collector::new(&cfg.scheduler, &cfg.kafka.brokers)
        .map_err(|e| ServeError::dependency("load collection", e))?;
    let metrics = Metrics::new();
    let (reporter, health) = tonic_health::server::health_reporter();
    let readiness = Readiness::new(Some(reporter), &SERVICES);
    let dry_run = cluster.is_none();
    let cluster = cluster.map(Arc::new);
    let controller = Controller::new(
        cfg.scheduler.clone(),
        collector,
        cluster.clone(),
        metrics.clone(),
    );
    let state = controller.reader();
    let reflection = recalloc_common::serve::reflection_of(&SERVICES)?;
    let l = recalloc_common::serve::bind(
        cfg.scheduler.grpc_addr,
        cfg.scheduler.metrics_addr,
        metrics.clone(),
        readiness.clone(),
        on_bound,
    )
    .await?;
    let (grpc_addr, http_addr) = (l.grpc_addr, l.http_addr);
    tracing::info!(%grpc_addr, %http_addr, dry_run, deployments = cfg.scheduler.deployments.len(), "scheduler serving");

    // Acting (ticking, electing) stops first on shutdown, before the Lease is released.
    let acting = Stop::default();
    let leader = Arc::new(AtomicBool::new(dry_run));
    // Readiness follows the API server, as the election sees it; dry, there is none to wait on.
    let election = cluster.clone().map(|c| {
        tokio::spawn(lease::run_election(
            move || {
                let c = c.clone();
                async move { c.election_round().await }
            },
            leader.clone(),
            readiness.clone(),
            metrics.clone(),
            lease::round_interval(cfg.scheduler.lease_seconds),
            acting.signal(),
        ))
    });
    if dry_run {
        readiness.set(true).await;
    }
    let ticker = tokio::spawn(controller.run(
        Duration::from_secs(cfg.scheduler.tick_seconds as u64),
        leader.clone(),
        acting.signal(),
    ));

    let grpc = server
        .layer(recalloc_common::serve::layers(metrics.clone(), None, &[]))
        .add_service(health)
        .add_service(reflection)
        .add_service(
            SchedulerServer::new(SchedulerService::new(state.clone()))
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(ExternalScalerServer::new(KedaScaler::new(state)))
        .serve_with_incoming_shutdown(recalloc_common::net::incoming(l.grpc), l.stop.signal());
    let http_task = l.http;
    let grpc_task = tokio::spawn(grpc);
    shutdown.await;
    // Phase 1: stop acting and hand the Lease over, so another replica takes over at once.
    acting.stop();
    let _ = ticker.await;
    if let Some(e) = election {
        let _ = e.await;
    }
    if let Some(elector) = cluster.as_ref().and_then(|c| c.elector.as_ref())
        && leader.load(Ordering::SeqCst)
    {
        match elector.release().await {
            Ok(()) => tracing::info!("lease released"),
            Err(e) => tracing::warn!(error = %e, "could not release the lease; it lapses instead"),
        }
    }
    // Phase 2: stop accepting calls and drain the ones in flight.
    readiness.set(false).await;
    recalloc_common::serve::drain_grpc(&l.stop, grpc_task, GRACE).await?;
    let _ = tokio::time::timeout(Duration::from_secs(1), http_task).await;
    tracing::info!("scheduler stopped");
    Ok(())
}

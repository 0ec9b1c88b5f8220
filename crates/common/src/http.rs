//! The HTTP side of every service: `/metrics` (Prometheus text), `/healthz` (the process is up)
//! and `/readyz` (dependencies answer; 503 with the reason otherwise).
//!
//! Always plain HTTP, also when the gRPC servers speak TLS (`crate::tls`): Prometheus scrapes
//! and kubelet probes reach it without a client identity, and it carries no user data and
//! accepts no writes.

use crate::{Metrics, Readiness};
use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
}

/// Binds `addr` now (so a port clash fails at start-up) and returns the bound address and the
/// server future, which ends when `shutdown` resolves.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, impl Future<Output = std::io::Result<()>>)> {
    let app = routes(metrics, readiness);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    Ok((bound, async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
    }))
}

/// `/metrics`, `/healthz` and `/readyz` as a router, for a process that serves them beside its
/// own HTTP routes on one port (the console).
pub fn routes(metrics: Arc<Metrics>, readiness: Arc<Readiness>) -> Router {
    Router::new()
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(AppState { metrics, readiness })
}

async fn render_metrics(State(s): State<AppState>) -> impl IntoResponse {
    (
        [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
        s.metrics.render(),
    )
}

async fn ready(State(s): State<AppState>) -> impl IntoResponse {
    if s.readiness.is_ready() {
        (StatusCode::OK, "ready\n".to_string())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready\n{}\n", s.readiness.report()),
        )
    }
}

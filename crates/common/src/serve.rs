//! What every recalloc server sets up the same way: a stop signal for the phased shutdown, the
//! HTTP endpoint and the gRPC listener bound before serving (so a port clash fails at start and
//! port 0 resolves for tests), and server reflection listing exactly what the process serves.

use crate::{Metrics, Readiness};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A one-way switch: [`Stop::stop`] resolves every [`Stop::signal`] future, before or after.
#[derive(Clone)]
pub struct Stop {
    tx: Arc<watch::Sender<bool>>,
}

impl Default for Stop {
    fn default() -> Self {
        Self {
            tx: Arc::new(watch::channel(false).0),
        }
    }
}

impl Stop {
    pub fn stop(&self) {
        self.tx.send_replace(true);
    }

    pub fn signal(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.tx.subscribe();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot bind {addr}: {source}")]
pub struct BindError {
    pub addr: SocketAddr,
    pub source: std::io::Error,
}

/// The addresses a server actually bound (port 0 in tests becomes a real port).
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
}

/// The bound listeners of one server.
pub struct Listeners {
    /// The gRPC listener, bound, for `serve_with_incoming_shutdown(net::incoming(..))`.
    pub grpc: TcpListener,
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// The HTTP server, running until `stop` is stopped.
    pub http: JoinHandle<std::io::Result<()>>,
    pub stop: Stop,
}

impl Listeners {
    pub fn bound(&self) -> Bound {
        Bound {
            grpc: self.grpc_addr,
            http: self.http_addr,
        }
    }
}

/// Binds the HTTP endpoint (and starts it) and the gRPC listener.
pub async fn bind(
    grpc_addr: SocketAddr,
    metrics_addr: SocketAddr,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
) -> Result<Listeners, BindError> {
    let stop = Stop::default();
    let (http_addr, http) = crate::http::serve(metrics_addr, metrics, readiness, stop.signal())
        .await
        .map_err(|source| BindError {
            addr: metrics_addr,
            source,
        })?;
    let bind_err = |source| BindError {
        addr: grpc_addr,
        source,
    };
    let grpc = TcpListener::bind(grpc_addr).await.map_err(bind_err)?;
    let grpc_addr = grpc.local_addr().map_err(bind_err)?;
    Ok(Listeners {
        grpc,
        grpc_addr,
        http_addr,
        http: tokio::spawn(http),
        stop,
    })
}

/// Stops accepting calls (the listeners' stop switch) and waits at most `grace` for the gRPC
/// server's in-flight calls: the drain phase every server's shutdown has. A server error is
/// returned; a grace period that runs out is logged, not an error.
pub async fn drain_grpc(
    stop: &Stop,
    grpc: JoinHandle<Result<(), tonic::transport::Error>>,
    grace: std::time::Duration,
) -> Result<(), tonic::transport::Error> {
    stop.stop();
    match tokio::time::timeout(grace, grpc).await {
        Ok(Ok(r)) => r?,
        Ok(Err(e)) => tracing::error!(error = %e, "grpc task failed"),
        Err(_) => tracing::warn!("in-flight calls did not finish within the grace period"),
    }
    Ok(())
}

/// Server reflection over recalloc's protos, health and reflection itself, listing `service`
/// (the process's own), health and reflection — not every service the shared descriptor set
/// defines.
pub fn reflection(
    service: &str,
) -> Result<
    tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection + use<>,
    >,
    tonic_reflection::server::Error,
> {
    reflection_of(&[service])
}

/// [`reflection`] for a process that serves several services.
pub fn reflection_of(
    services: &[&str],
) -> Result<
    tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection + use<>,
    >,
    tonic_reflection::server::Error,
> {
    let mut builder = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(recalloc_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET);
    for s in services {
        builder = builder.with_service_name(*s);
    }
    builder
        .with_service_name("grpc.health.v1.Health")
        .with_service_name("grpc.reflection.v1.ServerReflection")
        .build_v1()
}

//! What every recalloc server sets up the same way: the binary's `main` ([`main`]), the one
//! start-up error type ([`ServeError`]), a stop signal for the phased shutdown, the HTTP endpoint
//! and the gRPC listener bound before serving (so a port clash fails at start and port 0
//! resolves for tests), the layer stack every gRPC server runs ([`layers`]), the drain phase,
//! and server reflection listing exactly what the process serves.

use crate::{Metrics, Readiness};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
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

/// Binds the HTTP endpoint (and starts it) and the gRPC listener, and tells `on_bound` the
/// addresses (port 0 resolved) before anything is served.
pub async fn bind(
    grpc_addr: SocketAddr,
    metrics_addr: SocketAddr,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    on_bound: impl FnOnce(Bound),
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
    let l = Listeners {
        grpc,
        grpc_addr,
        http_addr,
        http: tokio::spawn(http),
        stop,
    };
    on_bound(l.bound());
    Ok(l)
}

/// Connects to Redis, retrying every second while it cannot (each failure recorded as the
/// `redis` dependency in `readiness`, so the service reports why it is not ready).
pub async fn connect_redis(
    target: &crate::redis_conn::RedisTarget,
    readiness: &Readiness,
) -> crate::redis_conn::RedisConnection {
    loop {
        match target.connect().await {
            Ok(c) => return c,
            Err(e) => {
                readiness.record("redis", Err(e.to_string())).await;
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    }
}

/// One readiness check of Redis: a PING, recorded as the `redis` dependency.
pub async fn check_redis(con: &mut crate::redis_conn::RedisConnection, readiness: &Readiness) {
    let ping: redis::RedisResult<String> = redis::cmd("PING").query_async(con).await;
    readiness
        .record("redis", ping.map(|_| ()).map_err(|e| e.to_string()))
        .await;
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

/// Why a server could not start, or stopped with an error: what every server's `run` returns.
/// The message names what failed (the config key, the address, the dependency).
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A setting is invalid; the message names the key.
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error("grpc server: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error(transparent)]
    RedisConfig(#[from] crate::redis_conn::RedisConfigError),
    /// Something the service needs failed: the Kafka producer, the model, the cluster, a worker.
    #[error("{what}: {source}")]
    Dependency {
        what: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl ServeError {
    /// An invalid setting: `invalid config key {key}: {message}`.
    pub fn config(key: &str, message: impl std::fmt::Display) -> Self {
        Self::Config(format!("invalid config key {key}: {message}"))
    }

    /// A failed dependency, `what` naming it (`kafka producer`, `model`, …).
    pub fn dependency(
        what: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Dependency {
            what,
            source: source.into(),
        }
    }
}

/// The layers every recalloc gRPC server runs, outermost first: the W3C trace context of the
/// caller, the request metrics, and the bearer token on the `guarded` methods (none when no
/// token is configured). `server.layer(layers(..))`.
pub fn layers(
    metrics: Arc<Metrics>,
    token: Option<crate::auth::Secret>,
    guarded: &'static [&'static str],
) -> tower::layer::util::Stack<
    crate::auth::RequireToken,
    tower::layer::util::Stack<
        crate::metrics::GrpcMetricsLayer,
        tower::layer::util::Stack<
            crate::trace_context::GrpcTraceLayer,
            tower::layer::util::Identity,
        >,
    >,
> {
    tower::ServiceBuilder::new()
        .layer(crate::trace_context::GrpcTraceLayer)
        .layer(crate::metrics::GrpcMetricsLayer::new(metrics))
        .layer(crate::auth::RequireToken::new(token, guarded))
        .into_inner()
}

/// The shutdown signal a server's `run` is given (SIGTERM or ctrl-c in a binary).
pub type Shutdown = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// The `main` of every server binary: loads the layered config and installs telemetry (exit 2
/// naming the problem), lets `adjust` apply the binary's own flags, runs `serve` until SIGTERM
/// or ctrl-c, flushes queued spans (the last phase of shutdown), and on an error logs it and
/// exits 1 with `binary: error` on stderr.
pub async fn main<Fut, E>(
    binary: &'static str,
    config_file: Option<&std::path::Path>,
    adjust: impl FnOnce(&mut crate::Config),
    serve: impl FnOnce(crate::Config, Shutdown) -> Fut,
) where
    Fut: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let mut cfg = crate::config_and_telemetry_or_exit(binary, config_file);
    adjust(&mut cfg);
    let result = serve(cfg, Box::pin(crate::shutdown::signal())).await;
    crate::telemetry::shutdown().await;
    if let Err(e) = result {
        tracing::error!(error = %e, "{binary} failed");
        eprintln!("{binary}: {e}");
        std::process::exit(1);
    }
}

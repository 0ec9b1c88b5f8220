//! The console's connections: gRPC clients of ingest, embed, rank and the scheduler (the CLI's
//! way: `recalloc_common::tls` endpoints and the bearer token), and an HTTP client for the
//! services' `/metrics` and `/readyz`. Channels connect lazily and reconnect by themselves, so
//! the console starts, and shows what is down, whatever state the cluster is in.

use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use recalloc_common::auth::BearerToken;
use recalloc_common::config::Config;
use recalloc_common::serve::ServeError;
use recalloc_proto::v1::embedder_client::EmbedderClient;
use recalloc_proto::v1::ingest_client::IngestClient;
use recalloc_proto::v1::ranker_client::RankerClient;
use recalloc_proto::v1::scheduler_client::SchedulerClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::state::Target;

/// How long one read of the poller may take (a service that does not answer within it is
/// shown down, and the round goes on).
pub const READ_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest gRPC message taken: a simulation's series over a long trace.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// Largest `/metrics` page read.
const MAX_METRICS_BYTES: usize = 8 * 1024 * 1024;

type Intercepted = InterceptedService<Channel, BearerToken>;

#[derive(Clone)]
pub struct Clients {
    pub ingest: IngestClient<Intercepted>,
    pub embed: EmbedderClient<Intercepted>,
    pub rank: RankerClient<Intercepted>,
    pub scheduler: SchedulerClient<Intercepted>,
}

/// `configured` when set, else the service's own listener address.
fn address(configured: &str, default: std::net::SocketAddr) -> String {
    if configured.trim().is_empty() {
        default.to_string()
    } else {
        configured.trim().to_owned()
    }
}

fn base_url(configured: &str, default: std::net::SocketAddr) -> String {
    if configured.trim().is_empty() {
        format!("http://{default}")
    } else {
        configured.trim().trim_end_matches('/').to_owned()
    }
}

impl Clients {
    /// Lazy channels to the services (a bad address or TLS file fails here, at start-up).
    pub fn new(cfg: &Config, bearer: BearerToken) -> Result<Self, ServeError> {
        let c = &cfg.console;
        let channel = |key: &str, configured: &str, default| -> Result<Channel, ServeError> {
            let addr = address(configured, default);
            let endpoint = recalloc_common::tls::endpoint(&addr, &cfg.security)
                .map_err(|e| ServeError::config(key, format!("{addr}: {e}")))?;
            Ok(endpoint
                .connect_timeout(READ_TIMEOUT)
                .tcp_nodelay(true)
                .connect_lazy())
        };
        let ingest = channel("console.ingest_addr", &c.ingest_addr, cfg.ingest.grpc_addr)?;
        let embed = channel("console.embed_addr", &c.embed_addr, cfg.embed.grpc_addr)?;
        let rank = channel("console.rank_addr", &c.rank_addr, cfg.rank.grpc_addr)?;
        let scheduler = channel(
            "console.scheduler_addr",
            &c.scheduler_addr,
            cfg.scheduler.grpc_addr,
        )?;
        Ok(Self {
            ingest: IngestClient::with_interceptor(ingest, bearer.clone()),
            embed: EmbedderClient::with_interceptor(embed, bearer.clone()),
            rank: RankerClient::with_interceptor(rank, bearer.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
            scheduler: SchedulerClient::with_interceptor(scheduler, bearer)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        })
    }
}

/// The services the overview lists, with their HTTP endpoints.
pub fn targets(cfg: &Config) -> Vec<Target> {
    let c = &cfg.console;
    vec![
        Target {
            name: "ingest",
            process: "recalloc-ingest",
            url: base_url(&c.ingest_url, cfg.ingest.metrics_addr),
            lag_gauge: None,
        },
        Target {
            name: "featurizer",
            process: "recalloc-featurizer",
            url: base_url(&c.featurizer_url, cfg.featurizer.metrics_addr),
            lag_gauge: Some("recalloc_featurizer_consumer_lag"),
        },
        Target {
            name: "embed",
            process: "recalloc-embed",
            url: base_url(&c.embed_url, cfg.embed.metrics_addr),
            lag_gauge: Some("recalloc_embed_consumer_lag"),
        },
        Target {
            name: "rank",
            process: "recalloc-rank",
            url: base_url(&c.rank_url, cfg.rank.metrics_addr),
            lag_gauge: None,
        },
        Target {
            name: "scheduler",
            process: "recalloc-scheduler",
            url: base_url(&c.scheduler_url, cfg.scheduler.metrics_addr),
            lag_gauge: None,
        },
    ]
}

/// A plain-HTTP GET client for the services' endpoints (always plain HTTP, see
/// `recalloc_common::http`).
#[derive(Clone)]
pub struct Http {
    client: Client<HttpConnector, Empty<&'static [u8]>>,
}

impl Default for Http {
    fn default() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(READ_TIMEOUT));
        Self {
            client: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(90))
                .build(connector),
        }
    }
}

impl Http {
    /// GET `url`: its status and body, or why there is none.
    pub async fn get(&self, url: &str) -> Result<(u16, String), String> {
        let uri: http::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
        let fetch = async {
            let resp = self
                .client
                .get(uri)
                .await
                .map_err(|e| recalloc_common::tls::error_chain(&e))?;
            let status = resp.status().as_u16();
            let body = http_body_util::Limited::new(resp.into_body(), MAX_METRICS_BYTES)
                .collect()
                .await
                .map_err(|e| format!("reading the body: {e}"))?
                .to_bytes();
            Ok((status, String::from_utf8_lossy(&body).into_owned()))
        };
        tokio::time::timeout(READ_TIMEOUT, fetch)
            .await
            .map_err(|_| format!("no answer within {} s", READ_TIMEOUT.as_secs()))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_default_to_the_services_listeners() {
        let mut cfg = Config::default();
        let t = targets(&cfg);
        assert_eq!(t[3].url, "http://127.0.0.1:9103");
        cfg.console.rank_url = "http://recalloc-rank:9103/".into();
        assert_eq!(targets(&cfg)[3].url, "http://recalloc-rank:9103");
        assert_eq!(address("", cfg.rank.grpc_addr), "127.0.0.1:50053");
        assert_eq!(address(" https://r:1 ", cfg.rank.grpc_addr), "https://r:1");
    }
}

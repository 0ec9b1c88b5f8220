//! Layered configuration: built-in defaults, then a TOML file (`RECALLOC_CONFIG` or `--config`),
//! then `RECALLOC_<SECTION>_<FIELD>` environment variables. One struct covers the whole cluster so
//! the CLI and every service agree on addresses without repeating them.
//!
//! Errors name the key and where its value came from, e.g.
//! `invalid config key ingest.max_batch (from RECALLOC_INGEST_MAX_BATCH): invalid digit …`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Environment variable that names the config file.
pub const CONFIG_FILE_ENV: &str = "RECALLOC_CONFIG";
const ENV_PREFIX: &str = "RECALLOC_";
/// `RECALLOC_*` variables that the scripts use and that are not config keys.
const NOT_CONFIG_KEYS: [&str; 2] = [CONFIG_FILE_ENV, "RECALLOC_CACHE"];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("unknown config key {key} (from {origin})")]
    UnknownKey { key: String, origin: String },
    #[error("invalid config key {key} (from {origin}): {message}")]
    Invalid {
        key: String,
        origin: String,
        message: String,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub redis: RedisConfig,
    pub kafka: KafkaConfig,
    pub ingest: IngestConfig,
    pub featurizer: FeaturizerConfig,
    pub embed: EmbedConfig,
    pub rank: RankConfig,
    pub scheduler: SchedulerConfig,
    pub console: ConsoleConfig,
    pub security: SecurityConfig,
    pub telemetry: TelemetryConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// The server, `redis://host:port` or `rediss://host:port` (TLS). It may carry
    /// `user:password@`, but the fields below win when set.
    pub url: String,
    /// `single` (one server, or a primary behind a failover proxy) or `cluster` (a Redis
    /// Cluster, reached through `nodes`).
    pub mode: String,
    /// Cluster seed nodes, comma-separated `host:port`; empty = the url's host and port.
    pub nodes: String,
    /// ACL user; empty = the url's, else `default`.
    pub username: String,
    /// The user's password (`RECALLOC_REDIS_PASSWORD`); never logged.
    pub password: crate::secret::Secret,
    /// A file whose first line is the password (e.g. a mounted Kubernetes Secret); used when
    /// `password` is empty.
    pub password_file: String,
    /// Connect over TLS (also implied by a `rediss://` url).
    pub tls: bool,
    /// PEM file of the CA that signed the server certificates; empty = the system roots.
    pub tls_ca_file: String,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".into(),
            mode: "single".into(),
            nodes: String::new(),
            username: String::new(),
            password: crate::secret::Secret::default(),
            password_file: String::new(),
            tls: false,
            tls_ca_file: String::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Comma-separated bootstrap servers.
    pub brokers: String,
    /// Partitions per topic when the local scripts create them.
    pub partitions: u32,
    /// How long the producer keeps retrying one record before the call fails with UNAVAILABLE.
    pub message_timeout_ms: u32,
    /// librdkafka's idempotent producer (on by default): with acks=all and up to 5 requests in
    /// flight, a retry never duplicates or reorders a partition. Off: one request in flight keeps
    /// each partition in order, and event ids make a duplicate a retry writes harmless.
    pub idempotence: bool,
    /// Consumer group session timeout: how soon a crashed consumer's partitions move. (A member
    /// that does not poll for librdkafka's `max.poll.interval.ms`, 300 s, e.g. while it retries a
    /// batch against a Redis that is down, leaves the group and rejoins; the log positions stored
    /// with the state make the redelivery that follows harmless.)
    pub session_timeout_ms: u32,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            partitions: 4,
            message_timeout_ms: 30_000,
            idempotence: true,
            session_timeout_ms: 10_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    pub grpc_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    /// Most records in one request (or one message of a stream).
    pub max_batch: u32,
    /// Longest user or item id, in bytes.
    pub max_id_len: u32,
    /// Longest title, description or profile text, in bytes.
    pub max_text_len: u32,
    /// Most tags or attributes per record.
    pub max_tags: u32,
    /// The rating scale: RATING values outside it are rejected.
    pub rating_min: f64,
    pub rating_max: f64,
    /// Weights of non-rating events above this are clipped to it (and flagged).
    pub value_cap: f64,
    /// Timestamps before this (unix ms) are rejected.
    pub min_timestamp_ms: i64,
    /// Timestamps further than this into the future are rejected.
    pub max_future_ms: i64,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 50051)),
            metrics_addr: SocketAddr::from(([127, 0, 0, 1], 9101)),
            max_batch: 10_000,
            max_id_len: 256,
            max_text_len: 16 * 1024,
            max_tags: 256,
            rating_min: 1.0,
            rating_max: 5.0,
            value_cap: 1_000.0,
            // 1990-01-01: older dates are typos, not history.
            min_timestamp_ms: 631_152_000_000,
            max_future_ms: 24 * 3600 * 1000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FeaturizerConfig {
    pub metrics_addr: SocketAddr,
    pub group_id: String,
    /// Events kept per user in the history list: what training reads (the newest this many per
    /// user). `exclude_seen` does not depend on it (every item a user ever had an event on is
    /// in the user's seen set).
    pub history_len: u32,
    /// How long an event id is remembered after the event was produced, in seconds: a record
    /// with the same id produced within this window is not applied again (a client's retry, a
    /// redelivery after a crash). The guard's memory is the ids of one window; 0 = forever.
    pub dedup_window_s: u64,
    /// Records applied to Redis per round trip.
    pub batch_size: u32,
}

impl Default for FeaturizerConfig {
    fn default() -> Self {
        Self {
            metrics_addr: SocketAddr::from(([127, 0, 0, 1], 9105)),
            group_id: "recalloc-featurizer".into(),
            history_len: 10_000,
            dedup_window_s: 86_400,
            batch_size: 500,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EmbedConfig {
    pub grpc_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    /// A sentence-transformers directory (config.json, model.safetensors, tokenizer.json, …);
    /// relative paths are from the working directory. `make model` fetches the default.
    pub model_dir: PathBuf,
    /// `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    /// f16 weights on the GPU (ignored on CPU).
    pub half_precision: bool,
    /// Inference threads, each running one batch at a time.
    pub workers: u32,
    /// libtorch intra-op threads per inference thread.
    pub threads_per_worker: u32,
    /// Most texts in one forward pass.
    pub max_batch_size: u32,
    /// How long the oldest waiting text may wait for a batch to fill.
    pub max_wait_ms: u32,
    /// Most texts waiting for inference; beyond it Embed answers RESOURCE_EXHAUSTED.
    pub queue_capacity: u32,
    /// Most texts in one Embed request.
    pub max_request_texts: u32,
    /// Longest text accepted, in bytes (texts are truncated to the model's token limit anyway).
    pub max_text_bytes: u32,
    /// How stored vectors are encoded: `f32`, `f16` or `int8`.
    pub storage: String,
    /// Consume the items and users topics (the worker). Off: serve Embed only, so API replicas
    /// scale apart from the workers.
    pub consume: bool,
    /// Consumer group of the embed workers on the items and users topics.
    pub group_id: String,
    /// Records per consumed batch.
    pub consumer_batch: u32,
    /// How often the worker embeds items and users that Redis knows but that have no vector
    /// (after `recalloc rebuild` or a Redis restart); 0 turns it off.
    pub sweep_interval_s: u32,
    /// User profile fusion: the share of the user's own text (β), the half-life of an event's
    /// weight, and how many history items are used (see the embed crate's `fusion` module).
    pub profile_text_weight: f64,
    pub profile_half_life_hours: f64,
    pub profile_max_items: u32,
}

impl Default for EmbedConfig {
    fn default() -> Self {
        Self {
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 50052)),
            metrics_addr: SocketAddr::from(([127, 0, 0, 1], 9102)),
            model_dir: PathBuf::from("models/all-MiniLM-L6-v2"),
            device: "cpu".into(),
            half_precision: false,
            workers: 2,
            threads_per_worker: 1,
            max_batch_size: 64,
            max_wait_ms: 2,
            queue_capacity: 8192,
            max_request_texts: 4096,
            max_text_bytes: 64 * 1024,
            storage: "f16".into(),
            consume: true,
            group_id: "recalloc-embed".into(),
            consumer_batch: 256,
            sweep_interval_s: 30,
            profile_text_weight: 0.3,
            profile_half_life_hours: 24.0 * 30.0,
            profile_max_items: 50,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RankConfig {
    pub grpc_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    /// What Train builds unless the request names one: `implicit_als`, `explicit_mf` or
    /// `hybrid` (ALS plus text vectors mapped into the factor space for cold items).
    pub algorithm: String,
    pub factors: u32,
    /// ALS iterations or SGD epochs.
    pub iterations: u32,
    pub regularization: f64,
    /// ALS confidence: an interaction of strength r has confidence 1 + alpha·r.
    pub alpha: f64,
    /// SGD learning rate (explicit MF).
    pub learning_rate: f64,
    /// Training threads.
    pub threads: u32,
    /// Retrain this often when new events arrived since the current model; 0 = only on Train.
    pub train_interval_s: u32,
    /// How often servers look for a new model version to load.
    pub poll_interval_ms: u32,
    /// Model versions kept in Redis (older ones are deleted after a new one is current).
    pub keep_versions: u32,
    /// Size of the pieces a model is written to Redis in.
    pub chunk_bytes: u32,
    /// Catalogues of at least this many items are served through an approximate index (IVF
    /// over the item factors, built as each model loads; exclusions and filters stay exact);
    /// smaller ones score every item. 0 = never.
    pub ann_min_items: u32,
    /// The index's lists and the lists scanned per query; 0 = about 3·√items and lists / 12.
    pub ann_lists: u32,
    pub ann_probes: u32,
    /// Implicit ALS and hybrid train the second stage too (candidates from several sources
    /// re-ranked by a learned ranker, served when it wins on validation); false = the factor
    /// model alone.
    pub two_stage: bool,
}

impl Default for RankConfig {
    fn default() -> Self {
        Self {
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 50053)),
            metrics_addr: SocketAddr::from(([127, 0, 0, 1], 9103)),
            algorithm: "implicit_als".into(),
            factors: 64,
            iterations: 15,
            regularization: 0.05,
            alpha: 0.25,
            learning_rate: 0.01,
            threads: 2,
            train_interval_s: 0,
            poll_interval_ms: 1000,
            keep_versions: 2,
            chunk_bytes: 1 << 20,
            ann_min_items: 100_000,
            ann_lists: 0,
            ann_probes: 0,
            two_stage: true,
        }
    }
}

/// The scheduler: what it watches, how it plans, and where it acts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerConfig {
    pub grpc_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    /// Seconds between load readings; also the planning step.
    pub tick_seconds: u32,
    /// Planning horizon in ticks.
    pub horizon_steps: u32,
    /// Most recent readings kept per deployment (one week of one-minute ticks by default).
    pub history_steps: u32,
    /// Forecast quantile the plan provisions for (also prices unmet demand, see the planner).
    pub service_level: f64,
    /// `auto` (a cluster when one is reachable: in-cluster service account or kubeconfig,
    /// else dry run), `kube` (a cluster is required) or `dry_run` (never touches one).
    pub mode: String,
    /// Namespace of the scaled Deployments and of the Lease; empty = the pod's own namespace
    /// (or the kubeconfig's default).
    pub namespace: String,
    /// The coordination.k8s.io Lease whose holder acts; the others serve read-only. Empty: no
    /// election, this replica always acts (run exactly one; the Role then needs no Lease rights).
    pub lease_name: String,
    pub lease_seconds: u32,
    /// This replica's name in the Lease; empty = `$POD_NAME`, else the host name.
    pub identity: String,
    /// Record each applied plan in the Deployment's `recalloc.io/plan` annotation, so
    /// `kubectl describe` shows why it has its replicas. Needs `patch` on deployments, beyond
    /// the scale subresource.
    pub record_plan: bool,
    /// Prometheus HTTP API base URL for `prometheus` signals, e.g. `http://prometheus:9090`.
    pub prometheus_url: String,
    /// Weights that turn a replica's requests into a cost per step.
    pub cpu_weight: f64,
    pub memory_gib_weight: f64,
    pub gpu_weight: f64,
    /// Cluster-wide limits per step coupling the deployments, e.g. `{ resource = "gpu",
    /// limit = 4 }`.
    pub budgets: Vec<BudgetConfig>,
    pub deployments: Vec<ManagedDeployment>,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        let local = |port: u16| format!("http://127.0.0.1:{port}/metrics");
        Self {
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 50054)),
            metrics_addr: SocketAddr::from(([127, 0, 0, 1], 9104)),
            tick_seconds: 60,
            horizon_steps: 30,
            history_steps: 10_080,
            service_level: 0.99,
            mode: "auto".into(),
            namespace: String::new(),
            lease_name: "recalloc-scheduler".into(),
            lease_seconds: 15,
            identity: String::new(),
            record_plan: true,
            prometheus_url: String::new(),
            cpu_weight: 1.0,
            memory_gib_weight: 0.125,
            gpu_weight: 8.0,
            budgets: Vec::new(),
            // recalloc's own services, read from their local /metrics (the Helm chart points
            // these at the in-cluster Services instead).
            deployments: vec![
                ManagedDeployment {
                    name: "recalloc-rank".into(),
                    signal: Signal::MetricsRate {
                        url: local(9103),
                        metric: "recalloc_grpc_requests_total".into(),
                        labels: BTreeMap::from([("service".into(), "recalloc.v1.Ranker".into())]),
                    },
                    capacity_per_replica: 2000.0,
                    ..ManagedDeployment::default()
                },
                ManagedDeployment {
                    name: "recalloc-embed".into(),
                    signal: Signal::MetricsRate {
                        url: local(9102),
                        metric: "recalloc_embed_texts_total".into(),
                        labels: BTreeMap::new(),
                    },
                    capacity_per_replica: 150.0,
                    memory_gib: 2.0,
                    cpu: 2.0,
                    ..ManagedDeployment::default()
                },
                ManagedDeployment {
                    name: "recalloc-featurizer".into(),
                    signal: Signal::KafkaLag {
                        group: "recalloc-featurizer".into(),
                        topic: "recalloc.events.v1".into(),
                        drain_seconds: 60,
                    },
                    capacity_per_replica: 5000.0,
                    ..ManagedDeployment::default()
                },
            ],
        }
    }
}

/// A Deployment the scheduler sizes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ManagedDeployment {
    /// The Deployment's name in the namespace.
    pub name: String,
    /// Where its demand is read.
    pub signal: Signal,
    /// Demand one replica serves within its latency objective, in the signal's unit.
    pub capacity_per_replica: f64,
    pub min_replicas: u32,
    pub max_replicas: u32,
    /// Most replicas added or removed per tick.
    pub max_step: u32,
    /// Seconds from creating a pod until it serves (the plan's lead time).
    pub startup_seconds: u32,
    /// One replica's requests (pricing and budgets).
    pub cpu: f64,
    pub memory_gib: f64,
    pub gpu: f64,
}

impl Default for ManagedDeployment {
    fn default() -> Self {
        Self {
            name: String::new(),
            signal: Signal::default(),
            capacity_per_replica: 1.0,
            min_replicas: 1,
            max_replicas: 10,
            max_step: 4,
            startup_seconds: 60,
            cpu: 1.0,
            memory_gib: 1.0,
            gpu: 0.0,
        }
    }
}

/// A demand signal.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Signal {
    /// Per-second rate of a counter on a Prometheus text endpoint (summed over the series
    /// whose labels include `labels`).
    MetricsRate {
        url: String,
        metric: String,
        #[serde(default)]
        labels: BTreeMap<String, String>,
    },
    /// The value of a gauge on a Prometheus text endpoint (summed likewise), e.g. a queue depth.
    MetricsGauge {
        url: String,
        metric: String,
        #[serde(default)]
        labels: BTreeMap<String, String>,
    },
    /// A consumer group on a topic: records produced per second plus the backlog spread over
    /// `drain_seconds`.
    KafkaLag {
        group: String,
        topic: String,
        #[serde(default = "default_drain_seconds")]
        drain_seconds: u32,
    },
    /// An instant PromQL query against `scheduler.prometheus_url` (the result's values summed).
    Prometheus { query: String },
}

fn default_drain_seconds() -> u32 {
    60
}

impl Default for Signal {
    fn default() -> Self {
        Signal::Prometheus {
            query: String::new(),
        }
    }
}

/// A cluster-wide limit on one resource (`cpu`, `memory_gib` or `gpu`) in every step.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    pub resource: String,
    pub limit: f64,
}

/// The web console (`recalloc-console`): where it listens and where it finds the services.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    /// The page, its JSON API, `/metrics`, `/healthz` and `/readyz`, all on one port.
    pub http_addr: SocketAddr,
    /// How often the console reads every service (readiness, `/metrics`, plan, forecasts,
    /// model, stats); the page shows what the last round saw.
    pub refresh_ms: u32,
    /// The services' gRPC addresses as the CLI's `--*-addr` flags take them (`host:port`,
    /// `http://…`, `https://…`, so a DNS name works in a cluster); empty = `<service>.grpc_addr`.
    pub ingest_addr: String,
    pub embed_addr: String,
    pub rank_addr: String,
    pub scheduler_addr: String,
    /// Base URLs of the services' HTTP endpoints (`/metrics`, `/readyz`), e.g.
    /// `http://recalloc-rank:9103`; empty = `http://` + `<service>.metrics_addr`.
    pub ingest_url: String,
    pub featurizer_url: String,
    pub embed_url: String,
    pub rank_url: String,
    pub scheduler_url: String,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 9106)),
            refresh_ms: 5000,
            ingest_addr: String::new(),
            embed_addr: String::new(),
            rank_addr: String::new(),
            scheduler_addr: String::new(),
            ingest_url: String::new(),
            featurizer_url: String::new(),
            embed_url: String::new(),
            rank_url: String::new(),
            scheduler_url: String::new(),
        }
    }
}

/// Who may change state (see `crate::auth`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityConfig {
    /// Bearer token that ingest writes and Train require; empty = no guard.
    pub token: crate::secret::Secret,
    /// A file whose first line is the token (e.g. a mounted Kubernetes Secret).
    pub token_file: String,
    /// Server side of TLS (see `crate::tls`): this server's certificate chain, PEM. Set, every
    /// gRPC server of the process speaks TLS only; empty, plain HTTP/2 (the local cluster).
    pub tls_cert_file: String,
    /// The private key of `tls_cert_file`, PEM (PKCS#8, PKCS#1 or SEC1).
    pub tls_key_file: String,
    /// CA certificates, PEM, that client certificates must chain to. Set, a caller without a
    /// certificate signed by one of them is refused during the handshake (mutual TLS): only
    /// holders of a cluster identity reach the service at all, token or not.
    pub tls_client_ca_file: String,
    /// Client side: CA certificates, PEM, that the servers' certificates must chain to. Set,
    /// the CLI (and every other gRPC client) connects with TLS; `https://` addresses need it.
    pub tls_ca_file: String,
    /// The client's own certificate chain and key, PEM, presented to servers that require
    /// client certificates (`tls_client_ca_file` on their side).
    pub tls_client_cert_file: String,
    pub tls_client_key_file: String,
    /// The name the server certificate must carry; empty = the host of the address dialled.
    /// Needed when servers are dialled by IP but their certificates name a DNS name.
    pub tls_server_name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// `EnvFilter` directives; `RUST_LOG` wins when set.
    pub log_filter: String,
    /// `text` or `json`.
    pub log_format: String,
    /// OTLP/gRPC collector for traces, e.g. `http://otel-collector:4317`; empty = no export.
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` and `OTEL_EXPORTER_OTLP_ENDPOINT` win when set.
    pub otlp_endpoint: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_filter: "info".into(),
            log_format: "text".into(),
            otlp_endpoint: String::new(),
        }
    }
}

impl Config {
    /// Loads defaults → the file named by `file` or `RECALLOC_CONFIG` → `RECALLOC_*` variables
    /// of the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let env: BTreeMap<String, String> = std::env::vars().collect();
        let from_env = env.get(CONFIG_FILE_ENV).map(PathBuf::from);
        Self::load_from(file.or(from_env.as_deref()), &env)
    }

    /// Like [`Config::load`] with an explicit environment (for tests).
    pub fn load_from(
        file: Option<&Path>,
        env: &BTreeMap<String, String>,
    ) -> Result<Self, ConfigError> {
        let mut tree = toml::Value::try_from(Config::default()).expect("defaults serialize");
        let mut origins: BTreeMap<String, String> = BTreeMap::new();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
            let file_tree: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::Parse {
                path: path.to_owned(),
                message: e.to_string(),
            })?;
            merge(
                &mut tree,
                toml::Value::Table(file_tree),
                "",
                &mut origins,
                &path.display().to_string(),
            );
        }
        for (name, raw) in env {
            let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            if NOT_CONFIG_KEYS.contains(&name.as_str()) || name.starts_with("RECALLOC_TEST_") {
                continue;
            }
            let (section, field) =
                split_env_key(&tree, &rest.to_ascii_lowercase()).ok_or_else(|| {
                    ConfigError::UnknownKey {
                        key: rest.to_ascii_lowercase(),
                        origin: name.clone(),
                    }
                })?;
            let table = tree
                .get_mut(&section)
                .and_then(|v| v.as_table_mut())
                .expect("section exists");
            let typed = typed_like(table.get(&field), raw);
            table.insert(field.clone(), typed);
            origins.insert(format!("{section}.{field}"), name.clone());
        }
        serde_path_to_error::deserialize(tree).map_err(|e| {
            let key = e.path().to_string();
            let message = e.inner().to_string();
            if message.starts_with("unknown field") {
                return ConfigError::UnknownKey {
                    origin: origin_of(&origins, &key),
                    key,
                };
            }
            ConfigError::Invalid {
                origin: origin_of(&origins, &key),
                key,
                message,
            }
        })
    }
}

fn origin_of(origins: &BTreeMap<String, String>, key: &str) -> String {
    origins
        .iter()
        .filter(|(k, _)| key == k.as_str() || key.starts_with(&format!("{k}.")))
        .map(|(_, v)| v.clone())
        .next()
        .or_else(|| {
            origins
                .iter()
                .find(|(k, _)| k.starts_with(&format!("{key}.")))
                .map(|(_, v)| v.clone())
        })
        .unwrap_or_else(|| "defaults".into())
}

/// `ingest_max_batch` → (`ingest`, `max_batch`) when `ingest` is a section with that field.
fn split_env_key(tree: &toml::Value, key: &str) -> Option<(String, String)> {
    let sections = tree.as_table()?;
    sections.iter().find_map(|(section, fields)| {
        let field = key.strip_prefix(section.as_str())?.strip_prefix('_')?;
        fields
            .as_table()?
            .contains_key(field)
            .then(|| (section.clone(), field.to_owned()))
    })
}

/// Environment values are strings; give them the type the default has so `"8"` can fill an
/// integer field and `"123"` a string one. Anything unparsable stays a string and fails
/// deserialisation with a message naming the key.
fn typed_like(default: Option<&toml::Value>, raw: &str) -> toml::Value {
    let raw = raw.trim();
    match default {
        Some(toml::Value::Integer(_)) => raw
            .parse::<i64>()
            .map(toml::Value::Integer)
            .unwrap_or_else(|_| toml::Value::String(raw.into())),
        Some(toml::Value::Float(_)) => raw
            .parse::<f64>()
            .map(toml::Value::Float)
            .unwrap_or_else(|_| toml::Value::String(raw.into())),
        Some(toml::Value::Boolean(_)) => raw
            .parse::<bool>()
            .map(toml::Value::Boolean)
            .unwrap_or_else(|_| toml::Value::String(raw.into())),
        _ => toml::Value::String(raw.into()),
    }
}

fn merge(
    base: &mut toml::Value,
    over: toml::Value,
    prefix: &str,
    origins: &mut BTreeMap<String, String>,
    origin: &str,
) {
    match (base, over) {
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                match b.get_mut(&k) {
                    Some(existing) if existing.is_table() && v.is_table() => {
                        merge(existing, v, &path, origins, origin)
                    }
                    _ => {
                        origins.insert(path, origin.to_owned());
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_the_documented_ports() {
        let c = Config::load_from(None, &env(&[])).unwrap();
        assert_eq!(c.ingest.grpc_addr.port(), 50051);
        assert_eq!(c.embed.grpc_addr.port(), 50052);
        assert_eq!(c.rank.grpc_addr.port(), 50053);
        assert_eq!(c.scheduler.grpc_addr.port(), 50054);
        assert_eq!(
            [
                c.ingest.metrics_addr.port(),
                c.embed.metrics_addr.port(),
                c.rank.metrics_addr.port(),
                c.scheduler.metrics_addr.port()
            ],
            [9101, 9102, 9103, 9104]
        );
        assert_eq!(c.console.http_addr.port(), 9106);
        assert_eq!(c.redis.url, "redis://127.0.0.1:6379");
        assert_eq!(c.kafka.brokers, "127.0.0.1:9092");
    }

    #[test]
    fn scheduler_deployments_come_from_the_file_and_errors_name_the_key() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            f,
            "[scheduler]\ntick_seconds = 30\n[[scheduler.deployments]]\nname = \"web\"\n\
             capacity_per_replica = 50.0\nmax_replicas = 20\n\
             signal = {{ kind = \"kafka_lag\", group = \"g\", topic = \"t\" }}\n\
             [[scheduler.budgets]]\nresource = \"gpu\"\nlimit = 4.0"
        )
        .unwrap();
        let c = Config::load_from(
            Some(f.path()),
            &env(&[("RECALLOC_SCHEDULER_MODE", "dry_run")]),
        )
        .unwrap();
        let s = &c.scheduler;
        assert_eq!((s.tick_seconds, s.mode.as_str()), (30, "dry_run"));
        // The file's list replaces the default one; unset fields take their defaults.
        assert_eq!(s.deployments.len(), 1);
        let d = &s.deployments[0];
        assert_eq!(
            (d.name.as_str(), d.max_replicas, d.min_replicas),
            ("web", 20, 1)
        );
        assert_eq!(
            d.signal,
            Signal::KafkaLag {
                group: "g".into(),
                topic: "t".into(),
                drain_seconds: 60
            }
        );
        assert_eq!(s.budgets[0].limit, 4.0);

        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            f,
            "[[scheduler.deployments]]\nname = \"web\"\nsignal = {{ kind = \"tea_leaves\" }}"
        )
        .unwrap();
        let err = Config::load_from(Some(f.path()), &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("scheduler.deployments[0].signal"), "{err}");
        assert!(err.contains("tea_leaves"), "{err}");
    }

    #[test]
    fn env_overrides_file_overrides_defaults() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            f,
            "[ingest]\nmax_batch = 7\nrating_max = 10.0\n[redis]\nurl = \"redis://file:1\""
        )
        .unwrap();
        let c = Config::load_from(
            Some(f.path()),
            &env(&[
                ("RECALLOC_INGEST_MAX_BATCH", "9"),
                ("RECALLOC_FEATURIZER_GROUP_ID", "123"),
                ("RECALLOC_KAFKA_BROKERS", "k1:1,k2:2"),
                ("PATH", "/bin"),
            ]),
        )
        .unwrap();
        assert_eq!(c.ingest.max_batch, 9);
        assert_eq!(c.ingest.rating_max, 10.0);
        assert_eq!(c.redis.url, "redis://file:1");
        assert_eq!(c.featurizer.group_id, "123");
        assert_eq!(c.kafka.brokers, "k1:1,k2:2");
        let c = Config::load_from(
            None,
            &env(&[
                ("RECALLOC_CONSOLE_HTTP_ADDR", "0.0.0.0:8080"),
                ("RECALLOC_CONSOLE_RANK_ADDR", "http://recalloc-rank:50053"),
            ]),
        )
        .unwrap();
        assert_eq!(c.console.http_addr.port(), 8080);
        assert_eq!(c.console.rank_addr, "http://recalloc-rank:50053");
    }

    #[test]
    fn redis_credentials_tls_and_cluster_come_from_the_environment_and_do_not_print() {
        let c = Config::load_from(
            None,
            &env(&[
                ("RECALLOC_REDIS_USERNAME", "svc"),
                ("RECALLOC_REDIS_PASSWORD", "pw-in-env"),
                ("RECALLOC_REDIS_PASSWORD_FILE", "/run/secrets/redis"),
                ("RECALLOC_REDIS_TLS", "true"),
                ("RECALLOC_REDIS_TLS_CA_FILE", "/etc/ca.pem"),
                ("RECALLOC_REDIS_MODE", "cluster"),
                ("RECALLOC_REDIS_NODES", "r0:6379,r1:6379"),
            ]),
        )
        .unwrap();
        let r = &c.redis;
        assert_eq!(
            (r.username.as_str(), r.password.expose()),
            ("svc", "pw-in-env")
        );
        assert_eq!(r.password_file, "/run/secrets/redis");
        assert!(r.tls);
        assert_eq!(
            (r.tls_ca_file.as_str(), r.mode.as_str()),
            ("/etc/ca.pem", "cluster")
        );
        assert_eq!(r.nodes, "r0:6379,r1:6379");
        assert!(!format!("{c:?}").contains("pw-in-env"));
        let err = Config::load_from(None, &env(&[("RECALLOC_REDIS_TLS", "sometimes")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("redis.tls") && err.contains("RECALLOC_REDIS_TLS"),
            "{err}"
        );
    }

    #[test]
    fn invalid_env_value_names_the_variable() {
        let err = Config::load_from(None, &env(&[("RECALLOC_INGEST_MAX_BATCH", "many")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("ingest.max_batch"), "{err}");
        assert!(err.contains("RECALLOC_INGEST_MAX_BATCH"), "{err}");
        let err = Config::load_from(None, &env(&[("RECALLOC_RANK_GRPC_ADDR", "nowhere")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("rank.grpc_addr"), "{err}");
    }

    #[test]
    fn unknown_keys_are_errors() {
        let err = Config::load_from(None, &env(&[("RECALLOC_INGEST_MAX_BATHC", "1")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown config key ingest_max_bathc"), "{err}");
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "[redis]\nurll = \"x\"").unwrap();
        let err = Config::load_from(Some(f.path()), &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown config key redis"), "{err}");
    }

    #[test]
    fn bad_file_is_named() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "[ingest\n").unwrap();
        let err = Config::load_from(Some(f.path()), &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not valid TOML"), "{err}");
        let err = Config::load_from(Some(Path::new("/no/such/file.toml")), &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/no/such/file.toml"), "{err}");
    }
}

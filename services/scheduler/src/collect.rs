//! Demand readings: turns each managed deployment's [`Signal`] into one number per tick.
//!
//! * `metrics_rate`: GETs a Prometheus text endpoint, sums the counter series that match, and
//!   returns the per-second increase since the previous successful reading. The first reading
//!   only remembers the value (`Ok(None)`). A counter reset (a sum lower than the previous one)
//!   counts the new value as the increase, `value / dt`.
//! * `metrics_gauge`: the matching series' sum, as is.
//! * `kafka_lag`: records produced per second to the topic (the summed high-watermark increase
//!   over the partitions since the previous reading) plus the group's backlog divided by
//!   `drain_seconds`. The backlog per partition is `high - max(committed, low)`: a partition
//!   without a committed offset counts all its retained records (`high - low`). **The first
//!   reading**, which has no previous watermarks, returns the backlog term alone
//!   (`Ok(Some(lag / drain_seconds))`): the backlog is known at once, and leaving the produce
//!   rate out for one tick understates demand less than returning nothing would.
//! * `prometheus`: an instant query against `scheduler.prometheus_url`; a vector's sample values
//!   are summed, a scalar is taken as is.
//!
//! Every reading is bounded by [`TIMEOUT`] (5 s). A failed reading returns `Err` and leaves the
//! deployment's state alone, so the next success computes its rate over the whole gap. A
//! reading at a `now` that is not after the previous one (`dt == 0`) returns `Ok(None)` for a
//! rate (the kafka signal: the backlog term alone) and keeps the previous point too.
//! Readings that come out NaN or infinite are [`CollectError::NotFinite`].
//!
//! Metrics URLs are plain `http://` (the services' `/metrics` endpoints); they and the
//! Prometheus URL are checked in [`Collector::new`], so a typo is a start-up error.

use crate::scrape::{self, ScrapeError};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use recalloc_common::config::{SchedulerConfig, Signal};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest a single reading may take (HTTP request and body, or the Kafka round trips).
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// Largest response body read from a metrics endpoint or Prometheus.
const MAX_BODY: usize = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error("GET {url}: {reason}")]
    Http { url: String, reason: String },
    #[error("GET {url}: HTTP status {status}")]
    Status { url: String, status: u16 },
    #[error("GET {url}: invalid Prometheus text: {source}")]
    Parse { url: String, source: ScrapeError },
    #[error("GET {url}: no series of {metric} matches the signal's labels")]
    NoSeries { url: String, metric: String },
    #[error("kafka group {group} on topic {topic}: {reason}")]
    Kafka {
        group: String,
        topic: String,
        reason: String,
    },
    #[error("prometheus query {query:?}: {reason}")]
    Prometheus { query: String, reason: String },
    /// The reading came out NaN or infinite; `what` names the signal.
    #[error("{what} is not a finite number: {value}")]
    NotFinite { what: String, value: f64 },
    /// A signal that cannot be read with this configuration (found by [`Collector::new`]).
    #[error("not configured: {0}")]
    NotConfigured(String),
}

type HttpClient = Client<HttpConnector, Empty<&'static [u8]>>;

/// Reads every managed deployment's demand; holds what rates need between ticks.
pub struct Collector {
    http: HttpClient,
    prometheus_url: String,
    readers: Vec<Reader>,
}

struct Reader {
    name: String,
    source: Source,
}

enum Source {
    Rate {
        url: http::Uri,
        metric: String,
        labels: BTreeMap<String, String>,
        /// The last counter sum and when it was read.
        previous: Option<(f64, Instant)>,
    },
    Gauge {
        url: http::Uri,
        metric: String,
        labels: BTreeMap<String, String>,
    },
    Kafka {
        consumer: Arc<BaseConsumer>,
        group: String,
        topic: String,
        drain_seconds: f64,
        /// High watermark per partition at the last reading, and when.
        previous: Option<(BTreeMap<i32, i64>, Instant)>,
    },
    Prometheus {
        query: String,
    },
}

impl Collector {
    /// `kafka_brokers` serves `kafka_lag` signals (`Config.kafka.brokers`); the Prometheus URL
    /// comes from `cfg.prometheus_url` (`""` = none). Errors are configuration errors: a
    /// `prometheus` signal without `scheduler.prometheus_url`, a URL that is not `http://`,
    /// `drain_seconds = 0`, no brokers for a `kafka_lag` signal.
    pub fn new(cfg: &SchedulerConfig, kafka_brokers: &str) -> Result<Self, CollectError> {
        let prometheus_url = cfg.prometheus_url.trim().trim_end_matches('/').to_owned();
        let mut readers = Vec::with_capacity(cfg.deployments.len());
        for d in &cfg.deployments {
            let name = &d.name;
            let source = match &d.signal {
                Signal::MetricsRate {
                    url,
                    metric,
                    labels,
                } => Source::Rate {
                    url: http_url(url, &format!("deployment {name}: signal url"))?,
                    metric: metric.clone(),
                    labels: labels.clone(),
                    previous: None,
                },
                Signal::MetricsGauge {
                    url,
                    metric,
                    labels,
                } => Source::Gauge {
                    url: http_url(url, &format!("deployment {name}: signal url"))?,
                    metric: metric.clone(),
                    labels: labels.clone(),
                },
                Signal::KafkaLag {
                    group,
                    topic,
                    drain_seconds,
                } => {
                    if *drain_seconds == 0 {
                        return Err(CollectError::NotConfigured(format!(
                            "deployment {name}: kafka_lag drain_seconds must be at least 1"
                        )));
                    }
                    if kafka_brokers.trim().is_empty() {
                        return Err(CollectError::NotConfigured(format!(
                            "deployment {name}: a kafka_lag signal needs kafka.brokers"
                        )));
                    }
                    Source::Kafka {
                        consumer: Arc::new(lag_consumer(kafka_brokers, group, topic)?),
                        group: group.clone(),
                        topic: topic.clone(),
                        drain_seconds: f64::from(*drain_seconds),
                        previous: None,
                    }
                }
                Signal::Prometheus { query } => {
                    if prometheus_url.is_empty() {
                        return Err(CollectError::NotConfigured(format!(
                            "deployment {name} has a prometheus signal but \
                             scheduler.prometheus_url is not set"
                        )));
                    }
                    http_url(
                        &format!("{prometheus_url}/api/v1/query"),
                        "scheduler.prometheus_url",
                    )?;
                    Source::Prometheus {
                        query: query.clone(),
                    }
                }
            };
            readers.push(Reader {
                name: name.clone(),
                source,
            });
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(TIMEOUT));
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector);
        Ok(Self {
            http,
            prometheus_url,
            readers,
        })
    }

    /// Names of the deployments, in config order (the order of [`Collector::read_all`]).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.readers.iter().map(|r| r.name.as_str())
    }

    /// One reading per deployment, in config order: `Ok(Some(demand))`; `Ok(None)` for the
    /// first reading of a rate (no previous counter value yet); or `Err`, after which the
    /// caller keeps the last value. The readings run concurrently; `now` is the tick's time
    /// (tests pass their own).
    pub async fn read_all(
        &mut self,
        now: Instant,
    ) -> Vec<(String, Result<Option<f64>, CollectError>)> {
        let http = &self.http;
        let prometheus_url = self.prometheus_url.as_str();
        let reads = self.readers.iter_mut().map(|r| async move {
            let reading = r.source.read(http, prometheus_url, now).await;
            if let Err(e) = &reading {
                tracing::debug!(deployment = %r.name, error = %e, "demand reading failed");
            }
            (r.name.clone(), reading)
        });
        futures::future::join_all(reads).await
    }
}

impl Source {
    async fn read(
        &mut self,
        http: &HttpClient,
        prometheus_url: &str,
        now: Instant,
    ) -> Result<Option<f64>, CollectError> {
        match self {
            Source::Rate {
                url,
                metric,
                labels,
                previous,
            } => {
                let value = scrape_sum(http, url, metric, labels).await?;
                let Some((before, at)) = *previous else {
                    *previous = Some((value, now));
                    return Ok(None);
                };
                let dt = now.saturating_duration_since(at).as_secs_f64();
                if dt <= 0.0 {
                    return Ok(None);
                }
                let increase = if value < before {
                    value
                } else {
                    value - before
                };
                *previous = Some((value, now));
                finite(increase / dt, || format!("rate of {metric} at {url}")).map(Some)
            }
            Source::Gauge {
                url,
                metric,
                labels,
            } => {
                let value = scrape_sum(http, url, metric, labels).await?;
                finite(value, || format!("{metric} at {url}")).map(Some)
            }
            Source::Kafka {
                consumer,
                group,
                topic,
                drain_seconds,
                previous,
            } => {
                let offsets = kafka_offsets(consumer, group, topic).await?;
                let lag: i64 = offsets
                    .values()
                    .map(|o| (o.high - o.committed.unwrap_or(o.low).max(o.low)).max(0))
                    .sum();
                let backlog = lag as f64 / *drain_seconds;
                let highs: BTreeMap<i32, i64> = offsets.iter().map(|(&p, o)| (p, o.high)).collect();
                let produced = match previous.as_ref() {
                    None => None,
                    Some((before, at)) => {
                        let dt = now.saturating_duration_since(*at).as_secs_f64();
                        (dt > 0.0).then(|| produced_since(before, &highs) as f64 / dt)
                    }
                };
                if produced.is_some() || previous.is_none() {
                    *previous = Some((highs, now));
                }
                tracing::trace!(%group, %topic, lag, ?produced, "kafka reading");
                Ok(Some(produced.unwrap_or(0.0) + backlog))
            }
            Source::Prometheus { query } => prometheus(http, prometheus_url, query).await.map(Some),
        }
    }
}

/// Records appended since `before`: the high-watermark increase per partition. A partition
/// whose watermark went down (the topic was recreated) counts its new watermark; a partition
/// that is new since `before` counts nothing (when its records arrived is unknown).
fn produced_since(before: &BTreeMap<i32, i64>, highs: &BTreeMap<i32, i64>) -> i64 {
    highs
        .iter()
        .filter_map(|(p, &high)| {
            let old = *before.get(p)?;
            Some(if high < old { high } else { high - old })
        })
        .sum()
}

fn finite(value: f64, what: impl FnOnce() -> String) -> Result<f64, CollectError> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(CollectError::NotFinite {
            what: what(),
            value,
        })
    }
}

/// Parses a plain-HTTP URL; `what` names the setting in the error.
fn http_url(url: &str, what: &str) -> Result<http::Uri, CollectError> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| CollectError::NotConfigured(format!("{what} {url:?} is not a URL: {e}")))?;
    if uri.scheme_str() != Some("http") || uri.authority().is_none() {
        return Err(CollectError::NotConfigured(format!(
            "{what} {url:?} must be a plain http://host:port/… URL"
        )));
    }
    Ok(uri)
}

/// GET within [`TIMEOUT`]: the status and the body (at most [`MAX_BODY`] bytes).
async fn get(http: &HttpClient, url: &http::Uri) -> Result<(u16, Vec<u8>), CollectError> {
    let fail = |reason: String| CollectError::Http {
        url: url.to_string(),
        reason,
    };
    let fetch = async {
        let req = http::Request::get(url.clone())
            .header(http::header::ACCEPT, "text/plain;version=0.0.4, */*;q=0.1")
            .header(http::header::USER_AGENT, "recalloc-scheduler")
            .body(Empty::new())
            .map_err(|e| fail(e.to_string()))?;
        let res = http.request(req).await.map_err(|e| fail(error_chain(&e)))?;
        let status = res.status().as_u16();
        let body = Limited::new(res.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| fail(format!("reading the body: {e}")))?
            .to_bytes();
        Ok((status, body.to_vec()))
    };
    tokio::time::timeout(TIMEOUT, fetch)
        .await
        .map_err(|_| fail(format!("no complete answer within {TIMEOUT:?}")))?
}

/// `e` and its sources, `: `-separated (hyper's own message is often just "client error").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

async fn scrape_sum(
    http: &HttpClient,
    url: &http::Uri,
    metric: &str,
    labels: &BTreeMap<String, String>,
) -> Result<f64, CollectError> {
    let (status, body) = get(http, url).await?;
    if !(200..300).contains(&status) {
        return Err(CollectError::Status {
            url: url.to_string(),
            status,
        });
    }
    let text = String::from_utf8(body).map_err(|e| CollectError::Http {
        url: url.to_string(),
        reason: format!("the body is not UTF-8: {e}"),
    })?;
    let samples = scrape::parse(&text).map_err(|source| CollectError::Parse {
        url: url.to_string(),
        source,
    })?;
    scrape::sum_matching(&samples, metric, labels).ok_or_else(|| CollectError::NoSeries {
        url: url.to_string(),
        metric: metric.to_owned(),
    })
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

async fn prometheus(http: &HttpClient, base: &str, query: &str) -> Result<f64, CollectError> {
    let fail = |reason: String| CollectError::Prometheus {
        query: query.to_owned(),
        reason,
    };
    let url = format!("{base}/api/v1/query?query={}", url_encode(query));
    let uri: http::Uri = url
        .parse()
        .map_err(|e| fail(format!("invalid URL {url}: {e}")))?;
    let (status, body) = get(http, &uri).await.map_err(|e| fail(e.to_string()))?;
    // Prometheus answers a bad query with 400/422/503 and a JSON error; prefer its message.
    let json: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) if (200..300).contains(&status) => {
            return Err(fail(format!("the answer is not JSON: {e}")));
        }
        Err(_) => {
            return Err(fail(format!("GET {url}: HTTP status {status}")));
        }
    };
    match json.get("status").and_then(|s| s.as_str()) {
        Some("success") if (200..300).contains(&status) => {}
        Some("error") => {
            let kind = json.get("errorType").and_then(|v| v.as_str()).unwrap_or("");
            let msg = json
                .get("error")
                .and_then(|v| v.as_str())
                .unwrap_or("(no message)");
            return Err(fail(if kind.is_empty() {
                msg.to_owned()
            } else {
                format!("{kind}: {msg}")
            }));
        }
        _ if !(200..300).contains(&status) => {
            return Err(fail(format!("GET {url}: HTTP status {status}")));
        }
        other => {
            return Err(fail(format!(
                "unexpected status {} in the answer",
                other.map_or("(missing)".into(), |s| format!("{s:?}"))
            )));
        }
    }
    let data = json
        .get("data")
        .ok_or_else(|| fail("the answer has no data".into()))?;
    let result = data.get("result");
    let total = match data.get("resultType").and_then(|t| t.as_str()) {
        Some("vector") => {
            let series = result
                .and_then(|r| r.as_array())
                .ok_or_else(|| fail("a vector result that is not an array".into()))?;
            if series.is_empty() {
                return Err(fail("the query returned no series".into()));
            }
            let mut total = 0.0;
            for s in series {
                total += sample_value(s.get("value")).map_err(fail)?;
            }
            total
        }
        Some("scalar") => sample_value(result).map_err(fail)?,
        Some(other) => {
            return Err(fail(format!(
                "result type {other} is not supported (use an instant vector or scalar query)"
            )));
        }
        None => return Err(fail("the answer has no resultType".into())),
    };
    finite(total, || format!("prometheus query {query:?}"))
}

/// `[<unix time>, "<value>"]`.
fn sample_value(v: Option<&serde_json::Value>) -> Result<f64, String> {
    let text = v
        .and_then(|v| v.as_array())
        .filter(|a| a.len() == 2)
        .and_then(|a| a[1].as_str())
        .ok_or_else(|| format!("malformed sample {}", v.unwrap_or(&serde_json::Value::Null)))?;
    match text {
        "NaN" => Ok(f64::NAN),
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        t => t
            .parse()
            .map_err(|_| format!("malformed sample value {t:?}")),
    }
}

/// A consumer that only reads offsets: it never subscribes, is assigned nothing and never
/// commits; `group.id` is the watched group so `committed_offsets` answers for it.
fn lag_consumer(brokers: &str, group: &str, topic: &str) -> Result<BaseConsumer, CollectError> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("allow.auto.create.topics", "false")
        .set("client.id", "recalloc-scheduler")
        .set("socket.timeout.ms", TIMEOUT.as_millis().to_string())
        .create()
        .map_err(|e| CollectError::Kafka {
            group: group.to_owned(),
            topic: topic.to_owned(),
            reason: format!("creating the consumer: {e}"),
        })
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct PartitionOffsets {
    low: i64,
    high: i64,
    /// The group's committed offset; `None` when it has none.
    committed: Option<i64>,
}

/// Watermarks and committed offsets of every partition of `topic`, within [`TIMEOUT`].
async fn kafka_offsets(
    consumer: &Arc<BaseConsumer>,
    group: &str,
    topic: &str,
) -> Result<BTreeMap<i32, PartitionOffsets>, CollectError> {
    let fail = |reason: String| CollectError::Kafka {
        group: group.to_owned(),
        topic: topic.to_owned(),
        reason,
    };
    let deadline = Instant::now() + TIMEOUT;
    let task = {
        let consumer = consumer.clone();
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || {
            let result = blocking_offsets(&consumer, &topic, deadline);
            drain_events(&consumer);
            result
        })
    };
    match tokio::time::timeout(TIMEOUT, task).await {
        Ok(Ok(result)) => result.map_err(fail),
        Ok(Err(e)) => Err(fail(format!("the offset query failed: {e}"))),
        Err(_) => Err(fail(format!("no answer within {TIMEOUT:?}"))),
    }
}

fn blocking_offsets(
    consumer: &BaseConsumer,
    topic: &str,
    deadline: Instant,
) -> Result<BTreeMap<i32, PartitionOffsets>, String> {
    let left = || deadline.saturating_duration_since(Instant::now());
    let md = consumer
        .fetch_metadata(Some(topic), left())
        .map_err(|e| format!("metadata: {e}"))?;
    let t = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .ok_or_else(|| "the topic is not in the metadata".to_owned())?;
    if let Some(e) = t.error() {
        return Err(format!(
            "the topic does not exist or is unavailable: {}",
            rdkafka::error::RDKafkaErrorCode::from(e)
        ));
    }
    if t.partitions().is_empty() {
        return Err("the topic has no partitions".into());
    }
    let mut tpl = TopicPartitionList::new();
    for p in t.partitions() {
        tpl.add_partition(topic, p.id());
    }
    let committed = consumer
        .committed_offsets(tpl, left())
        .map_err(|e| format!("committed offsets: {e}"))?;
    let mut out = BTreeMap::new();
    for el in committed.elements() {
        if let Err(e) = el.error() {
            return Err(format!(
                "committed offset of partition {}: {e}",
                el.partition()
            ));
        }
        let (low, high) = consumer
            .fetch_watermarks(topic, el.partition(), left())
            .map_err(|e| format!("watermarks of partition {}: {e}", el.partition()))?;
        let committed = match el.offset() {
            Offset::Offset(o) if o >= 0 => Some(o),
            _ => None,
        };
        out.insert(
            el.partition(),
            PartitionOffsets {
                low,
                high,
                committed,
            },
        );
    }
    Ok(out)
}

/// Serves the consumer's queued events (errors such as a broker going away), which would
/// otherwise pile up in a consumer that is never polled for messages.
fn drain_events(consumer: &BaseConsumer) {
    for _ in 0..1000 {
        match consumer.poll(Duration::ZERO) {
            None => return,
            Some(Err(e)) => tracing::debug!(error = %e, "kafka event on the lag consumer"),
            Some(Ok(_)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use recalloc_common::config::ManagedDeployment;
    use std::net::SocketAddr;
    use std::sync::Mutex;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// What the test server answers next.
    #[derive(Clone)]
    struct Reply {
        status: u16,
        body: String,
        /// Wait this long before answering (`Duration::MAX`: never answer).
        delay: Duration,
    }

    /// A tiny HTTP/1.1 server: answers every request with the current [`Reply`] and records the
    /// request targets.
    struct Server {
        addr: SocketAddr,
        reply: Arc<Mutex<Reply>>,
        targets: Arc<Mutex<Vec<String>>>,
    }

    impl Server {
        async fn start(body: &str) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let reply = Arc::new(Mutex::new(Reply {
                status: 200,
                body: body.into(),
                delay: Duration::ZERO,
            }));
            let targets = Arc::new(Mutex::new(Vec::new()));
            let (r, t) = (reply.clone(), targets.clone());
            tokio::spawn(async move {
                loop {
                    let Ok((mut conn, _)) = listener.accept().await else {
                        return;
                    };
                    let (r, t) = (r.clone(), t.clone());
                    tokio::spawn(async move {
                        let mut buf = Vec::new();
                        let mut chunk = [0u8; 4096];
                        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                            match conn.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        let head = String::from_utf8_lossy(&buf).into_owned();
                        let target = head.split(' ').nth(1).unwrap_or("").to_owned();
                        t.lock().unwrap().push(target);
                        let reply = r.lock().unwrap().clone();
                        if reply.delay == Duration::MAX {
                            std::future::pending::<()>().await;
                        }
                        tokio::time::sleep(reply.delay).await;
                        let response = format!(
                            "HTTP/1.1 {} X\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
                             Connection: close\r\n\r\n{}",
                            reply.status,
                            reply.body.len(),
                            reply.body
                        );
                        let _ = conn.write_all(response.as_bytes()).await;
                        let _ = conn.shutdown().await;
                    });
                }
            });
            Self {
                addr,
                reply,
                targets,
            }
        }

        fn url(&self) -> String {
            format!("http://{}/metrics", self.addr)
        }

        fn set(&self, status: u16, body: &str) {
            let mut r = self.reply.lock().unwrap();
            r.status = status;
            r.body = body.into();
        }

        fn set_delay(&self, delay: Duration) {
            self.reply.lock().unwrap().delay = delay;
        }

        fn targets(&self) -> Vec<String> {
            self.targets.lock().unwrap().clone()
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn deployment(name: &str, signal: Signal) -> ManagedDeployment {
        ManagedDeployment {
            name: name.into(),
            signal,
            ..ManagedDeployment::default()
        }
    }

    fn rate(url: &str, metric: &str, l: &[(&str, &str)]) -> Signal {
        Signal::MetricsRate {
            url: url.into(),
            metric: metric.into(),
            labels: labels(l),
        }
    }

    fn gauge(url: &str, metric: &str, l: &[(&str, &str)]) -> Signal {
        Signal::MetricsGauge {
            url: url.into(),
            metric: metric.into(),
            labels: labels(l),
        }
    }

    fn config(deployments: Vec<ManagedDeployment>, prometheus_url: &str) -> SchedulerConfig {
        SchedulerConfig {
            deployments,
            prometheus_url: prometheus_url.into(),
            ..SchedulerConfig::default()
        }
    }

    fn collector(signals: Vec<Signal>) -> Collector {
        let deployments = signals
            .into_iter()
            .enumerate()
            .map(|(i, s)| deployment(&format!("d{i}"), s))
            .collect();
        Collector::new(&config(deployments, ""), "").unwrap()
    }

    /// The single deployment's reading.
    async fn read_one(c: &mut Collector, now: Instant) -> Result<Option<f64>, CollectError> {
        let mut all = c.read_all(now).await;
        assert_eq!(all.len(), 1);
        all.pop().unwrap().1
    }

    fn counter_text(rank: u64, embed: u64) -> String {
        format!(
            "# HELP recalloc_grpc_requests_total gRPC calls.\n\
             # TYPE recalloc_grpc_requests_total counter\n\
             recalloc_grpc_requests_total{{code=\"OK\",service=\"recalloc.v1.Ranker\"}} {rank}\n\
             recalloc_grpc_requests_total{{code=\"UNAVAILABLE\",service=\"recalloc.v1.Ranker\"}} 0\n\
             recalloc_grpc_requests_total{{code=\"OK\",service=\"recalloc.v1.Embedder\"}} {embed}\n"
        )
    }

    const RANK: [(&str, &str); 1] = [("service", "recalloc.v1.Ranker")];
    const REQUESTS: &str = "recalloc_grpc_requests_total";

    #[tokio::test]
    async fn metrics_rate_is_the_matching_counters_increase_per_second() {
        let server = Server::start(&counter_text(100, 5000)).await;
        let mut c = collector(vec![rate(&server.url(), REQUESTS, &RANK)]);
        let t0 = Instant::now();
        assert_eq!(read_one(&mut c, t0).await.unwrap(), None, "first reading");
        server.set(200, &counter_text(160, 9000));
        let t1 = t0 + Duration::from_secs(30);
        assert_eq!(read_one(&mut c, t1).await.unwrap(), Some(2.0));
        // No time passed: no rate, and the previous point stays.
        server.set(200, &counter_text(170, 9000));
        assert_eq!(read_one(&mut c, t1).await.unwrap(), None);
        let t2 = t1 + Duration::from_secs(5);
        assert_eq!(read_one(&mut c, t2).await.unwrap(), Some(2.0));
        // Without labels every series counts (the embedder's too).
        let mut all = collector(vec![rate(&server.url(), REQUESTS, &[])]);
        assert_eq!(read_one(&mut all, t0).await.unwrap(), None);
        server.set(200, &counter_text(180, 9090));
        let r = read_one(&mut all, t0 + Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(r, Some(10.0));
        assert!(server.targets().iter().all(|t| t == "/metrics"));
    }

    #[tokio::test]
    async fn a_counter_reset_counts_the_new_value() {
        let server = Server::start(&counter_text(1000, 0)).await;
        let mut c = collector(vec![rate(&server.url(), REQUESTS, &RANK)]);
        let t0 = Instant::now();
        assert_eq!(read_one(&mut c, t0).await.unwrap(), None);
        // The process restarted and has served 40 calls since.
        server.set(200, &counter_text(40, 0));
        let r = read_one(&mut c, t0 + Duration::from_secs(20))
            .await
            .unwrap();
        assert_eq!(r, Some(2.0));
        server.set(200, &counter_text(100, 0));
        let r = read_one(&mut c, t0 + Duration::from_secs(40))
            .await
            .unwrap();
        assert_eq!(r, Some(3.0));
    }

    #[tokio::test]
    async fn metrics_gauge_is_the_sum_of_the_matching_series() {
        let server = Server::start(
            "queue_depth{queue=\"a\",shard=\"0\"} 3\nqueue_depth{queue=\"a\",shard=\"1\"} 4.5\n\
             queue_depth{queue=\"b\",shard=\"0\"} 100\n",
        )
        .await;
        let mut c = collector(vec![
            gauge(&server.url(), "queue_depth", &[("queue", "a")]),
            gauge(&server.url(), "queue_depth", &[]),
            gauge(
                &server.url(),
                "queue_depth",
                &[("queue", "a"), ("shard", "1")],
            ),
        ]);
        let got: Vec<_> = c
            .read_all(Instant::now())
            .await
            .into_iter()
            .map(|(name, r)| (name, r.unwrap()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("d0".to_string(), Some(7.5)),
                ("d1".to_string(), Some(107.5)),
                ("d2".to_string(), Some(4.5)),
            ]
        );
        server.set(200, "queue_depth{queue=\"a\"} NaN\n");
        let mut c = collector(vec![gauge(&server.url(), "queue_depth", &[])]);
        let e = read_one(&mut c, Instant::now()).await.unwrap_err();
        assert!(matches!(e, CollectError::NotFinite { .. }), "{e}");
    }

    #[tokio::test]
    async fn a_missing_series_is_no_series_and_failures_keep_the_previous_point() {
        let server = Server::start(&counter_text(100, 0)).await;
        let mut c = collector(vec![rate(&server.url(), REQUESTS, &RANK)]);
        let t0 = Instant::now();
        assert_eq!(read_one(&mut c, t0).await.unwrap(), None);
        server.set(
            200,
            "# the service restarted without the metric\nother_total 1\n",
        );
        let e = read_one(&mut c, t0 + Duration::from_secs(10))
            .await
            .unwrap_err();
        match &e {
            CollectError::NoSeries { url, metric } => {
                assert_eq!(url, &server.url());
                assert_eq!(metric, REQUESTS);
            }
            other => panic!("{other}"),
        }
        assert!(e.to_string().contains(REQUESTS), "{e}");
        // A label filter that matches nothing is the same error.
        let mut other = collector(vec![rate(
            &server.url(),
            "other_total",
            &[("service", "x")],
        )]);
        let e = read_one(&mut other, t0).await.unwrap_err();
        assert!(matches!(e, CollectError::NoSeries { .. }), "{e}");
        // The next success measures from the last good reading (30 s before).
        server.set(200, &counter_text(130, 0));
        let r = read_one(&mut c, t0 + Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(r, Some(1.0));
    }

    #[tokio::test]
    async fn http_errors_status_errors_and_bad_text() {
        let server = Server::start("boom").await;
        server.set(500, "internal error");
        let mut c = collector(vec![gauge(&server.url(), "x", &[])]);
        let e = read_one(&mut c, Instant::now()).await.unwrap_err();
        match &e {
            CollectError::Status { url, status } => {
                assert_eq!((url.as_str(), *status), (server.url().as_str(), 500));
            }
            other => panic!("{other}"),
        }
        server.set(200, "x 1\nx{a=\"1\" 2\n");
        let e = read_one(&mut c, Instant::now()).await.unwrap_err();
        match &e {
            CollectError::Parse { url, source } => {
                assert_eq!(url, &server.url());
                assert_eq!(source.line, 2);
            }
            other => panic!("{other}"),
        }
        assert!(e.to_string().contains("line 2"), "{e}");

        // A port nobody listens on.
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        let url = format!("http://{addr}/metrics");
        let mut c = collector(vec![gauge(&url, "x", &[])]);
        let e = read_one(&mut c, Instant::now()).await.unwrap_err();
        match &e {
            CollectError::Http { url: u, reason } => {
                assert_eq!(u, &url);
                assert!(!reason.is_empty());
            }
            other => panic!("{other}"),
        }
        assert!(e.to_string().contains(&addr.to_string()), "{e}");
    }

    #[tokio::test]
    async fn a_silent_endpoint_times_out() {
        let server = Server::start("x 1\n").await;
        server.set_delay(Duration::MAX);
        let mut c = collector(vec![gauge(&server.url(), "x", &[])]);
        let started = Instant::now();
        let e = read_one(&mut c, Instant::now()).await.unwrap_err();
        let took = started.elapsed();
        assert!(matches!(e, CollectError::Http { .. }), "{e}");
        assert!(e.to_string().contains("within 5s"), "{e}");
        assert!(
            took >= TIMEOUT && took < TIMEOUT + Duration::from_secs(2),
            "{took:?}"
        );
    }

    #[tokio::test]
    async fn deployments_are_read_concurrently_in_config_order() {
        let slow = Server::start("x 1\n").await;
        slow.set_delay(Duration::from_millis(400));
        let fast = Server::start("x 2\n").await;
        let mut c = collector(vec![
            gauge(&slow.url(), "x", &[]),
            gauge(&fast.url(), "x", &[]),
            gauge(&slow.url(), "x", &[]),
            gauge(&slow.url(), "x", &[]),
        ]);
        assert_eq!(c.names().collect::<Vec<_>>(), vec!["d0", "d1", "d2", "d3"]);
        let started = Instant::now();
        let got = c.read_all(Instant::now()).await;
        let took = started.elapsed();
        let values: Vec<_> = got
            .iter()
            .map(|(n, r)| (n.as_str(), *r.as_ref().unwrap()))
            .collect();
        assert_eq!(
            values,
            vec![
                ("d0", Some(1.0)),
                ("d1", Some(2.0)),
                ("d2", Some(1.0)),
                ("d3", Some(1.0))
            ]
        );
        assert!(
            took < Duration::from_millis(1100),
            "{took:?}: not concurrent"
        );
    }

    #[tokio::test]
    async fn reads_a_recalloc_service_metrics_endpoint() {
        use recalloc_common::{Metrics, Readiness};
        let metrics = Metrics::new();
        let (addr, serve) = recalloc_common::http::serve(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            metrics.clone(),
            Readiness::new(None, &[]),
            std::future::pending(),
        )
        .await
        .unwrap();
        tokio::spawn(serve);
        let labels = [("method", "/recalloc.v1.Ranker/Rank"), ("code", "OK")];
        metrics.inc_counter("recalloc_test_calls_total", "calls", &labels, 7);
        let url = format!("http://{addr}/metrics");
        let mut c = collector(vec![rate(
            &url,
            "recalloc_test_calls_total",
            &[("code", "OK")],
        )]);
        let t0 = Instant::now();
        assert_eq!(read_one(&mut c, t0).await.unwrap(), None);
        metrics.inc_counter("recalloc_test_calls_total", "calls", &labels, 50);
        let r = read_one(&mut c, t0 + Duration::from_secs(25))
            .await
            .unwrap();
        assert_eq!(r, Some(2.0));
    }

    fn prometheus_collector(server: &Server, query: &str) -> Collector {
        let cfg = config(
            vec![deployment(
                "p",
                Signal::Prometheus {
                    query: query.into(),
                },
            )],
            &format!("http://{}/", server.addr),
        );
        Collector::new(&cfg, "").unwrap()
    }

    #[tokio::test]
    async fn prometheus_vector_scalar_and_errors() {
        let query = "sum by (pod) (rate(http_requests_total{job=\"web\"}[1m])) + 1";
        let server = Server::start(
            r#"{"status":"success","data":{"resultType":"vector","result":[
                {"metric":{"pod":"a"},"value":[1700000000.123,"2.5"]},
                {"metric":{"pod":"b"},"value":[1700000000.123,"4"]}]}}"#,
        )
        .await;
        let mut c = prometheus_collector(&server, query);
        assert_eq!(read_one(&mut c, Instant::now()).await.unwrap(), Some(6.5));
        assert_eq!(
            server.targets()[0],
            "/api/v1/query?query=sum%20by%20%28pod%29%20%28rate%28http_requests_total\
             %7Bjob%3D%22web%22%7D%5B1m%5D%29%29%20%2B%201"
        );

        server.set(
            200,
            r#"{"status":"success","data":{"resultType":"scalar","result":[1700000000,"1e3"]}}"#,
        );
        assert_eq!(
            read_one(&mut c, Instant::now()).await.unwrap(),
            Some(1000.0)
        );

        // Prometheus answers a bad query with 400 and a JSON error.
        server.set(
            400,
            r#"{"status":"error","errorType":"bad_data","error":"invalid parameter \"query\": 1:5: parse error"}"#,
        );
        let e = read_one(&mut c, Instant::now()).await.unwrap_err();
        match &e {
            CollectError::Prometheus { query: q, reason } => {
                assert_eq!(q, query);
                assert!(reason.contains("bad_data: invalid parameter"), "{reason}");
            }
            other => panic!("{other}"),
        }
        assert!(e.to_string().contains("http_requests_total"), "{e}");

        let failures = [
            (
                200,
                r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#,
                "no series",
            ),
            (
                200,
                r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#,
                "result type matrix",
            ),
            (
                200,
                r#"{"status":"success","data":{"resultType":"scalar","result":[1,"x"]}}"#,
                "malformed sample value",
            ),
            (
                200,
                r#"{"status":"success","data":{"resultType":"scalar","result":[1,"NaN"]}}"#,
                "not a finite number",
            ),
            (200, "<html>", "not JSON"),
            (502, "bad gateway", "HTTP status 502"),
        ];
        for (status, body, what) in failures {
            server.set(status, body);
            let e = read_one(&mut c, Instant::now()).await.unwrap_err();
            let shown = e.to_string();
            assert!(shown.contains(what), "{body}: {shown}");
            assert!(shown.contains("http_requests_total"), "{body}: {shown}");
        }

        // An unreachable Prometheus names the query too.
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        let cfg = config(
            vec![deployment("p", Signal::Prometheus { query: "up".into() })],
            &format!("http://{addr}"),
        );
        let mut c = Collector::new(&cfg, "").unwrap();
        let e = read_one(&mut c, Instant::now()).await.unwrap_err();
        assert!(
            matches!(&e, CollectError::Prometheus { query, .. } if query == "up"),
            "{e}"
        );
    }

    #[test]
    fn configuration_errors_are_found_by_new() {
        let not_configured =
            |cfg: SchedulerConfig, brokers: &str| match Collector::new(&cfg, brokers) {
                Err(CollectError::NotConfigured(m)) => m,
                Err(e) => panic!("{e}"),
                Ok(_) => panic!("accepted"),
            };
        let prom = deployment("p", Signal::Prometheus { query: "up".into() });
        let m = not_configured(config(vec![prom.clone()], ""), "");
        assert!(m.contains("scheduler.prometheus_url"), "{m}");
        assert!(m.contains("deployment p"), "{m}");
        let m = not_configured(config(vec![prom.clone()], "prometheus:9090"), "");
        assert!(m.contains("scheduler.prometheus_url"), "{m}");
        assert!(Collector::new(&config(vec![prom], "http://prometheus:9090/"), "").is_ok());

        let https = deployment("w", gauge("https://x:1/metrics", "m", &[]));
        let m = not_configured(config(vec![https], ""), "");
        assert!(m.contains("deployment w") && m.contains("http://"), "{m}");
        let junk = deployment("w", rate("not a url", "m", &[]));
        assert!(not_configured(config(vec![junk], ""), "").contains("not a URL"));

        let lag = |drain_seconds| {
            deployment(
                "f",
                Signal::KafkaLag {
                    group: "g".into(),
                    topic: "t".into(),
                    drain_seconds,
                },
            )
        };
        let m = not_configured(config(vec![lag(0)], ""), "127.0.0.1:9092");
        assert!(m.contains("drain_seconds"), "{m}");
        let m = not_configured(config(vec![lag(60)], ""), " ");
        assert!(m.contains("kafka.brokers"), "{m}");
        // The default config (two metrics rates and a kafka lag) is valid; creating the
        // consumer does not connect.
        let c = Collector::new(&SchedulerConfig::default(), "127.0.0.1:9092").unwrap();
        assert_eq!(
            c.names().collect::<Vec<_>>(),
            ["recalloc-rank", "recalloc-embed", "recalloc-featurizer"]
        );
    }

    #[test]
    fn produced_records_count_watermark_increases_resets_and_not_new_partitions() {
        let before = BTreeMap::from([(0, 100), (1, 50)]);
        let now = BTreeMap::from([(0, 130), (1, 20), (2, 999)]);
        // 30 on partition 0, 20 on the recreated partition 1, nothing for the new partition 2.
        assert_eq!(produced_since(&before, &now), 50);
        assert_eq!(produced_since(&before, &before), 0);
    }

    #[test]
    fn url_encoding_keeps_only_unreserved_characters() {
        assert_eq!(url_encode("aZ09-._~"), "aZ09-._~");
        assert_eq!(url_encode("a b/c?d=e&f+g%"), "a%20b%2Fc%3Fd%3De%26f%2Bg%25");
        assert_eq!(url_encode("é"), "%C3%A9");
    }

    /// Against a real broker: `RECALLOC_KAFKA_BROKERS`, else 127.0.0.1:9092 (`make up` starts
    /// tansu there). Skipped when none answers.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn kafka_lag_against_a_broker() {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        use rdkafka::client::DefaultClientContext;
        use rdkafka::consumer::CommitMode;
        use rdkafka::producer::{FutureProducer, FutureRecord};

        let brokers = std::env::var("RECALLOC_KAFKA_BROKERS")
            .ok()
            .filter(|b| !b.trim().is_empty())
            .unwrap_or_else(|| "127.0.0.1:9092".into());
        let first = brokers.split(',').next().unwrap().trim().to_owned();
        let reachable = tokio::time::timeout(
            Duration::from_secs(1),
            tokio::net::TcpStream::connect(first.as_str()),
        )
        .await
        .is_ok_and(|r| r.is_ok());
        if !reachable {
            eprintln!(
                "skipping kafka_lag_against_a_broker: no broker at {brokers} \
                 (set RECALLOC_KAFKA_BROKERS or run `make up`)"
            );
            return;
        }
        let unique = format!(
            "{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        let topic = format!("recalloc-scheduler-test-{unique}");
        let group = format!("recalloc-scheduler-test-{unique}");

        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .create()
            .unwrap();
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let created = admin
            .create_topics(
                &[NewTopic::new(&topic, 2, TopicReplication::Fixed(1))],
                &opts,
            )
            .await
            .unwrap();
        assert!(created.iter().all(|r| r.is_ok()), "{created:?}");

        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("enable.idempotence", "false")
            .set("message.timeout.ms", "10000")
            .create()
            .unwrap();
        let produce = |partition: i32, n: usize| {
            let producer = producer.clone();
            let topic = topic.clone();
            async move {
                for i in 0..n {
                    let payload = format!("record {i}");
                    producer
                        .send(
                            FutureRecord::<(), _>::to(&topic)
                                .partition(partition)
                                .payload(&payload),
                            Duration::from_secs(10),
                        )
                        .await
                        .map_err(|(e, _)| e)
                        .unwrap();
                }
            }
        };
        produce(0, 10).await;
        produce(1, 5).await;

        // The group has consumed 4 records of partition 0 and nothing of partition 1.
        let committer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&topic, 0, Offset::Offset(4))
            .unwrap();
        let committer = tokio::task::spawn_blocking(move || {
            committer.commit(&tpl, CommitMode::Sync).unwrap();
            committer
        })
        .await
        .unwrap();

        let signal = |topic: &str| {
            deployment(
                "featurizer",
                Signal::KafkaLag {
                    group: group.clone(),
                    topic: topic.into(),
                    drain_seconds: 2,
                },
            )
        };
        let cfg = config(vec![signal(&topic), signal("recalloc-no-such-topic")], "");
        let mut c = Collector::new(&cfg, &brokers).unwrap();
        let t0 = Instant::now();
        let first = c.read_all(t0).await;
        // First reading: the backlog alone, (10 - 4) + (5 - 0) records over 2 s.
        assert_eq!(first[0].1.as_ref().unwrap(), &Some(5.5), "{first:?}");
        match &first[1].1 {
            Err(CollectError::Kafka {
                topic, group: g, ..
            }) => {
                assert_eq!((topic.as_str(), g), ("recalloc-no-such-topic", &group));
            }
            other => panic!("{other:?}"),
        }

        produce(0, 6).await;
        let second = c.read_all(t0 + Duration::from_secs(3)).await;
        // 6 records in 3 s, plus (16 - 4) + 5 records over 2 s.
        assert_eq!(
            second[0].1.as_ref().unwrap(),
            &Some(2.0 + 8.5),
            "{second:?}"
        );

        drop(c);
        tokio::task::spawn_blocking(move || drop(committer))
            .await
            .unwrap();
        let _ = admin.delete_topics(&[&topic], &opts).await;
    }
}

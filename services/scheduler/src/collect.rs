//! Demand readings: turns each managed deployment's [`Signal`] into one number per tick.
//!
//! * `metrics_rate`: GETs a Prometheus text endpoint, sums the counter series that match, and
//!   returns the per-second increase since the previous successful reading. The first reading
//!   only remembers the value (`Ok(None)`). A counter reset (a sum lower than the previous one)
//!   counts the new value as the increase, `value / dt`.
//! * `metrics_gauge`: the matching series' sum, as is.
//! * `kafka_lag`: records produced per second to the topic (the summed high-watermark increase
//!   over the partitions since the previous reading) plus the group's backlog divided by
//!   `drain_seconds`. The backlog per partition is `recalloc_stream::lag::backlog`,
//!   `high - max(committed, low)`: a partition
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
use rdkafka::{ClientConfig, TopicPartitionList};
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
                // A counter that has no series yet has not been incremented (the registry
                // creates series on first use; a restarted process starts over): it reads 0,
                // so the first requests after start-up count as a rate.
                let value = match scrape_sum(http, url, metric, labels).await {
                    Err(CollectError::NoSeries { .. }) => 0.0,
                    other => other?,
                };
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
                    .map(|o| recalloc_stream::lag::backlog(o.low, o.high, o.committed))
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
        let res = http
            .request(req)
            .await
            .map_err(|e| fail(recalloc_common::tls::error_chain(&e)))?;
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
    let mut out = BTreeMap::new();
    for (_, partition, committed) in
        recalloc_stream::lag::committed_positions(consumer, tpl, left())?
    {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, left())
            .map_err(|e| format!("watermarks of partition {partition}: {e}"))?;
        out.insert(
            partition,
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
mod tests;

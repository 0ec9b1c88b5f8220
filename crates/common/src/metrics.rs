//! A small Prometheus registry: counters, gauges and latency summaries whose quantiles come from
//! HDR histograms (exact to 3 significant digits, fixed memory), rendered in the text format.
//! The scheduler reads these endpoints to learn each service's load.

use futures::future::BoxFuture;
use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// Label pairs in a fixed order, so one series is always one key.
type Labels = Vec<(String, String)>;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Counter,
    Gauge,
    Summary,
}

struct Family<T> {
    help: &'static str,
    series: BTreeMap<Labels, T>,
}

#[derive(Default)]
struct Inner {
    kinds: BTreeMap<&'static str, Kind>,
    counters: BTreeMap<&'static str, Family<u64>>,
    gauges: BTreeMap<&'static str, Family<f64>>,
    summaries: BTreeMap<&'static str, Family<Summary>>,
}

struct Summary {
    micros: Histogram<u64>,
    sum_seconds: f64,
}

/// Shared registry; clone the `Arc`.
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

const QUANTILES: [f64; 4] = [0.5, 0.9, 0.99, 0.999];

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn check_kind(inner: &mut Inner, name: &'static str, kind: Kind) {
        let existing = *inner.kinds.entry(name).or_insert(kind);
        debug_assert_eq!(existing, kind, "metric {name} used with two kinds");
    }

    pub fn inc_counter(&self, name: &'static str, help: &'static str, l: &[(&str, &str)], by: u64) {
        let mut inner = self.inner.lock().expect("metrics lock");
        Self::check_kind(&mut inner, name, Kind::Counter);
        let fam = inner.counters.entry(name).or_insert_with(|| Family {
            help,
            series: BTreeMap::new(),
        });
        *fam.series.entry(labels(l)).or_default() += by;
    }

    pub fn set_gauge(&self, name: &'static str, help: &'static str, l: &[(&str, &str)], v: f64) {
        let mut inner = self.inner.lock().expect("metrics lock");
        Self::check_kind(&mut inner, name, Kind::Gauge);
        let fam = inner.gauges.entry(name).or_insert_with(|| Family {
            help,
            series: BTreeMap::new(),
        });
        fam.series.insert(labels(l), v);
    }

    /// Records one duration into a summary (seconds, quantiles 0.5/0.9/0.99/0.999).
    pub fn observe(&self, name: &'static str, help: &'static str, l: &[(&str, &str)], d: Duration) {
        let mut inner = self.inner.lock().expect("metrics lock");
        Self::check_kind(&mut inner, name, Kind::Summary);
        let fam = inner.summaries.entry(name).or_insert_with(|| Family {
            help,
            series: BTreeMap::new(),
        });
        let s = fam.series.entry(labels(l)).or_insert_with(|| Summary {
            // 1 µs .. 1 h at 3 significant digits: about 30 KiB per series.
            micros: Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds"),
            sum_seconds: 0.0,
        });
        let micros = (d.as_micros() as u64).clamp(1, 3_600_000_000);
        s.micros.saturating_record(micros);
        s.sum_seconds += d.as_secs_f64();
    }

    /// Current value of a counter series (tests and the scheduler's in-process reads).
    pub fn counter(&self, name: &str, l: &[(&str, &str)]) -> u64 {
        let inner = self.inner.lock().expect("metrics lock");
        inner
            .counters
            .get(name)
            .and_then(|f| f.series.get(&labels(l)))
            .copied()
            .unwrap_or(0)
    }

    /// Prometheus text exposition format 0.0.4.
    pub fn render(&self) -> String {
        let inner = self.inner.lock().expect("metrics lock");
        let mut out = String::new();
        for (name, fam) in &inner.counters {
            header(&mut out, name, fam.help, "counter");
            for (l, v) in &fam.series {
                let _ = writeln!(out, "{name}{} {v}", fmt_labels(l, None));
            }
        }
        for (name, fam) in &inner.gauges {
            header(&mut out, name, fam.help, "gauge");
            for (l, v) in &fam.series {
                let _ = writeln!(out, "{name}{} {}", fmt_labels(l, None), fmt_f64(*v));
            }
        }
        for (name, fam) in &inner.summaries {
            header(&mut out, name, fam.help, "summary");
            for (l, s) in &fam.series {
                for q in QUANTILES {
                    let secs = s.micros.value_at_quantile(q) as f64 / 1e6;
                    let _ = writeln!(out, "{name}{} {}", fmt_labels(l, Some(q)), fmt_f64(secs));
                }
                let _ = writeln!(
                    out,
                    "{name}_sum{} {}",
                    fmt_labels(l, None),
                    fmt_f64(s.sum_seconds)
                );
                let _ = writeln!(
                    out,
                    "{name}_count{} {}",
                    fmt_labels(l, None),
                    s.micros.len()
                );
            }
        }
        out
    }
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn fmt_f64(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else {
        format!("{v}")
    }
}

fn fmt_labels(l: &Labels, quantile: Option<f64>) -> String {
    let mut parts: Vec<String> = l
        .iter()
        .map(|(k, v)| {
            let v = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{k}=\"{v}\"")
        })
        .collect();
    if let Some(q) = quantile {
        parts.push(format!("quantile=\"{q}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

pub const GRPC_REQUESTS: &str = "recalloc_grpc_requests_total";
pub const GRPC_LATENCY: &str = "recalloc_grpc_request_duration_seconds";

/// Tower layer counting gRPC calls by method, status code and service and timing them, for any tonic
/// server. The status is read from the response headers, where tonic puts it for errors
/// (trailers-only responses); a response without one is a success whose status follows in the
/// trailers.
#[derive(Clone)]
pub struct GrpcMetricsLayer {
    metrics: Arc<Metrics>,
}

impl GrpcMetricsLayer {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self { metrics }
    }
}

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;
    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetrics {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B, RB> tower::Service<http::Request<B>> for GrpcMetrics<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>> + Send,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let method = req.uri().path().to_owned();
        let started = Instant::now();
        let fut = self.inner.call(req);
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let res = fut.await;
            let code = match &res {
                Ok(r) => r
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("0")
                    .to_owned(),
                Err(_) => "transport".to_owned(),
            };
            // `/pkg.Service/Method` → `pkg.Service`: what the scheduler's demand signals select.
            let service = method
                .trim_start_matches('/')
                .split('/')
                .next()
                .unwrap_or("");
            let l = [
                ("method", method.as_str()),
                ("code", code.as_str()),
                ("service", service),
            ];
            metrics.inc_counter(
                GRPC_REQUESTS,
                "gRPC requests by method, status code and service",
                &l,
                1,
            );
            metrics.observe(
                GRPC_LATENCY,
                "gRPC request latency to response headers",
                &[("method", method.as_str())],
                started.elapsed(),
            );
            res
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_gauges_and_quantiles() {
        let m = Metrics::new();
        m.inc_counter("x_total", "things", &[("k", "a\"b")], 2);
        m.inc_counter("x_total", "things", &[("k", "a\"b")], 3);
        m.set_gauge("depth", "queue depth", &[], 7.0);
        for ms in 1..=100 {
            m.observe(
                "lat_seconds",
                "latency",
                &[("m", "/x")],
                Duration::from_millis(ms),
            );
        }
        let text = m.render();
        assert!(text.contains("# TYPE x_total counter"), "{text}");
        assert!(text.contains("x_total{k=\"a\\\"b\"} 5"), "{text}");
        assert!(text.contains("depth 7"), "{text}");
        assert!(text.contains("lat_seconds_count{m=\"/x\"} 100"), "{text}");
        let p50 = text
            .lines()
            .find(|l| l.starts_with("lat_seconds{m=\"/x\",quantile=\"0.5\"}"))
            .unwrap();
        let v: f64 = p50.rsplit(' ').next().unwrap().parse().unwrap();
        assert!((v - 0.050).abs() < 0.001, "{p50}");
        assert_eq!(m.counter("x_total", &[("k", "a\"b")]), 5);
    }
}

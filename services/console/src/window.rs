//! What two consecutive scrapes of one service say about the time between them: its request
//! rate, its p99 latency, and its consumer lag.
//!
//! Counters are cumulative, so the rate is the increase over the window divided by its length;
//! a counter lower than before means the process restarted, and then its whole value is the
//! increase. The latency family is either a histogram, whose bucket increases give the p99 of
//! exactly the window (as PromQL's `histogram_quantile` over `increase`), or a summary, as
//! `recalloc_common::metrics` renders it: quantiles over the process's lifetime, which cannot
//! be cut to a window. For a summary the p99 shown is that of the busiest method in the window,
//! and says so ([`LatencySource::SinceStart`]).
//!
//! Health checks and reflection are left out: probes and tooling are not load.

use std::collections::BTreeMap;

use crate::prom::{Exposition, Kind, Sample};
use recalloc_common::metrics::{GRPC_LATENCY, GRPC_REQUESTS};

/// One scrape of one endpoint, at `at_ms` (unix ms).
#[derive(Debug, Clone, PartialEq)]
pub struct Scrape {
    pub at_ms: i64,
    pub exposition: Exposition,
}

/// Methods that are not load: health checks (probes) and reflection (tooling).
pub fn is_probe(method: &str) -> bool {
    method.starts_with("/grpc.health.") || method.starts_with("/grpc.reflection.")
}

fn counts(s: &Sample) -> bool {
    !s.labels.get("method").is_some_and(|m| is_probe(m))
}

/// The labels of a sample without `drop` (to match one series across scrapes).
fn key(s: &Sample, drop: &str) -> BTreeMap<String, String> {
    let mut l = s.labels.clone();
    l.remove(drop);
    l
}

/// The increase of a counter from `before` to `now` (a reset: `now` itself).
fn increase(before: Option<f64>, now: f64) -> f64 {
    match before {
        Some(b) if now >= b => now - b,
        _ => now,
    }
}

/// The increase of every series named `name` (not probes), by its labels.
fn increases(prev: &Scrape, cur: &Scrape, name: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    let before: BTreeMap<_, _> = prev
        .exposition
        .series(name)
        .map(|s| (&s.labels, s.value))
        .collect();
    cur.exposition
        .series(name)
        .filter(|s| counts(s))
        .map(|s| {
            (
                s.labels.clone(),
                increase(before.get(&s.labels).copied(), s.value),
            )
        })
        .collect()
}

/// gRPC requests per second between the scrapes (every method but probes, every status).
/// `None` when the window is empty or the service has no request counter (the featurizer).
pub fn request_rate(prev: &Scrape, cur: &Scrape) -> Option<f64> {
    let seconds = (cur.at_ms - prev.at_ms) as f64 / 1000.0;
    if seconds <= 0.0 || cur.exposition.series(GRPC_REQUESTS).next().is_none() {
        return None;
    }
    let total: f64 = increases(prev, cur, GRPC_REQUESTS)
        .iter()
        .map(|(_, v)| v)
        .sum();
    Some(total / seconds)
}

/// Where a p99 comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LatencySource {
    /// Histogram buckets: the p99 of the requests between the two scrapes, all methods.
    Window,
    /// A summary's 0.99 quantile: the requests of `method` since the process started.
    SinceStart,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Latency {
    pub p99_seconds: f64,
    pub source: LatencySource,
    /// For a summary, the method whose quantile it is.
    pub method: Option<String>,
}

/// The p99 latency of the gRPC calls (see the module docs); `None` without calls.
pub fn p99(prev: Option<&Scrape>, cur: &Scrape) -> Option<Latency> {
    let family = GRPC_LATENCY;
    let is_histogram = cur.exposition.kind(family) == Some(Kind::Histogram)
        || cur
            .exposition
            .series(&format!("{family}_bucket"))
            .next()
            .is_some();
    if is_histogram {
        window_quantile(prev, cur, family, 0.99).map(|v| Latency {
            p99_seconds: v,
            source: LatencySource::Window,
            method: None,
        })
    } else {
        busiest_summary_quantile(prev, cur, family, "0.99")
    }
}

/// The `q` quantile over the bucket increases between the scrapes (every series summed by
/// `le`), or over the whole buckets without an earlier scrape.
fn window_quantile(prev: Option<&Scrape>, cur: &Scrape, family: &str, q: f64) -> Option<f64> {
    let name = format!("{family}_bucket");
    let per_series = match prev {
        Some(p) => increases(p, cur, &name),
        None => cur
            .exposition
            .series(&name)
            .filter(|s| counts(s))
            .map(|s| (s.labels.clone(), s.value))
            .collect(),
    };
    let mut by_le: BTreeMap<String, f64> = BTreeMap::new();
    for (labels, v) in per_series {
        if let Some(le) = labels.get("le") {
            *by_le.entry(le.clone()).or_default() += v;
        }
    }
    let buckets: Vec<(f64, f64)> = by_le
        .into_iter()
        .filter_map(|(le, n)| Some((crate::prom::parse_value(&le)?, n)))
        .collect();
    histogram_quantile(q, &buckets)
}

/// PromQL's `histogram_quantile`: `buckets` are (upper bound, cumulative count), in any order,
/// one of them `+Inf`. Linear interpolation inside the bucket the rank falls in (from 0 for the
/// first bucket); a rank in the `+Inf` bucket gives the highest finite bound. `None` without
/// observations.
pub fn histogram_quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let mut b: Vec<(f64, f64)> = buckets
        .iter()
        .copied()
        .filter(|(le, _)| !le.is_nan())
        .collect();
    b.sort_by(|x, y| x.0.total_cmp(&y.0));
    let total = b.last().filter(|(le, _)| le.is_infinite())?.1;
    // NaN counts are no observations either.
    if total.is_nan() || total <= 0.0 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for (le, count) in &b {
        if *count >= rank {
            if le.is_infinite() {
                return Some(lower);
            }
            let in_bucket = count - below;
            if in_bucket <= 0.0 {
                return Some(*le);
            }
            return Some(lower + (le - lower) * (rank - below) / in_bucket);
        }
        (lower, below) = (*le, *count);
    }
    Some(lower)
}

/// The quantile `q` of the summary series whose `_count` grew most in the window (or is largest
/// without an earlier scrape).
fn busiest_summary_quantile(
    prev: Option<&Scrape>,
    cur: &Scrape,
    family: &str,
    q: &str,
) -> Option<Latency> {
    let count_name = format!("{family}_count");
    let calls = match prev {
        Some(p) => increases(p, cur, &count_name),
        None => cur
            .exposition
            .series(&count_name)
            .filter(|s| counts(s))
            .map(|s| (s.labels.clone(), s.value))
            .collect(),
    };
    let (busiest, n) = calls
        .into_iter()
        .max_by(|a, b| a.1.total_cmp(&b.1).then_with(|| b.0.cmp(&a.0)))?;
    if n <= 0.0 {
        return None;
    }
    let sample = cur.exposition.series(family).find(|s| {
        s.labels.get("quantile").map(String::as_str) == Some(q) && key(s, "quantile") == busiest
    })?;
    Some(Latency {
        p99_seconds: sample.value,
        source: LatencySource::SinceStart,
        method: busiest.get("method").cloned(),
    })
}

/// Records not yet consumed: the sum of a consumer's lag gauge over the partitions it holds.
pub fn lag(cur: &Scrape, gauge: &str) -> Option<f64> {
    cur.exposition.sum(gauge)
}

#[cfg(test)]
mod tests {
    use super::*;
    use recalloc_common::Metrics;
    use std::time::Duration;

    fn scrape(at_ms: i64, text: &str) -> Scrape {
        Scrape {
            at_ms,
            exposition: crate::prom::parse(text).unwrap(),
        }
    }

    fn call(m: &Metrics, method: &str, ms: u64) {
        m.inc_counter(GRPC_REQUESTS, "h", &[("method", method), ("code", "0")], 1);
        m.observe(
            GRPC_LATENCY,
            "h",
            &[("method", method)],
            Duration::from_millis(ms),
        );
    }

    #[test]
    fn rate_and_p99_between_two_scrapes_of_a_real_registry() {
        let m = Metrics::new();
        for _ in 0..10 {
            call(&m, "/recalloc.v1.Ranker/Recommend", 5);
        }
        call(&m, "/grpc.health.v1.Health/Check", 1);
        let a = scrape(0, &m.render());
        for _ in 0..40 {
            call(&m, "/recalloc.v1.Ranker/Recommend", 5);
            call(&m, "/grpc.health.v1.Health/Check", 1);
        }
        for _ in 0..20 {
            call(&m, "/recalloc.v1.Ranker/Explain", 80);
        }
        let b = scrape(2_000, &m.render());
        // 40 + 20 calls in 2 s; the health checks do not count.
        assert_eq!(request_rate(&a, &b), Some(30.0));
        let l = p99(Some(&a), &b).unwrap();
        assert_eq!(l.source, LatencySource::SinceStart);
        assert_eq!(l.method.as_deref(), Some("/recalloc.v1.Ranker/Recommend"));
        assert!((l.p99_seconds - 0.005).abs() < 0.0001, "{l:?}");
        // In a window where Explain was busiest, its p99 is shown.
        for _ in 0..5 {
            call(&m, "/recalloc.v1.Ranker/Explain", 80);
        }
        let c = scrape(3_000, &m.render());
        let l = p99(Some(&b), &c).unwrap();
        assert_eq!(l.method.as_deref(), Some("/recalloc.v1.Ranker/Explain"));
        assert!((l.p99_seconds - 0.080).abs() < 0.001, "{l:?}");
        // No calls in the window: no p99, and a rate of zero.
        let d = scrape(4_000, &m.render());
        assert_eq!(p99(Some(&c), &d), None);
        assert_eq!(request_rate(&c, &d), Some(0.0));
    }

    #[test]
    fn a_restart_counts_from_zero_and_an_empty_window_has_no_rate() {
        let a = scrape(
            0,
            "recalloc_grpc_requests_total{method=\"/a\",code=\"0\"} 100\n",
        );
        let b = scrape(
            10_000,
            "recalloc_grpc_requests_total{method=\"/a\",code=\"0\"} 20\nrecalloc_grpc_requests_total{method=\"/b\",code=\"14\"} 10\n",
        );
        assert_eq!(request_rate(&a, &b), Some(3.0));
        assert_eq!(request_rate(&b, &b), None);
        assert_eq!(request_rate(&a, &scrape(5_000, "other 1\n")), None);
    }

    #[test]
    fn histogram_p99_is_the_window_s() {
        let buckets = |n: [u32; 4]| {
            let les = ["0.01", "0.1", "1", "+Inf"];
            let mut t = String::from("# TYPE recalloc_grpc_request_duration_seconds histogram\n");
            for (le, c) in les.iter().zip(n) {
                t += &format!(
                    "recalloc_grpc_request_duration_seconds_bucket{{method=\"/a\",le=\"{le}\"}} {c}\n"
                );
            }
            t
        };
        // Before: 1000 fast calls. In the window: 100 calls, 90 under 10 ms, 10 in (0.01, 0.1].
        let a = scrape(0, &buckets([1000, 1000, 1000, 1000]));
        let b = scrape(1000, &buckets([1090, 1100, 1100, 1100]));
        let l = p99(Some(&a), &b).unwrap();
        assert_eq!(l.source, LatencySource::Window);
        // Rank 99 of 100: 9 of the 10 calls into the second bucket, 0.01 + 0.09 · 9/10.
        assert!((l.p99_seconds - 0.091).abs() < 1e-9, "{l:?}");
    }

    #[test]
    fn histogram_quantile_edges() {
        assert_eq!(histogram_quantile(0.99, &[]), None);
        assert_eq!(
            histogram_quantile(0.99, &[(1.0, 0.0), (f64::INFINITY, 0.0)]),
            None
        );
        // Without a +Inf bucket the total is unknown.
        assert_eq!(histogram_quantile(0.5, &[(1.0, 4.0)]), None);
        // Everything above the highest bound: that bound.
        assert_eq!(
            histogram_quantile(0.99, &[(1.0, 0.0), (f64::INFINITY, 5.0)]),
            Some(1.0)
        );
        // The first bucket interpolates from 0; the order of the input does not matter.
        assert_eq!(
            histogram_quantile(0.5, &[(f64::INFINITY, 4.0), (2.0, 4.0)]),
            Some(1.0)
        );
    }

    #[test]
    fn lag_sums_the_partitions_held() {
        let s = scrape(
            0,
            "recalloc_featurizer_consumer_lag{topic=\"t\",partition=\"0\"} 3\nrecalloc_featurizer_consumer_lag{topic=\"t\",partition=\"1\"} 4\n",
        );
        assert_eq!(lag(&s, "recalloc_featurizer_consumer_lag"), Some(7.0));
        assert_eq!(lag(&s, "recalloc_embed_consumer_lag"), None);
    }
}

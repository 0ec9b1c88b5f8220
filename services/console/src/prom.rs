//! The Prometheus text exposition format (0.0.4) as the services serve it at `/metrics`, read
//! into samples plus each family's declared type. The type matters here, unlike in the
//! scheduler's reader: a latency family is either a summary (what `recalloc_common::metrics`
//! renders: quantiles since the process started) or a histogram (buckets, from which a quantile
//! over any window can be computed), and [`crate::window`] treats the two differently.
//!
//! Accepted per line: blank lines, comments (`# TYPE name kind` is kept, others skipped), and
//! samples `name{label="value",…} value [timestamp]` with the escapes `\\`, `\"`, `\n` in
//! label values and `NaN`/`+Inf`/`-Inf` values. Anything else is an error naming the line.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A family's `# TYPE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Summary,
    Histogram,
    Untyped,
}

/// One scrape's content.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Exposition {
    pub samples: Vec<Sample>,
    /// Family name → declared type (families without `# TYPE` are absent).
    pub kinds: BTreeMap<String, Kind>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    /// 1-based.
    pub line: usize,
    pub message: String,
}

impl Exposition {
    pub fn kind(&self, family: &str) -> Option<Kind> {
        self.kinds.get(family).copied()
    }

    /// The samples named exactly `name`.
    pub fn series<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| s.name == name)
    }

    /// The sum over the samples named `name`; `None` when there is none.
    pub fn sum(&self, name: &str) -> Option<f64> {
        self.series(name)
            .fold(None, |acc, s| Some(acc.unwrap_or(0.0) + s.value))
    }
}

/// Parses a whole exposition.
pub fn parse(text: &str) -> Result<Exposition, ParseError> {
    let mut out = Exposition::default();
    for (i, raw) in text.lines().enumerate() {
        let fail = |message: String| ParseError {
            line: i + 1,
            message,
        };
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.split_whitespace();
            if words.next() == Some("TYPE") {
                let (Some(name), Some(kind)) = (words.next(), words.next()) else {
                    return Err(fail("# TYPE needs a name and a type".into()));
                };
                let kind = match kind {
                    "counter" => Kind::Counter,
                    "gauge" => Kind::Gauge,
                    "summary" => Kind::Summary,
                    "histogram" => Kind::Histogram,
                    "untyped" => Kind::Untyped,
                    other => return Err(fail(format!("unknown metric type {other:?}"))),
                };
                out.kinds.insert(name.to_owned(), kind);
            }
            continue;
        }
        out.samples.push(parse_sample(line).map_err(fail)?);
    }
    Ok(out)
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(|c| !is_name_char(c)).unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(format!("expected a metric name at {line:?}"));
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = parse_labels(after, &mut labels)?;
    }
    let mut fields = rest.split_whitespace();
    let value = fields.next().ok_or_else(|| format!("{name}: no value"))?;
    let value = parse_value(value).ok_or_else(|| format!("{name}: bad value {value:?}"))?;
    if let Some(ts) = fields.next()
        && ts.parse::<i64>().is_err()
    {
        return Err(format!("{name}: bad timestamp {ts:?}"));
    }
    if let Some(extra) = fields.next() {
        return Err(format!("{name}: unexpected {extra:?} after the value"));
    }
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// Reads `k="v",…}` (what follows `{`) into `labels`; returns what follows `}`.
fn parse_labels<'a>(
    mut s: &'a str,
    labels: &mut BTreeMap<String, String>,
) -> Result<&'a str, String> {
    loop {
        s = s.trim_start();
        if let Some(after) = s.strip_prefix('}') {
            return Ok(after);
        }
        let key_end = s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'));
        let Some(key_end) = key_end.filter(|e| *e > 0) else {
            return Err(format!("expected a label name at {s:?}"));
        };
        let key = &s[..key_end];
        s = s[key_end..].trim_start();
        s = s
            .strip_prefix('=')
            .ok_or_else(|| format!("expected '=' after label {key}"))?
            .trim_start();
        s = s
            .strip_prefix('"')
            .ok_or_else(|| format!("expected '\"' to open the value of label {key}"))?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let close = loop {
            match chars.next() {
                None => return Err(format!("the value of label {key} is not closed")),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c @ ('\\' | '"'))) => value.push(c),
                    other => {
                        return Err(format!(
                            "bad escape {:?} in label {key}",
                            other.map(|(_, c)| c)
                        ));
                    }
                },
                Some((_, c)) => value.push(c),
            }
        };
        labels.insert(key.to_owned(), value);
        s = s[close + 1..].trim_start();
        if let Some(after) = s.strip_prefix(',') {
            s = after;
        } else if !s.starts_with('}') {
            return Err(format!("expected ',' or '}}' after label {key}"));
        }
    }
}

/// A sample value or a bucket bound (`le`): a float, `NaN`, `+Inf` or `-Inf`.
pub fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_the_services_render() {
        let m = recalloc_common::Metrics::new();
        m.inc_counter(
            "recalloc_grpc_requests_total",
            "gRPC requests",
            &[("method", "/recalloc.v1.Ranker/Recommend"), ("code", "0")],
            7,
        );
        m.set_gauge("lag", "lag", &[("topic", "a \"b\"\nc")], 3.5);
        m.observe(
            "lat_seconds",
            "latency",
            &[("method", "/x")],
            std::time::Duration::from_millis(20),
        );
        let e = parse(&m.render()).unwrap();
        assert_eq!(e.sum("recalloc_grpc_requests_total"), Some(7.0));
        assert_eq!(e.kind("recalloc_grpc_requests_total"), Some(Kind::Counter));
        assert_eq!(e.kind("lat_seconds"), Some(Kind::Summary));
        let lag = e.series("lag").next().unwrap();
        assert_eq!(lag.labels["topic"], "a \"b\"\nc");
        assert_eq!(lag.value, 3.5);
        let p99 = e
            .series("lat_seconds")
            .find(|s| s.labels.get("quantile").map(String::as_str) == Some("0.99"))
            .unwrap();
        assert!((p99.value - 0.020).abs() < 0.0001, "{p99:?}");
        assert_eq!(e.sum("lat_seconds_count"), Some(1.0));
        assert_eq!(e.sum("missing"), None);
    }

    #[test]
    fn histograms_special_values_timestamps_and_trailing_commas() {
        let text = "# HELP h latency\n# TYPE h histogram\n\
                    h_bucket{le=\"0.1\",} 3 1700000000000\n\
                    h_bucket{le=\"+Inf\"} 4\nh_sum 0.5\nh_count 4\nup NaN\ndown -Inf\n";
        let e = parse(text).unwrap();
        assert_eq!(e.kind("h"), Some(Kind::Histogram));
        let inf = e.series("h_bucket").nth(1).unwrap();
        assert_eq!(inf.labels["le"], "+Inf");
        assert!(e.series("up").next().unwrap().value.is_nan());
        assert_eq!(e.sum("down"), Some(f64::NEG_INFINITY));
    }

    #[test]
    fn errors_name_the_line() {
        for (text, line, what) in [
            ("a 1\nb{x=1} 2", 2, "expected '\"'"),
            ("a 1\n\nc", 3, "no value"),
            ("a one", 1, "bad value"),
            ("a{x=\"1\" y=\"2\"} 1", 1, "expected ','"),
            ("a{x=\"1} 1", 1, "not closed"),
            ("# TYPE a rainbow", 1, "unknown metric type"),
            ("a 1 soon", 1, "bad timestamp"),
            ("{x=\"1\"} 1", 1, "metric name"),
        ] {
            let e = parse(text).unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(e.message.contains(what), "{text:?}: {e}");
        }
    }
}

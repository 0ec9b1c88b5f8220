//! A parser for the Prometheus text exposition format 0.0.4, the format every recalloc service
//! serves at `/metrics` (see `recalloc_common::metrics`) and most exporters speak.
//!
//! What it accepts, line by line (`\n`-separated; a trailing `\r` is ignored):
//! * blank lines and comments; `# HELP name text` and `# TYPE name type` are checked (a metric
//!   name, and for `TYPE` one of `counter`, `gauge`, `histogram`, `summary`, `untyped`), other
//!   comments are skipped;
//! * samples `name{label="value",…} value [timestamp]`: the label block is optional and may end
//!   with a comma, spaces are allowed around its tokens, label values use the escapes `\\`,
//!   `\"` and `\n`; the value is a float (`1`, `-0.5`, `1e3`, `NaN`, `+Inf`, `-Inf`); the
//!   optional timestamp is an integer (milliseconds) and is not kept.
//!
//! Anything else is an error naming the 1-based line number and what is wrong. The parser keeps
//! no type information: a summary's `_sum` and `_count` series and its quantile series are
//! plain samples, so they can be selected by name and labels like anything else.

use std::collections::BTreeMap;
use std::fmt;

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// What is wrong with the text, and on which line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrapeError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong, e.g. `expected '=' after label name "code"`.
    pub message: String,
    /// The offending line, cut to 120 characters.
    pub text: String,
}

impl fmt::Display for ScrapeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}: {} (in `{}`)",
            self.line, self.message, self.text
        )
    }
}

impl std::error::Error for ScrapeError {}

const TYPES: [&str; 5] = ["counter", "gauge", "histogram", "summary", "untyped"];

/// Parses a whole exposition. Samples come back in the order of the text.
pub fn parse(text: &str) -> Result<Vec<Sample>, ScrapeError> {
    let mut out = Vec::new();
    for (i, raw) in text.split('\n').enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let fail = |message: String| ScrapeError {
            line: i + 1,
            message,
            text: line.chars().take(120).collect(),
        };
        let trimmed = line.trim_start_matches([' ', '\t']);
        if trimmed.trim_end().is_empty() {
            continue;
        }
        if let Some(comment) = trimmed.strip_prefix('#') {
            check_comment(comment).map_err(fail)?;
            continue;
        }
        out.push(parse_sample(trimmed).map_err(fail)?);
    }
    Ok(out)
}

/// The sum of the values of the samples named `metric` whose labels include every pair of
/// `labels` (other labels may be present). `None` when no sample matches.
pub fn sum_matching(
    samples: &[Sample],
    metric: &str,
    labels: &BTreeMap<String, String>,
) -> Option<f64> {
    samples
        .iter()
        .filter(|s| {
            s.name == metric
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(k).is_some_and(|have| have == v))
        })
        .fold(None, |acc, s| Some(acc.unwrap_or(0.0) + s.value))
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

fn is_label_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_label_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(is_name_start) && chars.all(is_name_char)
}

/// `comment` is what follows the `#`.
fn check_comment(comment: &str) -> Result<(), String> {
    let rest = comment.trim_start_matches([' ', '\t']);
    let mut words = rest.splitn(2, [' ', '\t']);
    let keyword = words.next().unwrap_or("");
    if keyword != "HELP" && keyword != "TYPE" {
        return Ok(());
    }
    let args = words.next().unwrap_or("").trim_start_matches([' ', '\t']);
    let mut parts = args.splitn(2, [' ', '\t']);
    let name = parts.next().unwrap_or("");
    if name.is_empty() {
        return Err(format!("# {keyword} without a metric name"));
    }
    if !is_metric_name(name) {
        return Err(format!("invalid metric name {name:?} in # {keyword}"));
    }
    if keyword == "TYPE" {
        let kind = parts.next().unwrap_or("").trim();
        if kind.is_empty() {
            return Err(format!("# TYPE {name} without a type"));
        }
        if !TYPES.contains(&kind) {
            return Err(format!(
                "unknown metric type {kind:?} for {name} (expected one of {})",
                TYPES.join(", ")
            ));
        }
    }
    Ok(())
}

/// A cursor over one sample line.
struct Cursor<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<char> {
        self.s[self.pos..].chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn skip_blanks(&mut self) -> bool {
        let start = self.pos;
        while matches!(self.peek(), Some(' ' | '\t')) {
            self.pos += 1;
        }
        self.pos > start
    }

    fn take_while(&mut self, f: impl Fn(char) -> bool) -> &'a str {
        let start = self.pos;
        while self.peek().is_some_and(&f) {
            self.bump();
        }
        &self.s[start..self.pos]
    }

    /// The next blank-separated token ("" at the end).
    fn token(&mut self) -> &'a str {
        self.take_while(|c| c != ' ' && c != '\t')
    }
}

fn describe(c: Option<char>) -> String {
    match c {
        Some(c) => format!("{c:?}"),
        None => "end of line".into(),
    }
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let mut cur = Cursor { s: line, pos: 0 };
    let name = cur.take_while(is_name_char);
    if name.is_empty() || !name.starts_with(is_name_start) {
        return Err(format!(
            "expected a metric name, found {}",
            describe(line.chars().next())
        ));
    }
    let mut labels = BTreeMap::new();
    cur.skip_blanks();
    if cur.peek() == Some('{') {
        cur.bump();
        parse_labels(&mut cur, name, &mut labels)?;
    }
    if !cur.skip_blanks() && cur.pos == name.len() && cur.peek().is_some() {
        // e.g. `foo-bar 1`: the name ended on a character that is not a separator.
        return Err(format!(
            "invalid character {} in metric name after {name:?}",
            describe(cur.peek())
        ));
    }
    cur.skip_blanks();
    let value_text = cur.token();
    if value_text.is_empty() {
        return Err(format!("sample {name} has no value"));
    }
    let value = parse_value(value_text)
        .ok_or_else(|| format!("invalid value {value_text:?} for {name}"))?;
    cur.skip_blanks();
    let ts = cur.token();
    if !ts.is_empty() && ts.parse::<i64>().is_err() {
        return Err(format!("invalid timestamp {ts:?} for {name}"));
    }
    cur.skip_blanks();
    if cur.peek().is_some() {
        return Err(format!(
            "unexpected text {:?} after the sample of {name}",
            &line[cur.pos..]
        ));
    }
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// Parses after the `{` up to and including the `}`.
fn parse_labels(
    cur: &mut Cursor<'_>,
    metric: &str,
    labels: &mut BTreeMap<String, String>,
) -> Result<(), String> {
    loop {
        cur.skip_blanks();
        if cur.peek() == Some('}') {
            cur.bump();
            return Ok(());
        }
        let label = cur.take_while(is_label_char);
        if label.is_empty() || !label.starts_with(is_label_start) {
            return Err(format!(
                "expected a label name or '}}' in the labels of {metric}, found {}",
                describe(if label.is_empty() {
                    cur.peek()
                } else {
                    label.chars().next()
                })
            ));
        }
        cur.skip_blanks();
        if cur.bump() != Some('=') {
            return Err(format!("expected '=' after label name {label:?}"));
        }
        cur.skip_blanks();
        if cur.bump() != Some('"') {
            return Err(format!(
                "expected '\"' to open the value of label {label:?}"
            ));
        }
        let value = parse_label_value(cur, label)?;
        if labels.insert(label.to_owned(), value).is_some() {
            return Err(format!("duplicate label {label:?} in {metric}"));
        }
        cur.skip_blanks();
        match cur.bump() {
            Some(',') => continue,
            Some('}') => return Ok(()),
            other => {
                return Err(format!(
                    "expected ',' or '}}' after the value of label {label:?}, found {}",
                    describe(other)
                ));
            }
        }
    }
}

/// Parses after the opening quote up to and including the closing one.
fn parse_label_value(cur: &mut Cursor<'_>, label: &str) -> Result<String, String> {
    let mut value = String::new();
    loop {
        match cur.bump() {
            None => return Err(format!("unterminated value of label {label:?}")),
            Some('"') => return Ok(value),
            Some('\\') => match cur.bump() {
                Some('\\') => value.push('\\'),
                Some('"') => value.push('"'),
                Some('n') => value.push('\n'),
                Some(c) => {
                    return Err(format!(
                        "invalid escape \\{c} in the value of label {label:?} \
                         (only \\\\, \\\" and \\n are allowed)"
                    ));
                }
                None => return Err(format!("unterminated value of label {label:?}")),
            },
            Some(c) => value.push(c),
        }
    }
}

/// Go's `ParseFloat` spellings as Prometheus writes them: decimal and exponent forms, `NaN`,
/// `+Inf`, `-Inf` (and `Inf`).
fn parse_value(s: &str) -> Option<f64> {
    match s {
        "NaN" => return Some(f64::NAN),
        "+Inf" | "Inf" => return Some(f64::INFINITY),
        "-Inf" => return Some(f64::NEG_INFINITY),
        _ => {}
    }
    // Rust also takes `inf`, `infinity` and `nan` in any case; the format does not.
    if !s
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'))
    {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use recalloc_common::Metrics;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn sample(name: &str, pairs: &[(&str, &str)], value: f64) -> Sample {
        Sample {
            name: name.into(),
            labels: labels(pairs),
            value,
        }
    }

    fn err(text: &str) -> ScrapeError {
        parse(text).expect_err(&format!("{text:?} should not parse"))
    }

    #[test]
    fn parses_comments_samples_labels_and_timestamps() {
        let text = "# HELP http_requests_total The total number of HTTP requests.\n\
                    # TYPE http_requests_total counter\n\
                    http_requests_total{method=\"post\",code=\"200\"} 1027 1395066363000\n\
                    http_requests_total{method=\"post\",code=\"400\"}    3 1395066363000\n\
                    \n\
                    # A normal comment.\n\
                    #\n\
                    msdos_file_access_time_seconds{path=\"C:\\\\DIR\\\\FILE.TXT\",error=\"Cannot find file:\\n\\\"FILE.TXT\\\"\"} 1.458255915e9\n\
                    metric_without_timestamp_and_labels 12.47\n\
                    something_weird{problem=\"division by zero\"} +Inf -3982045\n\
                    trailing_comma{a=\"1\",} -Inf\n\
                    spaced { a = \"1\" , b=\"2\" } NaN\r\n\
                    \t  indented 0\n\
                    rpc_duration_seconds{quantile=\"0.99\"} 76656\n\
                    rpc_duration_seconds_sum 1.7560473e+07\n\
                    colon:name_1 1e3";
        let s = parse(text).unwrap();
        assert_eq!(s.len(), 11);
        assert_eq!(
            s[0],
            sample(
                "http_requests_total",
                &[("method", "post"), ("code", "200")],
                1027.0
            )
        );
        assert_eq!(s[1].value, 3.0);
        assert_eq!(
            s[2].labels,
            labels(&[
                ("path", "C:\\DIR\\FILE.TXT"),
                ("error", "Cannot find file:\n\"FILE.TXT\"")
            ])
        );
        assert_eq!(s[2].value, 1.458255915e9);
        assert_eq!(
            s[3],
            sample("metric_without_timestamp_and_labels", &[], 12.47)
        );
        assert_eq!(s[4].value, f64::INFINITY);
        assert_eq!(
            s[5],
            sample("trailing_comma", &[("a", "1")], f64::NEG_INFINITY)
        );
        assert_eq!(s[6].labels, labels(&[("a", "1"), ("b", "2")]));
        assert!(s[6].value.is_nan());
        assert_eq!(s[7], sample("indented", &[], 0.0));
        assert_eq!(s[8].labels, labels(&[("quantile", "0.99")]));
        assert_eq!(s[9].value, 1.7560473e7);
        assert_eq!(s[10], sample("colon:name_1", &[], 1000.0));
        assert_eq!(parse("").unwrap(), vec![]);
        assert_eq!(parse("\n\n# only comments\n").unwrap(), vec![]);
    }

    #[test]
    fn malformed_lines_are_errors_with_their_line_number() {
        let cases: &[(&str, usize, &str)] = &[
            ("ok 1\nbad{a=\"1\" 2", 2, "expected ',' or '}'"),
            ("ok 1\n\nno_value", 3, "has no value"),
            ("x{a=\"1\"}", 1, "has no value"),
            ("x 1.2.3", 1, "invalid value \"1.2.3\""),
            ("x inf", 1, "invalid value \"inf\""),
            ("x 1 12.5", 1, "invalid timestamp \"12.5\""),
            ("x 1 2 3", 1, "unexpected text \"3\""),
            ("{a=\"1\"} 1", 1, "expected a metric name"),
            ("9lives 1", 1, "expected a metric name"),
            ("x-y 1", 1, "invalid character '-'"),
            ("x{a=\"1\\t\"} 1", 1, "invalid escape \\t"),
            ("x{a=\"open} 1", 1, "unterminated value of label \"a\""),
            ("x{a=\"1\",a=\"2\"} 1", 1, "duplicate label \"a\""),
            ("x{a} 1", 1, "expected '=' after label name \"a\""),
            (
                "x{a=1} 1",
                1,
                "expected '\"' to open the value of label \"a\"",
            ),
            ("x{1a=\"1\"} 1", 1, "expected a label name"),
            ("x{a=\"1\"", 1, "found end of line"),
            ("# TYPE x sometimes", 1, "unknown metric type \"sometimes\""),
            ("a 1\n# TYPE x", 2, "without a type"),
            ("# HELP", 1, "without a metric name"),
            ("# HELP 1x help", 1, "invalid metric name \"1x\""),
        ];
        for (text, line, what) in cases {
            let e = err(text);
            assert_eq!(e.line, *line, "{text:?}: {e}");
            assert!(e.message.contains(what), "{text:?}: {e}");
            let shown = e.to_string();
            assert!(shown.starts_with(&format!("line {line}: ")), "{shown}");
        }
        // The error quotes the line (shortened).
        let long = format!("x{{a=\"{}\"", "y".repeat(500));
        let e = err(&long);
        assert_eq!(e.text.chars().count(), 120);
        // Other comments are ignored, whatever they say; `#HELP` counts as `# HELP` (as in
        // Prometheus' own parser).
        assert_eq!(
            parse("#HELPER 1x\n# TYPEWRITER\n# whatever { \"").unwrap(),
            vec![]
        );
        assert_eq!(err("#TYPE x y").line, 1);
    }

    #[test]
    fn sum_matching_selects_by_exact_name_and_included_labels() {
        let s = parse(
            "req_total{service=\"rank\",code=\"OK\"} 10\n\
             req_total{service=\"rank\",code=\"UNAVAILABLE\"} 2\n\
             req_total{service=\"embed\",code=\"OK\"} 100\n\
             req_total_created{service=\"rank\"} 5\n\
             other 7\n",
        )
        .unwrap();
        let none = BTreeMap::new();
        assert_eq!(sum_matching(&s, "req_total", &none), Some(112.0));
        assert_eq!(
            sum_matching(&s, "req_total", &labels(&[("service", "rank")])),
            Some(12.0)
        );
        assert_eq!(
            sum_matching(
                &s,
                "req_total",
                &labels(&[("service", "rank"), ("code", "OK")])
            ),
            Some(10.0)
        );
        assert_eq!(sum_matching(&s, "other", &none), Some(7.0));
        assert_eq!(sum_matching(&s, "req", &none), None);
        assert_eq!(
            sum_matching(&s, "req_total", &labels(&[("service", "ingest")])),
            None
        );
        // A label the series does not have never matches, not even with an empty value.
        assert_eq!(sum_matching(&s, "other", &labels(&[("code", "")])), None);
        // A matching series whose value is 0 is still a match.
        let z = parse("zero 0").unwrap();
        assert_eq!(sum_matching(&z, "zero", &none), Some(0.0));
    }

    #[test]
    fn parses_what_the_common_metrics_registry_renders() {
        let m = Metrics::new();
        m.inc_counter("c_total", "a counter", &[("service", "s")], 3);
        m.set_gauge("g", "a gauge", &[], -1.5);
        m.observe(
            "lat_seconds",
            "a summary",
            &[("method", "/x")],
            std::time::Duration::from_millis(5),
        );
        let s = parse(&m.render()).unwrap();
        assert_eq!(
            sum_matching(&s, "c_total", &labels(&[("service", "s")])),
            Some(3.0)
        );
        assert_eq!(sum_matching(&s, "g", &BTreeMap::new()), Some(-1.5));
        assert_eq!(
            sum_matching(&s, "lat_seconds_count", &BTreeMap::new()),
            Some(1.0)
        );
        let q = sum_matching(&s, "lat_seconds", &labels(&[("quantile", "0.99")])).unwrap();
        assert!((q - 0.005).abs() < 1e-4, "{q}");
    }

    /// Renders like `recalloc_common::metrics`, plus a timestamp.
    fn render(samples: &[(String, BTreeMap<String, String>, f64)], ts: Option<i64>) -> String {
        let mut out = String::new();
        for (name, l, v) in samples {
            let parts: Vec<String> = l
                .iter()
                .map(|(k, v)| {
                    let v = v
                        .replace('\\', "\\\\")
                        .replace('"', "\\\"")
                        .replace('\n', "\\n");
                    format!("{k}=\"{v}\"")
                })
                .collect();
            let v = if v.is_nan() {
                "NaN".to_string()
            } else if v.is_infinite() {
                if *v > 0.0 { "+Inf" } else { "-Inf" }.to_string()
            } else {
                format!("{v:e}")
            };
            out.push_str(&format!("# TYPE {name} gauge\n{name}"));
            if !parts.is_empty() {
                out.push_str(&format!("{{{}}}", parts.join(",")));
            }
            out.push_str(&format!(" {v}"));
            if let Some(ts) = ts {
                out.push_str(&format!(" {ts}"));
            }
            out.push('\n');
        }
        out
    }

    fn value() -> impl Strategy<Value = f64> {
        prop_oneof![
            any::<f64>(),
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            Just(0.0),
        ]
    }

    proptest! {
        #[test]
        fn render_then_parse_round_trips(
            series in prop::collection::vec(
                (
                    "[a-zA-Z_:][a-zA-Z0-9_:]{0,12}",
                    prop::collection::btree_map("[a-zA-Z_][a-zA-Z0-9_]{0,8}", any::<String>(), 0..4),
                    value(),
                ),
                0..6,
            ),
            ts in prop::option::of(any::<i64>()),
        ) {
            let parsed = parse(&render(&series, ts)).unwrap();
            prop_assert_eq!(parsed.len(), series.len());
            for (p, (name, l, v)) in parsed.iter().zip(&series) {
                prop_assert_eq!(&p.name, name);
                prop_assert_eq!(&p.labels, l);
                prop_assert!(p.value.to_bits() == v.to_bits() || (p.value.is_nan() && v.is_nan()),
                    "{} != {}", p.value, v);
            }
        }

        #[test]
        fn the_common_registry_round_trips_label_values(
            values in prop::collection::vec(any::<String>(), 1..5),
            gauge in value(),
        ) {
            let m = Metrics::new();
            for (i, v) in values.iter().enumerate() {
                m.inc_counter("c_total", "h", &[("i", &i.to_string()), ("v", v)], 1 + i as u64);
            }
            m.set_gauge("g", "h", &[("v", &values[0])], gauge);
            let parsed = parse(&m.render()).unwrap();
            for (i, v) in values.iter().enumerate() {
                let want = labels(&[("i", &i.to_string()), ("v", v)]);
                prop_assert_eq!(sum_matching(&parsed, "c_total", &want), Some(1.0 + i as f64));
            }
            let g = sum_matching(&parsed, "g", &labels(&[("v", &values[0])])).unwrap();
            prop_assert!(g == gauge || (g.is_nan() && gauge.is_nan()), "{} != {}", g, gauge);
        }

        #[test]
        fn arbitrary_text_never_panics(text in any::<String>()) {
            let _ = parse(&text);
        }
    }
}

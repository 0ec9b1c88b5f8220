//! Load traces: the demand series the forecaster learns from and the simulator replays.
//!
//! Two CSV shapes are accepted because both exist in the wild: `ts,value` with unix seconds
//! (the Crane traces, Prometheus exports) and Prophet's `"ds","y"` with calendar dates or
//! date-times (taken as UTC). A header line is optional. Every row is checked, and a bad row is
//! reported with its line number rather than skipped, because a silently dropped row shifts a
//! seasonal model by one step.

use std::io::BufRead;
use std::str::FromStr;

use serde::Serialize;
use thiserror::Error;

/// Why a trace could not be read.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum TraceError {
    #[error("trace is empty: no data rows")]
    Empty,
    #[error("line {line}: {reason}")]
    Malformed { line: usize, reason: String },
    #[error("line {line}: timestamp {ts} does not increase (previous {prev})")]
    NonIncreasing { line: usize, prev: i64, ts: i64 },
    #[error("line {line}: value {value} is not a finite non-negative number")]
    BadValue { line: usize, value: f64 },
    #[error("timestamps and values differ in length ({ts} vs {values})")]
    LengthMismatch { ts: usize, values: usize },
    #[error("line {line}: read failed: {reason}")]
    Io { line: usize, reason: String },
}

/// A validated demand series: strictly increasing unix-second timestamps, finite values ≥ 0.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Trace {
    ts: Vec<i64>,
    values: Vec<f64>,
}

impl Trace {
    /// Builds a trace from parallel vectors, with the same checks as parsing (line numbers are
    /// 1-based positions).
    pub fn new(ts: Vec<i64>, values: Vec<f64>) -> Result<Self, TraceError> {
        if ts.len() != values.len() {
            return Err(TraceError::LengthMismatch {
                ts: ts.len(),
                values: values.len(),
            });
        }
        if ts.is_empty() {
            return Err(TraceError::Empty);
        }
        for i in 0..ts.len() {
            check_value(i + 1, values[i])?;
            if i > 0 && ts[i] <= ts[i - 1] {
                return Err(TraceError::NonIncreasing {
                    line: i + 1,
                    prev: ts[i - 1],
                    ts: ts[i],
                });
            }
        }
        Ok(Self { ts, values })
    }

    /// Parses CSV text (see the module docs for the accepted shapes).
    pub fn parse(text: &str) -> Result<Self, TraceError> {
        Self::from_reader(text.as_bytes())
    }

    /// Parses CSV from a reader, line by line.
    pub fn from_reader<R: BufRead>(reader: R) -> Result<Self, TraceError> {
        let mut ts = Vec::new();
        let mut values = Vec::new();
        for (idx, line) in reader.lines().enumerate() {
            let line_no = idx + 1;
            let line = line.map_err(|e| TraceError::Io {
                line: line_no,
                reason: e.to_string(),
            })?;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut fields = line.split(',').map(unquote);
            let (Some(a), Some(b)) = (fields.next(), fields.next()) else {
                return Err(malformed(line_no, "expected two fields `ts,value`"));
            };
            if fields.next().is_some() {
                return Err(malformed(
                    line_no,
                    "expected two fields `ts,value`, found more",
                ));
            }
            // A header is only allowed before the first data row.
            if ts.is_empty() && values.is_empty() && is_header(a, b) {
                continue;
            }
            let t = parse_time(a).map_err(|r| malformed(line_no, &r))?;
            let v: f64 = b
                .parse()
                .map_err(|_| malformed(line_no, &format!("value `{b}` is not a number")))?;
            check_value(line_no, v)?;
            if let Some(&prev) = ts.last()
                && t <= prev
            {
                return Err(TraceError::NonIncreasing {
                    line: line_no,
                    prev,
                    ts: t,
                });
            }
            ts.push(t);
            values.push(v);
        }
        if ts.is_empty() {
            return Err(TraceError::Empty);
        }
        Ok(Self { ts, values })
    }

    /// Unix-second timestamps, strictly increasing.
    pub fn timestamps(&self) -> &[i64] {
        &self.ts
    }

    /// Demand values, finite and ≥ 0.
    pub fn values(&self) -> &[f64] {
        &self.values
    }

    pub fn len(&self) -> usize {
        self.ts.len()
    }

    /// Always false: a trace has at least one point.
    pub fn is_empty(&self) -> bool {
        self.ts.is_empty()
    }

    /// The typical spacing: the median gap between timestamps (60 for a one-point trace).
    /// The median, not the mean, so that a few missing rows do not change the step.
    pub fn step_seconds(&self) -> u64 {
        if self.ts.len() < 2 {
            return 60;
        }
        let mut gaps: Vec<i64> = self.ts.windows(2).map(|w| w[1] - w[0]).collect();
        let mid = gaps.len() / 2;
        let (_, m, _) = gaps.select_nth_unstable(mid);
        (*m).max(1) as u64
    }

    /// The time the trace ends: the last point holds for one step.
    pub fn end(&self) -> i64 {
        self.ts[self.ts.len() - 1] + self.step_seconds() as i64
    }
}

impl FromStr for Trace {
    type Err = TraceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

fn malformed(line: usize, reason: &str) -> TraceError {
    TraceError::Malformed {
        line,
        reason: reason.to_string(),
    }
}

fn check_value(line: usize, v: f64) -> Result<(), TraceError> {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        Err(TraceError::BadValue { line, value: v })
    }
}

fn unquote(s: &str) -> &str {
    let s = s.trim();
    s.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(s)
        .trim()
}

/// A header row: neither field reads as data. `ts,42` is a malformed data row, not a header.
fn is_header(a: &str, b: &str) -> bool {
    parse_time(a).is_err() && b.parse::<f64>().is_err()
}

/// Unix seconds, `YYYY-MM-DD`, or `YYYY-MM-DD[ T]HH:MM[:SS]` (UTC).
fn parse_time(s: &str) -> Result<i64, String> {
    if let Ok(t) = s.parse::<i64>() {
        return Ok(t);
    }
    if let Ok(t) = s.parse::<f64>()
        && t.is_finite()
        && t.fract() == 0.0
        && t.abs() < 1e15
    {
        return Ok(t as i64);
    }
    let bad = || format!("timestamp `{s}` is neither unix seconds nor a YYYY-MM-DD date");
    let (date, time) = match s.find(['T', ' ']) {
        Some(i) => (&s[..i], Some(s[i + 1..].trim_end_matches('Z'))),
        None => (s, None),
    };
    let mut d = date.split('-');
    let (Some(y), Some(m), Some(dd), None) = (d.next(), d.next(), d.next(), d.next()) else {
        return Err(bad());
    };
    let y: i64 = y.parse().map_err(|_| bad())?;
    let m: u32 = m.parse().map_err(|_| bad())?;
    let dd: u32 = dd.parse().map_err(|_| bad())?;
    if !(1..=12).contains(&m) || dd == 0 || dd > days_in_month(y, m) {
        return Err(format!("date `{date}` does not exist"));
    }
    let mut secs = days_from_civil(y, m, dd) * 86_400;
    if let Some(time) = time {
        let parts: Vec<&str> = time.split(':').collect();
        if parts.len() < 2 || parts.len() > 3 {
            return Err(bad());
        }
        let h: i64 = parts[0].parse().map_err(|_| bad())?;
        let mi: i64 = parts[1].parse().map_err(|_| bad())?;
        let sec: f64 = parts
            .get(2)
            .map_or(Ok(0.0), |p| p.parse())
            .map_err(|_| bad())?;
        if !(0..24).contains(&h) || !(0..60).contains(&mi) || !(0.0..61.0).contains(&sec) {
            return Err(format!("time `{time}` is out of range"));
        }
        secs += h * 3600 + mi * 60 + sec as i64;
    }
    Ok(secs)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_unix_seconds_with_and_without_header() {
        let t = Trace::parse("ts,value\n100,1.5\n160,2\n").unwrap();
        assert_eq!(t.timestamps(), &[100, 160]);
        assert_eq!(t.values(), &[1.5, 2.0]);
        assert_eq!(t.step_seconds(), 60);
        assert_eq!(t.end(), 220);
        let t = Trace::parse("100,1.5\n160,2\n").unwrap();
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn parses_prophet_dates_as_utc_midnight() {
        let t = Trace::parse("\"ds\",\"y\"\n\"2007-12-10\",9.59\n\"2007-12-11\",8.5\n").unwrap();
        assert_eq!(t.timestamps()[0], 1_197_244_800);
        assert_eq!(t.step_seconds(), 86_400);
        let t = Trace::parse("1970-01-01,1\n2000-03-01 12:30:00,2\n").unwrap();
        assert_eq!(t.timestamps(), &[0, 951_913_800]);
    }

    #[test]
    fn reports_bad_rows_with_line_numbers() {
        let e = Trace::parse("ts,value\n100,1\n160,abc\n").unwrap_err();
        assert_eq!(e.to_string(), "line 3: value `abc` is not a number");
        let e = Trace::parse("100,1\n100,2\n").unwrap_err();
        assert!(
            matches!(e, TraceError::NonIncreasing { line: 2, .. }),
            "{e}"
        );
        let e = Trace::parse("100,1\n160,-2\n").unwrap_err();
        assert!(matches!(e, TraceError::BadValue { line: 2, .. }), "{e}");
        let e = Trace::parse("100,NaN\n").unwrap_err();
        assert!(matches!(e, TraceError::BadValue { line: 1, .. }), "{e}");
        let e = Trace::parse("100,1,2\n").unwrap_err();
        assert!(matches!(e, TraceError::Malformed { line: 1, .. }), "{e}");
        let e = Trace::parse("100\n").unwrap_err();
        assert!(matches!(e, TraceError::Malformed { line: 1, .. }), "{e}");
        let e = Trace::parse("2021-02-30,1\n").unwrap_err();
        assert_eq!(e.to_string(), "line 1: date `2021-02-30` does not exist");
        let e = Trace::parse("100,1\nts,value\n").unwrap_err();
        assert!(matches!(e, TraceError::Malformed { line: 2, .. }), "{e}");
        assert_eq!(Trace::parse("ts,value\n\n"), Err(TraceError::Empty));
        assert_eq!(Trace::parse(""), Err(TraceError::Empty));
    }

    #[test]
    fn new_checks_like_parse() {
        assert!(Trace::new(vec![1, 2], vec![1.0]).is_err());
        assert!(Trace::new(vec![2, 1], vec![1.0, 1.0]).is_err());
        assert!(Trace::new(vec![1, 2], vec![1.0, f64::INFINITY]).is_err());
        assert_eq!(Trace::new(vec![], vec![]), Err(TraceError::Empty));
        assert!(Trace::new(vec![1, 5], vec![0.0, 3.0]).is_ok());
    }

    #[test]
    fn step_is_the_median_gap() {
        let t = Trace::new(vec![0, 60, 120, 600, 660], vec![1.0; 5]).unwrap();
        assert_eq!(t.step_seconds(), 60);
    }
}

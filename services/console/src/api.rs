//! The JSON API's inputs and errors, apart from any I/O: what a request may carry, how it is
//! checked, and how a failure reads. Every error is `{"error": "...", "field": "..."}` with the
//! HTTP status of its kind; `field` names the query parameter or body field at fault (or the
//! service that failed), so the page can put the message next to the input.

use std::collections::BTreeMap;

use recalloc_alloc::trace::Trace;
use serde::{Deserialize, Serialize};

use crate::traces;

/// Most items the try-it panel asks for.
pub const MAX_K: u32 = 100;
/// Largest uploaded trace, in bytes of CSV (a year of one-minute points is about 10 MB).
pub const MAX_TRACE_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Serialize, thiserror::Error)]
#[error("{error}")]
pub struct ApiError {
    #[serde(skip)]
    pub status: u16,
    pub error: String,
    pub field: Option<String>,
}

impl ApiError {
    fn new(status: u16, field: Option<&str>, error: impl Into<String>) -> Self {
        Self {
            status,
            error: error.into(),
            field: field.map(str::to_owned),
        }
    }

    pub fn bad_request(field: &str, error: impl Into<String>) -> Self {
        Self::new(400, Some(field), error)
    }

    pub fn not_found(field: &str, error: impl Into<String>) -> Self {
        Self::new(404, Some(field), error)
    }

    pub fn unauthorized(error: &str) -> Self {
        Self::new(401, Some("authorization"), error)
    }

    /// A route the API does not have.
    pub fn no_route(path: &str) -> Self {
        Self::new(404, None, format!("no API route /api{path}"))
    }

    /// A failed call to `service`, with `field` the console's input the call was about: the
    /// gRPC status decides the HTTP one (a bad argument is the caller's, an unreachable
    /// service is a bad gateway).
    pub fn upstream(service: &str, field: &str, s: &tonic::Status) -> Self {
        use tonic::Code;
        let message = format!("{service}: {}", s.message());
        match s.code() {
            Code::InvalidArgument | Code::OutOfRange => Self::new(400, Some(field), message),
            Code::NotFound => Self::new(404, Some(field), message),
            Code::FailedPrecondition => Self::new(409, Some(service), message),
            Code::Unauthenticated | Code::PermissionDenied => Self::new(
                502,
                Some(service),
                format!("{message} (the console's token was refused)"),
            ),
            Code::DeadlineExceeded => Self::new(504, Some(service), message),
            _ => Self::new(502, Some(service), format!("{message} ({:?})", s.code())),
        }
    }
}

/// The query string's parameters (the last of repeated ones).
pub fn query(raw: Option<&str>) -> BTreeMap<String, String> {
    form_urlencoded::parse(raw.unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

/// A parameter that must be there and not blank, trimmed.
pub fn required(q: &BTreeMap<String, String>, field: &str) -> Result<String, ApiError> {
    match q.get(field).map(|v| v.trim()) {
        Some(v) if !v.is_empty() => Ok(v.to_owned()),
        _ => Err(ApiError::bad_request(field, format!("{field} is required"))),
    }
}

/// `k`, 1 ..= [`MAX_K`], `default` when absent.
pub fn k(q: &BTreeMap<String, String>, default: u32) -> Result<u32, ApiError> {
    let Some(raw) = q.get("k").map(|v| v.trim()).filter(|v| !v.is_empty()) else {
        return Ok(default);
    };
    match raw.parse::<u32>() {
        Ok(k) if (1..=MAX_K).contains(&k) => Ok(k),
        _ => Err(ApiError::bad_request(
            "k",
            format!("k must be a whole number from 1 to {MAX_K}, not {raw:?}"),
        )),
    }
}

/// A boolean parameter (`1`/`true`/`on` or `0`/`false`/`off`), false when absent.
pub fn flag(q: &BTreeMap<String, String>, field: &str) -> Result<bool, ApiError> {
    match q
        .get(field)
        .map(|v| v.trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("" | "0" | "false" | "off") => Ok(false),
        Some("1" | "true" | "on") => Ok(true),
        Some(other) => Err(ApiError::bad_request(
            field,
            format!("{field} must be true or false, not {other:?}"),
        )),
    }
}

/// `POST /api/simulate`: a bundled trace by name or an uploaded CSV, and the pod's figures
/// (a bundled trace brings its own defaults).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulateBody {
    pub trace: Option<String>,
    pub csv: Option<String>,
    pub capacity_per_pod: Option<f64>,
    pub startup_seconds: Option<u32>,
}

/// A checked simulation request.
#[derive(Debug, Clone, PartialEq)]
pub struct Simulation {
    /// The bundled trace's name, or `upload`.
    pub source: String,
    pub trace: Trace,
    pub capacity_per_pod: f64,
    pub startup_seconds: u32,
}

pub fn simulation(body: &[u8]) -> Result<Simulation, ApiError> {
    let b: SimulateBody = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request("body", format!("the body is not a simulation request: {e}"))
    })?;
    let (source, csv, defaults) = match (&b.trace, &b.csv) {
        (Some(name), None) => {
            let t = traces::bundled(name).ok_or_else(|| {
                ApiError::not_found(
                    "trace",
                    format!(
                        "no bundled trace {name:?} (bundled: {})",
                        traces::BUNDLED.map(|t| t.name).join(", ")
                    ),
                )
            })?;
            (
                name.clone(),
                t.csv,
                Some((t.capacity_per_pod, t.startup_seconds)),
            )
        }
        (None, Some(csv)) => ("upload".to_owned(), csv.as_str(), None),
        _ => {
            return Err(ApiError::bad_request(
                "trace",
                "give either trace (a bundled trace's name) or csv (the trace's text)",
            ));
        }
    };
    if csv.len() > MAX_TRACE_BYTES {
        return Err(ApiError::bad_request(
            "csv",
            format!(
                "the trace has {} bytes; at most {MAX_TRACE_BYTES}",
                csv.len()
            ),
        ));
    }
    let trace =
        Trace::parse(csv).map_err(|e| ApiError::bad_request("csv", format!("trace CSV: {e}")))?;
    let capacity_per_pod = match (b.capacity_per_pod, defaults) {
        (Some(c), _) => c,
        (None, Some((c, _))) => c,
        (None, None) => {
            return Err(ApiError::bad_request(
                "capacity_per_pod",
                "capacity_per_pod is required for an uploaded trace: the load one pod serves, in the trace's unit",
            ));
        }
    };
    if !(capacity_per_pod.is_finite() && capacity_per_pod > 0.0) {
        return Err(ApiError::bad_request(
            "capacity_per_pod",
            format!("capacity_per_pod must be a number > 0, not {capacity_per_pod}"),
        ));
    }
    let startup_seconds = b.startup_seconds.or(defaults.map(|d| d.1)).unwrap_or(60);
    Ok(Simulation {
        source,
        trace,
        capacity_per_pod,
        startup_seconds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_checked_and_named() {
        let q = query(Some("user=%20u%201%20&k=7&by_text=true"));
        assert_eq!(required(&q, "user").unwrap(), "u 1");
        assert_eq!(k(&q, 5).unwrap(), 7);
        assert!(flag(&q, "by_text").unwrap());
        assert_eq!(k(&query(None), 5).unwrap(), 5);
        let e = required(&query(Some("user=+")), "user").unwrap_err();
        assert_eq!((e.status, e.field.as_deref()), (400, Some("user")));
        for bad in ["k=0", "k=101", "k=five", "k=-1"] {
            let e = k(&query(Some(bad)), 5).unwrap_err();
            assert_eq!((e.status, e.field.as_deref()), (400, Some("k")), "{bad}");
        }
        let e = flag(&query(Some("by_text=maybe")), "by_text").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("by_text"));
    }

    #[test]
    fn simulation_requests_name_the_field_at_fault() {
        let s = simulation(br#"{"trace": "crane/input0"}"#).unwrap();
        assert_eq!((s.capacity_per_pod, s.startup_seconds), (15.0, 60));
        assert_eq!(s.trace.len(), 11_520);
        let s = simulation(
            br#"{"csv": "ts,value\n0,1\n60,2\n", "capacity_per_pod": 2, "startup_seconds": 30}"#,
        )
        .unwrap();
        assert_eq!(
            (s.source.as_str(), s.trace.len(), s.startup_seconds),
            ("upload", 2, 30)
        );

        let err = |body: &str| {
            let e = simulation(body.as_bytes()).unwrap_err();
            (e.status, e.field.unwrap(), e.error)
        };
        let (status, field, msg) =
            err(r#"{"csv": "ts,value\n0,1\n60,x\n", "capacity_per_pod": 2}"#);
        assert_eq!((status, field.as_str()), (400, "csv"));
        assert!(msg.contains("line 3"), "{msg}");
        assert_eq!(err(r#"{"trace": "nope"}"#).0, 404);
        assert_eq!(err(r#"{"trace": "nope"}"#).1, "trace");
        assert_eq!(err(r#"{}"#).1, "trace");
        assert_eq!(err(r#"{"trace": "crane/input0", "csv": "0,1"}"#).1, "trace");
        assert_eq!(err(r#"{"csv": "0,1\n60,2"}"#).1, "capacity_per_pod");
        assert_eq!(
            err(r#"{"trace": "crane/input0", "capacity_per_pod": -1}"#).1,
            "capacity_per_pod"
        );
        assert_eq!(err(r#"{"trace": "crane/input0", "colour": 1}"#).1, "body");
        assert_eq!(err("not json").1, "body");
    }

    #[test]
    fn upstream_statuses_become_http_ones() {
        let e = ApiError::upstream("rank", "item", &tonic::Status::not_found("unknown item x"));
        assert_eq!((e.status, e.field.as_deref()), (404, Some("item")));
        assert_eq!(e.error, "rank: unknown item x");
        let e = ApiError::upstream("rank", "user", &tonic::Status::unavailable("down"));
        assert_eq!((e.status, e.field.as_deref()), (502, Some("rank")));
        let e = ApiError::upstream(
            "rank",
            "user",
            &tonic::Status::failed_precondition("no model"),
        );
        assert_eq!(e.status, 409);
        let json = serde_json::to_value(ApiError::bad_request("k", "bad")).unwrap();
        assert_eq!(json, serde_json::json!({"error": "bad", "field": "k"}));
    }
}

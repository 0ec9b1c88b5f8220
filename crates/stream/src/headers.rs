//! The W3C trace context of a record: its headers `traceparent` and `tracestate`, as
//! OpenTelemetry's messaging conventions have them (ingest writes them; so may any producer).

use rdkafka::message::{Headers, OwnedHeaders};
use recalloc_common::trace_context::{TRACEPARENT, TRACESTATE};

/// A header's value as text, if the message has that header and it is UTF-8.
pub fn header_str<'a>(headers: &'a impl Headers, key: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|h| h.key == key)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
}

/// Headers carrying a trace context (no `tracestate` header for an empty one).
pub fn trace_headers(traceparent: &str, tracestate: Option<&str>) -> OwnedHeaders {
    let mut h = OwnedHeaders::new().insert(rdkafka::message::Header {
        key: TRACEPARENT,
        value: Some(traceparent),
    });
    if let Some(s) = tracestate.filter(|s| !s.is_empty()) {
        h = h.insert(rdkafka::message::Header {
            key: TRACESTATE,
            value: Some(s),
        });
    }
    h
}

/// The producer's trace context of a message: its `traceparent` and `tracestate` headers; empty
/// when it has none (the message then starts a new trace).
pub fn producer_context(headers: Option<&impl Headers>) -> (&str, Option<&str>) {
    match headers.and_then(|h| Some((header_str(h, TRACEPARENT)?, h))) {
        Some((tp, h)) => (tp, header_str(h, TRACESTATE)),
        None => ("", None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use recalloc_common::trace_context;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn trace_headers_round_trip() {
        let h = trace_headers(TP, Some("vendor=x"));
        assert_eq!(header_str(&h, TRACEPARENT), Some(TP));
        assert_eq!(header_str(&h, TRACESTATE), Some("vendor=x"));
        assert_eq!(producer_context(Some(&h)), (TP, Some("vendor=x")));
        // No tracestate header for an empty one.
        assert_eq!(trace_headers(TP, Some("")).count(), 1);
    }

    #[test]
    fn without_a_traceparent_header_a_message_starts_a_new_trace() {
        let unrelated = OwnedHeaders::new().insert(rdkafka::message::Header {
            key: "other",
            value: Some("x"),
        });
        assert_eq!(producer_context(Some(&unrelated)), ("", None));
        assert_eq!(producer_context(None::<&OwnedHeaders>), ("", None));
    }

    #[test]
    fn invalid_header_bytes_are_ignored() {
        let h = OwnedHeaders::new().insert(rdkafka::message::Header {
            key: TRACEPARENT,
            value: Some(&b"\xff\xfe"[..]),
        });
        assert_eq!(header_str(&h, TRACEPARENT), None);
        assert_eq!(producer_context(Some(&h)), ("", None));
        // A malformed value is ignored where it is parsed: the message starts a new trace.
        let span = tracing::Span::none();
        assert!(!trace_context::set_remote_parent(
            &span,
            "00-nonsense",
            None
        ));
        assert!(trace_context::set_remote_parent(&span, TP, None));
    }
}

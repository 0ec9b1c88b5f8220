//! The W3C trace context of a record: record headers (`traceparent`, `tracestate`) when the
//! producer wrote them, else the record's `traceparent` field (what ingest writes today).

use rdkafka::message::{Headers, OwnedHeaders};
use recalloc_common::trace_context::{TRACEPARENT, TRACESTATE};
use recalloc_proto::Record;

/// A header's value as text, if the message has that header and it is UTF-8.
pub fn header_str<'a>(headers: &'a impl Headers, key: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|h| h.key == key)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
}

/// Headers carrying a trace context, for a producer that puts it in headers rather than in the
/// record's `traceparent` field (recalloc's ingest uses the field: see `records.proto`).
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

/// The producer's trace context of a message: a `traceparent` header (what other producers
/// use) if there is one, else the record's `traceparent` field (what ingest writes). Empty when
/// neither: the message then starts a new trace.
pub fn producer_context<'a>(
    headers: Option<&'a impl Headers>,
    record: Option<&'a Record>,
) -> (&'a str, Option<&'a str>) {
    if let Some(h) = headers
        && let Some(tp) = header_str(h, TRACEPARENT)
    {
        return (tp, header_str(h, TRACESTATE));
    }
    (record.map(Record::traceparent).unwrap_or_default(), None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use recalloc_common::trace_context;
    use recalloc_proto::v1::ItemRecord;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const FIELD_TP: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    fn item_with(traceparent: &str) -> Record {
        Record::Item(ItemRecord {
            traceparent: traceparent.into(),
            ..Default::default()
        })
    }

    #[test]
    fn trace_headers_round_trip() {
        let h = trace_headers(TP, Some("vendor=x"));
        assert_eq!(header_str(&h, TRACEPARENT), Some(TP));
        assert_eq!(header_str(&h, TRACESTATE), Some("vendor=x"));
        assert_eq!(producer_context(Some(&h), None), (TP, Some("vendor=x")));
        // No tracestate header for an empty one.
        assert_eq!(trace_headers(TP, Some("")).count(), 1);
    }

    #[test]
    fn header_wins_over_the_record_field_which_is_the_fallback() {
        let rec = item_with(FIELD_TP);
        let h = trace_headers(TP, None);
        assert_eq!(producer_context(Some(&h), Some(&rec)), (TP, None));
        let unrelated = OwnedHeaders::new().insert(rdkafka::message::Header {
            key: "other",
            value: Some("x"),
        });
        assert_eq!(
            producer_context(Some(&unrelated), Some(&rec)),
            (FIELD_TP, None)
        );
        assert_eq!(
            producer_context(None::<&OwnedHeaders>, Some(&rec)),
            (FIELD_TP, None)
        );
        assert_eq!(producer_context(None::<&OwnedHeaders>, None), ("", None));
    }

    #[test]
    fn invalid_header_bytes_are_ignored() {
        let h = OwnedHeaders::new().insert(rdkafka::message::Header {
            key: TRACEPARENT,
            value: Some(&b"\xff\xfe"[..]),
        });
        let rec = item_with(FIELD_TP);
        assert_eq!(header_str(&h, TRACEPARENT), None);
        assert_eq!(producer_context(Some(&h), Some(&rec)), (FIELD_TP, None));
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

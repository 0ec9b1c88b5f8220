//! W3C trace context (`traceparent`, `tracestate`) in and out of the process, so one record's
//! path through the cluster is one trace: a gRPC call's metadata → the span of the call → the
//! `traceparent` and `tracestate` headers each produced Kafka record carries (the producer
//! span's context, per OpenTelemetry's messaging conventions) → a span per consumed record, a
//! child of the producer span. The spans are `tracing` spans; the OpenTelemetry layer that [`crate::telemetry`]
//! installs gives them trace and span ids (and exports them when OTLP export is configured).
//!
//! Malformed headers are ignored, as the W3C spec says: the call or record then starts a new
//! trace, it never fails.

use futures::future::BoxFuture;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry::{Context, trace::SpanContext};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use std::collections::HashMap;
use std::task::{Context as TaskContext, Poll};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";

fn propagator() -> TraceContextPropagator {
    TraceContextPropagator::new()
}

/// The remote context a `traceparent` value names; an empty context (so: a new trace) when it is
/// missing or malformed.
pub fn context_from_traceparent(traceparent: &str, tracestate: Option<&str>) -> Context {
    let mut carrier = HashMap::with_capacity(2);
    carrier.insert(TRACEPARENT.to_owned(), traceparent.to_owned());
    if let Some(s) = tracestate {
        carrier.insert(TRACESTATE.to_owned(), s.to_owned());
    }
    // Against an empty context, not the current one: a malformed value must start a new trace,
    // not continue whatever span happens to be entered.
    propagator().extract_with_context(&Context::new(), &carrier)
}

/// Makes `span` (not yet entered) a child of the remote span `traceparent` names, or the root of
/// a new trace when it is empty or malformed. Returns whether the parent was valid.
pub fn set_remote_parent(
    span: &tracing::Span,
    traceparent: &str,
    tracestate: Option<&str>,
) -> bool {
    let cx = context_from_traceparent(traceparent, tracestate);
    let valid = cx.span().span_context().is_valid();
    // Fails only without the OpenTelemetry layer (unit tests); the span then has no trace.
    let _ = span.set_parent(cx);
    valid
}

/// The `traceparent` naming the span of `cx`, or `None` when it has no valid span.
pub fn traceparent_of(cx: &Context) -> Option<String> {
    carrier_of(cx).remove(TRACEPARENT)
}

/// What the W3C propagator writes for `cx`: `traceparent`, and `tracestate` when it has one.
fn carrier_of(cx: &Context) -> HashMap<String, String> {
    let mut carrier: HashMap<String, String> = HashMap::with_capacity(2);
    propagator().inject_context(cx, &mut carrier);
    carrier
}

/// The `traceparent` and (when there is one) `tracestate` of `span`: what a record produced
/// under it carries in its headers. `None` when the span has no valid context (no telemetry
/// installed).
pub fn propagation_of(span: &tracing::Span) -> Option<(String, Option<String>)> {
    let mut carrier = carrier_of(&span.context());
    let traceparent = carrier.remove(TRACEPARENT)?;
    Some((
        traceparent,
        carrier.remove(TRACESTATE).filter(|s| !s.is_empty()),
    ))
}

/// The `traceparent` of the current `tracing` span: what a record produced now carries. Empty
/// when there is none (no telemetry installed, or no span).
pub fn current_traceparent() -> String {
    traceparent_of(&tracing::Span::current().context()).unwrap_or_default()
}

/// The span context of `span`, e.g. to log its trace id.
pub fn span_context(span: &tracing::Span) -> SpanContext {
    span.context().span().span_context().clone()
}

/// Reads the context from HTTP/2 headers (gRPC metadata is carried in them).
struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Writes the context into gRPC metadata; a value that is not valid ASCII metadata is skipped.
struct MetadataInjector<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            tonic::metadata::MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(k, v);
        }
    }
}

/// The remote parent an incoming call names in its headers (empty when none or malformed).
pub fn context_from_headers(headers: &http::HeaderMap) -> Context {
    propagator().extract_with_context(&Context::new(), &HeaderExtractor(headers))
}

/// Puts the current span's context into outgoing gRPC metadata. Use as a tonic client
/// interceptor: `FooClient::with_interceptor(channel, trace_context::inject_current)`.
pub fn inject_current(mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
    let cx = tracing::Span::current().context();
    propagator().inject_context(&cx, &mut MetadataInjector(req.metadata_mut()));
    Ok(req)
}

/// Tower layer for a tonic server: each call runs in a server span whose parent is the context
/// the caller sent (`traceparent`/`tracestate` metadata), or a new trace without one. The span
/// records the gRPC status code; the call's logs carry its trace id.
#[derive(Clone, Copy, Default)]
pub struct GrpcTraceLayer;

impl<S> tower::Layer<S> for GrpcTraceLayer {
    type Service = GrpcTrace<S>;
    fn layer(&self, inner: S) -> Self::Service {
        GrpcTrace { inner }
    }
}

#[derive(Clone)]
pub struct GrpcTrace<S> {
    inner: S,
}

/// The server span of one call, a child of the caller's context.
pub fn server_span(path: &str, parent: Context) -> tracing::Span {
    let span = tracing::info_span!(
        parent: None,
        "grpc",
        otel.name = path.trim_start_matches('/'),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        rpc.system = "grpc",
        rpc.grpc.status_code = tracing::field::Empty,
        trace_id = tracing::field::Empty,
    );
    // Fails only when the OpenTelemetry layer is not installed (e.g. in unit tests of a
    // service); the call then simply has no trace.
    let _ = span.set_parent(parent);
    let sc = span_context(&span);
    if sc.is_valid() {
        span.record("trace_id", tracing::field::display(sc.trace_id()));
    }
    span
}

impl<S, B, RB> tower::Service<http::Request<B>> for GrpcTrace<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>> + Send,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let span = server_span(req.uri().path(), context_from_headers(req.headers()));
        let fut = {
            let _entered = span.enter();
            self.inner.call(req)
        };
        let record_on = span.clone();
        Box::pin(
            async move {
                let res = fut.await;
                // Errors come back trailers-only, their status in the headers; a response
                // without one is a success whose status follows in the trailers.
                let code = match &res {
                    Ok(r) => r
                        .headers()
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<i64>().ok())
                        .unwrap_or(0),
                    Err(_) => 14, // UNAVAILABLE: the transport failed
                };
                record_on.record("rpc.grpc.status_code", code);
                if code != 0 {
                    record_on.record("otel.status_code", "ERROR");
                }
                res
            }
            .instrument(span),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanId, TraceFlags, TraceId};

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parse_and_format_round_trip() {
        let cx = context_from_traceparent(TP, None);
        let sc = cx.span().span_context().clone();
        assert!(sc.is_valid() && sc.is_remote());
        assert_eq!(
            sc.trace_id(),
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap()
        );
        assert_eq!(sc.span_id(), SpanId::from_hex("00f067aa0ba902b7").unwrap());
        assert_eq!(sc.trace_flags(), TraceFlags::SAMPLED);
        assert_eq!(traceparent_of(&cx).as_deref(), Some(TP));
        let unsampled = TP.replace("-01", "-00");
        assert_eq!(
            traceparent_of(&context_from_traceparent(&unsampled, None)).as_deref(),
            Some(unsampled.as_str())
        );
    }

    #[test]
    fn malformed_traceparents_are_ignored() {
        for bad in [
            "",
            "garbage",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-xyz92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            let cx = context_from_traceparent(bad, None);
            assert!(!cx.span().span_context().is_valid(), "{bad}");
            assert_eq!(traceparent_of(&cx), None, "{bad}");
        }
    }

    /// With the OpenTelemetry layer installed, as `telemetry::init` does.
    fn with_otel_layer(f: impl FnOnce()) {
        use opentelemetry::trace::TracerProvider as _;
        use tracing_subscriber::prelude::*;
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, f);
    }

    #[test]
    fn a_server_span_continues_the_callers_trace_and_clients_pass_it_on() {
        with_otel_layer(|| {
            let mut headers = http::HeaderMap::new();
            headers.insert(TRACEPARENT, TP.parse().unwrap());
            let span = server_span(
                "/recalloc.v1.Ingest/UpsertItems",
                context_from_headers(&headers),
            );
            let _entered = span.enter();
            let sent = current_traceparent();
            assert!(
                sent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
                "{sent}"
            );
            assert!(!sent.contains("00f067aa0ba902b7"), "a new span id: {sent}");
            let req = inject_current(tonic::Request::new(())).unwrap();
            assert_eq!(
                req.metadata().get(TRACEPARENT).unwrap().to_str().unwrap(),
                sent
            );

            // Without (or with a malformed) header: a new trace, not an error.
            let root = server_span("/x", context_from_traceparent("bogus", None));
            let sc = span_context(&root);
            assert!(sc.is_valid());
            assert_ne!(
                sc.trace_id(),
                TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap()
            );
        });
    }

    #[test]
    fn headers_extract_and_metadata_inject() {
        let mut headers = http::HeaderMap::new();
        headers.insert(TRACEPARENT, TP.parse().unwrap());
        headers.insert(TRACESTATE, "vendor=x".parse().unwrap());
        let cx = context_from_headers(&headers);
        assert_eq!(traceparent_of(&cx).as_deref(), Some(TP));
        assert_eq!(cx.span().span_context().trace_state().header(), "vendor=x");
        let mut md = tonic::metadata::MetadataMap::new();
        propagator().inject_context(&cx, &mut MetadataInjector(&mut md));
        assert_eq!(md.get(TRACEPARENT).unwrap().to_str().unwrap(), TP);
        assert_eq!(md.get(TRACESTATE).unwrap().to_str().unwrap(), "vendor=x");
        // Invalid header bytes are ignored, not an error.
        let mut bad = http::HeaderMap::new();
        bad.insert(
            TRACEPARENT,
            http::HeaderValue::from_bytes(b"00-\xff").unwrap(),
        );
        assert!(!context_from_headers(&bad).span().span_context().is_valid());
    }
}

//! One trace per flow: an ingest call's trace continues through the Kafka record's headers into
//! the featurizer and the embed worker (and so does a foreign producer's), and every process exports its spans over OTLP to a
//! collector (here a small in-test OTLP/gRPC server that keeps what it receives).

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use recalloc_integration_tests::{Cluster, free_port};
use recalloc_proto::v1::{Item, UpsertItemsRequest};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One span as the collector received it, ids in hex.
#[derive(Debug, Clone)]
struct Collected {
    service: String,
    name: String,
    kind: i32,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
}

#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Collected>>>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut out = self.spans.lock().unwrap();
        for rs in req.into_inner().resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref()?.value.as_ref())
                .map(|v| match v {
                    Value::StringValue(s) => s.clone(),
                    other => format!("{other:?}"),
                })
                .unwrap_or_default();
            for span in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
                out.push(Collected {
                    service: service.clone(),
                    name: span.name,
                    kind: span.kind,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                });
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Collector {
    async fn start() -> (Self, SocketAddr) {
        let collector = Self::default();
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let server = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve(addr);
        tokio::spawn(server);
        tokio::time::sleep(Duration::from_millis(200)).await;
        (collector, addr)
    }

    fn of_trace(&self, trace_id: &str) -> Vec<Collected> {
        let spans = self.spans.lock().unwrap();
        spans
            .iter()
            .filter(|s| s.trace_id == trace_id)
            .cloned()
            .collect()
    }

    /// Waits until `trace_id` has a consumer span from both the featurizer and the embed worker
    /// (each ends once its record is stored), then returns the trace's spans.
    async fn wait_for_consumers(&self, trace_id: &str, c: &Cluster) -> Vec<Collected> {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let spans = self.of_trace(trace_id);
            let consumed_by = |service: &str| {
                spans
                    .iter()
                    .any(|s| s.service == service && s.kind == SpanKind::Consumer as i32)
            };
            if consumed_by("recalloc-featurizer") && consumed_by("recalloc-embed") {
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "trace {trace_id} never reached both consumers; its spans: {spans:#?}\nall: {:#?}\nembed log:\n{}\nfeaturizer log:\n{}\nembed metrics:\n{}",
                self.spans.lock().unwrap(),
                c.embed.as_ref().map(|p| p.log()).unwrap_or_default(),
                c.featurizer.as_ref().map(|p| p.log()).unwrap_or_default(),
                recalloc_integration_tests::http_get(c.embed_http, "/metrics")
                    .map(|(_, m)| m)
                    .unwrap_or_default()
                    .lines()
                    .filter(|l| l.starts_with("recalloc_embed"))
                    .collect::<Vec<_>>()
                    .join("\n"),
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Checks the spans of one trace form one tree rooted at `root_parent` (empty: a new trace)
/// whose consumer spans are children of `producer_span` and returns the spans per service.
fn assert_one_tree(
    spans: &[Collected],
    root_parent: &str,
    producer_span: &str,
) -> BTreeMap<String, Vec<Collected>> {
    let ids: Vec<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    for s in spans {
        assert!(
            s.parent_span_id == root_parent || ids.contains(&s.parent_span_id.as_str()),
            "span {s:?} hangs off neither the caller's span nor a span of the trace: {spans:#?}"
        );
    }
    let mut by_service: BTreeMap<String, Vec<Collected>> = BTreeMap::new();
    for s in spans {
        by_service
            .entry(s.service.clone())
            .or_default()
            .push(s.clone());
    }
    for consumer in ["recalloc-featurizer", "recalloc-embed"] {
        let consumed: Vec<&Collected> = by_service[consumer]
            .iter()
            .filter(|s| s.kind == SpanKind::Consumer as i32)
            .collect();
        assert!(!consumed.is_empty(), "{consumer}: {spans:#?}");
        for s in consumed {
            assert_eq!(
                s.parent_span_id, producer_span,
                "{consumer}'s span is not a child of the producing span: {spans:#?}"
            );
            assert_eq!(s.name, "recalloc.items.v1 process");
        }
    }
    by_service
}

fn item(id: &str, title: &str) -> Item {
    Item {
        item_id: id.into(),
        title: title.into(),
        ..Default::default()
    }
}

fn upsert_with(traceparent: Option<&str>, items: Vec<Item>) -> tonic::Request<UpsertItemsRequest> {
    let mut req = tonic::Request::new(UpsertItemsRequest { items });
    if let Some(tp) = traceparent {
        req.metadata_mut()
            .insert("traceparent", tp.parse().unwrap());
    }
    req
}

/// Ingest's publish (producer) span under its server span `server`.
fn publish_span(spans: &[Collected], server: &str) -> Collected {
    spans
        .iter()
        .find(|s| {
            s.service == "recalloc-ingest"
                && s.kind == SpanKind::Producer as i32
                && s.parent_span_id == server
        })
        .cloned()
        .unwrap_or_else(|| panic!("no publish span under {server}: {spans:#?}"))
}

/// The ingest server span of a call, found by its parent (the caller's span or none).
fn server_span(spans: &[Collected], parent: &str) -> Collected {
    let server: Vec<&Collected> = spans
        .iter()
        .filter(|s| s.service == "recalloc-ingest" && s.kind == SpanKind::Server as i32)
        .collect();
    assert_eq!(server.len(), 1, "one ingest server span: {spans:#?}");
    let s = server[0].clone();
    assert_eq!(s.name, "recalloc.v1.Ingest/UpsertItems");
    assert_eq!(s.parent_span_id, parent, "{spans:#?}");
    s
}

#[tokio::test(flavor = "multi_thread")]
async fn a_records_path_through_ingest_featurizer_and_embed_is_one_trace() {
    let (collector, addr) = Collector::start().await;
    let mut c = Cluster::infra().unwrap();
    c.extra_env = vec![
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT".into(),
            format!("http://{addr}"),
        ),
        ("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()),
    ];
    c.start_ingest().unwrap();
    c.start_featurizer().unwrap();
    c.start_embed().unwrap();
    let mut ingest = c.grpc().await.unwrap();

    // 1. The caller's trace continues: ingest's span is a child of the caller's span, the
    //    consumers' spans children of ingest's.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let tp = format!("00-{trace_id}-{caller_span}-01");
    ingest
        .upsert_items(upsert_with(
            Some(&tp),
            vec![item("traced-1", "a book about whales")],
        ))
        .await
        .unwrap();
    let spans = collector.wait_for_consumers(trace_id, &c).await;
    let server = server_span(&spans, caller_span);
    // The records carry the publish span's context in their headers (OpenTelemetry's
    // messaging conventions): the consumers' spans are its children.
    let publish = publish_span(&spans, &server.span_id);
    assert_one_tree(&spans, caller_span, &publish.span_id);

    // 2. A call without a traceparent (or with a malformed one) starts one new trace that
    //    still spans the three processes.
    for (n, header) in [(2, None), (3, Some("00-not-a-traceparent"))] {
        let before: Vec<String> = collector
            .spans
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.trace_id.clone())
            .collect();
        ingest
            .upsert_items(upsert_with(
                header,
                vec![item(&format!("traced-{n}"), "a book about ships")],
            ))
            .await
            .unwrap_or_else(|e| panic!("traceparent {header:?}: {e}"));
        let deadline = Instant::now() + Duration::from_secs(30);
        let root = loop {
            let found = collector
                .spans
                .lock()
                .unwrap()
                .iter()
                .find(|s| {
                    s.service == "recalloc-ingest"
                        && s.kind == SpanKind::Server as i32
                        && !before.contains(&s.trace_id)
                })
                .cloned();
            if let Some(s) = found {
                break s;
            }
            assert!(Instant::now() < deadline, "no ingest span for call {n}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(root.parent_span_id, "", "call {n} starts a new trace");
        assert_ne!(root.trace_id, trace_id);
        let spans = collector.wait_for_consumers(&root.trace_id, &c).await;
        server_span(&spans, "");
        let publish = publish_span(&spans, &root.span_id);
        assert_one_tree(&spans, "", &publish.span_id);
    }

    // 3. A producer that is not ours (Python confluent-kafka) writes the W3C context in the
    //    record headers: the consumers continue that trace.
    let header_trace = "0af7651916cd43dd8448eb211c80319c";
    let header_span = "b7ad6b7169203331";
    c.python_producer(&format!(
        r#"
item = pb.ItemRecord(item=pb.Item(item_id="traced-4", title="a book about lighthouses"), updated_at_ms=1)
p.produce("recalloc.items.v1", key="traced-4", value=item.SerializeToString(),
          headers=[("traceparent", "00-{header_trace}-{header_span}-01"), ("tracestate", "vendor=python")])
"#
    ));
    let spans = collector.wait_for_consumers(header_trace, &c).await;
    assert_one_tree(&spans, header_span, header_span);

    // Every record reached Redis: featurized and embedded.
    let stats = ingest
        .get_stats(recalloc_proto::v1::GetStatsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!((stats.items, stats.embedded_items), (4, 4), "{stats:?}");
}

/// A collector that is down costs nothing but the spans: calls succeed and the service stops
/// cleanly (the shutdown flush is bounded).
#[tokio::test(flavor = "multi_thread")]
async fn a_collector_that_is_down_never_fails_a_call() {
    let mut c = Cluster::infra().unwrap();
    c.extra_env = vec![
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT".into(),
            format!("http://127.0.0.1:{}", free_port()),
        ),
        ("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()),
    ];
    c.start_ingest().unwrap();
    let mut ingest = c.grpc().await.unwrap();
    for n in 0..5 {
        ingest
            .upsert_items(upsert_with(None, vec![item(&format!("i{n}"), "t")]))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let proc = c.ingest.as_mut().unwrap();
    let started = Instant::now();
    let status = proc.terminate().expect("ingest exits");
    assert!(status.success(), "{status:?}\n{}", proc.log());
    assert!(started.elapsed() < Duration::from_secs(15));
    let log = proc.log();
    assert_eq!(
        log.matches("OTLP trace export failed").count(),
        1,
        "one warning per outage: {log}"
    );
}

/// Spans still queued when a service stops reach the collector: shutdown flushes them.
#[tokio::test(flavor = "multi_thread")]
async fn spans_queued_at_shutdown_are_flushed() {
    let (collector, addr) = Collector::start().await;
    let mut c = Cluster::infra().unwrap();
    c.extra_env = vec![
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT".into(),
            format!("http://{addr}"),
        ),
        // Nothing leaves on the timer during the test: only the shutdown flush can send it.
        ("OTEL_BSP_SCHEDULE_DELAY".into(), "600000".into()),
    ];
    c.start_ingest().unwrap();
    let mut ingest = c.grpc().await.unwrap();
    ingest
        .upsert_items(upsert_with(None, vec![item("flushed", "t")]))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(collector.spans.lock().unwrap().is_empty());
    let status = c
        .ingest
        .as_mut()
        .unwrap()
        .terminate()
        .expect("ingest exits");
    assert!(status.success(), "{status:?}");
    let spans = collector.spans.lock().unwrap().clone();
    assert!(
        spans
            .iter()
            .any(|s| s.service == "recalloc-ingest" && s.name == "recalloc.v1.Ingest/UpsertItems"),
        "{spans:#?}"
    );
}

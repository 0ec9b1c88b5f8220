use super::*;
use recalloc_common::config::ManagedDeployment;
use std::net::SocketAddr;
use std::sync::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What the test server answers next.
#[derive(Clone)]
struct Reply {
    status: u16,
    body: String,
    /// Wait this long before answering (`Duration::MAX`: never answer).
    delay: Duration,
}

/// A tiny HTTP/1.1 server: answers every request with the current [`Reply`] and records the
/// request targets.
struct Server {
    addr: SocketAddr,
    reply: Arc<Mutex<Reply>>,
    targets: Arc<Mutex<Vec<String>>>,
}

impl Server {
    async fn start(body: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let reply = Arc::new(Mutex::new(Reply {
            status: 200,
            body: body.into(),
            delay: Duration::ZERO,
        }));
        let targets = Arc::new(Mutex::new(Vec::new()));
        let (r, t) = (reply.clone(), targets.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
                    return;
                };
                let (r, t) = (r.clone(), t.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&buf).into_owned();
                    let target = head.split(' ').nth(1).unwrap_or("").to_owned();
                    t.lock().unwrap().push(target);
                    let reply = r.lock().unwrap().clone();
                    if reply.delay == Duration::MAX {
                        std::future::pending::<()>().await;
                    }
                    tokio::time::sleep(reply.delay).await;
                    let response = format!(
                        "HTTP/1.1 {} X\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
                         Connection: close\r\n\r\n{}",
                        reply.status,
                        reply.body.len(),
                        reply.body
                    );
                    let _ = conn.write_all(response.as_bytes()).await;
                    let _ = conn.shutdown().await;
                });
            }
        });
        Self {
            addr,
            reply,
            targets,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/metrics", self.addr)
    }

    fn set(&self, status: u16, body: &str) {
        let mut r = self.reply.lock().unwrap();
        r.status = status;
        r.body = body.into();
    }

    fn set_delay(&self, delay: Duration) {
        self.reply.lock().unwrap().delay = delay;
    }

    fn targets(&self) -> Vec<String> {
        self.targets.lock().unwrap().clone()
    }
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn deployment(name: &str, signal: Signal) -> ManagedDeployment {
    ManagedDeployment {
        name: name.into(),
        signal,
        ..ManagedDeployment::default()
    }
}

fn rate(url: &str, metric: &str, l: &[(&str, &str)]) -> Signal {
    Signal::MetricsRate {
        url: url.into(),
        metric: metric.into(),
        labels: labels(l),
    }
}

fn gauge(url: &str, metric: &str, l: &[(&str, &str)]) -> Signal {
    Signal::MetricsGauge {
        url: url.into(),
        metric: metric.into(),
        labels: labels(l),
    }
}

fn config(deployments: Vec<ManagedDeployment>, prometheus_url: &str) -> SchedulerConfig {
    SchedulerConfig {
        deployments,
        prometheus_url: prometheus_url.into(),
        ..SchedulerConfig::default()
    }
}

fn collector(signals: Vec<Signal>) -> Collector {
    let deployments = signals
        .into_iter()
        .enumerate()
        .map(|(i, s)| deployment(&format!("d{i}"), s))
        .collect();
    Collector::new(&config(deployments, ""), "").unwrap()
}

/// The single deployment's reading.
async fn read_one(c: &mut Collector, now: Instant) -> Result<Option<f64>, CollectError> {
    let mut all = c.read_all(now).await;
    assert_eq!(all.len(), 1);
    all.pop().unwrap().1
}

fn counter_text(rank: u64, embed: u64) -> String {
    format!(
        "# HELP recalloc_grpc_requests_total gRPC calls.\n\
         # TYPE recalloc_grpc_requests_total counter\n\
         recalloc_grpc_requests_total{{code=\"OK\",service=\"recalloc.v1.Ranker\"}} {rank}\n\
         recalloc_grpc_requests_total{{code=\"UNAVAILABLE\",service=\"recalloc.v1.Ranker\"}} 0\n\
         recalloc_grpc_requests_total{{code=\"OK\",service=\"recalloc.v1.Embedder\"}} {embed}\n"
    )
}

const RANK: [(&str, &str); 1] = [("service", "recalloc.v1.Ranker")];
const REQUESTS: &str = "recalloc_grpc_requests_total";

#[tokio::test]
async fn metrics_rate_is_the_matching_counters_increase_per_second() {
    let server = Server::start(&counter_text(100, 5000)).await;
    let mut c = collector(vec![rate(&server.url(), REQUESTS, &RANK)]);
    let t0 = Instant::now();
    assert_eq!(read_one(&mut c, t0).await.unwrap(), None, "first reading");
    server.set(200, &counter_text(160, 9000));
    let t1 = t0 + Duration::from_secs(30);
    assert_eq!(read_one(&mut c, t1).await.unwrap(), Some(2.0));
    // No time passed: no rate, and the previous point stays.
    server.set(200, &counter_text(170, 9000));
    assert_eq!(read_one(&mut c, t1).await.unwrap(), None);
    let t2 = t1 + Duration::from_secs(5);
    assert_eq!(read_one(&mut c, t2).await.unwrap(), Some(2.0));
    // Without labels every series counts (the embedder's too).
    let mut all = collector(vec![rate(&server.url(), REQUESTS, &[])]);
    assert_eq!(read_one(&mut all, t0).await.unwrap(), None);
    server.set(200, &counter_text(180, 9090));
    let r = read_one(&mut all, t0 + Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(r, Some(10.0));
    assert!(server.targets().iter().all(|t| t == "/metrics"));
}

#[tokio::test]
async fn a_counter_reset_counts_the_new_value() {
    let server = Server::start(&counter_text(1000, 0)).await;
    let mut c = collector(vec![rate(&server.url(), REQUESTS, &RANK)]);
    let t0 = Instant::now();
    assert_eq!(read_one(&mut c, t0).await.unwrap(), None);
    // The process restarted and has served 40 calls since.
    server.set(200, &counter_text(40, 0));
    let r = read_one(&mut c, t0 + Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(r, Some(2.0));
    server.set(200, &counter_text(100, 0));
    let r = read_one(&mut c, t0 + Duration::from_secs(40))
        .await
        .unwrap();
    assert_eq!(r, Some(3.0));
}

#[tokio::test]
async fn metrics_gauge_is_the_sum_of_the_matching_series() {
    let server = Server::start(
        "queue_depth{queue=\"a\",shard=\"0\"} 3\nqueue_depth{queue=\"a\",shard=\"1\"} 4.5\n\
         queue_depth{queue=\"b\",shard=\"0\"} 100\n",
    )
    .await;
    let mut c = collector(vec![
        gauge(&server.url(), "queue_depth", &[("queue", "a")]),
        gauge(&server.url(), "queue_depth", &[]),
        gauge(
            &server.url(),
            "queue_depth",
            &[("queue", "a"), ("shard", "1")],
        ),
    ]);
    let got: Vec<_> = c
        .read_all(Instant::now())
        .await
        .into_iter()
        .map(|(name, r)| (name, r.unwrap()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("d0".to_string(), Some(7.5)),
            ("d1".to_string(), Some(107.5)),
            ("d2".to_string(), Some(4.5)),
        ]
    );
    server.set(200, "queue_depth{queue=\"a\"} NaN\n");
    let mut c = collector(vec![gauge(&server.url(), "queue_depth", &[])]);
    let e = read_one(&mut c, Instant::now()).await.unwrap_err();
    assert!(matches!(e, CollectError::NotFinite { .. }), "{e}");
}

#[tokio::test]
async fn a_missing_series_is_no_series_and_failures_keep_the_previous_point() {
    // A gauge without its series is an error naming the metric.
    let server = Server::start("other_total 1\n").await;
    let mut g = collector(vec![gauge(&server.url(), "queue_depth", &[])]);
    let e = read_one(&mut g, Instant::now()).await.unwrap_err();
    match &e {
        CollectError::NoSeries { url, metric } => {
            assert_eq!(url, &server.url());
            assert_eq!(metric, "queue_depth");
        }
        other => panic!("{other}"),
    }
    assert!(e.to_string().contains("queue_depth"), "{e}");
    // A counter without its series has not counted anything yet: it reads 0.
    let mut c = collector(vec![rate(&server.url(), REQUESTS, &RANK)]);
    let t0 = Instant::now();
    assert_eq!(read_one(&mut c, t0).await.unwrap(), None);
    server.set(200, &counter_text(100, 0));
    let r = read_one(&mut c, t0 + Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(r, Some(10.0));
    // A failed reading changes nothing; the next success measures from the last good one.
    server.set(500, "down");
    assert!(
        read_one(&mut c, t0 + Duration::from_secs(20))
            .await
            .is_err()
    );
    server.set(200, &counter_text(130, 0));
    let r = read_one(&mut c, t0 + Duration::from_secs(40))
        .await
        .unwrap();
    assert_eq!(r, Some(1.0));
}

#[tokio::test]
async fn http_errors_status_errors_and_bad_text() {
    let server = Server::start("boom").await;
    server.set(500, "internal error");
    let mut c = collector(vec![gauge(&server.url(), "x", &[])]);
    let e = read_one(&mut c, Instant::now()).await.unwrap_err();
    match &e {
        CollectError::Status { url, status } => {
            assert_eq!((url.as_str(), *status), (server.url().as_str(), 500));
        }
        other => panic!("{other}"),
    }
    server.set(200, "x 1\nx{a=\"1\" 2\n");
    let e = read_one(&mut c, Instant::now()).await.unwrap_err();
    match &e {
        CollectError::Parse { url, source } => {
            assert_eq!(url, &server.url());
            assert_eq!(source.line, 2);
        }
        other => panic!("{other}"),
    }
    assert!(e.to_string().contains("line 2"), "{e}");

    // A port nobody listens on.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let url = format!("http://{addr}/metrics");
    let mut c = collector(vec![gauge(&url, "x", &[])]);
    let e = read_one(&mut c, Instant::now()).await.unwrap_err();
    match &e {
        CollectError::Http { url: u, reason } => {
            assert_eq!(u, &url);
            assert!(!reason.is_empty());
        }
        other => panic!("{other}"),
    }
    assert!(e.to_string().contains(&addr.to_string()), "{e}");
}

#[tokio::test]
async fn a_silent_endpoint_times_out() {
    let server = Server::start("x 1\n").await;
    server.set_delay(Duration::MAX);
    let mut c = collector(vec![gauge(&server.url(), "x", &[])]);
    let started = Instant::now();
    let e = read_one(&mut c, Instant::now()).await.unwrap_err();
    let took = started.elapsed();
    assert!(matches!(e, CollectError::Http { .. }), "{e}");
    assert!(e.to_string().contains("within 5s"), "{e}");
    assert!(
        took >= TIMEOUT && took < TIMEOUT + Duration::from_secs(2),
        "{took:?}"
    );
}

#[tokio::test]
async fn deployments_are_read_concurrently_in_config_order() {
    let slow = Server::start("x 1\n").await;
    slow.set_delay(Duration::from_millis(400));
    let fast = Server::start("x 2\n").await;
    let mut c = collector(vec![
        gauge(&slow.url(), "x", &[]),
        gauge(&fast.url(), "x", &[]),
        gauge(&slow.url(), "x", &[]),
        gauge(&slow.url(), "x", &[]),
    ]);
    assert_eq!(c.names().collect::<Vec<_>>(), vec!["d0", "d1", "d2", "d3"]);
    let started = Instant::now();
    let got = c.read_all(Instant::now()).await;
    let took = started.elapsed();
    let values: Vec<_> = got
        .iter()
        .map(|(n, r)| (n.as_str(), *r.as_ref().unwrap()))
        .collect();
    assert_eq!(
        values,
        vec![
            ("d0", Some(1.0)),
            ("d1", Some(2.0)),
            ("d2", Some(1.0)),
            ("d3", Some(1.0))
        ]
    );
    assert!(
        took < Duration::from_millis(1100),
        "{took:?}: not concurrent"
    );
}

#[tokio::test]
async fn reads_a_recalloc_service_metrics_endpoint() {
    use recalloc_common::{Metrics, Readiness};
    let metrics = Metrics::new();
    let (addr, serve) = recalloc_common::http::serve(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        metrics.clone(),
        Readiness::new(None, &[]),
        std::future::pending(),
    )
    .await
    .unwrap();
    tokio::spawn(serve);
    let labels = [("method", "/recalloc.v1.Ranker/Rank"), ("code", "OK")];
    metrics.inc_counter("recalloc_test_calls_total", "calls", &labels, 7);
    let url = format!("http://{addr}/metrics");
    let mut c = collector(vec![rate(
        &url,
        "recalloc_test_calls_total",
        &[("code", "OK")],
    )]);
    let t0 = Instant::now();
    assert_eq!(read_one(&mut c, t0).await.unwrap(), None);
    metrics.inc_counter("recalloc_test_calls_total", "calls", &labels, 50);
    let r = read_one(&mut c, t0 + Duration::from_secs(25))
        .await
        .unwrap();
    assert_eq!(r, Some(2.0));
}

fn prometheus_collector(server: &Server, query: &str) -> Collector {
    let cfg = config(
        vec![deployment(
            "p",
            Signal::Prometheus {
                query: query.into(),
            },
        )],
        &format!("http://{}/", server.addr),
    );
    Collector::new(&cfg, "").unwrap()
}

#[tokio::test]
async fn prometheus_vector_scalar_and_errors() {
    let query = "sum by (pod) (rate(http_requests_total{job=\"web\"}[1m])) + 1";
    let server = Server::start(
        r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"pod":"a"},"value":[1700000000.123,"2.5"]},
            {"metric":{"pod":"b"},"value":[1700000000.123,"4"]}]}}"#,
    )
    .await;
    let mut c = prometheus_collector(&server, query);
    assert_eq!(read_one(&mut c, Instant::now()).await.unwrap(), Some(6.5));
    assert_eq!(
        server.targets()[0],
        "/api/v1/query?query=sum%20by%20%28pod%29%20%28rate%28http_requests_total\
         %7Bjob%3D%22web%22%7D%5B1m%5D%29%29%20%2B%201"
    );

    server.set(
        200,
        r#"{"status":"success","data":{"resultType":"scalar","result":[1700000000,"1e3"]}}"#,
    );
    assert_eq!(
        read_one(&mut c, Instant::now()).await.unwrap(),
        Some(1000.0)
    );

    // Prometheus answers a bad query with 400 and a JSON error.
    server.set(
        400,
        r#"{"status":"error","errorType":"bad_data","error":"invalid parameter \"query\": 1:5: parse error"}"#,
    );
    let e = read_one(&mut c, Instant::now()).await.unwrap_err();
    match &e {
        CollectError::Prometheus { query: q, reason } => {
            assert_eq!(q, query);
            assert!(reason.contains("bad_data: invalid parameter"), "{reason}");
        }
        other => panic!("{other}"),
    }
    assert!(e.to_string().contains("http_requests_total"), "{e}");

    let failures = [
        (
            200,
            r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#,
            "no series",
        ),
        (
            200,
            r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#,
            "result type matrix",
        ),
        (
            200,
            r#"{"status":"success","data":{"resultType":"scalar","result":[1,"x"]}}"#,
            "malformed sample value",
        ),
        (
            200,
            r#"{"status":"success","data":{"resultType":"scalar","result":[1,"NaN"]}}"#,
            "not a finite number",
        ),
        (200, "<html>", "not JSON"),
        (502, "bad gateway", "HTTP status 502"),
    ];
    for (status, body, what) in failures {
        server.set(status, body);
        let e = read_one(&mut c, Instant::now()).await.unwrap_err();
        let shown = e.to_string();
        assert!(shown.contains(what), "{body}: {shown}");
        assert!(shown.contains("http_requests_total"), "{body}: {shown}");
    }

    // An unreachable Prometheus names the query too.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let cfg = config(
        vec![deployment("p", Signal::Prometheus { query: "up".into() })],
        &format!("http://{addr}"),
    );
    let mut c = Collector::new(&cfg, "").unwrap();
    let e = read_one(&mut c, Instant::now()).await.unwrap_err();
    assert!(
        matches!(&e, CollectError::Prometheus { query, .. } if query == "up"),
        "{e}"
    );
}

#[test]
fn configuration_errors_are_found_by_new() {
    let not_configured = |cfg: SchedulerConfig, brokers: &str| match Collector::new(&cfg, brokers) {
        Err(CollectError::NotConfigured(m)) => m,
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("accepted"),
    };
    let prom = deployment("p", Signal::Prometheus { query: "up".into() });
    let m = not_configured(config(vec![prom.clone()], ""), "");
    assert!(m.contains("scheduler.prometheus_url"), "{m}");
    assert!(m.contains("deployment p"), "{m}");
    let m = not_configured(config(vec![prom.clone()], "prometheus:9090"), "");
    assert!(m.contains("scheduler.prometheus_url"), "{m}");
    assert!(Collector::new(&config(vec![prom], "http://prometheus:9090/"), "").is_ok());

    let https = deployment("w", gauge("https://x:1/metrics", "m", &[]));
    let m = not_configured(config(vec![https], ""), "");
    assert!(m.contains("deployment w") && m.contains("http://"), "{m}");
    let junk = deployment("w", rate("not a url", "m", &[]));
    assert!(not_configured(config(vec![junk], ""), "").contains("not a URL"));

    let lag = |drain_seconds| {
        deployment(
            "f",
            Signal::KafkaLag {
                group: "g".into(),
                topic: "t".into(),
                drain_seconds,
            },
        )
    };
    let m = not_configured(config(vec![lag(0)], ""), "127.0.0.1:9092");
    assert!(m.contains("drain_seconds"), "{m}");
    let m = not_configured(config(vec![lag(60)], ""), " ");
    assert!(m.contains("kafka.brokers"), "{m}");
    // The default config (two metrics rates and a kafka lag) is valid; creating the
    // consumer does not connect.
    let c = Collector::new(&SchedulerConfig::default(), "127.0.0.1:9092").unwrap();
    assert_eq!(
        c.names().collect::<Vec<_>>(),
        ["recalloc-rank", "recalloc-embed", "recalloc-featurizer"]
    );
}

#[test]
fn produced_records_count_watermark_increases_resets_and_not_new_partitions() {
    let before = BTreeMap::from([(0, 100), (1, 50)]);
    let now = BTreeMap::from([(0, 130), (1, 20), (2, 999)]);
    // 30 on partition 0, 20 on the recreated partition 1, nothing for the new partition 2.
    assert_eq!(produced_since(&before, &now), 50);
    assert_eq!(produced_since(&before, &before), 0);
}

#[test]
fn url_encoding_keeps_only_unreserved_characters() {
    assert_eq!(url_encode("aZ09-._~"), "aZ09-._~");
    assert_eq!(url_encode("a b/c?d=e&f+g%"), "a%20b%2Fc%3Fd%3De%26f%2Bg%25");
    assert_eq!(url_encode("é"), "%C3%A9");
}

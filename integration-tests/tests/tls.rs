//! TLS with client certificates (mTLS) on every gRPC server, with certificates made at test
//! time: the cluster's own client gets in (writes, reads, health, reflection, the CLI); a plain
//! client, a client with a foreign CA's certificate, a client without a certificate and a
//! client that does not trust the servers' CA are all refused, and nothing they sent is
//! recorded. A broken TLS file stops a server at startup with the key and the file named.
//!
//! A refusal is proven by what the server did not do — no gRPC status came from the service,
//! its request counter did not move, nothing was recorded — never by the wording of the
//! client's error, which depends on timing (whether the client reads the server's alert or
//! first finds the connection closed).

use recalloc_common::config::SecurityConfig;
use recalloc_integration_tests::pki::Pki;
use recalloc_integration_tests::{Cluster, free_port, http_get, reflected_services_on, wait_ready};
use recalloc_proto::v1::ingest_client::IngestClient;
use recalloc_proto::v1::{Event, EventKind, GetStatsRequest, RecordEventsRequest};
use std::net::SocketAddr;
use std::time::Duration;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

fn events(prefix: &str, n: usize) -> RecordEventsRequest {
    RecordEventsRequest {
        events: (0..n)
            .map(|i| Event {
                event_id: format!("{prefix}-{i}"),
                user_id: format!("{prefix}-u{}", i % 4),
                item_id: format!("i{}", i % 5),
                kind: EventKind::Purchase as i32,
                ..Default::default()
            })
            .collect(),
    }
}

/// What came of one attempt to record events.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// The service answered: accepted this many.
    Accepted(u32),
    /// The service answered with a status (it saw the call).
    Answered(tonic::Code),
    /// No answer from the service: the connection failed or was closed under the call (a
    /// refusal below gRPC). The text is for the failure message only.
    NoAnswer(String),
}

/// Records `events(prefix, 5)` at `addr` as a client with `security`.
async fn try_record(addr: SocketAddr, security: &SecurityConfig, prefix: &str) -> Outcome {
    let endpoint = match recalloc_common::tls::endpoint(&addr.to_string(), security) {
        Ok(e) => e
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(5)),
        Err(e) => return Outcome::NoAnswer(e.to_string()),
    };
    let channel = match endpoint.connect().await {
        Ok(c) => c,
        Err(e) => return Outcome::NoAnswer(recalloc_common::tls::error_chain(&e)),
    };
    match IngestClient::new(channel)
        .record_events(events(prefix, 5))
        .await
    {
        Ok(r) => Outcome::Accepted(r.into_inner().accepted),
        Err(s) => answered_or_not(&s),
    }
}

/// A status the client made itself from a transport failure carries that failure as its
/// source; one the service sent (grpc-status) has none.
fn answered_or_not(s: &tonic::Status) -> Outcome {
    match std::error::Error::source(s) {
        Some(cause) => {
            Outcome::NoAnswer(format!("{s}: {}", recalloc_common::tls::error_chain(cause)))
        }
        None => Outcome::Answered(s.code()),
    }
}

/// A refused attempt: no answer from the service.
fn assert_no_answer(outcome: &Outcome, who: &str) {
    assert!(
        matches!(outcome, Outcome::NoAnswer(_)),
        "{who} must get no answer from the service, got {outcome:?}"
    );
}

/// Calls of `method` the server's gRPC layers saw, whatever their status (from its
/// `/metrics`): a client refused by TLS never reaches them.
fn calls_seen(http: SocketAddr, method: &str) -> u64 {
    let (status, body) = http_get(http, "/metrics").unwrap();
    assert_eq!(status, 200, "{body}");
    let prefix = format!("recalloc_grpc_requests_total{{method=\"{method}\",");
    body.lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

const RECORD_EVENTS: &str = "/recalloc.v1.Ingest/RecordEvents";
const GET_STATS: &str = "/recalloc.v1.Ingest/GetStats";

fn stats_events(c: &Cluster) -> String {
    let out = c.cli(&["stats"]).unwrap();
    assert!(
        out.status.success(),
        "recalloc stats over mTLS: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["events"].to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn mutual_tls_admits_the_cluster_identity_and_refuses_everyone_else() {
    let mut c = Cluster::infra().unwrap();
    let pki = Pki::generate(&c.dir.path().join("pki")).unwrap();
    c.extra_env.extend(pki.env());
    c.start_ingest().unwrap();
    c.start_featurizer().unwrap();
    c.start_rank().unwrap();
    c.start_embed().unwrap();
    let (sched_grpc, sched_http) = (
        SocketAddr::from(([127, 0, 0, 1], free_port())),
        SocketAddr::from(([127, 0, 0, 1], free_port())),
    );
    let mut scheduler = c
        .spawn_with(
            "scheduler",
            "recalloc-scheduler",
            &[
                ("RECALLOC_SCHEDULER_MODE", "dry_run"),
                ("RECALLOC_SCHEDULER_GRPC_ADDR", &sched_grpc.to_string()),
                ("RECALLOC_SCHEDULER_METRICS_ADDR", &sched_http.to_string()),
            ],
        )
        .unwrap();
    wait_ready(sched_http, &mut scheduler, Duration::from_secs(30)).unwrap();

    // Every server: health and reflection answer over TLS with the cluster's client identity,
    // and a plain-text client gets nothing from any of them.
    let servers = [
        (c.ingest_grpc, "recalloc.v1.Ingest"),
        (c.embed_grpc, "recalloc.v1.Embedder"),
        (c.rank_grpc, "recalloc.v1.Ranker"),
        (sched_grpc, "recalloc.v1.Scheduler"),
    ];
    for (addr, service) in servers {
        let channel = c.channel(addr).await.unwrap();
        let health = HealthClient::new(channel.clone())
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap_or_else(|s| panic!("health of {service} over mTLS: {s:?}"))
            .into_inner();
        assert_eq!(health.status, ServingStatus::Serving as i32, "{service}");
        let listed = reflected_services_on(channel).await.unwrap();
        assert!(
            listed.contains(&service.to_owned()),
            "{service}: {listed:?}"
        );
        let plain = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .timeout(Duration::from_secs(5))
            .connect()
            .await;
        if let Ok(plain) = plain {
            let refused = HealthClient::new(plain)
                .check(HealthCheckRequest {
                    service: service.into(),
                })
                .await;
            match refused {
                Ok(r) => panic!("{service} answered plain text: {r:?}"),
                Err(s) => assert_no_answer(&answered_or_not(&s), "a plain-text client"),
            }
        }
    }

    // The cluster's identity writes and reads, through a generated client and the CLI.
    let right = c.security().unwrap();
    assert_eq!(
        try_record(c.ingest_grpc, &right, "ok").await,
        Outcome::Accepted(5)
    );
    let mut con = c.redis_con().await.unwrap();
    recalloc_integration_tests::wait_events(&mut con, 5, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(stats_events(&c), "5");
    assert_eq!(calls_seen(c.ingest_http, RECORD_EVENTS), 1);
    let stats_calls = calls_seen(c.ingest_http, GET_STATS);

    // Everyone else is refused, each for its own reason; none of them reaches the service.
    let plain = SecurityConfig::default();
    assert_no_answer(
        &try_record(c.ingest_grpc, &plain, "plain").await,
        "a plain-text client",
    );
    let foreign = SecurityConfig {
        tls_client_cert_file: pki.foreign_client.cert.display().to_string(),
        tls_client_key_file: pki.foreign_client.key.display().to_string(),
        ..right.clone()
    };
    assert_no_answer(
        &try_record(c.ingest_grpc, &foreign, "foreign").await,
        "a client with a foreign CA's certificate",
    );
    let anonymous = SecurityConfig {
        tls_client_cert_file: String::new(),
        tls_client_key_file: String::new(),
        ..right.clone()
    };
    assert_no_answer(
        &try_record(c.ingest_grpc, &anonymous, "anonymous").await,
        "a client without a certificate",
    );
    let distrustful = SecurityConfig {
        tls_ca_file: pki.foreign_ca.display().to_string(),
        ..right.clone()
    };
    // Refused by the client itself, before it sends anything: its own verdict, not a race.
    match try_record(c.ingest_grpc, &distrustful, "distrust").await {
        Outcome::NoAnswer(err) => assert!(
            err.contains("invalid peer certificate: UnknownIssuer"),
            "{err}"
        ),
        other => panic!("a client that does not trust the servers' CA got {other:?}"),
    }

    // The CLI is refused the same way, with the reason in its message.
    let out = c
        .cli_command(&["stats"])
        .env("RECALLOC_SECURITY_TLS_CA_FILE", &pki.foreign_ca)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("UnknownIssuer"),
        "{err}"
    );
    let out = c
        .cli_command(&["stats"])
        .env("RECALLOC_SECURITY_TLS_CLIENT_CERT_FILE", "")
        .env("RECALLOC_SECURITY_TLS_CLIENT_KEY_FILE", "")
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "the CLI without a certificate: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    // The server's layers saw none of the refused calls.
    assert_eq!(calls_seen(c.ingest_http, RECORD_EVENTS), 1);
    assert_eq!(calls_seen(c.ingest_http, GET_STATS), stats_calls);

    // Nothing the refused clients sent was recorded: after one more accepted write has been
    // applied and the state has settled, exactly the accepted events are there.
    assert_eq!(
        try_record(c.ingest_grpc, &right, "marker").await,
        Outcome::Accepted(5)
    );
    assert_eq!(calls_seen(c.ingest_http, RECORD_EVENTS), 2);
    recalloc_integration_tests::wait_events(&mut con, 10, Duration::from_secs(30))
        .await
        .unwrap();
    recalloc_integration_tests::wait_quiet(&mut con, Duration::from_secs(30))
        .await
        .unwrap();
    let stats = c
        .grpc()
        .await
        .unwrap()
        .get_stats(GetStatsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.events, 10, "{stats:?}");
    assert_eq!(stats_events(&c), "10");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_tls_file_stops_the_server_naming_key_and_file() {
    let c = Cluster::infra().unwrap();
    let pki = Pki::generate(&c.dir.path().join("pki")).unwrap();
    let cert = pki.server.cert.display().to_string();
    for (key, value, expect) in [
        (
            "RECALLOC_SECURITY_TLS_KEY_FILE",
            "/no/such/tls.key",
            "/no/such/tls.key",
        ),
        // A certificate where the key belongs.
        (
            "RECALLOC_SECURITY_TLS_KEY_FILE",
            cert.as_str(),
            "private key",
        ),
    ] {
        let mut p = c
            .spawn_with(
                "ingest",
                "recalloc-ingest",
                &[("RECALLOC_SECURITY_TLS_CERT_FILE", &cert), (key, value)],
            )
            .unwrap();
        let end = std::time::Instant::now() + Duration::from_secs(20);
        while p.is_running() && std::time::Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(!p.is_running(), "ingest kept running with {key}={value}");
        let log = p.log();
        assert!(log.contains("security.tls_key_file"), "{log}");
        assert!(log.contains(value) && log.contains(expect), "{log}");
    }
}

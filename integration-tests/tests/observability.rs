//! What operators read: every process's `/metrics` passes `promtool check metrics` (the
//! Prometheus linter, Debian package `prometheus`) after real traffic, and every gRPC server
//! lists exactly its services through reflection.

use std::process::{Command, Stdio};
use std::time::Duration;

use recalloc_integration_tests::{Cluster, free_port, http_get, reflected_services, wait_ready};
use recalloc_proto::v1::{
    EmbedRequest, Event, EventKind, GetPlanRequest, RecommendRequest, RecordEventsRequest,
};

/// Runs `promtool check metrics` on `text`; the linter's complaints on failure.
fn promtool_check(text: &str) -> Result<(), String> {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            format!(
                "promtool not runnable ({e}): deploy/local/install.sh installs it (apt prometheus)"
            )
        })?;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() && said.trim().is_empty() {
        Ok(())
    } else {
        Err(said)
    }
}

#[test]
fn promtool_rejects_a_broken_exposition() {
    // The check itself can fail: an unterminated label value and a counter without _total.
    assert!(promtool_check("x_total{a=\"b\" 1\n").is_err());
    assert!(promtool_check("# TYPE requests counter\nrequests 1\n").is_err());
    assert!(promtool_check("# HELP ok_total fine\n# TYPE ok_total counter\nok_total 1\n").is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metrics_endpoint_lints_clean_and_reflection_lists_every_service() {
    let mut c = Cluster::start().unwrap();
    c.start_embed().unwrap();
    c.start_rank().unwrap();
    let (sched_grpc, sched_http) = (free_port(), free_port());
    let mut scheduler = c
        .spawn_with(
            "scheduler",
            "recalloc-scheduler",
            &[
                ("RECALLOC_SCHEDULER_MODE", "dry_run"),
                ("RECALLOC_SCHEDULER_TICK_SECONDS", "1"),
                (
                    "RECALLOC_SCHEDULER_GRPC_ADDR",
                    &format!("127.0.0.1:{sched_grpc}"),
                ),
                (
                    "RECALLOC_SCHEDULER_METRICS_ADDR",
                    &format!("127.0.0.1:{sched_http}"),
                ),
            ],
        )
        .unwrap();
    let sched_http = format!("127.0.0.1:{sched_http}").parse().unwrap();
    wait_ready(sched_http, &mut scheduler, Duration::from_secs(30)).unwrap();

    // Traffic, including calls that fail, so every family has series with labels.
    let mut ingest = c.grpc().await.unwrap();
    let events = (0..50)
        .map(|i| Event {
            user_id: format!("u{}", i % 7),
            item_id: format!("i{}", i % 11),
            kind: EventKind::Click as i32,
            ..Default::default()
        })
        .collect();
    ingest
        .record_events(RecordEventsRequest { events })
        .await
        .unwrap();
    let bad = Event {
        user_id: String::new(),
        item_id: "i1".into(),
        kind: EventKind::Click as i32,
        ..Default::default()
    };
    assert!(
        ingest
            .record_events(RecordEventsRequest { events: vec![bad] })
            .await
            .is_err()
    );
    let mut embed = c.embed_client().await.unwrap();
    embed
        .embed(EmbedRequest {
            texts: vec!["a book about whales".into()],
        })
        .await
        .unwrap();
    let mut rank = c.rank_client().await.unwrap();
    let _ = rank
        .recommend(RecommendRequest {
            user_id: "u1".into(),
            k: 3,
            ..Default::default()
        })
        .await;
    let mut plans = recalloc_proto::v1::scheduler_client::SchedulerClient::connect(format!(
        "http://127.0.0.1:{sched_grpc}"
    ))
    .await
    .unwrap();
    let _ = plans.get_plan(GetPlanRequest::default()).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    for (name, addr, family) in [
        ("ingest", c.ingest_http, "recalloc_grpc_requests_total"),
        (
            "featurizer",
            c.featurizer_http,
            "recalloc_featurizer_consumer_lag",
        ),
        ("embed", c.embed_http, "recalloc_embed_texts_total"),
        (
            "rank",
            c.rank_http,
            "recalloc_grpc_request_duration_seconds",
        ),
        (
            "scheduler",
            sched_http,
            "recalloc_scheduler_planned_replicas",
        ),
    ] {
        // A consumer reports its lag every 2 s, from its first assignment on: wait for it.
        let end = std::time::Instant::now() + Duration::from_secs(15);
        let text = loop {
            let (status, text) = http_get(addr, "/metrics").unwrap();
            assert_eq!(status, 200, "{name}");
            if text.contains(family) || std::time::Instant::now() > end {
                break text;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        assert!(text.contains(family), "{name} lacks {family}:\n{text}");
        if let Err(e) = promtool_check(&text) {
            panic!("{name}'s /metrics fails promtool check metrics:\n{e}\n---\n{text}");
        }
    }

    let base = [
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    ];
    for (addr, own) in [
        (c.ingest_grpc, vec!["recalloc.v1.Ingest"]),
        (c.embed_grpc, vec!["recalloc.v1.Embedder"]),
        (c.rank_grpc, vec!["recalloc.v1.Ranker"]),
        (
            format!("127.0.0.1:{sched_grpc}").parse().unwrap(),
            vec!["externalscaler.ExternalScaler", "recalloc.v1.Scheduler"],
        ),
    ] {
        let mut want: Vec<String> = base.iter().chain(&own).map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(reflected_services(addr).await.unwrap(), want, "{own:?}");
    }
    let status = scheduler.terminate().expect("scheduler stops on SIGTERM");
    assert!(status.success(), "{status:?}");
}

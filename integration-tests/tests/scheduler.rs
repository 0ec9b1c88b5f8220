//! The scheduler against the real broker and real services: consumer-group lag read through
//! librdkafka, and the `recalloc-scheduler` binary in dry-run mode planning the featurizer
//! (by its lag) and ingest (by its request rate), answering GetPlan and KEDA.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use recalloc_common::config::{ManagedDeployment, SchedulerConfig, Signal};
use recalloc_integration_tests::{Cluster, free_port, http_get, wait_ready};
use recalloc_proto::externalscaler as keda;
use recalloc_scheduler::collect::{CollectError, Collector};

fn deployment(name: &str, signal: Signal) -> ManagedDeployment {
    ManagedDeployment {
        name: name.into(),
        signal,
        ..ManagedDeployment::default()
    }
}

fn config(deployments: Vec<ManagedDeployment>) -> SchedulerConfig {
    SchedulerConfig {
        deployments,
        ..SchedulerConfig::default()
    }
}

/// Consumer-group lag against the real broker: the first reading is the backlog alone, the
/// next adds the produce rate; a missing topic is an error naming topic and group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_lag_is_produce_rate_plus_backlog() {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::consumer::CommitMode;
    use rdkafka::producer::{FutureProducer, FutureRecord};

    let cluster = Cluster::infra().unwrap();
    let brokers = cluster.brokers();
    let unique = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let topic = format!("recalloc-scheduler-test-{unique}");
    let group = format!("recalloc-scheduler-test-{unique}");

    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let created = admin
        .create_topics(
            &[NewTopic::new(&topic, 2, TopicReplication::Fixed(1))],
            &opts,
        )
        .await
        .unwrap();
    assert!(created.iter().all(|r| r.is_ok()), "{created:?}");

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("enable.idempotence", "false")
        .set("message.timeout.ms", "10000")
        .create()
        .unwrap();
    let produce = |partition: i32, n: usize| {
        let producer = producer.clone();
        let topic = topic.clone();
        async move {
            for i in 0..n {
                let payload = format!("record {i}");
                producer
                    .send(
                        FutureRecord::<(), _>::to(&topic)
                            .partition(partition)
                            .payload(&payload),
                        Duration::from_secs(10),
                    )
                    .await
                    .map_err(|(e, _)| e)
                    .unwrap();
            }
        }
    };
    produce(0, 10).await;
    produce(1, 5).await;

    // The group has consumed 4 records of partition 0 and nothing of partition 1.
    let committer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&topic, 0, Offset::Offset(4))
        .unwrap();
    let committer = tokio::task::spawn_blocking(move || {
        committer.commit(&tpl, CommitMode::Sync).unwrap();
        committer
    })
    .await
    .unwrap();

    let signal = |topic: &str| {
        deployment(
            "featurizer",
            Signal::KafkaLag {
                group: group.clone(),
                topic: topic.into(),
                drain_seconds: 2,
            },
        )
    };
    let cfg = config(vec![signal(&topic), signal("recalloc-no-such-topic")]);
    let mut c = Collector::new(&cfg, &brokers).unwrap();
    let t0 = Instant::now();
    let first = c.read_all(t0).await;
    // First reading: the backlog alone, (10 - 4) + (5 - 0) records over 2 s.
    assert_eq!(first[0].1.as_ref().unwrap(), &Some(5.5), "{first:?}");
    match &first[1].1 {
        Err(CollectError::Kafka {
            topic, group: g, ..
        }) => {
            assert_eq!((topic.as_str(), g), ("recalloc-no-such-topic", &group));
        }
        other => panic!("{other:?}"),
    }

    produce(0, 6).await;
    let second = c.read_all(t0 + Duration::from_secs(3)).await;
    // 6 records in 3 s, plus (16 - 4) + 5 records over 2 s.
    assert_eq!(
        second[0].1.as_ref().unwrap(),
        &Some(2.0 + 8.5),
        "{second:?}"
    );

    drop(c);
    tokio::task::spawn_blocking(move || drop(committer))
        .await
        .unwrap();
    let _ = admin.delete_topics(&[&topic], &opts).await;
}

/// The binary: config from a file, readings every second, a plan for both deployments, the
/// featurizer's planned demand following a burst of events, and KEDA's metric on the plan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_plans_the_featurizer_by_its_lag_and_serves_keda() {
    use recalloc_proto::v1::scheduler_client::SchedulerClient;
    use recalloc_proto::v1::{Event, EventKind, GetPlanRequest, RecordEventsRequest};

    let cluster = Cluster::start().unwrap();
    let (grpc, http) = (free_port(), free_port());
    let config = cluster.dir.path().join("scheduler.toml");
    std::fs::write(
        &config,
        format!(
            r#"[scheduler]
grpc_addr = "127.0.0.1:{grpc}"
metrics_addr = "127.0.0.1:{http}"
mode = "dry_run"
tick_seconds = 1
horizon_steps = 10

[[scheduler.deployments]]
name = "recalloc-featurizer"
capacity_per_replica = 200.0
max_replicas = 20
startup_seconds = 1
signal = {{ kind = "kafka_lag", group = "recalloc-featurizer", topic = "recalloc.events.v1", drain_seconds = 5 }}

[[scheduler.deployments]]
name = "recalloc-ingest"
capacity_per_replica = 50.0
startup_seconds = 1
signal = {{ kind = "metrics_rate", url = "http://{ingest}/metrics", metric = "recalloc_grpc_requests_total" }}
"#,
            ingest = cluster.ingest_http
        ),
    )
    .unwrap();
    let mut scheduler = cluster
        .spawn_with(
            "scheduler",
            "recalloc-scheduler",
            &[("RECALLOC_CONFIG", config.to_str().unwrap())],
        )
        .unwrap();
    wait_ready(
        format!("127.0.0.1:{http}").parse().unwrap(),
        &mut scheduler,
        Duration::from_secs(30),
    )
    .unwrap();

    // Events through the Ingest API: the featurizer's backlog and the ingest request rate.
    let mut ingest = cluster.grpc().await.unwrap();
    for batch in 0..20 {
        let events = (0..500)
            .map(|i| Event {
                user_id: format!("u{}", (batch * 500 + i) % 300),
                item_id: format!("i{}", i % 50),
                kind: EventKind::View as i32,
                ..Default::default()
            })
            .collect();
        ingest
            .record_events(RecordEventsRequest { events })
            .await
            .unwrap();
    }

    let mut client = SchedulerClient::connect(format!("http://127.0.0.1:{grpc}"))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut featurizer_peak, mut ingest_peak) = (0.0f64, 0.0f64);
    let plan = loop {
        assert!(
            Instant::now() < deadline,
            "no plan with demand: peaks featurizer {featurizer_peak}, ingest {ingest_peak}; {}",
            scheduler.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        let Ok(plan) = client.get_plan(GetPlanRequest::default()).await else {
            continue;
        };
        let plan = plan.into_inner();
        let demand = |name: &str| {
            plan.deployments
                .iter()
                .find(|d| d.deployment == name)
                .map_or(0.0, |d| d.demand[0])
        };
        featurizer_peak = featurizer_peak.max(demand("recalloc-featurizer"));
        ingest_peak = ingest_peak.max(demand("recalloc-ingest"));
        if featurizer_peak > 0.0 && ingest_peak > 0.0 && plan.deployments.len() == 2 {
            break plan;
        }
    };
    assert!(plan.dry_run);
    assert_eq!(plan.step_seconds, 1);

    // `recalloc plan` shows the same live plan.
    let out = cluster
        .cli_command(&["plan", "--json"])
        .env("RECALLOC_SCHEDULER_GRPC_ADDR", format!("127.0.0.1:{grpc}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["dry_run"], true);
    let mut names: Vec<&str> = shown["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["deployment"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["recalloc-featurizer", "recalloc-ingest"]);
    let out = cluster
        .cli_command(&["plan", "nope"])
        .env("RECALLOC_SCHEDULER_GRPC_ADDR", format!("127.0.0.1:{grpc}"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("NotFound"));

    let mut keda_client = keda::external_scaler_client::ExternalScalerClient::connect(format!(
        "http://127.0.0.1:{grpc}"
    ))
    .await
    .unwrap();
    let object = keda::ScaledObjectRef {
        name: "recalloc-featurizer".into(),
        namespace: "recalloc".into(),
        scaler_metadata: Default::default(),
    };
    let spec = keda_client
        .get_metric_spec(object.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(spec.metric_specs[0].target_size_float, 200.0);
    let value = keda_client
        .get_metrics(keda::GetMetricsRequest {
            scaled_object_ref: Some(object),
            metric_name: spec.metric_specs[0].metric_name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    // Whole replicas of 200, between the minimum and the maximum.
    let v = value.metric_values[0].metric_value_float;
    assert!(
        (200.0..=20.0 * 200.0).contains(&v) && (v / 200.0).fract() == 0.0,
        "{v}"
    );

    // The readings show on the scheduler's own /metrics.
    let (_, text) = http_get(format!("127.0.0.1:{http}").parse().unwrap(), "/metrics").unwrap();
    assert!(
        text.contains("recalloc_scheduler_planned_replicas{deployment=\"recalloc-featurizer\"}"),
        "{text}"
    );
    let status = scheduler.terminate().expect("scheduler stops on SIGTERM");
    assert!(status.success(), "{status:?}: {}", scheduler.log());
}

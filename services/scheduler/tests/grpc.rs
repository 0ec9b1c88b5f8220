//! The scheduler process end to end in dry-run mode: it scrapes a real HTTP `/metrics`
//! endpoint every tick, plans, and answers the Scheduler and KEDA external-scaler protocols
//! through generated clients over TCP.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use recalloc_common::config::{Config, ManagedDeployment, Signal};
use recalloc_proto::externalscaler as keda;
use recalloc_proto::externalscaler::external_scaler_client::ExternalScalerClient;
use recalloc_proto::v1;
use recalloc_proto::v1::scheduler_client::SchedulerClient;
use recalloc_scheduler::server::{self, Bound};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A `/metrics` endpoint whose counter grows by `per_second` every second (clock of the test).
async fn metrics_endpoint(per_second: u64) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let started = std::time::Instant::now();
    let served = Arc::new(AtomicU64::new(0));
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let served = served.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 2048];
                let _ = s.read(&mut buf).await;
                let count = (started.elapsed().as_secs_f64() * per_second as f64) as u64;
                served.fetch_add(1, Ordering::Relaxed);
                let body = format!(
                    "# TYPE recalloc_grpc_requests_total counter\n\
                     recalloc_grpc_requests_total{{service=\"recalloc.v1.Ranker\",code=\"0\"}} {count}\n\
                     recalloc_grpc_requests_total{{service=\"other\",code=\"0\"}} 999999\n"
                );
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    format!("http://{addr}/metrics")
}

struct Running {
    bound: Bound,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

async fn start(url: String) -> Running {
    let mut cfg = Config::default();
    let s = &mut cfg.scheduler;
    s.grpc_addr = "127.0.0.1:0".parse().unwrap();
    s.metrics_addr = "127.0.0.1:0".parse().unwrap();
    s.mode = "dry_run".into();
    s.tick_seconds = 1;
    s.horizon_steps = 10;
    s.deployments = vec![ManagedDeployment {
        name: "rank".into(),
        signal: Signal::MetricsRate {
            url,
            metric: "recalloc_grpc_requests_total".into(),
            labels: [("service".to_string(), "recalloc.v1.Ranker".to_string())].into(),
        },
        capacity_per_replica: 40.0,
        min_replicas: 1,
        max_replicas: 10,
        startup_seconds: 1,
        ..ManagedDeployment::default()
    }];
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        server::run(
            cfg,
            None,
            async {
                let _ = stopped.await;
            },
            |b| {
                let _ = tx.send(b);
            },
        )
        .await
        .unwrap();
    });
    let bound = tokio::time::timeout(Duration::from_secs(10), rx)
        .await
        .unwrap()
        .unwrap();
    Running { bound, stop, task }
}

fn object(name: &str, metadata: &[(&str, &str)]) -> keda::ScaledObjectRef {
    keda::ScaledObjectRef {
        name: name.into(),
        namespace: "default".into(),
        scaler_metadata: metadata
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<HashMap<_, _>>(),
    }
}

#[tokio::test]
async fn plans_from_scraped_load_and_answers_keda() {
    // 100 requests/s against replicas of 40: three replicas.
    let url = metrics_endpoint(100).await;
    let r = start(url).await;
    let endpoint = format!("http://{}", r.bound.grpc);
    let mut scheduler = SchedulerClient::connect(endpoint.clone()).await.unwrap();
    let mut scaler = ExternalScalerClient::connect(endpoint).await.unwrap();

    // Before the second reading there is no rate, so no plan: UNAVAILABLE, not an empty plan.
    let early = scheduler.get_plan(v1::GetPlanRequest::default()).await;
    if let Err(s) = &early {
        assert_eq!(s.code(), tonic::Code::Unavailable, "{s:?}");
    }
    let plan = loop {
        if let Ok(p) = scheduler
            .get_plan(v1::GetPlanRequest {
                deployment: "rank".into(),
            })
            .await
        {
            let p = p.into_inner();
            if p.deployments.len() == 1 && p.deployments[0].demand.len() == 11 {
                break p;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(plan.dry_run);
    assert!(!plan.deployments[0].applied);
    let d = &plan.deployments[0];
    assert_eq!(d.capacity_per_replica, 40.0);
    assert!((80.0..=120.0).contains(&d.demand[0]), "{:?}", d.demand);

    // KEDA: the metric spec targets one replica's capacity, and the metric is what the plan
    // provisions, so that ⌈value / target⌉ is the planned replica count.
    let obj = object("rank-scaledobject", &[("deployment", "rank")]);
    let spec = scaler
        .get_metric_spec(obj.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(spec.metric_specs.len(), 1);
    let metric = &spec.metric_specs[0];
    assert_eq!(metric.metric_name, "recalloc-rank");
    assert_eq!((metric.target_size, metric.target_size_float), (40, 40.0));
    let values = scaler
        .get_metrics(keda::GetMetricsRequest {
            scaled_object_ref: Some(obj.clone()),
            metric_name: metric.metric_name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let v = &values.metric_values[0];
    assert_eq!(v.metric_name, "recalloc-rank");
    let replicas = (v.metric_value_float / metric.target_size_float).ceil() as u32;
    assert!((3..=4).contains(&replicas), "{v:?}");
    assert_eq!(v.metric_value, v.metric_value_float.ceil() as i64);
    assert!(
        scaler
            .is_active(obj.clone())
            .await
            .unwrap()
            .into_inner()
            .result
    );
    let mut stream = scaler.stream_is_active(obj).await.unwrap().into_inner();
    let first = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(first.result);

    // The forecast of the same deployment.
    let f = scheduler
        .get_forecast(v1::GetForecastRequest {
            deployment: "rank".into(),
            horizon_steps: 5,
            quantiles: vec![0.5, 0.99],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(f.series.len(), 2);
    assert!(f.series.iter().all(|s| s.values.len() == 5));
    assert!(f.series[1].values[0] >= f.series[0].values[0]);
    assert_eq!(f.step_seconds, 1);

    // Errors name what is wrong.
    let e = scaler
        .get_metrics(keda::GetMetricsRequest {
            scaled_object_ref: Some(object("nope", &[])),
            metric_name: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    assert!(e.message().contains("nope"), "{e:?}");
    let e = scaler
        .get_metrics(keda::GetMetricsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("scaledObjectRef"), "{e:?}");
    let e = scheduler
        .get_forecast(v1::GetForecastRequest {
            deployment: "rank".into(),
            horizon_steps: 5,
            quantiles: vec![1.5],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("quantiles"), "{e:?}");
    let e = scheduler
        .get_forecast(v1::GetForecastRequest::default())
        .await
        .unwrap_err();
    assert!(e.message().contains("deployment"), "{e:?}");
    let e = scheduler
        .get_plan(v1::GetPlanRequest {
            deployment: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);

    let _ = r.stop.send(());
    tokio::time::timeout(Duration::from_secs(15), r.task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn simulate_over_grpc_matches_the_library_and_rejects_bad_traces() {
    let url = metrics_endpoint(1).await;
    let r = start(url).await;
    let mut scheduler = SchedulerClient::connect(format!("http://{}", r.bound.grpc))
        .await
        .unwrap();
    // Two hours of one-minute points with a jump.
    let trace: Vec<v1::TracePoint> = (0..120)
        .map(|i| v1::TracePoint {
            ts: 1_700_000_000 + i * 60,
            value: if (40..80).contains(&i) { 90.0 } else { 20.0 },
        })
        .collect();
    let resp = scheduler
        .simulate(v1::SimulateRequest {
            trace: trace.clone(),
            capacity_per_pod: 10.0,
            startup_seconds: 60,
            policies: vec![],
            min_replicas: 0,
            max_replicas: 0,
            include_series: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.results.len(), 3);
    assert!(resp.series.is_none(), "series only when asked for");
    let lib = recalloc_alloc::simulate::run_all(
        &recalloc_alloc::trace::Trace::new(
            trace.iter().map(|p| p.ts).collect(),
            trace.iter().map(|p| p.value).collect(),
        )
        .unwrap(),
        &recalloc_alloc::simulate::SimParams::new(10.0, 60),
    )
    .unwrap();
    for res in &resp.results {
        let name = match v1::Policy::try_from(res.policy).unwrap() {
            v1::Policy::Hpa => "hpa",
            v1::Policy::Seed => "seed",
            v1::Policy::Recalloc => "recalloc",
            v1::Policy::Unspecified => panic!("unspecified policy in a result"),
        };
        let want = &lib.policies[name];
        assert_eq!(res.slack, want.slack, "{name}");
        assert_eq!(
            res.under_provisioned_seconds,
            want.under_provisioned_seconds
        );
        assert_eq!(res.scaling_actions as u64, want.scaling_actions);
    }

    // Asked for, the series come too (every policy's, even for a single-policy request) and
    // are the library's, step by step.
    let resp = scheduler
        .simulate(v1::SimulateRequest {
            trace: trace.clone(),
            capacity_per_pod: 10.0,
            startup_seconds: 60,
            policies: vec![v1::Policy::Hpa as i32],
            include_series: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.results.len(), 1);
    assert_eq!(resp.results[0].slack, lib.policies["hpa"].slack);
    let series = resp.series.expect("series asked for");
    assert_eq!(series.ts, lib.series.ts);
    assert_eq!(series.demand, lib.series.demand);
    let same = |a: &[f64], b: &[f64]| {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(x, y)| x == y || (x.is_nan() && y.is_nan()))
    };
    assert!(same(&series.forecast_high, &lib.series.forecast_high));
    let policies: Vec<i32> = series.capacity.iter().map(|c| c.policy).collect();
    assert_eq!(
        policies,
        [v1::Policy::Hpa, v1::Policy::Seed, v1::Policy::Recalloc].map(|p| p as i32)
    );
    assert_eq!(series.capacity[2].values, lib.series.capacity["recalloc"]);

    let mut unordered = trace.clone();
    unordered.swap(3, 4);
    let e = scheduler
        .simulate(v1::SimulateRequest {
            trace: unordered,
            capacity_per_pod: 10.0,
            startup_seconds: 60,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().starts_with("trace:"), "{e:?}");
    let e = scheduler
        .simulate(v1::SimulateRequest {
            trace,
            capacity_per_pod: 0.0,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(e.message().contains("capacity_per_pod"), "{e:?}");
    let _ = r.stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(15), r.task).await;
}

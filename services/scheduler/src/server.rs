//! Process wiring: the tick loop (read → forecast → plan → act), leader election, the gRPC
//! services (Scheduler, KEDA external scaler, health, reflection), the HTTP endpoint, and the
//! phased shutdown (stop acting, give the Lease back, drain calls).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use recalloc_common::config::Config;
use recalloc_common::metrics::GrpcMetricsLayer;
use recalloc_common::{Metrics, Readiness};
use recalloc_proto::externalscaler::external_scaler_server::ExternalScalerServer;
use recalloc_proto::v1::scheduler_server::SchedulerServer;

use crate::collect::Collector;
use crate::lease::{LeaderElector, Role};
use crate::planning::{self, Input, PlanningError};
use crate::scale::Scaler;
use crate::service::{KedaScaler, SchedulerService, Shared};

pub use recalloc_common::serve::Bound;

pub const GRACE: Duration = Duration::from_secs(10);
const SERVICES: [&str; 2] = ["recalloc.v1.Scheduler", "externalscaler.ExternalScaler"];

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Tls(#[from] recalloc_common::tls::TlsError),
    #[error(transparent)]
    Config(#[from] PlanningError),
    #[error("scheduler.mode is kube but no cluster is reachable: {0}")]
    NoCluster(String),
    #[error("load collection: {0}")]
    Collect(#[from] crate::collect::CollectError),
    #[error(transparent)]
    Bind(#[from] recalloc_common::serve::BindError),
    #[error("grpc server: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// The cluster side, when there is one.
pub struct Cluster {
    pub scaler: Scaler,
    /// `None` when `scheduler.lease_name` is empty: this replica acts without an election.
    pub elector: Option<LeaderElector>,
    pub namespace: String,
    client: kube::Client,
}

impl Cluster {
    /// Connects as `scheduler.mode` says: `None` means dry run.
    pub async fn connect(cfg: &Config) -> Result<Option<Self>, ServeError> {
        let s = &cfg.scheduler;
        if s.mode == "dry_run" {
            return Ok(None);
        }
        let client = match kube::Client::try_default().await {
            Ok(c) => c,
            Err(e) if s.mode == "auto" => {
                tracing::warn!(error = %e, "no Kubernetes cluster reachable: running dry (plans are served, not applied)");
                return Ok(None);
            }
            Err(e) => return Err(ServeError::NoCluster(e.to_string())),
        };
        Ok(Some(Self::with_client(client, cfg)))
    }

    /// The cluster side over a given client (tests pass a mock API server).
    pub fn with_client(client: kube::Client, cfg: &Config) -> Self {
        let s = &cfg.scheduler;
        let namespace = if s.namespace.is_empty() {
            client.default_namespace().to_string()
        } else {
            s.namespace.clone()
        };
        let elector = if s.lease_name.is_empty() {
            tracing::info!(%namespace, "no lease configured: acting on the cluster without an election (run one replica)");
            None
        } else {
            let identity = identity(&s.identity);
            tracing::info!(%namespace, %identity, lease = %s.lease_name, "acting on the cluster when holding the lease");
            Some(LeaderElector::new(
                client.clone(),
                &namespace,
                &s.lease_name,
                &identity,
                s.lease_seconds,
            ))
        };
        Self {
            scaler: Scaler::new(client.clone(), &namespace),
            elector,
            namespace,
            client,
        }
    }
}

/// This replica's name in the Lease: configured, else `$POD_NAME`, else the host name.
fn identity(configured: &str) -> String {
    if !configured.is_empty() {
        return configured.to_string();
    }
    std::env::var("POD_NAME")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|s| s.trim().to_string())
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| format!("recalloc-scheduler-{}", std::process::id()))
}

const READINGS: &str = "recalloc_scheduler_reading_errors_total";
const DEMAND: &str = "recalloc_scheduler_demand";
const PLANNED: &str = "recalloc_scheduler_planned_replicas";
const LEADER: &str = "recalloc_scheduler_leader";
const SOLVE: &str = "recalloc_scheduler_solve_seconds";
const APPLY_ERRORS: &str = "recalloc_scheduler_apply_errors_total";

/// One tick: read every signal, plan, and (as leader with a cluster) apply the first step.
pub async fn tick(
    shared: &Arc<Shared>,
    collector: &mut Collector,
    cluster: Option<&Cluster>,
    leader: bool,
    metrics: &Metrics,
) -> Result<(), PlanningError> {
    let readings = collector.read_all(Instant::now()).await;
    // Current replicas from the cluster (a failed read keeps the last known count).
    let mut observed = Vec::new();
    if let Some(c) = cluster {
        for d in &shared.cfg.deployments {
            match c.scaler.current_replicas(&d.name).await {
                Ok(n) => observed.push((d.name.clone(), n)),
                Err(e) => tracing::warn!(deployment = %d.name, error = %e, "cannot read replicas"),
            }
        }
    }
    let inputs: Vec<(usize, Vec<f64>, u32)> = {
        let mut state = shared.lock();
        for (name, reading) in readings {
            let value = match reading {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(deployment = %name, error = %e, "reading failed; repeating the last value");
                    metrics.inc_counter(
                        READINGS,
                        "demand readings that failed",
                        &[("deployment", &name)],
                        1,
                    );
                    None
                }
            };
            if let Some(v) = value {
                metrics.set_gauge(DEMAND, "last demand reading", &[("deployment", &name)], v);
            }
            if let Some(h) = state.histories.get_mut(&name) {
                h.push(value);
            }
        }
        for (name, n) in observed {
            state.replicas.insert(name, n);
        }
        shared
            .cfg
            .deployments
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let history = state.histories[&d.name].values();
                let current = state
                    .replicas
                    .get(&d.name)
                    .copied()
                    .unwrap_or(d.min_replicas);
                (i, history, current)
            })
            .collect()
    };
    let plan = {
        let shared = shared.clone();
        tokio::task::spawn_blocking(move || {
            let deployments = &shared.cfg.deployments;
            let inputs: Vec<Input<'_>> = inputs
                .iter()
                .map(|(i, history, current)| Input {
                    spec: &deployments[*i],
                    history,
                    current_replicas: *current,
                })
                .collect();
            planning::plan(&shared.cfg, &inputs)
        })
        .await
        .expect("planner thread")?
    };
    metrics.observe(
        SOLVE,
        "planner solve time",
        &[],
        Duration::from_secs_f64(plan.solve_ms / 1e3),
    );
    let mut applied = false;
    match cluster {
        Some(c) if leader => {
            applied = true;
            for d in &plan.deployments {
                let spec = shared
                    .cfg
                    .deployments
                    .iter()
                    .find(|s| s.name == d.name)
                    .expect("planned deployments are managed");
                let annotation = shared
                    .cfg
                    .record_plan
                    .then(|| plan_annotation(d, shared.cfg.tick_seconds));
                match c
                    .scaler
                    .apply(
                        &d.name,
                        d.request,
                        spec.min_replicas,
                        spec.max_replicas,
                        annotation.as_deref(),
                    )
                    .await
                {
                    Ok(a) => {
                        shared.lock().replicas.insert(d.name.clone(), a.replicas);
                    }
                    Err(e) => {
                        applied = false;
                        metrics.inc_counter(
                            APPLY_ERRORS,
                            "scale patches that failed",
                            &[("deployment", &d.name)],
                            1,
                        );
                        tracing::warn!(deployment = %d.name, error = %e, "cannot apply the plan");
                    }
                }
            }
        }
        Some(_) => {}
        None => {
            // Dry run: the plan is what would be applied; assume it was, so the next plan
            // starts from it.
            let mut state = shared.lock();
            for d in &plan.deployments {
                let previous = state.replicas.insert(d.name.clone(), d.request);
                if previous != Some(d.request) {
                    tracing::info!(deployment = %d.name, from = ?previous, to = d.request, demand = d.demand[0], "dry run: would scale");
                }
            }
        }
    }
    for d in &plan.deployments {
        metrics.set_gauge(
            PLANNED,
            "replicas the plan requests now",
            &[("deployment", &d.name)],
            d.request as f64,
        );
    }
    {
        let mut state = shared.lock();
        state.plan = Some(plan);
        state.plan_at = Some(SystemTime::now());
        state.applied = applied;
        state.dry_run = cluster.is_none();
        state.leader = leader;
    }
    shared.ticks.send_modify(|n| *n += 1);
    Ok(())
}

/// The plan recorded on a Deployment (annotation [`crate::scale::PLAN_ANNOTATION`]): what
/// was requested, the replicas per step and the demand planned for, so `kubectl describe`
/// shows why it has the replicas it has.
pub fn plan_annotation(d: &planning::DeploymentPlan, step_seconds: u32) -> String {
    serde_json::json!({
        "request": d.request,
        "stepSeconds": step_seconds,
        "replicas": d.replicas,
        "demand": d.demand.iter().map(|v| (v * 1000.0).round() / 1000.0).collect::<Vec<_>>(),
        "capacityPerReplica": d.capacity_per_replica,
        "method": d.method,
    })
    .to_string()
}

/// Runs the scheduler until `shutdown` resolves. `cluster`: `None` connects as the config
/// says; tests pass their own.
pub async fn run(
    cfg: Config,
    cluster: Option<Cluster>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_bound: impl FnOnce(Bound),
) -> Result<(), ServeError> {
    planning::validate(&cfg.scheduler)?;
    // TLS files are checked before the cluster is contacted and anything is bound.
    let server = recalloc_common::tls::server_builder(&cfg.security)?;
    let cluster = match cluster {
        Some(c) => Some(c),
        None => Cluster::connect(&cfg).await?,
    };
    let mut collector = Collector::new(&cfg.scheduler, &cfg.kafka.brokers)?;
    let metrics = Metrics::new();
    let (reporter, health) = tonic_health::server::health_reporter();
    let readiness = Readiness::new(Some(reporter), &SERVICES);
    let shared = Shared::new(cfg.scheduler.clone());
    let reflection = recalloc_common::serve::reflection_of(&SERVICES)?;
    let l = recalloc_common::serve::bind(
        cfg.scheduler.grpc_addr,
        cfg.scheduler.metrics_addr,
        metrics.clone(),
        readiness.clone(),
    )
    .await?;
    let (grpc_addr, http_addr) = (l.grpc_addr, l.http_addr);
    on_bound(l.bound());
    tracing::info!(%grpc_addr, %http_addr, dry_run = cluster.is_none(), deployments = cfg.scheduler.deployments.len(), "scheduler serving");

    let cluster = cluster.map(Arc::new);
    let leader = Arc::new(AtomicBool::new(cluster.is_none()));
    // Leader election renews three times per lease period; readiness follows the API server.
    let election = cluster.clone().map(|c| {
        let (leader, readiness, metrics) = (leader.clone(), readiness.clone(), metrics.clone());
        let every = Duration::from_secs_f64((cfg.scheduler.lease_seconds as f64 / 3.0).max(0.2));
        tokio::spawn(async move {
            loop {
                // Without an election this replica leads whenever the API server answers.
                let result = match &c.elector {
                    Some(elector) => elector
                        .try_acquire_or_renew()
                        .await
                        .map_err(|e| e.to_string()),
                    None => c
                        .client
                        .apiserver_version()
                        .await
                        .map(|_| Role::Leader)
                        .map_err(|e| e.to_string()),
                };
                let is_leader = matches!(result, Ok(Role::Leader));
                if leader.swap(is_leader, Ordering::SeqCst) != is_leader {
                    match &result {
                        Ok(Role::Follower { holder }) => {
                            tracing::info!(holder = ?holder, "following")
                        }
                        _ => tracing::info!(leader = is_leader, "leadership changed"),
                    }
                }
                metrics.set_gauge(
                    LEADER,
                    "1 while this replica holds the lease",
                    &[],
                    f64::from(u8::from(is_leader)),
                );
                readiness.record("kubernetes", result.map(|_| ())).await;
                tokio::time::sleep(every).await;
            }
        })
    });
    if cluster.is_none() {
        readiness.set(true).await;
    }
    let ticker = {
        let (shared, cluster, leader, metrics) = (
            shared.clone(),
            cluster.clone(),
            leader.clone(),
            metrics.clone(),
        );
        let every = Duration::from_secs(cfg.scheduler.tick_seconds as u64);
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(every);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                let is_leader = leader.load(Ordering::SeqCst);
                if let Err(e) = tick(
                    &shared,
                    &mut collector,
                    cluster.as_deref(),
                    is_leader,
                    &metrics,
                )
                .await
                {
                    tracing::warn!(error = %e, "planning failed this tick");
                }
            }
        })
    };

    let grpc = server
        .layer(recalloc_common::trace_context::GrpcTraceLayer)
        .layer(GrpcMetricsLayer::new(metrics.clone()))
        .add_service(health)
        .add_service(reflection)
        .add_service(SchedulerServer::new(SchedulerService {
            shared: shared.clone(),
        }))
        .add_service(ExternalScalerServer::new(KedaScaler {
            shared: shared.clone(),
        }))
        .serve_with_incoming_shutdown(recalloc_common::net::incoming(l.grpc), l.stop.signal());
    let http_task = l.http;
    let grpc_task = tokio::spawn(grpc);
    shutdown.await;
    // Phase 1: stop acting and hand the Lease over, so another replica takes over at once.
    ticker.abort();
    if let Some(e) = election {
        e.abort();
    }
    if let Some(elector) = cluster.as_ref().and_then(|c| c.elector.as_ref())
        && leader.load(Ordering::SeqCst)
    {
        match elector.release().await {
            Ok(()) => tracing::info!("lease released"),
            Err(e) => tracing::warn!(error = %e, "could not release the lease; it lapses instead"),
        }
    }
    // Phase 2: stop accepting calls and drain the ones in flight.
    readiness.set(false).await;
    recalloc_common::serve::drain_grpc(&l.stop, grpc_task, GRACE).await?;
    let _ = tokio::time::timeout(Duration::from_secs(1), http_task).await;
    tracing::info!("scheduler stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock_api::{Exchange, client, converse};
    use recalloc_common::config::{ManagedDeployment, Signal};
    use serde_json::json;

    const SCALE: &str = "/apis/apps/v1/namespaces/ns/deployments/web/scale";
    const DEPLOYMENT: &str = "/apis/apps/v1/namespaces/ns/deployments/web";

    fn scale(replicas: u32) -> serde_json::Value {
        json!({
            "apiVersion": "autoscaling/v1", "kind": "Scale",
            "metadata": {"name": "web", "namespace": "ns", "resourceVersion": "7"},
            "spec": {"replicas": replicas}, "status": {"replicas": replicas}
        })
    }

    fn deployment_object() -> serde_json::Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "ns"},
            "spec": {"selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": []}}}
        })
    }

    /// One managed deployment "web" (replicas of 10) whose signal cannot be read (port 9 is
    /// closed), so the history the test fills is what gets planned.
    fn setup(history: &[f64]) -> (Config, Arc<Shared>, Collector) {
        let mut cfg = Config::default();
        cfg.scheduler.mode = "kube".into();
        cfg.scheduler.namespace = "ns".into();
        cfg.scheduler.horizon_steps = 5;
        cfg.scheduler.deployments = vec![ManagedDeployment {
            name: "web".into(),
            signal: Signal::MetricsGauge {
                url: "http://127.0.0.1:9/metrics".into(),
                metric: "queue".into(),
                labels: Default::default(),
            },
            capacity_per_replica: 10.0,
            min_replicas: 1,
            max_replicas: 8,
            max_step: 8,
            startup_seconds: 60,
            ..ManagedDeployment::default()
        }];
        let shared = Shared::new(cfg.scheduler.clone());
        {
            let mut state = shared.lock();
            let h = state.histories.get_mut("web").unwrap();
            for &v in history {
                h.push(Some(v));
            }
        }
        let collector = Collector::new(&cfg.scheduler, &cfg.kafka.brokers).unwrap();
        (cfg, shared, collector)
    }

    /// The plan the tick must compute from the same inputs (the reading fails, so the history
    /// gets its last value repeated once).
    fn expected(cfg: &Config, history: &[f64], current: u32) -> planning::DeploymentPlan {
        let mut h = history.to_vec();
        h.push(*history.last().unwrap());
        let plan = planning::plan(
            &cfg.scheduler,
            &[Input {
                spec: &cfg.scheduler.deployments[0],
                history: &h,
                current_replicas: current,
            }],
        )
        .unwrap();
        plan.deployments[0].clone()
    }

    #[tokio::test]
    async fn the_leader_scales_up_and_records_the_plan() {
        // Demand 45 with replicas of 10: five replicas; the Deployment has two.
        let history = vec![45.0; 120];
        let (cfg, shared, mut collector) = setup(&history);
        let want = expected(&cfg, &history, 2);
        assert_eq!(want.request, 5);
        let (kube, handle) = client();
        let cluster = Cluster::with_client(kube, &cfg);
        let annotation = plan_annotation(&want, cfg.scheduler.tick_seconds);
        let script = vec![
            // The replicas now, before planning.
            Exchange::get(SCALE).respond(200, scale(2)),
            // Applying: read again, patch the scale subresource, record the plan.
            Exchange::get(SCALE).respond(200, scale(2)),
            Exchange::merge_patch(
                &format!("{SCALE}?&fieldManager=recalloc-scheduler"),
                json!({"spec": {"replicas": 5}}),
            )
            .respond(200, scale(5)),
            Exchange::merge_patch(
                &format!("{DEPLOYMENT}?&fieldManager=recalloc-scheduler"),
                json!({"metadata": {"annotations": {"recalloc.io/plan": annotation}}}),
            )
            .respond(200, deployment_object()),
        ];
        let metrics = Metrics::new();
        converse(
            handle,
            script,
            tick(&shared, &mut collector, Some(&cluster), true, &metrics),
        )
        .await
        .unwrap();
        let state = shared.lock();
        assert!(state.applied && !state.dry_run);
        assert_eq!(state.replicas["web"], 5);
        assert_eq!(state.plan.as_ref().unwrap().deployments[0], want);
        assert!(
            metrics
                .render()
                .contains("recalloc_scheduler_reading_errors_total")
        );
    }

    #[tokio::test]
    async fn without_record_plan_the_leader_patches_only_the_scale() {
        let history = vec![45.0; 120];
        let (mut cfg, _, mut collector) = setup(&history);
        cfg.scheduler.record_plan = false;
        cfg.scheduler.lease_name.clear();
        let shared = Shared::new(cfg.scheduler.clone());
        for &v in &history {
            shared
                .lock()
                .histories
                .get_mut("web")
                .unwrap()
                .push(Some(v));
        }
        let (kube, handle) = client();
        let cluster = Cluster::with_client(kube, &cfg);
        assert!(
            cluster.elector.is_none(),
            "an empty lease_name means no election"
        );
        let script = vec![
            Exchange::get(SCALE).respond(200, scale(2)),
            Exchange::get(SCALE).respond(200, scale(2)),
            Exchange::merge_patch(
                &format!("{SCALE}?&fieldManager=recalloc-scheduler"),
                json!({"spec": {"replicas": 5}}),
            )
            .respond(200, scale(5)),
        ];
        converse(
            handle,
            script,
            tick(
                &shared,
                &mut collector,
                Some(&cluster),
                true,
                &Metrics::new(),
            ),
        )
        .await
        .unwrap();
        assert_eq!(shared.lock().replicas["web"], 5);
    }

    #[tokio::test]
    async fn a_follower_reads_and_plans_but_never_writes() {
        let history = vec![45.0; 120];
        let (cfg, shared, mut collector) = setup(&history);
        let (kube, handle) = client();
        let cluster = Cluster::with_client(kube, &cfg);
        let script = vec![Exchange::get(SCALE).respond(200, scale(2))];
        converse(
            handle,
            script,
            tick(
                &shared,
                &mut collector,
                Some(&cluster),
                false,
                &Metrics::new(),
            ),
        )
        .await
        .unwrap();
        let state = shared.lock();
        assert!(!state.applied);
        assert_eq!(state.plan.as_ref().unwrap().deployments[0].request, 5);
        // The cluster's count stands: nothing was applied.
        assert_eq!(state.replicas["web"], 2);
    }

    #[tokio::test]
    async fn the_plan_is_clamped_to_max_replicas() {
        // Demand 300 needs 30 replicas; max_replicas is 8.
        let history = vec![300.0; 120];
        let (cfg, shared, mut collector) = setup(&history);
        let want = expected(&cfg, &history, 8);
        assert_eq!(want.request, 8);
        let (kube, handle) = client();
        let cluster = Cluster::with_client(kube, &cfg);
        let annotation = plan_annotation(&want, cfg.scheduler.tick_seconds);
        // Already at the maximum: no scale patch, only the plan annotation.
        let script = vec![
            Exchange::get(SCALE).respond(200, scale(8)),
            Exchange::get(SCALE).respond(200, scale(8)),
            Exchange::merge_patch(
                &format!("{DEPLOYMENT}?&fieldManager=recalloc-scheduler"),
                json!({"metadata": {"annotations": {"recalloc.io/plan": annotation}}}),
            )
            .respond(200, deployment_object()),
        ];
        converse(
            handle,
            script,
            tick(
                &shared,
                &mut collector,
                Some(&cluster),
                true,
                &Metrics::new(),
            ),
        )
        .await
        .unwrap();
        assert_eq!(shared.lock().replicas["web"], 8);
    }
}

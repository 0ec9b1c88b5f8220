//! The control loop: every tick reads each managed Deployment's demand, appends it to that
//! Deployment's history, forecasts and plans replicas, and (as the leader, with a cluster)
//! applies the plan's first step; dry, it assumes the plan was applied.
//!
//! The [`Controller`] is the only writer of the [`State`] this produces. The gRPC edge
//! ([`crate::service`]) reads it through a [`StateReader`], which hands out the state behind
//! `&` only, so what the handlers answer is always what the last tick decided.

use std::collections::BTreeMap;
use std::future::Future;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use recalloc_common::Metrics;
use recalloc_common::config::SchedulerConfig;
use tokio::sync::watch;

use crate::cluster::Cluster;
use crate::collect::Collector;
use crate::planning::{self, DeploymentPlan, History, Input, Plan, PlanningError};

const READINGS: &str = "recalloc_scheduler_reading_errors_total";
const DEMAND: &str = "recalloc_scheduler_demand";
const PLANNED: &str = "recalloc_scheduler_planned_replicas";
const SOLVE: &str = "recalloc_scheduler_solve_seconds";
const APPLY_ERRORS: &str = "recalloc_scheduler_apply_errors_total";

/// What the control loop knows after its last tick.
#[derive(Debug, Default)]
pub struct State {
    histories: BTreeMap<String, History>,
    /// Replicas each deployment has now (from the cluster, or the last request when dry).
    replicas: BTreeMap<String, u32>,
    plan: Option<Plan>,
    plan_at: Option<SystemTime>,
    /// Whether this replica applied the plan (it holds the Lease and a cluster is configured).
    applied: bool,
    dry_run: bool,
    leader: bool,
}

impl State {
    /// The demand readings of managed deployment `name`, oldest first.
    pub fn history(&self, name: &str) -> Option<&History> {
        self.histories.get(name)
    }

    /// Replicas `name` has now (from the cluster, or the last request when dry), once known.
    pub fn replicas(&self, name: &str) -> Option<u32> {
        self.replicas.get(name).copied()
    }

    /// The last plan; `None` until a tick had readings to plan from.
    pub fn plan(&self) -> Option<&Plan> {
        self.plan.as_ref()
    }

    /// When the last plan was made.
    pub fn plan_at(&self) -> Option<SystemTime> {
        self.plan_at
    }

    /// Whether the last plan was applied to the cluster (every scale patch succeeded).
    pub fn applied(&self) -> bool {
        self.applied
    }

    /// Whether there is no cluster: plans are served, never applied.
    pub fn dry_run(&self) -> bool {
        self.dry_run
    }

    /// Whether this replica led at the last tick.
    pub fn leader(&self) -> bool {
        self.leader
    }
}

/// The state and what it was planned with, between the controller and its readers.
struct Shared {
    cfg: SchedulerConfig,
    state: Mutex<State>,
    /// Bumped after every tick, for StreamIsActive.
    ticks: watch::Sender<u64>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A read-only handle on the controller's [`State`], for the gRPC edge.
#[derive(Clone)]
pub struct StateReader {
    shared: Arc<Shared>,
}

impl StateReader {
    /// The configuration the controller plans with.
    pub fn cfg(&self) -> &SchedulerConfig {
        &self.shared.cfg
    }

    /// The state as of now; ticks wait while the guard is held, so keep it short.
    pub fn read(&self) -> ReadGuard<'_> {
        ReadGuard(self.shared.lock())
    }

    /// Changes after every tick.
    pub fn ticks(&self) -> watch::Receiver<u64> {
        self.shared.ticks.subscribe()
    }
}

/// The locked [`State`], readable only.
pub struct ReadGuard<'a>(MutexGuard<'a, State>);

impl Deref for ReadGuard<'_> {
    type Target = State;

    fn deref(&self) -> &State {
        &self.0
    }
}

/// The control loop with everything one tick needs.
pub struct Controller {
    shared: Arc<Shared>,
    collector: Collector,
    /// `None`: dry run.
    cluster: Option<Arc<Cluster>>,
    metrics: Arc<Metrics>,
}

impl Controller {
    /// A controller with empty histories for `cfg.deployments`.
    pub fn new(
        cfg: SchedulerConfig,
        collector: Collector,
        cluster: Option<Arc<Cluster>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let histories = cfg
            .deployments
            .iter()
            .map(|d| (d.name.clone(), History::new(cfg.history_steps as usize)))
            .collect();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                histories,
                ..State::default()
            }),
            cfg,
            ticks: watch::channel(0).0,
        });
        Self {
            shared,
            collector,
            cluster,
            metrics,
        }
    }

    /// A read-only handle on the state this controller keeps.
    pub fn reader(&self) -> StateReader {
        StateReader {
            shared: self.shared.clone(),
        }
    }

    /// Ticks every `every` (a late tick delays the next ones) with the leadership `leader`
    /// holds at that moment, until `stop` resolves; a tick in progress then stops where it is.
    pub async fn run(
        mut self,
        every: Duration,
        leader: Arc<AtomicBool>,
        stop: impl Future<Output = ()>,
    ) {
        let ticking = async {
            let mut interval = tokio::time::interval(every);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                let is_leader = leader.load(Ordering::SeqCst);
                if let Err(e) = self.tick(is_leader).await {
                    tracing::warn!(error = %e, "planning failed this tick");
                }
            }
        };
        tokio::select! {
            _ = stop => {}
            _ = ticking => {}
        }
    }

    /// One tick: read every signal, plan, and (as leader with a cluster) apply the first step.
    pub async fn tick(&mut self, leader: bool) -> Result<(), PlanningError> {
        let (shared, metrics) = (&self.shared, &self.metrics);
        let cluster = self.cluster.as_deref();
        let readings = self.collector.read_all(Instant::now()).await;
        // Current replicas from the cluster (a failed read keeps the last known count).
        let mut observed = Vec::new();
        if let Some(c) = cluster {
            for d in &shared.cfg.deployments {
                match c.scaler.current_replicas(&d.name).await {
                    Ok(n) => observed.push((d.name.clone(), n)),
                    Err(e) => {
                        tracing::warn!(deployment = %d.name, error = %e, "cannot read replicas")
                    }
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
}

/// The plan recorded on a Deployment (annotation [`crate::scale::PLAN_ANNOTATION`]): what
/// was requested, the replicas per step and the demand planned for, so `kubectl describe`
/// shows why it has the replicas it has.
pub fn plan_annotation(d: &DeploymentPlan, step_seconds: u32) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock_api::{Exchange, client, converse};
    use recalloc_common::config::{Config, ManagedDeployment, Signal};
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
    fn setup() -> Config {
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
        cfg
    }

    /// A controller over `cluster` for `cfg`, with `history` already read for "web".
    fn controller(
        cfg: &Config,
        history: &[f64],
        cluster: Cluster,
        metrics: Arc<Metrics>,
    ) -> Controller {
        let collector = Collector::new(&cfg.scheduler, &cfg.kafka.brokers).unwrap();
        let controller = Controller::new(
            cfg.scheduler.clone(),
            collector,
            Some(Arc::new(cluster)),
            metrics,
        );
        {
            let mut state = controller.shared.lock();
            let h = state.histories.get_mut("web").unwrap();
            for &v in history {
                h.push(Some(v));
            }
        }
        controller
    }

    /// The plan the tick must compute from the same inputs (the reading fails, so the history
    /// gets its last value repeated once).
    fn expected(cfg: &Config, history: &[f64], current: u32) -> DeploymentPlan {
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
        let cfg = setup();
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
        let mut controller = controller(&cfg, &history, cluster, metrics.clone());
        converse(handle, script, controller.tick(true))
            .await
            .unwrap();
        let state = controller.shared.lock();
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
        let mut cfg = setup();
        cfg.scheduler.record_plan = false;
        cfg.scheduler.lease_name.clear();
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
        let mut controller = controller(&cfg, &history, cluster, Metrics::new());
        converse(handle, script, controller.tick(true))
            .await
            .unwrap();
        assert_eq!(controller.shared.lock().replicas["web"], 5);
    }

    #[tokio::test]
    async fn a_follower_reads_and_plans_but_never_writes() {
        let history = vec![45.0; 120];
        let cfg = setup();
        let (kube, handle) = client();
        let cluster = Cluster::with_client(kube, &cfg);
        let script = vec![Exchange::get(SCALE).respond(200, scale(2))];
        let mut controller = controller(&cfg, &history, cluster, Metrics::new());
        converse(handle, script, controller.tick(false))
            .await
            .unwrap();
        let state = controller.shared.lock();
        assert!(!state.applied);
        assert_eq!(state.plan.as_ref().unwrap().deployments[0].request, 5);
        // The cluster's count stands: nothing was applied.
        assert_eq!(state.replicas["web"], 2);
    }

    #[tokio::test]
    async fn the_plan_is_clamped_to_max_replicas() {
        // Demand 300 needs 30 replicas; max_replicas is 8.
        let history = vec![300.0; 120];
        let cfg = setup();
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
        let mut controller = controller(&cfg, &history, cluster, Metrics::new());
        converse(handle, script, controller.tick(true))
            .await
            .unwrap();
        assert_eq!(controller.shared.lock().replicas["web"], 8);
    }
}

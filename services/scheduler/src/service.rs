//! The gRPC edge: `recalloc.v1.Scheduler` (forecasts, the live plan, trace simulation) and
//! KEDA's `externalscaler.ExternalScaler`, both reading (never writing) the state the control
//! loop ([`crate::control::Controller`]) keeps, through a [`StateReader`]. Typed
//! errors become gRPC statuses here, naming the field at fault.

use std::pin::Pin;
use std::time::{SystemTime, UNIX_EPOCH};

use futures::Stream;
use recalloc_alloc::simulate::{self, Policy, SimParams};
use recalloc_alloc::trace::Trace;
use recalloc_common::config::{ManagedDeployment, SchedulerConfig};
use recalloc_proto::externalscaler as keda;
use recalloc_proto::v1;
use tonic::{Request, Response, Status};

use crate::control::StateReader;
use crate::planning::{self, History, PlanningError};

/// Most trace points one Simulate call may carry (a year of one-minute points).
pub const MAX_TRACE_POINTS: usize = 525_600;

/// The managed deployment `name`, or NOT_FOUND listing the managed ones.
fn deployment<'a>(cfg: &'a SchedulerConfig, name: &str) -> Result<&'a ManagedDeployment, Status> {
    cfg.deployments
        .iter()
        .find(|d| d.name == name)
        .ok_or_else(|| {
            Status::not_found(format!(
                "deployment `{name}` is not managed (managed: {})",
                cfg.deployments
                    .iter()
                    .map(|d| d.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
}

/// The demand KEDA should see for `name`: what the plan provisions one lead time ahead
/// (the replicas requested now × one replica's capacity, i.e. the forecast quantile
/// rounded up to whole replicas), so that the HPA's ⌈value / target⌉ with target = one
/// replica's capacity lands on the planned replicas. Before the first plan: the latest
/// reading.
fn keda_demand(state: &StateReader, name: &str) -> Result<f64, Status> {
    let d = deployment(state.cfg(), name)?;
    let state = state.read();
    if let Some(p) = state
        .plan()
        .and_then(|p| p.deployments.iter().find(|p| p.name == name))
    {
        return Ok(p.request as f64 * d.capacity_per_replica);
    }
    state
        .history(name)
        .and_then(History::last)
        .ok_or_else(|| Status::unavailable(format!("no reading of `{name}` yet")))
}

fn status_of(e: PlanningError) -> Status {
    match e {
        PlanningError::NoReadings(_) => Status::failed_precondition(e.to_string()),
        PlanningError::UnknownDeployment(_) => Status::not_found(e.to_string()),
        PlanningError::Config { .. } | PlanningError::Forecast { .. } => {
            Status::invalid_argument(e.to_string())
        }
        PlanningError::Plan(_) => Status::internal(e.to_string()),
    }
}

fn millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Runs CPU work (forecast fits, simulations) off the async runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Status> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("worker failed: {e}")))?
}

#[derive(Clone)]
pub struct SchedulerService {
    state: StateReader,
}

impl SchedulerService {
    pub fn new(state: StateReader) -> Self {
        Self { state }
    }
}

#[tonic::async_trait]
impl v1::scheduler_server::Scheduler for SchedulerService {
    async fn get_forecast(
        &self,
        request: Request<v1::GetForecastRequest>,
    ) -> Result<Response<v1::Forecast>, Status> {
        let r = request.into_inner();
        if r.deployment.is_empty() {
            return Err(Status::invalid_argument("deployment is required"));
        }
        let cfg = self.state.cfg();
        deployment(cfg, &r.deployment)?;
        let horizon = match r.horizon_steps {
            0 => cfg.horizon_steps as usize,
            h if h > 10_000 => {
                return Err(Status::invalid_argument(
                    "horizon_steps must be at most 10000",
                ));
            }
            h => h as usize,
        };
        let quantiles = if r.quantiles.is_empty() {
            vec![0.1, 0.5, 0.9, cfg.service_level]
        } else {
            r.quantiles
        };
        if let Some(q) = quantiles.iter().find(|q| !(**q > 0.0 && **q < 1.0)) {
            return Err(Status::invalid_argument(format!(
                "quantiles: {q} is outside (0, 1)"
            )));
        }
        let history = self
            .state
            .read()
            .history(&r.deployment)
            .map(History::values)
            .unwrap_or_default();
        let tick = cfg.tick_seconds;
        let name = r.deployment.clone();
        let qs = quantiles.clone();
        let (f, pinball) = blocking(move || {
            planning::forecast(&name, &history, tick, horizon, &qs).map_err(status_of)
        })
        .await?;
        Ok(Response::new(v1::Forecast {
            deployment: r.deployment,
            start_ms: millis(SystemTime::now()) + tick as i64 * 1000,
            step_seconds: tick,
            series: f
                .quantiles
                .into_iter()
                .map(|(quantile, values)| v1::QuantileSeries { quantile, values })
                .collect(),
            method: f.method,
            backtest_pinball_loss: if pinball.is_finite() { pinball } else { 0.0 },
        }))
    }

    async fn get_plan(
        &self,
        request: Request<v1::GetPlanRequest>,
    ) -> Result<Response<v1::Plan>, Status> {
        let name = request.into_inner().deployment;
        if !name.is_empty() {
            deployment(self.state.cfg(), &name)?;
        }
        let state = self.state.read();
        let Some(plan) = state.plan() else {
            return Err(Status::unavailable(
                "no plan yet: the first tick with readings has not happened",
            ));
        };
        let deployments = plan
            .deployments
            .iter()
            .filter(|d| name.is_empty() || d.name == name)
            .map(|d| v1::DeploymentPlan {
                deployment: d.name.clone(),
                current_replicas: d.current_replicas,
                replicas: d.replicas.clone(),
                demand: d.demand.clone(),
                capacity_per_replica: d.capacity_per_replica,
                applied: state.applied(),
            })
            .collect::<Vec<_>>();
        if !name.is_empty() && deployments.is_empty() {
            return Err(Status::unavailable(format!(
                "no plan for `{name}` yet: it has no readings"
            )));
        }
        Ok(Response::new(v1::Plan {
            deployments,
            created_at_ms: state.plan_at().map(millis).unwrap_or(0),
            step_seconds: plan.step_seconds,
            dry_run: state.dry_run(),
            solver: plan.solver.clone(),
            solve_ms: plan.solve_ms,
        }))
    }

    async fn simulate(
        &self,
        request: Request<v1::SimulateRequest>,
    ) -> Result<Response<v1::SimulateResponse>, Status> {
        let r = request.into_inner();
        if r.trace.len() > MAX_TRACE_POINTS {
            return Err(Status::invalid_argument(format!(
                "trace has {} points; at most {MAX_TRACE_POINTS}",
                r.trace.len()
            )));
        }
        let (ts, values) = r.trace.iter().map(|p| (p.ts, p.value)).unzip();
        let trace =
            Trace::new(ts, values).map_err(|e| Status::invalid_argument(format!("trace: {e}")))?;
        if !(r.capacity_per_pod.is_finite() && r.capacity_per_pod > 0.0) {
            return Err(Status::invalid_argument(
                "capacity_per_pod must be a finite number > 0",
            ));
        }
        let mut params = SimParams::new(r.capacity_per_pod, r.startup_seconds as u64);
        if r.min_replicas > 0 {
            params.min_replicas = r.min_replicas;
        }
        if r.max_replicas > 0 {
            params.max_replicas = r.max_replicas;
        }
        if params.min_replicas > params.max_replicas {
            return Err(Status::invalid_argument(
                "min_replicas must not exceed max_replicas",
            ));
        }
        let mut policies = Vec::new();
        for p in &r.policies {
            policies.push(match v1::Policy::try_from(*p) {
                Ok(v1::Policy::Hpa) => Policy::Hpa,
                Ok(v1::Policy::Seed) => Policy::Seed,
                Ok(v1::Policy::Recalloc) => Policy::Recalloc,
                _ => {
                    return Err(Status::invalid_argument(format!(
                        "policies: {p} is not HPA, SEED or RECALLOC"
                    )));
                }
            });
        }
        if policies.is_empty() {
            policies = Policy::ALL.to_vec();
        }
        let include_series = r.include_series;
        let (results, series) = blocking(move || {
            let sim_err = |e: simulate::SimError| Status::invalid_argument(e.to_string());
            // One shared forecast pass serves every policy, and only it yields the series.
            if policies.len() > 1 || include_series {
                let c = simulate::run_all(&trace, &params).map_err(sim_err)?;
                let reports = policies
                    .iter()
                    .map(|p| (*p, c.policies[p.name()].clone()))
                    .collect();
                Ok((reports, include_series.then_some(c.series)))
            } else {
                let report = simulate::run(&trace, &params, policies[0]).map_err(sim_err)?;
                Ok((vec![(policies[0], report)], None))
            }
        })
        .await?;
        Ok(Response::new(v1::SimulateResponse {
            results: results
                .into_iter()
                .map(|(p, r)| v1::PolicyResult {
                    policy: policy_of(p) as i32,
                    slack: r.slack,
                    under_provisioned_seconds: r.under_provisioned_seconds,
                    unmet_demand: r.unmet_demand,
                    scaling_actions: r.scaling_actions.min(u32::MAX as u64) as u32,
                    mean_replicas: r.mean_replicas,
                })
                .collect(),
            series: series.map(series_of),
        }))
    }
}

fn policy_of(p: Policy) -> v1::Policy {
    match p {
        Policy::Hpa => v1::Policy::Hpa,
        Policy::Seed => v1::Policy::Seed,
        Policy::Recalloc => v1::Policy::Recalloc,
    }
}

/// The simulator's chart series on the wire, the capacities in the order of [`Policy::ALL`].
fn series_of(s: simulate::Series) -> v1::SimulationSeries {
    let mut capacity = s.capacity;
    v1::SimulationSeries {
        ts: s.ts,
        demand: s.demand,
        forecast: s.forecast,
        forecast_low: s.forecast_low,
        forecast_high: s.forecast_high,
        capacity: Policy::ALL
            .iter()
            .filter_map(|p| {
                capacity.remove(p.name()).map(|values| v1::PolicyCapacity {
                    policy: policy_of(*p) as i32,
                    values,
                })
            })
            .collect(),
    }
}

/// KEDA's external scaler over the same state.
#[derive(Clone)]
pub struct KedaScaler {
    state: StateReader,
}

impl KedaScaler {
    pub fn new(state: StateReader) -> Self {
        Self { state }
    }
}

/// The managed deployment a ScaledObject refers to: `scalerMetadata.deployment`, else the
/// ScaledObject's own name.
fn target(r: &keda::ScaledObjectRef) -> Result<String, Status> {
    let name = r
        .scaler_metadata
        .get("deployment")
        .cloned()
        .unwrap_or_else(|| r.name.clone());
    if name.is_empty() {
        return Err(Status::invalid_argument(
            "scaledObjectRef: name or scalerMetadata.deployment is required",
        ));
    }
    Ok(name)
}

/// The metric name KEDA asks for: one per deployment.
pub fn metric_name(deployment: &str) -> String {
    format!("recalloc-{deployment}")
}

impl KedaScaler {
    fn is_active(&self, r: &keda::ScaledObjectRef) -> Result<bool, Status> {
        let name = target(r)?;
        // Without a reading yet it stays active: scaling to zero needs evidence of no demand.
        match keda_demand(&self.state, &name) {
            Ok(v) => Ok(v > 0.0),
            Err(s) if s.code() == tonic::Code::Unavailable => Ok(true),
            Err(s) => Err(s),
        }
    }
}

type ActiveStream = Pin<Box<dyn Stream<Item = Result<keda::IsActiveResponse, Status>> + Send>>;

#[tonic::async_trait]
impl keda::external_scaler_server::ExternalScaler for KedaScaler {
    async fn is_active(
        &self,
        request: Request<keda::ScaledObjectRef>,
    ) -> Result<Response<keda::IsActiveResponse>, Status> {
        let result = KedaScaler::is_active(self, request.get_ref())?;
        Ok(Response::new(keda::IsActiveResponse { result }))
    }

    type StreamIsActiveStream = ActiveStream;

    async fn stream_is_active(
        &self,
        request: Request<keda::ScaledObjectRef>,
    ) -> Result<Response<Self::StreamIsActiveStream>, Status> {
        let r = request.into_inner();
        let first = KedaScaler::is_active(self, &r)?;
        let this = self.clone();
        let mut ticks = self.state.ticks();
        // Sends the current answer, then one after every tick that changes it.
        let stream = async_stream(move |tx| async move {
            let mut last = first;
            if tx
                .send(Ok(keda::IsActiveResponse { result: last }))
                .await
                .is_err()
            {
                return;
            }
            while ticks.changed().await.is_ok() {
                let now = match KedaScaler::is_active(&this, &r) {
                    Ok(v) => v,
                    Err(s) => {
                        let _ = tx.send(Err(s)).await;
                        return;
                    }
                };
                if now != last {
                    last = now;
                    if tx
                        .send(Ok(keda::IsActiveResponse { result: now }))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(stream))
    }

    async fn get_metric_spec(
        &self,
        request: Request<keda::ScaledObjectRef>,
    ) -> Result<Response<keda::GetMetricSpecResponse>, Status> {
        let name = target(request.get_ref())?;
        let d = deployment(self.state.cfg(), &name)?;
        Ok(Response::new(keda::GetMetricSpecResponse {
            metric_specs: vec![keda::MetricSpec {
                metric_name: metric_name(&name),
                target_size: d.capacity_per_replica.round().max(1.0) as i64,
                target_size_float: d.capacity_per_replica,
            }],
        }))
    }

    async fn get_metrics(
        &self,
        request: Request<keda::GetMetricsRequest>,
    ) -> Result<Response<keda::GetMetricsResponse>, Status> {
        let r = request.into_inner();
        let object = r
            .scaled_object_ref
            .ok_or_else(|| Status::invalid_argument("scaledObjectRef is required"))?;
        let name = target(&object)?;
        let value = keda_demand(&self.state, &name)?;
        let metric = if r.metric_name.is_empty() {
            metric_name(&name)
        } else {
            r.metric_name
        };
        Ok(Response::new(keda::GetMetricsResponse {
            metric_values: vec![keda::MetricValue {
                metric_name: metric,
                metric_value: value.ceil() as i64,
                metric_value_float: value,
            }],
        }))
    }
}

/// A stream fed by a spawned task through a small channel.
fn async_stream<F, Fut>(f: F) -> ActiveStream
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<keda::IsActiveResponse, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(f(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

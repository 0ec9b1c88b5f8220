//! Replays a load trace against autoscaling policies and measures what each one provisions.
//!
//! Three policies face the same trace, pod capacity and pod start-up delay:
//!
//! * `hpa` — the Kubernetes HorizontalPodAutoscaler algorithm: every `sync_seconds` (15 s)
//!   the replica calculator computes desired = ⌈ratio · ready pods⌉ with ratio = (demand /
//!   (ready pods · capacity)) / target utilisation, leaves the count alone when |ratio − 1| ≤
//!   tolerance (0.1), and, while pods are still starting and the ratio says scale up, counts
//!   the starting pods at zero load (so it does not double-count their future capacity). The
//!   controller then applies the default behaviour: scale-down stabilisation (the highest
//!   recommendation of the last 300 s), scale-up limited to max(+100 %, +4 pods) per period,
//!   and min/max replicas. The default target utilisation is 0.8, a common production setting
//!   for request-rate targets (Kubernetes' own examples use 0.5, which would only widen its
//!   slack).
//! * `seed` — the design's seed model used as a policy: capacity is the running maximum of the
//!   planning forecast (never lowered), replicas = ⌈capacity / pod capacity⌉.
//! * `recalloc` — the receding-horizon planner ([`crate::planner`]) fed with the forecaster's
//!   `service_level` quantile ([`crate::forecast`]), re-planned at every trace step with the
//!   pod start-up as lead time (in steps, rounded half up), applying the first step. The plan
//!   for a later step is its point forecast plus the service-level error *at the lead time*:
//!   each step's capacity is committed only a lead before it, by a later re-plan. When pods
//!   start faster than a step lasts (daily points, say), the pods for the next step's forecast
//!   are requested one start-up before it begins. The penalty of unmet demand is set by
//!   the newsvendor rule: providing a unit of capacity costs 1/κ per step and missing a unit
//!   costs p, so the optimal provision is the p/(p + 1/κ) quantile; p = s/(1 − s)/κ makes that
//!   the service level s itself (0.99: a replica-step of missed demand costs 99 replica-steps).
//!   A step that falls short at all also costs s/(1 − s) replica-steps (an SLO breach), so the
//!   planner does not leave a sliver of demand unserved to save a pod.
//!
//! The forecaster only ever sees the trace up to the current step (no peeking); it is refitted
//! every `refit_seconds` of trace time and updated with each new point in between.
//!
//! Time is continuous: demand holds its value from one trace timestamp to the next (the last
//! for one step), pods become ready exactly `startup_seconds` after they are requested, and
//! every metric is integrated exactly between events. Metrics, per policy:
//!
//! * `slack` = provisioned / needed − 1 = ∫ ready pods dt / ∫ needed pods dt − 1, where
//!   needed pods = max(min replicas, ⌈demand / capacity per pod⌉) (at most max replicas):
//!   capacity is bought in pods, so the pods the demand needs are what "needed" means, and a
//!   clairvoyant policy scores 0. Starting pods are not counted (they cost but do not serve);
//!   a pod's total cost shows in `mean_replicas`.
//! * `slack_over_demand` = ∫ ready capacity dt / ∫ demand dt − 1: the same ratio against the
//!   demand itself, which also counts the unused part of the last pod; [`oracle_slack`] is its
//!   floor.
//! * `under_provisioned_seconds` = time during which ready capacity < demand.
//! * `unmet_demand` = ∫ max(0, demand − ready capacity) dt (demand unit × seconds: requests
//!   when demand is requests per second).
//! * `scaling_actions` = how many times the desired replica count changed.
//! * `mean_replicas` = time-average of all pods, starting ones included.
//!
//! Every policy starts with ⌈first demand / capacity⌉ ready pods. `warmup_seconds` (default 0)
//! leaves a leading part of the trace unscored, and [`oracle_slack`] gives the slack of a
//! clairvoyant policy, the floor that pod granularity and `min_replicas` put under any policy
//! that is never short.

use std::collections::{BTreeMap, VecDeque};
use std::str::FromStr;

use serde::Serialize;
use thiserror::Error;

use crate::forecast::{FitOptions, FittedForecaster, ForecastError, Forecaster};
use crate::planner::{self, Deployment, PlanError, Problem};
use crate::trace::Trace;

#[derive(Debug, Error, Clone, PartialEq)]
pub enum SimError {
    #[error("invalid simulation parameter: {0}")]
    InvalidParams(String),
    #[error("unknown policy `{0}` (expected hpa, seed or recalloc)")]
    UnknownPolicy(String),
    #[error("forecast failed: {0}")]
    Forecast(#[from] ForecastError),
    #[error("planner failed: {0}")]
    Plan(#[from] PlanError),
}

/// The Kubernetes HPA's knobs (defaults as in Kubernetes, target 0.8).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HpaParams {
    pub target_utilisation: f64,
    pub tolerance: f64,
    pub sync_seconds: u64,
    pub scale_down_stabilisation_seconds: u64,
    /// Scale-up limit per sync period: at most this many pods more, or `scale_up_percent`,
    /// whichever allows more (Kubernetes' default behaviour: 4 pods or 100 %).
    pub scale_up_pods: u32,
    pub scale_up_percent: f64,
}

impl Default for HpaParams {
    fn default() -> Self {
        Self {
            target_utilisation: 0.8,
            tolerance: 0.1,
            sync_seconds: 15,
            scale_down_stabilisation_seconds: 300,
            scale_up_pods: 4,
            scale_up_percent: 100.0,
        }
    }
}

/// The forecaster and planner settings of the `seed` and `recalloc` policies.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecallocParams {
    /// Forecast quantile planned for; also sets the unmet-demand penalty (module docs).
    pub service_level: f64,
    /// Planning horizon in trace steps.
    pub horizon_steps: usize,
    /// Trace time between forecaster refits.
    pub refit_seconds: u64,
    /// Fewest trace steps between refits, so that a coarse trace (daily points) is not refitted
    /// at every point; between refits the model is updated with each new point.
    pub min_refit_steps: usize,
    /// Most recent history points a refit uses.
    pub max_history_steps: usize,
    /// Extra cost of one replica change, in replica-seconds. A started pod is already charged
    /// the start-up it is paid for while not serving; this adds any further churn cost
    /// (scheduling, cache warm-up) an operator wants to weigh. Default 0.
    pub churn_seconds: f64,
    /// Lower edge of the forecast band recorded for charts.
    pub band_low: f64,
}

impl Default for RecallocParams {
    fn default() -> Self {
        Self {
            service_level: 0.99,
            horizon_steps: 30,
            refit_seconds: 3600,
            min_refit_steps: 24,
            max_history_steps: 20_160,
            churn_seconds: 0.0,
            band_low: 0.1,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimParams {
    /// Demand one ready pod serves (same unit as the trace values).
    pub capacity_per_pod: f64,
    /// Seconds from requesting a pod until it serves.
    pub startup_seconds: u64,
    pub min_replicas: u32,
    pub max_replicas: u32,
    /// Leading trace time that every policy runs through but no metric counts (history for
    /// the forecasters, as a monitoring system would already have). 0 scores the cold start.
    pub warmup_seconds: u64,
    pub hpa: HpaParams,
    pub recalloc: RecallocParams,
}

impl SimParams {
    /// Defaults around the two required settings: 1..=1000 replicas, Kubernetes HPA
    /// defaults, service level 0.99.
    pub fn new(capacity_per_pod: f64, startup_seconds: u64) -> Self {
        Self {
            capacity_per_pod,
            startup_seconds,
            min_replicas: 1,
            max_replicas: 1000,
            warmup_seconds: 0,
            hpa: HpaParams::default(),
            recalloc: RecallocParams::default(),
        }
    }

    fn validate(&self) -> Result<(), SimError> {
        let bad = |s: &str| Err(SimError::InvalidParams(s.to_string()));
        if !(self.capacity_per_pod.is_finite() && self.capacity_per_pod > 0.0) {
            return bad("capacity per pod must be a finite number > 0");
        }
        if self.min_replicas == 0 || self.min_replicas > self.max_replicas {
            return bad("replicas must satisfy 1 ≤ min ≤ max");
        }
        let h = &self.hpa;
        if !(h.target_utilisation.is_finite() && h.target_utilisation > 0.0) {
            return bad("hpa target utilisation must be > 0");
        }
        if !(h.tolerance.is_finite() && h.tolerance >= 0.0) {
            return bad("hpa tolerance must be ≥ 0");
        }
        if h.sync_seconds == 0 {
            return bad("hpa sync period must be at least one second");
        }
        if !(h.scale_up_percent.is_finite() && h.scale_up_percent >= 0.0) {
            return bad("hpa scale-up percent must be ≥ 0");
        }
        let r = &self.recalloc;
        if !(r.service_level > 0.0 && r.service_level < 1.0) {
            return bad("service level must be in (0, 1)");
        }
        if !(r.band_low > 0.0 && r.band_low < 1.0) {
            return bad("band low quantile must be in (0, 1)");
        }
        if !(r.churn_seconds.is_finite() && r.churn_seconds >= 0.0) {
            return bad("churn cost must be ≥ 0");
        }
        if r.horizon_steps == 0 || r.max_history_steps == 0 {
            return bad("horizon and history must be at least one step");
        }
        if r.horizon_steps > 10_000 {
            return bad("planning horizon must be at most 10000 steps");
        }
        Ok(())
    }
}

/// An autoscaling policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    Hpa,
    Seed,
    Recalloc,
}

impl Policy {
    pub const ALL: [Policy; 3] = [Policy::Hpa, Policy::Seed, Policy::Recalloc];

    pub fn name(&self) -> &'static str {
        match self {
            Policy::Hpa => "hpa",
            Policy::Seed => "seed",
            Policy::Recalloc => "recalloc",
        }
    }
}

impl FromStr for Policy {
    type Err = SimError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "hpa" => Ok(Policy::Hpa),
            "seed" => Ok(Policy::Seed),
            "recalloc" => Ok(Policy::Recalloc),
            _ => Err(SimError::UnknownPolicy(s.to_string())),
        }
    }
}

/// What one policy provisioned over the trace (see the module docs for definitions).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicyReport {
    pub slack: f64,
    pub slack_over_demand: f64,
    pub under_provisioned_seconds: f64,
    pub unmet_demand: f64,
    pub scaling_actions: u64,
    pub mean_replicas: f64,
    pub peak_replicas: u32,
    /// ∫ ready capacity dt.
    pub provisioned: f64,
    /// ∫ needed pods × capacity per pod dt.
    pub needed: f64,
    /// ∫ demand dt.
    pub demand: f64,
    pub duration_seconds: f64,
}

/// Per-step series for a chart: demand, the forecast band for each step (made one lead time
/// before it), and each policy's mean ready capacity during the step.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct Series {
    pub ts: Vec<i64>,
    pub demand: Vec<f64>,
    /// Point forecast, `band_low` and `service_level` quantiles (NaN before the first forecast).
    pub forecast: Vec<f64>,
    pub forecast_low: Vec<f64>,
    pub forecast_high: Vec<f64>,
    pub capacity: BTreeMap<String, Vec<f64>>,
}

/// Every policy's report (keyed by policy name) and the chart series. The series is large and
/// is left out of the serialised form; serialise it separately when a chart needs it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    pub policies: BTreeMap<String, PolicyReport>,
    /// The `slack_over_demand` of a clairvoyant policy (see [`oracle_slack`]): no policy that
    /// is never short can go below it. (Its `slack` is 0 by definition.)
    pub oracle_slack_over_demand: f64,
    #[serde(skip)]
    pub series: Series,
}

/// Runs one policy.
pub fn run(trace: &Trace, params: &SimParams, policy: Policy) -> Result<PolicyReport, SimError> {
    params.validate()?;
    let outlook = match policy {
        Policy::Hpa => None,
        _ => Some(Outlook::build(trace, params)?),
    };
    Ok(replay(trace, params, policy, outlook.as_ref())?.0)
}

/// Runs all three policies on the same trace (sharing one forecast pass).
pub fn run_all(trace: &Trace, params: &SimParams) -> Result<Comparison, SimError> {
    params.validate()?;
    let outlook = Outlook::build(trace, params)?;
    let mut policies = BTreeMap::new();
    let mut series = Series {
        ts: trace.timestamps().to_vec(),
        demand: trace.values().to_vec(),
        forecast: outlook.band.iter().map(|b| b.0).collect(),
        forecast_low: outlook.band.iter().map(|b| b.1).collect(),
        forecast_high: outlook.band.iter().map(|b| b.2).collect(),
        capacity: BTreeMap::new(),
    };
    for policy in Policy::ALL {
        let (report, capacity) = replay(trace, params, policy, Some(&outlook))?;
        policies.insert(policy.name().to_string(), report);
        series.capacity.insert(policy.name().to_string(), capacity);
    }
    Ok(Comparison {
        policies,
        oracle_slack_over_demand: oracle_slack(trace, params)?,
        series,
    })
}

/// The slack of a clairvoyant policy whose ready pods are at every instant exactly
/// max(min replicas, ⌈demand / capacity⌉), over the scored part of the trace. With coarse pods
/// or a high replica floor this bound alone can be large: it shows how much of any policy's
/// slack is granularity rather than decisions.
pub fn oracle_slack(trace: &Trace, params: &SimParams) -> Result<f64, SimError> {
    params.validate()?;
    let ts = trace.timestamps();
    let values = trace.values();
    let scored_from = ts[0].saturating_add(params.warmup_seconds.min(i64::MAX as u64) as i64);
    let end = trace.end();
    let (mut demand, mut capacity) = (0.0, 0.0);
    for (i, (&t, &d)) in ts.iter().zip(values).enumerate() {
        let next = ts.get(i + 1).copied().unwrap_or(end);
        let dt = (next - t.max(scored_from)).max(0) as f64;
        demand += d * dt;
        capacity += needed_pods(d, params) as f64 * params.capacity_per_pod * dt;
    }
    Ok(ratio_minus_one(capacity, demand))
}

/// The pods a demand needs: max(min replicas, ⌈demand / capacity⌉), at most max replicas.
fn needed_pods(demand: f64, params: &SimParams) -> u32 {
    ceil_u32(demand / params.capacity_per_pod).clamp(params.min_replicas, params.max_replicas)
}

fn ratio_minus_one(provisioned: f64, needed: f64) -> f64 {
    if needed > 0.0 {
        provisioned / needed - 1.0
    } else {
        0.0
    }
}

/// The steps a new pod misses: its start-up in steps, rounded half up. With one-minute steps
/// and a 60 s start-up that is 1 (a pod requested at a step boundary serves from the next
/// one); with daily steps it is 0 (the pod serves all but the first minute of the step).
fn lead_steps(params: &SimParams, step: u64) -> usize {
    ((2 * params.startup_seconds + step) / (2 * step)) as usize
}

/// The forecast quantile to start pods for when they start faster than a step lasts (daily
/// points, say). Such pods are only needed from the step's start until the re-plan at that
/// start has seen the actual demand and let the surplus go: each one costs about one start-up
/// of a pod, against a whole step for a planned one, while a shortfall costs the same breach
/// as ever. The newsvendor rule with those prices, τ = p / (p + c) with p = s / (1 − s) and
/// c = start-up / step, gives a quantile close to 1: start what the worst errors seen would
/// need. (With start-up ≥ step it is just the service level.)
fn prewarm_quantile(params: &SimParams, step: u64) -> f64 {
    let s = params.recalloc.service_level;
    let c = (params.startup_seconds as f64 / step.max(1) as f64).min(1.0);
    let tau = s / (s + (1.0 - s) * c);
    tau.clamp(s, 1.0 - 1e-9)
}

/// The forecasts the seed and recalloc policies see at each trace step, made from the history
/// up to that step only.
///
/// The planning path is [`crate::forecast::planning_path`].
struct Outlook {
    /// high[k][h − 1]: the planning demand for step k + h, made at step k.
    high: Vec<Vec<f64>>,
    /// prewarm[k]: the demand to start pods for before step k + 1 (see [`prewarm_quantile`]).
    prewarm: Vec<f64>,
    /// (point, low, high) for step k, made at step k − lead (NaN when none).
    band: Vec<(f64, f64, f64)>,
}

impl Outlook {
    fn build(trace: &Trace, params: &SimParams) -> Result<Self, SimError> {
        let r = &params.recalloc;
        let step = trace.step_seconds();
        let values = trace.values();
        let n = values.len();
        let lead = lead_steps(params, step);
        let horizon = r.horizon_steps.max(lead + 1);
        let refit_every = ((r.refit_seconds as f64 / step as f64).round() as usize)
            .max(r.min_refit_steps)
            .max(1);
        let options = FitOptions {
            max_horizon: horizon,
            eval_quantiles: vec![0.5, r.service_level],
            ..FitOptions::default()
        };
        let quantiles = [r.band_low, r.service_level, prewarm_quantile(params, step)];
        let mut model: Option<FittedForecaster> = None;
        let mut last_fit = 0;
        let mut high = Vec::with_capacity(n);
        let mut prewarm = Vec::with_capacity(n);
        let mut band = vec![(f64::NAN, f64::NAN, f64::NAN); n];
        for k in 0..n {
            let refit = match model {
                None => true,
                // Short histories change fast: refit at every step until there is some.
                Some(_) => k < 64 || k - last_fit >= refit_every,
            };
            if refit {
                let from = (k + 1).saturating_sub(r.max_history_steps);
                model = Some(Forecaster::fit_with(&values[from..=k], step, &options)?);
                last_fit = k;
            } else if let Some(m) = model.as_mut() {
                m.observe(values[k]);
            }
            let Some(m) = model.as_ref() else {
                continue;
            };
            let f = m.forecast(horizon, &quantiles)?;
            let (lo, hi) = (&f.quantiles[0].1, &f.quantiles[1].1);
            let h = lead.max(1) - 1;
            if k + h + 1 < n {
                band[k + h + 1] = (f.point[h], lo[h], hi[h]);
            }
            high.push(crate::forecast::planning_path(&f.point, hi, lead));
            prewarm.push(f.quantiles[2].1[0]);
        }
        Ok(Self {
            high,
            prewarm,
            band,
        })
    }
}

/// What a controller sees at a sync.
struct SyncCtx {
    now: i64,
    step: usize,
    new_step: bool,
    demand: f64,
    ready: u32,
    /// Pods that exist (ready or starting) = the current desired count.
    pods: u32,
    /// When the next trace step starts (the trace end after the last).
    next_boundary: i64,
}

trait Controller {
    fn decide(&mut self, c: &SyncCtx) -> Result<u32, SimError>;
    /// True when, with the same demand and pods, later syncs would change nothing.
    fn idle(&self, c: &SyncCtx) -> bool;
    /// Syncs were skipped while idle; the last would have run at `at`.
    fn skipped(&mut self, _at: i64) {}
    /// A time before the next trace step at which an idle controller wants to act.
    fn wake(&self, _c: &SyncCtx) -> Option<i64> {
        None
    }
}

struct Hpa<'a> {
    p: &'a HpaParams,
    capacity: f64,
    min: u32,
    max: u32,
    /// (time, recommendation) for the scale-down stabilisation window.
    window: VecDeque<(i64, u32)>,
    last_recommendation: u32,
}

impl Hpa<'_> {
    /// The replica calculator (pkg/controller/podautoscaler/replica_calculator.go).
    fn recommend(&self, c: &SyncCtx) -> u32 {
        let current = c.pods;
        if c.ready == 0 {
            return current; // no metrics: no change
        }
        let target = self.p.target_utilisation;
        let ratio = c.demand / (c.ready as f64 * self.capacity) / target;
        let unready = current.saturating_sub(c.ready);
        if !(unready > 0 && ratio > 1.0) {
            if (ratio - 1.0).abs() <= self.p.tolerance {
                return current;
            }
            return ceil_u32(ratio * c.ready as f64);
        }
        // Scale-up with starting pods: count them at zero load and recompute.
        let ratio2 = c.demand / (current as f64 * self.capacity) / target;
        if (ratio2 - 1.0).abs() <= self.p.tolerance || ratio2 < 1.0 {
            return current;
        }
        ceil_u32(ratio2 * current as f64).max(current)
    }
}

fn ceil_u32(x: f64) -> u32 {
    x.ceil().clamp(0.0, u32::MAX as f64) as u32
}

impl Controller for Hpa<'_> {
    fn decide(&mut self, c: &SyncCtx) -> Result<u32, SimError> {
        let current = c.pods;
        let rec = self.recommend(c);
        self.last_recommendation = rec;
        let cutoff = c.now - self.p.scale_down_stabilisation_seconds as i64;
        while self.window.front().is_some_and(|&(t, _)| t <= cutoff) {
            self.window.pop_front();
        }
        self.window.push_back((c.now, rec));
        let down = self.window.iter().map(|w| w.1).max().unwrap_or(rec);
        let mut desired = if current < rec {
            rec
        } else if current > down {
            down
        } else {
            current
        };
        if desired > current {
            let by_pct = (current as f64 * (1.0 + self.p.scale_up_percent / 100.0)).floor();
            let limit = (by_pct as u32).max(current.saturating_add(self.p.scale_up_pods));
            desired = desired.min(limit);
        }
        Ok(desired.clamp(self.min, self.max))
    }

    fn idle(&self, c: &SyncCtx) -> bool {
        c.ready == c.pods
            && self.last_recommendation == c.pods
            && self.window.iter().all(|w| w.1 <= c.pods)
    }

    fn skipped(&mut self, at: i64) {
        self.window.push_back((at, self.last_recommendation));
    }
}

/// The seed model as a policy: the running maximum of the planning forecast.
struct Seed<'a> {
    outlook: &'a Outlook,
    values: &'a [f64],
    lead: usize,
    capacity: f64,
    min: u32,
    max: u32,
    peak: f64,
}

impl Controller for Seed<'_> {
    fn decide(&mut self, c: &SyncCtx) -> Result<u32, SimError> {
        if c.new_step {
            let ahead = &self.outlook.high[c.step];
            let upcoming = ahead[..self.lead.min(ahead.len())]
                .iter()
                .copied()
                .fold(self.values[c.step], f64::max);
            self.peak = self.peak.max(upcoming);
        }
        Ok(ceil_u32(self.peak / self.capacity).clamp(self.min, self.max))
    }

    fn idle(&self, _: &SyncCtx) -> bool {
        true
    }
}

/// The receding-horizon planner on the service-level quantile.
struct Recalloc<'a> {
    outlook: &'a Outlook,
    values: &'a [f64],
    params: &'a SimParams,
    lead: usize,
    step_seconds: u64,
    /// Whether the pods for the next step's forecast were already requested in this step.
    prewarmed: bool,
}

impl Recalloc<'_> {
    /// When pods start faster than a step lasts, they are requested one start-up before the
    /// next step, for that step's forecast, so that they are ready when it begins.
    fn prewarm_at(&self, c: &SyncCtx) -> Option<i64> {
        let startup = self.params.startup_seconds;
        (!self.prewarmed && startup < self.step_seconds && c.step + 1 < self.outlook.high.len())
            .then(|| c.next_boundary - startup as i64)
    }
}

impl Controller for Recalloc<'_> {
    fn decide(&mut self, c: &SyncCtx) -> Result<u32, SimError> {
        if !c.new_step {
            if self.prewarm_at(c).is_some_and(|t| c.now >= t) {
                self.prewarmed = true;
                let next = self.outlook.prewarm[c.step];
                let need = ceil_u32(next / self.params.capacity_per_pod);
                return Ok(c.pods.max(need));
            }
            return Ok(c.pods);
        }
        self.prewarmed = false;
        let p = self.params;
        let kappa = p.capacity_per_pod;
        let s = p.recalloc.service_level;
        let mut demand = Vec::with_capacity(self.outlook.high[c.step].len() + 1);
        demand.push(self.values[c.step]);
        demand.extend_from_slice(&self.outlook.high[c.step]);
        let deployment = Deployment {
            name: "trace".into(),
            capacity: kappa,
            demand,
            min_replicas: p.min_replicas,
            max_replicas: p.max_replicas,
            max_step: p.max_replicas,
            replica_cost: 1.0,
            unmet_penalty: s / (1.0 - s) / kappa,
            breach_penalty: s / (1.0 - s),
            change_cost: p.recalloc.churn_seconds / self.step_seconds as f64,
            lead_time: self.lead,
            initial: c.pods,
            usage: Vec::new(),
        };
        let first = planner::plan_first_step(&Problem {
            deployments: vec![deployment],
            budgets: Vec::new(),
        })?;
        Ok(first.first().copied().unwrap_or(c.pods))
    }

    fn idle(&self, _: &SyncCtx) -> bool {
        true
    }

    fn wake(&self, c: &SyncCtx) -> Option<i64> {
        self.prewarm_at(c).filter(|&t| t > c.now)
    }
}

/// Pods of one policy: ready ones, and batches of starting ones by ready time (FIFO, since
/// every pod takes the same start-up).
struct Pods {
    ready: u32,
    starting: VecDeque<(i64, u32)>,
    starting_count: u32,
}

impl Pods {
    fn total(&self) -> u32 {
        self.ready + self.starting_count
    }

    /// When the next starting pods become ready.
    fn next_ready(&self) -> Option<i64> {
        self.starting.front().map(|b| b.0)
    }

    fn promote(&mut self, now: i64) {
        while let Some(&(t, n)) = self.starting.front()
            && t <= now
        {
            self.starting.pop_front();
            self.starting_count -= n;
            self.ready += n;
        }
    }

    /// Scales to `desired`: new pods start now; removals take starting pods first (newest
    /// first), as the ReplicaSet controller deletes not-ready pods first.
    fn scale(&mut self, desired: u32, now: i64, startup: i64) {
        let total = self.total();
        if desired > total {
            self.starting.push_back((now + startup, desired - total));
            self.starting_count += desired - total;
        } else {
            let mut remove = total - desired;
            while remove > 0
                && let Some(last) = self.starting.back_mut()
            {
                let take = remove.min(last.1);
                last.1 -= take;
                self.starting_count -= take;
                remove -= take;
                if last.1 == 0 {
                    self.starting.pop_back();
                }
            }
            self.ready -= remove.min(self.ready);
        }
    }
}

fn replay(
    trace: &Trace,
    params: &SimParams,
    policy: Policy,
    outlook: Option<&Outlook>,
) -> Result<(PolicyReport, Vec<f64>), SimError> {
    let ts = trace.timestamps();
    let values = trace.values();
    let n = ts.len();
    let step = trace.step_seconds();
    let lead = lead_steps(params, step);
    let kappa = params.capacity_per_pod;
    let (min, max) = (params.min_replicas, params.max_replicas);
    let empty = Outlook {
        high: Vec::new(),
        prewarm: Vec::new(),
        band: Vec::new(),
    };
    let outlook = outlook.unwrap_or(&empty);
    let mut controller: Box<dyn Controller + '_> = match policy {
        Policy::Hpa => Box::new(Hpa {
            p: &params.hpa,
            capacity: kappa,
            min,
            max,
            window: VecDeque::new(),
            last_recommendation: 0,
        }),
        Policy::Seed => Box::new(Seed {
            outlook,
            values,
            lead: lead.max(1),
            capacity: kappa,
            min,
            max,
            peak: 0.0,
        }),
        Policy::Recalloc => Box::new(Recalloc {
            outlook,
            values,
            params,
            lead,
            step_seconds: step,
            prewarmed: false,
        }),
    };
    if policy != Policy::Hpa && outlook.high.len() != n {
        return Err(SimError::InvalidParams(
            "forecasts do not cover the trace".into(),
        ));
    }

    let t0 = ts[0];
    let t_end = trace.end();
    let scored_from = t0.saturating_add(params.warmup_seconds.min(i64::MAX as u64) as i64);
    if scored_from >= t_end {
        return Err(SimError::InvalidParams(
            "the warm-up covers the whole trace".into(),
        ));
    }
    let sync = params.hpa.sync_seconds as i64;
    let startup = params.startup_seconds as i64;
    // Every policy starts with just enough ready pods for the first demand.
    let mut pods = Pods {
        ready: ceil_u32(values[0] / kappa).clamp(min, max),
        starting: VecDeque::new(),
        starting_count: 0,
    };
    let mut desired = pods.total();
    let mut actions = 0u64;
    let (mut demand_int, mut cap_int, mut pods_int, mut needed_int) = (0.0, 0.0, 0.0, 0.0);
    let (mut under, mut unmet) = (0.0, 0.0);
    let mut peak = if scored_from <= t0 { desired } else { 0 };
    let mut capacity_by_step = vec![0.0; n];
    let mut k = 0; // step at `now`
    let mut decided_step = usize::MAX;
    let mut now = t0;
    while now < t_end {
        while k + 1 < n && ts[k + 1] <= now {
            k += 1;
        }
        pods.promote(now);
        let ctx = SyncCtx {
            now,
            step: k,
            new_step: decided_step != k,
            demand: values[k],
            ready: pods.ready,
            pods: pods.total(),
            next_boundary: if k + 1 < n { ts[k + 1] } else { t_end },
        };
        decided_step = k;
        let want = controller.decide(&ctx)?.clamp(min, max);
        let scored = now >= scored_from;
        if want != desired {
            actions += u64::from(scored);
            desired = want;
        }
        pods.scale(desired, now, startup);
        if scored {
            peak = peak.max(pods.total());
        }

        let mut next = now + sync;
        let after = SyncCtx {
            ready: pods.ready,
            pods: pods.total(),
            ..ctx
        };
        if controller.idle(&after) {
            // Nothing changes until the demand does: jump to the first sync at or after the
            // next trace point (or a pod becoming ready, which the controller then sees).
            let mut wake = if k + 1 < n { ts[k + 1] } else { t_end };
            if let Some(r) = pods.next_ready() {
                wake = wake.min(r);
            }
            if let Some(w) = controller.wake(&after) {
                wake = wake.min(w);
            }
            let jump = t0 + (wake - t0 + sync - 1).div_euclid(sync) * sync;
            if jump > next {
                controller.skipped(jump - sync);
                next = jump;
            }
        }

        // Integrate exactly over [now, next): segments end at trace points and ready times.
        let end = next.min(t_end);
        let mut cur = now;
        let mut kk = k;
        while cur < end {
            pods.promote(cur);
            while kk + 1 < n && ts[kk + 1] <= cur {
                kk += 1;
            }
            let mut seg_end = end;
            if kk + 1 < n {
                seg_end = seg_end.min(ts[kk + 1]);
            }
            if let Some(r) = pods.next_ready() {
                seg_end = seg_end.min(r);
            }
            if cur < scored_from {
                seg_end = seg_end.min(scored_from);
            }
            let dt = (seg_end - cur) as f64;
            let d = values[kk];
            let cap = pods.ready as f64 * kappa;
            capacity_by_step[kk] += cap * dt;
            if cur >= scored_from {
                demand_int += d * dt;
                cap_int += cap * dt;
                pods_int += pods.total() as f64 * dt;
                needed_int += needed_pods(d, params) as f64 * kappa * dt;
                if cap < d {
                    under += dt;
                    unmet += (d - cap) * dt;
                }
            }
            cur = seg_end;
        }
        now = next;
    }
    for (i, c) in capacity_by_step.iter_mut().enumerate() {
        let next = if i + 1 < n { ts[i + 1] } else { t_end };
        *c /= (next - ts[i]) as f64;
    }
    let duration = (t_end - scored_from) as f64;
    Ok((
        PolicyReport {
            slack: ratio_minus_one(cap_int, needed_int),
            slack_over_demand: ratio_minus_one(cap_int, demand_int),
            under_provisioned_seconds: under,
            unmet_demand: unmet,
            scaling_actions: actions,
            mean_replicas: pods_int / duration,
            peak_replicas: peak,
            provisioned: cap_int,
            needed: needed_int,
            demand: demand_int,
            duration_seconds: duration,
        },
        capacity_by_step,
    ))
}

#[cfg(test)]
mod tests;

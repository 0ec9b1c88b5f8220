//! From readings to a plan (pure): per deployment a history of demand readings at the tick
//! step, a forecast with quantiles, and one planner problem that couples the deployments
//! through the configured budgets. The server calls this every tick, off the async runtime.

use std::collections::VecDeque;
use std::time::Instant;

use recalloc_alloc::forecast::{FitOptions, Forecast, ForecastError, Forecaster, planning_path};
use recalloc_alloc::planner::{self, Budget, Deployment, PlanError, Problem, Requests};
use recalloc_common::config::{ManagedDeployment, SchedulerConfig};
use serde::Serialize;

#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum PlanningError {
    #[error("invalid config key {key}: {message}")]
    Config { key: String, message: String },
    #[error("deployment `{0}` has no readings yet")]
    NoReadings(String),
    #[error("unknown deployment `{0}`")]
    UnknownDeployment(String),
    #[error("forecast for `{name}`: {source}")]
    Forecast { name: String, source: ForecastError },
    #[error(transparent)]
    Plan(#[from] PlanError),
}

/// Checks what serde cannot: names, capacities, replica bounds, budgets.
pub fn validate(cfg: &SchedulerConfig) -> Result<(), PlanningError> {
    let bad = |key: String, message: &str| {
        Err(PlanningError::Config {
            key,
            message: message.to_string(),
        })
    };
    if cfg.tick_seconds == 0 {
        return bad("scheduler.tick_seconds".into(), "must be at least 1");
    }
    if cfg.horizon_steps == 0 || cfg.horizon_steps > 10_000 {
        return bad("scheduler.horizon_steps".into(), "must be in 1..=10000");
    }
    if cfg.history_steps < 2 {
        return bad("scheduler.history_steps".into(), "must be at least 2");
    }
    if !(cfg.service_level > 0.0 && cfg.service_level < 1.0) {
        return bad("scheduler.service_level".into(), "must be in (0, 1)");
    }
    if !["auto", "kube", "dry_run"].contains(&cfg.mode.as_str()) {
        return bad("scheduler.mode".into(), "must be auto, kube or dry_run");
    }
    if cfg.lease_seconds == 0 {
        return bad("scheduler.lease_seconds".into(), "must be at least 1");
    }
    for (w, key) in [
        (cfg.cpu_weight, "cpu_weight"),
        (cfg.memory_gib_weight, "memory_gib_weight"),
        (cfg.gpu_weight, "gpu_weight"),
    ] {
        if !(w.is_finite() && w >= 0.0) {
            return bad(format!("scheduler.{key}"), "must be a finite number ≥ 0");
        }
    }
    for (i, b) in cfg.budgets.iter().enumerate() {
        if !["cpu", "memory_gib", "gpu"].contains(&b.resource.as_str()) {
            return bad(
                format!("scheduler.budgets[{i}].resource"),
                "must be cpu, memory_gib or gpu",
            );
        }
        if !(b.limit.is_finite() && b.limit >= 0.0) {
            return bad(
                format!("scheduler.budgets[{i}].limit"),
                "must be a finite number ≥ 0",
            );
        }
    }
    let mut names = std::collections::BTreeSet::new();
    for (i, d) in cfg.deployments.iter().enumerate() {
        let key = |field: &str| format!("scheduler.deployments[{i}].{field}");
        if !is_dns_label(&d.name) {
            return bad(
                key("name"),
                "must be a Kubernetes name (lowercase letters, digits and '-', at most 63)",
            );
        }
        if !names.insert(d.name.as_str()) {
            return bad(key("name"), "appears twice");
        }
        if !(d.capacity_per_replica.is_finite() && d.capacity_per_replica > 0.0) {
            return bad(key("capacity_per_replica"), "must be a finite number > 0");
        }
        if d.min_replicas > d.max_replicas {
            return bad(key("min_replicas"), "must not exceed max_replicas");
        }
        if d.max_step == 0 {
            return bad(key("max_step"), "must be at least 1");
        }
        for (v, f) in [(d.cpu, "cpu"), (d.memory_gib, "memory_gib"), (d.gpu, "gpu")] {
            if !(v.is_finite() && v >= 0.0) {
                return bad(key(f), "must be a finite number ≥ 0");
            }
        }
    }
    Ok(())
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Demand readings of one deployment at the tick step, oldest first.
#[derive(Debug, Clone, Default)]
pub struct History {
    values: VecDeque<f64>,
    max: usize,
    /// Ticks whose reading failed and repeat the previous value.
    pub gaps: u64,
}

impl History {
    pub fn new(max: usize) -> Self {
        Self {
            values: VecDeque::new(),
            max: max.max(2),
            gaps: 0,
        }
    }

    /// Records a tick: the reading, or `None` when it failed (the last value is repeated so
    /// the series keeps its step; nothing is recorded before the first reading).
    pub fn push(&mut self, reading: Option<f64>) {
        let v = match reading.filter(|v| v.is_finite()) {
            Some(v) => v.max(0.0),
            None => {
                let Some(&last) = self.values.back() else {
                    return;
                };
                self.gaps += 1;
                last
            }
        };
        if self.values.len() == self.max {
            self.values.pop_front();
        }
        self.values.push_back(v);
    }

    pub fn values(&self) -> Vec<f64> {
        self.values.iter().copied().collect()
    }

    pub fn last(&self) -> Option<f64> {
        self.values.back().copied()
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

/// Ticks a new pod misses: its start-up in ticks, rounded half up.
pub fn lead_steps(startup_seconds: u32, tick_seconds: u32) -> usize {
    let (s, t) = (startup_seconds as u64, tick_seconds.max(1) as u64);
    ((2 * s + t) / (2 * t)) as usize
}

/// A forecast of one deployment's demand for ticks 1..=horizon after the last reading.
pub fn forecast(
    name: &str,
    history: &[f64],
    tick_seconds: u32,
    horizon: usize,
    quantiles: &[f64],
) -> Result<(Forecast, f64), PlanningError> {
    if history.is_empty() {
        return Err(PlanningError::NoReadings(name.to_string()));
    }
    // Candidates are scored at the median and the quantiles asked for (the plan asks for
    // the service level): the model is chosen for the loss it will be used at.
    let mut eval_quantiles = vec![0.5];
    eval_quantiles.extend(quantiles.iter().copied().filter(|&q| q != 0.5));
    let options = FitOptions {
        max_horizon: horizon.max(1),
        eval_quantiles,
        ..FitOptions::default()
    };
    let err = |source| PlanningError::Forecast {
        name: name.to_string(),
        source,
    };
    let model = Forecaster::fit_with(history, tick_seconds as u64, &options).map_err(err)?;
    // The chosen candidate's holdout loss (none for a short history).
    let pinball = model
        .candidates()
        .iter()
        .filter(|c| c.method == model.method() && c.errors == model.error_kind())
        .map(|c| c.pinball)
        .fold(f64::NAN, f64::min);
    let f = model.forecast(horizon.max(1), quantiles).map_err(err)?;
    Ok((f, pinball))
}

/// One deployment's part of the plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeploymentPlan {
    pub name: String,
    /// Replicas that exist now (from the cluster, or the last plan when dry).
    pub current_replicas: u32,
    /// Replicas to request now (receding horizon: the first step, looking one lead ahead).
    pub request: u32,
    /// Replicas serving in each step; step 0 is now.
    pub replicas: Vec<u32>,
    /// Demand planned for in each step: the reading now, then the service-level path.
    pub demand: Vec<f64>,
    /// Point forecast for steps 1..=horizon.
    pub forecast: Vec<f64>,
    pub capacity_per_replica: f64,
    pub lead_steps: usize,
    pub method: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    pub deployments: Vec<DeploymentPlan>,
    pub step_seconds: u32,
    pub cost: f64,
    /// Relative gap to the planner's proven lower bound (0 = optimal).
    pub gap: f64,
    pub solve_ms: f64,
    pub solver: String,
}

/// What the planner needs of one deployment now.
pub struct Input<'a> {
    pub spec: &'a ManagedDeployment,
    pub history: &'a [f64],
    pub current_replicas: u32,
}

/// Forecasts every deployment with readings and plans them together. Deployments without
/// readings yet are left out (they keep their replicas).
pub fn plan(cfg: &SchedulerConfig, inputs: &[Input<'_>]) -> Result<Plan, PlanningError> {
    let tick = cfg.tick_seconds;
    let horizon = cfg.horizon_steps as usize;
    let s = cfg.service_level;
    let weights = Requests {
        cpu: cfg.cpu_weight,
        memory_gib: cfg.memory_gib_weight,
        gpu: cfg.gpu_weight,
    };
    let budgets: Vec<Budget> = cfg
        .budgets
        .iter()
        .map(|b| Budget {
            name: b.resource.clone(),
            limit: b.limit,
        })
        .collect();
    let mut problem = Problem {
        deployments: Vec::new(),
        budgets,
    };
    let mut extra = Vec::new();
    for input in inputs.iter().filter(|i| !i.history.is_empty()) {
        let d = input.spec;
        let lead = lead_steps(d.startup_seconds, tick);
        let (f, _) = forecast(&d.name, input.history, tick, horizon.max(lead + 1), &[s])?;
        let high = &f.quantiles[0].1;
        let mut demand = Vec::with_capacity(horizon + 1);
        demand.push(*input.history.last().expect("not empty"));
        demand.extend(
            planning_path(&f.point, high, lead)
                .into_iter()
                .take(horizon),
        );
        let requests = Requests {
            cpu: d.cpu,
            memory_gib: d.memory_gib,
            gpu: d.gpu,
        };
        // A replica costs its weighted requests (at least a token amount, so that a free
        // replica is still not held for nothing); missing demand is priced by the newsvendor
        // rule so that the service level is the optimal provision (see the simulator docs).
        let replica_cost = requests.cost(&weights).max(1e-3);
        let usage = cfg
            .budgets
            .iter()
            .map(|b| match b.resource.as_str() {
                "cpu" => d.cpu,
                "memory_gib" => d.memory_gib,
                _ => d.gpu,
            })
            .collect();
        problem.deployments.push(Deployment {
            name: d.name.clone(),
            capacity: d.capacity_per_replica,
            demand,
            min_replicas: d.min_replicas,
            max_replicas: d.max_replicas,
            max_step: d.max_step,
            replica_cost,
            unmet_penalty: replica_cost * s / (1.0 - s) / d.capacity_per_replica,
            breach_penalty: replica_cost * s / (1.0 - s),
            change_cost: 0.0,
            lead_time: lead,
            initial: input.current_replicas,
            usage,
        });
        extra.push((
            f.point.into_iter().take(horizon).collect::<Vec<_>>(),
            f.method,
        ));
    }
    let started = Instant::now();
    let solved = if problem.deployments.is_empty() {
        None
    } else {
        Some(planner::solve(&problem)?)
    };
    let solve_ms = started.elapsed().as_secs_f64() * 1e3;
    let Some(solved) = solved else {
        return Ok(Plan {
            deployments: Vec::new(),
            step_seconds: tick,
            cost: 0.0,
            gap: 0.0,
            solve_ms,
            solver: solver_name(&problem),
        });
    };
    let requests = planner::requests_now(&problem, &solved);
    let deployments = problem
        .deployments
        .iter()
        .zip(solved.replicas.iter())
        .zip(requests)
        .zip(extra)
        .map(
            |(((d, replicas), request), (forecast, method))| DeploymentPlan {
                name: d.name.clone(),
                current_replicas: d.initial,
                request,
                replicas: replicas.clone(),
                demand: d.demand.clone(),
                forecast,
                capacity_per_replica: d.capacity,
                lead_steps: d.lead_time,
                method,
            },
        )
        .collect();
    Ok(Plan {
        deployments,
        step_seconds: tick,
        cost: solved.cost,
        gap: solved.gap(),
        solve_ms,
        solver: solver_name(&problem),
    })
}

fn solver_name(problem: &Problem) -> String {
    if problem.budgets.is_empty() || problem.deployments.len() < 2 {
        "dynamic programming (exact)".into()
    } else {
        "dynamic programming + Lagrangian relaxation over budgets".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use recalloc_common::config::{BudgetConfig, Signal};

    fn deployment(name: &str, capacity: f64, gpu: f64) -> ManagedDeployment {
        ManagedDeployment {
            name: name.into(),
            signal: Signal::Prometheus { query: "x".into() },
            capacity_per_replica: capacity,
            min_replicas: 1,
            max_replicas: 20,
            max_step: 20,
            startup_seconds: 60,
            gpu,
            ..ManagedDeployment::default()
        }
    }

    fn config(deployments: Vec<ManagedDeployment>) -> SchedulerConfig {
        SchedulerConfig {
            deployments,
            horizon_steps: 10,
            ..SchedulerConfig::default()
        }
    }

    #[test]
    fn history_keeps_the_step_through_failed_readings() {
        let mut h = History::new(3);
        h.push(None); // nothing to repeat yet
        assert!(h.is_empty());
        for r in [Some(1.0), None, Some(-2.0), Some(f64::NAN), Some(5.0)] {
            h.push(r);
        }
        // 1, 1 (gap), 0 (clamped), 0 (NaN = gap), 5 → the last three kept.
        assert_eq!(h.values(), vec![0.0, 0.0, 5.0]);
        assert_eq!(h.gaps, 2);
    }

    #[test]
    fn steady_demand_is_planned_at_just_enough_replicas() {
        let cfg = config(vec![deployment("web", 10.0, 0.0)]);
        let history = vec![45.0; 200];
        let plan = plan(
            &cfg,
            &[Input {
                spec: &cfg.deployments[0],
                history: &history,
                current_replicas: 2,
            }],
        )
        .unwrap();
        let d = &plan.deployments[0];
        assert_eq!(d.request, 5);
        assert_eq!(d.lead_steps, 1);
        // Step 0 cannot grow (pods take a step to start); from step 1 on, 5 replicas serve 45.
        assert_eq!(d.replicas[0], 2);
        assert!(d.replicas[1..].iter().all(|&r| r == 5), "{:?}", d.replicas);
        assert_eq!(d.demand.len(), 11);
    }

    #[test]
    fn a_gpu_budget_caps_the_sum_of_gpu_replicas() {
        let mut cfg = config(vec![deployment("a", 10.0, 1.0), deployment("b", 10.0, 1.0)]);
        cfg.budgets = vec![BudgetConfig {
            resource: "gpu".into(),
            limit: 6.0,
        }];
        let (ha, hb) = (vec![50.0; 100], vec![40.0; 100]);
        let inputs = [
            Input {
                spec: &cfg.deployments[0],
                history: &ha,
                current_replicas: 3,
            },
            Input {
                spec: &cfg.deployments[1],
                history: &hb,
                current_replicas: 3,
            },
        ];
        let plan = plan(&cfg, &inputs).unwrap();
        for t in 0..plan.deployments[0].replicas.len() {
            let sum: u32 = plan.deployments.iter().map(|d| d.replicas[t]).sum();
            assert!(sum <= 6, "step {t}: {sum}");
        }
        assert!(plan.solver.contains("Lagrangian"));
    }

    #[test]
    fn deployments_without_readings_are_left_out() {
        let cfg = config(vec![deployment("a", 10.0, 0.0)]);
        let plan = plan(
            &cfg,
            &[Input {
                spec: &cfg.deployments[0],
                history: &[],
                current_replicas: 3,
            }],
        )
        .unwrap();
        assert!(plan.deployments.is_empty());
        assert!(matches!(
            forecast("a", &[], 60, 5, &[0.5]),
            Err(PlanningError::NoReadings(_))
        ));
    }

    #[test]
    fn invalid_configs_name_the_key() {
        let mut cfg = config(vec![deployment("Web_1", 10.0, 0.0)]);
        let err = validate(&cfg).unwrap_err().to_string();
        assert!(err.contains("scheduler.deployments[0].name"), "{err}");
        cfg.deployments[0].name = "web".into();
        cfg.deployments[0].capacity_per_replica = 0.0;
        let err = validate(&cfg).unwrap_err().to_string();
        assert!(err.contains("capacity_per_replica"), "{err}");
        cfg.deployments[0].capacity_per_replica = 1.0;
        cfg.deployments.push(deployment("web", 1.0, 0.0));
        assert!(validate(&cfg).unwrap_err().to_string().contains("twice"));
        cfg.deployments.pop();
        cfg.budgets = vec![BudgetConfig {
            resource: "tpu".into(),
            limit: 1.0,
        }];
        let err = validate(&cfg).unwrap_err().to_string();
        assert!(err.contains("scheduler.budgets[0].resource"), "{err}");
        cfg.budgets.clear();
        cfg.mode = "yolo".into();
        assert!(
            validate(&cfg)
                .unwrap_err()
                .to_string()
                .contains("scheduler.mode")
        );
        cfg.mode = "dry_run".into();
        assert_eq!(validate(&cfg), Ok(()));
        assert_eq!(validate(&SchedulerConfig::default()), Ok(()));
    }

    #[test]
    fn lead_is_the_startup_in_ticks_rounded_half_up() {
        assert_eq!(lead_steps(60, 60), 1);
        assert_eq!(lead_steps(29, 60), 0);
        assert_eq!(lead_steps(30, 60), 1);
        assert_eq!(lead_steps(150, 60), 3);
    }
}

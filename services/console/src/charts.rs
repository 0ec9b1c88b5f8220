//! The series the page draws, shaped here so that the browser only scales and strokes them.
//!
//! * A Deployment's time chart: the demand readings and replicas the console recorded (past),
//!   the forecast's quantiles and the planned replicas (future), on one time axis in unix ms.
//! * A simulation's chart: the scheduler's per-step series cut into at most `max_points`
//!   buckets of consecutive steps, each drawn by its maximum (the forecast band by its lowest
//!   low and highest high), as `recalloc simulate` draws its SVG: a peak never disappears in
//!   the thinning. Steps without a forecast (NaN) become `null`, which the page leaves as gaps.

use recalloc_proto::v1::{DeploymentPlan, Forecast, Policy, SimulationSeries};
use serde::Serialize;

use crate::history::{DeploymentHistory, ScalingAction};

/// `[t_ms, value]`.
pub type Point = (i64, f64);

/// Scaling actions shown per Deployment, newest first.
pub const SHOWN_ACTIONS: usize = 10;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QuantileLine {
    pub quantile: f64,
    pub points: Vec<Point>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeploymentChart {
    pub deployment: String,
    pub capacity_per_replica: f64,
    pub step_seconds: u32,
    pub current_replicas: u32,
    /// GetPlan's replicas per step, as it answered them.
    pub planned_replicas: Vec<u32>,
    /// Demand readings, one per plan the console saw (past).
    pub demand: Vec<Point>,
    /// Replicas the Deployment had at those plans (past).
    pub replicas: Vec<Point>,
    /// Planned replicas per step from the plan's time on (future).
    pub plan: Vec<Point>,
    /// The forecast's quantiles per step (future), lowest quantile first.
    pub forecast: Vec<QuantileLine>,
    pub forecast_method: Option<String>,
    /// Why there is no forecast (e.g. no readings yet).
    pub forecast_error: Option<String>,
    pub actions: Vec<ScalingAction>,
}

/// Puts together what the console knows about one Deployment.
pub fn deployment_chart(
    plan: &DeploymentPlan,
    plan_at_ms: i64,
    step_seconds: u32,
    history: Option<&DeploymentHistory>,
    forecast: Result<&Forecast, &str>,
) -> DeploymentChart {
    let step_ms = i64::from(step_seconds) * 1000;
    let (demand, replicas) = history
        .map(|h| {
            h.observations
                .iter()
                .map(|o| ((o.at_ms, o.demand), (o.at_ms, f64::from(o.replicas))))
                .unzip()
        })
        .unwrap_or_default();
    let (forecast, forecast_method, forecast_error) = match forecast {
        Ok(f) => {
            let f_step = i64::from(f.step_seconds) * 1000;
            let mut lines: Vec<QuantileLine> = f
                .series
                .iter()
                .map(|q| QuantileLine {
                    quantile: q.quantile,
                    points: q
                        .values
                        .iter()
                        .enumerate()
                        .map(|(i, v)| (f.start_ms + i as i64 * f_step, *v))
                        .collect(),
                })
                .collect();
            lines.sort_by(|a, b| a.quantile.total_cmp(&b.quantile));
            (lines, Some(f.method.clone()), None)
        }
        Err(e) => (Vec::new(), None, Some(e.to_owned())),
    };
    DeploymentChart {
        deployment: plan.deployment.clone(),
        capacity_per_replica: plan.capacity_per_replica,
        step_seconds,
        current_replicas: plan.current_replicas,
        planned_replicas: plan.replicas.clone(),
        demand,
        replicas,
        plan: plan
            .replicas
            .iter()
            .enumerate()
            .map(|(i, r)| (plan_at_ms + i as i64 * step_ms, f64::from(*r)))
            .collect(),
        forecast,
        forecast_method,
        forecast_error,
        actions: history
            .map(|h| {
                h.actions
                    .iter()
                    .rev()
                    .take(SHOWN_ACTIONS)
                    .copied()
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// The replicas a plan requests now: the step after the current one, as `recalloc plan` shows
/// it (the first step is what serves now).
pub fn requested(plan: &DeploymentPlan) -> u32 {
    plan.replicas
        .get(1)
        .copied()
        .unwrap_or(plan.current_replicas)
}

pub fn policy_name(policy: i32) -> &'static str {
    match Policy::try_from(policy) {
        Ok(Policy::Hpa) => "hpa",
        Ok(Policy::Seed) => "seed",
        Ok(Policy::Recalloc) => "recalloc",
        _ => "unspecified",
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicyLine {
    pub policy: &'static str,
    pub values: Vec<Option<f64>>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimulationChart {
    /// Unix seconds of each bucket's first step.
    pub ts: Vec<i64>,
    /// Trace steps per bucket (1: every step drawn).
    pub steps_per_point: usize,
    pub demand: Vec<Option<f64>>,
    pub forecast_low: Vec<Option<f64>>,
    pub forecast_high: Vec<Option<f64>>,
    pub capacity: Vec<PolicyLine>,
}

fn fold(values: &[f64], range: std::ops::Range<usize>, pick: fn(f64, f64) -> f64) -> Option<f64> {
    values
        .get(range)
        .unwrap_or(&[])
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .reduce(pick)
}

/// `series` thinned to at most `max_points` buckets (see the module docs).
pub fn simulation_chart(series: &SimulationSeries, max_points: usize) -> SimulationChart {
    let n = series.ts.len();
    let per = n.div_ceil(max_points.max(1)).max(1);
    let buckets: Vec<std::ops::Range<usize>> =
        (0..n).step_by(per).map(|s| s..(s + per).min(n)).collect();
    let max_of = |v: &[f64]| -> Vec<Option<f64>> {
        buckets
            .iter()
            .map(|r| fold(v, r.clone(), f64::max))
            .collect()
    };
    SimulationChart {
        ts: buckets.iter().map(|r| series.ts[r.start]).collect(),
        steps_per_point: per,
        demand: max_of(&series.demand),
        forecast_low: buckets
            .iter()
            .map(|r| fold(&series.forecast_low, r.clone(), f64::min))
            .collect(),
        forecast_high: max_of(&series.forecast_high),
        capacity: series
            .capacity
            .iter()
            .map(|c| PolicyLine {
                policy: policy_name(c.policy),
                values: max_of(&c.values),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::History;
    use recalloc_proto::v1::{Plan, PolicyCapacity, QuantileSeries};

    fn rank_plan(current: u32, replicas: Vec<u32>) -> DeploymentPlan {
        DeploymentPlan {
            deployment: "recalloc-rank".into(),
            current_replicas: current,
            replicas,
            demand: vec![120.0, 130.0, 140.0],
            capacity_per_replica: 100.0,
            applied: false,
        }
    }

    #[test]
    fn deployment_chart_puts_past_and_future_on_one_time_axis() {
        let mut h = History::default();
        for (at, current) in [(1_000, 1), (11_000, 2)] {
            h.record(&Plan {
                created_at_ms: at,
                step_seconds: 10,
                deployments: vec![rank_plan(current, vec![current, 2, 3])],
                ..Default::default()
            });
        }
        let f = Forecast {
            deployment: "recalloc-rank".into(),
            start_ms: 21_000,
            step_seconds: 10,
            series: vec![
                QuantileSeries {
                    quantile: 0.9,
                    values: vec![150.0, 160.0],
                },
                QuantileSeries {
                    quantile: 0.1,
                    values: vec![100.0, 90.0],
                },
            ],
            method: "holt_winters".into(),
            backtest_pinball_loss: 1.0,
        };
        let plan = rank_plan(2, vec![2, 2, 3]);
        let c = deployment_chart(
            &plan,
            11_000,
            10,
            h.deployments.get("recalloc-rank"),
            Ok(&f),
        );
        assert_eq!(c.demand, [(1_000, 120.0), (11_000, 120.0)]);
        assert_eq!(c.replicas, [(1_000, 1.0), (11_000, 2.0)]);
        assert_eq!(c.plan, [(11_000, 2.0), (21_000, 2.0), (31_000, 3.0)]);
        assert_eq!(c.forecast[0].quantile, 0.1, "lowest quantile first");
        assert_eq!(c.forecast[1].points, [(21_000, 150.0), (31_000, 160.0)]);
        assert_eq!(c.actions.len(), 1);
        assert_eq!((c.actions[0].from, c.actions[0].to), (1, 2));
        assert_eq!(requested(&plan), 2);

        let c = deployment_chart(&plan, 11_000, 10, None, Err("no readings yet"));
        assert!(c.forecast.is_empty() && c.demand.is_empty());
        assert_eq!(c.forecast_error.as_deref(), Some("no readings yet"));
        assert_eq!(requested(&rank_plan(4, vec![])), 4);
    }

    #[test]
    fn simulation_chart_keeps_every_peak_and_leaves_gaps_for_nan() {
        let n = 10;
        let s = SimulationSeries {
            ts: (0..n).map(|i| 100 + i * 60).collect(),
            demand: vec![1.0, 9.0, 2.0, 2.0, 3.0, 1.0, 1.0, 8.0, 1.0, 1.0],
            forecast: vec![f64::NAN; n as usize],
            forecast_low: vec![
                f64::NAN,
                f64::NAN,
                f64::NAN,
                f64::NAN,
                1.0,
                0.5,
                2.0,
                2.0,
                2.0,
                3.0,
            ],
            forecast_high: vec![
                f64::NAN,
                f64::NAN,
                f64::NAN,
                f64::NAN,
                4.0,
                5.0,
                6.0,
                6.0,
                6.0,
                7.0,
            ],
            capacity: vec![PolicyCapacity {
                policy: Policy::Recalloc as i32,
                values: vec![10.0; n as usize],
            }],
        };
        let c = simulation_chart(&s, 4);
        assert_eq!(c.steps_per_point, 3);
        assert_eq!(c.ts, [100, 280, 460, 640]);
        assert_eq!(c.demand, [Some(9.0), Some(3.0), Some(8.0), Some(1.0)]);
        assert_eq!(c.forecast_low, [None, Some(0.5), Some(2.0), Some(3.0)]);
        assert_eq!(c.forecast_high, [None, Some(5.0), Some(6.0), Some(7.0)]);
        assert_eq!(c.capacity[0].policy, "recalloc");
        assert_eq!(c.capacity[0].values.len(), 4);
        // Short series are drawn step by step.
        let c = simulation_chart(&s, 1000);
        assert_eq!((c.steps_per_point, c.ts.len()), (1, 10));
        assert!(
            simulation_chart(&SimulationSeries::default(), 10)
                .ts
                .is_empty()
        );
    }
}

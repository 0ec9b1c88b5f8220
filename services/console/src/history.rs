//! What the console remembers between its reads of the scheduler: each Deployment's demand
//! readings and replicas, plan by plan, and the scaling actions among them. The scheduler
//! serves only its latest plan (GetPlan) and forecasts from now on (GetForecast), so the past
//! half of the per-Deployment chart is what the console saw since it started.
//!
//! A plan is recorded once (by its `created_at_ms`, however often it is read). A scaling action
//! is a change of the replicas the Deployment has between two consecutive plans: on a cluster
//! that is what the scheduler applied (or someone else did), in a dry run the request the
//! scheduler would have applied, which it then takes as the current count.

use std::collections::{BTreeMap, VecDeque};

use recalloc_proto::v1::Plan;
use serde::Serialize;

/// Plans kept per Deployment: 12 hours of one-minute ticks, two of ten-second ones.
pub const MAX_OBSERVATIONS: usize = 720;
/// Scaling actions kept per Deployment.
pub const MAX_ACTIONS: usize = 50;

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Observation {
    /// When the scheduler made the plan (unix ms).
    pub at_ms: i64,
    /// The demand reading the plan started from, in the signal's unit.
    pub demand: f64,
    /// Replicas the Deployment had.
    pub replicas: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ScalingAction {
    pub at_ms: i64,
    pub from: u32,
    pub to: u32,
    /// The demand reading of the plan that showed the change.
    pub demand: f64,
    /// Whether the scheduler applied it to a cluster (false: a dry run).
    pub applied: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeploymentHistory {
    pub observations: VecDeque<Observation>,
    pub actions: VecDeque<ScalingAction>,
}

/// Every Deployment's history, fed one plan at a time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    last_plan_at_ms: Option<i64>,
    pub deployments: BTreeMap<String, DeploymentHistory>,
}

impl History {
    /// Records `plan` unless it is the one recorded last. Returns whether it was new.
    pub fn record(&mut self, plan: &Plan) -> bool {
        if self.last_plan_at_ms == Some(plan.created_at_ms) {
            return false;
        }
        self.last_plan_at_ms = Some(plan.created_at_ms);
        for d in &plan.deployments {
            let h = self.deployments.entry(d.deployment.clone()).or_default();
            let demand = d.demand.first().copied().unwrap_or(0.0);
            if let Some(prev) = h.observations.back()
                && prev.replicas != d.current_replicas
            {
                if h.actions.len() == MAX_ACTIONS {
                    h.actions.pop_front();
                }
                h.actions.push_back(ScalingAction {
                    at_ms: plan.created_at_ms,
                    from: prev.replicas,
                    to: d.current_replicas,
                    demand,
                    applied: d.applied,
                });
            }
            if h.observations.len() == MAX_OBSERVATIONS {
                h.observations.pop_front();
            }
            h.observations.push_back(Observation {
                at_ms: plan.created_at_ms,
                demand,
                replicas: d.current_replicas,
            });
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use recalloc_proto::v1::DeploymentPlan;

    fn plan(at: i64, rank: (u32, f64)) -> Plan {
        Plan {
            created_at_ms: at,
            step_seconds: 10,
            dry_run: true,
            deployments: vec![DeploymentPlan {
                deployment: "recalloc-rank".into(),
                current_replicas: rank.0,
                replicas: vec![rank.0, rank.0],
                demand: vec![rank.1, rank.1],
                capacity_per_replica: 100.0,
                applied: false,
            }],
            ..Default::default()
        }
    }

    #[test]
    fn a_plan_is_recorded_once_and_changes_of_replicas_are_actions() {
        let mut h = History::default();
        assert!(h.record(&plan(1_000, (1, 5.0))));
        assert!(
            !h.record(&plan(1_000, (1, 5.0))),
            "the same plan read twice"
        );
        assert!(h.record(&plan(2_000, (3, 250.0))));
        assert!(h.record(&plan(3_000, (3, 240.0))));
        assert!(h.record(&plan(4_000, (2, 150.0))));
        let d = &h.deployments["recalloc-rank"];
        assert_eq!(d.observations.len(), 4);
        assert_eq!(d.observations[1].demand, 250.0);
        let actions: Vec<(i64, u32, u32)> =
            d.actions.iter().map(|a| (a.at_ms, a.from, a.to)).collect();
        assert_eq!(actions, [(2_000, 1, 3), (4_000, 3, 2)]);
        assert!(!d.actions[0].applied);
    }

    #[test]
    fn memory_is_bounded() {
        let mut h = History::default();
        for i in 0..(MAX_OBSERVATIONS as i64 + 10) {
            h.record(&plan(i, ((i % 2) as u32 + 1, 1.0)));
        }
        let d = &h.deployments["recalloc-rank"];
        assert_eq!(d.observations.len(), MAX_OBSERVATIONS);
        assert_eq!(
            d.observations.back().unwrap().at_ms,
            MAX_OBSERVATIONS as i64 + 9
        );
        assert_eq!(d.actions.len(), MAX_ACTIONS);
    }
}

use proptest::prelude::*;

use super::dp::{self, Bounds};
use super::*;

fn deployment(demand: Vec<f64>) -> Deployment {
    Deployment {
        name: "d".into(),
        capacity: 10.0,
        demand,
        min_replicas: 0,
        max_replicas: 10,
        max_step: 10,
        replica_cost: 1.0,
        unmet_penalty: 1.0,
        breach_penalty: 0.0,
        change_cost: 0.0,
        lead_time: 0,
        initial: 0,
        usage: Vec::new(),
    }
}

/// Every path the model allows, by enumeration (tiny instances only).
fn brute_force(d: &Deployment) -> f64 {
    let t_len = d.demand.len();
    let (a, b) = dp::first_step_range(d);
    let frozen = d.initial.max(d.min_replicas);
    let mut best = f64::INFINITY;
    let mut path = vec![0u32; t_len];
    fn rec(
        d: &Deployment,
        t: usize,
        path: &mut Vec<u32>,
        first: (u32, u32),
        frozen: u32,
        best: &mut f64,
    ) {
        if t == path.len() {
            *best = best.min(dp::path_cost(d, path, &[]));
            return;
        }
        for x in d.min_replicas..=d.max_replicas {
            if t == 0 && !(first.0..=first.1).contains(&x) {
                continue;
            }
            if t > 0 && x.abs_diff(path[t - 1]) > d.max_step {
                continue;
            }
            if t < d.lead_time && x > frozen {
                continue;
            }
            path[t] = x;
            rec(d, t + 1, path, first, frozen, best);
        }
    }
    rec(d, 0, &mut path, (a, b), frozen, &mut best);
    best
}

fn small_deployment() -> impl Strategy<Value = Deployment> {
    (
        prop::collection::vec(0.0..45.0f64, 1..5),
        (0u32..3, 0.0..2.0f64),
        0u32..3,
        1u32..4,
        0.0..3.0f64,
        0.0..2.0f64,
        0.0..2.0f64,
        0usize..3,
        0u32..7,
    )
        .prop_map(
            |(demand, (min, breach), extra, max_step, rc, pen, cc, lead, initial)| Deployment {
                name: "d".into(),
                capacity: 10.0,
                demand,
                min_replicas: min,
                max_replicas: min + extra + 1,
                max_step,
                replica_cost: rc,
                unmet_penalty: pen,
                breach_penalty: breach,
                change_cost: cc,
                lead_time: lead,
                initial,
                usage: vec![1.0],
            },
        )
}

fn within_bounds(p: &Problem, plan: &Plan) {
    for (d, path) in p.deployments.iter().zip(&plan.replicas) {
        assert_eq!(path.len(), d.demand.len());
        for (t, &x) in path.iter().enumerate() {
            assert!(
                x >= d.min_replicas && x <= d.max_replicas,
                "{x} outside bounds"
            );
            if t > 0 {
                assert!(x.abs_diff(path[t - 1]) <= d.max_step);
            }
        }
    }
    for (k, b) in p.budgets.iter().enumerate() {
        for t in 0..p.deployments.first().map_or(0, |d| d.demand.len()) {
            let used: f64 = p
                .deployments
                .iter()
                .zip(&plan.replicas)
                .map(|(d, path)| d.usage.get(k).copied().unwrap_or(0.0) * path[t] as f64)
                .sum();
            assert!(used <= b.limit + 1e-9, "budget {} overrun at {t}", b.name);
        }
    }
    assert!(plan.lower_bound <= plan.cost + 1e-6 * plan.cost.abs().max(1.0));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn dp_equals_brute_force(d in small_deployment()) {
        let plan = solve_single(&d).unwrap();
        let brute = brute_force(&d);
        prop_assert!((plan.cost - brute).abs() <= 1e-9 * brute.abs().max(1.0),
            "dp {} vs brute {} for {:?}", plan.cost, brute, d);
        prop_assert!((dp::path_cost(&d, &plan.replicas[0], &[]) - plan.cost).abs() < 1e-9);
    }

    #[test]
    fn coupled_plans_stay_in_bounds_and_budget(
        deps in prop::collection::vec(small_deployment(), 1..4),
        limit in 0.0..12.0f64,
        len in 1usize..6,
    ) {
        let deps: Vec<Deployment> = deps
            .into_iter()
            .map(|mut d| {
                d.demand.resize(len, 20.0);
                d
            })
            .collect();
        let p = Problem { deployments: deps, budgets: vec![Budget { name: "gpu".into(), limit }] };
        match solve(&p) {
            Ok(plan) => within_bounds(&p, &plan),
            Err(PlanError::BudgetInfeasible { .. }) => {
                // Then even the lowest reachable counts must overrun the budget somewhere.
                let lowest: f64 = p.deployments.iter().map(|d| {
                    let b = Bounds::of(d);
                    b.lo[0] as f64
                }).sum();
                let at_min: f64 = p.deployments.iter().map(|d| d.min_replicas as f64).sum();
                prop_assert!(lowest > limit || at_min > limit);
            }
            Err(e) => prop_assert!(false, "{e}"),
        }
    }

    #[test]
    fn coupled_bound_brackets_the_true_optimum(
        a in small_deployment(),
        b in small_deployment(),
        limit in 2.0..8.0f64,
    ) {
        let len = a.demand.len().min(b.demand.len()).min(3);
        let mut deps = vec![a, b];
        for d in &mut deps {
            d.demand.truncate(len);
        }
        let p = Problem { deployments: deps, budgets: vec![Budget { name: "gpu".into(), limit }] };
        if let Ok(plan) = solve(&p) {
            within_bounds(&p, &plan);
            let best = brute_force_coupled(&p);
            prop_assert!(plan.lower_bound <= best + 1e-6 * best.abs().max(1.0));
            prop_assert!(plan.cost >= best - 1e-6 * best.abs().max(1.0));
        }
    }

    #[test]
    fn meets_demand_when_the_budget_allows(
        demands in prop::collection::vec(prop::collection::vec(0u32..80, 6), 1..4),
        initial in 0u32..5,
    ) {
        // Demand in half-units so every shortfall is at least 0.5 and costs far more than a
        // replica; no lead time; the budget covers every deployment's peak.
        let deps: Vec<Deployment> = demands
            .iter()
            .map(|dem| Deployment {
                demand: dem.iter().map(|&v| v as f64 * 0.5).collect(),
                capacity: 5.0,
                max_step: 8,
                unmet_penalty: 1000.0,
                change_cost: 0.5,
                initial,
                usage: vec![2.0],
                ..deployment(Vec::new())
            })
            .collect();
        let limit: f64 = deps.iter().map(|d| 2.0 * dp::useful_max(d) as f64).sum();
        let p = Problem { deployments: deps, budgets: vec![Budget { name: "gpu".into(), limit }] };
        let plan = solve(&p).unwrap();
        within_bounds(&p, &plan);
        for u in &plan.unmet {
            prop_assert!(*u < 1e-9, "unmet {u}");
        }
    }
}

fn brute_force_coupled(p: &Problem) -> f64 {
    // Enumerate each deployment's allowed paths, then every pair.
    fn paths(d: &Deployment) -> Vec<Vec<u32>> {
        let (a, b) = dp::first_step_range(d);
        let frozen = d.initial.max(d.min_replicas);
        let mut out = vec![Vec::new()];
        for t in 0..d.demand.len() {
            let mut next = Vec::new();
            for p in &out {
                for x in d.min_replicas..=d.max_replicas {
                    let ok = if t == 0 {
                        (a..=b).contains(&x)
                    } else {
                        x.abs_diff(p[t - 1]) <= d.max_step
                    };
                    if ok && (t >= d.lead_time || x <= frozen) {
                        let mut q = p.clone();
                        q.push(x);
                        next.push(q);
                    }
                }
            }
            out = next;
        }
        out
    }
    let (a, b) = (&p.deployments[0], &p.deployments[1]);
    let limit = p.budgets[0].limit;
    let mut best = f64::INFINITY;
    for pa in paths(a) {
        for pb in paths(b) {
            let ok = (0..pa.len())
                .all(|t| a.usage[0] * pa[t] as f64 + b.usage[0] * pb[t] as f64 <= limit + 1e-9);
            if ok {
                best = best.min(dp::path_cost(a, &pa, &[]) + dp::path_cost(b, &pb, &[]));
            }
        }
    }
    best
}

#[test]
fn single_deployment_follows_demand() {
    let mut d = deployment(vec![5.0, 25.0, 25.0, 8.0]);
    d.unmet_penalty = 10.0;
    let plan = solve_single(&d).unwrap();
    assert_eq!(plan.replicas[0], vec![1, 3, 3, 1]);
    assert_eq!(plan.cost, plan.lower_bound);
}

#[test]
fn lead_time_blocks_early_scale_up_and_first_step_requests_ahead() {
    let mut d = deployment(vec![10.0, 10.0, 50.0, 50.0]);
    d.unmet_penalty = 10.0;
    d.initial = 1;
    d.lead_time = 2;
    let p = Problem {
        deployments: vec![d],
        budgets: Vec::new(),
    };
    let plan = solve(&p).unwrap();
    assert_eq!(plan.replicas[0], vec![1, 1, 5, 5]);
    // The pods serving at step 2 must be requested now.
    assert_eq!(plan_first_step(&p).unwrap(), vec![5]);
}

#[test]
fn bad_inputs_are_errors() {
    let mut d = deployment(vec![1.0]);
    d.capacity = 0.0;
    assert!(matches!(
        solve_single(&d),
        Err(PlanError::InvalidDeployment { .. })
    ));
    let mut d = deployment(vec![f64::NAN]);
    assert!(solve_single(&d).is_err());
    d.demand = vec![1.0];
    d.min_replicas = 5;
    d.max_replicas = 2;
    assert!(solve_single(&d).is_err());
    let p = Problem {
        deployments: vec![deployment(vec![1.0]), deployment(vec![1.0, 2.0])],
        budgets: Vec::new(),
    };
    assert_eq!(solve(&p), Err(PlanError::HorizonMismatch(1, 2)));
    let mut d = deployment(vec![1.0]);
    d.min_replicas = 3;
    d.usage = vec![1.0];
    let p = Problem {
        deployments: vec![d],
        budgets: vec![Budget {
            name: "gpu".into(),
            limit: 2.0,
        }],
    };
    let e = solve(&p).unwrap_err();
    assert!(
        matches!(e, PlanError::BudgetInfeasible { step: 0, .. }),
        "{e}"
    );
    let mut d = deployment(vec![1e12; 100]);
    d.capacity = 1e-3;
    d.max_replicas = u32::MAX;
    assert!(matches!(solve_single(&d), Err(PlanError::TooLarge { .. })));
    assert!(
        e.to_string()
            .starts_with("budget `gpu` cannot hold in step 0")
    );
}

#[test]
fn empty_problem_is_an_empty_plan() {
    let plan = solve(&Problem::default()).unwrap();
    assert!(plan.replicas.is_empty());
    assert_eq!(plan.cost, 0.0);
}

#[test]
fn benchmark_size_is_feasible_and_near_optimal() {
    let p = benchmark_problem(10, 288, 42);
    let start = std::time::Instant::now();
    let plan = solve(&p).unwrap();
    let elapsed = start.elapsed();
    within_bounds(&p, &plan);
    // The budget must bind, or the benchmark measures nothing.
    let free: f64 = p
        .deployments
        .iter()
        .map(|d| solve_single(d).unwrap().cost)
        .sum();
    assert!(plan.cost > free, "budget does not bind");
    println!(
        "planner 10x288 with a GPU budget: {elapsed:?}, {} rounds, cost {:.1}, bound {:.1}, gap {:.3}%",
        plan.iterations,
        plan.cost,
        plan.lower_bound,
        100.0 * plan.gap()
    );
    assert!(plan.gap() < 0.05, "gap {}", plan.gap());
}

/// The coupled problem as a MILP for `microlp` (independent of the DP's own bounds): x
/// integer, unmet u ≥ demand − κx, breach b binary with demand − κx ≤ demand·b, up/down
/// changes, max step, lead-time cap, budget rows. Returns the optimal cost.
fn milp_optimum(p: &Problem) -> f64 {
    use microlp::{ComparisonOp, OptimizationDirection, Problem as Lp, SolveOutcome};
    let mut lp = Lp::new(OptimizationDirection::Minimize);
    let t_len = p.deployments[0].demand.len();
    let mut xs = Vec::new();
    for d in &p.deployments {
        let (a, b) = dp::first_step_range(d);
        let frozen = d.initial.max(d.min_replicas);
        let up_cost = d.change_cost + d.lead_time as f64 * d.replica_cost;
        let mut row = Vec::new();
        for t in 0..t_len {
            let (mut lo, mut hi) = (d.min_replicas, d.max_replicas);
            if t == 0 {
                (lo, hi) = (a, b);
            }
            if t < d.lead_time {
                hi = hi.min(frozen);
            }
            let x = lp.add_integer_var(d.replica_cost, (lo as i32, hi as i32));
            let dem = d.demand[t];
            let u = lp.add_var(d.unmet_penalty, (0.0, f64::INFINITY));
            lp.add_constraint([(u, 1.0), (x, d.capacity)], ComparisonOp::Ge, dem);
            let br = lp.add_binary_var(d.breach_penalty);
            lp.add_constraint([(x, d.capacity), (br, dem)], ComparisonOp::Ge, dem);
            let up = lp.add_var(up_cost, (0.0, f64::INFINITY));
            let down = lp.add_var(d.change_cost, (0.0, f64::INFINITY));
            match row.last() {
                None => {
                    let init = d.initial as f64;
                    lp.add_constraint([(up, 1.0), (x, -1.0)], ComparisonOp::Ge, -init);
                    lp.add_constraint([(down, 1.0), (x, 1.0)], ComparisonOp::Ge, init);
                }
                Some(&prev) => {
                    lp.add_constraint([(up, 1.0), (x, -1.0), (prev, 1.0)], ComparisonOp::Ge, 0.0);
                    lp.add_constraint([(down, 1.0), (x, 1.0), (prev, -1.0)], ComparisonOp::Ge, 0.0);
                    let ms = d.max_step as f64;
                    lp.add_constraint([(x, 1.0), (prev, -1.0)], ComparisonOp::Le, ms);
                    lp.add_constraint([(prev, 1.0), (x, -1.0)], ComparisonOp::Le, ms);
                }
            }
            row.push(x);
        }
        xs.push(row);
    }
    for (k, b) in p.budgets.iter().enumerate() {
        for t in 0..t_len {
            let terms: Vec<_> = p
                .deployments
                .iter()
                .zip(&xs)
                .map(|(d, row)| (row[t], d.usage.get(k).copied().unwrap_or(0.0)))
                .collect();
            lp.add_constraint(terms, ComparisonOp::Le, b.limit);
        }
    }
    match lp.solve().expect("milp solves") {
        SolveOutcome::Solution(s) => s.objective(),
        SolveOutcome::Interrupted(_) => panic!("milp interrupted"),
    }
}

#[test]
fn coupled_plans_are_near_the_milp_optimum() {
    let mut rng = crate::seed::SplitMix64(17);
    let (mut worst, mut total, mut count) = (0.0f64, 0.0, 0);
    for _ in 0..20 {
        let deps: Vec<Deployment> = (0..3)
            .map(|i| {
                let cap = 10.0 + 10.0 * rng.uniform();
                Deployment {
                    name: format!("d{i}"),
                    capacity: cap,
                    demand: (0..6).map(|_| 80.0 * rng.uniform()).collect(),
                    min_replicas: (rng.uniform() * 2.0) as u32,
                    max_replicas: 8,
                    max_step: 1 + (rng.uniform() * 3.0) as u32,
                    replica_cost: 1.0 + rng.uniform(),
                    unmet_penalty: 0.5 + rng.uniform(),
                    breach_penalty: 2.0 * rng.uniform(),
                    change_cost: rng.uniform(),
                    lead_time: (rng.uniform() * 2.0) as usize,
                    initial: (rng.uniform() * 4.0) as u32,
                    usage: vec![1.0 + (rng.uniform() * 2.0).floor()],
                }
            })
            .collect();
        let p = Problem {
            deployments: deps,
            budgets: vec![Budget {
                name: "gpu".into(),
                limit: 8.0 + (rng.uniform() * 8.0).floor(),
            }],
        };
        let Ok(plan) = solve(&p) else { continue };
        within_bounds(&p, &plan);
        let best = milp_optimum(&p);
        let tol = 1e-6 * best.abs().max(1.0);
        assert!(
            plan.lower_bound <= best + tol,
            "bound {} > milp {best}",
            plan.lower_bound
        );
        assert!(plan.cost >= best - tol, "cost {} < milp {best}", plan.cost);
        let gap = (plan.cost - best) / best.max(1e-9);
        worst = worst.max(gap);
        total += gap;
        count += 1;
    }
    println!(
        "lagrangian vs milp on {count} coupled instances: mean gap {:.3}%, worst {:.3}%",
        100.0 * total / count as f64,
        100.0 * worst
    );
    assert!(count >= 15);
    assert!(worst < 0.05, "worst gap {worst}");
}

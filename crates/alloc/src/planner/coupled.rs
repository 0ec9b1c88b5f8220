//! Budget-coupled deployments: Lagrangian relaxation with exact DP subproblems and a repair
//! step that always yields a feasible plan (see the parent module docs for the scheme).

use super::dp::{self, Bounds};
use super::{Deployment, Plan, PlanError, Problem};

/// Lagrangian rounds at most; the loop stops earlier once the gap is below [`GAP_TOLERANCE`].
const MAX_ROUNDS: usize = 40;
const GAP_TOLERANCE: f64 = 5e-3;
/// Rounds between repairs (each repair costs about two rounds).
const REPAIR_EVERY: usize = 5;

/// Per-replica use of budget `k` (0 when not listed).
fn usage(d: &Deployment, k: usize) -> f64 {
    d.usage.get(k).copied().unwrap_or(0.0)
}

struct Ctx<'a> {
    deps: &'a [Deployment],
    limits: Vec<f64>,
    /// Budgets some deployment uses; the others cannot bind.
    active: Vec<usize>,
    bounds: Vec<Bounds>,
    horizon: usize,
    /// Optimal paths of deployments that use no active budget: prices never change them.
    fixed: Vec<Option<(Vec<u32>, f64)>>,
}

impl Ctx<'_> {
    /// Σ_d usage · x for budget k at every step.
    fn load(&self, plans: &[Vec<u32>], k: usize) -> Vec<f64> {
        let mut load = vec![0.0; self.horizon];
        for (d, p) in self.deps.iter().zip(plans) {
            let u = usage(d, k);
            if u > 0.0 {
                for (l, &x) in load.iter_mut().zip(p) {
                    *l += u * x as f64;
                }
            }
        }
        load
    }

    fn feasible(&self, plans: &[Vec<u32>]) -> bool {
        self.active.iter().all(|&k| {
            let lim = self.limits[k] * (1.0 + 1e-12) + 1e-9;
            self.load(plans, k).iter().all(|&l| l <= lim)
        })
    }

    /// Price per replica of deployment d at each step, from multipliers `lambda[k][t]`.
    fn prices(&self, d: &Deployment, lambda: &[Vec<f64>]) -> Vec<f64> {
        let mut p = vec![0.0; self.horizon];
        for &k in &self.active {
            let u = usage(d, k);
            if u > 0.0 {
                for (p, l) in p.iter_mut().zip(&lambda[k]) {
                    *p += u * l;
                }
            }
        }
        p
    }

    fn true_cost(&self, plans: &[Vec<u32>]) -> f64 {
        self.deps
            .iter()
            .zip(plans)
            .map(|(d, p)| dp::path_cost(d, p, &[]))
            .sum()
    }
}

/// The lowest replica path each deployment can follow: down as fast as max_step allows.
fn lowest_path(d: &Deployment, b: &Bounds) -> Vec<u32> {
    let mut path: Vec<u32> = Vec::with_capacity(b.lo.len());
    for t in 0..b.lo.len() {
        let x = match path.last() {
            None => b.lo[0],
            Some(&prev) => prev.saturating_sub(d.max_step).max(b.lo[t]),
        };
        path.push(x);
    }
    path
}

pub(super) fn solve(problem: &Problem) -> Result<Plan, PlanError> {
    let deps = &problem.deployments;
    let horizon = deps.first().map_or(0, |d| d.demand.len());
    let active: Vec<usize> = (0..problem.budgets.len())
        .filter(|&k| deps.iter().any(|d| usage(d, k) > 0.0))
        .collect();
    let bounds: Vec<Bounds> = deps.iter().map(Bounds::of).collect();
    let fixed = deps
        .iter()
        .zip(&bounds)
        .map(|(d, b)| {
            if active.iter().all(|&k| usage(d, k) <= 0.0) {
                dp::solve(d, b, &[])
            } else {
                None
            }
        })
        .collect();
    let ctx = Ctx {
        deps,
        limits: problem.budgets.iter().map(|b| b.limit).collect(),
        active,
        bounds,
        horizon,
        fixed,
    };
    let mut lambda = vec![vec![0.0; horizon]; problem.budgets.len()];

    // Round 0: no prices. If that already fits the budgets, it is optimal.
    let (mut relaxed, mut dual) = relax(&ctx, &lambda);
    if ctx.feasible(&relaxed) {
        let cost = ctx.true_cost(&relaxed);
        return Ok(finish(&ctx, relaxed, cost, cost, 0));
    }
    check_reachable(&ctx, problem)?;
    let lowest: Vec<Vec<u32>> = deps
        .iter()
        .zip(&ctx.bounds)
        .map(|(d, b)| lowest_path(d, b))
        .collect();
    let mut best = repair(&ctx, &lambda, &lowest);
    let mut best_cost = ctx.true_cost(&best);
    let mut bound = dual;
    let mut theta = 1.0;
    let mut stale = 0;
    let mut rounds = 1;
    while rounds < MAX_ROUNDS && best_cost - bound > GAP_TOLERANCE * best_cost.abs() {
        // Subgradient: budget overrun per step, projected onto λ ≥ 0.
        let mut grad: Vec<(usize, Vec<f64>)> = Vec::new();
        let mut norm = 0.0;
        for &k in &ctx.active {
            let g: Vec<f64> = ctx
                .load(&relaxed, k)
                .iter()
                .zip(&lambda[k])
                .map(|(l, lam)| {
                    let g = l - ctx.limits[k];
                    if *lam <= 0.0 && g < 0.0 { 0.0 } else { g }
                })
                .collect();
            norm += g.iter().map(|x| x * x).sum::<f64>();
            grad.push((k, g));
        }
        if norm <= 0.0 {
            break;
        }
        let step = theta * (best_cost - dual).max(1e-9 * best_cost.abs().max(1.0)) / norm;
        for (k, g) in grad {
            for (lam, g) in lambda[k].iter_mut().zip(g) {
                *lam = (*lam + step * g).max(0.0);
            }
        }
        (relaxed, dual) = relax(&ctx, &lambda);
        rounds += 1;
        if dual > bound + 1e-9 * bound.abs() {
            bound = dual;
            stale = 0;
        } else {
            stale += 1;
            if stale >= 3 {
                theta *= 0.5;
                stale = 0;
            }
        }
        if ctx.feasible(&relaxed) || rounds % REPAIR_EVERY == 0 {
            let candidate = if ctx.feasible(&relaxed) {
                improve(&ctx, relaxed.clone())
            } else {
                repair(&ctx, &lambda, &lowest)
            };
            let cost = ctx.true_cost(&candidate);
            if cost < best_cost {
                best = candidate;
                best_cost = cost;
            }
        }
    }
    let candidate = repair(&ctx, &lambda, &lowest);
    let cost = ctx.true_cost(&candidate);
    if cost < best_cost {
        best = candidate;
        best_cost = cost;
    }
    Ok(finish(&ctx, best, best_cost, bound.min(best_cost), rounds))
}

/// Solves every deployment against the prices; returns the plans and the dual value.
fn relax(ctx: &Ctx, lambda: &[Vec<f64>]) -> (Vec<Vec<u32>>, f64) {
    let mut plans = Vec::with_capacity(ctx.deps.len());
    let mut total = 0.0;
    for ((d, b), fixed) in ctx.deps.iter().zip(&ctx.bounds).zip(&ctx.fixed) {
        if let Some((path, cost)) = fixed {
            total += cost;
            plans.push(path.clone());
            continue;
        }
        let prices = ctx.prices(d, lambda);
        // The deployment's own bounds always admit a path (validated inputs).
        let (path, cost) = dp::solve(d, b, &prices).unwrap_or_else(|| {
            let p = lowest_path(d, b);
            let c = dp::path_cost(d, &p, &prices);
            (p, c)
        });
        total += cost;
        plans.push(path);
    }
    for &k in &ctx.active {
        total -= ctx.limits[k] * lambda[k].iter().sum::<f64>();
    }
    (plans, total)
}

/// Fails when even the lowest reachable replica counts overrun a budget.
fn check_reachable(ctx: &Ctx, problem: &Problem) -> Result<(), PlanError> {
    let lowest: Vec<Vec<u32>> = ctx
        .deps
        .iter()
        .zip(&ctx.bounds)
        .map(|(d, b)| lowest_path(d, b))
        .collect();
    for &k in &ctx.active {
        let limit = ctx.limits[k];
        if let Some((step, &needed)) = ctx
            .load(&lowest, k)
            .iter()
            .enumerate()
            .find(|(_, l)| **l > limit * (1.0 + 1e-12) + 1e-9)
        {
            return Err(PlanError::BudgetInfeasible {
                name: problem.budgets[k].name.clone(),
                step,
                needed,
                limit,
            });
        }
    }
    Ok(())
}

/// Caps on deployment `i` per step, given the others' load `others[k][t]`.
fn caps(ctx: &Ctx, i: usize, others: &[Vec<f64>], floor: &[u32]) -> Vec<u32> {
    let d = &ctx.deps[i];
    let mut cap = ctx.bounds[i].hi.clone();
    for &k in &ctx.active {
        let u = usage(d, k);
        if u <= 0.0 {
            continue;
        }
        for t in 0..ctx.horizon {
            let room = ((ctx.limits[k] - others[k][t]) / u + 1e-9).floor().max(0.0);
            let room = room.min(u32::MAX as f64) as u32;
            // Never below the floor the invariant guarantees (guards rounding).
            cap[t] = cap[t].min(room.max(floor[t]));
        }
    }
    cap
}

/// Re-solves deployment `i` with its bounds capped; `None` if no path fits (not expected).
fn resolve(ctx: &Ctx, i: usize, cap: Vec<u32>, prices: &[f64]) -> Option<Vec<u32>> {
    let mut b = ctx.bounds[i].clone();
    b.hi = cap;
    dp::solve(&ctx.deps[i], &b, prices).map(|(p, _)| p)
}

/// A feasible plan: deployments in order of value per budget unit, each solved exactly against
/// the prices with caps leaving the not-yet-placed ones their lowest path; then best responses.
fn repair(ctx: &Ctx, lambda: &[Vec<f64>], lowest: &[Vec<u32>]) -> Vec<Vec<u32>> {
    let n = ctx.deps.len();
    let mut order: Vec<usize> = (0..n).collect();
    let density = |d: &Deployment| {
        let u: f64 = ctx.active.iter().map(|&k| usage(d, k)).sum();
        d.unmet_penalty * d.capacity / u.max(1e-12)
    };
    order.sort_by(|&a, &b| density(&ctx.deps[b]).total_cmp(&density(&ctx.deps[a])));
    let mut plans = lowest.to_vec();
    let mut load: Vec<Vec<f64>> = (0..ctx.limits.len()).map(|k| ctx.load(&plans, k)).collect();
    for i in order {
        if let Some((path, _)) = &ctx.fixed[i] {
            plans[i] = path.clone();
            continue;
        }
        let d = &ctx.deps[i];
        remove(&mut load, d, &plans[i], ctx);
        let cap = caps(ctx, i, &load, &lowest[i]);
        if let Some(p) = resolve(ctx, i, cap, &ctx.prices(d, lambda)) {
            plans[i] = p;
        }
        add(&mut load, d, &plans[i], ctx);
    }
    improve(ctx, plans)
}

/// Best-response passes: each deployment re-solved exactly at its true cost within what the
/// others leave. A feasible plan stays feasible and its cost never rises.
fn improve(ctx: &Ctx, mut plans: Vec<Vec<u32>>) -> Vec<Vec<u32>> {
    let mut load: Vec<Vec<f64>> = (0..ctx.limits.len()).map(|k| ctx.load(&plans, k)).collect();
    for _ in 0..2 {
        let mut changed = false;
        for (i, d) in ctx.deps.iter().enumerate() {
            if ctx.fixed[i].is_some() {
                continue;
            }
            remove(&mut load, d, &plans[i], ctx);
            let cap = caps(ctx, i, &load, &plans[i]);
            if let Some(p) = resolve(ctx, i, cap, &[])
                && p != plans[i]
                && dp::path_cost(d, &p, &[]) < dp::path_cost(d, &plans[i], &[])
            {
                plans[i] = p;
                changed = true;
            }
            add(&mut load, d, &plans[i], ctx);
        }
        if !changed {
            break;
        }
    }
    plans
}

fn remove(load: &mut [Vec<f64>], d: &Deployment, path: &[u32], ctx: &Ctx) {
    for &k in &ctx.active {
        let u = usage(d, k);
        for (l, &x) in load[k].iter_mut().zip(path) {
            *l -= u * x as f64;
        }
    }
}

fn add(load: &mut [Vec<f64>], d: &Deployment, path: &[u32], ctx: &Ctx) {
    for &k in &ctx.active {
        let u = usage(d, k);
        for (l, &x) in load[k].iter_mut().zip(path) {
            *l += u * x as f64;
        }
    }
}

fn finish(ctx: &Ctx, replicas: Vec<Vec<u32>>, cost: f64, bound: f64, rounds: usize) -> Plan {
    let unmet = ctx
        .deps
        .iter()
        .zip(&replicas)
        .map(|(d, p)| {
            p.iter()
                .zip(&d.demand)
                .map(|(&x, &dem)| (dem - d.capacity * x as f64).max(0.0))
                .sum()
        })
        .collect();
    Plan {
        replicas,
        cost,
        lower_bound: bound,
        unmet,
        iterations: rounds,
    }
}

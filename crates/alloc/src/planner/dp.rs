//! Exact dynamic programming for one deployment.
//!
//! The state is the replica count serving in a step. A step's cost depends only on that count
//! (replicas, unmet demand, budget prices), and a transition's cost only on the change (churn
//! plus the replica-steps a new pod is paid for while it starts), so the optimal path is a
//! shortest path over a T × R grid. The transition is a windowed minimum over |Δ| ≤ max_step of
//! a cost linear in Δ on each side, so two monotone-deque sweeps give every state's best
//! predecessor in O(R): the whole solve is O(T·R), independent of max_step.

use std::collections::VecDeque;

use super::Deployment;

/// Per-step bounds on the replica count, both inclusive.
#[derive(Debug, Clone)]
pub(crate) struct Bounds {
    pub lo: Vec<u32>,
    pub hi: Vec<u32>,
}

impl Bounds {
    /// The deployment's own bounds: [min, max] everywhere, no more than the current replicas
    /// before the lead time has passed, and the first step within max_step of the initial
    /// count (or the nearest allowed count when the initial one is outside [min, max]).
    /// `hi` is trimmed to the most replicas that can ever be useful (see [`useful_max`]).
    pub(crate) fn of(d: &Deployment) -> Self {
        let t_len = d.demand.len();
        let top = useful_max(d);
        let mut lo = vec![d.min_replicas; t_len];
        let mut hi = vec![top; t_len];
        let frozen = d.initial.max(d.min_replicas);
        for h in hi.iter_mut().take(d.lead_time) {
            *h = (*h).min(frozen);
        }
        if t_len > 0 {
            let (a, b) = first_step_range(d);
            lo[0] = lo[0].max(a);
            hi[0] = hi[0].min(b);
            if lo[0] > hi[0] {
                // Only possible when the lead-time cap cuts under the reachable range; the
                // hard bounds win.
                hi[0] = lo[0];
            }
        }
        Self { lo, hi }
    }
}

/// Range for the first step: within max_step of `initial` and inside [min, max]; when the two
/// do not meet (initial far outside the bounds), the bound nearest to `initial`.
pub(crate) fn first_step_range(d: &Deployment) -> (u32, u32) {
    let a = d.initial.saturating_sub(d.max_step).max(d.min_replicas);
    let b = d.initial.saturating_add(d.max_step).min(d.max_replicas);
    if a <= b {
        (a, b)
    } else {
        let c = d.initial.clamp(d.min_replicas, d.max_replicas);
        (c, c)
    }
}

/// No optimal plan uses more replicas than max(min, initial, ⌈peak demand / capacity⌉):
/// clipping any path there keeps it feasible, serves the same demand and costs no more.
pub(crate) fn useful_max(d: &Deployment) -> u32 {
    let peak = d.demand.iter().copied().fold(0.0, f64::max);
    let need = (peak / d.capacity).ceil().min(u32::MAX as f64) as u32;
    need.max(d.initial).max(d.min_replicas).min(d.max_replicas)
}

/// The cost of one step with `x` replicas (replicas, unmet demand, breach, a price per replica).
#[inline]
pub(crate) fn step_cost(d: &Deployment, t: usize, x: u32, price: f64) -> f64 {
    let x = x as f64;
    let unmet = (d.demand[t] - d.capacity * x).max(0.0);
    let breach = if unmet > 0.0 { d.breach_penalty } else { 0.0 };
    (d.replica_cost + price) * x + d.unmet_penalty * unmet + breach
}

/// The cost of moving from `from` to `to` replicas.
#[inline]
pub(crate) fn change_cost(d: &Deployment, from: u32, to: u32) -> f64 {
    if to > from {
        (to - from) as f64 * up_cost(d)
    } else {
        (from - to) as f64 * d.change_cost
    }
}

/// Adding one replica: the churn cost plus the replica-steps it is paid for while starting.
#[inline]
fn up_cost(d: &Deployment) -> f64 {
    d.change_cost + d.lead_time as f64 * d.replica_cost
}

/// Optimal path for one deployment under `bounds`, with `prices[t]` added per replica in step t
/// (Lagrange multipliers of shared budgets; empty means none). Returns the path and its cost
/// (prices included), or `None` when no path fits the bounds.
pub(crate) fn solve(d: &Deployment, bounds: &Bounds, prices: &[f64]) -> Option<(Vec<u32>, f64)> {
    let t_len = d.demand.len();
    if t_len == 0 {
        return Some((Vec::new(), 0.0));
    }
    let base = *bounds.lo.iter().min()?;
    let top = *bounds.hi.iter().max()?;
    if top < base {
        return None;
    }
    let r = (top - base) as usize + 1;
    let ms = d.max_step as usize;
    let up = up_cost(d);
    let down = d.change_cost;
    let price = |t: usize| prices.get(t).copied().unwrap_or(0.0);

    // value[x − base] for the current step; parent[t][x − base] = best predecessor index.
    let mut value = vec![f64::INFINITY; r];
    let mut parent = vec![0u32; t_len * r];
    let (lo0, hi0) = (bounds.lo[0], bounds.hi[0]);
    if lo0 > hi0 {
        return None;
    }
    for x in lo0..=hi0 {
        value[(x - base) as usize] = change_cost(d, d.initial, x) + step_cost(d, 0, x, price(0));
    }
    let mut next = vec![f64::INFINITY; r];
    let mut deque: VecDeque<usize> = VecDeque::with_capacity(r);
    for t in 1..t_len {
        let (lo, hi) = (bounds.lo[t], bounds.hi[t]);
        if lo > hi {
            return None;
        }
        let (lo_i, hi_i) = ((lo - base) as usize, (hi - base) as usize);
        next.fill(f64::INFINITY);
        let row = &mut parent[t * r..(t + 1) * r];
        // From below: min over y ∈ [x − ms, x] of value[y] − up·y, plus up·x.
        deque.clear();
        let key_up = |y: usize| value[y] - up * y as f64;
        let mut y_next = lo_i.saturating_sub(ms);
        for x in lo_i..=hi_i {
            while y_next <= x {
                if value[y_next].is_finite() {
                    while deque.back().is_some_and(|&b| key_up(b) >= key_up(y_next)) {
                        deque.pop_back();
                    }
                    deque.push_back(y_next);
                }
                y_next += 1;
            }
            while deque.front().is_some_and(|&f| f + ms < x) {
                deque.pop_front();
            }
            if let Some(&y) = deque.front() {
                next[x] = key_up(y) + up * x as f64;
                row[x] = y as u32;
            }
        }
        // From above: min over y ∈ [x, x + ms] of value[y] + down·y, minus down·x.
        deque.clear();
        let key_down = |y: usize| value[y] + down * y as f64;
        let mut y_next = (hi_i + ms).min(r - 1) as isize;
        for x in (lo_i..=hi_i).rev() {
            while y_next >= x as isize {
                let y = y_next as usize;
                if value[y].is_finite() {
                    while deque.back().is_some_and(|&b| key_down(b) >= key_down(y)) {
                        deque.pop_back();
                    }
                    deque.push_back(y);
                }
                y_next -= 1;
            }
            while deque.front().is_some_and(|&f| f > x + ms) {
                deque.pop_front();
            }
            if let Some(&y) = deque.front() {
                let v = key_down(y) - down * x as f64;
                if v < next[x] {
                    next[x] = v;
                    row[x] = y as u32;
                }
            }
        }
        for (x, v) in next.iter_mut().enumerate().take(hi_i + 1).skip(lo_i) {
            if v.is_finite() {
                *v += step_cost(d, t, base + x as u32, price(t));
            }
        }
        std::mem::swap(&mut value, &mut next);
    }
    let (best, cost) = value
        .iter()
        .enumerate()
        .filter(|(_, v)| v.is_finite())
        .min_by(|a, b| a.1.total_cmp(b.1))?;
    let mut path = vec![0u32; t_len];
    let mut x = best;
    for t in (0..t_len).rev() {
        path[t] = base + x as u32;
        if t > 0 {
            x = parent[t * r + x] as usize;
        }
    }
    Some((path, *cost))
}

/// The cost of a path under the deployment's own costs plus `prices` (for checks and repair).
pub(crate) fn path_cost(d: &Deployment, path: &[u32], prices: &[f64]) -> f64 {
    let mut prev = d.initial;
    let mut total = 0.0;
    for (t, &x) in path.iter().enumerate() {
        total +=
            change_cost(d, prev, x) + step_cost(d, t, x, prices.get(t).copied().unwrap_or(0.0));
        prev = x;
    }
    total
}

//! The design's seed model, implemented exactly so that its shortcoming can be shown.
//!
//! minimise Σ_t (C_t − R_t)²  subject to  C_t ≥ R_t,  C_t ≥ C_{t−1}.
//!
//! Its optimum is the running maximum C_t = max_{s≤t} R_s: the running maximum is feasible
//! (it covers every R_t and never decreases), and any feasible C has C_t ≥ C_s ≥ R_s for every
//! s ≤ t, so C_t ≥ max_{s≤t} R_s term by term; as each term (C_t − R_t)² grows with C_t above
//! R_t, the running maximum minimises every term at once. The tests prove this against a general
//! QP solver. Because capacity may never fall, one peak is paid for until the end of the horizon:
//! that is the waste [`waste`] and [`summarise`] report, and why recalloc plans differently.

use serde::Serialize;

/// The optimal capacity path: the running maximum of `demand` (empty in, empty out).
pub fn solve(demand: &[f64]) -> Vec<f64> {
    let mut peak = f64::NEG_INFINITY;
    demand
        .iter()
        .map(|&r| {
            peak = peak.max(r);
            peak
        })
        .collect()
}

/// The seed objective Σ (C_t − R_t)².
pub fn objective(capacity: &[f64], demand: &[f64]) -> f64 {
    capacity
        .iter()
        .zip(demand)
        .map(|(c, r)| (c - r) * (c - r))
        .sum()
}

/// Capacity provisioned beyond demand, Σ (C_t − R_t).
pub fn waste(capacity: &[f64], demand: &[f64]) -> f64 {
    capacity.iter().zip(demand).map(|(c, r)| c - r).sum()
}

/// What the seed model leaves on one demand series.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// The optimal path (running maximum).
    pub capacity: Vec<f64>,
    /// Σ (C_t − R_t)² at the optimum.
    pub objective: f64,
    /// Σ (C_t − R_t): capacity paid for and not used.
    pub waste: f64,
    /// Σ C_t / Σ R_t − 1, the same slack the simulator reports.
    pub slack: f64,
    /// The highest capacity the path reaches.
    pub peak: f64,
    /// Periods where the path exceeds the available capacity (the worked case's 600).
    pub periods_over_available: usize,
    /// Σ (available − R_t): the slack a static allocation of `available` would leave.
    pub static_waste: f64,
}

/// Solves the seed model and measures it against a fixed `available` capacity.
pub fn summarise(demand: &[f64], available: f64) -> Summary {
    let capacity = solve(demand);
    let total: f64 = demand.iter().sum();
    let provisioned: f64 = capacity.iter().sum();
    Summary {
        objective: objective(&capacity, demand),
        waste: waste(&capacity, demand),
        slack: if total > 0.0 {
            provisioned / total - 1.0
        } else {
            0.0
        },
        peak: capacity.iter().copied().fold(0.0, f64::max),
        periods_over_available: capacity.iter().filter(|&&c| c > available).count(),
        static_waste: demand.iter().map(|r| available - r).sum(),
        capacity,
    }
}

/// The design's worked case: `periods` draws from Normal(mean, sd), reproducible from `seed`
/// (SplitMix64 and Box–Muller, so no random-number crate is needed), clamped at zero.
pub fn worked_demand(periods: usize, mean: f64, sd: f64, seed: u64) -> Vec<f64> {
    let mut rng = SplitMix64(seed);
    (0..periods)
        .map(|_| (mean + sd * rng.normal()).max(0.0))
        .collect()
}

/// A tiny deterministic generator for reproducible examples and tests.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64(pub u64);

impl SplitMix64 {
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1).
    pub(crate) fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    pub(crate) fn normal(&mut self) -> f64 {
        let (u1, u2) = (self.uniform(), self.uniform());
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clarabel::algebra::CscMatrix;
    use clarabel::solver::{
        DefaultSettingsBuilder, DefaultSolver, IPSolver, NonnegativeConeT, SolverStatus,
    };

    /// Solves the seed model as a generic QP: ½xᵀ(2I)x − 2Rᵀx s.t. −C_t ≤ −R_t and
    /// C_{t−1} − C_t ≤ 0 (Clarabel's Ax + s = b, s ≥ 0). Returns Σ(C−R)².
    fn qp_objective(demand: &[f64]) -> (Vec<f64>, f64) {
        let n = demand.len();
        let p = CscMatrix::new(n, n, (0..=n).collect(), (0..n).collect(), vec![2.0; n]);
        let q: Vec<f64> = demand.iter().map(|r| -2.0 * r).collect();
        // Rows 0..n: −C_t ≤ −R_t. Rows n..2n−1: C_{t−1} − C_t ≤ 0 (row n+t−1 for t ≥ 1).
        let m = 2 * n - 1;
        let mut triplets: Vec<(usize, usize, f64)> = Vec::new();
        for t in 0..n {
            triplets.push((t, t, -1.0));
            if t >= 1 {
                triplets.push((n + t - 1, t - 1, 1.0));
                triplets.push((n + t - 1, t, -1.0));
            }
        }
        let (mut colptr, mut rowval, mut nzval) = (vec![0], Vec::new(), Vec::new());
        for col in 0..n {
            let mut entries: Vec<_> = triplets.iter().filter(|e| e.1 == col).collect();
            entries.sort_by_key(|e| e.0);
            for e in entries {
                rowval.push(e.0);
                nzval.push(e.2);
            }
            colptr.push(rowval.len());
        }
        let a = CscMatrix::new(m, n, colptr, rowval, nzval);
        let mut b: Vec<f64> = demand.iter().map(|r| -r).collect();
        b.extend(std::iter::repeat_n(0.0, n - 1));
        let settings = DefaultSettingsBuilder::default()
            .verbose(false)
            .tol_gap_abs(1e-10)
            .tol_gap_rel(1e-10)
            .tol_feas(1e-10)
            .build()
            .unwrap();
        let cones = [NonnegativeConeT(m)];
        let mut solver = DefaultSolver::new(&p, &q, &a, &b, &cones, settings).unwrap();
        solver.solve();
        assert_eq!(solver.solution.status, SolverStatus::Solved);
        let x = solver.solution.x.clone();
        let obj = objective(&x, demand);
        (x, obj)
    }

    fn assert_matches_qp(demand: &[f64]) {
        let c = solve(demand);
        let ours = objective(&c, demand);
        let (x, qp) = qp_objective(demand);
        let scale = demand.iter().map(|r| r * r).sum::<f64>().max(1.0);
        assert!(
            (ours - qp).abs() <= 1e-4 * qp.max(1e-9) || (ours - qp).abs() <= 1e-9 * scale,
            "closed form {ours} vs qp {qp}"
        );
        // The QP's point is the running max too (the optimum is unique: strictly convex).
        for (a, b) in c.iter().zip(&x) {
            assert!((a - b).abs() <= 1e-3 * a.abs().max(1.0), "{a} vs {b}");
        }
    }

    #[test]
    fn running_max_is_the_optimum_on_random_instances() {
        let mut rng = SplitMix64(7);
        for _ in 0..50 {
            let demand: Vec<f64> = (0..24).map(|_| 1000.0 * rng.uniform()).collect();
            assert_matches_qp(&demand);
        }
    }

    #[test]
    fn worked_case_matches_qp_and_reports_waste() {
        let demand = worked_demand(24, 500.0, 100.0, 2024);
        assert_matches_qp(&demand);
        let s = summarise(&demand, 600.0);
        println!(
            "seed worked case (24 periods, N(500,100), capacity 600): waste Σ(C−R) = {:.1}, \
             slack = {:.3}, objective = {:.1}, peak = {:.1}, periods above 600 = {}, \
             static-600 waste = {:.1}",
            s.waste, s.slack, s.objective, s.peak, s.periods_over_available, s.static_waste
        );
        assert!(s.waste >= 0.0 && s.slack >= 0.0);
        assert!(s.capacity.windows(2).all(|w| w[1] >= w[0]));
        assert!(s.capacity.iter().zip(&demand).all(|(c, r)| c >= r));
    }

    #[test]
    fn edge_cases() {
        assert!(solve(&[]).is_empty());
        assert_eq!(solve(&[3.0, 1.0, 4.0, 1.0]), vec![3.0, 3.0, 4.0, 4.0]);
        assert_eq!(waste(&[3.0, 3.0, 4.0, 4.0], &[3.0, 1.0, 4.0, 1.0]), 5.0);
        let s = summarise(&[0.0, 0.0], 1.0);
        assert_eq!(s.slack, 0.0);
    }
}

//! Implicit feedback: alternating least squares with confidence weights (Hu, Koren & Volinsky
//! 2008). Every (user, item) pair has preference `p = 1` when observed, else 0, and confidence
//! `c = 1 + α·r` (r the interaction strength), else 1. Minimises
//!
//! ```text
//! Σ_{u,i} c_ui (p_ui − x_u·y_i)² + λ (Σ_u |x_u|² + Σ_i |y_i|²)
//! ```
//!
//! alternating exact-in-expectation solves for all users, then all items. Each solve is
//! `(YᵀY + Yᵀ(C_u − I)Y + λI) x_u = Yᵀ C_u p_u`, done with a few conjugate-gradient steps from the
//! previous `x_u` (Takács et al. 2011; what the `implicit` package does) or exactly by Cholesky.
//! Both only lower each user's quadratic, so the loss never increases. Fold-in is one exact solve
//! for a user who was not in training.

use crate::data::Csr;
use crate::linalg::{cholesky_solve, dot, gram};
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AlsParams {
    pub factors: usize,
    pub iterations: usize,
    /// λ
    pub regularization: f32,
    /// α: confidence of an observed pair is `1 + α·r`.
    pub alpha: f32,
    /// Conjugate-gradient steps per solve; 0 solves exactly (Cholesky).
    pub cg_steps: usize,
    pub seed: u64,
    pub threads: usize,
}

impl Default for AlsParams {
    fn default() -> Self {
        Self {
            factors: 64,
            iterations: 15,
            regularization: 0.05,
            alpha: 0.25,
            cg_steps: 3,
            seed: 1,
            threads: 2,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ImplicitModel {
    pub factors: usize,
    pub alpha: f32,
    pub regularization: f32,
    /// users × factors
    pub user_factors: Vec<f32>,
    /// items × factors
    pub item_factors: Vec<f32>,
}

impl ImplicitModel {
    pub fn users(&self) -> usize {
        self.user_factors.len() / self.factors
    }
    pub fn items(&self) -> usize {
        self.item_factors.len() / self.factors
    }
    pub fn user_vector(&self, u: usize) -> &[f32] {
        &self.user_factors[u * self.factors..(u + 1) * self.factors]
    }
    pub fn item_vector(&self, i: usize) -> &[f32] {
        &self.item_factors[i * self.factors..(i + 1) * self.factors]
    }

    /// A new user's factors from their history (item indices and strengths), by the exact
    /// solve training would do for them with the item factors fixed. No retraining.
    pub fn fold_in(&self, items: &[u32], values: &[f32]) -> Vec<f32> {
        let yty = gram(&self.item_factors, self.factors);
        solve_exact(
            &yty,
            &self.item_factors,
            self.factors,
            items,
            values,
            self.alpha,
            self.regularization,
        )
    }

    /// The training objective on `by_user` (for tests and diagnostics).
    pub fn loss(&self, by_user: &Csr) -> f64 {
        let k = self.factors;
        let yty = gram(&self.item_factors, k);
        let mut total = 0f64;
        for u in 0..self.users() {
            let x = self.user_vector(u);
            // Σ_i (x·y_i)² over all items = xᵀ YᵀY x: the loss of every pair as if unobserved.
            let mut all = 0f64;
            for a in 0..k {
                let mut s = 0f64;
                for b in 0..k {
                    s += yty[a * k + b] * x[b] as f64;
                }
                all += x[a] as f64 * s;
            }
            total += all;
            let (items, values) = by_user.row(u);
            for (&i, &r) in items.iter().zip(values) {
                let pred = dot(x, self.item_vector(i as usize)) as f64;
                let c = 1.0 + (self.alpha * r) as f64;
                total += c * (1.0 - pred).powi(2) - pred * pred;
            }
        }
        let reg: f64 = self
            .user_factors
            .iter()
            .chain(&self.item_factors)
            .map(|v| (*v as f64).powi(2))
            .sum();
        total + self.regularization as f64 * reg
    }
}

/// Trains on a user × item matrix of interaction strengths (`by_user`) and its transpose.
pub fn fit(by_user: &Csr, by_item: &Csr, p: &AlsParams) -> ImplicitModel {
    fit_observed(by_user, by_item, p, |_, _| {})
}

/// Like [`fit`], calling `after_iteration(iteration, &model)` after each full iteration.
pub fn fit_observed(
    by_user: &Csr,
    by_item: &Csr,
    p: &AlsParams,
    mut after_iteration: impl FnMut(usize, &ImplicitModel),
) -> ImplicitModel {
    let k = p.factors.max(1);
    let mut rng = rand::rngs::StdRng::seed_from_u64(p.seed);
    // Small random start (as `implicit` does), scaled so initial predictions are near 0.
    let scale = 0.01;
    let mut init =
        |n: usize| -> Vec<f32> { (0..n * k).map(|_| rng.random::<f32>() * scale).collect() };
    let mut m = ImplicitModel {
        factors: k,
        alpha: p.alpha,
        regularization: p.regularization,
        user_factors: init(by_user.rows()),
        item_factors: init(by_item.rows()),
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(p.threads.max(1))
        .build()
        .expect("thread pool");
    for it in 0..p.iterations {
        pool.install(|| solve_side(&mut m.user_factors, &m.item_factors, by_user, k, p));
        pool.install(|| solve_side(&mut m.item_factors, &m.user_factors, by_item, k, p));
        after_iteration(it, &m);
    }
    m
}

/// Re-solves every row of `x` against the fixed `y`.
fn solve_side(x: &mut [f32], y: &[f32], rows: &Csr, k: usize, p: &AlsParams) {
    let yty = gram(y, k);
    // CG works in f32 (as `implicit` does): the k × k product dominates its cost.
    let yty32: Vec<f32> = yty.iter().map(|&v| v as f32).collect();
    #[cfg(target_arch = "x86_64")]
    let fast =
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma");
    #[cfg(not(target_arch = "x86_64"))]
    let fast = false;
    x.par_chunks_mut(k).enumerate().for_each(|(r, xr)| {
        let (idx, vals) = rows.row(r);
        let (a, l, n) = (p.alpha, p.regularization, p.cg_steps);
        if n == 0 {
            xr.copy_from_slice(&solve_exact(&yty, y, k, idx, vals, a, l));
        } else if fast {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the CPU supports the features the function is compiled for.
            unsafe {
                cg_avx2(&yty32, y, k, idx, vals, a, l, n, xr)
            };
        } else {
            cg(&yty32, y, k, idx, vals, a, l, n, xr);
        }
    });
}

/// [`cg`] compiled for AVX2 and FMA, chosen at run time so one binary serves every x86-64 node.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn cg_avx2(
    yty: &[f32],
    y: &[f32],
    k: usize,
    idx: &[u32],
    vals: &[f32],
    alpha: f32,
    lambda: f32,
    steps: usize,
    x: &mut [f32],
) {
    cg(yty, y, k, idx, vals, alpha, lambda, steps, x);
}

/// `A v` for `A = YᵀY + Yᵀ(C − I)Y + λI`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn apply(
    yty: &[f32],
    y: &[f32],
    k: usize,
    idx: &[u32],
    vals: &[f32],
    alpha: f32,
    lambda: f32,
    v: &[f32],
    out: &mut [f32],
) {
    for (a, row) in yty.chunks_exact(k).enumerate() {
        out[a] = dot(row, v) + lambda * v[a];
    }
    for (&i, &r) in idx.iter().zip(vals) {
        let yi = &y[i as usize * k..(i as usize + 1) * k];
        let w = alpha * r * dot(yi, v);
        crate::linalg::axpy(w, yi, out);
    }
}

/// A few conjugate-gradient steps on `A x = b`, `b = Σ c_i y_i`, starting from `x`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn cg(
    yty: &[f32],
    y: &[f32],
    k: usize,
    idx: &[u32],
    vals: &[f32],
    alpha: f32,
    lambda: f32,
    steps: usize,
    x: &mut [f32],
) {
    let mut ax = vec![0f32; k];
    apply(yty, y, k, idx, vals, alpha, lambda, x, &mut ax);
    // r = b − A x
    let mut r: Vec<f32> = ax.iter().map(|v| -v).collect();
    for (&i, &v) in idx.iter().zip(vals) {
        let yi = &y[i as usize * k..(i as usize + 1) * k];
        crate::linalg::axpy(1.0 + alpha * v, yi, &mut r);
    }
    let mut d = r.clone();
    let mut rs = dot(&r, &r);
    let mut ad = vec![0f32; k];
    for _ in 0..steps {
        if rs < 1e-20 {
            break;
        }
        apply(yty, y, k, idx, vals, alpha, lambda, &d, &mut ad);
        let dad = dot(&d, &ad);
        if dad <= 0.0 {
            break;
        }
        let step = rs / dad;
        crate::linalg::axpy(step, &d, x);
        crate::linalg::axpy(-step, &ad, &mut r);
        let rs_new = dot(&r, &r);
        let beta = rs_new / rs;
        d.iter_mut().zip(&r).for_each(|(d, r)| *d = r + beta * *d);
        rs = rs_new;
    }
}

/// The exact solve by Cholesky, in f64.
fn solve_exact(
    yty: &[f64],
    y: &[f32],
    k: usize,
    idx: &[u32],
    vals: &[f32],
    alpha: f32,
    lambda: f32,
) -> Vec<f32> {
    let mut a = yty.to_vec();
    let mut b = vec![0f64; k];
    for (&i, &v) in idx.iter().zip(vals) {
        let yi = &y[i as usize * k..(i as usize + 1) * k];
        let c = 1.0 + (alpha * v) as f64;
        for p in 0..k {
            let yp = yi[p] as f64;
            b[p] += c * yp;
            let w = (c - 1.0) * yp;
            for q in 0..k {
                a[p * k + q] += w * yi[q] as f64;
            }
        }
    }
    for p in 0..k {
        a[p * k + p] += lambda as f64;
    }
    cholesky_solve(&a, &b, k)
        .map(|x| x.into_iter().map(|v| v as f32).collect())
        .unwrap_or_else(|| vec![0.0; k])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Triple;

    fn matrix(seed: u64, users: u32, items: u32, n: usize) -> (Csr, Csr) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let t: Vec<Triple> = (0..n)
            .map(|_| Triple {
                user: rng.random_range(0..users),
                item: rng.random_range(0..items),
                value: rng.random_range(1..4) as f32,
                ts: 0,
            })
            .collect();
        (
            Csr::build(&t, users as usize, false),
            Csr::build(&t, items as usize, true),
        )
    }

    #[test]
    fn loss_never_increases() {
        for (seed, cg_steps) in [(1, 3), (2, 1), (3, 0)] {
            let (u, i) = matrix(seed, 40, 30, 300);
            let p = AlsParams {
                factors: 8,
                iterations: 12,
                cg_steps,
                ..AlsParams::default()
            };
            let mut losses = Vec::new();
            fit_observed(&u, &i, &p, |_, m| losses.push(m.loss(&u)));
            for w in losses.windows(2) {
                assert!(
                    w[1] <= w[0] * (1.0 + 1e-5),
                    "cg_steps {cg_steps}: loss rose {} → {}",
                    w[0],
                    w[1]
                );
            }
            assert!(losses.last().unwrap() < &losses[0]);
        }
    }

    #[test]
    fn fold_in_equals_the_full_solve_for_fixed_items() {
        let (u, i) = matrix(7, 30, 25, 250);
        let p = AlsParams {
            factors: 6,
            iterations: 5,
            cg_steps: 0,
            ..AlsParams::default()
        };
        let m = fit(&u, &i, &p);
        // One more exact user half-step is what training would give each user now.
        let mut users = m.user_factors.clone();
        solve_side(&mut users, &m.item_factors, &u, m.factors, &p);
        for user in [0usize, 5, 17] {
            let (idx, vals) = u.row(user);
            let folded = m.fold_in(idx, vals);
            let full = &users[user * 6..(user + 1) * 6];
            for (a, b) in folded.iter().zip(full) {
                assert!((a - b).abs() < 1e-4, "user {user}: {folded:?} vs {full:?}");
            }
        }
    }

    #[test]
    fn recovers_a_block_structure() {
        // Two groups of users each consume their own group of items: a user's top items must
        // come from their own group.
        let mut t = Vec::new();
        for user in 0..20u32 {
            for item in 0..10u32 {
                if (user < 10) == (item < 5) && !(user + item).is_multiple_of(3) {
                    t.push(Triple {
                        user,
                        item,
                        value: 1.0,
                        ts: 0,
                    });
                }
            }
        }
        let (u, i) = (Csr::build(&t, 20, false), Csr::build(&t, 10, true));
        let m = fit(
            &u,
            &i,
            &AlsParams {
                factors: 4,
                ..AlsParams::default()
            },
        );
        for user in [0usize, 3, 12, 19] {
            let best = (0..10)
                .max_by(|&a, &b| {
                    dot(m.user_vector(user), m.item_vector(a))
                        .total_cmp(&dot(m.user_vector(user), m.item_vector(b)))
                })
                .unwrap();
            assert_eq!(best < 5, user < 10, "user {user} → item {best}");
        }
    }
}

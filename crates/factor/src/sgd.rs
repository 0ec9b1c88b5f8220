//! Explicit feedback: biased matrix factorisation trained by stochastic gradient descent — the
//! model behind Surprise's `SVD`: `r̂ = μ + b_u + b_i + p_u·q_i`, squared error with L2
//! regularisation, updated rating by rating.
//!
//! Parallel without data races (DSGD, Gemulla et al. 2011): users and items are cut into `T`
//! blocks; in sub-epoch `s` thread `t` takes the ratings of user block `t` × item block
//! `(t + s) mod T`, so no two threads touch the same user or item row at once, and after `T`
//! sub-epochs every rating was visited once. Ratings within a block keep one shuffled order.

use crate::data::Triple;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_distr_normal::normal;

/// Hyper-parameters; the defaults are tuned on MovieLens-100k folds (see bench/results.md).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SgdParams {
    pub factors: usize,
    pub epochs: usize,
    pub learning_rate: f32,
    /// L2 weight of the factors.
    pub regularization: f32,
    /// L2 weight of the biases.
    pub bias_regularization: f32,
    /// Factors start as N(0, init_std²).
    pub init_std: f32,
    pub seed: u64,
    pub threads: usize,
}

impl Default for SgdParams {
    fn default() -> Self {
        Self {
            factors: 64,
            epochs: 25,
            learning_rate: 0.01,
            regularization: 0.06,
            bias_regularization: 0.02,
            init_std: 0.05,
            seed: 1,
            threads: 2,
        }
    }
}

/// A trained explicit model.
#[derive(Debug, Clone, PartialEq)]
pub struct ExplicitModel {
    pub factors: usize,
    pub global_mean: f32,
    pub user_bias: Vec<f32>,
    pub item_bias: Vec<f32>,
    /// users × factors, row-major.
    pub user_factors: Vec<f32>,
    /// items × factors, row-major.
    pub item_factors: Vec<f32>,
    /// Predictions are clipped to the range seen in training.
    pub min_value: f32,
    pub max_value: f32,
}

mod rand_distr_normal {
    use rand::Rng;
    /// A standard normal sample by Box–Muller (keeps the dependency list short).
    pub fn normal(rng: &mut impl Rng) -> f32 {
        let u1: f32 = rng.random::<f32>().max(f32::MIN_POSITIVE);
        let u2: f32 = rng.random();
        (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
    }
}

impl ExplicitModel {
    pub fn users(&self) -> usize {
        self.user_bias.len()
    }
    pub fn items(&self) -> usize {
        self.item_bias.len()
    }
    pub fn user_vector(&self, u: usize) -> &[f32] {
        &self.user_factors[u * self.factors..(u + 1) * self.factors]
    }
    pub fn item_vector(&self, i: usize) -> &[f32] {
        &self.item_factors[i * self.factors..(i + 1) * self.factors]
    }

    /// The predicted value; unknown users or items fall back to the biases that exist.
    pub fn predict(&self, user: Option<usize>, item: Option<usize>) -> f32 {
        let mut r = self.global_mean;
        if let Some(u) = user.filter(|&u| u < self.users()) {
            r += self.user_bias[u];
        }
        if let Some(i) = item.filter(|&i| i < self.items()) {
            r += self.item_bias[i];
            if let Some(u) = user.filter(|&u| u < self.users()) {
                r += crate::linalg::dot(self.user_vector(u), self.item_vector(i));
            }
        }
        r.clamp(self.min_value, self.max_value)
    }
}

/// Trains on `ratings` (indices below `users` / `items`).
pub fn fit(ratings: &[Triple], users: usize, items: usize, p: &SgdParams) -> ExplicitModel {
    let k = p.factors.max(1);
    let mut rng = rand::rngs::StdRng::seed_from_u64(p.seed);
    let n = ratings.len().max(1) as f64;
    let global_mean = (ratings.iter().map(|t| t.value as f64).sum::<f64>() / n) as f32;
    let (min_value, max_value) = ratings.iter().fold((f32::MAX, f32::MIN), |(a, b), t| {
        (a.min(t.value), b.max(t.value))
    });
    let mut m = ExplicitModel {
        factors: k,
        global_mean,
        user_bias: vec![0.0; users],
        item_bias: vec![0.0; items],
        user_factors: (0..users * k)
            .map(|_| normal(&mut rng) * p.init_std)
            .collect(),
        item_factors: (0..items * k)
            .map(|_| normal(&mut rng) * p.init_std)
            .collect(),
        min_value: if ratings.is_empty() { 0.0 } else { min_value },
        max_value: if ratings.is_empty() { 0.0 } else { max_value },
    };
    if ratings.is_empty() || users == 0 || items == 0 {
        return m;
    }
    let t = p.threads.clamp(1, 64).min(users).min(items);
    // Blocks of near-equal rating counts: rows are renumbered so each block is a contiguous
    // range (safe disjoint `&mut` slices), and un-numbered at the end.
    let mut user_counts = vec![0usize; users];
    let mut item_counts = vec![0usize; items];
    for r in ratings {
        user_counts[r.user as usize] += 1;
        item_counts[r.item as usize] += 1;
    }
    let (user_new, user_bounds) = balanced_blocks(&user_counts, t);
    let (item_new, item_bounds) = balanced_blocks(&item_counts, t);
    let block_of = |bounds: &[usize], i: usize| bounds.partition_point(|&b| b <= i) - 1;
    let mut blocks: Vec<Vec<Triple>> = vec![Vec::new(); t * t];
    let mut order: Vec<&Triple> = ratings.iter().collect();
    order.shuffle(&mut rng);
    for r in order {
        let (u, i) = (
            user_new[r.user as usize] as usize,
            item_new[r.item as usize] as usize,
        );
        let (ub, ib) = (block_of(&user_bounds, u), block_of(&item_bounds, i));
        blocks[ub * t + ib].push(Triple {
            user: u as u32,
            item: i as u32,
            ..*r
        });
    }
    let mut bu = reorder(&m.user_bias, &user_new, 1, true);
    let mut pu = reorder(&m.user_factors, &user_new, k, true);
    let mut bi = reorder(&m.item_bias, &item_new, 1, true);
    let mut qi = reorder(&m.item_factors, &item_new, k, true);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(t)
        .build()
        .expect("thread pool");
    for _ in 0..p.epochs {
        for s in 0..t {
            // Hand each thread its user rows and, permuted, its item rows.
            let user_parts = split_rows(&mut bu, &mut pu, &user_bounds, k);
            let mut item_parts: Vec<Option<(&mut [f32], &mut [f32])>> =
                split_rows(&mut bi, &mut qi, &item_bounds, k)
                    .into_iter()
                    .map(Some)
                    .collect();
            let blocks = &blocks;
            let (user_bounds, item_bounds) = (&user_bounds, &item_bounds);
            pool.scope(|scope| {
                for (tb, (bu, pu)) in user_parts.into_iter().enumerate() {
                    let ib = (tb + s) % t;
                    let Some((bi, qi)) = item_parts[ib].take() else {
                        continue;
                    };
                    let block = &blocks[tb * t + ib];
                    let (u0, i0) = (user_bounds[tb], item_bounds[ib]);
                    scope.spawn(move |_| {
                        sgd_block(block, u0, i0, bu, pu, bi, qi, k, global_mean, p);
                    });
                }
            });
        }
    }
    m.user_bias = reorder(&bu, &user_new, 1, false);
    m.user_factors = reorder(&pu, &user_new, k, false);
    m.item_bias = reorder(&bi, &item_new, 1, false);
    m.item_factors = reorder(&qi, &item_new, k, false);
    m
}

/// Moves `width`-wide rows to their new index (`forward`) or back to their old one.
fn reorder(v: &[f32], new: &[u32], width: usize, forward: bool) -> Vec<f32> {
    let mut out = vec![0f32; v.len()];
    for (old, &n) in new.iter().enumerate() {
        let (a, b) = (old * width, n as usize * width);
        let (from, to) = if forward { (a, b) } else { (b, a) };
        out[to..to + width].copy_from_slice(&v[from..from + width]);
    }
    out
}

/// Assigns rows to `t` blocks of near-equal total count (largest first, each to the lightest
/// block) and renumbers them block by block. Returns (new index of each row, block starts plus
/// the end).
fn balanced_blocks(counts: &[usize], t: usize) -> (Vec<u32>, Vec<usize>) {
    let mut by_count: Vec<usize> = (0..counts.len()).collect();
    by_count.sort_by_key(|&r| (std::cmp::Reverse(counts[r]), r));
    let mut load = vec![0usize; t];
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); t];
    for r in by_count {
        let b = (0..t).min_by_key(|&b| (load[b], b)).expect("t > 0");
        load[b] += counts[r];
        members[b].push(r);
    }
    let mut new = vec![0u32; counts.len()];
    let mut bounds = vec![0usize];
    let mut next = 0u32;
    for mut m in members {
        m.sort_unstable();
        for r in m {
            new[r] = next;
            next += 1;
        }
        bounds.push(next as usize);
    }
    (new, bounds)
}

/// Splits biases and factor rows at the block bounds into disjoint mutable parts.
fn split_rows<'a>(
    bias: &'a mut [f32],
    factors: &'a mut [f32],
    bounds: &[usize],
    k: usize,
) -> Vec<(&'a mut [f32], &'a mut [f32])> {
    let mut out = Vec::with_capacity(bounds.len() - 1);
    let (mut b, mut f) = (bias, factors);
    for w in bounds.windows(2) {
        let n = w[1] - w[0];
        let (bh, bt) = b.split_at_mut(n);
        let (fh, ft) = f.split_at_mut(n * k);
        out.push((bh, fh));
        b = bt;
        f = ft;
    }
    out
}

/// Runs one block, with AVX2 and FMA when the CPU has them (chosen at run time, so one binary
/// serves every x86-64 node).
#[allow(clippy::too_many_arguments)]
fn sgd_block(
    block: &[Triple],
    u0: usize,
    i0: usize,
    bu: &mut [f32],
    pu: &mut [f32],
    bi: &mut [f32],
    qi: &mut [f32],
    k: usize,
    mu: f32,
    p: &SgdParams,
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports the features the function is compiled for.
        unsafe { sgd_block_avx2(block, u0, i0, bu, pu, bi, qi, k, mu, p) };
        return;
    }
    sgd_block_inner(block, u0, i0, bu, pu, bi, qi, k, mu, p);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn sgd_block_avx2(
    block: &[Triple],
    u0: usize,
    i0: usize,
    bu: &mut [f32],
    pu: &mut [f32],
    bi: &mut [f32],
    qi: &mut [f32],
    k: usize,
    mu: f32,
    p: &SgdParams,
) {
    sgd_block_inner(block, u0, i0, bu, pu, bi, qi, k, mu, p);
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn sgd_block_inner(
    block: &[Triple],
    u0: usize,
    i0: usize,
    bu: &mut [f32],
    pu: &mut [f32],
    bi: &mut [f32],
    qi: &mut [f32],
    k: usize,
    mu: f32,
    p: &SgdParams,
) {
    let (lr, reg, breg) = (p.learning_rate, p.regularization, p.bias_regularization);
    for r in block {
        let (u, i) = (r.user as usize - u0, r.item as usize - i0);
        let pu = &mut pu[u * k..(u + 1) * k];
        let qi = &mut qi[i * k..(i + 1) * k];
        let err = r.value - (mu + bu[u] + bi[i] + crate::linalg::dot(pu, qi));
        bu[u] += lr * (err - breg * bu[u]);
        bi[i] += lr * (err - breg * bi[i]);
        for (a, b) in pu.iter_mut().zip(qi.iter_mut()) {
            let (x, y) = (*a, *b);
            *a += lr * (err * y - reg * x);
            *b += lr * (err * x - reg * y);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(user: u32, item: u32, value: f32) -> Triple {
        Triple {
            user,
            item,
            value,
            ts: 0,
        }
    }

    #[test]
    fn learns_a_rank_one_matrix() {
        // r(u, i) = 1 + a_u · b_i, fully observed: training error must become small.
        let a = [0.5, 1.0, 1.5, 2.0, 0.8, 1.2];
        let b = [1.0, 2.0, 0.5, 1.5, 1.8];
        let mut r = Vec::new();
        for (u, x) in a.iter().enumerate() {
            for (i, y) in b.iter().enumerate() {
                r.push(t(u as u32, i as u32, 1.0 + x * y));
            }
        }
        for threads in [1, 2, 3] {
            let p = SgdParams {
                factors: 4,
                epochs: 400,
                learning_rate: 0.02,
                regularization: 0.0,
                bias_regularization: 0.0,
                threads,
                ..SgdParams::default()
            };
            let m = fit(&r, 6, 5, &p);
            let rmse = (r
                .iter()
                .map(|x| {
                    let e = m.predict(Some(x.user as usize), Some(x.item as usize)) - x.value;
                    e * e
                })
                .sum::<f32>()
                / r.len() as f32)
                .sqrt();
            assert!(rmse < 0.05, "threads {threads}: rmse {rmse}");
        }
    }

    #[test]
    fn unknown_ids_fall_back_to_biases_and_the_range() {
        let r = vec![t(0, 0, 5.0), t(1, 1, 1.0), t(0, 1, 3.0)];
        let m = fit(&r, 2, 2, &SgdParams::default());
        let mean = m.predict(None, None);
        assert!((mean - 3.0).abs() < 1e-6);
        let p = m.predict(Some(7), Some(0));
        assert!((1.0..=5.0).contains(&p));
        assert!(m.predict(Some(0), None).is_finite());
    }

    #[test]
    fn same_seed_same_model() {
        let r: Vec<Triple> = (0..200)
            .map(|n| t(n % 13, n % 7, (n % 5) as f32 + 1.0))
            .collect();
        let p = SgdParams::default();
        assert_eq!(fit(&r, 13, 7, &p), fit(&r, 13, 7, &p));
    }
}

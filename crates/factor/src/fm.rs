//! A second-order factorization machine (Rendle 2010) over a few dense features, trained with a
//! pairwise logistic loss (BPR: a positive should score above a negative of the same user).
//!
//! `s(z) = w·z + ½ Σ_f [(Σ_j v_jf z_j)² − Σ_j v_jf² z_j²]`, `z` the standardised features. The
//! pairwise factor interactions let the ranker learn, e.g., that the CF score matters for users
//! with long histories and trending matters for users with none (a feature × history-length
//! interaction) without hand-made crosses.

// The SGD steps index several parallel arrays (features, factors, sums) by the same counters;
// iterator chains over four of them read worse than the formulas.
#![allow(clippy::needless_range_loop)]

use rand::{Rng, SeedableRng};

/// Features and factors up to this many are scored without allocating.
const STACK: usize = 64;
/// Standardised features are clipped to ±this.
const CLIP: f32 = 8.0;
/// Pairs drawn from each user per epoch (fewer when the user has fewer positive × negative).
const PAIRS_PER_GROUP: usize = 64;

/// Training settings of the ranker.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FmParams {
    /// Width of the interaction factors.
    pub factors: usize,
    pub epochs: usize,
    pub learning_rate: f32,
    pub regularization: f32,
    pub seed: u64,
    /// Rankers trained from seeds `seed`, `seed + 1`, … and averaged.
    pub members: usize,
}

impl Default for FmParams {
    fn default() -> Self {
        Self {
            factors: 4,
            epochs: 20,
            learning_rate: 0.05,
            regularization: 1e-3,
            seed: 7,
            members: 4,
        }
    }
}

/// A trained ranker: feature standardisation, linear weights and interaction factors.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Fm {
    pub features: usize,
    pub factors: usize,
    pub mean: Vec<f32>,
    pub scale: Vec<f32>,
    pub linear: Vec<f32>,
    /// features × factors, row-major.
    pub pairs: Vec<f32>,
}

impl Fm {
    /// A ranker that scores every row 0 (used before training and when there is nothing to
    /// learn from).
    pub fn zero(features: usize, factors: usize) -> Self {
        Self {
            features,
            factors,
            mean: vec![0.0; features],
            scale: vec![1.0; features],
            linear: vec![0.0; features],
            pairs: vec![0.0; features * factors],
        }
    }

    fn standardise(&self, x: &[f32], z: &mut [f32]) {
        for j in 0..self.features {
            // Clipped: a value far outside what training saw does not decide a ranking alone.
            z[j] = ((x[j] - self.mean[j]) * self.scale[j]).clamp(-CLIP, CLIP);
        }
    }

    fn score_z(&self, z: &[f32], sums: &mut [f32]) -> f32 {
        let mut s = 0f32;
        for j in 0..self.features {
            s += self.linear[j] * z[j];
        }
        let mut second = 0f32;
        for f in 0..self.factors {
            let (mut a, mut b) = (0f32, 0f32);
            for j in 0..self.features {
                let v = self.pairs[j * self.factors + f] * z[j];
                a += v;
                b += v * v;
            }
            sums[f] = a;
            second += a * a - b;
        }
        s + 0.5 * second
    }

    /// The score of one feature row (raw, unstandardised).
    pub fn score(&self, x: &[f32]) -> f32 {
        // Serving scores every candidate of every request: the scratch sits on the stack when
        // it fits (it does for the pipeline's 15 features and 4 × 4 factors).
        let (mut z, mut sums) = ([0f32; STACK], [0f32; STACK]);
        if self.features <= STACK && self.factors <= STACK {
            self.standardise(x, &mut z[..self.features]);
            return self.score_z(&z[..self.features], &mut sums[..self.factors]);
        }
        let mut z = vec![0f32; self.features];
        let mut sums = vec![0f32; self.factors];
        self.standardise(x, &mut z);
        self.score_z(&z, &mut sums)
    }

    /// Each feature's share of a row's score: its linear term plus half of each pairwise term
    /// it takes part in (the shares sum to the score). For explanations.
    pub fn contributions(&self, x: &[f32]) -> Vec<f32> {
        let mut z = vec![0f32; self.features];
        self.standardise(x, &mut z);
        let mut out: Vec<f32> = (0..self.features).map(|j| self.linear[j] * z[j]).collect();
        for a in 0..self.features {
            for b in (a + 1)..self.features {
                let mut dotv = 0f32;
                for f in 0..self.factors {
                    dotv += self.pairs[a * self.factors + f] * self.pairs[b * self.factors + f];
                }
                let t = dotv * z[a] * z[b];
                out[a] += 0.5 * t;
                out[b] += 0.5 * t;
            }
        }
        out
    }
}

/// Training rows of one user (a "group"): feature rows and which are positives.
pub struct Group {
    pub rows: Vec<Vec<f32>>,
    pub positive: Vec<bool>,
}

/// Fits the ranker on groups: each epoch draws, per group, up to 64 (positive, negative) pairs
/// of the same group (at most `negatives` per positive).
pub fn fit(groups: &[Group], features: usize, negatives: usize, p: &FmParams) -> Fm {
    let mut fm = Fm::zero(features, p.factors);
    // Standardisation from every row seen in training.
    let (mut n, mut sum, mut sq) = (0f64, vec![0f64; features], vec![0f64; features]);
    for g in groups {
        for r in &g.rows {
            n += 1.0;
            for j in 0..features {
                sum[j] += r[j] as f64;
                sq[j] += (r[j] as f64).powi(2);
            }
        }
    }
    if n < 2.0 {
        return fm;
    }
    for j in 0..features {
        let m = sum[j] / n;
        let var = (sq[j] / n - m * m).max(0.0);
        fm.mean[j] = m as f32;
        fm.scale[j] = if var > 1e-12 {
            (1.0 / var.sqrt()) as f32
        } else {
            0.0
        };
    }
    // Standardised rows once.
    let zs: Vec<StandardGroup> = groups
        .iter()
        .map(|g| {
            let rows: Vec<Vec<f32>> = g
                .rows
                .iter()
                .map(|r| {
                    let mut z = vec![0f32; features];
                    fm.standardise(r, &mut z);
                    z
                })
                .collect();
            let pos = (0..rows.len()).filter(|&i| g.positive[i]).collect();
            let neg = (0..rows.len()).filter(|&i| !g.positive[i]).collect();
            (rows, pos, neg)
        })
        .collect();
    // An ensemble of `members` rankers from different seeds, averaged: the sum of FMs is an
    // FM (linear weights add, interaction factors concatenate), so serving costs one FM with
    // `members × factors` factors, and the average is steadier than any one SGD run.
    let members = p.members.max(1);
    let (mut linear, mut pairs) = (vec![0f32; features], Vec::new());
    for m in 0..members {
        let (l, v) = fit_member(&zs, features, negatives, p, p.seed + m as u64);
        for (a, b) in linear.iter_mut().zip(&l) {
            *a += b / members as f32;
        }
        pairs.push(v);
    }
    let k = p.factors;
    fm.factors = k * members;
    fm.linear = linear;
    fm.pairs = vec![0f32; features * k * members];
    let scale = (1.0 / members as f32).sqrt();
    for (m, v) in pairs.iter().enumerate() {
        for j in 0..features {
            for f in 0..k {
                fm.pairs[j * k * members + m * k + f] = v[j * k + f] * scale;
            }
        }
    }
    fm
}

type StandardGroup = (Vec<Vec<f32>>, Vec<usize>, Vec<usize>);

/// One member's SGD: (linear weights, features × factors interaction factors).
fn fit_member(
    zs: &[StandardGroup],
    features: usize,
    negatives: usize,
    p: &FmParams,
    seed: u64,
) -> (Vec<f32>, Vec<f32>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut fm = Fm::zero(features, p.factors);
    for v in fm.pairs.iter_mut() {
        *v = (rng.random::<f32>() - 0.5) * 0.02;
    }
    let k = p.factors;
    let (mut sa, mut sb) = (vec![0f32; k], vec![0f32; k]);
    // AdaGrad: each weight's step shrinks with its own gradients so far, so rare features
    // (a source bit set on 2 % of the rows standardises to ±7) neither blow up nor stall.
    let (mut g_linear, mut g_pairs) = (vec![1e-6f32; features], vec![1e-6f32; features * k]);
    let mut order: Vec<usize> = (0..zs.len()).collect();
    for _ in 0..p.epochs {
        // Shuffled group order each epoch.
        for i in (1..order.len()).rev() {
            order.swap(i, rng.random_range(0..=i));
        }
        for &gi in &order {
            let (rows, pos, neg) = &zs[gi];
            if neg.is_empty() || pos.is_empty() {
                continue;
            }
            // The same number of pairs from every user, whatever their count of positives,
            // so a few heavy users do not decide the ranking of everyone.
            for _ in 0..PAIRS_PER_GROUP.min(pos.len() * negatives) {
                let a = pos[rng.random_range(0..pos.len())];
                let b = neg[rng.random_range(0..neg.len())];
                let (za, zb) = (&rows[a], &rows[b]);
                let d = fm.score_z(za, &mut sa) - fm.score_z(zb, &mut sb);
                // d/dd of −ln σ(d) is −σ(−d).
                let g = 1.0 / (1.0 + d.clamp(-30.0, 30.0).exp());
                let (lr, reg) = (p.learning_rate, p.regularization);
                for j in 0..features {
                    let grad = g * (za[j] - zb[j]) - reg * fm.linear[j];
                    g_linear[j] += grad * grad;
                    fm.linear[j] += lr * grad / g_linear[j].sqrt();
                    for f in 0..k {
                        let v = fm.pairs[j * k + f];
                        let grad_a = za[j] * sa[f] - v * za[j] * za[j];
                        let grad_b = zb[j] * sb[f] - v * zb[j] * zb[j];
                        let grad = g * (grad_a - grad_b) - reg * v;
                        g_pairs[j * k + f] += grad * grad;
                        fm.pairs[j * k + f] += lr * grad / g_pairs[j * k + f].sqrt();
                    }
                }
            }
        }
    }
    (fm.linear, fm.pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_which_feature_marks_positives_and_an_interaction() {
        // Positives: feature 0 high when feature 2 is 1, feature 1 high when feature 2 is 0.
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let groups: Vec<Group> = (0..300)
            .map(|g| {
                let ctx = (g % 2) as f32;
                let mut rows = Vec::new();
                let mut positive = Vec::new();
                for i in 0..10 {
                    let pos = i == 0;
                    let signal = if pos { 1.0 } else { 0.0 };
                    let (a, b) = if ctx == 1.0 {
                        (signal + rng.random::<f32>() * 0.5, rng.random::<f32>())
                    } else {
                        (rng.random::<f32>(), signal + rng.random::<f32>() * 0.5)
                    };
                    rows.push(vec![a, b, ctx]);
                    positive.push(pos);
                }
                Group { rows, positive }
            })
            .collect();
        let fm = fit(&groups, 3, 4, &FmParams::default());
        let mut right = 0;
        for g in &groups {
            let best = (0..g.rows.len())
                .max_by(|&a, &b| fm.score(&g.rows[a]).total_cmp(&fm.score(&g.rows[b])))
                .unwrap();
            right += g.positive[best] as usize;
        }
        // A linear ranker cannot get both contexts right; the interactions can.
        assert!(
            right > 240,
            "{right} of 300 groups ranked their positive first"
        );
        let c = fm.contributions(&groups[0].rows[0]);
        let total: f32 = c.iter().sum();
        assert!((total - fm.score(&groups[0].rows[0])).abs() < 1e-4);
    }

    #[test]
    fn nothing_to_learn_from_gives_a_zero_ranker() {
        let fm = fit(&[], 3, 4, &FmParams::default());
        assert_eq!(fm.score(&[1.0, 2.0, 3.0]), 0.0);
    }
}

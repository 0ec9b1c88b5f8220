//! Evaluation. Rating error (RMSE, MAE) and ranking quality at k with the user's training items
//! removed from the candidates. The ranking definitions are those of the `implicit` package's
//! `ranking_metrics_at_k`, so numbers compare directly: per user with at least one test item,
//! precision = hits / min(k, |test|), AP = Σ_{hits} (hits so far / rank) / min(k, |test|),
//! NDCG = DCG / IDCG with IDCG over min(k, |test|) ideal hits; recall = hits / |test|; each
//! averaged over those users.

use std::collections::HashSet;

pub fn rmse_mae(pairs: impl IntoIterator<Item = (f32, f32)>) -> (f64, f64) {
    let (mut se, mut ae, mut n) = (0f64, 0f64, 0usize);
    for (pred, truth) in pairs {
        let e = (pred - truth) as f64;
        se += e * e;
        ae += e.abs();
        n += 1;
    }
    if n == 0 {
        return (f64::NAN, f64::NAN);
    }
    ((se / n as f64).sqrt(), ae / n as f64)
}

#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct RankingMetrics {
    pub precision: f64,
    pub recall: f64,
    pub ndcg: f64,
    pub map: f64,
    pub users: usize,
}

/// Accumulates per-user ranking results.
#[derive(Debug, Default)]
pub struct RankingAccumulator {
    k: usize,
    sum: RankingMetrics,
}

impl RankingAccumulator {
    pub fn new(k: usize) -> Self {
        Self {
            k,
            sum: RankingMetrics::default(),
        }
    }

    /// One user's recommendations (best first, already without training items) against their
    /// held-out items. Users without held-out items are skipped.
    pub fn add(&mut self, recommended: &[u32], relevant: &HashSet<u32>) {
        if relevant.is_empty() {
            return;
        }
        let k = self.k;
        let div = k.min(relevant.len()) as f64;
        let (mut hits, mut dcg, mut ap) = (0usize, 0f64, 0f64);
        for (rank, item) in recommended.iter().take(k).enumerate() {
            if relevant.contains(item) {
                hits += 1;
                dcg += 1.0 / (rank as f64 + 2.0).log2();
                ap += hits as f64 / (rank as f64 + 1.0);
            }
        }
        let idcg: f64 = (0..k.min(relevant.len()))
            .map(|r| 1.0 / (r as f64 + 2.0).log2())
            .sum();
        self.sum.precision += hits as f64 / div;
        self.sum.recall += hits as f64 / relevant.len() as f64;
        self.sum.ndcg += dcg / idcg;
        self.sum.map += ap / div;
        self.sum.users += 1;
    }

    pub fn finish(&self) -> RankingMetrics {
        let n = self.sum.users.max(1) as f64;
        RankingMetrics {
            precision: self.sum.precision / n,
            recall: self.sum.recall / n,
            ndcg: self.sum.ndcg / n,
            map: self.sum.map / n,
            users: self.sum.users,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        let (rmse, mae) = rmse_mae([(1.0, 2.0), (3.0, 3.0), (5.0, 3.0)]);
        assert!((rmse - (5.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert!((mae - 1.0).abs() < 1e-12);
        let mut acc = RankingAccumulator::new(3);
        // Relevant {1, 4}: hits at ranks 1 and 3.
        acc.add(&[1, 2, 4], &[1, 4].into_iter().collect());
        acc.add(&[9, 9, 9], &HashSet::new()); // skipped
        let m = acc.finish();
        assert_eq!(m.users, 1);
        assert!((m.precision - 1.0).abs() < 1e-12);
        assert!((m.recall - 1.0).abs() < 1e-12);
        let dcg = 1.0 + 1.0 / 4f64.log2();
        let idcg = 1.0 + 1.0 / 3f64.log2();
        assert!((m.ndcg - dcg / idcg).abs() < 1e-12);
        assert!((m.map - (1.0 + 2.0 / 3.0) / 2.0).abs() < 1e-12);
    }
}

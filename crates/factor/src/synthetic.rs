//! Synthetic catalogues for benchmarks at sizes no bundled data set reaches: low-rank tastes
//! (items and users near a few hundred taste directions) and Zipf popularity (item factor norms
//! fall with popularity rank, as trained factors' do). Deterministic for a seed.

use crate::als::ImplicitModel;
use crate::data::{Csr, Triple};
use crate::model::{Algorithm, Model, Parts};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// A catalogue of `items` items in `factors` dimensions drawn around `topics` taste centres.
#[derive(Debug, Clone)]
pub struct TasteModel {
    pub items: usize,
    pub factors: usize,
    pub topics: usize,
    seed: u64,
    /// Unit taste centres, topics × factors.
    centres: Vec<f32>,
    item_topic: Vec<u32>,
    /// 0 = most popular.
    popularity_rank: Vec<u32>,
}

/// Standard normal draws (Box–Muller).
fn normal(rng: &mut StdRng) -> f32 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random();
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

fn unit(rng: &mut StdRng, k: usize) -> Vec<f32> {
    let v: Vec<f32> = (0..k).map(|_| normal(rng)).collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.into_iter().map(|x| x / n).collect()
}

impl TasteModel {
    /// About √items / 4 topics (8 to 512).
    pub fn new(items: usize, factors: usize, seed: u64) -> Self {
        let topics = (((items as f64).sqrt() / 4.0) as usize).clamp(8, 512);
        let mut rng = StdRng::seed_from_u64(seed);
        let centres = (0..topics).flat_map(|_| unit(&mut rng, factors)).collect();
        let item_topic = (0..items)
            .map(|_| rng.random_range(0..topics as u32))
            .collect();
        let mut popularity_rank: Vec<u32> = (0..items as u32).collect();
        popularity_rank.shuffle(&mut rng);
        Self {
            items,
            factors,
            topics,
            seed,
            centres,
            item_topic,
            popularity_rank,
        }
    }

    fn centre(&self, t: usize) -> &[f32] {
        &self.centres[t * self.factors..(t + 1) * self.factors]
    }

    /// Item factors (items × factors): the item's taste centre plus noise of the same norm, so
    /// neighbouring tastes overlap, scaled by `0.2 + 2 (rank + 1)^-¼` (the most popular item's
    /// factors are about 8× longer than the least popular's at a million items).
    pub fn item_factors(&self) -> Vec<f32> {
        let mut rng = StdRng::seed_from_u64(self.seed ^ 0x17e5);
        let k = self.factors;
        let sigma = 1.0 / (k as f32).sqrt();
        let mut out = Vec::with_capacity(self.items * k);
        for i in 0..self.items {
            let c = self.centre(self.item_topic[i] as usize);
            let scale = 0.2 + 2.0 * (self.popularity_rank[i] as f32 + 1.0).powf(-0.25);
            out.extend(c.iter().map(|v| scale * (v + sigma * normal(&mut rng))));
        }
        out
    }

    /// `n` user factors (n × factors): mostly one taste, partly a second, plus noise.
    pub fn user_factors(&self, n: usize) -> Vec<f32> {
        let mut rng = StdRng::seed_from_u64(self.seed ^ 0x05e5);
        let k = self.factors;
        let sigma = 0.5 / (k as f32).sqrt();
        let mut out = Vec::with_capacity(n * k);
        for _ in 0..n {
            let a = rng.random_range(0..self.topics);
            let b = rng.random_range(0..self.topics);
            let (ca, cb) = (self.centre(a), self.centre(b));
            out.extend(
                ca.iter()
                    .zip(cb)
                    .map(|(x, y)| 0.8 * x + 0.4 * y + sigma * normal(&mut rng)),
            );
        }
        out
    }
}

impl TasteModel {
    /// `per_user` interactions for each of `users` users, as (user, item): each user has two
    /// tastes (drawn 70 / 30 % per interaction), and within a taste items are drawn by a Zipf
    /// law (exponent 1) over their popularity rank. Deterministic; calls `emit` in user order.
    pub fn interactions(&self, users: usize, per_user: usize, mut emit: impl FnMut(u32, u32)) {
        // Each taste's items, most popular first, and the cumulative Zipf weights over them.
        let mut by_topic: Vec<Vec<u32>> = vec![Vec::new(); self.topics];
        for i in 0..self.items {
            by_topic[self.item_topic[i] as usize].push(i as u32);
        }
        let cumulative: Vec<Vec<f64>> = by_topic
            .iter_mut()
            .map(|members| {
                members.sort_by_key(|&i| self.popularity_rank[i as usize]);
                let mut acc = 0.0;
                (0..members.len())
                    .map(|r| {
                        acc += 1.0 / (r as f64 + 1.0);
                        acc
                    })
                    .collect()
            })
            .collect();
        let mut rng = StdRng::seed_from_u64(self.seed ^ 0x1ac7);
        for u in 0..users as u32 {
            let tastes = [
                rng.random_range(0..self.topics),
                rng.random_range(0..self.topics),
            ];
            for _ in 0..per_user {
                let t = tastes[usize::from(rng.random_bool(0.3))];
                let (members, cum) = (&by_topic[t], &cumulative[t]);
                let Some(total) = cum.last() else { continue };
                let x = rng.random_range(0.0..*total);
                let r = cum.partition_point(|c| *c < x).min(members.len() - 1);
                emit(u, members[r]);
            }
        }
    }

    /// A unit text vector per item (items × `dim`): a fixed random projection of the item's
    /// taste centre plus noise, so text predicts taste as a sentence encoder's vectors do.
    pub fn text_vectors(&self, dim: usize) -> Vec<f32> {
        let mut rng = StdRng::seed_from_u64(self.seed ^ 0x7e47);
        let projection: Vec<f32> = (0..dim * self.factors).map(|_| normal(&mut rng)).collect();
        let mut out = Vec::with_capacity(self.items * dim);
        for i in 0..self.items {
            let c = self.centre(self.item_topic[i] as usize);
            let v: Vec<f32> = projection
                .chunks_exact(self.factors)
                .map(|row| row.iter().zip(c).map(|(a, b)| a * b).sum::<f32>() + normal(&mut rng))
                .collect();
            let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
            out.extend(v.into_iter().map(|x| x / n));
        }
        out
    }

    /// A servable implicit-ALS model of this catalogue for serving benchmarks: `users` users
    /// (`u0`, `u1`, …) each of whom has seen `seen_per_user` random items, items `i0`, `i1`, …
    pub fn model(&self, users: usize, seen_per_user: usize, version: &str) -> Model {
        let mut rng = StdRng::seed_from_u64(self.seed ^ 0x5ee4);
        let seen: Vec<Triple> = (0..users as u32)
            .flat_map(|u| {
                (0..seen_per_user)
                    .map(|_| Triple {
                        user: u,
                        item: rng.random_range(0..self.items as u32),
                        value: 1.0,
                        ts: 0,
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        let mut popular: Vec<u32> = (0..self.items as u32).collect();
        popular.sort_by_key(|&i| self.popularity_rank[i as usize]);
        let parts = Parts {
            version: version.into(),
            user_ids: (0..users).map(|u| format!("u{u}")).collect(),
            item_ids: (0..self.items).map(|i| format!("i{i}")).collect(),
            titles: (0..self.items)
                .map(|i| format!("synthetic item {i}"))
                .collect(),
            tags: (0..self.items)
                .map(|i| vec![format!("taste-{}", self.item_topic[i])])
                .collect(),
            seen: Csr::build(&seen, users, false),
            popular,
            regularization: 0.05,
            ..Parts::default()
        };
        let factors = ImplicitModel {
            factors: self.factors,
            alpha: 0.25,
            regularization: 0.05,
            user_factors: self.user_factors(users),
            item_factors: self.item_factors(),
        };
        Model::from_implicit(factors, Algorithm::ImplicitAls, parts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_for_a_seed_and_popular_items_are_longer() {
        let a = TasteModel::new(5_000, 16, 1);
        let b = TasteModel::new(5_000, 16, 1);
        assert_eq!(a.item_factors(), b.item_factors());
        assert_eq!(a.user_factors(3), b.user_factors(3));
        assert_ne!(
            a.item_factors(),
            TasteModel::new(5_000, 16, 2).item_factors()
        );
        let f = a.item_factors();
        let norm = |i: usize| f[i * 16..(i + 1) * 16].iter().map(|x| x * x).sum::<f32>();
        let top = a.popularity_rank.iter().position(|&r| r == 0).unwrap();
        let bottom = a.popularity_rank.iter().position(|&r| r == 4_999).unwrap();
        assert!(norm(top) > 4.0 * norm(bottom));
    }

    #[test]
    fn interactions_follow_popularity_and_stay_within_two_tastes() {
        let m = TasteModel::new(10_000, 8, 3);
        let mut per_item = vec![0u32; 10_000];
        let mut topics_of_user0 = std::collections::HashSet::new();
        let mut n = 0;
        m.interactions(500, 40, |u, i| {
            n += 1;
            per_item[i as usize] += 1;
            if u == 0 {
                topics_of_user0.insert(m.item_topic[i as usize]);
            }
        });
        assert_eq!(n, 500 * 40);
        assert!(topics_of_user0.len() <= 2);
        // Zipf within each taste: the most popular tenth of the items gets most interactions.
        let top: u32 = (0..10_000)
            .filter(|&i| m.popularity_rank[i] < 1_000)
            .map(|i| per_item[i])
            .sum();
        assert!(top as f64 > 0.3 * n as f64, "{top} of {n}");
        assert_eq!(m.text_vectors(16).len(), 10_000 * 16);
    }
}

//! User profile fusion (the original design's item): one vector per user from what they wrote
//! about themselves and what they did.
//!
//! With `t` the user's text vector, `vⱼ` the vectors of the items in their recent history (the
//! featurizer's `hist` list, newest first, at most `max_items` entries with a vector), `T` the
//! newest event time in that history, and `h` the half-life:
//!
//! ```text
//! wⱼ = kind_weight(kindⱼ) · strengthⱼ · 2^(−(T − tsⱼ)/h)
//! b  = normalize(Σ wⱼ vⱼ / Σ wⱼ)                       (the behaviour vector)
//! f  = normalize(β·t + (1 − β)·b)                       (the fused profile)
//! ```
//!
//! `kind_weight` is the popularity weight of the event kind (view 1 … purchase 8, see
//! `recalloc_store::kinds::kind_weight`); `strengthⱼ` is 1 except for ratings, where it is the
//! rating's position on the scale, (value − min)/(max − min), so a one-star rating pulls nothing.
//! Decay is measured from the user's own newest event, not the wall clock, so a profile does not
//! drift while the user is idle and the result is reproducible. With only one of `t` and `b` the
//! profile is that one; with neither there is none. Computed from the current Redis state on every
//! read, so it follows each applied event.

use recalloc_store::vectors::normalize;

#[derive(Debug, Clone, Copy)]
pub struct FusionParams {
    /// β: the share of the user's own text.
    pub text_weight: f32,
    pub half_life_ms: f64,
    pub max_items: usize,
    pub rating_min: f64,
    pub rating_max: f64,
}

pub use recalloc_store::history::HistoryEntry;

#[derive(Debug, Clone, PartialEq)]
pub struct Fused {
    pub fused: Option<Vec<f32>>,
    pub behaviour: Option<Vec<f32>>,
    pub items_used: usize,
}

/// The weight of one history entry before decay.
pub fn entry_weight(e: &HistoryEntry, p: &FusionParams) -> f64 {
    recalloc_store::kinds::event_strength(&e.kind, e.value, p.rating_min, p.rating_max)
}

/// Fuses a text vector with the history. `history` pairs each entry (newest first) with its
/// item's vector, `None` when the item has none yet.
pub fn fuse(
    text: Option<&[f32]>,
    history: &[(HistoryEntry, Option<Vec<f32>>)],
    p: &FusionParams,
) -> Fused {
    let with_vectors: Vec<(&HistoryEntry, &Vec<f32>)> = history
        .iter()
        .filter_map(|(e, v)| v.as_ref().map(|v| (e, v)))
        .take(p.max_items)
        .collect();
    let newest = with_vectors.iter().map(|(e, _)| e.ts).max().unwrap_or(0);
    let mut acc: Option<Vec<f64>> = None;
    let mut total = 0.0;
    let mut used = 0;
    for (e, v) in &with_vectors {
        let age = (newest - e.ts).max(0) as f64;
        let w = entry_weight(e, p) * (-age / p.half_life_ms.max(1.0)).exp2();
        if w <= 0.0 {
            continue;
        }
        let a = acc.get_or_insert_with(|| vec![0.0; v.len()]);
        if a.len() != v.len() {
            continue;
        }
        a.iter_mut()
            .zip(v.iter())
            .for_each(|(a, x)| *a += w * *x as f64);
        total += w;
        used += 1;
    }
    let behaviour = acc.filter(|_| total > 0.0).map(|a| {
        let mut b: Vec<f32> = a.iter().map(|x| (x / total) as f32).collect();
        normalize(&mut b);
        b
    });
    let fused = match (text, &behaviour) {
        (Some(t), Some(b)) if t.len() == b.len() => {
            let beta = p.text_weight.clamp(0.0, 1.0);
            let mut f: Vec<f32> = t
                .iter()
                .zip(b)
                .map(|(t, b)| beta * t + (1.0 - beta) * b)
                .collect();
            normalize(&mut f);
            Some(f)
        }
        (Some(t), _) => {
            let mut f = t.to_vec();
            normalize(&mut f);
            Some(f)
        }
        (None, Some(b)) => Some(b.clone()),
        (None, None) => None,
    };
    Fused {
        fused,
        behaviour,
        items_used: used,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: FusionParams = FusionParams {
        text_weight: 0.5,
        half_life_ms: 1000.0,
        max_items: 10,
        rating_min: 1.0,
        rating_max: 5.0,
    };

    fn entry(item: &str, kind: &str, value: f64, ts: i64) -> HistoryEntry {
        HistoryEntry {
            item: item.into(),
            kind: kind.into(),
            value,
            ts,
        }
    }

    fn close(a: &[f32], b: &[f32]) -> bool {
        a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6)
    }

    #[test]
    fn hand_computed_example() {
        // A purchase (weight 8) now of item A = (1, 0); a view (weight 1) of item B = (0, 1) one
        // half-life earlier (decay 1/2); a 3-star rating (5 · 0.5 = 2.5) of C = (1, 0) two
        // half-lives earlier (decay 1/4); D has no vector yet.
        let history = vec![
            (entry("A", "purchase", 1.0, 3000), Some(vec![1.0, 0.0])),
            (entry("D", "click", 1.0, 2500), None),
            (entry("B", "view", 1.0, 2000), Some(vec![0.0, 1.0])),
            (entry("C", "rating", 3.0, 1000), Some(vec![1.0, 0.0])),
        ];
        // Σw = 8 + 0.5 + 0.625 = 9.125; Σwv = (8.625, 0.5) → normalised (0.99833, 0.05787).
        let f = fuse(Some(&[0.0, 1.0]), &history, &P);
        assert_eq!(f.items_used, 3);
        let n = (8.625f32.powi(2) + 0.25).sqrt();
        let b = [8.625 / n, 0.5 / n];
        assert!(close(f.behaviour.as_ref().unwrap(), &b), "{f:?}");
        // β = 0.5: (0.5·b₀, 0.5 + 0.5·b₁), normalised.
        let raw = [0.5 * b[0], 0.5 + 0.5 * b[1]];
        let m = (raw[0] * raw[0] + raw[1] * raw[1]).sqrt();
        assert!(close(f.fused.as_ref().unwrap(), &[raw[0] / m, raw[1] / m]));
    }

    #[test]
    fn one_star_ratings_pull_nothing_and_missing_parts_fall_back() {
        let history = vec![(entry("A", "rating", 1.0, 5), Some(vec![1.0, 0.0]))];
        let f = fuse(None, &history, &P);
        assert_eq!(f.behaviour, None);
        assert_eq!(f.fused, None);
        let f = fuse(Some(&[3.0, 4.0]), &[], &P);
        assert!(close(f.fused.as_ref().unwrap(), &[0.6, 0.8]));
        let only_behaviour = vec![(entry("A", "view", 0.0, 5), Some(vec![0.0, 2.0]))];
        let f = fuse(None, &only_behaviour, &P);
        assert_eq!(f.fused, Some(vec![0.0, 1.0]));
        assert_eq!(f.items_used, 1);
    }

    #[test]
    fn at_most_max_items_with_vectors_are_used() {
        let p = FusionParams { max_items: 2, ..P };
        let history: Vec<_> = (0..5)
            .map(|i| (entry("X", "view", 0.0, 100 - i), Some(vec![1.0, i as f32])))
            .collect();
        assert_eq!(fuse(None, &history, &p).items_used, 2);
    }
}

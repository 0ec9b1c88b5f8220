//! Top-k selection over scores with exclusions: a bounded min-heap, O(n log k), no full sort.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored {
    pub index: u32,
    pub score: f32,
}

/// Reversed order so the heap's top is the weakest kept candidate. Ties go to the lower index.
struct MinFirst(Scored);

impl PartialEq for MinFirst {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for MinFirst {}
impl PartialOrd for MinFirst {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for MinFirst {
    fn cmp(&self, o: &Self) -> Ordering {
        o.0.score
            .total_cmp(&self.0.score)
            .then(self.0.index.cmp(&o.0.index))
    }
}

/// A bounded accumulator of the `k` best scores seen so far: the one heap behind [`top_k`] and
/// the approximate index's list scans, so both break ties and skip NaN the same way.
pub struct TopK {
    k: usize,
    heap: BinaryHeap<MinFirst>,
}

impl TopK {
    pub fn new(k: usize) -> Self {
        Self {
            k,
            heap: BinaryHeap::with_capacity(k + 1),
        }
    }

    /// The score a candidate must reach to enter (−∞ until `k` are held).
    pub fn threshold(&self) -> f32 {
        if self.heap.len() < self.k {
            f32::NEG_INFINITY
        } else {
            self.heap.peek().map_or(f32::NEG_INFINITY, |m| m.0.score)
        }
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Offers one candidate; `keep` is asked only when the candidate would enter, so costly
    /// exclusion checks run for few items. Which candidates are kept does not depend on the
    /// order they come in: (score, then lower index) decides, so a scan in any order returns
    /// what a scan in index order does.
    #[inline]
    pub fn offer(&mut self, index: u32, score: f32, keep: impl Fn(u32) -> bool) {
        if self.k == 0 || score.is_nan() {
            return;
        }
        if self.heap.len() == self.k {
            let weakest = self.heap.peek().expect("full heap").0;
            if score < weakest.score || (score == weakest.score && index > weakest.index) {
                return;
            }
        }
        if !keep(index) {
            return;
        }
        self.heap.push(MinFirst(Scored { index, score }));
        if self.heap.len() > self.k {
            self.heap.pop();
        }
    }

    /// Best first; ties go to the lower index.
    pub fn into_sorted(self) -> Vec<Scored> {
        let mut out: Vec<Scored> = self.heap.into_iter().map(|m| m.0).collect();
        out.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.index.cmp(&b.index)));
        out
    }
}

/// The `k` highest scores (NaN never chosen) whose index `keep` accepts, best first.
pub fn top_k(scores: &[f32], k: usize, keep: impl Fn(u32) -> bool) -> Vec<Scored> {
    let mut best = TopK::new(k);
    for (i, &s) in scores.iter().enumerate() {
        best.offer(i as u32, s, &keep);
    }
    best.into_sorted()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn equals_a_full_sort(scores in proptest::collection::vec(-100i32..100, 0..200), k in 0usize..30) {
            let scores: Vec<f32> = scores.into_iter().map(|s| s as f32).collect();
            let keep = |i: u32| !i.is_multiple_of(3);
            let got: Vec<u32> = top_k(&scores, k, keep).iter().map(|s| s.index).collect();
            let mut all: Vec<(f32, u32)> = scores.iter().enumerate()
                .filter(|(i, _)| keep(*i as u32)).map(|(i, s)| (*s, i as u32)).collect();
            all.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            let want: Vec<u32> = all.iter().take(k).map(|x| x.1).collect();
            prop_assert_eq!(got, want);
        }

        #[test]
        fn keeps_the_same_items_whatever_the_order(scores in proptest::collection::vec(-5i32..5, 0..100), k in 0usize..20, seed in 0u64..1000) {
            let scores: Vec<f32> = scores.into_iter().map(|s| s as f32).collect();
            let mut order: Vec<usize> = (0..scores.len()).collect();
            let n = order.len().max(1);
            order.rotate_left(seed as usize % n);
            if seed % 2 == 1 {
                order.reverse();
            }
            let mut shuffled = TopK::new(k);
            for &i in &order {
                shuffled.offer(i as u32, scores[i], |_| true);
            }
            prop_assert_eq!(shuffled.into_sorted(), top_k(&scores, k, |_| true));
        }
    }

    #[test]
    fn nan_and_k_beyond_the_catalogue() {
        let s = [1.0, f32::NAN, 3.0];
        let got = top_k(&s, 10, |_| true);
        assert_eq!(got.iter().map(|x| x.index).collect::<Vec<_>>(), vec![2, 0]);
        assert!(top_k(&s, 0, |_| true).is_empty());
    }
}

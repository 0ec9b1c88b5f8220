//! Two-stage recommendation: candidates from several sources, re-ranked by a learned ranker.
//!
//! Sources, each bounded: the factor model's top-N; item-item neighbours of the user's recent
//! history (co-occurrence cosine, precomputed top-M per item); trending items (time-decayed
//! counts before the newest interaction); new items closest to the user's profile vector (the
//! mean of the history items' text vectors); and the most popular items. The union is scored by
//! a factorization machine ([`crate::fm`]) over per-candidate features (below), trained on a
//! time split of the training data — the later interactions are the labels, the model and
//! signals are built from the earlier ones — and checked on users held out of the ranker's own
//! training. What is served is the best on that validation of the pipeline, the factor model
//! alone and popularity, so a deployment never serves something that loses to popularity there.

use crate::als::{self, AlsParams, ImplicitModel};
use crate::data::{Csr, Triple};
use crate::fm::{self, Fm, FmParams, Group};
use crate::linalg::dot;
use crate::metrics::RankingAccumulator;
use crate::topk::{Scored, TopK, top_k};
use rayon::prelude::*;
use std::collections::{BTreeMap, HashMap, HashSet};

/// Where a candidate came from (a bit set: one item can come from several).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Factors = 0,
    Neighbours = 1,
    Trending = 2,
    New = 3,
    Popular = 4,
}

impl Source {
    pub const ALL: [Source; 5] = [
        Source::Factors,
        Source::Neighbours,
        Source::Trending,
        Source::New,
        Source::Popular,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Self::Factors => "factors",
            Self::Neighbours => "neighbours",
            Self::Trending => "trending",
            Self::New => "new",
            Self::Popular => "popular",
        }
    }
    fn bit(self) -> u8 {
        1 << self as u8
    }
    /// The names of the sources in a bit set.
    pub fn names(bits: u8) -> Vec<&'static str> {
        Self::ALL
            .iter()
            .filter(|s| bits & s.bit() != 0)
            .map(|s| s.name())
            .collect()
    }
}

/// The ranker's features, in order (the names are what explanations show).
pub const FEATURES: [&str; 15] = [
    "cf_score",
    "neighbour_sum",
    "neighbour_max",
    "text_cosine",
    "popularity",
    "trending_short",
    "trending_long",
    "item_age",
    "tag_affinity",
    "history_length",
    "from_factors",
    "from_neighbours",
    "from_trending",
    "from_new",
    "from_popular",
];
const F: usize = FEATURES.len();
const DAY_MS: f64 = 86_400_000.0;

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PipelineSettings {
    pub cf_candidates: usize,
    pub neighbour_candidates: usize,
    pub trending_candidates: usize,
    pub new_candidates: usize,
    pub popular_candidates: usize,
    /// Co-occurrence neighbours kept per item.
    pub neighbours_per_item: usize,
    /// Users with more interactions than this add no co-occurrence pairs (their pairs grow
    /// with the square of the history and say little about any one item).
    pub neighbour_user_cap: usize,
    /// The newest history items the neighbour, profile and tag features look at.
    pub recent_history: usize,
    /// Half-lives of the two trending counts, in ms.
    pub trend_short_ms: i64,
    pub trend_long_ms: i64,
    /// Items with at most this many users are "new" candidates…
    pub new_item_max_users: usize,
    /// …the newest this many of them.
    pub new_pool: usize,
    /// Share of the training interactions held out as the ranker's labels.
    pub label_fraction: f64,
    /// Share of the labelled users kept out of the ranker's training to choose what is served.
    pub validation_fraction: f64,
    pub negatives: usize,
    pub fm: FmParams,
}

impl Default for PipelineSettings {
    fn default() -> Self {
        Self {
            cf_candidates: 100,
            neighbour_candidates: 100,
            trending_candidates: 150,
            new_candidates: 20,
            popular_candidates: 50,
            neighbours_per_item: 50,
            neighbour_user_cap: 2_000,
            recent_history: 50,
            trend_short_ms: 5 * 86_400_000,
            trend_long_ms: 21 * 86_400_000,
            new_item_max_users: 2,
            new_pool: 500,
            label_fraction: 0.2,
            validation_fraction: 0.3,
            negatives: 8,
            fm: FmParams::default(),
        }
    }
}

/// Per-item signals from a set of interactions (one build per model).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Signals {
    /// item → (neighbour, cosine of co-occurrence), best first.
    pub neighbours: Csr,
    /// Distinct users per item.
    pub popularity: Vec<f32>,
    pub trending_short: Vec<f32>,
    pub trending_long: Vec<f32>,
    /// First interaction time per item (`i64::MAX` when none).
    pub first_seen: Vec<i64>,
    /// The newest interaction time (the "now" of trending and age).
    pub now: i64,
    /// Whether the interactions carry times at all.
    pub timed: bool,
    pub popular_order: Vec<u32>,
    pub trending_order: Vec<u32>,
    pub new_items: Vec<u32>,
}

/// What the catalogue gives the features: item factors and text vectors, tag ids.
#[derive(Clone, Copy)]
pub struct Catalogue<'a> {
    pub factors: usize,
    pub item_factors: &'a [f32],
    pub text_dim: usize,
    /// items × text_dim (unit rows; zero rows for items without text), or empty.
    pub item_text: &'a [f32],
    /// Tag ids per item, or empty.
    pub tags: &'a [Vec<u32>],
}

impl Catalogue<'_> {
    fn items(&self) -> usize {
        self.item_factors
            .len()
            .checked_div(self.factors)
            .unwrap_or(0)
    }
    fn text(&self, i: u32) -> Option<&[f32]> {
        let d = self.text_dim;
        let row = self.item_text.get(i as usize * d..(i as usize + 1) * d)?;
        (d > 0 && row.iter().any(|v| *v != 0.0)).then_some(row)
    }
}

/// One user as the pipeline sees them.
pub struct UserInput<'a> {
    /// The user's factors (known or folded in), if any.
    pub factors: Option<&'a [f32]>,
    /// History item indices, newest first (or any stable order when times are unknown).
    pub history: &'a [u32],
    /// The factor model's best unseen items for this user (the caller searches, exactly or
    /// through an index).
    pub cf_top: &'a [Scored],
}

/// One ranked recommendation.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranked {
    pub index: u32,
    pub score: f32,
    /// [`Source`] bits.
    pub sources: u8,
    pub features: [f32; F],
}

/// What training chose to serve, by validation NDCG@10.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Choice {
    Pipeline,
    Factors,
    Popularity,
}

impl Choice {
    pub fn name(self) -> &'static str {
        match self {
            Self::Pipeline => "pipeline",
            Self::Factors => "factors",
            Self::Popularity => "popularity",
        }
    }
}

/// Each user's newest history items, newest first (at most `recent_history` each): what the
/// neighbour, profile and tag features of a known user look at.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RecentLists {
    pub starts: Vec<usize>,
    pub items: Vec<u32>,
}

impl RecentLists {
    pub fn build(h: &Histories, keep: usize) -> Self {
        let mut out = Self {
            starts: vec![0],
            items: Vec::new(),
        };
        for row in &h.rows {
            out.items.extend(row.iter().take(keep));
            out.starts.push(out.items.len());
        }
        out
    }
    pub fn row(&self, u: usize) -> &[u32] {
        match (self.starts.get(u), self.starts.get(u + 1)) {
            (Some(&a), Some(&b)) => &self.items[a..b],
            _ => &[],
        }
    }
}

/// The second stage as stored with a model.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Pipeline {
    pub settings: PipelineSettings,
    pub signals: Signals,
    /// Per user of the model, the newest history items.
    pub recent: RecentLists,
    pub ranker: Fm,
    pub choice: Choice,
    /// Validation NDCG@10 (and users) of each candidate choice, measured at training.
    pub validation: BTreeMap<String, f64>,
}

/// Builds the per-item signals of `triples` (values > 0; `ts` in ms, all 0 when unknown).
pub fn signals(triples: &[Triple], users: usize, items: usize, s: &PipelineSettings) -> Signals {
    let ones: Vec<Triple> = triples
        .iter()
        .map(|t| Triple { value: 1.0, ..*t })
        .collect();
    let by_user = Csr::build(&ones, users, false);
    let by_item = Csr::build(&ones, items, true);
    let popularity: Vec<f32> = (0..items).map(|i| by_item.row(i).0.len() as f32).collect();
    let timed = triples.iter().any(|t| t.ts != 0);
    let now = triples.iter().map(|t| t.ts).max().unwrap_or(0);
    let mut first_seen = vec![i64::MAX; items];
    let (mut short, mut long) = (vec![0f32; items], vec![0f32; items]);
    for t in triples {
        let i = t.item as usize;
        first_seen[i] = first_seen[i].min(t.ts);
        if timed {
            let age = (now - t.ts).max(0) as f64;
            short[i] += (-(age / s.trend_short_ms as f64) * std::f64::consts::LN_2).exp() as f32;
            long[i] += (-(age / s.trend_long_ms as f64) * std::f64::consts::LN_2).exp() as f32;
        }
    }
    let order = |v: &[f32]| {
        let mut o: Vec<u32> = (0..items as u32).filter(|&i| v[i as usize] > 0.0).collect();
        o.sort_by(|&a, &b| v[b as usize].total_cmp(&v[a as usize]).then(a.cmp(&b)));
        o
    };
    let popular_order = order(&popularity);
    let trending_order = if timed { order(&short) } else { Vec::new() };
    // The newest of the items with few users (by first interaction; without times, the
    // highest indices, i.e. the last catalogued): each request scans them all against the
    // user's profile vector, so the pool is bounded.
    let mut new_items: Vec<u32> = (0..items as u32)
        .filter(|&i| popularity[i as usize] as usize <= s.new_item_max_users)
        .collect();
    if timed {
        new_items.sort_by(|&a, &b| {
            first_seen[b as usize]
                .cmp(&first_seen[a as usize])
                .then(b.cmp(&a))
        });
    } else {
        new_items.reverse();
    }
    new_items.truncate(s.new_pool);
    Signals {
        neighbours: neighbours(&by_user, &by_item, &popularity, s),
        popularity,
        trending_short: short,
        trending_long: long,
        first_seen,
        now,
        timed,
        popular_order,
        trending_order,
        new_items,
    }
}

/// Top-M co-occurrence neighbours per item, cosine `c_ij / √(n_i n_j)`.
fn neighbours(by_user: &Csr, by_item: &Csr, pop: &[f32], s: &PipelineSettings) -> Csr {
    let items = by_item.rows();
    let lists: Vec<Vec<(u32, f32)>> = (0..items)
        .into_par_iter()
        .map_init(
            || (vec![0f32; items], Vec::<u32>::new()),
            |(counts, touched), i| {
                for &u in by_item.row(i).0 {
                    let row = by_user.row(u as usize).0;
                    if row.len() > s.neighbour_user_cap {
                        continue;
                    }
                    for &j in row {
                        if j as usize != i {
                            if counts[j as usize] == 0.0 {
                                touched.push(j);
                            }
                            counts[j as usize] += 1.0;
                        }
                    }
                }
                let mut top = TopK::new(s.neighbours_per_item);
                for &j in touched.iter() {
                    let sim = counts[j as usize] / (pop[i] * pop[j as usize]).sqrt().max(1.0);
                    top.offer(j, sim, |_| true);
                    counts[j as usize] = 0.0;
                }
                touched.clear();
                top.into_sorted()
                    .into_iter()
                    .map(|x| (x.index, x.score))
                    .collect()
            },
        )
        .collect();
    let mut indptr = Vec::with_capacity(items + 1);
    indptr.push(0);
    let (mut indices, mut values) = (Vec::new(), Vec::new());
    for l in lists {
        for (j, v) in l {
            indices.push(j);
            values.push(v);
        }
        indptr.push(indices.len());
    }
    Csr {
        indptr,
        indices,
        values,
    }
}

impl Pipeline {
    /// Candidates with features for one user, `keep` applied (seen items, filters).
    pub fn candidates(
        &self,
        user: &UserInput,
        cat: &Catalogue,
        keep: impl Fn(u32) -> bool,
    ) -> Vec<Ranked> {
        candidates(&self.settings, &self.signals, user, cat, keep)
    }

    /// The top `k` for one user by the chosen way of serving.
    pub fn recommend(
        &self,
        user: &UserInput,
        cat: &Catalogue,
        k: usize,
        keep: impl Fn(u32) -> bool,
    ) -> Vec<Ranked> {
        serve(
            self.choice,
            &self.settings,
            &self.signals,
            &self.ranker,
            user,
            cat,
            k,
            keep,
        )
    }
}

#[allow(clippy::too_many_arguments)]
fn serve(
    choice: Choice,
    s: &PipelineSettings,
    sig: &Signals,
    ranker: &Fm,
    user: &UserInput,
    cat: &Catalogue,
    k: usize,
    keep: impl Fn(u32) -> bool,
) -> Vec<Ranked> {
    let plain = |index: u32, score: f32, source: Source| Ranked {
        index,
        score,
        sources: source.bit(),
        features: [0.0; F],
    };
    match choice {
        Choice::Popularity => popular_top(sig, k, &keep)
            .into_iter()
            .map(|i| plain(i, sig.popularity[i as usize], Source::Popular))
            .collect(),
        Choice::Factors if user.factors.is_some() => user
            .cf_top
            .iter()
            .filter(|x| keep(x.index))
            .take(k)
            .map(|x| plain(x.index, x.score, Source::Factors))
            .collect(),
        Choice::Factors => popular_top(sig, k, &keep)
            .into_iter()
            .map(|i| plain(i, sig.popularity[i as usize], Source::Popular))
            .collect(),
        Choice::Pipeline => {
            let mut c = candidates(s, sig, user, cat, &keep);
            for r in c.iter_mut() {
                r.score = ranker.score(&r.features);
            }
            c.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.index.cmp(&b.index)));
            c.truncate(k);
            c
        }
    }
}

fn popular_top(sig: &Signals, k: usize, keep: impl Fn(u32) -> bool) -> Vec<u32> {
    sig.popular_order
        .iter()
        .copied()
        .filter(|&i| keep(i))
        .take(k)
        .collect()
}

/// What the candidates of one user share: the neighbour scores around the recent history, the
/// text profile and the tag counts of the recent history.
struct UserContext<'a> {
    recent: &'a [u32],
    /// item → (sum, max) of its co-occurrence cosines to the recent history items.
    near: HashMap<u32, (f32, f32)>,
    profile: Option<Vec<f32>>,
    tag_counts: HashMap<u32, f32>,
    history_length: f32,
}

fn context<'a>(
    s: &PipelineSettings,
    sig: &Signals,
    user: &UserInput<'a>,
    cat: &Catalogue,
) -> UserContext<'a> {
    let recent = &user.history[..user.history.len().min(s.recent_history)];
    let mut near: HashMap<u32, (f32, f32)> = HashMap::new();
    for &h in recent {
        let (js, vs) = sig.neighbours.row(h as usize);
        for (&j, &v) in js.iter().zip(vs) {
            let e = near.entry(j).or_insert((0.0, 0.0));
            e.0 += v;
            e.1 = e.1.max(v);
        }
    }
    let mut tag_counts: HashMap<u32, f32> = HashMap::new();
    for &h in recent {
        for &t in cat.tags.get(h as usize).map(Vec::as_slice).unwrap_or(&[]) {
            *tag_counts.entry(t).or_insert(0.0) += 1.0;
        }
    }
    UserContext {
        recent,
        near,
        profile: profile(recent, cat),
        tag_counts,
        history_length: (user.history.len() as f32).ln_1p(),
    }
}

/// The ranker's features of item `i` for a user (`sources`: the [`Source`] bits that proposed it).
fn features(
    ctx: &UserContext,
    sig: &Signals,
    user: &UserInput,
    cat: &Catalogue,
    i: u32,
    sources: u8,
) -> [f32; F] {
    let iu = i as usize;
    let (nsum, nmax) = ctx.near.get(&i).copied().unwrap_or((0.0, 0.0));
    let cf = match user.factors {
        Some(x) if cat.factors > 0 && iu < cat.items() => dot(
            x,
            &cat.item_factors[iu * cat.factors..(iu + 1) * cat.factors],
        ),
        _ => 0.0,
    };
    let text = match (&ctx.profile, cat.text(i)) {
        (Some(p), Some(t)) => dot(p, t),
        _ => 0.0,
    };
    let age = if sig.timed && sig.first_seen[iu] != i64::MAX {
        (((sig.now - sig.first_seen[iu]).max(0) as f64 / DAY_MS) as f32).ln_1p()
    } else {
        0.0
    };
    let tag = cat
        .tags
        .get(iu)
        .map(|ts| {
            ts.iter()
                .map(|t| ctx.tag_counts.get(t).copied().unwrap_or(0.0))
                .fold(0.0, f32::max)
        })
        .unwrap_or(0.0)
        / ctx.recent.len().max(1) as f32;
    let bit = |s: Source| (sources & s.bit() != 0) as u8 as f32;
    [
        cf,
        nsum,
        nmax,
        text,
        sig.popularity[iu].ln_1p(),
        sig.trending_short[iu].ln_1p(),
        sig.trending_long[iu].ln_1p(),
        age,
        tag,
        ctx.history_length,
        bit(Source::Factors),
        bit(Source::Neighbours),
        bit(Source::Trending),
        bit(Source::New),
        bit(Source::Popular),
    ]
}

/// The candidates' source bits for one user, `keep` applied.
fn proposed(
    s: &PipelineSettings,
    sig: &Signals,
    ctx: &UserContext,
    user: &UserInput,
    cat: &Catalogue,
    keep: impl Fn(u32) -> bool,
) -> HashMap<u32, u8> {
    let items = sig.popularity.len();
    let mut found: HashMap<u32, u8> = HashMap::new();
    let add = |i: u32, src: Source, found: &mut HashMap<u32, u8>| {
        if (i as usize) < items && keep(i) {
            *found.entry(i).or_insert(0) |= src.bit();
        }
    };
    for x in user.cf_top.iter().take(s.cf_candidates) {
        add(x.index, Source::Factors, &mut found);
    }
    let mut top = TopK::new(s.neighbour_candidates);
    for (&j, &(sum, _)) in &ctx.near {
        top.offer(j, sum, &keep);
    }
    for x in top.into_sorted() {
        add(x.index, Source::Neighbours, &mut found);
    }
    for &i in sig
        .trending_order
        .iter()
        .filter(|&&i| keep(i))
        .take(s.trending_candidates)
    {
        add(i, Source::Trending, &mut found);
    }
    for i in popular_top(sig, s.popular_candidates, &keep) {
        add(i, Source::Popular, &mut found);
    }
    if let Some(p) = &ctx.profile {
        let mut top = TopK::new(s.new_candidates);
        for &i in &sig.new_items {
            if let Some(t) = cat.text(i) {
                top.offer(i, dot(p, t), &keep);
            }
        }
        for x in top.into_sorted() {
            add(x.index, Source::New, &mut found);
        }
    }
    found
}

fn candidates(
    s: &PipelineSettings,
    sig: &Signals,
    user: &UserInput,
    cat: &Catalogue,
    keep: impl Fn(u32) -> bool,
) -> Vec<Ranked> {
    let ctx = context(s, sig, user, cat);
    let mut out: Vec<Ranked> = proposed(s, sig, &ctx, user, cat, keep)
        .into_iter()
        .map(|(i, sources)| Ranked {
            index: i,
            score: 0.0,
            sources,
            features: features(&ctx, sig, user, cat, i, sources),
        })
        .collect();
    out.sort_by_key(|r| r.index);
    out
}

/// Why the ranker scored an item as it did for one user.
#[derive(Debug, Clone, PartialEq)]
pub struct Explanation {
    pub score: f32,
    /// [`Source`] bits of the sources that propose the item now (0: none does).
    pub sources: u8,
    /// (feature name, raw value, share of the score), largest share first.
    pub features: Vec<(&'static str, f32, f32)>,
    /// Recent history items by how much of the score goes through them, largest first: each
    /// history-dependent feature's share of the score split over the history items in
    /// proportion to what each adds to that feature (the CF score by `cf_parts`, the exact ALS
    /// decomposition; the neighbour sum by each item's co-occurrence cosine; the text cosine
    /// by each item's text vector's dot with the item's).
    pub history: Vec<(u32, f32)>,
}

impl Pipeline {
    /// The ranker's explanation of `item` for a user. `cf_parts` are the history items' parts of
    /// the CF score (item, part), e.g. from the ALS decomposition; `keep` as in
    /// [`Pipeline::recommend`] (it decides which sources propose the item).
    pub fn explain(
        &self,
        user: &UserInput,
        cat: &Catalogue,
        item: u32,
        cf_parts: &[(u32, f32)],
        keep: impl Fn(u32) -> bool,
    ) -> Explanation {
        let (s, sig) = (&self.settings, &self.signals);
        let ctx = context(s, sig, user, cat);
        let sources = proposed(s, sig, &ctx, user, cat, keep)
            .get(&item)
            .copied()
            .unwrap_or(0);
        let x = features(&ctx, sig, user, cat, item, sources);
        let shares = self.ranker.contributions(&x);
        let mut named: Vec<(&'static str, f32, f32)> = FEATURES
            .iter()
            .zip(x.iter().zip(&shares))
            .map(|(n, (v, c))| (*n, *v, *c))
            .collect();
        named.sort_by(|a, b| b.2.total_cmp(&a.2));
        // Each history item's part of the three history-dependent features.
        let cf_total: f32 = cf_parts.iter().map(|p| p.1).sum();
        let cf_of: HashMap<u32, f32> = cf_parts.iter().copied().collect();
        let near_of = |h: u32| {
            let (js, vs) = sig.neighbours.row(h as usize);
            js.iter().position(|&j| j == item).map_or(0.0, |p| vs[p])
        };
        let text_of = |h: u32| match (cat.text(h), cat.text(item)) {
            (Some(a), Some(b)) => dot(a, b),
            _ => 0.0,
        };
        let n_total: f32 = ctx.recent.iter().map(|&h| near_of(h)).sum();
        let t_total: f32 = ctx.recent.iter().map(|&h| text_of(h)).sum();
        let part = |v: f32, total: f32| if total.abs() > 1e-12 { v / total } else { 0.0 };
        let mut history: Vec<(u32, f32)> = ctx
            .recent
            .iter()
            .map(|&h| {
                let r = shares[0] * part(cf_of.get(&h).copied().unwrap_or(0.0), cf_total)
                    + (shares[1] + shares[2]) * part(near_of(h), n_total)
                    + shares[3] * part(text_of(h), t_total);
                (h, r)
            })
            .collect();
        history.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        Explanation {
            score: self.ranker.score(&x),
            sources,
            features: named,
            history,
        }
    }
}

/// The mean of the history items' text vectors, unit length (None without text).
fn profile(history: &[u32], cat: &Catalogue) -> Option<Vec<f32>> {
    let mut p = vec![0f32; cat.text_dim];
    let mut any = false;
    for &h in history {
        if let Some(t) = cat.text(h) {
            any = true;
            for (a, b) in p.iter_mut().zip(t) {
                *a += b;
            }
        }
    }
    let n = dot(&p, &p).sqrt();
    (any && n > 0.0).then(|| p.iter().map(|v| v / n).collect())
}

/// Interactions grouped per user, newest first.
pub struct Histories {
    pub rows: Vec<Vec<u32>>,
}

impl Histories {
    pub fn build(triples: &[Triple], users: usize) -> Self {
        let mut rows: Vec<Vec<(i64, u32)>> = vec![Vec::new(); users];
        for t in triples {
            rows[t.user as usize].push((t.ts, t.item));
        }
        Self {
            rows: rows
                .into_iter()
                .map(|mut r| {
                    r.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
                    let mut seen = HashSet::new();
                    r.into_iter()
                        .map(|x| x.1)
                        .filter(|i| seen.insert(*i))
                        .collect()
                })
                .collect(),
        }
    }
    pub fn row(&self, u: usize) -> &[u32] {
        self.rows.get(u).map(Vec::as_slice).unwrap_or(&[])
    }
}

/// The factor model's best `n` items for user `u`, `seen` excluded (an exact scan).
pub fn cf_top(m: &ImplicitModel, u: usize, n: usize, seen: &[u32]) -> Vec<Scored> {
    if u >= m.users() {
        return Vec::new();
    }
    let x = m.user_vector(u);
    let scores: Vec<f32> = (0..m.items()).map(|i| dot(x, m.item_vector(i))).collect();
    top_k(&scores, n, |i| seen.binary_search(&i).is_err())
}

/// What training made and how it chose.
pub struct Trained {
    pub model: ImplicitModel,
    pub pipeline: Pipeline,
}

/// Splits interactions for the ranker's labels: a global time cut when there are times, else a
/// seeded random share.
fn label_split(triples: &[Triple], fraction: f64) -> (Vec<Triple>, Vec<Triple>) {
    if triples.iter().any(|t| t.ts != 0) {
        let mut ts: Vec<i64> = triples.iter().map(|t| t.ts).collect();
        ts.sort_unstable();
        let cut = ts[((1.0 - fraction) * (ts.len() - 1) as f64) as usize];
        triples.iter().partition(|t| t.ts <= cut)
    } else {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        triples
            .iter()
            .partition(|_| rng.random::<f64>() >= fraction)
    }
}

fn in_validation(u: u32, fraction: f64) -> bool {
    // A fixed hash of the user index: the same users every run.
    let h = (u as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
    (h as f64 / (1u64 << 24) as f64) < fraction
}

/// Trains the factor model and the second stage on `triples` (values = strengths > 0, `ts` in
/// ms or all 0), with the catalogue's text vectors and tag ids (either may be empty).
pub fn train(
    triples: &[Triple],
    users: usize,
    items: usize,
    als_params: &AlsParams,
    text: (&[f32], usize),
    tags: &[Vec<u32>],
    s: &PipelineSettings,
) -> Trained {
    let (early, labels) = label_split(triples, s.label_fraction);
    let by_user = Csr::build(&early, users, false);
    let by_item = Csr::build(&early, items, true);
    let inner = als::fit(&by_user, &by_item, als_params);
    let sig = signals(&early, users, items, s);
    let hist = Histories::build(&early, users);
    let cat = Catalogue {
        factors: inner.factors,
        item_factors: &inner.item_factors,
        text_dim: text.1,
        item_text: text.0,
        tags,
    };
    let mut relevant: BTreeMap<u32, HashSet<u32>> = BTreeMap::new();
    for t in &labels {
        if by_user
            .row(t.user as usize)
            .0
            .binary_search(&t.item)
            .is_err()
        {
            relevant.entry(t.user).or_default().insert(t.item);
        }
    }
    let (mut groups, mut validation_users) = (Vec::new(), Vec::new());
    for (&u, rel) in &relevant {
        if in_validation(u, s.validation_fraction) {
            validation_users.push(u);
            continue;
        }
        let input = user_input(&inner, &by_user, &hist, u, s);
        let seen = by_user.row(u as usize).0;
        let c = candidates(s, &sig, &input.as_input(), &cat, |i| {
            seen.binary_search(&i).is_err()
        });
        let positive: Vec<bool> = c.iter().map(|r| rel.contains(&r.index)).collect();
        if positive.iter().any(|p| *p) {
            groups.push(Group {
                rows: c.iter().map(|r| r.features.to_vec()).collect(),
                positive,
            });
        }
    }
    let ranker = fm::fit(&groups, F, s.negatives, &s.fm);
    let mut validation = BTreeMap::new();
    validation.insert("ranker_groups".into(), groups.len() as f64);
    validation.insert("validation_users".into(), validation_users.len() as f64);
    let mut choice = Choice::Factors;
    if !validation_users.is_empty() {
        let mut best = (f64::MIN, Choice::Factors);
        for c in [Choice::Popularity, Choice::Factors, Choice::Pipeline] {
            let mut acc = RankingAccumulator::new(10);
            for &u in &validation_users {
                let input = user_input(&inner, &by_user, &hist, u, s);
                let seen = by_user.row(u as usize).0;
                let rec: Vec<u32> = serve(c, s, &sig, &ranker, &input.as_input(), &cat, 10, |i| {
                    seen.binary_search(&i).is_err()
                })
                .iter()
                .map(|r| r.index)
                .collect();
                acc.add(&rec, &relevant[&u]);
            }
            let ndcg = acc.finish().ndcg;
            validation.insert(format!("validation_ndcg_{}", c.name()), ndcg);
            // Ties go to the simpler way (popularity, then factors).
            if ndcg > best.0 + 1e-12 {
                best = (ndcg, c);
            }
        }
        choice = best.1;
    }
    let all_user = Csr::build(triples, users, false);
    let all_item = Csr::build(triples, items, true);
    let model = als::fit(&all_user, &all_item, als_params);
    Trained {
        model,
        pipeline: Pipeline {
            settings: *s,
            signals: signals(triples, users, items, s),
            recent: RecentLists::build(&Histories::build(triples, users), s.recent_history),
            ranker,
            choice,
            validation,
        },
    }
}

/// A user's factor top-N and history, owned.
struct OwnedInput<'a> {
    factors: Option<&'a [f32]>,
    history: &'a [u32],
    cf: Vec<Scored>,
}

impl OwnedInput<'_> {
    fn as_input(&self) -> UserInput<'_> {
        UserInput {
            factors: self.factors,
            history: self.history,
            cf_top: &self.cf,
        }
    }
}

fn user_input<'a>(
    m: &'a ImplicitModel,
    by_user: &Csr,
    hist: &'a Histories,
    u: u32,
    s: &PipelineSettings,
) -> OwnedInput<'a> {
    let seen = by_user.row(u as usize).0;
    if seen.is_empty() {
        return OwnedInput {
            factors: None,
            history: &[],
            cf: Vec::new(),
        };
    }
    OwnedInput {
        factors: Some(m.user_vector(u as usize)),
        history: hist.row(u as usize),
        cf: cf_top(m, u as usize, s.cf_candidates, seen),
    }
}

/// Recommendations of a trained pipeline for user `u` of `train` (an evaluation helper: the
/// same calls the rank service makes).
pub fn recommend_for(
    t: &Trained,
    by_user: &Csr,
    hist: &Histories,
    cat: &Catalogue,
    u: u32,
    k: usize,
) -> Vec<u32> {
    let input = user_input(&t.model, by_user, hist, u, &t.pipeline.settings);
    let seen = by_user.row(u as usize).0;
    t.pipeline
        .recommend(&input.as_input(), cat, k, |i| {
            seen.binary_search(&i).is_err()
        })
        .iter()
        .map(|r| r.index)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(user: u32, item: u32, ts: i64) -> Triple {
        Triple {
            user,
            item,
            value: 1.0,
            ts,
        }
    }

    /// A catalogue with no factors, text or tags.
    fn no_catalogue() -> Catalogue<'static> {
        Catalogue {
            factors: 0,
            item_factors: &[],
            text_dim: 0,
            item_text: &[],
            tags: &[],
        }
    }

    #[test]
    fn neighbours_are_items_read_by_the_same_users() {
        // Items 0 and 1 always together, 2 and 3 together, 4 alone with 0 once.
        let mut tr = Vec::new();
        for u in 0..10 {
            tr.push(t(u, 0, 0));
            tr.push(t(u, 1, 0));
            tr.push(t(u + 10, 2, 0));
            tr.push(t(u + 10, 3, 0));
        }
        tr.push(t(0, 4, 0));
        let s = signals(&tr, 20, 5, &PipelineSettings::default());
        assert_eq!(s.neighbours.row(0).0[0], 1);
        assert_eq!(s.neighbours.row(2).0, &[3]);
        assert!(!s.timed && s.trending_order.is_empty());
        assert_eq!(s.popular_order[..4], [0, 1, 2, 3]);
        assert_eq!(s.new_items, vec![4]);
    }

    #[test]
    fn trending_counts_recent_interactions_more() {
        let day = 86_400_000;
        // Item 0: 5 users long ago; item 1: 3 users in the last day.
        let mut tr: Vec<Triple> = (0..5).map(|u| t(u, 0, day)).collect();
        tr.extend((5..8).map(|u| t(u, 1, 60 * day)));
        let s = signals(&tr, 8, 2, &PipelineSettings::default());
        assert_eq!(s.popular_order, vec![0, 1]);
        assert_eq!(s.trending_order[0], 1);
        assert!(s.trending_short[1] > 10.0 * s.trending_short[0]);
    }

    #[test]
    fn candidates_name_their_sources_and_respect_keep() {
        let mut tr = Vec::new();
        for u in 0..10 {
            tr.push(t(u, 0, 0));
            tr.push(t(u, 1, 0));
        }
        tr.push(t(10, 2, 0));
        let s = PipelineSettings::default();
        let sig = signals(&tr, 11, 3, &s);
        let p = Pipeline {
            settings: s,
            signals: sig,
            recent: RecentLists::default(),
            ranker: Fm::zero(F, 2),
            choice: Choice::Pipeline,
            validation: BTreeMap::new(),
        };
        let cat = no_catalogue();
        let input = UserInput {
            factors: None,
            history: &[0],
            cf_top: &[],
        };
        let c = p.candidates(&input, &cat, |i| i != 0);
        let one = c.iter().find(|r| r.index == 1).unwrap();
        assert_eq!(
            Source::names(one.sources),
            vec!["neighbours", "popular"],
            "{c:?}"
        );
        assert!(one.features[1] > 0.0);
        assert!(c.iter().all(|r| r.index != 0));
    }

    #[test]
    fn explanations_name_the_history_items_and_features_each_score_goes_through() {
        // User 0 read a (0) and b (1); ten readers of a also read x (2), ten readers of b read y
        // (3): x is there because of a, y because of b.
        let mut tr = vec![t(0, 0, 0), t(0, 1, 0)];
        for u in 1..=10 {
            tr.push(t(u, 0, 0));
            tr.push(t(u, 2, 0));
            tr.push(t(u + 10, 1, 0));
            tr.push(t(u + 10, 3, 0));
        }
        let s = PipelineSettings::default();
        let mut ranker = Fm::zero(F, 1);
        ranker.linear[1] = 1.0; // the neighbour sum alone
        let p = Pipeline {
            settings: s,
            signals: signals(&tr, 21, 4, &s),
            recent: RecentLists::default(),
            ranker,
            choice: Choice::Pipeline,
            validation: BTreeMap::new(),
        };
        let cat = no_catalogue();
        let user = UserInput {
            factors: None,
            history: &[0, 1],
            cf_top: &[],
        };
        let keep = |i: u32| i > 1;
        let x = p.explain(&user, &cat, 2, &[], keep);
        let y = p.explain(&user, &cat, 3, &[], keep);
        assert_eq!(x.history[0].0, 0, "{x:?}");
        assert_eq!(y.history[0].0, 1, "{y:?}");
        assert!(x.history[0].1 > 0.0 && x.history[1].1 == 0.0, "{x:?}");
        assert_eq!(x.features[0].0, "neighbour_sum");
        assert!((x.features.iter().map(|f| f.2).sum::<f32>() - x.score).abs() < 1e-5);
        assert_eq!(Source::names(x.sources), vec!["neighbours", "popular"]);
    }
}

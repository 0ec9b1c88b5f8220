//! A trained model as it is stored and served: the factors, the catalogue (ids, titles, tags),
//! what each user was trained on, popularity, and (hybrid) the item text vectors and the ridge
//! map from text to factors. Pure: the rank service loads it, the CLI evaluates it.
//!
//! Scores: explicit MF ranks by `b_i + p_u·q_i` (the user's own bias and μ do not change the
//! order) and predicts `μ + b_u + b_i + p_u·q_i`; implicit ALS and hybrid rank and predict by
//! `x_u·y_i`; text scores are cosines of MiniLM vectors.

use crate::als::ImplicitModel;
use crate::ann::{AnnSettings, IvfIndex};
use crate::data::Csr;
use crate::linalg::{cholesky_solve, dot, gram, mat_vec};
use crate::pipeline::{Catalogue, Choice, Explanation, Pipeline, Source, UserInput};
use crate::sgd::ExplicitModel;
use crate::topk::{Scored, TopK, top_k};
use std::collections::{BTreeMap, HashMap, HashSet};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Algorithm {
    ExplicitMf,
    ImplicitAls,
    Hybrid,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Self::ExplicitMf => "explicit_mf",
            Self::ImplicitAls => "implicit_als",
            Self::Hybrid => "hybrid",
        }
    }
}

/// Everything a model needs to be served, in one serialisable value.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Model {
    pub version: String,
    pub algorithm: Algorithm,
    pub trained_at_ms: i64,
    pub factors: usize,
    pub user_ids: Vec<String>,
    pub item_ids: Vec<String>,
    pub titles: Vec<String>,
    pub tags: Vec<Vec<String>>,
    /// users × factors and items × factors, row-major.
    pub user_factors: Vec<f32>,
    pub item_factors: Vec<f32>,
    /// Explicit MF only (empty otherwise).
    pub global_mean: f32,
    pub user_bias: Vec<f32>,
    pub item_bias: Vec<f32>,
    pub min_value: f32,
    pub max_value: f32,
    /// λ and α of the training, for fold-in and explanations.
    pub regularization: f32,
    pub alpha: f32,
    /// The training interactions per user (values: ratings or strengths).
    pub seen: Csr,
    /// Item indices, most popular first.
    pub popular: Vec<u32>,
    /// Item text vectors (items × text_dim, unit length; zero rows for items without one).
    pub text_dim: usize,
    pub item_text: Vec<f32>,
    /// Items whose factors were mapped from their text (no interactions in training).
    pub cold_items: Vec<u32>,
    /// Figures measured at training time (e.g. train RMSE, held-out NDCG).
    pub metrics: BTreeMap<String, f64>,
    /// The second stage (candidates from several sources, a learned ranker) and what training
    /// chose to serve; `None` for explicit MF.
    pub pipeline: Option<Pipeline>,
}

impl Model {
    pub fn from_explicit(m: ExplicitModel, parts: Parts) -> Self {
        Self {
            factors: m.factors,
            user_factors: m.user_factors,
            item_factors: m.item_factors,
            global_mean: m.global_mean,
            user_bias: m.user_bias,
            item_bias: m.item_bias,
            min_value: m.min_value,
            max_value: m.max_value,
            ..Self::from_parts(Algorithm::ExplicitMf, parts)
        }
    }

    pub fn from_implicit(m: ImplicitModel, algorithm: Algorithm, parts: Parts) -> Self {
        Self {
            factors: m.factors,
            user_factors: m.user_factors,
            item_factors: m.item_factors,
            regularization: m.regularization,
            alpha: m.alpha,
            ..Self::from_parts(algorithm, parts)
        }
    }

    fn from_parts(algorithm: Algorithm, p: Parts) -> Self {
        Self {
            version: p.version,
            algorithm,
            trained_at_ms: p.trained_at_ms,
            factors: 0,
            user_ids: p.user_ids,
            item_ids: p.item_ids,
            titles: p.titles,
            tags: p.tags,
            user_factors: Vec::new(),
            item_factors: Vec::new(),
            global_mean: 0.0,
            user_bias: Vec::new(),
            item_bias: Vec::new(),
            min_value: f32::MIN,
            max_value: f32::MAX,
            regularization: p.regularization,
            alpha: 0.0,
            seen: p.seen,
            popular: p.popular,
            text_dim: p.text_dim,
            item_text: p.item_text,
            cold_items: Vec::new(),
            metrics: BTreeMap::new(),
            pipeline: None,
        }
    }

    pub fn items(&self) -> usize {
        self.item_ids.len()
    }
    pub fn users(&self) -> usize {
        self.user_ids.len()
    }
}

/// What every model carries besides its factors.
#[derive(Debug, Clone, Default)]
pub struct Parts {
    pub version: String,
    pub trained_at_ms: i64,
    pub user_ids: Vec<String>,
    pub item_ids: Vec<String>,
    pub titles: Vec<String>,
    pub tags: Vec<Vec<String>>,
    pub seen: Csr,
    pub popular: Vec<u32>,
    pub regularization: f32,
    pub text_dim: usize,
    pub item_text: Vec<f32>,
}

/// Ridge regression from text vectors to item factors, `W = (TᵀT + μI)⁻¹ TᵀY` over the items
/// that have both; then every item with text but no interactions gets `y = Wᵀt`. Returns how
/// many items were mapped. (The hybrid model's cold-start path.)
pub fn map_text_to_factors(m: &mut Model, trained: &[bool], ridge: f64) -> usize {
    let (d, k) = (m.text_dim, m.factors);
    if d == 0 || m.item_text.len() != m.items() * d {
        return 0;
    }
    let has_text = |i: usize| m.item_text[i * d..(i + 1) * d].iter().any(|v| *v != 0.0);
    let train: Vec<usize> = (0..m.items())
        .filter(|&i| trained[i] && has_text(i))
        .collect();
    if train.len() < 2 {
        return 0;
    }
    let mut t = Vec::with_capacity(train.len() * d);
    for &i in &train {
        t.extend_from_slice(&m.item_text[i * d..(i + 1) * d]);
    }
    let mut a = gram(&t, d);
    for j in 0..d {
        a[j * d + j] += ridge;
    }
    // W column by column: (TᵀT + μI) w_c = Tᵀ y_c.
    let mut w = vec![0f32; d * k];
    for c in 0..k {
        let mut b = vec![0f64; d];
        for (row, &i) in train.iter().enumerate() {
            let y = m.item_factors[i * k + c] as f64;
            for j in 0..d {
                b[j] += t[row * d + j] as f64 * y;
            }
        }
        let Some(col) = cholesky_solve(&a, &b, d) else {
            return 0;
        };
        for j in 0..d {
            w[j * k + c] = col[j] as f32;
        }
    }
    let mut mapped = Vec::new();
    for (i, &was_trained) in trained.iter().enumerate().take(m.items()) {
        if was_trained || !has_text(i) {
            continue;
        }
        for c in 0..k {
            let mut s = 0f32;
            for j in 0..d {
                s += m.item_text[i * d + j] * w[j * k + c];
            }
            m.item_factors[i * k + c] = s;
        }
        mapped.push(i as u32);
    }
    m.cold_items = mapped;
    m.cold_items.len()
}

/// Each item's tags as numbers (the tag names in sorted order), as training and serving both
/// number them.
pub fn tag_ids(tags: &[Vec<String>]) -> Vec<Vec<u32>> {
    let mut names: Vec<&str> = tags.iter().flatten().map(String::as_str).collect();
    names.sort_unstable();
    names.dedup();
    let number: HashMap<&str, u32> = names.into_iter().zip(0..).collect();
    tags.iter()
        .map(|ts| ts.iter().map(|t| number[t.as_str()]).collect())
        .collect()
}

/// Which items a request may return.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub include_items: Vec<String>,
    pub exclude_items: Vec<String>,
    pub include_tags: Vec<String>,
    pub exclude_tags: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ServeError {
    #[error("{field}: {reason}")]
    InvalidArgument { field: String, reason: String },
    #[error("{0}")]
    NotFound(String),
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ServeError {
    ServeError::InvalidArgument {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Who a recommendation is for, once the service has resolved the user.
#[derive(Debug, Clone)]
pub enum Query {
    /// A user of the model.
    Known(u32),
    /// Factors solved from a history (fold-in); `seen` are the history's items.
    Folded { factors: Vec<f32>, seen: Vec<u32> },
    /// Only a text vector (the user's profile text).
    Text(Vec<f32>),
    /// Nothing known.
    Popular,
}

/// One recommended item and the candidate sources that proposed it ([`Source`] names, or
/// `"text"` for a text-only user's cosine ranking).
#[derive(Debug, Clone, PartialEq)]
pub struct Recommended {
    pub index: u32,
    pub score: f32,
    pub sources: Vec<&'static str>,
}

/// A user's seen items as the model knows them: a known user's sorted training row (searched
/// in place), or a folded history's items.
struct SeenItems<'a> {
    row: &'a [u32],
    folded: HashSet<u32>,
}

impl SeenItems<'_> {
    fn keeps(&self, i: u32) -> bool {
        self.row.binary_search(&i).is_err() && !self.folded.contains(&i)
    }
}

/// Include lists up to this size are scored item by item when the model has an index.
const SCORE_INCLUDED_DIRECTLY: usize = 4096;

/// A model ready to serve: the stored value plus its lookup tables.
pub struct Served {
    pub model: Model,
    user_index: HashMap<String, u32>,
    item_index: HashMap<String, u32>,
    tag_index: HashMap<String, Vec<u32>>,
    item_norms: Vec<f32>,
    /// (YᵀY + λI) for implicit fold-in and explanations, or (QᵀQ + λI) for explicit fold-in.
    gram_reg: Vec<f64>,
    /// Tag ids per item (the pipeline's tag-affinity feature).
    tag_ids: Vec<Vec<u32>>,
    /// The item factors (explicit MF: with the bias as one more column) as an index: many lists
    /// (approximate) for catalogues above [`AnnSettings::min_items`], else one list (exact).
    /// Either way a list is scanned longest first and stops where no later item can enter.
    index: IvfIndex,
}

impl Served {
    /// Exact scoring of the whole catalogue.
    pub fn new(model: Model) -> Self {
        Self::with_ann(model, &AnnSettings::OFF)
    }

    /// With an approximate index when the catalogue is big enough for `ann` (built here, so
    /// it is swapped in with its model; deterministic, so every replica builds the same one).
    pub fn with_ann(model: Model, ann: &AnnSettings) -> Self {
        let user_index = model
            .user_ids
            .iter()
            .enumerate()
            .map(|(i, u)| (u.clone(), i as u32))
            .collect();
        let item_index = model
            .item_ids
            .iter()
            .enumerate()
            .map(|(i, u)| (u.clone(), i as u32))
            .collect();
        let mut tag_index: HashMap<String, Vec<u32>> = HashMap::new();
        for (i, tags) in model.tags.iter().enumerate() {
            for t in tags {
                tag_index.entry(t.clone()).or_default().push(i as u32);
            }
        }
        let tag_ids = tag_ids(&model.tags);
        let k = model.factors.max(1);
        let item_norms = model
            .item_factors
            .chunks_exact(k)
            .map(|y| dot(y, y).sqrt())
            .collect();
        let mut gram_reg = gram(&model.item_factors, k);
        for j in 0..k {
            gram_reg[j * k + j] += model.regularization as f64;
        }
        // Explicit MF scores `b_i + x·q_i`: rows `[q_i, b_i]` against the query `[x, 1]`.
        let explicit_rows: Vec<f32>;
        let (rows, width) = if model.algorithm == Algorithm::ExplicitMf {
            explicit_rows = model
                .item_factors
                .chunks_exact(k)
                .zip(&model.item_bias)
                .flat_map(|(q, b)| q.iter().copied().chain(std::iter::once(*b)))
                .collect();
            (explicit_rows.as_slice(), k + 1)
        } else {
            (model.item_factors.as_slice(), k)
        };
        let index = match ann.params_for(model.items()) {
            Some(p) => IvfIndex::build(rows, width, &p),
            None => IvfIndex::single_list(rows, width),
        };
        Self {
            model,
            user_index,
            item_index,
            tag_index,
            tag_ids,
            item_norms,
            gram_reg,
            index,
        }
    }

    /// The approximate index, when this model has one.
    pub fn index(&self) -> Option<&IvfIndex> {
        (self.index.lists() > 1).then_some(&self.index)
    }

    /// Top-k by factor score for user factors `x` through the index (explicit MF: the query
    /// `[x, 1]` meets the rows `[q_i, b_i]`, so the bias is in the inner product).
    fn search_index(&self, x: &[f32], k: usize, keep: impl Fn(u32) -> bool) -> Vec<Scored> {
        if self.explicit() {
            // `[x, 1]` on the stack for up to 256 factors: the hot path allocates no query.
            let mut q = [0f32; 257];
            if x.len() < q.len() {
                q[..x.len()].copy_from_slice(x);
                q[x.len()] = 1.0;
                return self.index.search(&q[..=x.len()], k, 0, keep);
            }
            let q: Vec<f32> = x.iter().copied().chain(std::iter::once(1.0)).collect();
            self.index.search(&q, k, 0, keep)
        } else {
            self.index.search(x, k, 0, keep)
        }
    }

    pub fn user(&self, id: &str) -> Option<u32> {
        self.user_index.get(id).copied()
    }
    pub fn item(&self, id: &str) -> Option<u32> {
        self.item_index.get(id).copied()
    }

    fn k(&self) -> usize {
        self.model.factors
    }
    fn user_vector(&self, u: u32) -> &[f32] {
        let k = self.k();
        &self.model.user_factors[u as usize * k..(u as usize + 1) * k]
    }
    fn item_vector(&self, i: u32) -> &[f32] {
        let k = self.k();
        &self.model.item_factors[i as usize * k..(i as usize + 1) * k]
    }
    fn text_vector(&self, i: u32) -> &[f32] {
        let d = self.model.text_dim;
        &self.model.item_text[i as usize * d..(i as usize + 1) * d]
    }
    fn explicit(&self) -> bool {
        self.model.algorithm == Algorithm::ExplicitMf
    }

    /// Factors for a user outside the model from their history (item index, value): the exact
    /// solve training would do with the item factors fixed. Explicit MF solves the user's
    /// factors against the residuals `r − μ − b_i` (user bias left at 0).
    pub fn fold_in(&self, history: &[(u32, f32)]) -> Vec<f32> {
        let k = self.k();
        let mut a = self.gram_reg.clone();
        let mut b = vec![0f64; k];
        if self.explicit() {
            // (QᵀQ over the history + λI) p = Qᵀ (r − μ − b_i)
            a = vec![0f64; k * k];
            for j in 0..k {
                a[j * k + j] = self.model.regularization.max(1e-3) as f64;
            }
            for &(i, r) in history {
                let q = self.item_vector(i);
                let resid = (r - self.model.global_mean - self.model.item_bias[i as usize]) as f64;
                for p in 0..k {
                    b[p] += resid * q[p] as f64;
                    for s in 0..k {
                        a[p * k + s] += q[p] as f64 * q[s] as f64;
                    }
                }
            }
        } else {
            let alpha = self.model.alpha as f64;
            for &(i, r) in history {
                let y = self.item_vector(i);
                let c = 1.0 + alpha * r as f64;
                for p in 0..k {
                    b[p] += c * y[p] as f64;
                    for s in 0..k {
                        a[p * k + s] += (c - 1.0) * y[p] as f64 * y[s] as f64;
                    }
                }
            }
        }
        cholesky_solve(&a, &b, k)
            .map(|x| x.into_iter().map(|v| v as f32).collect())
            .unwrap_or_else(|| vec![0.0; k])
    }

    /// Resolves a filter to (allowed set or all, excluded set). Unknown ids are ignored; an
    /// include list that names nothing in the catalogue is an error (it would silently return
    /// nothing or everything).
    fn resolve(&self, f: &Filter) -> Result<(Option<HashSet<u32>>, HashSet<u32>), ServeError> {
        for (field, list) in [
            ("filter.include_items", &f.include_items),
            ("filter.exclude_items", &f.exclude_items),
            ("filter.include_tags", &f.include_tags),
            ("filter.exclude_tags", &f.exclude_tags),
        ] {
            if let Some(i) = list.iter().position(|s| s.trim().is_empty()) {
                return Err(invalid(format!("{field}[{i}]"), "must not be empty"));
            }
        }
        let include = if f.include_items.is_empty() && f.include_tags.is_empty() {
            None
        } else {
            let mut set: HashSet<u32> = f
                .include_items
                .iter()
                .filter_map(|i| self.item(i))
                .collect();
            for t in &f.include_tags {
                set.extend(self.tag_index.get(t).into_iter().flatten());
            }
            if set.is_empty() {
                let field = if f.include_items.is_empty() {
                    "filter.include_tags"
                } else {
                    "filter.include_items"
                };
                return Err(invalid(field, "matches no item of the catalogue"));
            }
            Some(set)
        };
        let mut exclude: HashSet<u32> = f
            .exclude_items
            .iter()
            .filter_map(|i| self.item(i))
            .collect();
        for t in &f.exclude_tags {
            exclude.extend(self.tag_index.get(t).into_iter().flatten());
        }
        Ok((include, exclude))
    }

    /// The top `k` items for a query. `k` above the catalogue returns every allowed item.
    pub fn recommend(
        &self,
        q: &Query,
        k: usize,
        exclude_seen: bool,
        filter: &Filter,
    ) -> Result<Vec<Scored>, ServeError> {
        Ok(self
            .recommend_with_sources(q, k, exclude_seen, filter)?
            .into_iter()
            .map(|r| Scored {
                index: r.index,
                score: r.score,
            })
            .collect())
    }

    /// [`Served::recommend`], each item with the sources that proposed it. A model with a
    /// pipeline serves what training chose on validation (the re-ranked candidates, the factor
    /// model alone, or popularity) for users of the model, folded-in users and users with
    /// nothing known; a text-only user and a request with an include filter get the plain
    /// path. When the candidates are fewer than `k`, the plain path's next items follow, scored
    /// below them.
    pub fn recommend_with_sources(
        &self,
        q: &Query,
        k: usize,
        exclude_seen: bool,
        filter: &Filter,
    ) -> Result<Vec<Recommended>, ServeError> {
        if k == 0 {
            return Err(invalid("k", "must be at least 1"));
        }
        let plain_source = match q {
            Query::Known(_) | Query::Folded { .. } => Source::Factors.name(),
            Query::Text(_) => "text",
            Query::Popular => Source::Popular.name(),
        };
        let plain = |items: Vec<Scored>| -> Vec<Recommended> {
            items
                .into_iter()
                .map(|x| Recommended {
                    index: x.index,
                    score: x.score,
                    sources: vec![plain_source],
                })
                .collect()
        };
        let pipeline = self.model.pipeline.as_ref().filter(|_| {
            filter.include_items.is_empty()
                && filter.include_tags.is_empty()
                && !matches!(q, Query::Text(_))
        });
        let Some(p) = pipeline else {
            return Ok(plain(self.recommend_plain(q, k, exclude_seen, filter)?));
        };
        let (_, exclude) = self.resolve(filter)?;
        let seen = self.seen_of(q, exclude_seen);
        let keep = |i: u32| seen.keeps(i) && !exclude.contains(&i);
        let (factors, history) = self.pipeline_user(p, q);
        let cf_top = match factors {
            Some(x) => self.search_index(x, p.settings.cf_candidates, keep),
            None => Vec::new(),
        };
        let cat = self.catalogue();
        let user = UserInput {
            factors,
            history,
            cf_top: &cf_top,
        };
        let mut out: Vec<Recommended> = p
            .recommend(&user, &cat, k, keep)
            .into_iter()
            .map(|r| Recommended {
                index: r.index,
                score: r.score,
                sources: Source::names(r.sources),
            })
            .collect();
        if out.len() < k {
            let have: HashSet<u32> = out.iter().map(|r| r.index).collect();
            let floor = out.last().map_or(0.0, |r| r.score);
            // Asked for enough that, after the ones already listed, `k` remain if they exist.
            let more = self.recommend_plain(q, k + out.len(), exclude_seen, filter)?;
            let next = more.into_iter().filter(|x| !have.contains(&x.index));
            for (n, x) in next.take(k - out.len()).enumerate() {
                out.push(Recommended {
                    index: x.index,
                    score: floor - 1.0 - n as f32 * 1e-3,
                    sources: vec![plain_source],
                });
            }
        }
        Ok(out)
    }

    /// The pipeline's explanation of `item` for a query when the model serves through its
    /// ranker (None otherwise: then the score is the factor model's, see [`Served::explain`]).
    /// `history` (item, strength) gives the CF score's exact decomposition over the history.
    pub fn explain_ranked(
        &self,
        q: &Query,
        history: &[(u32, f32)],
        item: u32,
    ) -> Option<Explanation> {
        let p = self
            .model
            .pipeline
            .as_ref()
            .filter(|p| p.choice == Choice::Pipeline && !matches!(q, Query::Text(_)))?;
        let seen = self.seen_of(q, true);
        let keep = |i: u32| seen.keeps(i);
        let (factors, recent) = self.pipeline_user(p, q);
        let cf_top = match factors {
            Some(x) => self.search_index(x, p.settings.cf_candidates, keep),
            None => Vec::new(),
        };
        let cf_parts: Vec<(u32, f32)> = if factors.is_some() && !history.is_empty() {
            let (parts, _) = self.explain(history, item, history.len());
            parts.into_iter().map(|x| (x.index, x.score)).collect()
        } else {
            Vec::new()
        };
        let user = UserInput {
            factors,
            history: recent,
            cf_top: &cf_top,
        };
        Some(p.explain(&user, &self.catalogue(), item, &cf_parts, keep))
    }

    /// What the pipeline's features read of the catalogue.
    fn catalogue(&self) -> Catalogue<'_> {
        Catalogue {
            factors: self.model.factors,
            item_factors: &self.model.item_factors,
            text_dim: self.model.text_dim,
            item_text: &self.model.item_text,
            tags: &self.tag_ids,
        }
    }

    /// The user's factors and newest history items, as the pipeline takes them.
    fn pipeline_user<'a>(
        &'a self,
        p: &'a Pipeline,
        q: &'a Query,
    ) -> (Option<&'a [f32]>, &'a [u32]) {
        match q {
            Query::Known(u) => (Some(self.user_vector(*u)), p.recent.row(*u as usize)),
            Query::Folded { factors, seen } => (Some(factors.as_slice()), seen.as_slice()),
            _ => (None, &[]),
        }
    }

    /// What the model knows the user has seen (nothing unless `exclude_seen`).
    fn seen_of<'a>(&'a self, q: &'a Query, exclude_seen: bool) -> SeenItems<'a> {
        match q {
            Query::Known(u) if exclude_seen => SeenItems {
                row: self.model.seen.row(*u as usize).0,
                folded: HashSet::new(),
            },
            Query::Folded { seen, .. } if exclude_seen => SeenItems {
                row: &[],
                folded: seen.iter().copied().collect(),
            },
            _ => SeenItems {
                row: &[],
                folded: HashSet::new(),
            },
        }
    }

    fn recommend_plain(
        &self,
        q: &Query,
        k: usize,
        exclude_seen: bool,
        filter: &Filter,
    ) -> Result<Vec<Scored>, ServeError> {
        let (include, exclude) = self.resolve(filter)?;
        let seen = self.seen_of(q, exclude_seen);
        let keep = |i: u32| {
            seen.keeps(i)
                && !exclude.contains(&i)
                && include.as_ref().is_none_or(|s| s.contains(&i))
        };
        match q {
            Query::Known(u) => Ok(self.search_factors(self.user_vector(*u), k, &include, keep)),
            Query::Folded { factors, .. } => Ok(self.search_factors(factors, k, &include, keep)),
            Query::Text(v) => {
                let d = self.model.text_dim;
                if d == 0 || v.len() != d {
                    return self.popular(k, keep);
                }
                let mut scores = vec![0f32; self.model.items()];
                mat_vec(&self.model.item_text, d, v, &mut scores);
                Ok(top_k(&scores, k, keep))
            }
            Query::Popular => self.popular(k, keep),
        }
    }

    /// Top-k by factor score: through the index, or item by item for a short include list.
    fn search_factors(
        &self,
        x: &[f32],
        k: usize,
        include: &Option<HashSet<u32>>,
        keep: impl Fn(u32) -> bool,
    ) -> Vec<Scored> {
        match include {
            Some(set) if set.len() <= SCORE_INCLUDED_DIRECTLY => {
                self.score_included(x, set, k, keep)
            }
            _ => self.search_index(x, k, keep),
        }
    }

    /// Exact top-k over an include set only.
    fn score_included(
        &self,
        x: &[f32],
        set: &HashSet<u32>,
        k: usize,
        keep: impl Fn(u32) -> bool,
    ) -> Vec<Scored> {
        let mut best = TopK::new(k);
        for &i in set {
            let mut s = dot(x, self.item_vector(i));
            if self.explicit() {
                s += self.model.item_bias[i as usize];
            }
            best.offer(i, s, &keep);
        }
        best.into_sorted()
    }

    fn popular(&self, k: usize, keep: impl Fn(u32) -> bool) -> Result<Vec<Scored>, ServeError> {
        let n = self.model.popular.len().max(1) as f32;
        Ok(self
            .model
            .popular
            .iter()
            .enumerate()
            .filter(|(_, i)| keep(**i))
            .take(k)
            .map(|(rank, &index)| Scored {
                index,
                score: 1.0 - rank as f32 / n,
            })
            .collect())
    }

    /// Top-k for many known users at once, seen items excluded: one index search each (a scan
    /// that stops early beats one blocked pass over every item for the whole batch).
    pub fn recommend_known_batch(&self, users: &[u32], k: usize) -> Vec<Vec<Recommended>> {
        if self.model.pipeline.is_some() {
            let none = Filter::default();
            return users
                .iter()
                .map(|&u| {
                    self.recommend_with_sources(&Query::Known(u), k.max(1), true, &none)
                        .unwrap_or_default()
                })
                .collect();
        }
        users
            .iter()
            .map(|&u| {
                let seen = self.model.seen.row(u as usize).0;
                self.search_index(self.user_vector(u), k, |i| seen.binary_search(&i).is_err())
                    .into_iter()
                    .map(|x| Recommended {
                        index: x.index,
                        score: x.score,
                        sources: vec![Source::Factors.name()],
                    })
                    .collect()
            })
            .collect()
    }

    /// The model's score for one pair: the predicted rating for explicit MF, `x·y` otherwise.
    pub fn predict(&self, q: &Query, item: u32) -> f32 {
        let y = self.item_vector(item);
        match q {
            Query::Known(u) => {
                let x = self.user_vector(*u);
                if self.explicit() {
                    (self.model.global_mean
                        + self.model.user_bias[*u as usize]
                        + self.model.item_bias[item as usize]
                        + dot(x, y))
                    .clamp(self.model.min_value, self.model.max_value)
                } else {
                    dot(x, y)
                }
            }
            Query::Folded { factors, .. } => {
                if self.explicit() {
                    (self.model.global_mean + self.model.item_bias[item as usize] + dot(factors, y))
                        .clamp(self.model.min_value, self.model.max_value)
                } else {
                    dot(factors, y)
                }
            }
            Query::Text(v) if v.len() == self.model.text_dim => dot(v, self.text_vector(item)),
            _ => {
                if self.explicit() {
                    (self.model.global_mean + self.model.item_bias[item as usize])
                        .clamp(self.model.min_value, self.model.max_value)
                } else {
                    0.0
                }
            }
        }
    }

    /// Items most similar to `item`: cosine of item factors, or of text vectors.
    pub fn similar(&self, item: u32, k: usize, by_text: bool) -> Result<Vec<Scored>, ServeError> {
        if k == 0 {
            return Err(invalid("k", "must be at least 1"));
        }
        let n = self.model.items();
        let mut scores = vec![0f32; n];
        if by_text {
            let d = self.model.text_dim;
            let v = self.text_vector(item);
            if d == 0 || v.iter().all(|x| *x == 0.0) {
                return Err(ServeError::NotFound(format!(
                    "item {} has no text vector",
                    self.model.item_ids[item as usize]
                )));
            }
            mat_vec(&self.model.item_text, d, v, &mut scores);
        } else {
            let y = self.item_vector(item);
            mat_vec(&self.model.item_factors, self.k(), y, &mut scores);
            let ny = self.item_norms[item as usize].max(1e-12);
            scores
                .iter_mut()
                .zip(&self.item_norms)
                .for_each(|(s, n)| *s /= ny * n.max(1e-12));
        }
        Ok(top_k(&scores, k, |i| i != item))
    }

    /// The history items that contribute most to the user's score for `item`, largest first,
    /// and the score. For ALS models the decomposition is exact (Hu et al. 2008 §5): with
    /// `W = (YᵀC_uY + λI)⁻¹`, `score = Σ_j c_j · y_iᵀ W y_j` over the history `j`. For explicit
    /// MF a history item contributes its residual rating times the cosine of the two items'
    /// factors (a heuristic: MF scores do not decompose over the history).
    pub fn explain(&self, history: &[(u32, f32)], item: u32, k: usize) -> (Vec<Scored>, f32) {
        let kf = self.k();
        let y = self.item_vector(item);
        let mut contributions: Vec<Scored> = Vec::new();
        if self.explicit() {
            let ny = self.item_norms[item as usize].max(1e-12);
            for &(j, r) in history {
                let resid = r - self.model.global_mean - self.model.item_bias[j as usize];
                let cos =
                    dot(y, self.item_vector(j)) / (ny * self.item_norms[j as usize].max(1e-12));
                contributions.push(Scored {
                    index: j,
                    score: resid * cos,
                });
            }
        } else {
            let alpha = self.model.alpha as f64;
            let mut a = self.gram_reg.clone();
            for &(j, r) in history {
                let yj = self.item_vector(j);
                let c = alpha * r as f64;
                for p in 0..kf {
                    for s in 0..kf {
                        a[p * kf + s] += c * yj[p] as f64 * yj[s] as f64;
                    }
                }
            }
            // W y_i once; then each contribution is c_j · (W y_i)·y_j.
            let b: Vec<f64> = y.iter().map(|v| *v as f64).collect();
            if let Some(wy) = cholesky_solve(&a, &b, kf) {
                let wy: Vec<f32> = wy.into_iter().map(|v| v as f32).collect();
                for &(j, r) in history {
                    let c = 1.0 + self.model.alpha * r;
                    contributions.push(Scored {
                        index: j,
                        score: c * dot(&wy, self.item_vector(j)),
                    });
                }
            }
        }
        let total = contributions.iter().map(|c| c.score).sum();
        contributions.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.index.cmp(&b.index)));
        contributions.truncate(k);
        (contributions, total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::als::{self, AlsParams};
    use crate::data::Triple;

    /// Six items, tags, two user groups, ALS.
    fn served() -> Served {
        let mut t = Vec::new();
        for user in 0..12u32 {
            for item in 0..6u32 {
                if (user < 6) == (item < 3) && (user + item) % 4 != 0 {
                    t.push(Triple {
                        user,
                        item,
                        value: 1.0,
                        ts: 0,
                    });
                }
            }
        }
        let (u, i) = (Csr::build(&t, 12, false), Csr::build(&t, 6, true));
        let p = AlsParams {
            factors: 4,
            ..AlsParams::default()
        };
        let m = als::fit(&u, &i, &p);
        let parts = Parts {
            version: "v1".into(),
            user_ids: (0..12).map(|u| format!("u{u}")).collect(),
            item_ids: (0..6).map(|i| format!("i{i}")).collect(),
            titles: (0..6).map(|i| format!("Title {i}")).collect(),
            tags: (0..6)
                .map(|i| vec![if i < 3 { "a" } else { "b" }.to_string()])
                .collect(),
            seen: u,
            popular: vec![0, 3, 1, 4, 2, 5],
            regularization: p.regularization,
            ..Parts::default()
        };
        Served::new(Model::from_implicit(m, Algorithm::ImplicitAls, parts))
    }

    /// A 3,000-item model from the synthetic taste model: ALS-shaped, or explicit with biases.
    fn big_model(algorithm: Algorithm) -> Model {
        let (items, users, k) = (3_000usize, 40usize, 8usize);
        let taste = crate::synthetic::TasteModel::new(items, k, 11);
        let t: Vec<Triple> = (0..users as u32)
            .flat_map(|u| {
                (0..30u32).map(move |j| Triple {
                    user: u,
                    item: (u * 7919 + j * 104_729) % items as u32,
                    value: 1.0,
                    ts: 0,
                })
            })
            .collect();
        let parts = Parts {
            version: "big".into(),
            user_ids: (0..users).map(|u| format!("u{u}")).collect(),
            item_ids: (0..items).map(|i| format!("i{i}")).collect(),
            titles: vec![String::new(); items],
            tags: (0..items).map(|i| vec![format!("t{}", i % 10)]).collect(),
            seen: Csr::build(&t, users, false),
            popular: (0..items as u32).collect(),
            regularization: 0.05,
            ..Parts::default()
        };
        let mut m = Model::from_parts(algorithm, parts);
        m.factors = k;
        m.item_factors = taste.item_factors();
        m.user_factors = taste.user_factors(users);
        if algorithm == Algorithm::ExplicitMf {
            m.item_bias = (0..items).map(|i| ((i * 37) % 11) as f32 * 0.05).collect();
            m.user_bias = vec![0.0; users];
            m.global_mean = 3.5;
        }
        m
    }

    #[test]
    fn serving_equals_scoring_every_item() {
        for algorithm in [Algorithm::ImplicitAls, Algorithm::ExplicitMf] {
            let s = Served::new(big_model(algorithm));
            assert!(s.index().is_none());
            for u in 0..40u32 {
                let mut scores = vec![0f32; s.model.items()];
                mat_vec(&s.model.item_factors, 8, s.user_vector(u), &mut scores);
                if algorithm == Algorithm::ExplicitMf {
                    scores
                        .iter_mut()
                        .zip(&s.model.item_bias)
                        .for_each(|(x, b)| *x += b);
                }
                let seen = s.model.seen.row(u as usize).0;
                let want = top_k(&scores, 10, |i| !seen.contains(&i));
                let got = s
                    .recommend(&Query::Known(u), 10, true, &Filter::default())
                    .unwrap();
                assert_eq!(ids(&s, &got), ids(&s, &want), "{algorithm:?} u{u}");
                let batch = s.recommend_known_batch(&[u], 10).remove(0);
                let batch: Vec<(u32, f32)> = batch.iter().map(|r| (r.index, r.score)).collect();
                let single: Vec<(u32, f32)> = got.iter().map(|r| (r.index, r.score)).collect();
                assert_eq!(batch, single);
            }
        }
    }

    #[test]
    fn the_index_probing_every_list_serves_what_exact_scoring_serves() {
        for algorithm in [Algorithm::ImplicitAls, Algorithm::ExplicitMf] {
            let exact = Served::new(big_model(algorithm));
            let all_lists = AnnSettings {
                min_items: 1_000,
                lists: 30,
                probes: 30,
            };
            let indexed = Served::with_ann(big_model(algorithm), &all_lists);
            assert_eq!(indexed.index().map(|i| i.lists()), Some(30));
            let filters = [
                Filter::default(),
                Filter {
                    exclude_tags: vec!["t1".into(), "t2".into()],
                    ..Filter::default()
                },
                Filter {
                    include_tags: vec!["t3".into()],
                    exclude_items: vec!["i3".into()],
                    ..Filter::default()
                },
            ];
            for u in 0..40 {
                for f in &filters {
                    let q = Query::Known(u);
                    let want = exact.recommend(&q, 10, true, f).unwrap();
                    let got = indexed.recommend(&q, 10, true, f).unwrap();
                    assert_eq!(ids(&exact, &got), ids(&exact, &want), "{algorithm:?} u{u}");
                }
            }
            let users: Vec<u32> = (0..40).collect();
            let want = exact.recommend_known_batch(&users, 10);
            let got = indexed.recommend_known_batch(&users, 10);
            for (g, w) in got.iter().zip(&want) {
                let index = |l: &[Recommended]| l.iter().map(|r| r.index).collect::<Vec<_>>();
                assert_eq!(index(g), index(w));
            }
        }
    }

    #[test]
    fn small_catalogues_get_no_index_and_the_default_index_finds_most_of_the_top_ten() {
        let small = AnnSettings {
            min_items: 5_000,
            lists: 0,
            probes: 0,
        };
        assert!(
            Served::with_ann(big_model(Algorithm::ImplicitAls), &small)
                .index()
                .is_none()
        );
        let exact = Served::new(big_model(Algorithm::ImplicitAls));
        let on = AnnSettings {
            min_items: 1,
            ..small
        };
        let indexed = Served::with_ann(big_model(Algorithm::ImplicitAls), &on);
        let mut found = 0;
        for u in 0..40 {
            let q = Query::Known(u);
            let want = exact.recommend(&q, 10, true, &Filter::default()).unwrap();
            let got = indexed.recommend(&q, 10, true, &Filter::default()).unwrap();
            assert_eq!(got.len(), 10);
            found += got.iter().filter(|g| want.contains(g)).count();
        }
        assert!(found >= 360, "{found} of 400");
    }

    fn ids(s: &Served, r: &[Scored]) -> Vec<String> {
        r.iter()
            .map(|x| s.model.item_ids[x.index as usize].clone())
            .collect()
    }

    #[test]
    fn recommends_unseen_items_of_the_users_group() {
        let s = served();
        let u = s.user("u1").unwrap();
        let r = s
            .recommend(&Query::Known(u), 1, true, &Filter::default())
            .unwrap();
        // u1 (group a) has seen i0, i1 and i2 except (1 + 3) % 4 == 0 → i3 is unseen but from
        // group b; every group-a item is seen, so the best unseen item is from group b.
        let seen: Vec<u32> = s.model.seen.row(u as usize).0.to_vec();
        assert!(!seen.contains(&r[0].index));
        // Without exclusion the top items are the user's own group.
        let all = s
            .recommend(&Query::Known(u), 3, false, &Filter::default())
            .unwrap();
        assert!(all.iter().all(|x| x.index < 3), "{:?}", ids(&s, &all));
    }

    #[test]
    fn filters_k_and_the_fallbacks() {
        let s = served();
        let q = Query::Known(s.user("u0").unwrap());
        let f = Filter {
            include_tags: vec!["b".into()],
            exclude_items: vec!["i4".into(), "unknown".into()],
            ..Filter::default()
        };
        let r = s.recommend(&q, 10, false, &f).unwrap();
        assert_eq!(
            {
                let mut v = ids(&s, &r);
                v.sort();
                v
            },
            vec!["i3", "i5"]
        );
        // k beyond the catalogue: every allowed item.
        assert_eq!(
            s.recommend(&q, 100, false, &Filter::default())
                .unwrap()
                .len(),
            6
        );
        assert_eq!(
            s.recommend(&q, 0, false, &Filter::default()).unwrap_err(),
            invalid("k", "must be at least 1")
        );
        let bad = Filter {
            include_items: vec!["nope".into()],
            ..Filter::default()
        };
        assert!(matches!(
            s.recommend(&q, 3, false, &bad),
            Err(ServeError::InvalidArgument { field, .. }) if field == "filter.include_items"
        ));
        let empty = Filter {
            exclude_tags: vec![" ".into()],
            ..Filter::default()
        };
        assert!(matches!(
            s.recommend(&q, 3, false, &empty),
            Err(ServeError::InvalidArgument { field, .. }) if field == "filter.exclude_tags[0]"
        ));
        // Popular order with exclusions applied.
        let p = s
            .recommend(
                &Query::Popular,
                3,
                true,
                &Filter {
                    exclude_items: vec!["i3".into()],
                    ..Filter::default()
                },
            )
            .unwrap();
        assert_eq!(ids(&s, &p), vec!["i0", "i1", "i4"]);
    }

    #[test]
    fn als_explanations_add_up_to_the_fold_in_score() {
        let s = served();
        let history: Vec<(u32, f32)> = vec![(0, 1.0), (1, 3.0), (4, 1.0)];
        let x = s.fold_in(&history);
        for item in 0..6u32 {
            let score = s.predict(
                &Query::Folded {
                    factors: x.clone(),
                    seen: vec![],
                },
                item,
            );
            let (parts, total) = s.explain(&history, item, 10);
            assert_eq!(parts.len(), 3);
            assert!(
                (total - score).abs() < 1e-3,
                "item {item}: {total} vs {score}"
            );
            assert!(parts.windows(2).all(|w| w[0].score >= w[1].score));
        }
    }

    #[test]
    fn similar_items_exclude_the_item_and_favour_its_group() {
        let s = served();
        let r = s.similar(0, 2, false).unwrap();
        assert!(r.iter().all(|x| x.index != 0));
        assert!(r.iter().all(|x| x.index < 3), "{:?}", ids(&s, &r));
        assert!(matches!(
            s.similar(0, 2, true),
            Err(ServeError::NotFound(_))
        ));
    }

    /// A model with the second stage serves through it: every item says where it came from,
    /// `k` beyond the candidates is filled from the factor model, seen items stay out.
    #[test]
    fn a_pipeline_model_names_the_sources_and_fills_k_beyond_its_candidates() {
        let (users, items) = (60u32, 400u32);
        let t: Vec<Triple> = (0..users)
            .flat_map(|u| {
                (0..12u32).map(move |j| Triple {
                    user: u,
                    item: (u % 3) * 100 + (u * 7 + j * 13) % 100,
                    value: 1.0,
                    ts: 1_000_000 * (u as i64 * 12 + j as i64),
                })
            })
            .collect();
        let p = AlsParams {
            factors: 8,
            iterations: 5,
            threads: 1,
            ..AlsParams::default()
        };
        let settings = crate::pipeline::PipelineSettings::default();
        let trained = crate::pipeline::train(
            &t,
            users as usize,
            items as usize,
            &p,
            (&[], 0),
            &[],
            &settings,
        );
        let parts = Parts {
            version: "p".into(),
            user_ids: (0..users).map(|u| format!("u{u}")).collect(),
            item_ids: (0..items).map(|i| format!("i{i}")).collect(),
            titles: vec![String::new(); items as usize],
            tags: vec![Vec::new(); items as usize],
            seen: Csr::build(&t, users as usize, false),
            popular: (0..items).collect(),
            regularization: 0.05,
            ..Parts::default()
        };
        let mut m = Model::from_implicit(trained.model, Algorithm::ImplicitAls, parts);
        m.pipeline = Some(trained.pipeline);
        let s = Served::new(m);
        let none = Filter::default();
        for k in [10, 200, 1000] {
            let got = s
                .recommend_with_sources(&Query::Known(5), k, true, &none)
                .unwrap();
            let seen = s.model.seen.row(5).0;
            assert_eq!(got.len(), k.min(items as usize - seen.len()), "k {k}");
            assert!(got.iter().all(|r| seen.binary_search(&r.index).is_err()));
            assert!(got.iter().all(|r| !r.sources.is_empty()));
            let distinct: HashSet<u32> = got.iter().map(|r| r.index).collect();
            assert_eq!(distinct.len(), got.len());
            assert!(got.windows(2).all(|w| w[0].score >= w[1].score), "k {k}");
        }
        // A user with nothing known gets the pipeline's cold answer, also named.
        let cold = s
            .recommend_with_sources(&Query::Popular, 5, true, &none)
            .unwrap();
        assert_eq!(cold.len(), 5);
        assert!(cold.iter().all(|r| !r.sources.is_empty()));
    }
}

//! The `recalloc.v1.Ranker` gRPC adapter and the training entry point.
//!
//! Who a request is for decides where its scores come from (the response's `source`):
//! a user of the current model → MODEL; otherwise a user with history in Redis → FOLD_IN (factors
//! solved from that history against the model's item factors, no retraining); otherwise a user
//! with a profile-text vector → TEXT (cosine to the items' text vectors); otherwise → POPULAR.
//!
//! | error | status |
//! |---|---|
//! | empty `user_id` / `item_id`, `k` = 0, an empty filter entry, an include filter that matches no item, a bad Train parameter | INVALID_ARGUMENT, naming the field |
//! | an item not in the model (Predict, SimilarItems, Explain); a user without history (Explain) | NOT_FOUND |
//! | no model trained yet; nothing to train on | FAILED_PRECONDITION |
//! | another training is running | ABORTED (retry later) |
//! | Redis unreachable | UNAVAILABLE |
//!
//! `k` larger than the catalogue returns every allowed item. Unknown ids inside exclude filters
//! are ignored. All scoring runs on the blocking pool, off the async runtime.

use crate::store::{self, StoreError};
use crate::trainer::{self, TrainError, TrainParams};
use arc_swap::ArcSwapOption;
use recalloc_common::Metrics;
use recalloc_common::config::Config;
use recalloc_common::redis_conn::RedisConnection;
use recalloc_factor::model::{Algorithm, Filter, Query, Recommended, ServeError, Served};
use recalloc_factor::pipeline::Source;
use recalloc_factor::topk::Scored;
use recalloc_proto::v1::{
    self, ExplainRequest, ExplainResponse, GetModelInfoRequest, ModelInfo, PredictRequest,
    PredictResponse, RecommendBatchRequest, RecommendBatchResponse, RecommendRequest,
    RecommendResponse, RecommendationSource, ScoredItem, SimilarItemsRequest, SimilarItemsResponse,
    TrainRequest, TrainResponse, ranker_server::Ranker,
};
use recalloc_store::history::{self, HistoryEntry};
use recalloc_store::models::TrainLock;
use std::sync::Arc;
use tonic::{Request, Response, Status};

#[derive(Debug, thiserror::Error)]
pub enum RankError {
    #[error("{field}: {reason}")]
    InvalidArgument { field: String, reason: String },
    #[error("{0}")]
    NotFound(String),
    #[error("no model trained yet: call Train (`recalloc train`)")]
    NoModel,
    #[error(transparent)]
    NoData(#[from] TrainError),
    #[error("another training is running; retry later")]
    Busy,
    #[error("redis unavailable: {0}")]
    Redis(String),
    #[error("{0}")]
    Internal(String),
}

impl From<ServeError> for RankError {
    fn from(e: ServeError) -> Self {
        match e {
            ServeError::InvalidArgument { field, reason } => {
                Self::InvalidArgument { field, reason }
            }
            ServeError::NotFound(m) => Self::NotFound(m),
        }
    }
}

impl From<StoreError> for RankError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Redis(r) => Self::Redis(r.to_string()),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<redis::RedisError> for RankError {
    fn from(e: redis::RedisError) -> Self {
        Self::Redis(e.to_string())
    }
}

impl From<RankError> for Status {
    fn from(e: RankError) -> Self {
        let msg = e.to_string();
        match e {
            RankError::InvalidArgument { .. } => Status::invalid_argument(msg),
            RankError::NotFound(_) => Status::not_found(msg),
            RankError::NoModel | RankError::NoData(_) => Status::failed_precondition(msg),
            RankError::Busy => Status::aborted(msg),
            RankError::Redis(_) => Status::unavailable(msg),
            RankError::Internal(_) => Status::internal(msg),
        }
    }
}

fn invalid(field: &str, reason: &str) -> RankError {
    RankError::InvalidArgument {
        field: field.into(),
        reason: reason.into(),
    }
}

/// The loaded model, swapped atomically when a new version arrives.
pub type ModelSlot = Arc<ArcSwapOption<Served>>;

pub struct RankService {
    pub models: ModelSlot,
    con: RedisConnection,
    cfg: Config,
    metrics: Arc<Metrics>,
    training: tokio::sync::Mutex<()>,
}

/// A resolved user: the query, the history used (item index, value; for a user of the model
/// it stays in the model and [`Resolved::history`] reads it there, so Recommend copies nothing)
/// and the source.
struct Resolved {
    query: Query,
    history: Vec<(u32, f32)>,
    source: RecommendationSource,
}

impl Resolved {
    fn history(&self, s: &Served) -> Vec<(u32, f32)> {
        match self.query {
            Query::Known(u) => {
                let (idx, vals) = s.model.seen.row(u as usize);
                idx.iter().copied().zip(vals.iter().copied()).collect()
            }
            _ => self.history.clone(),
        }
    }
}

/// Items asked for beyond `k` when seen items are excluded, so that a few seen ones the model
/// does not know of (read after it was trained) cost no second round.
const SEEN_MARGIN: usize = 16;
/// How long Recommend waits for the seen set before serving without it.
const SEEN_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(200);
const SEEN_SKIPPED: &str = "recalloc_rank_seen_check_skipped_total";
const SEEN_SKIPPED_HELP: &str =
    "exclude_seen requests answered without the Redis seen set (Redis did not answer)";
const REQUESTS: &str = "recalloc_rank_recommendations_total";
const REQUESTS_HELP: &str = "recommendations served, by source";

impl RankService {
    pub fn new(
        models: ModelSlot,
        con: RedisConnection,
        cfg: Config,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            models,
            con,
            cfg,
            metrics,
            training: tokio::sync::Mutex::new(()),
        }
    }

    fn model(&self) -> Result<Arc<Served>, RankError> {
        self.models.load_full().ok_or(RankError::NoModel)
    }

    fn history_values(&self, s: &Served, entries: &[HistoryEntry]) -> Vec<(u32, f32)> {
        let explicit = s.model.algorithm == Algorithm::ExplicitMf;
        let p = self.train_params(Algorithm::ImplicitAls);
        entries
            .iter()
            .filter_map(|h| {
                let i = s.item(&h.item)?;
                let v = if explicit {
                    (h.kind == "rating").then_some(h.value as f32)?
                } else {
                    trainer::strength(&h.kind, h.value, &p)
                };
                (v > 0.0).then_some((i, v))
            })
            .collect()
    }

    async fn resolve(&self, s: &Arc<Served>, user: &str) -> Result<Resolved, RankError> {
        if user.trim().is_empty() {
            return Err(invalid("user_id", "must not be empty"));
        }
        if let Some(u) = s.user(user) {
            return Ok(Resolved {
                query: Query::Known(u),
                history: Vec::new(),
                source: RecommendationSource::Model,
            });
        }
        let mut con = self.con.clone();
        let entries = history::history(&mut con, user, history::SERVING_EVENTS).await?;
        let history = self.history_values(s, &entries);
        if !history.is_empty() {
            let (s2, h2) = (s.clone(), history.clone());
            let factors = tokio::task::spawn_blocking(move || s2.fold_in(&h2))
                .await
                .map_err(|e| RankError::Internal(e.to_string()))?;
            // Everything in the history counts as seen, whatever its weight.
            let seen = entries.iter().filter_map(|h| s.item(&h.item)).collect();
            return Ok(Resolved {
                query: Query::Folded { factors, seen },
                history,
                source: RecommendationSource::FoldIn,
            });
        }
        if let Some(v) = recalloc_store::vector_store::user_text_vector(&mut con, user).await?
            && s.model.text_dim == v.len()
        {
            return Ok(Resolved {
                query: Query::Text(v),
                history: Vec::new(),
                source: RecommendationSource::Text,
            });
        }
        Ok(Resolved {
            query: Query::Popular,
            history: Vec::new(),
            source: RecommendationSource::Popular,
        })
    }

    fn scored(s: &Served, items: Vec<Scored>) -> Vec<ScoredItem> {
        items
            .into_iter()
            .map(|x| Self::scored_item(s, x.index, x.score, &[]))
            .collect()
    }

    fn recommended(s: &Served, items: Vec<Recommended>) -> Vec<ScoredItem> {
        items
            .into_iter()
            .map(|x| Self::scored_item(s, x.index, x.score, &x.sources))
            .collect()
    }

    fn scored_item(s: &Served, index: u32, score: f32, sources: &[&str]) -> ScoredItem {
        ScoredItem {
            item_id: s.model.item_ids[index as usize].clone(),
            score,
            title: s.model.titles[index as usize].clone(),
            sources: sources.iter().map(|n| n.to_string()).collect(),
        }
    }

    pub async fn recommend(&self, r: RecommendRequest) -> Result<RecommendResponse, RankError> {
        let s = self.model()?;
        let resolved = self.resolve(&s, &r.user_id).await?;
        let filter = r.filter.map(to_filter).unwrap_or_default();
        let k = r.k as usize;
        if k == 0 {
            return Err(invalid("k", "must be at least 1"));
        }
        let query = Arc::new(resolved.query);
        let filter = Arc::new(filter);
        // The model excludes what it was trained on (and a folded history); the user's seen set
        // in Redis adds everything since and beyond the history cap. Ask for more than `k`
        // and again for more while seen items crowd out the list.
        let mut want = if r.exclude_seen {
            k + SEEN_MARGIN.max(k / 2)
        } else {
            k
        };
        let items = loop {
            let (s2, q, f) = (s.clone(), query.clone(), filter.clone());
            let exclude = r.exclude_seen;
            let mut items = tokio::task::spawn_blocking(move || {
                s2.recommend_with_sources(&q, want, exclude, &f)
            })
            .await
            .map_err(|e| RankError::Internal(e.to_string()))??;
            if !r.exclude_seen {
                break items;
            }
            let exhausted = items.len() < want;
            let ids: Vec<&str> = items
                .iter()
                .map(|x| s.model.item_ids[x.index as usize].as_str())
                .collect();
            let Some(flags) = self.seen_flags(&[(&r.user_id, ids)]).await else {
                items.truncate(k);
                break items;
            };
            let mut flags = flags.into_iter().flatten();
            items.retain(|_| !flags.next().unwrap_or(false));
            if items.len() >= k || exhausted {
                items.truncate(k);
                break items;
            }
            want = want.saturating_mul(4);
        };
        self.metrics.inc_counter(
            REQUESTS,
            REQUESTS_HELP,
            &[("source", resolved.source.as_str_name())],
            1,
        );
        Ok(RecommendResponse {
            user_id: r.user_id,
            items: Self::recommended(&s, items),
            source: resolved.source as i32,
            model_version: s.model.version.clone(),
        })
    }

    pub async fn recommend_batch(
        &self,
        reqs: Vec<RecommendRequest>,
    ) -> Result<Vec<RecommendResponse>, RankError> {
        let s = self.model()?;
        // Known users with no filter share one blocked scoring pass; the rest go one by one.
        let mut out: Vec<Option<RecommendResponse>> = vec![None; reqs.len()];
        let mut shared: Vec<(usize, u32, usize)> = Vec::new();
        for (n, r) in reqs.iter().enumerate() {
            let plain = r.filter.as_ref().is_none_or(|f| {
                f.include_items.is_empty()
                    && f.exclude_items.is_empty()
                    && f.include_tags.is_empty()
                    && f.exclude_tags.is_empty()
            });
            match s.user(&r.user_id) {
                Some(u) if plain && r.exclude_seen && r.k > 0 => shared.push((n, u, r.k as usize)),
                _ => out[n] = Some(self.recommend(r.clone()).await?),
            }
        }
        if !shared.is_empty() {
            let s2 = s.clone();
            let users: Vec<u32> = shared.iter().map(|x| x.1).collect();
            let k = shared.iter().map(|x| x.2).max().unwrap_or(1);
            let batch_k = k + SEEN_MARGIN.max(k / 2);
            let lists =
                tokio::task::spawn_blocking(move || s2.recommend_known_batch(&users, batch_k))
                    .await
                    .map_err(|e| RankError::Internal(e.to_string()))?;
            let queries: Vec<(&str, Vec<&str>)> = shared
                .iter()
                .zip(&lists)
                .map(|((n, _, _), list)| {
                    let ids = list
                        .iter()
                        .map(|x| s.model.item_ids[x.index as usize].as_str())
                        .collect();
                    (reqs[*n].user_id.as_str(), ids)
                })
                .collect();
            let flags = self.seen_flags(&queries).await;
            drop(queries);
            for (j, ((n, _, k), mut list)) in shared.into_iter().zip(lists).enumerate() {
                let full = list.len() >= batch_k;
                if let Some(f) = flags.as_ref().map(|f| &f[j]) {
                    let mut f = f.iter();
                    list.retain(|_| !f.next().copied().unwrap_or(false));
                    if list.len() < k && full {
                        // Seen items crowded the list out: this one goes the single way,
                        // which asks for more.
                        out[n] = Some(self.recommend(reqs[n].clone()).await?);
                        continue;
                    }
                }
                list.truncate(k);
                out[n] = Some(RecommendResponse {
                    user_id: reqs[n].user_id.clone(),
                    items: Self::recommended(&s, list),
                    source: RecommendationSource::Model as i32,
                    model_version: s.model.version.clone(),
                });
            }
        }
        Ok(out
            .into_iter()
            .map(|r| r.expect("every request answered"))
            .collect())
    }

    /// For each `(user, items)`, which items are in the user's seen set. `None` when Redis does
    /// not answer within [`SEEN_TIMEOUT`]: the model's own record of what each user saw still
    /// applies, and serving from memory goes on while Redis is away (counted in
    /// `recalloc_rank_seen_check_skipped_total`).
    async fn seen_flags(&self, queries: &[(&str, Vec<&str>)]) -> Option<Vec<Vec<bool>>> {
        let mut con = self.con.clone();
        let answer = tokio::time::timeout(
            SEEN_TIMEOUT,
            recalloc_store::seen::seen_among_many(&mut con, queries),
        )
        .await;
        match answer {
            Ok(Ok(flags)) => Some(flags),
            outcome => {
                let reason = match outcome {
                    Ok(Err(e)) => e.to_string(),
                    _ => "timed out".into(),
                };
                tracing::warn!(%reason, "seen-set check skipped: Redis did not answer");
                self.metrics
                    .inc_counter(SEEN_SKIPPED, SEEN_SKIPPED_HELP, &[], 1);
                None
            }
        }
    }

    fn item(&self, s: &Served, id: &str) -> Result<u32, RankError> {
        if id.trim().is_empty() {
            return Err(invalid("item_id", "must not be empty"));
        }
        s.item(id).ok_or_else(|| {
            RankError::NotFound(format!("item {id} is not in model {}", s.model.version))
        })
    }

    fn train_params(&self, algorithm: Algorithm) -> TrainParams {
        TrainParams::from_config(&self.cfg, algorithm)
    }

    /// Trains with the request's parameters (zero = configured default), stores the model as
    /// the new current version and loads it here. One training at a time per cluster.
    pub async fn train(&self, req: TrainRequest) -> Result<TrainResponse, RankError> {
        let algorithm = match v1::Algorithm::try_from(req.algorithm) {
            Ok(v1::Algorithm::Unspecified) => parse_algorithm(&self.cfg.rank.algorithm)
                .ok_or_else(|| {
                    invalid(
                        "rank.algorithm",
                        "is not implicit_als, explicit_mf or hybrid",
                    )
                })?,
            Ok(v1::Algorithm::ExplicitMf) => Algorithm::ExplicitMf,
            Ok(v1::Algorithm::ImplicitAls) => Algorithm::ImplicitAls,
            Ok(v1::Algorithm::Hybrid) => Algorithm::Hybrid,
            Err(_) => return Err(invalid("algorithm", "unknown value")),
        };
        let mut p = self.train_params(algorithm);
        if req.factors > 1024 {
            return Err(invalid("factors", "at most 1024"));
        }
        if req.epochs > 10_000 {
            return Err(invalid("epochs", "at most 10000"));
        }
        for (field, v) in [
            ("regularization", req.regularization),
            ("learning_rate", req.learning_rate),
            ("alpha", req.alpha),
        ] {
            if !v.is_finite() || v < 0.0 {
                return Err(invalid(field, "must be a finite number ≥ 0"));
            }
        }
        if req.factors > 0 {
            p.factors = req.factors as usize;
        }
        if req.epochs > 0 {
            p.iterations = req.epochs as usize;
        }
        if req.regularization > 0.0 {
            p.regularization = req.regularization;
        }
        if req.learning_rate > 0.0 {
            p.learning_rate = req.learning_rate;
        }
        if req.alpha > 0.0 {
            p.alpha = req.alpha;
        }
        let Ok(_local) = self.training.try_lock() else {
            return Err(RankError::Busy);
        };
        let holder = format!("{}-{}", std::process::id(), rand::random::<u64>());
        let Some(lock) = TrainLock::try_acquire(&self.con, &holder).await? else {
            return Err(RankError::Busy);
        };
        let result = self.train_locked(p, &mut self.con.clone()).await;
        lock.release().await;
        result
    }

    async fn train_locked(
        &self,
        p: TrainParams,
        con: &mut RedisConnection,
    ) -> Result<TrainResponse, RankError> {
        let data = recalloc_store::training::training_data(con).await?;
        let now = now_ms();
        let version = format!("{now}-{}", p.algorithm.name());
        let events = data.events;
        let (mut model, fit_seconds) =
            tokio::task::spawn_blocking(move || trainer::train(&data, &p, version, now))
                .await
                .map_err(|e| RankError::Internal(e.to_string()))??;
        model
            .metrics
            .insert(EVENTS_AT_TRAINING.into(), events as f64);
        // Served (and its index) is built before the model becomes current and goes into the slot
        // right after, so this replica's poller finds the new version loaded instead of decoding
        // it and building the index a second time.
        let ann = crate::server::ann_settings(&self.cfg);
        let served = tokio::task::spawn_blocking(move || Served::with_ann(model, &ann))
            .await
            .map_err(|e| RankError::Internal(e.to_string()))?;
        let meta = store::save_model(
            con,
            &served.model,
            self.cfg.rank.chunk_bytes as usize,
            self.cfg.rank.keep_versions as usize,
        )
        .await?;
        tracing::info!(version = %meta.version, algorithm = %meta.algorithm, users = meta.users, items = meta.items, bytes = meta.bytes, fit_seconds, "model trained and stored");
        let info = model_info(&served);
        self.models.store(Some(Arc::new(served)));
        Ok(TrainResponse {
            model: Some(info),
            fit_seconds,
        })
    }
}

/// The model metric that records how many events were applied when its training read the data
/// (the scheduled retrain compares it with the events applied now).
pub const EVENTS_AT_TRAINING: &str = "events_at_training";

pub fn parse_algorithm(s: &str) -> Option<Algorithm> {
    match s {
        "implicit_als" | "implicit" | "als" => Some(Algorithm::ImplicitAls),
        "explicit_mf" | "explicit" | "mf" => Some(Algorithm::ExplicitMf),
        "hybrid" => Some(Algorithm::Hybrid),
        _ => None,
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn to_filter(f: v1::ItemFilter) -> Filter {
    Filter {
        include_items: f.include_items,
        exclude_items: f.exclude_items,
        include_tags: f.include_tags,
        exclude_tags: f.exclude_tags,
    }
}

pub fn model_info(s: &Served) -> ModelInfo {
    let m = &s.model;
    ModelInfo {
        version: m.version.clone(),
        algorithm: match m.algorithm {
            Algorithm::ExplicitMf => v1::Algorithm::ExplicitMf,
            Algorithm::ImplicitAls => v1::Algorithm::ImplicitAls,
            Algorithm::Hybrid => v1::Algorithm::Hybrid,
        } as i32,
        factors: m.factors as u32,
        users: m.users() as u64,
        items: m.items() as u64,
        trained_at_ms: m.trained_at_ms,
        metrics: m.metrics.clone().into_iter().collect(),
    }
}

#[tonic::async_trait]
impl Ranker for RankService {
    async fn recommend(
        &self,
        req: Request<RecommendRequest>,
    ) -> Result<Response<RecommendResponse>, Status> {
        Ok(Response::new(
            RankService::recommend(self, req.into_inner()).await?,
        ))
    }

    async fn recommend_batch(
        &self,
        req: Request<RecommendBatchRequest>,
    ) -> Result<Response<RecommendBatchResponse>, Status> {
        let responses = RankService::recommend_batch(self, req.into_inner().requests).await?;
        Ok(Response::new(RecommendBatchResponse { responses }))
    }

    async fn predict(
        &self,
        req: Request<PredictRequest>,
    ) -> Result<Response<PredictResponse>, Status> {
        let r = req.into_inner();
        let s = self.model()?;
        let item = self.item(&s, &r.item_id)?;
        let resolved = self.resolve(&s, &r.user_id).await?;
        Ok(Response::new(PredictResponse {
            score: s.predict(&resolved.query, item),
            source: resolved.source as i32,
            model_version: s.model.version.clone(),
        }))
    }

    async fn similar_items(
        &self,
        req: Request<SimilarItemsRequest>,
    ) -> Result<Response<SimilarItemsResponse>, Status> {
        let r = req.into_inner();
        let s = self.model()?;
        let item = self.item(&s, &r.item_id)?;
        let s2 = s.clone();
        let items = tokio::task::spawn_blocking(move || s2.similar(item, r.k as usize, r.by_text))
            .await
            .map_err(|e| RankError::Internal(e.to_string()))?
            .map_err(RankError::from)?;
        Ok(Response::new(SimilarItemsResponse {
            items: Self::scored(&s, items),
        }))
    }

    async fn explain(
        &self,
        req: Request<ExplainRequest>,
    ) -> Result<Response<ExplainResponse>, Status> {
        let r = req.into_inner();
        let s = self.model()?;
        let item = self.item(&s, &r.item_id)?;
        let resolved = self.resolve(&s, &r.user_id).await?;
        let history = resolved.history(&s);
        if history.is_empty() {
            return Err(RankError::NotFound(format!(
                "user {} has no history to explain with",
                r.user_id
            ))
            .into());
        }
        let k = if r.k == 0 { 5 } else { r.k as usize };
        let (s2, query) = (s.clone(), resolved.query.clone());
        let (parts, ranked) = tokio::task::spawn_blocking(move || {
            // The ranker's reasons when it is what serves, else the factor model's exact
            // decomposition over the history.
            match s2.explain_ranked(&query, &history, item) {
                Some(e) => (Vec::new(), Some(e)),
                None => (s2.explain(&history, item, k).0, None),
            }
        })
        .await
        .map_err(|e| RankError::Internal(e.to_string()))?;
        let Some(e) = ranked else {
            return Ok(Response::new(ExplainResponse {
                contributions: Self::scored(&s, parts),
                score: s.predict(&resolved.query, item),
                features: Vec::new(),
                sources: Vec::new(),
            }));
        };
        let contributions = e
            .history
            .iter()
            // Only history items that raise the score are reasons for it.
            .filter(|h| h.1 > 0.0)
            .take(k)
            .map(|&(index, score)| Scored { index, score })
            .collect();
        Ok(Response::new(ExplainResponse {
            contributions: Self::scored(&s, contributions),
            score: e.score,
            features: e
                .features
                .iter()
                .map(|&(name, value, contribution)| v1::FeatureContribution {
                    name: name.into(),
                    value,
                    contribution,
                })
                .collect(),
            sources: Source::names(e.sources)
                .into_iter()
                .map(String::from)
                .collect(),
        }))
    }

    async fn get_model_info(
        &self,
        _: Request<GetModelInfoRequest>,
    ) -> Result<Response<ModelInfo>, Status> {
        let s = self.model()?;
        Ok(Response::new(model_info(&s)))
    }

    async fn train(&self, req: Request<TrainRequest>) -> Result<Response<TrainResponse>, Status> {
        Ok(Response::new(
            RankService::train(self, req.into_inner()).await?,
        ))
    }
}

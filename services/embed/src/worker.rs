//! The embed worker: a consumer on the items and users topics that keeps item vectors and user
//! text vectors in Redis, plus a sweep that embeds what Redis knows but has no vector for (after
//! `recalloc rebuild` wiped the state, or a Redis restart), and again what another model embedded
//! (after a model change: vectors of different models never mix).
//!
//! Per batch: decode → ask the store which targets are stale (so a replay costs no inference) →
//! encode them through the same batcher as the API → write (last-writer-wins, idempotent) →
//! commit offsets. A crash before the commit, or a rebalance mid-batch, redelivers records
//! whose vectors are already stored, which then change nothing. The workers are members of the
//! consumer group `embed.group_id` (see [`recalloc_stream::group`]).

use crate::batcher::{BatchError, Priority};
use crate::engine::{EncodeError, Engine};
use rdkafka::consumer::{CommitMode, Consumer};
use recalloc_common::config::Config;
use recalloc_common::{Metrics, Readiness};
use recalloc_proto::topics;
use recalloc_store::vector_store::{Owner, Target, VectorStore};
use recalloc_stream::Record;
use recalloc_stream::consume::{self, Consumed};
use recalloc_stream::group::{self, GroupConsumer};
use recalloc_stream::lag::LagGauges;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

const CONSUMED: &str = "recalloc_embed_records_total";
const CONSUMED_HELP: &str = "records consumed by the embed worker, by topic and outcome";
const GAUGES: LagGauges = LagGauges {
    lag: (
        "recalloc_embed_consumer_lag",
        "messages not yet consumed by the embed worker, per topic and partition held",
    ),
    held: (
        "recalloc_embed_partitions_held",
        "partitions this embed worker holds in its consumer group",
    ),
};
const SWEPT: &str = "recalloc_embed_swept_total";
const SWEPT_HELP: &str =
    "vectors written by the sweep, by reason: entities that had none, or one of another model";

/// The topics the worker reads.
pub const TOPICS: [&str; 2] = [topics::ITEMS, topics::USERS];

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("{0}")]
    Subscribe(String),
    #[error("inference: {0}")]
    Inference(String),
}

/// Encodes targets as background work (callers' requests go first), waiting and retrying while
/// the background queue is full.
async fn encode_patiently(engine: &Engine, texts: Vec<String>) -> Result<Vec<Vec<f32>>, String> {
    let mut backoff = Duration::from_millis(20);
    loop {
        match engine
            .encode_with(Priority::Background, texts.clone())
            .await
        {
            Ok(v) => return Ok(v),
            Err(EncodeError::Batch(BatchError::Overloaded { .. })) => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Embeds whichever targets are stale and stores them. Retries Redis until it answers.
/// Returns how many vectors changed.
pub async fn embed_targets(
    engine: &Engine,
    store: &VectorStore,
    targets: Vec<Target>,
) -> Result<u64, String> {
    if targets.is_empty() {
        return Ok(0);
    }
    let stale = retry_redis(|| store.stale(&targets)).await;
    let todo: Vec<Target> = targets
        .into_iter()
        .zip(stale)
        .filter_map(|(t, s)| s.then_some(t))
        .collect();
    if todo.is_empty() {
        return Ok(0);
    }
    let vecs = encode_patiently(engine, todo.iter().map(|t| t.text.clone()).collect()).await?;
    Ok(retry_redis(|| store.write(&todo, &vecs)).await)
}

async fn retry_redis<T, F, Fut>(mut op: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = redis::RedisResult<T>>,
{
    let mut backoff = Duration::from_millis(100);
    loop {
        match op().await {
            Ok(v) => return v,
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "redis unavailable, retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

fn targets_of(batch: &[Consumed], metrics: &Metrics) -> Vec<Target> {
    let mut out = Vec::new();
    for c in batch {
        let outcome = match &c.record {
            Ok(Record::Item(r)) => r
                .item
                .as_ref()
                .and_then(|i| Target::from_item(i, r.updated_at_ms))
                .map(|t| out.push(t))
                .map_or("no_text", |_| "embedded"),
            Ok(Record::User(r)) => r
                .user
                .as_ref()
                .and_then(|u| Target::from_user(u, r.updated_at_ms))
                .map(|t| out.push(t))
                .map_or("no_text", |_| "embedded"),
            Ok(Record::Event(_)) => "ignored",
            // The featurizer parks undecodable records in the dead-letter list.
            Err(_) => "undecodable",
        };
        metrics.inc_counter(
            CONSUMED,
            CONSUMED_HELP,
            &[("topic", c.topic.as_str()), ("outcome", outcome)],
            1,
        );
    }
    // Within a batch the last record of an id wins (records of one id share a partition, so
    // this is their log order).
    let mut last: BTreeMap<(bool, String), usize> = BTreeMap::new();
    for (i, t) in out.iter().enumerate() {
        last.insert((t.owner == Owner::Item, t.id.clone()), i);
    }
    let keep: std::collections::BTreeSet<usize> = last.into_values().collect();
    out.into_iter()
        .enumerate()
        .filter_map(|(i, t)| keep.contains(&i).then_some(t))
        .collect()
}

/// Runs the consumer and the sweep until `shutdown` resolves, then commits what is stored.
pub async fn run(
    cfg: Config,
    engine: Arc<Engine>,
    store: VectorStore,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), WorkerError> {
    let e = &cfg.embed;
    let consumer: Arc<GroupConsumer> = Arc::new(consume::group_consumer(
        &cfg,
        &e.group_id,
        "recalloc-embed",
    )?);
    tokio::pin!(shutdown);
    if !group::subscribe_when_ready(&consumer, &TOPICS, &readiness, &mut shutdown)
        .await
        .map_err(WorkerError::Subscribe)?
    {
        return Ok(());
    }
    let watcher = tokio::spawn(watch_lag(
        consumer.clone(),
        metrics.clone(),
        readiness.clone(),
    ));
    let sweeper = (e.sweep_interval_s > 0).then(|| {
        tokio::spawn(sweep(
            engine.clone(),
            store.clone(),
            metrics.clone(),
            Duration::from_secs(e.sweep_interval_s as u64),
        ))
    });
    let max = e.consumer_batch.max(1) as usize;
    let result = loop {
        let batch = tokio::select! {
            _ = &mut shutdown => break Ok(()),
            b = consume::next_batch(&consumer, max) => b,
        };
        let batch = match batch {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "kafka receive failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let targets = targets_of(&batch, &metrics);
        match embed_targets(&engine, &store, targets).await {
            Ok(changed) => tracing::debug!(records = batch.len(), changed, "batch embedded"),
            Err(e) => {
                // Inference failing is not something a retry fixes; stop without committing,
                // so a restarted worker redoes the batch.
                tracing::error!(error = %e, "embedding a consumed batch failed");
                break Err(WorkerError::Inference(e));
            }
        }
        let commit = consumer.context().applied(&batch);
        if commit.count() > 0
            && let Err(e) = consumer.commit(&commit, CommitMode::Async)
        {
            tracing::warn!(error = %e, "offset commit failed");
        }
    };
    watcher.abort();
    let _ = watcher.await;
    if let Some(s) = sweeper {
        s.abort();
    }
    if let Some(consumer) = Arc::into_inner(consumer) {
        let _ = tokio::task::spawn_blocking(move || group::leave(consumer)).await;
    }
    result
}

async fn sweep(engine: Arc<Engine>, store: VectorStore, metrics: Arc<Metrics>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        sweep_once(&engine, &store, &metrics).await;
    }
}

/// One sweep: entities without a vector, then those whose vector another model made (re-embedded
/// by this one; the write replaces it since the model is part of the stored sha). Returns how
/// many vectors were written.
pub async fn sweep_once(engine: &Engine, store: &VectorStore, metrics: &Metrics) -> u64 {
    let mut written = 0;
    for reason in ["missing", "other_model"] {
        let todo = match reason {
            "missing" => store.missing().await,
            _ => store.outdated().await,
        };
        let todo = match todo {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "sweep: redis unavailable");
                return written;
            }
        };
        if todo.is_empty() {
            continue;
        }
        tracing::info!(
            entities = todo.len(),
            reason,
            model = %engine.spec().name,
            "sweep: embedding entities without a vector of this model"
        );
        for chunk in todo.chunks(512) {
            match embed_targets(engine, store, chunk.to_vec()).await {
                Ok(n) => {
                    written += n;
                    metrics.inc_counter(SWEPT, SWEPT_HELP, &[("reason", reason)], n)
                }
                Err(e) => tracing::warn!(error = %e, "sweep: embedding failed"),
            }
        }
    }
    written
}

async fn watch_lag(consumer: Arc<GroupConsumer>, metrics: Arc<Metrics>, readiness: Arc<Readiness>) {
    loop {
        recalloc_stream::lag::report_lag(&consumer, &TOPICS, &GAUGES, &metrics, &readiness).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

//! The featurizer: members of the consumer group `featurizer.group_id` over the three topics
//! (see [`recalloc_stream::group`]) that turn the log into Redis state.
//!
//! Order of effects per batch: decode → apply to Redis, each record with its log position in the
//! same script call ([`recalloc_store::derived`]) → commit offsets. A crash anywhere before the
//! commit, or a rebalance that hands a partition over mid-batch, redelivers records whose
//! position Redis already holds, so they change nothing: the effect is exactly once although
//! delivery is at least once. Before consuming, the featurizer checks that Redis was built from
//! the log the broker has ([`recalloc_store::log_position::check`]) and stops, saying so, if not.
//! `rebuild` replays the topics from the beginning into an emptied Redis with the same code.

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use recalloc_common::config::Config;
use recalloc_common::redis_conn::{RedisConfigError, RedisConnection, RedisTarget};
use recalloc_common::{Metrics, Readiness};
use recalloc_proto::topics;
use recalloc_store::deadletter;
use recalloc_store::derived::{self, Applied, Scripts, ToApply};
use recalloc_store::log_position::{self, LogEnds, LogMismatch, LogPosition};
use recalloc_stream::consume::{Consumed, group_consumer, next_batch};
use recalloc_stream::group::{self, GroupConsumer};
use recalloc_stream::lag::LagGauges;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

const APPLIED: &str = "recalloc_featurizer_records_total";
const APPLIED_HELP: &str = "records consumed by the featurizer, by topic and outcome";
const GAUGES: LagGauges = LagGauges {
    lag: (
        "recalloc_featurizer_consumer_lag",
        "messages not yet consumed, per topic and partition held",
    ),
    held: (
        "recalloc_featurizer_partitions_held",
        "partitions this member of the consumer group holds",
    ),
};

#[derive(Debug, thiserror::Error)]
pub enum FeaturizerError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error(transparent)]
    RedisConfig(#[from] RedisConfigError),
    #[error("{0}")]
    Subscribe(String),
    #[error(transparent)]
    LogMismatch(#[from] LogMismatch),
    #[error("kafka: the broker does not tell its cluster id")]
    NoClusterId,
}

/// Whether a batch's records carry their log position into Redis: the live featurizer's do; a
/// rebuild's do not (the live featurizer may be writing positions meanwhile).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Positions {
    Kept,
    NotKept,
}

/// Applies decoded records and parks undecodable ones in the dead-letter list. Retries Redis
/// errors with back-off; returns only when the batch is in Redis.
async fn apply_batch(
    con: &mut RedisConnection,
    scripts: &Scripts,
    batch: &[Consumed],
    positions: Positions,
    metrics: &Metrics,
) -> Result<Applied, FeaturizerError> {
    let records: Vec<ToApply<'_>> = batch
        .iter()
        .filter_map(|c| {
            Some(ToApply {
                record: c.record.as_ref().ok()?,
                produced_ms: c.produced_ms,
                position: (positions == Positions::Kept).then_some(LogPosition {
                    topic: &c.topic,
                    partition: c.partition,
                    offset: c.offset,
                }),
            })
        })
        .collect();
    let mut backoff = Duration::from_millis(100);
    let applied = loop {
        match scripts.apply(con, &records).await {
            Ok(n) => break n,
            Err(e) if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() => {
                tracing::warn!(error = %e, retry_in = ?backoff, "redis unavailable, retrying the batch");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e.into()),
        }
    };
    let mut dead = Vec::new();
    for c in batch {
        let outcome = match &c.record {
            Ok(_) => "applied",
            Err(e) => {
                tracing::warn!(topic = %c.topic, partition = c.partition, offset = c.offset, error = %e, "undecodable record sent to the dead-letter list");
                let entry = serde_json::json!({"topic": c.topic, "partition": c.partition, "offset": c.offset, "error": e.to_string()});
                dead.push(entry.to_string());
                "dead_letter"
            }
        };
        metrics.inc_counter(
            APPLIED,
            APPLIED_HELP,
            &[("topic", c.topic.as_str()), ("outcome", outcome)],
            1,
        );
    }
    deadletter::park(con, &dead).await?;
    if applied.already_applied > 0 {
        metrics.inc_counter(
            APPLIED,
            APPLIED_HELP,
            &[("topic", "all"), ("outcome", "already_applied")],
            applied.already_applied,
        );
    }
    Ok(applied)
}

/// The featurizer process: its HTTP endpoint (metrics, readiness) and [`run`] until `shutdown`
/// resolves; the endpoint stops last.
pub async fn serve(
    cfg: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), recalloc_common::serve::ServeError> {
    let metrics = Metrics::new();
    let readiness = Readiness::new(None, &[]);
    let stop = recalloc_common::serve::Stop::default();
    let (addr, http) = recalloc_common::http::serve(
        cfg.featurizer.metrics_addr,
        metrics.clone(),
        readiness.clone(),
        stop.signal(),
    )
    .await
    .map_err(|source| recalloc_common::serve::BindError {
        addr: cfg.featurizer.metrics_addr,
        source,
    })?;
    tracing::info!(%addr, group = %cfg.featurizer.group_id, "featurizer starting");
    let http = tokio::spawn(http);
    let result = run(cfg, metrics, readiness, shutdown).await;
    stop.stop();
    let _ = http.await;
    result.map_err(|e| recalloc_common::serve::ServeError::dependency("featurizer", e))?;
    tracing::info!("featurizer stopped");
    Ok(())
}

/// Runs the featurizer until `shutdown` resolves, then commits what it applied and leaves the
/// group (so its partitions move at once instead of after the session timeout).
pub async fn run(
    cfg: Config,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), FeaturizerError> {
    let redis_target = RedisTarget::from_config(&cfg.redis)?;
    let consumer: Arc<GroupConsumer> = Arc::new(group_consumer(
        &cfg,
        &cfg.featurizer.group_id,
        "recalloc-featurizer",
    )?);
    tokio::pin!(shutdown);
    let mut con = recalloc_common::serve::connect_redis(&redis_target, &readiness).await;
    let checked = tokio::select! {
        _ = &mut shutdown => return Ok(()),
        r = wait_for_log(&consumer, &mut con, &readiness) => r,
    };
    checked?;
    if !group::subscribe_when_ready(&consumer, &topics::ALL, &readiness, &mut shutdown)
        .await
        .map_err(FeaturizerError::Subscribe)?
    {
        return Ok(());
    }
    let watcher = tokio::spawn(watch_dependencies(
        consumer.clone(),
        con.clone(),
        metrics.clone(),
        readiness.clone(),
    ));
    let scripts = Scripts::new(cfg.featurizer.history_len, cfg.featurizer.dedup_window_s);
    let max = cfg.featurizer.batch_size.max(1) as usize;
    let result = loop {
        let batch = tokio::select! {
            _ = &mut shutdown => break Ok(()),
            b = next_batch(&consumer, max) => b,
        };
        let batch = match batch {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "kafka receive failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        // Finish the batch even if shutdown arrives meanwhile: stopping between apply and
        // commit would only cause a harmless redelivery, but finishing keeps shutdown clean.
        let applied = match apply_batch(&mut con, &scripts, &batch, Positions::Kept, &metrics).await
        {
            Ok(a) => a,
            Err(e) => break Err(e),
        };
        tracing::debug!(
            records = batch.len(),
            new_events = applied.new_events,
            already_applied = applied.already_applied,
            "batch applied"
        );
        let commit = consumer.context().applied(&batch);
        if commit.count() > 0
            && let Err(e) = consumer.commit(&commit, CommitMode::Async)
        {
            // Not fatal: the next commit covers these offsets, and redelivery is harmless.
            tracing::warn!(error = %e, "offset commit failed");
        }
    };
    readiness.set(false).await;
    watcher.abort();
    let _ = watcher.await;
    tracing::info!("featurizer stopping: committing the applied offsets and leaving the group");
    if let Some(consumer) = Arc::into_inner(consumer) {
        let _ = tokio::task::spawn_blocking(move || group::leave(consumer)).await;
    }
    result
}

/// Waits until Redis and the broker answer and checks that the state in Redis was built from
/// this log ([`log_position::check`]). A mismatch is returned: consuming would skip the new
/// log's first records as already applied.
async fn wait_for_log(
    consumer: &Arc<GroupConsumer>,
    con: &mut RedisConnection,
    readiness: &Readiness,
) -> Result<(), FeaturizerError> {
    loop {
        let c = consumer.clone();
        let ends = tokio::task::spawn_blocking(move || log_ends(&c))
            .await
            .unwrap_or_else(|e| Err(format!("log end task: {e}")));
        let (cluster_id, ends) = match ends {
            Ok(v) => v,
            Err(e) => {
                readiness.record("kafka", Err(e)).await;
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        match log_position::check(con, &cluster_id, &ends).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(mismatch)) => {
                tracing::error!(error = %mismatch, "the state in Redis does not come from this log");
                readiness.record("kafka", Err(mismatch.to_string())).await;
                return Err(mismatch.into());
            }
            Err(e) => {
                readiness.record("redis", Err(e.to_string())).await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// The broker's cluster id and the end offset of every partition of the featurizer's topics.
fn log_ends(consumer: &GroupConsumer) -> Result<(String, LogEnds), String> {
    let timeout = Duration::from_secs(10);
    group::topics_exist(consumer, &topics::ALL)?;
    let cluster_id = consumer
        .client()
        .fetch_cluster_id(timeout)
        .ok_or_else(|| FeaturizerError::NoClusterId.to_string())?;
    let md = consumer
        .fetch_metadata(None, timeout)
        .map_err(|e| format!("kafka: {e}"))?;
    let mut ends = BTreeMap::new();
    for t in md
        .topics()
        .iter()
        .filter(|t| topics::ALL.contains(&t.name()))
    {
        for p in t.partitions() {
            let (_, high) = consumer
                .fetch_watermarks(t.name(), p.id(), timeout)
                .map_err(|e| format!("kafka: end of {} [{}]: {e}", t.name(), p.id()))?;
            ends.insert((t.name().to_owned(), p.id()), high);
        }
    }
    Ok((cluster_id, ends))
}

async fn watch_dependencies(
    consumer: Arc<GroupConsumer>,
    mut con: RedisConnection,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
) {
    loop {
        recalloc_common::serve::check_redis(&mut con, &readiness).await;
        recalloc_stream::lag::report_lag(&consumer, &topics::ALL, &GAUGES, &metrics, &readiness)
            .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Progress of a rebuild.
#[derive(Debug, Clone, Copy, Default)]
pub struct RebuildProgress {
    pub consumed: u64,
    pub total: u64,
    pub new_events: u64,
}

/// Empties the derived state and replays every topic from its first offset up to the end it has
/// now, applying records as the featurizer does. A featurizer running meanwhile is harmless.
pub async fn rebuild(
    cfg: &Config,
    mut progress: impl FnMut(RebuildProgress),
) -> Result<RebuildProgress, FeaturizerError> {
    let mut con = RedisTarget::from_config(&cfg.redis)?.connect().await?;
    let group = format!("recalloc-rebuild-{}", std::process::id());
    let consumer = group_consumer(cfg, &group, "recalloc-rebuild")?;
    let timeout = Duration::from_secs(10);
    let md = consumer.fetch_metadata(None, timeout)?;
    let mut tpl = TopicPartitionList::new();
    let mut end: BTreeMap<(String, i32), i64> = BTreeMap::new();
    let mut total = 0u64;
    for t in md
        .topics()
        .iter()
        .filter(|t| topics::ALL.contains(&t.name()))
    {
        for p in t.partitions() {
            let (low, high) = consumer.fetch_watermarks(t.name(), p.id(), timeout)?;
            if high > low {
                tpl.add_partition_offset(t.name(), p.id(), Offset::Offset(low))?;
                end.insert((t.name().to_owned(), p.id()), high);
                total += (high - low) as u64;
            }
        }
    }
    let cluster_id = consumer
        .client()
        .fetch_cluster_id(timeout)
        .ok_or(FeaturizerError::NoClusterId)?;
    let deleted = derived::wipe(&mut con).await?;
    // The state is this log's from now on (an empty Redis accepts any log).
    log_position::check(&mut con, &cluster_id, &end).await??;
    tracing::info!(deleted, total, "derived state wiped, replaying topics");
    let mut prog = RebuildProgress {
        total,
        ..Default::default()
    };
    progress(prog);
    if end.is_empty() {
        return Ok(prog);
    }
    group::assign_by_hand(&consumer, &tpl)?;
    let scripts = Scripts::new(cfg.featurizer.history_len, cfg.featurizer.dedup_window_s);
    let metrics = Metrics::new();
    while !end.is_empty() {
        let max = cfg.featurizer.batch_size.max(1) as usize;
        let Ok(batch) =
            tokio::time::timeout(Duration::from_secs(15), next_batch(&consumer, max)).await
        else {
            tracing::warn!(
                partitions = end.len(),
                "no more records arrive before the recorded end offsets; rebuild stops here"
            );
            break;
        };
        let mut batch = match batch {
            Ok(b) => b,
            // E.g. one broker of several gone: librdkafka reports it and fetches from the
            // partitions' new leaders; the timeout above ends a replay that makes no progress.
            Err(e) => {
                tracing::warn!(error = %e, "kafka error during the replay; going on");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        // Only what existed when the rebuild started; later records are the featurizer's.
        batch.retain(|c| {
            end.get(&(c.topic.clone(), c.partition))
                .is_some_and(|&high| c.offset < high)
        });
        prog.new_events += apply_batch(&mut con, &scripts, &batch, Positions::NotKept, &metrics)
            .await?
            .new_events;
        prog.consumed += batch.len() as u64;
        for c in &batch {
            let key = (c.topic.clone(), c.partition);
            if end.get(&key).is_some_and(|&high| c.offset + 1 >= high) {
                end.remove(&key);
            }
        }
        progress(prog);
    }
    Ok(prog)
}

//! The featurizer: a consumer group over the three topics that turns the log into Redis state.
//!
//! Partitions are assigned statically and offsets committed to the group `featurizer.group_id`
//! (see [`recalloc_stream::assign`] for why).
//!
//! Order of effects per batch: decode → apply to Redis (idempotent, see
//! [`recalloc_store::derived`]) →
//! commit offsets. A crash anywhere before the commit redelivers the batch, which the per-event
//! guard in Redis then ignores; so the effect is exactly once although delivery is at least once
//! (within the guard's window, `featurizer.dedup_window_s`: see [`recalloc_store::derived`]).
//! `rebuild` replays the topics from the beginning into an emptied Redis with the same code.

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};
use recalloc_common::config::Config;
use recalloc_common::redis_conn::{RedisConfigError, RedisConnection, RedisTarget};
use recalloc_common::{Metrics, Readiness};
use recalloc_proto::topics;
use recalloc_store::deadletter;
use recalloc_store::derived::{self, Scripts};
use recalloc_stream::Record;
use recalloc_stream::assign::{self, Share};
use recalloc_stream::consume::{self, Consumed, consumer_config, next_batch, next_offsets};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

const APPLIED: &str = "recalloc_featurizer_records_total";
const APPLIED_HELP: &str = "records consumed by the featurizer, by topic and outcome";
const LAG: &str = "recalloc_featurizer_consumer_lag";
const LAG_HELP: &str = "messages not yet consumed, per topic and partition";

#[derive(Debug, thiserror::Error)]
pub enum FeaturizerError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error(transparent)]
    RedisConfig(#[from] RedisConfigError),
    #[error("partition assignment: {0}")]
    Assign(String),
}

/// Applies decoded records and parks undecodable ones in the dead-letter list. Retries Redis
/// errors with back-off; returns only when the batch is in Redis.
async fn apply_batch(
    con: &mut RedisConnection,
    scripts: &Scripts,
    batch: &[Consumed],
    metrics: &Metrics,
) -> Result<u64, FeaturizerError> {
    let records: Vec<(&Record, i64)> = batch
        .iter()
        .filter_map(|c| Some((c.record.as_ref().ok()?, c.produced_ms)))
        .collect();
    let mut backoff = Duration::from_millis(100);
    let new_events = loop {
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
    Ok(new_events)
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
    let consumer: Arc<StreamConsumer> =
        Arc::new(consumer_config(&cfg, &cfg.featurizer.group_id, "recalloc-featurizer").create()?);
    let share = Share::new(
        "featurizer",
        cfg.featurizer.replicas,
        cfg.featurizer.replica_index,
    )
    .map_err(FeaturizerError::Assign)?;
    tokio::pin!(shutdown);
    if assign::assign_when_ready(&consumer, &topics::ALL, share, &readiness, &mut shutdown)
        .await
        .map_err(FeaturizerError::Assign)?
        .is_none()
    {
        return Ok(());
    }
    let mut con = recalloc_common::serve::connect_redis(&redis_target, &readiness).await;
    let watcher = tokio::spawn(watch_dependencies(
        consumer.clone(),
        con.clone(),
        metrics.clone(),
        readiness.clone(),
    ));
    let scripts = Scripts::new(cfg.featurizer.history_len, cfg.featurizer.dedup_window_s);
    let max = cfg.featurizer.batch_size.max(1) as usize;
    // Offsets of what is in Redis; committed again synchronously at shutdown. (The consumer's
    // own position may be past a batch that shutdown interrupted before it was applied.)
    let mut applied = consume::Stored::new();
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
        let new_events = match apply_batch(&mut con, &scripts, &batch, &metrics).await {
            Ok(n) => n,
            Err(e) => break Err(e),
        };
        tracing::debug!(records = batch.len(), new_events, "batch applied");
        consume::record_stored(&mut applied, &batch);
        if let Err(e) = consumer.commit(&next_offsets(&batch), CommitMode::Async) {
            // Not fatal: the next commit covers these offsets, and redelivery is harmless.
            tracing::warn!(error = %e, "offset commit failed");
        }
    };
    readiness.set(false).await;
    watcher.abort();
    tracing::info!("featurizer stopping: committing the applied offsets");
    consume::commit_stored(&consumer, &applied);
    result
}

async fn watch_dependencies(
    consumer: Arc<StreamConsumer>,
    mut con: RedisConnection,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
) {
    loop {
        recalloc_common::serve::check_redis(&mut con, &readiness).await;
        recalloc_stream::lag::report_lag(
            &consumer,
            &topics::ALL,
            LAG,
            LAG_HELP,
            &metrics,
            &readiness,
        )
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
    let consumer: StreamConsumer = consumer_config(cfg, &group, "recalloc-rebuild").create()?;
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
    let deleted = derived::wipe(&mut con).await?;
    tracing::info!(deleted, total, "derived state wiped, replaying topics");
    let mut prog = RebuildProgress {
        total,
        ..Default::default()
    };
    progress(prog);
    if end.is_empty() {
        return Ok(prog);
    }
    consumer.assign(&tpl)?;
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
        let mut batch = batch?;
        // Only what existed when the rebuild started; later records are the featurizer's.
        batch.retain(|c| {
            end.get(&(c.topic.clone(), c.partition))
                .is_some_and(|&high| c.offset < high)
        });
        prog.new_events += apply_batch(&mut con, &scripts, &batch, &metrics).await?;
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

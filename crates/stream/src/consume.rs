//! Consuming the topics the way every recalloc consumer does: batches gathered for a short
//! window, offsets committed only after the batch's effect is stored (membership:
//! [`crate::group`]).

use crate::codec;
use crate::group::{GroupConsumer, GroupContext};
use crate::headers::producer_context;
use rdkafka::ClientConfig;
use rdkafka::consumer::Consumer;
use rdkafka::message::{BorrowedMessage, Message};
use recalloc_common::config::Config;
use recalloc_common::trace_context;
use recalloc_proto::Record;
use std::collections::BTreeMap;
use std::time::Duration;

/// Gathers up to this long for a batch once the first message arrived.
const BATCH_WINDOW: Duration = Duration::from_millis(20);

/// One consumed message, decoded or not, and where it came from.
pub struct Consumed {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub record: Result<Record, codec::DecodeError>,
    /// When the message was produced (its Kafka timestamp), in ms since the epoch; 0 when the
    /// broker gives none.
    pub produced_ms: i64,
    /// The message's processing span, a child of the producer's context: open from receipt
    /// until the message is dropped, i.e. until its batch is stored and committed.
    pub span: tracing::Span,
}

fn consumed(m: &BorrowedMessage<'_>) -> Consumed {
    let record = codec::decode(m.topic(), m.payload());
    let span = tracing::info_span!(
        parent: None,
        "consume",
        otel.name = %format_args!("{} process", m.topic()),
        otel.kind = "consumer",
        messaging.system = "kafka",
        messaging.destination.name = m.topic(),
        messaging.destination.partition.id = m.partition(),
        messaging.kafka.offset = m.offset(),
    );
    let (traceparent, tracestate) = producer_context(m.headers());
    trace_context::set_remote_parent(&span, traceparent, tracestate);
    Consumed {
        topic: m.topic().to_owned(),
        partition: m.partition(),
        offset: m.offset(),
        record,
        produced_ms: m.timestamp().to_millis().unwrap_or(0),
        span,
    }
}

/// Receives one batch: waits for the first message, then gathers for [`BATCH_WINDOW`]. Records
/// of partitions revoked meanwhile are dropped (their next owner reads them).
pub async fn next_batch(
    consumer: &GroupConsumer,
    max: usize,
) -> Result<Vec<Consumed>, rdkafka::error::KafkaError> {
    let first = consumer.recv().await?;
    let mut batch = vec![consumed(&first)];
    drop(first);
    let deadline = tokio::time::Instant::now() + BATCH_WINDOW;
    while batch.len() < max {
        match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(Ok(m)) => batch.push(consumed(&m)),
            // The consumer's position is already past what was gathered: hand it on, never
            // drop it (an error here is e.g. the broker going away mid-batch).
            Ok(Err(e)) => {
                tracing::warn!(error = %e, gathered = batch.len(), "kafka error while gathering a batch");
                break;
            }
            Err(_) => break,
        }
    }
    let dropped = consumer.context().retain_assigned(&mut batch);
    if dropped > 0 {
        tracing::info!(
            dropped,
            "records of revoked partitions dropped from the batch"
        );
    }
    Ok(batch)
}

/// A member of `group` (see [`crate::group`]) with manual offset commits, starting from the
/// beginning of a partition without a committed offset.
pub fn group_consumer(
    cfg: &Config,
    group: &str,
    client_id: &str,
) -> Result<GroupConsumer, rdkafka::error::KafkaError> {
    consumer_config(cfg, group, client_id).create_with_context(GroupContext::default())
}

/// The settings of [`group_consumer`].
fn consumer_config(cfg: &Config, group: &str, client_id: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.kafka.brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set(
            "session.timeout.ms",
            cfg.kafka.session_timeout_ms.to_string(),
        )
        // Rebalances move only the partitions that change owner; the others keep being read.
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("client.id", client_id);
    c
}

/// The highest offset per partition whose effect is stored: what a stopping consumer commits.
pub type Stored = BTreeMap<(String, i32), i64>;

/// Notes a batch whose effect is now stored.
pub fn record_stored(stored: &mut Stored, batch: &[Consumed]) {
    for c in batch {
        let e = stored
            .entry((c.topic.clone(), c.partition))
            .or_insert(c.offset);
        *e = (*e).max(c.offset);
    }
}

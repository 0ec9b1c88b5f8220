//! Consuming the topics the way every recalloc consumer does: batches gathered for a short
//! window, offsets committed only after the batch's effect is stored (partitions: [`crate::assign`]).

use crate::codec;
use crate::headers::producer_context;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
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
    let (traceparent, tracestate) = producer_context(m.headers(), record.as_ref().ok());
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

/// The highest offset + 1 per partition of a batch: what to commit after it is applied.
pub fn next_offsets(batch: &[Consumed]) -> TopicPartitionList {
    let mut max: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for c in batch {
        let e = max
            .entry((c.topic.clone(), c.partition))
            .or_insert(c.offset);
        *e = (*e).max(c.offset);
    }
    let mut tpl = TopicPartitionList::new();
    for ((t, p), o) in max {
        let _ = tpl.add_partition_offset(&t, p, Offset::Offset(o + 1));
    }
    tpl
}

/// Receives one batch: waits for the first message, then gathers for [`BATCH_WINDOW`].
pub async fn next_batch(
    consumer: &StreamConsumer,
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
    Ok(batch)
}

/// A consumer with manual offset commits that starts from the beginning of a partition without
/// a committed offset.
pub fn consumer_config(cfg: &Config, group: &str, client_id: &str) -> ClientConfig {
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
        // tansu answers a fetch only after sleeping part of max wait; a short wait keeps the
        // consumer's round trips short without busy polling.
        .set("fetch.wait.max.ms", "100")
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

/// The last step of a stopping consumer: commit what is stored, synchronously, and leave the
/// partitions. (Its position may be past a batch that shutdown interrupted before storing.)
pub fn commit_stored(consumer: &StreamConsumer, stored: &Stored) {
    let mut tpl = TopicPartitionList::new();
    for ((t, p), o) in stored {
        let _ = tpl.add_partition_offset(t, *p, Offset::Offset(o + 1));
    }
    if tpl.count() > 0
        && let Err(e) = consumer.commit(&tpl, rdkafka::consumer::CommitMode::Sync)
    {
        tracing::warn!(error = %e, "final offset commit failed; the next start redelivers, harmlessly");
    }
    let _ = consumer.unassign();
}

//! Consuming the topics the way every recalloc consumer does: a static share of the partitions
//! per replica, batches gathered for a short window, offsets committed only after the batch's
//! effect is stored. Used by the featurizer and the embed workers.
//!
//! Partitions are assigned statically (replica `i` of `n` takes the partitions `p % n == i`) and
//! offsets are committed to the consumer's group. Dynamic group membership is not used because
//! tansu 0.6 never finishes the rebalance after a member dies without leaving: a replacement
//! consumer then waits forever (reproduced with Python `confluent-kafka` too). With static
//! assignment a restarted replica resumes from the committed offsets at once.

use crate::codec;
use crate::state::Record;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Headers, Message, OwnedHeaders};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use recalloc_common::config::Config;
use recalloc_common::trace_context::{self, TRACEPARENT, TRACESTATE};
use std::collections::BTreeMap;
use std::time::Duration;

/// Gathers up to this long for a batch once the first message arrived.
const BATCH_WINDOW: Duration = Duration::from_millis(20);

/// Assigns this replica's share of every topic's partitions, resuming from the committed
/// offsets (or the beginning when there are none).
pub fn assign_partitions(
    consumer: &StreamConsumer,
    topic_names: &[&str],
    replicas: u32,
    index: u32,
) -> Result<usize, String> {
    let md = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .map_err(|e| format!("kafka: {e}"))?;
    let mut tpl = TopicPartitionList::new();
    for &name in topic_names {
        let topic = md
            .topics()
            .iter()
            .find(|t| t.name() == name)
            .filter(|t| !t.partitions().is_empty())
            .ok_or_else(|| {
                format!("kafka: topic {name} does not exist (run `make up` or create it)")
            })?;
        for p in topic.partitions() {
            if p.id() as u32 % replicas == index {
                tpl.add_partition(name, p.id());
            }
        }
    }
    consumer.assign(&tpl).map_err(|e| format!("kafka: {e}"))?;
    Ok(tpl.count())
}

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

/// A header's value as text, if the message has that header and it is UTF-8.
pub fn header_str<'a>(headers: &'a impl Headers, key: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|h| h.key == key)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
}

/// Headers carrying a trace context, for a producer that puts it in headers rather than in the
/// record's `traceparent` field (recalloc's ingest uses the field: see `records.proto`).
pub fn trace_headers(traceparent: &str, tracestate: Option<&str>) -> OwnedHeaders {
    let mut h = OwnedHeaders::new().insert(rdkafka::message::Header {
        key: TRACEPARENT,
        value: Some(traceparent),
    });
    if let Some(s) = tracestate.filter(|s| !s.is_empty()) {
        h = h.insert(rdkafka::message::Header {
            key: TRACESTATE,
            value: Some(s),
        });
    }
    h
}

/// The producer's trace context of a message: a `traceparent` header (what other producers
/// use) if there is one, else the record's `traceparent` field (what ingest writes). Empty when
/// neither: the message then starts a new trace.
pub fn producer_context<'a>(
    headers: Option<&'a impl Headers>,
    record: Option<&'a Record>,
) -> (&'a str, Option<&'a str>) {
    if let Some(h) = headers
        && let Some(tp) = header_str(h, TRACEPARENT)
    {
        return (tp, header_str(h, TRACESTATE));
    }
    (record.map(Record::traceparent).unwrap_or_default(), None)
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

/// Lag per assigned partition: high watermark minus the committed position.
pub fn lag(
    consumer: &StreamConsumer,
    topic_names: &[&str],
) -> Result<BTreeMap<(String, i32), i64>, String> {
    let timeout = Duration::from_secs(3);
    let md = consumer
        .fetch_metadata(None, timeout)
        .map_err(|e| format!("kafka: {e}"))?;
    let known: Vec<&str> = md.topics().iter().map(|t| t.name()).collect();
    if let Some(missing) = topic_names.iter().find(|t| !known.contains(t)) {
        return Err(format!(
            "kafka: topic {missing} does not exist (run `make up` or create it)"
        ));
    }
    let assignment = consumer.assignment().map_err(|e| e.to_string())?;
    let committed = consumer
        .committed_offsets(assignment.clone(), timeout)
        .map_err(|e| e.to_string())?;
    let mut out = BTreeMap::new();
    for el in committed.elements() {
        let (_, high) = consumer
            .fetch_watermarks(el.topic(), el.partition(), timeout)
            .map_err(|e| e.to_string())?;
        let pos = match el.offset() {
            Offset::Offset(o) => o,
            _ => 0,
        };
        out.insert((el.topic().to_owned(), el.partition()), (high - pos).max(0));
    }
    Ok(out)
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

/// One check of the consumer's lag: sets the `gauge` per topic and partition and records the
/// broker in `readiness`.
pub async fn report_lag(
    consumer: &std::sync::Arc<StreamConsumer>,
    topic_names: &'static [&'static str],
    gauge: &'static str,
    help: &'static str,
    metrics: &recalloc_common::Metrics,
    readiness: &recalloc_common::Readiness,
) {
    let c = consumer.clone();
    match tokio::task::spawn_blocking(move || lag(&c, topic_names)).await {
        Ok(Ok(lags)) => {
            for ((topic, partition), lag) in lags {
                let p = partition.to_string();
                metrics.set_gauge(
                    gauge,
                    help,
                    &[("topic", &topic), ("partition", &p)],
                    lag as f64,
                );
            }
            readiness.record("kafka", Ok(())).await;
        }
        Ok(Err(e)) => readiness.record("kafka", Err(e)).await,
        Err(e) => readiness.record("kafka", Err(e.to_string())).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use recalloc_proto::v1::ItemRecord;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const FIELD_TP: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    fn item_with(traceparent: &str) -> Record {
        Record::Item(ItemRecord {
            traceparent: traceparent.into(),
            ..Default::default()
        })
    }

    #[test]
    fn trace_headers_round_trip() {
        let h = trace_headers(TP, Some("vendor=x"));
        assert_eq!(header_str(&h, TRACEPARENT), Some(TP));
        assert_eq!(header_str(&h, TRACESTATE), Some("vendor=x"));
        assert_eq!(producer_context(Some(&h), None), (TP, Some("vendor=x")));
        // No tracestate header for an empty one.
        assert_eq!(trace_headers(TP, Some("")).count(), 1);
    }

    #[test]
    fn header_wins_over_the_record_field_which_is_the_fallback() {
        let rec = item_with(FIELD_TP);
        let h = trace_headers(TP, None);
        assert_eq!(producer_context(Some(&h), Some(&rec)), (TP, None));
        let unrelated = OwnedHeaders::new().insert(rdkafka::message::Header {
            key: "other",
            value: Some("x"),
        });
        assert_eq!(
            producer_context(Some(&unrelated), Some(&rec)),
            (FIELD_TP, None)
        );
        assert_eq!(
            producer_context(None::<&OwnedHeaders>, Some(&rec)),
            (FIELD_TP, None)
        );
        assert_eq!(producer_context(None::<&OwnedHeaders>, None), ("", None));
    }

    #[test]
    fn invalid_header_bytes_are_ignored() {
        let h = OwnedHeaders::new().insert(rdkafka::message::Header {
            key: TRACEPARENT,
            value: Some(&b"\xff\xfe"[..]),
        });
        let rec = item_with(FIELD_TP);
        assert_eq!(header_str(&h, TRACEPARENT), None);
        assert_eq!(producer_context(Some(&h), Some(&rec)), (FIELD_TP, None));
        // A malformed value is ignored where it is parsed: the message starts a new trace.
        let span = tracing::Span::none();
        assert!(!trace_context::set_remote_parent(
            &span,
            "00-nonsense",
            None
        ));
        assert!(trace_context::set_remote_parent(&span, TP, None));
    }
}

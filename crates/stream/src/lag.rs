//! Consumer lag, defined once: a partition's backlog is `high − max(committed, low)`, so a
//! partition without a committed offset counts all its retained records (`high − low`), and a
//! commit below the log start (records deleted by retention) counts only what is still there.

use crate::group::GroupConsumer;
use rdkafka::consumer::{Consumer, ConsumerContext};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::time::Duration;

/// The records of a partition a group has not consumed: `high − max(committed, low)`, never
/// negative. `committed` is `None` when the group has no offset for the partition.
pub fn backlog(low: i64, high: i64, committed: Option<i64>) -> i64 {
    (high - committed.unwrap_or(low).max(low)).max(0)
}

/// A committed offset as [`backlog`] takes it: `None` unless it is a real offset.
pub fn committed_offset(offset: Offset) -> Option<i64> {
    match offset {
        Offset::Offset(o) if o >= 0 => Some(o),
        _ => None,
    }
}

/// The group's committed offset of every partition in `partitions` (`None` where it has none),
/// as (topic, partition, offset); an error names the partition it is about.
pub fn committed_positions<X: ConsumerContext, C: Consumer<X>>(
    consumer: &C,
    partitions: TopicPartitionList,
    timeout: Duration,
) -> Result<Vec<(String, i32, Option<i64>)>, String> {
    let committed = consumer
        .committed_offsets(partitions, timeout)
        .map_err(|e| format!("committed offsets: {e}"))?;
    committed
        .elements()
        .iter()
        .map(|el| match el.error() {
            Err(e) => Err(format!(
                "committed offset of partition {}: {e}",
                el.partition()
            )),
            Ok(()) => Ok((
                el.topic().to_owned(),
                el.partition(),
                committed_offset(el.offset()),
            )),
        })
        .collect()
}

/// Lag ([`backlog`]) per partition assigned to `consumer`.
pub fn lag(
    consumer: &GroupConsumer,
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
        let (low, high) = consumer
            .fetch_watermarks(el.topic(), el.partition(), timeout)
            .map_err(|e| e.to_string())?;
        out.insert(
            (el.topic().to_owned(), el.partition()),
            backlog(low, high, committed_offset(el.offset())),
        );
    }
    Ok(out)
}

/// Gauge names of a consumer's [`report_lag`] (each service prefixes its own).
pub struct LagGauges {
    /// Records not yet consumed, per topic and partition held.
    pub lag: (&'static str, &'static str),
    /// How many partitions this member holds now.
    pub held: (&'static str, &'static str),
}

/// One check of the consumer's lag: sets the gauges and records the broker in `readiness`.
pub async fn report_lag(
    consumer: &std::sync::Arc<GroupConsumer>,
    topic_names: &'static [&'static str],
    gauges: &LagGauges,
    metrics: &recalloc_common::Metrics,
    readiness: &recalloc_common::Readiness,
) {
    let (gauge, help) = gauges.lag;
    metrics.set_gauge(
        gauges.held.0,
        gauges.held.1,
        &[],
        consumer.context().assigned().len() as f64,
    );
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

    #[test]
    fn backlog_counts_from_the_commit_or_the_log_start() {
        // No commit: everything retained.
        assert_eq!(backlog(10, 50, None), 40);
        // A commit inside the log.
        assert_eq!(backlog(10, 50, Some(45)), 5);
        // A commit below the log start (retention deleted records): only what is left.
        assert_eq!(backlog(10, 50, Some(3)), 40);
        // Caught up, or a commit past the end (a recreated topic): nothing.
        assert_eq!(backlog(10, 50, Some(50)), 0);
        assert_eq!(backlog(0, 5, Some(9)), 0);
        assert_eq!(committed_offset(Offset::Invalid), None);
        assert_eq!(committed_offset(Offset::Offset(-1)), None);
        assert_eq!(committed_offset(Offset::Offset(7)), Some(7));
    }
}

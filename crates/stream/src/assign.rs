//! Which partitions a consumer replica reads.
//!
//! Partitions are assigned statically (replica `i` of `n` takes the partitions `p % n == i`) and
//! offsets are committed to the consumer's group. Dynamic group membership is not used because
//! tansu 0.6 never finishes the rebalance after a member dies without leaving: a replacement
//! consumer then waits forever (reproduced with Python `confluent-kafka` too). With static
//! assignment a restarted replica resumes from the committed offsets at once.

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};
use recalloc_common::Readiness;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// A replica's share: `index` of `replicas`. `key` names the config keys in the error
/// (`featurizer` → `featurizer.replica_index`, `featurizer.replicas`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    pub replicas: u32,
    pub index: u32,
}

impl Share {
    pub fn new(key: &str, replicas: u32, index: u32) -> Result<Self, String> {
        let replicas = replicas.max(1);
        if index >= replicas {
            return Err(format!(
                "invalid config key {key}.replica_index: {index} is not below {key}.replicas ({replicas})"
            ));
        }
        Ok(Self { replicas, index })
    }
}

/// Assigns this replica's share of every topic's partitions, resuming from the committed
/// offsets (or the beginning when there are none).
pub fn assign_partitions(
    consumer: &StreamConsumer,
    topic_names: &[&str],
    share: Share,
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
            if p.id() as u32 % share.replicas == share.index {
                tpl.add_partition(name, p.id());
            }
        }
    }
    // Where to start is read here, not left to the assignment: a broker whose group
    // coordinator is not up yet (Kafka creates `__consumer_offsets` at a group's first use)
    // answers NOT_COORDINATOR once, and librdkafka does not ask again for an assignment made
    // by hand, leaving the partitions without a position. An error here is retried by
    // [`assign_when_ready`].
    let committed = crate::lag::committed_positions(consumer, tpl, Duration::from_secs(10))
        .map_err(|e| format!("kafka: {e}"))?;
    let mut start = TopicPartitionList::new();
    for (topic, partition, offset) in committed {
        let from = offset.map_or(Offset::Beginning, Offset::Offset);
        start
            .add_partition_offset(&topic, partition, from)
            .map_err(|e| format!("kafka: {e}"))?;
    }
    consumer.assign(&start).map_err(|e| format!("kafka: {e}"))?;
    Ok(start.count())
}

/// Assigns this replica's share, retrying every second while the broker or the topics are
/// missing (recorded as the `kafka` dependency in `readiness`). `None` when `shutdown` came
/// first.
pub async fn assign_when_ready(
    consumer: &Arc<StreamConsumer>,
    topic_names: &'static [&'static str],
    share: Share,
    readiness: &Readiness,
    shutdown: &mut (impl Future<Output = ()> + Unpin),
) -> Result<Option<usize>, String> {
    loop {
        let c = consumer.clone();
        let assigned =
            tokio::task::spawn_blocking(move || assign_partitions(&c, topic_names, share));
        let result = tokio::select! {
            _ = &mut *shutdown => return Ok(None),
            r = assigned => r.map_err(|e| format!("partition assignment task: {e}"))?,
        };
        match result {
            Ok(n) => {
                tracing::info!(
                    partitions = n,
                    replica = share.index,
                    replicas = share.replicas,
                    "partitions assigned"
                );
                readiness.record("kafka", Ok(())).await;
                return Ok(Some(n));
            }
            Err(e) => {
                readiness.record("kafka", Err(e)).await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_share_names_the_config_key_it_breaks() {
        assert_eq!(
            Share::new("embed", 0, 0),
            Ok(Share {
                replicas: 1,
                index: 0
            })
        );
        let e = Share::new("featurizer", 2, 2).unwrap_err();
        assert!(
            e.contains("featurizer.replica_index: 2 is not below featurizer.replicas (2)"),
            "{e}"
        );
    }
}

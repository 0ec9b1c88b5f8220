//! Membership of a consumer group: every recalloc consumer subscribes to its topics with the
//! cooperative-sticky assignor, so replicas come and go freely and a rebalance moves only the
//! partitions that change owner.
//!
//! What a member commits is only what it applied ([`GroupContext::applied`]): on revocation the
//! applied offsets of the revoked partitions are committed synchronously before the partitions
//! leave (the next owner starts there), and records of a revoked partition that were gathered
//! but not applied are dropped ([`GroupContext::retain_assigned`]). A record delivered twice all
//! the same (a member killed between apply and commit) is recognised by the store, not here.

use crate::consume::{Consumed, Stored};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use recalloc_common::Readiness;
use std::collections::BTreeSet;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// A consumer of a group, with the callbacks of [`GroupContext`].
pub type GroupConsumer = rdkafka::consumer::StreamConsumer<GroupContext>;

/// The rebalance callbacks and what they need: the partitions held now and the offsets applied.
#[derive(Default)]
pub struct GroupContext {
    assigned: Mutex<BTreeSet<(String, i32)>>,
    applied: Mutex<Stored>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere while holding the lock leaves plain data, still consistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn partitions_of(tpl: &TopicPartitionList) -> Vec<(String, i32)> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_owned(), e.partition()))
        .collect()
}

/// The commit of `applied` (highest applied offset per partition) for the partitions in `only`
/// (all of them when `None`): each at its offset + 1, the next record to read.
fn commit_list(applied: &Stored, only: Option<&BTreeSet<(String, i32)>>) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for ((t, p), o) in applied {
        if only.is_none_or(|keep| keep.contains(&(t.clone(), *p))) {
            let _ = tpl.add_partition_offset(t, *p, Offset::Offset(o + 1));
        }
    }
    tpl
}

impl GroupContext {
    /// The partitions this member holds now.
    pub fn assigned(&self) -> BTreeSet<(String, i32)> {
        lock(&self.assigned).clone()
    }

    /// Drops the records of partitions this member no longer holds (revoked while the batch
    /// was being gathered): their next owner reads them from the committed offset. Returns how
    /// many were dropped.
    pub fn retain_assigned(&self, batch: &mut Vec<Consumed>) -> usize {
        let held = lock(&self.assigned);
        let before = batch.len();
        batch.retain(|c| held.contains(&(c.topic.clone(), c.partition)));
        before - batch.len()
    }

    /// Notes a batch whose effect is stored, and returns what to commit for it: its partitions
    /// that this member still holds.
    pub fn applied(&self, batch: &[Consumed]) -> TopicPartitionList {
        let mut applied = lock(&self.applied);
        crate::consume::record_stored(&mut applied, batch);
        let held = lock(&self.assigned);
        let touched: BTreeSet<(String, i32)> = batch
            .iter()
            .map(|c| (c.topic.clone(), c.partition))
            .filter(|k| held.contains(k))
            .collect();
        commit_list(&applied, Some(&touched))
    }

    /// What a stopping member commits: the applied offsets of every partition it holds.
    pub fn final_commit(&self) -> TopicPartitionList {
        let held = lock(&self.assigned);
        commit_list(&lock(&self.applied), Some(&held))
    }
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(revoked) = rebalance else {
            return;
        };
        let revoked: BTreeSet<(String, i32)> = partitions_of(revoked).into_iter().collect();
        let commit = commit_list(&lock(&self.applied), Some(&revoked));
        // Synchronously, as the rebalance waits for it: the next owner must find these offsets.
        // (It runs inside the poll, i.e. in the consumer's `recv`; a rebalance is rare.)
        if commit.count() > 0
            && let Err(e) = consumer.commit(&commit, CommitMode::Sync)
        {
            tracing::warn!(error = %e, "commit on revocation failed; the next owner re-reads what this member applied, and the store skips it");
        }
        let mut held = lock(&self.assigned);
        for k in &revoked {
            held.remove(k);
        }
        let mut applied = lock(&self.applied);
        applied.retain(|k, _| !revoked.contains(k));
        tracing::info!(
            revoked = revoked.len(),
            held = held.len(),
            "partitions revoked"
        );
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(added) => {
                let added = partitions_of(added);
                let mut held = lock(&self.assigned);
                held.extend(added.iter().cloned());
                tracing::info!(
                    added = added.len(),
                    held = held.len(),
                    "partitions assigned"
                );
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance failed"),
        }
    }
}

/// Subscribes `consumer` to `topic_names` once they all exist, retrying every second while the
/// broker or a topic is missing (recorded as the `kafka` dependency in `readiness`). `false`
/// when `shutdown` came first.
pub async fn subscribe_when_ready(
    consumer: &Arc<GroupConsumer>,
    topic_names: &'static [&'static str],
    readiness: &Readiness,
    shutdown: &mut (impl Future<Output = ()> + Unpin),
) -> Result<bool, String> {
    loop {
        let c = consumer.clone();
        let exists = tokio::task::spawn_blocking(move || topics_exist(&*c, topic_names));
        let result = tokio::select! {
            _ = &mut *shutdown => return Ok(false),
            r = exists => r.map_err(|e| format!("topic check task: {e}"))?,
        };
        match result {
            Ok(()) => {
                consumer
                    .subscribe(topic_names)
                    .map_err(|e| format!("kafka: subscribe: {e}"))?;
                tracing::info!(topics = ?topic_names, "subscribed; partitions come with the group's assignment");
                readiness.record("kafka", Ok(())).await;
                return Ok(true);
            }
            Err(e) => {
                readiness.record("kafka", Err(e)).await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Assigns `partitions` by hand, outside the group's assignment (a replay that reads given
/// offsets, such as `recalloc rebuild`), and holds them as if the group had assigned them.
pub fn assign_by_hand(
    consumer: &GroupConsumer,
    partitions: &TopicPartitionList,
) -> Result<(), rdkafka::error::KafkaError> {
    consumer.assign(partitions)?;
    lock(&consumer.context().assigned).extend(partitions_of(partitions));
    Ok(())
}

/// An error naming the first of `topic_names` the broker does not have.
pub fn topics_exist<X: ConsumerContext, C: Consumer<X>>(
    consumer: &C,
    topic_names: &[&str],
) -> Result<(), String> {
    let md = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .map_err(|e| format!("kafka: {e}"))?;
    for &name in topic_names {
        if !md
            .topics()
            .iter()
            .any(|t| t.name() == name && !t.partitions().is_empty())
        {
            return Err(format!(
                "kafka: topic {name} does not exist (run `make up` or create it)"
            ));
        }
    }
    Ok(())
}

/// The end of a member: commits what it applied on the partitions it holds, then leaves the
/// group (so its partitions move at once instead of after the session timeout). Blocks: call
/// it off the async runtime, with the last handle of the consumer.
pub fn leave(consumer: GroupConsumer) {
    let commit = consumer.context().final_commit();
    if commit.count() > 0
        && let Err(e) = consumer.commit(&commit, CommitMode::Sync)
    {
        tracing::warn!(error = %e, "final offset commit failed; the next owner re-reads what this member applied, and the store skips it");
    }
    consumer.unsubscribe();
    // Dropping closes the consumer: it leaves the group and waits until it has.
    drop(consumer);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::DecodeError;

    fn consumed(topic: &str, partition: i32, offset: i64) -> Consumed {
        Consumed {
            topic: topic.into(),
            partition,
            offset,
            record: Err(DecodeError::Empty {
                topic: topic.into(),
            }),
            produced_ms: 0,
            span: tracing::Span::none(),
        }
    }

    fn offsets(tpl: &TopicPartitionList) -> Vec<(String, i32, Offset)> {
        tpl.elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition(), e.offset()))
            .collect()
    }

    #[test]
    fn only_held_partitions_are_kept_and_committed() {
        let cx = GroupContext::default();
        lock(&cx.assigned).extend([("a".to_owned(), 0), ("a".to_owned(), 1)]);
        let mut batch = vec![
            consumed("a", 0, 5),
            consumed("a", 2, 9),
            consumed("a", 1, 3),
        ];
        assert_eq!(cx.retain_assigned(&mut batch), 1);
        assert_eq!(batch.len(), 2);
        let commit = cx.applied(&batch);
        assert_eq!(
            offsets(&commit),
            vec![
                ("a".into(), 0, Offset::Offset(6)),
                ("a".into(), 1, Offset::Offset(4))
            ]
        );
        // A later batch on one partition commits that partition only, at its highest offset.
        let commit = cx.applied(&[consumed("a", 0, 7), consumed("a", 0, 6)]);
        assert_eq!(offsets(&commit), vec![("a".into(), 0, Offset::Offset(8))]);
        // Partition 1 is lost (revoked elsewhere): the final commit leaves it alone.
        lock(&cx.assigned).remove(&("a".to_owned(), 1));
        assert_eq!(
            offsets(&cx.final_commit()),
            vec![("a".into(), 0, Offset::Offset(8))]
        );
    }
}

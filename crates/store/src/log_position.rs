//! Where in the log the derived state is: per partition, the next offset the featurizer's
//! scripts will apply (`{rc}:offsets`, a hash `<topic>/<partition>` → offset), and which log
//! that is (`{rc}:log`, field `cluster_id`: the Kafka cluster's id).
//!
//! The offsets are written by the same script call that applies a record ([`crate::derived`]),
//! so the state and its position never disagree: a record at an offset below the partition's
//! stored one is already in the state and is skipped, whoever delivers it again (a member that
//! was killed before it committed, a revoked member finishing its batch, a redelivery after a
//! broker failover). This holds for any delay; the event-id guard remains for clients that send
//! the same event twice.
//!
//! A log recreated under a kept Redis (a new cluster, or a topic deleted and made again) would
//! have its first records skipped as "applied"; [`check`] finds that before consuming: another
//! cluster id, or a partition whose stored offset is past the end of the log or that no longer
//! exists. The featurizer then stops and says so; `recalloc rebuild` starts the state anew.

use crate::RedisConnection;
use redis::AsyncCommands;
use std::collections::BTreeMap;

pub const OFFSETS: &str = "{rc}:offsets";
pub const LOG: &str = "{rc}:log";
const CLUSTER_ID: &str = "cluster_id";

/// The end offset (high watermark) of each partition, by (topic, partition).
pub type LogEnds = BTreeMap<(String, i32), i64>;

/// A record's place in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogPosition<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
}

impl LogPosition<'_> {
    /// The record's field in [`OFFSETS`].
    pub fn field(&self) -> String {
        field(self.topic, self.partition)
    }
}

fn field(topic: &str, partition: i32) -> String {
    format!("{topic}/{partition}")
}

/// Why the state in Redis does not come from the log the broker has.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogMismatch {
    #[error(
        "the state in Redis was built from Kafka cluster {stored}, but the broker is cluster {now}: the log was recreated (run `recalloc rebuild` to rebuild the state from this log)"
    )]
    ClusterChanged { stored: String, now: String },
    #[error(
        "the state in Redis has applied {topic} [{partition}] up to offset {applied}, but the log ends at {end}: the topic was recreated (run `recalloc rebuild` to rebuild the state from this log)"
    )]
    PartitionBehind {
        topic: String,
        partition: i32,
        applied: i64,
        end: i64,
    },
    #[error(
        "the state in Redis has applied {topic} [{partition}], which the broker does not have: the topic was recreated with fewer partitions (run `recalloc rebuild` to rebuild the state from this log)"
    )]
    PartitionGone { topic: String, partition: i32 },
}

/// Compares what Redis applied with the log: `cluster_id` is the broker's, `ends` the end
/// (high watermark) of every partition of the topics read. Records the cluster id when Redis
/// has none yet (a new state).
pub async fn check(
    con: &mut RedisConnection,
    cluster_id: &str,
    ends: &LogEnds,
) -> redis::RedisResult<Result<(), LogMismatch>> {
    let stored: Option<String> = con.hget(LOG, CLUSTER_ID).await?;
    let applied: BTreeMap<String, i64> = con.hgetall(OFFSETS).await?;
    let verdict = compare(stored.as_deref(), cluster_id, &applied, ends);
    if verdict.is_ok() && stored.is_none() {
        let _: () = con.hset(LOG, CLUSTER_ID, cluster_id).await?;
    }
    Ok(verdict)
}

/// The decision of [`check`]: `stored` is the cluster id Redis recorded, `applied` the
/// [`OFFSETS`] hash.
fn compare(
    stored: Option<&str>,
    cluster_id: &str,
    applied: &BTreeMap<String, i64>,
    ends: &LogEnds,
) -> Result<(), LogMismatch> {
    if let Some(stored) = stored
        && stored != cluster_id
    {
        return Err(LogMismatch::ClusterChanged {
            stored: stored.to_owned(),
            now: cluster_id.to_owned(),
        });
    }
    let ends_by_field: BTreeMap<String, (&str, i32, i64)> = ends
        .iter()
        .map(|((t, p), &end)| (field(t, *p), (t.as_str(), *p, end)))
        .collect();
    let topics: std::collections::BTreeSet<&str> = ends.keys().map(|(t, _)| t.as_str()).collect();
    for (f, &next) in applied {
        match ends_by_field.get(f) {
            Some(&(topic, partition, end)) if next > end => {
                return Err(LogMismatch::PartitionBehind {
                    topic: topic.to_owned(),
                    partition,
                    applied: next - 1,
                    end,
                });
            }
            Some(_) => {}
            None => {
                // Only partitions of the topics checked: a field of another topic is not ours
                // to judge.
                if let Some((topic, partition)) = f.rsplit_once('/')
                    && topics.contains(topic)
                    && let Ok(partition) = partition.parse()
                {
                    return Err(LogMismatch::PartitionGone {
                        topic: topic.to_owned(),
                        partition,
                    });
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ends(list: &[(&str, i32, i64)]) -> BTreeMap<(String, i32), i64> {
        list.iter()
            .map(|&(t, p, e)| ((t.to_owned(), p), e))
            .collect()
    }

    fn applied(list: &[(&str, i64)]) -> BTreeMap<String, i64> {
        list.iter().map(|&(f, o)| (f.to_owned(), o)).collect()
    }

    #[test]
    fn the_same_log_further_on_is_accepted() {
        let e = ends(&[("ev", 0, 100), ("ev", 1, 0)]);
        assert_eq!(compare(None, "c1", &applied(&[]), &e), Ok(()));
        // Applied up to the end, or behind it (the committed offsets lag the state).
        let a = applied(&[("ev/0", 100), ("other/7", 5)]);
        assert_eq!(compare(Some("c1"), "c1", &a, &e), Ok(()));
        assert_eq!(
            compare(Some("c1"), "c1", &applied(&[("ev/0", 40)]), &e),
            Ok(())
        );
    }

    #[test]
    fn a_recreated_log_is_named() {
        let e = ends(&[("ev", 0, 10), ("ev", 1, 0)]);
        assert_eq!(
            compare(Some("old"), "new", &applied(&[]), &e),
            Err(LogMismatch::ClusterChanged {
                stored: "old".into(),
                now: "new".into()
            })
        );
        let behind = compare(Some("c"), "c", &applied(&[("ev/0", 500)]), &e).unwrap_err();
        assert_eq!(
            behind,
            LogMismatch::PartitionBehind {
                topic: "ev".into(),
                partition: 0,
                applied: 499,
                end: 10
            }
        );
        assert!(behind.to_string().contains("recalloc rebuild"), "{behind}");
        assert_eq!(
            compare(None, "c", &applied(&[("ev/3", 1)]), &e),
            Err(LogMismatch::PartitionGone {
                topic: "ev".into(),
                partition: 3
            })
        );
    }
}

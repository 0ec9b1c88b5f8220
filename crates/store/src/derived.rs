//! The state the featurizer derives from the topics — users, items, histories, seen sets, the
//! exactly-once guard, popularity and the global counts — and the scripts that are its only
//! writer. (Layout: the crate's docs.)
//!
//! A user's history list keeps the newest `featurizer.history_len` events (what training reads,
//! default 10,000); the seen set keeps every item the user ever had an event on, without a cap,
//! for `exclude_seen` ([`crate::seen`]). Both change in the same script as the event's guard, so
//! a replayed or duplicated event adds nothing twice.
//!
//! Each record is applied by one Lua script, atomically, behind two guards:
//! * its log position ([`crate::log_position`]): a record below its partition's stored offset is
//!   already in the state and changes nothing; else the offset moves past it in the same step.
//!   This makes a redelivery exactly-once however late it comes — a consumer killed between
//!   apply and commit, a revoked member finishing its batch, a broker failover.
//! * its event id, for a client that sends the same event twice (two records at two offsets):
//!   the id is added to the user's `recent` set first, and if it was already there nothing
//!   else changes, as long as the copy was produced within `featurizer.dedup_window_s` (default
//!   a day) of the first. The guard forgets ids older than that, relative to the produce time
//!   (the Kafka timestamp) of the event being applied, so its memory is one window of ids, and
//!   a replay of the log (`recalloc rebuild`, which keeps no positions since the live
//!   featurizer may be writing meanwhile) decides exactly as the live run did.
//!
//! Items and users are last-writer-wins by `updated_at_ms`, which makes replaying them
//! idempotent too. (Versions before the window kept every id in a set `{rc}:applied:<id>`;
//! nothing reads those now, and `recalloc rebuild` or `redis-cli --scan --pattern
//! '{rc}:applied:*' | xargs redis-cli unlink` frees them.)
//!
//! Why one slot for all of it: an event's script must change the guard and everything it guards
//! in one step — the user, the item, and the global aggregates (`stats`, `popularity`, the id
//! sets) that every event touches. A script's keys must share a slot, so whichever slot holds the
//! global aggregates holds every script's keys. Spreading the state would mean splitting each
//! event into per-shard scripts with a guard per shard (the guard sets are most of the memory, and
//! would double) and summing every count and popularity list over the shards on each read; and
//! the redis client's cluster pipelines must stay in one slot too, so every batched read would
//! fan out per slot. The derived state is a cache of the Kafka topics (`recalloc rebuild`
//! restores it), so one primary with replicas gives the availability; what is large and not
//! needed by the scripts — the trained models' chunks — is spread over the cluster (see the rank
//! crate's `store` module).

use crate::kinds::{kind_name, kind_weight};
use crate::log_position::{self, LogPosition};
use crate::{PREFIX, RedisConnection};
use recalloc_proto::Record;
use recalloc_proto::v1::{EventKind, ItemRecord, UserRecord};

pub const USERS: &str = "{rc}:users";
pub const ITEMS: &str = "{rc}:items";
pub const POPULARITY: &str = "{rc}:popularity";
pub const STATS: &str = "{rc}:stats";

pub fn user_key(user: &str) -> String {
    format!("{{rc}}:user:{user}")
}
pub fn user_history_key(user: &str) -> String {
    format!("{{rc}}:hist:{user}")
}
/// Every item the user ever had an event on (no cap; [`crate::seen`] reads it).
pub fn user_seen_key(user: &str) -> String {
    format!("{{rc}}:seen:{user}")
}
pub fn user_recent_key(user: &str) -> String {
    format!("{{rc}}:recent:{user}")
}
pub fn item_key(item: &str) -> String {
    format!("{{rc}}:item:{item}")
}

// Both scripts start with the log position (see `log_position`): a record below its partition's
// stored offset is already applied (answer 2); else the stored offset moves past it, in the same
// atomic step as the record's effect. An empty field: a replay that keeps no position.
const APPLY_EVENT: &str = r#"
-- KEYS: recent, user, hist, item, users, items, popularity, stats, offsets, seen
-- ARGV: event_id, user_id, item_id, value, ts, is_rating, history_len, hist_entry, weight,
--       produced_ms, window_ms (0 = remember forever), offsets field, offset, next offset
if ARGV[12] ~= '' then
  local next = tonumber(redis.call('HGET', KEYS[9], ARGV[12]) or '0')
  if tonumber(ARGV[13]) < next then return 2 end
  redis.call('HSET', KEYS[9], ARGV[12], ARGV[14])
end
local produced, window = tonumber(ARGV[10]), tonumber(ARGV[11])
if window > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. (produced - window))
end
if redis.call('ZADD', KEYS[1], 'NX', produced, ARGV[1]) == 0 then return 0 end
if window > 0 then redis.call('PEXPIRE', KEYS[1], window) end
local ts = tonumber(ARGV[5])
local function touch(key, field_first, field_last)
  local last = tonumber(redis.call('HGET', key, field_last) or '-1')
  if ts > last then redis.call('HSET', key, field_last, ARGV[5]) end
  if field_first then
    local first = redis.call('HGET', key, field_first)
    if (not first) or ts < tonumber(first) then redis.call('HSET', key, field_first, ARGV[5]) end
  end
end
local function rate(key)
  local n = redis.call('HINCRBY', key, 'ratings', 1)
  local s = redis.call('HINCRBYFLOAT', key, 'rating_sum', ARGV[4])
  redis.call('HSET', key, 'mean_rating', tostring(tonumber(s) / n))
end
redis.call('HINCRBY', KEYS[2], 'events', 1)
touch(KEYS[2], 'first_seen_ms', 'last_seen_ms')
redis.call('HINCRBY', KEYS[4], 'events', 1)
touch(KEYS[4], nil, 'last_event_ms')
if ARGV[6] == '1' then
  rate(KEYS[2]); rate(KEYS[4])
  redis.call('HINCRBY', KEYS[8], 'ratings', 1)
end
redis.call('LPUSH', KEYS[3], ARGV[8])
redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[7]) - 1)
redis.call('SADD', KEYS[10], ARGV[3])
redis.call('SADD', KEYS[5], ARGV[2])
redis.call('SADD', KEYS[6], ARGV[3])
redis.call('ZINCRBY', KEYS[7], ARGV[9], ARGV[3])
redis.call('HINCRBY', KEYS[8], 'events', 1)
return 1
"#;

const UPSERT_ENTITY: &str = r#"
-- KEYS: entity hash, global set, offsets.
-- ARGV: id, updated_at_ms, offsets field, offset, next offset, field1, value1, ...
if ARGV[3] ~= '' then
  local next = tonumber(redis.call('HGET', KEYS[3], ARGV[3]) or '0')
  if tonumber(ARGV[4]) < next then return 2 end
  redis.call('HSET', KEYS[3], ARGV[3], ARGV[5])
end
local prev = tonumber(redis.call('HGET', KEYS[1], 'updated_at_ms') or '-1')
redis.call('SADD', KEYS[2], ARGV[1])
if tonumber(ARGV[2]) < prev then return 0 end
redis.call('HSET', KEYS[1], 'updated_at_ms', ARGV[2])
for i = 6, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
return 1
"#;

/// Loaded scripts; cheap to clone.
#[derive(Clone)]
pub struct Scripts {
    apply_event: redis::Script,
    upsert_entity: redis::Script,
    history_len: u32,
    dedup_window_ms: u64,
}

impl Scripts {
    /// `dedup_window_s`: see [`recalloc_common::config::FeaturizerConfig::dedup_window_s`].
    pub fn new(history_len: u32, dedup_window_s: u64) -> Self {
        Self {
            apply_event: redis::Script::new(APPLY_EVENT),
            upsert_entity: redis::Script::new(UPSERT_ENTITY),
            history_len: history_len.max(1),
            dedup_window_ms: dedup_window_s.saturating_mul(1000),
        }
    }

    /// Applies a batch of decoded records in one pipelined round trip. Returns how many events
    /// were new and how many records were skipped as already applied at their log position.
    pub async fn apply(
        &self,
        con: &mut RedisConnection,
        records: &[ToApply<'_>],
    ) -> redis::RedisResult<Applied> {
        if records.is_empty() {
            return Ok(Applied::default());
        }
        // Make sure the scripts are cached on the server; the pipeline then uses EVALSHA.
        // One command each: a cluster sends SCRIPT LOAD to every primary, a pipeline would not.
        for script in [APPLY_EVENT, UPSERT_ENTITY] {
            let _: String = redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(script)
                .query_async(con)
                .await?;
        }
        let mut pipe = redis::pipe();
        for a in records {
            let (field, offset, next) = match a.position {
                Some(p) => (p.field(), p.offset, p.offset + 1),
                None => (String::new(), 0, 0),
            };
            match a.record {
                Record::Event(e) => {
                    let kind = EventKind::try_from(e.kind).unwrap_or(EventKind::Unspecified);
                    let entry = serde_json::json!({
                        "event_id": e.event_id, "item": e.item_id, "kind": kind_name(kind),
                        "value": e.value, "ts": e.timestamp_ms,
                    })
                    .to_string();
                    let mut inv = self.apply_event.prepare_invoke();
                    inv.key(user_recent_key(&e.user_id))
                        .key(user_key(&e.user_id))
                        .key(user_history_key(&e.user_id))
                        .key(item_key(&e.item_id))
                        .key(USERS)
                        .key(ITEMS)
                        .key(POPULARITY)
                        .key(STATS)
                        .key(log_position::OFFSETS)
                        .key(user_seen_key(&e.user_id))
                        .arg(&e.event_id)
                        .arg(&e.user_id)
                        .arg(&e.item_id)
                        .arg(e.value)
                        .arg(e.timestamp_ms)
                        .arg(if kind == EventKind::Rating { "1" } else { "0" })
                        .arg(self.history_len)
                        .arg(entry)
                        .arg(kind_weight(kind))
                        .arg(a.produced_ms)
                        .arg(self.dedup_window_ms)
                        .arg(&field)
                        .arg(offset)
                        .arg(next);
                    pipe.invoke_script(&inv);
                }
                Record::Item(rec) => {
                    let Some(it) = &rec.item else { continue };
                    let mut inv = self.upsert_entity.prepare_invoke();
                    inv.key(item_key(&it.item_id))
                        .key(ITEMS)
                        .key(log_position::OFFSETS)
                        .arg(&it.item_id)
                        .arg(rec.updated_at_ms)
                        .arg(&field)
                        .arg(offset)
                        .arg(next)
                        .arg("title")
                        .arg(&it.title)
                        .arg("description")
                        .arg(&it.description)
                        .arg("tags")
                        .arg(serde_json::to_string(&it.tags).unwrap_or_default())
                        .arg("attributes")
                        .arg(sorted_json(&it.attributes));
                    pipe.invoke_script(&inv);
                }
                Record::User(rec) => {
                    let Some(u) = &rec.user else { continue };
                    let mut inv = self.upsert_entity.prepare_invoke();
                    inv.key(user_key(&u.user_id))
                        .key(USERS)
                        .key(log_position::OFFSETS)
                        .arg(&u.user_id)
                        .arg(rec.updated_at_ms)
                        .arg(&field)
                        .arg(offset)
                        .arg(next)
                        .arg("profile_text")
                        .arg(&u.profile_text)
                        .arg("attributes")
                        .arg(sorted_json(&u.attributes));
                    pipe.invoke_script(&inv);
                }
            }
        }
        let results: Vec<i64> = pipe.query_async(con).await?;
        let mut out = Applied::default();
        let mut i = 0;
        for a in records {
            if matches!(
                a.record,
                Record::Item(ItemRecord { item: None, .. })
                    | Record::User(UserRecord { user: None, .. })
            ) {
                continue;
            }
            let answer = results.get(i).copied().unwrap_or(0);
            i += 1;
            if answer == 2 {
                out.already_applied += 1;
            } else if answer == 1 && matches!(a.record, Record::Event(_)) {
                out.new_events += 1;
            }
        }
        Ok(out)
    }
}

/// A record to apply: when it was produced (its Kafka timestamp, ms since the epoch) and where
/// it is in the log (`None` for a replay that keeps no position, see [`Scripts::apply`]).
#[derive(Debug, Clone, Copy)]
pub struct ToApply<'a> {
    pub record: &'a Record,
    pub produced_ms: i64,
    pub position: Option<LogPosition<'a>>,
}

/// What [`Scripts::apply`] did with a batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    /// Events applied for the first time.
    pub new_events: u64,
    /// Records skipped because their partition's stored offset was already past them.
    pub already_applied: u64,
}

/// Attributes as JSON with sorted keys, so the same record always writes the same bytes (a
/// `HashMap`'s order differs from one decode to the next).
fn sorted_json(map: &std::collections::HashMap<String, String>) -> String {
    let sorted: std::collections::BTreeMap<&String, &String> = map.iter().collect();
    serde_json::to_string(&sorted).unwrap_or_default()
}

/// Deletes every key derived from the topics (all of `{rc}:*` but the models), for a rebuild.
/// Vectors go too; the embed service's sweep re-embeds the rebuilt items and users.
pub async fn wipe(con: &mut RedisConnection) -> redis::RedisResult<u64> {
    let keys: Vec<String> = con
        .scan_match(&format!("{PREFIX}*"))
        .await?
        .into_iter()
        .filter(|k| !k.starts_with(crate::models::MODELS_PREFIX))
        .collect();
    let mut deleted = 0u64;
    // All in the `{rc}` slot, so a batch of them is one command even on a cluster.
    for batch in keys.chunks(1000) {
        let n: u64 = redis::cmd("UNLINK").arg(batch).query_async(con).await?;
        deleted += n;
    }
    Ok(deleted)
}

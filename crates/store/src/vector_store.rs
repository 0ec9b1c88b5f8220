//! Vectors in Redis, written by the embed service only, next to the featurizer's state and in its
//! `{rc}` hash-tag slot (the write script adds to the id set in the same step, and the sweep
//! diffs that set against the featurizer's; [`crate::derived`] says why the state shares one
//! slot):
//!
//! | key | type | content |
//! |---|---|---|
//! | `{rc}:vec:item:<id>` | hash | `v` ([`VECTOR_FIELD`]: the encoded vector, see [`crate::vectors`]), `sha` (of model + text), `model`, `updated_at_ms` |
//! | `{rc}:vec:user:<id>` | hash | the same, for the user's profile text |
//! | `{rc}:vec:items`, `{rc}:vec:users` | set | ids that have a vector (what `recalloc stats` counts) |
//! | `{rc}:vec:model` | string | [`VECTOR_MODEL`]: the model every stored vector is known to be of (set by a sweep that found no other; any write of another model deletes it) |
//!
//! Writes are last-writer-wins by the record's `updated_at_ms`, and a write whose text and model
//! are already stored changes nothing, so replays and duplicates are harmless; the worker asks
//! [`VectorStore::stale`] first so a replay costs no inference.
//!
//! Vectors of different models never mix: readers here return only vectors of the store's own
//! model ([`VectorStore::item_vectors`], [`VectorStore::user_text_vector`]), a model change is
//! re-embedded in the background by the sweep ([`VectorStore::outdated`]), and training reads one
//! model's vectors ([`crate::training`]).

use crate::RedisConnection;
use crate::derived::{self, item_key, user_key};
use crate::history::{self, HistoryEntry};
use crate::vectors::{self, Encoding};
use recalloc_proto::v1::{Item, User};
use sha2::{Digest, Sha256};

/// Ids with a stored vector.
pub const VECTOR_ITEMS: &str = "{rc}:vec:items";
pub const VECTOR_USERS: &str = "{rc}:vec:users";
/// The field of a vector hash that holds the encoded vector.
pub const VECTOR_FIELD: &str = "v";
/// The field of a vector hash that names the model that made it.
pub const MODEL_FIELD: &str = "model";
/// The model every stored vector is known to be of (see [`VectorStore::outdated`]).
pub const VECTOR_MODEL: &str = "{rc}:vec:model";

pub fn item_vector_key(item: &str) -> String {
    format!("{{rc}}:vec:item:{item}")
}
pub fn user_vector_key(user: &str) -> String {
    format!("{{rc}}:vec:user:{user}")
}

/// The stored vectors under `keys` (`None` where there is none or it does not decode), in one
/// round trip.
pub async fn read_vectors(
    con: &mut RedisConnection,
    keys: &[String],
) -> redis::RedisResult<Vec<Option<Vec<f32>>>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for k in keys {
        pipe.cmd("HGET").arg(k).arg(VECTOR_FIELD);
    }
    let raw: Vec<Option<Vec<u8>>> = pipe.query_async(con).await?;
    Ok(raw
        .into_iter()
        .map(|b| b.and_then(|b| vectors::decode(&b).ok()))
        .collect())
}

/// The stored vectors under `keys` that `model` made (`None` where there is none, it does not
/// decode or another model made it), in one round trip.
pub async fn read_vectors_of(
    con: &mut RedisConnection,
    keys: &[String],
    model: &str,
) -> redis::RedisResult<Vec<Option<Vec<f32>>>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for k in keys {
        pipe.cmd("HMGET").arg(k).arg(VECTOR_FIELD).arg(MODEL_FIELD);
    }
    let raw: Vec<(Option<Vec<u8>>, Option<String>)> = pipe.query_async(con).await?;
    Ok(raw
        .into_iter()
        .map(|(b, m)| {
            b.filter(|_| m.as_deref() == Some(model))
                .and_then(|b| vectors::decode(&b).ok())
        })
        .collect())
}

/// A user's text vector, if the embed service made one (of whichever model).
pub async fn user_text_vector(
    con: &mut RedisConnection,
    user: &str,
) -> redis::RedisResult<Option<Vec<f32>>> {
    Ok(read_vectors(con, &[user_vector_key(user)])
        .await?
        .pop()
        .flatten())
}

/// The text an item is embedded from: title, description and tags, each when present.
pub fn item_text(title: &str, description: &str, tags: &[String]) -> String {
    let tags = tags
        .iter()
        .map(|t| t.trim())
        .filter(|t| !t.is_empty())
        .collect::<Vec<_>>()
        .join(", ");
    [title.trim(), description.trim(), tags.as_str()]
        .into_iter()
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join(". ")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    Item,
    User,
}

/// Something to embed: whose vector, from which text, as of when.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub owner: Owner,
    pub id: String,
    pub text: String,
    pub updated_at_ms: i64,
}

impl Target {
    pub fn from_item(item: &Item, updated_at_ms: i64) -> Option<Self> {
        let text = item_text(&item.title, &item.description, &item.tags);
        (!text.is_empty() && !item.item_id.is_empty()).then(|| Self {
            owner: Owner::Item,
            id: item.item_id.clone(),
            text,
            updated_at_ms,
        })
    }

    pub fn from_user(user: &User, updated_at_ms: i64) -> Option<Self> {
        let text = user.profile_text.trim();
        (!text.is_empty() && !user.user_id.is_empty()).then(|| Self {
            owner: Owner::User,
            id: user.user_id.clone(),
            text: text.to_owned(),
            updated_at_ms,
        })
    }

    fn key(&self) -> String {
        match self.owner {
            Owner::Item => item_vector_key(&self.id),
            Owner::User => user_vector_key(&self.id),
        }
    }

    fn set(&self) -> &'static str {
        match self.owner {
            Owner::Item => VECTOR_ITEMS,
            Owner::User => VECTOR_USERS,
        }
    }
}

/// What identifies a stored vector's input: the model and the exact text.
pub fn text_sha(model: &str, text: &str) -> String {
    let mut h = Sha256::new();
    h.update(model.as_bytes());
    h.update([0]);
    h.update(text.as_bytes());
    h.finalize()[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

const WRITE_VECTOR: &str = r#"
-- KEYS: vector hash, id set, the verified model. ARGV: id, encoded vector, sha, updated_at_ms,
-- model, vector field
local prev = redis.call('HMGET', KEYS[1], 'updated_at_ms', 'sha')
redis.call('SADD', KEYS[2], ARGV[1])
if prev[1] and tonumber(ARGV[4]) < tonumber(prev[1]) then return 0 end
if prev[2] == ARGV[3] and tonumber(ARGV[4]) == tonumber(prev[1]) then return 0 end
local verified = redis.call('GET', KEYS[3])
if verified and verified ~= ARGV[5] then redis.call('DEL', KEYS[3]) end
redis.call('HSET', KEYS[1], ARGV[6], ARGV[2], 'sha', ARGV[3], 'updated_at_ms', ARGV[4], 'model', ARGV[5])
return 1
"#;

/// The targets (id, text, time) of `ids` from the featurizer's entity hashes; ids without text
/// are left out.
async fn targets_of(
    con: &mut RedisConnection,
    owner: Owner,
    ids: &[String],
) -> redis::RedisResult<Vec<Target>> {
    let mut out = Vec::new();
    for chunk in ids.chunks(1000) {
        let mut pipe = redis::pipe();
        for id in chunk {
            match owner {
                Owner::Item => pipe
                    .cmd("HMGET")
                    .arg(item_key(id))
                    .arg("updated_at_ms")
                    .arg("title")
                    .arg("description")
                    .arg("tags"),
                Owner::User => pipe
                    .cmd("HMGET")
                    .arg(user_key(id))
                    .arg("updated_at_ms")
                    .arg("profile_text"),
            };
        }
        let rows: Vec<Vec<Option<String>>> = pipe.query_async(con).await?;
        for (id, row) in chunk.iter().zip(rows) {
            let get = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
            let at = get(0).parse().unwrap_or(0);
            let target = match owner {
                Owner::Item => Target::from_item(
                    &Item {
                        item_id: id.clone(),
                        title: get(1),
                        description: get(2),
                        tags: serde_json::from_str(&get(3)).unwrap_or_default(),
                        ..Default::default()
                    },
                    at,
                ),
                Owner::User => Target::from_user(
                    &User {
                        user_id: id.clone(),
                        profile_text: get(1),
                        ..Default::default()
                    },
                    at,
                ),
            };
            out.extend(target);
        }
    }
    Ok(out)
}

#[derive(Clone)]
pub struct VectorStore {
    con: RedisConnection,
    write: redis::Script,
    encoding: Encoding,
    model: String,
}

impl VectorStore {
    pub fn new(con: RedisConnection, encoding: Encoding, model: &str) -> Self {
        Self {
            con,
            write: redis::Script::new(WRITE_VECTOR),
            encoding,
            model: model.to_owned(),
        }
    }

    pub fn connection(&self) -> RedisConnection {
        self.con.clone()
    }

    /// For each target: does it need (re-)encoding? No when a vector of the same model and text
    /// is stored, or a newer one is.
    pub async fn stale(&self, targets: &[Target]) -> redis::RedisResult<Vec<bool>> {
        if targets.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for t in targets {
            pipe.cmd("HMGET")
                .arg(t.key())
                .arg("sha")
                .arg("updated_at_ms");
        }
        let stored: Vec<(Option<String>, Option<i64>)> =
            pipe.query_async(&mut self.con.clone()).await?;
        Ok(targets
            .iter()
            .zip(stored)
            .map(|(t, (sha, at))| match (sha, at) {
                (Some(sha), Some(at)) => {
                    t.updated_at_ms > at
                        || (t.updated_at_ms == at && sha != text_sha(&self.model, &t.text))
                }
                _ => true,
            })
            .collect())
    }

    /// Stores vectors (one per target, in order); returns how many changed.
    pub async fn write(&self, targets: &[Target], vecs: &[Vec<f32>]) -> redis::RedisResult<u64> {
        if targets.is_empty() {
            return Ok(0);
        }
        let mut load = redis::cmd("SCRIPT");
        load.arg("LOAD").arg(WRITE_VECTOR);
        let _: String = load.query_async(&mut self.con.clone()).await?;
        let mut pipe = redis::pipe();
        for (t, v) in targets.iter().zip(vecs) {
            let mut inv = self.write.prepare_invoke();
            inv.key(t.key())
                .key(t.set())
                .key(VECTOR_MODEL)
                .arg(&t.id)
                .arg(vectors::encode(v, self.encoding))
                .arg(text_sha(&self.model, &t.text))
                .arg(t.updated_at_ms)
                .arg(&self.model)
                .arg(VECTOR_FIELD);
            pipe.invoke_script(&inv);
        }
        let changed: Vec<i64> = pipe.query_async(&mut self.con.clone()).await?;
        Ok(changed.iter().filter(|&&c| c == 1).count() as u64)
    }

    /// The items' vectors of this store's model (`None` for one another model made).
    pub async fn item_vectors(
        &self,
        items: &[String],
    ) -> redis::RedisResult<Vec<Option<Vec<f32>>>> {
        let keys: Vec<String> = items.iter().map(|i| item_vector_key(i)).collect();
        read_vectors_of(&mut self.con.clone(), &keys, &self.model).await
    }

    /// The user's text vector of this store's model.
    pub async fn user_text_vector(&self, user: &str) -> redis::RedisResult<Option<Vec<f32>>> {
        Ok(
            read_vectors_of(&mut self.con.clone(), &[user_vector_key(user)], &self.model)
                .await?
                .pop()
                .flatten(),
        )
    }

    /// The user's recent history, newest first.
    pub async fn history(&self, user: &str) -> redis::RedisResult<Vec<HistoryEntry>> {
        history::history(&mut self.con.clone(), user, history::SERVING_EVENTS).await
    }

    /// Items and users that Redis knows, with text, but without a vector.
    pub async fn missing(&self) -> redis::RedisResult<Vec<Target>> {
        let mut con = self.con.clone();
        let mut out = Vec::new();
        for owner in [Owner::Item, Owner::User] {
            let (all, with_vector) = match owner {
                Owner::Item => (derived::ITEMS, VECTOR_ITEMS),
                Owner::User => (derived::USERS, VECTOR_USERS),
            };
            let ids: Vec<String> = redis::cmd("SDIFF")
                .arg(all)
                .arg(with_vector)
                .query_async(&mut con)
                .await?;
            out.extend(targets_of(&mut con, owner, &ids).await?);
        }
        Ok(out)
    }

    /// Items and users whose stored vector another model made (after a model change), with
    /// their text, to be embedded again by this store's model. Cheap once everything is of this
    /// model: [`VECTOR_MODEL`] then names it and nothing is scanned. Otherwise it is set to this
    /// model *before* the scan and deleted again when the scan finds work, so a vector of another
    /// model written during or after the scan (whose write deletes it) is never missed.
    pub async fn outdated(&self) -> redis::RedisResult<Vec<Target>> {
        let mut con = self.con.clone();
        let verified: Option<String> = redis::cmd("GET")
            .arg(VECTOR_MODEL)
            .query_async(&mut con)
            .await?;
        if verified.as_deref() == Some(self.model.as_str()) {
            return Ok(Vec::new());
        }
        let _: () = redis::cmd("SET")
            .arg(VECTOR_MODEL)
            .arg(&self.model)
            .query_async(&mut con)
            .await?;
        let mut out = Vec::new();
        for owner in [Owner::Item, Owner::User] {
            let (set, key): (_, fn(&str) -> String) = match owner {
                Owner::Item => (VECTOR_ITEMS, item_vector_key),
                Owner::User => (VECTOR_USERS, user_vector_key),
            };
            let mut ids: Vec<String> = redis::cmd("SMEMBERS")
                .arg(set)
                .query_async(&mut con)
                .await?;
            ids.sort();
            let mut other = Vec::new();
            for chunk in ids.chunks(1000) {
                let mut pipe = redis::pipe();
                for id in chunk {
                    pipe.cmd("HGET").arg(key(id)).arg(MODEL_FIELD);
                }
                let models: Vec<Option<String>> = pipe.query_async(&mut con).await?;
                other.extend(
                    chunk
                        .iter()
                        .zip(models)
                        .filter(|(_, m)| m.as_deref() != Some(self.model.as_str()))
                        .map(|(id, _)| id.clone()),
                );
            }
            out.extend(targets_of(&mut con, owner, &other).await?);
        }
        if !out.is_empty() {
            let _: () = redis::cmd("DEL")
                .arg(VECTOR_MODEL)
                .query_async(&mut con)
                .await?;
        }
        Ok(out)
    }

    /// (items with a vector, users with a vector).
    pub async fn counts(&self) -> redis::RedisResult<(u64, u64)> {
        let mut pipe = redis::pipe();
        pipe.cmd("SCARD").arg(VECTOR_ITEMS);
        pipe.cmd("SCARD").arg(VECTOR_USERS);
        pipe.query_async(&mut self.con.clone()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_text_joins_what_is_present() {
        assert_eq!(
            item_text(
                "Dune",
                " by Frank Herbert ",
                &["sf".into(), " ".into(), "classic".into()]
            ),
            "Dune. by Frank Herbert. sf, classic"
        );
        assert_eq!(item_text("", "", &[]), "");
        assert_eq!(item_text("Only", "", &[]), "Only");
    }

    #[test]
    fn keys_share_the_entity_slot() {
        assert_eq!(item_vector_key("7"), "{rc}:vec:item:7");
        assert_eq!(user_vector_key("u"), "{rc}:vec:user:u");
    }

    #[test]
    fn sha_depends_on_model_and_text() {
        assert_ne!(text_sha("a", "x"), text_sha("b", "x"));
        assert_ne!(text_sha("a", "x"), text_sha("a", "y"));
        assert_eq!(text_sha("a", "x").len(), 24);
    }
}

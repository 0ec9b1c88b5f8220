//! The rank service's Redis: what it trains on (the featurizer's state and the embed service's
//! vectors) and the versioned models it writes.
//!
//! | key | type | content |
//! |---|---|---|
//! | `{rc}:model:current` | string | the version servers load |
//! | `{rc}:model:meta:<version>` | string | JSON: version, algorithm, sizes, chunk count, SHA-256 of the bytes |
//! | `rc:model-chunk:{<version>/<g>}:<n>` | string | the serialised model (postcard), cut into `rank.chunk_bytes` pieces; `g` = `n / 16` |
//! | `{rc}:model:versions` | zset | version → trained_at_ms, for deleting old versions |
//! | `{rc}:model:train-lock` | string | held (SET NX, 30 s expiry renewed every 10 s) while one replica trains |
//!
//! A new version is written completely (pipelined chunks, then meta) before `current` flips to
//! it in one MULTI with the meta and the version list, so a server never sees a half-written
//! model; versions beyond `keep_versions` are deleted afterwards.
//!
//! On a Redis Cluster the bookkeeping keys share the `{rc}` slot (the MULTI needs that), while
//! the chunks — most of the bytes — are spread: each group of 16 chunks, which is what one
//! pipeline writes or reads, has its own hash tag and so its own slot.

use recalloc_common::redis_conn::RedisConnection;
use recalloc_factor::model::Model;
use recalloc_ingest::state::{self, item_key, user_history_key};
use recalloc_ingest::vectors;
use sha2::{Digest, Sha256};

pub const CURRENT: &str = "{rc}:model:current";
pub const VERSIONS: &str = "{rc}:model:versions";
pub const TRAIN_LOCK: &str = "{rc}:model:train-lock";
/// Chunks one pipeline writes or reads; they share a slot.
const CHUNKS_PER_GROUP: usize = 16;
/// Expiry of the training lock; the holder renews it every third of this.
pub const TRAIN_LOCK_TTL_S: u64 = 30;

pub fn meta_key(version: &str) -> String {
    format!("{{rc}}:model:meta:{version}")
}
pub fn chunk_key(version: &str, n: usize) -> String {
    format!("rc:model-chunk:{{{version}/{}}}:{n}", n / CHUNKS_PER_GROUP)
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("model {version} in redis is damaged: {reason}")]
    Damaged { version: String, reason: String },
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Meta {
    pub version: String,
    pub algorithm: String,
    pub users: usize,
    pub items: usize,
    pub factors: usize,
    pub trained_at_ms: i64,
    pub chunks: usize,
    pub bytes: usize,
    pub sha256: String,
}

fn sha_hex(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// Writes a model as a new version and makes it current; deletes versions beyond `keep`.
pub async fn save_model(
    con: &mut RedisConnection,
    model: &Model,
    chunk_bytes: usize,
    keep: usize,
) -> Result<Meta, StoreError> {
    let bytes = postcard::to_allocvec(model).map_err(|e| StoreError::Damaged {
        version: model.version.clone(),
        reason: format!("cannot serialise: {e}"),
    })?;
    let chunk = chunk_bytes.max(1024);
    let meta = Meta {
        version: model.version.clone(),
        algorithm: model.algorithm.name().into(),
        users: model.users(),
        items: model.items(),
        factors: model.factors,
        trained_at_ms: model.trained_at_ms,
        chunks: bytes.len().div_ceil(chunk),
        bytes: bytes.len(),
        sha256: sha_hex(&bytes),
    };
    // Chunks in pipelines of 16 MiB, then the meta, then the flip.
    for (group, pieces) in bytes
        .chunks(chunk)
        .collect::<Vec<_>>()
        .chunks(CHUNKS_PER_GROUP)
        .enumerate()
    {
        let mut pipe = redis::pipe();
        for (j, piece) in pieces.iter().enumerate() {
            pipe.set(
                chunk_key(&meta.version, group * CHUNKS_PER_GROUP + j),
                *piece,
            )
            .ignore();
        }
        pipe.query_async::<()>(con).await?;
    }
    let meta_json = serde_json::to_string(&meta).expect("meta serialises");
    redis::pipe()
        .atomic()
        .set(meta_key(&meta.version), meta_json)
        .ignore()
        .zadd(VERSIONS, &meta.version, meta.trained_at_ms)
        .ignore()
        .set(CURRENT, &meta.version)
        .ignore()
        .query_async::<()>(con)
        .await?;
    prune(con, keep.max(1)).await?;
    Ok(meta)
}

/// Deletes all but the newest `keep` versions (never the current one).
async fn prune(con: &mut RedisConnection, keep: usize) -> Result<(), StoreError> {
    let versions: Vec<String> = redis::cmd("ZREVRANGE")
        .arg(VERSIONS)
        .arg(keep)
        .arg(-1)
        .query_async(con)
        .await?;
    let current: Option<String> = redis::cmd("GET").arg(CURRENT).query_async(con).await?;
    for v in versions {
        if Some(&v) == current.as_ref() {
            continue;
        }
        let meta: Option<String> = redis::cmd("GET").arg(meta_key(&v)).query_async(con).await?;
        let chunks = meta
            .and_then(|m| serde_json::from_str::<Meta>(&m).ok())
            .map_or(0, |m| m.chunks);
        // The chunks first, a group (one slot) per pipeline; then the bookkeeping.
        for start in (0..chunks).step_by(CHUNKS_PER_GROUP) {
            let mut pipe = redis::pipe();
            for n in start..(start + CHUNKS_PER_GROUP).min(chunks) {
                pipe.del(chunk_key(&v, n)).ignore();
            }
            pipe.query_async::<()>(con).await?;
        }
        redis::pipe()
            .del(meta_key(&v))
            .ignore()
            .zrem(VERSIONS, &v)
            .ignore()
            .query_async::<()>(con)
            .await?;
        tracing::info!(version = %v, "old model version deleted");
    }
    Ok(())
}

pub async fn current_version(con: &mut RedisConnection) -> Result<Option<String>, StoreError> {
    Ok(redis::cmd("GET").arg(CURRENT).query_async(con).await?)
}

/// Reads a version's bytes and checks them against its meta.
pub async fn load_bytes(con: &mut RedisConnection, version: &str) -> Result<Vec<u8>, StoreError> {
    let damaged = |reason: String| StoreError::Damaged {
        version: version.to_owned(),
        reason,
    };
    let meta: Option<String> = redis::cmd("GET")
        .arg(meta_key(version))
        .query_async(con)
        .await?;
    let meta: Meta = serde_json::from_str(&meta.ok_or_else(|| damaged("no meta".into()))?)
        .map_err(|e| damaged(format!("meta: {e}")))?;
    let mut bytes = Vec::with_capacity(meta.bytes);
    for start in (0..meta.chunks).step_by(CHUNKS_PER_GROUP) {
        let mut pipe = redis::pipe();
        for n in start..(start + CHUNKS_PER_GROUP).min(meta.chunks) {
            pipe.get(chunk_key(version, n));
        }
        let pieces: Vec<Option<Vec<u8>>> = pipe.query_async(con).await?;
        for (j, p) in pieces.into_iter().enumerate() {
            bytes.extend(p.ok_or_else(|| damaged(format!("chunk {} missing", start + j)))?);
        }
    }
    if bytes.len() != meta.bytes || sha_hex(&bytes) != meta.sha256 {
        return Err(damaged("size or SHA-256 differs from its meta".into()));
    }
    Ok(bytes)
}

pub fn decode_model(version: &str, bytes: &[u8]) -> Result<Model, StoreError> {
    postcard::from_bytes(bytes).map_err(|e| StoreError::Damaged {
        version: version.to_owned(),
        reason: format!("cannot deserialise: {e}"),
    })
}

pub use recalloc_ingest::state::HistoryEntry;

/// A user's recent history, newest first.
pub async fn history(
    con: &mut RedisConnection,
    user: &str,
) -> Result<Vec<HistoryEntry>, StoreError> {
    Ok(state::history(con, user).await?)
}

/// A user's text vector (`{rc}:vec:user:<id>`), if the embed service made one.
pub async fn user_text_vector(
    con: &mut RedisConnection,
    user: &str,
) -> Result<Option<Vec<f32>>, StoreError> {
    let raw: Option<Vec<u8>> = redis::cmd("HGET")
        .arg(state::user_vector_key(user))
        .arg("v")
        .query_async(con)
        .await?;
    Ok(raw.and_then(|b| vectors::decode(&b).ok()))
}

/// One catalogue entry as training reads it.
#[derive(Debug, Clone, Default)]
pub struct CatalogueItem {
    pub id: String,
    pub title: String,
    pub tags: Vec<String>,
    /// The embed service's text vector, when there is one.
    pub vector: Option<Vec<f32>>,
}

/// Everything training reads from Redis.
#[derive(Debug, Default)]
pub struct TrainingData {
    /// (user, history newest first)
    pub histories: Vec<(String, Vec<HistoryEntry>)>,
    pub items: Vec<CatalogueItem>,
    /// Item ids, most popular first.
    pub popular: Vec<String>,
    /// `{rc}:stats` events when the read started (to tell whether a retrain is due).
    pub events: u64,
}

/// Reads users' histories, the catalogue with titles, tags and text vectors, and popularity.
pub async fn training_data(con: &mut RedisConnection) -> Result<TrainingData, StoreError> {
    let events: Option<u64> = redis::cmd("HGET")
        .arg(state::STATS)
        .arg("events")
        .query_async(con)
        .await?;
    let mut users: Vec<String> = redis::cmd("SMEMBERS")
        .arg(state::USERS)
        .query_async(con)
        .await?;
    users.sort();
    let mut items: Vec<String> = redis::cmd("SMEMBERS")
        .arg(state::ITEMS)
        .query_async(con)
        .await?;
    items.sort();
    let mut data = TrainingData {
        events: events.unwrap_or(0),
        ..Default::default()
    };
    for chunk in users.chunks(1000) {
        let mut pipe = redis::pipe();
        for u in chunk {
            pipe.cmd("LRANGE").arg(user_history_key(u)).arg(0).arg(-1);
        }
        let lists: Vec<Vec<String>> = pipe.query_async(con).await?;
        for (u, list) in chunk.iter().zip(lists) {
            let h: Vec<HistoryEntry> = list
                .iter()
                .filter_map(|r| serde_json::from_str(r).ok())
                .collect();
            if !h.is_empty() {
                data.histories.push((u.clone(), h));
            }
        }
    }
    for chunk in items.chunks(1000) {
        let mut pipe = redis::pipe();
        for i in chunk {
            pipe.cmd("HMGET").arg(item_key(i)).arg("title").arg("tags");
            pipe.cmd("HGET").arg(state::item_vector_key(i)).arg("v");
        }
        let rows: Vec<redis::Value> = pipe.query_async(con).await?;
        for (i, pair) in chunk.iter().zip(rows.chunks(2)) {
            let (title, tags): (Option<String>, Option<String>) =
                redis::from_redis_value(&pair[0]).unwrap_or((None, None));
            let vec: Option<Vec<u8>> = redis::from_redis_value(&pair[1]).unwrap_or(None);
            data.items.push(CatalogueItem {
                id: i.clone(),
                title: title.unwrap_or_default(),
                tags: tags
                    .and_then(|t| serde_json::from_str(&t).ok())
                    .unwrap_or_default(),
                vector: vec.and_then(|b| vectors::decode(&b).ok()),
            });
        }
    }
    data.popular = redis::cmd("ZREVRANGE")
        .arg(state::POPULARITY)
        .arg(0)
        .arg(-1)
        .query_async(con)
        .await?;
    Ok(data)
}

//! Trained models in Redis, versioned, and the training lock: written by the rank service only.
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

use crate::RedisConnection;
use sha2::{Digest, Sha256};

/// Keys under this prefix are trained models, not state derived from the topics: a rebuild
/// keeps them, since replaying the log cannot bring them back. (The models' chunks live outside
/// `{rc}`, so a wipe never sees them.)
pub const MODELS_PREFIX: &str = "{rc}:model:";
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

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
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

/// Writes a model's bytes as a new version and makes it current; deletes versions beyond
/// `keep`. `meta` describes the model; its `chunks`, `bytes` and `sha256` are filled in here.
pub async fn save(
    con: &mut RedisConnection,
    mut meta: Meta,
    bytes: &[u8],
    chunk_bytes: usize,
    keep: usize,
) -> Result<Meta, StoreError> {
    let chunk = chunk_bytes.max(1024);
    meta.chunks = bytes.len().div_ceil(chunk);
    meta.bytes = bytes.len();
    meta.sha256 = sha_hex(bytes);
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

/// The cluster-wide training lock, held while this process trains. It lives only while its
/// holder renews it (every third of [`TRAIN_LOCK_TTL_S`]): a trainer killed mid-way frees it
/// within the TTL instead of blocking training until a long expiry. Release it with
/// [`TrainLock::release`]; a dropped lock stops renewing and lapses.
pub struct TrainLock {
    con: RedisConnection,
    token: String,
    keepalive: tokio::task::JoinHandle<()>,
}

const RENEW_LOCK: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
     return redis.call('EXPIRE', KEYS[1], ARGV[2]) end return 0";
const RELEASE_LOCK: &str =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";

impl TrainLock {
    /// Takes the lock if nobody holds it (`None` when someone does). `holder` names this
    /// process in the lock's value (only the holder's value releases or renews it).
    pub async fn try_acquire(
        con: &RedisConnection,
        holder: &str,
    ) -> redis::RedisResult<Option<Self>> {
        let mut con = con.clone();
        let locked: Option<String> = redis::cmd("SET")
            .arg(TRAIN_LOCK)
            .arg(holder)
            .arg("NX")
            .arg("EX")
            .arg(TRAIN_LOCK_TTL_S)
            .query_async(&mut con)
            .await?;
        if locked.is_none() {
            return Ok(None);
        }
        let keepalive = {
            let (mut con, token) = (con.clone(), holder.to_owned());
            tokio::spawn(async move {
                let renew = redis::Script::new(RENEW_LOCK);
                loop {
                    tokio::time::sleep(std::time::Duration::from_secs(TRAIN_LOCK_TTL_S / 3)).await;
                    let _: redis::RedisResult<i64> = renew
                        .key(TRAIN_LOCK)
                        .arg(&token)
                        .arg(TRAIN_LOCK_TTL_S)
                        .invoke_async(&mut con)
                        .await;
                }
            })
        };
        Ok(Some(Self {
            con,
            token: holder.to_owned(),
            keepalive,
        }))
    }

    /// Stops renewing and deletes the lock if this process still holds it.
    pub async fn release(mut self) {
        self.keepalive.abort();
        let _: redis::RedisResult<i64> = redis::Script::new(RELEASE_LOCK)
            .key(TRAIN_LOCK)
            .arg(&self.token)
            .invoke_async(&mut self.con)
            .await;
    }
}

impl Drop for TrainLock {
    fn drop(&mut self) {
        self.keepalive.abort();
    }
}

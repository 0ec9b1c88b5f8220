//! Reading a user's history list (`{rc}:hist:<id>`, written by [`crate::derived`]).

use crate::RedisConnection;
use crate::derived::user_history_key;

/// One entry of a user's `hist` list, as the featurizer writes it.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct HistoryEntry {
    pub item: String,
    pub kind: String,
    #[serde(default)]
    pub value: f64,
    #[serde(default)]
    pub ts: i64,
}

/// How many of a user's newest events serving reads (fold-in, the fused profile): the list
/// keeps up to `featurizer.history_len` (default 10,000) for training, but an answer at request
/// time needs only the recent ones, and reading 10,000 per request would cost more than the
/// scoring. (Seen items beyond these come from the seen set, [`crate::seen`].)
pub const SERVING_EVENTS: usize = 1_000;

/// A user's newest `newest` history events, newest first (entries that do not parse are
/// skipped).
pub async fn history(
    con: &mut RedisConnection,
    user: &str,
    newest: usize,
) -> redis::RedisResult<Vec<HistoryEntry>> {
    let raw: Vec<String> = redis::cmd("LRANGE")
        .arg(user_history_key(user))
        .arg(0)
        .arg(newest.max(1) as i64 - 1)
        .query_async(con)
        .await?;
    Ok(raw
        .iter()
        .filter_map(|r| serde_json::from_str(r).ok())
        .collect())
}

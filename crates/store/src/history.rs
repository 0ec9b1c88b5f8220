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

/// A user's recent history, newest first (entries that do not parse are skipped).
pub async fn history(
    con: &mut RedisConnection,
    user: &str,
) -> redis::RedisResult<Vec<HistoryEntry>> {
    let raw: Vec<String> = redis::cmd("LRANGE")
        .arg(user_history_key(user))
        .arg(0)
        .arg(-1)
        .query_async(con)
        .await?;
    Ok(raw
        .iter()
        .filter_map(|r| serde_json::from_str(r).ok())
        .collect())
}

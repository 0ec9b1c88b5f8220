//! The dead-letter list `{rc}:deadletter`: the newest records the featurizer could not decode
//! or apply, as JSON, so an operator can see what was skipped without reading the log.

use crate::RedisConnection;

pub const DEADLETTER: &str = "{rc}:deadletter";
/// How many entries the list keeps (the newest).
pub const KEEP: isize = 1000;

/// Adds entries (newest last in `entries`, so newest first in the list) and trims the list to
/// [`KEEP`], in one round trip. Nothing to add costs nothing.
pub async fn park(con: &mut RedisConnection, entries: &[String]) -> redis::RedisResult<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    for e in entries {
        pipe.lpush(DEADLETTER, e).ignore();
    }
    pipe.ltrim(DEADLETTER, 0, KEEP - 1).ignore();
    pipe.query_async(con).await
}

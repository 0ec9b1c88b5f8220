//! Reading a user's seen set (`{rc}:seen:<id>`, written by [`crate::derived`]'s event script):
//! every item the user ever had an event on, however long ago and whatever
//! `featurizer.history_len` keeps in the history list. Rank checks the candidates of an
//! `exclude_seen` request against it, so items read after the model was trained, or beyond the
//! history cap, are excluded too.
//!
//! The set has no cap: a user costs one member per distinct item (measured in bench/results.md,
//! "Redis memory per event"). `recalloc rebuild` wipes and replays it with the rest of the
//! derived state. A state written before the seen sets existed has none until it is rebuilt;
//! a missing set reads as "nothing seen" (the model's own record of what it trained on still
//! applies).

use crate::RedisConnection;
use crate::derived::user_seen_key;

/// For each of `items`, whether `user` has had an event on it (one `SMISMEMBER`; no call for
/// an empty list).
pub async fn seen_among<S: AsRef<str>>(
    con: &mut RedisConnection,
    user: &str,
    items: &[S],
) -> redis::RedisResult<Vec<bool>> {
    if items.is_empty() {
        return Ok(Vec::new());
    }
    let mut cmd = redis::cmd("SMISMEMBER");
    cmd.arg(user_seen_key(user));
    for i in items {
        cmd.arg(i.as_ref());
    }
    cmd.query_async(con).await
}

/// [`seen_among`] for many users in one pipelined round trip: one answer list per
/// `(user, items)`, in order.
pub async fn seen_among_many<S: AsRef<str>>(
    con: &mut RedisConnection,
    queries: &[(&str, Vec<S>)],
) -> redis::RedisResult<Vec<Vec<bool>>> {
    let mut pipe = redis::pipe();
    let mut asked = 0;
    for (user, items) in queries {
        if items.is_empty() {
            continue;
        }
        let cmd = pipe.cmd("SMISMEMBER").arg(user_seen_key(user));
        for i in items {
            cmd.arg(i.as_ref());
        }
        asked += 1;
    }
    let mut answers: std::vec::IntoIter<Vec<bool>> = if asked == 0 {
        Vec::new().into_iter()
    } else {
        pipe.query_async::<Vec<Vec<bool>>>(con).await?.into_iter()
    };
    Ok(queries
        .iter()
        .map(|(_, items)| {
            if items.is_empty() {
                Vec::new()
            } else {
                answers.next().unwrap_or_else(|| vec![false; items.len()])
            }
        })
        .collect())
}

/// How many distinct items `user` has had events on.
pub async fn seen_count(con: &mut RedisConnection, user: &str) -> redis::RedisResult<u64> {
    redis::cmd("SCARD")
        .arg(user_seen_key(user))
        .query_async(con)
        .await
}

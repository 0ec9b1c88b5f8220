//! The counts `recalloc stats` prints and the rank service's retrain check read: one round
//! trip over the derived state's aggregates and the vector id sets.

use crate::RedisConnection;
use crate::derived::{ITEMS, STATS, USERS};
use crate::vector_store::{VECTOR_ITEMS, VECTOR_USERS};

/// Counts the CLI's `stats` prints.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Counts {
    pub events: u64,
    pub ratings: u64,
    pub users: u64,
    pub items: u64,
    pub embedded_items: u64,
    pub embedded_users: u64,
}

/// Reads the counts in one round trip.
pub async fn counts(con: &mut RedisConnection) -> redis::RedisResult<Counts> {
    let (events, ratings, users, items, embedded_items, embedded_users): (
        Option<u64>,
        Option<u64>,
        u64,
        u64,
        u64,
        u64,
    ) = redis::pipe()
        .hget(STATS, "events")
        .hget(STATS, "ratings")
        .scard(USERS)
        .scard(ITEMS)
        .scard(VECTOR_ITEMS)
        .scard(VECTOR_USERS)
        .query_async(con)
        .await?;
    Ok(Counts {
        events: events.unwrap_or(0),
        ratings: ratings.unwrap_or(0),
        users,
        items,
        embedded_items,
        embedded_users,
    })
}

/// Events applied so far (`{rc}:stats` `events`); `None` before the first.
pub async fn events_applied(con: &mut RedisConnection) -> redis::RedisResult<Option<u64>> {
    redis::cmd("HGET")
        .arg(STATS)
        .arg("events")
        .query_async(con)
        .await
}

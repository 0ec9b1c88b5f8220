//! What training reads: every user's history, the catalogue with titles, tags and text vectors,
//! and popularity — all reads of keys other modules write.

use crate::RedisConnection;
use crate::derived::{ITEMS, POPULARITY, USERS, item_key, user_history_key};
use crate::history::HistoryEntry;
use crate::vector_store::{VECTOR_FIELD, item_vector_key};
use crate::vectors;

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
pub async fn training_data(con: &mut RedisConnection) -> redis::RedisResult<TrainingData> {
    let events = crate::counts::events_applied(con).await?;
    let mut users: Vec<String> = redis::cmd("SMEMBERS").arg(USERS).query_async(con).await?;
    users.sort();
    let mut items: Vec<String> = redis::cmd("SMEMBERS").arg(ITEMS).query_async(con).await?;
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
            pipe.cmd("HGET").arg(item_vector_key(i)).arg(VECTOR_FIELD);
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
        .arg(POPULARITY)
        .arg(0)
        .arg(-1)
        .query_async(con)
        .await?;
    Ok(data)
}

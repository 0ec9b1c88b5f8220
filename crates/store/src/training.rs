//! What training reads: every user's history, the catalogue with titles, tags and text vectors,
//! and popularity — all reads of keys other modules write.

use crate::RedisConnection;
use crate::derived::{ITEMS, POPULARITY, USERS, item_key, user_history_key};
use crate::history::HistoryEntry;
use crate::vector_store::{MODEL_FIELD, VECTOR_FIELD, item_vector_key};
use crate::vectors;

/// One catalogue entry as training reads it.
#[derive(Debug, Clone, Default)]
pub struct CatalogueItem {
    pub id: String,
    pub title: String,
    pub tags: Vec<String>,
    /// The embed service's text vector, when there is one (of the one model training uses, see
    /// [`training_data`]).
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
/// Text vectors are those of one embedding model: the one that made most of them (while a model
/// change is being re-embedded some are of the old one; the others are left out as if absent).
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
    let mut models = Vec::with_capacity(items.len());
    for chunk in items.chunks(1000) {
        let mut pipe = redis::pipe();
        for i in chunk {
            pipe.cmd("HMGET").arg(item_key(i)).arg("title").arg("tags");
            pipe.cmd("HMGET")
                .arg(item_vector_key(i))
                .arg(VECTOR_FIELD)
                .arg(MODEL_FIELD);
        }
        let rows: Vec<redis::Value> = pipe.query_async(con).await?;
        for (i, pair) in chunk.iter().zip(rows.chunks(2)) {
            let (title, tags): (Option<String>, Option<String>) =
                redis::from_redis_value(&pair[0]).unwrap_or((None, None));
            let (vec, model): (Option<Vec<u8>>, Option<String>) =
                redis::from_redis_value(&pair[1]).unwrap_or((None, None));
            models.push(model);
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
    keep_one_model(&mut data.items, &models);
    data.popular = redis::cmd("ZREVRANGE")
        .arg(POPULARITY)
        .arg(0)
        .arg(-1)
        .query_async(con)
        .await?;
    Ok(data)
}

/// Keeps the text vectors of the model that made most of them (ties: the first name in order)
/// and drops the others, so training never mixes models (nor their dimensions). `models[i]` is
/// the model recorded with `items[i]`'s vector.
fn keep_one_model(items: &mut [CatalogueItem], models: &[Option<String>]) {
    let mut count: std::collections::BTreeMap<&str, usize> = Default::default();
    for (item, model) in items.iter().zip(models) {
        if item.vector.is_some() {
            *count.entry(model.as_deref().unwrap_or("")).or_default() += 1;
        }
    }
    let Some(best) = count
        .iter()
        .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
        .map(|(m, _)| *m)
    else {
        return;
    };
    for (item, model) in items.iter_mut().zip(models) {
        if model.as_deref().unwrap_or("") != best {
            item.vector = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(v: Option<Vec<f32>>) -> CatalogueItem {
        CatalogueItem {
            vector: v,
            ..Default::default()
        }
    }

    #[test]
    fn training_keeps_the_vectors_of_the_most_common_model_only() {
        let m = |s: &str| Some(s.to_owned());
        let mut items = vec![
            item(Some(vec![1.0; 384])),
            item(Some(vec![1.0; 768])),
            item(Some(vec![2.0; 768])),
            item(None),
            item(Some(vec![3.0; 768])),
        ];
        let models = [m("minilm"), m("mpnet"), m("mpnet"), None, m("mpnet")];
        keep_one_model(&mut items, &models);
        let dims: Vec<usize> = items
            .iter()
            .map(|i| i.vector.as_ref().map_or(0, Vec::len))
            .collect();
        assert_eq!(dims, [0, 768, 768, 0, 768]);
        // A tie goes to the first name, whatever the order of the items.
        let mut items = vec![item(Some(vec![1.0])), item(Some(vec![2.0, 2.0]))];
        keep_one_model(&mut items, &[m("b"), m("a")]);
        assert!(items[0].vector.is_none() && items[1].vector.is_some());
        // One model: nothing dropped.
        let mut items = vec![item(Some(vec![1.0])), item(Some(vec![2.0]))];
        keep_one_model(&mut items, &[m("a"), m("a")]);
        assert!(items.iter().all(|i| i.vector.is_some()));
    }
}

//! The rank service's models in Redis: a factor [`Model`] serialised with postcard, stored in
//! the versioned, chunked layout of [`recalloc_store::models`] (which owns the keys and the
//! training lock). What training reads is [`recalloc_store::training`].

use recalloc_factor::model::Model;
use recalloc_store::RedisConnection;
pub use recalloc_store::models::{Meta, StoreError};

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
    let meta = Meta {
        version: model.version.clone(),
        algorithm: model.algorithm.name().into(),
        users: model.users(),
        items: model.items(),
        factors: model.factors,
        trained_at_ms: model.trained_at_ms,
        ..Meta::default()
    };
    recalloc_store::models::save(con, meta, &bytes, chunk_bytes, keep).await
}

pub fn decode_model(version: &str, bytes: &[u8]) -> Result<Model, StoreError> {
    postcard::from_bytes(bytes).map_err(|e| StoreError::Damaged {
        version: version.to_owned(),
        reason: format!("cannot deserialise: {e}"),
    })
}

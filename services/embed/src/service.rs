//! The `recalloc.v1.Embedder` gRPC adapter. Domain errors ([`EmbedError`]) become statuses only
//! here:
//!
//! | error | status |
//! |---|---|
//! | empty `texts`, too many texts, a text over `embed.max_text_bytes`, empty id | INVALID_ARGUMENT, naming the field |
//! | the inference queue is full | RESOURCE_EXHAUSTED (retry later) |
//! | no vector / no profile for the id | NOT_FOUND |
//! | Redis unreachable, shutting down | UNAVAILABLE |
//! | inference failed | INTERNAL |

use crate::batcher::BatchError;
use crate::engine::{EncodeError, Engine};
use crate::fusion::{self, FusionParams};
use recalloc_proto::v1::{
    self, EmbedModelInfo, EmbedRequest, EmbedResponse, GetEmbedModelInfoRequest,
    GetItemVectorRequest, GetUserProfileRequest, ItemVector, UserProfile,
    embedder_server::Embedder,
};
use recalloc_store::vector_store::VectorStore;
use std::sync::Arc;
use tonic::{Request, Response, Status};

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("{field}: {reason}")]
    InvalidArgument { field: String, reason: String },
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Batch(#[from] BatchError),
    #[error("redis unavailable: {0}")]
    Redis(#[from] redis::RedisError),
}

impl From<EncodeError> for EmbedError {
    fn from(e: EncodeError) -> Self {
        match e {
            EncodeError::Invalid { field, reason } => Self::InvalidArgument { field, reason },
            EncodeError::Batch(b) => Self::Batch(b),
        }
    }
}

impl From<EmbedError> for Status {
    fn from(e: EmbedError) -> Self {
        let msg = e.to_string();
        match e {
            EmbedError::InvalidArgument { .. } => Status::invalid_argument(msg),
            EmbedError::NotFound(_) => Status::not_found(msg),
            EmbedError::Batch(BatchError::Overloaded { .. }) => Status::resource_exhausted(msg),
            EmbedError::Batch(BatchError::ShuttingDown) | EmbedError::Redis(_) => {
                Status::unavailable(msg)
            }
            EmbedError::Batch(BatchError::Inference(_)) => Status::internal(msg),
        }
    }
}

pub struct EmbedService {
    engine: Arc<Engine>,
    store: VectorStore,
    fusion: FusionParams,
    max_request_texts: usize,
}

fn vector(values: Vec<f32>) -> v1::Vector {
    v1::Vector { values }
}

impl EmbedService {
    pub fn new(
        engine: Arc<Engine>,
        store: VectorStore,
        fusion: FusionParams,
        max_request_texts: usize,
    ) -> Self {
        Self {
            engine,
            store,
            fusion,
            max_request_texts,
        }
    }

    pub async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Err(EmbedError::InvalidArgument {
                field: "texts".into(),
                reason: "must not be empty".into(),
            });
        }
        if texts.len() > self.max_request_texts {
            return Err(EmbedError::InvalidArgument {
                field: "texts".into(),
                reason: format!(
                    "{} texts, more than the limit of {} per request (embed.max_request_texts)",
                    texts.len(),
                    self.max_request_texts
                ),
            });
        }
        Ok(self.engine.encode(texts).await?)
    }

    pub async fn user_profile(&self, user: &str) -> Result<UserProfile, EmbedError> {
        require("user_id", user)?;
        let text = self.store.user_text_vector(user).await?;
        let history = self.store.history(user).await?;
        let items: Vec<String> = history.iter().map(|h| h.item.clone()).collect();
        let vecs = self.store.item_vectors(&items).await?;
        let newest = history.iter().map(|h| h.ts).max().unwrap_or(0);
        let paired: Vec<_> = history.into_iter().zip(vecs).collect();
        let f = fusion::fuse(text.as_deref(), &paired, &self.fusion);
        let Some(fused) = f.fused else {
            return Err(EmbedError::NotFound(format!(
                "user {user} has neither a profile text vector nor history items with vectors"
            )));
        };
        Ok(UserProfile {
            user_id: user.to_owned(),
            fused: Some(vector(fused)),
            text_vector: text.map(vector),
            behaviour_vector: f.behaviour.map(vector),
            items_used: f.items_used as u32,
            updated_at_ms: newest,
        })
    }
}

fn require(field: &str, value: &str) -> Result<(), EmbedError> {
    if value.is_empty() {
        return Err(EmbedError::InvalidArgument {
            field: field.into(),
            reason: "must not be empty".into(),
        });
    }
    Ok(())
}

#[tonic::async_trait]
impl Embedder for EmbedService {
    async fn embed(&self, req: Request<EmbedRequest>) -> Result<Response<EmbedResponse>, Status> {
        let texts = req.into_inner().texts;
        let vectors = EmbedService::embed(self, texts).await?;
        Ok(Response::new(EmbedResponse {
            vectors: vectors.into_iter().map(vector).collect(),
            model: self.engine.spec().name.clone(),
            dimension: self.engine.spec().dimension() as u32,
        }))
    }

    async fn get_item_vector(
        &self,
        req: Request<GetItemVectorRequest>,
    ) -> Result<Response<ItemVector>, Status> {
        let id = req.into_inner().item_id;
        require("item_id", &id)?;
        let v = self
            .store
            .item_vectors(std::slice::from_ref(&id))
            .await
            .map_err(EmbedError::from)?
            .pop()
            .flatten()
            .ok_or_else(|| EmbedError::NotFound(format!("item {id} has no vector")))?;
        Ok(Response::new(ItemVector {
            item_id: id,
            vector: Some(vector(v)),
            model: self.engine.spec().name.clone(),
        }))
    }

    async fn get_user_profile(
        &self,
        req: Request<GetUserProfileRequest>,
    ) -> Result<Response<UserProfile>, Status> {
        let user = req.into_inner().user_id;
        Ok(Response::new(self.user_profile(&user).await?))
    }

    async fn get_model_info(
        &self,
        _: Request<GetEmbedModelInfoRequest>,
    ) -> Result<Response<EmbedModelInfo>, Status> {
        let spec = self.engine.spec();
        Ok(Response::new(EmbedModelInfo {
            model: spec.name.clone(),
            dimension: spec.dimension() as u32,
            max_seq_length: spec.max_seq_length as u32,
            device: self.engine.device().to_owned(),
            max_batch_size: self.engine.max_batch_size() as u32,
        }))
    }
}

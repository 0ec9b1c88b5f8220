//! The embed service: a sentence-transformer (all-MiniLM-L6-v2 by default, any BERT-family
//! model of that directory layout) run natively through libtorch, serving
//! `recalloc.v1.Embedder` with dynamic batching, and a worker that keeps item vectors and user
//! text vectors in Redis; fused user profiles are computed from them on read.
//!
//! Layers: [`model`] and [`tokenize`] (pure inference), [`batcher`] (queueing, threads),
//! [`engine`] (the two together), [`fusion`] (pure maths), [`worker`] (Kafka), [`service`] (the
//! gRPC edge), [`server`] (process wiring). Stored vectors and their encodings are
//! `recalloc-store`'s ([`recalloc_store::vector_store`], [`recalloc_store::vectors`]); the
//! consumer loop is `recalloc-stream`'s.

pub mod batcher;
pub mod engine;
pub mod fusion;
pub mod model;
pub mod server;
pub mod service;
pub mod tokenize;
pub mod worker;

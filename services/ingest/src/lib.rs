//! Ingestion: the `recalloc.v1.Ingest` gRPC service that validates, cleans and produces records
//! to Kafka, and the featurizer that turns the topics into per-user and per-item state in Redis
//! exactly once. The binaries in `src/bin` only parse flags and call [`server::run`] or
//! [`featurizer::run`]. The Redis layout is `recalloc-store`'s, the record codec and the
//! consumer loop `recalloc-stream`'s.

pub mod featurizer;
pub mod producer;
pub mod server;
pub mod service;
pub mod validate;

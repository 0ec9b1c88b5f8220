//! The rank service: trains the models of `recalloc-factor` from Redis ([`trainer`]), keeps them
//! versioned in Redis ([`store`]), and serves `recalloc.v1.Ranker` from memory with hot swaps
//! ([`service`], [`server`]).

pub mod server;
pub mod service;
pub mod store;
pub mod trainer;

//! The Kafka side of recalloc's contract, shared by every consumer (the featurizer, the embed
//! worker, `recalloc rebuild`) and by the scheduler's lag reading:
//! * [`codec`]: records by topic, validated for what consumers key on;
//! * [`headers`]: the W3C trace context a record carries;
//! * [`consume`]: batches gathered for a short window, offsets committed only after the batch's
//!   effect is stored;
//! * [`group`]: membership of a consumer group, and what a member commits on revocation;
//! * [`lag`]: the one definition of a partition's backlog.
//!
//! Topic names and record types are in `recalloc-proto`.

pub mod codec;
pub mod consume;
pub mod group;
pub mod headers;
pub mod lag;

pub use recalloc_proto::Record;

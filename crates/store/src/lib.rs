//! The Redis contract of recalloc: every key the services share, what each holds, and the one
//! module that writes it. The services (ingest's featurizer, embed, rank) and the CLI go
//! through these modules instead of spelling key names, field names or scripts themselves.
//!
//! Key layout. Every key of the derived state starts with the hash tag `{rc}`, so on a Redis
//! Cluster it all lives in one slot:
//!
//! | key | type | content |
//! |---|---|---|
//! | `{rc}:user:<id>` | hash | `events`, `ratings`, `rating_sum`, `mean_rating`, `first_seen_ms`, `last_seen_ms`, `profile_text`, `attributes` (JSON), `updated_at_ms` |
//! | `{rc}:hist:<id>` | list | the user's events, newest first, at most `featurizer.history_len` JSON objects `{"event_id","item","kind","value","ts"}` |
//! | `{rc}:recent:<id>` | sorted set | ids of this user's events applied within the last `featurizer.dedup_window_s`, scored by when they were produced (the exactly-once guard); expires a window after its last write |
//! | `{rc}:item:<id>` | hash | `events`, `ratings`, `rating_sum`, `mean_rating`, `last_event_ms`, `title`, `description`, `tags` (JSON array), `attributes` (JSON), `updated_at_ms` |
//! | `{rc}:users`, `{rc}:items` | set | every known user / item id |
//! | `{rc}:popularity` | sorted set | item id → sum of kind weights of its events |
//! | `{rc}:stats` | hash | `events`, `ratings` applied so far |
//! | `{rc}:vec:items`, `{rc}:vec:users`, `{rc}:vec:item:<id>`, `{rc}:vec:user:<id>` | | vectors, written by the embed service ([`vector_store`]) |
//! | `{rc}:offsets` | hash | `<topic>/<partition>` → the next offset the featurizer applies, written with each record ([`log_position`]) |
//! | `{rc}:log` | hash | `cluster_id`: the Kafka cluster the state was built from |
//! | `{rc}:deadletter` | list | the newest 1,000 records the featurizer could not decode or apply, as JSON |
//! | `{rc}:model:*`, `rc:model-chunk:*` | | trained models and the training lock ([`models`]) |
//!
//! (The kind of key comes before the id, so no id can make one key look like another.)
//!
//! | module | writes | who calls it |
//! |---|---|---|
//! | [`derived`] | users, items, histories, the exactly-once guard, popularity, stats, log positions | the featurizer (and `recalloc rebuild`) |
//! | [`log_position`] | the log's cluster id; reads the positions | the featurizer (and `recalloc rebuild`) |
//! | [`deadletter`] | the dead-letter list | the featurizer |
//! | [`vector_store`] | stored vectors and their id sets | embed |
//! | [`models`] | model versions, chunks, the training lock | rank |
//! | [`history`], [`counts`], [`training`] | nothing: reads | embed, rank, ingest, the CLI |
//! | [`kinds`], [`vectors`] | nothing: pure (event weights, vector encodings) | everyone |

pub mod counts;
pub mod deadletter;
pub mod derived;
pub mod history;
pub mod kinds;
pub mod log_position;
pub mod models;
pub mod seen;
pub mod training;
pub mod vector_store;
pub mod vectors;

pub use recalloc_common::redis_conn::RedisConnection;

/// Every key of the derived state (and of the model bookkeeping) starts with this hash tag.
pub const PREFIX: &str = "{rc}:";

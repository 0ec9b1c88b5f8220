//! Recommendation models as pure logic, no I/O beyond reading files: explicit biased MF by SGD
//! ([`sgd`]), implicit ALS with fold-in ([`als`]), top-k selection ([`topk`]) and evaluation
//! ([`metrics`], [`eval`]). The rank service trains and serves these; `recalloc eval` runs the
//! offline comparisons.

pub mod als;
pub mod ann;
pub mod data;
pub mod eval;
pub mod fm;
pub mod linalg;
pub mod metrics;
pub mod model;
pub mod pipeline;
pub mod sgd;
pub mod synthetic;
pub mod topk;

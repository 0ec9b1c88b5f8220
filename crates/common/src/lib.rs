//! What every recalloc service shares: layered configuration, one telemetry init, W3C trace
//! context, Prometheus metrics with latency quantiles, readiness that follows dependencies, and
//! the shutdown signal. No service-specific logic lives here.

pub mod config;
pub mod health;
pub mod http;
pub mod metrics;
pub mod shutdown;
pub mod telemetry;
pub mod trace_context;

pub use config::{Config, ConfigError};
pub use health::Readiness;
pub use metrics::Metrics;

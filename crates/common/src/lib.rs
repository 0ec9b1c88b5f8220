//! What every recalloc service shares: layered configuration, one telemetry init, W3C trace
//! context, Prometheus metrics with latency quantiles, readiness that follows dependencies, and
//! the shutdown signal. No service-specific logic lives here.

pub mod auth;
pub mod config;
pub mod health;
pub mod http;
pub mod metrics;
pub mod net;
pub mod redis_conn;
pub mod secret;
pub mod serve;
pub mod shutdown;
pub mod telemetry;
pub mod tls;
pub mod trace_context;

pub use config::{Config, ConfigError};

/// Start-up shared by every binary: loads the layered config and installs telemetry, or exits
/// with status 2 and a message naming the problem (an invalid key, an unreadable file).
pub fn config_and_telemetry_or_exit(binary: &str, file: Option<&std::path::Path>) -> Config {
    let cfg = Config::load(file).unwrap_or_else(|e| {
        eprintln!("{binary}: {e}");
        std::process::exit(2);
    });
    if let Err(e) = telemetry::init(binary, &cfg.telemetry) {
        eprintln!("{binary}: {e}");
        std::process::exit(2);
    }
    cfg
}
pub use health::Readiness;
pub use metrics::Metrics;

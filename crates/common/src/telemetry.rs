//! The one place logging is set up. `RUST_LOG` wins over the configured filter; JSON output is
//! for log collectors, text for people.

use crate::config::TelemetryConfig;
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// Installs the global subscriber. Call once, first thing in `main`.
pub fn init(service: &str, cfg: &TelemetryConfig) -> Result<(), String> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(f) if !f.is_empty() => {
            EnvFilter::try_new(&f).map_err(|e| format!("invalid RUST_LOG: {e}"))?
        }
        _ => EnvFilter::try_new(&cfg.log_filter)
            .map_err(|e| format!("invalid config key telemetry.log_filter: {e}"))?,
    };
    let registry = tracing_subscriber::registry().with(filter);
    let result = match cfg.log_format.as_str() {
        "json" => registry
            .with(fmt::layer().json().with_writer(std::io::stderr))
            .try_init(),
        "text" => registry
            .with(fmt::layer().with_writer(std::io::stderr))
            .try_init(),
        other => {
            return Err(format!(
                "invalid config key telemetry.log_format: {other:?} (want \"text\" or \"json\")"
            ));
        }
    };
    result.map_err(|e| format!("telemetry already initialised: {e}"))?;
    tracing::debug!(service, "telemetry initialised");
    Ok(())
}

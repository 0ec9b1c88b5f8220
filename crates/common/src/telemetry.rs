//! The one place logging and tracing are set up. `RUST_LOG` wins over the configured filter; JSON
//! output is for log collectors, text for people.
//!
//! Tracing: an OpenTelemetry layer gives recalloc's spans W3C trace and span ids, so trace
//! context propagates (see [`crate::trace_context`]) whether or not anything is exported. OTLP
//! export over gRPC is on when an endpoint is set: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, else
//! `OTEL_EXPORTER_OTLP_ENDPOINT`, else the config key `telemetry.otlp_endpoint`;
//! `OTEL_SDK_DISABLED=true` turns it off. The service name is `OTEL_SERVICE_NAME` or the
//! binary's name. Spans are exported in batches by a task on the Tokio runtime: a collector that is
//! down drops spans (logged once per outage), never blocks or fails a call. [`shutdown`]
//! flushes what is queued.

use crate::config::TelemetryConfig;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;
use tracing::subscriber::Interest;
use tracing::{Metadata, span};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::{Context, Filter};
use tracing_subscriber::{EnvFilter, Layer, Registry, fmt, prelude::*};

/// How long [`shutdown`] waits for queued spans to reach the collector.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

static PROVIDER: OnceLock<Mutex<Option<SdkTracerProvider>>> = OnceLock::new();

/// Where spans are exported, from the environment and the config; `None` = export off.
pub fn otlp_endpoint(
    cfg: &TelemetryConfig,
    env: impl Fn(&str) -> Option<String>,
) -> Option<String> {
    let set = |k: &str| env(k).filter(|v| !v.trim().is_empty());
    if set("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        return None;
    }
    set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .or_else(|| set("OTEL_EXPORTER_OTLP_ENDPOINT"))
        .or_else(|| Some(cfg.otlp_endpoint.clone()).filter(|e| !e.trim().is_empty()))
}

/// Installs the global subscriber. Call once, first thing in `main`, inside the Tokio runtime
/// (the OTLP exporter's connection lives on it).
pub fn init(service: &str, cfg: &TelemetryConfig) -> Result<(), String> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(f) if !f.is_empty() => {
            EnvFilter::try_new(&f).map_err(|e| format!("invalid RUST_LOG: {e}"))?
        }
        _ => EnvFilter::try_new(&cfg.log_filter)
            .map_err(|e| format!("invalid config key telemetry.log_filter: {e}"))?,
    };
    let filter = AskedEveryTime(filter);
    let fmt_layer: Box<dyn Layer<Registry> + Send + Sync> = match cfg.log_format.as_str() {
        "json" => fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
        "text" => fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
        other => {
            return Err(format!(
                "invalid config key telemetry.log_format: {other:?} (want \"text\" or \"json\")"
            ));
        }
    };
    let endpoint = otlp_endpoint(cfg, |k| std::env::var(k).ok());
    let service_name = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| service.to_owned());
    let mut provider = SdkTracerProvider::builder().with_resource(
        Resource::builder_empty()
            .with_service_name(service_name)
            .build(),
    );
    if let Some(endpoint) = &endpoint {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.clone())
            .build()
            .map_err(|e| format!("OTLP exporter for {endpoint}: {e}"))?;
        // Exports run as tasks on this Tokio runtime, where the tonic channel's connection
        // lives, rather than on the SDK's own batch thread.
        let processor = BatchSpanProcessor::builder(
            LoggedExporter {
                inner: exporter,
                endpoint: endpoint.clone(),
                failing: AtomicBool::new(false),
            },
            opentelemetry_sdk::runtime::Tokio,
        )
        .build();
        provider = provider.with_span_processor(processor);
    }
    // Without an exporter the provider still hands out ids: context propagates, nothing leaves.
    let provider = provider.build();
    // Only recalloc's own spans become OpenTelemetry spans, whatever the log filter says (a
    // quiet log must not break propagation); libraries' spans stay out of the traces.
    let otel_layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("recalloc"))
        .with_location(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
        .with_filter(AskedEveryTime(
            Targets::new().with_target("recalloc", tracing::Level::INFO),
        ));
    tracing_subscriber::registry()
        .with(fmt_layer)
        .with(otel_layer)
        .try_init()
        .map_err(|e| format!("telemetry already initialised: {e}"))?;
    let _ = PROVIDER.set(Mutex::new(Some(provider)));
    match &endpoint {
        Some(endpoint) => tracing::info!(service, %endpoint, "exporting traces over OTLP"),
        None => tracing::debug!(service, "telemetry initialised; OTLP export off"),
    }
    Ok(())
}

/// Flushes queued spans to the collector (bounded) and stops the exporter: the last step of a
/// binary's shutdown. Does nothing when export is off or [`init`] never ran.
pub async fn shutdown() {
    let Some(provider) = PROVIDER
        .get()
        .and_then(|p| p.lock().ok().and_then(|mut p| p.take()))
    else {
        return;
    };
    // The flush blocks on the batch thread, which needs this runtime to reach the collector.
    let flushed =
        tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(FLUSH_TIMEOUT)).await;
    if let Ok(Err(e)) = flushed {
        tracing::debug!(error = %e, "flushing spans at shutdown");
    }
}

/// A per-layer filter whose callsites are never cached as "always": `tracing` then asks
/// [`Filter::enabled`] right before every span and event it lets through.
///
/// Why: a per-layer filter hands its decision from `enabled` to `on_new_span` through a
/// thread-local. For a callsite cached as "always" the macros skip `enabled`, so the layer reads
/// whatever the last `enabled` call on that thread decided, for other metadata. A `log` record of
/// a dependency (through `tracing-log`, checked dynamically) left "disabled" there and the embed
/// worker's next record span silently never became an OpenTelemetry span: about one run in two
/// of the tracing test lost the embed's span (tokio-rs/tracing#2519).
struct AskedEveryTime<F>(F);

impl<S, F: Filter<S>> Filter<S> for AskedEveryTime<F> {
    fn enabled(&self, meta: &Metadata<'_>, cx: &Context<'_, S>) -> bool {
        self.0.enabled(meta, cx)
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> Interest {
        let interest = self.0.callsite_enabled(meta);
        if interest.is_always() {
            Interest::sometimes()
        } else {
            interest
        }
    }

    fn event_enabled(&self, event: &tracing::Event<'_>, cx: &Context<'_, S>) -> bool {
        self.0.event_enabled(event, cx)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        self.0.max_level_hint()
    }

    // EnvFilter tracks spans for its span-scoped directives: pass every span callback on.
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, cx: Context<'_, S>) {
        self.0.on_new_span(attrs, id, cx)
    }

    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, cx: Context<'_, S>) {
        self.0.on_record(id, values, cx)
    }

    fn on_enter(&self, id: &span::Id, cx: Context<'_, S>) {
        self.0.on_enter(id, cx)
    }

    fn on_exit(&self, id: &span::Id, cx: Context<'_, S>) {
        self.0.on_exit(id, cx)
    }

    fn on_close(&self, id: span::Id, cx: Context<'_, S>) {
        self.0.on_close(id, cx)
    }
}

/// The OTLP exporter, logging the first failure of an outage and the recovery, instead of
/// every failed batch.
#[derive(Debug)]
struct LoggedExporter {
    inner: opentelemetry_otlp::SpanExporter,
    endpoint: String,
    failing: AtomicBool,
}

impl SpanExporter for LoggedExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len();
        let result = self.inner.export(batch).await;
        match &result {
            Err(e) if !self.failing.swap(true, Ordering::Relaxed) => tracing::warn!(
                endpoint = %self.endpoint, error = %e, spans,
                "OTLP trace export failed; dropping spans until the collector answers"
            ),
            Ok(()) if self.failing.swap(false, Ordering::Relaxed) => {
                tracing::info!(endpoint = %self.endpoint, "OTLP trace export recovered")
            }
            _ => {}
        }
        result
    }

    fn shutdown_with_timeout(&mut self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&mut self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Arc;

    /// Records the names of the spans it is told about.
    #[derive(Clone, Default)]
    struct SeenSpans(Arc<Mutex<Vec<String>>>);

    impl<S: tracing::Subscriber> Layer<S> for SeenSpans {
        fn on_new_span(&self, attrs: &span::Attributes<'_>, _: &span::Id, _: Context<'_, S>) {
            self.0
                .lock()
                .unwrap()
                .push(attrs.metadata().name().to_owned());
        }
    }

    #[test]
    fn a_foreign_dynamic_check_does_not_hide_the_next_span_from_a_filtered_layer() {
        let seen = SeenSpans::default();
        let subscriber = Registry::default()
            // Another layer that wants everything (like the log output at a verbose level).
            .with(SeenSpans::default())
            .with(seen.clone().with_filter(AskedEveryTime(
                Targets::new().with_target("recalloc", tracing::Level::INFO),
            )));
        tracing::subscriber::with_default(subscriber, || {
            let foreign = tracing::info_span!(target: "foreign", "foreign");
            let foreign_meta = foreign.metadata().expect("enabled by the other layer");
            for round in 0..3 {
                // What `log_enabled!` through tracing-log does: a dynamic check, here for
                // metadata the filtered layer rejects.
                tracing::dispatcher::get_default(|d| d.enabled(foreign_meta));
                let _span = tracing::info_span!(target: "recalloc_test", "ours", round);
            }
        });
        assert_eq!(*seen.0.lock().unwrap(), vec!["ours"; 3]);
    }

    #[test]
    fn endpoint_from_env_then_config_or_off() {
        let with = |pairs: &[(&str, &str)], cfg_endpoint: &str| {
            let env: HashMap<String, String> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let cfg = TelemetryConfig {
                otlp_endpoint: cfg_endpoint.into(),
                ..Default::default()
            };
            otlp_endpoint(&cfg, |k| env.get(k).cloned())
        };
        assert_eq!(with(&[], ""), None);
        assert_eq!(with(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")], ""), None);
        assert_eq!(with(&[], "http://c:4317").as_deref(), Some("http://c:4317"));
        assert_eq!(
            with(
                &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:4317")],
                "http://c:4317"
            )
            .as_deref(),
            Some("http://a:4317")
        );
        assert_eq!(
            with(
                &[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:4317"),
                    ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:4317")
                ],
                ""
            )
            .as_deref(),
            Some("http://t:4317")
        );
        assert_eq!(
            with(
                &[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:4317"),
                    ("OTEL_SDK_DISABLED", "TRUE")
                ],
                "http://c:4317"
            ),
            None
        );
    }
}

//! `recalloc-featurizer`: the consumer group that derives Redis state from the topics.
use clap::Parser;
use recalloc_common::{Metrics, Readiness};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    version,
    about = "recalloc featurizer: Kafka topics → per-user and per-item state in Redis"
)]
struct Args {
    /// TOML config file (also RECALLOC_CONFIG).
    #[arg(long)]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let cfg = recalloc_common::config_and_telemetry_or_exit(
        "recalloc-featurizer",
        args.config.as_deref(),
    );
    let metrics = Metrics::new();
    let readiness = Readiness::new(None, &[]);
    let stop = recalloc_common::serve::Stop::default();
    let (addr, http) = recalloc_common::http::serve(
        cfg.featurizer.metrics_addr,
        metrics.clone(),
        readiness.clone(),
        stop.signal(),
    )
    .await
    .map_err(|e| anyhow::anyhow!("cannot bind {}: {e}", cfg.featurizer.metrics_addr))?;
    tracing::info!(%addr, group = %cfg.featurizer.group_id, "featurizer starting");
    let http = tokio::spawn(http);
    let result = recalloc_ingest::featurizer::run(
        cfg,
        metrics,
        readiness,
        recalloc_common::shutdown::signal(),
    )
    .await;
    stop.stop();
    let _ = http.await;
    // Last phase of shutdown: queued spans to the collector.
    recalloc_common::telemetry::shutdown().await;
    result?;
    tracing::info!("featurizer stopped");
    Ok(())
}

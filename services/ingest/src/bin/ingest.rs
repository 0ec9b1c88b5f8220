//! `recalloc-ingest`: the gRPC intake. Config: defaults → `--config`/`RECALLOC_CONFIG` →
//! `RECALLOC_*` variables.
use clap::Parser;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    version,
    about = "recalloc ingest: gRPC intake of events, items and users into Kafka"
)]
struct Args {
    /// TOML config file (also RECALLOC_CONFIG).
    #[arg(long)]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let cfg =
        recalloc_common::config_and_telemetry_or_exit("recalloc-ingest", args.config.as_deref());
    let result =
        recalloc_ingest::server::run(cfg, recalloc_common::shutdown::signal(), |_| {}).await;
    // Last phase of shutdown: queued spans to the collector.
    recalloc_common::telemetry::shutdown().await;
    result?;
    Ok(())
}

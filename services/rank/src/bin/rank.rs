//! `recalloc-rank`: trains factor models from Redis and serves recommendations.
use clap::Parser;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    version,
    about = "recalloc rank: MF / ALS / hybrid models trained from Redis, served from memory over gRPC"
)]
struct Args {
    /// TOML config file (also RECALLOC_CONFIG).
    #[arg(long)]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let cfg =
        recalloc_common::config_and_telemetry_or_exit("recalloc-rank", args.config.as_deref());
    let result = recalloc_rank::server::run(cfg, recalloc_common::shutdown::signal(), |_| {}).await;
    // Last phase of shutdown: queued spans to the collector.
    recalloc_common::telemetry::shutdown().await;
    if let Err(e) = result {
        tracing::error!(error = %e, "rank failed");
        eprintln!("recalloc-rank: {e}");
        std::process::exit(1);
    }
}

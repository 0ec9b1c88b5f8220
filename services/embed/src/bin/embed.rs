//! `recalloc-embed`: the text encoder service and its worker.
use clap::Parser;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    version,
    about = "recalloc embed: all-MiniLM-L6-v2 through libtorch — Embed over gRPC, item vectors and user profiles in Redis"
)]
struct Args {
    /// TOML config file (also RECALLOC_CONFIG).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Overrides embed.device: cpu, cuda or cuda:N.
    #[arg(long)]
    device: Option<String>,
    /// Overrides embed.model_dir.
    #[arg(long)]
    model_dir: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut cfg =
        recalloc_common::config_and_telemetry_or_exit("recalloc-embed", args.config.as_deref());
    if let Some(d) = args.device {
        cfg.embed.device = d;
    }
    if let Some(m) = args.model_dir {
        cfg.embed.model_dir = m;
    }
    let result =
        recalloc_embed::server::run(cfg, recalloc_common::shutdown::signal(), |_| {}).await;
    // Last phase of shutdown: queued spans to the collector.
    recalloc_common::telemetry::shutdown().await;
    if let Err(e) = result {
        tracing::error!(error = %e, "embed failed");
        eprintln!("recalloc-embed: {e}");
        std::process::exit(1);
    }
    Ok(())
}

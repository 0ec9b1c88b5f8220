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
    let cfg = match recalloc_common::Config::load(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("recalloc-ingest: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = recalloc_common::telemetry::init("ingest", &cfg.telemetry) {
        eprintln!("recalloc-ingest: {e}");
        std::process::exit(2);
    }
    recalloc_ingest::server::run(cfg, recalloc_common::shutdown::signal(), |_| {}).await?;
    Ok(())
}

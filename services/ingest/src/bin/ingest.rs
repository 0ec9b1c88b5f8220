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
async fn main() {
    let args = Args::parse();
    recalloc_common::serve::main(
        "recalloc-ingest",
        args.config.as_deref(),
        |_| {},
        |cfg, shutdown| recalloc_ingest::server::run(cfg, shutdown, |_| {}),
    )
    .await;
}

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
    recalloc_common::serve::main(
        "recalloc-rank",
        args.config.as_deref(),
        |_| {},
        |cfg, shutdown| recalloc_rank::server::run(cfg, shutdown, |_| {}),
    )
    .await;
}

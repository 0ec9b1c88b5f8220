//! `recalloc-featurizer`: the consumer group that derives Redis state from the topics.
use clap::Parser;
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
async fn main() {
    let args = Args::parse();
    recalloc_common::serve::main(
        "recalloc-featurizer",
        args.config.as_deref(),
        |_| {},
        recalloc_ingest::featurizer::serve,
    )
    .await;
}

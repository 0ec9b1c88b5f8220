//! `recalloc-console`: the operators' web console (see the crate docs).
use clap::Parser;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    version,
    about = "recalloc console: a web page of the cluster's health, load, plans, models, recommendations and autoscaling simulations"
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
        "recalloc-console",
        args.config.as_deref(),
        |_| {},
        |cfg, shutdown| recalloc_console::server::run(cfg, shutdown, |_| {}),
    )
    .await;
}

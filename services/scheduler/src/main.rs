//! `recalloc-scheduler`: forecasts each managed Deployment's demand, plans replicas and (as
//! the Lease holder, with a cluster) scales them; serves plans over gRPC and to KEDA.
use clap::Parser;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    version,
    about = "recalloc scheduler: demand forecasts, replica plans, Kubernetes scaling and a KEDA external scaler"
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
        "recalloc-scheduler",
        args.config.as_deref(),
        |_| {},
        |cfg, shutdown| recalloc_scheduler::server::run(cfg, None, shutdown, |_| {}),
    )
    .await;
}

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
    let cfg =
        recalloc_common::config_and_telemetry_or_exit("recalloc-scheduler", args.config.as_deref());
    let result =
        recalloc_scheduler::server::run(cfg, None, recalloc_common::shutdown::signal(), |_| {})
            .await;
    // Last phase of shutdown: queued spans to the collector.
    recalloc_common::telemetry::shutdown().await;
    if let Err(e) = result {
        tracing::error!(error = %e, "scheduler failed");
        eprintln!("recalloc-scheduler: {e}");
        std::process::exit(1);
    }
}

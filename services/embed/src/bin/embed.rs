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
async fn main() {
    let args = Args::parse();
    let (device, model_dir) = (args.device, args.model_dir);
    recalloc_common::serve::main(
        "recalloc-embed",
        args.config.as_deref(),
        |cfg| {
            if let Some(d) = device {
                cfg.embed.device = d;
            }
            if let Some(m) = model_dir {
                cfg.embed.model_dir = m;
            }
        },
        |cfg, shutdown| recalloc_embed::server::run(cfg, shutdown, |_| {}),
    )
    .await;
}

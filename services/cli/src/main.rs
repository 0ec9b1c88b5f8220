//! `recalloc`: the user's hands on the cluster. Addresses come from the same layered config the
//! services read (defaults → `--config`/`RECALLOC_CONFIG` → `RECALLOC_*`).

mod chart;
mod embed;
mod eval;
mod load;
mod plan;
mod rank;
mod simulate;

use anyhow::Result;
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use recalloc_common::Config;
use recalloc_common::config::SecurityConfig;
use recalloc_proto::v1::GetStatsRequest;
use recalloc_proto::v1::ingest_client::IngestClient;
use std::path::PathBuf;
use std::time::Duration;
use tonic::transport::Channel;

#[derive(Parser)]
#[command(
    name = "recalloc",
    version,
    about = "recalloc: a recommender cluster that allocates its own resources"
)]
struct Cli {
    /// TOML config file (also RECALLOC_CONFIG).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Ingest gRPC address: host:port, http://host:port or https://host:port (default:
    /// ingest.grpc_addr of the config). Without a scheme, TLS is used when
    /// security.tls_ca_file is set.
    #[arg(long, global = true, value_name = "ADDRESS")]
    ingest_addr: Option<String>,
    /// Rank gRPC address, as --ingest-addr (default: rank.grpc_addr of the config).
    #[arg(long, global = true, value_name = "ADDRESS")]
    rank_addr: Option<String>,
    /// Scheduler gRPC address, as --ingest-addr (default: scheduler.grpc_addr of the config).
    #[arg(long, global = true, value_name = "ADDRESS")]
    scheduler_addr: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load a data set through the Ingest API (idempotent: loading twice changes nothing).
    Load {
        #[command(subcommand)]
        dataset: Dataset,
        /// Records per request.
        #[arg(long, default_value_t = 2000, global = true)]
        batch: usize,
        /// Requests in flight (each waits for the broker's acknowledgement of all its records,
        /// acks=all: a few at once keep the producer's batches full).
        #[arg(long, default_value_t = 4, global = true)]
        in_flight: usize,
        /// Retries of a batch the broker did not acknowledge.
        #[arg(long, default_value_t = 5, global = true)]
        retries: u32,
    },
    /// Print counts from the cluster's state as one JSON object.
    Stats,
    /// Encode texts with the running embed service; prints one JSON array of vectors, one per
    /// text in order.
    Embed {
        /// Read texts from a file, one per line (an empty line is an empty text).
        #[arg(long)]
        file: Option<PathBuf>,
        /// Embed gRPC address, as --ingest-addr (default: embed.grpc_addr of the config).
        #[arg(long, value_name = "ADDRESS")]
        embed_addr: Option<String>,
        /// Texts to encode (after those of --file).
        texts: Vec<String>,
    },
    /// Train a model in the running rank service from what Redis holds, and make it current.
    Train {
        /// implicit_als, explicit_mf or hybrid (default: rank.algorithm of the config).
        #[arg(long)]
        algorithm: Option<String>,
        /// Factors (0 = the configured default).
        #[arg(long, default_value_t = 0)]
        factors: u32,
        /// ALS iterations or SGD epochs (0 = the configured default).
        #[arg(long, default_value_t = 0)]
        iterations: u32,
    },
    /// Top-k recommendations for a user from the running rank service, with titles.
    Recommend {
        #[arg(long)]
        user: String,
        #[arg(short, long, default_value_t = 10)]
        k: u32,
        /// Also show the history items that contribute most to each recommendation.
        #[arg(long)]
        explain: bool,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Empty the derived Redis state and rebuild it by replaying the Kafka topics.
    Rebuild,
    /// Show the running scheduler's live plan: replicas per deployment per step.
    Plan {
        /// Only this deployment.
        deployment: Option<String>,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Evaluate the ranking models offline on a data set's folds (no cluster needed).
    Eval {
        #[command(subcommand)]
        dataset: EvalDataset,
        /// Print one JSON object.
        #[arg(long, global = true)]
        json: bool,
        /// Training threads.
        #[arg(long, default_value_t = 2, global = true)]
        threads: usize,
        /// Override the model's factors, regularisation (λ), ALS α, or iterations / epochs.
        #[arg(long, global = true)]
        factors: Option<usize>,
        #[arg(long, global = true)]
        regularization: Option<f32>,
        #[arg(long, global = true)]
        alpha: Option<f32>,
        #[arg(long, global = true)]
        iterations: Option<usize>,
        /// With --split (or goodbooks): also write the split's train.tsv and test.tsv (user,
        /// item, ms; dense ids) to DIR, for other systems to be measured on the same split.
        #[arg(long, value_name = "DIR")]
        export_split: Option<PathBuf>,
    },
    /// Benchmark the approximate top-k index (IVF) against exact search on a synthetic model
    /// (low-rank tastes, Zipf popularity): recall of the exact top 10, time per query, build
    /// time and size. Offline: needs no cluster.
    BenchAnn {
        #[arg(long, default_value_t = 1_000_000)]
        items: usize,
        #[arg(long, default_value_t = 64)]
        factors: usize,
        /// Queries timed each way (random synthetic users).
        #[arg(long, default_value_t = 200)]
        queries: usize,
        /// Lists (0 = about 3·√items).
        #[arg(long, default_value_t = 0)]
        lists: usize,
        /// Lists scanned per query (0 = lists / 12).
        #[arg(long, default_value_t = 0)]
        probes: usize,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Replay a load trace (CSV `ts,value`) under the autoscaling policies, compare them and
    /// chart demand, forecast band and each policy's ready capacity (SVG).
    Simulate {
        /// Load trace: CSV `ts,value` (unix seconds) or Prophet's `ds,y`.
        #[arg(long, value_name = "FILE")]
        trace: PathBuf,
        /// Load one pod serves within its latency objective, in the trace's unit.
        #[arg(long)]
        capacity_per_pod: f64,
        /// Pod start-up delay, e.g. 60s.
        #[arg(long, default_value = "60s", value_parser = simulate::parse_duration)]
        startup: u64,
        /// hpa, seed, recalloc or all (a single policy draws no chart).
        #[arg(long, default_value = "all")]
        policy: String,
        /// Print one JSON object instead of the table (progress goes to stderr).
        #[arg(long)]
        json: bool,
        /// SVG chart to write (default simulate.svg; `none` writes none).
        #[arg(long, value_name = "FILE.svg")]
        chart: Option<PathBuf>,
        /// Write no chart.
        #[arg(long, conflicts_with = "chart")]
        no_chart: bool,
        /// Forecast quantile the recalloc policy provisions for, in (0, 1) [default: 0.99].
        #[arg(long, value_name = "F")]
        service_level: Option<f64>,
        /// Fewest replicas of every policy [default: 1].
        #[arg(long, value_name = "N")]
        min_replicas: Option<u32>,
        /// Most replicas of every policy [default: 1000].
        #[arg(long, value_name = "N")]
        max_replicas: Option<u32>,
        /// Leading trace time run but not scored, e.g. 1d [default: 0].
        #[arg(long, value_name = "DURATION", value_parser = simulate::parse_duration)]
        warmup: Option<u64>,
        /// The HPA's target utilisation [default: 0.8].
        #[arg(long, value_name = "F")]
        target_utilisation: Option<f64>,
    },
}

#[derive(Subcommand)]
enum EvalDataset {
    /// MovieLens: explicit MF over folds u1–u5 (`uN.base`, `uN.test`), or with --implicit ALS
    /// ranking metrics at 10 on fold u1; with --split, ALS and popularity on a split of u.data.
    Movielens {
        dir: PathBuf,
        /// Implicit feedback on fold u1 (every rating an interaction): ranking metrics at 10.
        #[arg(long)]
        implicit: bool,
        /// Instead of the folds: `random` or `time` split of u.data (ALS and popularity).
        #[arg(long)]
        split: Option<String>,
        /// Share of interactions held out by --split.
        #[arg(long, default_value_t = 0.2)]
        test_fraction: f64,
    },
    /// goodbooks-10k: the served pipeline against ALS, item-item neighbours and popularity,
    /// ranking metrics at 10 on a random split.
    Goodbooks {
        dir: PathBuf,
        /// Which interactions: ratings, to-read marks, or all (ratings, and the to-read marks
        /// when the folder has them).
        #[arg(long, value_enum, default_value = "all")]
        interactions: eval::GoodbooksInteractions,
        /// `random` (goodbooks has no timestamps for `time`).
        #[arg(long, default_value = "random")]
        split: String,
        #[arg(long, default_value_t = 0.2)]
        test_fraction: f64,
    },
}

#[derive(Subcommand)]
enum Dataset {
    /// goodbooks-10k: books.csv, ratings.csv (or ratings_sample_100k.csv), tags.csv, book_tags.csv.
    Goodbooks {
        dir: PathBuf,
        /// Also load to_read.csv as wishlist events.
        #[arg(long)]
        to_read: bool,
    },
    /// MovieLens 100k: u.data, u.item, u.genre.
    Movielens { dir: PathBuf },
}

/// A connection to the `what` service at `address` (`host:port` or an `http(s)://` URL), over
/// TLS as `security.*` says (see `recalloc_common::tls`). A refused handshake shows here with
/// rustls' reason (unknown issuer, certificate required, …).
pub async fn connect(what: &str, address: &str, security: &SecurityConfig) -> Result<Channel> {
    recalloc_common::tls::endpoint(address, security)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot reach {what} at {address}: {} (is it running? `make up` starts the cluster)",
                recalloc_common::tls::error_chain(&e)
            )
        })
}

/// A failed call as one line: the status, and for transport failures the cause underneath
/// (e.g. the TLS alert of a server that refused our certificate), which `message()` drops.
pub fn status_error(what: &str, s: &tonic::Status) -> anyhow::Error {
    let cause = std::error::Error::source(s)
        .map(|e| format!(": {}", recalloc_common::tls::error_chain(e)))
        .unwrap_or_default();
    anyhow::anyhow!("{what}: {} ({:?}){cause}", s.message(), s.code())
}

async fn ingest(cfg: &Config, addr: Option<&str>) -> Result<load::Ingest> {
    let addr = addr.map_or_else(|| cfg.ingest.grpc_addr.to_string(), str::to_owned);
    let channel = connect("ingest", &addr, &cfg.security).await?;
    Ok(IngestClient::with_interceptor(channel, bearer(cfg)?)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20))
}

/// The bearer token of `security.*`, for the calls that change state.
fn bearer(cfg: &Config) -> Result<recalloc_common::auth::BearerToken> {
    let token = recalloc_common::auth::token(&cfg.security).map_err(anyhow::Error::msg)?;
    recalloc_common::auth::BearerToken::new(token.as_ref()).map_err(anyhow::Error::msg)
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli).await {
        eprintln!("recalloc: {e:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> Result<()> {
    if let Command::Simulate {
        trace,
        capacity_per_pod,
        startup,
        policy,
        json,
        chart,
        no_chart,
        service_level,
        min_replicas,
        max_replicas,
        warmup,
        target_utilisation,
    } = &cli.command
    {
        // Offline: needs no cluster and no config.
        return simulate::run(&simulate::Options {
            trace: trace.clone(),
            capacity_per_pod: *capacity_per_pod,
            startup_seconds: *startup,
            policy: policy.clone(),
            json: *json,
            chart: chart.clone(),
            no_chart: *no_chart,
            service_level: *service_level,
            min_replicas: *min_replicas,
            max_replicas: *max_replicas,
            warmup_seconds: *warmup,
            target_utilisation: *target_utilisation,
        });
    }
    if let Command::BenchAnn {
        items,
        factors,
        queries,
        lists,
        probes,
        json,
    } = &cli.command
    {
        return bench_ann(*items, *factors, *queries, *lists, *probes, *json);
    }
    if let Command::Eval {
        dataset,
        json,
        threads,
        factors,
        regularization,
        alpha,
        iterations,
        export_split,
    } = &cli.command
    {
        let o = eval::Overrides {
            threads: *threads,
            factors: *factors,
            regularization: *regularization,
            alpha: *alpha,
            iterations: *iterations,
            export_split: export_split.clone(),
        };
        return match dataset {
            EvalDataset::Movielens {
                dir,
                split: Some(split),
                test_fraction,
                ..
            } => eval::movielens_split(dir, split, *test_fraction, *json, &o),
            EvalDataset::Movielens { dir, implicit, .. } => {
                eval::movielens(dir, *implicit, *json, &o)
            }
            EvalDataset::Goodbooks {
                dir,
                interactions,
                split,
                test_fraction,
            } => eval::goodbooks(dir, *interactions, split, *test_fraction, *json, &o),
        };
    }
    let cfg = Config::load(cli.config.as_deref())?;
    let rank_addr = (cli.rank_addr.clone()).unwrap_or_else(|| cfg.rank.grpc_addr.to_string());
    match cli.command {
        Command::Load {
            dataset,
            batch,
            in_flight,
            retries,
        } => {
            let data = match &dataset {
                Dataset::Goodbooks { dir, to_read } => load::goodbooks(dir, *to_read)?,
                Dataset::Movielens { dir } => load::movielens(dir)?,
            };
            eprintln!(
                "read {} items and {} events",
                data.items.len(),
                data.events.len()
            );
            let client = ingest(&cfg, cli.ingest_addr.as_deref()).await?;
            let (items, events, secs) = load::send(client, data, batch, in_flight, retries).await?;
            println!(
                "items: accepted {} rejected {}\nevents: accepted {} rejected {} duplicates {} in {:.1} s ({:.0} events/s)",
                items.accepted,
                items.rejected,
                events.accepted,
                events.rejected,
                events.duplicates,
                secs,
                events.accepted as f64 / secs.max(1e-9)
            );
            for e in items.first_errors.iter().chain(&events.first_errors) {
                println!("  rejected: {e}");
            }
        }
        Command::Stats => {
            let mut client = ingest(&cfg, cli.ingest_addr.as_deref()).await?;
            let s = client
                .get_stats(GetStatsRequest {})
                .await
                .map_err(|s| status_error("stats", &s))?
                .into_inner();
            println!(
                "{}",
                serde_json::json!({
                    "events": s.events, "users": s.users, "items": s.items, "ratings": s.ratings,
                    "embedded_items": s.embedded_items, "embedded_users": s.embedded_users,
                })
            );
        }
        Command::Embed {
            file,
            embed_addr,
            texts,
        } => {
            let mut all = match &file {
                Some(f) => embed::read_lines(f)?,
                None => Vec::new(),
            };
            all.extend(texts);
            let addr = embed_addr.unwrap_or_else(|| cfg.embed.grpc_addr.to_string());
            embed::run(&addr, &cfg.security, all).await?;
        }
        Command::Train {
            algorithm,
            factors,
            iterations,
        } => {
            rank::train(
                &rank_addr,
                &cfg.security,
                &bearer(&cfg)?,
                algorithm.as_deref(),
                factors,
                iterations,
            )
            .await?
        }
        Command::Recommend {
            user,
            k,
            explain,
            json,
        } => rank::recommend(&rank_addr, &cfg.security, &user, k, explain, json).await?,
        Command::Plan { deployment, json } => {
            let addr =
                (cli.scheduler_addr.clone()).unwrap_or_else(|| cfg.scheduler.grpc_addr.to_string());
            plan::show(&addr, &cfg.security, deployment.as_deref(), json).await?
        }
        Command::Rebuild => {
            let pb = ProgressBar::new(0);
            pb.set_style(
                ProgressStyle::with_template("rebuild [{bar:40}] {pos}/{len} records ({per_sec})")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            let done = recalloc_ingest::featurizer::rebuild(&cfg, |p| {
                pb.set_length(p.total);
                pb.set_position(p.consumed);
            })
            .await?;
            pb.finish_and_clear();
            println!(
                "rebuilt from {} records ({} events applied)",
                done.consumed, done.new_events
            );
        }
        Command::Simulate { .. } | Command::Eval { .. } | Command::BenchAnn { .. } => {
            unreachable!("handled before the config is read")
        }
    }
    Ok(())
}

/// `recalloc bench-ann`: progress on stderr, the report on stdout.
fn bench_ann(
    items: usize,
    factors: usize,
    queries: usize,
    lists: usize,
    probes: usize,
    json: bool,
) -> Result<()> {
    if items == 0 || factors == 0 || queries == 0 {
        anyhow::bail!("--items, --factors and --queries must be at least 1");
    }
    let params = recalloc_factor::ann::IvfParams::with_overrides(items, lists, probes);
    let r = recalloc_factor::ann::bench(items, factors, queries, &params, &mut |m| {
        eprintln!("bench-ann: {m}")
    });
    if json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "{} items × {} factors, {} lists, {} probes: recall@10 {:.4}, exact {:.3} ms, ann {:.3} ms ({:.1}×), p99 {:.3} / {:.3} ms, build {:.1} s, index {:.1} MiB (factors {:.1} MiB)",
            r.items,
            r.factors,
            r.lists,
            r.probes,
            r.recall_at_10,
            r.exact_ms,
            r.ann_ms,
            r.speedup,
            r.exact_p99_ms,
            r.ann_p99_ms,
            r.build_s,
            r.index_bytes as f64 / (1 << 20) as f64,
            r.factor_bytes as f64 / (1 << 20) as f64
        );
    }
    Ok(())
}

//! Embedding benchmarks (`make bench` runs them through bench/embed.sh):
//!
//! - `throughput FILE THREADS`: texts/s encoding the file's lines in batches of 64 with THREADS
//!   libtorch threads in total, as (a) one thread pool over length-sorted batches (what
//!   sentence-transformers does) and (b) the service's engine with THREADS single-threaded
//!   workers and length bucketing.
//! - `storage FILE`: bytes per stored vector and recall@10 of cosine search over the file's
//!   vectors after f16 and int8 storage, against f32.
//! - `grpc ADDR N`: single-text Embed latency over gRPC (p50, p99), N sequential calls.
//!
//! Each prints one JSON object.

use recalloc_common::Metrics;
use recalloc_common::config::EmbedConfig;
use recalloc_embed::engine::Engine;
use recalloc_embed::model::{BertEncoder, ModelSpec};
use recalloc_embed::tokenize::TextTokenizer;
use recalloc_store::vectors::{self, Encoding};
use std::path::PathBuf;
use std::time::Instant;

fn lines(path: &str) -> Vec<String> {
    std::fs::read_to_string(path)
        .expect("read texts")
        .lines()
        .map(str::to_owned)
        .collect()
}

fn model_dir() -> PathBuf {
    std::env::var("RECALLOC_EMBED_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("models/all-MiniLM-L6-v2"))
}

fn throughput(path: &str, threads: usize) {
    let texts = lines(path);
    let dir = model_dir();
    let spec = ModelSpec::read(&dir).expect("model");
    let tok = TextTokenizer::load(&dir, spec.max_seq_length).expect("tokenizer");
    let model = BertEncoder::load(spec, tch::Device::Cpu, false).expect("weights");
    // (a) One pool of `threads`, batches of 64 over the length-sorted texts.
    tch::set_num_threads(threads as i32);
    let warm: Vec<Vec<i64>> = texts.iter().take(64).map(|t| tok.ids(t).unwrap()).collect();
    let refs: Vec<&[i64]> = warm.iter().map(Vec::as_slice).collect();
    model.encode(&refs).unwrap();
    let t0 = Instant::now();
    let mut ids: Vec<Vec<i64>> = texts.iter().map(|t| tok.ids(t).unwrap()).collect();
    ids.sort_by_key(|s| std::cmp::Reverse(s.len()));
    for chunk in ids.chunks(64) {
        let refs: Vec<&[i64]> = chunk.iter().map(Vec::as_slice).collect();
        model.encode(&refs).unwrap();
    }
    let pooled = texts.len() as f64 / t0.elapsed().as_secs_f64();
    // (b) The service's engine: `threads` workers of one thread each.
    let cfg = EmbedConfig {
        model_dir: dir,
        workers: threads as u32,
        threads_per_worker: 1,
        max_batch_size: 64,
        ..EmbedConfig::default()
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let engine = Engine::start(&cfg, Metrics::new()).expect("engine");
    rt.block_on(engine.encode(texts[..64.min(texts.len())].to_vec()))
        .unwrap();
    let t0 = Instant::now();
    let n = rt.block_on(async {
        let futs = texts
            .chunks(256)
            .map(|c| engine.encode(c.to_vec()))
            .collect::<Vec<_>>();
        futures::future::join_all(futs)
            .await
            .into_iter()
            .map(|r| r.unwrap().len())
            .sum::<usize>()
    });
    let batched = n as f64 / t0.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({"texts": texts.len(), "threads": threads,
            "pooled_texts_per_s": pooled, "workers_texts_per_s": batched})
    );
}

fn storage(path: &str) {
    let texts = lines(path);
    let cfg = EmbedConfig {
        model_dir: model_dir(),
        ..EmbedConfig::default()
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let engine = Engine::start(&cfg, Metrics::new()).expect("engine");
    let vecs = rt.block_on(engine.encode(texts.clone())).unwrap();
    let dim = vecs[0].len();
    let queries: Vec<&Vec<f32>> = vecs.iter().step_by(10).collect();
    let top = |corpus: &[Vec<f32>], q: &[f32]| -> Vec<usize> {
        let mut s: Vec<(f32, usize)> = corpus
            .iter()
            .enumerate()
            .map(|(i, v)| (vectors::dot(q, v), i))
            .collect();
        s.sort_by(|a, b| b.0.total_cmp(&a.0));
        s.iter().take(10).map(|x| x.1).collect()
    };
    let exact: Vec<Vec<usize>> = queries.iter().map(|q| top(&vecs, q)).collect();
    let mut out = serde_json::Map::new();
    for enc in [Encoding::F32, Encoding::F16, Encoding::Int8] {
        let stored: Vec<Vec<f32>> = vecs
            .iter()
            .map(|v| vectors::decode(&vectors::encode(v, enc)).unwrap())
            .collect();
        let min_cos = vecs
            .iter()
            .zip(&stored)
            .map(|(a, b)| vectors::cosine(a, b))
            .fold(1f32, f32::min);
        let hits: usize = queries
            .iter()
            .zip(&exact)
            .map(|(q, want)| {
                let got = top(&stored, q);
                got.iter().filter(|i| want.contains(i)).count()
            })
            .sum();
        out.insert(
            enc.name().into(),
            serde_json::json!({
                "bytes_per_vector": enc.stored_bytes(dim),
                "recall_at_10": hits as f64 / (10 * queries.len()) as f64,
                "min_cosine_to_f32": min_cos,
            }),
        );
    }
    println!("{}", serde_json::Value::Object(out));
}

fn grpc(addr: &str, n: usize) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut client =
            recalloc_proto::v1::embedder_client::EmbedderClient::connect(format!("http://{addr}"))
                .await
                .expect("connect");
        let mut h = hdrhistogram::Histogram::<u64>::new(3).unwrap();
        for i in 0..n + 20 {
            let t = Instant::now();
            client
                .embed(recalloc_proto::v1::EmbedRequest {
                    texts: vec![format!("The book number {i} by Some Author")],
                })
                .await
                .expect("embed");
            if i >= 20 {
                h.record(t.elapsed().as_micros() as u64).unwrap();
            }
        }
        println!(
            "{}",
            serde_json::json!({"calls": n, "p50_ms": h.value_at_quantile(0.5) as f64 / 1000.0,
                "p99_ms": h.value_at_quantile(0.99) as f64 / 1000.0})
        );
    });
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("throughput") => throughput(&args[2], args[3].parse().unwrap()),
        Some("storage") => storage(&args[2]),
        Some("grpc") => grpc(&args[2], args[3].parse().unwrap()),
        _ => {
            eprintln!("usage: embed_bench throughput FILE THREADS | storage FILE | grpc ADDR N");
            std::process::exit(2);
        }
    }
}

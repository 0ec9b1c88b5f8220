//! The encoder as the rest of the service sees it: texts in, vectors out. Owns the tokenizer,
//! the model weights and the [`Batcher`] whose threads run inference.

use crate::batcher::{BatchEncoder, BatchError, BatchStats, Batcher, BatcherConfig, Priority};
use crate::model::{self, BertEncoder, ModelError, ModelSpec};
use crate::tokenize::TextTokenizer;
use recalloc_common::Metrics;
use recalloc_common::config::EmbedConfig;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const QUEUE_DEPTH: &str = "recalloc_embed_queue_depth";
const QUEUE_DEPTH_HELP: &str = "texts waiting for inference";
pub const TEXTS: &str = "recalloc_embed_texts_total";
const TEXTS_HELP: &str = "texts encoded";
pub const BATCHES: &str = "recalloc_embed_batches_total";
const BATCHES_HELP: &str =
    "forward passes run (texts_total / batches_total is the mean batch size)";
const TOKENS: &str = "recalloc_embed_tokens_total";
const TOKENS_HELP: &str =
    "token positions computed, by kind: real tokens and padded positions (real + padding)";
const LAST_BATCH: &str = "recalloc_embed_last_batch_size";
const LAST_BATCH_HELP: &str = "texts in the most recent forward pass";
const BATCH_SECONDS: &str = "recalloc_embed_batch_duration_seconds";
const BATCH_SECONDS_HELP: &str = "time of one forward pass";

/// Why an encode call failed, before it becomes a gRPC status.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error(transparent)]
    Batch(#[from] BatchError),
}

/// One inference thread's model handle.
struct ThreadEncoder(BertEncoder);

impl BatchEncoder for ThreadEncoder {
    fn encode(&mut self, batch: &[&[i64]]) -> Result<Vec<Vec<f32>>, String> {
        self.0.encode(batch).map_err(|e| e.to_string())
    }
}

pub struct Engine {
    spec: ModelSpec,
    device: String,
    tokenizer: Arc<TextTokenizer>,
    batcher: Arc<Batcher>,
    metrics: Arc<Metrics>,
    max_text_bytes: usize,
}

impl Engine {
    /// Loads the model named by the config, checks it with one forward pass and starts the
    /// inference threads.
    pub fn start(cfg: &EmbedConfig, metrics: Arc<Metrics>) -> Result<Arc<Self>, ModelError> {
        let device = model::parse_device(&cfg.device)?;
        model::enable_cuda(device)?;
        let spec = ModelSpec::read(&cfg.model_dir)?;
        let tokenizer = Arc::new(TextTokenizer::load(&cfg.model_dir, spec.max_seq_length)?);
        let encoder = BertEncoder::load(spec.clone(), device, cfg.half_precision)?;
        let probe = tokenizer
            .ids("warm-up")
            .map_err(|message| ModelError::Invalid {
                path: cfg.model_dir.join("tokenizer.json"),
                message,
            })?;
        let v = encoder.encode(&[&probe])?;
        if v.first().map(Vec::len) != Some(spec.dimension()) {
            return Err(ModelError::Unsupported(
                "the model's output does not have hidden_size components".into(),
            ));
        }
        let threads = cfg.threads_per_worker.max(1) as i32;
        let shared = Mutex::new(encoder);
        let m = metrics.clone();
        let batcher = Batcher::start(
            BatcherConfig {
                max_batch: cfg.max_batch_size as usize,
                max_wait: Duration::from_millis(cfg.max_wait_ms as u64),
                queue_capacity: cfg.queue_capacity as usize,
                workers: cfg.workers as usize,
            },
            move |_| {
                // libtorch's thread count is per OS thread (OpenMP), so set it on each.
                tch::set_num_threads(threads);
                ThreadEncoder(shared.lock().expect("model lock").shallow_clone())
            },
            move |s: BatchStats| record_batch(&m, s),
        );
        tracing::info!(
            model = %spec.name,
            dimension = spec.dimension(),
            max_seq_length = spec.max_seq_length,
            device = %cfg.device,
            workers = cfg.workers,
            threads_per_worker = cfg.threads_per_worker,
            "model loaded"
        );
        Ok(Arc::new(Self {
            spec,
            device: cfg.device.clone(),
            tokenizer,
            batcher,
            metrics,
            max_text_bytes: cfg.max_text_bytes as usize,
        }))
    }

    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    pub fn device(&self) -> &str {
        &self.device
    }

    pub fn max_batch_size(&self) -> usize {
        self.batcher.config().max_batch
    }

    /// Encodes a caller's texts (one vector each, in order). Tokenization runs on the blocking
    /// pool, inference on the batcher's threads; this future only waits.
    pub async fn encode(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EncodeError> {
        self.encode_with(Priority::Interactive, texts).await
    }

    /// Like [`Engine::encode`] in the given priority class (the worker uses `Background`).
    pub async fn encode_with(
        &self,
        priority: Priority,
        texts: Vec<String>,
    ) -> Result<Vec<Vec<f32>>, EncodeError> {
        if let Some((i, t)) = texts
            .iter()
            .enumerate()
            .find(|(_, t)| t.len() > self.max_text_bytes)
        {
            return Err(EncodeError::Invalid {
                field: format!("texts[{i}]"),
                reason: format!(
                    "{} bytes, more than the limit of {} (embed.max_text_bytes)",
                    t.len(),
                    self.max_text_bytes
                ),
            });
        }
        let tokenizer = self.tokenizer.clone();
        let ids = tokio::task::spawn_blocking(move || {
            texts
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    tokenizer.ids(t).map_err(|reason| EncodeError::Invalid {
                        field: format!("texts[{i}]"),
                        reason,
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .map_err(|e| BatchError::Inference(format!("tokenizer task: {e}")))??;
        let rx = self.batcher.submit_with(priority, ids)?;
        self.metrics.set_gauge(
            QUEUE_DEPTH,
            QUEUE_DEPTH_HELP,
            &[],
            self.batcher.queue_depth() as f64,
        );
        let out = rx.await.map_err(|_| BatchError::ShuttingDown)??;
        Ok(out)
    }

    /// Finishes queued work and stops the inference threads.
    pub fn shutdown(&self) {
        self.batcher.shutdown();
    }
}

fn record_batch(m: &Metrics, s: BatchStats) {
    m.inc_counter(TEXTS, TEXTS_HELP, &[], s.size as u64);
    m.inc_counter(BATCHES, BATCHES_HELP, &[], 1);
    m.inc_counter(
        TOKENS,
        TOKENS_HELP,
        &[("kind", "real")],
        s.real_tokens as u64,
    );
    m.inc_counter(
        TOKENS,
        TOKENS_HELP,
        &[("kind", "padded")],
        s.padded_tokens as u64,
    );
    m.set_gauge(LAST_BATCH, LAST_BATCH_HELP, &[], s.size as f64);
    m.set_gauge(QUEUE_DEPTH, QUEUE_DEPTH_HELP, &[], s.queue_depth as f64);
    m.observe(BATCH_SECONDS, BATCH_SECONDS_HELP, &[], s.duration);
}

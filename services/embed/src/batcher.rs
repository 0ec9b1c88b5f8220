//! Dynamic batching: callers' texts wait in one bounded queue; inference threads take batches of
//! up to `max_batch` texts once that many are waiting or the oldest has waited `max_wait`.
//!
//! Two classes share the threads: callers' requests ([`Priority::Interactive`]) are always taken
//! before background work ([`Priority::Background`], the worker re-embedding items); with more
//! than one thread the first one serves callers only, so a backlog of catalogue updates never
//! makes a caller wait for a background batch.
//!
//! A batch is padded to its longest member, so a batch mixing a 5-token title with a 256-token
//! description costs 64 × 256 positions. Each batch therefore takes the oldest waiting text (no
//! starvation) plus the waiting texts nearest to it in length (length bucketing).
//!
//! The queue is bounded in texts: a request that does not fit is refused at once
//! ([`BatchError::Overloaded`], RESOURCE_EXHAUSTED at the gRPC edge) rather than queueing without
//! bound. Inference runs on the batcher's own OS threads, never on the async runtime; each thread
//! owns its model handle and its libtorch thread count.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BatchError {
    #[error("the encode queue is full ({waiting} texts waiting, capacity {capacity}); retry later")]
    Overloaded { waiting: usize, capacity: usize },
    #[error("the encoder is shutting down")]
    ShuttingDown,
    #[error("inference failed: {0}")]
    Inference(String),
}

/// Runs one batch on one thread. Created per inference thread by the factory given to
/// [`Batcher::start`], so it may hold thread-affine state.
pub trait BatchEncoder: Send + 'static {
    fn encode(&mut self, batch: &[&[i64]]) -> Result<Vec<Vec<f32>>, String>;
}

/// Background batches are `max_batch / BACKGROUND_BATCH_DIVISOR` texts.
const BACKGROUND_BATCH_DIVISOR: usize = 4;

/// Which queue a request waits in; interactive work always goes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    Interactive,
    Background,
}

#[derive(Debug, Clone)]
pub struct BatcherConfig {
    pub max_batch: usize,
    pub max_wait: Duration,
    /// Most texts waiting at once, per priority class.
    pub queue_capacity: usize,
    /// Inference threads.
    pub workers: usize,
}

/// What the batcher reports after each batch (for metrics).
#[derive(Debug, Clone, Copy)]
pub struct BatchStats {
    pub size: usize,
    pub padded_tokens: usize,
    pub real_tokens: usize,
    pub queue_depth: usize,
    pub duration: Duration,
}

/// What a caller eventually receives: its vectors in order, or why not.
pub type Vectors = Result<Vec<Vec<f32>>, BatchError>;
type Reply = oneshot::Sender<Vectors>;

/// One caller's request: its results fill in as batches complete, in any order.
struct Request {
    results: Mutex<Vec<Vec<f32>>>,
    remaining: AtomicUsize,
    reply: Mutex<Option<Reply>>,
}

impl Request {
    fn fail(&self, e: BatchError) {
        if let Some(tx) = self.reply.lock().expect("reply lock").take() {
            let _ = tx.send(Err(e));
        }
    }
    fn fill(&self, index: usize, v: Vec<f32>) {
        self.results.lock().expect("results lock")[index] = v;
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1
            && let Some(tx) = self.reply.lock().expect("reply lock").take()
        {
            let all = std::mem::take(&mut *self.results.lock().expect("results lock"));
            let _ = tx.send(Ok(all));
        }
    }
}

struct Pending {
    tokens: Vec<i64>,
    request: Arc<Request>,
    index: usize,
    enqueued: Instant,
}

struct Queue {
    interactive: VecDeque<Pending>,
    background: VecDeque<Pending>,
    closed: bool,
}

impl Queue {
    fn class(&mut self, p: Priority) -> &mut VecDeque<Pending> {
        match p {
            Priority::Interactive => &mut self.interactive,
            Priority::Background => &mut self.background,
        }
    }
    /// The queue to serve next: interactive whenever it has anything, else background unless
    /// this worker is reserved for callers.
    fn next_class(&mut self, takes_background: bool) -> &mut VecDeque<Pending> {
        if self.interactive.is_empty() && takes_background {
            &mut self.background
        } else {
            &mut self.interactive
        }
    }
    fn len(&self) -> usize {
        self.interactive.len() + self.background.len()
    }
    /// Background batches are a quarter of the size, so they hold a thread for less time.
    fn batch_limit(&self, max_batch: usize) -> usize {
        if self.interactive.is_empty() {
            (max_batch / BACKGROUND_BATCH_DIVISOR).max(1)
        } else {
            max_batch
        }
    }
}

struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
    cfg: BatcherConfig,
}

pub struct Batcher {
    shared: Arc<Shared>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl Batcher {
    /// Starts `cfg.workers` inference threads; `make_encoder(i)` runs on thread `i` itself.
    /// `on_batch` is called after every batch.
    pub fn start<E, F, S>(cfg: BatcherConfig, make_encoder: F, on_batch: S) -> Arc<Self>
    where
        E: BatchEncoder,
        F: Fn(usize) -> E + Send + Sync + 'static,
        S: Fn(BatchStats) + Send + Sync + 'static,
    {
        let cfg = BatcherConfig {
            max_batch: cfg.max_batch.max(1),
            workers: cfg.workers.max(1),
            queue_capacity: cfg.queue_capacity.max(1),
            ..cfg
        };
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                interactive: VecDeque::new(),
                background: VecDeque::new(),
                closed: false,
            }),
            ready: Condvar::new(),
            cfg: cfg.clone(),
        });
        let make_encoder = Arc::new(make_encoder);
        let on_batch = Arc::new(on_batch);
        let threads = (0..cfg.workers)
            .map(|i| {
                let shared = shared.clone();
                let make_encoder = make_encoder.clone();
                let on_batch = on_batch.clone();
                std::thread::Builder::new()
                    .name(format!("embed-infer-{i}"))
                    .spawn(move || {
                        let mut encoder = make_encoder(i);
                        worker(&shared, i, &mut encoder, &*on_batch);
                    })
                    .expect("spawn inference thread")
            })
            .collect();
        Arc::new(Self {
            shared,
            threads: Mutex::new(threads),
        })
    }

    /// Queues one caller's token sequences; the receiver yields their vectors in order.
    pub fn submit(&self, texts: Vec<Vec<i64>>) -> Result<oneshot::Receiver<Vectors>, BatchError> {
        self.submit_with(Priority::Interactive, texts)
    }

    /// Queues token sequences in the given priority class.
    pub fn submit_with(
        &self,
        priority: Priority,
        texts: Vec<Vec<i64>>,
    ) -> Result<oneshot::Receiver<Vectors>, BatchError> {
        let (tx, rx) = oneshot::channel();
        if texts.is_empty() {
            let _ = tx.send(Ok(Vec::new()));
            return Ok(rx);
        }
        let n = texts.len();
        let request = Arc::new(Request {
            results: Mutex::new(vec![Vec::new(); n]),
            remaining: AtomicUsize::new(n),
            reply: Mutex::new(Some(tx)),
        });
        let mut q = self.shared.queue.lock().expect("queue lock");
        if q.closed {
            return Err(BatchError::ShuttingDown);
        }
        let capacity = self.shared.cfg.queue_capacity;
        // A request larger than the whole queue still goes through when the queue is empty, so
        // the limit bounds memory without making big requests impossible.
        let queue = q.class(priority);
        if !queue.is_empty() && queue.len() + n > capacity {
            return Err(BatchError::Overloaded {
                waiting: queue.len(),
                capacity,
            });
        }
        let now = Instant::now();
        queue.extend(
            texts
                .into_iter()
                .enumerate()
                .map(|(index, tokens)| Pending {
                    tokens,
                    request: request.clone(),
                    index,
                    enqueued: now,
                }),
        );
        drop(q);
        self.shared.ready.notify_all();
        Ok(rx)
    }

    /// Texts waiting now.
    pub fn queue_depth(&self) -> usize {
        self.shared.queue.lock().expect("queue lock").len()
    }

    pub fn config(&self) -> &BatcherConfig {
        &self.shared.cfg
    }

    /// Finishes what is queued, then stops the threads.
    pub fn shutdown(&self) {
        self.shared.queue.lock().expect("queue lock").closed = true;
        self.shared.ready.notify_all();
        for t in self.threads.lock().expect("threads lock").drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Batcher {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn worker(
    shared: &Shared,
    index: usize,
    encoder: &mut dyn BatchEncoder,
    on_batch: &dyn Fn(BatchStats),
) {
    let cfg = &shared.cfg;
    // With several threads the first never takes background work, so a caller never waits
    // behind a catalogue backlog (measured: single-text Embed p99 443 ms during a re-embedding
    // backlog when every thread took background batches).
    let takes_background = cfg.workers == 1 || index > 0;
    loop {
        let (batch, depth) = {
            let mut q = shared.queue.lock().expect("queue lock");
            loop {
                let closed = q.closed;
                let limit = q.batch_limit(cfg.max_batch);
                let next = q.next_class(takes_background);
                if !next.is_empty() {
                    let oldest = next[0].enqueued;
                    let deadline = oldest + cfg.max_wait;
                    let now = Instant::now();
                    if next.len() >= limit || closed || now >= deadline {
                        break;
                    }
                    q = shared
                        .ready
                        .wait_timeout(q, deadline - now)
                        .expect("queue lock")
                        .0;
                } else if q.closed {
                    return;
                } else {
                    q = shared.ready.wait(q).expect("queue lock");
                }
            }
            let limit = q.batch_limit(cfg.max_batch);
            let batch = take_batch(q.next_class(takes_background), limit);
            (batch, q.len())
        };
        // Others may be able to start a batch from what is left.
        shared.ready.notify_all();
        let started = Instant::now();
        let seqs: Vec<&[i64]> = batch.iter().map(|p| p.tokens.as_slice()).collect();
        let longest = seqs.iter().map(|s| s.len()).max().unwrap_or(0);
        let real_tokens = seqs.iter().map(|s| s.len()).sum();
        let size = seqs.len();
        let result = encoder.encode(&seqs);
        drop(seqs);
        match result {
            Ok(vectors) if vectors.len() == batch.len() => {
                for (p, v) in batch.into_iter().zip(vectors) {
                    p.request.fill(p.index, v);
                }
            }
            Ok(vectors) => {
                let e = BatchError::Inference(format!(
                    "{} vectors for {} texts",
                    vectors.len(),
                    batch.len()
                ));
                batch.iter().for_each(|p| p.request.fail(e.clone()));
            }
            Err(e) => {
                tracing::error!(error = %e, batch = batch.len(), "inference failed");
                let e = BatchError::Inference(e);
                batch.iter().for_each(|p| p.request.fail(e.clone()));
            }
        }
        on_batch(BatchStats {
            size,
            padded_tokens: longest * size,
            real_tokens,
            queue_depth: depth,
            duration: started.elapsed(),
        });
    }
}

/// Removes and returns one batch: the oldest text plus the `max - 1` waiting texts nearest to it
/// in token length, chosen as the window of the length-sorted queue that contains the oldest and
/// spans the smallest length range.
fn take_batch(items: &mut VecDeque<Pending>, max: usize) -> Vec<Pending> {
    if items.len() <= max {
        return items.drain(..).collect();
    }
    let mut order: Vec<usize> = (0..items.len()).collect();
    // Stable: equal lengths keep arrival order, so older texts go first.
    order.sort_by_key(|&i| items[i].tokens.len());
    let pos = order
        .iter()
        .position(|&i| i == 0)
        .expect("oldest is queued");
    let len_at = |k: usize| items[order[k]].tokens.len();
    let first_start = pos.saturating_sub(max - 1);
    let last_start = pos.min(order.len() - max);
    let start = (first_start..=last_start)
        .min_by_key(|&s| len_at(s + max - 1) - len_at(s))
        .expect("non-empty range");
    let mut chosen: Vec<usize> = order[start..start + max].to_vec();
    chosen.sort_unstable();
    let mut taken = Vec::with_capacity(max);
    for (removed, i) in chosen.into_iter().enumerate() {
        taken.push(items.remove(i - removed).expect("index in range"));
    }
    taken
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encodes a sequence as [sum of ids, length]; records the batches it saw.
    struct Fake {
        seen: Arc<Mutex<Vec<Vec<usize>>>>,
        delay: Duration,
    }

    impl BatchEncoder for Fake {
        fn encode(&mut self, batch: &[&[i64]]) -> Result<Vec<Vec<f32>>, String> {
            std::thread::sleep(self.delay);
            self.seen
                .lock()
                .unwrap()
                .push(batch.iter().map(|s| s.len()).collect());
            Ok(batch
                .iter()
                .map(|s| vec![s.iter().sum::<i64>() as f32, s.len() as f32])
                .collect())
        }
    }

    /// Token lengths of each batch the fake encoder saw, in order.
    type Seen = Arc<Mutex<Vec<Vec<usize>>>>;

    fn start(cfg: BatcherConfig, delay: Duration) -> (Arc<Batcher>, Seen) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let b = Batcher::start(
            cfg,
            move |_| Fake {
                seen: s.clone(),
                delay,
            },
            |_| {},
        );
        (b, seen)
    }

    fn cfg(max_batch: usize, queue_capacity: usize, workers: usize) -> BatcherConfig {
        BatcherConfig {
            max_batch,
            max_wait: Duration::from_millis(5),
            queue_capacity,
            workers,
        }
    }

    fn pending(len: usize) -> Pending {
        let (tx, _rx) = oneshot::channel();
        Pending {
            tokens: vec![1; len],
            request: Arc::new(Request {
                results: Mutex::new(vec![Vec::new()]),
                remaining: AtomicUsize::new(1),
                reply: Mutex::new(Some(tx)),
            }),
            index: 0,
            enqueued: Instant::now(),
        }
    }

    #[test]
    fn a_batch_holds_the_oldest_and_its_nearest_lengths() {
        let mut q: VecDeque<Pending> = [50, 3, 200, 48, 4, 52, 49, 5]
            .into_iter()
            .map(pending)
            .collect();
        let batch = take_batch(&mut q, 4);
        let mut lens: Vec<usize> = batch.iter().map(|p| p.tokens.len()).collect();
        lens.sort();
        assert_eq!(lens, vec![48, 49, 50, 52]);
        let left: Vec<usize> = q.iter().map(|p| p.tokens.len()).collect();
        assert_eq!(left, vec![3, 200, 4, 5], "the rest keeps arrival order");
    }

    #[test]
    fn a_short_queue_goes_whole() {
        let mut q: VecDeque<Pending> = [7, 1, 9].into_iter().map(pending).collect();
        assert_eq!(take_batch(&mut q, 8).len(), 3);
        assert!(q.is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_callers_get_their_own_vectors_in_order() {
        let (b, seen) = start(cfg(16, 100_000, 2), Duration::from_micros(200));
        let mut tasks = Vec::new();
        for caller in 0..32i64 {
            let b = b.clone();
            tasks.push(tokio::spawn(async move {
                // Varied lengths so batches mix callers and reorder texts.
                let texts: Vec<Vec<i64>> = (0..(caller % 7 + 1) * 5)
                    .map(|j| vec![caller * 1000 + j; (j as usize * 7 + caller as usize) % 23 + 1])
                    .collect();
                let want: Vec<Vec<f32>> = texts
                    .iter()
                    .map(|t| vec![t.iter().sum::<i64>() as f32, t.len() as f32])
                    .collect();
                let got = b.submit(texts).unwrap().await.unwrap().unwrap();
                assert_eq!(got, want, "caller {caller}");
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let batches = seen.lock().unwrap();
        assert!(batches.iter().all(|b| b.len() <= 16));
        assert!(
            batches.iter().any(|b| b.len() > 1),
            "requests were batched together"
        );
    }

    #[tokio::test]
    async fn a_full_queue_refuses_instead_of_growing() {
        // One slow worker busy with the first request; the queue holds 10 texts.
        let (b, _) = start(cfg(4, 10, 1), Duration::from_millis(300));
        let first = b.submit(vec![vec![1]; 4]).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let second = b.submit(vec![vec![1]; 8]).unwrap();
        let refused = b.submit(vec![vec![1]; 3]);
        assert_eq!(
            refused.unwrap_err(),
            BatchError::Overloaded {
                waiting: 8,
                capacity: 10
            }
        );
        // What was accepted still completes.
        assert_eq!(first.await.unwrap().unwrap().len(), 4);
        assert_eq!(second.await.unwrap().unwrap().len(), 8);
        // And there is room again.
        assert_eq!(
            b.submit(vec![vec![2]; 3])
                .unwrap()
                .await
                .unwrap()
                .unwrap()
                .len(),
            3
        );
    }

    #[tokio::test]
    async fn interactive_requests_overtake_background_work() {
        let (b, seen) = start(cfg(4, 1000, 1), Duration::from_millis(30));
        // A background backlog of 10 batches (length 3), then one interactive request
        // (length 7) while the first background batch runs.
        let bg = b
            .submit_with(Priority::Background, vec![vec![1; 3]; 40])
            .unwrap();
        std::thread::sleep(Duration::from_millis(10));
        let fg = b.submit(vec![vec![2; 7]; 4]).unwrap();
        assert_eq!(fg.await.unwrap().unwrap().len(), 4);
        let order: Vec<usize> = seen.lock().unwrap().iter().map(|b| b[0]).collect();
        assert!(
            order.len() <= 3 && order.last() == Some(&7),
            "the interactive batch ran right after the one in progress: {order:?}"
        );
        assert_eq!(bg.await.unwrap().unwrap().len(), 40);
    }

    #[tokio::test]
    async fn shutdown_finishes_what_was_queued() {
        let (b, _) = start(cfg(2, 100, 1), Duration::from_millis(20));
        let rx = b.submit(vec![vec![1]; 7]).unwrap();
        let b2 = b.clone();
        std::thread::spawn(move || b2.shutdown()).join().unwrap();
        assert_eq!(rx.await.unwrap().unwrap().len(), 7);
        assert_eq!(
            b.submit(vec![vec![1]]).unwrap_err(),
            BatchError::ShuttingDown
        );
    }

    #[tokio::test]
    async fn inference_errors_reach_every_caller_in_the_batch() {
        struct Failing;
        impl BatchEncoder for Failing {
            fn encode(&mut self, _: &[&[i64]]) -> Result<Vec<Vec<f32>>, String> {
                Err("boom".into())
            }
        }
        let b = Batcher::start(cfg(8, 100, 1), |_| Failing, |_| {});
        let a = b.submit(vec![vec![1]; 2]).unwrap();
        let c = b.submit(vec![vec![1]; 2]).unwrap();
        assert_eq!(
            a.await.unwrap().unwrap_err(),
            BatchError::Inference("boom".into())
        );
        assert!(c.await.unwrap().is_err());
    }
}

//! The `recalloc.v1.Ingest` gRPC adapter: validate, preprocess, produce, answer. Domain errors are
//! [`IngestError`]; they become gRPC statuses only here.
//!
//! Batch semantics (also in the README): valid records of a mixed batch are produced and counted
//! in `accepted`; invalid ones are listed in `rejected` with index, field and reason. A batch with
//! no valid record answers INVALID_ARGUMENT, an empty or oversized batch too. If the broker does
//! not acknowledge every valid record in time the call answers UNAVAILABLE: retrying the same
//! batch is safe, since event ids make the effect idempotent.

use crate::producer::{EventProducer, Outgoing};
use crate::validate::{self, Limits, RecordError};
use prost::Message;
use recalloc_common::Metrics;
use recalloc_common::redis_conn::{RedisConnection, RedisTarget};
use recalloc_common::trace_context;
use recalloc_proto::topics;
use recalloc_proto::v1::{
    self, GetStatsRequest, IngestResponse, RecordEventsRequest, Stats, UpsertItemsRequest,
    UpsertUsersRequest, ingest_server::Ingest,
};
use recalloc_stream::headers::trace_headers;
use std::collections::HashSet;
use std::sync::Arc;
use tokio::sync::OnceCell;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("{field}: {reason}")]
    InvalidBatch { field: &'static str, reason: String },
    #[error("no record was valid: {}", summarize(.0))]
    AllRejected(Vec<RecordError>),
    #[error(
        "{failed} of {total} records were not acknowledged by the broker ({first}); {accepted_before} records of this stream were accepted before; retry the batch, ids make it idempotent"
    )]
    Unavailable {
        failed: usize,
        total: usize,
        first: String,
        accepted_before: u32,
    },
    #[error("redis unavailable: {0}")]
    Redis(String),
}

fn summarize(errors: &[RecordError]) -> String {
    let mut s: Vec<String> = errors.iter().take(10).map(|e| e.to_string()).collect();
    if errors.len() > 10 {
        s.push(format!("and {} more", errors.len() - 10));
    }
    s.join("; ")
}

impl From<IngestError> for Status {
    fn from(e: IngestError) -> Self {
        let msg = e.to_string();
        match e {
            IngestError::InvalidBatch { .. } | IngestError::AllRejected(_) => {
                Status::invalid_argument(msg)
            }
            IngestError::Unavailable { .. } | IngestError::Redis(_) => Status::unavailable(msg),
        }
    }
}

/// What a validated batch turns into before it is sent.
#[derive(Default)]
struct Prepared {
    messages: Vec<Outgoing>,
    response: IngestResponse,
}

pub struct IngestService {
    producer: EventProducer,
    limits: Limits,
    max_batch: usize,
    redis_target: RedisTarget,
    redis: OnceCell<RedisConnection>,
    metrics: Arc<Metrics>,
}

const RECORDS: &str = "recalloc_ingest_records_total";
const RECORDS_HELP: &str = "records received by ingest, by topic and outcome";

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl IngestService {
    pub fn new(
        producer: EventProducer,
        limits: Limits,
        max_batch: usize,
        redis_target: RedisTarget,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            producer,
            limits,
            max_batch,
            redis_target,
            redis: OnceCell::new(),
            metrics,
        }
    }

    fn check_size(&self, field: &'static str, n: usize) -> Result<(), IngestError> {
        if n == 0 {
            return Err(IngestError::InvalidBatch {
                field,
                reason: "empty batch".into(),
            });
        }
        if n > self.max_batch {
            return Err(IngestError::InvalidBatch {
                field,
                reason: format!(
                    "batch of {n} records exceeds the limit of {}",
                    self.max_batch
                ),
            });
        }
        Ok(())
    }

    fn prepare_events(
        &self,
        events: &[v1::Event],
        first_index: u32,
        seen: &mut HashSet<String>,
    ) -> Prepared {
        let now = now_ms();
        let mut p = Prepared::default();
        for (i, e) in events.iter().enumerate() {
            let index = first_index + i as u32;
            match validate::event(index, e, now, now, &self.limits) {
                Ok(rec) => {
                    if !seen.insert(rec.event_id.clone()) {
                        p.response.duplicates += 1;
                        continue;
                    }
                    p.response.clipped += u32::from(rec.value_clipped);
                    p.response.filled += u32::from(rec.value_filled || rec.timestamp_filled);
                    p.messages.push(Outgoing {
                        key: rec.user_id.clone(),
                        payload: rec.encode_to_vec(),
                    });
                }
                Err(e) => p.response.rejected.push(e.into()),
            }
        }
        p
    }

    /// Sends what validated; fills `accepted` or fails with UNAVAILABLE.
    async fn send(
        &self,
        topic: &'static str,
        mut p: Prepared,
        accepted_before: u32,
    ) -> Result<IngestResponse, IngestError> {
        let total = p.messages.len();
        let rejected = p.response.rejected.len() as u64;
        let duplicates = u64::from(p.response.duplicates);
        let publish = tracing::info_span!(
            "publish",
            otel.name = %format_args!("{topic} publish"),
            otel.kind = "producer",
            messaging.system = "kafka",
            messaging.destination.name = topic,
            messaging.batch.message_count = total,
        );
        // The records carry the publish span's context (a child of the call's span) in their
        // headers, so each consumer's span continues the call's trace.
        let headers = trace_context::propagation_of(&publish)
            .map(|(parent, state)| trace_headers(&parent, state.as_deref()));
        let outcome = self
            .producer
            .send_all(topic, std::mem::take(&mut p.messages), headers)
            .instrument(publish)
            .await;
        let failed: Vec<&String> = outcome.iter().flatten().collect();
        let acked = (total - failed.len()) as u64;
        let count = |outcome: &str, n: u64| {
            if n > 0 {
                self.metrics.inc_counter(
                    RECORDS,
                    RECORDS_HELP,
                    &[("topic", topic), ("outcome", outcome)],
                    n,
                );
            }
        };
        count("accepted", acked);
        count("rejected", rejected);
        count("duplicate", duplicates);
        count("unacknowledged", failed.len() as u64);
        if let Some(first) = failed.first() {
            tracing::warn!(failed = failed.len(), total, error = %first, "broker did not acknowledge");
            return Err(IngestError::Unavailable {
                failed: failed.len(),
                total,
                first: (*first).clone(),
                accepted_before,
            });
        }
        p.response.accepted = total as u32;
        if total == 0 && !p.response.rejected.is_empty() {
            let errors = p
                .response
                .rejected
                .iter()
                .map(|r| RecordError {
                    index: r.index,
                    field: field_name(&r.field),
                    reason: r.reason.clone(),
                })
                .collect();
            return Err(IngestError::AllRejected(errors));
        }
        tracing::debug!(topic, accepted = total, "batch acknowledged");
        Ok(p.response)
    }

    async fn redis(&self) -> Result<RedisConnection, IngestError> {
        self.redis
            .get_or_try_init(|| async {
                self.redis_target
                    .connect()
                    .await
                    .map_err(|e| IngestError::Redis(e.to_string()))
            })
            .await
            .cloned()
    }
}

/// Maps a field name back to the static names validation uses.
fn field_name(f: &str) -> &'static str {
    [
        "user_id",
        "item_id",
        "event_id",
        "kind",
        "value",
        "timestamp_ms",
        "context",
        "title",
        "description",
        "tags",
        "attributes",
        "profile_text",
    ]
    .into_iter()
    .find(|k| *k == f)
    .unwrap_or("record")
}

impl From<RecordError> for v1::RecordError {
    fn from(e: RecordError) -> Self {
        Self {
            index: e.index,
            field: e.field.to_owned(),
            reason: e.reason,
        }
    }
}

#[tonic::async_trait]
impl Ingest for IngestService {
    async fn record_events(
        &self,
        req: Request<RecordEventsRequest>,
    ) -> Result<Response<IngestResponse>, Status> {
        let events = req.into_inner().events;
        self.check_size("events", events.len())?;
        let prepared = self.prepare_events(&events, 0, &mut HashSet::new());
        let resp = self.send(topics::EVENTS, prepared, 0).await?;
        Ok(Response::new(resp))
    }

    async fn stream_events(
        &self,
        req: Request<Streaming<RecordEventsRequest>>,
    ) -> Result<Response<IngestResponse>, Status> {
        let mut stream = req.into_inner();
        let mut total = IngestResponse::default();
        let mut seen = HashSet::new();
        let mut next_index = 0u32;
        while let Some(batch) = stream.message().await? {
            let n = batch.events.len();
            self.check_size("events", n)?;
            let prepared = self.prepare_events(&batch.events, next_index, &mut seen);
            next_index += n as u32;
            let mut r = match self.send(topics::EVENTS, prepared, total.accepted).await {
                Ok(r) => r,
                // A batch of only bad records doesn't end the stream; the summary lists them.
                Err(IngestError::AllRejected(errors)) => IngestResponse {
                    rejected: errors.into_iter().map(Into::into).collect(),
                    ..Default::default()
                },
                Err(e) => return Err(e.into()),
            };
            total.accepted += r.accepted;
            total.duplicates += r.duplicates;
            total.clipped += r.clipped;
            total.filled += r.filled;
            total.rejected.append(&mut r.rejected);
        }
        Ok(Response::new(total))
    }

    async fn upsert_items(
        &self,
        req: Request<UpsertItemsRequest>,
    ) -> Result<Response<IngestResponse>, Status> {
        let items = req.into_inner().items;
        self.check_size("items", items.len())?;
        let now = now_ms();
        let mut p = Prepared::default();
        for (i, it) in items.iter().enumerate() {
            match validate::item(i as u32, it, now, &self.limits) {
                Ok(rec) => p.messages.push(Outgoing {
                    key: rec
                        .item
                        .as_ref()
                        .map(|i| i.item_id.clone())
                        .unwrap_or_default(),
                    payload: rec.encode_to_vec(),
                }),
                Err(e) => p.response.rejected.push(e.into()),
            }
        }
        let resp = self.send(topics::ITEMS, p, 0).await?;
        Ok(Response::new(resp))
    }

    async fn upsert_users(
        &self,
        req: Request<UpsertUsersRequest>,
    ) -> Result<Response<IngestResponse>, Status> {
        let users = req.into_inner().users;
        self.check_size("users", users.len())?;
        let now = now_ms();
        let mut p = Prepared::default();
        for (i, u) in users.iter().enumerate() {
            match validate::user(i as u32, u, now, &self.limits) {
                Ok(rec) => p.messages.push(Outgoing {
                    key: rec
                        .user
                        .as_ref()
                        .map(|u| u.user_id.clone())
                        .unwrap_or_default(),
                    payload: rec.encode_to_vec(),
                }),
                Err(e) => p.response.rejected.push(e.into()),
            }
        }
        let resp = self.send(topics::USERS, p, 0).await?;
        Ok(Response::new(resp))
    }

    async fn get_stats(&self, _req: Request<GetStatsRequest>) -> Result<Response<Stats>, Status> {
        let mut con = self.redis().await?;
        let c = recalloc_store::counts::counts(&mut con)
            .await
            .map_err(|e| IngestError::Redis(e.to_string()))?;
        Ok(Response::new(Stats {
            events: c.events,
            users: c.users,
            items: c.items,
            ratings: c.ratings,
            embedded_items: c.embedded_items,
            embedded_users: c.embedded_users,
        }))
    }
}

//! The Kafka producer: acks=all, so a record counts as accepted only once every in-sync replica
//! has it. With `kafka.idempotence` (the default) librdkafka's retries never duplicate or
//! reorder a record, with up to 5 requests in flight per connection; without it one request in
//! flight keeps each partition in order, and a duplicate a retry may write is ignored downstream
//! by its event id.

use rdkafka::ClientConfig;
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use recalloc_common::config::KafkaConfig;
use std::time::Duration;

/// One message to send.
pub struct Outgoing {
    pub key: String,
    pub payload: Vec<u8>,
}

#[derive(Clone)]
pub struct EventProducer {
    producer: FutureProducer,
}

impl EventProducer {
    pub fn new(cfg: &KafkaConfig) -> Result<Self, rdkafka::error::KafkaError> {
        let mut config = ClientConfig::new();
        if cfg.idempotence {
            config
                .set("enable.idempotence", "true")
                .set("max.in.flight.requests.per.connection", "5");
        } else {
            config
                .set("enable.idempotence", "false")
                .set("max.in.flight.requests.per.connection", "1");
        }
        let producer: FutureProducer = config
            .set("bootstrap.servers", &cfg.brokers)
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("batch.num.messages", "10000")
            .set(
                "request.timeout.ms",
                cfg.message_timeout_ms.min(30_000).to_string(),
            )
            .set("queue.buffering.max.messages", "1000000")
            .set("message.timeout.ms", cfg.message_timeout_ms.to_string())
            .set("client.id", "recalloc-ingest")
            .create()?;
        Ok(Self { producer })
    }

    /// Sends every message, each with `headers`, and waits for each acknowledgement. Returns,
    /// per message, `None` when the broker acknowledged it or the error that made it fail.
    pub async fn send_all(
        &self,
        topic: &str,
        messages: Vec<Outgoing>,
        headers: Option<OwnedHeaders>,
    ) -> Vec<Option<String>> {
        let futures = messages.iter().map(|m| {
            let mut record = FutureRecord::to(topic).key(&m.key).payload(&m.payload);
            if let Some(h) = &headers {
                record = record.headers(h.clone());
            }
            // Waiting for queue space (instead of failing at once) is the back-pressure; the
            // message timeout still bounds how long a record can wait for the broker.
            self.producer.send(record, Timeout::Never)
        });
        futures::future::join_all(futures)
            .await
            .into_iter()
            .map(|r| r.err().map(|(e, _)| e.to_string()))
            .collect()
    }

    /// Asks the broker for metadata: the readiness probe's Kafka check.
    pub async fn check(&self) -> Result<(), String> {
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(None, Timeout::After(Duration::from_secs(3)))
                .map(|_| ())
                .map_err(|e| format!("kafka: {e}"))
        })
        .await
        .map_err(|e| format!("kafka check panicked: {e}"))?
    }

    /// Delivers what is queued, up to `timeout`: the last phase of shutdown.
    pub async fn flush(&self, timeout: Duration) {
        let producer = self.producer.clone();
        let _ = tokio::task::spawn_blocking(move || producer.flush(Timeout::After(timeout))).await;
    }
}

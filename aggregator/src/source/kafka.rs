//! `kafka://host:port/topic` — every partition of a Kafka topic.
//!
//! The consumer is assigned all partitions explicitly (no consumer-group
//! rebalancing) and never commits offsets to Kafka: the offsets live in the
//! pipeline's checkpoint next to its state, so both always agree (as in Spark
//! Structured Streaming). A `group.id` is set only because librdkafka wants one.
//!
//! Partitions added to the topic while a pipeline runs are picked up at its next
//! start. librdkafka reconnects by itself; while a broker is down, polls return
//! errors, which the pipeline retries with backoff (see `runner::with_retry`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kafka_conf::{ClientError, ClientErrors, KafkaUri};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::error::{Error, Result};
use crate::source::{RawBatch, Source, SourceOffset, SourceOptions};

/// Our consumer settings; `--consumer-conf` overrides any of them.
const CONSUMER_DEFAULTS: &[(&str, &str)] = &[
    ("group.id", "sql-aggregator"),
    ("enable.auto.commit", "false"),
    ("enable.auto.offset.store", "false"),
    ("auto.offset.reset", "earliest"),
    ("enable.partition.eof", "false"),
];

/// How often the high watermarks (for lag, progress and idleness) are refreshed.
const HIGH_WATERMARK_REFRESH: Duration = Duration::from_secs(2);
/// How long a high-watermark request may take.
const WATERMARK_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the first poll of a micro-batch waits for a record.
const FIRST_POLL: Duration = Duration::from_millis(100);

/// Where a partition stands.
#[derive(Debug, Clone)]
struct PartitionState {
    /// `topic/partition`, shown in bad and late records.
    name: String,
    /// The offset of the first record still in the partition.
    low: i64,
    /// The offset after the last record, at the last refresh.
    high: i64,
    /// The offset of the next record to read.
    next: i64,
    /// When the partition last had something to read.
    last_busy: Instant,
}

pub struct KafkaSource {
    uri: KafkaUri,
    consumer: BaseConsumer<ClientErrors>,
    partitions: BTreeMap<i32, PartitionState>,
    /// High watermarks when the source was opened.
    end_at_open: BTreeMap<i32, i64>,
    high_refreshed: Instant,
    idle_timeout: Duration,
    /// The connection error librdkafka reported last, until a record or a watermark
    /// answer shows the broker is back. (librdkafka reconnects by itself and queues
    /// its errors for the poll, in order with the records.) A slow broker is not a
    /// down one: a watermark request that times out does not count.
    unreachable: Option<String>,
    /// Whether the last micro-batch emptied librdkafka's local queue. While records
    /// stream in, the watermark requests wait (they would queue behind large fetch
    /// responses on the same connection and time out).
    drained: bool,
}

fn external(uri: &KafkaUri, what: impl std::fmt::Display) -> Error {
    Error::external(format!("source {uri}: {what}"))
}

impl KafkaSource {
    /// Connects, finds the topic's partitions and their watermarks, and assigns them
    /// all at `offset` (from the beginning where the offset does not say).
    pub fn open(uri: &str, offset: &SourceOffset, options: &SourceOptions) -> Result<Self> {
        let uri = KafkaUri::parse(uri).map_err(|e| Error::user(e.to_string()))?;
        let resume_at = match offset {
            SourceOffset::Start => BTreeMap::new(),
            SourceOffset::Kafka { next } => next.clone(),
            SourceOffset::File { .. } => {
                return Err(Error::user(format!(
                    "source {uri}: the checkpoint holds a file-log offset; remove the pipeline's checkpoint to start over on Kafka"
                )));
            }
        };
        tracing::debug!(source = %uri, settings = %kafka_conf::redacted(&options.consumer_conf), "connecting");
        let consumer: BaseConsumer<ClientErrors> =
            kafka_conf::client_config(&uri, CONSUMER_DEFAULTS, &options.consumer_conf)
                .create_with_context(ClientErrors::default())
                .map_err(|e| Error::user(format!("source {}", ClientError::setting(&uri, &e))))?;
        // Polling (nothing is assigned yet) delivers librdkafka's error reports, so a
        // wrong password or an untrusted certificate fails at once, as a user error.
        let count = kafka_conf::connect(consumer.client(), &uri, |wait| {
            let _ = consumer.poll(wait);
        })
        .map_err(|e| {
            if e.is_permanent() { Error::user(format!("source {e}")) } else { Error::external(e.to_string()) }
        })?;
        if count == 0 {
            return Err(external(&uri, "the topic does not exist (yet)"));
        }
        let now = Instant::now();
        let mut partitions = BTreeMap::new();
        let mut assignment = TopicPartitionList::new();
        for p in 0..count as i32 {
            let (low, high) = consumer
                .fetch_watermarks(&uri.topic, p, kafka_conf::METADATA_TIMEOUT)
                .map_err(|e| external(&uri, format!("partition {p}: {e}")))?;
            let next = resume_at.get(&p).copied().unwrap_or(low).max(low);
            if resume_at.get(&p).is_some_and(|&at| at < low) {
                tracing::warn!(source = %uri, partition = p, resume_at = resume_at[&p], low, "records were deleted (retention) before they were read; continuing at the earliest offset");
            }
            assignment
                .add_partition_offset(&uri.topic, p, Offset::Offset(next))
                .map_err(|e| Error::internal(e.to_string()))?;
            let name = format!("{}/{p}", uri.topic);
            partitions.insert(p, PartitionState { name, low, high, next, last_busy: now });
        }
        consumer.assign(&assignment).map_err(|e| external(&uri, e))?;
        let end_at_open = partitions.iter().map(|(p, s)| (*p, s.high)).collect();
        tracing::info!(source = %uri, partitions = count, "assigned");
        Ok(KafkaSource {
            uri,
            consumer,
            partitions,
            end_at_open,
            high_refreshed: now,
            idle_timeout: options.idle_timeout,
            unreachable: None,
            drained: true,
        })
    }

    fn position(&self) -> SourceOffset {
        SourceOffset::Kafka { next: self.partitions.iter().map(|(p, s)| (*p, s.next)).collect() }
    }

    /// Asks the broker for the high watermarks now and then (a round trip per partition).
    fn refresh_high_watermarks(&mut self) {
        if !self.drained || self.high_refreshed.elapsed() < HIGH_WATERMARK_REFRESH {
            return;
        }
        self.high_refreshed = Instant::now();
        for (p, state) in &mut self.partitions {
            match self.consumer.fetch_watermarks(&self.uri.topic, *p, WATERMARK_TIMEOUT) {
                Ok((low, high)) => {
                    (state.low, state.high) = (low, high);
                    self.unreachable = None;
                }
                Err(_) => break,
            }
            if state.high > state.next {
                state.last_busy = Instant::now();
            }
        }
    }
}

impl Source for KafkaSource {
    fn next_batch(&mut self, max_records: usize) -> Result<Option<RawBatch>> {
        self.refresh_high_watermarks();
        let mut batch = RawBatch::default();
        let now = Instant::now();
        self.drained = false;
        while batch.len() < max_records {
            let wait = if batch.is_empty() { FIRST_POLL } else { Duration::ZERO };
            match self.consumer.poll(wait) {
                None => {
                    self.drained = true;
                    break;
                }
                Some(Ok(message)) => {
                    let p = message.partition();
                    let Some(state) = self.partitions.get_mut(&p) else { continue };
                    batch.push_record(message.payload().unwrap_or_default(), &state.name, p, message.offset() as u64);
                    state.next = message.offset() + 1;
                    state.last_busy = now;
                    self.unreachable = None;
                }
                Some(Err(e)) => {
                    tracing::debug!(source = %self.uri, error = %e, "consumer error");
                    self.unreachable = Some(format!("broker not answering: {e}"));
                }
            }
        }
        if batch.is_empty() {
            return match &self.unreachable {
                Some(why) => Err(external(&self.uri, why)),
                None => Ok(None),
            };
        }
        batch.end = self.position();
        Ok(Some(batch))
    }

    fn end_at_open(&self) -> SourceOffset {
        SourceOffset::Kafka { next: self.end_at_open.clone() }
    }

    fn reached(&self, until: &SourceOffset) -> bool {
        match until {
            SourceOffset::Start => true,
            SourceOffset::Kafka { next } => {
                next.iter().all(|(p, end)| self.partitions.get(p).is_none_or(|s| s.next >= *end))
            }
            SourceOffset::File { .. } => false,
        }
    }

    fn progress(&self, until: &SourceOffset) -> f64 {
        let SourceOffset::Kafka { next } = until else { return if self.reached(until) { 1.0 } else { 0.0 } };
        let (mut done, mut total) = (0i64, 0i64);
        for (p, end) in next {
            if let Some(s) = self.partitions.get(p) {
                done += (s.next.min(*end) - s.low).max(0);
                total += (end - s.low).max(0);
            }
        }
        if total == 0 { 1.0 } else { done as f64 / total as f64 }
    }

    fn lag(&self) -> u64 {
        self.partitions.values().map(|s| (s.high - s.next).max(0) as u64).sum()
    }

    fn partitions(&self) -> Vec<(i32, bool)> {
        self.partitions
            .iter()
            .map(|(p, s)| (*p, s.high <= s.next && s.last_busy.elapsed() >= self.idle_timeout))
            .collect()
    }
}

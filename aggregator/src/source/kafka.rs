//! `kafka://host:port/topic` — every partition of a Kafka topic.
//!
//! The consumer is assigned all partitions explicitly (no consumer-group
//! rebalancing) and never commits offsets to Kafka: the offsets live in the
//! pipeline's checkpoint next to its state, so both always agree (as in Spark
//! Structured Streaming). A `group.id` is set only because librdkafka wants one.
//!
//! A micro-batch is, for each partition, the records from where the last batch ended
//! up to some offset, in partition order then offset order — never in the order the
//! polls happened to bring them. So a batch is described by where it ends, and reading
//! the same range again (after a crash, from the offset log) gives the same batch.
//! Records polled beyond a batch wait in a buffer for the next one.
//!
//! Partitions added to the topic while a pipeline runs are picked up at its next
//! start. librdkafka reconnects by itself; while a broker is down, polls return
//! errors, which the pipeline retries with backoff (see `runner::with_retry`).

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use kafka_conf::{ClientError, ClientErrors, KafkaUri};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
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
    // librdkafka stops fetching a partition whose local queue is full for this long
    // (1 s by default). A pipeline takes its records in micro-batches and lets the
    // queue fill while it processes one: with the default it then waits, idle, for
    // most of a second per batch (2M events from a 3-partition topic: 15 s instead of
    // 3.5 s).
    ("fetch.queue.backoff.ms", "50"),
];

/// How often the high watermarks (for lag, progress and idleness) are refreshed.
const HIGH_WATERMARK_REFRESH: Duration = Duration::from_secs(2);
/// How long a high-watermark request may take.
const WATERMARK_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the first poll of a micro-batch waits for a record.
const FIRST_POLL: Duration = Duration::from_millis(100);
/// How long one call reading a logged batch again polls before it reports "not yet".
const READ_UNTIL_BUDGET: Duration = Duration::from_secs(1);

/// Where a partition stands.
#[derive(Debug)]
struct PartitionState {
    /// `topic/partition`, shown in bad and late records.
    name: String,
    /// The offset of the first record still in the partition.
    low: i64,
    /// The offset after the last record, at the last refresh.
    high: i64,
    /// The offset of the next record to hand out in a batch.
    next: i64,
    /// The offset after the last record polled (`next` plus what waits in `buffered`).
    polled: i64,
    /// Records polled but not handed out yet.
    buffered: Buffer,
    /// When the partition last had something to read.
    last_busy: Instant,
}

pub struct KafkaSource {
    uri: KafkaUri,
    /// `--consumer-conf`, for the probe of [`KafkaSource::serves`].
    consumer_conf: Vec<(String, String)>,
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
    /// Records polled and not handed out yet, over all partitions.
    buffered: usize,
    /// Whether the last micro-batch emptied librdkafka's local queue. While records
    /// stream in, the watermark requests wait (they would queue behind large fetch
    /// responses on the same connection and time out).
    drained: bool,
}

/// Records polled but not handed out yet, in offset order: their bytes back to back, so
/// that buffering costs a copy, not an allocation per record.
#[derive(Debug, Default)]
struct Buffer {
    bytes: Vec<u8>,
    /// (offset, start, end) of each record in `bytes`.
    records: VecDeque<(i64, usize, usize)>,
}

impl Buffer {
    fn push(&mut self, offset: i64, payload: &[u8]) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(payload);
        self.records.push_back((offset, start, self.bytes.len()));
    }

    fn len(&self) -> usize {
        self.records.len()
    }

    fn offsets(&self) -> impl Iterator<Item = i64> + '_ {
        self.records.iter().map(|(offset, _, _)| *offset)
    }

    /// Moves the first `n` records into `batch`; returns the offset of the last one.
    fn take_into(&mut self, n: usize, batch: &mut RawBatch, name: &str, partition: i32) -> Option<i64> {
        let mut last = None;
        for (offset, start, end) in self.records.drain(..n) {
            batch.push_record(&self.bytes[start..end], name, partition, offset as u64);
            last = Some(offset);
        }
        // Drop the bytes handed out: all of them, or move the rest to the front.
        match self.records.front() {
            None => self.bytes.clear(),
            Some(&(_, first, _)) if first > 0 => {
                self.bytes.drain(..first);
                self.records.iter_mut().for_each(|(_, start, end)| (*start, *end) = (*start - first, *end - first));
            }
            Some(_) => {}
        }
        last
    }
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
            partitions.insert(
                p,
                PartitionState { name, low, high, next, polled: next, buffered: Buffer::default(), last_busy: now },
            );
        }
        consumer.assign(&assignment).map_err(|e| external(&uri, e))?;
        let end_at_open = partitions.iter().map(|(p, s)| (*p, s.high)).collect();
        tracing::info!(source = %uri, partitions = count, "assigned");
        Ok(KafkaSource {
            uri,
            consumer_conf: options.consumer_conf.clone(),
            consumer,
            partitions,
            end_at_open,
            high_refreshed: now,
            idle_timeout: options.idle_timeout,
            unreachable: None,
            buffered: 0,
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

impl KafkaSource {
    /// Polls once (waiting up to `wait`) into the partitions' buffers. Returns whether
    /// a record came.
    fn poll_once(&mut self, wait: Duration) -> bool {
        match self.consumer.poll(wait) {
            None => {
                self.drained = true;
                false
            }
            Some(Ok(message)) => {
                let Some(state) = self.partitions.get_mut(&message.partition()) else { return true };
                // After a reconnect librdkafka may hand out a record again: keep one copy.
                if message.offset() >= state.polled {
                    state.buffered.push(message.offset(), message.payload().unwrap_or_default());
                    self.buffered += 1;
                    state.polled = message.offset() + 1;
                }
                state.last_busy = Instant::now();
                self.unreachable = None;
                true
            }
            Some(Err(e)) => {
                tracing::debug!(source = %self.uri, error = %e, "consumer error");
                self.unreachable = Some(format!("broker not answering: {e}"));
                false
            }
        }
    }

    /// Hands out the first `count(partition)` buffered records of each partition, as
    /// one batch in partition order.
    fn take(&mut self, mut count: impl FnMut(i32, &PartitionState) -> usize) -> RawBatch {
        let mut batch = RawBatch::default();
        for (p, state) in &mut self.partitions {
            let n = count(*p, state);
            if let Some(last) = state.buffered.take_into(n, &mut batch, &state.name, *p) {
                state.next = last + 1;
            }
            self.buffered -= n;
        }
        batch
    }

    /// Whether partition `p` still serves the record at `offset`. Asked only when the
    /// partition's high watermark is below a position the pipeline reached: a log that
    /// was reset answers "out of range"; a broker whose high watermark counts record
    /// batches rather than records (tansu does) serves the record.
    fn serves(&self, p: i32, offset: i64) -> Result<bool> {
        const PROBE: &[(&str, &str)] = &[
            ("group.id", "sql-aggregator-probe"),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            // Out of range is the answer we look for, not a reason to jump elsewhere.
            ("auto.offset.reset", "error"),
            ("enable.partition.eof", "true"),
        ];
        let probe: BaseConsumer = kafka_conf::client_config(&self.uri, PROBE, &self.consumer_conf)
            .create()
            .map_err(|e| Error::user(format!("source {}: {e}", self.uri)))?;
        let mut at = TopicPartitionList::new();
        at.add_partition_offset(&self.uri.topic, p, Offset::Offset(offset))
            .map_err(|e| Error::internal(e.to_string()))?;
        probe.assign(&at).map_err(|e| external(&self.uri, e))?;
        let deadline = Instant::now() + kafka_conf::METADATA_TIMEOUT;
        while Instant::now() < deadline {
            match probe.poll(FIRST_POLL) {
                Some(Ok(message)) if message.partition() == p => return Ok(message.offset() >= offset),
                Some(Err(KafkaError::PartitionEOF(_))) => return Ok(false),
                Some(Err(KafkaError::MessageConsumption(
                    RDKafkaErrorCode::AutoOffsetReset | RDKafkaErrorCode::OffsetOutOfRange,
                ))) => return Ok(false),
                _ => {}
            }
        }
        Err(external(&self.uri, format!("partition {p}: no answer whether offset {offset} still exists")))
    }

    fn nothing_read(&self) -> Result<Option<RawBatch>> {
        // A login refused or a certificate rejected mid-run (a rotated password, an
        // expired certificate) is the user's to fix, not an outage to wait out.
        if let Some(e) = self.consumer.context().permanent_error(&self.uri) {
            return Err(Error::user(format!("source {e}")));
        }
        match &self.unreachable {
            Some(why) => Err(external(&self.uri, why)),
            None => Ok(None),
        }
    }
}

impl Source for KafkaSource {
    fn next_batch(&mut self, max_records: usize) -> Result<Option<RawBatch>> {
        self.refresh_high_watermarks();
        self.drained = false;
        while self.buffered < max_records {
            let wait = if self.buffered == 0 { FIRST_POLL } else { Duration::ZERO };
            if !self.poll_once(wait) && (self.drained || self.unreachable.is_some()) {
                break;
            }
        }
        if self.buffered == 0 {
            return self.nothing_read();
        }
        // A fair share of the batch for every partition with records waiting.
        let mut share: BTreeMap<i32, usize> = BTreeMap::new();
        let mut left = max_records;
        while left > 0 {
            let before = left;
            for (p, state) in &self.partitions {
                let taken = share.entry(*p).or_default();
                if left > 0 && *taken < state.buffered.len() {
                    *taken += 1;
                    left -= 1;
                }
            }
            if left == before {
                break;
            }
        }
        let mut batch = self.take(|p, _| share.get(&p).copied().unwrap_or(0));
        batch.end = self.position();
        Ok(Some(batch))
    }

    fn read_until(&mut self, end: &SourceOffset) -> Result<Option<RawBatch>> {
        let SourceOffset::Kafka { next: end } = end else {
            return Err(Error::internal(format!("source {}: {end:?} is not a Kafka offset", self.uri)));
        };
        let reached = |partitions: &BTreeMap<i32, PartitionState>| {
            end.iter().all(|(p, at)| partitions.get(p).is_none_or(|s| s.polled >= *at))
        };
        let started = Instant::now();
        self.drained = false;
        while !reached(&self.partitions) {
            let polled = self.poll_once(FIRST_POLL);
            if !polled && started.elapsed() >= READ_UNTIL_BUDGET {
                return self.nothing_read();
            }
        }
        let mut batch = self.take(|p, state| {
            let at = end.get(&p).copied().unwrap_or(state.next);
            state.buffered.offsets().take_while(|offset| *offset < at).count()
        });
        for (p, at) in end {
            if let Some(state) = self.partitions.get_mut(p) {
                state.next = state.next.max(*at);
            }
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

    fn holds(&self, offset: &SourceOffset) -> Result<bool> {
        let SourceOffset::Kafka { next } = offset else { return Ok(true) };
        for (p, at) in next {
            match self.end_at_open.get(p) {
                None => return Ok(false),
                Some(end) if at > end && !self.serves(*p, at - 1)? => {
                    return Ok(false);
                }
                Some(_) => {}
            }
        }
        Ok(true)
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

    fn lag(&self) -> Vec<(i32, u64)> {
        self.partitions.iter().map(|(p, s)| (*p, (s.high - s.next).max(0) as u64)).collect()
    }

    fn partitions(&self) -> Vec<(i32, bool)> {
        self.partitions
            .iter()
            .map(|(p, s)| (*p, s.high <= s.next && s.last_busy.elapsed() >= self.idle_timeout))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_hands_out_records_in_order_whatever_was_taken_before() {
        let mut buffer = Buffer::default();
        for (offset, payload) in [(5, "a"), (6, "bb"), (8, "ccc"), (9, "")] {
            buffer.push(offset, payload.as_bytes());
        }
        let mut batch = RawBatch::default();
        assert_eq!(buffer.take_into(2, &mut batch, "t/0", 0), Some(6));
        buffer.push(10, b"dddd");
        assert_eq!(buffer.offsets().collect::<Vec<_>>(), [8, 9, 10]);
        assert_eq!(buffer.take_into(3, &mut batch, "t/0", 0), Some(10));
        assert_eq!(buffer.take_into(0, &mut batch, "t/0", 0), None);
        assert_eq!(buffer.len(), 0);
        assert!(buffer.bytes.is_empty(), "nothing kept once everything is handed out");
        let records: Vec<&[u8]> = batch.records();
        assert_eq!(records, [&b"a"[..], b"bb", b"ccc", b"", b"dddd"]);
        let locations: Vec<String> = (0..batch.len()).map(|i| batch.location(i)).collect();
        assert_eq!(locations, ["t/0@5", "t/0@6", "t/0@8", "t/0@9", "t/0@10"]);
    }
}

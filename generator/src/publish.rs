//! Publishing batch files to a Kafka topic, one message per line, keyed by a field.
//!
//! Files are read line by line into one reused buffer and handed to librdkafka,
//! whose queue is bounded ([`PRODUCER_DEFAULTS`]), so memory does not depend on the
//! size of the files. Pace: a pause after each file (`--interval-seconds`) and/or a
//! rate in events per second (`--rate`). Progress goes to stderr: a bar on a
//! terminal, a plain line every few seconds otherwise.

use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kafka_conf::{ClientError, ClientErrors, KafkaUri, RecordsErrors};
use rdkafka::ClientContext;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;

/// Our producer settings; `--producer-conf` overrides any of them. The queue bound
/// keeps memory flat however large the files are.
pub const PRODUCER_DEFAULTS: &[(&str, &str)] = &[
    ("linger.ms", "20"),
    ("batch.num.messages", "10000"),
    ("queue.buffering.max.messages", "200000"),
    ("queue.buffering.max.kbytes", "16384"),
];

/// How long to wait for a partition's watermarks.
const WATERMARKS_TIMEOUT: Duration = Duration::from_secs(10);

/// How long to wait at the end for the broker to acknowledge everything.
const FINAL_FLUSH: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// A bad setting, wrong credentials, an untrusted certificate, an unreachable broker.
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{0}")]
    Config(String),
    #[error("{path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{uri}: {failed} of {sent} messages were not delivered; first error: {first}")]
    Delivery { uri: String, failed: u64, sent: u64, first: String },
    #[error("{uri}: {source}")]
    Kafka { uri: String, source: KafkaError },
}

/// What a publish run asks for.
#[derive(Debug, Clone)]
pub struct PublishOptions {
    pub uri: KafkaUri,
    pub producer_conf: Vec<(String, String)>,
    /// JSON field whose value is the message key.
    pub key_field: String,
    /// Pause after each file.
    pub interval: Duration,
    /// Events per second, if limited.
    pub rate: Option<f64>,
    /// Create the topic with this many partitions if it does not exist.
    pub partitions: Option<i32>,
    /// Show a progress bar (else plain progress lines).
    pub progress_bar: bool,
}

/// Counts deliveries as the broker acknowledges them, and keeps librdkafka's error
/// reports (to tell a wrong password from an outage).
#[derive(Default)]
struct Deliveries {
    delivered: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
    errors: ClientErrors,
}

impl ClientContext for Deliveries {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        kafka_conf::log_to_tracing(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.errors.record(&error, reason);
    }
}

impl RecordsErrors for Deliveries {
    fn errors(&self) -> &ClientErrors {
        &self.errors
    }
}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.delivered.fetch_add(1, Ordering::Relaxed),
            Err((e, _)) => {
                self.first_error.lock().expect("lock").get_or_insert_with(|| e.to_string());
                self.failed.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

/// The value of `"field":` in a JSON line, as written (quotes stripped), if present.
/// The generator writes the lines itself, so a scan beats parsing each one.
pub fn key_of<'a>(line: &'a [u8], field: &str) -> Option<&'a [u8]> {
    let needle = format!("\"{field}\"");
    let at = line.windows(needle.len()).position(|w| w == needle.as_bytes())? + needle.len();
    let rest = &line[at..];
    let rest = &rest[rest.iter().position(|b| *b == b':')? + 1..];
    let rest = &rest[rest.iter().position(|b| !b.is_ascii_whitespace())?..];
    if let Some(quoted) = rest.strip_prefix(b"\"") {
        return Some(&quoted[..quoted.iter().position(|b| *b == b'"')?]);
    }
    let end = rest.iter().position(|b| matches!(b, b',' | b'}') || b.is_ascii_whitespace()).unwrap_or(rest.len());
    Some(&rest[..end])
}

/// Fails early, with the URI, when the settings are refused, the broker does not
/// answer, or refuses the credentials or the TLS handshake.
pub fn check_reachable(options: &PublishOptions) -> Result<(), PublishError> {
    let uri = &options.uri;
    tracing::debug!(to = %uri, settings = %kafka_conf::redacted(&options.producer_conf), "connecting");
    let producer: BaseProducer<ClientErrors> = kafka_conf::client_config(uri, &[], &options.producer_conf)
        .create_with_context(ClientErrors::default())
        .map_err(|e| ClientError::setting(uri, &e))?;
    kafka_conf::connect(producer.client(), uri, |wait| producer.poll(wait))?;
    Ok(())
}

/// How many messages the topic has ever received: the sum of its partitions' high
/// watermarks (0 if it does not exist). Retention does not lower it, so `--top-up`
/// never publishes again what the topic once held.
pub fn messages_in_topic(options: &PublishOptions) -> Result<u64, PublishError> {
    let uri = &options.uri;
    let producer: BaseProducer<ClientErrors> = kafka_conf::client_config(uri, &[], &options.producer_conf)
        .create_with_context(ClientErrors::default())
        .map_err(|e| ClientError::setting(uri, &e))?;
    kafka_conf::connect(producer.client(), uri, |wait| producer.poll(wait))?;
    let partitions = kafka_conf::partition_count(producer.client(), uri)?;
    let mut total = 0u64;
    for partition in 0..partitions as i32 {
        let (_, high) = producer
            .client()
            .fetch_watermarks(&uri.topic, partition, WATERMARKS_TIMEOUT)
            .map_err(|source| PublishError::Kafka { uri: uri.to_string(), source })?;
        total += high.max(0) as u64;
    }
    Ok(total)
}

/// Publishes every line of `files` (in order) to the topic. Returns the number sent.
/// `total_events` is what the files hold, as the caller knows it (for progress only).
pub fn publish(files: &[PathBuf], total_events: u64, options: &PublishOptions) -> Result<u64, PublishError> {
    let uri = &options.uri;
    let config = kafka_conf::client_config(uri, PRODUCER_DEFAULTS, &options.producer_conf);
    let producer: BaseProducer<Deliveries> =
        config.create_with_context(Deliveries::default()).map_err(|e| ClientError::setting(uri, &e))?;
    let partitions = kafka_conf::connect(producer.client(), uri, |wait| producer.poll(wait))?;
    if partitions == 0
        && let Some(wanted) = options.partitions
    {
        create_topic(uri, wanted, &options.producer_conf)?;
    }
    let mut progress = Progress::new(total_events, options.progress_bar);
    let started = Instant::now();
    let mut sent = 0u64;
    let mut line = Vec::with_capacity(1024);
    for (i, path) in files.iter().enumerate() {
        let file = File::open(path).map_err(|source| PublishError::Read { path: path.clone(), source })?;
        let mut reader = BufReader::with_capacity(1 << 20, file);
        loop {
            line.clear();
            let n = reader
                .read_until(b'\n', &mut line)
                .map_err(|source| PublishError::Read { path: path.clone(), source })?;
            if n == 0 {
                break;
            }
            while matches!(line.last(), Some(b'\n' | b'\r')) {
                line.pop();
            }
            if line.is_empty() {
                continue;
            }
            let key = key_of(&line, &options.key_field).unwrap_or_default();
            send(&producer, uri, key, &line)?;
            sent += 1;
            if sent.is_multiple_of(1024) {
                producer.poll(Duration::ZERO);
                if let Some(rate) = options.rate {
                    let due = Duration::from_secs_f64(sent as f64 / rate);
                    if let Some(wait) = due.checked_sub(started.elapsed()) {
                        std::thread::sleep(wait);
                    }
                }
                progress.show(sent, false);
            }
        }
        progress.show(sent, false);
        if i + 1 < files.len() && !options.interval.is_zero() {
            producer.flush(FINAL_FLUSH).map_err(|source| PublishError::Kafka { uri: uri.to_string(), source })?;
            std::thread::sleep(options.interval);
        }
    }
    let flushed = producer.flush(FINAL_FLUSH);
    let context = producer.context();
    // Undelivered because the broker refused us (a password changed, a certificate
    // expired): say so rather than "timed out".
    if let Some(error) = context.errors.permanent_error(uri)
        && (flushed.is_err() || context.failed.load(Ordering::Relaxed) > 0)
    {
        return Err(error.into());
    }
    flushed.map_err(|source| PublishError::Kafka { uri: uri.to_string(), source })?;
    progress.show(sent, true);
    let failed = context.failed.load(Ordering::Relaxed);
    if failed > 0 {
        let first = context.first_error.lock().expect("lock").clone().unwrap_or_default();
        return Err(PublishError::Delivery { uri: uri.to_string(), failed, sent, first });
    }
    Ok(sent)
}

/// Queues one message, waiting while librdkafka's queue is full.
fn send(producer: &BaseProducer<Deliveries>, uri: &KafkaUri, key: &[u8], payload: &[u8]) -> Result<(), PublishError> {
    let mut record = BaseRecord::to(&uri.topic).key(key).payload(payload);
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                producer.poll(Duration::from_millis(50));
                record = back;
            }
            Err((source, _)) => return Err(PublishError::Kafka { uri: uri.to_string(), source }),
        }
    }
}

fn create_topic(uri: &KafkaUri, partitions: i32, conf: &[(String, String)]) -> Result<(), PublishError> {
    let admin: AdminClient<ClientErrors> = kafka_conf::client_config(uri, &[], conf)
        .create_with_context(ClientErrors::default())
        .map_err(|e| ClientError::setting(uri, &e))?;
    let topic = NewTopic::new(&uri.topic, partitions, TopicReplication::Fixed(1));
    let results = futures::executor::block_on(admin.create_topics(&[topic], &AdminOptions::new()))
        .map_err(|source| PublishError::Kafka { uri: uri.to_string(), source })?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => return Err(PublishError::Config(format!("{uri}: creating the topic: {code}"))),
        }
    }
    tracing::info!(topic = %uri, partitions, "created the topic");
    Ok(())
}

/// Progress on stderr.
struct Progress {
    total: u64,
    bar: bool,
    started: Instant,
    last: Instant,
}

impl Progress {
    fn new(total: u64, bar: bool) -> Self {
        let now = Instant::now();
        Progress { total, bar: bar && std::io::stderr().is_terminal(), started: now, last: now }
    }

    fn show(&mut self, sent: u64, done: bool) {
        let every = if self.bar { Duration::from_millis(200) } else { Duration::from_secs(5) };
        if !done && self.last.elapsed() < every {
            return;
        }
        self.last = Instant::now();
        let rate = sent as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
        let share = if self.total == 0 { 1.0 } else { sent as f64 / self.total as f64 };
        if self.bar {
            let width = 30;
            let filled = ((share * width as f64) as usize).min(width);
            let mut err = std::io::stderr();
            let _ = write!(
                err,
                "\r[{}{}] {:5.1}% {sent}/{} events, {rate:.0} events/s",
                "#".repeat(filled),
                " ".repeat(width - filled),
                share * 100.0,
                self.total
            );
            if done {
                let _ = writeln!(err);
            }
        } else {
            eprintln!("published {sent}/{} events ({:.1}%), {rate:.0} events/s", self.total, share * 100.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_the_fields_value_as_written() {
        let line = br#"{"user_id": 17, "item_id": 3, "interaction_type": "view"}"#;
        assert_eq!(key_of(line, "user_id"), Some(&b"17"[..]));
        assert_eq!(key_of(line, "interaction_type"), Some(&b"view"[..]));
        assert_eq!(key_of(br#"{"a":1,"user_id":5}"#, "user_id"), Some(&b"5"[..]));
        assert_eq!(key_of(line, "missing"), None);
    }
}

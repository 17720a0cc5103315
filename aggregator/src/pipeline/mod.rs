//! A pipeline: one `.sql` file, run as source → incremental aggregation → sink.
//!
//! * [`definition`] — the file: stages, settings, SHA-256 identity;
//! * [`spark`] — Spark SQL's `window.start` references made DataFusion SQL;
//! * [`plan`] — DataFusion plans the SQL; [`dataflow`], a physical optimizer rule,
//!   swaps its stateful nodes for streaming operators over changelogs;
//! * [`windows`] — `window` / `tumble` / `hop` for `GROUP BY`;
//! * [`watermark`] — event time and lateness;
//! * [`crate::operators::aggregate`] — the aggregation's columnar state, eviction of
//!   closed windows;
//! * [`emit`] — which result rows a micro-batch changes, per output mode;
//! * [`crate::state::checkpoint`] — state + offsets, saved incrementally;
//! * [`offset_log`] — each micro-batch's input, logged before it runs, so a crash
//!   re-runs exactly the same batches;
//! * [`runner`] — the micro-batch loop that ties them together.

pub mod dataflow;
pub mod definition;
pub mod emit;
pub mod live_table;
pub mod offset_log;
pub mod plan;
pub mod runner;
pub mod spark;
pub mod watermark;
pub mod windows;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// A partition with nothing to read for this long stops holding the watermark back.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// How a pipeline runs (the same for every pipeline of an aggregator).
#[derive(Clone)]
pub struct PipelineOptions {
    pub source_uri: String,
    /// `sqlite:<path>` or `mongodb://…` (may hold a password: show it only through
    /// `store::redact_uri`).
    pub sink_uri: String,
    /// The MongoDB database, when the sink URI does not name one (`--database`).
    pub sink_database: Option<String>,
    pub checkpoint_dir: PathBuf,
    /// Process what is available at start, then flush, checkpoint and stop.
    pub available_now: bool,
    pub max_batch_records: usize,
    pub max_record_bytes: usize,
    pub checkpoint_interval: Duration,
    pub poll_interval: Duration,
    /// Shards of the aggregation over `SOURCE`, and chunks of JSON decoded at once, on
    /// rayon's worker threads (`--workers`; the pool's size is set by the process).
    pub workers: usize,
    pub source: crate::source::SourceOptions,
    /// `--dead-letter`: a Kafka topic that also receives bad records.
    pub dead_letter_uri: Option<String>,
    /// `key=value` settings for the dead-letter producer.
    pub producer_conf: Vec<(String, String)>,
    /// How results are pushed into Qlik apps (`--qlik*`).
    pub qlik: crate::sink::qlik::QlikOptions,
    /// The process's Qlik push, shared by its pipelines (started by the supervisor).
    pub qlik_hub: Option<crate::sink::qlik::QlikHub>,
}

/// Shows the sink URI's password and the producer's secrets as `***`.
impl std::fmt::Debug for PipelineOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipelineOptions")
            .field("source_uri", &self.source_uri)
            .field("sink_uri", &store::redact_uri(&self.sink_uri))
            .field("sink_database", &self.sink_database)
            .field("checkpoint_dir", &self.checkpoint_dir)
            .field("available_now", &self.available_now)
            .field("max_batch_records", &self.max_batch_records)
            .field("max_record_bytes", &self.max_record_bytes)
            .field("checkpoint_interval", &self.checkpoint_interval)
            .field("poll_interval", &self.poll_interval)
            .field("workers", &self.workers)
            .field("source", &self.source)
            .field("dead_letter_uri", &self.dead_letter_uri)
            .field("producer_conf", &kafka_conf::redacted(&self.producer_conf))
            .field("qlik", &self.qlik)
            .finish_non_exhaustive()
    }
}

impl Default for PipelineOptions {
    fn default() -> Self {
        PipelineOptions {
            source_uri: "file:data/events".into(),
            sink_uri: "sqlite:data/results.sqlite".into(),
            sink_database: None,
            checkpoint_dir: "data/checkpoints".into(),
            available_now: false,
            max_batch_records: 100_000,
            max_record_bytes: crate::source::decode::DEFAULT_MAX_RECORD_BYTES,
            checkpoint_interval: Duration::from_secs(10),
            poll_interval: Duration::from_millis(500),
            workers: 1,
            source: crate::source::SourceOptions { consumer_conf: Vec::new(), idle_timeout: DEFAULT_IDLE_TIMEOUT },
            dead_letter_uri: None,
            producer_conf: Vec::new(),
            qlik: crate::sink::qlik::QlikOptions::default(),
            qlik_hub: None,
        }
    }
}

/// Asks running pipelines to finish their batch, checkpoint and stop.
///
/// A [`Shutdown::child`] (one pipeline's stop switch) is also triggered by its parent
/// (the whole aggregator's), but not the other way round.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    own: Arc<AtomicBool>,
    parent: Option<Box<Shutdown>>,
}

impl Shutdown {
    pub fn child(&self) -> Shutdown {
        Shutdown { own: Arc::default(), parent: Some(Box::new(self.clone())) }
    }
    pub fn trigger(&self) {
        self.own.store(true, Ordering::SeqCst);
    }
    pub fn is_triggered(&self) -> bool {
        self.own.load(Ordering::SeqCst) || self.parent.as_ref().is_some_and(|p| p.is_triggered())
    }
    /// Sleeps up to `duration`, waking early on shutdown.
    pub async fn sleep(&self, duration: Duration) {
        let step = Duration::from_millis(50);
        let mut left = duration;
        while !self.is_triggered() && !left.is_zero() {
            let nap = left.min(step);
            tokio::time::sleep(nap).await;
            left = left.saturating_sub(nap);
        }
    }
}

//! The micro-batch loop of one pipeline.
//!
//! ```text
//! read records → log the batch (offset log) → decode (bad records out)
//!   → reject event times implausibly far ahead (bad records out) → judge lateness (late records out)
//!   → rows below the aggregation (DataFusion) → aggregate into the groups they touch
//!   → evict closed windows → result changes → sink (with status and rejected records,
//!   one transaction)
//!   → every checkpoint interval: checkpoint (what changed + offset, written on a writer
//!   thread); once it is on disk, the offset log forgets the batches it holds
//! ```
//!
//! After a crash the batches the offset log holds beyond the checkpoint run again first,
//! over exactly the same records, with the same clock and idle partitions (see
//! [`crate::pipeline::offset_log`]): then the sink ends exactly as after an
//! uninterrupted run.
//!
//! A pipeline whose SQL hash has no checkpoint is a new version: it starts from the
//! beginning of the source, writes into a shadow table, and swaps it in once it has
//! read what the source held when the replay began (status `replaying`, with progress).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Array, AsArray, BooleanArray, TimestampMicrosecondArray, UInt32Array};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::{Schema, TimestampMicrosecondType};
use datafusion::arrow::record_batch::RecordBatch;
use store::{PipelineStatus, RejectedRecord, ResultDelta, iso_micros};

use crate::error::Result;
use crate::metrics::{
    Metrics, Outcome, OutcomeLabels, PartitionLabels, RetryLabels, RetryTarget, RowLabels, RowOp, metrics,
};
use crate::operators::aggregate::AggregateOperator;
use crate::operators::exec::{OperatorStats, Tick};
use crate::pipeline::definition::PipelineDefinition;
use crate::pipeline::emit::{self, Emitter, result_columns};
use crate::pipeline::offset_log::{self, LoggedBatch, OffsetLog};
use crate::pipeline::plan::StreamingPlan;
use crate::pipeline::watermark::{Watermark, WatermarkState};
use crate::pipeline::{PipelineOptions, Shutdown};
use crate::sink::dead_letter::{DeadLetter, DeadRecord};
use crate::state::checkpoint::{self, Checkpoint, CheckpointHeader, CheckpointWriter, Counters, StateChange};

use crate::sink::qlik::QlikFeed;
use crate::sink::qlik::script::ResultVersion;
use crate::sink::{self, BatchWrite, Sink, TableChoice};
use crate::source::decode::{Decoded, JsonDecoder};
use crate::source::schema::SourceSchema;
use crate::source::{self, RawBatch, SourceOffset};

/// How much of a rejected record is kept.
const MAX_RAW_KEPT: usize = 4096;

pub struct Pipeline {
    def: PipelineDefinition,
    options: PipelineOptions,
    plan: StreamingPlan,
    decoder: JsonDecoder,
    /// `SOURCE` as the file declares it (to plan the SQL again when starting over).
    source_schema: SourceSchema,
    emitter: Emitter,
    watermark: Watermark,
    counters: Counters,
    offset: SourceOffset,
    /// The number of the last micro-batch processed (of this version).
    batch: u64,
    /// Each batch's input, written down before it runs.
    offset_log: OffsetLog,
    checkpoints: CheckpointWriter,
    /// Batches the offset log holds beyond the checkpoint: after a crash, they run
    /// again, first and exactly.
    rerun: VecDeque<LoggedBatch>,
    sink: Box<dyn Sink>,
    dead_letter: Option<DeadLetter>,
    status: PipelineStatus,
    /// Index of the source's event-time column.
    event_time: Option<usize>,
    replay: Replay,
    /// Shown as the status's error while no outage is (an edit that was rejected).
    notice: Notice,
    /// When a source or store outage was last shown in the status.
    outage_seen: Option<Instant>,
    /// The pipeline's Qlik targets, if it has any.
    qlik: Option<QlikFeed>,
    /// Rows of the result changed by the write still running (told to Qlik once it lands).
    unannounced: u64,
}

/// Whether the pipeline is a new version still catching up into its shadow table.
#[derive(Debug, Clone, PartialEq)]
enum Replay {
    Done,
    /// Until the source reaches this offset (`None`: where the source ends when opened).
    Until(Option<SourceOffset>),
}

/// A message for the status row from outside the pipeline (the supervisor reports an
/// edit of the file that did not plan; the old version keeps running).
pub type Notice = std::sync::Arc<std::sync::Mutex<Option<String>>>;

/// Attempts with `--available-now` before an outage counts as a failure.
const RETRY_LIMIT_AVAILABLE_NOW: u32 = 6;

/// How long an outage's error stays in the status after it ended, so that someone
/// looking at the dashboard a little later still sees what happened (while a store
/// is down, nothing can be written to it).
const OUTAGE_SHOWN_FOR: Duration = Duration::from_secs(60);

/// Runs `attempt` until it succeeds. Errors that waiting can fix (a store or source
/// that is down) are retried with exponential backoff up to 30 s — until shutdown,
/// or with `--available-now` a bounded number of times; other errors return at once.
async fn with_retry<T>(
    pipeline: &str,
    target: RetryTarget,
    available_now: bool,
    shutdown: &Shutdown,
    mut attempt: impl AsyncFnMut() -> Result<T>,
) -> Result<T> {
    with_retry_reporting(pipeline, target, available_now, shutdown, &mut (), async |_| attempt().await).await
}

/// Something that shows a retried error: `()` (only the log), or [`StatusReport`].
trait Report {
    async fn show(&mut self, error: &crate::error::Error);
}

impl Report for () {
    async fn show(&mut self, _: &crate::error::Error) {}
}

/// Shows an outage in the pipeline's status row while it lasts (and a minute after).
struct StatusReport<'a> {
    sink: &'a mut Box<dyn Sink>,
    status: &'a mut PipelineStatus,
    outage_seen: &'a mut Option<Instant>,
}

impl Report for StatusReport<'_> {
    async fn show(&mut self, error: &crate::error::Error) {
        self.status.last_error = Some(error.to_string());
        *self.outage_seen = Some(Instant::now());
        // Fails too if the outage is the store's own; the log has it then.
        let _ = self.sink.write_status(self.status).await;
    }
}

/// [`with_retry`], showing each error that is retried through `report`, which
/// `attempt` gets too (to write through the same sink).
async fn with_retry_reporting<T, R: Report>(
    pipeline: &str,
    target: RetryTarget,
    available_now: bool,
    shutdown: &Shutdown,
    report: &mut R,
    mut attempt: impl AsyncFnMut(&mut R) -> Result<T>,
) -> Result<T> {
    let mut backoff = Duration::from_millis(200);
    let mut attempts = 0;
    loop {
        match attempt(report).await {
            Ok(value) => return Ok(value),
            Err(e)
                if e.is_retryable()
                    && !shutdown.is_triggered()
                    && (!available_now || attempts < RETRY_LIMIT_AVAILABLE_NOW) =>
            {
                attempts += 1;
                tracing::warn!(pipeline, error = %e, retry_in = ?backoff, "outage; retrying");
                metrics().retries.get_or_create(&RetryLabels { pipeline: pipeline.to_string(), target }).inc();
                report.show(&e).await;
                shutdown.sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
            Err(e) => return Err(e),
        }
    }
}

fn now_iso() -> String {
    iso_micros(chrono::Utc::now().timestamp_micros())
}

fn host() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok().map(|h| h.trim().to_string()))
        .unwrap_or_else(|| "localhost".into())
}

impl Pipeline {
    /// Plans the pipeline, restores its checkpoint if the SQL is unchanged, and
    /// prepares its sink. A SQL error is recorded in the status table too.
    pub async fn start(
        def: PipelineDefinition,
        source_schema: &SourceSchema,
        options: &PipelineOptions,
        shutdown: &Shutdown,
        notice: Notice,
    ) -> Result<Self> {
        let mut status = PipelineStatus {
            name: def.name.clone(),
            sql_file: def.path.display().to_string(),
            sql_hash: def.sql_hash.clone(),
            sql_text: Some(def.text.clone()),
            result_table: def.settings.target.clone(),
            state: "starting".into(),
            host: host(),
            started_at: now_iso(),
            ..Default::default()
        };
        let database = options.sink_database.as_deref();
        let mut sink = with_retry(&def.name, RetryTarget::sink, options.available_now, shutdown, async || {
            sink::open(&options.sink_uri, database, &def.name, &def.settings.target).await
        })
        .await?;
        let plan = match StreamingPlan::new(&def, source_schema).await.and_then(|p| p.split(options.workers)) {
            Ok(plan) => plan,
            Err(e) => {
                status.state = "failed".into();
                status.last_error = Some(e.to_string());
                let _ = sink.write_status(&status).await;
                return Err(e);
            }
        };
        let dead_letter = match &options.dead_letter_uri {
            Some(uri) => Some(DeadLetter::open(uri, &options.producer_conf)?),
            None => None,
        };
        let checkpoint_path = checkpoint::path_for(&options.checkpoint_dir, &def.name);
        let resumed = Checkpoint::load(&checkpoint_path)?.filter(|c| c.header.sql_hash == def.sql_hash);
        let delay = def.settings.allowed_delay.as_micros() as i64;
        let after = resumed.as_ref().map_or(0, |c| c.header.batch);
        let (offset_log, rerun) =
            OffsetLog::open(offset_log::path_for(&options.checkpoint_dir, &def.name), &def.sql_hash, after)?;
        if !rerun.is_empty() {
            tracing::info!(pipeline = %def.name, batches = rerun.len(), "running again the batches that ran after the last checkpoint");
        }
        let mut decoder = JsonDecoder::new(source_schema, options.max_record_bytes);
        // (The event time is read here, for the watermark, whatever the query reads.)
        let unread: Vec<usize> =
            plan.unread_source_columns().into_iter().filter(|&c| Some(c) != source_schema.event_time).collect();
        decoder.leave_unread(&unread);
        let unread_names: Vec<&str> = unread.iter().map(|&c| source_schema.schema.field(c).name().as_str()).collect();
        tracing::debug!(pipeline = %def.name, columns = ?unread_names, "source columns the query does not read");
        let mut pipeline = Pipeline {
            decoder,
            source_schema: source_schema.clone(),
            emitter: Emitter::new(&plan),
            watermark: Watermark::new(delay, WatermarkState::default()),
            counters: Counters::default(),
            offset: SourceOffset::Start,
            batch: 0,
            offset_log,
            checkpoints: CheckpointWriter::new(checkpoint_path.clone(), resumed.as_ref().map(|c| &c.header)),
            rerun: rerun.into(),
            sink,
            dead_letter,
            status,
            event_time: source_schema.event_time,
            options: options.clone(),
            plan,
            def,
            replay: Replay::Until(None),
            notice,
            outage_seen: None,
            qlik: None,
            unannounced: 0,
        };
        let columns = result_columns(&pipeline.plan);
        let choice = match &resumed {
            None => TableChoice::NewShadow,
            Some(c) if c.header.replay_until.is_some() => TableChoice::ResumeShadow,
            Some(_) => TableChoice::Live,
        };
        let sink = &mut pipeline.sink;
        let shadow = with_retry(&pipeline.def.name, RetryTarget::sink, options.available_now, shutdown, async || {
            sink.prepare(&columns, choice).await
        })
        .await?;
        match resumed {
            Some(checkpoint) => {
                let restore = |source: &mut AggregateOperator| -> Result<()> {
                    for saved in &checkpoint.state {
                        if let Some(removed) = &saved.removed {
                            source.aggregate.restore_removed(removed)?;
                        }
                        if let Some(written) = &saved.written {
                            source.aggregate.restore(written)?;
                        }
                    }
                    source.aggregate.set_evicted_until(checkpoint.header.evicted_until);
                    source.closed = checkpoint.closed_rows.clone();
                    Ok(())
                };
                pipeline.plan.with_source_aggregate(restore).transpose()?;
                pipeline.rebuild().await?;
                pipeline.watermark = Watermark::new(delay, checkpoint.header.watermark);
                pipeline.counters = checkpoint.header.counters;
                pipeline.offset = checkpoint.header.offset;
                pipeline.batch = checkpoint.header.batch;
                pipeline.replay = match checkpoint.header.replay_until {
                    Some(until) if shadow => Replay::Until(Some(until)),
                    _ => Replay::Done,
                };
                tracing::info!(pipeline = %pipeline.def.name, offset = ?pipeline.offset, groups = pipeline.state_groups(), replaying = shadow, "resuming from checkpoint");
            }
            None => {
                tracing::info!(pipeline = %pipeline.def.name, hash = %pipeline.def.sql_hash, "new version: replaying the source from its beginning into a shadow table")
            }
        }
        pipeline.qlik = pipeline.qlik_feed()?;
        pipeline.update_status("running");
        pipeline.sink.write_status(&pipeline.status).await?;
        Ok(pipeline)
    }

    /// Registers the pipeline with the process's Qlik push if it has targets (`--qlik`
    /// or its file's `-- qlik:` lines); the live result's version tells the push
    /// whether the apps hold it already.
    fn qlik_feed(&self) -> Result<Option<QlikFeed>> {
        let settings = &self.def.settings;
        let Some(hub) = &self.options.qlik_hub else {
            if !settings.qlik.is_empty() {
                tracing::warn!(pipeline = %self.def.name, "Qlik targets ignored: this run has no Qlik push");
            }
            return Ok(None);
        };
        if hub.options().targets.is_empty() && settings.qlik.is_empty() {
            return Ok(None);
        }
        let table = settings.qlik_table.as_deref().unwrap_or(&self.def.name);
        let feed = hub.feed(&self.def.name, table, &settings.target, &settings.qlik)?;
        feed.start((self.replay == Replay::Done).then(|| self.result_version()));
        Ok(Some(feed))
    }

    /// The live result's version: the SQL and the events consumed when it last changed.
    fn result_version(&self) -> ResultVersion {
        ResultVersion { sql_hash: self.def.sql_hash.clone(), events: self.counters.changed_at }
    }

    /// Number of groups in the source aggregation's state (open windows only, for
    /// windowed pipelines).
    pub fn state_groups(&self) -> usize {
        self.plan.with_source_aggregate(|source| source.aggregate.len()).unwrap_or(0)
    }

    /// What each streaming operator holds and has done, from the result down.
    pub fn operators(&self) -> Vec<OperatorStats> {
        self.plan.operators()
    }

    /// After a restart: the operators above the source aggregation (and the emitter)
    /// rebuild their state from what it holds, as if it had all just been inserted.
    async fn rebuild(&mut self) -> Result<()> {
        let only_source = self.plan.operators().len() == 1;
        if !self.plan.aggregates() || (only_source && !self.emitter.keeps_state()) {
            return Ok(());
        }
        let empty = RecordBatch::new_empty(self.plan.source_schema.clone());
        let changes = self.plan.run(empty, Tick { watermark: None, rebuild: true }).await?;
        self.emitter.apply(&changes);
        Ok(())
    }

    fn update_status(&mut self, state: &str) {
        let replaying = self.replay != Replay::Done && matches!(state, "running" | "caught_up");
        let notice = self.notice_text();
        let s = &mut self.status;
        s.state = if replaying { "replaying" } else { state }.to_string();
        s.progress = if replaying { Some(s.progress.unwrap_or(0.0)) } else { None };
        if s.last_error.is_none() {
            s.last_error = notice;
        }
        s.events_in = self.counters.consumed;
        s.events_ok = self.counters.ok;
        s.events_bad = self.counters.bad;
        s.events_late = self.counters.late;
        s.rows_upserted = self.counters.upserted;
        s.rows_deleted = self.counters.deleted;
        s.watermark = self.watermark.current().map(iso_micros);
    }

    fn notice_text(&self) -> Option<String> {
        self.notice.lock().ok().and_then(|n| n.clone())
    }

    /// Swaps the shadow table in once the replay has read what it set out to.
    async fn finish_replay(&mut self, source: &dyn source::Source, shutdown: &Shutdown) -> Result<()> {
        let Replay::Until(Some(until)) = &self.replay else { return Ok(()) };
        if !source.reached(until) {
            self.status.progress = Some(source.progress(until));
            return Ok(());
        }
        let sink = &mut self.sink;
        let swap = async || sink.swap_in_shadow().await;
        with_retry(&self.def.name, RetryTarget::sink, self.options.available_now, shutdown, swap).await?;
        self.replay = Replay::Done;
        if let Some(qlik) = &self.qlik {
            qlik.changed(self.result_version(), 0);
        }
        tracing::info!(pipeline = %self.def.name, hash = %self.def.sql_hash, "replay caught up: the new results replaced the old ones");
        // The checkpoint must not say "replaying" any more (see `Sink::prepare`).
        self.checkpoint()?;
        self.checkpoint_written()?;
        self.update_status("running");
        self.write_status().await;
        Ok(())
    }

    /// Opens the source where the state stands; while it is down, its error shows in
    /// the status (the sink is up).
    async fn open_source(&mut self, shutdown: &Shutdown) -> Result<Box<dyn source::Source>> {
        let (name, available_now) = (self.def.name.clone(), self.options.available_now);
        let (uri, source_options) = (self.options.source_uri.clone(), self.options.source.clone());
        let offset = self.offset.clone();
        with_retry_reporting(
            &name,
            RetryTarget::source,
            available_now,
            shutdown,
            &mut self.status_report(),
            async |_| source::open(&uri, &offset, &source_options),
        )
        .await
    }

    /// Forgets the state and starts over as a new version would: from the source's
    /// beginning, into a shadow table swapped in when caught up.
    async fn start_over(&mut self, shutdown: &Shutdown) -> Result<()> {
        // A plan of its own: its operators start empty.
        self.plan = StreamingPlan::new(&self.def, &self.source_schema).await?.split(self.options.workers)?;
        self.emitter = Emitter::new(&self.plan);
        self.watermark = Watermark::new(self.watermark.delay_micros, WatermarkState::default());
        self.counters = Counters::default();
        self.offset = SourceOffset::Start;
        self.batch = 0;
        self.rerun.clear();
        self.offset_log.drop_through(u64::MAX)?;
        self.replay = Replay::Until(None);
        let columns = result_columns(&self.plan);
        let sink = &mut self.sink;
        with_retry(&self.def.name, RetryTarget::sink, self.options.available_now, shutdown, async || {
            sink.prepare(&columns, TableChoice::NewShadow).await
        })
        .await?;
        // A crash from here on restarts like a new version: no checkpoint.
        self.checkpoints.finish()?;
        let path = checkpoint::path_for(&self.options.checkpoint_dir, &self.def.name);
        Checkpoint::remove(&path)?;
        self.checkpoints = CheckpointWriter::new(path, None);
        Ok(())
    }

    /// Whether the source's log still reaches where the state stands. Not when it was
    /// reset or recreated (the topic deleted and created again, the broker's volume
    /// wiped): then it is another log, and the state counts events it does not hold.
    async fn log_holds_state(&mut self, source: &dyn source::Source, shutdown: &Shutdown) -> Result<bool> {
        let furthest = self.rerun.back().map_or(&self.offset, |b| &b.end).clone();
        let (name, available_now) = (self.def.name.clone(), self.options.available_now);
        let holds = with_retry_reporting(
            &name,
            RetryTarget::source,
            available_now,
            shutdown,
            &mut self.status_report(),
            async |_| source.holds(&furthest),
        )
        .await?;
        if !holds {
            let message = format!(
                "the source {} no longer holds the checkpoint's position {furthest:?} (ends at {:?}): it was reset or recreated; starting over from its beginning",
                self.options.source_uri,
                source.end_at_open()
            );
            tracing::warn!(pipeline = %self.def.name, "{message}");
            // Shown like an outage: in the status, for a while.
            self.status.last_error = Some(message);
            self.outage_seen = Some(Instant::now());
        }
        Ok(holds)
    }

    /// Runs until shutdown (or, with `available_now`, until the source is drained).
    pub async fn run(mut self, shutdown: Shutdown) -> Result<PipelineStatus> {
        let available_now = self.options.available_now;
        let mut source = self.open_source(&shutdown).await?;
        if !self.log_holds_state(source.as_ref(), &shutdown).await? {
            self.start_over(&shutdown).await?;
            source = self.open_source(&shutdown).await?;
        }
        let end_at_open = source.end_at_open();
        if self.replay == Replay::Until(None) {
            self.replay = Replay::Until(Some(end_at_open.clone()));
        }
        let mut last_checkpoint = Instant::now();
        let mut dirty = false;
        while !shutdown.is_triggered() {
            self.finish_replay(source.as_ref(), &shutdown).await?;
            let next = match self.next_batch(source.as_mut(), &shutdown).await {
                Ok(next) => next,
                // Stopping during an outage: checkpoint what was done and stop.
                Err(e) if e.is_retryable() && shutdown.is_triggered() => break,
                Err(e) => return Err(e),
            };
            let drained = self.rerun.is_empty() && source.reached(&end_at_open);
            match next {
                Some((raw, logged)) => {
                    self.record_lag(source.as_ref());
                    self.process(&raw, &logged, &shutdown).await?;
                    dirty = true;
                }
                None if available_now && drained => break,
                // Partitions that went quiet may let windows close although no record
                // came: an empty batch, logged like any other (so that a re-run after
                // a crash sees the same idle partitions), closes them.
                None if self.rerun.is_empty() && self.idle_partitions_close_windows(source.partitions()) => {
                    let raw = RawBatch::empty(self.offset.clone());
                    let logged = self.log_batch(&raw, source.partitions())?;
                    self.process(&raw, &logged, &shutdown).await?;
                    dirty = true;
                }
                None => {
                    let notice_unseen = self.status.last_error.is_none() && self.notice_text().is_some();
                    let idle_now = self.rerun.is_empty() && self.replay == Replay::Done;
                    if idle_now && (self.status.state != "caught_up" || notice_unseen) {
                        self.update_status("caught_up");
                        self.write_status().await;
                    }
                    // Records known to wait at the source (a Kafka fetch still on its
                    // way) are not idleness: ask again at once (the source's own read
                    // waits a moment for them).
                    if !source.lag().iter().any(|&(_, waiting)| waiting > 0) {
                        // Idle: the last batch's write lands now, not with the next batch.
                        self.flush(&shutdown).await?;
                        shutdown.sleep(self.options.poll_interval).await;
                    }
                }
            }
            if dirty && last_checkpoint.elapsed() >= self.options.checkpoint_interval {
                self.flush(&shutdown).await?;
                self.checkpoint()?;
                last_checkpoint = Instant::now();
                dirty = false;
            }
            if available_now && self.rerun.is_empty() && source.reached(&end_at_open) {
                break;
            }
        }
        if !shutdown.is_triggered() {
            self.finish_replay(source.as_ref(), &shutdown).await?;
        }
        self.flush(&shutdown).await?;
        self.checkpoint()?;
        self.checkpoint_written()?;
        self.update_status(if available_now { "caught_up" } else { "stopped" });
        self.write_status().await;
        tracing::info!(pipeline = %self.def.name, counters = ?self.counters, "pipeline stopped");
        Ok(self.status.clone())
    }

    /// The next micro-batch and its entry in the offset log: first the batches that
    /// ran after the last checkpoint, read again up to where each ended; then new
    /// records, logged before they are processed. `None`: nothing to read right now.
    async fn next_batch(
        &mut self,
        source: &mut dyn source::Source,
        shutdown: &Shutdown,
    ) -> Result<Option<(RawBatch, LoggedBatch)>> {
        let (name, available_now) = (self.def.name.clone(), self.options.available_now);
        if let Some(logged) = self.rerun.front().cloned() {
            let mut report = self.status_report();
            let raw =
                with_retry_reporting(&name, RetryTarget::source, available_now, shutdown, &mut report, async |_| {
                    source.read_until(&logged.end)
                })
                .await?;
            return Ok(raw.map(|raw| (raw, self.rerun.pop_front().expect("looked at above"))));
        }
        let max = self.options.max_batch_records;
        let mut report = self.status_report();
        let read = async |_: &mut StatusReport<'_>| source.next_batch(max);
        let next = with_retry_reporting(&name, RetryTarget::source, available_now, shutdown, &mut report, read);
        let Some(raw) = next.await? else { return Ok(None) };
        let logged = self.log_batch(&raw, source.partitions())?;
        Ok(Some((raw, logged)))
    }

    /// Whether the source's partitions as they are now (some idle) would move the
    /// watermark past where windows were last closed.
    fn idle_partitions_close_windows(&self, partitions: Vec<(i32, bool)>) -> bool {
        if self.plan.window.is_none() {
            return false;
        }
        let mut probe = Watermark::new(self.watermark.delay_micros, self.watermark.state.clone());
        probe.set_partitions(partitions);
        probe.current() > self.watermark.state.closed_at
    }

    /// Writes a new batch into the offset log, with the clock now and the source's
    /// partitions as they are now (idle or not), before it runs.
    pub fn log_batch(&mut self, raw: &RawBatch, partitions: Vec<(i32, bool)>) -> Result<LoggedBatch> {
        let logged = LoggedBatch {
            batch: self.batch + 1,
            sql_hash: self.def.sql_hash.clone(),
            start: self.offset.clone(),
            end: raw.end.clone(),
            clock_micros: chrono::Utc::now().timestamp_micros(),
            partitions,
        };
        self.offset_log.append(&logged)?;
        Ok(logged)
    }

    /// Where retried outages are shown: this pipeline's status row.
    fn status_report(&mut self) -> StatusReport<'_> {
        StatusReport { sink: &mut self.sink, status: &mut self.status, outage_seen: &mut self.outage_seen }
    }

    async fn write_status(&mut self) {
        if let Err(e) = self.sink.write_status(&self.status).await {
            tracing::warn!(pipeline = %self.def.name, error = %e, "could not write status");
        }
    }

    /// Processes one micro-batch end to end: `logged` is its entry in the offset log
    /// (the clock and idle partitions it runs with).
    pub async fn process(&mut self, raw: &RawBatch, logged: &LoggedBatch, shutdown: &Shutdown) -> Result<()> {
        if logged.batch != self.batch + 1 || logged.start != self.offset {
            return Err(crate::error::Error::internal(format!(
                "pipeline {}: batch {} from {:?} does not follow batch {} ending at {:?}",
                self.def.name, logged.batch, logged.start, self.batch, self.offset
            )));
        }
        // Tests inject a panic here (`FAILPOINTS=pipeline_batch.<name>=panic`); nothing otherwise.
        fail::fail_point!(&format!("pipeline_batch.{}", self.def.name));
        let started = Instant::now();
        self.watermark.set_partitions(logged.partitions.clone());
        let records = raw.records();
        let mut decoded = self.decoder.decode_in_parallel(&records, self.options.workers)?;
        self.reject_far_future(&mut decoded, logged.clock_micros)?;
        let rejected = |i: usize, reason: String| RejectedRecord {
            source_offset: raw.location(i),
            raw: String::from_utf8_lossy(&raw.record(i)[..raw.record(i).len().min(MAX_RAW_KEPT)]).into_owned(),
            reason,
        };
        if let Some(dead_letter) = &self.dead_letter
            && !decoded.bad.is_empty()
        {
            let locations: Vec<String> = decoded.bad.iter().map(|(i, _)| raw.location(*i)).collect();
            let records: Vec<DeadRecord<'_>> = decoded
                .bad
                .iter()
                .zip(&locations)
                .map(|((i, reason), at)| DeadRecord { raw: raw.record(*i), reason, source_offset: at })
                .collect();
            let name = &self.def.name;
            let publish = async || dead_letter.publish(name, &records);
            with_retry(name, RetryTarget::dead_letter, self.options.available_now, shutdown, publish).await?;
        }
        let bad: Vec<RejectedRecord> = decoded.bad.into_iter().map(|(i, reason)| rejected(i, reason)).collect();

        let (good, late) = self.split_late(decoded.batch, &decoded.rows, raw, rejected)?;
        let delta = match self.plan.aggregates() {
            true => {
                let tick = Tick { watermark: self.watermark.close_windows(), rebuild: false };
                let changes = self.plan.run(good.clone(), tick).await?;
                self.emitter.apply(&changes)
            }
            false => {
                let (out, records) = self.plan.rows(good.clone()).await?;
                emit::rows_delta(&self.plan, &out, &records, |i| raw.location(i))
            }
        };

        self.counters.consumed += records.len() as u64;
        self.counters.bad += bad.len() as u64;
        self.counters.late += late.len() as u64;
        self.counters.ok += good.num_rows() as u64;
        self.counters.upserted += delta.upserts.len() as u64;
        self.counters.deleted += delta.deletes.len() as u64;
        let changed = (delta.upserts.len() + delta.deletes.len()) as u64;
        if changed > 0 {
            self.counters.changed_at = self.counters.consumed;
        }
        self.offset = raw.end.clone();
        self.batch = logged.batch;
        self.status.last_batch_at = Some(now_iso());
        if self.outage_seen.is_none_or(|seen| seen.elapsed() >= OUTAGE_SHOWN_FOR) {
            self.status.last_error = None;
            self.outage_seen = None;
        }
        self.update_status("running");
        self.record_batch_metrics(records.len(), bad.len(), late.len(), &delta, started.elapsed());
        let batch = BatchWrite { delta, status: self.status.clone(), bad, late };
        let sink = &mut self.sink;
        let first_try = sink.write(batch).await;
        // The write before this one has landed (or, after a retry, every write has).
        let landed = std::mem::replace(&mut self.unannounced, changed);
        match first_try {
            Ok(()) => self.announce(landed),
            Err(e) if e.is_retryable() => {
                self.unannounced += landed;
                self.flush(shutdown).await?;
            }
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// Lands every write started (retrying an outage): [`Self::process`] only starts a
    /// batch's write, and a checkpoint must not get ahead of the store.
    pub async fn flush(&mut self, shutdown: &Shutdown) -> Result<()> {
        let (name, available_now) = (self.def.name.clone(), self.options.available_now);
        with_retry_reporting(&name, RetryTarget::sink, available_now, shutdown, &mut self.status_report(), async |r| {
            r.sink.flush().await
        })
        .await?;
        let landed = std::mem::take(&mut self.unannounced);
        self.announce(landed);
        Ok(())
    }

    /// The store has `changed` more rows of the result: the Qlik push may read them now.
    fn announce(&self, changed: u64) {
        if let Some(qlik) = &self.qlik
            && changed > 0
            && self.replay == Replay::Done
        {
            qlik.changed(self.result_version(), changed);
        }
    }

    fn record_batch_metrics(&self, consumed: usize, bad: usize, late: usize, delta: &ResultDelta, took: Duration) {
        let m = metrics();
        let pipeline = Metrics::pipeline(&self.def.name);
        let name = || self.def.name.clone();
        m.events_consumed.get_or_create(&pipeline).inc_by(consumed as u64);
        for (outcome, n) in [(Outcome::ok, consumed - bad - late), (Outcome::bad, bad), (Outcome::late, late)] {
            m.events.get_or_create(&OutcomeLabels { pipeline: name(), outcome }).inc_by(n as u64);
        }
        for (op, n) in [(RowOp::upsert, delta.upserts.len()), (RowOp::delete, delta.deletes.len())] {
            m.rows_written.get_or_create(&RowLabels { pipeline: name(), op }).inc_by(n as u64);
        }
        m.batch_duration.get_or_create(&pipeline).observe(took.as_secs_f64());
        m.batch_records.get_or_create(&pipeline).observe(consumed as f64);
        m.state_groups.get_or_create(&pipeline).set(self.state_groups() as i64);
        if let Some(watermark) = self.watermark.current() {
            let behind = chrono::Utc::now().timestamp_micros() - watermark;
            m.watermark_delay.get_or_create(&pipeline).set(behind as f64 / 1e6);
        }
    }

    /// Records each partition's lag (after a batch).
    fn record_lag(&mut self, source: &dyn source::Source) {
        let lags = source.lag();
        self.status.lag = lags.iter().map(|(_, lag)| lag).sum();
        for (partition, lag) in lags {
            let labels = PartitionLabels { pipeline: self.def.name.clone(), partition };
            metrics().source_lag.get_or_create(&labels).set(lag as i64);
        }
    }

    /// Event times further ahead of the clock than `max_future` are bad records: one
    /// such event would move its partition's watermark so far that every later event
    /// is late. They never reach the watermark.
    fn reject_far_future(&self, decoded: &mut Decoded, clock_micros: i64) -> Result<()> {
        let (Some(limit), Some(times)) = (self.def.settings.max_future, self.event_times(&decoded.batch)) else {
            return Ok(());
        };
        let latest = clock_micros.saturating_add(limit.as_micros() as i64);
        let reasons = (0..times.len())
            .map(|i| {
                (times.is_valid(i) && times.value(i) > latest).then(|| {
                    format!(
                        "event time {} is more than {} ahead of the clock ({}): implausible (the pipeline's max_future)",
                        iso_micros(times.value(i)),
                        crate::pipeline::definition::describe_duration(limit),
                        iso_micros(clock_micros),
                    )
                })
            })
            .collect();
        decoded.reject_rows(reasons)
    }

    /// Adds the per-event watermark column and splits off late events.
    fn split_late(
        &mut self,
        batch: RecordBatch,
        rows: &[usize],
        raw: &RawBatch,
        rejected: impl Fn(usize, String) -> RejectedRecord,
    ) -> Result<(RecordBatch, Vec<RejectedRecord>)> {
        let n = batch.num_rows();
        let (watermarks, times) = match self.event_times(&batch) {
            Some(times) => (self.watermark.observe(&times, |i| raw.partition(rows[i])), Some(times)),
            None => (vec![None; n], None),
        };
        let mut late = Vec::new();
        let mut keep = vec![true; n];
        if let (Some(window), Some(times)) = (&self.plan.window, &times) {
            for i in 0..n {
                let t = times.value(i);
                if window.call.spec.is_late(t, watermarks[i]) {
                    keep[i] = false;
                    let reason = format!(
                        "late: event time {} is behind the watermark {} (its windows have closed)",
                        iso_micros(t),
                        iso_micros(watermarks[i].unwrap_or_default()),
                    );
                    late.push(rejected(rows[i], reason));
                }
            }
        }
        let mut columns = batch.columns().to_vec();
        columns.push(Arc::new(TimestampMicrosecondArray::from(watermarks)));
        columns.push(Arc::new(UInt32Array::from_iter_values(rows.iter().map(|&r| r as u32))));
        let with_watermark = RecordBatch::try_new(self.plan.source_schema.clone(), columns)?;
        let good = if late.is_empty() {
            with_watermark
        } else {
            filter_record_batch(&with_watermark, &BooleanArray::from(keep))?
        };
        Ok((good, late))
    }

    fn event_times(&self, batch: &RecordBatch) -> Option<TimestampMicrosecondArray> {
        batch.column(self.event_time?).as_primitive_opt::<TimestampMicrosecondType>().cloned()
    }

    /// Saves state and offset together: what changed since the last checkpoint (or,
    /// now and then, the whole state) is collected here and written on the writer
    /// thread while the next batches run. The offset log forgets the batches a
    /// checkpoint holds once that checkpoint is on disk.
    pub fn checkpoint(&mut self) -> Result<()> {
        let started = Instant::now();
        self.checkpoint_written()?;
        let full = self.checkpoints.wants_full();
        let saved = self.plan.with_source_aggregate(|source| -> Result<_> {
            let state = match full {
                true => StateChange::Full(source.aggregate.full_state()?),
                false => {
                    let (written, removed) = source.aggregate.take_changes()?;
                    StateChange::Delta { written, removed }
                }
            };
            Ok((state, source.aggregate.evicted_until(), source.closed.clone(), source.aggregate.size()))
        });
        // Without aggregation there is no state: an empty one, always whole.
        let (state, evicted_until, closed, state_bytes) = match saved.transpose()? {
            Some(saved) => saved,
            None => (StateChange::Full(RecordBatch::new_empty(Arc::new(Schema::empty()))), None, None, 0),
        };
        let header = CheckpointHeader {
            sql_hash: self.def.sql_hash.clone(),
            offset: self.offset.clone(),
            watermark: self.watermark.state.clone(),
            replay_until: match &self.replay {
                Replay::Until(until) => until.clone(),
                Replay::Done => None,
            },
            evicted_until,
            counters: self.counters,
            batch: self.batch,
            state_files: Vec::new(),
            closed_files: Vec::new(),
        };
        self.checkpoints.start(header, state, closed)?;
        let (m, pipeline) = (metrics(), Metrics::pipeline(&self.def.name));
        m.checkpoint_duration.get_or_create(&pipeline).observe(started.elapsed().as_secs_f64());
        m.state_bytes.get_or_create(&pipeline).set(state_bytes as i64);
        Ok(())
    }

    /// Waits for the checkpoint being written, if any; once it is on disk, the offset
    /// log no longer needs the batches it holds.
    pub fn checkpoint_written(&mut self) -> Result<()> {
        if let Some(written) = self.checkpoints.finish()? {
            self.offset_log.drop_through(written.batch)?;
            let (m, pipeline) = (metrics(), Metrics::pipeline(&self.def.name));
            m.checkpoint_bytes.get_or_create(&pipeline).set(written.bytes as i64);
        }
        Ok(())
    }
}

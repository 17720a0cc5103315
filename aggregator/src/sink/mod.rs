//! Sinks: where a pipeline's results, status and rejected records go.
//!
//! A [`Sink`] receives one [`ResultDelta`] per micro-batch (upserts by `_id`, deletes)
//! together with the pipeline's status and the records it rejected, and applies them
//! ([`StoreSink`] writes them to a `store::Store`: SQLite or MongoDB). [`values`]
//! turns Arrow rows into the store's typed values and `_id`s; [`dead_letter`] also
//! sends bad records to a Kafka topic; [`qlik`] keeps the result as a table in Qlik
//! apps (reloads read it back from the store).
//!
//! A pipeline's new version (new SQL hash) replays the source into a *shadow* of its
//! table and swaps it in when caught up ([`Sink::swap_in_shadow`]), so readers see the
//! old results until then and the new ones after, never a half-filled table.

pub mod dead_letter;
pub mod qlik;
pub mod values;

use std::collections::VecDeque;
use std::sync::Arc;

use store::{PipelineStatus, RejectedRecord, ResultColumn, ResultDelta, Store, shadow_table};

use crate::error::{Error, Result};

/// Which table a pipeline writes when it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableChoice {
    /// Its table (resuming an unchanged pipeline).
    Live,
    /// A new, empty shadow table (a new version starts its replay).
    NewShadow,
    /// The shadow table, as the last run left it (a replay resumes after a restart).
    ResumeShadow,
}

#[async_trait::async_trait]
pub trait Sink: Send {
    /// Makes the table chosen ready for `columns`. Returns whether the pipeline
    /// writes its shadow table: resuming a replay whose shadow was already swapped in
    /// (a crash between the swap and the next checkpoint) continues on the live table.
    async fn prepare(&mut self, columns: &[ResultColumn], choice: TableChoice) -> Result<bool>;
    /// Replaces the table by the shadow table in one step; later writes go to the table.
    async fn swap_in_shadow(&mut self) -> Result<()>;
    /// Starts applying one micro-batch's changes, status and rejected records, and
    /// returns once the write before it has landed: the write runs while the next
    /// batch is computed. A failed write is kept and tried again first by the next call
    /// (or by [`Self::flush`]), so nothing is lost or applied out of order.
    async fn write(&mut self, batch: BatchWrite) -> Result<()>;
    /// Returns once every write started has landed (before a checkpoint).
    async fn flush(&mut self) -> Result<()>;
    /// Updates only the status (start, stop, errors), after the writes started.
    async fn write_status(&mut self, status: &PipelineStatus) -> Result<()>;
}

/// One micro-batch's writes.
#[derive(Debug, Default)]
pub struct BatchWrite {
    pub delta: ResultDelta,
    pub status: PipelineStatus,
    pub bad: Vec<RejectedRecord>,
    pub late: Vec<RejectedRecord>,
}

/// Opens the sink for one pipeline's `table` by URI (`sqlite:` or `mongodb://`);
/// `database` names the MongoDB database if the URI does not.
pub async fn open(uri: &str, database: Option<&str>, pipeline: &str, table: &str) -> Result<Box<dyn Sink>> {
    let store = store::open(uri, database)
        .await
        .map_err(|e| if e.is_retryable() { Error::external(e.to_string()) } else { Error::user(e.to_string()) })?;
    Ok(Box::new(StoreSink {
        store: Arc::from(store),
        pipeline: pipeline.to_string(),
        table: table.to_string(),
        writing: table.to_string(),
        columns: Arc::new(Vec::new()),
        queued: VecDeque::new(),
        in_flight: None,
    }))
}

/// A pipeline's results in a [`Store`] (SQLite or MongoDB).
///
/// A batch's write runs as a task of the pipeline's runtime (on its worker thread,
/// see `supervisor::run_one`) while the pipeline computes the next batch; one write
/// at a time, in order.
pub struct StoreSink {
    store: Arc<dyn Store>,
    pipeline: String,
    table: String,
    /// The table written now: `table` or its shadow.
    writing: String,
    columns: Arc<Vec<ResultColumn>>,
    /// Writes not started yet, or failed (the first is tried again first).
    queued: VecDeque<Arc<BatchWrite>>,
    /// The write running, and what it writes (queued again if it fails).
    in_flight: Option<(Arc<BatchWrite>, tokio::task::JoinHandle<Result<()>>)>,
}

impl StoreSink {
    /// Waits for the write running, if any; a failed one goes back to the front of the queue.
    async fn land(&mut self) -> Result<()> {
        let Some((batch, running)) = self.in_flight.take() else { return Ok(()) };
        let outcome = running.await.unwrap_or_else(|e| Err(Error::internal(format!("the sink's write task: {e}"))));
        if outcome.is_err() {
            self.queued.push_front(batch);
        }
        outcome
    }

    fn start(&self, batch: Arc<BatchWrite>) -> tokio::task::JoinHandle<Result<()>> {
        let (store, table, columns) = (self.store.clone(), self.writing.clone(), self.columns.clone());
        tokio::spawn(async move {
            let BatchWrite { delta, status, bad, late } = batch.as_ref();
            Ok(store.write_batch(&table, &columns, delta, status, bad, late).await?)
        })
    }

    /// Lands the write running and the queued ones but the last `keep_running`, which
    /// is started and left running.
    async fn drain(&mut self, keep_running: usize) -> Result<()> {
        self.land().await?;
        while self.queued.len() > keep_running {
            let batch = self.queued.front().expect("checked").clone();
            let running = self.start(batch.clone());
            self.in_flight = Some((batch, running));
            self.queued.pop_front();
            self.land().await?;
        }
        if let Some(batch) = self.queued.pop_front() {
            let running = self.start(batch.clone());
            self.in_flight = Some((batch, running));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Sink for StoreSink {
    async fn prepare(&mut self, columns: &[ResultColumn], choice: TableChoice) -> Result<bool> {
        self.flush().await?;
        self.columns = Arc::new(columns.to_vec());
        let shadow = shadow_table(&self.table);
        let choice = match choice {
            TableChoice::ResumeShadow if !self.store.has_table(&shadow).await? => TableChoice::Live,
            other => other,
        };
        self.writing = if choice == TableChoice::Live { self.table.clone() } else { shadow };
        let fresh = choice == TableChoice::NewShadow;
        self.store.prepare_result_table(&self.pipeline, &self.writing, columns, fresh).await?;
        Ok(choice != TableChoice::Live)
    }

    async fn swap_in_shadow(&mut self) -> Result<()> {
        self.flush().await?;
        self.store.swap_in(&shadow_table(&self.table), &self.table).await?;
        self.writing = self.table.clone();
        Ok(())
    }

    async fn write(&mut self, batch: BatchWrite) -> Result<()> {
        self.queued.push_back(Arc::new(batch));
        self.drain(1).await
    }

    async fn flush(&mut self) -> Result<()> {
        self.drain(0).await
    }

    async fn write_status(&mut self, status: &PipelineStatus) -> Result<()> {
        // After the batch running, whose status is older; a failed batch stays queued.
        let _ = self.land().await;
        Ok(self.store.write_status(status).await?)
    }
}

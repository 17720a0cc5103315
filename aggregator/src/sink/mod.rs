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
    /// Applies one micro-batch's changes, status and rejected records.
    async fn write(
        &mut self,
        delta: &ResultDelta,
        status: &PipelineStatus,
        bad: &[RejectedRecord],
        late: &[RejectedRecord],
    ) -> Result<()>;
    /// Updates only the status (start, stop, errors).
    async fn write_status(&mut self, status: &PipelineStatus) -> Result<()>;
}

/// Opens the sink for one pipeline's `table` by URI (`sqlite:` or `mongodb://`);
/// `database` names the MongoDB database if the URI does not.
pub async fn open(uri: &str, database: Option<&str>, pipeline: &str, table: &str) -> Result<Box<dyn Sink>> {
    let store = store::open(uri, database)
        .await
        .map_err(|e| if e.is_retryable() { Error::external(e.to_string()) } else { Error::user(e.to_string()) })?;
    Ok(Box::new(StoreSink {
        store,
        pipeline: pipeline.to_string(),
        table: table.to_string(),
        writing: table.to_string(),
        columns: Vec::new(),
    }))
}

/// A pipeline's results in a [`Store`] (SQLite or MongoDB).
pub struct StoreSink {
    store: Box<dyn Store>,
    pipeline: String,
    table: String,
    /// The table written now: `table` or its shadow.
    writing: String,
    columns: Vec<ResultColumn>,
}

#[async_trait::async_trait]
impl Sink for StoreSink {
    async fn prepare(&mut self, columns: &[ResultColumn], choice: TableChoice) -> Result<bool> {
        self.columns = columns.to_vec();
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
        self.store.swap_in(&shadow_table(&self.table), &self.table).await?;
        self.writing = self.table.clone();
        Ok(())
    }

    async fn write(
        &mut self,
        delta: &ResultDelta,
        status: &PipelineStatus,
        bad: &[RejectedRecord],
        late: &[RejectedRecord],
    ) -> Result<()> {
        Ok(self.store.write_batch(&self.writing, &self.columns, delta, status, bad, late).await?)
    }

    async fn write_status(&mut self, status: &PipelineStatus) -> Result<()> {
        Ok(self.store.write_status(status).await?)
    }
}

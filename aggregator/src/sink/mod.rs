//! Sinks: where a pipeline's results, status and rejected records go.
//!
//! A [`Sink`] receives one [`ResultDelta`] per micro-batch (upserts by `_id`, deletes)
//! together with the pipeline's status and the records it rejected, and applies them
//! as one unit. [`values`] turns Arrow rows into the store's values and `_id`s.

pub mod values;

use store::{PipelineStatus, RejectedRecord, ResultColumn, ResultDelta, SqliteStore, StoreUri};

use crate::error::Result;

pub trait Sink: Send {
    /// Makes the result table ready for `columns`; `fresh` discards earlier results
    /// (the pipeline starts over from the beginning of the source).
    fn prepare(&mut self, columns: &[ResultColumn], fresh: bool) -> Result<()>;
    /// Applies one micro-batch's changes, status and rejected records together.
    fn write(
        &mut self,
        delta: &ResultDelta,
        status: &PipelineStatus,
        bad: &[RejectedRecord],
        late: &[RejectedRecord],
    ) -> Result<()>;
    /// Updates only the status (start, stop, errors).
    fn write_status(&mut self, status: &PipelineStatus) -> Result<()>;
}

/// Opens the sink for one pipeline's `table` by URI.
pub fn open(uri: &str, pipeline: &str, table: &str) -> Result<Box<dyn Sink>> {
    match StoreUri::parse(uri).map_err(|e| crate::error::Error::user(e.to_string()))? {
        StoreUri::Sqlite(path) => Ok(Box::new(SqliteSink {
            store: SqliteStore::open(path)?,
            pipeline: pipeline.to_string(),
            table: table.to_string(),
            columns: Vec::new(),
        })),
    }
}

/// `sqlite:<path>`: the embedded store.
pub struct SqliteSink {
    store: SqliteStore,
    pipeline: String,
    table: String,
    columns: Vec<ResultColumn>,
}

impl Sink for SqliteSink {
    fn prepare(&mut self, columns: &[ResultColumn], fresh: bool) -> Result<()> {
        self.columns = columns.to_vec();
        Ok(self.store.prepare_result_table(&self.pipeline, &self.table, columns, fresh)?)
    }

    fn write(
        &mut self,
        delta: &ResultDelta,
        status: &PipelineStatus,
        bad: &[RejectedRecord],
        late: &[RejectedRecord],
    ) -> Result<()> {
        Ok(self.store.write_batch(&self.table, &self.columns, delta, status, bad, late)?)
    }

    fn write_status(&mut self, status: &PipelineStatus) -> Result<()> {
        Ok(self.store.write_status(status)?)
    }
}

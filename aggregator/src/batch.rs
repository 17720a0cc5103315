//! A pipeline's SQL run as one batch DataFusion query over a fixed set of events.
//!
//! This is the oracle: once a pipeline has consumed the same events, its sink holds
//! exactly this result (late events excepted, which the caller leaves out). Same
//! session set-up as the pipelines (functions, rules), plain `MemTable`s for `SOURCE`
//! and `AGGREGATED`, no incremental machinery.

use std::sync::Arc;

use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::datasource::MemTable;

use crate::error::{Error, Result};
use crate::pipeline::definition::PipelineDefinition;
use crate::pipeline::plan::{AGGREGATED_TABLE, SOURCE_TABLE, session_context};

/// Runs `def`'s stages over `events` (the source rows, optionally with the hidden
/// `__watermark` column that hopping windows use to leave out closed windows).
pub async fn run(def: &PipelineDefinition, events: RecordBatch) -> Result<RecordBatch> {
    let file = def.path.display().to_string();
    let user = |e: &dyn std::fmt::Display| Error::user(format!("{file}: {e}"));
    let ctx = session_context();
    let schema = events.schema();
    ctx.register_table(SOURCE_TABLE, Arc::new(MemTable::try_new(schema, vec![vec![events]])?))?;
    let frame = ctx.sql(&def.stage1).await.map_err(|e| user(&e))?;
    let result_schema = Arc::new(frame.schema().as_arrow().clone());
    let stage1 = concat_batches(&result_schema, &frame.collect().await?)?;
    let Some(stage2) = &def.stage2 else { return Ok(stage1) };
    ctx.register_table(AGGREGATED_TABLE, Arc::new(MemTable::try_new(stage1.schema(), vec![vec![stage1]])?))?;
    let frame = ctx.sql(stage2).await.map_err(|e| user(&e))?;
    let result_schema = Arc::new(frame.schema().as_arrow().clone());
    Ok(concat_batches(&result_schema, &frame.collect().await?)?)
}

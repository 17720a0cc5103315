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
use datafusion::physical_plan::collect;
use datafusion::prelude::SessionContext;

use crate::error::{Error, Result};
use crate::pipeline::definition::PipelineDefinition;
use crate::pipeline::plan::{AGGREGATED_TABLE, QueryMode, SOURCE_TABLE, hide_internal_columns, session_context};

/// Runs `def`'s stages over `events` (the source rows, optionally with the hidden
/// `__watermark` column that hopping windows use to leave out closed windows).
pub async fn run(def: &PipelineDefinition, events: RecordBatch) -> Result<RecordBatch> {
    let ctx = session_context(QueryMode::Batch);
    ctx.register_table(SOURCE_TABLE, Arc::new(MemTable::try_new(events.schema(), vec![vec![events]])?))?;
    let stage1 = query(&ctx, def, &def.stage1).await?;
    let Some(stage2) = &def.stage2 else { return Ok(stage1) };
    ctx.register_table(AGGREGATED_TABLE, Arc::new(MemTable::try_new(stage1.schema(), vec![vec![stage1]])?))?;
    query(&ctx, def, stage2).await
}

async fn query(ctx: &SessionContext, def: &PipelineDefinition, sql: &str) -> Result<RecordBatch> {
    let user = |e: &dyn std::fmt::Display| Error::user(format!("{}: {e}", def.path.display()));
    let frame = ctx.sql(sql).await.and_then(hide_internal_columns).map_err(|e| user(&e))?;
    // The physical plan's schema, not the frame's: analysis (hopping windows) can
    // change a column's type.
    let plan = frame.create_physical_plan().await.map_err(|e| user(&e))?;
    let schema = plan.schema();
    Ok(concat_batches(&schema, &collect(plan, ctx.task_ctx()).await?)?)
}

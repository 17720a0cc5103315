//! Streaming operators: each keeps its own state and turns the rows it receives into
//! the changes of its output. Between them flow [`changelog`]s: rows with a weight.
//! Each runs as a node of DataFusion's physical plan ([`exec::StreamingExec`]), put
//! there by the pipeline's planner rule (`pipeline::dataflow`).
//!
//! * [`aggregate`] — grouped aggregation, windowed (tumbling, hopping, session) or
//!   not, over columnar state; over a changelog (an aggregate of an aggregate) it
//!   retracts; [`shards`] splits one over `SOURCE` by key across worker threads;
//! * [`top_n`] — `ORDER BY … LIMIT N` over a changelog, kept in sort order;
//! * [`partitioned`] — window functions over a changelog, recomputed per partition;
//! * [`recompute`] — any other node over changelogs, recomputed whole.

pub mod aggregate;
pub mod changelog;
pub mod exec;
pub mod partitioned;
pub mod recompute;
pub mod shards;
pub mod top_n;

use datafusion::arrow::array::{RecordBatch, RecordBatchOptions};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::row::RowConverter;

/// Rows kept in arrow's row format (by `converter`) back into a batch of `schema`: how
/// the operators that hold rows (top-N, window functions, recompute) hand them on.
pub fn rows_to_batch(
    converter: &RowConverter,
    schema: &SchemaRef,
    rows: &[&[u8]],
) -> crate::error::Result<RecordBatch> {
    let parser = converter.parser();
    let columns = converter.convert_rows(rows.iter().map(|r| parser.parse(r)))?;
    let options = RecordBatchOptions::new().with_row_count(Some(rows.len()));
    Ok(RecordBatch::try_new_with_options(schema.clone(), columns, &options)?)
}

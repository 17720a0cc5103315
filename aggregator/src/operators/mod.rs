//! Streaming operators: each keeps its own state and turns the rows it receives into
//! the changes of its output. Between them flow [`changelog`]s: rows with a weight.
//! Each runs as a node of DataFusion's physical plan ([`exec::StreamingExec`]), put
//! there by the pipeline's planner rule (`pipeline::dataflow`).
//!
//! * [`aggregate`] — grouped aggregation, windowed (tumbling, hopping, session) or
//!   not, over columnar state; over a changelog (an aggregate of an aggregate) it
//!   retracts;
//! * [`top_n`] — `ORDER BY … LIMIT N` over a changelog, kept in sort order;
//! * [`partitioned`] — window functions over a changelog, recomputed per partition;
//! * [`recompute`] — any other node over changelogs, recomputed whole.

pub mod aggregate;
pub mod changelog;
pub mod exec;
pub mod partitioned;
pub mod recompute;
pub mod top_n;

//! Streaming operators: each keeps its own state and turns the rows it receives into
//! the changes of its output. Between them flow [`changelog`]s: rows with a weight.
//!
//! * [`aggregate`] — grouped aggregation, windowed (tumbling, hopping, session) or
//!   not, over columnar state; over a changelog (an aggregate of an aggregate) it
//!   retracts;
//! * [`top_n`] — `ORDER BY … LIMIT N` over a changelog, kept in sort order (between
//!   two aggregations, its first rows' changes are a changelog too);
//! * [`partitioned`] — window functions over a changelog, recomputed per partition.

pub mod aggregate;
pub mod changelog;
pub mod partitioned;
pub mod top_n;

/// What a level of a chain of aggregations keeps of its input rows, besides its
/// aggregation, when more than row-by-row operations come before it.
pub enum Between {
    /// Window functions: the rows of each partition.
    Partitions(partitioned::PartitionedRows),
    /// `ORDER BY … LIMIT N`: every row in order, and the first N last passed on.
    TopN(top_n::TopNChanges),
}

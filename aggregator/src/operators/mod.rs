//! Streaming operators: each keeps its own state and turns the rows it receives into
//! the changes of its output.
//!
//! * [`aggregate`] — grouped aggregation, windowed (tumbling, hopping, session) or
//!   not, over columnar state; over a changelog (an aggregate of an aggregate) it
//!   retracts;
//! * [`top_n`] — `ORDER BY … LIMIT N` over a changelog, kept in sort order;
//! * [`partitioned`] — window functions over a changelog, recomputed per partition.

pub mod aggregate;
pub mod partitioned;
pub mod top_n;

//! Streaming operators: each keeps its own state and turns the rows it receives into
//! the changes of its output.
//!
//! * [`aggregate`] — grouped aggregation, windowed (tumbling, hopping, session) or
//!   not, over columnar state; over a changelog (an aggregate of an aggregate) it
//!   retracts;
//! * [`top_n`] — `ORDER BY … LIMIT N` over a changelog, kept in sort order.

pub mod aggregate;
pub mod top_n;

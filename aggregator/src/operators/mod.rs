//! Streaming operators: each keeps its own state and turns the rows it receives into
//! the changes of its output.
//!
//! * [`aggregate`] — grouped aggregation, windowed (tumbling, hopping, session) or
//!   not, over columnar state.

pub mod aggregate;

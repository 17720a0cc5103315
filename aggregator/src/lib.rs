//! The aggregator: one incremental DataFusion pipeline per `.sql` file.
//!
//! The tree follows the data:
//!
//! * [`source`] — where events come from (`file:<dir>`), their declared schema, and
//!   decoding JSON into Arrow with a reason for every bad record;
//! * [`pipeline`] — a `.sql` file planned by DataFusion and run as micro-batches:
//!   watermark, windows, output modes, the offset log, the micro-batch loop;
//! * [`operators`] — streaming operators with their state: grouped aggregation (over
//!   events or over another one's changes), `ORDER BY … LIMIT`, window functions;
//! * [`state`] — columnar state (group index, state columns) and incremental
//!   checkpoints;
//! * [`sink`] — where results go (`sqlite:<path>`), as upserts and deletes by `_id`;
//! * [`supervisor`] — runs every pipeline of a file or directory, one thread each;
//! * [`metrics`] — Prometheus metrics (`--metrics-listen`);
//! * [`batch`] — the same SQL as one batch query (the oracle the tests compare with).
//!
//! `main.rs` is only the command line.

pub mod batch;
pub mod error;
pub mod metrics;
pub mod operators;
pub mod pipeline;
pub mod sink;
pub mod source;
pub mod state;
pub mod supervisor;

pub use error::{Error, ErrorKind, Result};

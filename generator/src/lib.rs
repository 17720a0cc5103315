//! Synthetic user-interaction events, written as a JSON-lines batch-file log.
//!
//! * [`events`] — the events (deterministic for a seed);
//! * [`nexmark`] — or Nexmark's persons, auctions and bids (likewise);
//! * [`batch_files`] — streams them to disk one file at a time, each appearing atomically;
//! * [`publish`] — sends batch files to a Kafka topic at a chosen pace.
//!
//! The `generator` binary is the command line over these.

pub mod batch_files;
pub mod events;
pub mod nexmark;
pub mod publish;

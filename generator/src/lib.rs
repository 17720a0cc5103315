//! Synthetic user-interaction events, written as a JSON-lines batch-file log.
//!
//! * [`events`] — the events (deterministic for a seed);
//! * [`batch_files`] — streams them to disk one file at a time, each appearing atomically.
//!
//! The `generator` binary is the command line over these.

pub mod batch_files;
pub mod events;

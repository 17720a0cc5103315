//! Operator state: columnar stores and their checkpoints.
//!
//! * [`group_index`] — group keys → dense group ids;
//! * [`columns`] — a state column: one value per group id;
//! * [`checkpoint`] — a pipeline's state and offsets on disk, written incrementally.

pub mod checkpoint;
pub mod columns;
pub mod group_index;

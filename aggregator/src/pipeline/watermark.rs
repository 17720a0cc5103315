//! Event time and lateness.
//!
//! Each partition of the source has its own watermark: the highest event time seen
//! in it − the pipeline's allowed delay. Event time is only ordered within a
//! partition (Kafka keeps order per partition, not across them), so an event is
//! judged against the watermark of the events *before it in its partition*. Whether
//! an event is late therefore depends only on each partition's order — never on how
//! partitions interleave, how the log was cut into micro-batches, or on restarts.
//! (The file log is one partition.)
//!
//! The pipeline's watermark, which closes windows (evicts their state, emits them in
//! append mode), is the minimum over the partitions, so no partition's on-time
//! events can reach a closed window. A partition with nothing to read for the idle
//! timeout (`--idle-timeout-seconds`) stops holding it back, so an idle partition does
//! not stall windows forever; if it wakes up, its events for windows closed meanwhile
//! are late too (each event sees at least the watermark windows were closed at).
//!
//! An event is late when every window it belongs to has closed (ends at or before
//! its watermark; for session windows: when it is older than the watermark, see
//! [`crate::pipeline::windows::WindowSpec::is_late`]). Late events are dropped, counted and recorded.
//! Pipelines without a window have no late events.

use std::collections::BTreeMap;

use datafusion::arrow::array::{Array, TimestampMicrosecondArray};
use serde::{Deserialize, Serialize};

/// What a checkpoint keeps of the watermark.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatermarkState {
    /// Highest event time seen, per partition.
    pub max_event_time: BTreeMap<i32, i64>,
    /// The watermark windows were last closed at.
    pub closed_at: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct Watermark {
    pub delay_micros: i64,
    pub state: WatermarkState,
    /// The source's partitions and whether each is idle.
    partitions: Vec<(i32, bool)>,
}

impl Watermark {
    pub fn new(delay_micros: i64, state: WatermarkState) -> Self {
        Watermark { delay_micros, state, partitions: Vec::new() }
    }

    /// Tells which partitions the source has, and which of them are idle.
    pub fn set_partitions(&mut self, partitions: Vec<(i32, bool)>) {
        self.partitions = partitions;
    }

    fn own(&self, partition: i32) -> Option<i64> {
        self.state.max_event_time.get(&partition).map(|m| m - self.delay_micros)
    }

    /// The pipeline's watermark: the minimum over the partitions that are not idle; a
    /// busy partition without events holds it back. When all are idle (a quiet stream),
    /// the minimum over those that had events: one that never had any does not keep
    /// the windows the others' events passed open forever.
    pub fn current(&self) -> Option<i64> {
        let mut active: Vec<i32> = self.partitions.iter().filter(|(_, idle)| !idle).map(|(p, _)| *p).collect();
        if active.is_empty() {
            active =
                self.partitions.iter().map(|(p, _)| *p).filter(|p| self.state.max_event_time.contains_key(p)).collect();
        }
        if active.is_empty() {
            active = self.state.max_event_time.keys().copied().collect();
        }
        let mut min: Option<i64> = None;
        for p in active {
            match self.own(p) {
                None => return self.state.closed_at,
                Some(w) => min = Some(min.map_or(w, |m| m.min(w))),
            }
        }
        min.max(self.state.closed_at)
    }

    /// The watermark to close windows at now; it never goes back.
    pub fn close_windows(&mut self) -> Option<i64> {
        self.state.closed_at = self.current();
        self.state.closed_at
    }

    /// The watermark each event saw (before it, in its partition; at least the one
    /// windows were closed at), advancing past all of them.
    pub fn observe(&mut self, times: &TimestampMicrosecondArray, partition: impl Fn(usize) -> i32) -> Vec<Option<i64>> {
        let mut seen = Vec::with_capacity(times.len());
        for i in 0..times.len() {
            let p = partition(i);
            seen.push(self.own(p).max(self.state.closed_at));
            if times.is_valid(i) {
                let t = times.value(i);
                let max = self.state.max_event_time.entry(p).or_insert(t);
                *max = (*max).max(t);
            }
        }
        seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::windows::WindowSpec;

    #[test]
    fn each_event_sees_the_watermark_of_the_events_before_it() {
        let mut w = Watermark::new(10, WatermarkState::default());
        let seen = w.observe(&TimestampMicrosecondArray::from(vec![100, 50, 120, 130]), |_| 0);
        assert_eq!(seen, [None, Some(90), Some(90), Some(110)]);
        assert_eq!(w.current(), Some(120));
    }

    #[test]
    fn each_partition_is_judged_by_its_own_events_and_the_minimum_closes_windows() {
        let mut w = Watermark::new(10, WatermarkState::default());
        w.set_partitions(vec![(0, false), (1, false)]);
        // Partition 0 runs ahead; partition 1's old event is not late by partition 0's clock.
        let seen = w.observe(&TimestampMicrosecondArray::from(vec![1000, 100, 110]), |i| if i == 0 { 0 } else { 1 });
        assert_eq!(seen, [None, None, Some(90)]);
        assert_eq!(w.current(), Some(100), "the slowest partition holds the watermark");
        assert_eq!(w.close_windows(), Some(100));
        // After windows closed at 100, no event of any partition sees less than that.
        let seen = w.observe(&TimestampMicrosecondArray::from(vec![105]), |_| 1);
        assert_eq!(seen, [Some(100)]);
    }

    #[test]
    fn a_partition_without_events_holds_the_watermark_until_it_is_idle() {
        let mut w = Watermark::new(0, WatermarkState::default());
        w.set_partitions(vec![(0, false), (1, false)]);
        w.observe(&TimestampMicrosecondArray::from(vec![500]), |_| 0);
        assert_eq!(w.current(), None);
        w.set_partitions(vec![(0, false), (1, true)]);
        assert_eq!(w.current(), Some(500));
        w.set_partitions(vec![(0, true), (1, true)]);
        assert_eq!(w.current(), Some(500), "all idle: a partition that never had events does not hold it");
        w.observe(&TimestampMicrosecondArray::from(vec![300]), |_| 1);
        assert_eq!(w.current(), Some(300), "all idle: the slowest partition with events holds it");
    }

    #[test]
    fn an_event_is_late_only_when_its_last_window_has_closed() {
        let spec = WindowSpec::Tumbling { size: 100 };
        assert!(!spec.is_late(150, None));
        assert!(!spec.is_late(150, Some(199)));
        assert!(spec.is_late(150, Some(200)));
        let hop = WindowSpec::Hopping { size: 100, slide: 50 };
        // 150 is in [100, 200) and [150, 250): late only once 250 has passed.
        assert!(!hop.is_late(150, Some(200)));
        assert!(hop.is_late(150, Some(250)));
        let session = WindowSpec::Session { gap: 100 };
        assert!(!session.is_late(150, Some(150)));
        assert!(session.is_late(150, Some(151)));
    }
}

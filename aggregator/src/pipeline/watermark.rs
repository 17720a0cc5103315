//! Event time and lateness.
//!
//! Watermark = highest event time seen − the pipeline's allowed delay. It advances
//! event by event: each event is judged against the watermark of the events *before*
//! it in the log. So whether an event is late depends only on the log's order, never
//! on how the log was cut into micro-batches — a restart, or a different batch size,
//! drops exactly the same events.
//!
//! An event is late when every window it belongs to has closed (ends at or before
//! its watermark; for session windows: when it is older than the watermark, see
//! [`crate::pipeline::windows::WindowSpec::is_late`]). Late events are dropped, counted and recorded.
//! Pipelines without a window have no late events.

use datafusion::arrow::array::{Array, TimestampMicrosecondArray};

#[derive(Debug, Clone, Copy)]
pub struct Watermark {
    pub max_event_time: Option<i64>,
    pub delay_micros: i64,
}

impl Watermark {
    pub fn new(delay_micros: i64, max_event_time: Option<i64>) -> Self {
        Watermark { max_event_time, delay_micros }
    }

    /// The watermark after everything seen so far.
    pub fn current(&self) -> Option<i64> {
        self.max_event_time.map(|m| m - self.delay_micros)
    }

    /// The watermark each event saw (before it), advancing past all of them.
    pub fn observe(&mut self, times: &TimestampMicrosecondArray) -> Vec<Option<i64>> {
        let mut seen = Vec::with_capacity(times.len());
        for i in 0..times.len() {
            seen.push(self.current());
            if times.is_valid(i) {
                let t = times.value(i);
                self.max_event_time = Some(self.max_event_time.map_or(t, |m| m.max(t)));
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
        let mut w = Watermark::new(10, None);
        let seen = w.observe(&TimestampMicrosecondArray::from(vec![100, 50, 120, 130]));
        assert_eq!(seen, [None, Some(90), Some(90), Some(110)]);
        assert_eq!(w.current(), Some(120));
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

//! Each pipeline's health over time, for the overview's small charts: events consumed
//! per second, lag (records waiting in the source) and watermark delay (how far the
//! watermark trails the clock). The aggregator writes only the current status; the
//! dashboard samples it every [`FINE_SECONDS`] and keeps the history in the store
//! (`Store::write_health`), so it survives a restart of the dashboard, in two
//! resolutions of fixed size:
//!
//! * every 10 s, the newest [`FINE_KEEP`] (an hour);
//! * every minute, the newest [`COARSE_KEEP`] (a day): a minute's events/s is the
//!   mean of its 10-second samples, its lag and watermark delay their maximum (a
//!   spike is not averaged away). The current minute is rewritten at each sample.
//!
//! Events/s is the change of the consumed count between two samples over the time
//! between them; the first sample after the dashboard or the pipeline (re)started has
//! none.

use std::collections::HashMap;
use std::sync::Arc;

use store::{HealthSample, PipelineStatus, Store, iso_micros, parse_iso_micros};

/// The resolutions, in seconds.
pub const FINE_SECONDS: u32 = 10;
pub const COARSE_SECONDS: u32 = 60;
/// Samples kept of each pipeline, per resolution.
pub const FINE_KEEP: usize = 360;
pub const COARSE_KEEP: usize = 1_440;

/// The sampler's memory between samples (the history itself is in the store).
pub struct Sampler {
    fine_keep: usize,
    coarse_keep: usize,
    /// Per pipeline: the status last sampled and when (microseconds), for events/s.
    last: HashMap<String, (i64, PipelineStatus)>,
    /// Per pipeline: its 10-second samples of the current minute, for the minute's.
    minute: HashMap<String, Vec<HealthSample>>,
}

impl Default for Sampler {
    fn default() -> Self {
        Sampler::keeping(FINE_KEEP, COARSE_KEEP)
    }
}

impl Sampler {
    /// A sampler that keeps `fine` 10-second and `coarse` one-minute samples per pipeline.
    pub fn keeping(fine: usize, coarse: usize) -> Self {
        Sampler { fine_keep: fine, coarse_keep: coarse, last: HashMap::new(), minute: HashMap::new() }
    }

    /// After a restart: the 10-second samples already stored, so that the current
    /// minute's summary still counts those taken before it.
    pub async fn restore(&mut self, store: &dyn Store) -> store::Result<()> {
        for sample in store.health(FINE_SECONDS).await? {
            self.minute.entry(sample.pipeline.clone()).or_default().push(sample);
        }
        let per_minute = (COARSE_SECONDS / FINE_SECONDS) as usize;
        for samples in self.minute.values_mut() {
            let old = samples.len().saturating_sub(per_minute);
            samples.drain(..old);
        }
        Ok(())
    }

    /// Samples every pipeline's status at `now` (microseconds) into the store: its
    /// 10-second sample and its minute's summary so far.
    pub async fn sample(&mut self, store: &dyn Store, now: i64) -> store::Result<()> {
        let statuses = store.statuses().await?;
        let fine_at = floor(now, FINE_SECONDS);
        let minute_at = floor(now, COARSE_SECONDS);
        let (mut fine, mut coarse) = (Vec::new(), Vec::new());
        for status in statuses {
            let events_per_second = match self.last.get(&status.name) {
                Some((then, before))
                    if now > *then
                        && before.started_at == status.started_at
                        && before.sql_hash == status.sql_hash
                        && status.events_in >= before.events_in =>
                {
                    Some((status.events_in - before.events_in) as f64 / ((now - then) as f64 / 1e6))
                }
                _ => None,
            };
            let watermark = status.watermark.as_deref().and_then(parse_iso_micros);
            let sample = HealthSample {
                pipeline: status.name.clone(),
                resolution_seconds: FINE_SECONDS,
                at: iso_micros(fine_at),
                events_per_second,
                lag: Some(status.lag),
                watermark_delay_seconds: watermark.map(|w| (now - w) as f64 / 1e6),
            };
            let minute = self.minute.entry(status.name.clone()).or_default();
            minute.retain(|s| s.at != sample.at && parse_iso_micros(&s.at).is_some_and(|at| at >= minute_at));
            minute.push(sample.clone());
            coarse.push(summary(minute, iso_micros(minute_at)));
            fine.push(sample);
            self.last.insert(status.name.clone(), (now, status));
        }
        store.write_health(&fine, self.fine_keep).await?;
        store.write_health(&coarse, self.coarse_keep).await?;
        Ok(())
    }
}

/// `micros` rounded down to a multiple of `seconds`.
fn floor(micros: i64, seconds: u32) -> i64 {
    let period = i64::from(seconds) * 1_000_000;
    micros.div_euclid(period) * period
}

/// The one-minute sample at `at` summing up `samples` (10-second ones, at least one):
/// events/s their mean, lag and watermark delay their maximum.
pub fn summary(samples: &[HealthSample], at: String) -> HealthSample {
    let rates: Vec<f64> = samples.iter().filter_map(|s| s.events_per_second).collect();
    let max = |values: Vec<f64>| values.into_iter().reduce(f64::max);
    HealthSample {
        pipeline: samples.first().map(|s| s.pipeline.clone()).unwrap_or_default(),
        resolution_seconds: COARSE_SECONDS,
        at,
        events_per_second: (!rates.is_empty()).then(|| rates.iter().sum::<f64>() / rates.len() as f64),
        lag: samples.iter().filter_map(|s| s.lag).max(),
        watermark_delay_seconds: max(samples.iter().filter_map(|s| s.watermark_delay_seconds).collect()),
    }
}

/// Samples every [`FINE_SECONDS`], on the multiples of it, for ever (the task is
/// dropped at shutdown). A store that refuses the writes is logged once, and again
/// when it takes them.
pub async fn run(store: Arc<dyn Store>, mut sampler: Sampler) {
    if let Err(e) = sampler.restore(store.as_ref()).await {
        tracing::warn!(error = %e, "could not read the pipelines' health history; the current minute starts over");
    }
    let mut failing = false;
    loop {
        let now = chrono::Utc::now().timestamp_micros();
        match sampler.sample(store.as_ref(), now).await {
            Ok(()) if failing => {
                tracing::info!("pipeline health is sampled into the store again");
                failing = false;
            }
            Ok(()) => {}
            Err(e) if !failing => {
                tracing::warn!(error = %e, "could not sample the pipelines' health; retrying every 10 s");
                failing = true;
            }
            Err(_) => {}
        }
        let period = i64::from(FINE_SECONDS) * 1_000_000;
        let now = chrono::Utc::now().timestamp_micros();
        let next = floor(now, FINE_SECONDS) + period;
        tokio::time::sleep(std::time::Duration::from_micros((next - now).clamp(1, period) as u64)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fine(at: &str, rate: Option<f64>, lag: u64, delay: Option<f64>) -> HealthSample {
        HealthSample {
            pipeline: "p".into(),
            resolution_seconds: FINE_SECONDS,
            at: at.into(),
            events_per_second: rate,
            lag: Some(lag),
            watermark_delay_seconds: delay,
        }
    }

    #[test]
    fn a_minute_is_the_mean_rate_and_the_largest_lag_and_delay_of_its_samples() {
        let samples =
            [fine("t0", None, 5, Some(3.0)), fine("t1", Some(100.0), 50, Some(2.0)), fine("t2", Some(200.0), 7, None)];
        let minute = summary(&samples, "m".into());
        assert_eq!(
            (minute.events_per_second, minute.lag, minute.watermark_delay_seconds, minute.resolution_seconds),
            (Some(150.0), Some(50), Some(3.0), COARSE_SECONDS),
            "a sample without a rate does not count as 0"
        );
        let quiet = summary(&[fine("t0", None, 0, None)], "m".into());
        assert_eq!((quiet.events_per_second, quiet.watermark_delay_seconds), (None, None));
    }

    #[test]
    fn times_round_down_to_their_period() {
        assert_eq!(floor(1_767_225_612_345_678, 10), 1_767_225_610_000_000);
        assert_eq!(floor(1_767_225_612_345_678, 60), 1_767_225_600_000_000);
        assert_eq!(floor(1_767_225_600_000_000, 60), 1_767_225_600_000_000);
    }
}

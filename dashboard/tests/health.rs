//! The pipelines' health history over a real store (SQLite; the store's own tests run
//! the same reads and writes on MongoDB): sampled from the statuses the aggregator
//! writes, bounded per resolution, the minute summaries right, kept across a restart
//! of the dashboard, and served by the API.

mod support;

use std::sync::Arc;

use dashboard::health::{COARSE_SECONDS, FINE_SECONDS, Sampler};
use store::{HealthSample, PipelineStatus, Store, iso_micros};

const SECOND: i64 = 1_000_000;
/// On a minute.
const T0: i64 = 1_767_225_600_000_000;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

async fn open(dir: &tempfile::TempDir) -> Arc<dyn Store> {
    support::sqlite_store(dir.path()).await
}

/// The status of `p` at sample `i` (every 10 s from T0): it consumed `10 i` events
/// in the 10 s before (so `i` events/s), `1000 - i` records wait, and its watermark
/// trails the clock by `i` seconds.
fn status(i: i64) -> PipelineStatus {
    PipelineStatus {
        name: "p".into(),
        state: "running".into(),
        started_at: "2026-01-01T00:00:00.000000Z".into(),
        events_in: (0..=i).map(|k| 10 * k as u64).sum(),
        lag: (1000 - i) as u64,
        watermark: Some(iso_micros(at(i) - i * SECOND)),
        ..Default::default()
    }
}

fn at(i: i64) -> i64 {
    T0 + i * 10 * SECOND
}

/// Seconds after T0, events/s, lag, watermark delay.
type Point = (i64, Option<f64>, Option<u64>, Option<f64>);

/// Each sample as a [`Point`].
fn points(samples: &[HealthSample]) -> Vec<Point> {
    samples
        .iter()
        .map(|s| {
            let seconds = (store::parse_iso_micros(&s.at).unwrap() - T0) / SECOND;
            (seconds, s.events_per_second, s.lag, s.watermark_delay_seconds)
        })
        .collect()
}

#[test]
fn the_history_is_bounded_per_resolution_summed_up_per_minute_and_kept_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let store = open(&dir).await;
        // Six 10-second samples and three minutes kept (the dashboard keeps 360 and 1,440).
        let mut sampler = Sampler::keeping(6, 3);
        for i in 0..40 {
            store.write_status(&status(i)).await.unwrap();
            sampler.sample(store.as_ref(), at(i)).await.unwrap();
        }
        let fine = store.health(FINE_SECONDS).await.unwrap();
        let expected: Vec<_> =
            (34..40).map(|i| (i * 10, Some(i as f64), Some(1000 - i as u64), Some(i as f64))).collect();
        assert_eq!(points(&fine), expected, "the newest six, oldest first; i events/s at sample i");
        // Minute m holds samples 6m … 6m + 5: mean rate 6m + 2.5, the largest lag
        // (its first) and watermark delay (its last). The current minute so far: 36 … 39.
        let coarse = store.health(COARSE_SECONDS).await.unwrap();
        assert_eq!(
            points(&coarse),
            [
                (240, Some(26.5), Some(976), Some(29.0)),
                (300, Some(32.5), Some(970), Some(35.0)),
                (360, Some(37.5), Some(964), Some(39.0))
            ],
            "the newest three minutes"
        );
        assert!(coarse.iter().all(|s| s.resolution_seconds == 60 && s.pipeline == "p"));
        drop(sampler);
        drop(store);

        // The dashboard restarts on the same store: the history is there, and the
        // current minute goes on from the samples taken before the restart.
        let store = open(&dir).await;
        let mut sampler = Sampler::keeping(6, 3);
        sampler.restore(store.as_ref()).await.unwrap();
        store.write_status(&status(40)).await.unwrap();
        sampler.sample(store.as_ref(), at(40)).await.unwrap();
        let fine = points(&store.health(FINE_SECONDS).await.unwrap());
        assert_eq!(fine.len(), 6);
        assert_eq!(fine[5], (400, None, Some(960), Some(40.0)), "no rate: the status before it was not seen");
        let minute = points(&store.health(COARSE_SECONDS).await.unwrap())[2];
        assert_eq!(minute, (360, Some(37.5), Some(964), Some(40.0)), "samples 36 … 40, the first four from before");

        // The API serves both resolutions as columns.
        let view = Arc::new(dashboard::alerts::AlertsView::default());
        let (url, _stop) = support::serve(support::state(store.clone(), view)).await;
        let get = async |path: &str| {
            let response = reqwest::get(format!("{url}{path}")).await.unwrap();
            (response.status().as_u16(), response.json::<serde_json::Value>().await.unwrap())
        };
        let (status, hour) = get("/api/health").await;
        assert_eq!((status, &hour["range"], &hour["resolution_seconds"]), (200, &"1h".into(), &10.into()));
        let p = &hour["pipelines"][0];
        assert_eq!(p["pipeline"], "p");
        assert_eq!(p["t"][0], (at(35) / SECOND) as f64);
        assert_eq!(p["events_per_second"], serde_json::json!([35.0, 36.0, 37.0, 38.0, 39.0, null]));
        assert_eq!(p["lag"], serde_json::json!([965, 964, 963, 962, 961, 960]));
        let (status, day) = get("/api/pipelines/p/health?range=24h").await;
        assert_eq!((status, &day["pipeline"], &day["resolution_seconds"]), (200, &"p".into(), &60.into()));
        assert_eq!(day["events_per_second"], serde_json::json!([26.5, 32.5, 37.5]));
        assert_eq!(day["watermark_delay_seconds"], serde_json::json!([29.0, 35.0, 40.0]));
        assert_eq!(get("/api/health?range=7d").await.0, 400);
        assert_eq!(get("/api/pipelines/nope/health").await.0, 404);
    });
}

#[test]
fn a_pipeline_that_restarts_has_no_rate_across_it_and_each_pipeline_its_own_history() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let store = open(&dir).await;
        let mut sampler = Sampler::keeping(100, 100);
        let other = |events_in: u64| PipelineStatus { name: "q".into(), events_in, ..Default::default() };
        store.write_status(&status(1)).await.unwrap();
        store.write_status(&other(0)).await.unwrap();
        sampler.sample(store.as_ref(), at(1)).await.unwrap();
        store.write_status(&status(2)).await.unwrap();
        store.write_status(&other(50)).await.unwrap();
        sampler.sample(store.as_ref(), at(2)).await.unwrap();
        // `p` starts again (a new start time, its count from 0): no rate for that sample.
        store
            .write_status(&PipelineStatus { started_at: "2026-01-01T00:00:25.000000Z".into(), ..status(3) })
            .await
            .unwrap();
        sampler.sample(store.as_ref(), at(3)).await.unwrap();
        let fine = store.health(FINE_SECONDS).await.unwrap();
        let rates: Vec<(&str, Option<f64>)> = fine.iter().map(|s| (s.pipeline.as_str(), s.events_per_second)).collect();
        assert_eq!(
            rates,
            [("p", None), ("p", Some(2.0)), ("p", None), ("q", None), ("q", Some(5.0)), ("q", Some(0.0))]
        );
        assert_eq!(fine[3].watermark_delay_seconds, None, "q has no watermark");
    });
}

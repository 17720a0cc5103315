//! Memory stays bounded: over a long run of a windowed pipeline, the state holds only
//! the groups of open windows, however many windows have passed. This measures the
//! state (groups held), not the clock.

mod support;

use aggregator::operators::exec::OperatorKind;
use aggregator::pipeline::Shutdown;
use aggregator::pipeline::definition::PipelineDefinition;
use aggregator::pipeline::runner::Pipeline;
use aggregator::source::file_log::FileLog;
use aggregator::source::{Source, SourceOffset};
use generator::events::{EventGenerator, EventOptions, TimestampFormat};
use support::*;

/// 60,000 events of `users` users × 3 types, one every 2 s of event time: ~33 hours,
/// ~400 five-minute windows; 20% out of order, 1% late.
fn long_log(seed: u64, users: u64) -> tempfile::TempDir {
    let log = tempfile::tempdir().unwrap();
    let mut events = EventGenerator::new(EventOptions {
        seed,
        users,
        items: 10,
        start_time_micros: 1_767_225_600_000_000,
        events_per_second: 0.5,
        out_of_order_share: 0.2,
        out_of_order_seconds: 600.0,
        late_share: 0.01,
        timestamp_format: TimestampFormat::Iso,
    });
    generator::batch_files::write_batches(log.path(), &mut events, 60_000, 2_000, std::time::Duration::ZERO).unwrap();
    log
}

#[test]
fn a_windowed_pipeline_keeps_state_only_for_open_windows() {
    let users = 30;
    let log = long_log(5, users);

    let work = tempfile::tempdir().unwrap();
    let file = repo_root().join("sql/user_interactions_5m.sql");
    let def = PipelineDefinition::from_file(&file).unwrap();
    // Open windows: those ending after the watermark (20 min behind the newest event)
    // and those of the newest events: at most 20/5 + 2 windows of 5 minutes.
    let bound = (users * 3) as usize * (20 / 5 + 2);
    let schema = interactions();
    let rt = runtime();
    let (peak, total_windows) = rt.block_on(async {
        let mut pipeline = Pipeline::start(
            def,
            &schema,
            &options(log.path(), work.path(), 500),
            &Shutdown::default(),
            Default::default(),
        )
        .await
        .unwrap();
        let mut source = FileLog::open(log.path().to_str().unwrap(), &SourceOffset::Start).unwrap();
        let mut peak = 0;
        while let Some(batch) = source.next_batch(500).unwrap() {
            let logged = pipeline.log_batch(&batch, source.partitions()).unwrap();
            pipeline.process(&batch, &logged, &Shutdown::default()).await.unwrap();
            peak = peak.max(pipeline.state_groups());
        }
        (peak, 60_000 * 2 / 300)
    });
    // A new pipeline fills its shadow table until `run` swaps it in; this test drives
    // `process` directly, so the rows are still there.
    let table = store::shadow_table("user_interactions_5m");
    let written = sink_rows(&work.path().join("results.sqlite"), &table, false).len();
    assert!(written > 20 * bound, "the run must cover far more groups ({written}) than the bound ({bound})");
    assert!(
        peak <= bound,
        "state peaked at {peak} groups; open windows allow {bound} ({total_windows} windows in all)"
    );
    assert!(peak > 0);
}

/// What runs over a windowed stage 1's changes lets closed windows go too: the levels
/// of a chain grouped by the window, the partitions of window functions by window, and
/// no rows of closed windows are kept for them.
#[test]
fn aggregates_of_windowed_aggregates_keep_state_only_for_open_windows() {
    let log = long_log(6, 30);
    let cases = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sql_cases");
    // Open windows: 20 minutes of delay / 5-minute windows, and the newest ones.
    let open_windows = 20 / 5 + 2;
    for case in ["second_stage_windowed", "top_n_per_window", "top_n_per_window_subquery"] {
        let work = tempfile::tempdir().unwrap();
        let def = PipelineDefinition::from_file(&cases.join(format!("{case}.sql"))).unwrap();
        let schema = interactions();
        let (peak, kept) = runtime().block_on(async {
            let options = options(log.path(), work.path(), 500);
            let mut pipeline =
                Pipeline::start(def, &schema, &options, &Shutdown::default(), Default::default()).await.unwrap();
            let mut source = FileLog::open(log.path().to_str().unwrap(), &SourceOffset::Start).unwrap();
            let (mut peak, mut kept) = (0, 0);
            while let Some(batch) = source.next_batch(500).unwrap() {
                let logged = pipeline.log_batch(&batch, source.partitions()).unwrap();
                pipeline.process(&batch, &logged, &Shutdown::default()).await.unwrap();
                for operator in pipeline.operators() {
                    match operator.kind {
                        OperatorKind::SourceAggregate => kept = kept.max(operator.closed_rows),
                        OperatorKind::Aggregate | OperatorKind::WindowFunctions | OperatorKind::TopNPerPartition => {
                            peak = peak.max(operator.held)
                        }
                        other => panic!("{case}: {other:?} holds rows beyond their window"),
                    }
                }
            }
            (peak, kept)
        });
        assert!(peak > 0, "{case}: nothing over stage 1's changes");
        assert!(peak <= open_windows, "{case}: {peak} windows held, {open_windows} open at most");
        assert_eq!(kept, 0, "{case}: rows of closed windows kept");
    }
}

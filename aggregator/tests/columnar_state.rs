//! Columnar aggregation state: what a group costs, what a batch touches, and what a
//! checkpoint saves. Sizes are counted by the state itself, never timed.

mod support;

use std::path::Path;
use std::sync::Arc;

use aggregator::operators::exec::Tick;
use aggregator::operators::shards::Shards;
use aggregator::pipeline::plan::StreamingPlan;
use datafusion::arrow::array::{RecordBatch, TimestampMicrosecondArray};
use datafusion::arrow::compute::concat_batches;
use support::*;

/// Source rows: one event per user in `users` (item `user % 7`), all at the same time.
fn events(plan: &StreamingPlan, users: impl Iterator<Item = i64>) -> RecordBatch {
    let users: Vec<i64> = users.collect();
    let items: Vec<i64> = users.iter().map(|u| u % 7).collect();
    source_events(plan, &users, &items)
}

/// Runs one micro-batch through the plan: the rows its result gains.
fn update(plan: &StreamingPlan, events: RecordBatch) -> RecordBatch {
    runtime().block_on(plan.run(events, Tick::default())).unwrap().rows()
}

/// `f` over the plan's aggregation over SOURCE.
fn state<T>(plan: &StreamingPlan, f: impl FnOnce(&mut Shards) -> T) -> T {
    plan.with_source_aggregate(|source| f(&mut source.aggregate)).expect("an aggregation")
}

fn sorted(batch: &RecordBatch) -> Vec<String> {
    let mut rows: Vec<String> = (0..batch.num_rows())
        .map(|r| {
            (0..batch.num_columns())
                .map(|c| datafusion::arrow::util::display::array_value_to_string(batch.column(c), r).unwrap())
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect();
    rows.sort();
    rows
}

#[test]
fn a_count_by_a_bigint_key_costs_tens_of_bytes_per_group() {
    let plan = plan_sql("SELECT user_id, COUNT(*) AS n FROM SOURCE GROUP BY user_id");
    let groups = 400_000;
    for start in (0..groups).step_by(50_000) {
        update(&plan, events(&plan, start..start + 50_000));
    }
    assert_eq!(state(&plan, |a| a.len()), groups as usize);
    let per_group = state(&plan, |a| a.size()) as f64 / groups as f64;
    // Key (9 bytes in row format) + its offset + the table slot + the count (8 bytes
    // and a validity bit), with the slack of growing vectors and tables.
    assert!(per_group < 80.0, "{per_group:.1} bytes per group");
}

#[test]
fn a_batch_reports_and_checkpoints_only_the_groups_it_touches() {
    let sql = "SELECT user_id, COUNT(*) AS n, COUNT(DISTINCT item_id) AS items, MAX(item_id) AS top FROM SOURCE GROUP BY user_id";
    let plan = plan_sql(sql);
    update(&plan, events(&plan, 0..100_000));
    let full = state(&plan, |a| a.full_state().unwrap());
    assert_eq!(full.num_rows(), 100_000);

    let finals = update(&plan, events(&plan, (0..100_000).step_by(10_000)));
    assert_eq!(finals.num_rows(), 10, "the final values of the touched groups only");
    let (first_change, removed) = state(&plan, |a| a.take_changes().unwrap());
    assert_eq!(first_change.num_rows(), 10);
    assert_eq!(removed.num_rows(), 0);
    let (written, _) = state(&plan, |a| a.take_changes().unwrap());
    assert_eq!(written.num_rows(), 0, "nothing changed since the last checkpoint");

    // The full state and the changes after it restore the same groups.
    let finals = update(&plan, events(&plan, [5, 6].into_iter()));
    let (second_change, _) = state(&plan, |a| a.take_changes().unwrap());
    let restored = plan_sql(sql);
    for saved in [&full, &first_change, &second_change] {
        state(&restored, |a| a.restore(saved).unwrap());
    }
    let restored = sorted(&state(&restored, |a| a.evaluate_all().unwrap()));
    let original = sorted(&state(&plan, |a| a.evaluate_all().unwrap()));
    let differ: Vec<_> = restored.iter().zip(&original).filter(|(a, b)| a != b).take(3).collect();
    assert!(restored.len() == original.len() && differ.is_empty(), "restored state differs: {differ:?}");
    assert_eq!(sorted(&finals), ["5|2|1|5", "6|2|1|6"]);
}

#[test]
fn closed_windows_leave_the_state_and_their_keys_go_into_the_next_checkpoint() {
    let plan = plan_sql(
        "SELECT window(timestamp, '5 minutes') AS window, user_id, COUNT(*) AS n FROM SOURCE GROUP BY window(timestamp, '5 minutes'), user_id",
    );
    update(&plan, events(&plan, 0..3_000));
    state(&plan, |a| a.full_state().unwrap());
    let closed = state(&plan, |a| a.evict(1_767_225_600_000_000 + 300_000_000, true).unwrap().unwrap());
    assert_eq!(closed.num_rows(), 3_000);
    assert!(state(&plan, |a| a.is_empty()));
    let (written, removed) = state(&plan, |a| a.take_changes().unwrap());
    assert_eq!((written.num_rows(), removed.num_rows()), (0, 3_000));
    // Space is given back: a new window's groups get the ids from 0 again.
    update(&plan, events(&plan, 0..10).map_time(600_000_000));
    assert_eq!(state(&plan, |a| a.len()), 10);
    let size = state(&plan, |a| a.size());
    assert!(size < 3_000 * 16, "{size} bytes after compaction");
}

#[test]
fn grouping_sets_and_aggregate_filters_match_the_batch_query() {
    let log = tempfile::tempdir().unwrap();
    generate_log(log.path(), 3_000, 500, 3);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rollup.sql");
    std::fs::write(
        &file,
        "-- key: item_id, interaction_type\n\
         SELECT COALESCE(CAST(item_id AS VARCHAR), 'all') AS item_id, COALESCE(interaction_type, 'all') AS interaction_type,\n\
         COUNT(*) AS n, COUNT(*) FILTER (WHERE user_id % 2 = 0) AS even_users, AVG(user_id) AS avg_user\n\
         FROM SOURCE GROUP BY ROLLUP (item_id, interaction_type)\n",
    )
    .unwrap();
    let work = tempfile::tempdir().unwrap();
    assert_matches_oracle(Path::new(&file), log.path(), work.path(), 333);
}

trait MapTime {
    fn map_time(self, plus_micros: i64) -> RecordBatch;
}

impl MapTime for RecordBatch {
    fn map_time(self, plus_micros: i64) -> RecordBatch {
        let mut columns = self.columns().to_vec();
        let n = self.num_rows();
        columns[3] = Arc::new(TimestampMicrosecondArray::from(vec![1_767_225_600_000_000 + plus_micros; n]));
        let batch = RecordBatch::try_new(self.schema(), columns).unwrap();
        concat_batches(&batch.schema(), [&batch]).unwrap()
    }
}

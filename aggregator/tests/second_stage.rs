//! What runs over stage 1's changes — second stages (`-- for_each_batch … FROM
//! AGGREGATED`), aggregates of aggregates, `ORDER BY … LIMIT` — does work that follows the
//! groups a batch touches, not the number of groups (counted in rows read, not timed).

mod support;

use std::io::Write;

use aggregator::operators::exec::OperatorKind;
use aggregator::pipeline::Shutdown;
use aggregator::pipeline::definition::PipelineDefinition;
use aggregator::pipeline::plan::StreamingPlan;
use aggregator::pipeline::runner::Pipeline;
use aggregator::source::file_log::FileLog;
use aggregator::source::{Source, SourceOffset};
use support::*;

/// One event per user in `users`, written as batch file `n`.
fn write_events(dir: &std::path::Path, n: u32, users: impl Iterator<Item = u64>) {
    let mut out = std::io::BufWriter::new(std::fs::File::create(dir.join(format!("batch-{n:04}.jsonl"))).unwrap());
    for user in users {
        writeln!(
            out,
            r#"{{"user_id": {user}, "item_id": 1, "interaction_type": "view", "timestamp": "2026-01-01T00:00:00"}}"#
        )
        .unwrap();
    }
}

/// `sql` written as `name` in a new directory (kept while the `TempDir` lives).
fn sql_file(name: &str, sql: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(name);
    std::fs::write(&file, sql).unwrap();
    (dir, file)
}

/// Runs `file` over 50,000 events of 50,000 users, then 10 events of 10 of them; returns
/// per batch its records and the rows the (topmost) operator of `kind` read.
fn rows_read_per_batch(file: &std::path::Path, kind: OperatorKind) -> Vec<(usize, u64)> {
    let read = |pipeline: &Pipeline| pipeline.operators().iter().find(|o| o.kind == kind).map(|o| o.rows_read);
    let log = tempfile::tempdir().unwrap();
    write_events(log.path(), 1, 0..50_000);
    write_events(log.path(), 2, (0..50_000).step_by(5_000));
    let work = tempfile::tempdir().unwrap();
    let def = PipelineDefinition::from_file(file).unwrap();
    let schema = interactions();
    runtime().block_on(async {
        let options = options(log.path(), work.path(), 50_000);
        let mut pipeline =
            Pipeline::start(def, &schema, &options, &Shutdown::default(), Default::default()).await.unwrap();
        let mut source = FileLog::open(log.path().to_str().unwrap(), &SourceOffset::Start).unwrap();
        let mut reads = Vec::new();
        while let Some(raw) = source.next_batch(50_000).unwrap() {
            let before = read(&pipeline).expect("the pipeline runs it over changes");
            let logged = pipeline.log_batch(&raw, source.partitions()).unwrap();
            pipeline.process(&raw, &logged, &Shutdown::default()).await.unwrap();
            reads.push((raw.records().len(), read(&pipeline).unwrap() - before));
        }
        reads
    })
}

#[test]
fn a_second_stage_reads_only_the_changes_of_the_groups_a_batch_touches() {
    let reads = rows_read_per_batch(&repo_root().join("sql/avg_interactions_per_user.sql"), OperatorKind::Aggregate);
    // 50,000 new groups: 50,000 rows inserted. Then 10 events of 10 of those 50,000
    // users: each group's old row retracted and its new row inserted, 20 rows.
    assert_eq!(reads, [(50_000, 50_000), (10, 20)]);
}

#[test]
fn a_top_n_reads_only_the_changes_of_the_groups_a_batch_touches() {
    let (_dir, file) = sql_file(
        "top_users.sql",
        "SELECT user_id, COUNT(*) AS n FROM SOURCE GROUP BY user_id ORDER BY n DESC, user_id LIMIT 3\n",
    );
    let reads = rows_read_per_batch(&file, OperatorKind::TopN);
    assert_eq!(reads, [(50_000, 50_000), (10, 20)]);
}

/// The same over an aggregate of an aggregate: the top-N reads the last level's changes.
#[test]
fn a_top_n_over_an_aggregate_of_an_aggregate_reads_only_the_last_levels_changes() {
    let (_dir, file) = sql_file(
        "top_totals.sql",
        "WITH per_user AS (SELECT user_id, item_id, COUNT(*) AS n FROM SOURCE GROUP BY user_id, item_id),\n\
         totals AS (SELECT user_id, SUM(n) AS total FROM per_user GROUP BY user_id)\n\
         SELECT user_id, total FROM totals ORDER BY total DESC, user_id LIMIT 3\n",
    );
    let reads = rows_read_per_batch(&file, OperatorKind::TopN);
    assert_eq!(reads, [(50_000, 50_000), (10, 20)]);
}

/// `ROW_NUMBER() … <= N` per partition: the work is the changes read, not the partition.
#[test]
fn a_top_n_per_partition_reads_only_the_changes_not_the_partitions_rows() {
    let (_dir, file) = sql_file(
        "top_users_per_type.sql",
        "SELECT interaction_type, user_id, n FROM (\n\
         SELECT interaction_type, user_id, COUNT(*) AS n,\n\
         ROW_NUMBER() OVER (PARTITION BY interaction_type ORDER BY COUNT(*) DESC, user_id) AS r\n\
         FROM SOURCE GROUP BY interaction_type, user_id) AS ranked WHERE r <= 3\n",
    );
    // All 50,000 users are in one partition ("view"): then 10 of them change, and
    // the operator reads their 20 changes, not the partition's 50,000 rows.
    let reads = rows_read_per_batch(&file, OperatorKind::TopNPerPartition);
    assert_eq!(reads, [(50_000, 50_000), (10, 20)]);
}

#[test]
fn window_functions_over_changes_recompute_only_the_partitions_a_batch_touches() {
    let (_dir, file) = sql_file(
        "top_type.sql",
        "SELECT user_id, interaction_type, COUNT(*) AS n FROM SOURCE GROUP BY user_id, interaction_type\n\
         -- for_each_batch\n\
         SELECT user_id, MAX(CASE WHEN r = 1 THEN interaction_type END) AS top_type FROM (\n\
         SELECT user_id, interaction_type, ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY n DESC, interaction_type) AS r\n\
         FROM AGGREGATED) AS ranked GROUP BY user_id\n-- end_for\n",
    );
    let reads = rows_read_per_batch(&file, OperatorKind::WindowFunctions);
    // First 50,000 one-row partitions appear (nothing before, one row after each);
    // then 10 of them change: their one row before and after.
    assert_eq!(reads, [(50_000, 50_000), (10, 20)]);
}

/// The kinds of a plan's streaming operators, from the result down.
fn operators(plan: &StreamingPlan) -> Vec<OperatorKind> {
    plan.operators().iter().map(|o| o.kind).collect()
}

#[test]
fn second_stages_and_window_functions_between_aggregations_run_over_changes() {
    use OperatorKind::*;
    let plan = |name: &str| plan_file(&repo_root().join(format!("sql/{name}.sql")));
    for name in ["avg_interactions_per_item", "avg_interactions_per_user"] {
        assert_eq!(operators(&plan(name)), [Aggregate, SourceAggregate], "{name}");
    }
    // ROW_NUMBER partitioned by item between the aggregations: recomputed per item.
    assert_eq!(operators(&plan("item_type_extremes")), [Aggregate, WindowFunctions, SourceAggregate]);
    // Top-N per window, as a second stage or in one query: a top-N per partition.
    let cases = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sql_cases");
    for case in ["top_n_per_window", "top_n_per_window_subquery"] {
        let plan = plan_file(&cases.join(format!("{case}.sql")));
        assert_eq!(operators(&plan), [TopNPerPartition, SourceAggregate], "{case}");
    }
    // A window over all rows (no PARTITION BY) between aggregations: one partition,
    // recomputed whole each batch, and the aggregation over it still reads changes.
    let (_dir, file) = sql_file(
        "global_rank.sql",
        "SELECT item_id, COUNT(*) AS n FROM SOURCE GROUP BY item_id\n-- for_each_batch\n\
         SELECT 'all' AS _id, MAX(r) AS ranks FROM (SELECT ROW_NUMBER() OVER (ORDER BY n) AS r FROM AGGREGATED) AS t\n-- end_for\n",
    );
    assert_eq!(operators(&plan_file(&file)), [Aggregate, WindowFunctions, SourceAggregate]);
}

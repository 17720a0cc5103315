//! The plan as a dataflow: DataFusion's plan with its stateful nodes swapped for
//! streaming operators by the pipeline's physical optimizer rule (`pipeline::dataflow`).
//! What each shape becomes, what the source aggregation emits, and the result's key.

mod support;

use aggregator::operators::exec::{OperatorKind, Tick};
use aggregator::pipeline::plan::StreamingPlan;
use support::*;

fn case(name: &str) -> StreamingPlan {
    plan_file(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/sql_cases/{name}.sql")))
}

fn kinds(plan: &StreamingPlan) -> Vec<OperatorKind> {
    plan.operators().iter().map(|o| o.kind).collect()
}

/// The weights of the result's changes for a batch of events.
fn weights(plan: &StreamingPlan, items: &[i64]) -> Vec<i64> {
    let events = source_events(plan, &vec![1; items.len()], items);
    let changes = runtime().block_on(plan.run(events, Tick::default())).unwrap();
    let mut weights = changes.weights().to_vec();
    weights.sort();
    weights
}

#[test]
fn each_stateful_node_becomes_its_streaming_operator() {
    use OperatorKind::*;
    let shape = |sql: &str| kinds(&plan_sql(sql));
    assert_eq!(shape("SELECT item_id, COUNT(*) AS n FROM SOURCE GROUP BY item_id"), [SourceAggregate]);
    assert_eq!(
        shape("SELECT item_id, COUNT(*) AS n FROM SOURCE GROUP BY item_id ORDER BY n DESC LIMIT 3"),
        [TopN, SourceAggregate]
    );
    // A sort without a fetch is dropped: a result table has no order.
    assert_eq!(shape("SELECT item_id, COUNT(*) AS n FROM SOURCE GROUP BY item_id ORDER BY n"), [SourceAggregate]);
    assert_eq!(
        shape("SELECT AVG(n) AS a FROM (SELECT item_id, COUNT(*) AS n FROM SOURCE GROUP BY item_id) t"),
        [Aggregate, SourceAggregate]
    );
    // Window functions partitioned differently, and a JOIN: recomputed whole.
    assert_eq!(kinds(&case("window_functions_partitioned_differently")), [Aggregate, Recompute, SourceAggregate]);
    assert_eq!(kinds(&case("join_of_two_levels")), [Recompute, SourceAggregate, Aggregate]);
    // A query without aggregation has no operator: its rows are written per record.
    assert!(shape("SELECT user_id FROM SOURCE WHERE item_id > 3").is_empty());
}

#[test]
fn the_source_aggregation_retracts_old_values_only_when_something_above_needs_them() {
    // Keyed by its groups, only renamed: an upsert replaces the old row.
    let plain = plan_sql("SELECT item_id AS item, COUNT(*) AS n FROM SOURCE GROUP BY item_id");
    assert_eq!(weights(&plain, &[1, 2]), [1, 1]);
    assert_eq!(weights(&plain, &[1]), [1]);
    // A HAVING may drop a group whose old row was written: its old value is retracted.
    let having = plan_sql("SELECT item_id, COUNT(*) AS n FROM SOURCE GROUP BY item_id HAVING COUNT(*) < 2");
    assert_eq!(weights(&having, &[1, 2]), [1, 1]);
    assert_eq!(weights(&having, &[1]), [-1], "group 1 left the result: only its old row, retracted");
}

#[test]
fn the_key_is_traced_through_top_n_and_window_functions_to_the_groups() {
    // (item_id, n): the key is item_id, through the top-N.
    assert_eq!(case("top_items").key_columns(), Some(&[0][..]));
    // Top-N per window: the window and the item, through ROW_NUMBER and its filter.
    let per_window = case("top_n_per_window");
    let key: Vec<&str> =
        per_window.key_columns().unwrap().iter().map(|&c| per_window.output_schema.field(c).name().as_str()).collect();
    assert_eq!(key, ["window", "item_id"]);
    // Rows of a JOIN have no key: they are told apart by their content.
    assert_eq!(case("join_of_two_levels").key_columns(), None);
}

/// The interactions schema: user_id 0, item_id 1, interaction_type 2, timestamp 3.
#[test]
fn the_columns_no_scan_of_source_reads_are_left_unread() {
    let unread = |sql: &str| plan_sql(sql).unread_source_columns();
    assert_eq!(unread("SELECT user_id, COUNT(*) AS n FROM SOURCE GROUP BY user_id"), [1, 2, 3]);
    assert_eq!(
        unread(
            "SELECT tumble(timestamp, '5 minutes') AS w, SUM(item_id) AS s FROM SOURCE GROUP BY tumble(timestamp, '5 minutes')"
        ),
        [0, 2]
    );
    // A column read by a filter only is read.
    assert_eq!(
        unread("SELECT user_id, COUNT(*) AS n FROM SOURCE WHERE interaction_type = 'view' GROUP BY user_id"),
        [1, 3]
    );
    // Two scans of SOURCE (UNION ALL branches): what either reads is read.
    assert_eq!(
        unread(
            "SELECT k, COUNT(*) AS n FROM (SELECT user_id AS k FROM SOURCE UNION ALL SELECT item_id AS k FROM SOURCE) t GROUP BY k"
        ),
        [2, 3]
    );
    // Without aggregation: the columns the rows are made of.
    assert_eq!(unread("SELECT user_id, item_id FROM SOURCE WHERE item_id > 3"), [2, 3]);
    assert_eq!(unread("SELECT * FROM SOURCE"), Vec::<usize>::new());
}

//! The plan as a dataflow: DataFusion's plan with its stateful nodes swapped for
//! streaming operators by the pipeline's physical optimizer rule (`pipeline::dataflow`).
//! What each shape becomes, what the source aggregation emits, and the result's key.

mod support;

use std::sync::Arc;

use aggregator::operators::exec::{OperatorKind, Tick};
use aggregator::pipeline::definition::PipelineDefinition;
use aggregator::pipeline::plan::StreamingPlan;
use datafusion::arrow::array::{
    ArrayRef, Int64Array, RecordBatch, StringViewArray, TimestampMicrosecondArray, UInt32Array,
};
use support::*;

fn plan_of(sql: &str) -> StreamingPlan {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.sql");
    std::fs::write(&file, sql).unwrap();
    let def = PipelineDefinition::from_file(&file).unwrap();
    runtime().block_on(StreamingPlan::new(&def, &interactions())).unwrap()
}

fn case(name: &str) -> StreamingPlan {
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/sql_cases/{name}.sql"));
    let def = PipelineDefinition::from_file(&file).unwrap();
    runtime().block_on(StreamingPlan::new(&def, &interactions())).unwrap()
}

fn kinds(plan: &StreamingPlan) -> Vec<OperatorKind> {
    plan.operators().iter().map(|o| o.kind).collect()
}

/// One event per item in `items` (user 1, a view, all at the same time).
fn events(plan: &StreamingPlan, items: &[i64]) -> RecordBatch {
    let n = items.len();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(vec![1; n])),
        Arc::new(Int64Array::from(items.to_vec())),
        Arc::new(StringViewArray::from(vec!["view"; n])),
        Arc::new(TimestampMicrosecondArray::from(vec![1_767_225_600_000_000; n])),
        Arc::new(TimestampMicrosecondArray::from(vec![None; n])),
        Arc::new(UInt32Array::from_iter_values(0..n as u32)),
    ];
    RecordBatch::try_new(plan.source_schema.clone(), columns).unwrap()
}

/// The weights of the result's changes for a batch of events.
fn weights(plan: &StreamingPlan, items: &[i64]) -> Vec<i64> {
    let changes = runtime().block_on(plan.run(events(plan, items), Tick::default())).unwrap();
    let mut weights = changes.weights().to_vec();
    weights.sort();
    weights
}

#[test]
fn each_stateful_node_becomes_its_streaming_operator() {
    use OperatorKind::*;
    let shape = |sql: &str| kinds(&plan_of(sql));
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
    let plain = plan_of("SELECT item_id AS item, COUNT(*) AS n FROM SOURCE GROUP BY item_id");
    assert_eq!(weights(&plain, &[1, 2]), [1, 1]);
    assert_eq!(weights(&plain, &[1]), [1]);
    // A HAVING may drop a group whose old row was written: its old value is retracted.
    let having = plan_of("SELECT item_id, COUNT(*) AS n FROM SOURCE GROUP BY item_id HAVING COUNT(*) < 2");
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

//! The result's columns as the aggregator writes them: each with its type and, when
//! the result has a key, its role (key or value), which the dashboard's charts read.

mod support;

use aggregator::pipeline::emit::result_columns;
use store::{ColumnRole, ColumnType};
use support::*;

/// (name, type, role) of the result columns of `sql`.
fn columns(sql: &str) -> Vec<(String, ColumnType, Option<ColumnRole>)> {
    result_columns(&plan_sql(sql)).into_iter().map(|c| (c.name, c.column_type, c.role)).collect()
}

#[test]
fn group_columns_are_the_key_and_aggregates_the_values() {
    let sql = "SELECT window(timestamp, '5 minutes') AS window, user_id, interaction_type, COUNT(*) AS n, \
               AVG(item_id) AS avg_ms FROM SOURCE GROUP BY 1, user_id, interaction_type";
    let key = Some(ColumnRole::Key);
    let value = Some(ColumnRole::Value);
    assert_eq!(
        columns(sql),
        [
            ("window".into(), ColumnType::Window, key),
            ("user_id".into(), ColumnType::Integer, key),
            ("interaction_type".into(), ColumnType::Text, key),
            ("n".into(), ColumnType::Integer, value),
            ("avg_ms".into(), ColumnType::Real, value),
        ]
    );
    // An `_id` of one's own is the key: every column shown is a value then.
    let sql = "SELECT concat('u', CAST(user_id AS VARCHAR)) AS _id, COUNT(*) AS n FROM SOURCE GROUP BY user_id";
    assert_eq!(columns(sql), [("n".into(), ColumnType::Integer, value)]);
}

#[test]
fn rows_without_a_key_have_no_roles() {
    let sql = "SELECT user_id, item_id FROM SOURCE WHERE item_id > 10";
    assert!(columns(sql).iter().all(|(_, _, role)| role.is_none()), "{:?}", columns(sql));
}

//! From the dataflow's output changes to the result's: which rows to upsert and delete.
//!
//! The result's rows are told apart by its key (`-- key:`, an `_id` column, or the
//! group columns it copies): a key with a row inserted is upserted, a key with rows
//! only retracted (a group a HAVING now drops, a session merged into another, a row
//! that left an `ORDER BY … LIMIT`) is deleted. A result without a key is a multiset
//! of rows: each row's id is the hash of its content, with `#2`, `#3`… for copies.
//!
//! | output mode | what the source aggregation emits | what is written |
//! | --- | --- | --- |
//! | update | the groups a batch touched | their changes; closed windows leave the state, their rows stay |
//! | append | each window's final rows once the watermark closes it | their changes |
//! | complete | the groups a batch touched; nothing leaves the state | the whole result, every batch (as in Spark) |

use std::collections::{BTreeMap, BTreeSet, HashMap};

use datafusion::arrow::array::{ArrayRef, UInt32Array};
use datafusion::arrow::record_batch::RecordBatch;
use sha2::{Digest, Sha256};
use store::{ColumnRole, ResultColumn, ResultDelta, ResultRow, Value};

use crate::operators::changelog::Changelog;
use crate::pipeline::definition::OutputMode;
use crate::pipeline::plan::StreamingPlan;
use crate::sink::values;

/// The result table's columns: the output's columns except `_id`, each with its role
/// when the result has a key (the key's columns, and the values computed per key).
pub fn result_columns(plan: &StreamingPlan) -> Vec<ResultColumn> {
    let keys = plan.key_columns();
    plan.output_schema
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| f.name() != "_id")
        .map(|(i, f)| ResultColumn {
            name: f.name().clone(),
            column_type: values::column_type(f.data_type()),
            role: keys.map(|keys| if keys.contains(&i) { ColumnRole::Key } else { ColumnRole::Value }),
        })
        .collect()
}

/// Turns the dataflow's output changes into the rows to upsert and delete.
pub struct Emitter {
    key_columns: Option<Vec<usize>>,
    /// Without a key: how many times each row (by its content's id) is in the result.
    copies: HashMap<String, u64>,
    /// Complete mode: the whole result, written again every batch.
    complete: Option<BTreeMap<String, ResultRow>>,
}

impl Emitter {
    pub fn new(plan: &StreamingPlan) -> Self {
        Emitter {
            key_columns: plan.key_columns.clone(),
            copies: HashMap::new(),
            complete: (plan.output_mode == OutputMode::Complete).then(BTreeMap::new),
        }
    }

    /// Whether it remembers anything between batches (to rebuild after a restart).
    pub fn keeps_state(&self) -> bool {
        self.key_columns.is_none() || self.complete.is_some()
    }

    /// The result's changes from the output's: by key, a row inserted is upserted and
    /// a key only retracted is deleted; without a key, rows are counted by content.
    pub fn apply(&mut self, changes: &Changelog) -> ResultDelta {
        let delta = match &self.key_columns {
            Some(key_columns) => keyed(changes, key_columns),
            None => self.by_content(changes),
        };
        let Some(all) = &mut self.complete else { return delta };
        for id in &delta.deletes {
            all.remove(id);
        }
        for row in delta.upserts {
            all.insert(row.id.clone(), row);
        }
        ResultDelta { upserts: all.values().cloned().collect(), deletes: delta.deletes }
    }

    /// Rows without a key: each distinct row's id is the hash of its content, with
    /// `#2`, `#3`… for its further copies.
    fn by_content(&mut self, changes: &Changelog) -> ResultDelta {
        let batch = changes.rows();
        let hashes = content_hashes(&batch);
        // Per row content: the net change of its copies, and a row that has it.
        let mut net: BTreeMap<&str, (i64, usize)> = BTreeMap::new();
        for (row, (hash, &weight)) in hashes.iter().zip(changes.weights()).enumerate() {
            let entry = net.entry(hash).or_insert((0, row));
            entry.0 += weight;
        }
        let (mut upserts, mut deletes) = (Vec::new(), Vec::new());
        for (hash, (change, row)) in net {
            let old = self.copies.get(hash).copied().unwrap_or(0);
            let new = (old as i64 + change).max(0) as u64;
            let id = |n: u64| if n == 1 { hash.to_string() } else { format!("{hash}#{n}") };
            let values = || values_of(&batch, row);
            upserts.extend((old + 1..=new).map(|n| ResultRow { id: id(n), values: values() }));
            deletes.extend((new + 1..=old).map(id));
            match new {
                0 => self.copies.remove(hash),
                n => self.copies.insert(hash.to_string(), n),
            };
        }
        ResultDelta { upserts, deletes }
    }
}

/// Rows with a key: a key inserted is upserted (with its inserted row), a key only
/// retracted is deleted.
fn keyed(changes: &Changelog, key_columns: &[usize]) -> ResultDelta {
    let batch = changes.rows();
    let ids = key_ids(&batch, key_columns);
    if changes.weights().iter().all(|&w| w > 0) {
        return ResultDelta { upserts: rows(&batch, ids), deletes: vec![] };
    }
    let mut inserted: HashMap<&str, usize> = HashMap::new();
    for (row, (id, &weight)) in ids.iter().zip(changes.weights()).enumerate() {
        if weight > 0 {
            inserted.insert(id, row);
        }
    }
    let deletes: Vec<String> = ids
        .iter()
        .filter(|id| !inserted.contains_key(id.as_str()))
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut upserted: Vec<(usize, &str)> = inserted.into_iter().map(|(id, row)| (row, id)).collect();
    upserted.sort();
    let upserts = upserted
        .into_iter()
        .map(|(row, id)| ResultRow { id: id.to_string(), values: values_of(&batch, row) })
        .collect();
    ResultDelta { upserts, deletes }
}

/// The result changes of a query without aggregation: its rows for a micro-batch
/// (`out`, each from record `records[i]`), upserted under their key or else under
/// their record's `location` (`file:line`, `topic/partition@offset`, with `#2`, `#3`…
/// for further rows of one record): a batch run again after a crash writes the same
/// rows under the same ids.
pub fn rows_delta(
    plan: &StreamingPlan,
    out: &RecordBatch,
    records: &UInt32Array,
    location: impl Fn(usize) -> String,
) -> ResultDelta {
    let ids = match &plan.key_columns {
        Some(k) => key_ids(out, k),
        // Rows of one record are together in a batch, in an order of the plan's.
        _ => numbered(records.values().iter().map(|&record| location(record as usize))),
    };
    ResultDelta { upserts: rows(out, ids), deletes: vec![] }
}

fn key_ids(batch: &RecordBatch, key_columns: &[usize]) -> Vec<String> {
    let keys: Vec<ArrayRef> = key_columns.iter().map(|&k| batch.column(k).clone()).collect();
    (0..batch.num_rows()).map(|row| values::row_id(&keys, row)).collect()
}

/// Per row, the id of its content (for results without a key): the SHA-256 of the
/// row's JSON.
fn content_hashes(batch: &RecordBatch) -> Vec<String> {
    (0..batch.num_rows())
        .map(|row| {
            let row = Value::List(values_of(batch, row));
            hex::encode(&Sha256::digest(row.json_text().as_bytes())[..16])
        })
        .collect()
}

/// `ids` with `#2`, `#3`… after the second, third… occurrence of an id.
fn numbered(ids: impl Iterator<Item = String>) -> Vec<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    ids.map(|id| {
        let n = seen.entry(id.clone()).or_insert(0);
        *n += 1;
        if *n == 1 { id } else { format!("{id}#{n}") }
    })
    .collect()
}

/// Result rows (values without `_id`) with the given ids.
fn rows(batch: &RecordBatch, ids: Vec<String>) -> Vec<ResultRow> {
    let columns = value_columns(batch);
    ids.into_iter()
        .enumerate()
        .map(|(row, id)| ResultRow { id, values: columns.iter().map(|c| values::cell(c, row)).collect() })
        .collect()
}

/// The values of row `row` (without `_id`).
fn values_of(batch: &RecordBatch, row: usize) -> Vec<Value> {
    value_columns(batch).iter().map(|c| values::cell(c, row)).collect()
}

/// The columns written as values: all but `_id`.
fn value_columns(batch: &RecordBatch) -> Vec<&ArrayRef> {
    batch.columns().iter().zip(batch.schema().fields()).filter(|(_, f)| f.name() != "_id").map(|(c, _)| c).collect()
}

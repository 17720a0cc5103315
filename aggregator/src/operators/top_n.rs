//! Incremental `ORDER BY … LIMIT N` over a changelog.
//!
//! The operator keeps every row it was given (inserted and not yet retracted) ordered
//! by the sort key: arrow's row format of the ORDER BY values, whose bytes compare in
//! the query's order (directions and NULLS FIRST/LAST included), followed by the
//! row's own bytes so that equal sort keys stay apart; a count per entry keeps exact
//! duplicates. A batch of changes costs its rows times the logarithm of the rows held;
//! the first N rows are read off the front. Rows must be kept beyond the first N:
//! when a leader is retracted, the next one comes up.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, RecordBatchOptions, UInt64Array};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::PhysicalSortExpr;

use crate::error::Result;
use crate::operators::aggregate::window_end;
use crate::operators::changelog::Changelog;
use crate::operators::exec::{OperatorKind, OperatorStats, StreamingOperator, Tick};
use crate::operators::rows_to_batch;

/// A row held: its sort key and its own bytes (both in arrow's row format).
type Entry = (Box<[u8]>, Box<[u8]>);

/// Rows of `schema` as entries that sort in the order of an `ORDER BY`.
struct Ordering {
    sort: Vec<PhysicalSortExpr>,
    schema: SchemaRef,
    sort_keys: RowConverter,
    row_bytes: RowConverter,
}

impl Ordering {
    fn new(sort: Vec<PhysicalSortExpr>, schema: SchemaRef) -> Result<Self> {
        let sort_fields = sort
            .iter()
            .map(|s| Ok(SortField::new_with_options(s.expr.data_type(&schema)?, s.options)))
            .collect::<Result<Vec<_>>>()?;
        let row_fields = schema.fields().iter().map(|f| SortField::new(f.data_type().clone())).collect();
        Ok(Ordering {
            sort,
            sort_keys: RowConverter::new(sort_fields)?,
            row_bytes: RowConverter::new(row_fields)?,
            schema,
        })
    }

    /// Each row of `batch` as an entry.
    fn entries(&self, batch: &RecordBatch) -> Result<Vec<Entry>> {
        let n = batch.num_rows();
        let values = self
            .sort
            .iter()
            .map(|s| s.expr.evaluate(batch)?.into_array(n))
            .collect::<datafusion::common::Result<Vec<ArrayRef>>>()?;
        let keys = self.sort_keys.convert_columns(&values)?;
        let rows = self.row_bytes.convert_columns(batch.columns())?;
        Ok((0..n).map(|i| (Box::from(keys.row(i).data()), Box::from(rows.row(i).data()))).collect())
    }

    /// Rows (their own bytes) back into a batch.
    fn batch(&self, rows: &[&[u8]]) -> Result<RecordBatch> {
        rows_to_batch(&self.row_bytes, &self.schema, rows)
    }
}

/// Rows in order, each with how many times it is held.
#[derive(Default)]
struct SortedRows(BTreeMap<Entry, i64>);

impl SortedRows {
    fn add(&mut self, entry: Entry, weight: i64) {
        match self.0.get_mut(&entry) {
            Some(count) => {
                *count += weight;
                if *count == 0 {
                    self.0.remove(&entry);
                }
            }
            None => {
                self.0.insert(entry, weight);
            }
        }
    }

    /// The first `n` rows (their own bytes), copies repeated.
    fn first(&self, n: usize) -> impl Iterator<Item = &[u8]> {
        self.0.iter().flat_map(|((_, row), &count)| std::iter::repeat_n(row.as_ref(), count.max(0) as usize)).take(n)
    }

    fn len(&self) -> usize {
        self.0.len()
    }
}

pub struct TopN {
    ordering: Ordering,
    fetch: usize,
    rows: SortedRows,
    rows_read: u64,
}

impl TopN {
    /// The first `fetch` rows of `schema`'s rows in the order of `sort`.
    pub fn new(sort: Vec<PhysicalSortExpr>, fetch: usize, schema: SchemaRef) -> Result<Self> {
        Ok(TopN { ordering: Ordering::new(sort, schema)?, fetch, rows: SortedRows::default(), rows_read: 0 })
    }

    /// Rows read so far (inserted and retracted alike).
    pub fn rows_read(&self) -> u64 {
        self.rows_read
    }

    /// Rows held (all of them, not only the first N).
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.len() == 0
    }

    /// Applies `changes` (rows of the operator's schema, with weights).
    pub fn update(&mut self, changes: &Changelog) -> Result<()> {
        self.rows_read += changes.num_rows() as u64;
        for (entry, &weight) in self.ordering.entries(&changes.rows())?.into_iter().zip(changes.weights()) {
            self.rows.add(entry, weight);
        }
        Ok(())
    }

    /// The first N rows, in order.
    pub fn top(&self) -> Result<RecordBatch> {
        self.ordering.batch(&self.rows.first(self.fetch).collect::<Vec<_>>())
    }
}

/// An `ORDER BY … LIMIT N` whose output is a changelog too (between two aggregations):
/// when its first N rows change, the old ones are retracted and the new ones inserted.
pub struct TopNChanges {
    top_n: TopN,
    passed_on: RecordBatch,
}

impl TopNChanges {
    pub fn new(top_n: TopN) -> Self {
        let passed_on = RecordBatch::new_empty(top_n.ordering.schema.clone());
        TopNChanges { top_n, passed_on }
    }

    /// Applies the changes; returns the first N rows' changes.
    pub fn apply(&mut self, changes: &Changelog) -> Result<Changelog> {
        self.top_n.update(changes)?;
        let now = self.top_n.top()?;
        if now == self.passed_on {
            return Ok(Changelog::empty(&self.top_n.ordering.schema));
        }
        let before = std::mem::replace(&mut self.passed_on, now.clone());
        Changelog::new(&now, &before)
    }
}

#[async_trait::async_trait]
impl StreamingOperator for TopNChanges {
    async fn process(&mut self, inputs: Vec<RecordBatch>, _tick: Tick, _ctx: Arc<TaskContext>) -> Result<RecordBatch> {
        let [input] = <[RecordBatch; 1]>::try_from(inputs)
            .map_err(|_| crate::error::Error::internal("an ORDER BY … LIMIT reads one input".to_string()))?;
        Ok(self.apply(&Changelog::from_batch(input)?)?.into_batch())
    }

    fn stats(&self) -> OperatorStats {
        OperatorStats {
            kind: OperatorKind::TopN,
            rows_read: self.top_n.rows_read(),
            held: self.top_n.len(),
            closed_rows: 0,
        }
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

/// `ROW_NUMBER() OVER (PARTITION BY … ORDER BY …) <= N` over a changelog (top-N per
/// partition, Flink's Rank operator): every row of each partition is kept in sort order
/// (as [`TopN`] keeps them), and a batch costs its rows times the logarithm of their
/// partition's rows plus N per partition it touches — not the partitions' sizes. When a
/// touched partition's first N rows change, their old rows (with their row numbers) are
/// retracted and the new ones inserted.
pub struct TopNPerPartition {
    spec: PerPartitionSpec,
    partition_keys: RowConverter,
    ordering: Ordering,
    /// Partition key → its rows in order.
    partitions: HashMap<Box<[u8]>, SortedRows>,
    /// Partitions by window end, when the partition key includes the event-time window.
    by_end: BTreeMap<i64, Vec<Box<[u8]>>>,
    rows_read: u64,
}

/// What [`TopNPerPartition`] is: over rows of `schema`, per `partition_columns`, the first
/// `fetch` in the order of `sort`, each with its row number; `output` picks the columns
/// passed on among the rows' and the row number (last); `window` is the partition column
/// that is the event-time window, if any.
pub struct PerPartitionSpec {
    pub schema: SchemaRef,
    pub partition_columns: Vec<usize>,
    pub sort: Vec<PhysicalSortExpr>,
    pub fetch: usize,
    pub window: Option<usize>,
    pub output: Vec<usize>,
    pub output_schema: SchemaRef,
    /// Partitions of closed windows leave (not in complete mode).
    pub evict: bool,
}

impl TopNPerPartition {
    pub fn new(spec: PerPartitionSpec) -> Result<Self> {
        let field = |c: &usize| SortField::new(spec.schema.field(*c).data_type().clone());
        Ok(TopNPerPartition {
            partition_keys: RowConverter::new(spec.partition_columns.iter().map(field).collect())?,
            ordering: Ordering::new(spec.sort.clone(), spec.schema.clone())?,
            spec,
            partitions: HashMap::new(),
            by_end: BTreeMap::new(),
            rows_read: 0,
        })
    }

    /// The first N rows of a partition (row bytes).
    fn first(&self, key: &[u8]) -> Vec<Box<[u8]>> {
        let Some(rows) = self.partitions.get(key) else { return Vec::new() };
        rows.first(self.spec.fetch).map(Box::from).collect()
    }

    /// Applies `changes`; the changes of the first N rows of the partitions they touch.
    pub fn apply(&mut self, changes: &Changelog, watermark: Option<i64>) -> Result<Changelog> {
        let batch = changes.rows();
        let n = batch.num_rows();
        self.rows_read += n as u64;
        let columns = |cs: &[usize]| cs.iter().map(|&c| batch.column(c).clone()).collect::<Vec<ArrayRef>>();
        let keys = self.partition_keys.convert_columns(&columns(&self.spec.partition_columns))?;
        let entries = self.ordering.entries(&batch)?;
        // Each touched partition's first rows before the batch.
        let mut before: BTreeMap<Box<[u8]>, Vec<Box<[u8]>>> = BTreeMap::new();
        for i in 0..n {
            let key = keys.row(i).data();
            if !before.contains_key(key) {
                before.insert(Box::from(key), self.first(key));
                if let Some(end) = self.spec.window.and_then(|w| window_end(batch.column(w), i))
                    && !self.partitions.contains_key(key)
                {
                    self.by_end.entry(end).or_default().push(Box::from(key));
                }
            }
        }
        for (i, (entry, &weight)) in entries.into_iter().zip(changes.weights()).enumerate() {
            self.partitions.entry(Box::from(keys.row(i).data())).or_default().add(entry, weight);
        }
        let (mut inserted, mut retracted) = (Vec::new(), Vec::new());
        for (key, old) in before {
            if self.partitions.get(&key).is_some_and(|rows| rows.len() == 0) {
                self.partitions.remove(&key);
            }
            let new = self.first(&key);
            if new != old {
                retracted.extend(old.into_iter().zip(1u64..));
                inserted.extend(new.into_iter().zip(1u64..));
            }
        }
        if let (Some(w), true) = (watermark, self.spec.evict) {
            let keep = self.by_end.split_off(&(w + 1));
            for key in std::mem::replace(&mut self.by_end, keep).into_values().flatten() {
                self.partitions.remove(&key);
            }
        }
        Changelog::new(&self.numbered(&inserted)?, &self.numbered(&retracted)?)
    }

    /// Rows with their row numbers, as the output's columns.
    fn numbered(&self, rows: &[(Box<[u8]>, u64)]) -> Result<RecordBatch> {
        let rows_only: Vec<&[u8]> = rows.iter().map(|(r, _)| r.as_ref()).collect();
        let mut columns = self.ordering.batch(&rows_only)?.columns().to_vec();
        columns.push(Arc::new(UInt64Array::from_iter_values(rows.iter().map(|(_, n)| *n))));
        let columns = self.spec.output.iter().map(|&c| columns[c].clone()).collect();
        let options = RecordBatchOptions::new().with_row_count(Some(rows.len()));
        Ok(RecordBatch::try_new_with_options(self.spec.output_schema.clone(), columns, &options)?)
    }
}

#[async_trait::async_trait]
impl StreamingOperator for TopNPerPartition {
    async fn process(&mut self, inputs: Vec<RecordBatch>, tick: Tick, _ctx: Arc<TaskContext>) -> Result<RecordBatch> {
        let [input] = <[RecordBatch; 1]>::try_from(inputs)
            .map_err(|_| crate::error::Error::internal("a top-N per partition reads one input".to_string()))?;
        Ok(self.apply(&Changelog::from_batch(input)?, tick.watermark)?.into_batch())
    }

    fn stats(&self) -> OperatorStats {
        OperatorStats {
            kind: OperatorKind::TopNPerPartition,
            rows_read: self.rows_read,
            held: self.partitions.len(),
            closed_rows: 0,
        }
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{AsArray, Int64Array, StringArray};
    use datafusion::arrow::compute::SortOptions;
    use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};
    use datafusion::physical_expr::expressions::Column;
    use std::sync::Arc;

    fn batch(schema: &SchemaRef, rows: &[(&str, i64)]) -> RecordBatch {
        let names: Vec<&str> = rows.iter().map(|r| r.0).collect();
        let counts: Vec<i64> = rows.iter().map(|r| r.1).collect();
        RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(StringArray::from(names)) as ArrayRef, Arc::new(Int64Array::from(counts))],
        )
        .unwrap()
    }

    #[test]
    fn the_first_rows_follow_insertions_and_retractions_and_the_next_one_comes_up() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("item", DataType::Utf8, false),
            Field::new("n", DataType::Int64, false),
        ]));
        // ORDER BY n DESC, item LIMIT 2
        let sort = vec![
            PhysicalSortExpr {
                expr: Arc::new(Column::new("n", 1)),
                options: SortOptions { descending: true, nulls_first: false },
            },
            PhysicalSortExpr { expr: Arc::new(Column::new("item", 0)), options: SortOptions::default() },
        ];
        let mut top = TopN::new(sort, 2, schema.clone()).unwrap();
        let none = batch(&schema, &[]);
        let changes = |inserted, retracted| Changelog::new(&inserted, &retracted).unwrap();
        top.update(&changes(batch(&schema, &[("a", 5), ("b", 7), ("c", 5)]), none.clone())).unwrap();
        let first = top.top().unwrap();
        assert_eq!(first.column(0).as_string::<i32>().iter().flatten().collect::<Vec<_>>(), ["b", "a"]);
        // b's count goes from 7 to 1: a and c lead now.
        top.update(&changes(batch(&schema, &[("b", 1)]), batch(&schema, &[("b", 7)]))).unwrap();
        let first = top.top().unwrap();
        assert_eq!(first.column(0).as_string::<i32>().iter().flatten().collect::<Vec<_>>(), ["a", "c"]);
        assert_eq!(first.column(1).as_primitive::<Int64Type>().values().to_vec(), [5, 5]);
        assert_eq!(top.len(), 3, "every row is kept, not only the first two");
    }

    #[test]
    fn as_a_changelog_it_passes_on_the_first_rows_changes_only_when_they_change() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("item", DataType::Utf8, false),
            Field::new("n", DataType::Int64, false),
        ]));
        let sort = vec![PhysicalSortExpr {
            expr: Arc::new(Column::new("n", 1)),
            options: SortOptions { descending: true, nulls_first: false },
        }];
        let mut top = TopNChanges::new(TopN::new(sort, 1, schema.clone()).unwrap());
        let none = batch(&schema, &[]);
        let mut apply = |inserted, retracted| {
            let out = top.apply(&Changelog::new(&inserted, &retracted).unwrap()).unwrap();
            out.split().unwrap()
        };
        let (inserted, retracted) = apply(batch(&schema, &[("a", 5), ("b", 3)]), none.clone());
        assert_eq!((inserted, retracted), (batch(&schema, &[("a", 5)]), none.clone()));
        // b changes below the first row: nothing passes on.
        let (inserted, retracted) = apply(batch(&schema, &[("b", 4)]), batch(&schema, &[("b", 3)]));
        assert_eq!((inserted.num_rows(), retracted.num_rows()), (0, 0));
        // b overtakes a: a is retracted, b inserted.
        let (inserted, retracted) = apply(batch(&schema, &[("b", 9)]), batch(&schema, &[("b", 4)]));
        assert_eq!((inserted, retracted), (batch(&schema, &[("b", 9)]), batch(&schema, &[("a", 5)])));
    }
}

//! Window functions (`ROW_NUMBER() OVER (PARTITION BY … ORDER BY …)`, `RANK`, running
//! sums …) over a changelog, recomputed per partition.
//!
//! A change to one row can change the window values of every row of its partition
//! (ranks shift), and of no other partition. So the operator keeps the rows of each
//! partition (a counted multiset, in arrow's row format) and, per batch, hands back the
//! rows of the partitions the batch touches as they were before and as they are after
//! it. The caller runs DataFusion's own window plan over both and passes on the
//! difference: the old results retracted, the new ones inserted. The work of a batch is
//! the size of the partitions it touches.
//!
//! Without PARTITION BY, all rows are one partition: every batch recomputes them all
//! (a rank can move every row).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;

use crate::error::Result;
use crate::operators::aggregate::window_end;
use crate::operators::changelog::Changelog;
use crate::operators::exec::{OperatorKind, OperatorStats, StreamingOperator, Tick};
use crate::operators::rows_to_batch;
use crate::pipeline::live_table::{LiveSlot, run_over};

type RowBytes = Box<[u8]>;

/// What the rows are: their schema, the PARTITION BY columns and, if the partitions are
/// windows, the window column among them.
#[derive(Debug, Clone)]
pub struct PartitionSpec {
    pub schema: SchemaRef,
    pub partition_columns: Vec<usize>,
    pub window: Option<usize>,
}

pub struct PartitionedRows {
    schema: SchemaRef,
    /// Indices of the PARTITION BY columns (none: one partition).
    partition_columns: Vec<usize>,
    keys: RowConverter,
    rows: RowConverter,
    /// Partition key → row → how many times it is held.
    partitions: HashMap<RowBytes, HashMap<RowBytes, i64>>,
    /// When the PARTITION BY includes the event-time window: its column, and the
    /// partitions by window end, to let them go once the watermark passes it.
    window: Option<usize>,
    by_end: BTreeMap<i64, Vec<RowBytes>>,
    rows_recomputed: u64,
}

impl PartitionedRows {
    /// Rows as `spec` says (partitions of closed windows leave with [`Self::evict`]).
    pub fn new(spec: PartitionSpec) -> Result<Self> {
        let PartitionSpec { schema, partition_columns, window } = spec;
        let field = |c: &usize| SortField::new(schema.field(*c).data_type().clone());
        let keys = RowConverter::new(partition_columns.iter().map(field).collect())?;
        let rows = RowConverter::new(schema.fields().iter().map(|f| SortField::new(f.data_type().clone())).collect())?;
        Ok(PartitionedRows {
            schema,
            partition_columns,
            keys,
            rows,
            partitions: HashMap::new(),
            window,
            by_end: BTreeMap::new(),
            rows_recomputed: 0,
        })
    }

    /// Rows handed back so far to recompute (before and after alike): the work done.
    pub fn rows_recomputed(&self) -> u64 {
        self.rows_recomputed
    }

    /// Applies the changes; returns every row of the partitions they touch, before and
    /// after.
    pub fn apply(&mut self, changelog: &Changelog) -> Result<(RecordBatch, RecordBatch)> {
        let mut new_partitions: HashSet<RowBytes> = HashSet::new();
        let batch = changelog.rows();
        let n = batch.num_rows();
        let key_columns: Vec<ArrayRef> = self.partition_columns.iter().map(|&c| batch.column(c).clone()).collect();
        // Without PARTITION BY every row has the one (empty) key.
        let keys = match key_columns.is_empty() || n == 0 {
            true => None,
            false => Some(self.keys.convert_columns(&key_columns)?),
        };
        let rows = self.rows.convert_columns(batch.columns())?;
        let mut changes: Vec<(RowBytes, RowBytes, i64)> = Vec::with_capacity(n);
        for (i, &weight) in changelog.weights().iter().enumerate() {
            let key = keys.as_ref().map_or_else(RowBytes::default, |k| RowBytes::from(k.row(i).data()));
            if let Some(end) = self.window.and_then(|w| window_end(batch.column(w), i))
                && !self.partitions.contains_key(&key)
                && new_partitions.insert(key.clone())
            {
                self.by_end.entry(end).or_default().push(key.clone());
            }
            changes.push((key, RowBytes::from(rows.row(i).data()), weight));
        }
        let touched: HashSet<&RowBytes> = changes.iter().map(|(key, _, _)| key).collect();
        let mut touched: Vec<RowBytes> = touched.into_iter().cloned().collect();
        touched.sort();
        let before = self.rows_of(&touched)?;
        for (key, row, weight) in changes {
            let partition = self.partitions.entry(key).or_default();
            match partition.get_mut(&row) {
                Some(count) => {
                    *count += weight;
                    if *count == 0 {
                        partition.remove(&row);
                    }
                }
                None => {
                    partition.insert(row, weight);
                }
            }
        }
        // Only touched partitions can have been left empty.
        for key in &touched {
            if self.partitions.get(key).is_some_and(|rows| rows.is_empty()) {
                self.partitions.remove(key);
            }
        }
        let after = self.rows_of(&touched)?;
        self.rows_recomputed += (before.num_rows() + after.num_rows()) as u64;
        Ok((before, after))
    }

    /// Forgets the partitions of windows ending at or before `watermark`: closed, they
    /// change no more.
    pub fn evict(&mut self, watermark: i64) {
        let keep = self.by_end.split_off(&(watermark + 1));
        for key in std::mem::replace(&mut self.by_end, keep).into_values().flatten() {
            self.partitions.remove(&key);
        }
    }

    /// Partitions held.
    pub fn len(&self) -> usize {
        self.partitions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.partitions.is_empty()
    }

    /// Every row held in the partitions `keys`, each as many times as it is counted.
    fn rows_of(&self, keys: &[RowBytes]) -> Result<RecordBatch> {
        let mut rows: Vec<&[u8]> = Vec::new();
        for key in keys {
            let Some(partition) = self.partitions.get(key) else { continue };
            let mut held: Vec<(&RowBytes, &i64)> = partition.iter().collect();
            held.sort();
            for (row, &count) in held {
                rows.extend(std::iter::repeat_n(row.as_ref(), count.max(0) as usize));
            }
        }
        rows_to_batch(&self.rows, &self.schema, &rows)
    }
}

/// Window functions as a streaming operator: the touched partitions' rows before and
/// after a batch go through DataFusion's own window plan (`segment`, reading `slot`);
/// the old results are retracted, the new ones inserted.
pub struct WindowFunctions {
    pub rows: PartitionedRows,
    pub slot: LiveSlot,
    pub segment: Arc<dyn ExecutionPlan>,
    /// Partitions of closed windows leave (not in complete mode).
    pub evict: bool,
}

#[async_trait::async_trait]
impl StreamingOperator for WindowFunctions {
    async fn process(&mut self, inputs: Vec<RecordBatch>, tick: Tick, ctx: Arc<TaskContext>) -> Result<RecordBatch> {
        let [input] = <[RecordBatch; 1]>::try_from(inputs)
            .map_err(|_| crate::error::Error::internal("window functions read one input".to_string()))?;
        let (before, after) = self.rows.apply(&Changelog::from_batch(input)?)?;
        let retracted = run_over(&self.slot, vec![before], &self.segment, ctx.clone()).await?;
        let inserted = run_over(&self.slot, vec![after], &self.segment, ctx).await?;
        if let (Some(w), true) = (tick.watermark, self.evict) {
            self.rows.evict(w);
        }
        Ok(Changelog::new(&inserted, &retracted)?.into_batch())
    }

    fn stats(&self) -> OperatorStats {
        OperatorStats {
            kind: OperatorKind::WindowFunctions,
            rows_read: self.rows.rows_recomputed(),
            held: self.rows.len(),
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
    use datafusion::arrow::array::{AsArray, Int64Array};
    use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};

    fn batch(schema: &SchemaRef, rows: &[(i64, i64)]) -> RecordBatch {
        let (a, b): (Vec<i64>, Vec<i64>) = rows.iter().copied().unzip();
        RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(Int64Array::from(a)) as ArrayRef, Arc::new(Int64Array::from(b))],
        )
        .unwrap()
    }

    fn pairs(batch: &RecordBatch) -> Vec<(i64, i64)> {
        let a = batch.column(0).as_primitive::<Int64Type>();
        let b = batch.column(1).as_primitive::<Int64Type>();
        (0..batch.num_rows()).map(|i| (a.value(i), b.value(i))).collect()
    }

    #[test]
    fn a_change_hands_back_its_whole_partition_before_and_after_and_nothing_else() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("p", DataType::Int64, false),
            Field::new("v", DataType::Int64, false),
        ]));
        let spec = PartitionSpec { schema: schema.clone(), partition_columns: vec![0], window: None };
        let mut rows = PartitionedRows::new(spec).unwrap();
        let none = batch(&schema, &[]);
        let changes = |inserted, retracted| Changelog::new(&inserted, &retracted).unwrap();
        rows.apply(&changes(batch(&schema, &[(1, 10), (1, 20), (2, 5)]), none.clone())).unwrap();
        // Partition 1's row 20 becomes 30; partition 2 is not touched.
        let (before, after) = rows.apply(&changes(batch(&schema, &[(1, 30)]), batch(&schema, &[(1, 20)]))).unwrap();
        assert_eq!(pairs(&before), [(1, 10), (1, 20)]);
        assert_eq!(pairs(&after), [(1, 10), (1, 30)]);
        // A partition left empty is forgotten.
        let (before, after) = rows.apply(&changes(none.clone(), batch(&schema, &[(2, 5)]))).unwrap();
        assert_eq!((pairs(&before), pairs(&after)), (vec![(2, 5)], vec![]));
        assert_eq!(rows.rows_recomputed(), 3 + 4 + 1);
    }

    #[test]
    fn without_partition_by_every_change_hands_back_all_rows() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("p", DataType::Int64, false),
            Field::new("v", DataType::Int64, false),
        ]));
        let spec = PartitionSpec { schema: schema.clone(), partition_columns: vec![], window: None };
        let mut rows = PartitionedRows::new(spec).unwrap();
        let none = batch(&schema, &[]);
        let changes = |inserted, retracted| Changelog::new(&inserted, &retracted).unwrap();
        rows.apply(&changes(batch(&schema, &[(1, 10), (2, 5)]), none)).unwrap();
        let (before, after) = rows.apply(&changes(batch(&schema, &[(1, 30)]), batch(&schema, &[(1, 10)]))).unwrap();
        assert_eq!(pairs(&before), [(1, 10), (2, 5)]);
        assert_eq!(pairs(&after), [(1, 30), (2, 5)]);
        assert_eq!(rows.len(), 1);
    }
}

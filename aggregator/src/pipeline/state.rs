//! The aggregation state a pipeline keeps between micro-batches.
//!
//! One entry per group: its key (arrow's row format, so any key types work) and one
//! DataFusion [`Accumulator`] per aggregate. A micro-batch arrives as the partial
//! aggregation's output — one row of *state* per group it touches — and is merged
//! with `merge_batch`, the same way DataFusion combines partial aggregates across
//! partitions. So the work per batch is the batch plus the groups it touches, and
//! every built-in aggregate (COUNT DISTINCT, approx_count_distinct, AVG …) just works.
//!
//! Groups of a window are indexed by the window's end, so that when the watermark
//! passes it they leave the state (and, in append mode, go to the sink) in one step.
//! The checkpoint form of the state is a batch in the partial schema (keys + state
//! columns): restoring is merging it into an empty store.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch};
use datafusion::arrow::compute::filter;
use datafusion::arrow::datatypes::{Schema, SchemaRef, TimestampMicrosecondType};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::Accumulator;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;

use crate::error::Result;
use crate::pipeline::plan::StreamingPlan;

struct Group {
    accumulators: Vec<Box<dyn Accumulator>>,
}

pub struct GroupStore {
    aggregates: Vec<Arc<AggregateFunctionExpr>>,
    state_widths: Vec<usize>,
    num_group_columns: usize,
    /// The partial schema with every field nullable (state values may be null).
    checkpoint_schema: SchemaRef,
    final_schema: SchemaRef,
    converter: RowConverter,
    groups: HashMap<Box<[u8]>, Group>,
    /// Index of the window among the group columns, if the GROUP BY has one.
    window_column: Option<usize>,
    /// Group keys by window end, for eviction.
    by_window_end: BTreeMap<i64, Vec<Box<[u8]>>>,
    /// Windows ending at or before this have been evicted and must not come back.
    evicted_until: Option<i64>,
}

/// The end of the window in row `row` of a `{start, end}` struct column.
pub fn window_end(windows: &ArrayRef, row: usize) -> Option<i64> {
    let ends = windows.as_struct_opt()?.column_by_name("end")?;
    let ends = ends.as_primitive_opt::<TimestampMicrosecondType>()?;
    ends.is_valid(row).then(|| ends.value(row))
}

impl GroupStore {
    pub fn new(plan: &StreamingPlan) -> Result<Self> {
        let partial = plan.partial_schema.clone();
        let sort_fields = partial.fields()[..plan.num_group_columns]
            .iter()
            .map(|f| SortField::new(f.data_type().clone()))
            .collect();
        let nullable: Vec<_> = partial.fields().iter().map(|f| f.as_ref().clone().with_nullable(true)).collect();
        Ok(GroupStore {
            aggregates: plan.aggregates.clone(),
            state_widths: plan.state_widths.clone(),
            num_group_columns: plan.num_group_columns,
            checkpoint_schema: Arc::new(Schema::new(nullable)),
            final_schema: plan.final_schema.clone(),
            converter: RowConverter::new(sort_fields)?,
            groups: HashMap::new(),
            window_column: plan.window.as_ref().map(|w| w.call.group_index),
            by_window_end: BTreeMap::new(),
            evicted_until: None,
        })
    }

    /// Number of groups held.
    pub fn len(&self) -> usize {
        self.groups.len()
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Approximate bytes held by keys and accumulators.
    pub fn size_bytes(&self) -> usize {
        self.groups.iter().map(|(k, g)| k.len() + g.accumulators.iter().map(|a| a.size()).sum::<usize>()).sum()
    }

    pub fn evicted_until(&self) -> Option<i64> {
        self.evicted_until
    }

    /// Merges a batch of partial state (group columns + state columns) and returns the
    /// final values of the groups it touched (group columns + aggregate values).
    pub fn merge(&mut self, partial: &RecordBatch) -> Result<RecordBatch> {
        Ok(self.merge_rows(partial, true)?.expect("evaluated"))
    }

    fn merge_rows(&mut self, partial: &RecordBatch, evaluate: bool) -> Result<Option<RecordBatch>> {
        let n = partial.num_rows();
        let group_columns = &partial.columns()[..self.num_group_columns];
        let rows = self.converter.convert_columns(group_columns)?;
        let mut state_columns: Vec<&[ArrayRef]> = Vec::with_capacity(self.aggregates.len());
        let mut at = self.num_group_columns;
        for width in &self.state_widths {
            state_columns.push(&partial.columns()[at..at + width]);
            at += width;
        }
        let mut finals: Vec<Vec<ScalarValue>> = vec![Vec::with_capacity(if evaluate { n } else { 0 }); self.aggregates.len()];
        let mut keep = Vec::with_capacity(n);
        for i in 0..n {
            let end = self.window_column.and_then(|w| window_end(&group_columns[w], i));
            if let (Some(end), Some(until)) = (end, self.evicted_until) {
                // A window that has closed: never reopen it (the pipeline drops late
                // events before this; this guards the invariant).
                if end <= until {
                    keep.push(false);
                    continue;
                }
            }
            keep.push(true);
            let key = rows.row(i);
            let group = match self.groups.get_mut(key.as_ref()) {
                Some(group) => group,
                None => {
                    let accumulators = self
                        .aggregates
                        .iter()
                        .map(|a| a.create_accumulator())
                        .collect::<datafusion::common::Result<Vec<_>>>()?;
                    let key: Box<[u8]> = key.as_ref().into();
                    if let Some(end) = end {
                        self.by_window_end.entry(end).or_default().push(key.clone());
                    }
                    self.groups.entry(key).or_insert(Group { accumulators })
                }
            };
            for (a, accumulator) in group.accumulators.iter_mut().enumerate() {
                let states: Vec<ArrayRef> = state_columns[a].iter().map(|c| c.slice(i, 1)).collect();
                accumulator.merge_batch(&states)?;
                if evaluate {
                    finals[a].push(accumulator.evaluate()?);
                }
            }
        }
        if !evaluate {
            return Ok(None);
        }
        let mut columns: Vec<ArrayRef> = if keep.iter().all(|k| *k) {
            group_columns.to_vec()
        } else {
            let mask = BooleanArray::from(keep);
            group_columns.iter().map(|c| filter(c, &mask)).collect::<std::result::Result<_, _>>()?
        };
        self.push_finals(&mut columns, finals)?;
        Ok(Some(self.final_batch(columns)?))
    }

    fn push_finals(&self, columns: &mut Vec<ArrayRef>, finals: Vec<Vec<ScalarValue>>) -> Result<()> {
        for (a, values) in finals.into_iter().enumerate() {
            let field = &self.final_schema.fields()[self.num_group_columns + a];
            let array = if values.is_empty() {
                datafusion::arrow::array::new_empty_array(field.data_type())
            } else {
                ScalarValue::iter_to_array(values)?
            };
            columns.push(array);
        }
        Ok(())
    }

    fn final_batch(&self, columns: Vec<ArrayRef>) -> Result<RecordBatch> {
        let columns = columns
            .into_iter()
            .zip(self.final_schema.fields())
            .map(|(c, f)| {
                // Aggregates may evaluate to a compatible but different type (e.g. a
                // dictionary); the schema DataFusion planned is the contract.
                if c.data_type() == f.data_type() {
                    Ok(c)
                } else {
                    datafusion::arrow::compute::cast(&c, f.data_type())
                }
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(RecordBatch::try_new(self.final_schema.clone(), columns)?)
    }

    /// Final values of the groups with these keys.
    fn evaluate_keys<'a>(&mut self, keys: impl Iterator<Item = &'a [u8]> + Clone) -> Result<RecordBatch> {
        let parser = self.converter.parser();
        let mut columns = self.converter.convert_rows(keys.clone().map(|k| parser.parse(k)))?;
        let mut finals: Vec<Vec<ScalarValue>> = vec![Vec::new(); self.aggregates.len()];
        for key in keys {
            let group = self.groups.get_mut(key).expect("key of a held group");
            for (a, accumulator) in group.accumulators.iter_mut().enumerate() {
                finals[a].push(accumulator.evaluate()?);
            }
        }
        self.push_finals(&mut columns, finals)?;
        self.final_batch(columns)
    }

    /// Final values of every group held.
    pub fn evaluate_all(&mut self) -> Result<RecordBatch> {
        let keys: Vec<Box<[u8]>> = self.groups.keys().cloned().collect();
        self.evaluate_keys(keys.iter().map(|k| k.as_ref()))
    }

    /// Drops the groups of windows ending at or before `watermark`. With `evaluate`,
    /// returns their final values first (append mode writes them now).
    pub fn evict(&mut self, watermark: i64, evaluate: bool) -> Result<Option<RecordBatch>> {
        if self.window_column.is_none() {
            return Ok(None);
        }
        self.evicted_until = Some(self.evicted_until.map_or(watermark, |w| w.max(watermark)));
        let keep = self.by_window_end.split_off(&(watermark + 1));
        let closed = std::mem::replace(&mut self.by_window_end, keep);
        let keys: Vec<Box<[u8]>> = closed.into_values().flatten().collect();
        let finals = if evaluate && !keys.is_empty() {
            Some(self.evaluate_keys(keys.iter().map(|k| k.as_ref()))?)
        } else {
            None
        };
        for key in &keys {
            self.groups.remove(key);
        }
        Ok(finals)
    }

    /// The whole state as one batch: group columns + state columns.
    pub fn checkpoint_batch(&mut self) -> Result<RecordBatch> {
        let keys: Vec<Box<[u8]>> = self.groups.keys().cloned().collect();
        let parser = self.converter.parser();
        let mut columns = self.converter.convert_rows(keys.iter().map(|k| parser.parse(k)))?;
        let width: usize = self.state_widths.iter().sum();
        let mut states: Vec<Vec<ScalarValue>> = vec![Vec::with_capacity(keys.len()); width];
        for key in &keys {
            let group = self.groups.get_mut(key).expect("key of a held group");
            let mut at = 0;
            for accumulator in group.accumulators.iter_mut() {
                for value in accumulator.state()? {
                    states[at].push(value);
                    at += 1;
                }
            }
        }
        for (i, values) in states.into_iter().enumerate() {
            let field = &self.checkpoint_schema.fields()[self.num_group_columns + i];
            columns.push(if values.is_empty() {
                datafusion::arrow::array::new_empty_array(field.data_type())
            } else {
                ScalarValue::iter_to_array(values)?
            });
        }
        Ok(RecordBatch::try_new(self.checkpoint_schema.clone(), columns)?)
    }

    /// Restores the state from [`Self::checkpoint_batch`] output.
    pub fn restore(&mut self, batch: &RecordBatch, evicted_until: Option<i64>) -> Result<()> {
        self.evicted_until = None;
        self.merge_rows(batch, false)?;
        self.evicted_until = evicted_until;
        Ok(())
    }
}

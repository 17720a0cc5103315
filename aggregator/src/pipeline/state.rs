//! The aggregation state a pipeline keeps between micro-batches.
//!
//! One entry per group: its key (arrow's row format, so any key types work) and the
//! partial *state* of each aggregate, exactly as DataFusion's partial aggregation
//! emits it. A micro-batch arrives as the partial aggregation's output — one row of
//! state per group it touches. For those groups only, the held state and the new
//! state are merged with the aggregate's own `GroupsAccumulator::merge_batch`, the
//! same way DataFusion combines partial aggregates across partitions, and the
//! result is both stored back and evaluated to the groups' final values. So the work
//! per batch is the batch plus the groups it touches, and every built-in aggregate
//! (COUNT DISTINCT, approx_count_distinct, AVG …) just works.
//!
//! (Merging must use the same accumulator kind as the partial aggregation: in
//! DataFusion 55 `approx_distinct`'s groups accumulator writes a sparse state that
//! its row accumulator cannot read.)
//!
//! Groups of a window are indexed by the window's end, so that when the watermark
//! passes it they leave the state (and, in append mode, go to the sink) in one step.
//! The checkpoint form of the state is a batch in the partial schema (keys + state
//! columns).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, new_empty_array};
use datafusion::arrow::compute::{cast, filter};
use datafusion::arrow::datatypes::{Schema, SchemaRef, TimestampMicrosecondType};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use datafusion::physical_expr::GroupsAccumulatorAdapter;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;

use crate::error::Result;
use crate::pipeline::plan::StreamingPlan;

pub struct GroupStore {
    aggregates: Vec<Arc<AggregateFunctionExpr>>,
    state_widths: Vec<usize>,
    num_group_columns: usize,
    /// The partial schema with every field nullable (state values may be null).
    checkpoint_schema: SchemaRef,
    final_schema: SchemaRef,
    converter: RowConverter,
    /// Group key → state values of all aggregates, in partial-schema order.
    groups: HashMap<Box<[u8]>, Vec<ScalarValue>>,
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
        let sort_fields =
            partial.fields()[..plan.num_group_columns].iter().map(|f| SortField::new(f.data_type().clone())).collect();
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

    /// Approximate bytes held by keys and states.
    pub fn size_bytes(&self) -> usize {
        self.groups.iter().map(|(k, state)| k.len() + state.iter().map(ScalarValue::size).sum::<usize>()).sum()
    }

    pub fn evicted_until(&self) -> Option<i64> {
        self.evicted_until
    }

    fn accumulator(&self, a: usize) -> Result<Box<dyn GroupsAccumulator>> {
        let aggregate = &self.aggregates[a];
        Ok(if aggregate.groups_accumulator_supported() {
            aggregate.create_groups_accumulator()?
        } else {
            let aggregate = aggregate.clone();
            Box::new(GroupsAccumulatorAdapter::new(move || aggregate.create_accumulator()))
        })
    }

    /// The state columns of aggregate `a` within all state columns.
    fn state_range(&self, a: usize) -> std::ops::Range<usize> {
        let start: usize = self.state_widths[..a].iter().sum();
        start..start + self.state_widths[a]
    }

    /// Held states of `keys` as arrays, one per state column.
    fn gather<'a>(&self, keys: impl Iterator<Item = &'a [u8]> + Clone) -> Result<Vec<ArrayRef>> {
        let width: usize = self.state_widths.iter().sum();
        (0..width)
            .map(|c| {
                let field = &self.checkpoint_schema.fields()[self.num_group_columns + c];
                let values: Vec<ScalarValue> = keys.clone().map(|k| self.groups[k][c].clone()).collect();
                Ok(if values.is_empty() {
                    new_empty_array(field.data_type())
                } else {
                    ScalarValue::iter_to_array(values)?
                })
            })
            .collect()
    }

    /// Final values of aggregate `a` from state columns `states` (one row per group).
    fn evaluate_states(&self, a: usize, states: &[ArrayRef]) -> Result<ArrayRef> {
        let rows = states.first().map_or(0, |s| s.len());
        let mut accumulator = self.accumulator(a)?;
        let index: Vec<usize> = (0..rows).collect();
        accumulator.merge_batch(states, &index, rows)?;
        Ok(accumulator.evaluate(EmitTo::All)?)
    }

    /// Merges a batch of partial state (group columns + state columns) and returns the
    /// final values of the groups it touched (group columns + aggregate values).
    pub fn merge(&mut self, partial: &RecordBatch) -> Result<RecordBatch> {
        Ok(self.merge_rows(partial, true)?.expect("evaluated"))
    }

    fn merge_rows(&mut self, partial: &RecordBatch, evaluate: bool) -> Result<Option<RecordBatch>> {
        let n = partial.num_rows();
        let group_columns = &partial.columns()[..self.num_group_columns];
        // No GROUP BY: one group, with the empty key.
        let rows = (self.num_group_columns > 0).then(|| self.converter.convert_columns(group_columns)).transpose()?;
        let key_of = |i: usize| -> &[u8] { rows.as_ref().map_or(&[][..], |r| r.row(i).data()) };
        let ends: Vec<Option<i64>> =
            (0..n).map(|i| self.window_column.and_then(|w| window_end(&group_columns[w], i))).collect();
        // A window that has closed never reopens (late events are dropped before
        // this; this guards the invariant).
        let keep: Vec<bool> = ends
            .iter()
            .map(|end| !matches!((end, self.evicted_until), (Some(end), Some(until)) if *end <= until))
            .collect();
        let kept: Vec<usize> = (0..n).filter(|&i| keep[i]).collect();
        let k = kept.len();
        let take = |column: &ArrayRef| -> Result<ArrayRef> {
            Ok(if k == n { column.clone() } else { filter(column, &BooleanArray::from(keep.clone()))? })
        };
        // Rows (0..k) of groups held already, and their held state.
        let held: Vec<usize> = (0..k).filter(|&j| self.groups.contains_key(key_of(kept[j]))).collect();
        let held_states = self.gather(held.iter().map(|&j| key_of(kept[j])))?;
        let all: Vec<usize> = (0..k).collect();
        let mut merged: Vec<ArrayRef> = Vec::new();
        let mut finals: Vec<ArrayRef> = Vec::new();
        for a in 0..self.aggregates.len() {
            let range = self.state_range(a);
            let mut accumulator = self.accumulator(a)?;
            if !held.is_empty() {
                accumulator.merge_batch(&held_states[range.clone()], &held, k)?;
            }
            let new_states = partial.columns()
                [self.num_group_columns + range.start..self.num_group_columns + range.end]
                .iter()
                .map(take)
                .collect::<Result<Vec<_>>>()?;
            accumulator.merge_batch(&new_states, &all, k)?;
            let states = accumulator.state(EmitTo::All)?;
            if evaluate {
                finals.push(self.evaluate_states(a, &states)?);
            }
            merged.extend(states);
        }
        for (j, &i) in kept.iter().enumerate() {
            let state = merged
                .iter()
                .map(|c| ScalarValue::try_from_array(c, j))
                .collect::<datafusion::common::Result<Vec<_>>>()?;
            let key = key_of(i);
            match self.groups.get_mut(key) {
                Some(held) => *held = state,
                None => {
                    let key: Box<[u8]> = key.into();
                    if let Some(end) = ends[i] {
                        self.by_window_end.entry(end).or_default().push(key.clone());
                    }
                    self.groups.insert(key, state);
                }
            }
        }
        if !evaluate {
            return Ok(None);
        }
        let mut columns = group_columns.iter().map(take).collect::<Result<Vec<_>>>()?;
        columns.extend(finals);
        Ok(Some(self.final_batch(columns)?))
    }

    fn final_batch(&self, columns: Vec<ArrayRef>) -> Result<RecordBatch> {
        let columns = columns
            .into_iter()
            .zip(self.final_schema.fields())
            .map(|(c, f)| {
                // Aggregates may evaluate to a compatible but different type; the
                // schema DataFusion planned is the contract.
                if c.data_type() == f.data_type() { Ok(c) } else { cast(&c, f.data_type()) }
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(RecordBatch::try_new(self.final_schema.clone(), columns)?)
    }

    fn key_columns<'a>(&self, keys: impl Iterator<Item = &'a [u8]>) -> Result<Vec<ArrayRef>> {
        if self.num_group_columns == 0 {
            return Ok(Vec::new());
        }
        let parser = self.converter.parser();
        Ok(self.converter.convert_rows(keys.map(|k| parser.parse(k)))?)
    }

    /// Final values of the groups with these keys.
    fn evaluate_keys<'a>(&self, keys: impl Iterator<Item = &'a [u8]> + Clone) -> Result<RecordBatch> {
        let mut columns = self.key_columns(keys.clone())?;
        let states = self.gather(keys)?;
        for a in 0..self.aggregates.len() {
            columns.push(self.evaluate_states(a, &states[self.state_range(a)])?);
        }
        self.final_batch(columns)
    }

    /// Final values of every group held.
    pub fn evaluate_all(&mut self) -> Result<RecordBatch> {
        self.evaluate_keys(self.groups.keys().map(|k| k.as_ref()))
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
        let mut columns = self.key_columns(self.groups.keys().map(|k| k.as_ref()))?;
        columns.extend(self.gather(self.groups.keys().map(|k| k.as_ref()))?);
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

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

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, RecordBatch, StructArray, TimestampMicrosecondArray, UInt32Array, new_empty_array,
};
use datafusion::arrow::compute::{cast, take};
use datafusion::arrow::datatypes::{Schema, SchemaRef, TimestampMicrosecondType};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use datafusion::physical_expr::GroupsAccumulatorAdapter;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;

use crate::error::Result;
use crate::pipeline::plan::StreamingPlan;
use crate::pipeline::windows::{WindowSpec, window_struct_fields};

/// A key in arrow's row format.
type RowKey = Box<[u8]>;

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
    /// For session windows: the sessions of each key.
    sessions: Option<SessionIndex>,
}

/// What a merge did.
#[derive(Debug)]
pub struct Merged {
    /// Group columns + final values of the groups written.
    pub finals: RecordBatch,
    /// Group columns of groups merged into others (session windows only).
    pub removed: Option<RecordBatch>,
}

/// How partial rows and held groups combine: `rows[i]` goes into target
/// `row_targets[i]`, held group `held[j]` into `held_targets[j]`.
#[derive(Default)]
struct MergePlan {
    target_groups: Vec<ArrayRef>,
    target_keys: Vec<Box<[u8]>>,
    target_ends: Vec<Option<i64>>,
    rows: Vec<usize>,
    row_targets: Vec<usize>,
    held: Vec<Box<[u8]>>,
    held_targets: Vec<usize>,
    /// Held groups replaced by a target with another key.
    removed: Vec<Box<[u8]>>,
}

/// Sessions by key (the group columns other than the window), to find the ones a new
/// event overlaps.
struct SessionIndex {
    window_column: usize,
    converter: RowConverter,
    /// Key → session start → (session end, full group key).
    sessions: HashMap<RowKey, BTreeMap<i64, (i64, RowKey)>>,
    /// Full group key → (key, start), to forget a session.
    owner: HashMap<RowKey, (RowKey, i64)>,
}

impl SessionIndex {
    fn keys(&self, others: &[ArrayRef], rows: usize) -> Result<Vec<Box<[u8]>>> {
        row_keys(&self.converter, others, rows)
    }

    fn insert(&mut self, groups: &[ArrayRef], row: usize, full: &[u8]) -> Result<()> {
        let others: Vec<ArrayRef> =
            groups.iter().enumerate().filter(|(c, _)| *c != self.window_column).map(|(_, a)| a.slice(row, 1)).collect();
        let key = self.keys(&others, 1)?.remove(0);
        let windows = groups[self.window_column].as_struct();
        let start = windows.column(0).as_primitive::<TimestampMicrosecondType>().value(row);
        let end = windows.column(1).as_primitive::<TimestampMicrosecondType>().value(row);
        self.sessions.entry(key.clone()).or_default().insert(start, (end, full.into()));
        self.owner.insert(full.into(), (key, start));
        Ok(())
    }

    fn remove(&mut self, full: &[u8]) {
        let Some((key, start)) = self.owner.remove(full) else { return };
        if let Some(sessions) = self.sessions.get_mut(&key) {
            sessions.remove(&start);
            if sessions.is_empty() {
                self.sessions.remove(&key);
            }
        }
    }
}

/// Row-format keys of `columns`; with no columns, `rows` empty keys.
fn row_keys(converter: &RowConverter, columns: &[ArrayRef], rows: usize) -> Result<Vec<Box<[u8]>>> {
    if columns.is_empty() {
        return Ok(vec![Box::from(&[][..]); rows]);
    }
    let converted = converter.convert_columns(columns)?;
    Ok(converted.iter().map(|r| Box::from(r.data())).collect())
}

/// Rows `rows` of `columns` (which have `len` rows); all of them as they are.
fn take_rows(columns: &[ArrayRef], rows: &[usize], len: usize) -> Result<Vec<ArrayRef>> {
    if rows.len() == len && rows.iter().enumerate().all(|(i, &r)| i == r) {
        return Ok(columns.to_vec());
    }
    let indices = UInt32Array::from(rows.iter().map(|&r| r as u32).collect::<Vec<_>>());
    Ok(columns.iter().map(|c| take(c, &indices, None)).collect::<std::result::Result<_, _>>()?)
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
            sessions: match &plan.window {
                Some(w) if matches!(w.call.spec, WindowSpec::Session { .. }) => Some(SessionIndex {
                    window_column: w.call.group_index,
                    converter: RowConverter::new(
                        partial.fields()[..plan.num_group_columns]
                            .iter()
                            .enumerate()
                            .filter(|(c, _)| *c != w.call.group_index)
                            .map(|(_, f)| SortField::new(f.data_type().clone()))
                            .collect(),
                    )?,
                    sessions: HashMap::new(),
                    owner: HashMap::new(),
                }),
                _ => None,
            },
        })
    }

    /// Number of groups held.
    pub fn len(&self) -> usize {
        self.groups.len()
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
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

    /// Merges a batch of partial state (group columns + state columns) into the held
    /// groups. Returns the final values of the groups it wrote (group columns +
    /// aggregate values) and the group columns of groups it merged away (sessions
    /// that grew into one another), whose result rows must go.
    pub fn merge(&mut self, partial: &RecordBatch) -> Result<Merged> {
        let plan = self.merge_plan(partial)?;
        let (finals, removed) = self.apply(partial, plan, true)?;
        Ok(Merged { finals: finals.expect("evaluated"), removed })
    }

    /// Which partial rows and held groups combine into which groups.
    fn merge_plan(&self, partial: &RecordBatch) -> Result<MergePlan> {
        let n = partial.num_rows();
        let group_columns = &partial.columns()[..self.num_group_columns];
        let ends: Vec<Option<i64>> =
            (0..n).map(|i| self.window_column.and_then(|w| window_end(&group_columns[w], i))).collect();
        // A window that has closed never reopens (late events are dropped before
        // this; this guards the invariant).
        let kept: Vec<usize> = (0..n)
            .filter(|&i| !matches!((ends[i], self.evicted_until), (Some(end), Some(until)) if end <= until))
            .collect();
        if let Some(sessions) = &self.sessions {
            return self.session_plan(sessions, group_columns, &kept);
        }
        let target_groups = take_rows(group_columns, &kept, n)?;
        let target_keys = self.keys(&target_groups, kept.len())?;
        let held: Vec<Box<[u8]>> = target_keys.iter().filter(|k| self.groups.contains_key(*k)).cloned().collect();
        let held_targets = (0..kept.len()).filter(|&t| self.groups.contains_key(&target_keys[t])).collect();
        Ok(MergePlan {
            target_ends: kept.iter().map(|&i| ends[i]).collect(),
            row_targets: (0..kept.len()).collect(),
            rows: kept,
            target_groups,
            target_keys,
            held,
            held_targets,
            removed: Vec::new(),
        })
    }

    /// Session windows: each partial row is a session `[t, t + gap)` of its key. Rows
    /// and held sessions of a key that overlap become one session spanning them all.
    fn session_plan(&self, sessions: &SessionIndex, group_columns: &[ArrayRef], kept: &[usize]) -> Result<MergePlan> {
        let w = sessions.window_column;
        let others: Vec<ArrayRef> =
            group_columns.iter().enumerate().filter(|(c, _)| *c != w).map(|(_, a)| a.clone()).collect();
        let other_keys = sessions.keys(&others, group_columns[w].len())?;
        let windows = group_columns[w].as_struct();
        let starts = windows.column(0).as_primitive::<TimestampMicrosecondType>();
        let ends = windows.column(1).as_primitive::<TimestampMicrosecondType>();
        // Rows by key, keys in order of first appearance (deterministic output).
        let mut by_key: Vec<(&[u8], Vec<usize>)> = Vec::new();
        let mut position: HashMap<&[u8], usize> = HashMap::new();
        for &i in kept {
            let key = other_keys[i].as_ref();
            let at = *position.entry(key).or_insert_with(|| {
                by_key.push((key, Vec::new()));
                by_key.len() - 1
            });
            by_key[at].1.push(i);
        }
        enum Member<'a> {
            Row(usize),
            Held(&'a [u8]),
        }
        let mut plan = MergePlan::default();
        let (mut representative, mut intervals) = (Vec::new(), Vec::new());
        for (key, rows) in &by_key {
            let mut members: Vec<(i64, i64, Member)> =
                rows.iter().map(|&i| (starts.value(i), ends.value(i), Member::Row(i))).collect();
            if let Some(held) = sessions.sessions.get(*key) {
                members.extend(held.iter().map(|(&start, (end, full))| (start, *end, Member::Held(full.as_ref()))));
            }
            members.sort_by_key(|m| (m.0, m.1));
            let mut current: Option<(i64, i64, Vec<Member>)> = None;
            let mut close = |(start, end, group): (i64, i64, Vec<Member>), plan: &mut MergePlan| {
                let Some(first_row) = group.iter().find_map(|m| if let Member::Row(i) = m { Some(*i) } else { None })
                else {
                    return; // a held session this batch does not touch
                };
                let t = intervals.len();
                intervals.push((start, end));
                representative.push(first_row);
                for member in group {
                    match member {
                        Member::Row(i) => {
                            plan.rows.push(i);
                            plan.row_targets.push(t);
                        }
                        Member::Held(full) => {
                            plan.held.push(full.into());
                            plan.held_targets.push(t);
                        }
                    }
                }
            };
            for (start, end, member) in members {
                current = match current {
                    Some((s, e, mut group)) if start < e => {
                        group.push(member);
                        Some((s, e.max(end), group))
                    }
                    Some(done) => {
                        close(done, &mut plan);
                        Some((start, end, vec![member]))
                    }
                    None => Some((start, end, vec![member])),
                };
            }
            if let Some(done) = current {
                close(done, &mut plan);
            }
        }
        let n = group_columns[w].len();
        let mut target_groups = Vec::with_capacity(group_columns.len());
        for (c, column) in group_columns.iter().enumerate() {
            target_groups.push(if c == w {
                let (s, e): (Vec<i64>, Vec<i64>) = intervals.iter().copied().unzip();
                Arc::new(StructArray::try_new(
                    window_struct_fields(),
                    vec![
                        Arc::new(TimestampMicrosecondArray::from(s)) as ArrayRef,
                        Arc::new(TimestampMicrosecondArray::from(e)),
                    ],
                    None,
                )?) as ArrayRef
            } else {
                take_rows(std::slice::from_ref(column), &representative, n + 1)?.remove(0)
            });
        }
        plan.target_keys = self.keys(&target_groups, intervals.len())?;
        plan.target_ends = intervals.iter().map(|(_, e)| Some(*e)).collect();
        let new_keys: std::collections::HashSet<&[u8]> = plan.target_keys.iter().map(|k| k.as_ref()).collect();
        plan.removed = plan.held.iter().filter(|k| !new_keys.contains(k.as_ref())).cloned().collect();
        plan.target_groups = target_groups;
        Ok(plan)
    }

    /// The row-format keys of `columns` (`rows` rows; no columns: the empty key).
    fn keys(&self, columns: &[ArrayRef], rows: usize) -> Result<Vec<Box<[u8]>>> {
        row_keys(&self.converter, columns, rows)
    }

    /// Carries out a merge plan; evaluates the results with `evaluate`.
    fn apply(
        &mut self,
        partial: &RecordBatch,
        plan: MergePlan,
        evaluate: bool,
    ) -> Result<(Option<RecordBatch>, Option<RecordBatch>)> {
        let targets = plan.target_keys.len();
        let held_states = self.gather(plan.held.iter().map(|k| k.as_ref()))?;
        let mut merged: Vec<ArrayRef> = Vec::new();
        let mut finals: Vec<ArrayRef> = Vec::new();
        for a in 0..self.aggregates.len() {
            let range = self.state_range(a);
            let mut accumulator = self.accumulator(a)?;
            if !plan.held.is_empty() {
                accumulator.merge_batch(&held_states[range.clone()], &plan.held_targets, targets)?;
            }
            let columns = &partial.columns()[self.num_group_columns + range.start..self.num_group_columns + range.end];
            let new_states = take_rows(columns, &plan.rows, partial.num_rows())?;
            accumulator.merge_batch(&new_states, &plan.row_targets, targets)?;
            let states = accumulator.state(EmitTo::All)?;
            if evaluate {
                finals.push(self.evaluate_states(a, &states)?);
            }
            merged.extend(states);
        }
        let removed = match plan.removed.is_empty() {
            true => None,
            false => Some(self.key_columns(plan.removed.iter().map(|k| k.as_ref()))?),
        };
        for key in &plan.removed {
            self.forget(key);
        }
        for (t, key) in plan.target_keys.into_iter().enumerate() {
            let state = merged
                .iter()
                .map(|c| ScalarValue::try_from_array(c, t))
                .collect::<datafusion::common::Result<Vec<_>>>()?;
            if let Some(held) = self.groups.get_mut(&key) {
                *held = state;
                continue;
            }
            if let Some(end) = plan.target_ends[t] {
                self.by_window_end.entry(end).or_default().push(key.clone());
            }
            if let Some(sessions) = &mut self.sessions {
                sessions.insert(&plan.target_groups, t, &key)?;
            }
            self.groups.insert(key, state);
        }
        let removed = match removed {
            Some(columns) => Some(RecordBatch::try_new(self.group_schema(), columns)?),
            None => None,
        };
        if !evaluate {
            return Ok((None, removed));
        }
        let mut columns = plan.target_groups;
        columns.extend(finals);
        Ok((Some(self.final_batch(columns)?), removed))
    }

    /// Drops a group from the state and its indexes.
    fn forget(&mut self, key: &[u8]) {
        self.groups.remove(key);
        if let Some(sessions) = &mut self.sessions {
            sessions.remove(key);
        }
    }

    fn group_schema(&self) -> SchemaRef {
        Arc::new(Schema::new(self.final_schema.fields()[..self.num_group_columns].to_vec()))
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
        // Keys of sessions merged away since are gone already.
        let keys: Vec<Box<[u8]>> = closed.into_values().flatten().filter(|k| self.groups.contains_key(k)).collect();
        let finals = if evaluate && !keys.is_empty() {
            Some(self.evaluate_keys(keys.iter().map(|k| k.as_ref()))?)
        } else {
            None
        };
        for key in &keys {
            self.forget(key);
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
        let plan = self.merge_plan(batch)?;
        self.apply(batch, plan, false)?;
        self.evicted_until = evicted_until;
        Ok(())
    }
}

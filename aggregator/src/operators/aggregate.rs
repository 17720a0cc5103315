//! Streaming grouped aggregation, windowed or not, with columnar state.
//!
//! Each micro-batch arrives as the aggregation's *input rows* (what DataFusion's
//! `AggregateExec` would read). The operator evaluates the GROUP BY and the aggregate
//! arguments with DataFusion's physical expressions, finds each row's group in a
//! [`GroupIndex`], and updates only the groups the batch touches:
//!
//! * **Columnar aggregates** (every state column fixed-width or small: COUNT, SUM,
//!   AVG, MIN, MAX, VAR, STDDEV, BOOL_AND …) keep their state as columns indexed by
//!   group id ([`StateColumn`]). Per batch, the touched groups' state is read into a
//!   DataFusion `GroupsAccumulator` sized to just those groups, merged with the
//!   batch's rows (`merge_batch` + `update_batch`, as DataFusion combines partial
//!   aggregates), and written back; their final values come from the same state.
//! * **In-place aggregates** (a list or binary state: COUNT DISTINCT's set,
//!   approx_count_distinct's sketch, ARRAY_AGG, MEDIAN …) keep one DataFusion
//!   `Accumulator` per group and update it in place with the group's rows: nothing
//!   is copied per batch.
//!
//! Either way the work per batch is the batch plus the groups it touches, and every
//! built-in aggregate computes exactly what the batch query computes.
//!
//! Over a **changelog** (a second stage reading the first one's changes: rows inserted
//! and retracted, [`Aggregate::update_changelog`]) every group counts its rows and
//! leaves when it has none; COUNT, SUM and AVG keep a DataFusion *sliding* accumulator
//! per group and retract by negation (`retract_batch`, as window frames do), and every
//! other aggregate keeps the counted multiset of its argument rows and is evaluated
//! afresh from it for the groups a batch touches.
//!
//! Groups of a window are indexed by the window's end: when the watermark passes it
//! they leave the state in one step (and, in append mode, go to the sink). Session
//! windows start as one session `[t, t + gap)` per event and merge with the held
//! sessions of their key they overlap. The groups a batch changes and the groups it
//! removes are remembered for the next (incremental) checkpoint.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, RecordBatchOptions, UInt32Array};
use datafusion::arrow::compute::{cast, concat, filter, take};
use datafusion::arrow::datatypes::{Field, FieldRef, Schema, SchemaRef, TimestampMicrosecondType};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::ScalarValue;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Accumulator, EmitTo, GroupsAccumulator};
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::{GroupsAccumulatorAdapter, PhysicalExpr};
use datafusion::physical_plan::aggregates::group_values::new_group_values;
use datafusion::physical_plan::aggregates::order::GroupOrdering;
use datafusion::physical_plan::aggregates::{AggregateMode, PhysicalGroupBy, aggregate_expressions, evaluate_group_by};

use crate::error::Result;
use crate::operators::changelog::Changelog;
use crate::operators::exec::{Closing, OperatorKind, OperatorStats, StreamingOperator, Tick};
use crate::operators::shards::Shards;
use crate::pipeline::windows::{HopPane, WindowSpec, window_array, window_struct_fields};
use crate::state::columns::{StateColumn, as_type};
use crate::state::group_index::{GroupId, GroupIndex, KeyRows};

/// What the planner hands the operator: DataFusion's planned aggregation.
#[derive(Clone)]
pub struct AggregateSpec {
    pub group_by: PhysicalGroupBy,
    pub aggregates: Vec<Arc<AggregateFunctionExpr>>,
    pub filters: Vec<Option<Arc<dyn PhysicalExpr>>>,
    /// Group columns + final values, as DataFusion planned them.
    pub final_schema: SchemaRef,
    /// The window among the group columns, if any.
    pub window: Option<(usize, WindowSpec)>,
    pub input: InputKind,
    /// The schema of the rows the aggregation reads.
    pub input_schema: SchemaRef,
    /// Whether [`Aggregate::update`] also returns the touched groups' values from
    /// before the batch (for a stage that consumes this one's changes).
    pub emit_previous: bool,
}

/// What the aggregation reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    /// Rows that are only ever added (events): state is merged, never retracted.
    InsertOnly,
    /// A changelog (another aggregation's changes): rows are added and retracted.
    Changelog,
}

pub struct Aggregate {
    group_by: PhysicalGroupBy,
    emit_previous: bool,
    /// Over a changelog: each group's number of rows (a group with none leaves).
    row_counts: Option<Vec<i64>>,
    slots: Vec<Slot>,
    index: GroupIndex,
    num_group_columns: usize,
    final_schema: SchemaRef,
    checkpoint_schema: SchemaRef,
    window: Option<WindowIndex>,
    sessions: Option<SessionIndex>,
    hopping: Option<Hopping>,
    changes: Changes,
    /// Per id: its position among the targets of the batch running (scratch).
    target_of: Vec<u32>,
    /// Input rows read so far (the work done, for tests and metrics).
    rows_read: u64,
}

/// One aggregate function and its state.
struct Slot {
    expr: Arc<AggregateFunctionExpr>,
    /// Arguments (and ORDER BY values, for order-sensitive aggregates).
    args: Vec<Arc<dyn PhysicalExpr>>,
    filter: Option<Arc<dyn PhysicalExpr>>,
    state_fields: Vec<FieldRef>,
    store: SlotStore,
}

enum SlotStore {
    Columnar(Vec<StateColumn>),
    InPlace(Vec<Option<Box<dyn Accumulator>>>),
    /// Over a changelog: COUNT, SUM and AVG keep a sliding accumulator per group and
    /// retract by negation (DataFusion's `retract_batch`, as window frames do).
    Sliding(Vec<Option<Box<dyn Accumulator>>>),
    /// Over a changelog: every other aggregate keeps the counted multiset of its
    /// argument rows per group, and is evaluated afresh from it for the groups a batch
    /// touches (exact for every aggregate; the cost follows the group's distinct values).
    Multiset {
        converter: RowConverter,
        sets: Vec<Option<HashMap<Box<[u8]>, i64>>>,
    },
}

/// Window ends → groups, for eviction.
struct WindowIndex {
    column: usize,
    by_end: BTreeMap<i64, Vec<GroupId>>,
    /// Windows ending at or before this have been evicted and must not come back.
    evicted_until: Option<i64>,
}

/// Sessions by key (the group columns other than the window).
struct SessionIndex {
    index: GroupIndex,
    /// Key id (in `index`) → session start → (end, group id).
    sessions: HashMap<GroupId, BTreeMap<i64, (i64, GroupId)>>,
    /// Group id → (key id, start), to forget a session.
    owner: HashMap<GroupId, (GroupId, i64)>,
}

/// Hopping windows: the window group column holds each row's pane (`HopPane`), and
/// the aggregation spreads it over the windows covering the pane.
struct Hopping {
    column: usize,
    size: i64,
    slide: i64,
    /// With every aggregate's state in columns: the columns of a pane (keys, pane
    /// start, first window end), to aggregate a batch per pane before spreading it.
    panes: Option<SchemaRef>,
}

/// The group columns and each aggregate's arguments (and FILTER) of a batch's rows.
type Evaluated = (Vec<ArrayRef>, Vec<(Vec<ArrayRef>, Option<ArrayRef>)>);

/// What changed since the last checkpoint.
#[derive(Default)]
struct Changes {
    dirty: Vec<bool>,
    dirty_ids: Vec<GroupId>,
    removed: Vec<Box<[u8]>>,
}

/// What a batch did to the result.
#[derive(Debug)]
pub struct Merged {
    /// Group columns + final values of the groups written.
    pub finals: RecordBatch,
    /// Group columns of groups merged into others (session windows only).
    pub removed: Option<RecordBatch>,
    /// With `emit_previous`: group columns + final values, before the batch, of the
    /// groups it wrote or merged away that existed before it.
    pub previous: Option<RecordBatch>,
}

/// What a batch of changes did to an aggregation over a changelog.
#[derive(Debug)]
pub struct Changed {
    /// Group columns + final values of the touched groups that have rows.
    pub finals: RecordBatch,
    /// Group columns of the touched groups left without rows.
    pub gone: RecordBatch,
    /// With `emit_previous`: group columns + final values, before the batch, of the
    /// touched groups that existed before it (gone ones included).
    pub previous: Option<RecordBatch>,
}

impl Changed {
    /// The changes of the aggregation's output: the touched groups' values from before
    /// the batch retracted, their values now inserted (needs `emit_previous`).
    pub fn changelog(&self) -> Result<Changelog> {
        let previous = self.previous.as_ref().ok_or_else(|| {
            crate::error::Error::internal("the changes of an aggregation that keeps no previous values".to_string())
        })?;
        Changelog::new(&self.finals, previous)
    }
}

/// The groups one batch writes: `rows[i]` goes into target `row_targets[i]`, held
/// group `held[j]` into `held_targets[j]`.
#[derive(Default)]
struct Targets {
    ids: Vec<GroupId>,
    columns: Vec<ArrayRef>,
    rows: Vec<u32>,
    row_targets: Vec<usize>,
    held: Vec<GroupId>,
    held_targets: Vec<usize>,
    /// Held groups merged into a target of another id: they leave.
    removed: Vec<GroupId>,
}

const NO_TARGET: u32 = u32::MAX;

/// The targets of a batch numbered for a `GroupsAccumulator`, held groups first.
///
/// DataFusion's accumulators take a batch without nulls or FILTER as giving a value to
/// every group below the `total_num_groups` passed (`NullState`'s shortcut). Merging
/// the held groups' states with the batch's total would mark the batch's new groups as
/// having a value before their rows are read, and a new group whose rows a FILTER
/// all excludes would then sum to 0, not NULL. So the held groups are numbered
/// `0..held` and merged with that total; every other group gets rows after.
struct HeldFirst<'a> {
    /// Target ids, renumbered.
    ids: std::borrow::Cow<'a, [GroupId]>,
    held: usize,
    held_targets: std::borrow::Cow<'a, [usize]>,
    row_targets: std::borrow::Cow<'a, [usize]>,
    /// Per target (in the targets' order), its new number; `None`: unchanged.
    new_number: Option<UInt32Array>,
}

impl<'a> HeldFirst<'a> {
    fn new(targets: &'a Targets) -> Self {
        let t = targets.ids.len();
        let mut is_held = vec![false; t];
        for &target in &targets.held_targets {
            is_held[target] = true;
        }
        let held = is_held.iter().filter(|h| **h).count();
        if is_held[..held].iter().all(|h| *h) {
            return HeldFirst {
                ids: targets.ids.as_slice().into(),
                held,
                held_targets: targets.held_targets.as_slice().into(),
                row_targets: targets.row_targets.as_slice().into(),
                new_number: None,
            };
        }
        let (mut next_held, mut next_new) = (0, held);
        let new_number: Vec<usize> = is_held
            .iter()
            .map(|&h| {
                let counter = if h { &mut next_held } else { &mut next_new };
                *counter += 1;
                *counter - 1
            })
            .collect();
        let mut ids = vec![0; t];
        for (target, &number) in new_number.iter().enumerate() {
            ids[number] = targets.ids[target];
        }
        HeldFirst {
            ids: ids.into(),
            held,
            held_targets: targets.held_targets.iter().map(|&t| new_number[t]).collect::<Vec<_>>().into(),
            row_targets: targets.row_targets.iter().map(|&t| new_number[t]).collect::<Vec<_>>().into(),
            new_number: Some(new_number.iter().map(|&n| n as u32).collect()),
        }
    }

    /// One value per renumbered target, back in the targets' order.
    fn in_target_order(&self, values: ArrayRef) -> Result<ArrayRef> {
        Ok(match &self.new_number {
            None => values,
            Some(numbers) => take(&values, numbers, None)?,
        })
    }
}

/// What the rows [`Aggregate::apply`] reads are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rows {
    /// Input rows: each aggregate's arguments and FILTER.
    Input,
    /// Partial aggregates (hopping windows' panes): each aggregate's state columns.
    PartialStates,
}

/// An aggregation over a changelog is not saved: it is rebuilt from the result of the
/// stage it reads (see `pipeline::emit`).
fn not_saved() -> crate::error::Error {
    crate::error::Error::internal("an aggregation over a changelog is rebuilt from its input, not saved".to_string())
}

impl Aggregate {
    pub fn new(spec: AggregateSpec) -> Result<Self> {
        let AggregateSpec { group_by, aggregates, filters, final_schema, window, input, input_schema, emit_previous } =
            spec;
        let num_group_columns = final_schema.fields().len() - aggregates.len();
        let group_fields = &final_schema.fields()[..num_group_columns];
        let args = aggregate_expressions(&aggregates, &AggregateMode::Partial, 0)?;
        let mut slots = Vec::new();
        let mut checkpoint_fields: Vec<Field> =
            group_fields.iter().map(|f| f.as_ref().clone().with_nullable(true)).collect();
        for ((expr, args), filter) in aggregates.into_iter().zip(args).zip(filters) {
            let state_fields = expr.state_fields()?;
            checkpoint_fields.extend(state_fields.iter().map(|f| f.as_ref().clone().with_nullable(true)));
            let retractable = ["count", "sum", "avg"].contains(&expr.fun().name()) && !expr.is_distinct();
            let store = match input {
                InputKind::Changelog if retractable => SlotStore::Sliding(Vec::new()),
                InputKind::Changelog => SlotStore::Multiset {
                    converter: RowConverter::new(
                        args.iter()
                            .map(|a| Ok(SortField::new(a.data_type(&input_schema)?)))
                            .collect::<Result<Vec<_>>>()?,
                    )?,
                    sets: Vec::new(),
                },
                InputKind::InsertOnly if state_fields.iter().all(|f| small_state(f.data_type())) => {
                    SlotStore::Columnar(state_fields.iter().map(|f| StateColumn::new(f.data_type())).collect())
                }
                InputKind::InsertOnly => SlotStore::InPlace(Vec::new()),
            };
            slots.push(Slot { expr, args, filter, state_fields, store });
        }
        // Sessions merge where events arrive; over a changelog they are values.
        let sessions = match (window, input) {
            (Some((column, WindowSpec::Session { .. })), InputKind::InsertOnly) => {
                let others: Vec<FieldRef> =
                    group_fields.iter().enumerate().filter(|(c, _)| *c != column).map(|(_, f)| f.clone()).collect();
                Some(SessionIndex { index: GroupIndex::new(&others)?, sessions: HashMap::new(), owner: HashMap::new() })
            }
            _ => None,
        };
        let hopping = match (window, input) {
            (Some((column, WindowSpec::Hopping { size, slide })), InputKind::InsertOnly) => {
                let columnar = slots.iter().all(|s| matches!(s.store, SlotStore::Columnar(_)));
                let panes = match columnar {
                    true => {
                        let mut fields: Vec<FieldRef> = group_fields
                            .iter()
                            .enumerate()
                            .filter(|(c, _)| *c != column)
                            .map(|(_, f)| f.clone())
                            .collect();
                        fields.extend(window_struct_fields().iter().cloned());
                        Some(Arc::new(Schema::new(fields)))
                    }
                    false => None,
                };
                Some(Hopping { column, size, slide, panes })
            }
            _ => None,
        };
        Ok(Aggregate {
            group_by,
            emit_previous,
            row_counts: (input == InputKind::Changelog).then(Vec::new),
            slots,
            index: GroupIndex::new(group_fields)?,
            num_group_columns,
            final_schema,
            checkpoint_schema: Arc::new(Schema::new(checkpoint_fields)),
            window: window.map(|(column, _)| WindowIndex { column, by_end: BTreeMap::new(), evicted_until: None }),
            sessions,
            hopping,
            changes: Changes::default(),
            target_of: Vec::new(),
            rows_read: 0,
        })
    }

    /// Whether [`Self::update`] also returns the touched groups' values from before the batch.
    pub fn set_emit_previous(&mut self, emit_previous: bool) {
        self.emit_previous = emit_previous;
    }

    /// Number of groups held.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Input rows read so far (a changelog's inserted and retracted rows alike).
    pub fn rows_read(&self) -> u64 {
        self.rows_read
    }

    pub fn evicted_until(&self) -> Option<i64> {
        self.window.as_ref().and_then(|w| w.evicted_until)
    }

    /// Bytes the state holds (index and state columns; in-place accumulators as they
    /// report themselves).
    pub fn size(&self) -> usize {
        let slots: usize = self
            .slots
            .iter()
            .map(|s| match &s.store {
                SlotStore::Columnar(columns) => columns.iter().map(|c| c.size()).sum(),
                SlotStore::InPlace(accumulators) | SlotStore::Sliding(accumulators) => {
                    accumulators.capacity() * size_of::<Option<Box<dyn Accumulator>>>()
                        + accumulators.iter().flatten().map(|a| a.size()).sum::<usize>()
                }
                SlotStore::Multiset { sets, .. } => {
                    sets.capacity() * size_of::<Option<HashMap<Box<[u8]>, i64>>>()
                        + sets.iter().flatten().flat_map(|set| set.keys()).map(|k| k.len() + 40).sum::<usize>()
                }
            })
            .sum();
        self.index.size() + slots + self.changes.dirty.capacity() + self.target_of.capacity() * 4
    }

    /// The schema of saved state: group columns + every aggregate's state columns.
    pub fn checkpoint_schema(&self) -> SchemaRef {
        self.checkpoint_schema.clone()
    }

    /// Aggregates a batch of input rows into the groups it touches; returns their
    /// final values (and, for sessions, the groups merged away).
    pub fn update(&mut self, input: &RecordBatch) -> Result<Merged> {
        self.update_grouped(input, None)
    }

    /// [`Self::update`], with `input`'s group columns already computed (`Shards`
    /// routes rows by them), if they are.
    pub fn update_grouped(&mut self, input: &RecordBatch, group_columns: Option<Vec<ArrayRef>>) -> Result<Merged> {
        let (group_columns, arguments, m) = self.evaluate_input(input, group_columns)?;
        // Hopping windows: the rows (or the batch's per-pane partial states) once per window.
        let ((group_columns, arguments), m, rows) = match self.hopping.is_some() {
            true => self.spread_panes(group_columns, arguments, m)?,
            false => ((group_columns, arguments), m, Rows::Input),
        };
        let targets = match &self.sessions {
            Some(_) => self.session_targets(&group_columns, m)?,
            None => self.plain_targets(&group_columns, m)?,
        };
        // Before the batch: what a later stage retracts (merged-away sessions too).
        let previous = match self.emit_previous {
            true => Some(self.evaluate_ids(&targets.held)?),
            false => None,
        };
        let finals = self.apply(&targets, &arguments, m, rows)?;
        let removed = match targets.removed.is_empty() {
            true => None,
            false => Some(self.group_batch(self.index.columns(&targets.removed)?, targets.removed.len())?),
        };
        for &id in &targets.removed {
            self.forget(id);
        }
        let mut columns = targets.columns;
        columns.extend(finals);
        let finals = self.final_batch(columns)?;
        self.compact()?;
        Ok(Merged { finals, removed, previous })
    }

    /// Aggregates a changelog (an aggregation over another one's result): rows are
    /// added to their groups or taken out, as their weights say. Returns the touched
    /// groups that still have rows (group columns + final values) and the group columns
    /// of those left with none, which leave.
    pub fn update_changelog(&mut self, changes: &Changelog) -> Result<Changed> {
        let input = changes.rows();
        let (group_columns, arguments, m) = self.evaluate_input(&input, None)?;
        // GROUPING SETS: the rows once per set, with their weights.
        let sets = m / input.num_rows().max(1);
        let weights: Vec<i64> = (0..sets).flat_map(|_| changes.weights().iter().copied()).collect();
        let targets = self.plain_targets(&group_columns, m)?;
        let previous = match self.emit_previous {
            true => Some(self.evaluate_ids(&targets.held)?),
            false => None,
        };
        let counts = self.row_counts.as_mut().expect("an aggregation over a changelog counts rows");
        counts.resize(self.index.id_bound(), 0);
        for (&row, &target) in targets.rows.iter().zip(&targets.row_targets) {
            counts[targets.ids[target] as usize] += weights[row as usize];
        }
        let present: Vec<usize> = (0..targets.ids.len())
            .filter(|&t| self.num_group_columns == 0 || counts[targets.ids[t] as usize] > 0)
            .collect();
        let finals = self.apply_changelog(&targets, &arguments, &weights, &present)?;
        let gone: Vec<GroupId> =
            (0..targets.ids.len()).filter(|t| !present.contains(t)).map(|t| targets.ids[t]).collect();
        let gone_columns = self.group_batch(self.index.columns(&gone)?, gone.len())?;
        for &id in &gone {
            self.forget(id);
        }
        let mut columns = take_all(&targets.columns, &present.iter().map(|&t| t as u32).collect::<Vec<_>>())?;
        columns.extend(finals);
        let finals = self.final_batch(columns)?;
        self.compact()?;
        Ok(Changed { finals, gone: gone_columns, previous })
    }

    /// The group columns and, per aggregate, the arguments (and FILTER) of `input`'s
    /// rows; and the number of rows they make (GROUPING SETS: one per set and row).
    #[allow(clippy::type_complexity)]
    fn evaluate_input(
        &mut self,
        input: &RecordBatch,
        group_columns: Option<Vec<ArrayRef>>,
    ) -> Result<(Vec<ArrayRef>, Vec<(Vec<ArrayRef>, Option<ArrayRef>)>, usize)> {
        let n = input.num_rows();
        let sets = match group_columns {
            Some(columns) => vec![columns],
            None => evaluate_group_by(&self.group_by, input)?,
        };
        // GROUPING SETS: each set's rows in turn, the arguments repeated.
        let (group_columns, repeat) = match sets.len() {
            // No GROUP BY: no group columns.
            0 => (Vec::new(), None),
            1 => (sets.into_iter().next().expect("one set"), None),
            k => {
                let columns = (0..sets[0].len())
                    .map(|c| concat(&sets.iter().map(|s| s[c].as_ref()).collect::<Vec<_>>()))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                let rows = UInt32Array::from_iter_values((0..k).flat_map(|_| 0..n as u32));
                (columns, Some(rows))
            }
        };
        let m = group_columns.first().map_or(n, |c| c.len());
        self.rows_read += n as u64;
        let mut arguments = Vec::with_capacity(self.slots.len());
        for slot in &self.slots {
            let mut args = slot
                .args
                .iter()
                .map(|e| e.evaluate(input)?.into_array(n))
                .collect::<datafusion::common::Result<Vec<_>>>()?;
            let mut filter = match &slot.filter {
                Some(f) => Some(f.evaluate(input)?.into_array(n)?),
                None => None,
            };
            if let Some(rows) = &repeat {
                args = args.iter().map(|a| take(a, rows, None)).collect::<std::result::Result<_, _>>()?;
                filter = filter.map(|f| take(&f, rows, None)).transpose()?;
            }
            arguments.push((args, filter));
        }
        Ok((group_columns, arguments, m))
    }

    /// Hopping windows: each row's group columns name its pane, not its window. Spreads
    /// the rows over the windows covering their panes. With every aggregate's state in
    /// columns the batch is aggregated per pane first, and what is spread is each
    /// pane's partial state (merged into the windows by [`Self::apply`]): the work per
    /// window is per pane the batch touches, not per event.
    fn spread_panes(
        &self,
        group_columns: Vec<ArrayRef>,
        arguments: Vec<(Vec<ArrayRef>, Option<ArrayRef>)>,
        m: usize,
    ) -> Result<(Evaluated, usize, Rows)> {
        let hopping = self.hopping.as_ref().expect("checked by the caller");
        let w = hopping.column;
        // A row without a pane (no time, or every window closed for it) counts nowhere.
        let (group_columns, arguments, m) = match group_columns[w].logical_nulls() {
            Some(nulls) if nulls.null_count() > 0 => {
                let valid = BooleanArray::new(nulls.into_inner(), None);
                let keep = |a: &ArrayRef| filter(a, &valid);
                let columns = group_columns.iter().map(keep).collect::<std::result::Result<Vec<_>, _>>()?;
                let arguments = map_arguments(&arguments, keep)?;
                let m = valid.true_count();
                (columns, arguments, m)
            }
            _ => (group_columns, arguments, m),
        };
        let keys = |columns: &[ArrayRef]| -> Vec<ArrayRef> {
            columns.iter().enumerate().filter(|(c, _)| *c != w).map(|(_, a)| a.clone()).collect()
        };
        let panes = group_columns[w].as_struct();
        let (mut key_columns, mut starts, mut ends) =
            (keys(&group_columns), panes.column(0).clone(), panes.column(1).clone());
        let (arguments, rows) = match &hopping.panes {
            Some(schema) => {
                let mut index = new_group_values(schema.clone(), &GroupOrdering::None)?;
                let mut columns = key_columns.clone();
                columns.extend([starts.clone(), ends.clone()]);
                let mut groups = Vec::with_capacity(m);
                index.intern(&columns, &mut groups)?;
                let n = index.len();
                let mut states = Vec::with_capacity(self.slots.len());
                for (slot, (args, filter)) in self.slots.iter().zip(&arguments) {
                    let mut accumulator = groups_accumulator(&slot.expr)?;
                    accumulator.update_batch(args, &groups, filter.as_ref().map(|f| f.as_boolean()), n)?;
                    states.push((accumulator.state(EmitTo::All)?, None));
                }
                let mut values = index.emit(EmitTo::All)?;
                ends = values.pop().expect("the first window end");
                starts = values.pop().expect("the pane start");
                key_columns = values;
                (states, Rows::PartialStates)
            }
            None => (arguments, Rows::Input),
        };
        let (starts, ends) =
            (starts.as_primitive::<TimestampMicrosecondType>(), ends.as_primitive::<TimestampMicrosecondType>());
        let (size, slide) = (hopping.size, hopping.slide);
        let (mut from, mut window_starts) = (Vec::new(), Vec::new());
        for row in 0..starts.len() {
            for start in HopPane::windows(starts.value(row), ends.value(row), size, slide) {
                from.push(row as u32);
                window_starts.push(start);
            }
        }
        let from = UInt32Array::from(from);
        let spread = |a: &ArrayRef| take(a, &from, None);
        let window_ends: Vec<i64> = window_starts.iter().map(|s| s + size).collect();
        let windows: ArrayRef = Arc::new(window_array(window_starts, window_ends, None)?);
        let mut key_columns = key_columns.iter().map(spread);
        let mut columns = Vec::with_capacity(self.num_group_columns);
        for c in 0..self.num_group_columns {
            columns.push(match c == w {
                true => windows.clone(),
                false => key_columns.next().expect("a key column")?,
            });
        }
        let arguments = map_arguments(&arguments, spread)?;
        Ok(((columns, arguments), from.len(), rows))
    }

    /// Rows go into the group of their key.
    fn plain_targets(&mut self, group_columns: &[ArrayRef], m: usize) -> Result<Targets> {
        let keys = self.index.rows(group_columns, m)?;
        let ends = self.window_ends(group_columns, m);
        let evicted_until = self.evicted_until();
        let mut targets = Targets::default();
        let mut first_rows = Vec::new();
        for (row, &end) in ends.iter().enumerate() {
            // A window that has closed never reopens (late events are dropped before
            // this; this guards the invariant).
            if let (Some(end), Some(until)) = (end, evicted_until)
                && end <= until
            {
                continue;
            }
            let (id, added) = self.index.intern(keys.get(row));
            if self.target_of.len() <= id as usize {
                self.target_of.resize(self.index.id_bound(), NO_TARGET);
            }
            let mut t = self.target_of[id as usize];
            if t == NO_TARGET {
                t = targets.ids.len() as u32;
                self.target_of[id as usize] = t;
                targets.ids.push(id);
                first_rows.push(row as u32);
                if added {
                    if let (Some(window), Some(end)) = (&mut self.window, ends[row]) {
                        window.by_end.entry(end).or_default().push(id);
                    }
                } else {
                    targets.held.push(id);
                    targets.held_targets.push(t as usize);
                }
            }
            targets.rows.push(row as u32);
            targets.row_targets.push(t as usize);
        }
        for &id in &targets.ids {
            self.target_of[id as usize] = NO_TARGET;
        }
        // Without GROUP BY every batch writes the one group, even with no rows (as
        // DataFusion gives COUNT(*) = 0 over nothing).
        if self.num_group_columns == 0 && targets.ids.is_empty() {
            let (id, added) = self.index.intern(&[]);
            targets.ids.push(id);
            if !added {
                targets.held.push(id);
                targets.held_targets.push(0);
            }
        }
        targets.columns = take_all(group_columns, &first_rows)?;
        Ok(targets)
    }

    fn window_ends(&self, group_columns: &[ArrayRef], m: usize) -> Vec<Option<i64>> {
        match &self.window {
            // The `end` column looked up once, not by name for every row as `window_end` does.
            Some(w) => {
                let windows = &group_columns[w.column];
                let ends = windows.as_struct_opt().and_then(|s| s.column_by_name("end"));
                match ends.and_then(|e| e.as_primitive_opt::<TimestampMicrosecondType>()) {
                    Some(ends) => (0..m)
                        .map(|row| (windows.is_valid(row) && ends.is_valid(row)).then(|| ends.value(row)))
                        .collect(),
                    None => vec![None; m],
                }
            }
            None => vec![None; m],
        }
    }

    /// Session windows: each row is a session `[t, t + gap)` of its key. Rows and held
    /// sessions of a key that overlap become one session spanning them all.
    fn session_targets(&mut self, group_columns: &[ArrayRef], m: usize) -> Result<Targets> {
        let w = self.window.as_ref().expect("sessions are windows").column;
        let evicted_until = self.evicted_until();
        let sessions = self.sessions.as_mut().expect("checked by the caller");
        let others: Vec<ArrayRef> =
            group_columns.iter().enumerate().filter(|(c, _)| *c != w).map(|(_, a)| a.clone()).collect();
        let other_keys = sessions.index.rows(&others, m)?;
        let windows = group_columns[w].as_struct();
        let starts = windows.column(0).as_primitive::<TimestampMicrosecondType>();
        let ends = windows.column(1).as_primitive::<TimestampMicrosecondType>();
        // Rows by key, keys in order of first appearance (deterministic output).
        let mut by_key: Vec<(GroupId, Vec<usize>)> = Vec::new();
        let mut position: HashMap<GroupId, usize> = HashMap::new();
        for row in 0..m {
            if windows.is_null(row) || evicted_until.is_some_and(|until| ends.value(row) <= until) {
                continue;
            }
            let (key, _) = sessions.index.intern(other_keys.get(row));
            let at = *position.entry(key).or_insert_with(|| {
                by_key.push((key, Vec::new()));
                by_key.len() - 1
            });
            by_key[at].1.push(row);
        }
        enum Member {
            Row(usize),
            Held(GroupId),
        }
        let mut targets = Targets::default();
        let (mut representative, mut intervals) = (Vec::new(), Vec::new());
        for (key, rows) in &by_key {
            let mut members: Vec<(i64, i64, Member)> =
                rows.iter().map(|&i| (starts.value(i), ends.value(i), Member::Row(i))).collect();
            if let Some(held) = sessions.sessions.get(key) {
                members.extend(held.iter().map(|(&start, &(end, id))| (start, end, Member::Held(id))));
            }
            members.sort_by_key(|m| (m.0, m.1));
            let mut runs: Vec<(i64, i64, Vec<Member>)> = Vec::new();
            for (start, end, member) in members {
                match runs.last_mut() {
                    Some((_, e, group)) if start < *e => {
                        *e = (*e).max(end);
                        group.push(member);
                    }
                    _ => runs.push((start, end, vec![member])),
                }
            }
            for (start, end, group) in runs {
                let Some(first_row) = group.iter().find_map(|m| if let Member::Row(i) = m { Some(*i) } else { None })
                else {
                    continue; // a held session this batch does not touch
                };
                let t = intervals.len();
                intervals.push((start, end));
                representative.push(first_row as u32);
                for member in group {
                    match member {
                        Member::Row(i) => {
                            targets.rows.push(i as u32);
                            targets.row_targets.push(t);
                        }
                        Member::Held(id) => {
                            targets.held.push(id);
                            targets.held_targets.push(t);
                        }
                    }
                }
            }
        }
        let mut columns = take_all(group_columns, &representative)?;
        let (s, e): (Vec<i64>, Vec<i64>) = intervals.iter().copied().unzip();
        columns[w] = Arc::new(window_array(s, e, None)?);
        let keys = self.index.rows(&columns, intervals.len())?;
        for (t, &(_, end)) in intervals.iter().enumerate() {
            let (id, added) = self.index.intern(keys.get(t));
            targets.ids.push(id);
            if added {
                self.window.as_mut().expect("sessions are windows").by_end.entry(end).or_default().push(id);
                let key = self.sessions.as_mut().expect("sessions").key_of(&columns, w, t)?;
                self.sessions.as_mut().expect("sessions").insert(key, intervals[t].0, end, id);
            }
        }
        let kept: HashSet<GroupId> = targets.ids.iter().copied().collect();
        targets.removed = targets.held.iter().copied().filter(|id| !kept.contains(id)).collect();
        targets.columns = columns;
        Ok(targets)
    }

    /// Carries out a batch's targets over every aggregate; returns the targets'
    /// final values, one array per aggregate.
    fn apply(
        &mut self,
        targets: &Targets,
        arguments: &[(Vec<ArrayRef>, Option<ArrayRef>)],
        m: usize,
        rows_are: Rows,
    ) -> Result<Vec<ArrayRef>> {
        let t = targets.ids.len();
        // Every row, in order (sessions take them in another order).
        let all_rows = targets.rows.len() == m && targets.rows.iter().enumerate().all(|(i, &r)| i == r as usize);
        let rows = UInt32Array::from(targets.rows.clone());
        let numbering = HeldFirst::new(targets);
        let mut finals = Vec::with_capacity(self.slots.len());
        for (slot, (args, filter)) in self.slots.iter_mut().zip(arguments) {
            let args: Vec<ArrayRef> = match all_rows {
                true => args.clone(),
                false => args.iter().map(|a| take(a, &rows, None)).collect::<std::result::Result<_, _>>()?,
            };
            let filter = match (filter, all_rows) {
                (None, _) => None,
                (Some(f), true) => Some(f.clone()),
                (Some(f), false) => Some(take(f, &rows, None)?),
            };
            let filter = filter.map(|f| f.as_boolean().clone());
            let expr = slot.expr.clone();
            match &mut slot.store {
                SlotStore::Columnar(columns) => {
                    let mut accumulator = groups_accumulator(&expr)?;
                    if !targets.held.is_empty() {
                        let held = gather(columns, &slot.state_fields, &targets.held)?;
                        accumulator.merge_batch(&held, &numbering.held_targets, numbering.held)?;
                    }
                    match rows_are {
                        Rows::Input => accumulator.update_batch(&args, &numbering.row_targets, filter.as_ref(), t)?,
                        Rows::PartialStates => accumulator.merge_batch(&args, &numbering.row_targets, t)?,
                    }
                    let states = accumulator.state(EmitTo::All)?;
                    for (column, (state, field)) in columns.iter_mut().zip(states.iter().zip(&slot.state_fields)) {
                        column.scatter(&numbering.ids, &as_type(state.clone(), field.data_type())?)?;
                    }
                    finals.push(numbering.in_target_order(evaluate_states(&expr, &states)?)?);
                }
                SlotStore::Sliding(_) | SlotStore::Multiset { .. } => {
                    return Err(crate::error::Error::internal(
                        "a changelog aggregate got insert-only rows".to_string(),
                    ));
                }
                SlotStore::InPlace(_) if rows_are == Rows::PartialStates => {
                    return Err(crate::error::Error::internal("partial states for an in-place aggregate".to_string()));
                }
                SlotStore::InPlace(accumulators) => {
                    if accumulators.len() < self.index.id_bound() {
                        accumulators.resize_with(self.index.id_bound(), || None);
                    }
                    // Each target's accumulator: its own if it had one, the others'
                    // (sessions merging) merged in.
                    let mut own: Vec<Option<Box<dyn Accumulator>>> = (0..t).map(|_| None).collect();
                    for (&id, &target) in targets.held.iter().zip(&targets.held_targets) {
                        if id == targets.ids[target] {
                            own[target] = accumulators[id as usize].take();
                        }
                    }
                    for (&id, &target) in targets.held.iter().zip(&targets.held_targets) {
                        if id != targets.ids[target]
                            && let Some(mut other) = accumulators[id as usize].take()
                        {
                            let state = scalars_to_arrays(&other.state()?)?;
                            let into = own[target].get_or_insert(expr.create_accumulator()?);
                            into.merge_batch(&state)?;
                        }
                    }
                    // The rows of each target, in order: one `take` per argument.
                    let mut order: Vec<u32> = (0..targets.rows.len() as u32)
                        .filter(|&i| filter.as_ref().is_none_or(|f| f.is_valid(i as usize) && f.value(i as usize)))
                        .collect();
                    order.sort_by_key(|&i| targets.row_targets[i as usize]);
                    let sorted: Vec<ArrayRef> = args
                        .iter()
                        .map(|a| take(a, &UInt32Array::from(order.clone()), None))
                        .collect::<std::result::Result<_, _>>()?;
                    let mut values = Vec::with_capacity(t);
                    let mut at = 0;
                    for (target, accumulator) in own.iter_mut().enumerate() {
                        let accumulator = match accumulator {
                            Some(a) => a,
                            None => accumulator.insert(expr.create_accumulator()?),
                        };
                        let from = at;
                        while at < order.len() && targets.row_targets[order[at] as usize] == target {
                            at += 1;
                        }
                        if at > from {
                            let slice: Vec<ArrayRef> = sorted.iter().map(|a| a.slice(from, at - from)).collect();
                            accumulator.update_batch(&slice)?;
                        }
                        values.push(accumulator.evaluate()?);
                    }
                    for (&id, accumulator) in targets.ids.iter().zip(own) {
                        accumulators[id as usize] = accumulator;
                    }
                    finals.push(scalars_to_array(values, expr.field().data_type())?);
                }
            }
        }
        for &id in &targets.ids {
            self.changes.touch(id);
        }
        Ok(finals)
    }

    /// Carries out a changelog batch's targets over every aggregate; returns the final
    /// values of the targets at `present` (those with rows), one array per aggregate.
    fn apply_changelog(
        &mut self,
        targets: &Targets,
        arguments: &[(Vec<ArrayRef>, Option<ArrayRef>)],
        weights: &[i64],
        present: &[usize],
    ) -> Result<Vec<ArrayRef>> {
        let bound = self.index.id_bound();
        let mut finals = Vec::with_capacity(self.slots.len());
        for (slot, (args, filter)) in self.slots.iter_mut().zip(arguments) {
            let filter = filter.as_ref().map(|f| f.as_boolean().clone());
            // Per target: the rows it gains and the rows it loses (FILTER applied).
            let mut per_target: Vec<(Vec<u32>, Vec<u32>)> = vec![(Vec::new(), Vec::new()); targets.ids.len()];
            for (&row, &t) in targets.rows.iter().zip(&targets.row_targets) {
                if filter.as_ref().is_some_and(|f| !(f.is_valid(row as usize) && f.value(row as usize))) {
                    continue;
                }
                // (A weight of k counts the row k times.)
                let weight = weights[row as usize];
                let rows = match weight > 0 {
                    true => &mut per_target[t].0,
                    false => &mut per_target[t].1,
                };
                rows.extend(std::iter::repeat_n(row, weight.unsigned_abs() as usize));
            }
            let expr = slot.expr.clone();
            let mut values = Vec::with_capacity(present.len());
            match &mut slot.store {
                SlotStore::Sliding(accumulators) => {
                    accumulators.resize_with(bound.max(accumulators.len()), || None);
                    for (t, (added, retracted)) in per_target.iter().enumerate() {
                        let accumulator = match &mut accumulators[targets.ids[t] as usize] {
                            Some(a) => a,
                            none => none.insert(expr.create_sliding_accumulator()?),
                        };
                        if !added.is_empty() {
                            accumulator.update_batch(&take_all(args, added)?)?;
                        }
                        if !retracted.is_empty() {
                            accumulator.retract_batch(&take_all(args, retracted)?)?;
                        }
                    }
                    for &t in present {
                        let accumulator = accumulators[targets.ids[t] as usize].as_mut().expect("a present group");
                        values.push(accumulator.evaluate()?);
                    }
                }
                SlotStore::Multiset { converter, sets } => {
                    sets.resize_with(bound.max(sets.len()), || None);
                    let rows = converter.convert_columns(args)?;
                    for (t, (added, retracted)) in per_target.iter().enumerate() {
                        let set = sets[targets.ids[t] as usize].get_or_insert_with(HashMap::new);
                        for (&row, weight) in added.iter().map(|r| (r, 1)).chain(retracted.iter().map(|r| (r, -1))) {
                            let key = rows.row(row as usize).data();
                            if let Some(count) = set.get_mut(key) {
                                *count += weight;
                                if *count == 0 {
                                    set.remove(key);
                                }
                            } else {
                                set.insert(key.into(), weight);
                            }
                        }
                    }
                    for &t in present {
                        let set = sets[targets.ids[t] as usize].as_ref().expect("a present group");
                        values.push(evaluate_multiset(&expr, converter, set)?);
                    }
                }
                SlotStore::Columnar(_) | SlotStore::InPlace(_) => {
                    return Err(crate::error::Error::internal("an insert-only aggregate got a changelog".to_string()));
                }
            }
            finals.push(scalars_to_array(values, expr.field().data_type())?);
        }
        Ok(finals)
    }

    /// Drops a group from the state and its indexes (its key goes into the next
    /// checkpoint as removed).
    fn forget(&mut self, id: GroupId) {
        if !self.index.is_live(id) {
            return;
        }
        // (Over a changelog nothing is saved: nothing to remember.)
        if self.row_counts.is_none() {
            self.changes.removed.push(self.index.key_bytes(id));
        }
        for slot in &mut self.slots {
            match &mut slot.store {
                SlotStore::InPlace(accumulators) | SlotStore::Sliding(accumulators) => {
                    if let Some(a) = accumulators.get_mut(id as usize) {
                        *a = None;
                    }
                }
                SlotStore::Multiset { sets, .. } => {
                    if let Some(set) = sets.get_mut(id as usize) {
                        *set = None;
                    }
                }
                SlotStore::Columnar(_) => {}
            }
        }
        if let Some(sessions) = &mut self.sessions {
            sessions.remove(id);
        }
        self.index.remove(id);
    }

    /// Renumbers the groups once as many have left as remain.
    fn compact(&mut self) -> Result<()> {
        let Some(mapping) = self.index.compact() else { return Ok(()) };
        let new = |id: &GroupId| mapping.get(*id as usize).copied().flatten();
        for slot in &mut self.slots {
            match &mut slot.store {
                SlotStore::Columnar(columns) => {
                    for column in columns {
                        column.compact(&mapping)?;
                    }
                }
                SlotStore::InPlace(accumulators) | SlotStore::Sliding(accumulators) => {
                    let old = std::mem::take(accumulators);
                    *accumulators =
                        old.into_iter().enumerate().filter(|(i, _)| mapping[*i].is_some()).map(|(_, a)| a).collect();
                }
                SlotStore::Multiset { sets, .. } => {
                    let old = std::mem::take(sets);
                    *sets =
                        old.into_iter().enumerate().filter(|(i, _)| mapping[*i].is_some()).map(|(_, s)| s).collect();
                }
            }
        }
        if let Some(counts) = &mut self.row_counts {
            let old = std::mem::take(counts);
            let live = |i: usize| mapping.get(i).is_some_and(|m| m.is_some());
            *counts = old.into_iter().enumerate().filter(|(i, _)| live(*i)).map(|(_, c)| c).collect();
        }
        if let Some(window) = &mut self.window {
            for ids in window.by_end.values_mut() {
                *ids = ids.iter().filter_map(new).collect();
            }
        }
        if let Some(sessions) = &mut self.sessions {
            for held in sessions.sessions.values_mut() {
                for (_, id) in held.values_mut() {
                    *id = new(id).expect("held sessions are live");
                }
            }
            sessions.owner = sessions.owner.drain().filter_map(|(id, owner)| Some((new(&id)?, owner))).collect();
        }
        let dirty_ids: Vec<GroupId> = self.changes.dirty_ids.iter().filter_map(new).collect();
        self.changes =
            Changes { dirty: Vec::new(), dirty_ids: Vec::new(), removed: std::mem::take(&mut self.changes.removed) };
        for id in dirty_ids {
            self.changes.touch(id);
        }
        self.target_of = Vec::new();
        Ok(())
    }

    /// Group columns as a batch (of `rows` rows: there may be no columns).
    fn group_batch(&self, columns: Vec<ArrayRef>, rows: usize) -> Result<RecordBatch> {
        let schema = Arc::new(Schema::new(self.final_schema.fields()[..self.num_group_columns].to_vec()));
        let options = RecordBatchOptions::new().with_row_count(Some(rows));
        Ok(RecordBatch::try_new_with_options(schema, columns, &options)?)
    }

    fn final_batch(&self, columns: Vec<ArrayRef>) -> Result<RecordBatch> {
        let columns = columns
            .into_iter()
            .zip(self.final_schema.fields())
            // Aggregates may evaluate to a compatible but different type; the schema
            // DataFusion planned is the contract.
            .map(|(c, f)| as_type(c, f.data_type()))
            .collect::<Result<Vec<_>>>()?;
        Ok(RecordBatch::try_new(self.final_schema.clone(), columns)?)
    }

    /// Final values of the groups `ids`.
    fn evaluate_ids(&mut self, ids: &[GroupId]) -> Result<RecordBatch> {
        let mut columns = self.index.columns(ids)?;
        for slot in &mut self.slots {
            columns.push(match &mut slot.store {
                SlotStore::Columnar(state) => evaluate_states(&slot.expr, &gather(state, &slot.state_fields, ids)?)?,
                SlotStore::InPlace(accumulators) | SlotStore::Sliding(accumulators) => {
                    let values = ids
                        .iter()
                        .map(|&id| accumulators[id as usize].as_mut().expect("live group").evaluate())
                        .collect::<datafusion::common::Result<Vec<_>>>()?;
                    scalars_to_array(values, slot.expr.field().data_type())?
                }
                SlotStore::Multiset { converter, sets } => {
                    let empty = HashMap::new();
                    let values = ids
                        .iter()
                        .map(|&id| {
                            evaluate_multiset(&slot.expr, converter, sets[id as usize].as_ref().unwrap_or(&empty))
                        })
                        .collect::<Result<Vec<_>>>()?;
                    scalars_to_array(values, slot.expr.field().data_type())?
                }
            });
        }
        self.final_batch(columns)
    }

    /// Final values of every group held.
    pub fn evaluate_all(&mut self) -> Result<RecordBatch> {
        let ids: Vec<GroupId> = self.index.live_ids().collect();
        self.evaluate_ids(&ids)
    }

    /// Drops the groups of windows ending at or before `watermark`. With `evaluate`,
    /// returns their final values first (append mode writes them now).
    pub fn evict(&mut self, watermark: i64, evaluate: bool) -> Result<Option<RecordBatch>> {
        let Some(window) = &mut self.window else { return Ok(None) };
        window.evicted_until = Some(window.evicted_until.map_or(watermark, |w| w.max(watermark)));
        let keep = window.by_end.split_off(&(watermark + 1));
        let closed = std::mem::replace(&mut window.by_end, keep);
        // Sessions merged away since are gone already.
        let ids: Vec<GroupId> = closed.into_values().flatten().filter(|&id| self.index.is_live(id)).collect();
        let finals = match evaluate && !ids.is_empty() {
            true => Some(self.evaluate_ids(&ids)?),
            false => None,
        };
        for id in ids {
            self.forget(id);
        }
        self.compact()?;
        Ok(finals)
    }

    /// The saved form of groups `ids`: group columns + state columns.
    fn state_batch(&mut self, ids: &[GroupId]) -> Result<RecordBatch> {
        if self.row_counts.is_some() {
            return Err(not_saved());
        }
        let mut columns = self.index.columns(ids)?;
        for slot in &mut self.slots {
            match &mut slot.store {
                SlotStore::Columnar(state) => columns.extend(gather(state, &slot.state_fields, ids)?),
                SlotStore::Sliding(_) | SlotStore::Multiset { .. } => return Err(not_saved()),
                SlotStore::InPlace(accumulators) => {
                    let mut rows = Vec::with_capacity(ids.len());
                    for &id in ids {
                        let accumulator = accumulators[id as usize].as_mut().expect("live group");
                        let state = accumulator.state()?;
                        // `state` may hand its values over (MEDIAN does): take them back.
                        let mut fresh = slot.expr.create_accumulator()?;
                        fresh.merge_batch(&scalars_to_arrays(&state)?)?;
                        *accumulator = fresh;
                        rows.push(state);
                    }
                    for (c, field) in slot.state_fields.iter().enumerate() {
                        let values = rows.iter().map(|r| r[c].clone()).collect();
                        columns.push(scalars_to_array(values, field.data_type())?);
                    }
                }
            }
        }
        let columns = columns
            .into_iter()
            .zip(self.checkpoint_schema.fields())
            .map(|(c, f)| as_type(c, f.data_type()))
            .collect::<Result<Vec<_>>>()?;
        Ok(RecordBatch::try_new(self.checkpoint_schema.clone(), columns)?)
    }

    /// Every group's saved form.
    pub fn full_state(&mut self) -> Result<RecordBatch> {
        self.changes = Changes::default();
        let ids: Vec<GroupId> = self.index.live_ids().collect();
        self.state_batch(&ids)
    }

    /// What changed since the last call (or [`Self::full_state`]): the saved form of
    /// the groups written, and the keys (group columns) of the groups removed.
    pub fn take_changes(&mut self) -> Result<(RecordBatch, RecordBatch)> {
        let changes = std::mem::take(&mut self.changes);
        let ids: Vec<GroupId> = changes.dirty_ids.into_iter().filter(|&id| self.index.is_live(id)).collect();
        let written = self.state_batch(&ids)?;
        let keys = self.index.columns_of_keys(changes.removed.iter().map(|k| k.as_ref()))?;
        let removed = self.group_batch(keys, changes.removed.len())?;
        Ok((written, removed))
    }

    /// Restores saved groups (a batch of [`Self::full_state`] or of the written
    /// part of [`Self::take_changes`]); a group already held is replaced.
    pub fn restore(&mut self, saved: &RecordBatch) -> Result<()> {
        if self.row_counts.is_some() {
            return Err(not_saved());
        }
        let n = saved.num_rows();
        let group_columns = &saved.columns()[..self.num_group_columns];
        let keys = self.index.rows(group_columns, n)?;
        let ends = self.window_ends(group_columns, n);
        let mut ids = Vec::with_capacity(n);
        for (row, &end) in ends.iter().enumerate() {
            let (id, added) = self.index.intern(keys.get(row));
            if added {
                if let (Some(window), Some(end)) = (&mut self.window, end) {
                    window.by_end.entry(end).or_default().push(id);
                }
                if let (Some(sessions), Some(window)) = (&mut self.sessions, &self.window) {
                    let start = window_start(&group_columns[window.column], row).unwrap_or_default();
                    let key = sessions.key_of(group_columns, window.column, row)?;
                    sessions.insert(key, start, end.unwrap_or_default(), id);
                }
            }
            ids.push(id);
        }
        let mut at = self.num_group_columns;
        for slot in &mut self.slots {
            let width = slot.state_fields.len();
            let states = &saved.columns()[at..at + width];
            at += width;
            match &mut slot.store {
                SlotStore::Columnar(columns) => {
                    for (column, (state, field)) in columns.iter_mut().zip(states.iter().zip(&slot.state_fields)) {
                        column.scatter(&ids, &as_type(state.clone(), field.data_type())?)?;
                    }
                }
                SlotStore::Sliding(_) | SlotStore::Multiset { .. } => return Err(not_saved()),
                SlotStore::InPlace(accumulators) => {
                    if accumulators.len() < self.index.id_bound() {
                        accumulators.resize_with(self.index.id_bound(), || None);
                    }
                    for (row, &id) in ids.iter().enumerate() {
                        let mut accumulator = slot.expr.create_accumulator()?;
                        accumulator.merge_batch(&states.iter().map(|s| s.slice(row, 1)).collect::<Vec<_>>())?;
                        accumulators[id as usize] = Some(accumulator);
                    }
                }
            }
        }
        Ok(())
    }

    /// Removes saved groups by key (the removed part of [`Self::take_changes`]).
    pub fn restore_removed(&mut self, keys: &RecordBatch) -> Result<()> {
        let rows = self.index.rows(keys.columns(), keys.num_rows())?;
        for row in 0..rows.len() {
            if let Some(id) = self.index.find(rows.get(row)) {
                self.forget(id);
            }
        }
        self.changes = Changes::default();
        Ok(())
    }

    /// Sets where windows were evicted up to (restored from a checkpoint).
    pub fn set_evicted_until(&mut self, evicted_until: Option<i64>) {
        if let Some(window) = &mut self.window {
            window.evicted_until = evicted_until;
        }
    }
}

impl Changes {
    fn touch(&mut self, id: GroupId) {
        if self.dirty.len() <= id as usize {
            self.dirty.resize(id as usize + 1, false);
        }
        if !self.dirty[id as usize] {
            self.dirty[id as usize] = true;
            self.dirty_ids.push(id);
        }
    }
}

impl SessionIndex {
    /// The key id of row `row` (its group columns but the window).
    fn key_of(&mut self, columns: &[ArrayRef], w: usize, row: usize) -> Result<GroupId> {
        let others: Vec<ArrayRef> =
            columns.iter().enumerate().filter(|(c, _)| *c != w).map(|(_, a)| a.slice(row, 1)).collect();
        let rows: KeyRows = self.index.rows(&others, 1)?;
        Ok(self.index.intern(rows.get(0)).0)
    }

    fn insert(&mut self, key: GroupId, start: i64, end: i64, id: GroupId) {
        self.sessions.entry(key).or_default().insert(start, (end, id));
        self.owner.insert(id, (key, start));
    }

    fn remove(&mut self, id: GroupId) {
        let Some((key, start)) = self.owner.remove(&id) else { return };
        let Some(sessions) = self.sessions.get_mut(&key) else { return };
        // The session that grew out of this one may start where it started.
        if sessions.get(&start).is_some_and(|&(_, held)| held == id) {
            sessions.remove(&start);
        }
        if sessions.is_empty() {
            self.sessions.remove(&key);
            self.index.remove(key);
            if let Some(mapping) = self.index.compact() {
                let new = |key: GroupId| mapping[key as usize].expect("keys with sessions are live");
                self.sessions = self.sessions.drain().map(|(key, held)| (new(key), held)).collect();
                for (key, _) in self.owner.values_mut() {
                    *key = new(*key);
                }
            }
        }
    }
}

/// Every aggregate's arguments and FILTER, each array through `f` (a filter, a take).
fn map_arguments(
    arguments: &[(Vec<ArrayRef>, Option<ArrayRef>)],
    f: impl Fn(&ArrayRef) -> std::result::Result<ArrayRef, datafusion::arrow::error::ArrowError>,
) -> Result<Vec<(Vec<ArrayRef>, Option<ArrayRef>)>> {
    arguments
        .iter()
        .map(|(args, filter)| {
            Ok((args.iter().map(&f).collect::<std::result::Result<_, _>>()?, filter.as_ref().map(&f).transpose()?))
        })
        .collect()
}

/// Whether a state of this type is kept in columns (fixed-width or small values);
/// lists, binaries and structs (sets, sketches) are kept in place per group.
fn small_state(data_type: &datafusion::arrow::datatypes::DataType) -> bool {
    use datafusion::arrow::datatypes::DataType::*;
    data_type.is_primitive() || matches!(data_type, Boolean | Null | Utf8 | LargeUtf8 | Utf8View)
}

fn groups_accumulator(expr: &Arc<AggregateFunctionExpr>) -> Result<Box<dyn GroupsAccumulator>> {
    Ok(if expr.groups_accumulator_supported() {
        expr.create_groups_accumulator()?
    } else {
        let expr = expr.clone();
        Box::new(GroupsAccumulatorAdapter::new(move || expr.create_accumulator()))
    })
}

/// Final values from state columns (one row per group).
fn evaluate_states(expr: &Arc<AggregateFunctionExpr>, states: &[ArrayRef]) -> Result<ArrayRef> {
    let rows = states.first().map_or(0, |s| s.len());
    let mut accumulator = groups_accumulator(expr)?;
    let index: Vec<usize> = (0..rows).collect();
    accumulator.merge_batch(states, &index, rows)?;
    Ok(accumulator.evaluate(EmitTo::All)?)
}

/// An aggregate's value over a counted multiset of argument rows: a fresh accumulator
/// fed every row as many times as it is counted.
fn evaluate_multiset(
    expr: &Arc<AggregateFunctionExpr>,
    converter: &RowConverter,
    set: &HashMap<Box<[u8]>, i64>,
) -> Result<ScalarValue> {
    let mut accumulator = expr.create_accumulator()?;
    if !set.is_empty() {
        let parser = converter.parser();
        let (keys, counts): (Vec<&Box<[u8]>>, Vec<i64>) = set.iter().map(|(k, c)| (k, *c)).unzip();
        let columns = converter.convert_rows(keys.iter().map(|k| parser.parse(k)))?;
        let repeated: Vec<u32> = counts
            .iter()
            .enumerate()
            .flat_map(|(i, &count)| std::iter::repeat_n(i as u32, count.max(0) as usize))
            .collect();
        accumulator.update_batch(&take_all(&columns, &repeated)?)?;
    }
    Ok(accumulator.evaluate()?)
}

fn gather(columns: &[StateColumn], fields: &[FieldRef], ids: &[GroupId]) -> Result<Vec<ArrayRef>> {
    columns.iter().zip(fields).map(|(c, f)| as_type(c.gather(ids)?, f.data_type())).collect()
}

fn take_all(columns: &[ArrayRef], rows: &[u32]) -> Result<Vec<ArrayRef>> {
    let indices = UInt32Array::from(rows.to_vec());
    Ok(columns.iter().map(|c| take(c, &indices, None)).collect::<std::result::Result<_, _>>()?)
}

fn scalars_to_array(values: Vec<ScalarValue>, data_type: &datafusion::arrow::datatypes::DataType) -> Result<ArrayRef> {
    if values.is_empty() {
        return Ok(datafusion::arrow::array::new_empty_array(data_type));
    }
    let array = ScalarValue::iter_to_array(values)?;
    Ok(if array.data_type() == data_type { array } else { cast(&array, data_type)? })
}

fn scalars_to_arrays(values: &[ScalarValue]) -> Result<Vec<ArrayRef>> {
    Ok(values.iter().map(|v| v.to_array()).collect::<datafusion::common::Result<_>>()?)
}

/// The end of the window in row `row` of a `{start, end}` struct column.
pub fn window_end(windows: &ArrayRef, row: usize) -> Option<i64> {
    window_field(windows, "end", row)
}

fn window_start(windows: &ArrayRef, row: usize) -> Option<i64> {
    window_field(windows, "start", row)
}

fn window_field(windows: &ArrayRef, name: &str, row: usize) -> Option<i64> {
    let values = windows.as_struct_opt()?.column_by_name(name)?;
    let values = values.as_primitive_opt::<TimestampMicrosecondType>()?;
    (windows.is_valid(row) && values.is_valid(row)).then(|| values.value(row))
}

/// The aggregation as a streaming operator (see [`crate::operators::exec`]).
pub struct AggregateOperator {
    pub aggregate: Shards,
    /// Over `SOURCE` (its state is checkpointed) or over a changelog.
    over_source: bool,
    closing: Closing,
    /// Source only: keep closed windows' rows (in `closed`) for a rebuild after a restart,
    /// because something above holds state they feed beyond their window.
    keep_closed: bool,
    /// The final rows of windows that left the state, kept as `keep_closed` says.
    pub closed: Option<RecordBatch>,
}

impl AggregateOperator {
    pub fn new(aggregate: Shards, over_source: bool, closing: Closing) -> Self {
        AggregateOperator { aggregate, over_source, closing, keep_closed: false, closed: None }
    }

    /// Whether the touched groups' old values are retracted (what reads the output
    /// needs them unless it only renames columns of a result keyed by the groups).
    pub fn set_emit_previous(&mut self, emit_previous: bool) {
        self.aggregate.set_emit_previous(emit_previous);
    }

    pub fn set_keep_closed(&mut self, keep_closed: bool) {
        self.keep_closed = keep_closed;
    }

    fn keep(&mut self, closed: RecordBatch) -> Result<()> {
        self.closed = Some(match self.closed.take() {
            Some(old) => datafusion::arrow::compute::concat_batches(&old.schema(), [&old, &closed])?,
            None => closed,
        });
        Ok(())
    }

    /// Over `SOURCE`: folds the batch's events in, closes windows; the result's changes.
    fn over_source(&mut self, input: &RecordBatch, tick: Tick) -> Result<Changelog> {
        let schema = self.aggregate.final_schema().clone();
        if tick.rebuild {
            // Everything the operators above have seen, as inserted.
            let mut parts: Vec<RecordBatch> = self.closed.iter().cloned().collect();
            if self.closing != Closing::Emit {
                parts.push(self.aggregate.evaluate_all()?);
            }
            return Changelog::inserted(&datafusion::arrow::compute::concat_batches(&schema, &parts)?);
        }
        let Merged { finals, previous, .. } = self.aggregate.update(input)?;
        let closed = match (self.closing, tick.watermark) {
            (Closing::Keep, _) | (_, None) => None,
            (closing, Some(w)) => self.aggregate.evict(w, closing == Closing::Emit || self.keep_closed)?,
        };
        if let Some(closed) = closed.as_ref().filter(|_| self.keep_closed) {
            self.keep(closed.clone())?;
        }
        match self.closing {
            Closing::Emit => Ok(closed.map_or_else(|| Ok(Changelog::empty(&schema)), |c| Changelog::inserted(&c))?),
            _ => Changelog::new(&finals, &previous.unwrap_or_else(|| RecordBatch::new_empty(schema))),
        }
    }

    /// Over a changelog: adds and retracts rows; closes windows; the result's changes.
    fn over_changes(&mut self, input: RecordBatch, tick: Tick) -> Result<Changelog> {
        let changed = self.aggregate.update_changelog(&Changelog::from_batch(input)?)?;
        if let (Some(w), true) = (tick.watermark, self.closing != Closing::Keep) {
            self.aggregate.evict(w, false)?;
        }
        changed.changelog()
    }
}

#[async_trait::async_trait]
impl StreamingOperator for AggregateOperator {
    async fn process(&mut self, inputs: Vec<RecordBatch>, tick: Tick, _ctx: Arc<TaskContext>) -> Result<RecordBatch> {
        let [input] = <[RecordBatch; 1]>::try_from(inputs)
            .map_err(|_| crate::error::Error::internal("an aggregation reads one input".to_string()))?;
        let changes = match self.over_source {
            true => self.over_source(&input, tick)?,
            false => self.over_changes(input, tick)?,
        };
        Ok(changes.into_batch())
    }

    fn stats(&self) -> OperatorStats {
        OperatorStats {
            kind: if self.over_source { OperatorKind::SourceAggregate } else { OperatorKind::Aggregate },
            rows_read: self.aggregate.rows_read(),
            held: self.aggregate.len(),
            closed_rows: self.closed.as_ref().map_or(0, |c| c.num_rows()),
        }
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

//! Planning a pipeline: DataFusion plans the SQL once, and we cut its physical plan
//! at the aggregation.
//!
//! ```text
//!   stage 2 (optional)     … FROM AGGREGATED            over stage 1's changes (one aggregation
//!                                                       between row-by-row parts, cut like stage 1)
//!                                                       or over stage 1's whole current result
//!   top                    HAVING, SELECT expressions   runs over final values of groups
//!   ── cut ──              the AggregateExec            replaced by operators::aggregate
//!   input                  WHERE, window expressions    over SOURCE, per micro-batch
//! ```
//!
//! Per micro-batch, `input` runs over the batch's events; the streaming
//! [`crate::operators::aggregate::Aggregate`] (given DataFusion's group and aggregate
//! expressions) folds its rows into the groups they touch; the final values of the
//! groups that changed go through `top` (and stage 2) to the sink.
//!
//! An aggregation over another (a subquery, a CTE, a second stage) is cut the same
//! way, level by level (the chain): between levels flow changelogs
//! ([`crate::operators::changelog`]), and the row-by-row parts between them are the
//! plan's own nodes rebuilt to carry each row's weight ([`Step::rows`]).
//!
//! A query without aggregation is not cut: it runs whole over each micro-batch, with
//! the hidden record column carried to its output so that each row is written under
//! its record's location ([`Emission::Rows`]).

use std::sync::Arc;

use datafusion::arrow::array::{AsArray, UInt32Array};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, UInt32Type};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::DFSchema;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{DataFusionError, SchemaError};
use datafusion::execution::TaskContext;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::logical_expr::{Expr, LogicalPlan, Projection};
use datafusion::physical_expr::PhysicalSortExpr;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode, PhysicalGroupBy};
use datafusion::physical_plan::execution_plan::reset_plan_states;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::windows::{BoundedWindowAggExec, WindowAggExec};
use datafusion::physical_plan::{ExecutionPlan, collect};
use datafusion::prelude::{DataFrame, SessionConfig, SessionContext};

use crate::error::{Error, Result};
use crate::operators::Between;
use crate::operators::aggregate::{AggregateSpec, InputKind};
use crate::operators::changelog::{Changelog, carry_weight};
use crate::operators::partitioned::{PartitionSpec, PartitionedRows};
use crate::operators::top_n::{TopN, TopNChanges};
use crate::pipeline::definition::{OutputMode, PipelineDefinition};
use crate::pipeline::live_table::{LiveExec, LiveSlot, LiveTable};
use crate::pipeline::windows::{self, ExpandHoppingWindows, SessionWindows, WATERMARK_COLUMN, WindowCall};
use crate::source::schema::{EVENT_TIME_TYPE, SourceSchema};

/// The table name of the stream in a pipeline's first stage.
pub const SOURCE_TABLE: &str = "source";
/// The table name of the first stage's result in the second stage.
pub const AGGREGATED_TABLE: &str = "aggregated";

/// Whether SQL runs as a pipeline (incrementally) or as one batch query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryMode {
    Pipeline,
    Batch,
}

/// A DataFusion session with our functions and rules: used for pipelines and for
/// batch queries alike, so both read the same SQL the same way. Only session windows
/// differ: a batch query computes them with window functions ([`SessionWindows`]), a
/// pipeline merges them in its state store.
pub fn session_context(mode: QueryMode) -> SessionContext {
    // One partition: a pipeline runs on one core; parallelism is across pipelines.
    let config = SessionConfig::new().with_target_partitions(1);
    let state = SessionStateBuilder::new().with_config(config).with_default_features().build();
    // This rule rewrites `COUNT(DISTINCT x) … GROUP BY k` into two aggregations; we
    // need the single aggregation whose state (the distinct set) is mergeable.
    let rules =
        state.optimizers().iter().filter(|r| r.name() != "single_distinct_aggregation_to_group_by").cloned().collect();
    let mut state = SessionStateBuilder::new_from_existing(state).with_optimizer_rules(rules).build();
    state.add_analyzer_rule(Arc::new(ExpandHoppingWindows));
    if mode == QueryMode::Batch {
        state.add_analyzer_rule(Arc::new(SessionWindows));
    }
    let ctx = SessionContext::new_with_state(state);
    for function in windows::functions() {
        ctx.register_udf(function);
    }
    // Spark's name for DataFusion's HyperLogLog distinct count.
    let approx = datafusion::functions_aggregate::approx_distinct::approx_distinct_udaf();
    ctx.register_udaf(approx.as_ref().clone().with_aliases(["approx_count_distinct"]));
    ctx
}

/// The hidden source column holding each row's record: its index in the micro-batch,
/// which a query without aggregation carries to its output (see [`Emission::Rows`]).
pub const RECORD_COLUMN: &str = "__record";

/// Columns of `SOURCE` that users never wrote and never see.
const INTERNAL_COLUMNS: [&str; 2] = [WATERMARK_COLUMN, RECORD_COLUMN];

/// The schema of `SOURCE` inside a pipeline: the declared columns plus the hidden
/// watermark column that hopping windows read and the record column.
pub fn streaming_source_schema(source: &SourceSchema) -> SchemaRef {
    let mut fields: Vec<Field> = source.schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new(WATERMARK_COLUMN, EVENT_TIME_TYPE, true));
    fields.push(Field::new(RECORD_COLUMN, DataType::UInt32, false));
    Arc::new(Schema::new(fields))
}

/// `frame` without the internal columns in its output (a `SELECT *` over `SOURCE`
/// would show them). The same for pipelines and batch queries.
pub fn hide_internal_columns(frame: DataFrame) -> std::result::Result<DataFrame, DataFusionError> {
    let internal: Vec<&str> =
        INTERNAL_COLUMNS.into_iter().filter(|c| frame.schema().fields().iter().any(|f| f.name() == c)).collect();
    match internal.is_empty() {
        true => Ok(frame),
        false => frame.drop_columns(&internal),
    }
}

/// How a pipeline turns state changes into result changes.
#[derive(Debug, Clone, PartialEq)]
pub enum Emission {
    /// A query without aggregation: each micro-batch's output rows are upserted under
    /// `key_columns` if given (`-- key:` or an `_id` column), else under the location
    /// of the record each came from (`file:line`, `topic/partition@offset`, with `#2`,
    /// `#3`… for further rows of one record): a batch run again after a crash writes
    /// the same rows under the same ids.
    Rows { key_columns: Option<Vec<usize>> },
    /// Rows correspond to groups: write the groups a batch touched.
    /// `key_columns` index the output; `group_columns` are the group columns they
    /// copy (known when the key is made of group columns; needed to delete groups
    /// that a `HAVING` now filters out).
    Keyed { key_columns: Vec<usize>, group_columns: Option<Vec<usize>> },
    /// Compute the whole result and write what differs from the last one. Used for a
    /// second stage, for queries whose rows are not one per group (ORDER BY … LIMIT,
    /// window functions), and when no key can be found; `key_columns: None` makes
    /// `_id` from the row's content.
    FullDiff { key_columns: Option<Vec<usize>> },
    /// Aggregations over stage 1's changes (an aggregate of an aggregate: a subquery,
    /// a CTE, or a second stage), level by level: rows correspond to the last level's
    /// groups; write those a batch touched (keys and group columns as for `Keyed`, of
    /// the last level).
    Chained { key_columns: Vec<usize>, group_columns: Option<Vec<usize>> },
    /// `ORDER BY … LIMIT N` over the groups (stage 1's, or the chain's last level's,
    /// whose changes it reads): the rows go through an incremental top-N
    /// (`operators::top_n`); the first N are diffed against those last written.
    TopN { key_columns: Option<Vec<usize>> },
    /// Window functions over the groups as the result (top-N per window: `ROW_NUMBER()
    /// OVER (PARTITION BY window …)` and a filter on it): recomputed per partition
    /// touched (`operators::partitioned`); their old rows' keys are deleted, their new
    /// rows upserted.
    Partitioned { key_columns: Vec<usize> },
}

/// What stage 1 is.
enum Stage1 {
    /// Cut at its lowest aggregation: the cut's `input` reads a micro-batch of `SOURCE`.
    Aggregation(Box<Cut>),
    /// A query without aggregation: the whole plan runs row by row over each
    /// micro-batch, its output ending with [`RECORD_COLUMN`] (`Emission::Rows`).
    RowByRow(Arc<dyn ExecutionPlan>),
}

/// A window of the aggregation: which group column holds it and how late is judged.
#[derive(Debug, Clone)]
pub struct PlannedWindow {
    pub call: WindowCall,
    /// Index of the window's time column in `SOURCE`.
    pub time_column: usize,
}

pub struct StreamingPlan {
    pub source_schema: SchemaRef,
    source_slot: LiveSlot,
    /// Stage 1: cut at its aggregation, or a query without aggregation.
    stage1: Stage1,
    /// Group columns + final values: what the aggregation hands to `top`.
    pub final_schema: SchemaRef,
    /// A second stage run over stage 1's whole current result (`Emission::FullDiff`).
    stage2: Option<(LiveSlot, Arc<dyn ExecutionPlan>)>,
    /// Aggregations over stage 1's changes, in order (`Emission::Chained`).
    chain: Vec<Level>,
    /// The result's top split at its `ORDER BY … LIMIT` (`Emission::TopN`), with the
    /// slot of the final values its `below` reads (stage 1's, or the chain's last level's).
    top_n: Option<(LiveSlot, TopNPlan)>,
    /// The steps from stage 1's groups to the result around window functions, and
    /// what they partition by (`Emission::Partitioned`).
    partitioned_output: Option<(Vec<Step>, PartitionSpec)>,
    pub window: Option<PlannedWindow>,
    pub output_schema: SchemaRef,
    pub emission: Emission,
    pub output_mode: OutputMode,
    task_ctx: Arc<TaskContext>,
}

impl std::fmt::Debug for StreamingPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamingPlan")
            .field("emission", &self.emission)
            .field("window", &self.window)
            .field("output_schema", &self.output_schema)
            .finish()
    }
}

/// Plan nodes that may stand between `SOURCE` and the aggregation: they work row by
/// row, so running them per micro-batch gives the same rows as running them once.
const ROW_WISE_INPUT: [&str; 9] = [
    "LiveExec",
    "ProjectionExec",
    "FilterExec",
    "CoalesceBatchesExec",
    "CooperativeExec",
    "UnnestExec",
    "RepartitionExec",
    // UNION ALL of branches that each work row by row (over the same batch).
    "UnionExec",
    "InterleaveExec",
];
/// Plan nodes above the aggregation that map each group to at most one row.
const ROW_WISE_TOP: [&str; 5] = ["LiveExec", "ProjectionExec", "FilterExec", "CoalesceBatchesExec", "CooperativeExec"];

impl StreamingPlan {
    pub async fn new(def: &PipelineDefinition, source: &SourceSchema) -> Result<Self> {
        let file = def.path.display().to_string();
        let user = |e: &dyn std::fmt::Display| Error::user(format!("{file}: {e}"));
        let ctx = session_context(QueryMode::Pipeline);
        let source_schema = streaming_source_schema(source);
        let source_slot = LiveSlot::default();
        ctx.register_table(SOURCE_TABLE, Arc::new(LiveTable::new(source_schema.clone(), source_slot.clone())))
            .map_err(|e| user(&e))?;

        let frame = ctx.sql(&def.stage1).await.and_then(hide_internal_columns);
        let frame = frame.map_err(|e| user(&without_internal_columns(e)))?;
        let logical = frame.logical_plan().clone();
        let window = find_window(&logical, source).map_err(|e| user(&e))?;
        let physical = frame.create_physical_plan().await.map_err(|e| user(&without_internal_columns(e)))?;
        if !contains_node(&physical, "AggregateExec") {
            return Self::row_by_row(def, &ctx, logical, &physical, source_schema, source_slot).await;
        }

        // Stage 1 is cut at its lowest aggregation (over SOURCE); an aggregation over
        // that one (a subquery or CTE) is cut again, and so on: the chain.
        let stage1 = cut_at_aggregate(&physical, false).map_err(|e| {
            user(&match e {
                CutError::NoAggregate => "an aggregation was expected".to_string(),
                CutError::NotRowWise(name) => format!("`{name}` over SOURCE cannot run incrementally; only row-by-row operations may come before the GROUP BY"),
                CutError::MixedInputs => MIXED_INPUTS.to_string(),
                CutError::DataFusion(e) => e.to_string(),
            })
        })?;
        let nested = |e: CutError| {
            user(&match e {
                CutError::NotRowWise(name) => format!(
                    "`{name}` between two aggregations cannot run incrementally yet; only row-by-row operations (WHERE, expressions, HAVING) may come between an aggregation and one over it"
                ),
                CutError::NoAggregate => "an aggregation was expected".to_string(),
                CutError::MixedInputs => MIXED_INPUTS.to_string(),
                CutError::DataFusion(e) => e.to_string(),
            })
        };
        let mut chain: Vec<Level> = Vec::new();
        while contains_node(&chain.last().map_or(&stage1, |l| &l.cut).top, "AggregateExec") {
            let below = chain.last().map_or(&stage1, |l| &l.cut);
            let cut = cut_at_aggregate(&below.top, true).map_err(nested)?;
            // It must read the level below and nothing else.
            if !leaves(&cut.input).iter().all(|leaf| Arc::ptr_eq(leaf, &below.replacement)) {
                return Err(nested(CutError::MixedInputs));
            }
            // Its input reads the final values of the level below directly.
            let below_window = chain.last().map_or(window.as_ref().map(|w| w.group_index), |l| l.window);
            let feed = input_steps(below.top_slot.clone(), &cut)?;
            chain.push(Level::new(feed, cut, &[], below_window));
        }
        let stage1_levels = chain.len();
        let last = chain.last().map_or(&stage1, |l| &l.cut);
        let (top, top_row_wise, top_slot) = (last.top.clone(), last.top_row_wise, last.top_slot.clone());
        let final_schema = stage1.final_schema.clone();
        let num_group_columns = stage1.num_group_columns();
        let top_n = match def.stage2.is_none() && !top_row_wise {
            true => split_top_n(&top).map_err(|e| user(&e))?.map(|t| (top_slot.clone(), t)),
            false => None,
        };
        // Over an aggregate of an aggregate, an `ORDER BY … LIMIT` or window functions
        // partitioned by a key run incrementally over the last level's changes.
        if !chain.is_empty() && !top_row_wise {
            let partitioned = split_partitioned(&top, OnePartition::Allowed).map_err(|e| user(&e))?;
            if def.stage2.is_some()
                || (top_n.is_none() && partitioned.is_none())
                || (top_n.is_none() && def.settings.output_mode == OutputMode::Complete)
            {
                return Err(user(
                    &"over an aggregate of an aggregate, only an ORDER BY … LIMIT or window functions (between row-by-row operations, and not in complete mode) can run incrementally yet",
                ));
            }
        }

        let stage2 = match &def.stage2 {
            None => None,
            Some(sql) => {
                let slot = LiveSlot::default();
                ctx.register_table(AGGREGATED_TABLE, Arc::new(LiveTable::new(top.schema(), slot.clone())))
                    .map_err(|e| user(&e))?;
                let second = |e| user(&format!("second stage: {}", without_internal_columns(e)));
                let frame = ctx.sql(sql).await.map_err(second)?;
                let plan = frame.create_physical_plan().await.map_err(second)?;
                Some((slot, plan))
            }
        };
        // A second stage of aggregations between row-by-row operations runs over stage
        // 1's changes, as more levels of the chain; any other shape over stage 1's whole
        // result (then stage 1 must be one level).
        if let Some((slot, plan)) = &stage2
            && top_row_wise
            && let Some(levels) = cut_levels(plan)
        {
            let below = chain.last().map_or(&stage1, |l| &l.cut);
            let below_top = below.top.clone();
            let mut feed = Some(vec![Step::rows(below.top_slot.clone(), &below.top)?]);
            for (i, cut) in levels.into_iter().enumerate() {
                let mut steps = feed.take().unwrap_or_default();
                let slot = match i {
                    0 => slot.clone(),
                    _ => chain.last().expect("a level before").cut.top_slot.clone(),
                };
                steps.extend(input_steps(slot, &cut)?);
                let below_window = chain.last().map_or(window.as_ref().map(|w| w.group_index), |l| l.window);
                // The first level of the second stage reads stage 1's result.
                let through = if i == 0 { vec![below_top.clone()] } else { vec![] };
                chain.push(Level::new(steps, cut, &through, below_window));
            }
        } else if stage2.is_some() && stage1_levels > 0 {
            return Err(user(
                &"a second stage of this shape over an aggregate of an aggregate cannot run incrementally yet",
            ));
        }
        let output_schema = match (&stage2, chain.last()) {
            (_, Some(level)) => level.cut.top.schema(),
            (Some((_, plan)), None) => plan.schema(),
            (None, None) => top.schema(),
        };

        let output_mode = def.settings.output_mode;
        if output_mode == OutputMode::Append && window.is_none() {
            return Err(user(
                &"output_mode append writes each window once it is final, so the GROUP BY needs a window (window, tumble or hop)",
            ));
        }
        let named_key = named_key(def, &output_schema)?;
        // Window functions over the groups as the result (in stage 1's top or the chain's
        // last level's, or a second stage without aggregation over a row-by-row top),
        // keyed by those groups' columns or a key of one's own.
        // (Complete mode rewrites the whole result each batch: it diffs whole results.)
        let (last_group_columns, last_window) = match chain.last() {
            Some(level) => (level.cut.num_group_columns(), level.window),
            None => (num_group_columns, window.as_ref().map(|w| w.group_index)),
        };
        let window_output = match (top_n.is_none() && output_mode != OutputMode::Complete, &stage2) {
            (false, _) => None,
            // Over a chain nothing else could run them: all rows as one partition if need be.
            (true, None) if !top_row_wise => {
                split_partitioned(&top, if chain.is_empty() { OnePartition::Refused } else { OnePartition::Allowed })
                    .map_err(|e| user(&e))?
                    .map(|p| (vec![], top_slot.clone(), p, vec![top.clone()]))
            }
            (true, Some((slot, plan))) if chain.is_empty() && top_row_wise && !contains_node(plan, "AggregateExec") => {
                match split_partitioned(plan, OnePartition::Refused).map_err(|e| user(&e))? {
                    Some(p) => {
                        let first = vec![Step::rows(stage1.top_slot.clone(), &top)?];
                        Some((first, slot.clone(), p, vec![plan.clone(), top.clone()]))
                    }
                    None => None,
                }
            }
            _ => None,
        };
        let window_output = window_output.map(|(mut steps, slot, p, plans)| -> Result<_> {
            // The key: the one asked for, or the group columns traced down the plans.
            let Some((key_columns, _)) =
                result_key(&plans, output_schema.fields().len(), last_group_columns, named_key.clone())
            else {
                return Ok(None);
            };
            // The PARTITION BY column that is stage 1's window, traced like the key.
            let through = [vec![p.pre.clone()], plans[1..].to_vec()].concat();
            let partition_window = p
                .partition_columns
                .iter()
                .copied()
                .find(|&c| last_window.is_some() && trace_down(&through, c) == last_window);
            let spec = (p.pre.schema(), p.partition_columns.clone(), partition_window);
            steps.extend([
                Step::rows(slot, &p.pre)?,
                Step::Partitions { slot: p.segment_slot, segment: p.segment },
                Step::rows(p.post_slot, &p.post)?,
            ]);
            Ok(Some((steps, spec, key_columns)))
        });
        let window_output = window_output.transpose()?.flatten();
        let emission = if top_n.is_some() {
            Emission::TopN { key_columns: named_key }
        } else if let Some((_, _, key_columns)) = &window_output {
            Emission::Partitioned { key_columns: key_columns.clone() }
        } else if let Some(Level { cut, .. }) = chain.last() {
            // Keyed by the last level's groups, as stage 1 by its own below.
            let width = output_schema.fields().len();
            match result_key(std::slice::from_ref(&cut.top), width, cut.num_group_columns(), named_key.clone()) {
                Some((key_columns, group_columns)) => {
                    let can_go = cut.num_group_columns() > 0 || contains_node(&cut.top, "FilterExec");
                    match group_columns.is_none() && can_go {
                        true => Emission::FullDiff { key_columns: Some(key_columns) },
                        false => Emission::Chained { key_columns, group_columns },
                    }
                }
                None => Emission::FullDiff { key_columns: None },
            }
        } else if stage2.is_some() || !top_row_wise {
            Emission::FullDiff { key_columns: named_key }
        } else {
            match result_key(std::slice::from_ref(&top), output_schema.fields().len(), num_group_columns, named_key) {
                None => Emission::FullDiff { key_columns: None },
                Some((key_columns, group_columns)) => {
                    let sessions = matches!(&window, Some(w) if matches!(w.spec, windows::WindowSpec::Session { .. }));
                    // Without group columns behind the key, rows that a HAVING drops or
                    // sessions that merge cannot be found to delete: diff whole results.
                    if group_columns.is_none() && (sessions || contains_node(&top, "FilterExec")) {
                        Emission::FullDiff { key_columns: Some(key_columns) }
                    } else {
                        Emission::Keyed { key_columns, group_columns }
                    }
                }
            }
        };
        let window = window.map(|call| PlannedWindow {
            time_column: source_schema.index_of(&call.time_column).expect("checked by find_window"),
            call,
        });
        if !chain.is_empty()
            && !matches!(emission, Emission::Chained { .. } | Emission::TopN { .. } | Emission::Partitioned { .. })
        {
            if stage1_levels > 0 {
                return Err(user(
                    &"an aggregate of an aggregate needs a key: select `_id`, set `-- key:`, or select the outer GROUP BY columns",
                ));
            }
            chain.clear(); // the second stage diffs whole results
        }
        let partitioned_output = window_output.map(|(steps, (schema, partition_columns, window), _)| {
            (steps, PartitionSpec { schema, partition_columns, window })
        });
        Ok(StreamingPlan {
            partitioned_output,
            source_schema,
            source_slot,
            stage1: Stage1::Aggregation(Box::new(stage1)),
            final_schema,
            stage2,
            chain,
            top_n,
            window,
            output_schema,
            emission,
            output_mode,
            task_ctx: ctx.task_ctx(),
        })
    }

    /// A query without aggregation (`physical`, planned from `logical`): planned again
    /// with the record column carried to its output.
    async fn row_by_row(
        def: &PipelineDefinition,
        ctx: &SessionContext,
        logical: LogicalPlan,
        physical: &Arc<dyn ExecutionPlan>,
        source_schema: SchemaRef,
        source_slot: LiveSlot,
    ) -> Result<Self> {
        let user = |e: &dyn std::fmt::Display| Error::user(format!("{}: {e}", def.path.display()));
        if let Err(name) = check_nodes(physical, &ROW_WISE_INPUT) {
            return Err(user(&format!(
                "`{name}` over SOURCE cannot run on a stream without an aggregation: only row-by-row operations (SELECT expressions, WHERE, UNNEST, UNION ALL) may, or add a GROUP BY"
            )));
        }
        if def.stage2.is_some() {
            return Err(user(&"a second stage reads the first stage's aggregation: the first stage must aggregate"));
        }
        if def.settings.output_mode == OutputMode::Complete {
            return Err(user(
                &"output_mode complete rewrites the whole result every batch, which needs an aggregation (use update or append)",
            ));
        }
        let carried = carry_record_column(logical).map_err(|e| user(&without_internal_columns(e)))?;
        let plan = ctx.state().create_physical_plan(&carried).await.map_err(|e| user(&without_internal_columns(e)))?;
        let schema = plan.schema();
        let width = schema.fields().len();
        if schema.fields().last().is_none_or(|f| f.name() != RECORD_COLUMN) {
            return Err(user(&"this query's rows cannot be traced to the records they come from; add a GROUP BY"));
        }
        let output_schema = Arc::new(Schema::new(schema.fields()[..width - 1].to_vec()));
        let key_columns = named_key(def, &output_schema)?;
        Ok(StreamingPlan {
            source_schema,
            source_slot,
            stage1: Stage1::RowByRow(plan),
            final_schema: output_schema.clone(),
            stage2: None,
            chain: Vec::new(),
            top_n: None,
            partitioned_output: None,
            window: None,
            output_schema,
            emission: Emission::Rows { key_columns },
            output_mode: def.settings.output_mode,
            task_ctx: ctx.task_ctx(),
        })
    }

    /// The output columns that make up the result's key, if it has one (`-- key:`, an
    /// `_id` column, or the group columns the output copies).
    pub fn key_columns(&self) -> Option<&[usize]> {
        match &self.emission {
            Emission::Keyed { key_columns, .. }
            | Emission::Chained { key_columns, .. }
            | Emission::Partitioned { key_columns } => Some(key_columns),
            Emission::Rows { key_columns } | Emission::FullDiff { key_columns } | Emission::TopN { key_columns } => {
                key_columns.as_deref()
            }
        }
    }

    /// Stage 1's aggregation (every emission but `Rows` has one).
    fn cut(&self) -> &Cut {
        match &self.stage1 {
            Stage1::Aggregation(cut) => cut,
            Stage1::RowByRow(_) => unreachable!("a query without aggregation has no aggregation to cut"),
        }
    }

    /// What the streaming aggregation needs of DataFusion's plan; `None` for a query
    /// without aggregation (it keeps no state).
    pub fn aggregate_spec(&self) -> Option<AggregateSpec> {
        let Stage1::Aggregation(cut) = &self.stage1 else { return None };
        Some(AggregateSpec {
            window: self.window.as_ref().map(|w| (w.call.group_index, w.call.spec)),
            input: InputKind::InsertOnly,
            emit_previous: !self.chain.is_empty() || self.top_n.is_some() || self.partitioned_output.is_some(),
            ..cut.spec()
        })
    }

    /// A query without aggregation over one micro-batch of `SOURCE` rows: its output
    /// rows, and for each the index of the record it came from.
    pub async fn rows(&self, batch: RecordBatch) -> Result<(RecordBatch, UInt32Array)> {
        let Stage1::RowByRow(plan) = &self.stage1 else {
            return Err(Error::internal("rows of a query with an aggregation were asked for".to_string()));
        };
        let out = self.run_over(&self.source_slot, batch, plan).await?;
        let records = out.column(out.num_columns() - 1).as_primitive::<UInt32Type>().clone();
        let mut out = out;
        out.remove_column(out.num_columns() - 1);
        Ok((out, records))
    }

    /// The aggregations over stage 1's changes, level by level (none without a chain).
    pub fn chain_specs(&self) -> Vec<AggregateSpec> {
        let levels = self.chain.len();
        let spec = self.window.as_ref().map(|w| w.call.spec);
        (0..levels)
            .map(|k| AggregateSpec {
                input: InputKind::Changelog,
                // The level above, or a top-N over the last level, retracts old values.
                emit_previous: k + 1 < levels || self.top_n.is_some() || self.partitioned_output.is_some(),
                window: self.chain[k].window.zip(spec),
                ..self.chain[k].cut.spec()
            })
            .collect()
    }

    /// Whether what runs over stage 1's changes needs the rows of closed windows to be
    /// rebuilt after a restart: unless all of its state is per window (and leaves with
    /// the window), it does.
    pub fn keeps_closed_rows(&self) -> bool {
        let chain_needs = self.chain.iter().any(|l| {
            l.window.is_none() || l.cut.top_n.is_some() || (l.cut.partitioned.is_some() && l.partition_window.is_none())
        });
        match &self.emission {
            Emission::Rows { .. } | Emission::Keyed { .. } => false,
            Emission::FullDiff { .. } | Emission::TopN { .. } => true,
            Emission::Chained { .. } => chain_needs,
            Emission::Partitioned { .. } => {
                chain_needs || self.partitioned_output.as_ref().is_none_or(|(_, p)| p.window.is_none())
            }
        }
    }

    /// Per level of the chain, what it keeps of its input rows if it has window
    /// functions or an `ORDER BY … LIMIT` before its aggregation.
    pub fn chain_between(&self) -> Result<Vec<Option<Between>>> {
        let between = |l: &Level| -> Result<Option<Between>> {
            if let Some(t) = &l.cut.top_n {
                let top_n = TopN::new(t.sort.clone(), t.fetch, t.below.schema())?;
                return Ok(Some(Between::TopN(TopNChanges::new(top_n))));
            }
            let Some(p) = &l.cut.partitioned else { return Ok(None) };
            let spec = PartitionSpec {
                schema: p.pre.schema(),
                partition_columns: p.partition_columns.clone(),
                window: l.partition_window,
            };
            Ok(Some(Between::Partitions(PartitionedRows::new(spec)?)))
        };
        self.chain.iter().map(between).collect()
    }

    /// The input changes of level `k` of the chain from the changes of the level below
    /// (stage 1's for `k` = 0); `between` holds the rows its window functions are
    /// recomputed over or its `ORDER BY … LIMIT` picks from, if it has them.
    pub async fn chain_input(&self, k: usize, changes: Changelog, between: Option<&mut Between>) -> Result<Changelog> {
        self.run_steps(&self.chain[k].feed, changes, between).await
    }

    /// Runs `steps` over changes.
    async fn run_steps(&self, steps: &[Step], changes: Changelog, between: Option<&mut Between>) -> Result<Changelog> {
        let mut changes = changes;
        let mut between = between;
        for step in steps {
            changes = match (step, between.as_deref_mut()) {
                (Step::Rows(slot, plan), _) => {
                    Changelog::from_batch(self.run_over(slot, changes.into_batch(), plan).await?)?
                }
                (Step::Partitions { slot, segment }, Some(Between::Partitions(rows))) => {
                    let (before, after) = rows.apply(&changes)?;
                    let retracted = self.run_over(slot, before, segment).await?;
                    let inserted = self.run_over(slot, after, segment).await?;
                    Changelog::new(&inserted, &retracted)?
                }
                (Step::TopN, Some(Between::TopN(top_n))) => top_n.apply(&changes)?,
                _ => return Err(Error::internal("a step without the state it keeps".to_string())),
            };
        }
        Ok(changes)
    }

    /// The schema and PARTITION BY columns of the rows the result's window functions
    /// are recomputed over (`Emission::Partitioned`).
    pub fn partitioned_output_spec(&self) -> Option<PartitionSpec> {
        self.partitioned_output.as_ref().map(|(_, spec)| spec.clone())
    }

    /// The result's changes from stage 1's changes, through the window functions over
    /// the touched partitions: their new rows inserted, their old rows retracted.
    pub async fn partitioned_output(&self, changes: Changelog, partitions: &mut Between) -> Result<Changelog> {
        let (steps, _) = self.partitioned_output.as_ref().expect("a partitioned result");
        self.run_steps(steps, changes, Some(partitions)).await
    }

    /// The incremental top-N's sort, N and input schema, if the pipeline has one.
    pub fn top_n_spec(&self) -> Option<(Vec<PhysicalSortExpr>, usize, SchemaRef)> {
        let (_, t) = self.top_n.as_ref()?;
        Some((t.sort.clone(), t.fetch, t.below.schema()))
    }

    /// The changes of the rows the top-N reads (what runs below its sort) from the
    /// changes of the groups below it: stage 1's groups, or the chain's last level's.
    pub async fn top_n_input(&self, changes: Changelog) -> Result<Changelog> {
        let (input, t) = self.top_n.as_ref().expect("a top-N");
        Changelog::from_batch(self.run_over(input, changes.into_batch(), &t.below_changes).await?)
    }

    /// The result from the top-N's first rows (what runs above its sort).
    pub async fn top_n_output(&self, first: RecordBatch) -> Result<RecordBatch> {
        let (_, t) = self.top_n.as_ref().expect("a top-N");
        self.run_over(&t.slot, first, &t.above).await
    }

    /// Runs the rest of the query over final values of the chain's last level.
    pub async fn chain_top(&self, finals: RecordBatch) -> Result<RecordBatch> {
        let cut = &self.chain.last().expect("a chain").cut;
        self.run_over(&cut.top_slot, finals, &cut.top).await
    }

    /// Runs `plan` with `slot` holding `batch`.
    async fn run_over(
        &self,
        slot: &LiveSlot,
        batch: RecordBatch,
        plan: &Arc<dyn ExecutionPlan>,
    ) -> Result<RecordBatch> {
        slot.set(vec![batch]);
        let out = self.execute(plan).await;
        slot.set(vec![]);
        out
    }

    /// Runs the part of stage 1 below the aggregation over one micro-batch of
    /// `SOURCE` rows: the rows the aggregation reads.
    pub async fn aggregate_input(&self, batch: RecordBatch) -> Result<RecordBatch> {
        self.run_over(&self.source_slot, batch, &self.cut().input).await
    }

    /// Runs the rest of stage 1 over final values of groups (`final_schema`).
    pub async fn top(&self, finals: RecordBatch) -> Result<RecordBatch> {
        self.run_over(&self.cut().top_slot, finals, &self.cut().top).await
    }

    /// Runs stage 2 over stage 1's current result, if the pipeline has one.
    pub async fn stage2(&self, aggregated: RecordBatch) -> Result<RecordBatch> {
        let Some((slot, plan)) = &self.stage2 else { return Ok(aggregated) };
        slot.set(vec![aggregated]);
        let out = self.execute(plan).await;
        slot.set(vec![]);
        out
    }

    async fn execute(&self, plan: &Arc<dyn ExecutionPlan>) -> Result<RecordBatch> {
        // Operators may keep run-time state (dynamic filters); start each run clean.
        let plan = reset_plan_states(plan.clone())?;
        let schema = plan.schema();
        let batches = collect(plan, self.task_ctx.clone()).await?;
        Ok(concat_batches(&schema, &batches)?)
    }
}

/// A plan cut at its (only) aggregation: what runs below it, the aggregation itself,
/// and what runs above it over the aggregation's final values.
struct Cut {
    input: Arc<dyn ExecutionPlan>,
    group_by: PhysicalGroupBy,
    aggregates: Vec<Arc<AggregateFunctionExpr>>,
    filters: Vec<Option<Arc<dyn datafusion::physical_expr::PhysicalExpr>>>,
    /// Group columns + final values.
    final_schema: SchemaRef,
    top_slot: LiveSlot,
    /// The plan above the aggregation, reading `top_slot`.
    top: Arc<dyn ExecutionPlan>,
    /// Whether `top` maps each group to at most one row.
    top_row_wise: bool,
    /// The scan of `top_slot` that replaced the aggregation in `top`.
    replacement: Arc<dyn ExecutionPlan>,
    /// `input` split around window functions recomputed per partition, if it has them.
    partitioned: Option<Partitioned>,
    /// `input` split at an `ORDER BY … LIMIT`, if it has one.
    top_n: Option<TopNPlan>,
}

/// A plan with window functions split around them: `pre` (row by row), the window
/// functions (`segment`, run over whole partitions), `post` (row by row).
struct Partitioned {
    pre: Arc<dyn ExecutionPlan>,
    segment_slot: LiveSlot,
    segment: Arc<dyn ExecutionPlan>,
    /// The PARTITION BY columns, as indices of `pre`'s output.
    partition_columns: Vec<usize>,
    post_slot: LiveSlot,
    post: Arc<dyn ExecutionPlan>,
}

/// One step from the changes of the level below to a level's input changes.
enum Step {
    /// A row-by-row plan carrying weights ([`Step::rows`]), run over the changes with
    /// its slot holding them.
    Rows(LiveSlot, Arc<dyn ExecutionPlan>),
    /// Window functions over whole partitions: the touched partitions' rows before and
    /// after a batch go through `segment` (`operators::partitioned`).
    Partitions { slot: LiveSlot, segment: Arc<dyn ExecutionPlan> },
    /// `ORDER BY … LIMIT N` between aggregations: the changes of its first N rows
    /// (`operators::top_n`).
    TopN,
}

impl Step {
    /// The row-by-row `plan` over `slot`, rebuilt to run over changes.
    fn rows(slot: LiveSlot, plan: &Arc<dyn ExecutionPlan>) -> std::result::Result<Step, DataFusionError> {
        Ok(Step::Rows(slot, carry_weight(plan)?))
    }
}

/// The steps that read a level's input from `slot` (its scan in the cut's input).
fn input_steps(slot: LiveSlot, cut: &Cut) -> std::result::Result<Vec<Step>, DataFusionError> {
    if let Some(t) = &cut.top_n {
        return Ok(vec![Step::Rows(slot, t.below_changes.clone()), Step::TopN, Step::rows(t.slot.clone(), &t.above)?]);
    }
    Ok(match &cut.partitioned {
        None => vec![Step::rows(slot, &cut.input)?],
        Some(p) => vec![
            Step::rows(slot, &p.pre)?,
            Step::Partitions { slot: p.segment_slot.clone(), segment: p.segment.clone() },
            Step::rows(p.post_slot.clone(), &p.post)?,
        ],
    })
}

/// Splits `input` around its window functions, if they all partition by the same
/// columns (or all by none, where `one_partition` allows it) and only sorts and window functions come between them.
fn split_partitioned(
    input: &Arc<dyn ExecutionPlan>,
    one_partition: OnePartition,
) -> std::result::Result<Option<Partitioned>, DataFusionError> {
    // The single-child chain from the top down.
    let mut nodes = vec![input.clone()];
    while let [child] = nodes.last().expect("one at least").children().as_slice() {
        let child = (*child).clone();
        nodes.push(child);
    }
    let windowish = |n: &Arc<dyn ExecutionPlan>| {
        n.is::<BoundedWindowAggExec>()
            || n.is::<WindowAggExec>()
            || n.downcast_ref::<SortExec>().is_some_and(|s| s.fetch().is_none())
    };
    let (Some(top), Some(bottom)) = (nodes.iter().position(windowish), nodes.iter().rposition(windowish)) else {
        return Ok(None);
    };
    // Projections may sit between the sorts and window functions (DataFusion pushes
    // them down): they run over whole partitions too.
    if !nodes[top..=bottom].iter().all(|n| windowish(n) || n.is::<ProjectionExec>()) {
        return Ok(None);
    }
    // A column of node `i`'s input as a column of the rows below the segment, through
    // the projections between (sorts keep their input's columns, windows add theirs
    // at the end).
    let below_segment = |i: usize, c: usize| -> Option<usize> {
        nodes[i + 1..=bottom].iter().try_fold(c, |c, node| match node.downcast_ref::<ProjectionExec>() {
            Some(p) => p.expr().get(c)?.expr.downcast_ref::<Column>().map(|col| col.index()),
            None => Some(c),
        })
    };
    let mut partition_columns: Option<Vec<usize>> = None;
    for (i, node) in nodes.iter().enumerate().take(bottom + 1).skip(top) {
        let keys = if let Some(w) = node.downcast_ref::<BoundedWindowAggExec>() {
            w.partition_keys()
        } else if let Some(w) = node.downcast_ref::<WindowAggExec>() {
            w.partition_keys()
        } else {
            continue;
        };
        let columns: Option<Vec<usize>> =
            keys.iter().map(|k| k.downcast_ref::<Column>().and_then(|c| below_segment(i, c.index()))).collect();
        match (columns, &partition_columns) {
            (Some(c), None) if !c.is_empty() || one_partition == OnePartition::Allowed => partition_columns = Some(c),
            (Some(c), Some(seen)) if &c == seen => {}
            _ => return Ok(None),
        }
    }
    let Some(partition_columns) = partition_columns else { return Ok(None) };
    let pre = nodes[bottom].children()[0].clone();
    if check_nodes(&pre, &ROW_WISE_INPUT).is_err() {
        return Ok(None);
    }
    let replace = |plan: &Arc<dyn ExecutionPlan>, target: &Arc<dyn ExecutionPlan>, with: Arc<dyn ExecutionPlan>| {
        plan.clone().transform_down(|node| {
            Ok(match Arc::ptr_eq(&node, target) {
                true => Transformed::new(with.clone(), true, TreeNodeRecursion::Jump),
                false => Transformed::no(node),
            })
        })
    };
    let segment_slot = LiveSlot::default();
    let segment_scan: Arc<dyn ExecutionPlan> = Arc::new(LiveExec::new(pre.schema(), segment_slot.clone(), None)?);
    let segment = replace(&nodes[top], &pre, segment_scan)?.data;
    let post_slot = LiveSlot::default();
    let post_scan: Arc<dyn ExecutionPlan> = Arc::new(LiveExec::new(nodes[top].schema(), post_slot.clone(), None)?);
    let post = replace(input, &nodes[top], post_scan)?.data;
    if check_nodes(&post, &ROW_WISE_INPUT).is_err() {
        return Ok(None);
    }
    Ok(Some(Partitioned { pre, segment_slot, segment, partition_columns, post_slot, post }))
}

/// Whether window functions without PARTITION BY may be split out (their rows are one
/// partition, recomputed whole every batch). Between aggregations they may; over the
/// result, diffing the whole result does the same work and is what runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnePartition {
    Allowed,
    Refused,
}

const MIXED_INPUTS: &str = "a UNION or JOIN of an aggregation with SOURCE or with another aggregation cannot run incrementally yet; UNION ALL branches over SOURCE may feed one aggregation";

/// A plan split at its `ORDER BY … LIMIT N`: `below` the sort (over final values of
/// groups), the sort itself, and `above` it (reading `slot`).
struct TopNPlan {
    below: Arc<dyn ExecutionPlan>,
    /// `below` over changes.
    below_changes: Arc<dyn ExecutionPlan>,
    sort: Vec<PhysicalSortExpr>,
    fetch: usize,
    slot: LiveSlot,
    above: Arc<dyn ExecutionPlan>,
}

/// Splits `top` at its one `SortExec` with a fetch (`ORDER BY … LIMIT N`), if row-by-row
/// parts are all there is below and above it.
fn split_top_n(top: &Arc<dyn ExecutionPlan>) -> std::result::Result<Option<TopNPlan>, DataFusionError> {
    let mut sorts: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
    top.apply(|node| {
        if node.is::<SortExec>() {
            sorts.push(node.clone());
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    let [sort_node] = sorts.as_slice() else { return Ok(None) };
    let sort = sort_node.downcast_ref::<SortExec>().expect("found above");
    let Some(fetch) = sort.fetch() else { return Ok(None) };
    if check_nodes(sort.input(), &ROW_WISE_TOP).is_err() {
        return Ok(None);
    }
    let slot = LiveSlot::default();
    let scan: Arc<dyn ExecutionPlan> = Arc::new(LiveExec::new(sort.schema(), slot.clone(), None)?);
    let above = top
        .clone()
        .transform_down(|node| {
            Ok(if Arc::ptr_eq(&node, sort_node) {
                Transformed::new(scan.clone(), true, TreeNodeRecursion::Jump)
            } else {
                Transformed::no(node)
            })
        })?
        .data;
    if check_nodes(&above, &ROW_WISE_TOP).is_err() {
        return Ok(None);
    }
    let below = sort.input().clone();
    let below_changes = carry_weight(&below)?;
    Ok(Some(TopNPlan { below, below_changes, sort: sort.expr().to_vec(), fetch, slot, above }))
}

/// One aggregation of a chain over stage 1's changes.
struct Level {
    /// Plans that turn the final values of the level below into this level's input
    /// rows, each run over the output of the one before (with its slot holding it).
    feed: Vec<Step>,
    cut: Cut,
    /// The group column that is stage 1's event-time window, if the level groups by
    /// it: its groups leave the state once the watermark passes their window.
    window: Option<usize>,
    /// The PARTITION BY column of its window functions that is stage 1's window.
    partition_window: Option<usize>,
}

/// The result's key: `named` (the one asked for), or else the output columns that are
/// copies of the `num_group_columns` group columns, traced down `plans` (see
/// [`trace_down`]) from an output `width` columns wide; with, per key column, the
/// group column behind it (`None` unless every key column is one).
fn result_key(
    plans: &[Arc<dyn ExecutionPlan>],
    width: usize,
    num_group_columns: usize,
    named: Option<Vec<usize>>,
) -> Option<(Vec<usize>, Option<Vec<usize>>)> {
    let traced: Vec<Option<usize>> = (0..width).map(|c| trace_down(plans, c)).collect();
    let from_groups = || (0..num_group_columns).map(|g| traced.iter().position(|t| *t == Some(g))).collect();
    let key_columns: Vec<usize> = named.or_else(from_groups)?;
    let group_columns = key_columns.iter().map(|&k| traced[k]).collect();
    Some((key_columns, group_columns))
}

/// Traces column `c` of the first plan's output down through `plans` (each reading the
/// next one's output) to a column of the last one's input.
fn trace_down(plans: &[Arc<dyn ExecutionPlan>], c: usize) -> Option<usize> {
    plans.iter().try_fold(c, |c, plan| trace_to_group(plan, c))
}

impl Level {
    /// A level of `cut` read by `feed`; `below` traces its input down to the final
    /// values of the level below, whose window column is `below_window`.
    fn new(feed: Vec<Step>, cut: Cut, below: &[Arc<dyn ExecutionPlan>], below_window: Option<usize>) -> Self {
        let is_window = |plans: Vec<Arc<dyn ExecutionPlan>>, c: usize| {
            below_window.is_some() && trace_down(&plans, c) == below_window
        };
        let with = |first: &Arc<dyn ExecutionPlan>| [vec![first.clone()], below.to_vec()].concat();
        let window = cut
            .group_by
            .expr()
            .iter()
            .position(|(e, _)| e.downcast_ref::<Column>().is_some_and(|c| is_window(with(&cut.input), c.index())));
        let partition_window = cut
            .partitioned
            .as_ref()
            .and_then(|p| p.partition_columns.iter().copied().find(|&c| is_window(with(&p.pre), c)));
        Level { feed, cut, window, partition_window }
    }
}

enum CutError {
    NoAggregate,
    /// SOURCE (or a lower level) read both below and above an aggregation (a UNION or
    /// JOIN of an aggregation with something else).
    MixedInputs,
    /// A node below the aggregation that does not work row by row.
    NotRowWise(String),
    DataFusion(DataFusionError),
}

impl Cut {
    fn num_group_columns(&self) -> usize {
        self.final_schema.fields().len() - self.aggregates.len()
    }

    /// The aggregation, for [`crate::operators::aggregate::Aggregate`] (no window, insert-only).
    fn spec(&self) -> AggregateSpec {
        AggregateSpec {
            group_by: self.group_by.clone(),
            aggregates: self.aggregates.clone(),
            filters: self.filters.clone(),
            final_schema: self.final_schema.clone(),
            window: None,
            input: InputKind::InsertOnly,
            input_schema: self.input.schema(),
            emit_previous: false,
        }
    }
}

/// A second stage cut level by level, if it is aggregations between row-by-row parts.
fn cut_levels(plan: &Arc<dyn ExecutionPlan>) -> Option<Vec<Cut>> {
    let mut levels = vec![cut_at_aggregate(plan, true).ok()?];
    while contains_node(&levels.last()?.top, "AggregateExec") {
        let next = cut_at_aggregate(&levels.last()?.top, true).ok()?;
        levels.push(next);
    }
    levels.last()?.top_row_wise.then_some(levels)
}

/// Cuts `physical` at its lowest aggregation (one `AggregateExec`, or DataFusion's
/// `Final`/`Partial` pair), which must read its input row by row.
fn cut_at_aggregate(physical: &Arc<dyn ExecutionPlan>, over_changes: bool) -> std::result::Result<Cut, CutError> {
    let mut aggregates: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
    physical
        .apply(|node| {
            if node.is::<AggregateExec>() {
                aggregates.push(node.clone());
            }
            Ok(TreeNodeRecursion::Continue)
        })
        .map_err(CutError::DataFusion)?;
    // Aggregations in pre-order: the lowest comes last (after its `Final`, if split).
    let (top_aggregate, raw) = match aggregates.as_slice() {
        [] => return Err(CutError::NoAggregate),
        [.., final_, partial] if is_partial(partial) => (final_.clone(), partial.clone()),
        [.., lowest] => (lowest.clone(), lowest.clone()),
    };
    let raw_exec = raw.downcast_ref::<AggregateExec>().expect("checked above");
    // Over changes (not over SOURCE), window functions may come between (recomputed
    // per partition touched), or an `ORDER BY … LIMIT` (its first rows' changes).
    let (partitioned, top_n) = match check_nodes(raw_exec.input(), &ROW_WISE_INPUT) {
        Ok(()) => (None, None),
        Err(name) if over_changes => {
            let input = raw_exec.input();
            match split_partitioned(input, OnePartition::Allowed).map_err(CutError::DataFusion)? {
                Some(p) => (Some(p), None),
                None => {
                    let top_n = split_top_n(input).map_err(CutError::DataFusion)?;
                    (None, Some(top_n.ok_or(CutError::NotRowWise(name))?))
                }
            }
        }
        Err(name) => return Err(CutError::NotRowWise(name)),
    };
    let final_schema = top_aggregate.schema();
    let top_slot = LiveSlot::default();
    let replacement: Arc<dyn ExecutionPlan> =
        Arc::new(LiveExec::new(final_schema.clone(), top_slot.clone(), None).map_err(CutError::DataFusion)?);
    let top = physical
        .clone()
        .transform_down(|node| {
            Ok(if Arc::ptr_eq(&node, &top_aggregate) {
                Transformed::new(replacement.clone(), true, TreeNodeRecursion::Jump)
            } else {
                Transformed::no(node)
            })
        })
        .map_err(CutError::DataFusion)?
        .data;
    if !leaves(&top).iter().all(|leaf| Arc::ptr_eq(leaf, &replacement)) {
        return Err(CutError::MixedInputs);
    }
    Ok(Cut {
        partitioned,
        top_n,
        replacement,
        input: raw_exec.input().clone(),
        group_by: raw_exec.group_expr().clone(),
        aggregates: raw_exec.aggr_expr().to_vec(),
        filters: raw_exec.filter_expr().to_vec(),
        final_schema,
        top_slot,
        top_row_wise: check_nodes(&top, &ROW_WISE_TOP).is_ok(),
        top,
    })
}

/// The key asked for: `-- key:` columns, or else an `_id` column of the result.
fn named_key(def: &PipelineDefinition, output_schema: &SchemaRef) -> Result<Option<Vec<usize>>> {
    let user = |e: &dyn std::fmt::Display| Error::user(format!("{}: {e}", def.path.display()));
    Ok(match (&def.settings.key, output_schema.index_of("_id")) {
        (Some(names), _) => Some(
            names
                .iter()
                .map(|n| output_schema.index_of(n).map_err(|_| user(&format!("key column {n:?} is not in the result"))))
                .collect::<Result<Vec<usize>>>()?,
        ),
        (None, Ok(id)) => Some(vec![id]),
        (None, Err(_)) => None,
    })
}

/// `plan` (row by row over `SOURCE`) with [`RECORD_COLUMN`] carried through every
/// projection to the end of its output, so that each output row names its record.
fn carry_record_column(plan: LogicalPlan) -> std::result::Result<LogicalPlan, DataFusionError> {
    let carried = plan.transform_up(|node| {
        let LogicalPlan::Projection(projection) = &node else {
            // Filters, unions, unnests, aliases: their schema follows their inputs'.
            return Ok(Transformed::yes(node.recompute_schema()?));
        };
        let has = |schema: &DFSchema| schema.fields().iter().any(|f| f.name() == RECORD_COLUMN);
        if !has(projection.input.schema()) {
            return Ok(Transformed::no(node));
        }
        // `SELECT *` below the top already has it; move it to the end.
        let (qualifier, field) = projection.input.schema().qualified_field_with_unqualified_name(RECORD_COLUMN)?;
        let record = Expr::Column(datafusion::common::Column::from((qualifier, field)));
        let mut exprs: Vec<Expr> = projection
            .expr
            .iter()
            .filter(|e| !matches!(e, Expr::Column(c) if c.name == RECORD_COLUMN))
            .cloned()
            .collect();
        exprs.push(record);
        Ok(Transformed::yes(LogicalPlan::Projection(Projection::try_new(exprs, projection.input.clone())?)))
    })?;
    Ok(carried.data)
}

/// The leaves of a plan.
fn leaves(plan: &Arc<dyn ExecutionPlan>) -> Vec<Arc<dyn ExecutionPlan>> {
    let mut found = Vec::new();
    let _ = plan.apply(|node| {
        if node.children().is_empty() {
            found.push(node.clone());
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

/// The error without our internal columns among the "valid fields" it lists (a user
/// never wrote `__watermark` and cannot use it).
fn without_internal_columns(error: DataFusionError) -> DataFusionError {
    match error {
        DataFusionError::SchemaError(schema_error, backtrace) => match *schema_error {
            SchemaError::FieldNotFound { field, valid_fields } => DataFusionError::SchemaError(
                Box::new(SchemaError::FieldNotFound {
                    field,
                    valid_fields: valid_fields
                        .into_iter()
                        .filter(|c| !INTERNAL_COLUMNS.contains(&c.name.as_str()))
                        .collect(),
                }),
                backtrace,
            ),
            other => DataFusionError::SchemaError(Box::new(other), backtrace),
        },
        DataFusionError::Context(context, inner) => {
            DataFusionError::Context(context, Box::new(without_internal_columns(*inner)))
        }
        DataFusionError::Diagnostic(diagnostic, inner) => {
            DataFusionError::Diagnostic(diagnostic, Box::new(without_internal_columns(*inner)))
        }
        other => other,
    }
}

fn is_partial(plan: &Arc<dyn ExecutionPlan>) -> bool {
    plan.downcast_ref::<AggregateExec>().is_some_and(|a| *a.mode() == AggregateMode::Partial)
}

/// The first node (by name) of `plan` not in `allowed`, as the error.
fn check_nodes(plan: &Arc<dyn ExecutionPlan>, allowed: &[&str]) -> std::result::Result<(), String> {
    let mut bad = None;
    let _ = plan.apply(|node| {
        if !allowed.contains(&node.name()) {
            bad = Some(node.name().to_string());
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    bad.map_or(Ok(()), Err)
}

fn contains_node(plan: &Arc<dyn ExecutionPlan>, name: &str) -> bool {
    let mut found = false;
    let _ = plan.apply(|node| {
        found = node.name() == name;
        Ok(if found { TreeNodeRecursion::Stop } else { TreeNodeRecursion::Continue })
    });
    found
}

/// Follows output column `column` of a row-wise `top` down to the aggregation's
/// output: `Some(i)` if it is a copy of column `i` there.
fn trace_to_group(plan: &Arc<dyn ExecutionPlan>, column: usize) -> Option<usize> {
    if plan.is::<LiveExec>() {
        return Some(column);
    }
    // Sorts keep their input's columns; window functions add theirs after them.
    if plan.is::<SortExec>() || plan.is::<BoundedWindowAggExec>() || plan.is::<WindowAggExec>() {
        let input = plan.children()[0].clone();
        return (column < input.schema().fields().len()).then(|| trace_to_group(&input, column)).flatten();
    }
    if let Some(projection) = plan.downcast_ref::<ProjectionExec>() {
        let expr = &projection.expr().get(column)?.expr;
        let col = expr.downcast_ref::<Column>()?;
        return trace_to_group(projection.input(), col.index());
    }
    if let Some(filter) = plan.downcast_ref::<FilterExec>() {
        let column = match filter.projection() {
            Some(p) => *p.get(column)?,
            None => column,
        };
        return trace_to_group(filter.input(), column);
    }
    match plan.children().as_slice() {
        [child] if ["CoalesceBatchesExec", "CooperativeExec"].contains(&plan.name()) => trace_to_group(child, column),
        _ => None,
    }
}

/// The window in the (single) aggregation's GROUP BY, checked against the source.
fn find_window(plan: &LogicalPlan, source: &SourceSchema) -> std::result::Result<Option<WindowCall>, String> {
    let mut found: Vec<WindowCall> = Vec::new();
    let mut error = None;
    let _ = plan.apply(|node| {
        if let LogicalPlan::Aggregate(agg) = node {
            for (i, expr) in agg.group_expr.iter().enumerate() {
                match windows::window_call(i, expr) {
                    Ok(Some(call)) => found.push(call),
                    Ok(None) => {}
                    Err(e) => error = Some(e.to_string()),
                }
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    if let Some(e) = error {
        return Err(e);
    }
    match found.as_slice() {
        [] => Ok(None),
        [call] => match source.event_time_name() {
            Some(name) if name == call.time_column => Ok(Some(call.clone())),
            Some(name) => Err(format!(
                "windows must be over the event-time column `{name}` (declared in {}), not `{}`",
                source.origin, call.time_column
            )),
            None => {
                Err(format!("windows need an event-time column, and {} declares no TIMESTAMP column", source.origin))
            }
        },
        _ => Err("only one window per GROUP BY".to_string()),
    }
}

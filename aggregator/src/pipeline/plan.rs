//! Planning a pipeline: DataFusion plans the SQL once, as for a batch query, and the
//! physical optimizer rule of [`crate::pipeline::dataflow`] swaps its stateful nodes
//! for streaming operators over changelogs:
//!
//! ```text
//!   result changes   (the root's output: rows with a weight, applied by key, see emit)
//!        ▲
//!   stage 2          … FROM AGGREGATED: planned the same way over stage 1's changes
//!        ▲
//!   operators        aggregations of aggregations, ORDER BY … LIMIT, window functions,
//!   and row-by-row   HAVING, SELECT expressions: over changelogs
//!        ▲
//!   source aggregation   over SOURCE's events (its state is checkpointed)
//!        ▲
//!   input            WHERE, window expressions, UNION ALL: row by row over SOURCE
//! ```
//!
//! Each micro-batch runs the whole plan once ([`StreamingPlan::run`]).
//!
//! A query without aggregation is planned again with the hidden record column carried
//! to its output, so that each row is written under its record's location
//! ([`StreamingPlan::rows`]).

use std::sync::Arc;

use datafusion::arrow::array::{AsArray, UInt32Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, UInt32Type};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::DFSchema;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{DataFusionError, SchemaError};
use datafusion::execution::TaskContext;
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::logical_expr::{Expr, LogicalPlan, Projection};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{DataFrame, SessionConfig, SessionContext};

use crate::error::{Error, Result};
use crate::operators::aggregate::AggregateOperator;
use crate::operators::changelog::Changelog;
use crate::operators::exec::{Closing, OperatorStats, SharedOperator, StreamingExec, Tick};
use crate::pipeline::dataflow::{Found, ToDataflow, Upstream};
use crate::pipeline::definition::{OutputMode, PipelineDefinition};
use crate::pipeline::live_table::{LiveExec, LiveSlot, LiveTable, run_over};
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
/// batch queries alike, so both read the same SQL the same way. Only session and
/// hopping windows differ: a batch query computes sessions with window functions
/// ([`SessionWindows`]) and hopping windows with one row per event and window, a
/// pipeline merges sessions in its state store and spreads an event's pane over its
/// windows in the aggregation ([`ExpandHoppingWindows`]).
pub fn session_context(mode: QueryMode) -> SessionContext {
    // One partition: a pipeline runs on one core; parallelism is across pipelines.
    let config = SessionConfig::new().with_target_partitions(1);
    let state = SessionStateBuilder::new().with_config(config).with_default_features().build();
    // This rule rewrites `COUNT(DISTINCT x) … GROUP BY k` into two aggregations; we
    // need the single aggregation whose state (the distinct set) is mergeable.
    let rules =
        state.optimizers().iter().filter(|r| r.name() != "single_distinct_aggregation_to_group_by").cloned().collect();
    let mut state = SessionStateBuilder::new_from_existing(state).with_optimizer_rules(rules).build();
    state.add_analyzer_rule(Arc::new(ExpandHoppingWindows { into_panes: mode == QueryMode::Pipeline }));
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
/// which a query without aggregation carries to its output (see [`StreamingPlan::rows`]).
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

/// What stage 1 is.
enum Stage1 {
    /// The dataflow (see [`crate::pipeline::dataflow`]): each micro-batch runs it once,
    /// with `SOURCE` holding the batch's events; its output is the result's changes.
    Dataflow(Arc<dyn ExecutionPlan>),
    /// A query without aggregation: the whole plan runs row by row over each
    /// micro-batch, its output ending with [`RECORD_COLUMN`].
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
    stage1: Stage1,
    /// The aggregation over `SOURCE`, whose state is checkpointed.
    source_aggregate: Option<SharedOperator>,
    /// Every streaming operator of the dataflow, from the result down.
    operators: Vec<SharedOperator>,
    pub window: Option<PlannedWindow>,
    pub output_schema: SchemaRef,
    /// The output columns that make up the result's key (`-- key:`, an `_id` column, or
    /// the group columns the result copies); `None`: rows are told apart by content
    /// (or, without aggregation, by the record they come from).
    pub key_columns: Option<Vec<usize>>,
    pub output_mode: OutputMode,
    state: SessionState,
}

impl std::fmt::Debug for StreamingPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamingPlan")
            .field("key_columns", &self.key_columns)
            .field("window", &self.window)
            .field("output_schema", &self.output_schema)
            .finish()
    }
}

impl StreamingPlan {
    pub async fn new(def: &PipelineDefinition, source: &SourceSchema) -> Result<Self> {
        let file = def.path.display().to_string();
        let user = |e: &dyn std::fmt::Display| Error::user(format!("{file}: {e}"));
        // The rule's refusals are user errors of ours; DataFusion's own are the user's too.
        let planning = |e: DataFusionError| -> Error {
            match e.find_root() {
                DataFusionError::External(inner) if inner.is::<Error>() => user(&Error::from(e).message),
                _ => user(&without_internal_columns(e)),
            }
        };
        let ctx = session_context(QueryMode::Pipeline);
        let source_schema = streaming_source_schema(source);
        let source_slot = LiveSlot::default();
        ctx.register_table(SOURCE_TABLE, Arc::new(LiveTable::new(source_schema.clone(), source_slot.clone())))
            .map_err(|e| user(&e))?;

        let frame = ctx.sql(&def.stage1).await.and_then(hide_internal_columns).map_err(planning)?;
        let logical = frame.logical_plan().clone();
        let window = find_window(&logical, source).map_err(|e| user(&e))?;
        let output_mode = def.settings.output_mode;
        let closing = match output_mode {
            OutputMode::Update => Closing::Evict,
            OutputMode::Append => Closing::Emit,
            OutputMode::Complete => Closing::Keep,
        };
        let named = |schema: &DFSchema| def.settings.key.is_some() || schema.has_column_with_unqualified_name("_id");
        let stage1 = ToDataflow {
            window: window.clone(),
            closing,
            named_key: named(logical.schema()),
            upstream: None,
            result: def.stage2.is_none(),
            found: Default::default(),
        };
        let found = stage1.found.clone();
        let physical = plan_with(&ctx, &logical, stage1).await.map_err(planning)?;
        let Found { root, walk } = std::mem::take(&mut *found.lock().expect("found lock"));
        // (A second stage reads this same aggregation over SOURCE.)
        let source_aggregate = walk.source.clone();
        let root = root.expect("the rule ran");
        if !root.changelog {
            return Self::row_by_row(def, &ctx, logical, source_schema, source_slot).await;
        }

        let root = match &def.stage2 {
            None => root,
            Some(sql) => {
                // The second stage reads stage 1's changes (the scan of AGGREGATED
                // stands for stage 1's dataflow).
                let slot = LiveSlot::default();
                let rows = physical.schema().project(&(0..physical.schema().fields().len() - 1).collect::<Vec<_>>())?;
                ctx.register_table(AGGREGATED_TABLE, Arc::new(LiveTable::new(Arc::new(rows), slot.clone())))
                    .map_err(|e| user(&e))?;
                let second = |e: DataFusionError| {
                    let e = planning(e);
                    user(&format!("second stage: {}", e.message.trim_start_matches(&format!("{file}: "))))
                };
                let frame = ctx.sql(sql).await.map_err(second)?;
                let logical = frame.logical_plan().clone();
                let rule = ToDataflow {
                    window: window.clone(),
                    closing,
                    named_key: named(logical.schema()),
                    upstream: Some(Upstream { slot, flow: root, walk }),
                    result: true,
                    found: Default::default(),
                };
                let found = rule.found.clone();
                plan_with(&ctx, &logical, rule).await.map_err(second)?;
                let root = found.lock().expect("found lock").root.take();
                root.expect("the rule ran")
            }
        };
        let width = root.plan.schema().fields().len() - 1;
        let output_schema = Arc::new(root.plan.schema().project(&(0..width).collect::<Vec<_>>())?);
        if output_mode == OutputMode::Append && window.is_none() {
            return Err(user(
                &"output_mode append writes each window once it is final, so the GROUP BY needs a window (window, tumble or hop)",
            ));
        }
        let key_columns = named_key(def, &output_schema)?.or(root.key.clone());
        let window = window.map(|call| PlannedWindow {
            time_column: source_schema.index_of(&call.time_column).expect("checked by find_window"),
            call,
        });
        let mut operators = Vec::new();
        root.plan.apply(|node| {
            // (Stage 1 read twice by a second stage is one dataflow, met twice.)
            if let Some(exec) = node.downcast_ref::<StreamingExec>()
                && !operators.iter().any(|o| Arc::ptr_eq(o, exec.operator()))
            {
                operators.push(exec.operator().clone());
            }
            Ok(TreeNodeRecursion::Continue)
        })?;
        Ok(StreamingPlan {
            source_schema,
            source_slot,
            stage1: Stage1::Dataflow(root.plan),
            source_aggregate,
            operators,
            window,
            output_schema,
            key_columns,
            output_mode,
            state: ctx.state(),
        })
    }

    /// A query without aggregation (planned from `logical`): planned again with the
    /// record column carried to its output.
    async fn row_by_row(
        def: &PipelineDefinition,
        ctx: &SessionContext,
        logical: LogicalPlan,
        source_schema: SchemaRef,
        source_slot: LiveSlot,
    ) -> Result<Self> {
        let user = |e: &dyn std::fmt::Display| Error::user(format!("{}: {e}", def.path.display()));
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
            source_aggregate: None,
            operators: Vec::new(),
            window: None,
            output_schema,
            key_columns,
            output_mode: def.settings.output_mode,
            state: ctx.state(),
        })
    }

    /// The output columns that make up the result's key, if it has one.
    pub fn key_columns(&self) -> Option<&[usize]> {
        self.key_columns.as_deref()
    }

    /// The declared source columns the plan never reads: outside every scan's
    /// projection of `SOURCE` (DataFusion pushes the columns a query uses down into
    /// the scan). Nothing if a scan reads them all, or none is found.
    pub fn unread_source_columns(&self) -> Vec<usize> {
        let plan = match &self.stage1 {
            Stage1::Dataflow(plan) | Stage1::RowByRow(plan) => plan,
        };
        let declared = self.source_schema.fields().len() - INTERNAL_COLUMNS.len();
        let mut read = vec![false; declared];
        let mut scans = 0;
        let _ = plan.apply(|node| {
            if let Some(scan) = node.downcast_ref::<LiveExec>()
                && scan.slot().same(&self.source_slot)
            {
                scans += 1;
                match scan.projection() {
                    Some(columns) => columns.iter().filter(|&&c| c < declared).for_each(|&c| read[c] = true),
                    None => read.fill(true),
                }
            }
            Ok(TreeNodeRecursion::Continue)
        });
        match scans {
            0 => Vec::new(),
            _ => (0..declared).filter(|&c| !read[c]).collect(),
        }
    }

    /// Whether the pipeline aggregates (else its rows are written per record).
    pub fn aggregates(&self) -> bool {
        matches!(self.stage1, Stage1::Dataflow(_))
    }

    /// The aggregation over `SOURCE`, whose state is checkpointed.
    pub fn source_aggregate(&self) -> Option<&SharedOperator> {
        self.source_aggregate.as_ref()
    }

    /// `f` over the aggregation over `SOURCE` (whose state is checkpointed), if any.
    /// Splits the aggregation over `SOURCE` into `workers` shards (see
    /// [`crate::operators::shards`]); before it holds any state.
    pub fn split(self, workers: usize) -> Result<Self> {
        self.with_source_aggregate(|source| source.aggregate.split(workers)).transpose()?;
        Ok(self)
    }

    pub fn with_source_aggregate<T>(&self, f: impl FnOnce(&mut AggregateOperator) -> T) -> Option<T> {
        let mut operator = self.source_aggregate.as_ref()?.try_lock().expect("operators run only inside a batch");
        Some(f(operator.as_any_mut().downcast_mut::<AggregateOperator>().expect("the source aggregation")))
    }

    /// What each streaming operator holds and has done, from the result down.
    pub fn operators(&self) -> Vec<OperatorStats> {
        self.operators.iter().map(|o| o.try_lock().expect("operators run only inside a batch").stats()).collect()
    }

    /// One micro-batch of `SOURCE` events through the dataflow: the result's changes.
    /// With `tick.rebuild`, `batch` is empty and what comes out is the whole result.
    pub async fn run(&self, batch: RecordBatch, tick: Tick) -> Result<Changelog> {
        let Stage1::Dataflow(root) = &self.stage1 else {
            return Err(Error::internal("a query without aggregation has no dataflow".to_string()));
        };
        let config = self.state.config().clone().with_extension(Arc::new(tick));
        let ctx = Arc::new(TaskContext::from(&self.state).with_session_config(config));
        Changelog::from_batch(run_over(&self.source_slot, vec![batch], root, ctx).await?)
    }

    /// A query without aggregation over one micro-batch of `SOURCE` rows: its output
    /// rows, and for each the index of the record it came from.
    pub async fn rows(&self, batch: RecordBatch) -> Result<(RecordBatch, UInt32Array)> {
        let Stage1::RowByRow(plan) = &self.stage1 else {
            return Err(Error::internal("rows of a query with an aggregation were asked for".to_string()));
        };
        let mut out = run_over(&self.source_slot, vec![batch], plan, Arc::new(TaskContext::from(&self.state))).await?;
        let records = out.column(out.num_columns() - 1).as_primitive::<UInt32Type>().clone();
        out.remove_column(out.num_columns() - 1);
        Ok((out, records))
    }
}

/// Plans `logical` with `rule` registered last among the session's physical optimizer
/// rules: the dataflow.
async fn plan_with(
    ctx: &SessionContext,
    logical: &LogicalPlan,
    rule: ToDataflow,
) -> std::result::Result<Arc<dyn ExecutionPlan>, DataFusionError> {
    let state =
        SessionStateBuilder::new_from_existing(ctx.state()).with_physical_optimizer_rule(Arc::new(rule)).build();
    state.create_physical_plan(logical).await
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

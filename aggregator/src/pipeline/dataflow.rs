//! The physical optimizer rule that makes DataFusion's plan of a pipeline a dataflow.
//!
//! DataFusion plans the SQL as for a batch query. [`ToDataflow`], registered last among
//! the session's physical optimizer rules, then rebuilds the plan from its leaves up:
//!
//! ```text
//!   DataFusion's node            over SOURCE's events        over a changelog
//!   ───────────────────────────  ──────────────────────────  ─────────────────────────────────
//!   AggregateExec (or Final/     StreamingExec(Aggregate)    StreamingExec(Aggregate),
//!   Partial pair)                the source aggregation      retracting
//!   SortExec with a fetch        refused                     StreamingExec(TopN)
//!   window functions (with the   refused                     StreamingExec(WindowFunctions),
//!   sorts and projections                                    per partition touched
//!   between them)
//!   SortExec without a fetch     refused                     dropped (a result has no order)
//!   projection, filter, unnest,  kept                        rebuilt to carry the weight
//!   union, coalescing                                        (`changelog::carry_weight`)
//!   anything else                refused                     StreamingExec(Recompute)
//! ```
//!
//! Running the rebuilt plan once per micro-batch (with `SOURCE` holding the batch's
//! events) gives the changes of the result. Along the way the rule follows which
//! column holds the event-time window (operators over it let closed windows go) and
//! which columns are a key of each node's rows (the result's `_id`).

use std::sync::{Arc, Mutex};

use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{BinaryExpr, Column, Literal};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::{ProjectionExec, ProjectionExpr};
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::unnest::UnnestExec;
use datafusion::physical_plan::windows::{BoundedWindowAggExec, WindowAggExec};
use datafusion::physical_plan::{ChildrenPropertiesMode, ExecutionPlan, ReplaceChildrenOptions};

use crate::error::Error;
use crate::operators::aggregate::{AggregateOperator, AggregateSpec, InputKind};
use crate::operators::changelog::{carry_weight, with_weight};
use crate::operators::exec::{Closing, SharedOperator, StreamingExec, TeeExec};
use crate::operators::partitioned::{PartitionSpec, PartitionedRows, WindowFunctions};
use crate::operators::recompute::Recompute;
use crate::operators::shards::Shards;
use crate::operators::top_n::{PerPartitionSpec, TopN, TopNChanges, TopNPerPartition};
use crate::pipeline::live_table::{LiveExec, LiveSlot};
use crate::pipeline::windows::{WindowCall, WindowSpec};

/// What the rule knows of one rebuilt node.
#[derive(Clone, Debug)]
pub struct Flow {
    pub plan: Arc<dyn ExecutionPlan>,
    /// Whether its output is a changelog (weight last); else it is `SOURCE`'s events
    /// of the batch (no aggregation below it).
    pub changelog: bool,
    /// The column holding the event-time window of the source aggregation, if it
    /// survives to here.
    pub window: Option<usize>,
    /// Columns whose values tell its rows apart (none known: `None`).
    pub key: Option<Vec<usize>>,
}

/// What the rule found, for the pipeline (read after planning) or a second stage.
#[derive(Default, Debug)]
pub struct Found {
    pub root: Option<Flow>,
    pub walk: Walk,
}

/// The rule (see the module doc). One per planning of a pipeline's SQL.
#[derive(Debug)]
pub struct ToDataflow {
    /// The window of the aggregation over `SOURCE`, as found in the logical plan.
    pub window: Option<WindowCall>,
    pub closing: Closing,
    /// Whether the user named the result's key (`-- key:` or an `_id` column).
    pub named_key: bool,
    /// A second stage: the scan of `AGGREGATED` (reading this slot) stands for stage
    /// 1's dataflow.
    pub upstream: Option<Upstream>,
    /// Whether this plan gives the result (not stage 1 of a pipeline with a second).
    pub result: bool,
    pub found: Arc<Mutex<Found>>,
}

/// Stage 1's dataflow, read by a second stage.
#[derive(Clone)]
pub struct Upstream {
    pub slot: LiveSlot,
    pub flow: Flow,
    pub walk: Walk,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Upstream")
    }
}

/// What the walk learns on the way.
#[derive(Default, Clone, Debug)]
pub struct Walk {
    has_aggregate: bool,
    /// The aggregation over `SOURCE`, whose state is checkpointed.
    pub source: Option<SharedOperator>,
    /// Only projections between the source aggregation and the result.
    source_under_projections: bool,
    /// Whether something holds state fed by closed windows' rows beyond their window
    /// (then the source aggregation keeps those rows, to rebuild it after a restart).
    state_beyond_windows: bool,
    sessions: bool,
    /// Stage 1's dataflow as every scan of `AGGREGATED` reads it.
    tee: Option<Arc<TeeExec>>,
}

impl PhysicalOptimizerRule for ToDataflow {
    fn optimize(&self, plan: Arc<dyn ExecutionPlan>, _config: &ConfigOptions) -> DfResult<Arc<dyn ExecutionPlan>> {
        let mut walk = match &self.upstream {
            // Stage 1's result is read by the second stage: its old rows are retracted.
            Some(upstream) => Walk { source_under_projections: false, ..upstream.walk.clone() },
            None => Walk { has_aggregate: contains::<AggregateExec>(&plan), ..Walk::default() },
        };
        let root = self.flow(&plan, true, &mut walk)?;
        // The source aggregation's retractions are needed unless the result only
        // renames its columns and is keyed by its groups (an upsert then replaces the
        // old row); its closed windows' rows are kept if a restart needs them.
        let keyed_by_groups = root.key.is_some() && !self.named_key;
        if let (Some(source), true) = (&walk.source, self.result) {
            let mut operator = source.try_lock().map_err(|e| DataFusionError::Internal(e.to_string()))?;
            let operator = operator.as_any_mut().downcast_mut::<AggregateOperator>().expect("an aggregation");
            operator.set_emit_previous(!(walk.source_under_projections && keyed_by_groups && !walk.sessions));
            let content_ids = root.key.is_none() && !self.named_key;
            operator.set_keep_closed(walk.state_beyond_windows || content_ids);
        }
        let mut found = self.found.lock().expect("found lock");
        found.walk = walk;
        found.root = Some(root.clone());
        Ok(root.plan)
    }

    fn name(&self) -> &str {
        "to_dataflow"
    }

    /// The weight column is added: the schema changes on purpose.
    fn schema_check(&self) -> bool {
        false
    }
}

/// A user error (the message names no file: the planner adds it) through DataFusion.
fn refused(message: impl Into<String>) -> DataFusionError {
    Error::user(message).into_datafusion()
}

pub const MIXED_INPUTS: &str = "a UNION or JOIN of an aggregation with SOURCE or of two aggregations over SOURCE cannot run incrementally yet; UNION ALL branches over SOURCE may feed one aggregation";

impl ToDataflow {
    /// Rebuilds `node` (see the module doc). `under_projections`: only projections
    /// between it and the result.
    fn flow(&self, node: &Arc<dyn ExecutionPlan>, under_projections: bool, walk: &mut Walk) -> DfResult<Flow> {
        if let Some(scan) = node.downcast_ref::<LiveExec>() {
            return self.scan(node, scan, walk);
        }
        if node.is::<AggregateExec>() {
            return self.aggregate(node, under_projections, walk);
        }
        if node.is::<BoundedWindowAggExec>() || node.is::<WindowAggExec>() {
            return self.window_functions(node, walk);
        }
        if let Some(filter) = node.downcast_ref::<FilterExec>()
            && let Some(flow) = self.top_n_per_partition(filter, walk)?
        {
            return Ok(flow);
        }
        if node.name() == "ScalarSubqueryExec" {
            // Its subqueries' results reach its expressions out of band.
            return Err(refused("a scalar subquery cannot run on a stream yet; JOIN its result instead"));
        }
        let passes = ["CoalesceBatchesExec", "CooperativeExec", "CoalescePartitionsExec", "RepartitionExec"];
        let keeps_under = node.is::<ProjectionExec>() || passes.contains(&node.name());
        let children = node
            .children()
            .into_iter()
            .map(|c| self.flow(c, under_projections && keeps_under, walk))
            .collect::<DfResult<Vec<Flow>>>()?;
        let changelogs = children.iter().filter(|c| c.changelog).count();
        if changelogs == 0 {
            // SOURCE's events, row by row: DataFusion's node as it is.
            return match ROW_WISE.contains(&node.name()) {
                true => Ok(Flow { plan: node.clone(), changelog: false, window: None, key: None }),
                false => Err(refused(self.not_row_wise(node.name(), walk))),
            };
        }
        if changelogs < children.len() {
            return Err(refused(MIXED_INPUTS));
        }
        if let Some(sort) = node.downcast_ref::<SortExec>() {
            let [input] = children.try_into().map_err(|_| DataFusionError::Internal("a sort's input".into()))?;
            let Some(fetch) = sort.fetch() else { return Ok(input) };
            walk.state_beyond_windows = true;
            let top_n =
                TopN::new(sort.expr().to_vec(), fetch, sort.input().schema()).map_err(Error::into_datafusion)?;
            let plan =
                StreamingExec::new(Box::new(TopNChanges::new(top_n)), vec![input.plan.clone()], input.plan.schema());
            return Ok(Flow { plan, ..input });
        }
        if node.downcast_ref::<SortPreservingMergeExec>().is_some_and(|m| m.fetch().is_none()) {
            return Ok(children.into_iter().next().expect("one input"));
        }
        if ROW_WISE.contains(&node.name()) {
            let plans = children.iter().map(|c| c.plan.clone()).collect();
            let plan = carry_weight(node, plans)?;
            let width = plan.schema().fields().len() - 1;
            return Ok(
                match (node.downcast_ref::<ProjectionExec>(), node.downcast_ref::<FilterExec>(), &children[..]) {
                    (Some(p), _, [input]) => {
                        traced(plan, input, width, |c| p.expr()[c].expr.downcast_ref::<Column>().map(|col| col.index()))
                    }
                    (_, Some(f), [input]) => match f.projection() {
                        Some(p) => traced(plan, input, width, |c| Some(p[c])),
                        None => traced(plan, input, width, Some),
                    },
                    // An unnest makes several rows of one: no key, and the window is not followed.
                    _ if node.is::<UnnestExec>() => Flow { plan, changelog: true, window: None, key: None },
                    // Coalescing keeps its input's columns; a union mixes its inputs' rows.
                    (_, _, [input]) => traced(plan, input, width, Some),
                    _ => {
                        let window = children[0].window.filter(|&w| children.iter().all(|c| c.window == Some(w)));
                        Flow { plan, changelog: true, window, key: None }
                    }
                },
            );
        }
        self.recompute(node, children, walk)
    }

    fn not_row_wise(&self, name: &str, walk: &Walk) -> String {
        match walk.has_aggregate {
            true => format!(
                "`{name}` over SOURCE cannot run incrementally; only row-by-row operations may come before the GROUP BY"
            ),
            false => format!(
                "`{name}` over SOURCE cannot run on a stream without an aggregation: only row-by-row operations (SELECT expressions, WHERE, UNNEST, UNION ALL) may, or add a GROUP BY"
            ),
        }
    }

    /// A scan: `SOURCE`'s events, or in a second stage, stage 1's changes.
    fn scan(&self, node: &Arc<dyn ExecutionPlan>, scan: &LiveExec, walk: &mut Walk) -> DfResult<Flow> {
        let Some(Upstream { flow: upstream, .. }) = self.upstream.as_ref().filter(|u| u.slot.same(scan.slot())) else {
            return Ok(Flow { plan: node.clone(), changelog: false, window: None, key: None });
        };
        // Stage 1's dataflow runs once per batch, whatever reads it.
        let upstream = &Flow {
            plan: walk.tee.get_or_insert_with(|| TeeExec::new(upstream.plan.clone())).clone(),
            ..upstream.clone()
        };
        let Some(columns) = scan.projection() else { return Ok(upstream.clone()) };
        // The scan's columns of stage 1's result, and the weight.
        let schema = upstream.plan.schema();
        let weight = schema.fields().len() - 1;
        let exprs = columns
            .iter()
            .chain([&weight])
            .map(|&c| ProjectionExpr {
                expr: Arc::new(Column::new(schema.field(c).name(), c)),
                alias: schema.field(c).name().clone(),
            })
            .collect::<Vec<_>>();
        let plan: Arc<dyn ExecutionPlan> = Arc::new(ProjectionExec::try_new(exprs, upstream.plan.clone())?);
        Ok(traced(plan, upstream, columns.len(), |c| Some(columns[c])))
    }

    /// An aggregation (one `AggregateExec`, or DataFusion's `Final`/`Partial` pair).
    fn aggregate(&self, node: &Arc<dyn ExecutionPlan>, under_projections: bool, walk: &mut Walk) -> DfResult<Flow> {
        let exec = node.downcast_ref::<AggregateExec>().expect("checked by the caller");
        // A `Final` reads its `Partial` through single-input nodes (repartitioning).
        let mut raw = node.clone();
        if matches!(exec.mode(), AggregateMode::Final | AggregateMode::FinalPartitioned) {
            while !raw.downcast_ref::<AggregateExec>().is_some_and(|a| *a.mode() == AggregateMode::Partial) {
                let children = raw.children();
                let [child] = children.as_slice() else {
                    return Err(DataFusionError::Internal("a final aggregation without its partial one".into()));
                };
                let child = (*child).clone();
                raw = child;
            }
        }
        let raw = raw.downcast_ref::<AggregateExec>().expect("an aggregation");
        let input = self.flow(raw.input(), false, walk)?;
        let over_source = !input.changelog;
        if over_source && walk.source.is_some() {
            return Err(refused(MIXED_INPUTS));
        }
        let window = match over_source {
            true => self.window.as_ref().map(|call| (call.group_index, call.spec)),
            // Over changes: the group column that is the source aggregation's window.
            false => input.window.and_then(|w| {
                let column = raw
                    .group_expr()
                    .expr()
                    .iter()
                    .position(|(e, _)| e.downcast_ref::<Column>().is_some_and(|c| c.index() == w))?;
                Some((column, self.window.as_ref()?.spec))
            }),
        };
        if !over_source && window.is_none() {
            walk.state_beyond_windows = true;
        }
        let final_schema = node.schema();
        let num_groups = final_schema.fields().len() - raw.aggr_expr().len();
        let spec = AggregateSpec {
            group_by: raw.group_expr().clone(),
            aggregates: raw.aggr_expr().to_vec(),
            filters: raw.filter_expr().to_vec(),
            final_schema: final_schema.clone(),
            window,
            input: if over_source { InputKind::InsertOnly } else { InputKind::Changelog },
            input_schema: raw.input().schema(),
            emit_previous: true,
        };
        let aggregate = Shards::new(spec).map_err(Error::into_datafusion)?;
        let closing = match (over_source, self.closing) {
            (false, Closing::Emit) => Closing::Evict,
            (_, closing) => closing,
        };
        let operator = AggregateOperator::new(aggregate, over_source, closing);
        let plan = StreamingExec::new(Box::new(operator), vec![input.plan], with_weight(&final_schema));
        if over_source {
            walk.source = Some(plan.operator().clone());
            walk.source_under_projections = under_projections;
            walk.sessions = matches!(window, Some((_, WindowSpec::Session { .. })));
        }
        let window = window.map(|(column, _)| column);
        Ok(Flow { plan, changelog: true, window, key: Some((0..num_groups).collect()) })
    }

    /// Window functions: the segment of window nodes (with the sorts and projections
    /// between them) from `node` down, recomputed per partition touched if they all
    /// partition by the same columns, else whole.
    fn window_functions(&self, node: &Arc<dyn ExecutionPlan>, walk: &mut Walk) -> DfResult<Flow> {
        let windowish = |n: &Arc<dyn ExecutionPlan>| {
            n.is::<BoundedWindowAggExec>()
                || n.is::<WindowAggExec>()
                || n.downcast_ref::<SortExec>().is_some_and(|s| s.fetch().is_none())
        };
        let mut segment = vec![node.clone()];
        while let [child] = segment.last().expect("one").children().as_slice() {
            if !(windowish(child) || child.is::<ProjectionExec>()) {
                break;
            }
            let child = (*child).clone();
            segment.push(child);
        }
        while segment.last().is_some_and(|n| n.is::<ProjectionExec>()) {
            segment.pop();
        }
        let bottom = segment.last().expect("the window node at least").clone();
        let pre = bottom.children()[0].clone();
        let input = self.flow(&pre, false, walk)?;
        if !input.changelog {
            return Err(refused(self.not_row_wise(node.name(), walk)));
        }
        let slot = LiveSlot::default();
        let scan: Arc<dyn ExecutionPlan> = Arc::new(LiveExec::new(pre.schema(), slot.clone(), None)?);
        let plan = replace(node, &pre, scan)?;
        let Some(partition_columns) = partition_columns(&segment) else {
            // Partitioned differently: recomputed whole.
            walk.state_beyond_windows = true;
            let operator = Recompute::new(plan.clone(), vec![(slot, pre.schema())]).map_err(Error::into_datafusion)?;
            let plan = StreamingExec::new(Box::new(operator), vec![input.plan], with_weight(&node.schema()));
            return Ok(Flow { plan, changelog: true, window: None, key: None });
        };
        let window = input.window.filter(|w| partition_columns.contains(w));
        if window.is_none() {
            walk.state_beyond_windows = true;
        }
        let rows = PartitionedRows::new(PartitionSpec { schema: pre.schema(), partition_columns, window })
            .map_err(Error::into_datafusion)?;
        let operator = WindowFunctions { rows, slot, segment: plan, evict: self.closing != Closing::Keep };
        let exec = StreamingExec::new(Box::new(operator), vec![input.plan.clone()], with_weight(&node.schema()));
        let width = node.schema().fields().len();
        Ok(traced(exec, &input, width, |c| trace_segment(&segment, c)))
    }

    /// `ROW_NUMBER() OVER (PARTITION BY … ORDER BY …) <= N` (DataFusion's filter over
    /// its window node over a sort), if `filter` is that: the top-N per partition.
    fn top_n_per_partition(&self, filter: &FilterExec, walk: &mut Walk) -> DfResult<Option<Flow>> {
        let Some(window) = filter.input().downcast_ref::<BoundedWindowAggExec>() else { return Ok(None) };
        let [expr] = window.window_expr() else { return Ok(None) };
        let Some(sort) = window.input().downcast_ref::<SortExec>().filter(|s| s.fetch().is_none()) else {
            return Ok(None);
        };
        let row_number = window.input().schema().fields().len();
        let (Some(fetch), true) =
            (row_number_limit(filter.predicate(), row_number), expr.name().starts_with("row_number("))
        else {
            return Ok(None);
        };
        let partition_columns: Option<Vec<usize>> =
            expr.partition_by().iter().map(|k| k.downcast_ref::<Column>().map(|c| c.index())).collect();
        let Some(partition_columns) = partition_columns.filter(|p| !p.is_empty()) else { return Ok(None) };
        let input = self.flow(sort.input(), false, walk)?;
        if !input.changelog {
            return Err(refused(self.not_row_wise(window.name(), walk)));
        }
        let partition_window = input.window.filter(|w| partition_columns.contains(w));
        if partition_window.is_none() {
            walk.state_beyond_windows = true;
        }
        let output: Vec<usize> = match filter.projection() {
            Some(p) => p.to_vec(),
            None => (0..=row_number).collect(),
        };
        let spec = PerPartitionSpec {
            schema: sort.input().schema(),
            partition_columns,
            sort: expr.order_by().to_vec(),
            fetch,
            window: partition_window,
            output: output.clone(),
            output_schema: filter.schema(),
            evict: self.closing != Closing::Keep,
        };
        let operator = TopNPerPartition::new(spec).map_err(Error::into_datafusion)?;
        let plan = StreamingExec::new(Box::new(operator), vec![input.plan.clone()], with_weight(&filter.schema()));
        // The rows are their input's rows (and their row number).
        Ok(Some(traced(plan, &input, output.len(), |c| Some(output[c]).filter(|&i| i < row_number))))
    }

    /// Any other node over changelogs: recomputed whole from all its inputs' rows.
    fn recompute(&self, node: &Arc<dyn ExecutionPlan>, children: Vec<Flow>, walk: &mut Walk) -> DfResult<Flow> {
        walk.state_beyond_windows = true;
        let mut scans = Vec::new();
        let mut inputs = Vec::new();
        for child in node.children() {
            let slot = LiveSlot::default();
            scans.push(Arc::new(LiveExec::new(child.schema(), slot.clone(), None)?) as Arc<dyn ExecutionPlan>);
            inputs.push((slot, child.schema()));
        }
        let plan =
            node.clone().replace_children(scans, ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute))?;
        let operator = Recompute::new(plan, inputs).map_err(Error::into_datafusion)?;
        let plans = children.into_iter().map(|c| c.plan).collect();
        let exec = StreamingExec::new(Box::new(operator), plans, with_weight(&node.schema()));
        Ok(Flow { plan: exec, changelog: true, window: None, key: None })
    }
}

/// N of a filter `row_number <= N` (or `< N + 1`, or `= 1`) on column `row_number`.
fn row_number_limit(predicate: &Arc<dyn PhysicalExpr>, row_number: usize) -> Option<usize> {
    let binary = predicate.downcast_ref::<BinaryExpr>()?;
    binary.left().downcast_ref::<Column>().filter(|c| c.index() == row_number)?;
    let literal = binary.right().downcast_ref::<Literal>()?.value().cast_to(&DataType::Int64).ok()?;
    let ScalarValue::Int64(Some(n)) = literal else { return None };
    let n = match binary.op() {
        Operator::LtEq => n,
        Operator::Lt => n - 1,
        Operator::Eq if n == 1 => 1,
        _ => return None,
    };
    usize::try_from(n).ok().filter(|&n| n > 0)
}

/// Nodes that work row by row over `SOURCE`'s events (or carry weights over changes).
const ROW_WISE: [&str; 10] = [
    "LiveExec",
    "ProjectionExec",
    "FilterExec",
    "CoalesceBatchesExec",
    "CooperativeExec",
    "CoalescePartitionsExec",
    "UnnestExec",
    "RepartitionExec",
    // UNION ALL of branches that each work row by row (over the same batch).
    "UnionExec",
    "InterleaveExec",
];

/// A node over `input` whose output column `c` (of `width`, before the weight) is
/// input column `from(c)`, if a copy: its window and key, traced.
fn traced(plan: Arc<dyn ExecutionPlan>, input: &Flow, width: usize, from: impl Fn(usize) -> Option<usize>) -> Flow {
    let find = |i: usize| (0..width).find(|&c| from(c) == Some(i));
    let window = input.window.and_then(find);
    let key = input.key.as_ref().and_then(|key| key.iter().map(|&k| find(k)).collect());
    Flow { plan, changelog: true, window, key }
}

/// Column `c` of the segment's output as a column of the rows below it, through the
/// projections between (sorts keep their input's columns, windows add theirs last).
fn trace_segment(segment: &[Arc<dyn ExecutionPlan>], c: usize) -> Option<usize> {
    segment.iter().try_fold(c, |c, node| {
        if let Some(p) = node.downcast_ref::<ProjectionExec>() {
            return p.expr().get(c)?.expr.downcast_ref::<Column>().map(|col| col.index());
        }
        (c < node.children()[0].schema().fields().len()).then_some(c)
    })
}

/// The PARTITION BY columns of the segment's window nodes (as columns below it), if
/// they are the same for all.
fn partition_columns(segment: &[Arc<dyn ExecutionPlan>]) -> Option<Vec<usize>> {
    let mut found: Option<Vec<usize>> = None;
    for (i, node) in segment.iter().enumerate() {
        let keys = if let Some(w) = node.downcast_ref::<BoundedWindowAggExec>() {
            w.partition_keys()
        } else if let Some(w) = node.downcast_ref::<WindowAggExec>() {
            w.partition_keys()
        } else {
            continue;
        };
        // Keys are columns of the node's input: traced down from there.
        let columns: Vec<usize> = keys
            .iter()
            .map(|k| k.downcast_ref::<Column>().and_then(|c| trace_segment(&segment[i + 1..], c.index())))
            .collect::<Option<_>>()?;
        match &found {
            None => found = Some(columns),
            Some(seen) if *seen == columns => {}
            Some(_) => return None,
        }
    }
    found
}

/// `plan` with its node `target` replaced by `with`.
fn replace(
    plan: &Arc<dyn ExecutionPlan>,
    target: &Arc<dyn ExecutionPlan>,
    with: Arc<dyn ExecutionPlan>,
) -> DfResult<Arc<dyn ExecutionPlan>> {
    Ok(plan
        .clone()
        .transform_down(|node| {
            Ok(match Arc::ptr_eq(&node, target) {
                true => Transformed::new(with.clone(), true, TreeNodeRecursion::Jump),
                false => Transformed::no(node),
            })
        })?
        .data)
}

fn contains<T: ExecutionPlan + 'static>(plan: &Arc<dyn ExecutionPlan>) -> bool {
    let mut found = false;
    let _ = plan.apply(|node| {
        found = node.is::<T>();
        Ok(if found { TreeNodeRecursion::Stop } else { TreeNodeRecursion::Continue })
    });
    found
}

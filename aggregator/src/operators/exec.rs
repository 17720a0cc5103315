//! [`StreamingExec`]: a streaming operator as a node of DataFusion's physical plan.
//!
//! The pipeline's plan is DataFusion's, with its stateful nodes (aggregations,
//! `ORDER BY … LIMIT`, window functions) swapped for `StreamingExec`s by the
//! pipeline's physical optimizer rule (`pipeline::dataflow`). Each micro-batch runs the
//! whole plan once: a `StreamingExec` reads all of its inputs' rows for the batch (a
//! changelog each, or `SOURCE`'s new events), hands them to its operator, which updates
//! its state, and outputs the changes of its result as one changelog batch. Row-by-row
//! nodes between them are DataFusion's own, rebuilt to carry the weight column.
//!
//! What a batch is besides its rows (the watermark that closes windows, whether it
//! rebuilds state after a restart) reaches the operators as a [`Tick`] in the task
//! context's session config, as DataFusion passes per-query settings to operators.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::Result as DfResult;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties};
use tokio::sync::Mutex;

use crate::error::Result;
use crate::pipeline::live_table::collect_one;

/// What a micro-batch is, besides its rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tick {
    /// Windows ending at or before this are closed (evicted; in append mode, emitted).
    pub watermark: Option<i64>,
    /// After a restart: the source aggregation emits every group it holds (and the
    /// closed windows' rows it kept) as inserted, so that the operators above it
    /// rebuild their state; nothing is written.
    pub rebuild: bool,
}

/// What becomes of a window's state once the watermark passes its end (per output mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closing {
    /// Update mode: it leaves the state; its rows stay in the result.
    Evict,
    /// Append mode: the source aggregation emits its final rows then (and nothing
    /// before); it leaves the state.
    Emit,
    /// Complete mode: it stays (the whole result is written every batch).
    Keep,
}

/// What an operator is, for tests, metrics and the plan's description.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperatorKind {
    /// The aggregation over `SOURCE`: its state is checkpointed.
    SourceAggregate,
    /// An aggregation over a changelog (an aggregate of an aggregate).
    Aggregate,
    /// `ORDER BY … LIMIT N` over a changelog.
    TopN,
    /// `ROW_NUMBER() OVER (PARTITION BY … ORDER BY …) <= N` over a changelog.
    TopNPerPartition,
    /// Window functions over a changelog, recomputed per partition touched.
    WindowFunctions,
    /// Any other node over changelogs: recomputed whole from all its input rows.
    Recompute,
}

/// How much an operator holds and has done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OperatorStats {
    pub kind: OperatorKind,
    /// Input rows read so far (inserted and retracted alike), or rows recomputed.
    pub rows_read: u64,
    /// What its state holds: groups, rows or partitions.
    pub held: usize,
    /// Rows of closed windows kept to rebuild what reads this operator (source only).
    pub closed_rows: usize,
}

/// A stateful streaming operator: one call per micro-batch.
#[async_trait]
pub trait StreamingOperator: Send + Sync + 'static {
    /// The changes of its output for a batch, from its inputs' rows for the batch
    /// (one batch per input: a changelog, or `SOURCE`'s events).
    async fn process(&mut self, inputs: Vec<RecordBatch>, tick: Tick, ctx: Arc<TaskContext>) -> Result<RecordBatch>;
    fn stats(&self) -> OperatorStats;
    /// For the pipeline to reach a concrete operator (the source aggregation's state).
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

impl fmt::Debug for dyn StreamingOperator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.stats().kind)
    }
}

/// An operator shared by the plan node and the pipeline that checkpoints it.
pub type SharedOperator = Arc<Mutex<Box<dyn StreamingOperator>>>;

/// A [`StreamingOperator`] as a plan node: reads its children whole, outputs one batch.
pub struct StreamingExec {
    kind: OperatorKind,
    children: Vec<Arc<dyn ExecutionPlan>>,
    operator: SharedOperator,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl StreamingExec {
    pub fn new(
        operator: Box<dyn StreamingOperator>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        schema: SchemaRef,
    ) -> Arc<Self> {
        let kind = operator.stats().kind;
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Final,
            Boundedness::Bounded,
        ));
        Arc::new(StreamingExec { kind, children, operator: Arc::new(Mutex::new(operator)), schema, properties })
    }

    pub fn operator(&self) -> &SharedOperator {
        &self.operator
    }

    pub fn kind(&self) -> OperatorKind {
        self.kind
    }
}

impl fmt::Debug for StreamingExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StreamingExec({:?})", self.kind)
    }
}

impl DisplayAs for StreamingExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "StreamingExec: {:?}", self.kind)
    }
}

impl ExecutionPlan for StreamingExec {
    fn name(&self) -> &str {
        "StreamingExec"
    }
    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }
    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        self.children.iter().collect()
    }
    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }
    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> DfResult<Arc<dyn ExecutionPlan>> {
        // The same operator (and state) over new children.
        Ok(Arc::new(StreamingExec {
            kind: self.kind,
            children,
            operator: self.operator.clone(),
            schema: self.schema.clone(),
            properties: self.properties.clone(),
        }))
    }
    fn execute(&self, _partition: usize, context: Arc<TaskContext>) -> DfResult<SendableRecordBatchStream> {
        let children = self.children.clone();
        let operator = self.operator.clone();
        let tick = context.session_config().get_extension::<Tick>().map(|t| *t).unwrap_or_default();
        let run = async move {
            let mut inputs = Vec::with_capacity(children.len());
            for child in children {
                inputs.push(collect_one(child, context.clone()).await?);
            }
            let mut operator = operator.lock().await;
            operator.process(inputs, tick, context).await.map_err(|e| e.into_datafusion())
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), futures::stream::once(run))))
    }
}

/// One node's output read by several parents (a second stage reading `AGGREGATED`
/// twice, as in a self-join): it runs once per batch, and every read gets that run's
/// rows. A batch is known by its task context, which each batch makes anew.
pub struct TeeExec {
    input: Arc<dyn ExecutionPlan>,
    last: Arc<Mutex<Option<LastRun>>>,
}

/// A run of a tee's input: the batch's task context and the rows it gave.
type LastRun = (Arc<TaskContext>, RecordBatch);

impl TeeExec {
    pub fn new(input: Arc<dyn ExecutionPlan>) -> Arc<Self> {
        Arc::new(TeeExec { input, last: Default::default() })
    }
}

impl fmt::Debug for TeeExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TeeExec")
    }
}

impl DisplayAs for TeeExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "TeeExec")
    }
}

impl ExecutionPlan for TeeExec {
    fn name(&self) -> &str {
        "TeeExec"
    }
    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }
    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }
    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }
    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> DfResult<Arc<dyn ExecutionPlan>> {
        let [input] = <[Arc<dyn ExecutionPlan>; 1]>::try_from(children)
            .map_err(|_| datafusion::common::DataFusionError::Internal("a tee has one input".into()))?;
        Ok(Arc::new(TeeExec { input, last: self.last.clone() }))
    }
    fn execute(&self, _partition: usize, context: Arc<TaskContext>) -> DfResult<SendableRecordBatchStream> {
        let (input, last) = (self.input.clone(), self.last.clone());
        let schema = self.input.schema();
        let run = async move {
            let mut last = last.lock().await;
            match last.as_ref() {
                Some((seen, rows)) if Arc::ptr_eq(seen, &context) => Ok(rows.clone()),
                _ => {
                    let rows = collect_one(input, context.clone()).await?;
                    *last = Some((context, rows.clone()));
                    Ok(rows)
                }
            }
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, futures::stream::once(run))))
    }
}

//! A table whose rows are swapped between executions of the same physical plan.
//!
//! A pipeline plans its SQL once and then runs the plan once per micro-batch. `SOURCE`
//! (and `AGGREGATED`, and the aggregate's output feeding the rest of the query) are
//! [`LiveTable`]s: their scan is a [`LiveExec`] that reads whatever its [`LiveSlot`]
//! holds at `execute` time.

use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::Session;
use datafusion::common::Result as DfResult;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::reset_plan_states;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::memory::MemoryStream;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties, collect};

/// The rows a live table shows on its next scan.
#[derive(Debug, Clone, Default)]
pub struct LiveSlot(Arc<Mutex<Vec<RecordBatch>>>);

impl LiveSlot {
    pub fn set(&self, batches: Vec<RecordBatch>) {
        *self.0.lock().expect("live slot lock") = batches;
    }
    fn get(&self) -> Vec<RecordBatch> {
        self.0.lock().expect("live slot lock").clone()
    }
    /// Whether both are the same slot.
    pub fn same(&self, other: &LiveSlot) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// Runs `plan` with `slot` holding `batches`: its output as one batch.
pub async fn run_over(
    slot: &LiveSlot,
    batches: Vec<RecordBatch>,
    plan: &Arc<dyn ExecutionPlan>,
    ctx: Arc<TaskContext>,
) -> DfResult<RecordBatch> {
    slot.set(batches);
    // Operators may keep run-time state (dynamic filters); start each run clean.
    let out = match reset_plan_states(plan.clone()) {
        Ok(plan) => collect_one(plan, ctx).await,
        Err(e) => Err(e),
    };
    slot.set(vec![]);
    out
}

/// All of `plan`'s output, as one batch.
pub async fn collect_one(plan: Arc<dyn ExecutionPlan>, ctx: Arc<TaskContext>) -> DfResult<RecordBatch> {
    let schema = plan.schema();
    Ok(concat_batches(&schema, &collect(plan, ctx).await?)?)
}

#[derive(Debug)]
pub struct LiveTable {
    schema: SchemaRef,
    slot: LiveSlot,
}

impl LiveTable {
    pub fn new(schema: SchemaRef, slot: LiveSlot) -> Self {
        LiveTable { schema, slot }
    }
}

#[async_trait]
impl TableProvider for LiveTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
    fn table_type(&self) -> TableType {
        TableType::Base
    }
    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(LiveExec::new(self.schema.clone(), self.slot.clone(), projection.cloned())?))
    }
}

/// Scans a [`LiveSlot`].
pub struct LiveExec {
    slot: LiveSlot,
    table_schema: SchemaRef,
    schema: SchemaRef,
    projection: Option<Vec<usize>>,
    properties: Arc<PlanProperties>,
}

impl LiveExec {
    pub fn new(table_schema: SchemaRef, slot: LiveSlot, projection: Option<Vec<usize>>) -> DfResult<Self> {
        let schema = match &projection {
            Some(p) => Arc::new(table_schema.project(p)?),
            None => table_schema.clone(),
        };
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Ok(LiveExec { slot, table_schema, schema, projection, properties })
    }

    pub fn slot(&self) -> &LiveSlot {
        &self.slot
    }

    /// The table's columns it reads, in order (all of them if `None`).
    pub fn projection(&self) -> Option<&[usize]> {
        self.projection.as_deref()
    }

    /// The same scan over changelogs of the slot's rows: the weight column follows
    /// the projected columns (see [`crate::operators::changelog`]). Pipelines read
    /// changelogs from operators, not slots: tests of `carry_weight` use it.
    pub fn with_weight(&self) -> DfResult<Self> {
        let table_schema = crate::operators::changelog::with_weight(&self.table_schema);
        let weight = table_schema.fields().len() - 1;
        let projection = self.projection.clone().map(|mut p| {
            p.push(weight);
            p
        });
        LiveExec::new(table_schema, self.slot.clone(), projection)
    }
}

impl fmt::Debug for LiveExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LiveExec")
    }
}

impl DisplayAs for LiveExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "LiveExec: projection={:?}", self.projection)
    }
}

impl ExecutionPlan for LiveExec {
    fn name(&self) -> &str {
        "LiveExec"
    }
    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }
    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }
    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }
    fn with_new_children(self: Arc<Self>, _children: Vec<Arc<dyn ExecutionPlan>>) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }
    fn execute(&self, _partition: usize, _context: Arc<TaskContext>) -> DfResult<SendableRecordBatchStream> {
        let batches = self.slot.get();
        let table_schema = match batches.first() {
            Some(b) => b.schema(),
            None => return Ok(Box::pin(MemoryStream::try_new(vec![], self.schema.clone(), None)?)),
        };
        Ok(Box::pin(MemoryStream::try_new(batches, table_schema, self.projection.clone())?))
    }
}

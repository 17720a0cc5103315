//! Changelogs: what flows between streaming operators.
//!
//! A [`Changelog`] is an Arrow batch of rows with a weight each, in a last column
//! [`WEIGHT_COLUMN`]: +1 for a row inserted, -1 for a row retracted (a group's old
//! value when it changes). Row-by-row plans run over it as over any batch once
//! [`carry_weight`] has rebuilt them to pass the weight column through: a filter keeps
//! or drops a row with its weight, a projection computes new values under the same
//! weight, an unnest repeats it. That is what makes them correct over changes: for
//! such operators, the changes of the output are the output of the changes.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch};
use datafusion::arrow::compute::{concat_batches, filter_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use datafusion::common::{Result as DfResult, internal_err};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::filter::{FilterExec, FilterExecBuilder};
use datafusion::physical_plan::projection::{ProjectionExec, ProjectionExpr};
use datafusion::physical_plan::unnest::UnnestExec;
use datafusion::physical_plan::{ChildrenPropertiesMode, ExecutionPlan, ReplaceChildrenOptions};

use crate::error::{Error, Result};

/// The column holding each row's weight, last in a changelog's schema.
pub const WEIGHT_COLUMN: &str = "__weight";

/// Rows with a weight each (+1 inserted, -1 retracted), the weight last.
#[derive(Debug, Clone, PartialEq)]
pub struct Changelog(RecordBatch);

impl Changelog {
    /// `retracted` rows (weight -1) then `inserted` ones (+1), both of one schema.
    pub fn new(inserted: &RecordBatch, retracted: &RecordBatch) -> Result<Self> {
        let schema = with_weight(&inserted.schema());
        let parts = [Self::weighted(retracted, -1)?, Self::weighted(inserted, 1)?];
        Ok(Changelog(concat_batches(&schema, &parts)?))
    }

    /// Every row of `rows` inserted.
    pub fn inserted(rows: &RecordBatch) -> Result<Self> {
        Ok(Changelog(Self::weighted(rows, 1)?))
    }

    /// No change, over rows of `schema`.
    pub fn empty(schema: &SchemaRef) -> Self {
        Changelog(RecordBatch::new_empty(with_weight(schema)))
    }

    fn weighted(rows: &RecordBatch, weight: i64) -> Result<RecordBatch> {
        let mut columns = rows.columns().to_vec();
        columns.push(Arc::new(Int64Array::from_value(weight, rows.num_rows())) as ArrayRef);
        Ok(RecordBatch::try_new(with_weight(&rows.schema()), columns)?)
    }

    /// A batch whose last column is the weight (what a weight-carrying plan outputs).
    pub fn from_batch(batch: RecordBatch) -> Result<Self> {
        let schema = batch.schema();
        match schema.fields().last() {
            Some(f) if f.name() == WEIGHT_COLUMN && f.data_type() == &DataType::Int64 => Ok(Changelog(batch)),
            _ => Err(Error::internal(format!("a changelog needs its weight column last; got {schema:?}"))),
        }
    }

    /// The batch, weight column included (to run a weight-carrying plan over).
    pub fn into_batch(self) -> RecordBatch {
        self.0
    }

    pub fn num_rows(&self) -> usize {
        self.0.num_rows()
    }

    /// The rows without their weights.
    pub fn rows(&self) -> RecordBatch {
        let mut rows = self.0.clone();
        rows.remove_column(rows.num_columns() - 1);
        rows
    }

    /// The rows' weights.
    pub fn weights(&self) -> &[i64] {
        self.0.column(self.0.num_columns() - 1).as_primitive::<Int64Type>().values()
    }

    /// The rows inserted and the rows retracted, without their weights.
    pub fn split(&self) -> Result<(RecordBatch, RecordBatch)> {
        let rows = self.rows();
        let positive: BooleanArray = self.weights().iter().map(|&w| Some(w > 0)).collect();
        let negative: BooleanArray = self.weights().iter().map(|&w| Some(w < 0)).collect();
        Ok((filter_record_batch(&rows, &positive)?, filter_record_batch(&rows, &negative)?))
    }
}

/// `schema` with the weight column after its own.
pub fn with_weight(schema: &SchemaRef) -> SchemaRef {
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new(WEIGHT_COLUMN, DataType::Int64, false));
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// A row-by-row `node` rebuilt over `inputs` (its children, rebuilt to output
/// changelogs) to pass each row's weight through, last in its output. The weight stays
/// the last column at every node, so the plan's own column indices keep their meaning.
pub fn carry_weight(
    node: &Arc<dyn ExecutionPlan>,
    inputs: Vec<Arc<dyn ExecutionPlan>>,
) -> DfResult<Arc<dyn ExecutionPlan>> {
    let weight_of = |input: &Arc<dyn ExecutionPlan>| input.schema().fields().len() - 1;
    let carried: Arc<dyn ExecutionPlan> = if let Some(projection) = node.downcast_ref::<ProjectionExec>() {
        let input = inputs[0].clone();
        let mut exprs = projection.expr().to_vec();
        let weight = Column::new(WEIGHT_COLUMN, weight_of(&input));
        exprs.push(ProjectionExpr { expr: Arc::new(weight), alias: WEIGHT_COLUMN.to_string() });
        Arc::new(ProjectionExec::try_new(exprs, input)?)
    } else if let Some(unnest) = node.downcast_ref::<UnnestExec>() {
        // The weight is not unnested: it stays last, repeated for every row made.
        Arc::new(UnnestExec::new(
            inputs[0].clone(),
            unnest.list_column_indices().to_vec(),
            unnest.struct_column_indices().to_vec(),
            with_weight(&unnest.schema()),
            unnest.options().clone(),
        )?)
    } else if let Some(filter) = node.downcast_ref::<FilterExec>() {
        let input = inputs[0].clone();
        let projection = filter.projection().as_ref().map(|p| [p.as_ref(), &[weight_of(&input)]].concat());
        let builder = FilterExecBuilder::from(filter).with_input(input).apply_projection(None)?;
        Arc::new(builder.apply_projection(projection)?.build()?)
    } else {
        // Every other row-by-row node is rebuilt over its new inputs by DataFusion:
        // unions and coalescing follow their inputs' schemas.
        node.clone().replace_children(inputs, ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute))?
    };
    match carried.schema().fields().last() {
        Some(f) if f.name() == WEIGHT_COLUMN => Ok(carried),
        _ => internal_err!("the weight column was lost on the way through `{}`", node.name()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::live_table::{LiveExec, LiveSlot, LiveTable};
    use datafusion::arrow::array::{Int64Array, ListArray, StringArray};
    use datafusion::arrow::datatypes::Int64Type;
    use datafusion::physical_plan::collect;
    use datafusion::prelude::SessionContext;

    /// Rows (name, n, tags) inserted and retracted.
    fn changes(schema: &SchemaRef, inserted: &[(&str, i64)], retracted: &[(&str, i64)]) -> Changelog {
        let batch = |rows: &[(&str, i64)]| {
            let tags = ListArray::from_iter_primitive::<Int64Type, _, _>(
                rows.iter().map(|(_, n)| Some((0..*n % 3).map(Some).collect::<Vec<_>>())),
            );
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))) as ArrayRef,
                    Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
                    Arc::new(tags),
                ],
            )
            .unwrap()
        };
        Changelog::new(&batch(inserted), &batch(retracted)).unwrap()
    }

    /// A row-by-row plan over live slots, rebuilt by `carry_weight` from the scans up.
    fn carry(node: &Arc<dyn ExecutionPlan>) -> Arc<dyn ExecutionPlan> {
        if let Some(scan) = node.downcast_ref::<LiveExec>() {
            return Arc::new(scan.with_weight().unwrap());
        }
        carry_weight(node, node.children().into_iter().map(carry).collect()).unwrap()
    }

    /// Runs `sql` over `changes` with its plan rebuilt by `carry_weight`; returns each
    /// output row as text with its weight, sorted.
    async fn run(sql: &str, schema: &SchemaRef, changes: Changelog) -> Vec<(String, i64)> {
        let ctx = SessionContext::new();
        let slot = LiveSlot::default();
        ctx.register_table("t", Arc::new(LiveTable::new(schema.clone(), slot.clone()))).unwrap();
        let plan = ctx.sql(sql).await.unwrap().create_physical_plan().await.unwrap();
        let plan = carry(&plan);
        slot.set(vec![changes.into_batch()]);
        let batches = collect(plan.clone(), ctx.task_ctx()).await.unwrap();
        let out = Changelog::from_batch(concat_batches(&plan.schema(), &batches).unwrap()).unwrap();
        let rows = out.rows();
        let text = datafusion::arrow::util::display::ArrayFormatter::try_new;
        let mut lines: Vec<(String, i64)> = (0..rows.num_rows())
            .map(|i| {
                let cells: Vec<String> = rows
                    .columns()
                    .iter()
                    .map(|c| text(c.as_ref(), &Default::default()).unwrap().value(i).to_string())
                    .collect();
                (cells.join(","), out.weights()[i])
            })
            .collect();
        lines.sort();
        lines
    }

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, false),
            Field::new("n", DataType::Int64, false),
            Field::new_list("tags", Field::new_list_field(DataType::Int64, true), true),
        ]))
    }

    #[tokio::test]
    async fn filters_and_projections_keep_each_rows_weight() {
        let schema = schema();
        let changes = changes(&schema, &[("a", 5), ("b", 1)], &[("a", 4), ("c", 9)]);
        let out = run("SELECT upper(name) AS u, n * 10 AS m FROM t WHERE n > 3", &schema, changes).await;
        assert_eq!(out, [("A,40".to_string(), -1), ("A,50".to_string(), 1), ("C,90".to_string(), -1)]);
    }

    #[tokio::test]
    async fn an_unnest_repeats_the_weight_and_a_union_keeps_each_branchs() {
        let schema = schema();
        // a's 5 has tags [0, 1]; c's 4 has [0].
        let changes = changes(&schema, &[("a", 5)], &[("c", 4)]);
        let out = run("SELECT name, unnest(tags) AS tag FROM t", &schema, changes.clone()).await;
        assert_eq!(out, [("a,0".to_string(), 1), ("a,1".to_string(), 1), ("c,0".to_string(), -1)]);
        let sql = "SELECT name FROM t WHERE n > 4 UNION ALL SELECT upper(name) FROM t";
        let out = run(sql, &schema, changes).await;
        assert_eq!(out, [("A".to_string(), 1), ("C".to_string(), -1), ("a".to_string(), 1)]);
    }
}

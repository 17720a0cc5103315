//! Any other plan node over changelogs (a JOIN of two aggregations, window functions
//! that partition differently, a LIMIT without ORDER BY …), recomputed whole.
//!
//! The operator keeps every row its inputs hold now (a counted multiset per input, in
//! arrow's row format) and the rows it output last. Per batch it applies its inputs'
//! changes, runs DataFusion's own node over all their rows, and passes on what differs
//! from its last output. Correct for every node, but a batch costs the whole input:
//! the planner uses it only where no incremental operator fits.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;

use crate::error::Result;
use crate::operators::changelog::Changelog;
use crate::operators::exec::{OperatorKind, OperatorStats, StreamingOperator, Tick};
use crate::operators::rows_to_batch;
use crate::pipeline::live_table::{LiveSlot, run_over};

pub struct Recompute {
    /// Per input: the scan the node reads it through, and its rows now.
    inputs: Vec<(LiveSlot, Multiset)>,
    plan: Arc<dyn ExecutionPlan>,
    /// The node's output last time.
    output: Multiset,
    rows_read: u64,
}

impl Recompute {
    /// `plan` reading its inputs from `slots` (of the given schemas, without weights).
    pub fn new(plan: Arc<dyn ExecutionPlan>, inputs: Vec<(LiveSlot, SchemaRef)>) -> Result<Self> {
        let output = Multiset::new(plan.schema())?;
        let inputs =
            inputs.into_iter().map(|(slot, schema)| Ok((slot, Multiset::new(schema)?))).collect::<Result<_>>()?;
        Ok(Recompute { inputs, plan, output, rows_read: 0 })
    }
}

#[async_trait::async_trait]
impl StreamingOperator for Recompute {
    async fn process(&mut self, inputs: Vec<RecordBatch>, _tick: Tick, ctx: Arc<TaskContext>) -> Result<RecordBatch> {
        let mut all = Vec::with_capacity(inputs.len());
        for ((slot, rows), changes) in self.inputs.iter_mut().zip(inputs) {
            rows.apply(&Changelog::from_batch(changes)?)?;
            let batch = rows.batch()?;
            self.rows_read += batch.num_rows() as u64;
            all.push((slot.clone(), batch));
        }
        // Every input's slot holds its rows while the node runs.
        for (slot, batch) in &all[1..] {
            slot.set(vec![batch.clone()]);
        }
        let (first_slot, first) = all[0].clone();
        let out = run_over(&first_slot, vec![first], &self.plan, ctx).await;
        for (slot, _) in &all[1..] {
            slot.set(vec![]);
        }
        Ok(self.output.replace(&out?)?.into_batch())
    }

    fn stats(&self) -> OperatorStats {
        OperatorStats {
            kind: OperatorKind::Recompute,
            rows_read: self.rows_read,
            held: self.inputs.iter().map(|(_, rows)| rows.rows.len()).sum(),
            closed_rows: 0,
        }
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

/// Rows, each with how many times it is held.
struct Multiset {
    schema: SchemaRef,
    converter: RowConverter,
    rows: HashMap<Box<[u8]>, i64>,
}

impl Multiset {
    fn new(schema: SchemaRef) -> Result<Self> {
        let fields = schema.fields().iter().map(|f| SortField::new(f.data_type().clone())).collect();
        Ok(Multiset { converter: RowConverter::new(fields)?, schema, rows: HashMap::new() })
    }

    fn apply(&mut self, changes: &Changelog) -> Result<()> {
        let rows = self.converter.convert_columns(changes.rows().columns())?;
        for (i, &weight) in changes.weights().iter().enumerate() {
            let count = self.rows.entry(Box::from(rows.row(i).data())).or_insert(0);
            *count += weight;
            if *count == 0 {
                self.rows.remove(rows.row(i).data());
            }
        }
        Ok(())
    }

    /// Every row, as many times as it is held (in a fixed order).
    fn batch(&self) -> Result<RecordBatch> {
        let mut held: Vec<(&Box<[u8]>, &i64)> = self.rows.iter().collect();
        held.sort();
        self.to_batch(held.into_iter().flat_map(|(row, &n)| std::iter::repeat_n(row.as_ref(), n.max(0) as usize)))
    }

    fn to_batch<'a>(&self, rows: impl Iterator<Item = &'a [u8]>) -> Result<RecordBatch> {
        rows_to_batch(&self.converter, &self.schema, &rows.collect::<Vec<_>>())
    }

    /// Holds `now` instead; the changes from what was held to it.
    fn replace(&mut self, now: &RecordBatch) -> Result<Changelog> {
        let converted = self.converter.convert_columns(now.columns())?;
        let mut next: HashMap<Box<[u8]>, i64> = HashMap::new();
        for row in converted.iter() {
            *next.entry(Box::from(row.data())).or_insert(0) += 1;
        }
        let (mut inserted, mut retracted): (Vec<&[u8]>, Vec<&[u8]>) = (Vec::new(), Vec::new());
        for (row, &n) in &next {
            let old = self.rows.get(row).copied().unwrap_or(0);
            inserted.extend(std::iter::repeat_n(row.as_ref(), (n - old).max(0) as usize));
            retracted.extend(std::iter::repeat_n(row.as_ref(), (old - n).max(0) as usize));
        }
        for (row, &old) in &self.rows {
            if !next.contains_key(row) {
                retracted.extend(std::iter::repeat_n(row.as_ref(), old.max(0) as usize));
            }
        }
        inserted.sort();
        retracted.sort();
        let changes = Changelog::new(&self.to_batch(inserted.into_iter())?, &self.to_batch(retracted.into_iter())?)?;
        self.rows = next;
        Ok(changes)
    }
}

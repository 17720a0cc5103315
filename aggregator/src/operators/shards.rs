//! An aggregation over `SOURCE` split into shards by a hash of its key, each shard
//! on a worker thread (`--workers`): the model of Flink's key groups and Feldera's
//! workers, inside one process.
//!
//! Every input row goes to the shard of its group, so a group lives in exactly one
//! shard and the shards' outputs never overlap: the operator's output is their
//! concatenation, and the result does not depend on the number of shards. The hash is
//! of the group columns other than the window (a session merges across windows of one
//! key, so its key alone decides), with a fixed seed.
//!
//! Checkpoints hold the shards' state as one table, so a pipeline restarted with
//! another number of workers restores it by hashing each saved group again.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, UInt32Array};
use datafusion::arrow::compute::{concat_batches, take_record_batch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::hash_utils::{RandomState, create_hashes};
use datafusion::physical_expr::PhysicalExpr;
use rayon::prelude::*;

use crate::error::Result;
use crate::operators::aggregate::{Aggregate, AggregateSpec, Changed, Merged};
use crate::operators::changelog::Changelog;
use crate::pipeline::windows::WindowSpec;

/// The seed of the routing hash: fixed, so that a saved group finds its shard again.
const ROUTING: RandomState = RandomState::with_seed(0x5eed);

/// One aggregation as `n` shards.
pub struct Shards {
    shards: Vec<Aggregate>,
    spec: AggregateSpec,
    /// The group columns that route a row (positions among the group columns); none:
    /// the aggregation cannot be split (no GROUP BY, GROUPING SETS, or a session or
    /// hopping window alone).
    routing: Vec<usize>,
    /// The expressions that compute `routing`'s columns from an input row.
    routing_exprs: Vec<Arc<dyn PhysicalExpr>>,
}

impl Shards {
    /// One shard; [`Self::split`] makes more.
    pub fn new(spec: AggregateSpec) -> Result<Self> {
        let groups = spec.group_by.expr();
        let single_set = spec.group_by.groups().len() <= 1;
        let window = spec.window.as_ref().map(|(column, w)| (*column, matches!(w, WindowSpec::Tumbling { .. })));
        let mut routing: Vec<usize> = (0..groups.len()).filter(|&c| window.is_none_or(|(w, _)| c != w)).collect();
        // A tumbling window alone routes by itself. A session merges across windows,
        // and a hopping window's rows name their pane, which feeds several windows:
        // alone, they are one key (no split).
        if routing.is_empty()
            && let Some((w, true)) = window
        {
            routing.push(w);
        }
        if !single_set || spec.input == crate::operators::aggregate::InputKind::Changelog {
            routing.clear();
        }
        let routing_exprs = routing.iter().map(|&c| groups[c].0.clone()).collect();
        Ok(Shards { shards: vec![Aggregate::new(spec.clone())?], spec, routing, routing_exprs })
    }

    /// Makes `n` shards (before any state is held). An aggregation that cannot be split
    /// keeps one.
    pub fn split(&mut self, n: usize) -> Result<()> {
        if self.routing.is_empty() || n <= 1 || !self.is_empty() {
            return Ok(());
        }
        self.shards = (0..n).map(|_| Aggregate::new(self.spec.clone())).collect::<Result<_>>()?;
        Ok(())
    }

    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// Each row's shard, from the routing columns.
    fn shard_of(&self, columns: &[ArrayRef], rows: usize) -> Result<Vec<Vec<u32>>> {
        let n = self.shards.len();
        let mut hashes = vec![0; rows];
        create_hashes(columns, &ROUTING, &mut hashes)?;
        let mut parts = vec![Vec::with_capacity(rows / n + rows / (4 * n) + 1); n];
        for (row, hash) in hashes.iter().enumerate() {
            parts[(*hash % n as u64) as usize].push(row as u32);
        }
        Ok(parts)
    }

    /// `batch`'s rows per shard, routed by `columns`.
    fn route(&self, batch: &RecordBatch, columns: &[ArrayRef]) -> Result<Vec<RecordBatch>> {
        self.shard_of(columns, batch.num_rows())?
            .into_iter()
            .map(|rows| Ok(take_record_batch(batch, &UInt32Array::from(rows))?))
            .collect()
    }

    /// Input rows (the aggregation's input) per shard.
    fn route_input(&self, input: &RecordBatch) -> Result<Vec<RecordBatch>> {
        let columns = self
            .routing_exprs
            .iter()
            .map(|e| e.evaluate(input)?.into_array(input.num_rows()))
            .collect::<datafusion::common::Result<Vec<_>>>()?;
        self.route(input, &columns)
    }

    /// Saved groups or keys (group columns first) per shard.
    fn route_groups(&self, groups: &RecordBatch) -> Result<Vec<RecordBatch>> {
        let columns: Vec<ArrayRef> = self.routing.iter().map(|&c| groups.column(c).clone()).collect();
        self.route(groups, &columns)
    }

    /// Runs `f` on every shard with its part, on the worker threads when there are
    /// several; the results in shard order.
    fn each<T: Send>(
        &mut self,
        parts: Vec<RecordBatch>,
        f: impl Fn(&mut Aggregate, RecordBatch) -> Result<T> + Sync,
    ) -> Result<Vec<T>> {
        match self.shards.len() {
            1 => parts.into_iter().map(|p| f(&mut self.shards[0], p)).collect(),
            _ => self.shards.par_iter_mut().zip(parts).map(|(shard, part)| f(shard, part)).collect(),
        }
    }

    /// Every shard's `f`, without input, one after the other (cheap calls).
    fn all<T>(&mut self, f: impl FnMut(&mut Aggregate) -> Result<T>) -> Result<Vec<T>> {
        self.shards.iter_mut().map(f).collect()
    }

    /// See [`Aggregate::update`].
    pub fn update(&mut self, input: &RecordBatch) -> Result<Merged> {
        if self.shards.len() == 1 {
            return self.shards[0].update(input);
        }
        let parts = self.route_input(input)?;
        let merged = self.each(parts, |shard, part| shard.update(&part))?;
        let schema = self.spec.final_schema.clone();
        let finals = concat(&schema, merged.iter().map(|m| &m.finals))?;
        let removed = concat_some(merged.iter().map(|m| m.removed.as_ref()))?;
        let previous = match self.spec.emit_previous {
            true => Some(concat(&schema, merged.iter().filter_map(|m| m.previous.as_ref()))?),
            false => None,
        };
        Ok(Merged { finals, removed, previous })
    }

    /// See [`Aggregate::update_changelog`] (an aggregation over a changelog is one shard).
    pub fn update_changelog(&mut self, changes: &Changelog) -> Result<Changed> {
        self.shards[0].update_changelog(changes)
    }

    /// See [`Aggregate::evict`].
    pub fn evict(&mut self, watermark: i64, evaluate: bool) -> Result<Option<RecordBatch>> {
        let closed = self.all(|shard| shard.evict(watermark, evaluate))?;
        concat_some(closed.iter().map(Option::as_ref))
    }

    /// See [`Aggregate::evaluate_all`].
    pub fn evaluate_all(&mut self) -> Result<RecordBatch> {
        let all = self.all(Aggregate::evaluate_all)?;
        concat(&self.spec.final_schema, all.iter())
    }

    /// See [`Aggregate::full_state`]: the shards' states as one table.
    pub fn full_state(&mut self) -> Result<RecordBatch> {
        let states = self.all(Aggregate::full_state)?;
        concat(&self.checkpoint_schema(), states.iter())
    }

    /// See [`Aggregate::take_changes`].
    pub fn take_changes(&mut self) -> Result<(RecordBatch, RecordBatch)> {
        let changes = self.all(Aggregate::take_changes)?;
        let written = concat(&self.checkpoint_schema(), changes.iter().map(|c| &c.0))?;
        let removed = concat(&changes[0].1.schema(), changes.iter().map(|c| &c.1))?;
        Ok((written, removed))
    }

    /// See [`Aggregate::restore`]: each saved group goes to its shard.
    pub fn restore(&mut self, saved: &RecordBatch) -> Result<()> {
        let parts = self.split_saved(saved)?;
        self.each(parts, |shard, part| shard.restore(&part))?;
        Ok(())
    }

    /// See [`Aggregate::restore_removed`].
    pub fn restore_removed(&mut self, keys: &RecordBatch) -> Result<()> {
        let parts = self.split_saved(keys)?;
        self.each(parts, |shard, part| shard.restore_removed(&part))?;
        Ok(())
    }

    fn split_saved(&self, groups: &RecordBatch) -> Result<Vec<RecordBatch>> {
        match self.shards.len() {
            1 => Ok(vec![groups.clone()]),
            _ => self.route_groups(groups),
        }
    }

    pub fn set_evicted_until(&mut self, evicted_until: Option<i64>) {
        for shard in &mut self.shards {
            shard.set_evicted_until(evicted_until);
        }
    }

    pub fn evicted_until(&self) -> Option<i64> {
        self.shards[0].evicted_until()
    }

    pub fn checkpoint_schema(&self) -> SchemaRef {
        self.shards[0].checkpoint_schema()
    }

    pub fn set_emit_previous(&mut self, emit_previous: bool) {
        self.spec.emit_previous = emit_previous;
        for shard in &mut self.shards {
            shard.set_emit_previous(emit_previous);
        }
    }

    pub fn final_schema(&self) -> &SchemaRef {
        &self.spec.final_schema
    }

    /// Groups held, over all shards.
    pub fn len(&self) -> usize {
        self.shards.iter().map(Aggregate::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.shards.iter().all(Aggregate::is_empty)
    }

    pub fn rows_read(&self) -> u64 {
        self.shards.iter().map(Aggregate::rows_read).sum()
    }

    /// Bytes the state holds, over all shards.
    pub fn size(&self) -> usize {
        self.shards.iter().map(Aggregate::size).sum()
    }
}

fn concat<'a>(schema: &SchemaRef, batches: impl Iterator<Item = &'a RecordBatch>) -> Result<RecordBatch> {
    Ok(concat_batches(schema, batches)?)
}

/// The batches there are, as one; none if there are none.
fn concat_some<'a>(batches: impl Iterator<Item = Option<&'a RecordBatch>>) -> Result<Option<RecordBatch>> {
    let batches: Vec<&RecordBatch> = batches.flatten().collect();
    match batches.first() {
        None => Ok(None),
        Some(first) => Ok(Some(concat_batches(&first.schema(), batches.iter().copied())?)),
    }
}

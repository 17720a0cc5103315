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

use datafusion::arrow::array::{Array, ArrayRef, RecordBatch, UInt32Array};
use datafusion::arrow::compute::{concat as concat_arrays, concat_batches, take_arrays, take_record_batch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::hash_utils::{RandomState, create_hashes};
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
        Ok(Shards { shards: vec![Aggregate::new(spec.clone())?], spec, routing })
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

    /// Each row's shard, by the hash of `routing`'s columns among `columns`.
    fn shard_rows(&self, columns: &[ArrayRef], rows: usize) -> Result<Vec<UInt32Array>> {
        let n = self.shards.len();
        let routing: Vec<ArrayRef> = self.routing.iter().map(|&c| columns[c].clone()).collect();
        let mut hashes = vec![0; rows];
        create_hashes(&routing, &ROUTING, &mut hashes)?;
        let mut parts = vec![Vec::with_capacity(rows / n + rows / (4 * n) + 1); n];
        for (row, hash) in hashes.iter().enumerate() {
            parts[(*hash % n as u64) as usize].push(row as u32);
        }
        Ok(parts.into_iter().map(UInt32Array::from).collect())
    }

    /// Input rows (the aggregation's input) per shard, with their group columns. The
    /// group columns are computed, hashed and split on the worker threads, a slice of
    /// the batch each: they may cost more than the aggregation (q17 formats every
    /// event's time as its day), and the shards take them as they are.
    fn route_input(&self, input: &RecordBatch) -> Result<Vec<(RecordBatch, Vec<ArrayRef>)>> {
        const MIN_SLICE: usize = 4096;
        let rows = input.num_rows();
        let slice = rows.div_ceil(self.shards.len()).max(MIN_SLICE);
        // (An empty batch is one empty slice: every shard still gets its part.)
        let starts: Vec<usize> = (0..rows.max(1)).step_by(slice).collect();
        let slices: Vec<Vec<(RecordBatch, Vec<ArrayRef>)>> = starts
            .into_par_iter()
            .map(|at| {
                let part = input.slice(at, slice.min(rows - at));
                let columns = self
                    .spec
                    .group_by
                    .expr()
                    .iter()
                    .map(|(e, _)| e.evaluate(&part)?.into_array(part.num_rows()))
                    .collect::<datafusion::common::Result<Vec<_>>>()?;
                self.shard_rows(&columns, part.num_rows())?
                    .iter()
                    .map(|rows| Ok((take_record_batch(&part, rows)?, take_arrays(&columns, rows, None)?)))
                    .collect()
            })
            .collect::<Result<_>>()?;
        let mut slices = slices.into_iter();
        let Some(first) = slices.next() else {
            return Ok(Vec::new());
        };
        let rest: Vec<_> = slices.collect();
        if rest.is_empty() {
            return Ok(first);
        }
        // Each shard's rows in the batch's order: its part of every slice, in turn.
        first
            .into_iter()
            .enumerate()
            .map(|(k, (batch, columns))| {
                let batches = std::iter::once(&batch).chain(rest.iter().map(|s| &s[k].0));
                let batch = concat_batches(&input.schema(), batches)?;
                let columns = (0..columns.len())
                    .map(|c| {
                        let parts: Vec<&dyn Array> = std::iter::once(columns[c].as_ref())
                            .chain(rest.iter().map(|s| s[k].1[c].as_ref()))
                            .collect();
                        concat_arrays(&parts)
                    })
                    .collect::<std::result::Result<_, _>>()?;
                Ok((batch, columns))
            })
            .collect()
    }

    /// Saved groups or keys (group columns first) per shard.
    fn route_groups(&self, groups: &RecordBatch) -> Result<Vec<RecordBatch>> {
        let columns = &groups.columns()[..self.spec.group_by.expr().len()];
        self.shard_rows(columns, groups.num_rows())?.iter().map(|rows| Ok(take_record_batch(groups, rows)?)).collect()
    }

    /// Runs `f` on every shard with its part, on the worker threads when there are
    /// several; the results in shard order.
    fn each<P: Send, T: Send>(
        &mut self,
        parts: Vec<P>,
        f: impl Fn(&mut Aggregate, P) -> Result<T> + Sync,
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
        let merged =
            self.each(parts, |shard, (part, group_columns)| shard.update_grouped(&part, Some(group_columns)))?;
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

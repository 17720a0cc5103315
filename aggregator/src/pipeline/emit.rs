//! From state changes to result changes: which rows to upsert and delete.
//!
//! | output mode | keyed (one row per group) | whole-result diff |
//! | --- | --- | --- |
//! | update | groups the batch touched; touched groups that a HAVING now drops are deleted | rows that changed since the last write; rows that left are deleted |
//! | complete | every group, every batch | every row, every batch; rows that left are deleted |
//! | append | groups of windows the watermark closed in this batch, once | rows of closed windows |
//!
//! In update mode closed windows leave the state but their rows stay in the sink. In
//! complete mode nothing leaves the state (the whole result must be rewritten), as in
//! Spark. A second stage always sees stage 1's current result, closed windows included
//! (their final rows are kept for it).

use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};

use datafusion::arrow::array::{ArrayRef, UInt32Array};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::record_batch::RecordBatch;
use sha2::{Digest, Sha256};
use store::{ColumnRole, ResultColumn, ResultDelta, ResultRow, Value};

use crate::error::Result;
use crate::operators::Between;
use crate::operators::aggregate::{Aggregate, Changed, Merged};
use crate::operators::changelog::Changelog;
use crate::operators::partitioned::PartitionedRows;
use crate::operators::top_n::TopN;
use crate::pipeline::definition::OutputMode;
use crate::pipeline::plan::{Emission, StreamingPlan};
use crate::sink::values;

/// The result table's columns: the output's columns except `_id`, each with its role
/// when the result has a key (the key's columns, and the values computed per key).
pub fn result_columns(plan: &StreamingPlan) -> Vec<ResultColumn> {
    let keys = plan.key_columns();
    plan.output_schema
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| f.name() != "_id")
        .map(|(i, f)| ResultColumn {
            name: f.name().clone(),
            column_type: values::column_type(f.data_type()),
            role: keys.map(|keys| if keys.contains(&i) { ColumnRole::Key } else { ColumnRole::Value }),
        })
        .collect()
}

/// What an emitter remembers between batches (and checkpoints).
#[derive(Default)]
pub struct Emitter {
    /// Whole-result diff: `_id` → fingerprint of the row last written.
    pub written: HashMap<String, u64>,
    /// Final rows (group columns + values) of windows that left the state, for
    /// second stages that still read them.
    pub finalized: Option<RecordBatch>,
    /// The aggregations over stage 1's changes, level by level (`Emission::Chained`).
    chain: Vec<Aggregate>,
    /// Per level of the chain, the rows its window functions are recomputed over or
    /// its `ORDER BY … LIMIT` picks from.
    between: Vec<Option<Between>>,
    /// The incremental `ORDER BY … LIMIT` (`Emission::TopN`).
    top_n: Option<TopN>,
    /// The rows the result's window functions are recomputed over (`Emission::Partitioned`).
    output_partitions: Option<Between>,
}

impl Emitter {
    /// An emitter for `plan`, with what it remembered at the last checkpoint.
    pub fn new(plan: &StreamingPlan, written: HashMap<String, u64>, finalized: Option<RecordBatch>) -> Result<Self> {
        let chain = plan.chain_specs().into_iter().map(Aggregate::new).collect::<Result<_>>()?;
        let top_n = plan.top_n_spec().map(|(sort, fetch, schema)| TopN::new(sort, fetch, schema)).transpose()?;
        let between = plan.chain_between()?;
        let output_partitions =
            plan.partitioned_output_spec().map(PartitionedRows::new).transpose()?.map(Between::Partitions);
        Ok(Emitter { written, finalized, chain, between, top_n, output_partitions })
    }

    /// After a restart: the state of what runs over stage 1's changes (the chain, the
    /// top-N), rebuilt from stage 1's result (its open groups and, outside append mode,
    /// the closed windows' rows) as if it had just been inserted.
    pub async fn rebuild(&mut self, plan: &StreamingPlan, groups: &mut Aggregate) -> Result<()> {
        if self.chain.is_empty() && self.top_n.is_none() && self.output_partitions.is_none() {
            return Ok(());
        }
        let mut parts: Vec<RecordBatch> = self.finalized.iter().cloned().collect();
        if plan.output_mode != OutputMode::Append {
            parts.push(groups.evaluate_all()?);
        }
        let all = Changelog::inserted(&concat_batches(&plan.final_schema, &parts)?)?;
        if self.top_n.is_some() || self.output_partitions.is_some() {
            let all = self.through_chain(plan, all).await?;
            if let Some(top_n) = &mut self.top_n {
                top_n.update(&plan.top_n_input(all).await?)?;
            } else if let Some(partitions) = &mut self.output_partitions {
                plan.partitioned_output(all, partitions).await?;
            }
        } else {
            feed_chain(plan, &mut self.chain, &mut self.between, all).await?;
        }
        Ok(())
    }

    /// Stage 1's changes through the chain, if there is one, for what reads its last
    /// level's changes (a top-N, window functions).
    async fn through_chain(&mut self, plan: &StreamingPlan, changes: Changelog) -> Result<Changelog> {
        if self.chain.is_empty() {
            return Ok(changes);
        }
        feed_chain(plan, &mut self.chain, &mut self.between, changes).await?.changelog()
    }

    /// The rows kept for window functions, between levels and over the result.
    fn partitioned(&self) -> impl Iterator<Item = &PartitionedRows> {
        self.between.iter().flatten().chain(&self.output_partitions).filter_map(|b| match b {
            Between::Partitions(p) => Some(p),
            Between::TopN(_) => None,
        })
    }

    /// Rows the chain's first aggregation (over stage 1's changes) has read.
    pub fn chain_rows_read(&self) -> Option<u64> {
        self.chain.first().map(|s| s.rows_read())
    }

    /// Rows the chain's window functions have been recomputed over, if it has them.
    pub fn partition_rows_recomputed(&self) -> Option<u64> {
        let counts: Vec<u64> = self.partitioned().map(|p| p.rows_recomputed()).collect();
        (!counts.is_empty()).then(|| counts.iter().sum())
    }

    /// What the state over stage 1's changes holds: groups per level of the chain,
    /// partitions of window functions, and rows of closed windows kept.
    pub fn downstream_state(&self) -> (Vec<usize>, Vec<usize>, usize) {
        let groups = self.chain.iter().map(|a| a.len()).collect();
        let partitions = self.partitioned().map(|p| p.len()).collect();
        (groups, partitions, self.finalized.as_ref().map_or(0, |f| f.num_rows()))
    }

    /// Rows the incremental top-N has read (stage 1's changes), if there is one.
    pub fn top_n_rows_read(&self) -> Option<u64> {
        self.top_n.as_ref().map(|t| t.rows_read())
    }

    /// Stage 1's changes for what runs over them: in append mode the windows that
    /// closed, else the groups the batch wrote (their old values retracted). Keeps the
    /// rows of closed windows if a restart will need them.
    fn stage1_changes(
        &mut self,
        plan: &StreamingPlan,
        closed: Option<RecordBatch>,
        touched: RecordBatch,
        previous: Option<RecordBatch>,
    ) -> Result<Changelog> {
        if let Some(closed) = closed.as_ref().filter(|_| plan.keeps_closed_rows()) {
            self.keep_finalized(closed.clone())?;
        }
        match (plan.output_mode, closed, previous) {
            (OutputMode::Append, Some(closed), _) => Changelog::inserted(&closed),
            (OutputMode::Append, None, _) => Ok(Changelog::empty(&plan.final_schema)),
            (_, _, Some(previous)) => Changelog::new(&touched, &previous),
            (_, _, None) => Changelog::inserted(&touched),
        }
    }

    /// Adds rows of windows that closed to those kept.
    fn keep_finalized(&mut self, closed: RecordBatch) -> Result<()> {
        self.finalized = Some(match self.finalized.take() {
            Some(old) => concat_batches(&old.schema(), [&old, &closed])?,
            None => closed,
        });
        Ok(())
    }

    /// Evicts closed windows and computes the batch's result changes. `merged` holds
    /// the final values of the groups this batch merged into (and the groups merged
    /// away, for session windows).
    pub async fn emit(
        &mut self,
        plan: &StreamingPlan,
        groups: &mut Aggregate,
        merged: Merged,
        watermark: Option<i64>,
    ) -> Result<ResultDelta> {
        let delta = self.changes(plan, groups, merged, watermark).await?;
        // What runs over stage 1's changes lets closed windows go too (not in complete
        // mode, which keeps everything).
        if let (Some(w), false) = (watermark, plan.output_mode == OutputMode::Complete) {
            for level in &mut self.chain {
                level.evict(w, false)?;
            }
            // (An `ORDER BY … LIMIT` between levels keeps its rows: they rank all windows.)
            let all = self.between.iter_mut().flatten().chain(&mut self.output_partitions);
            for between in all {
                if let Between::Partitions(partitions) = between {
                    partitions.evict(w);
                }
            }
        }
        Ok(delta)
    }

    /// The result changes of a batch (see [`Self::emit`]).
    async fn changes(
        &mut self,
        plan: &StreamingPlan,
        groups: &mut Aggregate,
        merged: Merged,
        watermark: Option<i64>,
    ) -> Result<ResultDelta> {
        let Merged { finals: touched, removed, previous } = merged;
        let mode = plan.output_mode;
        // Complete mode keeps every group; the others drop windows the watermark closed.
        let closed = match (mode, watermark) {
            (OutputMode::Complete, _) | (_, None) => None,
            (_, Some(w)) => {
                let keep_rows = mode == OutputMode::Append || !matches!(plan.emission, Emission::Keyed { .. });
                groups.evict(w, keep_rows)?
            }
        };
        match &plan.emission {
            Emission::Keyed { key_columns, group_columns } => match mode {
                OutputMode::Update => {
                    let out = plan.top(touched.clone()).await?;
                    // Sessions that grew into another one leave under their old key.
                    Ok(keyed_delta(&out, &touched, key_columns, group_columns.as_deref(), removed.as_ref()))
                }
                OutputMode::Append => match closed {
                    Some(finals) => {
                        let out = plan.top(finals).await?;
                        Ok(ResultDelta { upserts: rows(&out, key_ids(&out, key_columns)), deletes: vec![] })
                    }
                    None => Ok(ResultDelta::default()),
                },
                OutputMode::Complete => {
                    let all = groups.evaluate_all()?;
                    let out = plan.top(all.clone()).await?;
                    Ok(keyed_delta(&out, &all, key_columns, group_columns.as_deref(), removed.as_ref()))
                }
            },
            Emission::Chained { key_columns, group_columns } => {
                // Closed windows stay in the result the chain reads: their rows are kept
                // to rebuild it after a restart.
                let changes = self.stage1_changes(plan, closed, touched, previous)?;
                let changed = feed_chain(plan, &mut self.chain, &mut self.between, changes).await?;
                let finals = match mode {
                    OutputMode::Complete => self.chain.last_mut().expect("a chain").evaluate_all()?,
                    _ => changed.finals,
                };
                let out = plan.chain_top(finals.clone()).await?;
                Ok(keyed_delta(&out, &finals, key_columns, group_columns.as_deref(), Some(&changed.gone)))
            }
            Emission::TopN { key_columns } => {
                let changes = self.stage1_changes(plan, closed, touched, previous)?;
                let changes = plan.top_n_input(self.through_chain(plan, changes).await?).await?;
                let top_n = self.top_n.as_mut().expect("planned with a top-N");
                top_n.update(&changes)?;
                let out = plan.top_n_output(top_n.top()?).await?;
                let ids = match key_columns {
                    Some(k) => key_ids(&out, k),
                    None => content_ids(&out),
                };
                Ok(self.diff(rows(&out, ids), mode == OutputMode::Complete))
            }
            Emission::Partitioned { key_columns } => {
                let changes = self.stage1_changes(plan, closed, touched, previous)?;
                let changes = self.through_chain(plan, changes).await?;
                let partitions = self.output_partitions.as_mut().expect("planned with window functions");
                let (new_rows, old_rows) = plan.partitioned_output(changes, partitions).await?.split()?;
                let upserts = rows(&new_rows, key_ids(&new_rows, key_columns));
                let deletes = missing(&key_ids(&old_rows, key_columns), &upserts);
                Ok(ResultDelta { upserts, deletes })
            }
            Emission::Rows { .. } => Err(crate::error::Error::internal(
                "a query without aggregation has no state to emit from (see rows_delta)".to_string(),
            )),
            Emission::FullDiff { key_columns } => {
                if let Some(closed) = closed {
                    self.keep_finalized(closed)?;
                }
                let current = match mode {
                    OutputMode::Append => {
                        self.finalized.clone().unwrap_or_else(|| RecordBatch::new_empty(plan.final_schema.clone()))
                    }
                    _ => {
                        let open = groups.evaluate_all()?;
                        match &self.finalized {
                            Some(done) => concat_batches(&open.schema(), [done, &open])?,
                            None => open,
                        }
                    }
                };
                let stage1 = plan.top(current).await?;
                let out = plan.stage2(stage1).await?;
                let ids = match key_columns {
                    Some(k) => key_ids(&out, k),
                    None => content_ids(&out),
                };
                Ok(self.diff(rows(&out, ids), mode == OutputMode::Complete))
            }
        }
    }

    /// Rows that are new or changed since the last write (all of them with
    /// `everything`), and deletes for rows that are gone.
    fn diff(&mut self, rows: Vec<ResultRow>, everything: bool) -> ResultDelta {
        let mut next = HashMap::with_capacity(rows.len());
        let mut upserts = Vec::new();
        for row in rows {
            let print = fingerprint(&row.values);
            if everything || self.written.get(&row.id) != Some(&print) {
                next.insert(row.id.clone(), print);
                upserts.push(row);
            } else {
                next.insert(row.id, print);
            }
        }
        let mut deletes: Vec<String> = self.written.keys().filter(|id| !next.contains_key(*id)).cloned().collect();
        deletes.sort();
        self.written = next;
        ResultDelta { upserts, deletes }
    }
}

/// The result changes of a query without aggregation: its rows for a micro-batch
/// (`out`, each from record `records[i]`), upserted under their key or else under
/// their record's `location` (see [`Emission::Rows`]).
pub fn rows_delta(
    plan: &StreamingPlan,
    out: &RecordBatch,
    records: &UInt32Array,
    location: impl Fn(usize) -> String,
) -> ResultDelta {
    let ids = match &plan.emission {
        Emission::Rows { key_columns: Some(k) } => key_ids(out, k),
        // Rows of one record are together in a batch, in an order of the plan's.
        _ => numbered(records.values().iter().map(|&record| location(record as usize))),
    };
    ResultDelta { upserts: rows(out, ids), deletes: vec![] }
}

/// Stage 1's changes (final values of its groups inserted and retracted) through the
/// chain, level by level: each level's changes are the next one's input. Returns what
/// the last level did.
async fn feed_chain(
    plan: &StreamingPlan,
    chain: &mut [Aggregate],
    between: &mut [Option<Between>],
    mut changes: Changelog,
) -> Result<Changed> {
    let levels = chain.len();
    for (k, (aggregate, between)) in chain.iter_mut().zip(between.iter_mut()).enumerate() {
        let input = plan.chain_input(k, changes, between.as_mut()).await?;
        let changed = aggregate.update_changelog(&input)?;
        if k + 1 == levels {
            return Ok(changed);
        }
        changes = changed.changelog()?;
    }
    Err(crate::error::Error::internal("an empty chain was fed".to_string()))
}

/// The rows of `out` (what the query makes of the groups in `finals`) upserted by key;
/// with the group columns behind the key, the groups the query dropped (a HAVING) and
/// those `gone` from the state deleted.
fn keyed_delta(
    out: &RecordBatch,
    finals: &RecordBatch,
    key_columns: &[usize],
    group_columns: Option<&[usize]>,
    gone: Option<&RecordBatch>,
) -> ResultDelta {
    let upserts = rows(out, key_ids(out, key_columns));
    let mut deletes = Vec::new();
    if let Some(group_columns) = group_columns {
        if out.num_rows() < finals.num_rows() {
            deletes = missing(&key_ids(finals, group_columns), &upserts);
        }
        if let Some(gone) = gone {
            deletes.extend(key_ids(gone, group_columns));
        }
    }
    ResultDelta { upserts, deletes }
}

fn key_ids(batch: &RecordBatch, key_columns: &[usize]) -> Vec<String> {
    let keys: Vec<ArrayRef> = key_columns.iter().map(|&k| batch.column(k).clone()).collect();
    (0..batch.num_rows()).map(|row| values::row_id(&keys, row)).collect()
}

/// `_id`s from a row's content, for results without a key: the SHA-256 of the row's
/// JSON, with `#2`, `#3`… for repeated rows.
fn content_ids(batch: &RecordBatch) -> Vec<String> {
    let columns: Vec<usize> = (0..batch.num_columns()).filter(|&c| batch.schema().field(c).name() != "_id").collect();
    numbered((0..batch.num_rows()).map(|row| {
        let row = Value::List(columns.iter().map(|&c| values::cell(batch.column(c), row)).collect());
        hex::encode(&Sha256::digest(row.json_text().as_bytes())[..16])
    }))
}

/// `ids` with `#2`, `#3`… after the second, third… occurrence of an id.
fn numbered(ids: impl Iterator<Item = String>) -> Vec<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    ids.map(|id| {
        let n = seen.entry(id.clone()).or_insert(0);
        *n += 1;
        if *n == 1 { id } else { format!("{id}#{n}") }
    })
    .collect()
}

/// Result rows (values without `_id`) with the given ids.
fn rows(batch: &RecordBatch, ids: Vec<String>) -> Vec<ResultRow> {
    let columns: Vec<&ArrayRef> = batch
        .columns()
        .iter()
        .zip(batch.schema().fields())
        .filter(|(_, f)| f.name() != "_id")
        .map(|(c, _)| c)
        .collect();
    ids.into_iter()
        .enumerate()
        .map(|(row, id)| ResultRow { id, values: columns.iter().map(|c| values::cell(c, row)).collect() })
        .collect()
}

/// Ids in `all` that no upsert has.
fn missing(all: &[String], upserts: &[ResultRow]) -> Vec<String> {
    let present: HashSet<&str> = upserts.iter().map(|r| r.id.as_str()).collect();
    all.iter().filter(|id| !present.contains(id.as_str())).cloned().collect()
}

fn fingerprint(values: &[Value]) -> u64 {
    let mut hasher = DefaultHasher::new();
    values.hash(&mut hasher);
    hasher.finish()
}

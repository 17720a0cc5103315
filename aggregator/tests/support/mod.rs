//! Shared by the integration tests: make a log, run pipelines, compute the oracle.
//!
//! The oracle is the pipeline's SQL run as one batch DataFusion query
//! (`aggregator::batch::run`) over every good event of the log, minus the events that
//! are late. Lateness is recomputed here from its definition (watermark = highest
//! event time among the *earlier* events of the same partition − allowed delay;
//! late = the event's last window has ended by then), independently of the
//! pipeline's code.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use aggregator::pipeline::definition::{OutputMode, PipelineDefinition};
use aggregator::pipeline::plan::StreamingPlan;
use aggregator::pipeline::windows::WindowSpec;
use aggregator::pipeline::{PipelineOptions, Shutdown};
use aggregator::sink::values;
use aggregator::source::decode::{DEFAULT_MAX_RECORD_BYTES, JsonDecoder};
use aggregator::source::schema::SourceSchema;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, TimestampMicrosecondArray};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::{Field, Schema, TimestampMicrosecondType};
use generator::events::{EventGenerator, EventOptions, TimestampFormat};
use store::{PipelineStatus, RejectedRecord, ResultTable, Store, Value};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

pub fn interactions() -> SourceSchema {
    runtime().block_on(SourceSchema::default_interactions()).unwrap()
}

/// Writes `count` events in files of `per_file` into `dir`: 1,000 users, 50 items,
/// The pipeline `file` planned over [`interactions`].
pub fn plan_file(file: &Path) -> StreamingPlan {
    let def = PipelineDefinition::from_file(file).unwrap();
    runtime().block_on(StreamingPlan::new(&def, &interactions())).unwrap()
}

/// A pipeline of `sql` planned over [`interactions`].
pub fn plan_sql(sql: &str) -> StreamingPlan {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.sql");
    std::fs::write(&file, sql).unwrap();
    plan_file(&file)
}

/// `SOURCE` rows for `plan`: one event per (user, item), a view, all at the same time.
pub fn source_events(plan: &StreamingPlan, users: &[i64], items: &[i64]) -> RecordBatch {
    use datafusion::arrow::array::{Int64Array, StringViewArray, UInt32Array};
    let n = users.len();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(users.to_vec())),
        Arc::new(Int64Array::from(items.to_vec())),
        Arc::new(StringViewArray::from(vec!["view"; n])),
        Arc::new(TimestampMicrosecondArray::from(vec![1_767_225_600_000_000; n])),
        Arc::new(TimestampMicrosecondArray::from(vec![None; n])),
        Arc::new(UInt32Array::from_iter_values(0..n as u32)),
    ];
    RecordBatch::try_new(plan.source_schema.clone(), columns).unwrap()
}

/// 20 events per simulated second, 10% out of order, 1% late, mixed timestamp formats.
pub fn generate_log(dir: &Path, count: u64, per_file: u64, seed: u64) {
    let mut events = EventGenerator::new(EventOptions {
        seed,
        users: 1000,
        items: 50,
        start_time_micros: 1_767_225_600_000_000, // 2026-01-01T00:00:00Z
        events_per_second: 20.0,
        out_of_order_share: 0.1,
        out_of_order_seconds: 300.0,
        late_share: 0.01,
        timestamp_format: TimestampFormat::Mixed,
    });
    generator::batch_files::write_batches(dir, &mut events, count, per_file, std::time::Duration::ZERO).unwrap();
}

/// Every non-blank line of the log, in log order.
pub fn log_records(dir: &Path) -> Vec<Vec<u8>> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    names.sort();
    names
        .iter()
        .flat_map(|p| std::fs::read(p).unwrap().split(|b| *b == b'\n').map(|l| l.to_vec()).collect::<Vec<_>>())
        .map(|l| if l.ends_with(b"\r") { l[..l.len() - 1].to_vec() } else { l })
        .filter(|l| !l.iter().all(|b| b.is_ascii_whitespace()))
        .collect()
}

pub fn options(log: &Path, work: &Path, batch: usize) -> PipelineOptions {
    PipelineOptions {
        source_uri: format!("file:{}", log.display()),
        sink_uri: format!("sqlite:{}", work.join("results.sqlite").display()),
        checkpoint_dir: work.join("checkpoints"),
        available_now: true,
        max_batch_records: batch,
        max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
        checkpoint_interval: std::time::Duration::ZERO,
        poll_interval: std::time::Duration::from_millis(20),
        ..PipelineOptions::default()
    }
}

/// Waits (up to 3 minutes) until `done`.
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "gave up waiting for: {what}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Runs the supervisor (live, watching `sql`) on a thread until the returned switch is triggered.
pub fn run_live(
    sql: &Path,
    options: PipelineOptions,
) -> (Shutdown, std::thread::JoinHandle<aggregator::supervisor::Summary>) {
    let shutdown = Shutdown::default();
    let (sql, stop) = (sql.to_path_buf(), shutdown.clone());
    let handle =
        std::thread::spawn(move || aggregator::supervisor::run(&sql, &interactions(), &options, stop).unwrap());
    (shutdown, handle)
}

/// Runs one pipeline with `--available-now` semantics, in-process.
pub fn run_pipeline(file: &Path, options: &PipelineOptions) -> aggregator::Result<store::PipelineStatus> {
    let def = aggregator::pipeline::definition::PipelineDefinition::from_file(file)?;
    aggregator::supervisor::run_one(def, &interactions(), options, Shutdown::default(), Default::default())
}

/// A row as comparable text: cells joined by `|`, numbers to 9 significant digits
/// (decimals too: SQLite keeps them as REAL), timestamps ISO.
fn row_text(cells: impl Iterator<Item = Value>) -> String {
    cells
        .map(|v| match v {
            Value::Null => "NULL".to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Integer(i) => i.to_string(),
            Value::Real(r) => format!("{r:.8e}"),
            Value::Decimal(d) => format!("{:.8e}", d.parse::<f64>().unwrap()),
            Value::Text(t) => format!("{t:?}"),
            Value::Timestamp(t) => store::iso_micros(t),
            other => other.to_json().to_string(),
        })
        .collect::<Vec<_>>()
        .join("|")
}

/// A store read synchronously, for tests: `sqlite:` or `mongodb://`.
pub struct StoreReader {
    store: Box<dyn Store>,
    runtime: tokio::runtime::Runtime,
}

impl StoreReader {
    pub fn open(uri: &str) -> store::Result<Self> {
        let runtime = runtime();
        let store = runtime.block_on(store::open(uri, None))?;
        Ok(StoreReader { store, runtime })
    }

    pub fn sqlite(path: &Path) -> Self {
        Self::open(&format!("sqlite:{}", path.display())).unwrap()
    }

    pub fn table(&self, table: &str) -> Option<ResultTable> {
        self.runtime.block_on(self.store.read_table(table)).unwrap()
    }

    pub fn status(&self, name: &str) -> Option<PipelineStatus> {
        self.runtime.block_on(self.store.status(name)).unwrap()
    }

    pub fn statuses(&self) -> Vec<PipelineStatus> {
        self.runtime.block_on(self.store.statuses()).unwrap()
    }

    pub fn qlik_statuses(&self) -> Vec<store::QlikTargetStatus> {
        self.runtime.block_on(self.store.qlik_statuses()).unwrap()
    }

    pub fn rejected(&self, pipeline: &str, late: bool) -> Vec<RejectedRecord> {
        self.runtime.block_on(self.store.rejected_records(pipeline, late)).unwrap()
    }

    /// The rows of `table` as comparable text, sorted (none if it does not exist).
    /// `_id` is included only if the query selects it.
    pub fn rows(&self, table: &str, with_id: bool) -> Vec<String> {
        let rows = self.table(table).map(|t| t.rows).unwrap_or_default();
        let mut out: Vec<String> = rows
            .into_iter()
            .map(|r| row_text(with_id.then_some(Value::Text(r.id)).into_iter().chain(r.values)))
            .collect();
        out.sort();
        out
    }
}

/// The SQLite sink's rows of `table`, sorted (see [`StoreReader::rows`]).
pub fn sink_rows(sqlite: &Path, table: &str, with_id: bool) -> Vec<String> {
    StoreReader::sqlite(sqlite).rows(table, with_id)
}

/// What the pipeline must end up with.
pub struct Oracle {
    pub rows: Vec<String>,
    pub with_id: bool,
    pub good: u64,
    pub bad: u64,
    pub late: u64,
}

/// The same SQL as one batch query over the log's good, not-late events.
pub fn oracle(file: &Path, log: &Path, max_record_bytes: usize) -> Oracle {
    let records: Vec<(i32, Vec<u8>)> = log_records(log).into_iter().map(|r| (0, r)).collect();
    oracle_of(file, &records, max_record_bytes)
}

/// The oracle over `(partition, record)`s, each partition's records in their order.
pub fn oracle_of(file: &Path, records: &[(i32, Vec<u8>)], max_record_bytes: usize) -> Oracle {
    let schema = interactions();
    let def = PipelineDefinition::from_file(file).unwrap();
    let rt = runtime();
    let plan = rt.block_on(StreamingPlan::new(&def, &schema)).unwrap();
    let slices: Vec<&[u8]> = records.iter().map(|(_, r)| r.as_slice()).collect();
    let decoded = JsonDecoder::new(&schema, max_record_bytes).decode(&slices).unwrap();
    let times = decoded.batch.column(schema.event_time.unwrap()).as_primitive::<TimestampMicrosecondType>().clone();
    // Events stamped further ahead of the clock than `max_future` are bad records.
    let latest = def.settings.max_future.map(|d| chrono::Utc::now().timestamp_micros() + d.as_micros() as i64);
    let plausible: Vec<bool> = (0..times.len()).map(|i| latest.is_none_or(|l| times.value(i) <= l)).collect();
    let far_future = plausible.iter().filter(|p| !**p).count() as u64;
    let batch = filter_record_batch(&decoded.batch, &BooleanArray::from(plausible.clone())).unwrap();
    let rows: Vec<usize> = decoded.rows.iter().zip(&plausible).filter(|(_, p)| **p).map(|(r, _)| *r).collect();
    let times = batch.column(schema.event_time.unwrap()).as_primitive::<TimestampMicrosecondType>().clone();
    let delay = def.settings.allowed_delay.as_micros() as i64;
    let spec: Option<WindowSpec> = plan.window.as_ref().map(|w| w.call.spec);

    // Lateness from its definition, event by event in each partition's order.
    let mut max_by_partition = std::collections::BTreeMap::<i32, i64>::new();
    let (mut watermarks, mut keep) = (Vec::new(), Vec::new());
    for i in 0..times.len() {
        let t = times.value(i);
        let partition = records[rows[i]].0;
        let max = max_by_partition.get(&partition).copied();
        let watermark = max.map(|m| m - delay);
        let late = match (spec, watermark) {
            (Some(WindowSpec::Tumbling { size }), Some(w)) => t - t.rem_euclid(size) + size <= w,
            (Some(WindowSpec::Hopping { size, slide }), Some(w)) => t - t.rem_euclid(slide) + size <= w,
            // A session event is late only when older than the watermark.
            (Some(WindowSpec::Session { .. }), Some(w)) => t < w,
            _ => false,
        };
        keep.push(!late);
        watermarks.push(watermark);
        max_by_partition.insert(partition, max.map_or(t, |m: i64| m.max(t)));
    }
    let late = keep.iter().filter(|k| !**k).count() as u64;
    let mut fields: Vec<Field> = batch.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new("__watermark", times.data_type().clone(), true));
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    columns.push(Arc::new(TimestampMicrosecondArray::from(watermarks)));
    let events = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
    let events = filter_record_batch(&events, &BooleanArray::from(keep)).unwrap();
    let good = events.num_rows() as u64;
    let result = rt.block_on(aggregator::batch::run(&def, events)).unwrap();

    // Append mode writes a window only once the final watermark (the slowest
    // partition's) has passed its end.
    let final_watermark = max_by_partition.values().min().map(|m| m - delay);
    let window_column = result.schema().index_of("window").ok();
    let with_id = result.schema().index_of("_id").is_ok();
    let mut rows = Vec::new();
    for row in 0..result.num_rows() {
        if def.settings.output_mode == OutputMode::Append {
            let window = result.column(window_column.expect("append cases name their window column `window`"));
            let end = aggregator::operators::aggregate::window_end(window, row).unwrap();
            if final_watermark.is_none_or(|w| end > w) {
                continue;
            }
        }
        let id =
            result.schema().index_of("_id").ok().map(|c| Value::Text(values::row_id(&[result.column(c).clone()], row)));
        let cells = (0..result.num_columns())
            .filter(|&c| result.schema().field(c).name() != "_id")
            .map(|c| values::cell(result.column(c), row));
        rows.push(row_text(id.into_iter().chain(cells)));
    }
    rows.sort();
    Oracle { rows, with_id, good, bad: decoded.bad.len() as u64 + far_future, late }
}

/// Asserts the pipeline's sink equals the oracle, with a readable difference.
pub fn assert_matches_oracle(file: &Path, log: &Path, work: &Path, batch: usize) {
    let def = PipelineDefinition::from_file(file).unwrap();
    let status = run_pipeline(file, &options(log, work, batch)).unwrap();
    let expected = oracle(file, log, DEFAULT_MAX_RECORD_BYTES);
    let actual = sink_rows(&work.join("results.sqlite"), &def.settings.target, expected.with_id);
    assert_eq!(
        (status.events_ok, status.events_bad, status.events_late),
        (expected.good, expected.bad, expected.late),
        "{}: counts (ok, bad, late)",
        file.display()
    );
    assert_eq!(status.events_in, status.events_ok + status.events_bad + status.events_late);
    if actual != expected.rows {
        let only_sink: Vec<_> = actual.iter().filter(|r| !expected.rows.contains(r)).take(5).collect();
        let only_oracle: Vec<_> = expected.rows.iter().filter(|r| !actual.contains(r)).take(5).collect();
        panic!(
            "{}: sink has {} rows, oracle {}\nonly in sink: {only_sink:#?}\nonly in oracle: {only_oracle:#?}",
            file.display(),
            actual.len(),
            expected.rows.len()
        );
    }
    assert!(!expected.rows.is_empty(), "{}: an empty result proves nothing", file.display());
}

//! The results store: what the aggregator writes and the dashboard reads.
//!
//! DESIGN's store layout, the same in both stores:
//!
//! * one table (MongoDB: collection) per pipeline, named after its `.sql` file, keyed
//!   by `_id` ([`Store::write_batch`] upserts and deletes rows there);
//! * `_pipeline_status`: one row per pipeline ([`PipelineStatus`]);
//! * `_bad_records` and `_late_records`: what a pipeline rejected
//!   ([`RejectedRecord`]), keyed by pipeline and source offset so that
//!   re-processing after a crash overwrites instead of duplicating;
//! * `_alerts`: alert state transitions ([`AlertTransition`]), written by the dashboard;
//! * `_qlik_targets`: one row per pipeline and Qlik app it is pushed into
//!   ([`QlikTargetStatus`]), written by the aggregator's Qlik push;
//! * `_silences`: alert silences ([`Silence`]), written by the dashboard;
//! * `_pipeline_health`: each pipeline's health over time ([`HealthSample`]: events/s,
//!   lag, watermark delay), sampled by the dashboard at a few resolutions, each kept
//!   to a fixed number of samples.
//!
//! [`Store`] is the one interface to both: its write side is used by the aggregator,
//! its read side by the dashboard, and `tests/conformance.rs` runs every behaviour
//! against both implementations:
//!
//! * [`SqliteStore`] (`sqlite:<path>`), the embedded store: one SQLite file in WAL
//!   mode, so the dashboard can read while the aggregator writes;
//! * [`MongoStore`] (`mongodb://…`, `mongodb+srv://…`), the official driver.
//!
//! Values arrive as [`Value`]s with the column's [`ColumnType`]; each store keeps the
//! types it can (BSON dates, sub-documents and decimals in MongoDB; ISO-8601 text and
//! JSON text in SQLite) and gives back the same values when read.

mod mongo;
mod sqlite;
mod uri;
mod value;

pub use mongo::MongoStore;
pub use sqlite::SqliteStore;
pub use uri::{StoreUri, redact_uri};
pub use value::{ColumnType, Value, iso_micros, parse_iso_micros, write_iso_micros, write_json_string};

/// Errors of the store. All of them name the store (password hidden).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {uri}: {source}")]
    Sqlite {
        uri: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("store {uri}: {message}")]
    Mongo { uri: String, message: String },
    #[error("store URI {0:?} is not supported (expected sqlite:<path> or mongodb://host[:port]/<database>)")]
    UnsupportedUri(String),
    #[error("store URI {uri}: {message}")]
    BadUri { uri: String, message: String },
    /// The store answers but will not let us in (wrong credentials, no rights).
    #[error("store {uri} refused the connection: {message}")]
    Refused { uri: String, message: String },
}

impl StoreError {
    /// Whether waiting and trying again can help (a server down or refusing for now),
    /// as opposed to a URI or configuration that is wrong.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Sqlite { .. } | StoreError::Mongo { .. })
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Opens the store at `uri`. `database` names the MongoDB database when the URI
/// does not (it overrides the URI's); SQLite ignores it.
pub async fn open(uri: &str, database: Option<&str>) -> Result<Box<dyn Store>> {
    Ok(match StoreUri::parse(uri)? {
        StoreUri::Sqlite(path) => Box::new(SqliteStore::open(path)?),
        StoreUri::Mongo(uri) => Box::new(MongoStore::open(&uri, database).await?),
    })
}

/// The one interface to a results store. Every method names the store in its errors
/// and never shows a password.
#[async_trait::async_trait]
pub trait Store: Send + Sync {
    /// The store's URI with any password replaced by `***`.
    fn uri(&self) -> &str;

    // ---- write side (the aggregator) ----

    /// Makes sure `table` exists for exactly `columns`. With `fresh`, or if the table
    /// holds rows of other columns, its old rows are dropped: a pipeline that starts
    /// over (new SQL) must not leave results of its previous version. Starting fresh
    /// also forgets the pipeline's bad and late records.
    async fn prepare_result_table(
        &self,
        pipeline: &str,
        table: &str,
        columns: &[ResultColumn],
        fresh: bool,
    ) -> Result<()>;

    /// Replaces `table` by `shadow` in one step: readers see the old table until then
    /// and the whole new one after it, never a mix.
    async fn swap_in(&self, shadow: &str, table: &str) -> Result<()>;

    /// Applies one micro-batch: result upserts and deletes, the rejected records, and
    /// the pipeline's status. Applying the same batch twice gives the same store.
    #[allow(clippy::too_many_arguments)]
    async fn write_batch(
        &self,
        table: &str,
        columns: &[ResultColumn],
        delta: &ResultDelta,
        status: &PipelineStatus,
        bad: &[RejectedRecord],
        late: &[RejectedRecord],
    ) -> Result<()>;

    /// Writes only the status (state changes, errors).
    async fn write_status(&self, status: &PipelineStatus) -> Result<()>;

    /// Appends an alert state transition (the dashboard evaluates the rules).
    async fn record_alert(&self, transition: &AlertTransition) -> Result<()>;

    /// Writes the state of one pipeline's Qlik target (replacing the last one).
    async fn write_qlik_status(&self, status: &QlikTargetStatus) -> Result<()>;

    // ---- read side (the dashboard, and tests) ----

    /// Whether a result table with this name exists.
    async fn has_table(&self, table: &str) -> Result<bool>;

    /// A result table's columns (besides `_id`), or `None` if it does not exist.
    async fn columns(&self, table: &str) -> Result<Option<Vec<ResultColumn>>>;

    /// One page of a result table: rows matching the request's window range, sorted
    /// (ties broken by `_id`), `limit` of them from `offset`; `None` if it does not exist.
    async fn read_page(&self, table: &str, request: &PageRequest) -> Result<Option<Page>>;

    /// The earliest and latest `start` of a window column (microseconds), if any row has one.
    async fn window_bounds(&self, table: &str, column: &str) -> Result<Option<(i64, i64)>>;

    /// The sums of the numeric columns `values` per start of the window column
    /// `window` and value of the text column `category` (if given), over the rows the
    /// request's range and filters keep: the latest `limit` window starts, in time
    /// order (what a time chart draws); `None` if there is no such table.
    ///
    /// This default reads the rows (the latest [`WINDOW_SUMS_ROWS`] at most) and adds
    /// them up; a store that can group (SQLite) does it where the rows are.
    async fn window_sums(
        &self,
        table: &str,
        window: &str,
        category: Option<&str>,
        values: &[String],
        request: &PageRequest,
    ) -> Result<Option<Vec<WindowSum>>> {
        let read = PageRequest {
            sort: Some(window.to_string()),
            descending: true,
            offset: 0,
            limit: WINDOW_SUMS_ROWS,
            skip_total: true,
            ..request.clone()
        };
        let Some(page) = self.read_page(table, &read).await? else { return Ok(None) };
        let position = |name: &str| page.columns.iter().position(|c| c.name == name);
        let (Some(w), category) = (position(window), category.and_then(position)) else { return Ok(Some(Vec::new())) };
        let values: Vec<Option<usize>> = values.iter().map(|v| position(v)).collect();
        let mut sums: std::collections::BTreeMap<(i64, Option<String>), WindowSum> = Default::default();
        for row in &page.rows {
            let Some(start) = row.values[w].window_start() else { continue };
            let category = category.map(|c| match &row.values[c] {
                Value::Text(t) => t.clone(),
                Value::Null => String::new(),
                other => other.to_json().to_string(),
            });
            let sum = sums.entry((start, category.clone())).or_insert_with(|| WindowSum {
                start,
                category,
                sums: vec![None; values.len()],
                rows: 0,
            });
            sum.rows += 1;
            for (total, value) in sum.sums.iter_mut().zip(&values) {
                if let Some(v) = value.and_then(|v| row.values[v].number()) {
                    *total = Some(total.unwrap_or(0.0) + v);
                }
            }
        }
        let starts: std::collections::BTreeSet<i64> = sums.keys().map(|(s, _)| *s).collect();
        let keep = starts.iter().rev().nth(usize::try_from(request.limit).unwrap_or(usize::MAX).saturating_sub(1));
        Ok(Some(sums.into_values().filter(|s| keep.is_none_or(|k| s.start >= *k)).collect()))
    }

    /// Every status row, by name.
    async fn statuses(&self) -> Result<Vec<PipelineStatus>>;

    /// A pipeline's rejected records (`late` selects late ones, else bad ones),
    /// ordered by source offset ([`RejectedRecord::offset_order`]).
    async fn rejected_records(&self, pipeline: &str, late: bool) -> Result<Vec<RejectedRecord>>;

    /// The latest `limit` alert transitions, newest first.
    async fn alert_history(&self, limit: usize) -> Result<Vec<AlertTransition>>;

    /// Saves a silence (by its id: saving it again replaces it, as expiring does).
    async fn save_silence(&self, silence: &Silence) -> Result<()>;

    /// Every silence, active and expired, the newest first.
    async fn silences(&self) -> Result<Vec<Silence>>;

    /// Every Qlik target's state, by pipeline and target.
    async fn qlik_statuses(&self) -> Result<Vec<QlikTargetStatus>>;

    /// Writes pipeline health samples (one with the same pipeline, resolution and time
    /// replaces the one before), then keeps only the newest `keep` of each pipeline and
    /// resolution the samples are of.
    async fn write_health(&self, samples: &[HealthSample], keep: usize) -> Result<()>;

    /// The health samples of one resolution, by pipeline, then oldest first.
    async fn health(&self, resolution_seconds: u32) -> Result<Vec<HealthSample>>;

    /// All rows of a result table ordered by `_id`, or `None` if it does not exist.
    async fn read_table(&self, table: &str) -> Result<Option<ResultTable>> {
        let all = PageRequest { limit: u64::MAX, ..PageRequest::default() };
        Ok(self.read_page(table, &all).await?.map(|page| ResultTable { columns: page.columns, rows: page.rows }))
    }

    /// The status of one pipeline.
    async fn status(&self, name: &str) -> Result<Option<PipelineStatus>> {
        Ok(self.statuses().await?.into_iter().find(|s| s.name == name))
    }
}

/// The name of the bookkeeping tables (collections), the same in both stores.
pub const STATUS_TABLE: &str = "_pipeline_status";
pub const BAD_RECORDS_TABLE: &str = "_bad_records";
pub const LATE_RECORDS_TABLE: &str = "_late_records";
pub const ALERTS_TABLE: &str = "_alerts";
pub const QLIK_TARGETS_TABLE: &str = "_qlik_targets";
pub const SILENCES_TABLE: &str = "_silences";
pub const HEALTH_TABLE: &str = "_pipeline_health";

/// A result table as read back: its columns (besides `_id`) and rows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResultTable {
    pub columns: Vec<ResultColumn>,
    pub rows: Vec<ResultRow>,
}

impl PageRequest {
    /// The column to sort by: the requested one if the table has it, else `_id`.
    pub fn sort_column<'a>(&'a self, columns: &'a [ResultColumn]) -> Option<&'a ResultColumn> {
        self.sort.as_ref().and_then(|name| columns.iter().find(|c| &c.name == name))
    }

    /// The window filter, if its column is a window column of the table.
    pub fn window_filter(&self, columns: &[ResultColumn]) -> Option<&WindowRange> {
        self.window_range
            .as_ref()
            .filter(|r| columns.iter().any(|c| c.name == r.column && c.column_type == ColumnType::Window))
    }

    /// The column filters that apply to the table: on a column it has, text conditions
    /// on text columns and comparisons on numeric ones (others are ignored).
    pub fn column_filters<'a>(&'a self, columns: &'a [ResultColumn]) -> impl Iterator<Item = &'a ColumnFilter> {
        self.filters.iter().filter(|f| {
            columns.iter().any(|c| {
                c.name == f.column
                    && match f.condition {
                        FilterCondition::Contains(_) => c.column_type == ColumnType::Text,
                        FilterCondition::Compare(..) => {
                            matches!(c.column_type, ColumnType::Integer | ColumnType::Real | ColumnType::Decimal)
                        }
                    }
            })
        })
    }
}

/// Rows the generic [`Store::window_sums`] reads at most (the newest).
pub const WINDOW_SUMS_ROWS: u64 = 50_000;

/// The sums of some value columns over the rows of one window start (and category).
#[derive(Debug, Clone, PartialEq)]
pub struct WindowSum {
    /// The window's start, in microseconds.
    pub start: i64,
    /// The category's value as text (`None` without a category column).
    pub category: Option<String>,
    /// Per value column, the sum of its numbers (`None` if the rows have none).
    pub sums: Vec<Option<f64>>,
    /// The rows added up.
    pub rows: u64,
}

/// A silence of alert notifications: the instances whose labels all match its
/// matchers are not notified from its creation until it ends, as in Grafana.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Silence {
    pub id: String,
    /// Label → value (`alertname`, `pipeline`, `severity`, or a group column).
    pub matchers: std::collections::BTreeMap<String, String>,
    pub comment: String,
    /// ISO-8601 UTC.
    pub created_at: String,
    /// ISO-8601 UTC: when it stops (set to now to expire it).
    pub ends_at: String,
}

/// One pipeline's health over one period: a sample taken by the dashboard, or the
/// summary of several over a longer period (a coarser resolution).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HealthSample {
    pub pipeline: String,
    /// The length of the period it stands for (10: a sample every 10 s; 60: a minute).
    pub resolution_seconds: u32,
    /// ISO-8601 UTC: the start of the period.
    pub at: String,
    /// Events consumed per second over it, if known (not across a restart of the pipeline).
    pub events_per_second: Option<f64>,
    /// Records waiting in the source (the status's `lag`).
    pub lag: Option<u64>,
    /// How far the watermark trails the clock, in seconds, if the pipeline has one.
    pub watermark_delay_seconds: Option<f64>,
}

/// A condition on one column of a result (the table's column filters).
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnFilter {
    pub column: String,
    pub condition: FilterCondition,
}

#[derive(Debug, Clone, PartialEq)]
pub enum FilterCondition {
    /// Text that contains this, ignoring the case of ASCII letters.
    Contains(String),
    /// A number that compares so with this one.
    Compare(Comparison, f64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Comparison {
    /// The operator as SQL writes it.
    pub fn sql(self) -> &'static str {
        match self {
            Comparison::Eq => "=",
            Comparison::Ne => "<>",
            Comparison::Lt => "<",
            Comparison::Le => "<=",
            Comparison::Gt => ">",
            Comparison::Ge => ">=",
        }
    }
}

/// What [`Store::read_page`] reads.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PageRequest {
    /// A result column (or `_id`) to sort by; `None`: by `_id`. A window sorts by its start.
    pub sort: Option<String>,
    pub descending: bool,
    pub offset: u64,
    pub limit: u64,
    /// Only rows whose window column starts in `[from, to)` (microseconds).
    pub window_range: Option<WindowRange>,
    /// Only rows meeting every one of these.
    pub filters: Vec<ColumnFilter>,
    /// Leave the count of matching rows out ([`Page::total`] is then the rows read):
    /// counting a large table costs a scan of it.
    pub skip_total: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WindowRange {
    pub column: String,
    pub from: i64,
    pub to: i64,
}

/// A page of a result table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Page {
    pub columns: Vec<ResultColumn>,
    pub rows: Vec<ResultRow>,
    /// Rows matching the request's filter, on all pages (unless it skipped counting).
    pub total: u64,
}

/// One state change of an alert instance (a rule, or a rule and one group's key).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AlertTransition {
    pub rule: String,
    /// The instance: empty for a rule over the whole result, else the group's
    /// labels such as `item_id=7`.
    pub instance: String,
    pub pipeline: String,
    pub severity: String,
    /// `normal`, `pending`, `firing`, `nodata` or `error`.
    pub from: String,
    pub to: String,
    /// The value that caused it, if there was one.
    pub value: Option<f64>,
    /// ISO-8601 UTC.
    pub at: String,
    pub message: Option<String>,
}

/// The state of one pipeline's push into one Qlik app.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct QlikTargetStatus {
    pub pipeline: String,
    /// The engine and app, as given (`ws://host:9076/app/<app>`; never a token).
    pub target: String,
    /// The table in the app that holds the pipeline's result.
    pub table: String,
    /// `connecting`, `up_to_date`, `pending` (changes wait for the next reload),
    /// `reloading` or `error`.
    pub state: String,
    /// The result version the app holds (`<sql hash>:<events consumed>`), as its
    /// marker table says.
    pub app_version: Option<String>,
    /// Result rows changed since the app's version.
    pub pending_rows: u64,
    /// Reloads that carried this table, since the aggregator started.
    pub reloads: u64,
    /// ISO-8601 UTC end of the last successful reload, its duration and the rows it loaded.
    pub last_reload_at: Option<String>,
    pub last_reload_seconds: Option<f64>,
    pub last_reload_rows: u64,
    pub last_error: Option<String>,
    /// ISO-8601 UTC of this row.
    pub updated_at: String,
}

/// One column of a pipeline's result table (besides `_id`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ResultColumn {
    pub name: String,
    pub column_type: ColumnType,
    /// What the column is to the result, when the writer knows (`None`: tables of
    /// older versions, results without a key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<ColumnRole>,
}

/// What a column is to the result: part of its key (a GROUP BY column, the window),
/// or a value computed per key (an aggregate, an expression over them). Charts plot
/// values against keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnRole {
    Key,
    Value,
}

/// A result row: its `_id` and one value per [`ResultColumn`].
#[derive(Debug, Clone, PartialEq)]
pub struct ResultRow {
    pub id: String,
    pub values: Vec<Value>,
}

impl PipelineStatus {
    /// The table (collection) of the pipeline's result.
    pub fn table(&self) -> &str {
        if self.result_table.is_empty() { &self.name } else { &self.result_table }
    }
}

/// The table a pipeline's new version fills while it replays, until it replaces `table`.
pub fn shadow_table(table: &str) -> String {
    format!("_shadow_{table}")
}

/// The changes one micro-batch makes to a result table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResultDelta {
    pub upserts: Vec<ResultRow>,
    /// `_id`s of rows that left the result.
    pub deletes: Vec<String>,
}

/// A record a pipeline did not aggregate: malformed (bad) or behind the watermark (late).
#[derive(Debug, Clone, PartialEq)]
pub struct RejectedRecord {
    /// Where it came from, e.g. `batch-000003.jsonl:17`.
    pub source_offset: String,
    /// The record as read, lossily decoded if it was not UTF-8.
    pub raw: String,
    pub reason: String,
}

impl RejectedRecord {
    /// The order of source offsets: by file (or topic and partition), then by line
    /// (or offset) as a number, so that `f:99` comes before `f:100`.
    pub fn offset_order(&self) -> (&str, u64) {
        let offset = self.source_offset.as_str();
        offset
            .rfind([':', '@'])
            .and_then(|at| Some((&offset[..at], offset[at + 1..].parse().ok()?)))
            .unwrap_or((offset, 0))
    }
}

/// One row of `_pipeline_status`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PipelineStatus {
    pub name: String,
    pub sql_file: String,
    pub sql_hash: String,
    /// The pipeline file's text, so that readers need nothing but the store.
    #[serde(default)]
    pub sql_text: Option<String>,
    /// The table (collection) holding its result: the file's name unless it sets `target`.
    #[serde(default)]
    pub result_table: String,
    /// `starting`, `replaying` (a new version catching up into a shadow table),
    /// `running`, `caught_up`, `stopped`, `inactive` (its file was deleted) or `failed`.
    pub state: String,
    pub host: String,
    /// ISO-8601 UTC.
    pub started_at: String,
    pub events_in: u64,
    pub events_ok: u64,
    pub events_bad: u64,
    pub events_late: u64,
    /// Result rows written (upserted) and deleted so far, by this version of the pipeline.
    #[serde(default)]
    pub rows_upserted: u64,
    #[serde(default)]
    pub rows_deleted: u64,
    /// Records known to be in the source but not yet read (when the source can tell).
    pub lag: u64,
    /// Event-time watermark, ISO-8601 UTC, if the pipeline has seen an event.
    pub watermark: Option<String>,
    pub last_batch_at: Option<String>,
    pub last_error: Option<String>,
    /// While replaying: how far the replay is, 0.0 ..= 1.0.
    pub progress: Option<f64>,
}

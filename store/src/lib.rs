//! The results store: what the aggregator writes and the dashboard reads.
//!
//! DESIGN's store layout, in one place for every binary:
//!
//! * one table per pipeline, named after its `.sql` file, keyed by `_id`
//!   ([`SqliteStore::write_batch`] upserts and deletes rows there);
//! * `_pipeline_status`: one row per pipeline ([`PipelineStatus`]);
//! * `_bad_records` and `_late_records`: what a pipeline rejected
//!   ([`RejectedRecord`]), keyed by pipeline and source offset so that
//!   re-processing after a crash overwrites instead of duplicating.
//!
//! The embedded store is SQLite in WAL mode (`sqlite:<path>`), so the dashboard can
//! read while the aggregator writes. Values arrive already converted to the four
//! SQLite storage classes ([`Value`]); this crate knows nothing about Arrow.

mod sqlite;

pub use sqlite::SqliteStore;

/// Errors of the store. All of them name the store's path.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {uri}: {source}")]
    Sqlite {
        uri: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("store URI {0:?} is not supported (expected sqlite:<path>)")]
    UnsupportedUri(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Where results go, parsed from a sink URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUri {
    /// `sqlite:<path>`
    Sqlite(std::path::PathBuf),
}

impl StoreUri {
    pub fn parse(uri: &str) -> Result<Self> {
        match uri.strip_prefix("sqlite:") {
            Some(path) if !path.is_empty() => Ok(StoreUri::Sqlite(path.trim_start_matches("//").into())),
            _ => Err(StoreError::UnsupportedUri(uri.to_string())),
        }
    }
}

impl std::fmt::Display for StoreUri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreUri::Sqlite(path) => write!(f, "sqlite:{}", path.display()),
        }
    }
}

/// A value in a result row, in SQLite's storage classes.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Integer(i64),
    Real(f64),
    /// Strings, timestamps (ISO-8601 UTC) and structs/lists (JSON text).
    Text(String),
}

/// The declared type of a result column (SQLite type affinity).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    Integer,
    Real,
    Text,
}

impl ColumnType {
    fn sql(self) -> &'static str {
        match self {
            ColumnType::Integer => "INTEGER",
            ColumnType::Real => "REAL",
            ColumnType::Text => "TEXT",
        }
    }
}

/// One column of a pipeline's result table (besides `_id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultColumn {
    pub name: String,
    pub column_type: ColumnType,
}

/// A result row: its `_id` and one value per [`ResultColumn`].
#[derive(Debug, Clone, PartialEq)]
pub struct ResultRow {
    pub id: String,
    pub values: Vec<Value>,
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

/// One row of `_pipeline_status`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PipelineStatus {
    pub name: String,
    pub sql_file: String,
    pub sql_hash: String,
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
    /// Records known to be in the source but not yet read (when the source can tell).
    pub lag: u64,
    /// Event-time watermark, ISO-8601 UTC, if the pipeline has seen an event.
    pub watermark: Option<String>,
    pub last_batch_at: Option<String>,
    pub last_error: Option<String>,
    /// While replaying: how far the replay is, 0.0 ..= 1.0.
    pub progress: Option<f64>,
}

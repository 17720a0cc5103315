//! The embedded store: one SQLite file in WAL mode.
//!
//! Types: booleans and integers are INTEGER, floats and decimals REAL, timestamps
//! ISO-8601 UTC text (`2026-11-22T14:05:00.000000Z`), windows and other structs or
//! lists JSON text. Columns are declared with the result's type names (`TIMESTAMP`,
//! `WINDOW`, `JSON`, …), from which values are read back typed.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};

use crate::{
    ALERTS_TABLE, AlertTransition, BAD_RECORDS_TABLE, ColumnRole, ColumnType, FilterCondition, HEALTH_TABLE,
    HealthSample, LATE_RECORDS_TABLE, Page, PageRequest, PipelineStatus, QLIK_TARGETS_TABLE, QlikTargetStatus,
    RejectedRecord, Result, ResultColumn, ResultDelta, ResultRow, SILENCES_TABLE, STATUS_TABLE, Silence, Store,
    StoreError, Value, WindowSum, iso_micros, parse_iso_micros,
};

/// Write transactions take the write lock at BEGIN, where the busy timeout applies,
/// rather than failing when a read turns into a write under contention.
const IMMEDIATE: rusqlite::TransactionBehavior = rusqlite::TransactionBehavior::Immediate;

/// A connection to the embedded store. One per writer thread; readers open their own
/// (the mutex only makes one connection shareable between a server's tasks).
pub struct SqliteStore {
    /// The connection that writes (and reads inside its transactions).
    conn: Mutex<Connection>,
    /// Idle read-only connections: many reads at once (the dashboard's requests) do
    /// not queue behind each other or behind a write; WAL lets them read meanwhile.
    readers: Mutex<Vec<Connection>>,
    path: PathBuf,
    uri: String,
}

/// A read connection borrowed from the store; it goes back to the idle ones when dropped.
struct Reader<'a> {
    conn: Option<Connection>,
    store: &'a SqliteStore,
}

impl std::ops::Deref for Reader<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn.as_ref().expect("a reader holds its connection until dropped")
    }
}

impl Drop for Reader<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.store.readers.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(conn);
        }
    }
}

/// The start of a window column, as an SQL expression. Windows are JSON text whose
/// `start` is fixed-width ISO-8601, so its text order is time order; the same
/// expression is indexed (see [`ensure_window_index`]), so range reads and bounds use the index.
/// The `WHERE` clause (or nothing) and its parameters for a request's window range
/// and column filters.
fn where_clause(columns: &[ResultColumn], request: &PageRequest) -> (String, Vec<SqlValue>) {
    let mut conditions: Vec<String> = Vec::new();
    let mut params: Vec<SqlValue> = Vec::new();
    if let Some(range) = request.window_filter(columns) {
        // ISO-8601 text of fixed width: text order is time order.
        let start = window_start(&range.column);
        conditions.push(format!("{start} >= ?1 AND {start} < ?2"));
        params = vec![SqlValue::Text(iso_micros(range.from)), SqlValue::Text(iso_micros(range.to))];
    }
    for f in request.column_filters(columns) {
        let n = params.len() + 1;
        match &f.condition {
            FilterCondition::Contains(text) => {
                conditions.push(format!("instr(lower({}), lower(?{n})) > 0", quote(&f.column)));
                params.push(SqlValue::Text(text.clone()));
            }
            FilterCondition::Compare(op, number) => {
                conditions.push(format!("{} {} ?{n}", quote(&f.column), op.sql()));
                params.push(SqlValue::Real(*number));
            }
        }
    }
    match conditions.is_empty() {
        true => (String::new(), params),
        false => (format!("WHERE {}", conditions.join(" AND ")), params),
    }
}

/// A column's declared type: its type's name (see [`ColumnType::sqlite`]) and its
/// role, if known (`INTEGER KEY`, `REAL VALUE`). SQLite keeps the declaration as
/// written and takes the column's affinity from the type's name alone.
fn declared(column: &ResultColumn) -> String {
    match column.role {
        None => column.column_type.sqlite().to_string(),
        Some(ColumnRole::Key) => format!("{} KEY", column.column_type.sqlite()),
        Some(ColumnRole::Value) => format!("{} VALUE", column.column_type.sqlite()),
    }
}

/// The type and role of a declared type (see [`declared`]).
fn from_declared(declared: &str) -> (ColumnType, Option<ColumnRole>) {
    let mut words = declared.split_whitespace();
    let column_type = ColumnType::from_sqlite(words.next().unwrap_or_default());
    let role = match words.next().map(str::to_ascii_uppercase).as_deref() {
        Some("KEY") => Some(ColumnRole::Key),
        Some("VALUE") => Some(ColumnRole::Value),
        _ => None,
    };
    (column_type, role)
}

fn window_start(column: &str) -> String {
    format!("json_extract({}, '$.start')", quote(column))
}

/// Makes sure `table` has an index on its window column's start. Index names are
/// global and an index keeps its name when its table is renamed (a shadow swapped in
/// keeps its shadow's index, which is not rebuilt), so a new index takes the first
/// free name of `{table}.{column}.start`, `{table}.{column}.start.2`, …
fn ensure_window_index(tx: &rusqlite::Transaction<'_>, table: &str, column: &str) -> rusqlite::Result<()> {
    let expression = window_start(column);
    let indexes: Vec<(String, String, String)> = tx
        .prepare("SELECT name, tbl_name, coalesce(sql, '') FROM sqlite_master WHERE type = 'index'")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let indexed = format!("({expression})");
    if indexes.iter().any(|(_, on, sql)| on == table && sql.ends_with(&indexed)) {
        return Ok(());
    }
    let base = format!("{table}.{column}.start");
    let name = (1..)
        .map(|n| if n == 1 { base.clone() } else { format!("{base}.{n}") })
        .find(|name| !indexes.iter().any(|(taken, _, _)| taken == name))
        .expect("a free name");
    tx.execute_batch(&format!("CREATE INDEX {} ON {} {indexed}", quote(&name), quote(table)))
}

/// Quotes an identifier for SQLite (table and column names come from users' files).
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path` and its bookkeeping tables.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            // A missing directory shows up as SQLite's "unable to open" below, with the path.
            let _ = std::fs::create_dir_all(parent);
        }
        let uri = format!("sqlite:{}", path.display());
        let conn = Connection::open(&path).map_err(|source| StoreError::Sqlite { uri: uri.clone(), source })?;
        init(&conn).map_err(|source| StoreError::Sqlite { uri: uri.clone(), source })?;
        Ok(SqliteStore { conn: Mutex::new(conn), readers: Mutex::new(Vec::new()), path, uri })
    }

    fn error(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite { uri: self.uri.clone(), source }
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves a connection that is still usable.
        self.conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A read-only connection: an idle one, or a new one.
    fn reader(&self) -> Result<Reader<'_>> {
        let idle = self.readers.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).pop();
        let conn = match idle {
            Some(conn) => conn,
            None => {
                use rusqlite::OpenFlags;
                let flags =
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
                let conn = Connection::open_with_flags(&self.path, flags).map_err(|e| self.error(e))?;
                conn.busy_timeout(Duration::from_secs(30)).map_err(|e| self.error(e))?;
                conn
            }
        };
        Ok(Reader { conn: Some(conn), store: self })
    }

    /// Runs `work` in one IMMEDIATE transaction.
    fn transaction<T>(&self, work: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<T>) -> Result<T> {
        let mut conn = self.conn();
        let run = || {
            let tx = conn.transaction_with_behavior(IMMEDIATE)?;
            let value = work(&tx)?;
            tx.commit()?;
            Ok(value)
        };
        run().map_err(|e| self.error(e))
    }

    /// The rows of `sql`, whose one column holds each as JSON, read as `T`.
    fn json_rows<T: serde::de::DeserializeOwned>(&self, sql: &str) -> Result<Vec<T>> {
        let conn = self.reader()?;
        let mut stmt = conn.prepare(sql).map_err(|e| self.error(e))?;
        let rows: Vec<String> =
            stmt.query_map([], |r| r.get(0)).and_then(|rows| rows.collect()).map_err(|e| self.error(e))?;
        rows.iter()
            .map(|json| {
                serde_json::from_str(json).map_err(|e| {
                    self.error(rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.into()))
                })
            })
            .collect()
    }

    /// The columns of `table` (besides `_id`) with their declared types, or `None`
    /// if it does not exist.
    fn table_columns(&self, table: &str) -> Result<Option<Vec<ResultColumn>>> {
        let conn = self.reader()?;
        let mut stmt = conn.prepare(&format!("PRAGMA table_info({})", quote(table))).map_err(|e| self.error(e))?;
        let columns: Vec<(String, String)> = stmt
            .query_map([], |row| Ok((row.get::<_, String>(1)?, row.get::<_, String>(2)?)))
            .and_then(|rows| rows.collect())
            .map_err(|e| self.error(e))?;
        if columns.is_empty() {
            return Ok(None);
        }
        Ok(Some(
            columns
                .into_iter()
                .filter(|(name, _)| name != "_id")
                .map(|(name, declared)| {
                    let (column_type, role) = from_declared(&declared);
                    ResultColumn { name, column_type, role }
                })
                .collect(),
        ))
    }

    /// The path of the SQLite file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn init(conn: &Connection) -> rusqlite::Result<()> {
    // Several pipelines (threads or processes) write, the dashboard reads: WAL lets
    // readers proceed during a write, and the busy timeout serialises the writers.
    conn.busy_timeout(Duration::from_secs(30))?;
    // Pages of 16 KiB (for a new file; an existing one keeps its own): result rows
    // carry their `_id` and window as text, and a pipeline upserts thousands per
    // transaction; bigger pages split and rebalance less often.
    conn.pragma_update(None, "page_size", 16384)?;
    // Switching a new file to WAL needs a moment alone with it, and SQLite answers
    // BUSY there without waiting: pipelines starting together would fail.
    let mut attempts = 0;
    loop {
        match conn.pragma_update(None, "journal_mode", "WAL") {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy && attempts < 300 =>
            {
                attempts += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            other => break other?,
        }
    }
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    // A page cache of up to 64 MiB (SQLite's default is 2 MiB, a hundred-odd pages):
    // a pipeline's upserts land all over its table, and every page not cached is a
    // read system call. Memory is taken as pages are used, not up front.
    conn.pragma_update(None, "cache_size", -65536)?;
    // Statement journals in memory. SQLite takes a multi-row upsert as a statement that
    // may abort halfway, so inside a transaction it journals each page the statement
    // touches, to undo just that statement. Spilled to temporary files in /var/tmp, those
    // journals took more writes than the database itself (1.1 GB for a 155 MB result, 5M
    // events per user × type × 5 minutes); each lives for one statement, so memory holds
    // a few pages at a time.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS {STATUS_TABLE} (
            name TEXT PRIMARY KEY, sql_file TEXT, sql_hash TEXT, state TEXT, host TEXT,
            started_at TEXT, events_in INTEGER, events_ok INTEGER, events_bad INTEGER,
            events_late INTEGER, lag INTEGER, watermark TEXT, last_batch_at TEXT,
            last_error TEXT, progress REAL, rows_upserted INTEGER, rows_deleted INTEGER,
            sql_text TEXT, result_table TEXT);
         CREATE TABLE IF NOT EXISTS {BAD_RECORDS_TABLE} (
            pipeline TEXT, source_offset TEXT, raw TEXT, reason TEXT,
            PRIMARY KEY (pipeline, source_offset));
         CREATE TABLE IF NOT EXISTS {LATE_RECORDS_TABLE} (
            pipeline TEXT, source_offset TEXT, raw TEXT, reason TEXT,
            PRIMARY KEY (pipeline, source_offset));
         CREATE TABLE IF NOT EXISTS {ALERTS_TABLE} (
            seq INTEGER PRIMARY KEY AUTOINCREMENT, rule TEXT, instance TEXT, pipeline TEXT,
            severity TEXT, from_state TEXT, to_state TEXT, value REAL, at TEXT, message TEXT);
         CREATE TABLE IF NOT EXISTS {QLIK_TARGETS_TABLE} (
            pipeline TEXT, target TEXT, status TEXT, PRIMARY KEY (pipeline, target));
         CREATE TABLE IF NOT EXISTS {SILENCES_TABLE} (id TEXT PRIMARY KEY, created_at TEXT, silence TEXT);
         CREATE TABLE IF NOT EXISTS {HEALTH_TABLE} (
            pipeline TEXT, resolution_seconds INTEGER, at TEXT, events_per_second REAL, lag INTEGER,
            watermark_delay_seconds REAL, PRIMARY KEY (pipeline, resolution_seconds, at)) WITHOUT ROWID;"
    ))?;
    // Stores written by earlier versions lack the status columns added since.
    let added = [
        ("progress", "REAL"),
        ("rows_upserted", "INTEGER"),
        ("rows_deleted", "INTEGER"),
        ("sql_text", "TEXT"),
        ("result_table", "TEXT"),
    ];
    for (column, ty) in added {
        let present: bool = conn.query_row(
            &format!("SELECT count(*) FROM pragma_table_info('{STATUS_TABLE}') WHERE name = ?1"),
            [column],
            |r| r.get::<_, i64>(0).map(|n| n > 0),
        )?;
        if !present {
            conn.execute_batch(&format!("ALTER TABLE {STATUS_TABLE} ADD COLUMN {column} {ty}"))?;
        }
    }
    Ok(())
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    fn uri(&self) -> &str {
        &self.uri
    }

    async fn prepare_result_table(
        &self,
        pipeline: &str,
        table: &str,
        columns: &[ResultColumn],
        fresh: bool,
    ) -> Result<()> {
        let existing = self.table_columns(table)?;
        let recreate = fresh || existing.as_ref().is_some_and(|cols| !same_names(cols, columns));
        self.transaction(|tx| {
            if recreate {
                tx.execute_batch(&format!("DROP TABLE IF EXISTS {}", quote(table)))?;
            }
            let mut ddl = format!("CREATE TABLE IF NOT EXISTS {} (\"_id\" TEXT PRIMARY KEY", quote(table));
            for c in columns {
                ddl.push_str(&format!(", {} {}", quote(&c.name), declared(c)));
            }
            // Clustered on `_id`: one B-tree to update per upsert instead of a rowid
            // table plus an index (upserts by `_id` are all the pipelines do).
            ddl.push_str(") WITHOUT ROWID");
            tx.execute_batch(&ddl)?;
            for c in columns.iter().filter(|c| c.column_type == ColumnType::Window) {
                ensure_window_index(tx, table, &c.name)?;
            }
            if fresh {
                tx.execute(&format!("DELETE FROM {BAD_RECORDS_TABLE} WHERE pipeline = ?1"), [pipeline])?;
                tx.execute(&format!("DELETE FROM {LATE_RECORDS_TABLE} WHERE pipeline = ?1"), [pipeline])?;
            }
            Ok(())
        })
    }

    async fn swap_in(&self, shadow: &str, table: &str) -> Result<()> {
        // The shadow's indexes come along under their names (see `ensure_window_index`):
        // nothing is rebuilt.
        self.transaction(|tx| {
            tx.execute_batch(&format!(
                "DROP TABLE IF EXISTS {table}; ALTER TABLE {shadow} RENAME TO {table};",
                table = quote(table),
                shadow = quote(shadow)
            ))
        })
    }

    async fn write_batch(
        &self,
        table: &str,
        columns: &[ResultColumn],
        delta: &ResultDelta,
        status: &PipelineStatus,
        bad: &[RejectedRecord],
        late: &[RejectedRecord],
    ) -> Result<()> {
        // One transaction: readers see the whole micro-batch with its status, or none of it.
        self.transaction(|tx| write_in(tx, table, columns, delta, status, bad, late))
    }

    async fn write_status(&self, status: &PipelineStatus) -> Result<()> {
        upsert_status(&self.conn(), status).map_err(|e| self.error(e))
    }

    async fn record_alert(&self, t: &AlertTransition) -> Result<()> {
        self.conn()
            .execute(
                &format!(
                    "INSERT INTO {ALERTS_TABLE} (rule, instance, pipeline, severity, from_state, to_state, value, at, message)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
                ),
                params![t.rule, t.instance, t.pipeline, t.severity, t.from, t.to, t.value, t.at, t.message],
            )
            .map(|_| ())
            .map_err(|e| self.error(e))
    }

    async fn write_qlik_status(&self, status: &QlikTargetStatus) -> Result<()> {
        // As JSON: the dashboard shows it whole, and new fields need no migration.
        let json =
            serde_json::to_string(status).map_err(|e| self.error(rusqlite::Error::ToSqlConversionFailure(e.into())))?;
        self.conn()
            .execute(
                &format!("INSERT OR REPLACE INTO {QLIK_TARGETS_TABLE} (pipeline, target, status) VALUES (?1, ?2, ?3)"),
                params![status.pipeline, status.target, json],
            )
            .map(|_| ())
            .map_err(|e| self.error(e))
    }

    async fn has_table(&self, table: &str) -> Result<bool> {
        self.reader()?
            .query_row("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1", [table], |_| Ok(()))
            .optional()
            .map(|found| found.is_some())
            .map_err(|e| self.error(e))
    }

    async fn columns(&self, table: &str) -> Result<Option<Vec<ResultColumn>>> {
        self.table_columns(table)
    }

    async fn read_page(&self, table: &str, request: &PageRequest) -> Result<Option<Page>> {
        let Some(columns) = self.table_columns(table)? else { return Ok(None) };
        let conn = self.reader()?;
        let (filter, params) = where_clause(&columns, request);
        let count = || {
            conn.query_row(&format!("SELECT count(*) FROM {} {filter}", quote(table)), params_from_iter(&params), |r| {
                r.get::<_, i64>(0)
            })
        };
        let total = match request.skip_total {
            true => None,
            false => Some(count().map_err(|e| self.error(e))?),
        };
        let direction = if request.descending { "DESC" } else { "ASC" };
        let order = match request.sort_column(&columns) {
            Some(c) => format!("{} {direction}, \"_id\" {direction}", quote(&c.name)),
            None => format!("\"_id\" {direction}"),
        };
        let names: Vec<String> = columns.iter().map(|c| quote(&c.name)).collect();
        let select = std::iter::once("\"_id\"".to_string()).chain(names).collect::<Vec<_>>().join(", ");
        let limit = i64::try_from(request.limit).unwrap_or(-1);
        let offset = i64::try_from(request.offset).unwrap_or(i64::MAX);
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {select} FROM {} {filter} ORDER BY {order} LIMIT {limit} OFFSET {offset}",
                quote(table)
            ))
            .map_err(|e| self.error(e))?;
        let rows: Vec<ResultRow> = stmt
            .query_map(params_from_iter(&params), |r| {
                let values = columns
                    .iter()
                    .enumerate()
                    .map(|(i, c)| Ok(from_sql(r.get_ref(i + 1)?, c.column_type)))
                    .collect::<rusqlite::Result<Vec<Value>>>()?;
                Ok(ResultRow { id: r.get(0)?, values })
            })
            .and_then(|rows| rows.collect())
            .map_err(|e| self.error(e))?;
        let total = total.map_or(rows.len() as u64, |t| t as u64);
        Ok(Some(Page { columns, rows, total }))
    }

    async fn window_bounds(&self, table: &str, column: &str) -> Result<Option<(i64, i64)>> {
        if self.table_columns(table)?.is_none() {
            return Ok(None);
        }
        // Two queries: SQLite reads a lone min() or max() from the index, not both at once.
        let start = window_start(column);
        let conn = self.reader()?;
        let bound = |aggregate: &str| -> Result<Option<String>> {
            conn.query_row(&format!("SELECT {aggregate}({start}) FROM {}", quote(table)), [], |r| r.get(0))
                .map_err(|e| self.error(e))
        };
        let (min, max) = (bound("min")?, bound("max")?);
        Ok(min.as_deref().and_then(parse_iso_micros).zip(max.as_deref().and_then(parse_iso_micros)))
    }

    async fn window_sums(
        &self,
        table: &str,
        window: &str,
        category: Option<&str>,
        values: &[String],
        request: &PageRequest,
    ) -> Result<Option<Vec<WindowSum>>> {
        let Some(columns) = self.table_columns(table)? else { return Ok(None) };
        let of_type =
            |name: &str, types: &[ColumnType]| columns.iter().any(|c| c.name == name && types.contains(&c.column_type));
        if !of_type(window, &[ColumnType::Window]) {
            return Ok(Some(Vec::new()));
        }
        // Grouped where the rows are: one row per window start and category.
        let (filter, params) = where_clause(&columns, request);
        let start = window_start(window);
        let category_text = match category.filter(|c| of_type(c, &[ColumnType::Text])) {
            Some(c) => format!("coalesce({}, '')", quote(c)),
            None => "NULL".to_string(),
        };
        let numeric = [ColumnType::Integer, ColumnType::Real, ColumnType::Decimal];
        let sums: Vec<String> = values
            .iter()
            .map(|v| match of_type(v, &numeric) {
                true => format!("SUM(CAST({} AS REAL))", quote(v)),
                false => "NULL".to_string(),
            })
            .collect();
        let sums = if sums.is_empty() { String::new() } else { format!("{}, ", sums.join(", ")) };
        let conn = self.reader()?;
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {start} AS s, {category_text} AS c, {sums}count(*) FROM {} {filter}
                 GROUP BY s, c ORDER BY s DESC, c",
                quote(table)
            ))
            .map_err(|e| self.error(e))?;
        let mut rows = stmt.query(params_from_iter(&params)).map_err(|e| self.error(e))?;
        let mut found: Vec<WindowSum> = Vec::new();
        let mut starts = 0;
        while let Some(row) = rows.next().map_err(|e| self.error(e))? {
            let read = || -> rusqlite::Result<Option<WindowSum>> {
                let Some(start) = row.get::<_, Option<String>>(0)?.as_deref().and_then(parse_iso_micros) else {
                    return Ok(None);
                };
                let sums =
                    (0..values.len()).map(|i| row.get::<_, Option<f64>>(2 + i)).collect::<rusqlite::Result<_>>()?;
                let rows: i64 = row.get(2 + values.len())?;
                Ok(Some(WindowSum { start, category: row.get(1)?, sums, rows: rows as u64 }))
            };
            let Some(sum) = read().map_err(|e| self.error(e))? else { continue };
            if found.last().is_none_or(|last| last.start != sum.start) {
                starts += 1;
                if starts > request.limit {
                    break;
                }
            }
            found.push(sum);
        }
        found.sort_by(|a, b| a.start.cmp(&b.start).then_with(|| a.category.cmp(&b.category)));
        Ok(Some(found))
    }

    async fn statuses(&self) -> Result<Vec<PipelineStatus>> {
        let conn = self.reader()?;
        let mut stmt = conn
            .prepare(&format!(
                "SELECT name, sql_file, sql_hash, state, host, started_at, events_in, events_ok,
                        events_bad, events_late, lag, watermark, last_batch_at, last_error, progress,
                        rows_upserted, rows_deleted, sql_text, result_table
                 FROM {STATUS_TABLE} ORDER BY name"
            ))
            .map_err(|e| self.error(e))?;
        stmt.query_map([], |r| {
            Ok(PipelineStatus {
                name: r.get(0)?,
                sql_file: r.get(1)?,
                sql_hash: r.get(2)?,
                state: r.get(3)?,
                host: r.get(4)?,
                started_at: r.get(5)?,
                events_in: r.get::<_, i64>(6)? as u64,
                events_ok: r.get::<_, i64>(7)? as u64,
                events_bad: r.get::<_, i64>(8)? as u64,
                events_late: r.get::<_, i64>(9)? as u64,
                lag: r.get::<_, i64>(10)? as u64,
                watermark: r.get(11)?,
                last_batch_at: r.get(12)?,
                last_error: r.get(13)?,
                progress: r.get(14)?,
                rows_upserted: r.get::<_, Option<i64>>(15)?.unwrap_or(0) as u64,
                rows_deleted: r.get::<_, Option<i64>>(16)?.unwrap_or(0) as u64,
                sql_text: r.get(17)?,
                result_table: r.get::<_, Option<String>>(18)?.unwrap_or_default(),
            })
        })
        .and_then(|rows| rows.collect())
        .map_err(|e| self.error(e))
    }

    async fn rejected_records(&self, pipeline: &str, late: bool) -> Result<Vec<RejectedRecord>> {
        let table = if late { LATE_RECORDS_TABLE } else { BAD_RECORDS_TABLE };
        let conn = self.reader()?;
        let mut stmt = conn
            .prepare(&format!("SELECT source_offset, raw, reason FROM {table} WHERE pipeline = ?1"))
            .map_err(|e| self.error(e))?;
        let mut records: Vec<RejectedRecord> = stmt
            .query_map([pipeline], |r| {
                Ok(RejectedRecord { source_offset: r.get(0)?, raw: r.get(1)?, reason: r.get(2)? })
            })
            .and_then(|rows| rows.collect())
            .map_err(|e| self.error(e))?;
        // Ordered here, not by SQL: offsets compare by their line number.
        records.sort_by(|a, b| a.offset_order().cmp(&b.offset_order()));
        Ok(records)
    }

    async fn qlik_statuses(&self) -> Result<Vec<QlikTargetStatus>> {
        self.json_rows(&format!("SELECT status FROM {QLIK_TARGETS_TABLE} ORDER BY pipeline, target"))
    }

    async fn save_silence(&self, silence: &Silence) -> Result<()> {
        let json = serde_json::to_string(silence)
            .map_err(|e| self.error(rusqlite::Error::ToSqlConversionFailure(e.into())))?;
        self.conn()
            .execute(
                &format!("INSERT OR REPLACE INTO {SILENCES_TABLE} (id, created_at, silence) VALUES (?1, ?2, ?3)"),
                params![silence.id, silence.created_at, json],
            )
            .map(|_| ())
            .map_err(|e| self.error(e))
    }

    async fn silences(&self) -> Result<Vec<Silence>> {
        self.json_rows(&format!("SELECT silence FROM {SILENCES_TABLE} ORDER BY created_at DESC, id DESC"))
    }

    async fn write_health(&self, samples: &[HealthSample], keep: usize) -> Result<()> {
        self.transaction(|tx| {
            let mut insert = tx.prepare_cached(&format!(
                "INSERT OR REPLACE INTO {HEALTH_TABLE}
                 (pipeline, resolution_seconds, at, events_per_second, lag, watermark_delay_seconds)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
            ))?;
            for s in samples {
                let lag = s.lag.map(|l| i64::try_from(l).unwrap_or(i64::MAX));
                insert.execute(params![
                    s.pipeline,
                    s.resolution_seconds,
                    s.at,
                    s.events_per_second,
                    lag,
                    s.watermark_delay_seconds
                ])?;
            }
            // Everything older than the `keep`-th newest (none if there are fewer).
            let mut prune = tx.prepare_cached(&format!(
                "DELETE FROM {HEALTH_TABLE} WHERE pipeline = ?1 AND resolution_seconds = ?2 AND at < (
                    SELECT at FROM {HEALTH_TABLE} WHERE pipeline = ?1 AND resolution_seconds = ?2
                    ORDER BY at DESC LIMIT 1 OFFSET ?3)"
            ))?;
            let series: std::collections::BTreeSet<(&str, u32)> =
                samples.iter().map(|s| (s.pipeline.as_str(), s.resolution_seconds)).collect();
            for (pipeline, resolution) in series {
                match keep {
                    0 => tx.execute(
                        &format!("DELETE FROM {HEALTH_TABLE} WHERE pipeline = ?1 AND resolution_seconds = ?2"),
                        params![pipeline, resolution],
                    )?,
                    _ => prune.execute(params![pipeline, resolution, (keep - 1) as i64])?,
                };
            }
            Ok(())
        })
    }

    async fn health(&self, resolution_seconds: u32) -> Result<Vec<HealthSample>> {
        let conn = self.reader()?;
        let mut stmt = conn
            .prepare(&format!(
                "SELECT pipeline, resolution_seconds, at, events_per_second, lag, watermark_delay_seconds
                 FROM {HEALTH_TABLE} WHERE resolution_seconds = ?1 ORDER BY pipeline, at"
            ))
            .map_err(|e| self.error(e))?;
        stmt.query_map([resolution_seconds], |r| {
            Ok(HealthSample {
                pipeline: r.get(0)?,
                resolution_seconds: r.get(1)?,
                at: r.get(2)?,
                events_per_second: r.get(3)?,
                lag: r.get::<_, Option<i64>>(4)?.map(|l| l.max(0) as u64),
                watermark_delay_seconds: r.get(5)?,
            })
        })
        .and_then(|rows| rows.collect())
        .map_err(|e| self.error(e))
    }

    async fn alert_history(&self, limit: usize) -> Result<Vec<AlertTransition>> {
        let conn = self.reader()?;
        let mut stmt = conn
            .prepare(&format!(
                "SELECT rule, instance, pipeline, severity, from_state, to_state, value, at, message
                 FROM {ALERTS_TABLE} ORDER BY seq DESC LIMIT ?1"
            ))
            .map_err(|e| self.error(e))?;
        stmt.query_map([limit as i64], |r| {
            Ok(AlertTransition {
                rule: r.get(0)?,
                instance: r.get(1)?,
                pipeline: r.get(2)?,
                severity: r.get(3)?,
                from: r.get(4)?,
                to: r.get(5)?,
                value: r.get(6)?,
                at: r.get(7)?,
                message: r.get(8)?,
            })
        })
        .and_then(|rows| rows.collect())
        .map_err(|e| self.error(e))
    }
}

fn same_names(a: &[ResultColumn], b: &[ResultColumn]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.name == y.name)
}

/// A value as SQLite stores it.
fn to_sql(value: &Value) -> rusqlite::types::Value {
    use rusqlite::types::Value as Sql;
    match value {
        Value::Null => Sql::Null,
        Value::Bool(v) => Sql::Integer(i64::from(*v)),
        Value::Integer(v) => Sql::Integer(*v),
        Value::Real(v) => Sql::Real(*v),
        Value::Decimal(v) => v.parse().map_or_else(|_| Sql::Text(v.clone()), Sql::Real),
        Value::Text(v) => Sql::Text(v.clone()),
        Value::Timestamp(v) => Sql::Text(iso_micros(*v)),
        Value::Struct(_) | Value::List(_) => {
            // Room for a window's JSON (64 bytes): no reallocation while it is written.
            let mut text = String::with_capacity(96);
            value.write_json(&mut text);
            Sql::Text(text)
        }
    }
}

/// The values bound for `rows`, each its `_id` then its columns; straight from the
/// rows, with text borrowed: SQLite copies bound text anyway. Structs and lists are
/// bound from their text in `texts` (see [`json_texts`]) if it is there.
fn row_values<'a>(
    rows: &'a [&'a ResultRow],
    texts: &'a JsonTexts<'a>,
) -> impl Iterator<Item = rusqlite::types::ToSqlOutput<'a>> {
    rows.iter().flat_map(|r| std::iter::once(bind_text(&r.id)).chain(r.values.iter().map(|v| bind_value(v, texts))))
}

/// Distinct struct and list values (windows) with their JSON text.
type JsonTexts<'a> = Vec<(&'a Value, String)>;

/// The JSON text of each distinct struct or list value of `rows`, up to 16 of them: the
/// rows of a batch share a few windows, and writing a window's text (two timestamps)
/// for every row was a fifth of binding it.
fn json_texts<'a>(rows: &[&'a ResultRow]) -> JsonTexts<'a> {
    let mut texts: JsonTexts<'a> = Vec::new();
    for value in rows.iter().flat_map(|r| &r.values) {
        if matches!(value, Value::Struct(_) | Value::List(_))
            && texts.len() < 16
            && !texts.iter().any(|(known, _)| *known == value)
        {
            texts.push((value, value.json_text()));
        }
    }
    texts
}

fn bind_text(text: &str) -> rusqlite::types::ToSqlOutput<'_> {
    rusqlite::types::ToSqlOutput::Borrowed(rusqlite::types::ValueRef::Text(text.as_bytes()))
}

/// [`to_sql`], borrowing text instead of copying it, from `texts` for structs and lists.
fn bind_value<'a>(value: &'a Value, texts: &'a JsonTexts<'a>) -> rusqlite::types::ToSqlOutput<'a> {
    match value {
        Value::Text(v) => bind_text(v),
        Value::Struct(_) | Value::List(_) => match texts.iter().find(|(known, _)| *known == value) {
            Some((_, text)) => bind_text(text),
            None => rusqlite::types::ToSqlOutput::Owned(to_sql(value)),
        },
        other => rusqlite::types::ToSqlOutput::Owned(to_sql(other)),
    }
}

/// A stored value read back as the column's type.
fn from_sql(stored: rusqlite::types::ValueRef<'_>, column_type: ColumnType) -> Value {
    use rusqlite::types::ValueRef;
    let text = |t: &[u8]| String::from_utf8_lossy(t).into_owned();
    match (stored, column_type) {
        (ValueRef::Null, _) => Value::Null,
        (ValueRef::Integer(v), ColumnType::Boolean) => Value::Bool(v != 0),
        // DECIMAL has numeric affinity: SQLite keeps whole numbers as integers.
        (ValueRef::Integer(v), ColumnType::Real | ColumnType::Decimal) => Value::Real(v as f64),
        (ValueRef::Integer(v), _) => Value::Integer(v),
        (ValueRef::Real(v), _) => Value::Real(v),
        (ValueRef::Text(t), ColumnType::Timestamp) => {
            parse_iso_micros(&text(t)).map_or_else(|| Value::Text(text(t)), Value::Timestamp)
        }
        (ValueRef::Text(t), ColumnType::Window) => match serde_json::from_slice::<serde_json::Value>(t) {
            Ok(serde_json::Value::Object(fields)) => Value::Struct(
                fields
                    .iter()
                    .map(|(k, v)| {
                        let time = v.as_str().and_then(parse_iso_micros);
                        (k.clone(), time.map_or_else(|| Value::from_json(v), Value::Timestamp))
                    })
                    .collect(),
            ),
            _ => Value::Text(text(t)),
        },
        (ValueRef::Text(t), ColumnType::Json) => {
            serde_json::from_slice(t).map_or_else(|_| Value::Text(text(t)), |json| Value::from_json(&json))
        }
        (ValueRef::Text(t) | ValueRef::Blob(t), _) => Value::Text(text(t)),
    }
}

/// Rows per upsert statement (fewer for wide results).
const ROWS_PER_UPSERT: usize = 64;

fn write_in(
    tx: &rusqlite::Transaction<'_>,
    table: &str,
    columns: &[ResultColumn],
    delta: &ResultDelta,
    status: &PipelineStatus,
    bad: &[RejectedRecord],
    late: &[RejectedRecord],
) -> rusqlite::Result<()> {
    if !delta.upserts.is_empty() {
        let names: Vec<String> = columns.iter().map(|c| quote(&c.name)).collect();
        let updates: Vec<String> = names.iter().map(|n| format!("{n} = excluded.{n}")).collect();
        let row = format!("({})", vec!["?"; columns.len() + 1].join(", "));
        // Several rows per statement: a statement's own cost (bind, step, reset) is then
        // paid once per `ROWS_PER_UPSERT` rows (within SQLite's limit of parameters).
        let per_statement = (30_000 / (columns.len() + 1)).clamp(1, ROWS_PER_UPSERT);
        let sql = |rows: usize| {
            let values = vec![row.as_str(); rows].join(", ");
            if columns.is_empty() {
                format!("INSERT OR IGNORE INTO {} (\"_id\") VALUES {values}", quote(table))
            } else {
                format!(
                    "INSERT INTO {} (\"_id\", {}) VALUES {values} ON CONFLICT(\"_id\") DO UPDATE SET {}",
                    quote(table),
                    names.join(", "),
                    updates.join(", ")
                )
            }
        };
        // In `_id` order: each upsert then lands next to the last one in the table's
        // B-tree (pages already in cache, splits at the edge), not at a random place.
        // A row's `_id` repeated within a batch is applied in its order, as one by one.
        let mut in_order: Vec<&ResultRow> = delta.upserts.iter().collect();
        in_order.sort_by(|a, b| a.id.cmp(&b.id));
        let texts = json_texts(&in_order);
        let mut chunks = in_order.chunks_exact(per_statement);
        if chunks.len() > 0 {
            let mut stmt = tx.prepare_cached(&sql(per_statement))?;
            for chunk in chunks.by_ref() {
                stmt.execute(params_from_iter(row_values(chunk, &texts)))?;
            }
        }
        let mut stmt = tx.prepare_cached(&sql(1))?;
        for row in chunks.remainder() {
            stmt.execute(params_from_iter(row_values(std::slice::from_ref(row), &texts)))?;
        }
    }
    if !delta.deletes.is_empty() {
        let mut stmt = tx.prepare_cached(&format!("DELETE FROM {} WHERE \"_id\" = ?1", quote(table)))?;
        for id in &delta.deletes {
            stmt.execute([id])?;
        }
    }
    for (records, table) in [(bad, BAD_RECORDS_TABLE), (late, LATE_RECORDS_TABLE)] {
        if records.is_empty() {
            continue;
        }
        let mut stmt = tx.prepare_cached(&format!(
            "INSERT OR REPLACE INTO {table} (pipeline, source_offset, raw, reason) VALUES (?1, ?2, ?3, ?4)"
        ))?;
        for r in records {
            stmt.execute(params![status.name, r.source_offset, r.raw, r.reason])?;
        }
    }
    upsert_status(tx, status)
}

fn upsert_status(conn: &Connection, s: &PipelineStatus) -> rusqlite::Result<()> {
    conn.prepare_cached(&format!(
        "INSERT OR REPLACE INTO {STATUS_TABLE} (name, sql_file, sql_hash, state, host, started_at,
            events_in, events_ok, events_bad, events_late, lag, watermark, last_batch_at, last_error, progress,
            rows_upserted, rows_deleted, sql_text, result_table)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)"
    ))?
    .execute(params![
        s.name,
        s.sql_file,
        s.sql_hash,
        s.state,
        s.host,
        s.started_at,
        s.events_in as i64,
        s.events_ok as i64,
        s.events_bad as i64,
        s.events_late as i64,
        s.lag as i64,
        s.watermark,
        s.last_batch_at,
        s.last_error,
        s.progress,
        s.rows_upserted as i64,
        s.rows_deleted as i64,
        s.sql_text,
        s.result_table
    ])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_connection_reads_while_a_write_transaction_is_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sqlite");
        let writer = SqliteStore::open(&path).unwrap();
        let columns = [ResultColumn { name: "n".into(), column_type: ColumnType::Integer, role: None }];
        block_on(writer.prepare_result_table("p", "p", &columns, true)).unwrap();
        let mut conn = writer.conn();
        let tx = conn.transaction().unwrap();
        tx.execute("INSERT INTO p VALUES ('x', 1)", []).unwrap();
        // WAL: the reader is not blocked by the open write and does not see it yet.
        let reader = SqliteStore::open(&path).unwrap();
        assert_eq!(block_on(reader.read_table("p")).unwrap().unwrap().rows.len(), 0);
        tx.commit().unwrap();
        assert_eq!(block_on(reader.read_table("p")).unwrap().unwrap().rows.len(), 1);
    }

    #[test]
    fn upserts_of_any_count_land_several_per_statement_and_a_repeated_id_keeps_its_last_value() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("s.sqlite")).unwrap();
        let columns = [
            ResultColumn { name: "n".into(), column_type: ColumnType::Integer, role: None },
            ResultColumn { name: "label".into(), column_type: ColumnType::Text, role: None },
        ];
        block_on(store.prepare_result_table("p", "p", &columns, true)).unwrap();
        let row = |id: usize, n: i64| ResultRow {
            id: format!("{id:04}"),
            values: vec![Value::Integer(n), Value::Text(format!("row {id}"))],
        };
        // Two statements' worth and a remainder, with id 7 given twice (the later wins).
        let count = 2 * ROWS_PER_UPSERT + 13;
        let mut upserts: Vec<ResultRow> = (0..count).rev().map(|id| row(id, id as i64)).collect();
        upserts.push(row(7, -7));
        let status = PipelineStatus { name: "p".into(), ..PipelineStatus::default() };
        let delta = ResultDelta { upserts, deletes: vec![] };
        block_on(store.write_batch("p", &columns, &delta, &status, &[], &[])).unwrap();
        // A second batch updates some rows and inserts none.
        let delta = ResultDelta { upserts: vec![row(0, 100), row(count - 1, 200)], deletes: vec!["0001".into()] };
        block_on(store.write_batch("p", &columns, &delta, &status, &[], &[])).unwrap();
        let mut rows = block_on(store.read_table("p")).unwrap().unwrap().rows;
        rows.sort_by(|a, b| a.id.cmp(&b.id));
        let expected: Vec<ResultRow> = (0..count)
            .filter(|&id| id != 1)
            .map(|id| match id {
                0 => row(0, 100),
                7 => row(7, -7),
                id if id == count - 1 => row(id, 200),
                id => row(id, id as i64),
            })
            .collect();
        assert_eq!(rows, expected);
    }

    #[test]
    fn the_writers_statement_journals_stay_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("s.sqlite")).unwrap();
        // 2 is MEMORY: multi-row upserts journal their pages for a statement rollback,
        // and on disk that was more writes than the database's own.
        let temp_store: i64 = store.conn().query_row("PRAGMA temp_store", [], |r| r.get(0)).unwrap();
        assert_eq!(temp_store, 2);
    }

    #[test]
    fn window_starts_are_indexed_and_the_index_follows_a_swap() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("s.sqlite")).unwrap();
        let columns = [ResultColumn { name: "window".into(), column_type: ColumnType::Window, role: None }];
        let shadow = crate::shadow_table("t");
        block_on(store.prepare_result_table("p", &shadow, &columns, true)).unwrap();
        block_on(store.swap_in(&shadow, "t")).unwrap();
        block_on(store.prepare_result_table("p", &shadow, &columns, true)).unwrap();
        let indexes: Vec<String> = store
            .conn()
            .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE '%.start%' ORDER BY name")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        // The live table kept its shadow's index; the new shadow has one of its own.
        assert_eq!(indexes, ["_shadow_t.window.start", "_shadow_t.window.start.2"]);
        block_on(store.swap_in(&shadow, "t")).unwrap();
        block_on(store.prepare_result_table("p", &shadow, &columns, true)).unwrap();
        block_on(store.prepare_result_table("p", &shadow, &columns, false)).unwrap();
        let per_table: Vec<(String, i64)> = store
            .conn()
            .prepare("SELECT tbl_name, count(*) FROM sqlite_master WHERE type = 'index' AND name LIKE '%.start%' GROUP BY tbl_name ORDER BY tbl_name")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(per_table, [("_shadow_t".to_string(), 1), ("t".to_string(), 1)]);
        // A table of an older version, indexed under the old statement, gets no second index.
        store
            .conn()
            .execute_batch(
                "CREATE TABLE \"old\" (\"_id\" TEXT PRIMARY KEY, \"window\" WINDOW) WITHOUT ROWID;
                 CREATE INDEX IF NOT EXISTS \"old.window.start\" ON \"old\" (json_extract(\"window\", '$.start'));",
            )
            .unwrap();
        block_on(store.prepare_result_table("p", "old", &columns, false)).unwrap();
        let on_old: i64 = store
            .conn()
            .query_row("SELECT count(*) FROM sqlite_master WHERE type = 'index' AND tbl_name = 'old'", [], |r| r.get(0))
            .unwrap();
        assert_eq!(on_old, 1, "one index on the window start (the primary key is the table itself)");
        let plan: String = store
            .conn()
            .query_row(
                &format!("EXPLAIN QUERY PLAN SELECT count(*) FROM t WHERE {} >= 'a'", window_start("window")),
                [],
                |r| r.get(3),
            )
            .unwrap();
        let index_of_t: String = store
            .conn()
            .query_row("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 't'", [], |r| r.get(0))
            .unwrap();
        assert!(plan.contains(&format!("INDEX {index_of_t}")), "{plan}");
    }

    /// Runs a future of the (synchronous inside) SQLite store to completion.
    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut future = std::pin::pin!(future);
        loop {
            if let std::task::Poll::Ready(v) = future.as_mut().poll(&mut cx) {
                return v;
            }
        }
    }
}

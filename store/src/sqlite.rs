//! The embedded store: one SQLite file in WAL mode.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params, params_from_iter};

use crate::{PipelineStatus, RejectedRecord, Result, ResultColumn, ResultDelta, StoreError, Value};

/// Write transactions take the write lock at BEGIN, where the busy timeout applies,
/// rather than failing when a read turns into a write under contention.
const IMMEDIATE: rusqlite::TransactionBehavior = rusqlite::TransactionBehavior::Immediate;

pub const STATUS_TABLE: &str = "_pipeline_status";
pub const BAD_RECORDS_TABLE: &str = "_bad_records";
pub const LATE_RECORDS_TABLE: &str = "_late_records";

/// A connection to the embedded store. One per writer thread; readers open their own.
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
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
        let conn = Connection::open(&path)
            .map_err(|source| StoreError::Sqlite { uri: format!("sqlite:{}", path.display()), source })?;
        let store = SqliteStore { conn, path };
        store.init().map_err(|e| store.error(e))?;
        Ok(store)
    }

    fn error(&self, source: rusqlite::Error) -> StoreError {
        self_error(&self.path, source)
    }

    fn init(&self) -> rusqlite::Result<()> {
        // Several pipelines (threads or processes) write, the dashboard reads: WAL lets
        // readers proceed during a write, and the busy timeout serialises the writers.
        self.conn.busy_timeout(Duration::from_secs(30))?;
        // Switching a new file to WAL needs a moment alone with it, and SQLite answers
        // BUSY there without waiting: pipelines starting together would fail.
        let mut attempts = 0;
        loop {
            match self.conn.pragma_update(None, "journal_mode", "WAL") {
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::DatabaseBusy && attempts < 300 =>
                {
                    attempts += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
                other => break other?,
            }
        }
        self.conn.pragma_update(None, "synchronous", "NORMAL")?;
        self.conn.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS {STATUS_TABLE} (
                name TEXT PRIMARY KEY, sql_file TEXT, sql_hash TEXT, state TEXT, host TEXT,
                started_at TEXT, events_in INTEGER, events_ok INTEGER, events_bad INTEGER,
                events_late INTEGER, lag INTEGER, watermark TEXT, last_batch_at TEXT,
                last_error TEXT, progress REAL);
             CREATE TABLE IF NOT EXISTS {BAD_RECORDS_TABLE} (
                pipeline TEXT, source_offset TEXT, raw TEXT, reason TEXT,
                PRIMARY KEY (pipeline, source_offset));
             CREATE TABLE IF NOT EXISTS {LATE_RECORDS_TABLE} (
                pipeline TEXT, source_offset TEXT, raw TEXT, reason TEXT,
                PRIMARY KEY (pipeline, source_offset));"
        ))?;
        // Stores written before replay progress was recorded.
        let has_progress: bool = self.conn.query_row(
            &format!("SELECT count(*) FROM pragma_table_info('{STATUS_TABLE}') WHERE name = 'progress'"),
            [],
            |r| r.get::<_, i64>(0).map(|n| n > 0),
        )?;
        if !has_progress {
            self.conn.execute_batch(&format!("ALTER TABLE {STATUS_TABLE} ADD COLUMN progress REAL"))?;
        }
        Ok(())
    }

    /// Makes sure `table` exists with exactly `_id` plus `columns`. With `fresh`, or
    /// if the table exists with other columns, its old rows are dropped: a pipeline
    /// that starts over (new SQL) must not leave results of its previous version.
    /// Also forgets the pipeline's bad and late records when starting fresh.
    pub fn prepare_result_table(
        &mut self,
        pipeline: &str,
        table: &str,
        columns: &[ResultColumn],
        fresh: bool,
    ) -> Result<()> {
        let existing = self.table_columns(table)?;
        let mut wanted = vec!["_id".to_string()];
        wanted.extend(columns.iter().map(|c| c.name.clone()));
        let recreate = fresh || existing.as_ref().is_some_and(|cols| *cols != wanted);
        let tx = self.conn.transaction_with_behavior(IMMEDIATE).map_err(|e| self_error(&self.path, e))?;
        let run = || -> rusqlite::Result<()> {
            if recreate {
                tx.execute_batch(&format!("DROP TABLE IF EXISTS {}", quote(table)))?;
            }
            let defs: Vec<String> =
                columns.iter().map(|c| format!("{} {}", quote(&c.name), c.column_type.sql())).collect();
            let mut ddl = format!("CREATE TABLE IF NOT EXISTS {} (\"_id\" TEXT PRIMARY KEY", quote(table));
            for def in defs {
                ddl.push_str(", ");
                ddl.push_str(&def);
            }
            // Clustered on `_id`: one B-tree to update per upsert instead of a rowid
            // table plus an index (upserts by `_id` are all the pipelines do).
            ddl.push_str(") WITHOUT ROWID");
            tx.execute_batch(&ddl)?;
            if fresh {
                tx.execute(&format!("DELETE FROM {BAD_RECORDS_TABLE} WHERE pipeline = ?1"), [pipeline])?;
                tx.execute(&format!("DELETE FROM {LATE_RECORDS_TABLE} WHERE pipeline = ?1"), [pipeline])?;
            }
            Ok(())
        };
        run().map_err(|e| self_error(&self.path, e))?;
        tx.commit().map_err(|e| self_error(&self.path, e))
    }

    /// Replaces `table` by `shadow` in one transaction: readers see the old table
    /// until the commit and the whole new one after it, never a mix.
    pub fn swap_in(&mut self, shadow: &str, table: &str) -> Result<()> {
        let tx = self.conn.transaction_with_behavior(IMMEDIATE).map_err(|e| self_error(&self.path, e))?;
        tx.execute_batch(&format!(
            "DROP TABLE IF EXISTS {table}; ALTER TABLE {shadow} RENAME TO {table};",
            table = quote(table),
            shadow = quote(shadow)
        ))
        .map_err(|e| self_error(&self.path, e))?;
        tx.commit().map_err(|e| self_error(&self.path, e))
    }

    /// The column names of `table`, or `None` if it does not exist.
    pub fn table_columns(&self, table: &str) -> Result<Option<Vec<String>>> {
        let mut stmt = self.conn.prepare(&format!("PRAGMA table_info({})", quote(table))).map_err(|e| self.error(e))?;
        let names: Vec<String> = stmt
            .query_map([], |row| row.get::<_, String>(1))
            .and_then(|rows| rows.collect())
            .map_err(|e| self.error(e))?;
        Ok(if names.is_empty() { None } else { Some(names) })
    }

    /// Applies one micro-batch in one transaction: result upserts and deletes, the
    /// rejected records, and the pipeline's status. Readers see all of it or none.
    #[allow(clippy::too_many_arguments)]
    pub fn write_batch(
        &mut self,
        table: &str,
        columns: &[ResultColumn],
        delta: &ResultDelta,
        status: &PipelineStatus,
        bad: &[RejectedRecord],
        late: &[RejectedRecord],
    ) -> Result<()> {
        let path = self.path.clone();
        let tx = self.conn.transaction_with_behavior(IMMEDIATE).map_err(|e| self_error(&path, e))?;
        write_in(&tx, table, columns, delta, status, bad, late).map_err(|e| self_error(&path, e))?;
        tx.commit().map_err(|e| self_error(&path, e))
    }

    /// Writes only the status row (state changes, errors).
    pub fn write_status(&mut self, status: &PipelineStatus) -> Result<()> {
        upsert_status(&self.conn, status).map_err(|e| self.error(e))
    }

    /// Every status row, by name.
    pub fn statuses(&self) -> Result<Vec<PipelineStatus>> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT name, sql_file, sql_hash, state, host, started_at, events_in, events_ok,
                        events_bad, events_late, lag, watermark, last_batch_at, last_error, progress
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
            })
        })
        .and_then(|rows| rows.collect())
        .map_err(|e| self.error(e))
    }

    /// The status of one pipeline.
    pub fn status(&self, name: &str) -> Result<Option<PipelineStatus>> {
        Ok(self.statuses()?.into_iter().find(|s| s.name == name))
    }

    /// Rejected records of a pipeline: `late` selects late ones, else bad ones.
    pub fn rejected_records(&self, pipeline: &str, late: bool) -> Result<Vec<RejectedRecord>> {
        let table = if late { LATE_RECORDS_TABLE } else { BAD_RECORDS_TABLE };
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT source_offset, raw, reason FROM {table} WHERE pipeline = ?1 ORDER BY source_offset"
            ))
            .map_err(|e| self.error(e))?;
        stmt.query_map([pipeline], |r| {
            Ok(RejectedRecord { source_offset: r.get(0)?, raw: r.get(1)?, reason: r.get(2)? })
        })
        .and_then(|rows| rows.collect())
        .map_err(|e| self.error(e))
    }

    /// All rows of a result table, ordered by `_id`: column names (with `_id` first) and values.
    pub fn read_table(&self, table: &str) -> Result<(Vec<String>, Vec<Vec<Value>>)> {
        let columns = self.table_columns(table)?.unwrap_or_default();
        if columns.is_empty() {
            return Ok((columns, Vec::new()));
        }
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT * FROM {} ORDER BY \"_id\"", quote(table)))
            .map_err(|e| self.error(e))?;
        let n = columns.len();
        let rows = stmt
            .query_map([], |r| {
                (0..n)
                    .map(|i| {
                        Ok(match r.get_ref(i)? {
                            rusqlite::types::ValueRef::Null => Value::Null,
                            rusqlite::types::ValueRef::Integer(v) => Value::Integer(v),
                            rusqlite::types::ValueRef::Real(v) => Value::Real(v),
                            rusqlite::types::ValueRef::Text(t) | rusqlite::types::ValueRef::Blob(t) => {
                                Value::Text(String::from_utf8_lossy(t).into_owned())
                            }
                        })
                    })
                    .collect::<rusqlite::Result<Vec<Value>>>()
            })
            .and_then(|rows| rows.collect())
            .map_err(|e| self.error(e))?;
        Ok((columns, rows))
    }

    /// The path of the SQLite file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether a table with this name exists.
    pub fn has_table(&self, table: &str) -> Result<bool> {
        self.conn
            .query_row("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1", [table], |_| Ok(()))
            .optional()
            .map(|found| found.is_some())
            .map_err(|e| self.error(e))
    }
}

fn self_error(path: &Path, source: rusqlite::Error) -> StoreError {
    StoreError::Sqlite { uri: format!("sqlite:{}", path.display()), source }
}

fn to_sql(value: &Value) -> rusqlite::types::Value {
    match value {
        Value::Null => rusqlite::types::Value::Null,
        Value::Integer(v) => rusqlite::types::Value::Integer(*v),
        Value::Real(v) => rusqlite::types::Value::Real(*v),
        Value::Text(v) => rusqlite::types::Value::Text(v.clone()),
    }
}

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
        let placeholders: Vec<String> = (1..=columns.len() + 1).map(|i| format!("?{i}")).collect();
        let updates: Vec<String> = names.iter().map(|n| format!("{n} = excluded.{n}")).collect();
        let sql = if columns.is_empty() {
            format!("INSERT OR IGNORE INTO {} (\"_id\") VALUES (?1)", quote(table))
        } else {
            format!(
                "INSERT INTO {} (\"_id\", {}) VALUES ({}) ON CONFLICT(\"_id\") DO UPDATE SET {}",
                quote(table),
                names.join(", "),
                placeholders.join(", "),
                updates.join(", ")
            )
        };
        let mut stmt = tx.prepare_cached(&sql)?;
        for row in &delta.upserts {
            let values =
                std::iter::once(rusqlite::types::Value::Text(row.id.clone())).chain(row.values.iter().map(to_sql));
            stmt.execute(params_from_iter(values))?;
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
            events_in, events_ok, events_bad, events_late, lag, watermark, last_batch_at, last_error, progress)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)"
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
        s.progress
    ])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ColumnType, ResultRow};

    fn columns() -> Vec<ResultColumn> {
        vec![
            ResultColumn { name: "item_id".into(), column_type: ColumnType::Integer },
            ResultColumn { name: "avg".into(), column_type: ColumnType::Real },
        ]
    }

    #[test]
    fn upserts_replace_rows_by_id_and_deletes_remove_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(dir.path().join("s.sqlite")).unwrap();
        store.prepare_result_table("p", "p", &columns(), true).unwrap();
        let status = PipelineStatus { name: "p".into(), ..Default::default() };
        let row = |id: &str, v: f64| ResultRow { id: id.into(), values: vec![Value::Integer(1), Value::Real(v)] };
        let delta = ResultDelta { upserts: vec![row("a", 1.0), row("b", 2.0)], deletes: vec![] };
        store.write_batch("p", &columns(), &delta, &status, &[], &[]).unwrap();
        let delta = ResultDelta { upserts: vec![row("a", 3.0)], deletes: vec!["b".into()] };
        store.write_batch("p", &columns(), &delta, &status, &[], &[]).unwrap();
        let (names, rows) = store.read_table("p").unwrap();
        assert_eq!(names, ["_id", "item_id", "avg"]);
        assert_eq!(rows, vec![vec![Value::Text("a".into()), Value::Integer(1), Value::Real(3.0)]]);
    }

    #[test]
    fn a_second_connection_reads_while_a_write_transaction_is_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sqlite");
        let mut writer = SqliteStore::open(&path).unwrap();
        writer.prepare_result_table("p", "p", &columns(), true).unwrap();
        let tx = writer.conn.transaction().unwrap();
        tx.execute("INSERT INTO p VALUES ('x', 1, 1.0)", []).unwrap();
        // WAL: the reader is not blocked by the open write and does not see it yet.
        let reader = SqliteStore::open(&path).unwrap();
        assert_eq!(reader.read_table("p").unwrap().1.len(), 0);
        tx.commit().unwrap();
        assert_eq!(reader.read_table("p").unwrap().1.len(), 1);
    }

    #[test]
    fn rejected_records_are_keyed_by_offset_so_replays_do_not_duplicate() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(dir.path().join("s.sqlite")).unwrap();
        store.prepare_result_table("p", "p", &columns(), true).unwrap();
        let status = PipelineStatus { name: "p".into(), ..Default::default() };
        let bad = RejectedRecord { source_offset: "f:1".into(), raw: "{".into(), reason: "eof".into() };
        for _ in 0..2 {
            store
                .write_batch("p", &columns(), &ResultDelta::default(), &status, std::slice::from_ref(&bad), &[])
                .unwrap();
        }
        assert_eq!(store.rejected_records("p", false).unwrap(), vec![bad]);
    }

    #[test]
    fn a_shadow_table_replaces_the_table_in_one_step() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sqlite");
        let mut store = SqliteStore::open(&path).unwrap();
        let status = PipelineStatus { name: "p".into(), ..Default::default() };
        let row = |id: &str, n: i64| ResultRow { id: id.into(), values: vec![Value::Integer(n), Value::Real(0.5)] };
        store.prepare_result_table("p", "t", &columns(), false).unwrap();
        let old = ResultDelta { upserts: vec![row("a", 1), row("b", 2)], deletes: vec![] };
        store.write_batch("t", &columns(), &old, &status, &[], &[]).unwrap();
        let shadow = crate::shadow_table("t");
        store.prepare_result_table("p", &shadow, &columns(), true).unwrap();
        let new = ResultDelta { upserts: vec![row("c", 3)], deletes: vec![] };
        store.write_batch(&shadow, &columns(), &new, &status, &[], &[]).unwrap();
        let reader = SqliteStore::open(&path).unwrap();
        assert_eq!(reader.read_table("t").unwrap().1.len(), 2, "the old table until the swap");
        store.swap_in(&shadow, "t").unwrap();
        let new_rows = vec![vec![Value::Text("c".into()), Value::Integer(3), Value::Real(0.5)]];
        assert_eq!(reader.read_table("t").unwrap().1, new_rows);
        assert!(!reader.has_table(&shadow).unwrap());
    }

    #[test]
    fn parses_sqlite_uris_and_rejects_others() {
        assert_eq!(
            crate::StoreUri::parse("sqlite:data/x.sqlite").unwrap(),
            crate::StoreUri::Sqlite("data/x.sqlite".into())
        );
        let err = crate::StoreUri::parse("mongodb://h/db").unwrap_err();
        assert!(err.to_string().contains("mongodb://h/db"), "{err}");
    }
}

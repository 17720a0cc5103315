//! MongoDB: the official driver, one collection per pipeline.
//!
//! Types: integers are BSON int64 (`long`), floats `double`, decimals `decimal128`,
//! timestamps BSON dates (MongoDB keeps milliseconds), a window the sub-document
//! `{start, end}` of two dates — indexed on `<column>.start`, so a date-range query
//! on `window.start` is an index scan — and other structs and lists documents and
//! arrays.
//!
//! Writes are unordered bulk `update` (upsert by `_id`, the whole document
//! replaced) and `delete` commands, [`BULK_BATCH`] statements per command, up to
//! [`CONCURRENT_COMMANDS`] of a write's upsert commands in flight at once. They work
//! on every MongoDB version (the newer client-level `bulkWrite` needs 8.0). A
//! micro-batch is not one transaction here: results, rejected records and status are
//! written in that order, each idempotent, so a batch written again after a crash or
//! an outage leaves the same documents.
//!
//! Backfills swap a shadow collection in with `renameCollection` and `dropTarget`,
//! one server-side step. Each result collection's columns are kept in
//! `_result_schemas`, so readers know the columns and types of an empty result too.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};

use mongodb::bson::{self, Bson, Document, doc};
use mongodb::options::ClientOptions;
use mongodb::{Client, Collection, Database, IndexModel};

use crate::uri::{password_of, redact_uri};
use crate::{
    ALERTS_TABLE, AlertTransition, BAD_RECORDS_TABLE, ColumnType, Comparison, FilterCondition, HEALTH_TABLE,
    HealthSample, LATE_RECORDS_TABLE, Page, PageRequest, PipelineStatus, QLIK_TARGETS_TABLE, QlikTargetStatus,
    RejectedRecord, Result, ResultColumn, ResultDelta, ResultRow, SILENCES_TABLE, STATUS_TABLE, Silence, Store,
    StoreError, Value, iso_micros,
};

/// Statements per bulk command: large enough that a round trip carries many rows,
/// small enough to stay far below MongoDB's 16 MiB command size for ordinary rows
/// (commands are also cut at [`BULK_BYTES`]).
pub const BULK_BATCH: usize = 1000;
/// Approximate bytes of rows per bulk command.
const BULK_BYTES: usize = 8 << 20;

/// Bulk commands of one write in flight at once (see [`MongoStore::upsert_all`]).
const CONCURRENT_COMMANDS: usize = 4;
/// The columns of each result collection.
pub const SCHEMAS_COLLECTION: &str = "_result_schemas";
/// Server error codes.
const NAMESPACE_NOT_FOUND: i32 = 26;
const NAMESPACE_EXISTS: i32 = 48;

/// A connection (pool) to one MongoDB database.
pub struct MongoStore {
    client: Client,
    db: Database,
    /// The URI with its password hidden, for messages.
    uri: String,
    /// Scrubbed from every error text, whatever produced it.
    password: Option<String>,
}

impl MongoStore {
    /// Connects to `uri` and checks that the server answers. The database is
    /// `database` if given, else the URI's path (`mongodb://host/<database>`).
    pub async fn open(uri: &str, database: Option<&str>) -> Result<Self> {
        let shown = redact_uri(uri);
        let password = password_of(uri);
        let bad_uri = |message: String| StoreError::BadUri { uri: shown.clone(), message: scrub(message, &password) };
        let mut options = ClientOptions::parse(uri).await.map_err(|e| bad_uri(e.to_string()))?;
        let name = database
            .map(str::to_string)
            .or_else(|| options.default_database.clone())
            .ok_or_else(|| bad_uri("names no database: add /<database> to the URI or pass --database".into()))?;
        options.app_name = Some("sql-aggregator".into());
        // Fail fast while a server is down; callers retry with backoff and report.
        // (unless the URI sets its own timeouts).
        options.server_selection_timeout.get_or_insert(Duration::from_secs(5));
        options.connect_timeout.get_or_insert(Duration::from_secs(5));
        let client = Client::with_options(options).map_err(|e| bad_uri(e.to_string()))?;
        let store = MongoStore { db: client.database(&name), client, uri: shown, password };
        store.db.run_command(doc! {"ping": 1}).await.map_err(|e| match e.kind.as_ref() {
            // Waiting does not fix credentials: fail at once, as a user error.
            mongodb::error::ErrorKind::Authentication { .. } => {
                StoreError::Refused { uri: store.uri.clone(), message: scrub(e.to_string(), &store.password) }
            }
            _ => store.error(e),
        })?;
        for (collection, keys) in [
            (BAD_RECORDS_TABLE, doc! {"pipeline": 1}),
            (LATE_RECORDS_TABLE, doc! {"pipeline": 1}),
            (ALERTS_TABLE, doc! {"at": -1}),
            (HEALTH_TABLE, doc! {"resolution_seconds": 1, "pipeline": 1, "at": 1}),
        ] {
            store.create_index(collection, keys).await?;
        }
        Ok(store)
    }

    /// The database written.
    pub fn database(&self) -> &Database {
        &self.db
    }

    fn error(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Mongo { uri: self.uri.clone(), message: scrub(e.to_string(), &self.password) }
    }

    fn collection(&self, name: &str) -> Collection<Document> {
        self.db.collection(name)
    }

    async fn create_index(&self, collection: &str, keys: Document) -> Result<()> {
        let index = IndexModel::builder().keys(keys).build();
        self.collection(collection).create_index(index).await.map_err(|e| self.error(e))?;
        Ok(())
    }

    /// Runs a write command and fails on the write errors it reports (the server
    /// answers `ok: 1` with `writeErrors` for unordered writes that partly failed).
    async fn write_command(&self, command: Document) -> Result<()> {
        let reply = self.db.run_command(command).await.map_err(|e| self.error(e))?;
        if let Ok(errors) = reply.get_array("writeErrors")
            && let Some(first) = errors.first()
        {
            return Err(self.error(format!("{} write error(s), the first: {first}", errors.len())));
        }
        if let Ok(error) = reply.get_document("writeConcernError") {
            return Err(self.error(format!("write concern error: {error}")));
        }
        Ok(())
    }

    /// Unordered bulk upserts: each `(filter id, document)` replaces the document.
    /// Several commands are sent at once ([`CONCURRENT_COMMANDS`]): the server applies
    /// one while the next are on the wire. So that the order in which they land cannot
    /// matter, an `_id` given twice keeps only its last document.
    async fn upsert_all(&self, collection: &str, documents: Vec<(Bson, Document, usize)>) -> Result<()> {
        let mut seen = std::collections::HashSet::new();
        let mut last_first: Vec<(Bson, Document, usize)> =
            documents.into_iter().rev().filter(|(id, _, _)| seen.insert(id.to_string())).collect();
        last_first.reverse();
        let mut commands = Vec::new();
        let (mut updates, mut bytes) = (Vec::new(), 0);
        let mut documents = last_first.into_iter().peekable();
        while let Some((id, document, size)) = documents.next() {
            updates.push(Bson::Document(doc! {"q": {"_id": id}, "u": document, "upsert": true}));
            bytes += size;
            if updates.len() == BULK_BATCH || bytes >= BULK_BYTES || documents.peek().is_none() {
                let batch = std::mem::take(&mut updates);
                commands.push(doc! {"update": collection, "updates": batch, "ordered": false});
                bytes = 0;
            }
        }
        futures::stream::iter(commands.into_iter().map(|command| self.write_command(command)))
            .buffer_unordered(CONCURRENT_COMMANDS)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    async fn schema(&self, table: &str) -> Result<Option<Vec<ResultColumn>>> {
        let found =
            self.collection(SCHEMAS_COLLECTION).find_one(doc! {"_id": table}).await.map_err(|e| self.error(e))?;
        let Some(found) = found else { return Ok(None) };
        let columns = found.get("columns").cloned().unwrap_or(Bson::Array(Vec::new()));
        bson::from_bson(columns).map(Some).map_err(|e| self.error(format!("{SCHEMAS_COLLECTION} of {table}: {e}")))
    }

    async fn set_schema(&self, table: &str, columns: &[ResultColumn]) -> Result<()> {
        let columns = bson::to_bson(columns).map_err(|e| self.error(e))?;
        self.collection(SCHEMAS_COLLECTION)
            .replace_one(doc! {"_id": table}, doc! {"_id": table, "columns": columns})
            .upsert(true)
            .await
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    /// Writes `value` as the document `_id` of `collection`, replacing any before it.
    async fn replace_by_id(&self, collection: &str, id: impl Into<Bson>, value: &impl serde::Serialize) -> Result<()> {
        let id = id.into();
        let mut document = bson::to_document(value).map_err(|e| self.error(e))?;
        document.insert("_id", id.clone());
        self.collection(collection)
            .replace_one(doc! {"_id": id}, document)
            .upsert(true)
            .await
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    /// Every document of `collection` in `sort` order, read as `T`.
    async fn all_as<T: serde::de::DeserializeOwned>(&self, collection: &str, sort: Document) -> Result<Vec<T>> {
        self.find_all(collection, doc! {}, sort, 0, u64::MAX)
            .await?
            .into_iter()
            .map(|d| bson::from_document(d).map_err(|e| self.error(format!("{collection}: {e}"))))
            .collect()
    }

    /// The documents matching `filter`, sorted, `limit` of them (all: `u64::MAX`) from `skip`.
    async fn find_all(
        &self,
        collection: &str,
        filter: Document,
        sort: Document,
        skip: u64,
        limit: u64,
    ) -> Result<Vec<Document>, ReadError> {
        let collection = self.collection(collection);
        let mut find = collection.find(filter).sort(sort).skip(skip);
        if let Ok(limit) = i64::try_from(limit) {
            find = find.limit(limit);
        }
        let mut cursor = find.await.map_err(|e| self.read_error(e))?;
        let mut out = Vec::new();
        while cursor.advance().await.map_err(|e| self.read_error(e))? {
            out.push(cursor.deserialize_current().map_err(|e| self.error(e))?);
        }
        Ok(out)
    }
}

/// `text` without the password (drivers and servers may quote a URI back).
fn scrub(text: String, password: &Option<String>) -> String {
    match password {
        Some(p) => text.replace(p.as_str(), "***"),
        None => text,
    }
}

/// Why a read failed: its cursor was killed (by a concurrent swap), or anything else.
enum ReadError {
    CursorKilled(StoreError),
    Store(StoreError),
}

impl From<StoreError> for ReadError {
    fn from(e: StoreError) -> Self {
        ReadError::Store(e)
    }
}

impl From<ReadError> for StoreError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::CursorKilled(e) | ReadError::Store(e) => e,
        }
    }
}

impl MongoStore {
    async fn read_page_once(&self, table: &str, request: &PageRequest) -> Result<Option<Page>, ReadError> {
        let Some(columns) = self.columns(table).await? else { return Ok(None) };
        let mut conditions: Vec<Document> = Vec::new();
        if let Some(range) = request.window_filter(&columns) {
            conditions.push(doc! {format!("{}.start", range.column): {
                "$gte": bson::DateTime::from_millis(range.from.div_euclid(1000)),
                "$lt": bson::DateTime::from_millis(range.to.div_euclid(1000)),
            }});
        }
        for f in request.column_filters(&columns) {
            conditions.push(match &f.condition {
                FilterCondition::Contains(text) => doc! {&f.column: {"$regex": regex_literal(text), "$options": "i"}},
                FilterCondition::Compare(op, number) => {
                    let op = match op {
                        Comparison::Eq => "$eq",
                        Comparison::Ne => "$ne",
                        Comparison::Lt => "$lt",
                        Comparison::Le => "$lte",
                        Comparison::Gt => "$gt",
                        Comparison::Ge => "$gte",
                    };
                    doc! {&f.column: {op: *number}}
                }
            });
        }
        let filter = match conditions.len() {
            0 => doc! {},
            1 => conditions.pop().expect("one"),
            _ => doc! {"$and": conditions},
        };
        let direction = if request.descending { -1 } else { 1 };
        let mut sort = Document::new();
        if let Some(column) = request.sort_column(&columns) {
            // A window sorts by its start (indexed).
            let key = match column.column_type {
                ColumnType::Window => format!("{}.start", column.name),
                _ => column.name.clone(),
            };
            sort.insert(key, direction);
        }
        sort.insert("_id", direction);
        let total = match request.skip_total {
            true => None,
            false => {
                Some(self.collection(table).count_documents(filter.clone()).await.map_err(|e| self.read_error(e))?)
            }
        };
        let rows: Vec<ResultRow> = self
            .find_all(table, filter, sort, request.offset, request.limit)
            .await?
            .into_iter()
            .map(|d| ResultRow {
                id: match d.get("_id") {
                    Some(Bson::String(id)) => id.clone(),
                    Some(other) => other.to_string(),
                    None => String::new(),
                },
                values: columns.iter().map(|c| from_bson(d.get(&c.name), c.column_type)).collect(),
            })
            .collect();
        let total = total.unwrap_or(rows.len() as u64);
        Ok(Some(Page { columns, rows, total }))
    }

    fn read_error(&self, e: mongodb::error::Error) -> ReadError {
        // CursorNotFound, QueryPlanKilled, CursorKilled.
        if [43, 175, 237].iter().any(|&code| is_code(&e, code)) {
            ReadError::CursorKilled(self.error(e))
        } else {
            ReadError::Store(self.error(e))
        }
    }
}

/// `text` as a regular expression that matches exactly it.
fn regex_literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if r"\^$.|?*+()[]{}".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Whether the server answered with error `code`.
fn is_code(e: &mongodb::error::Error, code: i32) -> bool {
    matches!(e.kind.as_ref(), mongodb::error::ErrorKind::Command(c) if c.code == code)
}

/// A value as BSON.
fn to_bson(value: &Value) -> Bson {
    match value {
        Value::Null => Bson::Null,
        Value::Bool(v) => Bson::Boolean(*v),
        Value::Integer(v) => Bson::Int64(*v),
        Value::Real(v) => Bson::Double(*v),
        Value::Decimal(v) => v.parse().map_or_else(|_| Bson::String(v.clone()), Bson::Decimal128),
        Value::Text(v) => Bson::String(v.clone()),
        Value::Timestamp(micros) => Bson::DateTime(bson::DateTime::from_millis(micros.div_euclid(1000))),
        Value::Struct(fields) => Bson::Document(fields.iter().map(|(k, v)| (k.clone(), to_bson(v))).collect()),
        Value::List(items) => Bson::Array(items.iter().map(to_bson).collect()),
    }
}

/// A stored value read back as the column's type. Inside JSON columns timestamps
/// are text and decimals numbers, as in SQLite's JSON text.
fn from_bson(stored: Option<&Bson>, column_type: ColumnType) -> Value {
    let json = column_type == ColumnType::Json;
    let Some(stored) = stored else { return Value::Null };
    match stored {
        Bson::Null | Bson::Undefined => Value::Null,
        Bson::Boolean(v) => Value::Bool(*v),
        Bson::Int32(v) => Value::Integer(i64::from(*v)),
        Bson::Int64(v) => Value::Integer(*v),
        Bson::Double(v) => Value::Real(*v),
        Bson::Decimal128(v) if json => v.to_string().parse().map_or(Value::Null, Value::Real),
        Bson::Decimal128(v) => Value::Decimal(v.to_string()),
        Bson::String(v) => Value::Text(v.clone()),
        Bson::DateTime(v) if json => Value::Text(iso_micros(v.timestamp_millis() * 1000)),
        Bson::DateTime(v) => Value::Timestamp(v.timestamp_millis() * 1000),
        Bson::Document(fields) => {
            Value::Struct(fields.iter().map(|(k, v)| (k.clone(), from_bson(Some(v), column_type))).collect())
        }
        Bson::Array(items) => Value::List(items.iter().map(|v| from_bson(Some(v), column_type)).collect()),
        other => Value::Text(other.to_string()),
    }
}

/// Rough size of a value in BSON, to cut bulk commands.
fn approx_size(value: &Value) -> usize {
    match value {
        Value::Text(v) | Value::Decimal(v) => v.len() + 8,
        Value::Struct(fields) => fields.iter().map(|(k, v)| k.len() + approx_size(v)).sum::<usize>() + 8,
        Value::List(items) => items.iter().map(approx_size).sum::<usize>() + 8,
        _ => 10,
    }
}

fn row_document(row: &ResultRow, columns: &[ResultColumn]) -> (Bson, Document, usize) {
    let mut document = Document::new();
    document.insert("_id", row.id.as_str());
    let mut size = row.id.len() + 16;
    for (column, value) in columns.iter().zip(&row.values) {
        document.insert(column.name.as_str(), to_bson(value));
        size += column.name.len() + approx_size(value);
    }
    (Bson::String(row.id.clone()), document, size)
}

fn rejected_document(pipeline: &str, r: &RejectedRecord) -> (Bson, Document, usize) {
    let id = Bson::Document(doc! {"pipeline": pipeline, "source_offset": &r.source_offset});
    let document = doc! {
        "_id": id.clone(), "pipeline": pipeline, "source_offset": &r.source_offset, "raw": &r.raw, "reason": &r.reason,
    };
    (id, document, r.raw.len() + r.reason.len() + r.source_offset.len() + 64)
}

#[async_trait::async_trait]
impl Store for MongoStore {
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
        let existing = self.schema(table).await?;
        let other_columns = existing
            .is_some_and(|old| old.len() != columns.len() || old.iter().zip(columns).any(|(a, b)| a.name != b.name));
        if fresh || other_columns {
            match self.collection(table).drop().await {
                Err(e) if !is_code(&e, NAMESPACE_NOT_FOUND) => return Err(self.error(e)),
                _ => {}
            }
        }
        // Create it now, so that an empty result is an existing, empty collection.
        match self.db.create_collection(table).await {
            Err(e) if !is_code(&e, NAMESPACE_EXISTS) => return Err(self.error(e)),
            _ => {}
        }
        for column in columns.iter().filter(|c| c.column_type == ColumnType::Window) {
            self.create_index(table, doc! {format!("{}.start", column.name): 1}).await?;
        }
        self.set_schema(table, columns).await?;
        if fresh {
            for collection in [BAD_RECORDS_TABLE, LATE_RECORDS_TABLE] {
                self.collection(collection)
                    .delete_many(doc! {"pipeline": pipeline})
                    .await
                    .map_err(|e| self.error(e))?;
            }
        }
        Ok(())
    }

    async fn swap_in(&self, shadow: &str, table: &str) -> Result<()> {
        let name = self.db.name();
        let rename = doc! {
            "renameCollection": format!("{name}.{shadow}"), "to": format!("{name}.{table}"), "dropTarget": true,
        };
        self.client.database("admin").run_command(rename).await.map_err(|e| self.error(e))?;
        if let Some(columns) = self.schema(shadow).await? {
            self.set_schema(table, &columns).await?;
        }
        self.collection(SCHEMAS_COLLECTION).delete_one(doc! {"_id": shadow}).await.map_err(|e| self.error(e))?;
        Ok(())
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
        let rows = delta.upserts.iter().map(|row| row_document(row, columns)).collect();
        self.upsert_all(table, rows).await?;
        for ids in delta.deletes.chunks(BULK_BATCH) {
            let deletes = vec![doc! {"q": {"_id": {"$in": ids}}, "limit": 0}];
            self.write_command(doc! {"delete": table, "deletes": deletes, "ordered": false}).await?;
        }
        for (records, collection) in [(bad, BAD_RECORDS_TABLE), (late, LATE_RECORDS_TABLE)] {
            let documents = records.iter().map(|r| rejected_document(&status.name, r)).collect();
            self.upsert_all(collection, documents).await?;
        }
        self.write_status(status).await
    }

    async fn write_status(&self, status: &PipelineStatus) -> Result<()> {
        self.replace_by_id(STATUS_TABLE, status.name.as_str(), status).await
    }

    async fn record_alert(&self, transition: &AlertTransition) -> Result<()> {
        let document = bson::to_document(transition).map_err(|e| self.error(e))?;
        self.collection(ALERTS_TABLE).insert_one(document).await.map_err(|e| self.error(e))?;
        Ok(())
    }

    async fn write_qlik_status(&self, status: &QlikTargetStatus) -> Result<()> {
        let id = doc! {"pipeline": &status.pipeline, "target": &status.target};
        self.replace_by_id(QLIK_TARGETS_TABLE, id, status).await
    }

    async fn has_table(&self, table: &str) -> Result<bool> {
        let names = self.db.list_collection_names().filter(doc! {"name": table}).await.map_err(|e| self.error(e))?;
        Ok(!names.is_empty())
    }

    async fn columns(&self, table: &str) -> Result<Option<Vec<ResultColumn>>> {
        if !self.has_table(table).await? {
            return Ok(None);
        }
        Ok(Some(self.schema(table).await?.unwrap_or_default()))
    }

    async fn read_page(&self, table: &str, request: &PageRequest) -> Result<Option<Page>> {
        // A swap (renameCollection, dropTarget) during a read that spans several
        // batches kills its cursor: the read starts over, on the new collection.
        let mut attempts = 0;
        loop {
            match self.read_page_once(table, request).await {
                Err(ReadError::CursorKilled(_)) if attempts < 5 => attempts += 1,
                other => return other.map_err(StoreError::from),
            }
        }
    }

    async fn window_bounds(&self, table: &str, column: &str) -> Result<Option<(i64, i64)>> {
        let start = format!("{column}.start");
        let mut bounds = Vec::new();
        for direction in [1, -1] {
            let filter = doc! {&start: {"$type": "date"}};
            let found = self.find_all(table, filter, doc! {&start: direction}, 0, 1).await?;
            let time = found.first().and_then(|d| d.get_document(column).ok()?.get_datetime("start").ok().copied());
            bounds.push(time.map(|t| t.timestamp_millis() * 1000));
        }
        Ok(bounds[0].zip(bounds[1]))
    }

    async fn statuses(&self) -> Result<Vec<PipelineStatus>> {
        self.find_all(STATUS_TABLE, doc! {}, doc! {"_id": 1}, 0, u64::MAX)
            .await?
            .into_iter()
            .map(|d| bson::from_document(d).map_err(|e| self.error(format!("{STATUS_TABLE}: {e}"))))
            .collect()
    }

    async fn qlik_statuses(&self) -> Result<Vec<QlikTargetStatus>> {
        self.all_as(QLIK_TARGETS_TABLE, doc! {"_id.pipeline": 1, "_id.target": 1}).await
    }

    async fn rejected_records(&self, pipeline: &str, late: bool) -> Result<Vec<RejectedRecord>> {
        let collection = if late { LATE_RECORDS_TABLE } else { BAD_RECORDS_TABLE };
        let text = |d: &Document, key: &str| d.get_str(key).unwrap_or_default().to_string();
        let mut records: Vec<RejectedRecord> = self
            .find_all(collection, doc! {"pipeline": pipeline}, doc! {}, 0, u64::MAX)
            .await?
            .iter()
            .map(|d| RejectedRecord {
                source_offset: text(d, "source_offset"),
                raw: text(d, "raw"),
                reason: text(d, "reason"),
            })
            .collect();
        // Ordered here, not by the server: offsets compare by their line number.
        records.sort_by(|a, b| a.offset_order().cmp(&b.offset_order()));
        Ok(records)
    }

    async fn save_silence(&self, silence: &Silence) -> Result<()> {
        self.replace_by_id(SILENCES_TABLE, silence.id.as_str(), silence).await
    }

    async fn silences(&self) -> Result<Vec<Silence>> {
        self.all_as(SILENCES_TABLE, doc! {"created_at": -1, "_id": -1}).await
    }

    async fn write_health(&self, samples: &[HealthSample], keep: usize) -> Result<()> {
        let mut documents = Vec::new();
        for s in samples {
            let id = doc! {"pipeline": &s.pipeline, "resolution_seconds": s.resolution_seconds, "at": &s.at};
            let mut document = bson::to_document(s).map_err(|e| self.error(e))?;
            document.insert("_id", id.clone());
            documents.push((Bson::Document(id), document, 256));
        }
        self.upsert_all(HEALTH_TABLE, documents).await?;
        let series: std::collections::BTreeSet<(&str, u32)> =
            samples.iter().map(|s| (s.pipeline.as_str(), s.resolution_seconds)).collect();
        for (pipeline, resolution) in series {
            let series = doc! {"pipeline": pipeline, "resolution_seconds": resolution};
            // Everything older than the `keep`-th newest (none if there are fewer).
            let mut older = series.clone();
            if keep > 0 {
                let kept = self.find_all(HEALTH_TABLE, series, doc! {"at": -1}, keep as u64 - 1, 1).await?;
                let Some(oldest_kept) = kept.first().and_then(|d| d.get_str("at").ok()) else { continue };
                older.insert("at", doc! {"$lt": oldest_kept});
            }
            self.collection(HEALTH_TABLE).delete_many(older).await.map_err(|e| self.error(e))?;
        }
        Ok(())
    }

    async fn health(&self, resolution_seconds: u32) -> Result<Vec<HealthSample>> {
        let filter = doc! {"resolution_seconds": resolution_seconds};
        self.find_all(HEALTH_TABLE, filter, doc! {"pipeline": 1, "at": 1}, 0, u64::MAX)
            .await?
            .into_iter()
            .map(|d| bson::from_document(d).map_err(|e| self.error(format!("{HEALTH_TABLE}: {e}"))))
            .collect()
    }

    async fn alert_history(&self, limit: usize) -> Result<Vec<AlertTransition>> {
        self.find_all(ALERTS_TABLE, doc! {}, doc! {"at": -1, "_id": -1}, 0, limit as u64)
            .await?
            .into_iter()
            .map(|d| bson::from_document(d).map_err(|e| self.error(format!("{ALERTS_TABLE}: {e}"))))
            .collect()
    }
}

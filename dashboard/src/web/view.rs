//! What pages and the API share: reading a page of a result from the query string,
//! the default time range, values as text, the chart of a result, and the state of
//! the pipelines' Qlik targets.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use super::zone::Zone;
use store::{
    ColumnFilter, ColumnRole, ColumnType, Comparison, FilterCondition, PageRequest, PipelineStatus, QlikTargetStatus,
    ResultColumn, Store, StoreError, Value, WindowRange,
};

/// Rows per table page.
pub const PAGE_SIZE: u64 = 50;
/// Rows a CSV export holds at most.
pub const CSV_ROWS: u64 = 100_000;
/// Window starts a time chart draws, at most (the newest).
const CHART_POINTS: u64 = 2_000;
/// Bars in a chart of a keyed result.
const CHART_BARS: usize = 30;
/// The default time range: the last hour of event time present in the data.
const DEFAULT_RANGE_MICROS: i64 = 3_600_000_000;

/// The query string of a pipeline page and its API routes.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TableQuery {
    pub sort: Option<String>,
    pub desc: Option<bool>,
    /// 1-based.
    pub page: Option<u64>,
    /// Window starts from / to, ISO-8601 (`2026-01-01T00:05` or with seconds and zone; UTC if none).
    pub from: Option<String>,
    pub to: Option<String>,
    /// A range relative to the latest window in the data (`5m`, `15m`, `1h`, `6h`,
    /// `24h`, `all`): it follows the live edge; `from`/`to` are ignored with it.
    pub range: Option<String>,
    /// The value columns charted, comma-separated (a panel's `columns`); none: all.
    pub columns: Option<String>,
    /// Column filters (`where.<column>=<condition>`), as given: on a text column the
    /// text it contains (ignoring case), on a numeric one a number with an optional
    /// `=`, `!=`, `<`, `<=`, `>` or `>=` before it. Empty ones are left out.
    #[serde(skip)]
    pub filters: Vec<(String, String)>,
    /// The zone times are shown and typed in (see [`Zone`]).
    #[serde(skip)]
    pub zone: Zone,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for TableQuery {
    type Rejection = super::WebError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        let raw = parts.uri.query().unwrap_or_default();
        let mut query: TableQuery =
            serde_urlencoded::from_str(raw).map_err(|e| super::WebError::bad_request(format!("query string: {e}")))?;
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw).unwrap_or_default();
        query.filters = pairs
            .into_iter()
            .filter_map(|(key, value)| Some((key.strip_prefix("where.")?.to_string(), value.trim().to_string())))
            .filter(|(_, value)| !value.is_empty())
            .collect();
        query.zone = Zone::of_request(parts);
        Ok(query)
    }
}

impl TableQuery {
    /// The filters that mean something for `columns` (see [`TableQuery::filters`]).
    fn column_filters(&self, columns: &[ResultColumn]) -> Vec<ColumnFilter> {
        self.filters
            .iter()
            .filter_map(|(name, text)| {
                let column = columns.iter().find(|c| &c.name == name)?;
                let condition = match column.column_type {
                    ColumnType::Text => FilterCondition::Contains(text.clone()),
                    ColumnType::Integer | ColumnType::Real | ColumnType::Decimal => comparison(text)?,
                    _ => return None,
                };
                Some(ColumnFilter { column: name.clone(), condition })
            })
            .collect()
    }
}

/// A numeric condition: `12`, `=12`, `!=12`, `<12`, `<=12`, `>12`, `>=12` (spaces allowed).
fn comparison(text: &str) -> Option<FilterCondition> {
    let operators = [(">=", Comparison::Ge), ("<=", Comparison::Le), ("!=", Comparison::Ne), ("<>", Comparison::Ne)];
    let single = [(">", Comparison::Gt), ("<", Comparison::Lt), ("=", Comparison::Eq)];
    let (op, rest) = operators
        .iter()
        .chain(&single)
        .find_map(|(prefix, op)| text.strip_prefix(prefix).map(|rest| (*op, rest)))
        .unwrap_or((Comparison::Eq, text));
    let number: f64 = rest.trim().parse().ok()?;
    number.is_finite().then_some(FilterCondition::Compare(op, number))
}

/// The relative ranges offered, and their length (`None`: all of the data).
pub const RANGES: [(&str, Option<i64>); 6] = [
    ("5m", Some(300_000_000)),
    ("15m", Some(900_000_000)),
    ("1h", Some(3_600_000_000)),
    ("6h", Some(21_600_000_000)),
    ("24h", Some(86_400_000_000)),
    ("all", None),
];

/// A page of a result, ready to show.
#[derive(Debug, Clone, Serialize)]
pub struct ResultView {
    pub columns: Vec<ColumnView>,
    /// Each row's `_id`, then one text per column.
    pub rows: Vec<Vec<String>>,
    pub total: u64,
    pub page: u64,
    pub pages: u64,
    pub sort: Option<String>,
    pub desc: bool,
    /// The window column, for windowed results (the time filter applies to it).
    pub window: Option<String>,
    /// The time range shown, `YYYY-MM-DDTHH:MM:SS` in `zone` (empty without a window).
    pub from: String,
    pub to: String,
    /// The relative range shown (one of [`RANGES`]), if it is one: the default is the
    /// last hour.
    pub range: Option<String>,
    /// The column filters, as given (see [`TableQuery::filters`]).
    pub filters: Vec<(String, String)>,
    /// The zone of the times shown (an IANA name).
    pub zone: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct ColumnView {
    pub name: String,
    pub column_type: ColumnType,
}

impl ColumnView {
    /// What its filter box says, if the column can be filtered.
    pub fn filter_hint(&self) -> Option<&'static str> {
        match self.column_type {
            ColumnType::Text => Some("contains…"),
            ColumnType::Integer | ColumnType::Real | ColumnType::Decimal => Some("e.g. >10"),
            _ => None,
        }
    }
}

/// The charts of a result: one per value column, chosen from the result's shape.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Charts {
    pub charts: Vec<Chart>,
}

/// One chart: a value column over window start (`time`, a line per category), or
/// the largest values of a keyed result (`bar`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Chart {
    /// `time` or `bar`.
    pub kind: String,
    /// The value column drawn.
    pub value: String,
    pub x_label: String,
    /// Window starts in seconds since the epoch (`time`), or 0, 1, 2… (`bar`).
    pub x: Vec<f64>,
    /// The key of each bar (`bar`).
    pub labels: Vec<String>,
    pub series: Vec<Series>,
    /// The key columns a point adds up, when some point holds several rows.
    pub summed_over: Vec<String>,
    /// Alert thresholds on the value (drawn as lines; see the alert rules).
    pub thresholds: Vec<Threshold>,
    /// Transitions of the alerts on the value, at the time they happened (`time` charts).
    pub annotations: Vec<Annotation>,
}

/// An alert transition drawn on a chart.
#[derive(Debug, Clone, Serialize)]
pub struct Annotation {
    /// When it happened (the rule's evaluation), in seconds since the epoch.
    pub at: f64,
    /// The state it went to (its colour).
    pub to: String,
    pub text: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Threshold {
    pub rule: String,
    pub value: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Series {
    pub name: String,
    /// One per x; `null` where the category has no row.
    pub values: Vec<Option<f64>>,
}

/// What a chart makes of a result's columns. The aggregator writes each column's role
/// (key or value) with the result; the values are its numeric value columns, the
/// keys the others. For tables written without roles they are guessed: the values are
/// the numeric columns not named like an id (`…_id`). The category is the first text
/// key column, the time axis the first window column.
struct Shape<'a> {
    window: Option<&'a ResultColumn>,
    values: Vec<usize>,
    category: Option<usize>,
    /// The key columns (a point or a bar is one value of them).
    keys: Vec<usize>,
}

/// Value columns charted at most.
const MAX_CHARTS: usize = 6;

fn shape(columns: &[ResultColumn]) -> Shape<'_> {
    let numeric =
        |c: &ResultColumn| matches!(c.column_type, ColumnType::Integer | ColumnType::Real | ColumnType::Decimal);
    let known = columns.iter().any(|c| c.role.is_some());
    let is_value = |c: &ResultColumn| match known {
        true => c.role == Some(ColumnRole::Value) && numeric(c),
        false => numeric(c) && !c.name.ends_with("_id") && c.name != "id",
    };
    let is_key = |c: &ResultColumn| match known {
        true => c.role == Some(ColumnRole::Key),
        false => !is_value(c),
    };
    let keys: Vec<usize> = (0..columns.len()).filter(|&i| is_key(&columns[i])).collect();
    Shape {
        window: columns.iter().find(|c| c.column_type == ColumnType::Window),
        values: (0..columns.len()).filter(|&i| is_value(&columns[i])).take(MAX_CHARTS).collect(),
        category: keys.iter().copied().find(|&i| columns[i].column_type == ColumnType::Text),
        keys,
    }
}

/// A time from a query string: RFC 3339, or `YYYY-MM-DDTHH:MM[:SS]` in `zone`.
fn parse_time(text: &str, zone: Zone) -> Option<i64> {
    let text = text.trim();
    store::parse_iso_micros(text).or_else(|| {
        ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M"]
            .iter()
            .find_map(|f| chrono::NaiveDateTime::parse_from_str(text, f).ok())
            .and_then(|t| zone.micros_of_local(t))
    })
}

/// The window range of a request: the query's, else the last hour of event time in the data.
async fn window_range(
    store: &dyn Store,
    table: &str,
    window: &ResultColumn,
    query: &TableQuery,
) -> Result<Option<WindowRange>, StoreError> {
    let Some((earliest, latest)) = store.window_bounds(table, &window.name).await? else { return Ok(None) };
    // The whole minute after the latest window's start: it stays in the range when the
    // shown (whole-second) times are sent back by a sort link or the form.
    let minute = 60_000_000;
    let edge = (latest.div_euclid(minute) + 1) * minute;
    if let Some(name) = query.range.as_deref().and_then(|_| relative_range(query))
        && let Some((_, length)) = RANGES.iter().find(|(n, _)| *n == name)
    {
        let from = length.map_or(earliest.div_euclid(minute) * minute, |l| edge - l);
        return Ok(Some(WindowRange { column: window.name.clone(), from, to: edge }));
    }
    let parse = |text: &Option<String>| text.as_deref().and_then(|t| parse_time(t, query.zone));
    let to = parse(&query.to).unwrap_or(edge);
    let from = parse(&query.from).unwrap_or(to - DEFAULT_RANGE_MICROS);
    Ok(Some(WindowRange { column: window.name.clone(), from, to }))
}

/// The range as a condition on the rows: none for `all` (every row is in it, and
/// without a condition SQLite scans the table rather than walk the window index).
fn condition(range: Option<WindowRange>, query: &TableQuery) -> Option<WindowRange> {
    range.filter(|_| query.range.is_none() || relative_range(query) != Some("all"))
}

/// The relative range a query asks for: its `range`, or the last hour when it gives
/// no times.
fn relative_range(query: &TableQuery) -> Option<&'static str> {
    match &query.range {
        Some(r) => RANGES.iter().map(|(name, _)| *name).find(|name| name == r),
        None if query.from.is_none() && query.to.is_none() => Some("1h"),
        None => None,
    }
}

/// A value as the tables show it, times in UTC.
pub fn text(value: &Value) -> String {
    text_in(value, Zone::default())
}

/// A value as the tables show it, times in `zone`.
pub fn text_in(value: &Value, zone: Zone) -> String {
    match value {
        Value::Null => String::new(),
        Value::Bool(v) => v.to_string(),
        Value::Integer(v) => v.to_string(),
        Value::Real(v) => {
            let rounded = format!("{v:.4}");
            rounded.trim_end_matches('0').trim_end_matches('.').to_string()
        }
        Value::Decimal(v) | Value::Text(v) => v.clone(),
        Value::Timestamp(v) => zone.format(*v, ' '),
        Value::Struct(fields) if fields.len() == 2 && fields.iter().all(|(_, v)| matches!(v, Value::Timestamp(_))) => {
            // A window: `2026-01-01 00:05:00 – 00:10:00`.
            let start = text_in(&fields[0].1, zone);
            let end = text_in(&fields[1].1, zone);
            let same_day = start.get(..10) == end.get(..10);
            format!("{start} – {}", if same_day { &end[11..] } else { &end })
        }
        other => other.to_json().to_string(),
    }
}

/// One page of `table` (`page_size` rows) as the query asks, or `None` if there is no
/// such table.
pub async fn result_view(
    store: &dyn Store,
    table: &str,
    query: &TableQuery,
    page_size: u64,
) -> Result<Option<ResultView>, StoreError> {
    let Some(columns) = store.columns(table).await? else { return Ok(None) };
    let window = shape(&columns).window.cloned();
    let range = match &window {
        Some(w) => window_range(store, table, w, query).await?,
        None => None,
    };
    let page = query.page.unwrap_or(1).max(1);
    // Unless asked otherwise, a windowed result shows its latest windows first.
    let by_latest_window = query.sort.is_none() && window.is_some();
    let request = PageRequest {
        sort: query.sort.clone().or_else(|| window.as_ref().map(|w| w.name.clone())),
        descending: query.desc.unwrap_or(by_latest_window),
        offset: (page - 1) * page_size,
        limit: page_size,
        window_range: condition(range.clone(), query),
        filters: query.column_filters(&columns),
        skip_total: false,
    };
    let Some(result) = store.read_page(table, &request).await? else { return Ok(None) };
    Ok(Some(ResultView {
        columns: result
            .columns
            .iter()
            .map(|c| ColumnView { name: c.name.clone(), column_type: c.column_type })
            .collect(),
        rows: result
            .rows
            .iter()
            .map(|r| std::iter::once(r.id.clone()).chain(r.values.iter().map(|v| text_in(v, query.zone))).collect())
            .collect(),
        total: result.total,
        page,
        pages: result.total.div_ceil(page_size).max(1),
        sort: request.sort_column(&result.columns).map(|c| c.name.clone()),
        desc: request.descending,
        window: window.map(|w| w.name),
        from: range.as_ref().map(|r| query.zone.format(r.from, 'T')).unwrap_or_default(),
        to: range.as_ref().map(|r| query.zone.format(r.to, 'T')).unwrap_or_default(),
        zone: query.zone.name(),
        range: relative_range(query).map(str::to_string).filter(|_| range.is_some()),
        filters: query.filters.clone(),
    }))
}

/// The charts of `table` in the query's time range, chosen from the result's shape.
pub async fn charts(store: &dyn Store, table: &str, query: &TableQuery) -> Result<Option<Charts>, StoreError> {
    let Some(columns) = store.columns(table).await? else { return Ok(None) };
    let shape = shape(&columns);
    if shape.values.is_empty() {
        return Ok(Some(Charts::default()));
    }
    let charts = match shape.window {
        Some(window) => time_charts(store, table, query, &columns, &shape, window).await?,
        None => bar_charts(store, table, query, &columns, &shape).await?,
    };
    Ok(Some(Charts { charts }))
}

/// Per value column: its sum per window start and category, a line per category.
async fn time_charts(
    store: &dyn Store,
    table: &str,
    query: &TableQuery,
    columns: &[ResultColumn],
    shape: &Shape<'_>,
    window: &ResultColumn,
) -> Result<Vec<Chart>, StoreError> {
    let range = window_range(store, table, window, query).await?;
    let request = PageRequest {
        limit: CHART_POINTS,
        window_range: condition(range, query),
        filters: query.column_filters(columns),
        ..PageRequest::default()
    };
    // Summed in the store (grouped where the rows are, for SQLite).
    let category = shape.category.map(|c| columns[c].name.as_str());
    let value_names: Vec<String> = shape.values.iter().map(|&v| columns[v].name.clone()).collect();
    let sums = store.window_sums(table, &window.name, category, &value_names, &request).await?.unwrap_or_default();
    let w = columns.iter().position(|c| c.name == window.name).unwrap_or(0);
    // The other key columns: a point adds their rows up (the `_id` if the key is its own).
    let mut others: Vec<String> = (shape.keys.iter().copied())
        .filter(|&i| i != w && Some(i) != shape.category)
        .map(|i| columns[i].name.clone())
        .collect();
    if others.is_empty() {
        others.push("_id".to_string());
    }
    let mut charts = Vec::new();
    for (k, value_name) in value_names.into_iter().enumerate() {
        // window start → category → sum of the value (where the rows have one).
        let mut points: BTreeMap<i64, BTreeMap<String, f64>> = BTreeMap::new();
        let mut summed = false;
        for sum in &sums {
            let Some(v) = sum.sums[k] else { continue };
            let category = sum.category.clone().unwrap_or_else(|| value_name.clone());
            points.entry(sum.start).or_default().insert(category, v);
            summed |= sum.rows > 1;
        }
        let categories: std::collections::BTreeSet<&String> = points.values().flat_map(|m| m.keys()).collect();
        let series = categories
            .iter()
            .map(|&name| Series { name: name.clone(), values: points.values().map(|m| m.get(name).copied()).collect() })
            .collect();
        charts.push(Chart {
            kind: "time".into(),
            value: value_name,
            x_label: format!("{}.start ({})", window.name, query.zone.name()),
            x: points.keys().map(|&t| t as f64 / 1e6).collect(),
            labels: Vec::new(),
            series,
            summed_over: if summed { others.clone() } else { Vec::new() },
            thresholds: Vec::new(),
            annotations: Vec::new(),
        });
    }
    Ok(charts)
}

/// Per value column: its largest values, a bar per row (labelled by its key columns).
async fn bar_charts(
    store: &dyn Store,
    table: &str,
    query: &TableQuery,
    columns: &[ResultColumn],
    shape: &Shape<'_>,
) -> Result<Vec<Chart>, StoreError> {
    let key_names: Vec<&str> = shape.keys.iter().map(|&i| columns[i].name.as_str()).collect();
    let key_names = if key_names.is_empty() { "_id".to_string() } else { key_names.join(" · ") };
    let mut charts = Vec::new();
    for &value in &shape.values {
        let request = PageRequest {
            sort: Some(columns[value].name.clone()),
            descending: true,
            limit: CHART_BARS as u64,
            filters: query.column_filters(columns),
            ..PageRequest::default()
        };
        let rows = store.read_page(table, &request).await?.map(|p| p.rows).unwrap_or_default();
        if rows.len() < 2 {
            continue; // one row is a tile, not a chart
        }
        let label = |row: &store::ResultRow| {
            let keys: Vec<String> =
                (shape.keys.iter()).map(|&i| text_in(&row.values[i], query.zone)).filter(|k| !k.is_empty()).collect();
            if keys.is_empty() { row.id.clone() } else { keys.join(" · ") }
        };
        charts.push(Chart {
            kind: "bar".into(),
            value: columns[value].name.clone(),
            x_label: key_names.clone(),
            x: (0..rows.len()).map(|i| i as f64).collect(),
            labels: rows.iter().map(label).collect(),
            series: vec![Series {
                name: columns[value].name.clone(),
                values: rows.iter().map(|r| r.values[value].number()).collect(),
            }],
            summed_over: Vec::new(),
            thresholds: Vec::new(),
            annotations: Vec::new(),
        });
    }
    Ok(charts)
}

/// Every pipeline's Qlik targets, as the store has them.
#[derive(Debug, Clone, Default)]
pub struct QlikTargets {
    by_pipeline: BTreeMap<String, Vec<QlikTargetStatus>>,
    /// Why the store could not give them (the pages then show none).
    pub error: Option<String>,
}

impl QlikTargets {
    /// Reads every Qlik target's state. A store error does not fail the page: it is
    /// logged, and the pages show no Qlik targets.
    pub async fn read(store: &dyn Store) -> QlikTargets {
        QlikTargets::from_result(store.qlik_statuses().await)
    }

    fn from_result(result: Result<Vec<QlikTargetStatus>, StoreError>) -> QlikTargets {
        match result {
            Ok(all) => {
                let mut by_pipeline: BTreeMap<String, Vec<QlikTargetStatus>> = BTreeMap::new();
                for target in all {
                    by_pipeline.entry(target.pipeline.clone()).or_default().push(target);
                }
                QlikTargets { by_pipeline, error: None }
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not read the Qlik target states; showing the pages without them");
                QlikTargets { by_pipeline: BTreeMap::new(), error: Some(e.to_string()) }
            }
        }
    }

    /// The targets of `pipeline`, by target.
    pub fn of(&self, pipeline: &str) -> &[QlikTargetStatus] {
        self.by_pipeline.get(pipeline).map_or(&[], Vec::as_slice)
    }

    /// The targets of `pipeline`, taken out.
    pub fn take(&mut self, pipeline: &str) -> Vec<QlikTargetStatus> {
        self.by_pipeline.remove(pipeline).unwrap_or_default()
    }
}

/// A pipeline as the overview and `/api/pipelines` show it: its status, its Qlik
/// targets and their summary.
#[derive(Debug, Clone, Serialize)]
pub struct PipelineItem {
    #[serde(flatten)]
    pub status: PipelineStatus,
    pub qlik: Vec<QlikTargetStatus>,
    /// `None` without Qlik targets.
    pub qlik_summary: Option<QlikSummary>,
}

impl PipelineItem {
    pub fn new(status: PipelineStatus, qlik: &mut QlikTargets) -> PipelineItem {
        let qlik = qlik.take(&status.name);
        PipelineItem { qlik_summary: QlikSummary::of(&qlik), status, qlik }
    }
}

/// The compact Qlik indicator of a pipeline: `Qlik: up to date`, `Qlik: 2 targets, 1 error`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QlikSummary {
    pub targets: usize,
    /// The worst of the targets' states (its colour is the indicator's).
    pub state: String,
    pub text: String,
}

/// How bad a Qlik target state is, worst first: `error`, then the states that wait
/// or work (unknown ones after them), then `up_to_date`.
fn qlik_rank(state: &str) -> u8 {
    match state {
        "error" => 0,
        "connecting" => 1,
        "reloading" => 2,
        "pending" => 3,
        "up_to_date" => 5,
        _ => 4,
    }
}

impl QlikSummary {
    /// The summary of a pipeline's targets; `None` if it has none.
    pub fn of(targets: &[QlikTargetStatus]) -> Option<QlikSummary> {
        let mut states: Vec<&str> = targets.iter().map(|t| t.state.as_str()).collect();
        // Worst first (unknown states by name).
        states.sort_by_key(|state| (qlik_rank(state), *state));
        let worst = (*states.first()?).to_string();
        let human = |state: &str| state.replace('_', " ");
        let text = if targets.len() == 1 {
            format!("Qlik: {}", human(&worst))
        } else {
            let mut counts: Vec<(&str, usize)> = Vec::new();
            for state in states.iter().filter(|s| **s != "up_to_date") {
                match counts.last_mut() {
                    Some((last, n)) if last == state => *n += 1,
                    _ => counts.push((state, 1)),
                }
            }
            let detail = if counts.is_empty() {
                "up to date".to_string()
            } else {
                let counted = counts.iter().map(|(state, n)| {
                    let plural = if *state == "error" && *n > 1 { "s" } else { "" };
                    format!("{n} {}{plural}", human(state))
                });
                counted.collect::<Vec<_>>().join(", ")
            };
            format!("Qlik: {} targets, {detail}", targets.len())
        };
        Some(QlikSummary { targets: targets.len(), state: worst, text })
    }
}

/// Seconds with one or two decimals: `1.25`, `1.5`, `3.0`.
pub fn seconds_text(seconds: f64) -> String {
    let text = format!("{seconds:.2}");
    match text.strip_suffix('0') {
        Some(shorter) => shorter.to_string(),
        None => text,
    }
}

/// A target's last successful reload: `<time> · 1.25 s · 120 rows` (empty before the first).
pub fn last_reload_text(target: &QlikTargetStatus) -> String {
    let Some(at) = &target.last_reload_at else { return String::new() };
    let mut parts = vec![at.clone()];
    if let Some(seconds) = target.last_reload_seconds {
        parts.push(format!("{} s", seconds_text(seconds)));
    }
    parts.push(format!("{} rows", target.last_reload_rows));
    parts.join(" · ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(name: &str, state: &str) -> QlikTargetStatus {
        QlikTargetStatus {
            pipeline: "p".into(),
            target: format!("ws://qlik:9076/app/{name}"),
            state: state.into(),
            ..QlikTargetStatus::default()
        }
    }

    fn summary(states: &[&str]) -> (String, String) {
        let targets: Vec<_> = states.iter().enumerate().map(|(i, s)| target(&i.to_string(), s)).collect();
        let summary = QlikSummary::of(&targets).unwrap();
        assert_eq!(summary.targets, states.len());
        (summary.state, summary.text)
    }

    #[test]
    fn qlik_summary_names_the_worst_state_and_counts_the_others() {
        assert_eq!(QlikSummary::of(&[]), None);
        assert_eq!(summary(&["up_to_date"]), ("up_to_date".into(), "Qlik: up to date".into()));
        assert_eq!(summary(&["reloading"]), ("reloading".into(), "Qlik: reloading".into()));
        assert_eq!(summary(&["up_to_date", "up_to_date"]), ("up_to_date".into(), "Qlik: 2 targets, up to date".into()));
        assert_eq!(summary(&["up_to_date", "error"]), ("error".into(), "Qlik: 2 targets, 1 error".into()));
        assert_eq!(
            summary(&["pending", "error", "up_to_date", "error", "connecting", "pending"]),
            ("error".into(), "Qlik: 6 targets, 2 errors, 1 connecting, 2 pending".into())
        );
        assert_eq!(summary(&["up_to_date", "pending", "reloading"]).0, "reloading");
        assert_eq!(summary(&["up_to_date", "paused"]), ("paused".into(), "Qlik: 2 targets, 1 paused".into()));
    }

    #[test]
    fn reload_times_have_one_or_two_decimals() {
        assert_eq!(seconds_text(1.25), "1.25");
        assert_eq!(seconds_text(1.5), "1.5");
        assert_eq!(seconds_text(3.0), "3.0");
        assert_eq!(seconds_text(0.123), "0.12");
        let mut t = target("a", "up_to_date");
        assert_eq!(last_reload_text(&t), "", "no reload yet");
        t.last_reload_at = Some("2026-01-01T00:05:00.000000Z".into());
        t.last_reload_seconds = Some(2.5);
        t.last_reload_rows = 120;
        assert_eq!(last_reload_text(&t), "2026-01-01T00:05:00.000000Z · 2.5 s · 120 rows");
    }

    #[test]
    fn qlik_targets_group_by_pipeline_and_a_store_error_gives_none() {
        let mut other = target("b", "error");
        other.pipeline = "q".into();
        let targets = QlikTargets::from_result(Ok(vec![target("a", "up_to_date"), target("c", "pending"), other]));
        assert_eq!(targets.of("p").len(), 2);
        assert_eq!(targets.of("q")[0].target, "ws://qlik:9076/app/b");
        assert!(targets.of("r").is_empty() && targets.error.is_none());
        let error = StoreError::Mongo { uri: "mongodb://db/x".into(), message: "no such collection".into() };
        let targets = QlikTargets::from_result(Err(error));
        assert!(targets.of("p").is_empty());
        assert_eq!(targets.error.as_deref(), Some("store mongodb://db/x: no such collection"));
    }
}

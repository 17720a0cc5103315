//! The HTML pages. Templates are in `templates/`; askama escapes every value.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::Html;
use store::{AlertTransition, PageRequest, PipelineStatus, QlikTargetStatus, RejectedRecord, Silence};

use crate::alerts::{AlertState, ContactPoint, Instance, Policy, Rule};

use super::WebError;
use super::view::{self, PipelineItem, QlikTargets, RANGES, ResultView, TableQuery, Zone};
use crate::AppState;

/// What a pipeline's row on the overview shows of its result at a glance.
#[derive(Debug, Default)]
pub struct Main {
    /// A single-row result (such as all-time averages): its values, as a tile.
    pub values: Vec<(String, String)>,
    /// A result of several rows: its first chart, drawn by the page from the chart API
    /// (a line of its first value column summed per window, or its largest values).
    pub chart: bool,
}

#[derive(Template)]
#[template(path = "overview.html")]
struct Overview {
    /// Each pipeline's status and Qlik targets.
    pipelines: Vec<PipelineItem>,
    /// Each pipeline's result at a glance (as `pipelines`, in order).
    mains: Vec<Main>,
    firing: Vec<Instance>,
    /// The span of the health charts: `1h` or `24h`.
    health_range: &'static str,
    refresh_seconds: f64,
    zone: &'static str,
}

#[derive(Debug, Default, serde::Deserialize)]
pub struct OverviewQuery {
    /// The span of the health charts: `24h`, else the last hour.
    pub health: Option<String>,
}

pub async fn overview(
    State(state): State<AppState>,
    zone: Zone,
    Query(query): Query<OverviewQuery>,
) -> Result<Html<String>, WebError> {
    let statuses = state.store.statuses().await?;
    let mut mains = Vec::new();
    for status in &statuses {
        // Two rows at most, uncounted: a result of millions costs no scan here.
        let two = PageRequest { limit: 2, skip_total: true, ..PageRequest::default() };
        let main = match state.store.read_page(status.table(), &two).await? {
            Some(page) if page.rows.len() == 1 => {
                let values = page.columns.iter().zip(&page.rows[0].values);
                Main { values: values.map(|(c, v)| (c.name.clone(), view::text_in(v, zone))).collect(), chart: false }
            }
            // None yet, or several: the chart API says what to draw (nothing while empty).
            Some(_) => Main { values: Vec::new(), chart: true },
            None => Main::default(),
        };
        mains.push(main);
    }
    let firing = state.alerts.instances().into_iter().filter(|i| i.state == AlertState::Firing).collect();
    let mut qlik = QlikTargets::read(state.store.as_ref()).await;
    let pipelines = statuses.into_iter().map(|s| PipelineItem::new(s, &mut qlik)).collect();
    let health_range = if query.health.as_deref() == Some("24h") { "24h" } else { "1h" };
    let page =
        Overview { pipelines, mains, firing, health_range, refresh_seconds: state.refresh_seconds, zone: zone.name() };
    Ok(Html(page.render()?))
}

/// The attributes of the time range's inputs: 24-hour text in the zone the label
/// names (a `datetime-local` input shows the browser's 12- or 24-hour format instead).
const TIME_INPUT: &str = r#"pattern="\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2})?" placeholder="YYYY-MM-DDTHH:MM:SS" size="19" title="24-hour: YYYY-MM-DDTHH:MM:SS""#;

/// What the watermark on a pipeline page means, and why it trails the events.
const WATERMARK_HELP: &str = "The watermark is the latest event time seen (the lowest over the source's partitions) \
minus the pipeline's allowed delay for out-of-order events: it trails the newest events by that delay on purpose. \
A window is final once the watermark passes its end; an event for a window that is already final is late and is \
counted, not added. A partition idle for the idle timeout stops holding it back.";

#[derive(Template)]
#[template(path = "pipeline.html")]
struct PipelinePage {
    status: PipelineStatus,
    /// `None` until the pipeline has written a result (a pipeline that failed at
    /// start, say): the page still shows its state, error and SQL.
    result: Option<ResultView>,
    /// The pipeline's Qlik targets (none when the store could not read them).
    qlik: Vec<QlikTargetStatus>,
    sql: Option<String>,
    refresh_seconds: f64,
    zone: &'static str,
}

impl PipelinePage {
    /// The link that sorts by `column` (toggling the direction if it is already the sort).
    fn sort_link(&self, result: &ResultView, column: &str) -> String {
        let desc = result.sort.as_deref() == Some(column) && !result.desc;
        format!("?{}", view_query(result, Some(column), desc, Some(1), result.range.as_deref()))
    }

    fn page_link(&self, result: &ResultView, page: u64) -> String {
        format!("?{}", view_query(result, result.sort.as_deref(), result.desc, Some(page), result.range.as_deref()))
    }

    /// The CSV export of what the table shows: its range and sort, every page.
    fn csv_link(&self, result: &ResultView) -> String {
        let query = view_query(result, result.sort.as_deref(), result.desc, None, result.range.as_deref());
        format!("/api/pipelines/{}/rows.csv?{query}", encode(&self.status.name))
    }

    /// The link that shows the relative range `range` (keeping the sort).
    fn range_link(&self, result: &ResultView, range: &str) -> String {
        format!("?{}", view_query(result, result.sort.as_deref(), result.desc, Some(1), Some(range)))
    }

    /// The page without its filters (sort and range kept).
    fn unfiltered_link(&self, result: &ResultView) -> String {
        let unfiltered = ResultView { filters: Vec::new(), rows: Vec::new(), ..result.clone() };
        format!("?{}", view_query(&unfiltered, result.sort.as_deref(), result.desc, Some(1), result.range.as_deref()))
    }

    /// The filter given for `column`, if any.
    fn filter_of<'a>(&self, result: &'a ResultView, column: &str) -> &'a str {
        result.filters.iter().find(|(c, _)| c == column).map_or("", |(_, text)| text.as_str())
    }

    fn arrow(&self, result: &ResultView, column: &str) -> &'static str {
        match (result.sort.as_deref() == Some(column), result.desc) {
            (true, true) => " ▼",
            (true, false) => " ▲",
            _ => "",
        }
    }
}

/// The query string of a page (if given), sort and time range (the relative `range`,
/// else `result`'s times) of `result`.
fn view_query(result: &ResultView, sort: Option<&str>, desc: bool, page: Option<u64>, range: Option<&str>) -> String {
    let mut query: Vec<String> = page.map(|page| format!("page={page}")).into_iter().collect();
    if let Some(sort) = sort {
        query.push(format!("sort={}", encode(sort)));
        query.push(format!("desc={desc}"));
    }
    match (&result.window, range) {
        (None, _) => {}
        (Some(_), Some(range)) => query.push(format!("range={}", encode(range))),
        (Some(_), None) => {
            query.push(format!("from={}", encode(&result.from)));
            query.push(format!("to={}", encode(&result.to)));
        }
    }
    for (column, condition) in &result.filters {
        query.push(format!("where.{}={}", encode(column), encode(condition)));
    }
    query.join("&")
}

/// Percent-encodes a query-string value.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b':' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub async fn pipeline(
    State(state): State<AppState>,
    Path(name): Path<String>,
    query: TableQuery,
) -> Result<Html<String>, WebError> {
    let status = state.store.status(&name).await?.ok_or_else(|| WebError::not_found(format!("pipeline {name}")))?;
    let result = view::result_view(state.store.as_ref(), status.table(), &query, view::PAGE_SIZE).await?;
    // The SQL as the aggregator read it (older stores: the file, if this machine can read it).
    let sql = status.sql_text.clone().or_else(|| std::fs::read_to_string(&status.sql_file).ok());
    let qlik = QlikTargets::read(state.store.as_ref()).await.take(&name);
    let zone = query.zone.name();
    Ok(Html(PipelinePage { status, result, qlik, sql, refresh_seconds: state.refresh_seconds, zone }.render()?))
}

#[derive(Template)]
#[template(path = "bad_records.html")]
struct BadRecordsPage {
    name: String,
    records: Vec<RejectedRecord>,
    total: usize,
    refresh_seconds: f64,
    zone: &'static str,
}

/// Bad records shown on a page, the latest (by offset) first.
const BAD_RECORDS_SHOWN: usize = 200;

pub async fn bad_records(
    State(state): State<AppState>,
    Path(name): Path<String>,
    zone: Zone,
) -> Result<Html<String>, WebError> {
    let mut records = state.store.rejected_records(&name, false).await?;
    let total = records.len();
    records.reverse();
    records.truncate(BAD_RECORDS_SHOWN);
    let page = BadRecordsPage { name, records, total, refresh_seconds: state.refresh_seconds, zone: zone.name() };
    Ok(Html(page.render()?))
}

#[derive(Template)]
#[template(path = "alerts.html")]
struct AlertsPage {
    rules: Vec<Rule>,
    instances: Vec<Instance>,
    history: Vec<AlertTransition>,
    /// Every silence, the newest first, with whether it is in force now.
    silences: Vec<(Silence, bool)>,
    /// Per instance (as `instances`): the silence covering it now, if any.
    silenced_by: Vec<Option<String>>,
    /// Why the rules file's last edit was not taken (the rules before it still run).
    rules_error: Option<String>,
    /// Names and kinds (the URLs are never shown).
    contact_points: Vec<ContactPoint>,
    policy: Policy,
    refresh_seconds: f64,
    zone: &'static str,
}

impl AlertsPage {
    /// The rules whose notifications go to `contact_point`.
    fn routed_to(&self, contact_point: &str) -> String {
        let rules: Vec<&str> = self
            .rules
            .iter()
            .filter(|r| r.contact_point.as_deref().unwrap_or(&self.policy.contact_point) == contact_point)
            .map(|r| r.name.as_str())
            .collect();
        rules.join(", ")
    }

    /// Whether `--webhook` gave the `default` contact point.
    fn has_default(&self) -> bool {
        self.contact_points.iter().any(|c| c.name == crate::alerts::contact_points::DEFAULT)
    }

    /// The silence covering instance number `index`, if any.
    fn silenced(&self, index: impl std::borrow::Borrow<usize>) -> Option<&str> {
        self.silenced_by.get(*index.borrow()).and_then(|s| s.as_deref())
    }
}

/// Transitions shown in the history.
pub const HISTORY_SHOWN: usize = 200;

pub async fn alerts(State(state): State<AppState>, zone: Zone) -> Result<Html<String>, WebError> {
    let history = state.store.alert_history(HISTORY_SHOWN).await?;
    let now = chrono::Utc::now().timestamp_micros();
    let silences = state.store.silences().await?;
    let instances = state.alerts.instances();
    let silenced_by =
        instances.iter().map(|i| crate::alerts::silences::silencing(&silences, i, now).map(|s| s.id.clone())).collect();
    let silences = silences.into_iter().map(|s| (s.clone(), crate::alerts::silences::is_active(&s, now))).collect();
    let page = AlertsPage {
        rules: state.alerts.rules(),
        rules_error: state.alerts.rules_error(),
        contact_points: state.alerts.contact_points(),
        policy: state.alerts.policy(),
        silences,
        silenced_by,
        instances,
        history,
        refresh_seconds: state.refresh_seconds,
        zone: zone.name(),
    };
    Ok(Html(page.render()?))
}

/// Seconds as Grafana writes durations: `30s`, `5m`, `4h`, `1h30m`.
pub fn duration_text(seconds: impl std::borrow::Borrow<f64>) -> String {
    let seconds = *seconds.borrow();
    let whole = seconds.round() as i64;
    if (seconds - whole as f64).abs() > 1e-9 || whole == 0 {
        return format!("{seconds}s");
    }
    let (h, m, s) = (whole / 3600, whole % 3600 / 60, whole % 60);
    let mut text = String::new();
    for (n, unit) in [(h, "h"), (m, "m"), (s, "s")] {
        if n > 0 {
            text.push_str(&format!("{n}{unit}"));
        }
    }
    text
}

/// A rule's condition as text, e.g. `above 100`.
pub fn condition_text(rule: &Rule) -> String {
    use crate::alerts::rules::Condition;
    match rule.condition {
        Condition::Above { threshold } => format!("above {threshold}"),
        Condition::Below { threshold } => format!("below {threshold}"),
        Condition::Outside { low, high } => format!("outside {low} … {high}"),
        Condition::Within { low, high } => format!("within {low} … {high}"),
    }
}

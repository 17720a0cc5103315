//! The JSON API: everything the pages show.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde_json::{Value as Json_, json};

use super::WebError;
use super::view::{self, Charts, PipelineItem, QlikTargets, ResultView, TableQuery};
use crate::AppState;
use crate::alerts::silences;

/// The alert rules, every instance's state, the latest transitions, the contact points
/// (names and kinds, never their URLs) and the notification policy.
pub async fn alerts(State(state): State<AppState>) -> Result<Json<Json_>, WebError> {
    let history = state.store.alert_history(super::pages::HISTORY_SHOWN).await?;
    Ok(Json(json!({
        "rules": state.alerts.rules(),
        "contact_points": state.alerts.contact_points(),
        "policy": state.alerts.policy(),
        "rules_error": state.alerts.rules_error(),
        "instances": state.alerts.instances(),
        "history": history,
    })))
}

/// Every silence, the newest first, each with whether it is in force now.
pub async fn silences(State(state): State<AppState>) -> Result<Json<Json_>, WebError> {
    let now = chrono::Utc::now().timestamp_micros();
    let silences: Vec<Json_> = state
        .store
        .silences()
        .await?
        .into_iter()
        .map(|s| {
            let active = silences::is_active(&s, now);
            let mut value = json!(s);
            value["active"] = json!(active);
            value
        })
        .collect();
    Ok(Json(json!({ "silences": silences })))
}

/// What a new silence says: matchers as a map or as `label=value, …` text.
#[derive(Debug, serde::Deserialize)]
pub struct NewSilence {
    pub matchers: Matchers,
    pub minutes: f64,
    #[serde(default)]
    pub comment: String,
}

#[derive(Debug, serde::Deserialize)]
#[serde(untagged)]
pub enum Matchers {
    Map(std::collections::BTreeMap<String, String>),
    Text(String),
}

/// Creates a silence from now (a JSON body: a cross-site form cannot send one).
pub async fn create_silence(
    State(state): State<AppState>,
    Json(new): Json<NewSilence>,
) -> Result<(StatusCode, Json<store::Silence>), WebError> {
    let matchers = match new.matchers {
        Matchers::Map(map) => map,
        Matchers::Text(text) => silences::parse_matchers(&text).map_err(WebError::bad_request)?,
    };
    let now = chrono::Utc::now().timestamp_micros();
    let silence = silences::new(matchers, new.minutes, new.comment, now).map_err(WebError::bad_request)?;
    state.store.save_silence(&silence).await?;
    tracing::info!(silence = %silence.id, matchers = ?silence.matchers, ends_at = %silence.ends_at, "silence created");
    Ok((StatusCode::CREATED, Json(silence)))
}

/// Ends a silence now (a JSON body, `{}`, for the same reason).
pub async fn expire_silence(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Json(_): Json<Json_>,
) -> Result<Json<store::Silence>, WebError> {
    let now = chrono::Utc::now().timestamp_micros();
    let silence = state.store.silences().await?.into_iter().find(|s| s.id == id);
    let mut silence = silence.ok_or_else(|| WebError::not_found(format!("silence {id}")))?;
    if silences::is_active(&silence, now) {
        silence.ends_at = store::iso_micros(now);
        state.store.save_silence(&silence).await?;
        tracing::info!(silence = %silence.id, "silence expired");
    }
    Ok(Json(silence))
}

/// Every pipeline's status with its Qlik targets (`qlik`, `qlik_summary`), and the
/// firing alert instances. `qlik_error` says why the Qlik targets could not be read.
pub async fn pipelines(State(state): State<AppState>) -> Result<Json<Json_>, WebError> {
    let firing: Vec<_> =
        state.alerts.instances().into_iter().filter(|i| i.state == crate::alerts::AlertState::Firing).collect();
    let statuses = state.store.statuses().await?;
    let mut qlik = QlikTargets::read(state.store.as_ref()).await;
    let items: Vec<PipelineItem> = statuses.into_iter().map(|s| PipelineItem::new(s, &mut qlik)).collect();
    let mut body = json!({ "pipelines": items, "firing": firing });
    if let Some(error) = qlik.error {
        body["qlik_error"] = json!(error);
    }
    Ok(Json(body))
}

/// One pipeline's status and its Qlik targets (`qlik`; `qlik_error` if they could not be read).
pub async fn pipeline(State(state): State<AppState>, Path(name): Path<String>) -> Result<Json<Json_>, WebError> {
    let status = state.store.status(&name).await?.ok_or_else(|| WebError::not_found(format!("pipeline {name}")))?;
    let qlik = QlikTargets::read(state.store.as_ref()).await;
    let mut body = json!({ "status": status, "qlik": qlik.of(&name) });
    if let Some(error) = qlik.error {
        body["qlik_error"] = json!(error);
    }
    Ok(Json(body))
}

/// A page of a pipeline's result (`?sort=&desc=&page=&from=&to=`), values as the table shows them.
pub async fn rows(
    State(state): State<AppState>,
    Path(name): Path<String>,
    query: TableQuery,
) -> Result<Json<ResultView>, WebError> {
    let table = super::table_of(&state, &name).await?;
    let view = view::result_view(state.store.as_ref(), &table, &query, view::PAGE_SIZE).await?;
    Ok(Json(view.ok_or_else(|| WebError::not_found(format!("result of {name}")))?))
}

#[derive(Debug, Default, serde::Deserialize)]
pub struct CsvQuery {
    /// Whether `_id` is a column of the export (it is hidden in the table by default).
    pub id: Option<bool>,
}

/// What a pipeline page's table shows (`?sort=&desc=&from=&to=`), all pages of it (at
/// most `CSV_ROWS` rows), values as the table shows them, as CSV; `?id=true` adds `_id`.
pub async fn rows_csv(
    State(state): State<AppState>,
    Path(name): Path<String>,
    query: TableQuery,
    Query(csv): Query<CsvQuery>,
) -> Result<axum::response::Response, WebError> {
    use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
    use axum::response::IntoResponse;
    let table = super::table_of(&state, &name).await?;
    let query = TableQuery { page: Some(1), ..query };
    let view = view::result_view(state.store.as_ref(), &table, &query, view::CSV_ROWS)
        .await?
        .ok_or_else(|| WebError::not_found(format!("result of {name}")))?;
    let with_id = csv.id.unwrap_or(false);
    let mut out = csv::Writer::from_writer(Vec::new());
    let names = view.columns.iter().map(|c| c.name.as_str());
    match with_id {
        true => out.write_record(std::iter::once("_id").chain(names))?,
        false => out.write_record(names)?,
    }
    for row in &view.rows {
        // Each row is its `_id`, then one text per column.
        out.write_record(&row[usize::from(!with_id)..])?;
    }
    let body = out.into_inner().map_err(|e| csv::Error::from(e.into_error()))?;
    let file: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
    let disposition = format!("attachment; filename=\"{file}.csv\"");
    Ok(([(CONTENT_TYPE, "text/csv; charset=utf-8".to_string()), (CONTENT_DISPOSITION, disposition)], body)
        .into_response())
}

/// The charts of a pipeline's result (`?from=&to=` or `?range=` for windowed results).
pub async fn charts(
    State(state): State<AppState>,
    Path(name): Path<String>,
    query: TableQuery,
) -> Result<Json<Charts>, WebError> {
    let table = super::table_of(&state, &name).await?;
    let mut charts = view::charts(state.store.as_ref(), &table, &query)
        .await?
        .ok_or_else(|| WebError::not_found(format!("result of {name}")))?;
    // A panel's columns (`?columns=a,b`): the charts of those value columns only.
    if let Some(columns) = query.columns.as_deref().filter(|c| !c.trim().is_empty()) {
        let wanted: Vec<&str> = columns.split(',').map(str::trim).collect();
        charts.charts.retain(|c| wanted.contains(&c.value.as_str()));
        charts.charts.sort_by_key(|c| wanted.iter().position(|w| *w == c.value));
    }
    // The rules on a chart's value: their thresholds, drawn as lines, and their
    // instances' transitions, drawn as marks where they happened (on a time chart).
    let rules = state.alerts.rules();
    let history = match rules.iter().any(|r| r.pipeline == name) {
        true => state.store.alert_history(ANNOTATIONS_READ).await?,
        false => Vec::new(),
    };
    for chart in &mut charts.charts {
        for rule in rules.iter().filter(|r| r.pipeline == name && r.value == chart.value) {
            for value in rule.condition.thresholds() {
                chart.thresholds.push(view::Threshold { rule: rule.name.clone(), value });
            }
            if chart.kind != "time" {
                continue;
            }
            let (Some(&first), Some(&last)) = (chart.x.first(), chart.x.last()) else { continue };
            for t in history.iter().filter(|t| t.rule == rule.name) {
                let Some(at) = store::parse_iso_micros(&t.at).map(|m| m as f64 / 1e6) else { continue };
                if at >= first && at <= last + WINDOW_SLACK_SECONDS {
                    let instance = if t.instance.is_empty() { String::new() } else { format!(" {}", t.instance) };
                    let text = format!("{}{instance}: {} → {}", t.rule, t.from, t.to);
                    chart.annotations.push(view::Annotation { at, to: t.to.clone(), text });
                }
            }
        }
    }
    Ok(Json(charts))
}

/// Alert transitions read for a chart's annotations (the newest).
const ANNOTATIONS_READ: usize = 1_000;
/// How far after the last window start a transition still shows (the last window is
/// still open then).
const WINDOW_SLACK_SECONDS: f64 = 3_600.0;

/// The panels of the panels folder and the files that could not be read (`file:line: reason`).
pub async fn panels(State(state): State<AppState>) -> Json<crate::panels::Loaded> {
    Json(state.panels.get())
}

/// A pipeline's bad records.
pub async fn bad_records(State(state): State<AppState>, Path(name): Path<String>) -> Result<Json<Json_>, WebError> {
    let records = state.store.rejected_records(&name, false).await?;
    let records: Vec<Json_> = records
        .iter()
        .rev()
        .map(|r| json!({"source_offset": r.source_offset, "reason": r.reason, "raw": r.raw}))
        .collect();
    Ok(Json(json!({ "pipeline": name, "records": records })))
}

#[derive(Debug, Default, serde::Deserialize)]
pub struct HealthQuery {
    /// `1h` (10-second samples, the default) or `24h` (one-minute ones).
    pub range: Option<String>,
}

/// One pipeline's health history as columns (what a chart draws): `t` in seconds
/// since the epoch, then one value (or `null`) per sample for each measure.
#[derive(Debug, Default, serde::Serialize)]
pub struct HealthSeries {
    pub pipeline: String,
    pub t: Vec<f64>,
    pub events_per_second: Vec<Option<f64>>,
    pub lag: Vec<Option<u64>>,
    pub watermark_delay_seconds: Vec<Option<f64>>,
}

/// The health history of every pipeline at the resolution `range` asks for.
async fn health_series(
    state: &AppState,
    query: &HealthQuery,
) -> Result<(&'static str, u32, Vec<HealthSeries>), WebError> {
    use crate::health::{COARSE_SECONDS, FINE_SECONDS};
    let (range, resolution) = match query.range.as_deref() {
        None | Some("1h") => ("1h", FINE_SECONDS),
        Some("24h") => ("24h", COARSE_SECONDS),
        Some(other) => return Err(WebError::bad_request(format!("range `{other}`: 1h or 24h"))),
    };
    let mut series: Vec<HealthSeries> = Vec::new();
    // By pipeline, oldest first.
    for sample in state.store.health(resolution).await? {
        if series.last().is_none_or(|s| s.pipeline != sample.pipeline) {
            series.push(HealthSeries { pipeline: sample.pipeline.clone(), ..Default::default() });
        }
        let Some(at) = store::parse_iso_micros(&sample.at) else { continue };
        let s = series.last_mut().expect("pushed above");
        s.t.push(at as f64 / 1e6);
        s.events_per_second.push(sample.events_per_second);
        s.lag.push(sample.lag);
        s.watermark_delay_seconds.push(sample.watermark_delay_seconds);
    }
    Ok((range, resolution, series))
}

/// Every pipeline's health history (`?range=1h|24h`): events/s, lag, watermark delay.
pub async fn health(State(state): State<AppState>, Query(query): Query<HealthQuery>) -> Result<Json<Json_>, WebError> {
    let (range, resolution, series) = health_series(&state, &query).await?;
    Ok(Json(json!({ "range": range, "resolution_seconds": resolution, "pipelines": series })))
}

/// One pipeline's health history (`?range=1h|24h`); empty columns if it has none yet.
pub async fn pipeline_health(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<HealthQuery>,
) -> Result<Json<Json_>, WebError> {
    state.store.status(&name).await?.ok_or_else(|| WebError::not_found(format!("pipeline {name}")))?;
    let (range, resolution, series) = health_series(&state, &query).await?;
    let series = series
        .into_iter()
        .find(|s| s.pipeline == name)
        .unwrap_or(HealthSeries { pipeline: name, ..Default::default() });
    let mut body = json!(series);
    body["range"] = json!(range);
    body["resolution_seconds"] = json!(resolution);
    Ok(Json(body))
}

/// 200 when the store answers, 503 (with the store's error) when it does not.
pub async fn healthz(State(state): State<AppState>) -> (StatusCode, Json<Json_>) {
    match state.store.statuses().await {
        Ok(_) => (StatusCode::OK, Json(json!({"status": "ok"}))),
        Err(e) => {
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "store unavailable", "error": e.to_string()})))
        }
    }
}

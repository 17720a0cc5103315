//! The JSON API: everything the pages show.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde_json::{Value as Json_, json};

use super::WebError;
use super::view::{self, Chart, ResultView, TableQuery};
use crate::AppState;

/// Every pipeline's status.
pub async fn pipelines(State(state): State<AppState>) -> Result<Json<Json_>, WebError> {
    Ok(Json(json!({ "pipelines": state.store.statuses().await? })))
}

/// One pipeline's status.
pub async fn pipeline(State(state): State<AppState>, Path(name): Path<String>) -> Result<Json<Json_>, WebError> {
    let status = state.store.status(&name).await?.ok_or_else(|| WebError::not_found(format!("pipeline {name}")))?;
    Ok(Json(json!({ "status": status })))
}

/// A page of a pipeline's result (`?sort=&desc=&page=&from=&to=`), values as the table shows them.
pub async fn rows(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<TableQuery>,
) -> Result<Json<ResultView>, WebError> {
    let view = view::result_view(state.store.as_ref(), &name, &query).await?;
    Ok(Json(view.ok_or_else(|| WebError::not_found(format!("result of {name}")))?))
}

/// The chart of a pipeline's result (`?from=&to=` for windowed results).
pub async fn chart(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<TableQuery>,
) -> Result<Json<Chart>, WebError> {
    let chart = view::chart(state.store.as_ref(), &name, &query).await?;
    Ok(Json(chart.ok_or_else(|| WebError::not_found(format!("result of {name}")))?))
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

/// 200 when the store answers, 503 (with the store's error) when it does not.
pub async fn healthz(State(state): State<AppState>) -> (StatusCode, Json<Json_>) {
    match state.store.statuses().await {
        Ok(_) => (StatusCode::OK, Json(json!({"status": "ok"}))),
        Err(e) => {
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "store unavailable", "error": e.to_string()})))
        }
    }
}

//! Routes: pages (HTML), the JSON API, static assets, `/metrics`; every one behind the
//! credentials check (but `/healthz`) and counted in the metrics.

mod api;
mod assets;
mod pages;
pub(crate) mod view;
pub(crate) mod zone;

use axum::Router;
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};

use crate::AppState;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(pages::overview))
        .route("/pipelines/{name}", get(pages::pipeline))
        .route("/pipelines/{name}/bad", get(pages::bad_records))
        .route("/alerts", get(pages::alerts))
        .route("/api/alerts", get(api::alerts))
        .route("/api/silences", get(api::silences).post(api::create_silence))
        .route("/api/silences/{id}/expire", post(api::expire_silence))
        .route("/api/pipelines", get(api::pipelines))
        .route("/api/pipelines/{name}", get(api::pipeline))
        .route("/api/pipelines/{name}/rows", get(api::rows))
        .route("/api/pipelines/{name}/rows.csv", get(api::rows_csv))
        .route("/api/pipelines/{name}/chart", get(api::charts))
        .route("/api/pipelines/{name}/bad", get(api::bad_records))
        .route("/api/panels", get(api::panels))
        .route("/api/health", get(api::health))
        .route("/api/pipelines/{name}/health", get(api::pipeline_health))
        .route("/healthz", get(api::healthz))
        .route("/assets/app.js", get(assets::script))
        .route("/assets/app.css", get(assets::style))
        .route("/assets/uplot.js", get(assets::chart_script))
        .route("/assets/uplot.css", get(assets::chart_style))
        .route("/metrics", get(crate::metrics::scrape))
        // The layer added last runs first: the metrics see every answer, 401s included;
        // the credentials are checked before any handler (or the 404 fallback) runs.
        .layer(from_fn_with_state(state.access.clone(), crate::auth::require))
        .layer(from_fn_with_state(state.clone(), crate::metrics::track))
        .with_state(state)
}

/// The result table of pipeline `name` (its status says; the name itself for stores
/// written before statuses named their table).
pub async fn table_of(state: &AppState, name: &str) -> Result<String, WebError> {
    let status = state.store.status(name).await?;
    Ok(status.map_or_else(|| name.to_string(), |s| s.table().to_string()))
}

/// An error page or API error: the store's message (passwords are already hidden by
/// the store) with a status code.
pub struct WebError {
    status: axum::http::StatusCode,
    message: String,
}

impl WebError {
    pub fn not_found(what: impl std::fmt::Display) -> Self {
        WebError { status: axum::http::StatusCode::NOT_FOUND, message: format!("{what} not found") }
    }

    pub fn bad_request(what: impl std::fmt::Display) -> Self {
        WebError { status: axum::http::StatusCode::BAD_REQUEST, message: what.to_string() }
    }
}

impl From<store::StoreError> for WebError {
    fn from(e: store::StoreError) -> Self {
        WebError { status: axum::http::StatusCode::SERVICE_UNAVAILABLE, message: e.to_string() }
    }
}

impl From<csv::Error> for WebError {
    fn from(e: csv::Error) -> Self {
        WebError { status: axum::http::StatusCode::INTERNAL_SERVER_ERROR, message: format!("CSV: {e}") }
    }
}

impl From<askama::Error> for WebError {
    fn from(e: askama::Error) -> Self {
        WebError { status: axum::http::StatusCode::INTERNAL_SERVER_ERROR, message: format!("template: {e}") }
    }
}

impl axum::response::IntoResponse for WebError {
    fn into_response(self) -> axum::response::Response {
        (self.status, axum::Json(serde_json::json!({"error": self.message}))).into_response()
    }
}

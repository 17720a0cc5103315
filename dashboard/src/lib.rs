//! The dashboard: a web server (axum, askama templates) that reads the results store
//! the aggregator writes (SQLite or MongoDB, through `store::Store`) and shows every
//! pipeline's state, its live result as a table and a chart, its bad records, and the
//! state of its Qlik targets (the apps the aggregator pushes its result into).
//! It reads what the aggregator writes, and writes only its own records (alert
//! transitions, silences, the pipelines' health history): the aggregator never talks to
//! it, and it never talks to the aggregator.
//!
//! Layout:
//! * [`run`] serves until `shutdown` resolves (tests bind port 0 and pass their own);
//! * `web/pages.rs`: the HTML pages (templates in `templates/`, escaped by askama);
//! * `web/api.rs`: the JSON API under `/api/` behind every page, and `/healthz`;
//! * `web/view.rs`: what pages and API share: a result page request from the query
//!   string, the default time range, values as text, the chart of a result, the Qlik
//!   targets and their summary;
//! * `alerts/`: threshold alert rules (`rules.rs`), their state machine (`engine.rs`),
//!   the notification policy (`notify.rs`: groups, waits, repeats) and the contact
//!   points (`contact_points.rs`: webhook, Slack), evaluated on an interval beside the server;
//! * `health.rs`: each pipeline's health (events/s, lag, watermark delay) sampled into
//!   a bounded, downsampled history in the store, for the overview's small charts;
//! * `auth.rs`: who may see it ([`auth::Access`]: basic auth and/or a bearer token,
//!   required unless it listens on loopback only), checked before every route but
//!   `/healthz`;
//! * `metrics/`: its own Prometheus metrics at `/metrics` (requests, store reads,
//!   alert evaluations, notifications), and the store wrapper that measures every read;
//! * `panels.rs`: panels as code, one TOML file each in a watched folder;
//! * `assets/`: the page script (live refresh, charts as SVG) and style, served by
//!   the dashboard itself: nothing is fetched from the internet.

pub mod alerts;
pub mod auth;
pub mod health;
pub mod metrics;
pub mod panels;
pub mod watch;
mod web;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use store::Store;

/// What every request handler shares.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    /// Seconds between live refreshes of a page.
    pub refresh_seconds: f64,
    /// The alert rules and their instances' current states (see [`alerts`]).
    pub alerts: Arc<alerts::AlertsView>,
    /// Who may see it: [`auth::Access::Open`], or the credentials every route but
    /// `/healthz` requires.
    pub access: Arc<auth::Access>,
    /// What `/metrics` serves. Store reads are measured when `store` is a
    /// [`metrics::MeteredStore`] of the same metrics.
    pub metrics: Arc<metrics::Metrics>,
    /// The panels of the panels folder (see [`panels`]); none by default.
    pub panels: Arc<panels::PanelsView>,
}

/// The routes of the dashboard.
pub fn router(state: AppState) -> axum::Router {
    web::router(state)
}

/// Serves the dashboard on `listener` until `shutdown` completes.
pub async fn run(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // With the client's address, for the log of refused requests.
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}

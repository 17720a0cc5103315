//! The dashboard's own metrics, served at `/metrics` (behind the same credentials as
//! everything else) with the Prometheus project's client, `prometheus-client`:
//!
//! * HTTP requests by route pattern (`/pipelines/{name}`, never the name itself, so the
//!   series stay few), method and status, and their duration;
//! * store reads that failed, by operation, and the reads' duration (`store.rs` wraps
//!   the store, so every read counts: pages, API, health check, alert rules);
//! * alert rule evaluations and their duration, transitions, and the current alert
//!   instances by rule and state;
//! * notifications POSTed to contact points (webhooks, Slack), and those that failed.
//!
//! One [`Metrics`] per dashboard (tests run several in one process, each with its own).
//! A scrape gets OpenMetrics text when it asks for it (Prometheus does), else the
//! classic Prometheus text format (curl).

mod store;

pub use store::MeteredStore;

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::AppState;
use crate::alerts::{AlertState, Instance};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    /// The route pattern, or `unmatched` for paths no route serves.
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleStateLabels {
    rule: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransitionLabels {
    rule: String,
    to: String,
}

/// Seconds from 1 ms to about 16 s, doubling.
fn seconds_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// Every metric of the dashboard, and the registry that encodes them.
pub struct Metrics {
    registry: Registry,
    http_requests: Family<RequestLabels, Counter>,
    http_duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    store_read_errors: Family<OperationLabels, Counter>,
    store_read_duration: Family<OperationLabels, Histogram, fn() -> Histogram>,
    alert_evaluations: Counter,
    alert_evaluation_duration: Histogram,
    alert_transitions: Family<TransitionLabels, Counter>,
    alert_instances: Family<RuleStateLabels, Gauge>,
    webhook_requests: Counter,
    webhook_failures: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        // Counters are registered without `_total`, histograms without `_seconds`: the
        // encoder appends them (and the unit) itself.
        let http_requests = Family::default();
        registry.register(
            "dashboard_http_requests",
            "HTTP requests answered, by method, route pattern and status",
            http_requests.clone(),
        );
        let http_duration = Family::new_with_constructor(seconds_histogram as fn() -> Histogram);
        registry.register_with_unit(
            "dashboard_http_request_duration",
            "Time to answer an HTTP request, by method and route pattern",
            Unit::Seconds,
            http_duration.clone(),
        );
        let store_read_errors = Family::default();
        registry.register(
            "dashboard_store_read_errors",
            "Reads from the results store that failed, by operation",
            store_read_errors.clone(),
        );
        let store_read_duration = Family::new_with_constructor(seconds_histogram as fn() -> Histogram);
        registry.register_with_unit(
            "dashboard_store_read_duration",
            "Time of a read from the results store, by operation",
            Unit::Seconds,
            store_read_duration.clone(),
        );
        let alert_evaluations = Counter::default();
        registry.register("dashboard_alert_evaluations", "Evaluations of all alert rules", alert_evaluations.clone());
        let alert_evaluation_duration = seconds_histogram();
        registry.register_with_unit(
            "dashboard_alert_evaluation_duration",
            "Time to evaluate all alert rules once (store reads included)",
            Unit::Seconds,
            alert_evaluation_duration.clone(),
        );
        let alert_transitions = Family::default();
        registry.register(
            "dashboard_alert_transitions",
            "Alert instance state transitions, by rule and new state",
            alert_transitions.clone(),
        );
        let alert_instances = Family::default();
        registry.register(
            "dashboard_alert_instances",
            "Alert instances by rule and current state (normal, pending, firing, nodata, error)",
            alert_instances.clone(),
        );
        let webhook_requests = Counter::default();
        registry.register(
            "dashboard_webhook_requests",
            "Alert notifications POSTed to contact points (webhook, Slack)",
            webhook_requests.clone(),
        );
        let webhook_failures = Counter::default();
        registry.register(
            "dashboard_webhook_failures",
            "Alert notifications a contact point did not accept (no answer, or an error status)",
            webhook_failures.clone(),
        );
        Metrics {
            registry,
            http_requests,
            http_duration,
            store_read_errors,
            store_read_duration,
            alert_evaluations,
            alert_evaluation_duration,
            alert_transitions,
            alert_instances,
            webhook_requests,
            webhook_failures,
        }
    }

    /// One store read of `operation` that took `seconds` and succeeded or not.
    pub(crate) fn store_read(&self, operation: &'static str, seconds: f64, ok: bool) {
        let labels = OperationLabels { operation };
        self.store_read_duration.get_or_create(&labels).observe(seconds);
        if !ok {
            self.store_read_errors.get_or_create(&labels).inc();
        }
    }

    /// One evaluation of all rules that took `seconds` and left `instances`.
    pub(crate) fn alert_evaluation(&self, seconds: f64, instances: &[Instance]) {
        self.alert_evaluations.inc();
        self.alert_evaluation_duration.observe(seconds);
        // Every state of every rule, zeros included: a resolved alert must show 0 firing.
        let mut rules: Vec<&str> = instances.iter().map(|i| i.rule.as_str()).collect();
        rules.sort_unstable();
        rules.dedup();
        for rule in rules {
            for state in AlertState::ALL {
                let count = instances.iter().filter(|i| i.rule == rule && i.state == state).count();
                let labels = RuleStateLabels { rule: rule.to_string(), state: state.as_str() };
                self.alert_instances.get_or_create(&labels).set(count as i64);
            }
        }
    }

    pub(crate) fn alert_transition(&self, rule: &str, to: &str) {
        self.alert_transitions.get_or_create(&TransitionLabels { rule: rule.into(), to: to.into() }).inc();
    }

    pub(crate) fn webhook_request(&self, ok: bool) {
        self.webhook_requests.inc();
        if !ok {
            self.webhook_failures.inc();
        }
    }

    /// The metrics as OpenMetrics text (with `openmetrics`) or Prometheus text 0.0.4.
    pub fn encode(&self, openmetrics: bool) -> String {
        let mut text = String::new();
        let encoded = if openmetrics {
            prometheus_client::encoding::text::encode(&mut text, &self.registry)
        } else {
            prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)
        };
        // Writing into a String cannot fail; the encoder only passes fmt errors on.
        encoded.expect("encoding metrics into a String");
        text
    }
}

/// The content type of OpenMetrics text, version 1.0.0.
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `GET /metrics`: OpenMetrics if the scraper accepts it (Prometheus asks for it), else
/// the classic text format.
pub async fn scrape(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    let openmetrics = accept.contains("application/openmetrics-text");
    let content_type =
        if openmetrics { OPENMETRICS_CONTENT_TYPE } else { prometheus_client::encoding::prometheus_text::CONTENT_TYPE };
    ([(header::CONTENT_TYPE, content_type)], state.metrics.encode(openmetrics)).into_response()
}

/// The middleware that counts and times every request (401s included: it runs outside
/// the credentials check).
pub async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().to_string();
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_string();
    let response = next.run(request).await;
    let metrics = &state.metrics;
    let status = response.status().as_u16();
    metrics.http_requests.get_or_create(&RequestLabels { method: method.clone(), route: route.clone(), status }).inc();
    metrics.http_duration.get_or_create(&RouteLabels { method, route }).observe(started.elapsed().as_secs_f64());
    response
}

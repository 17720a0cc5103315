//! Prometheus metrics: what an operator scrapes from `--metrics-listen ADDR` at
//! `http://ADDR/metrics` (OpenMetrics text, the Prometheus project's own
//! `prometheus-client`).
//!
//! One registry for the process ([`metrics`]); pipelines and the Qlik push record into
//! it as they go, labelled by pipeline (or Qlik app). Counters count since the process
//! started (Prometheus handles restarts); the pipelines' own totals across restarts
//! are in their status rows.
//!
//! | metric | labels | what |
//! | --- | --- | --- |
//! | `aggregator_events_consumed_total` | pipeline | records read from the source |
//! | `aggregator_events_total` | pipeline, outcome (`ok`, `bad`, `late`) | what became of them |
//! | `aggregator_rows_written_total` | pipeline, op (`upsert`, `delete`) | result rows written to the store |
//! | `aggregator_source_lag` | pipeline, partition | records waiting per Kafka partition (files waiting for the file log) |
//! | `aggregator_watermark_delay_seconds` | pipeline | wall clock − the pipeline's watermark |
//! | `aggregator_batch_duration_seconds` | pipeline | histogram: one micro-batch, read to written |
//! | `aggregator_batch_records` | pipeline | histogram: records per micro-batch |
//! | `aggregator_checkpoint_duration_seconds` | pipeline | histogram: the time a checkpoint holds the pipeline up (collecting what changed; the writing runs on a writer thread) |
//! | `aggregator_checkpoint_bytes` | pipeline | size of the last checkpoint written (its state file + manifest) |
//! | `aggregator_state_groups` | pipeline | groups held in the state |
//! | `aggregator_state_bytes` | pipeline | the state's size in memory (group index and state columns), at the last checkpoint |
//! | `aggregator_retries_total` | pipeline, target (`sink`, `source`, `dead_letter`) | outages retried |
//! | `aggregator_pipeline_failures_total` | pipeline | pipelines that failed (planner error, fatal error, panic) |
//! | `aggregator_qlik_reloads_total` | app, outcome (`ok`, `error`) | reloads of a Qlik app |
//! | `aggregator_qlik_reload_duration_seconds` | app | histogram: one reload (set script, reload, save) |

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::error::{Error, Result};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PipelineLabel {
    pub pipeline: String,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Outcome {
    ok,
    bad,
    late,
    error,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub pipeline: String,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum RowOp {
    upsert,
    delete,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RowLabels {
    pub pipeline: String,
    pub op: RowOp,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    pub pipeline: String,
    pub partition: i32,
}

/// What an outage that was retried was an outage of.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum RetryTarget {
    sink,
    source,
    dead_letter,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RetryLabels {
    pub pipeline: String,
    pub target: RetryTarget,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppLabel {
    pub app: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppOutcomeLabels {
    pub app: String,
    pub outcome: Outcome,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;
type FloatGauge = Gauge<f64, AtomicU64>;

/// 1 ms to ~33 s.
fn seconds_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// 1 to ~1M records.
fn records_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 4.0, 11))
}

/// 10 ms to ~11 min.
fn reload_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 2.0, 17))
}

/// The process's metrics.
pub struct Metrics {
    registry: Registry,
    pub events_consumed: Family<PipelineLabel, Counter>,
    pub events: Family<OutcomeLabels, Counter>,
    pub rows_written: Family<RowLabels, Counter>,
    pub source_lag: Family<PartitionLabels, Gauge>,
    pub watermark_delay: Family<PipelineLabel, FloatGauge>,
    pub batch_duration: Histograms<PipelineLabel>,
    pub batch_records: Histograms<PipelineLabel>,
    pub checkpoint_duration: Histograms<PipelineLabel>,
    pub checkpoint_bytes: Family<PipelineLabel, Gauge>,
    pub state_groups: Family<PipelineLabel, Gauge>,
    pub state_bytes: Family<PipelineLabel, Gauge>,
    pub retries: Family<RetryLabels, Counter>,
    pub pipeline_failures: Family<PipelineLabel, Counter>,
    pub qlik_reloads: Family<AppOutcomeLabels, Counter>,
    pub qlik_reload_duration: Histograms<AppLabel>,
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("aggregator");
        let m = Metrics {
            events_consumed: Family::default(),
            events: Family::default(),
            rows_written: Family::default(),
            source_lag: Family::default(),
            watermark_delay: Family::default(),
            batch_duration: Family::new_with_constructor(seconds_histogram),
            batch_records: Family::new_with_constructor(records_histogram),
            checkpoint_duration: Family::new_with_constructor(seconds_histogram),
            checkpoint_bytes: Family::default(),
            state_groups: Family::default(),
            state_bytes: Family::default(),
            retries: Family::default(),
            pipeline_failures: Family::default(),
            qlik_reloads: Family::default(),
            qlik_reload_duration: Family::new_with_constructor(reload_histogram),
            registry: Registry::default(),
        };
        // Counters get their `_total` suffix from the encoder.
        registry.register("events_consumed", "Records read from the source", m.events_consumed.clone());
        registry.register("events", "Records by outcome: ok, bad (rejected) or late", m.events.clone());
        registry.register("rows_written", "Result rows written to the store, by operation", m.rows_written.clone());
        registry.register(
            "source_lag",
            "Records waiting per Kafka partition (files waiting, for the file log)",
            m.source_lag.clone(),
        );
        registry.register(
            "watermark_delay_seconds",
            "Wall clock minus the pipeline's watermark",
            m.watermark_delay.clone(),
        );
        registry.register("batch_duration_seconds", "One micro-batch, from read to written", m.batch_duration.clone());
        registry.register("batch_records", "Records per micro-batch", m.batch_records.clone());
        registry.register(
            "checkpoint_duration_seconds",
            "The time a checkpoint holds the pipeline up (the writing runs on a writer thread)",
            m.checkpoint_duration.clone(),
        );
        registry.register(
            "checkpoint_bytes",
            "Size of the last checkpoint written (its state file and manifest)",
            m.checkpoint_bytes.clone(),
        );
        registry.register("state_groups", "Groups held in the state", m.state_groups.clone());
        registry.register(
            "state_bytes",
            "The state's size in memory (group index and state columns), at the last checkpoint",
            m.state_bytes.clone(),
        );
        registry.register("retries", "Outages retried, by what was down", m.retries.clone());
        registry.register("pipeline_failures", "Pipelines that failed", m.pipeline_failures.clone());
        registry.register("qlik_reloads", "Reloads of a Qlik app, by outcome", m.qlik_reloads.clone());
        registry.register(
            "qlik_reload_duration_seconds",
            "One reload of a Qlik app (set script, reload, save)",
            m.qlik_reload_duration.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The metrics in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("writing to a String");
        text
    }

    pub fn pipeline(name: &str) -> PipelineLabel {
        PipelineLabel { pipeline: name.to_string() }
    }
}

/// The process's metrics (created on first use).
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// Serves `GET /metrics` on `listen` from a thread of its own, until the process
/// exits. Binding fails at once (a port in use is the command line's error).
pub fn serve(listen: &str) -> Result<SocketAddr> {
    let listener =
        std::net::TcpListener::bind(listen).map_err(|e| Error::user(format!("--metrics-listen {listen}: {e}")))?;
    listener.set_nonblocking(true).map_err(|e| Error::internal(e.to_string()))?;
    let address = listener.local_addr().map_err(|e| Error::internal(e.to_string()))?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("a bound listener");
                let app = axum::Router::new().route(
                    "/metrics",
                    axum::routing::get(|| async {
                        (
                            [(
                                axum::http::header::CONTENT_TYPE,
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            )],
                            metrics().encode(),
                        )
                    }),
                );
                if let Err(e) = axum::serve(listener, app).await {
                    tracing::error!(error = %e, "metrics endpoint stopped");
                }
            });
        })
        .map_err(|e| Error::internal(format!("metrics thread: {e}")))?;
    tracing::info!(url = %format!("http://{address}/metrics"), "serving metrics");
    Ok(address)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_histograms_encode_with_their_labels() {
        let m = Metrics::new();
        m.events.get_or_create(&OutcomeLabels { pipeline: "p".into(), outcome: Outcome::bad }).inc_by(3);
        m.batch_duration.get_or_create(&Metrics::pipeline("p")).observe(0.02);
        let text = m.encode();
        assert!(text.contains(r#"aggregator_events_total{pipeline="p",outcome="bad"} 3"#), "{text}");
        assert!(text.contains(r#"aggregator_batch_duration_seconds_count{pipeline="p"} 1"#), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}

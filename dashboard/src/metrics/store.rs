//! [`MeteredStore`]: a [`Store`] that times every read and counts the failed ones, so
//! that whoever reads (a page, the API, the health check, an alert rule) is measured.
//! Writes (the dashboard writes alert transitions, silences and pipeline health) pass
//! through unmeasured.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use store::{
    AlertTransition, HealthSample, Page, PageRequest, PipelineStatus, QlikTargetStatus, RejectedRecord, Result,
    ResultColumn, ResultDelta, ResultTable, Silence, Store, WindowSum,
};

use super::Metrics;

pub struct MeteredStore {
    inner: Arc<dyn Store>,
    metrics: Arc<Metrics>,
}

impl MeteredStore {
    pub fn new(inner: Arc<dyn Store>, metrics: Arc<Metrics>) -> Self {
        MeteredStore { inner, metrics }
    }

    /// Runs the read `operation`, recording its time and whether it failed.
    async fn read<T>(&self, operation: &'static str, read: impl Future<Output = Result<T>>) -> Result<T> {
        let started = Instant::now();
        let result = read.await;
        self.metrics.store_read(operation, started.elapsed().as_secs_f64(), result.is_ok());
        result
    }
}

#[async_trait::async_trait]
impl Store for MeteredStore {
    fn uri(&self) -> &str {
        self.inner.uri()
    }

    async fn prepare_result_table(
        &self,
        pipeline: &str,
        table: &str,
        columns: &[ResultColumn],
        fresh: bool,
    ) -> Result<()> {
        self.inner.prepare_result_table(pipeline, table, columns, fresh).await
    }

    async fn swap_in(&self, shadow: &str, table: &str) -> Result<()> {
        self.inner.swap_in(shadow, table).await
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
        self.inner.write_batch(table, columns, delta, status, bad, late).await
    }

    async fn write_status(&self, status: &PipelineStatus) -> Result<()> {
        self.inner.write_status(status).await
    }

    async fn record_alert(&self, transition: &AlertTransition) -> Result<()> {
        self.inner.record_alert(transition).await
    }

    async fn write_qlik_status(&self, status: &QlikTargetStatus) -> Result<()> {
        self.inner.write_qlik_status(status).await
    }

    async fn has_table(&self, table: &str) -> Result<bool> {
        self.read("has_table", self.inner.has_table(table)).await
    }

    async fn columns(&self, table: &str) -> Result<Option<Vec<ResultColumn>>> {
        self.read("columns", self.inner.columns(table)).await
    }

    async fn read_page(&self, table: &str, request: &PageRequest) -> Result<Option<Page>> {
        self.read("read_page", self.inner.read_page(table, request)).await
    }

    async fn window_bounds(&self, table: &str, column: &str) -> Result<Option<(i64, i64)>> {
        self.read("window_bounds", self.inner.window_bounds(table, column)).await
    }

    async fn statuses(&self) -> Result<Vec<PipelineStatus>> {
        self.read("statuses", self.inner.statuses()).await
    }

    async fn rejected_records(&self, pipeline: &str, late: bool) -> Result<Vec<RejectedRecord>> {
        self.read("rejected_records", self.inner.rejected_records(pipeline, late)).await
    }

    async fn alert_history(&self, limit: usize) -> Result<Vec<AlertTransition>> {
        self.read("alert_history", self.inner.alert_history(limit)).await
    }

    async fn window_sums(
        &self,
        table: &str,
        window: &str,
        category: Option<&str>,
        values: &[String],
        request: &PageRequest,
    ) -> Result<Option<Vec<WindowSum>>> {
        self.read("window_sums", self.inner.window_sums(table, window, category, values, request)).await
    }

    async fn save_silence(&self, silence: &Silence) -> Result<()> {
        self.inner.save_silence(silence).await
    }

    async fn silences(&self) -> Result<Vec<Silence>> {
        self.read("silences", self.inner.silences()).await
    }

    async fn qlik_statuses(&self) -> Result<Vec<QlikTargetStatus>> {
        self.read("qlik_statuses", self.inner.qlik_statuses()).await
    }

    async fn write_health(&self, samples: &[HealthSample], keep: usize) -> Result<()> {
        self.inner.write_health(samples, keep).await
    }

    async fn health(&self, resolution_seconds: u32) -> Result<Vec<HealthSample>> {
        self.read("health", self.inner.health(resolution_seconds)).await
    }

    // The two reads with default implementations: the inner store's own (which may be
    // better than the default), measured once here.
    async fn read_table(&self, table: &str) -> Result<Option<ResultTable>> {
        self.read("read_table", self.inner.read_table(table)).await
    }

    async fn status(&self, name: &str) -> Result<Option<PipelineStatus>> {
        self.read("status", self.inner.status(name)).await
    }
}

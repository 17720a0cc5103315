//! The reload orchestrators: one task per Qlik app, shared by every pipeline of the
//! process that targets the app.
//!
//! Pipelines only note changes ([`QlikFeed::changed`]: an in-memory update, never a
//! wait). Each app's task ([`AppPush::run`]) decides when to reload:
//!
//! * never while its previous reload of the app runs: one reload in flight per app,
//!   and changes arriving meanwhile are coalesced into the next one;
//! * when the rows changed since the app's version reach `min_rows` (volume), when no
//!   change came for `idle` (the stream paused), or when the oldest waiting change is
//!   `max_delay` old (a steady stream);
//! * but not before `max(min_interval, pace × last reload's duration)` after the last
//!   reload ended: the pace follows what the engine sustains, so a burst becomes a few
//!   large reloads instead of a queue of small ones.
//!
//! A reload replaces, for every table with changes, the app's table by the result as
//! the store holds it now, and the table's marker by the version it was read at; then
//! the app is saved. On connect, the markers are read back (`GetTableData`): a table
//! whose app version already covers the pipeline's is not reloaded; one behind is.
//! Errors (engine down, 11000 from another client's reload, a failed script) are kept
//! in the target's status and retried with backoff; the changes stay pending.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use store::{QlikTargetStatus, Store, iso_micros};
use tokio::sync::{Notify, OnceCell};

use super::qix::{QixConnection, QixError, QixOptions, codes};
use super::script::{self, ResultVersion, marker};
use super::{QlikOptions, QlikTarget};
use crate::error::{Error, Result};

/// Why a push step failed: the engine, the store it reads from, a name that cannot be
/// written into a script, or a reload the engine ran but that failed.
#[derive(Debug, thiserror::Error)]
enum PushError {
    #[error(transparent)]
    Engine(#[from] QixError),
    #[error("reading the result from the store: {0}")]
    Store(#[from] store::StoreError),
    #[error("writing the load script: {0}")]
    Script(#[from] script::NameError),
    #[error("the reload failed: {0}")]
    ReloadFailed(String),
}

impl PushError {
    /// The engine's error code, if the engine answered with an error.
    fn code(&self) -> Option<i64> {
        match self {
            PushError::Engine(e) => e.code(),
            _ => None,
        }
    }

    /// Whether the engine connection is unusable after this error.
    fn breaks_connection(&self) -> bool {
        matches!(self, PushError::Engine(e) if e.breaks_connection())
    }
}

/// The longest wait between retries of a failing engine.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

fn now_iso() -> String {
    iso_micros(chrono::Utc::now().timestamp_micros())
}

/// The Qlik push of one aggregator process: its own runtime (two threads) and one
/// [`AppPush`] task per target URL.
#[derive(Clone)]
pub struct QlikHub {
    inner: Arc<HubInner>,
}

struct HubInner {
    options: QlikOptions,
    runtime: tokio::runtime::Handle,
    /// Stops the runtime's thread when the hub is finished.
    stop_runtime: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    store_uri: String,
    store_database: Option<String>,
    store: Arc<OnceCell<Arc<dyn Store>>>,
    /// By target URL: the app's state and its task.
    apps: Mutex<BTreeMap<String, RunningApp>>,
}

type RunningApp = (Arc<AppShared>, tokio::task::JoinHandle<()>);

impl std::fmt::Debug for QlikHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QlikHub").field("apps", &self.inner.apps.lock().map(|a| a.len()).ok()).finish()
    }
}

/// What a pipeline tells the orchestrators of its targets.
pub struct QlikFeed {
    pipeline: String,
    table: String,
    apps: Vec<Arc<AppShared>>,
}

/// State shared by the pipelines (writers) and one app's task (reader).
struct AppShared {
    target: QlikTarget,
    tables: Mutex<BTreeMap<String, TableState>>,
    wake: Notify,
    finishing: AtomicBool,
}

/// One pipeline's table in one app.
struct TableState {
    pipeline: String,
    /// Where the result is read from.
    store_table: String,
    /// The version of the store's result table (`None` while a new version replays
    /// into its shadow table: nothing to push until it is swapped in).
    current: Option<ResultVersion>,
    /// What the app holds, once its marker has been read on this connection.
    app_version: Option<ResultVersion>,
    marker_read: bool,
    /// Rows changed since the app's version, and when the oldest and latest change came.
    pending_rows: u64,
    pending_since: Option<Instant>,
    last_change: Option<Instant>,
    status: QlikTargetStatus,
}

impl TableState {
    fn needs_push(&self) -> bool {
        match (&self.current, &self.app_version) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(current), Some(app)) => !app.covers(current),
        }
    }
}

impl QlikHub {
    /// Starts the hub's runtime. Results are read from (and target states written to)
    /// the store at `store_uri`, opened when first needed.
    pub fn start(options: QlikOptions, store_uri: &str, store_database: Option<&str>) -> Result<QlikHub> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("qlik-push")
            .enable_all()
            .build()
            .map_err(|e| Error::internal(format!("tokio runtime: {e}")))?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("qlik-push".into())
            .spawn(move || {
                runtime.block_on(async {
                    let _ = stopped.await;
                });
                runtime.shutdown_timeout(Duration::from_secs(1));
            })
            .map_err(|e| Error::internal(format!("qlik push thread: {e}")))?;
        Ok(QlikHub {
            inner: Arc::new(HubInner {
                options,
                runtime: handle,
                stop_runtime: Mutex::new(Some(stop)),
                store_uri: store_uri.to_string(),
                store_database: store_database.map(str::to_string),
                store: Arc::new(OnceCell::new()),
                apps: Mutex::new(BTreeMap::new()),
            }),
        })
    }

    pub fn options(&self) -> &QlikOptions {
        &self.inner.options
    }

    /// Registers `pipeline`'s result (store table `store_table`) as table `table` of
    /// each target (the hub's `--qlik` targets and `extra`). A pipeline registered
    /// again (its file changed) replaces its earlier registration.
    pub fn feed(&self, pipeline: &str, table: &str, store_table: &str, extra: &[String]) -> Result<QlikFeed> {
        script::quote_name(table).map_err(|e| Error::user(format!("pipeline {pipeline}: Qlik table: {e}")))?;
        let mut urls: Vec<&String> = self.inner.options.targets.iter().chain(extra).collect();
        urls.sort();
        urls.dedup();
        let mut apps = Vec::new();
        for url in urls {
            let target = QlikTarget::parse(url).map_err(|e| Error::user(format!("pipeline {pipeline}: {e}")))?;
            let app = self.app(target);
            let status = QlikTargetStatus {
                pipeline: pipeline.to_string(),
                target: app.target.display(),
                table: table.to_string(),
                state: "connecting".into(),
                updated_at: now_iso(),
                ..Default::default()
            };
            let mut tables = app.tables.lock().expect("app tables");
            let state = TableState {
                pipeline: pipeline.to_string(),
                store_table: store_table.to_string(),
                current: None,
                app_version: None,
                marker_read: false,
                pending_rows: 0,
                pending_since: None,
                last_change: None,
                status,
            };
            if let Some(old) = tables.insert(table.to_string(), state)
                && old.pipeline != pipeline
            {
                tracing::warn!(table, app = %app.target.app, first = %old.pipeline, second = pipeline,
                    "two pipelines push the same Qlik table; the last one registered wins");
            }
            drop(tables);
            app.wake.notify_one();
            apps.push(app);
        }
        Ok(QlikFeed { pipeline: pipeline.to_string(), table: table.to_string(), apps })
    }

    /// The app's shared state, starting its task on first use.
    fn app(&self, target: QlikTarget) -> Arc<AppShared> {
        let mut apps = self.inner.apps.lock().expect("qlik apps");
        if let Some((app, _)) = apps.get(&target.url) {
            return app.clone();
        }
        let app = Arc::new(AppShared {
            target: target.clone(),
            tables: Mutex::default(),
            wake: Notify::new(),
            finishing: AtomicBool::new(false),
        });
        let push = AppPush { app: app.clone(), hub: self.inner.clone() };
        let task = self.inner.runtime.spawn(push.run());
        apps.insert(target.url, (app.clone(), task));
        app
    }

    /// Pushes what is pending to every app (waiting up to the flush timeout), then
    /// stops the hub. Changes not pushed by then are pushed at the next start: the
    /// apps' markers are behind the pipelines' versions.
    pub fn finish(&self) {
        let tasks: Vec<_> = {
            let mut apps = self.inner.apps.lock().expect("qlik apps");
            std::mem::take(&mut *apps).into_values().collect()
        };
        for (app, _) in &tasks {
            app.finishing.store(true, Ordering::SeqCst);
            app.wake.notify_one();
        }
        let timeout = self.inner.options.flush_timeout;
        let waited = self.inner.runtime.block_on(async {
            let deadline = tokio::time::Instant::now() + timeout;
            let mut unfinished = Vec::new();
            for (app, mut task) in tasks {
                if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                    task.abort();
                    unfinished.push(app.target.display());
                }
            }
            unfinished
        });
        if !waited.is_empty() {
            tracing::warn!(apps = ?waited, ?timeout, "Qlik apps not brought up to date before exit; the next start pushes what they miss");
        }
        if let Some(stop) = self.inner.stop_runtime.lock().expect("runtime stop").take() {
            let _ = stop.send(());
        }
    }
}

impl QlikFeed {
    /// The pipeline's live result is at `version` (at start: `None` while replaying).
    pub fn start(&self, version: Option<ResultVersion>) {
        self.update(|state| state.current = version.clone(), 0);
    }

    /// A micro-batch changed `rows` rows of the live result, which is now at `version`.
    pub fn changed(&self, version: ResultVersion, rows: u64) {
        self.update(|state| state.current = Some(version.clone()), rows);
    }

    fn update(&self, apply: impl Fn(&mut TableState), rows: u64) {
        let now = Instant::now();
        for app in &self.apps {
            let mut tables = app.tables.lock().expect("app tables");
            let Some(state) = tables.get_mut(&self.table).filter(|s| s.pipeline == self.pipeline) else { continue };
            apply(state);
            if state.needs_push() {
                state.pending_rows += rows;
                state.pending_since.get_or_insert(now);
                if rows > 0 {
                    state.last_change = Some(now);
                }
            }
            drop(tables);
            app.wake.notify_one();
        }
    }
}

/// The reload loop of one app.
struct AppPush {
    app: Arc<AppShared>,
    hub: Arc<HubInner>,
}

/// What the loop does next.
enum Next {
    /// Connect (or reconnect) and read the markers of newly registered tables.
    ReadMarkers,
    Reload,
    /// Nothing to do before this time (or a wake-up).
    WaitUntil(Option<Instant>),
    /// Finishing and nothing left.
    Stop,
}

/// Counts a reload of `target`'s app in the metrics, with its duration if it succeeded.
fn record_reload(target: &QlikTarget, took: Option<Duration>) {
    use crate::metrics::{AppLabel, AppOutcomeLabels, Outcome, metrics};
    let app = target.display();
    let outcome = if took.is_some() { Outcome::ok } else { Outcome::error };
    metrics().qlik_reloads.get_or_create(&AppOutcomeLabels { app: app.clone(), outcome }).inc();
    if let Some(took) = took {
        metrics().qlik_reload_duration.get_or_create(&AppLabel { app }).observe(took.as_secs_f64());
    }
}

impl AppPush {
    async fn run(self) {
        let options = QixOptions {
            headers: self.hub.options.headers.clone(),
            call_timeout: self.hub.options.call_timeout,
            reload_timeout: self.hub.options.reload_timeout,
            ..QixOptions::default()
        };
        let target = &self.app.target;
        let mut connection: Option<QixConnection> = None;
        let mut not_before = Instant::now();
        let mut backoff = Duration::from_millis(200);
        loop {
            let next = self.next(not_before);
            if let Next::WaitUntil(at) = next {
                let sleep =
                    at.map(|at| at.saturating_duration_since(Instant::now())).unwrap_or(Duration::from_secs(3600));
                tokio::select! {
                    _ = self.app.wake.notified() => {}
                    _ = tokio::time::sleep(sleep) => {}
                }
                continue;
            }
            if matches!(next, Next::Stop) {
                break;
            }
            if connection.as_ref().is_none_or(|c| c.is_closed()) {
                match QixConnection::connect(&target.url, &options).await {
                    Ok(c) => {
                        tracing::info!(target = %target.display(), "connected to the Qlik engine");
                        connection = Some(c);
                        // A new connection: read every marker again (the app may have
                        // been restored or reloaded by someone else meanwhile).
                        self.each_table(|s| s.marker_read = false);
                    }
                    Err(e) => {
                        // Finishing with the engine down: `QlikHub::finish` ends this at its deadline.
                        self.failed(&e, "connecting").await;
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                }
            }
            let c = connection.as_ref().expect("connected above");
            let result = match next {
                Next::ReadMarkers => self.read_markers(c).await,
                _ => self
                    .reload(c)
                    .await
                    .inspect(|took| record_reload(target, Some(*took)))
                    .inspect_err(|_| record_reload(target, None))
                    .map(|took| {
                        let gap = took.mul_f64(self.hub.options.pace.max(0.0)).max(self.hub.options.min_interval);
                        not_before = Instant::now() + gap;
                    }),
            };
            match result {
                Ok(()) => backoff = Duration::from_millis(200),
                Err(e) => {
                    let busy = e.code() == Some(codes::RELOAD_IN_PROGRESS);
                    if busy {
                        tracing::info!(target = %target.display(), "another reload of the app is running; waiting");
                    }
                    self.failed(&e, if busy { "pending" } else { "error" }).await;
                    if e.breaks_connection() {
                        connection = None;
                    }
                    not_before = Instant::now() + backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    fn each_table(&self, f: impl Fn(&mut TableState)) {
        self.app.tables.lock().expect("app tables").values_mut().for_each(f);
    }

    /// Decides what to do now.
    fn next(&self, not_before: Instant) -> Next {
        let o = &self.hub.options;
        let finishing = self.app.finishing.load(Ordering::SeqCst);
        let tables = self.app.tables.lock().expect("app tables");
        if tables.values().any(|s| !s.marker_read) {
            return Next::ReadMarkers;
        }
        let pending: Vec<&TableState> = tables.values().filter(|s| s.needs_push()).collect();
        if pending.is_empty() {
            return if finishing { Next::Stop } else { Next::WaitUntil(None) };
        }
        let now = Instant::now();
        let rows: u64 = pending.iter().map(|s| s.pending_rows).sum();
        let oldest = pending.iter().filter_map(|s| s.pending_since).min().unwrap_or(now);
        let latest = pending.iter().filter_map(|s| s.last_change).max();
        let idle_at = latest.map(|t| t + o.idle).unwrap_or(now);
        let age_at = oldest + o.max_delay;
        let due_at = if finishing || rows >= o.min_rows { now } else { idle_at.min(age_at) };
        let start_at = due_at.max(not_before);
        if start_at <= now { Next::Reload } else { Next::WaitUntil(Some(start_at)) }
    }

    /// The store the results are read from, opened on first use.
    async fn store(&self) -> Result<Arc<dyn Store>, store::StoreError> {
        let hub = &self.hub;
        let store = hub
            .store
            .get_or_try_init(|| async {
                let store = store::open(&hub.store_uri, hub.store_database.as_deref()).await?;
                Ok::<_, store::StoreError>(Arc::from(store))
            })
            .await?;
        Ok(store.clone())
    }

    /// Reads the marker of every table not read on this connection.
    async fn read_markers(&self, c: &QixConnection) -> Result<(), PushError> {
        let doc = c.open_app(&self.app.target.app).await?;
        let unread: Vec<String> = {
            let tables = self.app.tables.lock().expect("app tables");
            tables.iter().filter(|(_, s)| !s.marker_read).map(|(t, _)| t.clone()).collect()
        };
        for table in unread {
            // A missing marker table is an app that never got this table.
            let version = match doc.table_rows(&marker::table(&table), 1).await {
                Ok(rows) => rows.first().and_then(|row| row.get(1)).and_then(|v| ResultVersion::parse(v)),
                Err(e) if e.breaks_connection() => return Err(e.into()),
                Err(_) => None,
            };
            let mut tables = self.app.tables.lock().expect("app tables");
            if let Some(state) = tables.get_mut(&table) {
                tracing::info!(target = %self.app.target.display(), table, app_version = ?version.as_ref().map(|v| v.to_string()),
                    current = ?state.current.as_ref().map(|v| v.to_string()), "read the app's marker");
                state.app_version = version;
                state.marker_read = true;
                if state.needs_push() {
                    state.pending_since.get_or_insert(Instant::now());
                } else {
                    state.pending_rows = 0;
                    state.pending_since = None;
                }
                state.status.app_version = state.app_version.as_ref().map(|v| v.to_string());
                state.status.last_error = None;
                state.status.state = if state.needs_push() { "pending" } else { "up_to_date" }.into();
            }
        }
        self.write_statuses().await;
        Ok(())
    }

    /// One reload of every table with changes. Returns how long the engine took.
    async fn reload(&self, c: &QixConnection) -> Result<Duration, PushError> {
        struct Part {
            table: String,
            pipeline: String,
            store_table: String,
            version: ResultVersion,
            rows_pending: u64,
        }
        let parts: Vec<Part> = {
            let mut tables = self.app.tables.lock().expect("app tables");
            tables
                .iter_mut()
                .filter(|(_, s)| s.needs_push())
                .map(|(table, s)| {
                    s.status.state = "reloading".into();
                    Part {
                        table: table.clone(),
                        pipeline: s.pipeline.clone(),
                        store_table: s.store_table.clone(),
                        version: s.current.clone().expect("needs_push has a version"),
                        rows_pending: s.pending_rows,
                    }
                })
                .collect()
        };
        self.write_statuses().await;
        let store = self.store().await?;
        let pushed_at = now_iso();
        let mut script = format!("// sql-aggregator: partial reload of {} table(s), {pushed_at}\n", parts.len());
        let mut loaded = Vec::new();
        for part in &parts {
            let result = store.read_table(&part.store_table).await?.unwrap_or_default();
            script.push_str(&format!(
                "// result of pipeline {} ({})\n",
                part.pipeline.replace(char::is_control, "?"),
                part.version
            ));
            script::replace_table(&mut script, &part.table, &result.columns, &result.rows)?;
            marker::replace(&mut script, &part.table, &part.pipeline, &part.version, result.rows.len(), &pushed_at)?;
            loaded.push(result.rows.len());
        }
        let doc = c.open_app(&self.app.target.app).await?;
        let started = Instant::now();
        doc.set_script(&script).await?;
        let outcome = doc.reload_partial().await?;
        if !outcome.success {
            let errors =
                if outcome.errors.is_empty() { "no error given".to_string() } else { outcome.errors.join("; ") };
            return Err(PushError::ReloadFailed(errors));
        }
        doc.save().await?;
        let took = started.elapsed();
        let at = now_iso();
        {
            let mut tables = self.app.tables.lock().expect("app tables");
            // The engine works again: earlier errors are over.
            tables.values_mut().for_each(|s| s.status.last_error = None);
            for (part, rows) in parts.iter().zip(&loaded) {
                let Some(state) = tables.get_mut(&part.table) else { continue };
                state.app_version = Some(part.version.clone());
                state.pending_rows = state.pending_rows.saturating_sub(part.rows_pending);
                if !state.needs_push() {
                    state.pending_rows = 0;
                    state.pending_since = None;
                }
                // Changes that came during the reload wait for the next one.
                state.status.state = if state.needs_push() { "pending" } else { "up_to_date" }.into();
                let s = &mut state.status;
                s.reloads += 1;
                s.last_reload_at = Some(at.clone());
                s.last_reload_seconds = Some(took.as_secs_f64());
                s.last_reload_rows = *rows as u64;
                s.app_version = Some(part.version.to_string());
                s.last_error = None;
            }
        }
        tracing::info!(target = %self.app.target.display(), tables = parts.len(), rows = loaded.iter().sum::<usize>(),
            seconds = took.as_secs_f64(), "Qlik app reloaded and saved");
        self.write_statuses().await;
        Ok(took)
    }

    /// Notes an error in the status of every table of the app.
    async fn failed(&self, e: &(dyn std::fmt::Display + Sync), state: &str) {
        tracing::warn!(target = %self.app.target.display(), error = %e, "Qlik push");
        self.each_table(|s| {
            s.status.last_error = Some(e.to_string());
            s.status.state = state.to_string();
        });
        self.write_statuses().await;
    }

    /// Writes every table's status (with its pending rows) to the store.
    async fn write_statuses(&self) {
        let statuses: Vec<QlikTargetStatus> = {
            let mut tables = self.app.tables.lock().expect("app tables");
            tables
                .values_mut()
                .map(|s| {
                    s.status.pending_rows = s.pending_rows;
                    if s.status.state != "reloading" && s.status.last_error.is_none() {
                        s.status.state = if s.needs_push() { "pending" } else { "up_to_date" }.into();
                    }
                    s.status.updated_at = now_iso();
                    s.status.clone()
                })
                .collect()
        };
        let store = match self.store().await {
            Ok(store) => store,
            Err(e) => {
                tracing::warn!(error = %e, "cannot write the Qlik targets' status");
                return;
            }
        };
        for status in statuses {
            if let Err(e) = store.write_qlik_status(&status).await {
                tracing::warn!(error = %e, "cannot write a Qlik target's status");
                return;
            }
        }
    }
}

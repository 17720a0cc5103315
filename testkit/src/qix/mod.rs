//! A QIX engine test double: Qlik's engine API (JSON-RPC 2.0 over WebSocket), enough of
//! it to push data into an app with a load script and read it back.
//!
//! [`QixEngine::start`] listens on `ws://127.0.0.1:<port>/app/<anything>` on its own
//! multi-thread tokio runtime in a background thread; its API is synchronous (the state
//! is behind std mutexes), so sync and async tests can use it alike. Dropping it stops it.
//!
//! What it does:
//!
//! * checks every request against the enigma.js schema of the chosen engine version
//!   ([`SchemaVersion`]): envelope, handle, method of the handle's class, parameter count,
//!   names, required parameters and JSON types. A mismatch is recorded in
//!   [`QixEngine::violations`] and answered with a JSON-RPC error;
//! * implements `EngineVersion`, `OpenDoc`, `GetActiveDoc`, `CreateApp`, `GetProgress`
//!   (Global) and `SetScript`, `GetScript`, `DoReload`, `DoReloadEx`, `DoSave`,
//!   `GetTableData` (Doc); any other schema method is answered with error 20 (not
//!   implemented);
//! * runs load scripts made of `SET`/`LET`, `DROP TABLE`, comments and
//!   `[label:] [Replace|Add|Merge [Only]] [NoConcatenate] LOAD <fields> INLINE [...]`
//!   statements, with a handful of functions (see `script.rs` and `expr.rs`), full and
//!   partial reloads, and script errors reported through GetProgress;
//! * refuses a reload of an app that is already reloading (11000), as the engine does,
//!   and counts what happened ([`QixEngine::reloads`], [`QixEngine::max_concurrent_reloads`], ...);
//! * keeps one in-memory app per name shared by all sessions; only `DoSave` makes data
//!   survive [`QixEngine::stop`] (an engine process that died) or the app being unloaded
//!   when the last session that has it open ends.
//!
//! Sessions: `X-Qlik-Session: <id>` picks the session (connections with the same id share
//! it and get `SESSION_ATTACHED`); without it every connection is its own session. A
//! session ends with its last connection (no session time-to-live).

mod expr;
mod inline;
mod schema;
mod script;
mod server;

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use server::{Listener, Shared, lock};

/// Which engine the double pretends to be: selects the schema requests are checked
/// against, the version EngineVersion reports and whether scripts may use `Merge`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SchemaVersion {
    /// 12.612.0: close to the last Qlik Core images. No `Merge` prefix (script error 11002).
    #[default]
    V12_612,
    /// 12.2027.0: close to current Qlik Sense / Qlik Cloud. `Merge` is supported.
    V12_2027,
}

impl SchemaVersion {
    /// The engine version string (`qComponentVersion`).
    pub fn version(self) -> &'static str {
        match self {
            SchemaVersion::V12_612 => "12.612.0",
            SchemaVersion::V12_2027 => "12.2027.0",
        }
    }

    fn has_merge(self) -> bool {
        self == SchemaVersion::V12_2027
    }
}

#[derive(Debug, Clone)]
pub struct QixOptions {
    pub schema: SchemaVersion,
    /// How long every reload takes before its script runs (the app counts as reloading).
    pub reload_time: Duration,
    /// When set, the WebSocket upgrade needs `Authorization: Bearer <token>` (else 401).
    pub bearer_token: Option<String>,
    /// The `qSessionState` of OnConnected. `SESSION_CREATED` (the default) is the normal
    /// case (`SESSION_ATTACHED` is then sent for an existing session); any other value,
    /// e.g. `SESSION_ERROR_NO_LICENSE`, is sent and the socket closed.
    pub session_state: String,
}

impl Default for QixOptions {
    fn default() -> Self {
        QixOptions {
            schema: SchemaVersion::V12_612,
            reload_time: Duration::ZERO,
            bearer_token: None,
            session_state: "SESSION_CREATED".to_string(),
        }
    }
}

/// A value as the engine keeps it.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Cell {
    #[default]
    Null,
    Text(String),
    /// Text plus number, as the engine keeps numbers (e.g. `"42"` and 42, or a timestamp's
    /// text and its serial number).
    Dual(String, f64),
}

impl Cell {
    /// The text (None for null).
    pub fn text(&self) -> Option<&str> {
        match self {
            Cell::Null => None,
            Cell::Text(t) | Cell::Dual(t, _) => Some(t),
        }
    }

    /// The number of a dual (None for text and null).
    pub fn number(&self) -> Option<f64> {
        match self {
            Cell::Dual(_, n) => Some(*n),
            _ => None,
        }
    }
}

/// A table of an app's data model.
#[derive(Debug, Clone, PartialEq)]
pub struct QixTable {
    pub fields: Vec<String>,
    pub rows: Vec<Vec<Cell>>,
}

impl QixTable {
    /// The values of one field, in row order.
    pub fn column(&self, field: &str) -> Option<Vec<&Cell>> {
        let i = self.fields.iter().position(|f| f == field)?;
        Some(self.rows.iter().map(|row| &row[i]).collect())
    }
}

/// The running test double. See the module documentation.
pub struct QixEngine {
    shared: Arc<Shared>,
    runtime: tokio::runtime::Handle,
    port: u16,
    listener: Mutex<Option<Listener>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl QixEngine {
    /// Starts the engine on 127.0.0.1 on a free port. Panics if that is impossible (a
    /// test set-up failure).
    pub fn start(options: QixOptions) -> QixEngine {
        // The runtime lives in its own thread, so dropping the engine inside another
        // runtime (an async test) never drops a runtime in an async context.
        let (runtime_tx, runtime_rx) = std::sync::mpsc::channel();
        let (shutdown, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("qix-engine".to_string())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("qix-engine-worker")
                    .enable_all()
                    .build()
                    .expect("QIX engine runtime");
                let _ = runtime_tx.send(runtime.handle().clone());
                runtime.block_on(async {
                    let _ = shutdown_rx.await;
                });
                runtime.shutdown_timeout(Duration::from_secs(1));
            })
            .expect("spawn the QIX engine thread");
        let runtime = runtime_rx.recv().expect("QIX engine runtime started");
        let shared = Arc::new(Shared::new(options));
        let (port, listener) =
            server::listen(shared.clone(), &runtime, 0).expect("listen on 127.0.0.1 for the QIX engine");
        QixEngine {
            shared,
            runtime,
            port,
            listener: Mutex::new(Some(listener)),
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `ws://127.0.0.1:<port>/app/<app>`.
    pub fn url(&self, app: &str) -> String {
        format!("ws://127.0.0.1:{}/app/{app}", self.port)
    }

    /// Changes how long reloads that start from now on take.
    pub fn set_reload_time(&self, reload_time: Duration) {
        *lock(&self.shared.reload_time) = reload_time;
    }

    /// Creates an existing (saved) empty app; no-op if it exists.
    pub fn create_app(&self, app: &str) {
        self.shared.lock().apps.entry(app.to_string()).or_default();
    }

    /// A table of the app's current in-memory data (its saved data when no session has
    /// it open).
    pub fn table(&self, app: &str, table: &str) -> Option<QixTable> {
        let state = self.shared.lock();
        let t = state.apps.get(app)?.live.tables.iter().find(|t| t.name == table)?;
        Some(QixTable { fields: t.fields.clone(), rows: t.rows.clone() })
    }

    /// The names of the app's current tables, in creation order.
    pub fn table_names(&self, app: &str) -> Vec<String> {
        let state = self.shared.lock();
        state.apps.get(app).map(|a| a.live.tables.iter().map(|t| t.name.clone()).collect()).unwrap_or_default()
    }

    fn app_stat<T: Default>(&self, app: &str, f: impl FnOnce(&server::App) -> T) -> T {
        self.shared.lock().apps.get(app).map(f).unwrap_or_default()
    }

    /// Reloads that ran on the app (succeeded or failed), not counting refused ones.
    pub fn reloads(&self, app: &str) -> u64 {
        self.app_stat(app, |a| a.reloads)
    }

    /// Reloads refused with 11000 (reload in progress).
    pub fn refused_reloads(&self, app: &str) -> u64 {
        self.app_stat(app, |a| a.refused)
    }

    /// The highest number of reloads ever running at once on the app.
    pub fn max_concurrent_reloads(&self, app: &str) -> u32 {
        self.app_stat(app, |a| a.max_running)
    }

    pub fn saves(&self, app: &str) -> u64 {
        self.app_stat(app, |a| a.saves)
    }

    /// The last script SetScript gave the app (kept across `stop()`, unlike the app's own
    /// unsaved script).
    pub fn last_script(&self, app: &str) -> Option<String> {
        self.app_stat(app, |a| a.last_script.clone())
    }

    /// How many requests of that method arrived (all apps, valid or not).
    pub fn requests(&self, method: &str) -> u64 {
        self.shared.lock().requests.get(method).copied().unwrap_or(0)
    }

    /// WebSocket connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.lock().connections
    }

    /// The handshake headers of every upgrade request, refused ones included (lower-case
    /// names, in arrival order).
    pub fn headers_seen(&self) -> Vec<Vec<(String, String)>> {
        self.shared.lock().headers.clone()
    }

    /// Every request that did not match the schema, with the reason.
    pub fn violations(&self) -> Vec<String> {
        self.shared.lock().violations.clone()
    }

    /// Stops listening and drops every open connection (no closing handshake); apps keep
    /// only their last DoSave'd state, sessions are gone, running reloads are lost — like
    /// an engine process that died. The counters are kept.
    pub fn stop(&self) {
        if let Some(listener) = lock(&self.listener).take() {
            listener.stop();
        }
        self.shared.engine_died();
    }

    /// Listens again on the same port (no-op if listening). Retries for a few seconds if
    /// the port is busy, then panics.
    pub fn start_again(&self) {
        let mut listener = lock(&self.listener);
        if listener.is_some() {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match server::listen(self.shared.clone(), &self.runtime, self.port) {
                Ok((_, started)) => {
                    *listener = Some(started);
                    return;
                }
                Err(e) if Instant::now() > deadline => {
                    panic!("QIX engine cannot listen on port {} again: {e}", self.port)
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// `stop()` then `start_again()`.
    pub fn restart(&self) {
        self.stop();
        self.start_again();
    }
}

impl Drop for QixEngine {
    fn drop(&mut self) {
        if let Some(listener) = lock(&self.listener).take() {
            listener.stop();
        }
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

//! A client of the Qlik engine's QIX API: JSON-RPC 2.0 over a WebSocket.
//!
//! [`QixConnection::connect`] opens the socket (with the target's headers: a Bearer
//! token for Qlik Sense / Qlik Cloud, `X-Qlik-Session`), waits for the engine's
//! `OnConnected` notification and fails on its error states. Requests carry an id; a
//! reader task hands each response to the request waiting for it, so several requests
//! can be in flight on one socket (a reload and the `GetProgress` calls watching it).
//! Every call has a timeout; a socket that closes fails every waiting call at once.
//!
//! [`QixConnection::open_app`] finds the app's Doc handle: the session's active doc,
//! else `OpenDoc` (creating the app if the engine does not have it).
//! [`Doc`] wraps the calls a push needs: `SetScript`, `DoReloadEx` (partial, with its
//! progress and errors read through `GetProgress`), `DoSave` and `GetTableData`.
//!
//! Error codes come from the schema's `LocalizedErrorCode` (see `../shared/qix/`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value as Json, json};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};

/// The Global object's handle.
const GLOBAL: i64 = -1;

/// How long to wait for the engine's `OnConnected` notification.
const ON_CONNECTED_WAIT: Duration = Duration::from_secs(5);

/// Error codes of the engine that the push acts on.
pub mod codes {
    pub const ABORTED: i64 = 15;
    pub const APP_ALREADY_OPEN: i64 = 1002;
    pub const APP_NOT_FOUND: i64 = 1003;
    pub const APP_INVALID: i64 = 1007;
    pub const RELOAD_IN_PROGRESS: i64 = 11000;
    pub const METHOD_NOT_FOUND: i64 = -32601;
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum QixError {
    #[error("cannot connect to the Qlik engine at {url}: {message}")]
    Connect { url: String, message: String },
    #[error("the Qlik engine at {url} refused the session: {state}")]
    Session { url: String, state: String },
    #[error("Qlik engine: {method} failed with error {code} ({message}{parameter})")]
    Rpc { method: String, code: i64, message: String, parameter: String },
    #[error("Qlik engine: {method} got no answer within {after:?}")]
    Timeout { method: String, after: Duration },
    #[error("Qlik engine: the connection closed ({0})")]
    Closed(String),
    #[error("Qlik engine: unexpected answer to {method}: {message}")]
    Protocol { method: String, message: String },
}

impl QixError {
    /// The engine's error code, if the engine answered with an error.
    pub fn code(&self) -> Option<i64> {
        match self {
            QixError::Rpc { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether the connection is unusable after this error (reconnect before going on).
    pub fn breaks_connection(&self) -> bool {
        !matches!(self, QixError::Rpc { .. } | QixError::Protocol { .. })
    }
}

pub type Result<T, E = QixError> = std::result::Result<T, E>;

/// How a connection behaves.
#[derive(Debug, Clone)]
pub struct QixOptions {
    /// HTTP headers of the WebSocket handshake (`Authorization`, `X-Qlik-Session`, …).
    pub headers: Vec<(String, String)>,
    /// Longest wait for the socket and `OnConnected`, and for any call but a reload.
    pub call_timeout: Duration,
    /// Longest wait for a reload.
    pub reload_timeout: Duration,
    /// How often a running reload's progress is read.
    pub progress_interval: Duration,
}

impl Default for QixOptions {
    fn default() -> Self {
        QixOptions {
            headers: Vec::new(),
            call_timeout: Duration::from_secs(30),
            reload_timeout: Duration::from_secs(600),
            progress_interval: Duration::from_millis(500),
        }
    }
}

type Waiting = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Json>>>>>;

/// One WebSocket to an engine.
pub struct QixConnection {
    url: String,
    outgoing: mpsc::UnboundedSender<Message>,
    waiting: Waiting,
    next_id: AtomicU64,
    closed: Arc<AtomicBool>,
    options: QixOptions,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for QixConnection {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// The outcome of a reload.
#[derive(Debug, Clone, Default)]
pub struct ReloadOutcome {
    pub success: bool,
    /// Script errors the engine reported (with their line).
    pub errors: Vec<String>,
    /// Progress lines (e.g. `Replace table t: 10 rows`).
    pub log: Vec<String>,
}

impl QixConnection {
    /// Connects and waits for `OnConnected`; an error state of the session fails.
    pub async fn connect(url: &str, options: &QixOptions) -> Result<QixConnection> {
        let fail = |message: String| QixError::Connect { url: url.to_string(), message };
        let mut request = url.into_client_request().map_err(|e| fail(e.to_string()))?;
        for (name, value) in &options.headers {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| fail(format!("header {name:?}: {e}")))?;
            let mut value = HeaderValue::from_str(value).map_err(|e| fail(format!("header {name}: {e}")))?;
            value.set_sensitive(true);
            request.headers_mut().insert(name, value);
        }
        let connecting = tokio_tungstenite::connect_async(request);
        let (socket, _) = tokio::time::timeout(options.call_timeout, connecting)
            .await
            .map_err(|_| fail(format!("no answer within {:?}", options.call_timeout)))?
            .map_err(|e| fail(e.to_string()))?;
        let (mut sink, mut stream) = socket.split();
        let (outgoing, mut to_send) = mpsc::unbounded_channel::<Message>();
        tokio::spawn(async move {
            while let Some(message) = to_send.recv().await {
                if sink.send(message).await.is_err() {
                    break;
                }
            }
            let _ = sink.close().await;
        });
        let waiting: Waiting = Arc::default();
        let closed = Arc::new(AtomicBool::new(false));
        let (connected_tx, connected_rx) = oneshot::channel::<String>();
        let reader = {
            let (waiting, closed) = (waiting.clone(), closed.clone());
            tokio::spawn(async move {
                let mut connected = Some(connected_tx);
                let reason = loop {
                    let text = match stream.next().await {
                        Some(Ok(Message::Text(text))) => text,
                        Some(Ok(Message::Close(frame))) => {
                            break frame.map(|f| f.reason.to_string()).unwrap_or_else(|| "closed by the engine".into());
                        }
                        Some(Ok(_)) => continue,
                        Some(Err(e)) => break e.to_string(),
                        None => break "closed by the engine".into(),
                    };
                    let Ok(message) = serde_json::from_str::<Json>(text.as_str()) else { continue };
                    if let Some(id) = message.get("id").and_then(Json::as_u64) {
                        let answer = waiting.lock().expect("waiting calls").remove(&id);
                        if let Some(answer) = answer {
                            let _ = answer.send(Ok(message));
                        }
                    } else if message.get("method").and_then(Json::as_str) == Some("OnConnected") {
                        let state = message["params"]["qSessionState"].as_str().unwrap_or_default().to_string();
                        if let Some(connected) = connected.take() {
                            let _ = connected.send(state);
                        }
                    }
                };
                closed.store(true, Ordering::SeqCst);
                for (_, answer) in waiting.lock().expect("waiting calls").drain() {
                    let _ = answer.send(Err(QixError::Closed(reason.clone())));
                }
            })
        };
        let connection = QixConnection {
            url: url.to_string(),
            outgoing,
            waiting,
            next_id: AtomicU64::new(1),
            closed,
            options: options.clone(),
            reader,
        };
        // Engines send `OnConnected` first; one that does not within a few seconds is
        // used anyway (enigma.js does not wait for it either) unless it closed.
        let wait = options.call_timeout.min(ON_CONNECTED_WAIT);
        let state = match tokio::time::timeout(wait, connected_rx).await {
            Ok(Ok(state)) => state,
            Ok(Err(_)) => return Err(fail("the engine closed the connection before OnConnected".into())),
            Err(_) if connection.is_closed() => return Err(fail("the engine closed the connection".into())),
            Err(_) => {
                tracing::debug!(url, "no OnConnected from the engine; going on");
                "SESSION_CREATED".to_string()
            }
        };
        match state.as_str() {
            "SESSION_CREATED" | "SESSION_ATTACHED" => Ok(connection),
            _ => Err(QixError::Session { url: url.to_string(), state }),
        }
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Sends a request and returns its id and a receiver of the answer.
    fn send(&self, handle: i64, method: &str, params: Json) -> Result<(u64, oneshot::Receiver<Result<Json>>)> {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().expect("waiting calls").insert(id, tx);
        let request = json!({"jsonrpc": "2.0", "id": id, "handle": handle, "method": method, "params": params});
        if self.is_closed() || self.outgoing.send(Message::Text(request.to_string().into())).is_err() {
            self.waiting.lock().expect("waiting calls").remove(&id);
            return Err(QixError::Closed(format!("{} is gone", self.url)));
        }
        Ok((id, rx))
    }

    /// Waits for the answer to request `id`; its `result`, or the engine's error.
    async fn answer(
        &self,
        id: u64,
        method: &str,
        answer: oneshot::Receiver<Result<Json>>,
        timeout: Duration,
    ) -> Result<Json> {
        let message = match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(message)) => message?,
            Ok(Err(_)) => return Err(QixError::Closed(format!("{} is gone", self.url))),
            Err(_) => {
                self.waiting.lock().expect("waiting calls").remove(&id);
                return Err(QixError::Timeout { method: method.to_string(), after: timeout });
            }
        };
        if let Some(error) = message.get("error") {
            let parameter = error["parameter"].as_str().filter(|p| !p.is_empty());
            return Err(QixError::Rpc {
                method: method.to_string(),
                code: error["code"].as_i64().unwrap_or_default(),
                message: error["message"].as_str().unwrap_or_default().to_string(),
                parameter: parameter.map(|p| format!(": {p}")).unwrap_or_default(),
            });
        }
        Ok(message.get("result").cloned().unwrap_or(Json::Null))
    }

    /// One call with the usual timeout. An aborted request (error 15) is sent again once.
    pub async fn call(&self, handle: i64, method: &str, params: Json) -> Result<Json> {
        let mut aborted_once = false;
        loop {
            let (id, answer) = self.send(handle, method, params.clone())?;
            match self.answer(id, method, answer, self.options.call_timeout).await {
                Err(e) if e.code() == Some(codes::ABORTED) && !aborted_once => aborted_once = true,
                other => return other,
            }
        }
    }

    /// The engine's version, e.g. `12.612.0`.
    pub async fn engine_version(&self) -> Result<String> {
        let result = self.call(GLOBAL, "EngineVersion", json!([])).await?;
        Ok(result["qVersion"]["qComponentVersion"].as_str().unwrap_or_default().to_string())
    }

    /// The app's Doc: the session's active doc if it is open already, else `OpenDoc`
    /// (with its data); an app the engine does not have is created first.
    pub async fn open_app(&self, app: &str) -> Result<Doc<'_>> {
        let doc = |result: Json| -> Result<Doc<'_>> {
            let handle = result["qReturn"]["qHandle"].as_i64().ok_or_else(|| QixError::Protocol {
                method: "OpenDoc".into(),
                message: format!("no qReturn.qHandle in {result}"),
            })?;
            Ok(Doc { connection: self, handle })
        };
        match self.call(GLOBAL, "GetActiveDoc", json!([])).await {
            Ok(result) => return doc(result),
            Err(e) if e.code() == Some(codes::APP_INVALID) => {}
            Err(e) => return Err(e),
        }
        let open = || self.call(GLOBAL, "OpenDoc", json!([app, "", "", "", false]));
        match open().await {
            Ok(result) => doc(result),
            // Opened meanwhile in this session (another connection of it).
            Err(e) if e.code() == Some(codes::APP_ALREADY_OPEN) => {
                doc(self.call(GLOBAL, "GetActiveDoc", json!([])).await?)
            }
            Err(e) if e.code() == Some(codes::APP_NOT_FOUND) => {
                tracing::info!(app, url = %self.url, "the Qlik app does not exist; creating it");
                let created = self.call(GLOBAL, "CreateApp", json!([app])).await?;
                if created["qSuccess"] == json!(false) {
                    tracing::warn!(app, "CreateApp did not succeed; opening anyway");
                }
                doc(open().await?)
            }
            Err(e) => Err(e),
        }
    }
}

/// An open app.
pub struct Doc<'a> {
    connection: &'a QixConnection,
    handle: i64,
}

impl Doc<'_> {
    pub async fn set_script(&self, script: &str) -> Result<()> {
        self.connection.call(self.handle, "SetScript", json!([script])).await.map(|_| ())
    }

    pub async fn save(&self) -> Result<()> {
        self.connection.call(self.handle, "DoSave", json!([""])).await.map(|_| ())
    }

    /// A partial reload (`DoReloadEx`, else `DoReload` on engines without it), its
    /// progress read meanwhile and its errors after.
    pub async fn reload_partial(&self) -> Result<ReloadOutcome> {
        let connection = self.connection;
        let params = json!([{"qMode": 0, "qPartial": true, "qDebug": false, "qReloadId": ""}]);
        let (id, answer) = connection.send(self.handle, "DoReloadEx", params)?;
        let mut answer = Box::pin(connection.answer(id, "DoReloadEx", answer, connection.options.reload_timeout));
        let mut outcome = ReloadOutcome::default();
        let result = loop {
            tokio::select! {
                result = &mut answer => break result,
                _ = tokio::time::sleep(connection.options.progress_interval) => {
                    // Progress is for the log and the errors; a failed read is not a failed reload.
                    if let Ok(progress) = self.progress(id).await {
                        outcome.absorb(&progress);
                    }
                }
            }
        };
        outcome.success = match result {
            Ok(result) => result["qResult"]["qSuccess"].as_bool().unwrap_or(false),
            Err(e) if e.code() == Some(codes::METHOD_NOT_FOUND) => {
                let result = connection
                    .answer_call(self.handle, "DoReload", json!([0, true, false]), connection.options.reload_timeout)
                    .await?;
                result["qReturn"].as_bool().unwrap_or(false)
            }
            Err(e) => return Err(e),
        };
        // The last messages and the errors of a failed reload.
        if let Ok(progress) = self.progress(id).await {
            outcome.absorb(&progress);
        }
        Ok(outcome)
    }

    async fn progress(&self, request: u64) -> Result<Json> {
        let result = self.connection.call(GLOBAL, "GetProgress", json!([request])).await?;
        Ok(result["qProgressData"].clone())
    }

    /// Up to `rows` rows of a table, as text; the engine's first row (field names) is skipped.
    pub async fn table_rows(&self, table: &str, rows: u64) -> Result<Vec<Vec<String>>> {
        let result = self.connection.call(self.handle, "GetTableData", json!([0, rows + 1, false, table])).await?;
        let data = result["qData"].as_array().cloned().unwrap_or_default();
        Ok(data
            .iter()
            .skip(1)
            .map(|row| {
                let cells = row["qValue"].as_array().cloned().unwrap_or_default();
                cells.iter().map(|c| c["qText"].as_str().unwrap_or_default().to_string()).collect()
            })
            .collect())
    }
}

impl QixConnection {
    /// A call with its own timeout.
    async fn answer_call(&self, handle: i64, method: &str, params: Json, timeout: Duration) -> Result<Json> {
        let (id, answer) = self.send(handle, method, params)?;
        self.answer(id, method, answer, timeout).await
    }
}

impl ReloadOutcome {
    /// Takes the new messages and errors of a `qProgressData`.
    fn absorb(&mut self, progress: &Json) {
        for key in ["qPersistentProgress", "qTransientProgress"] {
            for line in progress[key].as_str().unwrap_or_default().lines().filter(|l| !l.trim().is_empty()) {
                if !self.log.iter().any(|seen| seen == line) {
                    self.log.push(line.to_string());
                }
            }
        }
        for error in progress["qErrorData"].as_array().into_iter().flatten() {
            let text = error["qErrorString"].as_str().unwrap_or_default();
            let line = error["qLine"].as_i64().map(|n| format!("line {n}: ")).unwrap_or_default();
            let message = format!("{line}{text}");
            if !self.errors.contains(&message) {
                self.errors.push(message);
            }
        }
    }
}

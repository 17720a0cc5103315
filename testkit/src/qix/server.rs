//! The WebSocket server: handshake, sessions, the JSON-RPC request loop, the schema check
//! and the implemented methods.
//!
//! Locking: all engine state sits behind one std `Mutex` (`Shared::state`), held only for
//! short, non-async sections, so the synchronous `QixEngine` API can read it from any
//! thread. Each request runs in its own task (a slow reload must not hold up a
//! GetProgress on the same connection); one writer task per connection sends the replies.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Callback, ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;

use super::schema::{Param, Schema};
use super::script::{self, ScriptError, Table};
use super::{QixOptions, SchemaVersion};

/// The handle of the (only) Doc a session can have open.
const DOC_HANDLE: i64 = 1;

// Error codes (`enums.LocalizedErrorCode` in the schema, and JSON-RPC's own).
const LOCERR_GENERIC_ABORTED: i64 = 15;
const LOCERR_GENERIC_NOT_IMPLEMENTED: i64 = 20;
const LOCERR_APP_ALREADY_OPEN: i64 = 1002;
const LOCERR_APP_NOT_FOUND: i64 = 1003;
const LOCERR_APP_INVALID: i64 = 1007;
const LOCERR_RELOAD_IN_PROGRESS: i64 = 11000;
const LOCERR_RELOAD_TABLE_X_NOT_FOUND: i64 = 11001;
const JSON_RPC_PARSE_ERROR: i64 = -32700;
const JSON_RPC_INVALID_REQUEST: i64 = -32600;
const JSON_RPC_METHOD_NOT_FOUND: i64 = -32601;
const JSON_RPC_INVALID_PARAMS: i64 = -32602;

/// Top-level request members a client may send (enigma.js adds `delta`; the engine also
/// knows `return_empty` and `cont`).
const REQUEST_KEYS: &[&str] = &["jsonrpc", "id", "method", "handle", "params", "delta", "return_empty", "cont"];

/// Locks a mutex, ignoring poisoning (a panicking test thread must not wedge the engine).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What an app holds: its script and its tables.
#[derive(Debug, Default, Clone)]
pub(crate) struct AppData {
    pub script: String,
    pub tables: Vec<Table>,
}

/// One app. `live` is the in-memory app all sessions share, `saved` its last DoSave.
#[derive(Debug, Default)]
pub(crate) struct App {
    pub live: AppData,
    pub saved: AppData,
    /// Sessions that have it open; when the last one goes, the app is unloaded.
    open_sessions: u32,
    /// Bumped whenever `live` is reset, so a reload that started before is discarded.
    generation: u64,
    running: u32,
    pub max_running: u32,
    pub reloads: u64,
    pub refused: u64,
    pub saves: u64,
    pub last_script: Option<String>,
}

impl App {
    /// Unloads the app from memory: only the saved state remains.
    fn unload(&mut self) {
        self.live = self.saved.clone();
        self.open_sessions = 0;
        self.generation += 1;
        self.running = 0;
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum SessionKey {
    /// `X-Qlik-Session: <id>`: shared by every connection with that id.
    Header(String),
    /// No header: the connection is its own session.
    Connection(u64),
}

#[derive(Debug, Default)]
struct Session {
    connections: u32,
    doc: Option<String>,
}

/// Everything the engine knows, plus what the tests observe.
#[derive(Debug, Default)]
pub(crate) struct State {
    pub apps: HashMap<String, App>,
    sessions: HashMap<SessionKey, Session>,
    pub requests: HashMap<String, u64>,
    pub connections: u64,
    pub headers: Vec<Vec<(String, String)>>,
    pub violations: Vec<String>,
    /// Bumped by `stop()`: work begun before belongs to a dead engine process.
    epoch: u64,
}

impl State {
    /// What an engine process that died leaves behind: saved apps, no sessions.
    pub(crate) fn engine_died(&mut self) {
        self.epoch += 1;
        self.sessions.clear();
        self.apps.values_mut().for_each(App::unload);
    }
}

pub(crate) struct Shared {
    schema: &'static Schema,
    version: SchemaVersion,
    bearer_token: Option<String>,
    session_state: String,
    pub reload_time: Mutex<Duration>,
    pub state: Mutex<State>,
    /// Wakes every connection when the engine stops (its value mirrors `State::epoch`).
    epoch: watch::Sender<u64>,
}

impl Shared {
    pub(crate) fn new(options: QixOptions) -> Shared {
        Shared {
            schema: super::schema::schema(options.schema),
            version: options.schema,
            bearer_token: options.bearer_token,
            session_state: options.session_state,
            reload_time: Mutex::new(options.reload_time),
            state: Mutex::new(State::default()),
            epoch: watch::Sender::new(0),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Stops all work of the current engine "process" (after the listener is closed).
    pub(crate) fn engine_died(&self) {
        self.lock().engine_died();
        self.epoch.send_modify(|e| *e += 1);
    }
}

// ---------------------------------------------------------------------------------------
// Listener

/// A running accept loop.
pub(crate) struct Listener {
    stop: oneshot::Sender<()>,
    done: std::sync::mpsc::Receiver<()>,
}

impl Listener {
    /// Stops accepting and waits until the listening socket is closed (so the port can be
    /// bound again at once).
    pub(crate) fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.done.recv_timeout(Duration::from_secs(5));
    }
}

/// Binds 127.0.0.1:`port` (0 = any) and starts accepting on `runtime`.
pub(crate) fn listen(
    shared: Arc<Shared>,
    runtime: &tokio::runtime::Handle,
    port: u16,
) -> std::io::Result<(u16, Listener)> {
    let listener = std::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))?;
    listener.set_nonblocking(true)?;
    let port = listener.local_addr()?.port();
    let (stop, stop_rx) = oneshot::channel();
    let (done_tx, done) = std::sync::mpsc::channel();
    runtime.spawn(async move {
        accept_loop(shared, listener, stop_rx).await;
        // The listener has been dropped: the port is free.
        let _ = done_tx.send(());
    });
    Ok((port, Listener { stop, done }))
}

async fn accept_loop(shared: Arc<Shared>, listener: std::net::TcpListener, mut stop: oneshot::Receiver<()>) {
    let Ok(listener) = TcpListener::from_std(listener) else { return };
    loop {
        tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    // Subscribe now, so a stop() right after the accept still reaches it.
                    let epoch = shared.epoch.subscribe();
                    tokio::spawn(connection(shared.clone(), stream, epoch));
                }
                // E.g. out of file descriptors: back off instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
        }
    }
}

/// Aborts a task when dropped (the writer must die with its connection, even while
/// request tasks still hold its channel).
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

// ---------------------------------------------------------------------------------------
// Connection

/// Reload progress of one reload, for GetProgress.
#[derive(Debug)]
struct Progress {
    started_at: Instant,
    finished_at: Option<Instant>,
    lines: Vec<String>,
    /// Lines already returned: qPersistentProgress only carries new ones, as in the engine.
    reported: usize,
    errors: Vec<ScriptError>,
}

impl Progress {
    fn new() -> Progress {
        Progress { started_at: Instant::now(), finished_at: None, lines: Vec::new(), reported: 0, errors: Vec::new() }
    }

    fn report(&mut self) -> Value {
        let finished = self.finished_at.is_some();
        let elapsed = self.finished_at.unwrap_or_else(Instant::now) - self.started_at;
        let new_lines = self.lines[self.reported..].join("\n");
        self.reported = self.lines.len();
        let errors: Vec<Value> = self
            .errors
            .iter()
            .map(|e| {
                json!({
                    "qErrorString": e.message,
                    "qLineEnd": e.line_text,
                    "qLine": e.line,
                    "qErrorDataCode": e.code,
                })
            })
            .collect();
        let done = if finished { self.lines.len() } else { 0 };
        progress_json(true, finished, done, u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX), new_lines, errors)
    }
}

fn progress_json(started: bool, finished: bool, done: usize, millis: u64, lines: String, errors: Vec<Value>) -> Value {
    json!({"qProgressData": {
        "qStarted": started,
        "qFinished": finished,
        "qCompleted": done,
        "qTotal": done,
        "qKB": 0,
        "qMillisecs": millis,
        "qUserInteractionWanted": false,
        "qPersistentProgress": lines,
        "qTransientProgress": if started && !finished { "Reloading" } else { "" },
        "qErrorData": errors,
        "qPersistentProgressMessages": [],
        "qTransientProgressMessage": {"qMessageCode": 0, "qMessageParameters": []},
    }})
}

#[derive(Default)]
struct Reloads {
    by_request: HashMap<i64, Arc<Mutex<Progress>>>,
    latest: Option<Arc<Mutex<Progress>>>,
}

/// What the request tasks of one connection share.
struct Conn {
    session: SessionKey,
    epoch: u64,
    out: mpsc::UnboundedSender<Message>,
    reloads: Mutex<Reloads>,
}

/// Runs one connection until the client leaves or the engine stops.
async fn connection(shared: Arc<Shared>, stream: TcpStream, mut epoch: watch::Receiver<u64>) {
    let accepted_in = *epoch.borrow_and_update();
    tokio::select! {
        // stop(): drop the socket without a closing handshake, like a dying process.
        _ = epoch.changed() => {}
        () = serve(shared.clone(), stream, accepted_in) => {}
    }
}

async fn serve(shared: Arc<Shared>, stream: TcpStream, accepted_in: u64) {
    let mut session_header = None;
    let callback = Handshake { shared: &shared, session_header: &mut session_header };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else { return };

    let (conn, state) = {
        let mut state = shared.lock();
        if state.epoch != accepted_in {
            return; // The engine stopped during the handshake.
        }
        state.connections += 1;
        let key = match session_header {
            Some(id) => SessionKey::Header(id),
            None => SessionKey::Connection(state.connections),
        };
        let session_state = if shared.session_state != "SESSION_CREATED" {
            // An error state: no session is made.
            shared.session_state.clone()
        } else {
            let session = state.sessions.entry(key.clone()).or_default();
            session.connections += 1;
            if session.connections > 1 { "SESSION_ATTACHED" } else { "SESSION_CREATED" }.to_string()
        };
        ((key, state.epoch), session_state)
    };
    let on_connected = json!({"jsonrpc": "2.0", "method": "OnConnected", "params": {"qSessionState": state}});
    let sent = ws.send(Message::text(on_connected.to_string())).await.is_ok();
    if shared.session_state != "SESSION_CREATED" {
        // An error state: close the socket (and give the client a moment to answer the close).
        let _ = ws.close(None).await;
        let _ =
            tokio::time::timeout(Duration::from_secs(1), async { while let Some(Ok(_)) = ws.next().await {} }).await;
        return;
    }
    if !sent {
        cleanup(&shared, &conn.0, conn.1);
        return;
    }

    let (mut sink, mut source) = ws.split();
    let (out, mut rx) = mpsc::unbounded_channel::<Message>();
    let _writer = AbortOnDrop(tokio::spawn(async move {
        while let Some(message) = rx.recv().await {
            if sink.send(message).await.is_err() {
                break;
            }
        }
    }));
    let conn = Arc::new(Conn { session: conn.0, epoch: conn.1, out, reloads: Mutex::new(Reloads::default()) });
    while let Some(message) = source.next().await {
        match message {
            Ok(Message::Text(text)) => {
                let (shared, conn) = (shared.clone(), conn.clone());
                tokio::spawn(async move {
                    let reply = handle(&shared, &conn, text.as_str()).await;
                    let _ = conn.out.send(Message::text(reply));
                });
            }
            Ok(Message::Binary(_)) => {
                shared.lock().violations.push("binary frame: the engine only takes JSON text frames".to_string());
            }
            Ok(Message::Close(_)) | Err(_) => break,
            // Ping/pong are answered by tungstenite.
            Ok(_) => {}
        }
    }
    cleanup(&shared, &conn.session, conn.epoch);
}

/// The HTTP upgrade: records the headers, checks the path and the bearer token, and
/// picks up `X-Qlik-Session`.
struct Handshake<'a> {
    shared: &'a Shared,
    session_header: &'a mut Option<String>,
}

impl Callback for Handshake<'_> {
    fn on_request(self, request: &Request, response: Response) -> Result<Response, ErrorResponse> {
        let headers: Vec<(String, String)> = request
            .headers()
            .iter()
            .map(|(name, value)| (name.as_str().to_string(), String::from_utf8_lossy(value.as_bytes()).into_owned()))
            .collect();
        let header = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
        let authorization = header("authorization");
        *self.session_header = header("x-qlik-session");
        self.shared.lock().headers.push(headers);

        let refuse = |status: StatusCode, body: &str| {
            let mut response = ErrorResponse::new(Some(body.to_string()));
            *response.status_mut() = status;
            response
        };
        let path = request.uri().path();
        if path != "/app" && !path.starts_with("/app/") {
            return Err(refuse(StatusCode::NOT_FOUND, "Not found"));
        }
        if let Some(token) = &self.shared.bearer_token
            && authorization.as_deref() != Some(format!("Bearer {token}").as_str())
        {
            return Err(refuse(StatusCode::UNAUTHORIZED, "Unauthorized"));
        }
        Ok(response)
    }
}

/// A connection ended: leave the session; the last connection ends it, and an app no
/// session has open any more is unloaded (only its saved state remains).
fn cleanup(shared: &Shared, key: &SessionKey, epoch: u64) {
    let mut state = shared.lock();
    if state.epoch != epoch {
        return; // stop() already reset everything.
    }
    let Some(session) = state.sessions.get_mut(key) else { return };
    session.connections = session.connections.saturating_sub(1);
    if session.connections > 0 {
        return;
    }
    let doc = state.sessions.remove(key).and_then(|s| s.doc);
    if let Some(app) = doc.and_then(|name| state.apps.get_mut(&name)) {
        app.open_sessions = app.open_sessions.saturating_sub(1);
        if app.open_sessions == 0 {
            app.unload();
        }
    }
}

// ---------------------------------------------------------------------------------------
// Requests

#[derive(Debug)]
struct RpcError {
    code: i64,
    parameter: String,
    message: String,
}

impl RpcError {
    fn new(code: i64, parameter: impl Into<String>, message: impl Into<String>) -> RpcError {
        RpcError { code, parameter: parameter.into(), message: message.into() }
    }

    fn aborted() -> RpcError {
        RpcError::new(LOCERR_GENERIC_ABORTED, "", "Request aborted")
    }
}

fn reply(id: &Value, result: Result<Value, RpcError>) -> String {
    match result {
        Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
        Err(e) => json!({
            "jsonrpc": "2.0",
            "id": id,
            "error": {"code": e.code, "parameter": e.parameter, "message": e.message},
        }),
    }
    .to_string()
}

/// The parts of a request that passed the checks.
struct Call<'a> {
    id: i64,
    method: &'a str,
    /// Doc requests: the session's app.
    app: Option<String>,
    inputs: &'a [Param],
    params: Option<&'a Value>,
}

impl<'a> Call<'a> {
    /// A parameter by name, given positionally or by name.
    fn arg(&self, name: &str) -> Option<&'a Value> {
        match self.params? {
            Value::Array(values) => values.get(self.inputs.iter().position(|p| p.name == name)?),
            Value::Object(values) => values.get(name),
            _ => None,
        }
    }

    fn str_arg(&self, name: &str) -> &'a str {
        self.arg(name).and_then(Value::as_str).unwrap_or("")
    }

    fn bool_arg(&self, name: &str) -> bool {
        self.arg(name).and_then(Value::as_bool).unwrap_or(false)
    }

    fn int_arg(&self, name: &str) -> i64 {
        self.arg(name).and_then(Value::as_f64).map_or(0, |n| n as i64)
    }
}

/// Handles one text frame and returns the reply.
async fn handle(shared: &Shared, conn: &Conn, text: &str) -> String {
    let request: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            shared.lock().violations.push(format!("not JSON ({e}): {text}"));
            return reply(&Value::Null, Err(RpcError::new(JSON_RPC_PARSE_ERROR, "", "Parse error")));
        }
    };
    let id = request.get("id").cloned().unwrap_or(Value::Null);
    let call = {
        let mut state = shared.lock();
        match check(shared.schema, &mut state, conn, &request) {
            Ok(call) => call,
            Err((error, violation)) => {
                state.violations.push(violation);
                return reply(&id, Err(error));
            }
        }
    };
    reply(&id, dispatch(shared, conn, &call).await)
}

/// The schema check. On failure: the error to answer and the violation to record.
fn check<'a>(
    schema: &'a Schema,
    state: &mut State,
    conn: &Conn,
    request: &'a Value,
) -> Result<Call<'a>, (RpcError, String)> {
    let method = request.get("method").and_then(Value::as_str);
    if let Some(method) = method {
        *state.requests.entry(method.to_string()).or_default() += 1;
    }
    let label = format!(
        "{} (id {}, handle {})",
        method.unwrap_or("<no method>"),
        request.get("id").map_or("none".to_string(), Value::to_string),
        request.get("handle").map_or("none".to_string(), Value::to_string),
    );
    let invalid = |code: i64, reason: String| (RpcError::new(code, "", reason.clone()), format!("{label}: {reason}"));
    let Some(object) = request.as_object() else {
        return Err(invalid(JSON_RPC_INVALID_REQUEST, "request is not a JSON object".to_string()));
    };
    if let Some(key) = object.keys().find(|k| !REQUEST_KEYS.contains(&k.as_str())) {
        return Err(invalid(JSON_RPC_INVALID_REQUEST, format!("unknown request member {key}")));
    }
    if request.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(invalid(JSON_RPC_INVALID_REQUEST, "jsonrpc must be \"2.0\"".to_string()));
    }
    let Some(id) = request.get("id").and_then(Value::as_i64) else {
        return Err(invalid(JSON_RPC_INVALID_REQUEST, "id must be an integer".to_string()));
    };
    let Some(method) = method else {
        return Err(invalid(JSON_RPC_INVALID_REQUEST, "method must be a string".to_string()));
    };
    let Some(handle) = request.get("handle").and_then(Value::as_i64) else {
        return Err(invalid(JSON_RPC_INVALID_PARAMS, "handle must be an integer".to_string()));
    };
    let doc = state.sessions.get(&conn.session).and_then(|s| s.doc.clone());
    let (class, app) = match (handle, doc) {
        (-1, _) => ("Global", None),
        (DOC_HANDLE, Some(app)) if state.epoch == conn.epoch => ("Doc", Some(app)),
        _ => return Err(invalid(JSON_RPC_INVALID_PARAMS, format!("unknown handle {handle}"))),
    };
    let Some(inputs) = schema.method(class, method) else {
        return Err(invalid(JSON_RPC_METHOD_NOT_FOUND, format!("no method {method} in class {class}")));
    };
    let params = request.get("params");
    if let Err(reason) = Schema::check_params(inputs, params) {
        return Err(invalid(JSON_RPC_INVALID_PARAMS, reason));
    }
    Ok(Call { id, method, app, inputs, params })
}

async fn dispatch(shared: &Shared, conn: &Conn, call: &Call<'_>) -> Result<Value, RpcError> {
    if let Some(app) = &call.app {
        return match call.method {
            "SetScript" => with_app(shared, conn, app, |a| {
                a.live.script = call.str_arg("qScript").to_string();
                a.last_script = Some(a.live.script.clone());
                Ok(json!({}))
            }),
            "GetScript" => with_app(shared, conn, app, |a| Ok(json!({"qScript": a.live.script}))),
            "DoSave" => with_app(shared, conn, app, |a| {
                a.saved = a.live.clone();
                a.saves += 1;
                Ok(json!({}))
            }),
            "GetTableData" => with_app(shared, conn, app, |a| table_data(a, call)),
            "DoReload" => {
                let success = reload(shared, conn, app, call.id, call.bool_arg("qPartial")).await?;
                Ok(json!({"qReturn": success}))
            }
            "DoReloadEx" => {
                let partial = call.arg("qParams").and_then(|p| p.get("qPartial")).and_then(Value::as_bool);
                let success = reload(shared, conn, app, call.id, partial.unwrap_or(false)).await?;
                Ok(json!({"qResult": {"qSuccess": success, "qScriptLogFile": "", "qEndedWithMemoryConstraint": false}}))
            }
            _ => Err(not_implemented(call.method)),
        };
    }
    match call.method {
        "EngineVersion" => Ok(json!({"qVersion": {"qComponentVersion": shared.schema.version}})),
        "GetActiveDoc" => {
            let state = shared.lock();
            let doc = state.sessions.get(&conn.session).and_then(|s| s.doc.clone());
            match doc.filter(|_| state.epoch == conn.epoch) {
                Some(app) => Ok(doc_handle(&app)),
                None => Err(RpcError::new(LOCERR_APP_INVALID, "", "App invalid")),
            }
        }
        "OpenDoc" => open_doc(shared, conn, call.str_arg("qDocName"), call.bool_arg("qNoData")),
        "CreateApp" => {
            let name = call.str_arg("qAppName");
            let mut state = shared.lock();
            let created = !state.apps.contains_key(name);
            if created {
                state.apps.insert(name.to_string(), App::default());
            }
            Ok(json!({"qSuccess": created, "qAppId": name}))
        }
        "GetProgress" => {
            let requested = call.int_arg("qRequestId");
            let progress = {
                let reloads = lock(&conn.reloads);
                if requested == 0 { reloads.latest.clone() } else { reloads.by_request.get(&requested).cloned() }
            };
            Ok(match progress {
                Some(progress) => lock(&progress).report(),
                None => progress_json(false, false, 0, 0, String::new(), Vec::new()),
            })
        }
        _ => Err(not_implemented(call.method)),
    }
}

fn not_implemented(method: &str) -> RpcError {
    RpcError::new(LOCERR_GENERIC_NOT_IMPLEMENTED, method, "Not implemented by the QIX test double")
}

fn doc_handle(app: &str) -> Value {
    json!({"qReturn": {"qType": "Doc", "qHandle": DOC_HANDLE, "qGenericId": app}})
}

/// Runs `f` on the session's app, unless the engine stopped since the request arrived.
fn with_app(
    shared: &Shared,
    conn: &Conn,
    app: &str,
    f: impl FnOnce(&mut App) -> Result<Value, RpcError>,
) -> Result<Value, RpcError> {
    let mut state = shared.lock();
    if state.epoch != conn.epoch {
        return Err(RpcError::aborted());
    }
    f(state.apps.get_mut(app).ok_or_else(|| RpcError::new(LOCERR_APP_INVALID, "", "App invalid"))?)
}

fn open_doc(shared: &Shared, conn: &Conn, name: &str, no_data: bool) -> Result<Value, RpcError> {
    let mut state = shared.lock();
    if state.epoch != conn.epoch {
        return Err(RpcError::aborted());
    }
    if state.sessions.get(&conn.session).is_some_and(|s| s.doc.is_some()) {
        return Err(RpcError::new(LOCERR_APP_ALREADY_OPEN, name, "App already open"));
    }
    let Some(app) = state.apps.get_mut(name) else {
        return Err(RpcError::new(LOCERR_APP_NOT_FOUND, name, "App not found"));
    };
    if app.open_sessions == 0 {
        // Load it from its saved state (other sessions would share the live one).
        app.unload();
        if no_data {
            app.live.tables.clear();
        }
    }
    app.open_sessions += 1;
    if let Some(session) = state.sessions.get_mut(&conn.session) {
        session.doc = Some(name.to_string());
    }
    Ok(doc_handle(name))
}

/// NaN and infinities travel as strings.
fn number_json(n: f64) -> Value {
    if n.is_nan() {
        json!("NaN")
    } else if n.is_infinite() {
        json!(if n > 0.0 { "Infinity" } else { "-Infinity" })
    } else {
        json!(n)
    }
}

fn table_data(app: &App, call: &Call<'_>) -> Result<Value, RpcError> {
    let name = call.str_arg("qTableName");
    let Some(table) = app.live.tables.iter().find(|t| t.name == name) else {
        return Err(RpcError::new(LOCERR_RELOAD_TABLE_X_NOT_FOUND, name, format!("Table not found: {name}")));
    };
    let offset = usize::try_from(call.int_arg("qOffset")).unwrap_or(0);
    let count = usize::try_from(call.int_arg("qRows")).unwrap_or(0);
    let text_cell = |text: &str| json!({"qText": text, "qIsNumeric": false, "qNumber": "NaN"});
    let header = json!({"qValue": table.fields.iter().map(|f| text_cell(f)).collect::<Vec<_>>()});
    let rows = table.rows.iter().skip(offset).take(count).map(|row| {
        let values: Vec<Value> = row
            .iter()
            .map(|cell| match cell {
                super::Cell::Null => text_cell("-"),
                super::Cell::Text(t) => text_cell(t),
                super::Cell::Dual(t, n) => json!({"qText": t, "qIsNumeric": true, "qNumber": number_json(*n)}),
            })
            .collect();
        json!({"qValue": values})
    });
    Ok(json!({"qData": std::iter::once(header).chain(rows).collect::<Vec<_>>()}))
}

/// DoReload / DoReloadEx: refused with 11000 while the app reloads; otherwise waits the
/// configured reload time, runs the script on a copy of the tables and keeps the result
/// only if it succeeded. Returns whether it succeeded.
async fn reload(shared: &Shared, conn: &Conn, app_name: &str, id: i64, partial: bool) -> Result<bool, RpcError> {
    let generation = {
        let mut state = shared.lock();
        if state.epoch != conn.epoch {
            return Err(RpcError::aborted());
        }
        let app = state.apps.get_mut(app_name).ok_or_else(|| RpcError::new(LOCERR_APP_INVALID, "", "App invalid"))?;
        if app.running > 0 {
            app.refused += 1;
            return Err(RpcError::new(LOCERR_RELOAD_IN_PROGRESS, "", "Reload in progress"));
        }
        app.running += 1;
        app.max_running = app.max_running.max(app.running);
        app.reloads += 1;
        app.generation
    };
    let progress = Arc::new(Mutex::new(Progress::new()));
    {
        let mut reloads = lock(&conn.reloads);
        reloads.by_request.insert(id, progress.clone());
        reloads.latest = Some(progress.clone());
    }
    let wait = *lock(&shared.reload_time);
    tokio::time::sleep(wait).await;

    // Run on a copy of the current tables, unless the engine stopped or the app was
    // unloaded meanwhile (its generation changed): then the reload is aborted.
    let (script, mut tables) = {
        let state = shared.lock();
        match state.apps.get(app_name).filter(|a| a.generation == generation) {
            Some(app) => (app.live.script.clone(), app.live.tables.clone()),
            None => {
                drop(state);
                finish(&progress, Vec::new(), Some(aborted_error()));
                return Err(RpcError::aborted());
            }
        }
    };
    let mut lines = Vec::new();
    let result = script::run(&script, &mut tables, partial, shared.version.has_merge(), &mut lines);
    let mut state = shared.lock();
    let Some(app) = state.apps.get_mut(app_name).filter(|a| a.generation == generation) else {
        drop(state);
        finish(&progress, lines, Some(aborted_error()));
        return Err(RpcError::aborted());
    };
    app.running -= 1;
    let success = result.is_ok();
    if success {
        app.live.tables = tables;
    }
    drop(state);
    finish(&progress, lines, result.err());
    Ok(success)
}

fn aborted_error() -> ScriptError {
    ScriptError {
        code: LOCERR_GENERIC_ABORTED,
        line: 0,
        message: "Reload aborted".to_string(),
        line_text: String::new(),
    }
}

fn finish(progress: &Mutex<Progress>, mut lines: Vec<String>, error: Option<ScriptError>) {
    let mut progress = lock(progress);
    if let Some(error) = &error {
        lines.push(format!("Error: {} (line {})", error.message, error.line));
    }
    progress.lines.extend(lines);
    progress.errors.extend(error);
    progress.finished_at = Some(Instant::now());
}

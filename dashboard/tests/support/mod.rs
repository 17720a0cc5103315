//! Shared by the dashboard's tests: a headless Chromium driven over the DevTools
//! protocol (started and stopped by PID), and a dashboard served on a free port.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Headless Chromium (Debian's `chromium`, or `CHROMIUM_BIN`) with one page.
pub struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    socket: Socket,
    session: String,
    next_id: u64,
    /// After [`Browser::answer_auth`]: what to type into the login prompt (`None`: cancel it).
    login: Option<(String, String)>,
    /// Whether requests are intercepted (to answer login prompts).
    intercepting: bool,
    /// The login prompts the browser raised (DevTools `AuthChallenge`s).
    pub auth_challenges: Vec<Value>,
}

impl Browser {
    pub async fn start() -> Browser {
        let profile = tempfile::tempdir().unwrap();
        // CHROMIUM_BIN, else `chromium` on PATH, else installed from Debian (as root).
        let binary = testkit::tools::chromium().display().to_string();
        let child = Command::new(&binary)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--remote-debugging-port=0",
                "--window-size=1280,900",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {binary} (Debian: apt-get install chromium): {e}"));
        // Chromium writes its DevTools port and browser path into the profile.
        let active = profile.path().join("DevToolsActivePort");
        let deadline = Instant::now() + Duration::from_secs(30);
        let text = loop {
            if let Ok(text) = std::fs::read_to_string(&active)
                && text.lines().count() >= 2
            {
                break text;
            }
            assert!(Instant::now() < deadline, "chromium did not open its DevTools port");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let mut lines = text.lines();
        let (port, path) = (lines.next().unwrap(), lines.next().unwrap());
        let (socket, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}{path}")).await.unwrap();
        let mut browser = Browser {
            child,
            _profile: profile,
            socket,
            session: String::new(),
            next_id: 0,
            login: None,
            intercepting: false,
            auth_challenges: Vec::new(),
        };
        let target = browser.call("Target.createTarget", json!({"url": "about:blank"})).await;
        let attached =
            browser.call("Target.attachToTarget", json!({"targetId": target["targetId"], "flatten": true})).await;
        browser.session = attached["sessionId"].as_str().unwrap().to_string();
        browser.call("Page.enable", json!({})).await;
        browser.call("Runtime.enable", json!({})).await;
        browser
    }

    /// Sends a DevTools command (to the page once attached) and returns its result.
    /// Events that arrive meanwhile are answered (see [`Browser::answer_auth`]).
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        match self.try_call(method, params).await {
            Ok(result) => result,
            Err(reply) => panic!("{method}: {reply}"),
        }
    }

    /// [`Browser::call`], with the browser's error as `Err` (a page navigating away
    /// while a command runs, say).
    async fn try_call(&mut self, method: &str, params: Value) -> Result<Value, Value> {
        let id = self.send(method, params).await;
        loop {
            let Some(Ok(Message::Text(text))) = self.socket.next().await else { continue };
            let reply: Value = serde_json::from_str(&text).unwrap();
            if reply["id"] == id {
                return match reply.get("error") {
                    Some(_) => Err(reply),
                    None => Ok(reply["result"].clone()),
                };
            }
            self.on_event(&reply).await;
        }
    }

    /// Sends a DevTools command without waiting for its result; returns its id.
    async fn send(&mut self, method: &str, params: Value) -> u64 {
        self.next_id += 1;
        let mut message = json!({"id": self.next_id, "method": method, "params": params});
        if !self.session.is_empty() {
            message["sessionId"] = json!(self.session);
        }
        self.socket.send(Message::text(message.to_string())).await.unwrap();
        self.next_id
    }

    /// From now on, answers the browser's login prompt (HTTP auth) with `login`, or
    /// cancels it with `None`, as a person would. Every request of the page is then
    /// paused by DevTools until continued: they are continued while a command runs
    /// (`wait_for` runs one every 100 ms).
    pub async fn answer_auth(&mut self, login: Option<(&str, &str)>) {
        if !self.intercepting {
            self.call("Fetch.enable", json!({"handleAuthRequests": true, "patterns": [{"urlPattern": "*"}]})).await;
            self.intercepting = true;
        }
        self.login = login.map(|(user, password)| (user.to_string(), password.to_string()));
        self.auth_challenges.clear();
    }

    async fn on_event(&mut self, event: &Value) {
        let request_id = event["params"]["requestId"].clone();
        match event["method"].as_str() {
            Some("Fetch.requestPaused") => {
                self.send("Fetch.continueRequest", json!({"requestId": request_id})).await;
            }
            Some("Fetch.authRequired") => {
                self.auth_challenges.push(event["params"]["authChallenge"].clone());
                let answer = match &self.login {
                    Some((user, password)) => {
                        json!({"response": "ProvideCredentials", "username": user, "password": password})
                    }
                    None => json!({"response": "CancelAuth"}),
                };
                self.send("Fetch.continueWithAuth", json!({"requestId": request_id, "authChallengeResponse": answer}))
                    .await;
            }
            _ => {}
        }
    }

    /// The value of a JavaScript expression in the page (promises awaited).
    pub async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .call("Runtime.evaluate", json!({"expression": expression, "returnByValue": true, "awaitPromise": true}))
            .await;
        assert!(result.get("exceptionDetails").is_none(), "{expression}: {result}");
        result["result"]["value"].clone()
    }

    /// Opens `url` and waits until the document has loaded.
    pub async fn goto(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url})).await;
        self.wait_for("document.readyState === 'complete' && location.href !== 'about:blank'").await;
    }

    /// Waits (up to 20 s) until `condition` is true in the page. While the page is
    /// navigating, the condition may not be evaluable (no document yet, or the
    /// browser drops the evaluation): that counts as not yet.
    pub async fn wait_for(&mut self, condition: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let params = json!({"expression": format!("!!({condition})"), "returnByValue": true, "awaitPromise": true});
            let result = self.try_call("Runtime.evaluate", params).await;
            if result.is_ok_and(|r| r.get("exceptionDetails").is_none() && r["result"]["value"] == json!(true)) {
                return;
            }
            assert!(Instant::now() < deadline, "gave up waiting in the browser for: {condition}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs `action` (which makes the page navigate) and waits until the next page has
    /// loaded and `condition` holds on it.
    pub async fn navigate_by(&mut self, action: &str, condition: &str) {
        self.eval("window.__previous_page = true").await;
        self.eval(action).await;
        self.wait_for(&format!("!window.__previous_page && document.readyState === 'complete' && ({condition})")).await;
    }

    /// Saves a PNG of the page under `target/test-artifacts/dashboard/<name>.png`.
    pub async fn screenshot(&mut self, name: &str) -> PathBuf {
        let shot = self.call("Page.captureScreenshot", json!({"format": "png"})).await;
        let png = base64::engine::general_purpose::STANDARD.decode(shot["data"].as_str().unwrap()).unwrap();
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts/dashboard");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A dashboard on a free port of this process's runtime, until the returned sender is dropped.
pub async fn serve(state: dashboard::AppState) -> (String, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(dashboard::run(listener, state, async {
        let _ = stopped.await;
    }));
    (url, stop)
}

/// A runtime of two threads: the dashboard serves while the test makes requests or
/// drives the browser.
pub fn server_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// A results store in an SQLite file in `dir`.
pub async fn sqlite_store(dir: &std::path::Path) -> Arc<dyn store::Store> {
    let uri = format!("sqlite:{}", dir.join("results.sqlite").display());
    Arc::from(store::open(&uri, None).await.unwrap())
}

/// A dashboard's state: open (no credentials), its store reads measured.
pub fn state(store: Arc<dyn store::Store>, alerts: Arc<dashboard::alerts::AlertsView>) -> dashboard::AppState {
    let metrics = Arc::new(dashboard::metrics::Metrics::new());
    let store = Arc::new(dashboard::metrics::MeteredStore::new(store, metrics.clone()));
    let access = Arc::new(dashboard::auth::Access::Open);
    dashboard::AppState { store, refresh_seconds: 0.5, alerts, access, metrics, panels: Default::default() }
}

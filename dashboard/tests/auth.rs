//! The credentials, over HTTP: every kind of route (pages, API, assets, `/metrics`, a
//! path no route serves) answers 401 with the browser's challenge, and no data, to a
//! request without credentials or with wrong ones, and serves it with the password
//! (basic auth) or the token (bearer); `/healthz` stays open. Then the binary itself:
//! it refuses to listen beyond loopback without credentials (naming the flags), runs
//! open with `--allow-unauthenticated` (or its variable) and says so in its log,
//! enforces a password from `DASHBOARD_PASSWORD` or `--password-file` and a token from
//! `DASHBOARD_TOKEN` or `--token-file`, and never shows a secret in its debug log or
//! in `--help`.

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use dashboard::alerts::AlertsView;
use dashboard::auth::{Access, Credentials, Secret};
use reqwest::StatusCode;
use store::{ColumnType, PipelineStatus, ResultColumn, ResultDelta, ResultRow, Store, Value};

const USER: &str = "admin";
/// With a colon and spaces: only the first colon of basic auth separates the user.
const PASSWORD: &str = "correct horse:battery staple";
const TOKEN: &str = "scrape-token-5f1c9e";
/// What the pages would show: it must never reach an unauthenticated client.
const SECRET_SQL: &str = "SELECT confidential_column FROM SOURCE";

/// One pipeline, `per_item`, with a result and its SQL in the status.
async fn fill(store: &dyn Store) {
    let columns = [
        ResultColumn { name: "item_id".into(), column_type: ColumnType::Integer, role: None },
        ResultColumn { name: "n".into(), column_type: ColumnType::Integer, role: None },
    ];
    let status = PipelineStatus {
        name: "per_item".into(),
        state: "running".into(),
        sql_text: Some(SECRET_SQL.into()),
        events_in: 5,
        events_ok: 5,
        ..Default::default()
    };
    let rows = (1..=5).map(|i| ResultRow { id: i.to_string(), values: vec![Value::Integer(i), Value::Integer(i)] });
    let delta = ResultDelta { upserts: rows.collect(), deletes: vec![] };
    store.prepare_result_table("per_item", "per_item", &columns, true).await.unwrap();
    store.write_batch("per_item", &columns, &delta, &status, &[], &[]).await.unwrap();
}

/// Every kind of route, and what it answers with valid credentials.
const ROUTES: [(&str, u16); 11] = [
    ("/", 200),
    ("/pipelines/per_item", 200),
    ("/pipelines/per_item/bad", 200),
    ("/alerts", 200),
    ("/api/pipelines", 200),
    ("/api/pipelines/per_item/rows", 200),
    ("/api/alerts", 200),
    ("/assets/app.js", 200),
    ("/assets/app.css", 200),
    ("/metrics", 200),
    ("/no/such/page", 404),
];

#[test]
fn every_route_but_health_requires_the_password_or_the_token() {
    let dir = tempfile::tempdir().unwrap();
    support::server_runtime().block_on(async {
        let uri = format!("sqlite:{}", dir.path().join("results.sqlite").display());
        let store: Arc<dyn Store> = Arc::from(store::open(&uri, None).await.unwrap());
        fill(store.as_ref()).await;
        let password = Secret::new(PASSWORD, "test").unwrap();
        let token = Secret::new(TOKEN, "test").unwrap();
        let credentials = Credentials::new(USER, Some(password), Some(token)).unwrap().unwrap();
        let state = dashboard::AppState {
            access: Arc::new(Access::Protected(credentials)),
            ..support::state(store, Arc::new(AlertsView::default()))
        };
        let (url, _stop) = support::serve(state).await;
        let client = reqwest::Client::new();
        let basic = |user: &str, password: &str| {
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
        };
        let refused = [
            ("no credentials", None),
            ("a wrong password", Some(basic(USER, "correct horse"))),
            ("a wrong user", Some(basic("root", PASSWORD))),
            ("the token as password", Some(basic(USER, TOKEN))),
            ("a wrong token", Some(format!("Bearer {TOKEN}x"))),
            ("the password as token", Some(format!("Bearer {PASSWORD}"))),
            ("an undecodable header", Some("Basic not*base64".to_string())),
            ("an unknown scheme", Some(format!("Token {TOKEN}"))),
        ];
        for (path, served) in ROUTES {
            for (what, authorization) in &refused {
                let mut request = client.get(format!("{url}{path}"));
                if let Some(value) = authorization {
                    request = request.header("authorization", value);
                }
                let response = request.send().await.unwrap();
                assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path} with {what}");
                let challenges: Vec<&str> =
                    response.headers().get_all("www-authenticate").iter().map(|v| v.to_str().unwrap()).collect();
                assert_eq!(
                    challenges,
                    ["Basic realm=\"dashboard\", charset=\"UTF-8\"", "Bearer realm=\"dashboard\""],
                    "{path} with {what}: the browser's prompt, and the token's scheme"
                );
                let body = response.text().await.unwrap();
                for data in ["per_item", "confidential_column", "item_id", "refreshSeconds", "dashboard_http"] {
                    assert!(!body.contains(data), "{path} with {what} showed {data}: {body}");
                }
            }
            let with_password = client.get(format!("{url}{path}")).basic_auth(USER, Some(PASSWORD)).send().await;
            assert_eq!(with_password.unwrap().status().as_u16(), served, "{path} with the password");
            let with_token = client.get(format!("{url}{path}")).bearer_auth(TOKEN).send().await.unwrap();
            assert_eq!(with_token.status().as_u16(), served, "{path} with the token");
        }
        // What the credentials open is the data itself.
        let page = client.get(format!("{url}/pipelines/per_item")).bearer_auth(TOKEN).send().await.unwrap();
        assert!(page.text().await.unwrap().contains("confidential_column"));
        // The health check needs nothing (container health checks carry no credentials).
        let health = client.get(format!("{url}/healthz")).send().await.unwrap();
        assert_eq!(health.status(), StatusCode::OK);
        assert_eq!(health.json::<serde_json::Value>().await.unwrap()["status"], "ok");
    });
}

/// A run's command-line arguments and environment variables.
type Args<'a> = &'a [&'a str];
type Env<'a> = &'a [(&'a str, &'a str)];

/// The dashboard binary with only `env` in its environment (none of the test's own).
fn dashboard(store: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dashboard"));
    command.env_clear().arg("--store").arg(format!("sqlite:{}", store.display())).args(args);
    command.envs(env.iter().copied()).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    command
}

/// A running dashboard binary, killed when dropped; its log is read as it comes.
struct Running {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    log: Vec<String>,
}

impl Running {
    fn start(mut command: Command) -> Running {
        let mut child = command.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (send, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = send.send(line);
            }
        });
        Running { child, lines, log: Vec::new() }
    }

    /// Waits for the "listening" line and returns the port it listens on.
    fn port(&mut self) -> u16 {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let line = self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now()));
            let line =
                line.unwrap_or_else(|_| panic!("the dashboard did not start listening:\n{}", self.log.join("\n")));
            self.log.push(line.clone());
            // `… dashboard listening store=… url=http://0.0.0.0:<port>` (colour codes or not).
            if line.contains("dashboard listening") {
                let url = line.split_once("http://").unwrap().1;
                let port = url.split_once(':').unwrap().1;
                return port.split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap();
            }
        }
    }

    /// Stops the binary; its whole log.
    fn stop(mut self) -> String {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.log.extend(self.lines.iter());
        self.log.join("\n")
    }
}

/// The status of a GET of `path` on 127.0.0.1:`port`, without credentials.
fn status_of(port: u16, path: &str) -> u16 {
    let response = support::server_runtime().block_on(reqwest::get(format!("http://127.0.0.1:{port}{path}")));
    response.unwrap().status().as_u16()
}

/// Runs a binary that must exit by itself: (success, its log).
fn exits(mut command: Command) -> (bool, String) {
    let mut child = command.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the dashboard did not exit (it should have refused to start)");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut log = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut log).unwrap();
    (status.success(), log)
}

#[test]
fn the_binary_refuses_to_listen_beyond_loopback_without_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("results.sqlite");
    for listen in ["0.0.0.0:0", "[::]:0"] {
        let (ok, log) = exits(dashboard(&store, &["--listen", listen], &[]));
        assert!(!ok, "{listen}: started without credentials:\n{log}");
        for named in [listen, "DASHBOARD_PASSWORD", "--password-file", "DASHBOARD_TOKEN", "--allow-unauthenticated"] {
            assert!(log.contains(named), "{listen}: the refusal names {named}:\n{log}");
        }
    }
    // An empty secret, a secret given twice, a user basic auth cannot carry: refused,
    // each naming what is wrong.
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let empty_arg = empty.to_str().unwrap();
    let cases: [(Args, Env, &str); 3] = [
        (&["--password-file", empty_arg], &[], &format!("{} is empty", empty.display())),
        (&["--token-file", empty_arg], &[("DASHBOARD_TOKEN", TOKEN)], "both DASHBOARD_TOKEN and --token-file"),
        (&["--auth-user", "a:b"], &[("DASHBOARD_PASSWORD", PASSWORD)], "--auth-user \"a:b\""),
    ];
    for (args, env, expected) in cases {
        let (ok, log) = exits(dashboard(&store, args, env));
        assert!(!ok && log.contains(expected), "{args:?}: expected {expected}:\n{log}");
        assert!(!log.contains(PASSWORD) && !log.contains(TOKEN), "no secret in the error:\n{log}");
    }
}

#[test]
fn the_binary_runs_open_on_loopback_or_when_told_to() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("results.sqlite");
    let runs: [(Args, Env); 4] = [
        (&["--listen", "127.0.0.1:0"], &[]),
        (&["--listen", "localhost:0"], &[]),
        (&["--listen", "0.0.0.0:0", "--allow-unauthenticated"], &[]),
        (&["--listen", "0.0.0.0:0"], &[("DASHBOARD_ALLOW_UNAUTHENTICATED", "true")]),
    ];
    for (args, env) in runs {
        let mut running = Running::start(dashboard(&store, args, env));
        let port = running.port();
        let response = status_of(port, "/api/pipelines");
        let log = running.stop();
        assert_eq!(response, 200, "{args:?} {env:?}:\n{log}");
        let warned = log.contains("WARN") && log.contains("--allow-unauthenticated");
        let everywhere = args.contains(&"0.0.0.0:0");
        assert_eq!(warned, everywhere, "{args:?} {env:?}: a warning exactly when it serves beyond loopback:\n{log}");
        assert!(!log.contains("\u{1b}["), "no colour codes when stderr is not a terminal:\n{log}");
    }
}

#[test]
fn the_binary_enforces_secrets_from_variables_and_files_and_never_logs_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("results.sqlite");
    // Files as `echo … > file` and Docker secrets write them: with a trailing newline.
    let (password_file, token_file) = (dir.path().join("password"), dir.path().join("token"));
    std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let (password_file, token_file) = (password_file.to_str().unwrap(), token_file.to_str().unwrap());
    let debug = ("RUST_LOG", "debug");
    let runs: [(Args, Env); 2] = [
        (&["--listen", "0.0.0.0:0"], &[("DASHBOARD_PASSWORD", PASSWORD), ("DASHBOARD_TOKEN", TOKEN), debug]),
        (
            &["--listen", "0.0.0.0:0", "--password-file", password_file],
            &[("DASHBOARD_TOKEN_FILE", token_file), ("DASHBOARD_AUTH_USER", USER), debug],
        ),
    ];
    let wrong = "wrong-guess-41";
    for (args, env) in runs {
        let mut running = Running::start(dashboard(&store, args, env));
        let port = running.port();
        let statuses = support::server_runtime().block_on(async {
            let client = reqwest::Client::new();
            let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
            let get = |request: reqwest::RequestBuilder| async { request.send().await.unwrap().status().as_u16() };
            [
                get(client.get(url("/api/pipelines"))).await,
                get(client.get(url("/api/pipelines")).basic_auth(USER, Some(wrong))).await,
                get(client.get(url("/api/pipelines")).bearer_auth(wrong)).await,
                get(client.get(url("/api/pipelines")).basic_auth(USER, Some(PASSWORD))).await,
                get(client.get(url("/metrics")).bearer_auth(TOKEN)).await,
                get(client.get(url("/healthz"))).await,
            ]
        });
        let log = running.stop();
        assert_eq!(statuses, [401, 401, 401, 200, 200, 200], "{args:?}:\n{log}");
        assert!(log.contains("credentials required"), "the start says credentials are required:\n{log}");
        assert!(log.contains("DEBUG"), "the log is at debug level:\n{log}");
        assert!(log.contains("request with wrong credentials refused"), "refusals are logged:\n{log}");
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
        for secret in [PASSWORD, TOKEN, &encoded, wrong] {
            assert!(!log.contains(secret), "{secret:?} in the log of {args:?}:\n{log}");
        }
    }
}

#[test]
fn help_shows_the_flags_and_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("DASHBOARD_PASSWORD", PASSWORD),
        ("DASHBOARD_TOKEN", TOKEN),
        ("DASHBOARD_STORE", "mongodb://app:store-password-77@mongo:27017/db"),
        ("DASHBOARD_WEBHOOK", "https://hooks.example/secret-hook-path"),
    ];
    let mut command = dashboard(&dir.path().join("r.sqlite"), &["--help"], &env);
    command.stdout(Stdio::piped());
    let output = command.output().unwrap();
    let help = String::from_utf8(output.stdout).unwrap();
    assert!(output.status.success());
    for flag in ["--auth-user", "--password-file", "DASHBOARD_PASSWORD", "--token-file", "--allow-unauthenticated"] {
        assert!(help.contains(flag), "{flag} in --help:\n{help}");
    }
    for secret in [PASSWORD, TOKEN, "store-password-77", "secret-hook-path"] {
        assert!(!help.contains(secret), "{secret} in --help:\n{help}");
    }
}

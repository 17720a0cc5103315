//! Every page and API route over HTTP, against both stores holding the same known data:
//! a windowed result over three hours of event time, a keyed result, a single-row
//! result, and a bad record whose text is markup.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;

use store::{ColumnType, PipelineStatus, RejectedRecord, ResultColumn, ResultDelta, ResultRow, Store, Value};

/// 2026-01-01T00:00:00Z in microseconds.
const T0: i64 = 1_767_225_600_000_000;
const MINUTE: i64 = 60_000_000;

fn column(name: &str, column_type: ColumnType) -> ResultColumn {
    ResultColumn { name: name.into(), column_type }
}

fn window(minute: i64) -> Value {
    Value::Struct(vec![
        ("start".into(), Value::Timestamp(T0 + minute * MINUTE)),
        ("end".into(), Value::Timestamp(T0 + (minute + 5) * MINUTE)),
    ])
}

async fn write(store: &dyn Store, name: &str, columns: &[ResultColumn], rows: Vec<ResultRow>, bad: &[RejectedRecord]) {
    let status = PipelineStatus {
        name: name.into(),
        sql_file: format!("sql/{name}.sql"),
        sql_hash: "0123456789abcdef".into(),
        sql_text: (name == "per_item").then(|| format!("SELECT <b>avg</b> FROM SOURCE -- {name}")),
        // `totals` sets its own result table (`-- target:` in its file).
        result_table: if name == "totals" { "all_time_totals".into() } else { name.into() },
        state: "running".into(),
        events_in: 100 + bad.len() as u64,
        events_ok: 100,
        events_bad: bad.len() as u64,
        ..Default::default()
    };
    store.prepare_result_table(name, &status.result_table, columns, true).await.unwrap();
    let delta = ResultDelta { upserts: rows, deletes: vec![] };
    store.write_batch(&status.result_table, columns, &delta, &status, bad, &[]).await.unwrap();
}

/// Known data: `per_window` has 36 windows (3 hours) × 2 types; `per_item` 5 items;
/// `totals` one row.
async fn fill(store: &dyn Store) {
    let columns = [
        column("window", ColumnType::Window),
        column("interaction_type", ColumnType::Text),
        column("interaction_count", ColumnType::Integer),
    ];
    let rows = (0..36)
        .flat_map(|w| {
            ["click", "view"].into_iter().map(move |t| ResultRow {
                id: format!("{w:02}-{t}"),
                values: vec![window(w * 5), Value::Text(t.into()), Value::Integer(if t == "view" { 10 } else { w })],
            })
        })
        .collect();
    let bad = [RejectedRecord {
        source_offset: "f:3".into(),
        raw: "<script>alert(1)</script>".into(),
        reason: "not JSON".into(),
    }];
    write(store, "per_window", &columns, rows, &bad).await;
    let columns = [column("item_id", ColumnType::Integer), column("avg_interactions", ColumnType::Real)];
    let rows = (1..=5)
        .map(|i| ResultRow { id: i.to_string(), values: vec![Value::Integer(i), Value::Real(i as f64 * 1.5)] })
        .collect();
    write(store, "per_item", &columns, rows, &[]).await;
    let columns = [column("average", ColumnType::Real)];
    write(store, "totals", &columns, vec![ResultRow { id: "all".into(), values: vec![Value::Real(42.25)] }], &[]).await;
}

/// A GET over a plain socket: (status code, content type, body).
fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let content_type = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-type: ").map(str::to_string))
        .unwrap_or_default();
    // Bodies come chunked or with a length; the assertions only look for text in them.
    (status, content_type, body.to_string())
}

fn json(addr: SocketAddr, path: &str) -> serde_json::Value {
    let (status, content_type, body) = get(addr, path);
    assert_eq!(status, 200, "{path}: {body}");
    assert!(content_type.starts_with("application/json"), "{path}: {content_type}");
    let start = body.find(['{', '[']).unwrap();
    let end = body.rfind(['}', ']']).unwrap();
    serde_json::from_str(&body[start..=end]).unwrap()
}

fn check_every_route(store: Arc<dyn Store>) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(fill(store.as_ref()));
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    // One alert rule, evaluated once: the latest window's largest count (35) is above 30.
    let rules = dashboard::alerts::rules::parse(
        "[[rule]]\nname = \"busy\"\npipeline = \"per_window\"\nvalue = \"interaction_count\"\ncondition = \"above\"\nthreshold = 30\n",
        "alerts.toml",
    )
    .unwrap();
    let alerts = Arc::new(dashboard::alerts::AlertsView { rules: rules.clone(), ..Default::default() });
    let mut engine = dashboard::alerts::Engine::new(rules);
    runtime.block_on(dashboard::alerts::evaluate_once(&mut engine, store.as_ref(), None, &alerts, T0));
    let state = dashboard::AppState { store, refresh_seconds: 3.0, alerts };
    let server = runtime.spawn(dashboard::run(listener, state, async {
        let _ = stopped.await;
    }));

    // Overview: every pipeline, a tile for the single-row result.
    let (status, content_type, page) = get(addr, "/");
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/html"));
    for name in ["per_window", "per_item", "totals"] {
        assert!(page.contains(&format!("href=\"/pipelines/{name}\"")), "{name} on the overview");
    }
    assert!(page.contains("data-tile=\"totals/average\">42.25<"), "the single-row result is a tile");
    assert!(!page.contains("data-tile=\"per_item"), "only single-row results are tiles");

    // Pipeline page: windowed → the last hour of event time by default (12 windows × 2).
    let (status, _, page) = get(addr, "/pipelines/per_window");
    assert_eq!(status, 200);
    assert!(page.contains("page 1 of 1 (24 rows)"), "default range: the last hour");
    assert!(
        page.contains("name=\"from\" value=\"2026-01-01T01:56:00\""),
        "an hour before the minute after the latest window"
    );
    assert!(page.contains("name=\"to\" value=\"2026-01-01T02:56:00\""));
    // A sort link keeps the range, and the latest window stays in it.
    let sorted =
        "/pipelines/per_window?page=1&sort=interaction_count&desc=true&from=2026-01-01T01:56:00&to=2026-01-01T02:56:00";
    let (_, _, sorted) = get(addr, sorted);
    assert!(sorted.contains("(24 rows)") && sorted.contains("<td>35-click</td>"), "the latest window after sorting");
    assert!(page.contains("sql/per_window.sql is not readable"), "the SQL file is named when it cannot be read");
    // Sorted by count, descending, over the whole range: window 35's click (35) comes first.
    let view = json(
        addr,
        "/api/pipelines/per_window/rows?sort=interaction_count&desc=true&from=2026-01-01T00:00&to=2026-01-01T03:00",
    );
    assert_eq!(view["total"], 72);
    assert_eq!(view["rows"][0][0], "35-click");
    assert_eq!(view["rows"][0][1], "2026-01-01 02:55:00 – 03:00:00");
    assert_eq!(view["pages"], 2);
    let second = json(
        addr,
        "/api/pipelines/per_window/rows?sort=interaction_count&desc=true&page=2&from=2026-01-01T00:00&to=2026-01-01T03:00",
    );
    assert_eq!(second["rows"].as_array().unwrap().len(), 22);
    // Chart: stacked bars per window start by interaction type, in the range.
    let chart = json(addr, "/api/pipelines/per_window/chart?from=2026-01-01T00:00&to=2026-01-01T01:00");
    assert_eq!((chart["kind"].as_str(), chart["stacked"].as_bool()), (Some("line"), Some(true)));
    assert_eq!(chart["x"].as_array().unwrap().len(), 12);
    assert_eq!(chart["series"][0]["name"], "click");
    assert_eq!(chart["series"][1]["values"][0], 10.0);
    // Keyed result: a bar chart, largest first; no time filter.
    let chart = json(addr, "/api/pipelines/per_item/chart");
    assert_eq!(chart["kind"], "bar");
    assert_eq!(chart["series"][0]["values"][0], 7.5);
    let (_, _, page) = get(addr, "/pipelines/per_item");
    assert!(
        page.contains("SELECT &#60;b&#62;avg&#60;/b&#62; FROM SOURCE -- per_item"),
        "the SQL text from the status, escaped"
    );
    assert!(!page.contains("name=\"from\""), "no time filter without a window");

    // Bad records: markup from the data is text.
    let (status, _, page) = get(addr, "/pipelines/per_window/bad");
    assert_eq!(status, 200);
    assert!(page.contains("&#60;script&#62;alert(1)&#60;/script&#62;"), "escaped");
    assert!(!page.contains("<script>alert(1)"), "not markup");
    let bad = json(addr, "/api/pipelines/per_window/bad");
    assert_eq!(bad["records"][0]["raw"], "<script>alert(1)</script>");

    // Alerts: firing on the overview, the alerts page, the API, the threshold on the chart.
    let (_, _, page) = get(addr, "/");
    assert!(page.contains("<h2>Firing alerts</h2>") && page.contains("<b>busy</b>"), "firing alerts on top");
    let (status, _, page) = get(addr, "/alerts");
    assert_eq!(status, 200);
    assert!(page.contains("above 30") && page.contains("normal → <span class=\"state state-firing\">firing</span>"));
    let alerts = json(addr, "/api/alerts");
    assert_eq!(
        (alerts["instances"][0]["state"].as_str(), alerts["instances"][0]["value"].as_f64()),
        (Some("firing"), Some(35.0))
    );
    assert_eq!(alerts["history"][0]["to"], "firing");
    let chart = json(addr, "/api/pipelines/per_window/chart");
    assert_eq!(chart["thresholds"][0]["value"], 30.0);

    // API, health, assets, errors.
    let all = json(addr, "/api/pipelines");
    assert_eq!(all["pipelines"].as_array().unwrap().len(), 3);
    assert_eq!(json(addr, "/api/pipelines/per_item")["status"]["events_ok"], 100);
    assert_eq!(json(addr, "/healthz")["status"], "ok");
    let (status, content_type, script) = get(addr, "/assets/app.js");
    assert_eq!((status, content_type.starts_with("text/javascript")), (200, true));
    assert!(script.contains("visibilitychange"), "the refresh pauses while hidden");
    assert_eq!(get(addr, "/assets/app.css").0, 200);
    assert_eq!(get(addr, "/pipelines/nope").0, 404);
    assert_eq!(get(addr, "/api/pipelines/nope/rows").0, 404);

    stop.send(()).unwrap();
    runtime.block_on(server).unwrap().unwrap();
}

#[test]
fn every_route_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let uri = format!("sqlite:{}", dir.path().join("results.sqlite").display());
    let store =
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(store::open(&uri, None)).unwrap();
    check_every_route(Arc::from(store));
}

#[test]
fn every_route_on_mongodb() {
    let server = testkit::MongoServer::start();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let store = runtime.block_on(store::open(&server.uri("dashboard"), None)).unwrap();
    check_every_route(Arc::from(store));
    drop(runtime);
}

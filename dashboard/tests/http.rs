//! Every page and API route over HTTP, against both stores holding the same known data:
//! a windowed result over three hours of event time, a keyed result, a single-row
//! result, a bad record whose text is markup, and two Qlik targets of the windowed
//! pipeline (one up to date, one failed with an error that is markup).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;

use store::{
    ColumnRole, ColumnType, PipelineStatus, QLIK_TARGETS_TABLE, QlikTargetStatus, RejectedRecord, ResultColumn,
    ResultDelta, ResultRow, Store, Value,
};

/// 2026-01-01T00:00:00Z in microseconds.
const T0: i64 = 1_767_225_600_000_000;
const MINUTE: i64 = 60_000_000;

fn column(name: &str, column_type: ColumnType) -> ResultColumn {
    ResultColumn { name: name.into(), column_type, role: None }
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

/// The Qlik targets of `per_window` (in the store's order: by target): one failed
/// (its error is markup), one up to date. The other pipelines have none.
fn qlik_targets() -> Vec<QlikTargetStatus> {
    vec![
        QlikTargetStatus {
            pipeline: "per_window".into(),
            target: "ws://qlik.example:9076/app/ops".into(),
            table: "interactions_ops".into(),
            state: "error".into(),
            app_version: Some("0123456789abcdef:90".into()),
            pending_rows: 12,
            reloads: 1,
            last_reload_at: Some("2026-01-01T02:50:00.000000Z".into()),
            last_reload_seconds: Some(2.5),
            last_reload_rows: 60,
            last_error: Some("reload failed: <script>alert(1)</script> & gave up".into()),
            updated_at: "2026-01-01T03:00:09.000000Z".into(),
        },
        QlikTargetStatus {
            pipeline: "per_window".into(),
            target: "ws://qlik.example:9076/app/sales".into(),
            table: "per_window".into(),
            state: "up_to_date".into(),
            app_version: Some("0123456789abcdef:100".into()),
            pending_rows: 0,
            reloads: 3,
            last_reload_at: Some("2026-01-01T03:00:05.000000Z".into()),
            last_reload_seconds: Some(1.25),
            last_reload_rows: 72,
            last_error: None,
            updated_at: "2026-01-01T03:00:05.000000Z".into(),
        },
    ]
}

/// The markup of the Qlik target row of `target` on a pipeline page.
fn qlik_row<'a>(page: &'a str, target: &str) -> &'a str {
    let start = page.find(&format!("<tr data-target=\"{target}\">")).unwrap_or_else(|| panic!("no row of {target}"));
    let end = start + page[start..].find("</tr>").unwrap();
    &page[start..end]
}

/// The overview's row of `pipeline`.
fn overview_row<'a>(page: &'a str, pipeline: &str) -> &'a str {
    let start = page.find(&format!("<tr data-pipeline=\"{pipeline}\">")).unwrap_or_else(|| panic!("no {pipeline}"));
    let end = start + page[start..].find("</tr>").unwrap();
    &page[start..end]
}

/// Known data: `per_window` has 36 windows (3 hours) × 2 types and two Qlik targets;
/// `per_item` 5 items; `per_user_window` 2 windows × 3 users; `with_roles` its
/// columns' roles; `totals` one row.
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
    // Per window and user: two value columns, users summed per point.
    let columns = [
        column("window", ColumnType::Window),
        column("user_id", ColumnType::Integer),
        column("interaction_type", ColumnType::Text),
        column("interactions", ColumnType::Integer),
        column("avg_ms", ColumnType::Real),
    ];
    let rows = (0..2)
        .flat_map(|w| {
            (1..=3).map(move |u| ResultRow {
                id: format!("{w}-{u}"),
                values: vec![
                    window(w * 5),
                    Value::Integer(u),
                    Value::Text("click".into()),
                    Value::Integer(u),
                    Value::Real(0.5),
                ],
            })
        })
        .collect();
    write(store, "per_user_window", &columns, rows, &[]).await;
    // Roles as the aggregator writes them: a value named like an id is charted, a text
    // value is no category, and the other key columns are what a point sums over.
    let role = |c: ResultColumn, role| ResultColumn { role: Some(role), ..c };
    let columns = [
        role(column("window", ColumnType::Window), ColumnRole::Key),
        role(column("item_id", ColumnType::Integer), ColumnRole::Key),
        role(column("top_user_id", ColumnType::Integer), ColumnRole::Value),
        role(column("label", ColumnType::Text), ColumnRole::Value),
    ];
    let rows = (1..=2)
        .map(|i| ResultRow {
            id: format!("{i}"),
            values: vec![window(0), Value::Integer(i), Value::Integer(i * 10), Value::Text(format!("l{i}"))],
        })
        .collect();
    write(store, "with_roles", &columns, rows, &[]).await;
    let columns = [column("average", ColumnType::Real)];
    write(store, "totals", &columns, vec![ResultRow { id: "all".into(), values: vec![Value::Real(42.25)] }], &[]).await;
    // Written in the other order: the store gives them back by target.
    for target in qlik_targets().iter().rev() {
        store.write_qlik_status(target).await.unwrap();
    }
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

/// A POST over a plain socket with `body` of `content_type`: (status code, body).
fn post(addr: SocketAddr, path: &str, content_type: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    (head.split_whitespace().nth(1).unwrap().parse().unwrap(), body.to_string())
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
    let alerts = Arc::new(dashboard::alerts::AlertsView::new(rules.clone()));
    let mut engine = dashboard::alerts::Engine::new(rules);
    let metrics = Arc::new(dashboard::metrics::Metrics::new());
    runtime.block_on(dashboard::alerts::evaluate_once(&mut engine, store.as_ref(), None, &alerts, &metrics, T0));
    let state_store = store.clone();
    let access = Arc::new(dashboard::auth::Access::Open);
    let state =
        dashboard::AppState { store, refresh_seconds: 3.0, alerts, access, metrics, panels: Default::default() };
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
    // The others' main chart is drawn by the page, from the chart API.
    let main = |name: &str| {
        page.split(&format!("<tr data-pipeline=\"{name}\">"))
            .nth(1)
            .and_then(|r| r.split("</tr>").next())
            .unwrap_or_default()
            .to_string()
    };
    assert!(main("per_window").contains("data-main=\"chart\""), "a windowed result: its chart");
    assert!(main("per_item").contains("data-main=\"chart\""), "a keyed result: its largest values");
    assert!(main("totals").contains("data-main=\"value\""), "a single row: its value");

    // Pipeline page: windowed → the last hour of event time by default (12 windows × 2).
    let (status, _, page) = get(addr, "/pipelines/per_window");
    assert_eq!(status, 200);
    assert!(page.contains("page 1 of 1 (24 rows)"), "default range: the last hour");
    assert!(
        page.contains("name=\"from\" value=\"2026-01-01T01:56:00\""),
        "an hour before the minute after the latest window"
    );
    assert!(page.contains("name=\"to\" value=\"2026-01-01T02:56:00\""));
    assert!(page.contains("type=\"text\" name=\"from\"") && !page.contains("datetime-local"), "24-hour UTC text");
    assert!(page.contains("id=\"watermark-part\" hidden"), "no watermark yet: not shown");
    assert!(page.contains("id=\"watermark-help\" hidden"), "nor explained");
    // A sort link keeps the range, and the latest window stays in it.
    let sorted =
        "/pipelines/per_window?page=1&sort=interaction_count&desc=true&from=2026-01-01T01:56:00&to=2026-01-01T02:56:00";
    let (_, _, sorted) = get(addr, sorted);
    assert!(sorted.contains("(24 rows)") && sorted.contains("<td>35-click</td>"), "the latest window after sorting");
    assert!(page.contains("sql/per_window.sql is not readable"), "the SQL file is named when it cannot be read");
    // By default the latest windows come first (not `_id` order), in the page and the API.
    let latest = page.find("<td>2026-01-01 02:55:00 – 03:00:00</td>").expect("the latest window is shown");
    let earlier = page.find("<td>2026-01-01 02:50:00 – 02:55:00</td>").expect("the one before too");
    assert!(latest < earlier, "the latest window first");
    assert!(page.contains("window ▼"), "the sort is shown on the window column");
    let view = json(addr, "/api/pipelines/per_window/rows");
    assert_eq!((view["sort"].as_str(), view["desc"].as_bool()), (Some("window"), Some(true)));
    assert_eq!(view["rows"][0][1], "2026-01-01 02:55:00 – 03:00:00");
    let by_id = json(addr, "/api/pipelines/per_window/rows?sort=_id");
    assert_eq!(by_id["rows"][0][0], "24-click", "an asked sort still counts");
    // CSV export: what the table shows (its range and sort), every page; `_id` on request.
    assert!(page.contains("href=\"/api/pipelines/per_window/rows.csv?sort=window"), "the page links its export");
    let export = "/api/pipelines/per_window/rows.csv?sort=window&desc=true&from=2026-01-01T00:00&to=2026-01-01T03:00";
    let (status, content_type, csv) = get(addr, export);
    assert_eq!((status, content_type.as_str()), (200, "text/csv; charset=utf-8"));
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "window,interaction_type,interaction_count");
    assert_eq!(lines.len(), 1 + 72, "all 72 rows of the range, not a page of 50");
    assert!(lines[1].starts_with("2026-01-01 02:55:00 – 03:00:00,"), "{}", lines[1]);
    let (_, _, with_id) = get(addr, &format!("{export}&id=true"));
    assert!(with_id.starts_with("_id,window,"), "{with_id:.40}");
    assert_eq!(get(addr, "/api/pipelines/nope/rows.csv").0, 404);
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
    let chart = &chart["charts"][0];
    assert_eq!((chart["kind"].as_str(), chart["value"].as_str()), (Some("time"), Some("interaction_count")));
    assert_eq!(chart["x"].as_array().unwrap().len(), 12);
    assert_eq!(chart["x"][0], 1_767_225_600.0, "window starts in seconds");
    assert_eq!(chart["series"][0]["name"], "click");
    assert_eq!(chart["series"][1]["values"][0], 10.0);
    assert_eq!(chart["summed_over"], serde_json::json!([]), "one row per point: nothing summed");
    // Relative ranges end at the latest window and follow it; the page marks the one shown.
    assert_eq!(json(addr, "/api/pipelines/per_window/rows?range=15m")["total"], 6, "3 windows × 2 types");
    assert_eq!(json(addr, "/api/pipelines/per_window/rows?range=all&from=2026-01-01T02:00")["total"], 72, "range wins");
    let chart = json(addr, "/api/pipelines/per_window/chart?range=5m");
    assert_eq!(chart["charts"][0]["x"], serde_json::json!([1_767_236_100.0]), "the latest window, 02:55");
    assert!(page.contains("data-range=\"1h\" class=\"active\""), "the default is the last hour");
    assert!(page.contains("href=\"?page=1&#38;sort=window&#38;desc=true&#38;range=15m\""), "a link per range");
    // Column filters: text contains (any case), numbers compared; in rows, CSV, charts and links.
    let filtered = "range=all&where.interaction_type=CLI&where.interaction_count=%3E%3D31";
    let view = json(addr, &format!("/api/pipelines/per_window/rows?{filtered}"));
    assert_eq!(view["total"], 5, "click in windows 31..=35");
    assert_eq!(view["rows"][0][0], "35-click");
    let (_, _, csv) = get(addr, &format!("/api/pipelines/per_window/rows.csv?{filtered}"));
    assert_eq!(csv.lines().count(), 1 + 5);
    let chart = json(addr, &format!("/api/pipelines/per_window/chart?{filtered}"));
    assert_eq!(chart["charts"][0]["x"].as_array().unwrap().len(), 5);
    let (_, _, page) = get(addr, &format!("/pipelines/per_window?{filtered}"));
    assert!(page.contains("name=\"where.interaction_type\" value=\"CLI\""), "the box keeps its filter");
    assert!(page.contains("where.interaction_count=%3E%3D31"), "links keep the filters");
    assert!(page.contains("id=\"clear-filters\""));
    let ignored = json(addr, "/api/pipelines/per_window/rows?range=all&where.interaction_count=lots&where.nope=1");
    assert_eq!(ignored["total"], 72, "a filter that is not a number, or on no column, is ignored");
    // Times in a zone asked for (`?tz=`, or the `tz` cookie the header's picker sets):
    // shown and typed in it. 01:00–02:00 in Paris is 00:00–01:00 UTC in January.
    let paris = "/api/pipelines/per_window/rows?from=2026-01-01T01:00&to=2026-01-01T02:00&tz=Europe/Paris";
    let view = json(addr, paris);
    assert_eq!((view["total"].as_u64(), view["zone"].as_str()), (Some(24), Some("Europe/Paris")));
    assert_eq!(view["rows"][0][1], "2026-01-01 01:55:00 – 02:00:00");
    assert_eq!(
        (view["from"].as_str(), view["to"].as_str()),
        (Some("2026-01-01T01:00:00"), Some("2026-01-01T02:00:00"))
    );
    let chart = json(addr, &paris.replace("/rows?", "/chart?"));
    assert_eq!(chart["charts"][0]["x_label"], "window.start (Europe/Paris)");
    assert_eq!(chart["charts"][0]["x"][0], 1_767_225_600.0, "x stays in seconds since the epoch");
    assert_eq!(json(addr, "/api/pipelines/per_window/rows?tz=Mars/Olympus")["zone"], "UTC", "an unknown zone is UTC");
    // A chart per value column; a point sums the users' rows, and says so.
    let charts = json(addr, "/api/pipelines/per_user_window/chart?range=all");
    let values: Vec<&str> = charts["charts"].as_array().unwrap().iter().map(|c| c["value"].as_str().unwrap()).collect();
    assert_eq!(values, ["interactions", "avg_ms"]);
    assert_eq!(charts["charts"][0]["summed_over"], serde_json::json!(["user_id"]));
    assert_eq!(charts["charts"][0]["series"][0]["values"], serde_json::json!([6.0, 6.0]), "1 + 2 + 3 per window");
    let charts = json(addr, "/api/pipelines/with_roles/chart?range=all");
    let chart = &charts["charts"][0];
    assert_eq!(charts["charts"].as_array().unwrap().len(), 1);
    assert_eq!(
        (chart["value"].as_str(), chart["series"][0]["name"].as_str()),
        (Some("top_user_id"), Some("top_user_id"))
    );
    assert_eq!(
        (&chart["summed_over"], &chart["series"][0]["values"]),
        (&serde_json::json!(["item_id"]), &serde_json::json!([30.0]))
    );
    // Keyed result: a bar chart, largest first; no time filter.
    let chart = json(addr, "/api/pipelines/per_item/chart");
    let chart = &chart["charts"][0];
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
    assert_eq!(chart["charts"][0]["thresholds"][0]["value"], 30.0);

    check_qlik_targets(addr);

    // Silences: created (matchers as text or a map), listed, expired; JSON only.
    let (status, body) = post(
        addr,
        "/api/silences",
        "application/json",
        r#"{"matchers": "alertname=busy, interaction_type=<b>", "minutes": 30, "comment": "deploy"}"#,
    );
    assert_eq!(status, 201, "{body}");
    let listed = json(addr, "/api/silences");
    let silence = &listed["silences"][0];
    assert_eq!(
        (silence["matchers"]["interaction_type"].as_str(), silence["active"].as_bool()),
        (Some("<b>"), Some(true))
    );
    let id = silence["id"].as_str().unwrap().to_string();
    let (_, _, page) = get(addr, "/alerts");
    assert!(
        page.contains(&format!("data-silence=\"{id}\"")) && page.contains("interaction_type=&#60;b&#62;"),
        "listed, escaped"
    );
    assert_eq!(post(addr, "/api/silences", "application/json", r#"{"matchers": "nonsense", "minutes": 5}"#).0, 400);
    assert_eq!(
        post(addr, "/api/silences", "application/json", r#"{"matchers": {}, "minutes": 5}"#).0,
        400,
        "no matcher"
    );
    let form = "matchers=alertname%3Dbusy&minutes=5";
    assert_eq!(
        post(addr, "/api/silences", "application/x-www-form-urlencoded", form).0,
        415,
        "a cross-site form cannot"
    );
    assert_eq!(post(addr, &format!("/api/silences/{id}/expire"), "application/json", "{}").0, 200);
    assert_eq!(json(addr, "/api/silences")["silences"][0]["active"], false);
    assert_eq!(post(addr, "/api/silences/nope/expire", "application/json", "{}").0, 404);

    // API, health, assets, errors.
    let all = json(addr, "/api/pipelines");
    assert_eq!(all["pipelines"].as_array().unwrap().len(), 5);
    assert_eq!(json(addr, "/api/pipelines/per_item")["status"]["events_ok"], 100);
    assert_eq!(json(addr, "/healthz")["status"], "ok");
    let (status, content_type, script) = get(addr, "/assets/app.js");
    assert_eq!((status, content_type.starts_with("text/javascript")), (200, true));
    assert!(script.contains("visibilitychange"), "the refresh pauses while hidden");
    assert_eq!(get(addr, "/assets/app.css").0, 200);
    // The charting library comes from the dashboard itself (no CDN).
    let (status, content_type, library) = get(addr, "/assets/uplot.js");
    assert_eq!((status, content_type.starts_with("text/javascript")), (200, true));
    assert!(library.contains("uPlot"), "uPlot");
    assert_eq!(get(addr, "/assets/uplot.css").0, 200);
    assert_eq!(get(addr, "/pipelines/nope").0, 404);
    assert_eq!(get(addr, "/api/pipelines/nope/rows").0, 404);

    // A pipeline that failed before writing a result: its page shows its state, its
    // error and its SQL (escaped), and says there is no result yet.
    let failed = PipelineStatus {
        name: "broken".into(),
        sql_file: "sql/broken.sql".into(),
        sql_text: Some("SELECT <nope> FROM SOURCE".into()),
        result_table: "broken".into(),
        state: "failed".into(),
        last_error: Some("sql/broken.sql: Schema error: No field named <nope>".into()),
        ..Default::default()
    };
    runtime.block_on(state_store.write_status(&failed)).unwrap();
    let (status, _, page) = get(addr, "/pipelines/broken");
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("state-failed"), "its state");
    assert!(page.contains("No field named &#60;nope&#62;"), "its error, escaped");
    assert!(page.contains("SELECT &#60;nope&#62; FROM SOURCE"), "its SQL, escaped");
    assert!(page.contains("id=\"no-result\""), "no result yet, said");
    assert!(!page.contains("id=\"result\""), "no result table to refresh");
    assert_eq!(get(addr, "/api/pipelines/broken/rows").0, 404, "the API has no rows to give");

    // Qlik states the store cannot read (a table of another shape under their name, as
    // an incompatible writer would leave): the pages show no Qlik targets, not an error.
    let broken = [column("bogus", ColumnType::Integer)];
    let status = PipelineStatus {
        name: "qlik_broken".into(),
        result_table: QLIK_TARGETS_TABLE.into(),
        state: "running".into(),
        ..Default::default()
    };
    let row = ResultRow { id: "1".into(), values: vec![Value::Integer(1)] };
    runtime.block_on(async {
        state_store.as_ref().prepare_result_table("qlik_broken", QLIK_TARGETS_TABLE, &broken, true).await.unwrap();
        let delta = ResultDelta { upserts: vec![row], deletes: vec![] };
        state_store.as_ref().write_batch(QLIK_TARGETS_TABLE, &broken, &delta, &status, &[], &[]).await.unwrap();
        assert!(state_store.as_ref().qlik_statuses().await.is_err(), "the Qlik states are unreadable now");
    });
    check_unreadable_qlik_targets(addr);

    stop.send(()).unwrap();
    runtime.block_on(server).unwrap().unwrap();
}

/// `per_window`'s Qlik targets on its page, on the overview and in the API; none for
/// the other pipelines.
fn check_qlik_targets(addr: SocketAddr) {
    let (status, _, page) = get(addr, "/pipelines/per_window");
    assert_eq!(status, 200);
    assert!(page.contains("<section id=\"qlik\" class=\"qlik\">\n<h2>Qlik targets</h2>"), "the Qlik section");
    assert_eq!(page.matches("<tr data-target=").count(), 2, "one row per target");
    let ops = page.find("app/ops\">").unwrap();
    let sales = page.find("app/sales\">").unwrap();
    assert!(ops < sales, "by target");
    let up = qlik_row(&page, "ws://qlik.example:9076/app/sales");
    for cell in [
        "<td data-field=\"target\">ws://qlik.example:9076/app/sales</td>",
        "<td data-field=\"table\">per_window</td>",
        "<span class=\"state state-up_to_date\" data-field=\"state\">up_to_date</span>",
        "<td data-field=\"reloads\">3</td>",
        "<td data-field=\"last_reload\">2026-01-01T03:00:05.000000Z · 1.25 s · 72 rows</td>",
        "<td data-field=\"pending_rows\">0</td>",
        "<td data-field=\"app_version\">0123456789abcdef:100</td>",
        "<td class=\"error\" data-field=\"last_error\"></td>",
    ] {
        assert!(up.contains(cell), "{cell} in {up}");
    }
    let failed = qlik_row(&page, "ws://qlik.example:9076/app/ops");
    for cell in [
        "<td data-field=\"table\">interactions_ops</td>",
        "<span class=\"state state-error\" data-field=\"state\">error</span>",
        "<td data-field=\"reloads\">1</td>",
        "<td data-field=\"last_reload\">2026-01-01T02:50:00.000000Z · 2.5 s · 60 rows</td>",
        "<td data-field=\"pending_rows\">12</td>",
        "<td data-field=\"app_version\">0123456789abcdef:90</td>",
        "<td class=\"error\" data-field=\"last_error\">reload failed: &#60;script&#62;alert(1)&#60;/script&#62; &#38; gave up</td>",
    ] {
        assert!(failed.contains(cell), "{cell} in {failed}");
    }
    assert!(!page.contains("<script>alert(1)"), "the error is text, not markup");
    // The API behind the page: the same objects.
    let api = json(addr, "/api/pipelines/per_window");
    assert_eq!(api["qlik"], serde_json::to_value(qlik_targets()).unwrap());
    assert_eq!(api["qlik"][0]["last_error"], "reload failed: <script>alert(1)</script> & gave up");
    assert_eq!(api["qlik"][1]["last_reload_seconds"], 1.25);
    assert!(api.get("qlik_error").is_none());

    // Overview: the indicator with the error count, in the worst state's colour.
    let (_, _, page) = get(addr, "/");
    let row = overview_row(&page, "per_window");
    assert!(
        row.contains("<a class=\"qlik-indicator\" href=\"/pipelines/per_window#qlik\"><span class=\"state state-error\" data-field=\"qlik\">Qlik: 2 targets, 1 error</span></a>"),
        "{row}"
    );
    assert_eq!(page.matches("data-field=\"qlik\"").count(), 1, "only per_window has Qlik targets");
    let all = json(addr, "/api/pipelines");
    let items = all["pipelines"].as_array().unwrap();
    let item = |name: &str| items.iter().find(|i| i["name"] == name).unwrap_or_else(|| panic!("{name} in the API"));
    assert_eq!(item("per_window")["qlik"], serde_json::to_value(qlik_targets()).unwrap());
    assert_eq!(item("per_window")["qlik_summary"]["text"], "Qlik: 2 targets, 1 error");
    assert_eq!(item("per_window")["qlik_summary"]["state"], "error");
    assert_eq!(item("per_window")["events_ok"], 100, "the status's fields stay on the item");
    assert_eq!(item("per_item")["qlik"], serde_json::json!([]));
    assert!(item("per_item")["qlik_summary"].is_null());

    // A pipeline without targets: no Qlik section.
    let (status, _, page) = get(addr, "/pipelines/per_item");
    assert_eq!(status, 200);
    assert!(!page.contains("Qlik targets") && !page.contains("id=\"qlik\""), "no Qlik section");
    assert_eq!(json(addr, "/api/pipelines/per_item")["qlik"], serde_json::json!([]));
}

/// The Qlik states cannot be read: every page still answers, without them.
fn check_unreadable_qlik_targets(addr: SocketAddr) {
    let (status, _, page) = get(addr, "/pipelines/per_window");
    assert_eq!(status, 200);
    assert!(page.contains("page 1 of 1 (24 rows)"), "the rest of the page is there");
    assert!(!page.contains("Qlik targets") && !page.contains("data-target="), "no Qlik section");
    let (status, _, page) = get(addr, "/");
    assert_eq!(status, 200);
    assert!(page.contains("href=\"/pipelines/per_window\"") && !page.contains("data-field=\"qlik\""));
    let api = json(addr, "/api/pipelines/per_window");
    assert_eq!(api["qlik"], serde_json::json!([]));
    assert!(api["qlik_error"].as_str().is_some_and(|e| e.contains(QLIK_TARGETS_TABLE) || e.contains("status")));
    let all = json(addr, "/api/pipelines");
    assert!(all["qlik_error"].is_string());
    let items = all["pipelines"].as_array().unwrap();
    assert!(items.iter().all(|i| i["qlik"] == serde_json::json!([]) && i["qlik_summary"].is_null()));
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

#[test]
fn the_panels_api_lists_the_panels_and_the_broken_files_and_the_chart_api_takes_a_panels_query() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("panels");
    std::fs::create_dir(&folder).unwrap();
    std::fs::write(
        folder.join("b-clicks.toml"),
        "title = \"Clicks\"\npipeline = \"per_window\"\nkind = \"bar\"\ncolumns = [\"interaction_count\"]\n\
         filters = { interaction_type = \"click\" }\nthresholds = [30]\nrange = \"all\"\n",
    )
    .unwrap();
    std::fs::write(folder.join("a-broken.toml"), "pipeline = \"per_window\"\n\nrange = \"2w\"\n").unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let uri = format!("sqlite:{}", dir.path().join("results.sqlite").display());
    let store: Arc<dyn Store> = Arc::from(runtime.block_on(store::open(&uri, None)).unwrap());
    runtime.block_on(fill(store.as_ref()));
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    let state = dashboard::AppState {
        store,
        refresh_seconds: 3.0,
        alerts: Default::default(),
        access: Arc::new(dashboard::auth::Access::Open),
        metrics: Arc::new(dashboard::metrics::Metrics::new()),
        panels: Arc::new(dashboard::panels::PanelsView::new(dashboard::panels::load_dir(&folder))),
    };
    let server = runtime.spawn(dashboard::run(listener, state, std::future::pending()));

    let listing = json(addr, "/api/panels");
    let panels = listing["panels"].as_array().unwrap();
    assert_eq!(panels.len(), 1, "{listing}");
    let panel = &panels[0];
    assert_eq!(panel["file"], "b-clicks.toml");
    assert_eq!(panel["title"], "Clicks");
    assert_eq!(panel["kind"], "bar");
    assert_eq!(panel["filters"], serde_json::json!({"interaction_type": "click"}));
    assert_eq!(panel["thresholds"], serde_json::json!([{"value": 30.0, "color": null}]));
    let query = panel["query"].as_str().unwrap();
    assert_eq!(query, "columns=interaction_count&range=all&where.interaction_type=click");
    assert_eq!(
        listing["errors"],
        serde_json::json!([{"file": "a-broken.toml", "line": 3, "message": "range `2w`: one of 5m, 15m, 1h, 6h, 24h, all"}])
    );

    // The panel's data: the chart API with its query, the filter applied.
    let charts = json(addr, &format!("/api/pipelines/per_window/chart?{query}"));
    let charts = charts["charts"].as_array().unwrap();
    assert_eq!(charts.len(), 1);
    assert_eq!(charts[0]["value"], "interaction_count");
    let names: Vec<&str> =
        charts[0]["series"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["click"]);
    // A column that is not a value column: no chart.
    let none = json(addr, "/api/pipelines/per_window/chart?columns=nothing");
    assert_eq!(none["charts"], serde_json::json!([]));
    server.abort();
}

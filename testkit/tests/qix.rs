//! The QIX engine test double, driven over a real WebSocket like a client would.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use testkit::qix::SchemaVersion;
use testkit::{Cell, QixEngine, QixOptions};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const GLOBAL: i64 = -1;
const TIMEOUT: Duration = Duration::from_secs(10);

/// A minimal JSON-RPC client: requests are matched to responses by id, so several can be
/// in flight at once.
struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: i64,
    responses: HashMap<i64, Value>,
    notifications: Vec<Value>,
}

async fn try_connect(url: &str, headers: &[(&str, &str)]) -> Result<Client, tungstenite::Error> {
    let mut request = url.into_client_request()?;
    for (name, value) in headers {
        request.headers_mut().insert(
            HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            HeaderValue::from_str(value).expect("header value"),
        );
    }
    let (ws, _) = tokio_tungstenite::connect_async(request).await?;
    Ok(Client { ws, next_id: 1, responses: HashMap::new(), notifications: Vec::new() })
}

async fn connect(url: &str, headers: &[(&str, &str)]) -> Client {
    try_connect(url, headers).await.expect("connect")
}

impl Client {
    /// The next JSON message (None when the socket is closed or broken).
    async fn next_json(&mut self) -> Option<Value> {
        loop {
            match tokio::time::timeout(TIMEOUT, self.ws.next()).await.expect("message within the timeout") {
                Some(Ok(Message::Text(text))) => return Some(serde_json::from_str(text.as_str()).expect("JSON")),
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return None,
                Some(Ok(_)) => {}
            }
        }
    }

    async fn send_raw(&mut self, text: String) {
        self.ws.send(Message::text(text)).await.expect("send");
    }

    async fn send(&mut self, handle: i64, method: &str, params: Value) -> i64 {
        let id = self.next_id;
        self.next_id += 1;
        let request = json!({"jsonrpc": "2.0", "id": id, "handle": handle, "method": method, "params": params});
        self.send_raw(request.to_string()).await;
        id
    }

    async fn response(&mut self, id: i64) -> Value {
        loop {
            if let Some(response) = self.responses.remove(&id) {
                return response;
            }
            let message = self.next_json().await.expect("connection open");
            match message.get("id").and_then(Value::as_i64) {
                Some(other) => {
                    self.responses.insert(other, message);
                }
                None => self.notifications.push(message),
            }
        }
    }

    async fn call(&mut self, handle: i64, method: &str, params: Value) -> Value {
        let id = self.send(handle, method, params).await;
        self.response(id).await
    }

    async fn result(&mut self, handle: i64, method: &str, params: Value) -> Value {
        let response = self.call(handle, method, params).await;
        response.get("result").cloned().unwrap_or_else(|| panic!("{method} failed: {response}"))
    }

    async fn error_code(&mut self, handle: i64, method: &str, params: Value) -> i64 {
        let response = self.call(handle, method, params).await;
        response["error"]["code"].as_i64().unwrap_or_else(|| panic!("{method} did not fail: {response}"))
    }

    /// Opens an app and returns its doc handle.
    async fn open(&mut self, app: &str) -> i64 {
        let result = self.result(GLOBAL, "OpenDoc", json!([app])).await;
        assert_eq!(result["qReturn"]["qType"], "Doc");
        result["qReturn"]["qHandle"].as_i64().expect("handle")
    }

    /// SetScript + DoReloadEx; returns qSuccess.
    async fn reload(&mut self, doc: i64, script: &str, partial: bool) -> bool {
        self.result(doc, "SetScript", json!([script])).await;
        let result = self.result(doc, "DoReloadEx", json!([{"qPartial": partial}])).await;
        result["qResult"]["qSuccess"].as_bool().expect("qSuccess")
    }
}

/// Connects and checks the OnConnected notification.
async fn session(engine: &QixEngine, headers: &[(&str, &str)], expected_state: &str) -> Client {
    let mut client = connect(&engine.url("engineData"), headers).await;
    let first = client.next_json().await.expect("OnConnected");
    assert_eq!(first, json!({"jsonrpc": "2.0", "method": "OnConnected", "params": {"qSessionState": expected_state}}));
    client
}

fn text(s: &str) -> Cell {
    Cell::Text(s.to_string())
}

fn dual(s: &str, n: f64) -> Cell {
    Cell::Dual(s.to_string(), n)
}

/// The example the aggregator generates (brief), verbatim.
const AGGREGATOR_EXAMPLE: &str = r#"// sql-aggregator: result of pipeline user_counts (version abc123:5000)
[user_counts]:
Replace LOAD
    If([f0] = '%N', Null(), Text(Replace(Replace(Replace(Replace(Replace(Replace(Replace(Replace(Replace(Replace([f0], '%2C', Chr(44)), '%5D', Chr(93)), '%5B', Chr(91)), '%22', Chr(34)), '%27', Chr(39)), '%0A', Chr(10)), '%0D', Chr(13)), '%09', Chr(9)), '%20', Chr(32)), '%25', Chr(37)))) AS [user_id],
    If([f1] = '%N', Null(), [f1]) AS [interaction_count],
    If([f2] = '%N', Null(), Timestamp#([f2], 'YYYY-MM-DD hh:mm:ss.ffffff')) AS [window.start]
INLINE [
f0,f1,f2,end
u%2C1%5D,42,2026-01-01 00:05:00.000000,.
%N,%N,%N,.
] (txt, utf8, embedded labels, delimiter is ',');
"#;

/// The aggregator's escaping of one value (`%N` = null).
fn escape(value: Option<&str>) -> String {
    let Some(value) = value else { return "%N".to_string() };
    let mut out = String::new();
    let chars: Vec<char> = value.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        let edge = i == 0 || i == chars.len() - 1;
        match c {
            '%' => out.push_str("%25"),
            ',' => out.push_str("%2C"),
            ']' => out.push_str("%5D"),
            '[' => out.push_str("%5B"),
            '"' => out.push_str("%22"),
            '\'' => out.push_str("%27"),
            '\n' => out.push_str("%0A"),
            '\r' => out.push_str("%0D"),
            '\t' => out.push_str("%09"),
            ' ' if edge => out.push_str("%20"),
            c => out.push(c),
        }
    }
    out
}

#[tokio::test]
async fn on_connected_comes_first_and_sessions_are_shared_by_header() {
    let engine = QixEngine::start(QixOptions::default());
    engine.create_app("app");
    let mut a = session(&engine, &[("X-Qlik-Session", "s1")], "SESSION_CREATED").await;
    let mut b = session(&engine, &[("X-Qlik-Session", "s1")], "SESSION_ATTACHED").await;
    let mut c = session(&engine, &[], "SESSION_CREATED").await;
    assert_eq!(engine.connections(), 3);
    assert!(
        engine.headers_seen()[0].iter().any(|(n, v)| n == "x-qlik-session" && v == "s1"),
        "{:?}",
        engine.headers_seen()
    );

    // The session's doc is visible from every connection of the session, not from others.
    let doc = a.open("app").await;
    let active = b.result(GLOBAL, "GetActiveDoc", json!([])).await;
    assert_eq!(active, json!({"qReturn": {"qType": "Doc", "qHandle": doc, "qGenericId": "app"}}));
    assert_eq!(c.error_code(GLOBAL, "GetActiveDoc", json!([])).await, 1007);
    assert_eq!(b.error_code(GLOBAL, "OpenDoc", json!(["app"])).await, 1002);

    let version = c.result(GLOBAL, "EngineVersion", json!([])).await;
    assert_eq!(version, json!({"qVersion": {"qComponentVersion": "12.612.0"}}));
    assert!(engine.violations().is_empty(), "{:?}", engine.violations());
}

#[tokio::test]
async fn session_error_state_is_sent_then_the_socket_closes() {
    let options = QixOptions { session_state: "SESSION_ERROR_NO_LICENSE".to_string(), ..QixOptions::default() };
    let engine = QixEngine::start(options);
    let mut client = session(&engine, &[], "SESSION_ERROR_NO_LICENSE").await;
    assert_eq!(client.next_json().await, None);
}

#[tokio::test]
async fn get_active_doc_then_open_doc_then_already_open() {
    let engine = QixEngine::start(QixOptions::default());
    let mut client = session(&engine, &[], "SESSION_CREATED").await;
    assert_eq!(client.error_code(GLOBAL, "GetActiveDoc", json!([])).await, 1007);
    assert_eq!(client.error_code(GLOBAL, "OpenDoc", json!(["nope"])).await, 1003);
    let created = client.result(GLOBAL, "CreateApp", json!({"qAppName": "app"})).await;
    assert_eq!(created, json!({"qSuccess": true, "qAppId": "app"}));
    let again = client.result(GLOBAL, "CreateApp", json!(["app"])).await;
    assert_eq!(again["qSuccess"], false);

    let doc = client.open("app").await;
    assert_eq!(doc, 1);
    assert_eq!(client.error_code(GLOBAL, "OpenDoc", json!(["app"])).await, 1002);
    let active = client.result(GLOBAL, "GetActiveDoc", json!([])).await;
    assert_eq!(active["qReturn"]["qHandle"], doc);
    assert_eq!(engine.requests("OpenDoc"), 3);
    assert!(engine.violations().is_empty(), "{:?}", engine.violations());
}

#[tokio::test]
async fn schema_violations_are_recorded_and_valid_requests_are_not() {
    let engine = QixEngine::start(QixOptions::default());
    engine.create_app("app");
    let mut client = session(&engine, &[], "SESSION_CREATED").await;

    // Valid: positional, named, optional parameters left out, an unimplemented method.
    let doc = client.open("app").await;
    client.result(doc, "SetScript", json!({"qScript": ""})).await;
    client.result(doc, "DoReloadEx", json!([])).await;
    client.result(doc, "DoReloadEx", json!({"qParams": {"qMode": 0, "qPartial": true, "qReloadId": "x"}})).await;
    client.result(doc, "DoReload", json!([0, false, false])).await;
    client.result(doc, "DoSave", json!([])).await;
    client.result(GLOBAL, "GetProgress", json!([0])).await;
    assert_eq!(client.error_code(GLOBAL, "GetDocList", json!([])).await, 20);
    assert!(engine.violations().is_empty(), "{:?}", engine.violations());

    // Violations.
    let cases: &[(i64, &str, Value, i64, &str)] = &[
        (GLOBAL, "OpenDoc", json!([42]), -32602, "expected string, got number"),
        (doc, "GetTableData", json!([0, 10, false]), -32602, "missing required parameter qTableName"),
        (doc, "GetTableData", json!({"qOffset": 0, "qRows": 1, "qSyntheticMode": false}), -32602, "qTableName"),
        (GLOBAL, "NoSuchMethod", json!([]), -32601, "no method NoSuchMethod"),
        (GLOBAL, "SetScript", json!(["x"]), -32601, "no method SetScript in class Global"),
        (GLOBAL, "EngineVersion", json!([1]), -32602, "too many parameters"),
        (doc, "DoReload", json!({"qPartial": "yes"}), -32602, "expected bool, got string"),
        (doc, "DoReloadEx", json!([{"qPartial": true, "qSkipStore": true}]), -32602, "unknown key qSkipStore"),
        (doc, "DoReloadEx", json!([{"qPartial": 1}]), -32602, "qParams.qPartial: expected bool"),
        (doc, "SetScript", json!({"qScript": "", "qOther": 1}), -32602, "unknown parameter qOther"),
        (7, "GetScript", json!([]), -32602, "unknown handle 7"),
    ];
    for (i, (handle, method, params, code, reason)) in cases.iter().enumerate() {
        assert_eq!(client.error_code(*handle, method, params.clone()).await, *code, "{method} {params}");
        let violations = engine.violations();
        assert_eq!(violations.len(), i + 1, "{violations:?}");
        assert!(violations[i].contains(reason), "{} does not mention {reason}", violations[i]);
    }
    // A broken envelope.
    client.send_raw(json!({"jsonrpc": "1.0", "id": 99, "handle": -1, "method": "EngineVersion"}).to_string()).await;
    assert_eq!(client.response(99).await["error"]["code"], -32600);
    client.send_raw(json!({"jsonrpc": "2.0", "id": "x", "handle": -1, "method": "EngineVersion"}).to_string()).await;
    client.send_raw("not json".to_string()).await;
    // Wait for both answers (the second has id null, so read until two arrive).
    let mut errors = 0;
    while errors < 2 {
        let message = client.next_json().await.expect("reply");
        assert!(message.get("error").is_some(), "{message}");
        errors += 1;
    }
    assert_eq!(engine.violations().len(), cases.len() + 3, "{:?}", engine.violations());

    // With the 12.2027 schema, qSkipStore exists.
    let engine = QixEngine::start(QixOptions { schema: SchemaVersion::V12_2027, ..QixOptions::default() });
    engine.create_app("app");
    let mut client = session(&engine, &[], "SESSION_CREATED").await;
    let doc = client.open("app").await;
    client.result(doc, "DoReloadEx", json!([{"qPartial": true, "qSkipStore": true}])).await;
    let version = client.result(GLOBAL, "EngineVersion", json!([])).await;
    assert_eq!(version["qVersion"]["qComponentVersion"], "12.2027.0");
    assert!(engine.violations().is_empty(), "{:?}", engine.violations());
}

#[tokio::test]
async fn the_aggregator_example_loads_exactly_the_expected_cells() {
    let engine = QixEngine::start(QixOptions::default());
    engine.create_app("app");
    let mut client = session(&engine, &[], "SESSION_CREATED").await;
    let doc = client.open("app").await;
    assert!(client.reload(doc, AGGREGATOR_EXAMPLE, true).await);
    assert_eq!(engine.last_script("app").as_deref(), Some(AGGREGATOR_EXAMPLE));
    assert_eq!(engine.table_names("app"), vec!["user_counts"]);
    let table = engine.table("app", "user_counts").expect("table");
    assert_eq!(table.fields, vec!["user_id", "interaction_count", "window.start"]);
    let serial = 46023.0 + 300.0 / 86400.0; // 2026-01-01 00:05 as days since 1899-12-30
    assert_eq!(table.rows.len(), 2);
    assert_eq!(table.rows[0][..2], [text("u,1]"), dual("42", 42.0)]);
    match &table.rows[0][2] {
        Cell::Dual(t, n) => {
            assert_eq!(t, "2026-01-01 00:05:00.000000");
            assert!((n - serial).abs() < 1e-9, "{n}");
        }
        other => panic!("timestamp is {other:?}"),
    }
    assert_eq!(table.rows[1], vec![Cell::Null, Cell::Null, Cell::Null]);

    // The same through GetTableData: the first row holds the field names.
    let data = client
        .result(
            doc,
            "GetTableData",
            json!({"qOffset": 0, "qRows": 10, "qSyntheticMode": false, "qTableName": "user_counts"}),
        )
        .await;
    let rows = data["qData"].as_array().expect("qData");
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0]["qValue"][1], json!({"qText": "interaction_count", "qIsNumeric": false, "qNumber": "NaN"}));
    assert_eq!(rows[1]["qValue"][0], json!({"qText": "u,1]", "qIsNumeric": false, "qNumber": "NaN"}));
    assert_eq!(rows[1]["qValue"][1], json!({"qText": "42", "qIsNumeric": true, "qNumber": 42.0}));
    assert_eq!(rows[2]["qValue"][0], json!({"qText": "-", "qIsNumeric": false, "qNumber": "NaN"}));
    // Offset and row limit; an unknown table.
    let data = client.result(doc, "GetTableData", json!([1, 5, false, "user_counts"])).await;
    assert_eq!(data["qData"].as_array().map(Vec::len), Some(2));
    assert_eq!(data["qData"][1]["qValue"][0]["qText"], "-");
    let response = client.call(doc, "GetTableData", json!([0, 5, false, "nope"])).await;
    assert_eq!(response["error"]["code"], 11001);
    assert_eq!(response["error"]["message"], "Table not found: nope");
    assert!(engine.violations().is_empty(), "{:?}", engine.violations());
}

#[tokio::test]
async fn escaped_values_round_trip_through_the_script() {
    let engine = QixEngine::start(QixOptions::default());
    engine.create_app("app");
    let mut client = session(&engine, &[], "SESSION_CREATED").await;
    let doc = client.open("app").await;
    let values: Vec<Option<&str>> = vec![
        Some("a]b,c[d \"quoted\" 'single'"),
        Some("line1\nline2\r\nend\ttab"),
        Some("  edge spaces  "),
        Some("100% ünïcödé 😀 日本"),
        Some("%N"),
        Some("%2C literally"),
        Some(""),
        Some("42"),
        None,
    ];
    let decode = AGGREGATOR_EXAMPLE
        .lines()
        .find(|l| l.trim_start().starts_with("If([f0]"))
        .expect("the user_id expression")
        .trim()
        .trim_end_matches(',')
        .replace("AS [user_id]", "AS [v]");
    let rows: String = values.iter().map(|v| format!("{},.\n", escape(*v))).collect();
    let script = format!(
        "[t]:\nReplace LOAD\n    {decode}\nINLINE [\nf0,end\n{rows}] (txt, utf8, embedded labels, delimiter is ',');"
    );
    assert!(client.reload(doc, &script, true).await, "{script}");
    let table = engine.table("app", "t").expect("table t");
    let expected: Vec<Vec<Cell>> = values.iter().map(|v| vec![v.map_or(Cell::Null, text)]).collect();
    assert_eq!(table.rows, expected);
}

#[tokio::test]
async fn a_raw_bracket_in_inline_data_ends_the_data_and_fails_the_reload() {
    let engine = QixEngine::start(QixOptions::default());
    engine.create_app("app");
    let mut client = session(&engine, &[], "SESSION_CREATED").await;
    let doc = client.open("app").await;
    assert!(client.reload(doc, "t: LOAD * INLINE [\nv\nok\n];", false).await);

    // `x]y` ends the inline data after `x`; `y ... ]` then is a syntax error.
    let script = "// unescaped\nt: LOAD * INLINE [\nv\nx]y\n];";
    assert!(!client.reload(doc, script, false).await);
    let progress = client.result(GLOBAL, "GetProgress", json!([0])).await;
    let error = &progress["qProgressData"]["qErrorData"][0];
    assert_eq!(error["qLine"], 2, "{progress}");
    assert_eq!(error["qErrorDataCode"], 11003, "{progress}");
    // The failed reload kept the old data.
    assert_eq!(engine.table("app", "t").map(|t| t.rows), Some(vec![vec![text("ok")]]));
    assert_eq!(engine.reloads("app"), 2);
}

#[tokio::test]
async fn partial_reload_keeps_other_tables_and_full_reload_drops_them() {
    let engine = QixEngine::start(QixOptions::default());
    engine.create_app("app");
    let mut client = session(&engine, &[], "SESSION_CREATED").await;
    let doc = client.open("app").await;
    let two_tables = "a: LOAD * INLINE [\nx\n1\n];\nb: LOAD * INLINE [\ny\n1\n];";
    assert!(client.reload(doc, two_tables, false).await);
    assert_eq!(engine.table_names("app"), vec!["a", "b"]);

    // Partial: the unprefixed load of `a` is skipped, `b` replaced, `c` added.
    let partial =
        "a: LOAD * INLINE [\nx\n9\n];\nb: Replace LOAD * INLINE [\ny\n2\n];\nc: Add LOAD * INLINE [\nz\n3\n];";
    assert!(client.reload(doc, partial, true).await);
    assert_eq!(engine.table("app", "a").map(|t| t.rows), Some(vec![vec![dual("1", 1.0)]]));
    assert_eq!(engine.table("app", "b").map(|t| t.rows), Some(vec![vec![dual("2", 2.0)]]));
    assert_eq!(engine.table("app", "c").map(|t| t.rows), Some(vec![vec![dual("3", 3.0)]]));
    // Add appends.
    assert!(client.reload(doc, "c: Add LOAD * INLINE [\nz\n4\n];", true).await);
    assert_eq!(engine.table("app", "c").map(|t| t.rows.len()), Some(2));

    // Full: everything is dropped first; the prefixed load runs as a normal one.
    assert!(client.reload(doc, "b: Replace LOAD * INLINE [\ny\n5\n];", false).await);
    assert_eq!(engine.table_names("app"), vec!["b"]);
    assert_eq!(engine.table("app", "b").map(|t| t.rows), Some(vec![vec![dual("5", 5.0)]]));
    // DoReload (positional qPartial) as well.
    client.result(doc, "SetScript", json!(["b: Replace LOAD * INLINE [\ny\n6\n];"])).await;
    let result = client.result(doc, "DoReload", json!([0, true, false])).await;
    assert_eq!(result, json!({"qReturn": true}));
    assert_eq!(engine.table("app", "b").map(|t| t.rows), Some(vec![vec![dual("6", 6.0)]]));
}

#[tokio::test]
async fn merge_is_an_unknown_statement_on_qlik_core_and_works_on_sense() {
    let script = "t: Merge Only On id LOAD * INLINE [\nop,id,v\nInsert,1,a\n];";
    let engine = QixEngine::start(QixOptions::default());
    engine.create_app("app");
    let mut client = session(&engine, &[], "SESSION_CREATED").await;
    let doc = client.open("app").await;
    assert!(client.reload(doc, "t: LOAD * INLINE [\nid,v\n1,old\n];", false).await);
    assert!(!client.reload(doc, script, true).await);
    let progress = client.result(GLOBAL, "GetProgress", json!([0])).await;
    assert_eq!(progress["qProgressData"]["qErrorData"][0]["qErrorDataCode"], 11002, "{progress}");

    let engine = QixEngine::start(QixOptions { schema: SchemaVersion::V12_2027, ..QixOptions::default() });
    engine.create_app("app");
    let mut client = session(&engine, &[], "SESSION_CREATED").await;
    let doc = client.open("app").await;
    assert!(client.reload(doc, "t: LOAD * INLINE [\nid,v\n1,old\n2,keep\n];", false).await);
    assert!(client.reload(doc, script, true).await);
    let rows = engine.table("app", "t").map(|t| t.rows);
    assert_eq!(rows, Some(vec![vec![dual("2", 2.0), text("keep")], vec![dual("1", 1.0), text("a")]]));
}

#[tokio::test]
async fn concurrent_reloads_of_one_app_are_refused_but_other_apps_run_in_parallel() {
    let reload_time = Duration::from_millis(800);
    let engine = QixEngine::start(QixOptions { reload_time, ..QixOptions::default() });
    for app in ["app", "x", "y"] {
        engine.create_app(app);
    }
    let script = "t: LOAD * INLINE [\nv\n1\n];";
    let mut a = session(&engine, &[], "SESSION_CREATED").await;
    let mut b = session(&engine, &[], "SESSION_CREATED").await;
    let (doc_a, doc_b) = (a.open("app").await, b.open("app").await);
    a.result(doc_a, "SetScript", json!([script])).await;
    let id_a = a.send(doc_a, "DoReloadEx", json!([{"qPartial": false}])).await;
    let id_b = b.send(doc_b, "DoReloadEx", json!([{"qPartial": false}])).await;
    let (ra, rb) = tokio::join!(a.response(id_a), b.response(id_b));
    let mut outcomes = [ra, rb].map(|r| {
        if r.get("error").is_some() {
            assert_eq!(r["error"], json!({"code": 11000, "parameter": "", "message": "Reload in progress"}));
            "refused"
        } else {
            assert_eq!(r["result"]["qResult"]["qSuccess"], true, "{r}");
            "ran"
        }
    });
    outcomes.sort();
    assert_eq!(outcomes, ["ran", "refused"]);
    assert_eq!(engine.reloads("app"), 1);
    assert_eq!(engine.refused_reloads("app"), 1);
    assert_eq!(engine.max_concurrent_reloads("app"), 1);
    assert_eq!(engine.requests("DoReloadEx"), 2);

    // Different apps reload at the same time.
    let mut x = session(&engine, &[], "SESSION_CREATED").await;
    let mut y = session(&engine, &[], "SESSION_CREATED").await;
    let (doc_x, doc_y) = (x.open("x").await, y.open("y").await);
    x.result(doc_x, "SetScript", json!([script])).await;
    y.result(doc_y, "SetScript", json!([script])).await;
    let started = Instant::now();
    let id_x = x.send(doc_x, "DoReloadEx", json!([])).await;
    let id_y = y.send(doc_y, "DoReloadEx", json!([])).await;
    let (rx, ry) = tokio::join!(x.response(id_x), y.response(id_y));
    let elapsed = started.elapsed();
    assert_eq!(rx["result"]["qResult"]["qSuccess"], true, "{rx}");
    assert_eq!(ry["result"]["qResult"]["qSuccess"], true, "{ry}");
    assert!(elapsed < reload_time * 2, "the two reloads ran one after the other: {elapsed:?}");
    for app in ["x", "y"] {
        assert_eq!((engine.reloads(app), engine.refused_reloads(app), engine.max_concurrent_reloads(app)), (1, 0, 1));
    }
}

#[tokio::test]
async fn only_saved_data_survives_a_stop() {
    let engine = QixEngine::start(QixOptions::default());
    engine.create_app("app");
    let port = engine.port();
    let mut client = session(&engine, &[], "SESSION_CREATED").await;
    let doc = client.open("app").await;
    assert!(client.reload(doc, "t: LOAD * INLINE [\nv\nsaved\n];", false).await);
    client.result(doc, "DoSave", json!([])).await;
    assert!(client.reload(doc, "t: LOAD * INLINE [\nv\nunsaved\n];\nu: LOAD * INLINE [\nw\n1\n];", false).await);
    assert_eq!(engine.table_names("app"), vec!["t", "u"]);
    assert_eq!(engine.saves("app"), 1);

    engine.stop();
    // The open connection is dropped and nobody can connect.
    assert_eq!(client.next_json().await, None);
    assert!(try_connect(&engine.url("app"), &[]).await.is_err());
    assert_eq!(engine.table_names("app"), vec!["t"]);
    assert_eq!(engine.table("app", "t").map(|t| t.rows), Some(vec![vec![text("saved")]]));

    engine.start_again();
    assert_eq!(engine.port(), port);
    let mut client = session(&engine, &[], "SESSION_CREATED").await;
    let doc = client.open("app").await;
    let data = client.result(doc, "GetTableData", json!([0, 10, false, "t"])).await;
    assert_eq!(data["qData"][1]["qValue"][0]["qText"], "saved");
    // DoSave keeps the script too: the one of the saved reload, not the later one.
    let script = client.result(doc, "GetScript", json!([])).await;
    assert_eq!(script["qScript"], "t: LOAD * INLINE [\nv\nsaved\n];");

    // restart() = stop() + start_again().
    engine.restart();
    assert_eq!(client.next_json().await, None);
    let mut client = session(&engine, &[], "SESSION_CREATED").await;
    client.open("app").await;
    assert_eq!(engine.connections(), 3);
}

#[tokio::test]
async fn unsaved_data_is_lost_when_the_last_session_closes_the_app() {
    let engine = QixEngine::start(QixOptions::default());
    engine.create_app("app");
    let mut client = session(&engine, &[], "SESSION_CREATED").await;
    let doc = client.open("app").await;
    assert!(client.reload(doc, "t: LOAD * INLINE [\nv\n1\n];", false).await);
    assert!(engine.table("app", "t").is_some());
    client.ws.close(None).await.expect("close");
    let deadline = Instant::now() + TIMEOUT;
    while engine.table("app", "t").is_some() {
        assert!(Instant::now() < deadline, "the app was not unloaded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_bearer_token_is_required_when_configured() {
    let options = QixOptions { bearer_token: Some("s3cret".to_string()), ..QixOptions::default() };
    let engine = QixEngine::start(options);
    for headers in [vec![], vec![("Authorization", "Bearer wrong")]] {
        match try_connect(&engine.url("app"), &headers).await {
            Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 401),
            Err(other) => panic!("expected HTTP 401, got {other}"),
            Ok(_) => panic!("connected without the token"),
        }
    }
    assert_eq!(engine.connections(), 0);
    session(&engine, &[("Authorization", "Bearer s3cret")], "SESSION_CREATED").await;
    assert_eq!(engine.connections(), 1);
    let seen = engine.headers_seen();
    assert_eq!(seen.len(), 3);
    assert!(seen[2].contains(&("authorization".to_string(), "Bearer s3cret".to_string())), "{seen:?}");
}

#[tokio::test]
async fn get_progress_reports_a_running_reload_and_script_errors() {
    let engine = QixEngine::start(QixOptions { reload_time: Duration::from_millis(1500), ..QixOptions::default() });
    engine.create_app("app");
    let mut client = session(&engine, &[], "SESSION_CREATED").await;
    let doc = client.open("app").await;
    client.result(doc, "SetScript", json!(["t: LOAD * INLINE [\nv\n1\n2\n];"])).await;
    let reload_id = client.send(doc, "DoReloadEx", json!([{"qPartial": false}])).await;

    // While it runs (on the same connection): started, not finished.
    let deadline = Instant::now() + TIMEOUT;
    let running = loop {
        let progress = client.result(GLOBAL, "GetProgress", json!([reload_id])).await;
        if progress["qProgressData"]["qStarted"] == true {
            break progress;
        }
        assert!(Instant::now() < deadline, "reload never started: {progress}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(running["qProgressData"]["qFinished"], false, "{running}");
    let response = client.response(reload_id).await;
    assert_eq!(response["result"]["qResult"]["qSuccess"], true, "{response}");
    let done = client.result(GLOBAL, "GetProgress", json!({"qRequestId": reload_id})).await;
    let data = &done["qProgressData"];
    assert_eq!((data["qStarted"].as_bool(), data["qFinished"].as_bool()), (Some(true), Some(true)), "{done}");
    assert_eq!(data["qPersistentProgress"], "Load table t: 2 rows", "{done}");
    assert!(data["qMillisecs"].as_u64().is_some_and(|ms| ms >= 1500), "{done}");
    assert_eq!(data["qErrorData"], json!([]));

    // A failing script: the error and its line.
    engine.set_reload_time(Duration::ZERO);
    let script = "SET a = 1;\n\nt: LOAD nope INLINE [\nv\n1\n];";
    assert!(!client.reload(doc, script, false).await);
    let failed = client.result(GLOBAL, "GetProgress", json!([0])).await;
    let error = &failed["qProgressData"]["qErrorData"][0];
    assert_eq!(error["qLine"], 3, "{failed}");
    assert_eq!(error["qErrorDataCode"], 11013, "{failed}");
    assert_eq!(error["qErrorString"], "Field 'nope' not found", "{failed}");
    assert_eq!(failed["qProgressData"]["qFinished"], true);
    // Unknown request ids: nothing started.
    let none = client.result(GLOBAL, "GetProgress", json!([12345])).await;
    assert_eq!(none["qProgressData"]["qStarted"], false);
    // The failed reload left the data alone.
    assert_eq!(engine.table("app", "t").map(|t| t.rows.len()), Some(2));
    assert!(engine.violations().is_empty(), "{:?}", engine.violations());
}

//! `/metrics` scraped over HTTP (with the bearer token, as Prometheus would): the
//! OpenMetrics text when asked for (Prometheus asks), else the classic text format,
//! each with its content type; and the values move: request counters by route pattern
//! and status (401s included), their durations, a failed store read, alert evaluations,
//! an alert firing and resolving in the state gauge, webhook requests and failures.

mod support;

use std::sync::Arc;

use dashboard::alerts::{AlertsView, Engine, Notifier, Policy, evaluate_once, rules};
use dashboard::auth::{Access, Credentials, Secret};
use store::{ColumnType, PipelineStatus, QLIK_TARGETS_TABLE, ResultColumn, ResultDelta, ResultRow, Store, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "scrape-token";
const T0: i64 = 1_767_225_600_000_000;
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Makes pipeline `per_item`'s result `n` for items 1..=3.
async fn set_result(store: &dyn Store, n: i64) {
    let columns = [
        ResultColumn { name: "item_id".into(), column_type: ColumnType::Integer, role: None },
        ResultColumn { name: "n".into(), column_type: ColumnType::Integer, role: None },
    ];
    let status = PipelineStatus { name: "per_item".into(), state: "running".into(), ..Default::default() };
    let rows = (1..=3).map(|i| ResultRow { id: i.to_string(), values: vec![Value::Integer(i), Value::Integer(n)] });
    let delta = ResultDelta { upserts: rows.collect(), deletes: vec![] };
    store.prepare_result_table("per_item", "per_item", &columns, false).await.unwrap();
    store.write_batch("per_item", &columns, &delta, &status, &[], &[]).await.unwrap();
}

/// A webhook receiver that answers the first `failing` POSTs with 500, then 204.
async fn webhook_failing_first(failing: usize) -> String {
    let mut failures_left = failing;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            // Read the whole request (head and body) before answering.
            let mut request = Vec::new();
            let mut buffer = [0u8; 4096];
            loop {
                let n = socket.read(&mut buffer).await.unwrap();
                request.extend_from_slice(&buffer[..n]);
                let text = String::from_utf8_lossy(&request).to_ascii_lowercase();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let length = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length: "))
                        .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                    if body.len() >= length {
                        break;
                    }
                }
                assert!(n > 0, "the request ended early");
            }
            let status = if failures_left > 0 { 500 } else { 204 };
            failures_left = failures_left.saturating_sub(1);
            let answer = format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            socket.write_all(answer.as_bytes()).await.unwrap();
        }
    });
    url
}

/// The value of the sample `series` (name and labels exactly as exposed), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn a_scrape_shows_requests_store_errors_alerts_and_webhooks_moving() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let uri = format!("sqlite:{}", dir.path().join("results.sqlite").display());
        let raw: Arc<dyn Store> = Arc::from(store::open(&uri, None).await.unwrap());
        set_result(raw.as_ref(), 5).await;
        let text = "[[rule]]\nname = \"busy\"\npipeline = \"per_item\"\nvalue = \"n\"\ncondition = \"above\"\nthreshold = 50\n";
        let rules = rules::parse(text, "alerts.toml").unwrap();
        let alerts = Arc::new(AlertsView::new(rules.clone()));
        let token = Secret::new(TOKEN, "test").unwrap();
        let state = dashboard::AppState {
            access: Arc::new(Access::Protected(Credentials::new("admin", None, Some(token)).unwrap().unwrap())),
            ..support::state(raw.clone(), alerts.clone())
        };
        let (metrics, store) = (state.metrics.clone(), state.store.clone());
        let (url, _stop) = support::serve(state).await;
        let client = reqwest::Client::new();
        let scrape = || async {
            let response = client
                .get(format!("{url}/metrics"))
                .bearer_auth(TOKEN)
                .header("accept", "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5")
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            assert_eq!(response.headers()["content-type"], OPENMETRICS);
            let text = response.text().await.unwrap();
            assert!(text.ends_with("# EOF\n"), "an OpenMetrics exposition ends with # EOF:\n{text}");
            text
        };
        let get = |path: &str, token: Option<&str>| {
            let mut request = client.get(format!("{url}{path}"));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            async move { request.send().await.unwrap().status().as_u16() }
        };

        // Requests by route pattern and status, 401s included.
        let ok = r#"dashboard_http_requests_total{method="GET",route="/api/pipelines",status="200"}"#;
        let refused = r#"dashboard_http_requests_total{method="GET",route="/api/pipelines",status="401"}"#;
        let before = scrape().await;
        assert_eq!(sample(&before, ok), None, "nothing served yet");
        for _ in 0..3 {
            assert_eq!(get("/api/pipelines", Some(TOKEN)).await, 200);
        }
        assert_eq!(get("/api/pipelines", None).await, 401);
        assert_eq!(get("/pipelines/per_item", Some(TOKEN)).await, 200);
        assert_eq!(get("/nowhere", Some(TOKEN)).await, 404);
        let after = scrape().await;
        assert_eq!(sample(&after, ok), Some(3.0));
        assert_eq!(sample(&after, refused), Some(1.0));
        let page = r#"dashboard_http_requests_total{method="GET",route="/pipelines/{name}",status="200"}"#;
        assert_eq!(sample(&after, page), Some(1.0), "the route's pattern, not the pipeline's name");
        let unmatched = r#"dashboard_http_requests_total{method="GET",route="unmatched",status="404"}"#;
        assert_eq!(sample(&after, unmatched), Some(1.0));
        let scrapes = r#"dashboard_http_requests_total{method="GET",route="/metrics",status="200"}"#;
        assert_eq!(sample(&after, scrapes), Some(1.0), "the first scrape");
        let timed = r#"dashboard_http_request_duration_seconds_count{method="GET",route="/api/pipelines"}"#;
        assert_eq!(sample(&after, timed), Some(4.0));
        let slow = r#"dashboard_http_request_duration_seconds_bucket{le="+Inf",method="GET",route="/api/pipelines"}"#;
        assert_eq!(sample(&after, slow), Some(4.0));
        assert!(after.contains("# TYPE dashboard_http_request_duration_seconds histogram\n"));
        assert!(after.contains("# UNIT dashboard_http_request_duration_seconds seconds\n"));
        let statuses_read = r#"dashboard_store_read_duration_seconds_count{operation="statuses"}"#;
        assert_eq!(sample(&after, statuses_read), Some(3.0), "the store reads behind the API, not behind a 401");

        // A store read that fails: the Qlik states in a table of another shape.
        let qlik_errors = r#"dashboard_store_read_errors_total{operation="qlik_statuses"}"#;
        assert_eq!(sample(&after, qlik_errors), None);
        let broken = [ResultColumn { name: "bogus".into(), column_type: ColumnType::Integer, role: None }];
        let status = PipelineStatus { name: "broken".into(), result_table: QLIK_TARGETS_TABLE.into(), ..Default::default() };
        let delta = ResultDelta { upserts: vec![ResultRow { id: "1".into(), values: vec![Value::Integer(1)] }], deletes: vec![] };
        raw.prepare_result_table("broken", QLIK_TARGETS_TABLE, &broken, true).await.unwrap();
        raw.write_batch(QLIK_TARGETS_TABLE, &broken, &delta, &status, &[], &[]).await.unwrap();
        assert_eq!(get("/api/pipelines", Some(TOKEN)).await, 200, "the page goes on without the Qlik states");
        assert_eq!(sample(&scrape().await, qlik_errors), Some(1.0));

        // Alerts: normal, then firing (the webhook refuses), then resolved (it accepts
        // the firing one again, then the resolve). Notified at once: no group wait.
        let mut engine = Engine::new(rules);
        let at_once = Policy { group_wait_seconds: 0.0, group_interval_seconds: 0.0, ..Policy::default() };
        let mut notifier = Notifier::new(Some(webhook_failing_first(1).await), vec![], at_once);
        evaluate_once(&mut engine, store.as_ref(), None, &alerts, &metrics, T0).await;
        let text = scrape().await;
        let firing = r#"dashboard_alert_instances{rule="busy",state="firing"}"#;
        let normal = r#"dashboard_alert_instances{rule="busy",state="normal"}"#;
        assert_eq!((sample(&text, normal), sample(&text, firing)), (Some(1.0), Some(0.0)));
        assert_eq!(sample(&text, "dashboard_alert_evaluations_total"), Some(1.0));
        assert_eq!(sample(&text, "dashboard_alert_evaluation_duration_seconds_count"), Some(1.0));
        assert_eq!(sample(&text, "dashboard_webhook_requests_total"), Some(0.0));

        set_result(raw.as_ref(), 80).await;
        evaluate_once(&mut engine, store.as_ref(), Some(&mut notifier), &alerts, &metrics, T0 + 1).await;
        let text = scrape().await;
        assert_eq!((sample(&text, normal), sample(&text, firing)), (Some(0.0), Some(1.0)));
        assert_eq!(sample(&text, r#"dashboard_alert_transitions_total{rule="busy",to="firing"}"#), Some(1.0));
        assert_eq!(sample(&text, "dashboard_webhook_requests_total"), Some(1.0));
        assert_eq!(sample(&text, "dashboard_webhook_failures_total"), Some(1.0));

        set_result(raw.as_ref(), 5).await;
        evaluate_once(&mut engine, store.as_ref(), Some(&mut notifier), &alerts, &metrics, T0 + 2).await;
        let text = scrape().await;
        assert_eq!((sample(&text, normal), sample(&text, firing)), (Some(1.0), Some(0.0)), "resolved");
        assert_eq!(sample(&text, "dashboard_webhook_requests_total"), Some(3.0), "the firing one again, the resolve");
        assert_eq!(sample(&text, "dashboard_webhook_failures_total"), Some(1.0));
        assert_eq!(sample(&text, "dashboard_alert_evaluations_total"), Some(3.0));
        let read_table = r#"dashboard_store_read_duration_seconds_count{operation="read_table"}"#;
        assert_eq!(sample(&text, read_table), Some(3.0), "one result read per evaluation");

        // Without OpenMetrics in Accept (curl): the classic text format.
        let classic = client.get(format!("{url}/metrics")).bearer_auth(TOKEN).send().await.unwrap();
        assert_eq!(classic.headers()["content-type"], "text/plain; version=0.0.4; charset=utf-8");
        let classic = classic.text().await.unwrap();
        assert!(classic.contains("# TYPE dashboard_http_requests_total counter\n"), "{classic}");
        assert!(!classic.contains("# EOF"));
        assert_eq!(sample(&classic, ok), Some(4.0));
    });
}

//! `cargo bench -p dashboard`: requests per second and latency percentiles of the
//! pipeline page (and its chart and rows API, with relative ranges and column filters)
//! with `BENCH_ROWS` (default 100,000) result rows in an SQLite store, under
//! `BENCH_CONNECTIONS` (default 8) concurrent clients for `BENCH_SECONDS` (default 10)
//! per route, all on this machine. Every request logs in with basic auth and is counted
//! in the metrics, as in compose. Then, in headless Chromium, the pipeline page's
//! weight (bytes transferred, page and assets) and its time to first chart.

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use store::{ColumnRole, ColumnType, PipelineStatus, ResultColumn, ResultDelta, ResultRow, Store, Value};

const T0: i64 = 1_767_225_600_000_000;
const MINUTE: i64 = 60_000_000;
const PASSWORD: &str = "bench-password";

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// `rows` rows: 100 users × (rows / 100) five-minute windows, three interaction types cycling.
async fn fill(store: &dyn Store, rows: u64) {
    let columns = vec![
        ResultColumn { name: "window".into(), column_type: ColumnType::Window, role: Some(ColumnRole::Key) },
        ResultColumn { name: "user_id".into(), column_type: ColumnType::Integer, role: Some(ColumnRole::Key) },
        ResultColumn { name: "interaction_type".into(), column_type: ColumnType::Text, role: Some(ColumnRole::Key) },
        ResultColumn {
            name: "interaction_count".into(),
            column_type: ColumnType::Integer,
            role: Some(ColumnRole::Value),
        },
    ];
    store.prepare_result_table("per_window", "per_window", &columns, true).await.unwrap();
    let status = PipelineStatus { name: "per_window".into(), state: "running".into(), ..Default::default() };
    let all: Vec<u64> = (0..rows).collect();
    for chunk in all.chunks(10_000) {
        let upserts = chunk
            .iter()
            .map(|&i| {
                let (w, user) = ((i / 100) as i64, (i % 100) as i64);
                ResultRow {
                    id: format!("{w}-{user}"),
                    values: vec![
                        Value::Struct(vec![
                            ("start".into(), Value::Timestamp(T0 + w * 5 * MINUTE)),
                            ("end".into(), Value::Timestamp(T0 + (w + 1) * 5 * MINUTE)),
                        ]),
                        Value::Integer(user),
                        Value::Text(["view", "click", "purchase"][(i % 3) as usize].into()),
                        Value::Integer((i * 7 % 50) as i64),
                    ],
                }
            })
            .collect();
        store
            .write_batch("per_window", &columns, &ResultDelta { upserts, deletes: vec![] }, &status, &[], &[])
            .await
            .unwrap();
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let (rows, connections, seconds) =
        (env("BENCH_ROWS", 100_000), env("BENCH_CONNECTIONS", 8), env("BENCH_SECONDS", 10));
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    runtime.block_on(async {
        let uri = format!("sqlite:{}", dir.path().join("bench.sqlite").display());
        let store: Arc<dyn Store> = Arc::from(store::open(&uri, None).await.unwrap());
        fill(store.as_ref(), rows).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let metrics = Arc::new(dashboard::metrics::Metrics::new());
        let password = dashboard::auth::Secret::new(PASSWORD, "bench").unwrap();
        let credentials = dashboard::auth::Credentials::new("admin", Some(password), None).unwrap().unwrap();
        let state = dashboard::AppState {
            store: Arc::new(dashboard::metrics::MeteredStore::new(store, metrics.clone())),
            refresh_seconds: 3.0,
            alerts: Default::default(),
            access: Arc::new(dashboard::auth::Access::Protected(credentials)),
            metrics,
            panels: Default::default(),
        };
        tokio::spawn(dashboard::run(listener, state, std::future::pending()));
        let client = reqwest::Client::new();

        println!("\n{rows} result rows, {connections} concurrent clients, {seconds} s per route\n");
        println!("| route | requests | requests/s | p50 ms | p99 ms | max ms |");
        println!("| --- | ---: | ---: | ---: | ---: | ---: |");
        for route in [
            "/pipelines/per_window",
            "/pipelines/per_window?sort=interaction_count&desc=true&page=3",
            "/api/pipelines/per_window/rows",
            "/api/pipelines/per_window/chart",
            "/api/pipelines/per_window/chart?range=24h",
            "/api/pipelines/per_window/rows?range=all&where.interaction_type=click&where.interaction_count=%3E40",
            "/",
        ] {
            let url = format!("{base}{route}");
            let started = Instant::now();
            let deadline = started + Duration::from_secs(seconds);
            let tasks: Vec<_> = (0..connections)
                .map(|_| {
                    let (client, url) = (client.clone(), url.clone());
                    tokio::spawn(async move {
                        let mut latencies = Vec::new();
                        while Instant::now() < deadline {
                            let t = Instant::now();
                            let response = client.get(&url).basic_auth("admin", Some(PASSWORD)).send().await.unwrap();
                            assert!(response.status().is_success(), "{url}: {}", response.status());
                            response.bytes().await.unwrap();
                            latencies.push(t.elapsed());
                        }
                        latencies
                    })
                })
                .collect();
            let mut latencies = Vec::new();
            for task in tasks {
                latencies.extend(task.await.unwrap());
            }
            let elapsed = started.elapsed().as_secs_f64();
            latencies.sort();
            println!(
                "| `{route}` | {} | {:.0} | {:.1} | {:.1} | {:.1} |",
                latencies.len(),
                latencies.len() as f64 / elapsed,
                percentile(&latencies, 0.5),
                percentile(&latencies, 0.99),
                percentile(&latencies, 1.0)
            );
        }

        // The page in a browser: what it transfers, and when its first chart is drawn.
        let mut browser = support::Browser::start().await;
        browser.answer_auth(Some(("admin", PASSWORD))).await;
        browser.call("Network.enable", serde_json::json!({})).await;
        let mut weights = Vec::new();
        let mut first_chart = Vec::new();
        for _ in 0..5 {
            browser.call("Network.clearBrowserCache", serde_json::json!({})).await;
            browser.goto(&format!("{base}/pipelines/per_window")).await;
            browser.wait_for("performance.getEntriesByName('first-chart').length > 0").await;
            let measured = browser
                .eval(
                    "(() => { const nav = performance.getEntriesByType('navigation')[0];
                       const bytes = [nav, ...performance.getEntriesByType('resource')].reduce((a, e) => a + e.transferSize, 0);
                       return [bytes, performance.getEntriesByName('first-chart')[0].startTime]; })()",
                )
                .await;
            weights.push(measured[0].as_f64().unwrap());
            first_chart.push(measured[1].as_f64().unwrap());
        }
        first_chart.sort_by(f64::total_cmp);
        println!(
            "\npipeline page in Chromium (5 cold loads): {:.0} KB transferred (page, script, style, uPlot, first data); \
             first chart drawn after {:.0} ms (median; min {:.0}, max {:.0})",
            weights.iter().copied().fold(0.0, f64::max) / 1024.0,
            first_chart[2],
            first_chart[0],
            first_chart[4]
        );
    });
}

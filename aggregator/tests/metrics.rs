//! The aggregator's Prometheus endpoint, scraped over HTTP while it runs: the counters
//! agree with what the pipelines did (the same numbers as their status rows).

mod support;

use std::io::{Read, Write};
use std::time::Duration;

use support::*;

/// `GET /metrics` over a plain socket: (content type, body).
fn scrape(port: u16) -> Option<(String, String)> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let content_type =
        head.lines().find_map(|l| l.to_ascii_lowercase().strip_prefix("content-type: ").map(String::from))?;
    Some((content_type, body.to_string()))
}

/// The value of the sample `name` (with its labels, exactly as exposed).
fn sample(body: &str, name: &str) -> Option<f64> {
    body.lines().find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')).and_then(|v| v.parse().ok()))
}

#[test]
fn the_metrics_endpoint_counts_what_the_pipelines_did() {
    let log = tempfile::tempdir().unwrap();
    generate_log(log.path(), 5_000, 1_000, 3);
    std::fs::write(log.path().join("batch-99999999.jsonl"), "{not json\n[1]\n").unwrap();
    let work = tempfile::tempdir().unwrap();
    let sql = tempfile::tempdir().unwrap();
    for name in ["user_interactions_5m", "avg_interactions_per_item"] {
        std::fs::copy(repo_root().join(format!("sql/{name}.sql")), sql.path().join(format!("{name}.sql"))).unwrap();
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_aggregator"))
        .args(["--sql", sql.path().to_str().unwrap(), "--source", &format!("file:{}", log.path().display())])
        .args(["--sink", &format!("sqlite:{}", work.path().join("results.sqlite").display())])
        .args(["--checkpoint-dir", work.path().join("checkpoints").to_str().unwrap()])
        .args(["--max-batch-records", "400", "--checkpoint-interval-seconds", "0.1"])
        .args(["--metrics-listen", &format!("127.0.0.1:{port}")])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let reader = StoreReader::sqlite(&work.path().join("results.sqlite"));
    wait_until("both pipelines consumed everything", || {
        let statuses = reader.statuses();
        statuses.len() == 2 && statuses.iter().all(|s| s.events_in == 5_002 && s.state == "caught_up")
    });
    // A checkpoint after the last batch (every 0.1 s while there is work).
    std::thread::sleep(Duration::from_millis(500));
    let (content_type, body) = scrape(port).expect("the endpoint answers");
    child.kill().unwrap();
    child.wait().unwrap();

    assert!(content_type.starts_with("application/openmetrics-text"), "{content_type}");
    assert!(body.ends_with("# EOF\n"));
    for status in reader.statuses() {
        let p = format!("pipeline=\"{}\"", status.name);
        let value = |name: &str| sample(&body, name).unwrap_or_else(|| panic!("no sample {name}\n{body}"));
        assert_eq!(value(&format!("aggregator_events_consumed_total{{{p}}}")), 5_002.0);
        assert_eq!(value(&format!("aggregator_events_total{{{p},outcome=\"bad\"}}")), 2.0);
        assert_eq!(value(&format!("aggregator_events_total{{{p},outcome=\"ok\"}}")), status.events_ok as f64);
        assert_eq!(value(&format!("aggregator_events_total{{{p},outcome=\"late\"}}")), status.events_late as f64);
        let upserts = value(&format!("aggregator_rows_written_total{{{p},op=\"upsert\"}}"));
        assert_eq!(upserts, status.rows_upserted as f64);
        assert!(upserts > 0.0);
        // Batches of at most 400 records, and a file's end ends a batch.
        let batches = value(&format!("aggregator_batch_records_count{{{p}}}"));
        assert!(batches >= (5_000 / 400) as f64, "{batches} batches");
        assert_eq!(value(&format!("aggregator_batch_records_sum{{{p}}}")), 5_002.0);
        assert!(value(&format!("aggregator_batch_duration_seconds_count{{{p}}}")) == batches);
        assert!(value(&format!("aggregator_checkpoint_duration_seconds_count{{{p}}}")) >= 1.0);
        assert!(value(&format!("aggregator_checkpoint_bytes{{{p}}}")) > 0.0);
        assert!(value(&format!("aggregator_state_groups{{{p}}}")) > 0.0);
        assert!(value(&format!("aggregator_state_bytes{{{p}}}")) > 0.0);
        assert_eq!(value(&format!("aggregator_source_lag{{{p},partition=\"0\"}}")), 0.0);
    }
    // The windowed pipeline's watermark is that of January 2026: months behind the clock.
    let delay = sample(&body, "aggregator_watermark_delay_seconds{pipeline=\"user_interactions_5m\"}").unwrap();
    assert!(delay > 30.0 * 86_400.0, "{delay}");
}

//! `cargo bench -p aggregator --bench mongo`: how fast results go into MongoDB
//! (a SecantusDB server started by testkit on this machine), next to SQLite.
//!
//! 1. The store alone: `write_batch` of micro-batch deltas over many changing groups
//!    (`BENCH_GROUPS`, default 100,000 groups; `BENCH_DELTA` rows per micro-batch,
//!    default 10,000; 5 rounds: the first inserts, the others update every group),
//!    in bulk commands of `store::mongo` `BULK_BATCH` (1,000) statements.
//! 2. A whole pipeline with many groups (`user_interactions_5m`: window × user × type)
//!    over `BENCH_EVENTS` (default 1,000,000) events, `--available-now`, into each store.

mod common;

use std::time::Instant;

use common::*;
use store::{ColumnType, PipelineStatus, ResultColumn, ResultDelta, ResultRow, Store, Value};

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// CPU seconds (user + system) this process has used: the client's share of the work,
/// whatever the server spends.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which ends with ')'): utime and stime are 12 and 13.
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or_default().split_whitespace().collect();
    let ticks: f64 = fields.get(11..13).map_or(0.0, |f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum());
    ticks / 100.0
}

/// Upserts per second of `rounds` passes over `groups` groups, `delta` rows per write.
async fn upserts_per_second(store: &dyn Store, groups: i64, delta: i64, rounds: i64) -> (f64, f64) {
    let columns = vec![
        ResultColumn { name: "user_id".into(), column_type: ColumnType::Integer, role: None },
        ResultColumn { name: "interaction_count".into(), column_type: ColumnType::Integer, role: None },
        ResultColumn { name: "avg_duration".into(), column_type: ColumnType::Real, role: None },
    ];
    store.prepare_result_table("bench", "bench", &columns, true).await.unwrap();
    let status = PipelineStatus { name: "bench".into(), ..Default::default() };
    let mut rates = Vec::new();
    for round in 0..rounds {
        let started = Instant::now();
        for first in (0..groups).step_by(delta as usize) {
            let upserts = (first..(first + delta).min(groups))
                .map(|g| ResultRow {
                    id: g.to_string(),
                    values: vec![
                        Value::Integer(g),
                        Value::Integer(round + 1),
                        Value::Real(g as f64 / 7.0 + round as f64),
                    ],
                })
                .collect();
            let delta = ResultDelta { upserts, deletes: Vec::new() };
            store.write_batch("bench", &columns, &delta, &status, &[], &[]).await.unwrap();
        }
        rates.push(groups as f64 / started.elapsed().as_secs_f64());
    }
    let inserts = rates[0];
    let updates = rates[1..].iter().sum::<f64>() / (rates.len() - 1) as f64;
    (inserts, updates)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let groups: i64 = std::env::var("BENCH_GROUPS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let delta: i64 = std::env::var("BENCH_DELTA").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let events: u64 = std::env::var("BENCH_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let server = testkit::MongoServer::start();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let work = tempfile::tempdir_in(repo_root().join("target")).unwrap();

    println!(
        "\n| store | groups | rows per micro-batch | inserts/s (1st round) | upserts/s (updates, 4 rounds) | client CPU µs per row |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for (name, uri) in [
        ("MongoDB (SecantusDB)", server.uri("bench")),
        ("SQLite", format!("sqlite:{}", work.path().join("bench.sqlite").display())),
    ] {
        let store = runtime.block_on(store::open(&uri, None)).unwrap();
        let cpu = cpu_seconds();
        let (inserts, updates) = runtime.block_on(upserts_per_second(store.as_ref(), groups, delta, 5));
        let cpu_per_row = (cpu_seconds() - cpu) * 1e6 / (groups * 5) as f64;
        println!("| {name} | {groups} | {delta} | {inserts:.0} | {updates:.0} | {cpu_per_row:.1} |");
    }
    println!("(bench process peak RSS {:.1} MiB)", peak_rss_kib() as f64 / 1024.0);

    let log = log(events);
    let pipeline = repo_root().join("sql/user_interactions_5m.sql");
    let source = format!("file:{}", log.display());
    println!(
        "\n| user_interactions_5m into | events | seconds | events/s | rows upserted | upserts/s | result rows | peak RSS (MiB) |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (name, sink) in [("MongoDB (SecantusDB)", Some(server.uri("pipeline"))), ("SQLite", None)] {
        let run = run_aggregator_into(&pipeline, &source, sink.as_deref(), &[]);
        let rows = match &sink {
            Some(uri) => runtime.block_on(async {
                let store = store::open(uri, None).await.unwrap();
                store.read_table("user_interactions_5m").await.unwrap().map_or(0, |t| t.rows.len())
            }),
            None => 0,
        };
        println!(
            "| {name} | {} | {:.1} | {:.0} | {} | {:.0} | {} | {:.1} |",
            run.events,
            run.seconds,
            run.events as f64 / run.seconds,
            run.rows_upserted,
            run.rows_upserted as f64 / run.seconds,
            if sink.is_some() { rows.to_string() } else { "-".into() },
            run.peak_rss_kib as f64 / 1024.0
        );
    }
}

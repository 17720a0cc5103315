//! `cargo bench -p aggregator --bench qlik`: how fast a sustained stream's results
//! reach a Qlik app, with the QIX engine test double (testkit) taking a fixed time per
//! reload (`BENCH_RELOAD_MS`, default 2,000 ms, as a mid-sized real app might).
//!
//! A generator thread writes `BENCH_RATE` events per second (default 5,000) into the
//! file log for `BENCH_SECONDS` (default 60); the aggregator binary runs the pipelines
//! `BENCH_PIPELINES` (default `user_interactions_5m,item_interactions_5m`) live with
//! `--qlik` and its default pacing knobs. Reported: reloads per minute, result rows
//! delivered into the app per second (every reload replaces each changed table
//! whole), the reload durations the aggregator measured, the most reloads ever running
//! at once on the app (must be 1), and how stale the app was at the end.

mod common;

use std::time::{Duration, Instant};

use common::*;
use generator::events::{EventGenerator, EventOptions, TimestampFormat};
use testkit::{QixEngine, QixOptions};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let reload_ms = env_u64("BENCH_RELOAD_MS", 2_000);
    let rate = env_u64("BENCH_RATE", 5_000);
    let seconds = env_u64("BENCH_SECONDS", 60);
    let pipelines = env_list("BENCH_PIPELINES", "user_interactions_5m,item_interactions_5m");
    let engine =
        QixEngine::start(QixOptions { reload_time: Duration::from_millis(reload_ms), ..QixOptions::default() });
    let app = "bench.qvf";

    let work = tempfile::tempdir_in(repo_root().join("target")).unwrap();
    let (log, sql) = (work.path().join("events"), work.path().join("sql"));
    std::fs::create_dir_all(&log).unwrap();
    std::fs::create_dir_all(&sql).unwrap();
    for name in &pipelines {
        std::fs::copy(repo_root().join(format!("sql/{name}.sql")), sql.join(format!("{name}.sql"))).unwrap();
    }
    let results = work.path().join("results.sqlite");
    let mut aggregator = std::process::Command::new(env!("CARGO_BIN_EXE_aggregator"))
        .arg("--sql")
        .arg(&sql)
        .arg("--source")
        .arg(format!("file:{}", log.display()))
        .arg("--sink")
        .arg(format!("sqlite:{}", results.display()))
        .arg("--checkpoint-dir")
        .arg(work.path().join("checkpoints"))
        .args(["--qlik", &engine.url(app), "--poll-interval-ms", "100"])
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();

    // The stream: one batch file per second, covering 100 s of event time each, so the
    // windowed results grow by a 5-minute window every 3 s (the tables reloaded grow).
    let writer = {
        let log = log.clone();
        std::thread::spawn(move || {
            let mut events = EventGenerator::new(EventOptions {
                seed: 3,
                users: 1_000,
                items: 100,
                start_time_micros: 1_767_225_600_000_000,
                events_per_second: rate as f64 / 100.0,
                out_of_order_share: 0.01,
                out_of_order_seconds: 60.0,
                late_share: 0.0,
                timestamp_format: TimestampFormat::Iso,
            });
            generator::batch_files::write_batches(&log, &mut events, rate * seconds, rate, Duration::from_secs(1))
                .unwrap();
        })
    };

    // Watch the targets' status: each new reload adds the rows it loaded.
    let store = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let reader = loop {
        match store.block_on(store::open(&format!("sqlite:{}", results.display()), None)) {
            Ok(reader) if results.exists() => break reader,
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    let started = Instant::now();
    let mut seen = std::collections::BTreeMap::<String, u64>::new();
    let (mut rows_delivered, mut durations) = (0u64, Vec::new());
    let mut poll = |rows_delivered: &mut u64, durations: &mut Vec<f64>| {
        for s in store.block_on(reader.qlik_statuses()).unwrap_or_default() {
            let before = seen.insert(s.table.clone(), s.reloads).unwrap_or(0);
            if s.reloads > before {
                *rows_delivered += s.last_reload_rows * (s.reloads - before);
                durations.extend(s.last_reload_seconds);
            }
        }
    };
    while !writer.is_finished() {
        poll(&mut rows_delivered, &mut durations);
        std::thread::sleep(Duration::from_millis(100));
    }
    writer.join().unwrap();
    let streamed = started.elapsed().as_secs_f64();
    let reloads = engine.reloads(app);
    // Then until the app holds the final result (the last events' changes).
    let stream_end = Instant::now();
    let final_consumed = rate * seconds;
    loop {
        poll(&mut rows_delivered, &mut durations);
        let statuses = store.block_on(reader.statuses()).unwrap_or_default();
        let caught_up = statuses.iter().all(|s| s.events_in == final_consumed);
        let qlik = store.block_on(reader.qlik_statuses()).unwrap_or_default();
        if caught_up && qlik.iter().all(|s| s.state == "up_to_date") && qlik.len() == pipelines.len() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let settle = stream_end.elapsed().as_secs_f64();
    let _ = std::process::Command::new("kill").arg(aggregator.id().to_string()).status();
    aggregator.wait().unwrap();

    durations.sort_by(f64::total_cmp);
    let median = durations.get(durations.len() / 2).copied().unwrap_or(0.0);
    println!(
        "| reload time (double) | events/s | seconds | reloads | reloads/min | rows delivered | rows/s into the app | median reload s (measured) | max concurrent | app current after stream end |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    println!(
        "| {:.1} s | {rate} | {streamed:.1} | {reloads} | {:.1} | {rows_delivered} | {:.0} | {median:.2} | {} | {settle:.1} s |",
        reload_ms as f64 / 1000.0,
        reloads as f64 * 60.0 / streamed,
        rows_delivered as f64 / streamed,
        engine.max_concurrent_reloads(app),
    );
    assert_eq!(engine.violations(), Vec::<String>::new());
}

//! Benchmark: the shipped pipelines from the file log into SQLite.
//!
//! ```text
//! cargo bench -p aggregator                       # 5M and 50M events, every pipeline in sql/
//! BENCH_EVENTS=1000000 BENCH_PIPELINES=user_interactions_5m cargo bench -p aggregator
//! ```
//!
//! For each event count it writes a log once (default data set: 1,000 users, 100
//! items, 100 events per second of event time, 1% out of order; files of 100,000
//! events) under `target/bench-data/`, then runs each pipeline alone in its own
//! `aggregator --available-now` process (one pipeline = one thread = one core) and
//! reports events per second (wall time of the whole process, start-up included)
//! and the process's peak RSS. Logs are reused by later runs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use generator::events::{EventGenerator, EventOptions, TimestampFormat};

fn env_list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_string())
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The log of `count` events, written once.
fn log(count: u64) -> PathBuf {
    let dir = repo_root().join(format!("target/bench-data/events-{count}"));
    let done = dir.join(".complete");
    if done.exists() {
        return dir;
    }
    let _ = std::fs::remove_dir_all(&dir);
    let started = Instant::now();
    let mut events = EventGenerator::new(EventOptions {
        seed: 1,
        users: 1_000,
        items: 100,
        start_time_micros: 1_767_225_600_000_000,
        events_per_second: 100.0,
        out_of_order_share: 0.01,
        out_of_order_seconds: 120.0,
        late_share: 0.0,
        timestamp_format: TimestampFormat::Iso,
    });
    generator::batch_files::write_batches(&dir, &mut events, count, 100_000, Duration::ZERO).unwrap();
    std::fs::write(&done, b"").unwrap();
    eprintln!("wrote {count} events in {:.1} s", started.elapsed().as_secs_f64());
    dir
}

struct Run {
    events: u64,
    seconds: f64,
    peak_rss_kib: u64,
}

fn run(pipeline: &Path, log: &Path) -> Run {
    let work = tempfile::tempdir_in(repo_root().join("target")).unwrap();
    let summary = work.path().join("summary.json");
    let status = Command::new(env!("CARGO_BIN_EXE_aggregator"))
        .arg("--sql")
        .arg(pipeline)
        .arg("--source")
        .arg(format!("file:{}", log.display()))
        .arg("--sink")
        .arg(format!("sqlite:{}", work.path().join("results.sqlite").display()))
        .arg("--checkpoint-dir")
        .arg(work.path().join("checkpoints"))
        .arg("--available-now")
        .arg("--summary-json")
        .arg(&summary)
        .env("RUST_LOG", "warn")
        .status()
        .unwrap();
    assert!(status.success(), "{} failed", pipeline.display());
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    Run {
        events: report["pipelines"][0]["events_in"].as_u64().unwrap(),
        seconds: report["elapsed_seconds"].as_f64().unwrap(),
        peak_rss_kib: report["peak_rss_kib"].as_u64().unwrap(),
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` would pass nothing: only
    // run when asked to benchmark.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let counts: Vec<u64> = env_list("BENCH_EVENTS", "5000000,50000000").iter().map(|c| c.parse().unwrap()).collect();
    let mut pipelines: Vec<PathBuf> = std::fs::read_dir(repo_root().join("sql"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .collect();
    pipelines.sort();
    let only = env_list("BENCH_PIPELINES", "");
    if !only.is_empty() {
        pipelines.retain(|p| only.iter().any(|o| p.file_stem().is_some_and(|s| s == o.as_str())));
    }
    let mut table = Vec::new();
    for &count in &counts {
        let log = log(count);
        for pipeline in &pipelines {
            let r = run(pipeline, &log);
            let name = pipeline.file_stem().unwrap().to_string_lossy().into_owned();
            eprintln!("{name}: {} events in {:.2} s", r.events, r.seconds);
            table.push((name, count, r));
        }
    }
    println!("\n| pipeline | events | seconds | events/s | peak RSS (MiB) |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for (name, _, r) in &table {
        println!(
            "| {name} | {} | {:.1} | {:.0} | {:.1} |",
            r.events,
            r.seconds,
            r.events as f64 / r.seconds,
            r.peak_rss_kib as f64 / 1024.0
        );
    }
    if counts.len() >= 2 {
        let (small, large) = (counts[0], counts[counts.len() - 1]);
        println!("\n| pipeline | RSS at {large} / RSS at {small} |");
        println!("| --- | ---: |");
        for (name, count, r) in &table {
            let at_small = table.iter().find(|(n, c, _)| n == name && *c == small);
            if let (true, Some((_, _, s))) = (*count == large, at_small) {
                println!("| {name} | {:.3} |", r.peak_rss_kib as f64 / s.peak_rss_kib as f64);
            }
        }
    }
}

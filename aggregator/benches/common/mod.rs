//! Shared by the benchmarks: the generated event logs they read.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use generator::events::{EventGenerator, EventOptions, TimestampFormat};

pub fn env_list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_string())
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The log of `count` events, written once.
pub fn log(count: u64) -> PathBuf {
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

/// One `aggregator --available-now` process: events consumed, wall time, peak RSS.
pub struct Run {
    pub events: u64,
    pub seconds: f64,
    pub peak_rss_kib: u64,
    /// Result rows the pipeline upserted into its store.
    pub rows_upserted: u64,
    /// Groups in the pipeline's state at the end, and the bytes they take.
    pub state_groups: u64,
    pub state_bytes: u64,
}

/// Runs `pipeline` alone over `source` until caught up (`--available-now`), with `extra_args`,
/// into a fresh SQLite store.
pub fn run_aggregator(pipeline: &Path, source: &str, extra_args: &[&str]) -> Run {
    run_aggregator_into(pipeline, source, None, extra_args)
}

/// [`run_aggregator`] into `sink` (default: a fresh SQLite store).
pub fn run_aggregator_into(pipeline: &Path, source: &str, sink: Option<&str>, extra_args: &[&str]) -> Run {
    let work = tempfile::tempdir_in(repo_root().join("target")).unwrap();
    run_aggregator_in(work.path(), pipeline, source, sink, extra_args)
}

/// [`run_aggregator_into`] with its checkpoints, summary and default store in `work`
/// (a second run there resumes from the first one's checkpoint).
pub fn run_aggregator_in(work: &Path, pipeline: &Path, source: &str, sink: Option<&str>, extra_args: &[&str]) -> Run {
    let sink = sink.map_or_else(|| format!("sqlite:{}", work.join("results.sqlite").display()), str::to_string);
    let summary = work.join("summary.json");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_aggregator"))
        .arg("--sql")
        .arg(pipeline)
        .arg("--source")
        .arg(source)
        .arg("--sink")
        .arg(&sink)
        .arg("--checkpoint-dir")
        .arg(work.join("checkpoints"))
        .arg("--available-now")
        .arg("--summary-json")
        .arg(&summary)
        .args(extra_args)
        .env("RUST_LOG", "warn")
        .status()
        .unwrap();
    assert!(status.success(), "{} failed", pipeline.display());
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    Run {
        events: report["pipelines"][0]["events_in"].as_u64().unwrap(),
        seconds: report["elapsed_seconds"].as_f64().unwrap(),
        peak_rss_kib: report["peak_rss_kib"].as_u64().unwrap(),
        rows_upserted: report["pipelines"][0]["rows_upserted"].as_u64().unwrap_or(0),
        state_groups: report["state"][0]["groups"].as_u64().unwrap_or(0),
        state_bytes: report["state"][0]["bytes"].as_u64().unwrap_or(0),
    }
}

/// A log of `users` events in which every event has its own user (`user_id` 0, 1, 2 …,
/// one second apart): as many groups as events for a `GROUP BY user_id`. Written once.
pub fn distinct_users_log(users: u64) -> PathBuf {
    use std::io::Write;
    let dir = repo_root().join(format!("target/bench-data/distinct-users-{users}"));
    if dir.join(".complete").exists() {
        return dir;
    }
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let start = 1_767_225_600i64; // 2026-01-01T00:00:00Z
    for (n, first) in (0..users).step_by(100_000).enumerate() {
        let path = dir.join(format!("batch-{n:08}.jsonl"));
        let mut out = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        for user in first..(first + 100_000).min(users) {
            let time = chrono::DateTime::from_timestamp(start + user as i64, 0).unwrap();
            writeln!(
                out,
                r#"{{"user_id": {user}, "item_id": {}, "interaction_type": "view", "timestamp": "{}"}}"#,
                user % 1000,
                time.format("%Y-%m-%dT%H:%M:%S")
            )
            .unwrap();
        }
        out.flush().unwrap();
    }
    std::fs::write(dir.join(".complete"), b"").unwrap();
    dir
}

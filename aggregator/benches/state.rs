//! Benchmark: the size of columnar state and of incremental checkpoints.
//!
//! ```text
//! cargo bench -p aggregator --bench state                  # 10M distinct users
//! BENCH_USERS=1000000 cargo bench -p aggregator --bench state
//! ```
//!
//! 1. `SELECT user_id, COUNT(*) … GROUP BY user_id` over a log in which every event has
//!    its own user (10M events → 10M groups), in one `aggregator --available-now`
//!    process: events/s, peak RSS, and the state's bytes per group (the process's
//!    `aggregator_state_bytes`, from its summary).
//! 2. 10,000 more events for 10,000 of those users, in a second run resuming from the
//!    first one's checkpoint: the size of the checkpoint that run writes (the changes,
//!    not the 10M groups) next to the full state's file.
//!
//! The log is written once under `target/bench-data/` and reused.

use std::io::Write;
use std::path::Path;

mod common;

use common::{Run, distinct_users_log, env_list, repo_root, run_aggregator_in};

fn run(sql: &Path, log: &Path, work: &Path) -> Run {
    run_aggregator_in(work, sql, &format!("file:{}", log.display()), None, &[])
}

/// The state files of the pipeline `name`, newest last, with their sizes.
fn state_files(work: &Path, name: &str) -> Vec<(String, u64)> {
    let dir = work.join("checkpoints").join(format!("{name}.state"));
    let mut files: Vec<(u64, String, u64)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let n = name.split('.').next().unwrap().parse().unwrap();
            (n, name, e.metadata().unwrap().len())
        })
        .collect();
    files.sort();
    files.into_iter().map(|(_, name, size)| (name, size)).collect()
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let users: u64 = env_list("BENCH_USERS", "10000000")[0].parse().unwrap();
    let touched: u64 = 10_000.min(users);
    let log = distinct_users_log(users);
    let work = tempfile::tempdir_in(repo_root().join("target")).unwrap();
    let sql = work.path().join("per_user.sql");
    std::fs::write(&sql, "SELECT user_id, COUNT(*) AS interactions FROM SOURCE GROUP BY user_id\n").unwrap();

    let first = run(&sql, &log, work.path());
    let full = state_files(work.path(), "per_user");
    eprintln!("first run: {} events in {:.1} s; state files {full:?}", first.events, first.seconds);

    // 10,000 more events of existing users, spread over the whole key range.
    let more = work.path().join("more");
    std::fs::create_dir_all(&more).unwrap();
    for entry in std::fs::read_dir(&log).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name().to_string_lossy().starts_with("batch-") {
            std::fs::hard_link(entry.path(), more.join(entry.file_name())).unwrap();
        }
    }
    let step = users / touched;
    let extra = more.join(format!("batch-{:08}.jsonl", 99_999_999));
    let mut out = std::io::BufWriter::new(std::fs::File::create(&extra).unwrap());
    for k in 0..touched {
        let user = k * step;
        writeln!(
            out,
            r#"{{"user_id": {user}, "item_id": 1, "interaction_type": "click", "timestamp": "2026-01-02T00:00:00"}}"#
        )
        .unwrap();
    }
    drop(out);
    let second = run(&sql, &more, work.path());
    let after = state_files(work.path(), "per_user");
    let delta = after.iter().find(|(name, _)| !full.iter().any(|(n, _)| n == name)).cloned();

    println!("\n| measure | value |");
    println!("| --- | ---: |");
    println!("| groups (distinct users) | {} |", first.state_groups);
    println!(
        "| events/s, first run (decode + aggregate + SQLite writes) | {:.0} |",
        first.events as f64 / first.seconds
    );
    println!("| peak RSS, first run | {:.0} MiB |", first.peak_rss_kib as f64 / 1024.0);
    println!("| state bytes (aggregator_state_bytes) | {:.0} MiB |", first.state_bytes as f64 / (1 << 20) as f64);
    println!("| state bytes per group | {:.1} |", first.state_bytes as f64 / first.state_groups.max(1) as f64);
    if let Some((name, size)) = full.first() {
        println!("| full state file ({name}) | {:.1} MB |", *size as f64 / 1e6);
    }
    match delta {
        Some((name, size)) => println!(
            "| checkpoint after {touched} of {} groups changed ({name}) | {:.3} MB |",
            second.state_groups,
            size as f64 / 1e6
        ),
        None => println!("| checkpoint after {touched} groups changed | no new state file: {after:?} |"),
    }
    println!("| peak RSS, resumed run | {:.0} MiB |", second.peak_rss_kib as f64 / 1024.0);
}

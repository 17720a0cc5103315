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

use std::path::PathBuf;

mod common;

use common::{env_list, log, repo_root, run_aggregator};

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
            let r = run_aggregator(pipeline, &format!("file:{}", log.display()), &[]);
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

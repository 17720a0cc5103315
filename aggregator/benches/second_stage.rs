//! Benchmark: the cost of a second stage as a function of the micro-batch size.
//!
//! ```text
//! cargo bench -p aggregator --bench second_stage              # 1M groups, 2M events
//! BENCH_USERS=200000 cargo bench -p aggregator --bench second_stage
//! ```
//!
//! Stage 1 counts events per user over a log in which 1M users appear twice (2M events:
//! every user once, then every user again), so the first stage holds up to 1M groups;
//! stage 2 averages the counts (`-- for_each_batch … FROM AGGREGATED`). Each variant
//! runs in its own `aggregator --available-now` process with micro-batches of 10,000
//! and of 100,000 records, with and without the second stage. A second stage whose
//! per-batch work follows the groups a batch touches costs about the same at both
//! sizes; one that re-reads every group each batch costs ~10× more per event with
//! batches 10× smaller.

mod common;

use common::{distinct_users_log, env_list, repo_root, run_aggregator};

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let users: u64 = env_list("BENCH_USERS", "1000000")[0].parse().unwrap();
    let once = distinct_users_log(users);
    // The same files twice: every user comes back once all have been seen.
    let log = repo_root().join(format!("target/bench-data/distinct-users-{users}-twice"));
    if !log.exists() {
        std::fs::create_dir_all(&log).unwrap();
        let mut files: Vec<_> = std::fs::read_dir(&once)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("batch-"))
            .collect();
        files.sort();
        for pass in 0..2 {
            for (i, name) in files.iter().enumerate() {
                let target = log.join(format!("batch-{:08}.jsonl", pass * files.len() + i));
                std::fs::hard_link(once.join(name), target).unwrap();
            }
        }
    }
    let work = tempfile::tempdir_in(repo_root().join("target")).unwrap();
    let stage1 = "SELECT user_id, COUNT(*) AS n FROM SOURCE GROUP BY user_id\n";
    let with_stage2 = format!(
        "{stage1}-- for_each_batch\nSELECT 'all' AS _id, AVG(n) AS avg_n, COUNT(*) AS users FROM AGGREGATED\n-- end_for\n"
    );
    let only_stage1 = work.path().join("per_user.sql");
    let two_stages = work.path().join("avg_per_user.sql");
    std::fs::write(&only_stage1, stage1).unwrap();
    std::fs::write(&two_stages, with_stage2).unwrap();

    let source = format!("file:{}", log.display());
    let mut rows = Vec::new();
    for (name, sql) in [("stage 1 only", &only_stage1), ("stage 1 + stage 2", &two_stages)] {
        let mut seconds = Vec::new();
        for batch in ["10000", "100000"] {
            let r = run_aggregator(sql, &source, &["--max-batch-records", batch]);
            eprintln!("{name}, batches of {batch}: {} events in {:.1} s", r.events, r.seconds);
            seconds.push((batch, r.events, r.seconds, r.peak_rss_kib));
        }
        rows.push((name, seconds));
    }
    println!("\n| pipeline | batch | events | seconds | events/s | peak RSS (MiB) |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for (name, runs) in &rows {
        for (batch, events, seconds, rss) in runs {
            println!(
                "| {name} | {batch} | {events} | {seconds:.1} | {:.0} | {:.0} |",
                *events as f64 / seconds,
                *rss as f64 / 1024.0
            );
        }
    }
    for (name, runs) in &rows {
        println!("{name}: batches of 10,000 take {:.2}× the time of batches of 100,000", runs[0].2 / runs[1].2);
    }
}

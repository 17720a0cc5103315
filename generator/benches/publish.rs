//! Benchmark: the generator publishing to a Kafka-protocol broker, and its memory.
//!
//! ```text
//! cargo bench -p generator                      # 1,000,000 events
//! BENCH_EVENTS=200000 cargo bench -p generator
//! ```
//!
//! Runs `generator --to kafka://…` (noida-db, see `testkit`) with batch files of
//! 1,000 and of 100,000 events, three times each, and reports the rate and the
//! process's peak RSS (VmHWM, sampled from /proc while it runs) as min / median /
//! max: memory must not grow with the batch size. (Peak RSS varies from run to run
//! with how full librdkafka's bounded send queue gets before the broker acknowledges.)

use std::process::Command;
use std::time::{Duration, Instant};

use testkit::{BrokerKind, KafkaBroker};

/// Peak RSS of a running process in KiB (0 once it is gone).
fn vm_hwm_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("VmHWM:").map(|v| v.trim().trim_end_matches("kB").trim().to_string()))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// One generator run: (events per second, peak RSS in KiB).
fn run(broker: &KafkaBroker, count: u64, batch_size: u64, round: usize) -> (f64, u64) {
    let out = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_generator"))
        .args(["--count", &count.to_string(), "--batch-size", &batch_size.to_string(), "--seed", "1"])
        .args(["--partitions", "3", "--out", out.path().to_str().unwrap()])
        .args(["--to", &broker.uri(&format!("bench-{batch_size}-{round}"))])
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    let mut peak = 0;
    while child.try_wait().unwrap().is_none() {
        peak = peak.max(vm_hwm_kib(child.id()));
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(child.wait().unwrap().success());
    (count as f64 / started.elapsed().as_secs_f64(), peak)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let count: u64 = std::env::var("BENCH_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let broker = KafkaBroker::start(BrokerKind::Noida);
    println!("\n| batch size | events | events/s (median) | peak RSS MiB (min / median / max) |");
    println!("| ---: | ---: | ---: | ---: |");
    for batch_size in [1_000u64, 100_000] {
        let mut runs: Vec<(f64, u64)> = (0..3).map(|round| run(&broker, count, batch_size, round)).collect();
        runs.sort_by_key(|r| r.1);
        let mut rates: Vec<f64> = runs.iter().map(|r| r.0).collect();
        rates.sort_by(f64::total_cmp);
        let mib = |kib: u64| kib as f64 / 1024.0;
        println!(
            "| {batch_size} | {count} | {:.0} | {:.1} / {:.1} / {:.1} |",
            rates[1],
            mib(runs[0].1),
            mib(runs[1].1),
            mib(runs[2].1)
        );
    }
}

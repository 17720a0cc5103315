//! Benchmark: the generator publishing to a Kafka-protocol broker, and its memory.
//!
//! ```text
//! cargo bench -p generator                      # 1,000,000 events
//! BENCH_EVENTS=200000 cargo bench -p generator
//! ```
//!
//! Runs `generator --to kafka://…` (noida-db, see `testkit`) twice, with batch files
//! of 1,000 and of 100,000 events, and reports the publish rate and the process's
//! peak RSS (VmHWM, sampled from /proc while it runs) for each: memory must not
//! grow with the batch size.

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

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let count: u64 = std::env::var("BENCH_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let broker = KafkaBroker::start(BrokerKind::Noida);
    println!("\n| batch size | events | write + publish seconds | events/s | peak RSS (MiB) |");
    println!("| ---: | ---: | ---: | ---: | ---: |");
    for batch_size in [1_000u64, 100_000] {
        let out = tempfile::tempdir().unwrap();
        let started = Instant::now();
        let mut child = Command::new(env!("CARGO_BIN_EXE_generator"))
            .args(["--count", &count.to_string(), "--batch-size", &batch_size.to_string(), "--seed", "1"])
            .args(["--partitions", "3", "--out", out.path().to_str().unwrap()])
            .args(["--to", &broker.uri(&format!("bench-{batch_size}"))])
            .env("RUST_LOG", "warn")
            .spawn()
            .unwrap();
        let mut peak = 0;
        while child.try_wait().unwrap().is_none() {
            peak = peak.max(vm_hwm_kib(child.id()));
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(child.wait().unwrap().success());
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "| {batch_size} | {count} | {seconds:.1} | {:.0} | {:.1} |",
            count as f64 / seconds,
            peak as f64 / 1024.0
        );
    }
}

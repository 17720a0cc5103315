//! Benchmark: end to end from a pre-filled Kafka topic, next to a bare consumer.
//!
//! ```text
//! cargo bench -p aggregator --bench kafka                         # 10M events
//! BENCH_EVENTS=1000000 cargo bench -p aggregator --bench kafka
//! BENCH_BROKER=tansu BENCH_EVENTS=2000000 cargo bench -p aggregator --bench kafka
//! ```
//!
//! Starts a noida-db broker (see `testkit`; `.ci/run` installs it), publishes the
//! generated log (`target/bench-data/`, as in the `pipelines` bench) to a topic of
//! three partitions with the generator's publisher (its rate is reported), then
//! `BENCH_RUNS` times (default 3), alternating:
//!
//! 1. reads the whole topic with a bare rdkafka consumer (assign all partitions,
//!    poll, touch each payload) — the raw consume rate;
//! 2. runs `aggregator --available-now` with the per-user 5-minute pipeline from the
//!    topic into SQLite — wall time of the whole process, start-up included.
//!
//! and reports the median of each. Before every run it waits for the broker to go
//! quiet: noida-db saves its data on a thread of its own (`autosave`) that keeps a
//! core busy for seconds after a publish, and whichever run overlapped it would be
//! slowed by the broker, not by itself (the same machine's two cores serve both).

mod common;

use std::time::{Duration, Instant};

use common::{env_list, log, repo_root, run_aggregator};
use generator::publish::{PublishOptions, publish};
use kafka_conf::KafkaUri;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use testkit::{BrokerKind, KafkaBroker};

/// noida-db ignores the consumer's fetch size limits and may answer one fetch with a
/// whole topic (1.15 GB at 10M events); librdkafka refuses responses above
/// `receive.message.max.bytes` (100 MB by default). Both consumers get the maximum.
const NOIDA_RECEIVE_MAX: &str = "2147483647";

/// Reads `count` messages of `topic` from the beginning; returns seconds.
fn raw_consume(broker: &KafkaBroker, topic: &str, count: u64) -> f64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", "bench-raw")
        .set("enable.auto.commit", "false")
        .set("receive.message.max.bytes", NOIDA_RECEIVE_MAX)
        .create()
        .unwrap();
    let started = Instant::now();
    let mut assignment = TopicPartitionList::new();
    for p in 0..3 {
        assignment.add_partition_offset(topic, p, Offset::Beginning).unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let (mut read, mut bytes) = (0u64, 0usize);
    while read < count {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                bytes += message.payload().map_or(0, <[u8]>::len);
                read += 1;
            }
            Some(Err(e)) => eprintln!("raw consumer: {e}"),
            None => {}
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    eprintln!("raw consumer: {read} messages, {bytes} bytes in {seconds:.2} s");
    seconds
}

/// CPU time (user + system, in clock ticks) the process `pid` has used.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (in parentheses, which may hold spaces).
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// Waits (up to two minutes) until the broker uses under a tenth of a core.
fn wait_until_quiet(broker: &KafkaBroker) {
    let Some(pid) = broker.pid() else { return };
    let started = Instant::now();
    let interval = Duration::from_millis(500);
    while started.elapsed() < Duration::from_secs(120) {
        let Some(before) = cpu_ticks(pid) else { return };
        std::thread::sleep(interval);
        let Some(after) = cpu_ticks(pid) else { return };
        // 100 ticks a second: under 5 ticks in half a second is under a tenth of a core.
        if after - before < 5 {
            break;
        }
    }
    eprintln!("broker quiet after {:.1} s", started.elapsed().as_secs_f64());
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let count: u64 = env_list("BENCH_EVENTS", "10000000")[0].parse().unwrap();
    let log = log(count);
    let mut files: Vec<_> =
        std::fs::read_dir(&log).unwrap().map(|e| e.unwrap().path()).filter(|p| !p.ends_with(".complete")).collect();
    files.retain(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'));
    files.sort();

    // BENCH_BROKER=tansu: the other Kafka-protocol broker testkit starts, which keeps
    // to the consumer's fetch size limits (noida-db answers a fetch with up to the
    // whole topic, which librdkafka then holds: peak RSS grows with the topic).
    let kind = match env_list("BENCH_BROKER", "noida")[0].as_str() {
        "tansu" => BrokerKind::Tansu,
        _ => BrokerKind::Noida,
    };
    let broker = KafkaBroker::start(kind);
    let topic = "bench";
    let options = PublishOptions {
        uri: KafkaUri::parse(&broker.uri(topic)).unwrap(),
        producer_conf: Vec::new(),
        key_field: "user_id".into(),
        interval: Duration::ZERO,
        rate: None,
        partitions: Some(3),
        progress_bar: false,
    };
    let started = Instant::now();
    let published = publish(&files, count, &options).unwrap();
    let publish_seconds = started.elapsed().as_secs_f64();
    assert_eq!(published, count);

    let runs: usize = env_list("BENCH_RUNS", "3")[0].parse().unwrap();
    let pipeline = repo_root().join("sql/user_interactions_5m.sql");
    let receive_max = format!("receive.message.max.bytes={NOIDA_RECEIVE_MAX}");
    let (mut raw_times, mut pipeline_times, mut last) = (Vec::new(), Vec::new(), None);
    for i in 0..runs {
        wait_until_quiet(&broker);
        let raw_seconds = raw_consume(&broker, topic, count);
        wait_until_quiet(&broker);
        let run = run_aggregator(&pipeline, &broker.uri(topic), &["--consumer-conf", &receive_max]);
        assert_eq!(run.events, count, "the pipeline consumed the whole topic");
        eprintln!(
            "run {}: bare consumer {:.0} events/s, pipeline {:.0} events/s ({:.0}%)",
            i + 1,
            count as f64 / raw_seconds,
            count as f64 / run.seconds,
            100.0 * raw_seconds / run.seconds
        );
        raw_times.push(raw_seconds);
        pipeline_times.push(run.seconds);
        last = Some(run);
    }
    let run = last.expect("at least one run");
    let (raw_seconds, pipeline_seconds) = (median(raw_times), median(pipeline_times));

    let raw_rate = count as f64 / raw_seconds;
    let e2e_rate = count as f64 / pipeline_seconds;
    println!("\nmedians of {runs} runs each:");
    println!("\n| step | events | seconds | events/s |");
    println!("| --- | ---: | ---: | ---: |");
    println!(
        "| generator publish (3 partitions) | {count} | {publish_seconds:.1} | {:.0} |",
        count as f64 / publish_seconds
    );
    println!("| bare rdkafka consumer | {count} | {raw_seconds:.1} | {raw_rate:.0} |");
    println!(
        "| user_interactions_5m, topic → SQLite | {count} | {pipeline_seconds:.1} | {e2e_rate:.0} (peak RSS {:.0} MiB) |",
        run.peak_rss_kib as f64 / 1024.0
    );
    println!("\npipeline / raw consume: {:.0}%", 100.0 * e2e_rate / raw_rate);
    // Windows close at the slowest partition's watermark: a partition that ran out of
    // records first holds them open until it is idle (--idle-timeout-seconds).
    println!("groups in the state at the end: {}", run.state_groups);
}

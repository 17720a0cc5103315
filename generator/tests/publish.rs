//! The generator binary publishing to a real Kafka-protocol broker (see `testkit`).

use std::process::Command;

use testkit::{BrokerKind, KafkaBroker};

#[test]
fn publishes_every_event_keyed_by_user_over_the_partitions() {
    let broker = KafkaBroker::start(BrokerKind::Noida);
    let out = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_generator"))
        .args(["--count", "5000", "--batch-size", "1000", "--seed", "3", "--partitions", "3"])
        .args(["--out", out.path().to_str().unwrap(), "--to", &broker.uri("events")])
        .args(["--producer-conf", "linger.ms=5", "--interval-seconds", "0.1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("published 5000/5000 events"), "plain progress lines off a terminal: {stderr}");
    let messages = broker.read_topic("events", Some(5000));
    let partitions: std::collections::BTreeSet<i32> = messages.iter().map(|m| m.partition).collect();
    assert_eq!(partitions.len(), 3);
    // What was published is what was written, line for line.
    let mut written: Vec<String> = std::fs::read_dir(out.path())
        .unwrap()
        .flat_map(|f| std::fs::read_to_string(f.unwrap().path()).unwrap().lines().map(String::from).collect::<Vec<_>>())
        .collect();
    let mut published: Vec<String> = messages.iter().map(|m| String::from_utf8(m.payload.clone()).unwrap()).collect();
    written.sort();
    published.sort();
    assert_eq!(written, published);
}

#[test]
fn messages_of_one_user_share_a_partition() {
    let broker = KafkaBroker::start(BrokerKind::Noida);
    let out = tempfile::tempdir().unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_generator"))
        .args(["--count", "2000", "--users", "20", "--seed", "4", "--partitions", "3"])
        .args(["--out", out.path().to_str().unwrap(), "--to", &broker.uri("keyed")])
        .status()
        .unwrap();
    assert!(status.success());
    let mut partition_of_user = std::collections::HashMap::new();
    for message in broker.read_topic("keyed", Some(2000)) {
        let (partition, text) = (message.partition, String::from_utf8(message.payload).unwrap());
        let user = generator::publish::key_of(text.as_bytes(), "user_id").unwrap().to_vec();
        assert_eq!(*partition_of_user.entry(user).or_insert(partition), partition, "{text}");
    }
    assert!(partition_of_user.len() == 20);
}

#[test]
fn an_unreachable_broker_is_a_clear_error_before_anything_is_written() {
    let out = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_generator"))
        .args(["--count", "10", "--out", out.path().to_str().unwrap(), "--to", "kafka://127.0.0.1:1/events"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("kafka://127.0.0.1:1/events") && stderr.contains("unreachable"), "{stderr}");
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0, "nothing written");
}

/// `--top-up` (what the one-shot compose service runs on every `up -d`): `--count` is how
/// many events the topic should hold, so a second run publishes nothing and a larger
/// count publishes only the difference.
#[test]
fn top_up_publishes_only_what_the_topic_lacks() {
    let broker = KafkaBroker::start(BrokerKind::Noida);
    let out = tempfile::tempdir().unwrap();
    let run = |count: &str| {
        let output = Command::new(env!("CARGO_BIN_EXE_generator"))
            .args(["--count", count, "--batch-size", "500", "--partitions", "3", "--top-up"])
            .args(["--out", out.path().to_str().unwrap(), "--to", &broker.uri("events")])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "{stderr}");
        assert!(!stderr.contains('\u{1b}'), "no colour codes in a log that is not a terminal: {stderr:?}");
        stderr
    };
    let first = run("2000");
    assert!(first.contains("published 2000/2000 events"), "{first}");
    assert_eq!(broker.message_count("events"), 2000);

    let again = run("2000");
    assert!(again.contains("already holds the events; nothing to publish"), "{again}");
    assert!(!again.contains("published"), "{again}");
    assert_eq!(broker.message_count("events"), 2000, "a second run publishes nothing");
    let files = |dir: &std::path::Path| std::fs::read_dir(dir).unwrap().count();
    assert_eq!(files(out.path()), 4, "and writes no batch file");

    let more = run("3500");
    assert!(more.contains("published 1500/1500 events"), "{more}");
    assert_eq!(broker.message_count("events"), 3500);
    assert_eq!(broker.read_topic("events", Some(3500)).len(), 3500);
}

#[test]
fn top_up_needs_a_topic() {
    let out = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_generator"))
        .args(["--count", "10", "--top-up", "--out", out.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--to"), "{}", String::from_utf8_lossy(&output.stderr));
}

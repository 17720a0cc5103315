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

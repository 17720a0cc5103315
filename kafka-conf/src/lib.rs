//! Kafka addresses and client settings, the same for the generator (producer) and
//! the aggregator (consumer, dead-letter producer).
//!
//! A topic is named by a URI, `kafka://host:port[,host:port...]/topic`; extra
//! librdkafka settings come as `key=value` pairs (`--producer-conf`, `--consumer-conf`)
//! and override ours.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::client::Client;

/// How long to wait for a broker's answer to a metadata request before calling it unreachable.
pub const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfError {
    #[error("{0:?} is not a Kafka URI (expected kafka://host:port/topic)")]
    NotAKafkaUri(String),
    #[error("{0:?} is not key=value")]
    NotKeyValue(String),
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
        _ => Err(ConfError::NotKeyValue(text.to_string())),
    }
}

/// A client configuration for `uri`'s brokers: our `defaults`, then the user's `overrides`.
pub fn client_config(uri: &KafkaUri, defaults: &[(&str, &str)], overrides: &[(String, String)]) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &uri.brokers);
    for (k, v) in defaults {
        config.set(*k, *v);
    }
    for (k, v) in overrides {
        config.set(k, v);
    }
    config
}

/// The number of partitions of `uri`'s topic, 0 if it does not exist. An unreachable
/// broker is an error naming it. (Asks for all topics: a request naming the topic
/// would make brokers with auto-creation create it, with their default partitions.)
pub fn partition_count<C: rdkafka::ClientContext>(client: &Client<C>, uri: &KafkaUri) -> Result<usize, String> {
    let metadata = client
        .fetch_metadata(None, METADATA_TIMEOUT)
        .map_err(|e| format!("{uri}: broker unreachable or not answering: {e}"))?;
    let topic = metadata.topics().iter().find(|t| t.name() == uri.topic);
    Ok(topic.map_or(0, |t| if t.error().is_some() { 0 } else { t.partitions().len() }))
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
    fn user_settings_override_defaults() {
        let uri = KafkaUri::parse("kafka://h:1/t").unwrap();
        let config = client_config(&uri, &[("linger.ms", "5")], &[("linger.ms".into(), "50".into())]);
        assert_eq!(config.get("linger.ms"), Some("50"));
        assert_eq!(config.get("bootstrap.servers"), Some("h:1"));
    }
}

//! `--dead-letter kafka://host:port/topic`: bad records are also produced to a topic,
//! byte for byte as read, with why and where in message headers:
//! `x-reason`, `x-source-offset` (`topic/partition@offset` or `file:line`) and
//! `x-pipeline`. Delivery is at least once: a record may appear twice after a crash.
//!
//! The producer's settings are `--kafka-conf-file` then `--producer-conf` (TLS, SASL,
//! `compression.type`, …). Wrong credentials or an untrusted certificate fail the
//! pipeline (a user error); a broker that is down is retried.

use std::time::Duration;

use kafka_conf::{ClientError, ClientErrors, KafkaUri};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use crate::error::{Error, Result};

const FLUSH_TIMEOUT: Duration = Duration::from_secs(30);

pub struct DeadLetter {
    uri: KafkaUri,
    producer: BaseProducer<ClientErrors>,
}

/// A bad record to send: the raw bytes, the reason, and where it was read.
pub struct DeadRecord<'a> {
    pub raw: &'a [u8],
    pub reason: &'a str,
    pub source_offset: &'a str,
}

impl DeadLetter {
    pub fn open(uri: &str, producer_conf: &[(String, String)]) -> Result<Self> {
        let uri = KafkaUri::parse(uri).map_err(|e| Error::user(format!("--dead-letter: {e}")))?;
        tracing::debug!(dead_letter = %uri, settings = %kafka_conf::redacted(producer_conf), "connecting");
        let producer: BaseProducer<ClientErrors> = kafka_conf::client_config(&uri, &[], producer_conf)
            .create_with_context(ClientErrors::default())
            .map_err(|e| Error::user(format!("dead letter {}", ClientError::setting(&uri, &e))))?;
        // Wrong credentials or an untrusted certificate: fail now, not at the first
        // bad record. A broker that is down is only a warning: publishing retries.
        match kafka_conf::connect(producer.client(), &uri, |wait| producer.poll(wait)) {
            Ok(_) => {}
            Err(e) if e.is_permanent() => return Err(Error::user(format!("dead letter {e}"))),
            Err(e) => tracing::warn!(error = %e, "dead-letter topic not reachable yet; sending will retry"),
        }
        Ok(DeadLetter { uri, producer })
    }

    /// An error of this producer: permanent if librdkafka reported an authentication
    /// or TLS failure, else an outage (retried).
    fn failure(&self, error: impl std::fmt::Display) -> Error {
        match self.producer.context().permanent_error(&self.uri) {
            Some(permanent) => Error::user(format!("dead letter {permanent}")),
            None => Error::external(format!("dead letter {}: {error}", self.uri)),
        }
    }

    /// Sends `records` of `pipeline` and waits until the broker has them.
    pub fn publish(&self, pipeline: &str, records: &[DeadRecord<'_>]) -> Result<()> {
        for record in records {
            let headers = OwnedHeaders::new()
                .insert(Header { key: "x-reason", value: Some(record.reason) })
                .insert(Header { key: "x-source-offset", value: Some(record.source_offset) })
                .insert(Header { key: "x-pipeline", value: Some(pipeline) });
            let mut message = BaseRecord::<(), [u8]>::to(&self.uri.topic).payload(record.raw).headers(headers);
            loop {
                match self.producer.send(message) {
                    Ok(()) => break,
                    Err((e, back)) if e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::QueueFull) => {
                        self.producer.poll(Duration::from_millis(100));
                        message = back;
                    }
                    Err((e, _)) => return Err(self.failure(e)),
                }
            }
        }
        self.producer.flush(FLUSH_TIMEOUT).map_err(|e| self.failure(e))?;
        self.producer.context().clear();
        Ok(())
    }
}

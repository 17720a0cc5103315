//! `--dead-letter kafka://host:port/topic`: bad records are also produced to a topic,
//! byte for byte as read, with why and where in message headers:
//! `x-reason`, `x-source-offset` (`topic/partition@offset` or `file:line`) and
//! `x-pipeline`. Delivery is at least once: a record may appear twice after a crash.

use std::time::Duration;

use kafka_conf::KafkaUri;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use crate::error::{Error, Result};

const FLUSH_TIMEOUT: Duration = Duration::from_secs(30);

pub struct DeadLetter {
    uri: KafkaUri,
    producer: BaseProducer,
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
        let producer: BaseProducer = kafka_conf::client_config(&uri, &[], producer_conf)
            .create()
            .map_err(|e| Error::user(format!("dead letter {uri}: {e}")))?;
        Ok(DeadLetter { uri, producer })
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
                    Err((e, _)) => return Err(Error::external(format!("dead letter {}: {e}", self.uri))),
                }
            }
        }
        self.producer.flush(FLUSH_TIMEOUT).map_err(|e| Error::external(format!("dead letter {}: {e}", self.uri)))
    }
}

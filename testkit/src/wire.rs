//! One plaintext connection speaking the Kafka protocol, a request at a time, with
//! requests and responses encoded by the `kafka-protocol` crate: for what librdkafka
//! does not show (the record batches as the broker stores them, see
//! [`crate::KafkaBroker::stored_codecs`]).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};

/// One plaintext connection speaking the Kafka protocol, a request at a time.
pub(crate) struct Connection {
    stream: TcpStream,
    correlation_id: i32,
}

impl Connection {
    pub(crate) fn open(address: &str) -> Self {
        let stream = TcpStream::connect(address).unwrap_or_else(|e| panic!("connect to {address}: {e}"));
        stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
        Connection { stream, correlation_id: 0 }
    }

    pub(crate) fn call<R: Request>(&mut self, request: &R, version: i16) -> R::Response {
        self.correlation_id += 1;
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("testkit")));
        let mut frame = BytesMut::new();
        header.encode(&mut frame, R::header_version(version)).expect("encode request header");
        request.encode(&mut frame, version).expect("encode request");
        self.stream.write_all(&(frame.len() as i32).to_be_bytes()).expect("send");
        self.stream.write_all(&frame).expect("send");
        let mut size = [0u8; 4];
        self.stream.read_exact(&mut size).expect("response size");
        let mut body = vec![0; i32::from_be_bytes(size) as usize];
        self.stream.read_exact(&mut body).expect("response");
        let mut body = Bytes::from(body);
        let header = ResponseHeader::decode(&mut body, R::Response::header_version(version)).expect("response header");
        assert_eq!(header.correlation_id, self.correlation_id, "correlation id");
        R::Response::decode(&mut body, version).expect("decode response")
    }
}

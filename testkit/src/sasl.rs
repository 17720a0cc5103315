//! SASL users on a tansu broker started with `--authentication` (see
//! [`crate::KafkaBroker::start_tansu`]): tansu then answers nothing but `ApiVersions`,
//! `SaslHandshake` and `SaslAuthenticate` before a client authenticates, with
//! SASL PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (its `rsasl` server).
//!
//! tansu keeps SCRAM users in its storage (memory here, so they are created after
//! each start) and creates them with the Kafka request `AlterUserScramCredentials`,
//! which it serves only on an authenticated connection. Its PLAIN mechanism accepts
//! any password (tansu 0.6.0 `tansu-auth/src/lib.rs`, `Callback::check`: it only
//! requires one), so [`create_scram_user`] authenticates with PLAIN, then creates the
//! user; the tests then use SCRAM, whose proofs tansu does check against the stored
//! keys. (tansu's own `tansu user create` cannot authenticate, and rust-rdkafka has
//! no binding for librdkafka's `AlterUserScramCredentials`, hence the requests here,
//! encoded by the `kafka-protocol` crate.)

use bytes::Bytes;
use kafka_protocol::messages::alter_user_scram_credentials_request::ScramCredentialUpsertion;
use kafka_protocol::messages::{AlterUserScramCredentialsRequest, SaslAuthenticateRequest, SaslHandshakeRequest};
use kafka_protocol::protocol::StrBytes;

use crate::wire::Connection;

/// A SCRAM mechanism, as librdkafka's `sasl.mechanism` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scram {
    Sha256,
    Sha512,
}

impl Scram {
    /// The value of `sasl.mechanism`.
    pub fn mechanism(self) -> &'static str {
        match self {
            Scram::Sha256 => "SCRAM-SHA-256",
            Scram::Sha512 => "SCRAM-SHA-512",
        }
    }

    /// The mechanism's number in `AlterUserScramCredentials` (KIP-554).
    fn code(self) -> i8 {
        match self {
            Scram::Sha256 => 1,
            Scram::Sha512 => 2,
        }
    }

    /// RFC 5802's SaltedPassword: PBKDF2 with HMAC of the mechanism's hash.
    fn salted_password(self, password: &str, salt: &[u8], iterations: u32) -> Vec<u8> {
        match self {
            Scram::Sha256 => {
                let mut out = vec![0; 32];
                pbkdf2::pbkdf2_hmac::<sha2::Sha256>(password.as_bytes(), salt, iterations, &mut out);
                out
            }
            Scram::Sha512 => {
                let mut out = vec![0; 64];
                pbkdf2::pbkdf2_hmac::<sha2::Sha512>(password.as_bytes(), salt, iterations, &mut out);
                out
            }
        }
    }
}

/// Creates (or replaces) the SCRAM user `user` with `password` on the tansu broker
/// at `address` (`host:port`, plaintext; started with `--authentication`).
pub fn create_scram_user(address: &str, user: &str, password: &str, scram: Scram) {
    let mut connection = Connection::open(address);
    let handshake = connection.call(&SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN")), 1);
    assert_eq!(handshake.error_code, 0, "SaslHandshake PLAIN: {handshake:?}");
    // PLAIN: authzid NUL authcid NUL password; tansu takes any password here.
    let token = Bytes::from_static(b"\0testkit\0bootstrap");
    let authenticated = connection.call(&SaslAuthenticateRequest::default().with_auth_bytes(token), 1);
    assert_eq!(authenticated.error_code, 0, "SaslAuthenticate PLAIN: {authenticated:?}");
    let (salt, iterations) = (format!("testkit-{user}-salt").into_bytes(), 4096);
    let upsertion = ScramCredentialUpsertion::default()
        .with_name(StrBytes::from_string(user.to_string()))
        .with_mechanism(scram.code())
        .with_iterations(iterations as i32)
        .with_salt(Bytes::from(salt.clone()))
        .with_salted_password(Bytes::from(scram.salted_password(password, &salt, iterations)));
    let altered = connection.call(&AlterUserScramCredentialsRequest::default().with_upsertions(vec![upsertion]), 0);
    assert!(
        altered.results.iter().all(|r| r.error_code == 0) && !altered.results.is_empty(),
        "AlterUserScramCredentials {user}: {altered:?}"
    );
}

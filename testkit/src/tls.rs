//! TLS for the Kafka tests: a test certificate authority ([`TestCa`], certificates
//! made at test time with `rcgen`) and a TLS-terminating proxy ([`TlsProxy`]: Debian's
//! `socat`, OpenSSL-based) in front of a broker's plaintext port.
//!
//! Kafka clients connect to the address a broker *advertises* in its metadata, so
//! the broker behind the proxy must advertise the proxy's port (see
//! [`crate::KafkaBroker::start_behind`]); then every connection of the client goes
//! through the proxy, which logs each one it accepts ([`TlsProxy::connections`]).

use std::path::PathBuf;
use std::process::Command;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose};

use crate::process::ServerProcess;

/// A certificate authority in a temporary directory, with its certificate in
/// `ca.pem` (what clients trust through `ssl.ca.location`).
pub struct TestCa {
    dir: tempfile::TempDir,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A server certificate and its key, as PEM files.
#[derive(Debug, Clone)]
pub struct ServerCert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// How a server certificate should be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertKind {
    /// For `127.0.0.1` and `localhost`, valid now.
    Valid,
    /// For `127.0.0.1` and `localhost`, expired in 2020.
    Expired,
    /// Valid now, but for another host name.
    OtherHost,
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, format!("{name} test CA"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA certificate");
        std::fs::write(dir.path().join("ca.pem"), issuer.pem()).expect("write ca.pem");
        TestCa { dir, issuer }
    }

    /// The CA certificate (PEM), for `ssl.ca.location`.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A server certificate signed by this CA, written as `<name>.pem` and `<name>.key`.
    pub fn server_cert(&self, name: &str, kind: CertKind) -> ServerCert {
        let hosts = match kind {
            CertKind::Valid | CertKind::Expired => vec!["127.0.0.1".to_string(), "localhost".to_string()],
            CertKind::OtherHost => vec!["broker.example.invalid".to_string()],
        };
        let mut params = CertificateParams::new(hosts).expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        if kind == CertKind::Expired {
            params.not_before = rcgen::date_time_ymd(2019, 1, 1);
            params.not_after = rcgen::date_time_ymd(2020, 1, 1);
        }
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &*self.issuer).expect("server certificate");
        let paths = ServerCert {
            cert: self.dir.path().join(format!("{name}.pem")),
            key: self.dir.path().join(format!("{name}.key")),
        };
        std::fs::write(&paths.cert, cert.pem()).expect("write certificate");
        std::fs::write(&paths.key, key.serialize_pem()).expect("write key");
        paths
    }
}

/// `socat` accepting TLS on a free port and forwarding each connection, decrypted,
/// to a plaintext port. Stopped (SIGKILL, by PID) when dropped.
pub struct TlsProxy {
    process: ServerProcess,
}

impl TlsProxy {
    /// A free port for a proxy, to advertise before the proxy starts.
    pub fn reserve_port() -> u16 {
        crate::free_port()
    }

    /// Starts the proxy on `port` with `cert`, forwarding to `127.0.0.1:target`.
    pub fn start(port: u16, cert: &ServerCert, target: u16) -> Self {
        let mut process = ServerProcess::on_port(port);
        let mut command = Command::new(crate::tools::socat());
        // -d -d: one log line per accepted connection (and per handshake failure).
        command.args(["-d", "-d"]);
        command.arg(format!(
            "OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,verify=0,cert={},key={}",
            cert.cert.display(),
            cert.key.display()
        ));
        command.arg(format!("TCP:127.0.0.1:{target}"));
        process.start(command);
        TlsProxy { process }
    }

    pub fn port(&self) -> u16 {
        self.process.port
    }

    /// TLS connections accepted so far (by the proxy's log). The readiness check of
    /// [`ServerProcess::start`] is one of them.
    pub fn connections(&self) -> usize {
        self.log().lines().filter(|l| l.contains("accepting connection")).count()
    }

    /// The proxy's own log, for assertion messages.
    pub fn log(&self) -> String {
        self.process.log()
    }
}

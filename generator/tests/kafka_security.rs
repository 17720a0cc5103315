//! The generator binary against secured Kafka-protocol brokers (see `testkit`):
//! TLS through a TLS-terminating proxy in front of tansu (certificates from a test CA
//! made here), SASL PLAIN (noida-db) and SCRAM (tansu, which refuses every login), and
//! the errors an operator gets for an untrusted certificate, a refused login or a
//! setting this build lacks. The password appears in none of its output.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Instant;

use testkit::tls::{CertKind, TestCa, TlsProxy};
use testkit::{KafkaBroker, TansuOptions};

const PASSWORD: &str = "s3cret-Pa55word";

/// Writes a librdkafka properties file (what `--kafka-conf-file` reads).
fn conf_file(dir: &Path, lines: &[String]) -> String {
    let path = dir.join("kafka.properties");
    std::fs::write(&path, lines.join("\n")).unwrap();
    path.display().to_string()
}

/// Runs the generator: `count` events into `out`, then to `uri` with `args`.
fn generate(out: &Path, uri: &str, count: u64, args: &[&str]) -> (Output, f64) {
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_generator"))
        .args(["--count", &count.to_string(), "--batch-size", "500", "--seed", "11", "--partitions", "2"])
        .args(["--out", out.to_str().unwrap(), "--to", uri])
        .args(args)
        .output()
        .unwrap();
    (output, started.elapsed().as_secs_f64())
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// tansu behind a TLS proxy whose certificate is `kind`, signed by `ca`.
fn tls_broker(ca: &TestCa, kind: CertKind, authentication: bool) -> (KafkaBroker, TlsProxy) {
    let port = TlsProxy::reserve_port();
    let broker = KafkaBroker::start_tansu(TansuOptions { advertised_port: Some(port), authentication });
    let proxy = TlsProxy::start(port, &ca.server_cert("broker", kind), broker.own_port());
    (broker, proxy)
}

#[test]
fn publishes_over_tls_through_the_proxy_only() {
    let ca = TestCa::new("generator");
    let (mut broker, proxy) = tls_broker(&ca, CertKind::Valid, false);
    let work = tempfile::tempdir().unwrap();
    let ca_path = ca.ca_path().display().to_string();
    let conf = conf_file(work.path(), &["security.protocol=SSL".into(), format!("ssl.ca.location={ca_path}")]);
    let before = proxy.connections();
    let out = work.path().join("events");
    let (output, _) = generate(&out, &broker.uri("events"), 1000, &["--kafka-conf-file", &conf]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(proxy.connections() > before, "the generator connected through the TLS proxy: {}", proxy.log());
    broker.set_client_conf(&[("security.protocol", "SSL"), ("ssl.ca.location", &ca_path)]);
    assert_eq!(broker.read_topic("events", Some(1000)).len(), 1000);
}

#[test]
fn an_untrusted_expired_or_misnamed_certificate_is_a_clear_error_before_anything_is_written() {
    let ca = TestCa::new("generator");
    let other_ca = TestCa::new("another");
    let cases = [
        ("a certificate of another CA", CertKind::Valid, other_ca.ca_path()),
        ("an expired certificate", CertKind::Expired, ca.ca_path()),
        ("a certificate for another host", CertKind::OtherHost, ca.ca_path()),
    ];
    for (what, kind, trusted) in cases {
        let (broker, _proxy) = tls_broker(&ca, kind, false);
        let work = tempfile::tempdir().unwrap();
        let conf = format!("security.protocol=SSL;ssl.ca.location={}", trusted.display());
        let uri = broker.uri("events");
        let (output, seconds) = generate(work.path(), &uri, 10, &["--producer-conf", &conf]);
        let text = stderr(&output);
        assert!(!output.status.success(), "{what}: {text}");
        assert!(text.contains(&uri) && text.contains("SSL handshake failed"), "{what}: {text}");
        assert!(text.contains("certificate verify failed"), "{what}: {text}");
        assert_eq!(std::fs::read_dir(work.path()).unwrap().count(), 0, "{what}: nothing written");
        eprintln!("{what}: failed after {seconds:.1} s: {text}");
    }
}

/// tansu with `--authentication` runs SCRAM but keeps no users (see `testkit`): every
/// login is refused, as a wrong password is. Over TLS too (SASL_SSL), where the
/// refusal comes after a good TLS handshake.
#[test]
fn a_refused_scram_login_is_a_clear_error_at_once_and_the_password_is_not_shown() {
    let ca = TestCa::new("generator");
    for (scram, tls) in [("SCRAM-SHA-256", false), ("SCRAM-SHA-512", false), ("SCRAM-SHA-512", true)] {
        let (broker, _proxy) = if tls {
            let (broker, proxy) = tls_broker(&ca, CertKind::Valid, true);
            (broker, Some(proxy))
        } else {
            (KafkaBroker::start_tansu(TansuOptions { advertised_port: None, authentication: true }), None)
        };
        let protocol = if tls { "SASL_SSL" } else { "SASL_PLAINTEXT" };
        let conf = format!(
            "security.protocol={protocol};ssl.ca.location={};sasl.mechanism={scram};sasl.username=app;sasl.password={PASSWORD}",
            ca.ca_path().display()
        );
        let work = tempfile::tempdir().unwrap();
        let uri = broker.uri("events");
        let (output, seconds) = generate(work.path(), &uri, 10, &["--producer-conf", &conf]);
        let text = stderr(&output);
        assert!(!output.status.success(), "{scram} {protocol}: {text}");
        assert!(text.contains(&format!("{uri}: SASL authentication failed")), "{scram} {protocol}: {text}");
        assert!(text.contains("SCRAM authentication failed"), "a SCRAM exchange took place: {text}");
        assert!(!text.contains(PASSWORD), "{scram} {protocol}: the password in the output: {text}");
        assert_eq!(std::fs::read_dir(work.path()).unwrap().count(), 0, "nothing written");
        eprintln!("{scram} {protocol}: refused after {seconds:.1} s");
    }
}

/// noida-db takes SASL PLAIN with any password (see `testkit`): the way in works, and
/// the password is not shown.
#[test]
fn sasl_plain_publishes() {
    let mut broker = KafkaBroker::start(testkit::BrokerKind::Noida);
    let settings = [
        ("security.protocol", "SASL_PLAINTEXT"),
        ("sasl.mechanism", "PLAIN"),
        ("sasl.username", "API_KEY"),
        ("sasl.password", PASSWORD),
    ];
    let work = tempfile::tempdir().unwrap();
    let conf = conf_file(work.path(), &settings.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>());
    let (output, _) = generate(&work.path().join("events"), &broker.uri("events"), 300, &["--kafka-conf-file", &conf]);
    let text = stderr(&output);
    assert!(output.status.success(), "{text}");
    assert!(!text.contains(PASSWORD), "{text}");
    broker.set_client_conf(&settings);
    assert_eq!(broker.read_topic("events", Some(300)).len(), 300);
}

#[test]
fn settings_this_build_lacks_or_rejects_are_clear_errors_naming_the_uri() {
    let broker = KafkaBroker::start(testkit::BrokerKind::Noida);
    let uri = broker.uri("events");
    let cases = [
        ("security.protocol=SASL_SSL;sasl.mechanism=GSSAPI", "GSSAPI"),
        ("security.protocol=TLS", "security.protocol"),
        ("compression.type=brotli", "brotli"),
    ];
    for (conf, named) in cases {
        let work = tempfile::tempdir().unwrap();
        let (output, _) = generate(work.path(), &uri, 10, &["--producer-conf", conf]);
        let text = stderr(&output);
        assert!(!output.status.success(), "{conf}: {text}");
        assert!(
            text.contains(&format!("{uri}: invalid Kafka client setting")) && text.contains(named),
            "{conf}: {text}"
        );
    }
}

#[test]
fn help_shows_no_value_of_the_conf_variables() {
    let output = Command::new(env!("CARGO_BIN_EXE_generator"))
        .arg("--help")
        .env("GENERATOR_PRODUCER_CONF", format!("sasl.password={PASSWORD}"))
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("GENERATOR_PRODUCER_CONF") && help.contains("--kafka-conf-file"), "{help}");
    assert!(!help.contains(PASSWORD), "{help}");
}

//! The docker-compose files: `docker-compose-streaming.yaml` is generated from `sql/`
//! by `deploy/generate-streaming-compose.sh` and must stay in sync with it, and every
//! compose file must validate (`docker-compose config -q`, offline, no Docker engine;
//! `testkit::tools` installs Debian's docker-compose when it is missing).
//!
//! The settings the deployment relies on are checked on the configuration as
//! docker-compose resolves it (`compose_files`): no default database password, ports
//! published on loopback, the aggregators' stop grace period, the checkpoints volume,
//! metrics, the one-shot generator. `compose_run.rs` runs the services.
//!
//! The sync checks read the generated file line by line, which is enough for its fixed shape.

mod compose_files;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use compose_files::{
    TEST_VARIABLES, compose_seconds, docker_compose, docker_compose_ok, repo_root, resolve, resolve_with,
};

const REGENERATE: &str = "deploy/generate-streaming-compose.sh > docker-compose-streaming.yaml";

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The stems of the `.sql` files in `sql/` (as the script's glob sees them: no dot-files).
fn sql_stems(root: &Path) -> BTreeSet<String> {
    let dir = root.join("sql");
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
        .map(|entry| entry.expect("reading sql/").path())
        .filter(|path| path.is_file() && path.extension().is_some_and(|ext| ext == "sql"))
        .map(|path| path.file_stem().expect("a file name").to_string_lossy().into_owned())
        .filter(|stem| !stem.starts_with('.'))
        .collect()
}

/// The services of a compose file: each top-level key under `services:` with the
/// file named by its `--sql sql/<file>` argument, if any.
fn services(yaml: &str) -> Vec<(String, Option<String>)> {
    let mut found: Vec<(String, Option<String>)> = Vec::new();
    let mut in_services = false;
    for line in yaml.lines() {
        let content = line.split(" #").next().unwrap_or("").trim_end();
        if content.trim_start().starts_with('#') || content.is_empty() {
            continue;
        }
        let indent = content.len() - content.trim_start().len();
        if indent == 0 {
            in_services = content == "services:";
            continue;
        }
        if !in_services {
            continue;
        }
        if indent == 2 {
            let name =
                content.trim().strip_suffix(':').unwrap_or_else(|| panic!("unexpected line under services: {line:?}"));
            found.push((name.to_string(), None));
        } else if let Some((_, rest)) = content.split_once("--sql sql/") {
            let (name, file) = found.last_mut().unwrap_or_else(|| panic!("--sql outside a service: {line:?}"));
            assert!(file.is_none(), "service {name} has two --sql arguments");
            *file = Some(rest.split_whitespace().next().unwrap_or("").trim_matches(['"', '\'']).to_string());
        }
    }
    found
}

fn streaming_compose(root: &Path) -> String {
    read(&root.join("docker-compose-streaming.yaml"))
}

#[test]
fn the_streaming_compose_file_is_what_the_generator_script_prints() {
    let root = repo_root();
    let script = root.join("deploy/generate-streaming-compose.sh");
    let output = Command::new(&script)
        .current_dir(&root)
        .output()
        .unwrap_or_else(|e| panic!("running {} (is it executable?): {e}", script.display()));
    assert!(
        output.status.success(),
        "{} failed ({}):\n{}",
        script.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let generated = String::from_utf8(output.stdout).expect("the script prints UTF-8");
    let committed = streaming_compose(&root);
    if generated != committed {
        let first_difference = generated
            .lines()
            .zip(committed.lines())
            .enumerate()
            .find(|(_, (g, c))| g != c)
            .map(|(i, (g, c))| {
                format!("first difference at line {}:\n  script prints: {g}\n  file has:      {c}", i + 1)
            })
            .unwrap_or_else(|| {
                format!(
                    "one is a prefix of the other ({} vs {} lines)",
                    generated.lines().count(),
                    committed.lines().count()
                )
            });
        panic!(
            "docker-compose-streaming.yaml is not what deploy/generate-streaming-compose.sh prints \
             (a .sql file was added, removed or renamed, or the file was edited by hand).\n\
             {first_difference}\nRegenerate it from the repository root: {REGENERATE}"
        );
    }
}

#[test]
fn every_sql_file_has_its_streaming_service_and_every_service_its_file() {
    let root = repo_root();
    let stems = sql_stems(&root);
    assert!(!stems.is_empty(), "no .sql files in sql/");
    let services = services(&streaming_compose(&root));
    let mut problems = Vec::new();
    for (name, file) in &services {
        match file {
            None => problems.push(format!("service {name} has no `--sql sql/<file>` argument")),
            Some(file) => {
                if !root.join("sql").join(file).is_file() {
                    problems.push(format!("service {name} runs sql/{file}, which does not exist"));
                }
                if file.strip_suffix(".sql") != Some(name.as_str()) {
                    problems.push(format!("service {name} runs sql/{file}; it should be named after its file"));
                }
            }
        }
    }
    let names: BTreeSet<&str> = services.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names.len(), services.len(), "a service is listed twice in docker-compose-streaming.yaml");
    for stem in &stems {
        if !names.contains(stem.as_str()) {
            problems.push(format!("sql/{stem}.sql has no service {stem}"));
        }
    }
    assert!(
        problems.is_empty(),
        "docker-compose-streaming.yaml and sql/ disagree:\n  {}\nRegenerate it from the repository root: {REGENERATE}",
        problems.join("\n  ")
    );
}

#[test]
fn the_compose_files_validate_offline() {
    let checks: [&[&str]; 3] = [
        &["-f", "docker-compose-infra.yaml", "config", "-q"],
        &["-f", "docker-compose-infra.yaml", "-f", "docker-compose-app.yaml", "config", "-q"],
        &["-f", "docker-compose-streaming.yaml", "config", "-q"],
    ];
    for args in checks {
        docker_compose_ok(args, TEST_VARIABLES);
    }
    // The streaming file on its own defines exactly one service per pipeline file.
    let args = ["-f", "docker-compose-streaming.yaml", "config", "--services"];
    let output = docker_compose_ok(&args, TEST_VARIABLES);
    let listed: BTreeSet<String> = output.lines().map(str::to_string).collect();
    assert_eq!(
        listed,
        sql_stems(&repo_root()),
        "docker-compose-streaming.yaml's services are not the stems of sql/*.sql"
    );
}

/// No default database password: without one, every file that uses it refuses, naming it.
#[test]
fn the_database_passwords_have_no_default() {
    let files: [&[&str]; 3] = [
        &["-f", "docker-compose-infra.yaml"],
        &["-f", "docker-compose-infra.yaml", "-f", "docker-compose-app.yaml"],
        &["-f", "docker-compose-streaming.yaml"],
    ];
    for variable in ["MONGO_ROOT_PASSWORD", "MONGO_PASSWORD"] {
        let others: Vec<(&str, &str)> = TEST_VARIABLES.iter().copied().filter(|(name, _)| *name != variable).collect();
        for file in files {
            let needs_it = variable == "MONGO_PASSWORD" || file.contains(&"docker-compose-infra.yaml");
            if !needs_it {
                continue;
            }
            let args: Vec<&str> = file.iter().copied().chain(["config", "-q"]).collect();
            let output = docker_compose(&args, &others);
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(!output.status.success(), "docker-compose {} without {variable} succeeded", args.join(" "));
            assert!(stderr.contains(&format!("set {variable}")), "the error names {variable}: {stderr}");
        }
    }
}

/// Kafka (plaintext, no authentication), MongoDB and the dashboard are published on
/// 127.0.0.1 unless BIND_ADDRESS says otherwise; nothing else is published.
#[test]
fn published_ports_listen_on_loopback_unless_bind_address_says_otherwise() {
    let config = resolve(&["docker-compose-infra.yaml", "docker-compose-app.yaml"]);
    let published: BTreeSet<(&str, &str)> = config
        .services
        .values()
        .flat_map(|service| service.ports.iter().map(move |port| (service.name.as_str(), port.as_str())))
        .collect();
    let expected = BTreeSet::from([
        ("kafka", "127.0.0.1:9094:9094/tcp"),
        ("mongodb", "127.0.0.1:27017:27017/tcp"),
        ("dashboard", "127.0.0.1:8501:8501/tcp"),
    ]);
    assert_eq!(published, expected);
    assert!(resolve(&["docker-compose-streaming.yaml"]).services.values().all(|s| s.ports.is_empty()));

    let mut variables = TEST_VARIABLES.to_vec();
    variables.push(("BIND_ADDRESS", "0.0.0.0"));
    let config = resolve_with(&["docker-compose-infra.yaml", "docker-compose-app.yaml"], &variables);
    for service in config.services.values() {
        for port in &service.ports {
            assert!(port.starts_with("0.0.0.0:"), "{}: {port} with BIND_ADDRESS=0.0.0.0", service.name);
        }
    }
}

/// `docker-compose stop` sends SIGTERM and SIGKILLs after the grace period: an
/// aggregator needs its last batch, its checkpoint and the Qlik flush in it.
#[test]
fn every_aggregator_has_the_time_to_stop_cleanly() {
    let help = Command::new(env!("CARGO_BIN_EXE_aggregator")).arg("--help").output().expect("aggregator --help");
    let help = String::from_utf8_lossy(&help.stdout);
    let flush = help
        .split("--qlik-flush-timeout-seconds")
        .nth(1)
        .and_then(|rest| rest.split("[default: ").nth(1))
        .and_then(|rest| rest.split(']').next())
        .and_then(|seconds| seconds.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no default for --qlik-flush-timeout-seconds in aggregator --help:\n{help}"));
    let config = resolve(&["docker-compose-streaming.yaml"]);
    for service in config.services.values() {
        let grace = service.stop_grace_period.as_deref().map(compose_seconds).unwrap_or(10.0);
        // The flush, plus half a minute for a batch of --max-batch-records and the checkpoint.
        assert!(grace >= flush + 30.0, "{}: stop_grace_period {grace} s < Qlik flush {flush} s + 30 s", service.name);
        assert_eq!(service.restart.as_deref(), Some("unless-stopped"), "{}", service.name);
    }
}

/// The checkpoints point into Kafka's log, so they live with it: the infra file owns the
/// volume (`down -v` there resets both), the streaming services mount it as external.
#[test]
fn the_checkpoints_volume_belongs_to_the_infra_file() {
    let infra = resolve(&["docker-compose-infra.yaml"]);
    let streaming = resolve(&["docker-compose-streaming.yaml"]);
    let name =
        infra.volumes.get("checkpoints").cloned().flatten().expect("infra declares the checkpoints volume, named");
    assert_eq!(streaming.volumes.get("checkpoints").cloned().flatten().as_deref(), Some(name.as_str()));
    assert_eq!(streaming.external_volumes, ["checkpoints"], "the streaming file does not create it");
    for service in streaming.services.values() {
        let dir = &service.environment["AGGREGATOR_CHECKPOINT_DIR"];
        assert!(
            service.volumes.iter().any(|v| v.starts_with(&format!("checkpoints:{dir}:"))),
            "{}: the checkpoints volume is not mounted on {dir}: {:?}",
            service.name,
            service.volumes
        );
    }
}

/// Every streaming service serves Prometheus metrics on the network (not on the host).
#[test]
fn every_aggregator_serves_metrics_inside_the_network() {
    let config = resolve(&["docker-compose-streaming.yaml"]);
    for service in config.services.values() {
        let listen = service.environment.get("AGGREGATOR_METRICS_LISTEN").map(String::as_str);
        assert_eq!(listen, Some("0.0.0.0:9464"), "{}", service.name);
        assert!(service.ports.is_empty(), "{}: published {:?}", service.name, service.ports);
    }
}

/// The one-shot generator tops the topic up instead of publishing again on every `up -d`,
/// and waits for a healthy Kafka; the dashboard for a healthy MongoDB.
#[test]
fn the_app_services_wait_for_healthy_infra_and_the_generator_runs_once() {
    let config = resolve(&["docker-compose-infra.yaml", "docker-compose-app.yaml"]);
    let generator = config.service("generator");
    assert_eq!(generator.environment.get("GENERATOR_TOP_UP").map(String::as_str), Some("true"));
    assert_eq!(generator.restart.as_deref(), Some("no"));
    assert_eq!(generator.depends_on.get("kafka").map(String::as_str), Some("service_healthy"));
    assert_eq!(config.service("dashboard").depends_on.get("mongodb").map(String::as_str), Some("service_healthy"));
    assert!(config.service("mongodb").healthcheck.is_some() && config.service("kafka").healthcheck.is_some());
}

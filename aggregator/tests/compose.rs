//! The docker-compose files: `docker-compose-streaming.yaml` is generated from `sql/`
//! by `deploy/generate-streaming-compose.sh` and must stay in sync with it, and every
//! compose file must validate (`docker-compose config -q`, offline, no Docker engine).
//!
//! Standard library only: the YAML is read line by line, which is enough for the
//! generated file's fixed shape.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const REGENERATE: &str = "deploy/generate-streaming-compose.sh > docker-compose-streaming.yaml";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("aggregator/ is inside the repository").to_path_buf()
}

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

/// Runs `docker-compose` with `args` in the repository root.
fn docker_compose(root: &Path, args: &[&str]) -> Output {
    // The app file requires the dashboard's password (it has no default).
    let command =
        Command::new("docker-compose").args(args).current_dir(root).env("DASHBOARD_PASSWORD", "compose-check").output();
    match command {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "docker-compose is not installed; it validates the compose files offline, without a Docker \
             engine: apt-get install docker-compose"
        ),
        Err(e) => panic!("running docker-compose: {e}"),
    }
}

#[test]
fn the_compose_files_validate_offline() {
    let root = repo_root();
    let checks: [&[&str]; 4] = [
        &["-f", "docker-compose-infra.yaml", "config", "-q"],
        &["-f", "docker-compose-infra.yaml", "--profile", "qlik", "config", "-q"],
        &["-f", "docker-compose-infra.yaml", "-f", "docker-compose-app.yaml", "config", "-q"],
        &["-f", "docker-compose-streaming.yaml", "config", "-q"],
    ];
    for args in checks {
        let output = docker_compose(&root, args);
        assert!(
            output.status.success(),
            "docker-compose {} failed ({}):\n{}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // The streaming file on its own defines exactly one service per pipeline file.
    let args = ["-f", "docker-compose-streaming.yaml", "config", "--services"];
    let output = docker_compose(&root, &args);
    assert!(
        output.status.success(),
        "docker-compose {} failed:\n{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    let listed: BTreeSet<String> = String::from_utf8_lossy(&output.stdout).lines().map(str::to_string).collect();
    assert_eq!(listed, sql_stems(&root), "docker-compose-streaming.yaml's services are not the stems of sql/*.sql");
}

//! Shared by `compose.rs` and `compose_run.rs`: the compose files as docker-compose
//! itself resolves them (`docker-compose config`, Debian's docker-compose 1.29, offline:
//! no Docker engine), with the variables the tests set, parsed into [`Service`]s.

#![allow(dead_code)] // each test binary uses its own part

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The variables the tests give docker-compose, as a user's `.env` file would. The
/// optional ones (MONGO_USER, MONGO_DATABASE, BIND_ADDRESS, …) keep their defaults.
pub const TEST_VARIABLES: &[(&str, &str)] = &[
    ("MONGO_ROOT_PASSWORD", "root-Pa55-test"),
    ("MONGO_PASSWORD", "app-Pa55-test"),
    // The dashboard's credentials, for when its service asks for them.
    ("DASHBOARD_PASSWORD", "dashboard-Pa55-test"),
];

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("aggregator/ is inside the repository").to_path_buf()
}

/// Runs `docker-compose <args>` in the repository root with only `variables` (and PATH,
/// HOME) in its environment, and an empty env file, so that neither the caller's
/// environment nor a developer's `.env` changes what the tests see.
pub fn docker_compose(args: &[&str], variables: &[(&str, &str)]) -> Output {
    let root = repo_root();
    let empty_env_file = root.join("target").join("compose-test.env");
    std::fs::create_dir_all(root.join("target")).expect("target/");
    std::fs::write(&empty_env_file, "").expect("empty env file");
    let mut command = Command::new(testkit::tools::docker_compose());
    command.env_clear().current_dir(&root).arg("--env-file").arg(&empty_env_file).args(args);
    for name in ["PATH", "HOME"] {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    command.envs(variables.iter().copied());
    command.output().unwrap_or_else(|e| panic!("running docker-compose {}: {e}", args.join(" ")))
}

/// [`docker_compose`] that must succeed: its standard output.
pub fn docker_compose_ok(args: &[&str], variables: &[(&str, &str)]) -> String {
    let output = docker_compose(args, variables);
    assert!(
        output.status.success(),
        "docker-compose {} failed ({}):\n{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("docker-compose prints UTF-8")
}

/// `docker-compose -f <file>… config` with [`TEST_VARIABLES`]: the files as compose runs them.
pub fn resolve(files: &[&str]) -> Config {
    resolve_with(files, TEST_VARIABLES)
}

/// [`resolve`] with these variables.
pub fn resolve_with(files: &[&str], variables: &[(&str, &str)]) -> Config {
    let mut args: Vec<&str> = files.iter().flat_map(|file| ["-f", *file]).collect();
    args.push("config");
    let text = docker_compose_ok(&args, variables);
    Config::parse(&text).unwrap_or_else(|e| panic!("docker-compose {}: {e}\n{text}", args.join(" ")))
}

/// A resolved compose configuration.
#[derive(Debug)]
pub struct Config {
    pub services: BTreeMap<String, Service>,
    /// Top-level volumes: compose's key → the volume's name, if it sets one.
    pub volumes: BTreeMap<String, Option<String>>,
    /// Top-level volumes marked `external: true`.
    pub external_volumes: Vec<String>,
}

/// One service, as `docker-compose config` prints it.
#[derive(Debug, Clone)]
pub struct Service {
    pub name: String,
    pub image: String,
    /// The Dockerfile target it builds, if it builds one.
    pub build_target: Option<String>,
    /// `command`, split like compose splits a string (shell words).
    pub command: Vec<String>,
    pub environment: BTreeMap<String, String>,
    /// `source:target[:mode]`; a bind mount's source is absolute.
    pub volumes: Vec<String>,
    /// `[host_ip:]host_port:container_port[/proto]`.
    pub ports: Vec<String>,
    pub stop_grace_period: Option<String>,
    /// The healthcheck's `test` (e.g. `["CMD-SHELL", "…"]`), `$$` already turned into `$`.
    pub healthcheck: Option<Vec<String>>,
    /// Services it waits for, with the condition.
    pub depends_on: BTreeMap<String, String>,
    pub restart: Option<String>,
}

fn scalar(value: &serde_yaml::Value) -> Option<String> {
    match value {
        serde_yaml::Value::String(s) => Some(s.clone()),
        serde_yaml::Value::Number(n) => Some(n.to_string()),
        serde_yaml::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn strings(value: Option<&serde_yaml::Value>) -> Vec<String> {
    value.and_then(|v| v.as_sequence()).map(|items| items.iter().filter_map(scalar).collect()).unwrap_or_default()
}

impl Config {
    pub fn parse(text: &str) -> Result<Config, String> {
        let root: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| format!("not YAML: {e}"))?;
        let mut services = BTreeMap::new();
        let listed = root.get("services").and_then(|s| s.as_mapping()).ok_or("no services")?;
        for (name, body) in listed {
            let name = scalar(name).ok_or("a service name that is not text")?;
            let text = |key: &str| body.get(key).and_then(scalar);
            let command = match body.get("command") {
                Some(serde_yaml::Value::String(line)) => {
                    shlex::split(line).ok_or_else(|| format!("service {name}: command {line:?} does not split"))?
                }
                other => strings(other),
            };
            let environment = body
                .get("environment")
                .and_then(|e| e.as_mapping())
                .map(|m| {
                    m.iter().map(|(k, v)| (scalar(k).unwrap_or_default(), scalar(v).unwrap_or_default())).collect()
                })
                .unwrap_or_default();
            let depends_on = match body.get("depends_on") {
                Some(serde_yaml::Value::Mapping(m)) => m
                    .iter()
                    .map(|(k, v)| {
                        let condition = v.get("condition").and_then(scalar).unwrap_or_default();
                        (scalar(k).unwrap_or_default(), condition)
                    })
                    .collect(),
                other => strings(other).into_iter().map(|s| (s, String::new())).collect(),
            };
            let healthcheck = body
                .get("healthcheck")
                .map(|h| strings(h.get("test")).into_iter().map(|part| part.replace("$$", "$")).collect());
            services.insert(
                name.clone(),
                Service {
                    image: text("image").unwrap_or_default(),
                    build_target: body.get("build").and_then(|b| b.get("target")).and_then(scalar),
                    command,
                    environment,
                    volumes: strings(body.get("volumes")),
                    ports: strings(body.get("ports")),
                    stop_grace_period: text("stop_grace_period"),
                    healthcheck,
                    depends_on,
                    restart: text("restart"),
                    name,
                },
            );
        }
        let mut volumes = BTreeMap::new();
        let mut external_volumes = Vec::new();
        if let Some(listed) = root.get("volumes").and_then(|v| v.as_mapping()) {
            for (key, body) in listed {
                let key = scalar(key).unwrap_or_default();
                if body.get("external").and_then(|e| e.as_bool()) == Some(true) {
                    external_volumes.push(key.clone());
                }
                volumes.insert(key, body.get("name").and_then(scalar));
            }
        }
        Ok(Config { services, volumes, external_volumes })
    }

    pub fn service(&self, name: &str) -> &Service {
        self.services.get(name).unwrap_or_else(|| panic!("no service {name}; services: {:?}", self.services.keys()))
    }
}

/// Parses a duration as compose writes it (`60s`, `1m30s`, `500ms`) into seconds.
pub fn compose_seconds(text: &str) -> f64 {
    let mut total = 0.0;
    let mut number = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            number.push(c);
            continue;
        }
        let unit: String =
            std::iter::once(c).chain(std::iter::from_fn(|| chars.next_if(|c| c.is_alphabetic()))).collect();
        let value: f64 = number.parse().unwrap_or_else(|_| panic!("duration {text:?}"));
        number.clear();
        total += value
            * match unit.as_str() {
                "h" => 3600.0,
                "m" => 60.0,
                "s" => 1.0,
                "ms" => 0.001,
                "us" => 0.000_001,
                other => panic!("duration {text:?}: unit {other:?}"),
            };
    }
    assert!(number.is_empty(), "duration {text:?} has no unit");
    total
}

/// One stage of the Dockerfile: what a container of that target starts with.
#[derive(Debug, Clone, Default)]
pub struct ImageTarget {
    pub workdir: Option<String>,
    pub env: BTreeMap<String, String>,
    pub entrypoint: Vec<String>,
}

/// The Dockerfile's `target` stage, with what it inherits from its `FROM <stage>` chain
/// (WORKDIR, ENV, ENTRYPOINT: the instructions that decide how its binary starts).
pub fn dockerfile_target(target: &str) -> ImageTarget {
    let path = repo_root().join("Dockerfile");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    // Continuation lines joined; comments dropped.
    let joined = text
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("\\\n", " ");
    // Stage name → (the stage it is `FROM`, its instructions as (INSTRUCTION, rest)).
    type Stage = (Option<String>, Vec<(String, String)>);
    let mut stages: BTreeMap<String, Stage> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in joined.lines() {
        let line = line.trim();
        let Some((instruction, rest)) = line.split_once(char::is_whitespace) else { continue };
        let rest = rest.trim().to_string();
        if instruction.eq_ignore_ascii_case("FROM") {
            let words: Vec<&str> = rest.split_whitespace().collect();
            let name = match words.as_slice() {
                [_, as_, name] if as_.eq_ignore_ascii_case("as") => name.to_string(),
                _ => format!("<unnamed {}>", stages.len()),
            };
            stages.insert(name.clone(), (Some(words[0].to_string()), Vec::new()));
            current = Some(name);
        } else if let Some(stage) = &current {
            stages.get_mut(stage).expect("stage").1.push((instruction.to_ascii_uppercase(), rest));
        }
    }
    assert!(stages.contains_key(target), "{}: no stage `AS {target}`", path.display());
    let mut chain = Vec::new();
    let mut name = Some(target.to_string());
    while let Some(stage) = name.filter(|n| stages.contains_key(n)) {
        let (base, _) = &stages[&stage];
        chain.push(stage.clone());
        name = base.clone();
    }
    let mut image = ImageTarget::default();
    for stage in chain.iter().rev() {
        for (instruction, rest) in &stages[stage].1 {
            match instruction.as_str() {
                "WORKDIR" => image.workdir = Some(rest.clone()),
                "ENV" => {
                    for word in shlex::split(rest).unwrap_or_else(|| panic!("ENV {rest}")) {
                        let (key, value) = word.split_once('=').unwrap_or_else(|| panic!("ENV {rest}: use KEY=value"));
                        image.env.insert(key.to_string(), value.to_string());
                    }
                }
                "ENTRYPOINT" => {
                    image.entrypoint = serde_json::from_str(rest)
                        .unwrap_or_else(|e| panic!("ENTRYPOINT {rest}: not the exec (JSON) form: {e}"))
                }
                _ => {}
            }
        }
    }
    image
}

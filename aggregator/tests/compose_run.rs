//! The docker-compose deployment run for real, without a Docker engine: every service of
//! `docker-compose-infra.yaml` + `docker-compose-app.yaml` and of
//! `docker-compose-streaming.yaml`, as docker-compose itself resolves them
//! (`docker-compose config`, variables substituted by compose), is started with its
//! image's entrypoint (from the Dockerfile target it builds, with that stage's WORKDIR
//! and ENV), its `command` and its `environment`, against a real Kafka-protocol broker
//! and a real MongoDB-protocol server. So the flags, URIs and variables written in the
//! files are proven valid, and the services are shown to work together: the generator
//! publishes (once, however often it is started), every streaming aggregator consumes
//! the topic and writes its collection as the services' MongoDB user, the dashboard
//! serves them over HTTP with the credentials compose gives it, metrics answer.
//!
//! Only what cannot exist outside Docker is replaced, nothing else:
//!
//! | in the containers | here |
//! | --- | --- |
//! | the `kafka` and `mongodb` images | noida-db and SecantusDB (`testkit`) |
//! | the host names `kafka:9092`, `mongodb:27017` | the test broker's and server's addresses |
//! | the mongo image's first start: the root user from `MONGO_INITDB_ROOT_*`, each `/docker-entrypoint-initdb.d/*.js` run by `mongosh` as root, then the server restarted with authentication | the same steps on the test server, with `mongosh` from npm (`testkit::tools`) |
//! | the mongodb healthcheck's `$(hostname):27017` | the test server's address |
//! | `0.0.0.0:<port>` listen addresses (each container has its own network) | `127.0.0.1:<free port>` |
//! | `/usr/local/bin/<binary>` (the image's entrypoint) | `target/<profile>/<binary>` |
//! | the working directory and bind mounts (`./sql` on `/app/sql`), named volumes | a directory per service holding a symlink per bind mount; a directory per named volume; container paths in arguments and variables rewritten to them |
//!
//! The generator and dashboard binaries are the ones `cargo test --workspace` builds
//! next to the aggregator's (`cargo build -p generator -p dashboard` when running this
//! test alone). Each process gets only its service's environment (`env_clear`).

mod compose_files;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use compose_files::{ImageTarget, Service, TEST_VARIABLES, compose_seconds, dockerfile_target};
use testkit::{BrokerKind, KafkaBroker, MongoServer};

/// How many events the generator is told to publish (`EVENTS`, the app file's variable).
const EVENTS: u64 = 6000;
/// A safety net for waits that end on an event, not a timing assertion.
const DEADLINE: Duration = Duration::from_secs(600);

/// What replaces the compose network's host names.
struct Network {
    kafka: String,
    mongodb: String,
}

/// A service prepared to run here: its binary, arguments, environment and directory.
struct Container {
    service: Service,
    program: PathBuf,
    args: Vec<String>,
    env: BTreeMap<String, String>,
    dir: PathBuf,
    /// `0.0.0.0:<port>` values rewritten: variable → the local port.
    listens: BTreeMap<String, u16>,
}

/// A running container, killed if the test ends without stopping it.
struct Running {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Running {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `docker stop`: SIGTERM, and the exit status within the service's grace period
    /// (after which Docker would SIGKILL it).
    fn stop(&mut self, grace: Duration) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill").success());
        let deadline = Instant::now() + grace;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not stop within its stop_grace_period ({grace:?}) after SIGTERM:\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// Where `cargo test` put the workspace's binaries (the aggregator's directory).
fn binary(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_aggregator")).with_file_name(name);
    assert!(
        path.is_file(),
        "{} is not built: cargo build -p {name} (cargo test --workspace builds it)",
        path.display()
    );
    path
}

impl Container {
    /// `service` as its container would start it, with the replacements listed in the module docs.
    fn prepare(service: &Service, network: &Network, volumes: &Path, work: &Path) -> Container {
        let target = service.build_target.as_deref().unwrap_or_else(|| panic!("{} builds no image", service.name));
        let image: ImageTarget = dockerfile_target(target);
        let entrypoint =
            image.entrypoint.first().unwrap_or_else(|| panic!("Dockerfile target {target}: no ENTRYPOINT"));
        let program = binary(Path::new(entrypoint).file_name().expect("a binary").to_str().expect("UTF-8"));
        let workdir = image.workdir.clone().unwrap_or_else(|| "/".into());
        let dir = work.join(&service.name);
        std::fs::create_dir_all(&dir).expect("service dir");

        // Container path → host path: bind mounts and named volumes; then the working directory.
        let mut mounts: Vec<(String, PathBuf)> = Vec::new();
        for volume in &service.volumes {
            let mut parts = volume.split(':');
            let (source, target) = (parts.next().expect("source"), parts.next().expect("target"));
            let host = if source.starts_with('/') {
                PathBuf::from(source)
            } else {
                // A named volume: one directory, shared by every service that mounts it.
                let dir = volumes.join(source);
                std::fs::create_dir_all(&dir).expect("volume dir");
                dir
            };
            if let Some(inside) = target.strip_prefix(&format!("{workdir}/")) {
                let link = dir.join(inside);
                std::fs::create_dir_all(link.parent().expect("parent")).expect("dirs");
                if !link.exists() {
                    std::os::unix::fs::symlink(&host, &link).expect("symlink a bind mount");
                }
            }
            mounts.push((target.to_string(), host));
        }
        mounts.push((workdir.clone(), dir.clone()));
        mounts.sort_by_key(|(target, _)| std::cmp::Reverse(target.len()));

        let mut listens = BTreeMap::new();
        let mut rewrite = |name: &str, value: &str| -> String {
            if let Some(port) = value.strip_prefix("0.0.0.0:") {
                assert!(port.parse::<u16>().is_ok(), "{}: {name}={value}", service.name);
                let local = free_port();
                listens.insert(name.to_string(), local);
                return format!("127.0.0.1:{local}");
            }
            if value.starts_with('/') {
                for (target, host) in &mounts {
                    if let Some(rest) = value.strip_prefix(target.as_str())
                        && (rest.is_empty() || rest.starts_with('/'))
                    {
                        return format!("{}{rest}", host.display());
                    }
                }
            }
            value.replace("kafka:9092", &network.kafka).replace("mongodb:27017", &network.mongodb)
        };
        let mut env = BTreeMap::new();
        for (name, value) in image.env.iter().chain(&service.environment) {
            env.insert(name.clone(), rewrite(name, value));
        }
        let args = image.entrypoint[1..].iter().chain(&service.command).map(|arg| rewrite("", arg)).collect();
        Container { service: service.clone(), program, args, env, dir, listens }
    }

    fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command.args(&self.args).current_dir(&self.dir).env_clear().envs(&self.env).stdin(Stdio::null());
        command
    }

    /// Runs a one-shot service to its end; its stderr.
    fn run(&self) -> String {
        let output = self.command().output().unwrap_or_else(|e| panic!("{}: {e}", self.service.name));
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "{} exited with {}:\n{stderr}", self.service.name, output.status);
        stderr
    }

    fn start(&self) -> Running {
        let log = self.dir.join("container.log");
        let file = File::create(&log).expect("log");
        let child = self
            .command()
            .stdout(file.try_clone().expect("log"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", self.service.name));
        Running { name: self.service.name.clone(), child, log }
    }

    fn grace(&self) -> Duration {
        // Docker's default is 10 s.
        Duration::from_secs_f64(self.service.stop_grace_period.as_deref().map_or(10.0, compose_seconds))
    }
}

/// The first start of the `mongo` image, on the test server: the root user, then the
/// init scripts run by mongosh as root against `MONGO_INITDB_DATABASE`, then a restart
/// with authentication. Returns the healthcheck's result before the scripts ran.
fn initialise_mongodb(mongodb: &Service, server: &mut MongoServer, port: u16, mongosh: &Path) -> bool {
    let env = &mongodb.environment;
    let create_root = "db.getSiblingDB('admin').createUser({user: process.env.MONGO_INITDB_ROOT_USERNAME, \
        pwd: process.env.MONGO_INITDB_ROOT_PASSWORD, roles: [{role: 'root', db: 'admin'}]})";
    let output = Command::new(mongosh)
        .args(["--quiet", "--norc", &format!("mongodb://127.0.0.1:{port}/admin"), "--eval", create_root])
        .envs(env)
        .output()
        .expect("mongosh");
    assert!(output.status.success(), "creating the root user: {}", String::from_utf8_lossy(&output.stderr));
    let healthy_before = healthcheck(mongodb, port, mongosh).0;

    let scripts: Vec<&str> = mongodb
        .volumes
        .iter()
        .filter_map(|volume| {
            let mut parts = volume.split(':');
            let (source, target) = (parts.next()?, parts.next()?);
            (target.starts_with("/docker-entrypoint-initdb.d/") && target.ends_with(".js")).then_some(source)
        })
        .collect();
    assert!(!scripts.is_empty(), "the mongodb service mounts no init script");
    for script in scripts {
        let output = Command::new(mongosh)
            .args(["--quiet", "--norc", "--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--username", &env["MONGO_INITDB_ROOT_USERNAME"], "--password", &env["MONGO_INITDB_ROOT_PASSWORD"]])
            .args(["--authenticationDatabase", "admin", &env["MONGO_INITDB_DATABASE"], script])
            .envs(env)
            .output()
            .expect("mongosh");
        assert!(
            output.status.success(),
            "{script} failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    server.restart_with_auth();
    healthy_before
}

/// Runs the mongodb service's healthcheck (`CMD-SHELL`) here; (passed, output).
fn healthcheck(mongodb: &Service, port: u16, mongosh: &Path) -> (bool, String) {
    let test = mongodb.healthcheck.as_ref().expect("mongodb has a healthcheck");
    assert_eq!(test[0], "CMD-SHELL", "{test:?}");
    let mut line = test[1].replace("$(hostname):27017", &format!("127.0.0.1:{port}"));
    for volume in &mongodb.volumes {
        let mut parts = volume.split(':');
        if let (Some(source), Some(target)) = (parts.next(), parts.next())
            && source.starts_with('/')
        {
            line = line.replace(target, source);
        }
    }
    let path = format!("{}:{}", mongosh.parent().expect("bin").display(), std::env::var("PATH").unwrap_or_default());
    let mut command = Command::new("sh");
    command.args(["-c", &line]).env_clear().env("PATH", path).envs(&mongodb.environment);
    if let Some(home) = std::env::var_os("HOME") {
        command.env("HOME", home); // mongosh keeps its logs there
    }
    let output = command.output().expect("sh");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

/// An HTTP client for the dashboard, with the credentials compose gives it (if any).
struct Dashboard {
    base: String,
    credentials: Option<(String, String)>,
    http: reqwest::Client,
    runtime: tokio::runtime::Runtime,
}

impl Dashboard {
    fn get(&self, path: &str, authenticated: bool) -> (u16, String) {
        let mut request = self.http.get(format!("{}{path}", self.base));
        if authenticated && let Some((user, password)) = &self.credentials {
            request = request.basic_auth(user, Some(password));
        }
        self.runtime.block_on(async {
            match request.send().await {
                Ok(response) => (response.status().as_u16(), response.text().await.unwrap_or_default()),
                Err(e) => (0, e.to_string()),
            }
        })
    }

    fn json(&self, path: &str) -> serde_json::Value {
        let (status, body) = self.get(path, true);
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }
}

fn get_text(runtime: &tokio::runtime::Runtime, url: &str) -> (u16, String) {
    runtime.block_on(async {
        match reqwest::get(url).await {
            Ok(response) => (response.status().as_u16(), response.text().await.unwrap_or_default()),
            Err(e) => (0, e.to_string()),
        }
    })
}

#[test]
fn the_compose_services_run_together() {
    let mongosh = testkit::tools::mongosh();
    let mut variables = TEST_VARIABLES.to_vec();
    let events = EVENTS.to_string();
    variables.push(("EVENTS", &events));
    let resolve = |files: &[&str]| compose_files::resolve_with(files, &variables);
    let infra_app = resolve(&["docker-compose-infra.yaml", "docker-compose-app.yaml"]);
    let streaming = resolve(&["docker-compose-streaming.yaml"]);
    assert!(!streaming.services.is_empty());

    // The infrastructure: the images' services replaced by the test servers.
    let broker = KafkaBroker::start(BrokerKind::Noida);
    let mut server = MongoServer::start();
    let mongo_address = server.uri("x").trim_start_matches("mongodb://").trim_end_matches("/x").to_string();
    let mongo_port: u16 = mongo_address.rsplit(':').next().unwrap().parse().unwrap();
    let network = Network { kafka: broker.bootstrap(), mongodb: mongo_address };

    let mongodb = infra_app.service("mongodb");
    let healthy_before_init = initialise_mongodb(mongodb, &mut server, mongo_port, &mongosh);
    assert!(!healthy_before_init, "the mongodb healthcheck passed before mongo-init.js had run");
    let (healthy, output) = healthcheck(mongodb, mongo_port, &mongosh);
    assert!(healthy, "the mongodb healthcheck fails on the initialised server with authentication:\n{output}");

    let scratch = tempfile::tempdir().unwrap();
    let volumes = scratch.path().join("volumes");
    let work = scratch.path().join("containers");

    // The one-shot generator, started twice (a second `up -d`): it publishes once.
    let generator = Container::prepare(infra_app.service("generator"), &network, &volumes, &work);
    let first = generator.run();
    assert_eq!(broker.message_count("events"), EVENTS as usize, "the generator published EVENTS events:\n{first}");
    assert!(!first.contains('\u{1b}'), "colour codes in the generator's log: {first:?}");

    // Every streaming service, and the dashboard.
    let aggregators: Vec<Container> =
        streaming.services.values().map(|s| Container::prepare(s, &network, &volumes, &work)).collect();
    let mut running: Vec<Running> = aggregators.iter().map(Container::start).collect();
    let dashboard_container = Container::prepare(infra_app.service("dashboard"), &network, &volumes, &work);
    let mut dashboard_process = dashboard_container.start();
    let env = &dashboard_container.env;
    let credentials = env
        .get("DASHBOARD_PASSWORD")
        .map(|password| (env.get("DASHBOARD_AUTH_USER").cloned().unwrap_or_else(|| "admin".into()), password.clone()));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let dashboard = Dashboard {
        base: format!("http://127.0.0.1:{}", dashboard_container.listens["DASHBOARD_LISTEN"]),
        credentials,
        http: reqwest::Client::new(),
        runtime,
    };

    // Until every pipeline has consumed the topic and swapped its first result in (its
    // replay over: `running` or `caught_up`), as the dashboard reports it.
    let names: Vec<&String> = streaming.services.keys().collect();
    let started = Instant::now();
    let live = |pipelines: &serde_json::Value, name: &str| {
        pipelines["pipelines"].as_array().and_then(|all| all.iter().find(|p| p["name"] == name)).is_some_and(|p| {
            p["events_in"].as_u64() >= Some(EVENTS) && matches!(p["state"].as_str(), Some("running" | "caught_up"))
        })
    };
    loop {
        let (status, body) = dashboard.get("/api/pipelines", true);
        if status == 200 {
            let pipelines: serde_json::Value = serde_json::from_str(&body).unwrap();
            if names.iter().all(|name| live(&pipelines, name)) {
                break;
            }
        }
        if started.elapsed() > DEADLINE {
            let logs: Vec<String> = running.iter().map(|r| format!("--- {}:\n{}", r.name, r.log())).collect();
            panic!(
                "the pipelines did not consume {EVENTS} events and go live within {DEADLINE:?}; /api/pipelines: {status} {body}\n\
                 --- dashboard:\n{}\n{}",
                dashboard_process.log(),
                logs.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }

    // The dashboard: healthy, behind the credentials compose gives it (if any), serving
    // every pipeline's status and result.
    assert_eq!(dashboard.get("/healthz", false).0, 200, "/healthz");
    if dashboard.credentials.is_some() {
        assert_eq!(dashboard.get("/api/pipelines", false).0, 401, "the dashboard answers without credentials");
    }
    let pipelines = dashboard.json("/api/pipelines");
    let (status, overview) = dashboard.get("/", true);
    assert_eq!(status, 200, "{overview}");
    let mut tables = Vec::new();
    for name in &names {
        let item = pipelines["pipelines"].as_array().unwrap().iter().find(|p| p["name"] == name.as_str()).unwrap();
        assert_eq!(item["events_in"], EVENTS, "{name}: {item}");
        assert_eq!(item["events_bad"], 0, "{name}: {item}");
        assert!(matches!(item["state"].as_str(), Some("running" | "caught_up")), "{name}: {item}");
        assert!(item["last_error"].is_null(), "{name}: {item}");
        assert!(overview.contains(name.as_str()), "the overview lists {name}");
        let rows = dashboard.json(&format!("/api/pipelines/{name}/rows"));
        assert!(rows["total"].as_u64().unwrap_or(0) > 0, "{name}: no result rows: {rows}");
        tables.push((name.to_string(), item["result_table"].as_str().unwrap().to_string()));
    }

    // Each collection in MongoDB, read as the services' user over the URI compose gives them.
    let uri = dashboard_container.env["DASHBOARD_STORE"].clone();
    dashboard.runtime.block_on(async {
        let client = mongodb::Client::with_uri_str(&uri).await.expect("the dashboard's URI");
        let database = client.default_database().expect("the URI names the database");
        for (name, table) in &tables {
            let count = database
                .collection::<mongodb::bson::Document>(table)
                .count_documents(mongodb::bson::doc! {})
                .await
                .unwrap_or_else(|e| panic!("{name}: counting {table}: {e}"));
            assert!(count > 0, "{name}: its collection {table} is empty");
        }
    });

    // Metrics, where the aggregator has them (--metrics-listen).
    let help = Command::new(binary("aggregator")).arg("--help").output().unwrap();
    let has_metrics = String::from_utf8_lossy(&help.stdout).contains("--metrics-listen");
    for container in &aggregators {
        match (container.listens.get("AGGREGATOR_METRICS_LISTEN"), has_metrics) {
            (Some(port), true) => {
                let (status, body) = get_text(&dashboard.runtime, &format!("http://127.0.0.1:{port}/metrics"));
                assert_eq!(status, 200, "{}: /metrics: {body}", container.service.name);
                assert!(body.contains("# TYPE"), "{}: /metrics is not Prometheus text: {body}", container.service.name);
            }
            (None, true) => {
                panic!("{}: the aggregator has --metrics-listen, compose does not set it", container.service.name)
            }
            (_, false) => {
                eprintln!("{}: this aggregator has no --metrics-listen; metrics not checked", container.service.name)
            }
        }
    }

    // `up -d` again: the generator container starts again and publishes nothing.
    let again = generator.run();
    assert!(again.contains("nothing to publish"), "{again}");
    assert_eq!(broker.message_count("events"), EVENTS as usize, "a second start published again:\n{again}");

    // `docker-compose stop`: each aggregator checkpoints and exits 0 within its grace period.
    for (container, process) in aggregators.iter().zip(running.iter_mut()) {
        let status = process.stop(container.grace());
        assert!(status.success(), "{} exited with {status} after SIGTERM:\n{}", process.name, process.log());
    }
    let checkpoints = volumes.join("checkpoints");
    for name in &names {
        assert!(
            checkpoints.join(format!("{name}.checkpoint")).is_file(),
            "{name}: no checkpoint in the checkpoints volume"
        );
    }
    let status = dashboard_process.stop(dashboard_container.grace());
    assert!(status.success(), "the dashboard exited with {status}:\n{}", dashboard_process.log());
}

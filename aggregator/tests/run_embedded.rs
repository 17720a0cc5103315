//! `run-embedded.sh` stopped the way a supervisor or `kill <pid>` stops it: SIGTERM (or
//! SIGINT) to the script's own PID only, not to its process group as a terminal's
//! Ctrl-C does. The script must stop its generator, aggregator and dashboard (the
//! aggregator checkpointing) and exit, leaving nothing running.
//!
//! The script runs from a copy of itself and `sql/` in a temporary directory (it writes
//! `data/` next to itself), on the binaries `cargo test --workspace` built (`BIN_DIR`,
//! so it does not run cargo while the tests hold the build lock), the dashboard on a free
//! port (`DASHBOARD_LISTEN`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A safety net for waits that end on an event, not a timing assertion.
const DEADLINE: Duration = Duration::from_secs(300);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repository").to_path_buf()
}

/// The directory of the workspace's binaries (the aggregator's), checked for the other two.
fn bin_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_BIN_EXE_aggregator")).parent().expect("bin dir").to_path_buf();
    for name in ["generator", "dashboard"] {
        assert!(
            dir.join(name).is_file(),
            "{name} is not built: cargo build -p {name} (cargo test --workspace builds it)"
        );
    }
    dir
}

/// The PIDs whose parent is `pid` (from /proc).
fn children_of(pid: u32) -> Vec<u32> {
    let mut children = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(child) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // `pid (comm) state ppid …`; comm may hold spaces and parentheses.
        let after_comm = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
        if after_comm.split_whitespace().nth(1).and_then(|p| p.parse::<u32>().ok()) == Some(pid) {
            children.push(child);
        }
    }
    children
}

/// Whether `pid` is still a live process (a zombie counts as gone).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')))
}

fn program_of(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split('\0')
        .next()
        .map(|p| Path::new(p).file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default())
        .unwrap_or_default()
}

fn get(runtime: &tokio::runtime::Runtime, url: &str) -> Option<serde_json::Value> {
    runtime.block_on(async {
        let response = reqwest::get(url).await.ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.json().await.ok()
    })
}

struct Script {
    child: Child,
    dir: PathBuf,
}

impl Drop for Script {
    fn drop(&mut self) {
        // Only if the test failed half-way: the script's children, then the script.
        for pid in children_of(self.child.id()) {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the script and waits until its three programs run and every pipeline has
/// consumed events; returns it with their PIDs.
fn start(dir: &Path, port: u16, runtime: &tokio::runtime::Runtime) -> (Script, Vec<u32>) {
    let log = std::fs::File::create(dir.join("script.log")).unwrap();
    let child = Command::new(dir.join("run-embedded.sh"))
        .env("BIN_DIR", bin_dir())
        .env("DASHBOARD_LISTEN", format!("127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("run-embedded.sh");
    let script = Script { child, dir: dir.to_path_buf() };
    let pipelines = std::fs::read_dir(dir.join("sql")).unwrap().count();
    let started = Instant::now();
    loop {
        let ready = get(runtime, &format!("http://127.0.0.1:{port}/api/pipelines")).is_some_and(|body| {
            let items = body["pipelines"].as_array().cloned().unwrap_or_default();
            items.len() == pipelines && items.iter().all(|p| p["events_in"].as_u64().unwrap_or(0) > 0)
        });
        if ready {
            break;
        }
        let log = std::fs::read_to_string(dir.join("script.log")).unwrap_or_default();
        assert!(started.elapsed() < DEADLINE, "run-embedded.sh did not get going within {DEADLINE:?}:\n{log}");
        std::thread::sleep(Duration::from_millis(300));
    }
    let mut programs: Vec<(String, u32)> =
        children_of(script.child.id()).into_iter().map(|pid| (program_of(pid), pid)).collect();
    programs.sort();
    let names: Vec<&str> = programs.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, ["aggregator", "dashboard", "generator"], "the script's children");
    (script, programs.into_iter().map(|(_, pid)| pid).collect())
}

/// Sends `signal` to the script's PID alone; the script exits with 128 + the signal's
/// number, and none of its programs is left running.
fn stop(mut script: Script, children: &[u32], signal: &str, code: i32) {
    let pid = script.child.id();
    assert!(Command::new("kill").args([&format!("-{signal}"), &pid.to_string()]).status().unwrap().success());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = script.child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() >= DEADLINE {
            // Which program held the script up, and what the aggregator was doing.
            let log = std::fs::read_to_string(script.dir.join("script.log")).unwrap_or_default();
            let aggregator = std::fs::read_to_string(script.dir.join("data/aggregator.log")).unwrap_or_default();
            let lines: Vec<&str> = aggregator.lines().collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            let running: Vec<String> =
                children.iter().filter(|pid| alive(**pid)).map(|pid| format!("{} ({pid})", program_of(*pid))).collect();
            panic!(
                "run-embedded.sh ignored SIG{signal} for {DEADLINE:?}; still running: {running:?}\n{log}\n\
                 aggregator.log, last lines:\n{}",
                tail.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status.code(), Some(code), "run-embedded.sh's exit status after SIG{signal}");
    for child in children {
        assert!(!alive(*child), "{} (PID {child}) still runs after SIG{signal} to the script", program_of(*child));
    }
}

#[test]
fn sigterm_or_sigint_to_the_scripts_pid_stops_everything() {
    let dir = tempfile::tempdir().unwrap();
    let root = repo_root();
    std::fs::copy(root.join("run-embedded.sh"), dir.path().join("run-embedded.sh")).unwrap();
    std::fs::create_dir(dir.path().join("sql")).unwrap();
    for file in std::fs::read_dir(root.join("sql")).unwrap() {
        let path = file.unwrap().path();
        if path.extension().is_some_and(|e| e == "sql") {
            std::fs::copy(&path, dir.path().join("sql").join(path.file_name().unwrap())).unwrap();
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();

    let (script, children) = start(dir.path(), port, &runtime);
    stop(script, &children, "TERM", 143);
    // The aggregator was stopped with SIGTERM, not killed: it wrote its checkpoints.
    let checkpoints = std::fs::read_dir(dir.path().join("data/checkpoints"))
        .map(|d| {
            d.filter(|f| f.as_ref().is_ok_and(|f| f.path().extension().is_some_and(|e| e == "checkpoint"))).count()
        })
        .unwrap_or(0);
    let pipelines = std::fs::read_dir(dir.path().join("sql")).unwrap().count();
    assert_eq!(checkpoints, pipelines, "a checkpoint per pipeline");

    // Again (the pipelines resume), stopped with SIGINT this time.
    let (script, children) = start(dir.path(), port, &runtime);
    stop(script, &children, "INT", 130);
}

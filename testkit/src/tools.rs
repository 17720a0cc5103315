//! Programs the tests run that a fresh machine may not have, found or installed by the
//! tests' own set-up so that `cargo test --workspace` works as written:
//!
//! | function | program | from |
//! | --- | --- | --- |
//! | [`docker_compose`] | `docker-compose` (validates and resolves the compose files, offline) | Debian's `docker-compose` |
//! | [`chromium`] | headless `chromium` (the dashboard's browser tests) | Debian's `chromium` |
//! | [`ensure_python_venv`] | python3's `venv` module (`install-servers.sh` makes `.venv/` with it) | Debian's `python3-venv` |
//! | [`mongosh`] | `mongosh` (runs `deploy/mongo-init.js` and the healthcheck like the `mongo` image does) | npm's `mongosh`, into `.tools/` |
//!
//! Each is looked up first (an override variable, then `PATH`). A missing Debian package
//! is installed with `apt-get` when the tests run as root (once per machine: a lock file
//! serialises the test binaries); otherwise the test fails with a message naming exactly
//! what to install.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The `mongosh` version installed into `.tools/` (the shell of the `mongo:7` image's generation).
pub const MONGOSH_VERSION: &str = "2.12.0";

/// `docker-compose` (Compose v1; Debian's package, which needs no Docker engine for `config`).
pub fn docker_compose() -> PathBuf {
    static FOUND: OnceLock<PathBuf> = OnceLock::new();
    FOUND.get_or_init(|| find_or_apt_install("DOCKER_COMPOSE_BIN", "docker-compose", "docker-compose")).clone()
}

/// Headless Chromium for the browser tests (`CHROMIUM_BIN` overrides).
pub fn chromium() -> PathBuf {
    static FOUND: OnceLock<PathBuf> = OnceLock::new();
    FOUND.get_or_init(|| find_or_apt_install("CHROMIUM_BIN", "chromium", "chromium")).clone()
}

/// `socat`, the TLS-terminating proxy of the Kafka TLS tests (`SOCAT_BIN` overrides).
pub fn socat() -> PathBuf {
    static FOUND: OnceLock<PathBuf> = OnceLock::new();
    FOUND.get_or_init(|| find_or_apt_install("SOCAT_BIN", "socat", "socat")).clone()
}

/// Makes sure `python3 -m venv` works (Debian splits the module into `python3-venv`).
pub fn ensure_python_venv() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let works = || {
            Command::new("python3").args(["-c", "import ensurepip, venv"]).output().is_ok_and(|o| o.status.success())
        };
        if !works() {
            apt_install("python3-venv", "python3's venv module (python3 -m venv)");
            assert!(works(), "python3 -m venv still does not work after apt-get install python3-venv");
        }
    });
}

/// `mongosh`: `MONGOSH_BIN`, else `PATH`, else `mongosh@MONGOSH_VERSION` installed from npm
/// (`npm ci`: the tree of `testkit/mongosh/package-lock.json`) into
/// `<workspace>/.tools/mongosh/` (needs node and npm).
pub fn mongosh() -> PathBuf {
    static FOUND: OnceLock<PathBuf> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            if let Some(path) = overridden("MONGOSH_BIN").or_else(|| on_path("mongosh")) {
                return path;
            }
            let prefix = crate::workspace_root().join(".tools").join("mongosh");
            let bin = prefix.join("node_modules/.bin/mongosh");
            let _lock = machine_lock("testkit-npm-mongosh.lock");
            if !bin.is_file() {
                let npm = on_path("npm").unwrap_or_else(|| {
                    panic!(
                        "mongosh is not installed and npm is not on PATH to install it: install Node.js with npm \
                         (Debian: apt-get install npm), or mongosh itself (set MONGOSH_BIN)"
                    )
                });
                std::fs::create_dir_all(&prefix).unwrap_or_else(|e| panic!("creating {}: {e}", prefix.display()));
                let package = format!("mongosh@{MONGOSH_VERSION}");
                eprintln!("testkit: installing {package} into {} (once)", prefix.display());
                // The whole dependency tree is pinned by testkit/mongosh/package-lock.json
                // (`npm ci`): mongosh's own ranges let npm pick versions published
                // since, which a registry mirror may not have.
                let pinned = crate::workspace_root().join("testkit").join("mongosh");
                for file in ["package.json", "package-lock.json"] {
                    std::fs::copy(pinned.join(file), prefix.join(file))
                        .unwrap_or_else(|e| panic!("copying {file} into {}: {e}", prefix.display()));
                }
                let output = Command::new(npm)
                    .args(["ci", "--no-audit", "--no-fund", "--omit=optional", "--prefix"])
                    .arg(&prefix)
                    .output()
                    .unwrap_or_else(|e| panic!("running npm ci for {package}: {e}"));
                assert!(
                    output.status.success() && bin.is_file(),
                    "npm ci ({package}) --prefix {} failed ({}); needs the npm registry:\n{}",
                    prefix.display(),
                    output.status,
                    String::from_utf8_lossy(&output.stderr)
                );
            }
            bin
        })
        .clone()
}

fn overridden(variable: &str) -> Option<PathBuf> {
    std::env::var_os(variable).filter(|v| !v.is_empty()).map(PathBuf::from)
}

/// The first executable file called `name` on `PATH`.
pub fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0)
}

/// The override variable's path, else the program on `PATH`, else the Debian package
/// installed (as root) and the program found again.
fn find_or_apt_install(variable: &str, program: &str, package: &str) -> PathBuf {
    if let Some(path) = overridden(variable) {
        assert!(is_executable(&path), "{variable}={} is not an executable file", path.display());
        return path;
    }
    if let Some(path) = on_path(program) {
        return path;
    }
    apt_install(package, program);
    on_path(program).unwrap_or_else(|| panic!("apt-get installed {package}, but {program} is still not on PATH"))
}

/// The effective user is root (the owner of `/proc/self` is the process's effective uid).
fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// A lock held across the machine's test binaries until dropped.
fn machine_lock(name: &str) -> std::fs::File {
    let path = std::env::temp_dir().join(name);
    let file = std::fs::File::create(&path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
    file.lock().unwrap_or_else(|e| panic!("locking {}: {e}", path.display()));
    file
}

/// `apt-get install <package>` as root, or a failure naming the package to install.
fn apt_install(package: &str, what: &str) {
    assert!(
        running_as_root(),
        "{what} is missing and the tests are not running as root, so they cannot install it: \
         sudo apt-get install {package}"
    );
    let _lock = machine_lock("testkit-apt-get.lock");
    // Another test binary may have installed it while we waited for the lock.
    let installed = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"));
    if installed {
        return;
    }
    eprintln!("testkit: {what} is missing; apt-get install {package} (once per machine)");
    let apt = |args: &[&str]| {
        let output = Command::new("apt-get")
            .args(["-o", "DPkg::Lock::Timeout=600", "-qq"])
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output()
            .unwrap_or_else(|e| panic!("running apt-get {}: {e}", args.join(" ")));
        assert!(
            output.status.success(),
            "apt-get {} failed ({}) while installing {package} for {what}:\n{}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    };
    apt(&["update"]);
    apt(&["install", "-y", package]);
}

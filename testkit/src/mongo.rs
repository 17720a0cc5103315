//! A MongoDB wire-protocol server (SecantusDB) on a free port.

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{binary, free_port};

/// A SecantusDB process with its own data directory.
pub struct MongoServer {
    port: u16,
    data_dir: tempfile::TempDir,
    child: Option<Child>,
}

impl MongoServer {
    /// Starts a server on a free port and waits until it accepts connections.
    pub fn start() -> Self {
        let mut server =
            MongoServer { port: free_port(), data_dir: tempfile::tempdir().expect("temp dir"), child: None };
        server.start_again();
        server
    }

    /// `mongodb://127.0.0.1:<port>/<database>`.
    pub fn uri(&self, database: &str) -> String {
        format!("mongodb://127.0.0.1:{}/{database}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Starts the process (again) on the same port and data directory.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "server already running");
        let log = std::fs::File::create(self.data_dir.path().join("server.log")).expect("server log");
        let child = Command::new(binary("SECANTUS_BIN", "bin/secantusd-py"))
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string(), "--log-level", "WARNING"])
            .arg("--storage-path")
            .arg(self.data_dir.path().join("data"))
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("start secantusd-py");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "MongoDB server did not listen on {} within 60 s: {}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the server by PID: SIGTERM (it closes WiredTiger cleanly), SIGKILL after 30 s.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// The server's own log, for assertion messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for MongoServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

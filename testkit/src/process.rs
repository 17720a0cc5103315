//! A server process on a local port, with its data directory and log; stopped by PID.

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) struct ServerProcess {
    pub port: u16,
    pub data_dir: tempfile::TempDir,
    child: Option<Child>,
}

impl ServerProcess {
    /// A free port and a fresh data directory; nothing started yet.
    pub fn new() -> Self {
        ServerProcess { port: crate::free_port(), data_dir: tempfile::tempdir().expect("temp dir"), child: None }
    }

    /// `port` (chosen by the caller) and a fresh data directory; nothing started yet.
    pub fn on_port(port: u16) -> Self {
        ServerProcess { port, data_dir: tempfile::tempdir().expect("temp dir"), child: None }
    }

    pub fn data(&self) -> &Path {
        self.data_dir.path()
    }

    /// Starts `command` (logging to `server.log`) and waits until the port accepts connections.
    pub fn start(&mut self, mut command: Command) {
        assert!(self.child.is_none(), "server already running");
        let log = std::fs::File::create(self.data().join("server.log")).expect("server log");
        let child = command
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {command:?}: {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "{command:?} did not listen on {} within 60 s: {}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the server the way an operator would: SIGTERM (by PID), so it saves its
    /// data, and SIGKILL if it has not exited within 30 s.
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

    /// The running process's PID.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The server's own output, for assertion messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data().join("server.log")).unwrap_or_default()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

//! A MongoDB wire-protocol server (SecantusDB) on a free port.

use std::process::Command;

use crate::binary;
use crate::process::ServerProcess;

/// A SecantusDB process with its own data directory (kept across a stop and start).
pub struct MongoServer {
    process: ServerProcess,
    /// Started with `--auth` (SCRAM-SHA-256 required).
    auth: bool,
}

impl MongoServer {
    /// Starts a server on a free port and waits until it accepts connections.
    pub fn start() -> Self {
        let mut server = MongoServer { process: ServerProcess::new(), auth: false };
        server.start_again();
        server
    }

    /// `mongodb://127.0.0.1:<port>/<database>`.
    pub fn uri(&self, database: &str) -> String {
        format!("mongodb://127.0.0.1:{}/{database}", self.process.port)
    }

    /// Starts the process (again) on the same port and data directory.
    pub fn start_again(&mut self) {
        let mut command = Command::new(binary("SECANTUS_BIN", "bin/secantusd-py"));
        command.args(["--host", "127.0.0.1", "--port", &self.process.port.to_string(), "--log-level", "WARNING"]);
        command.arg("--storage-path").arg(self.process.data().join("data"));
        if self.auth {
            command.arg("--auth");
        }
        self.process.start(command);
    }

    /// Restarts the server requiring authentication (create the users first: without
    /// `--auth` anyone may `createUser`).
    pub fn restart_with_auth(&mut self) {
        self.stop();
        self.auth = true;
        self.start_again();
    }

    /// SIGTERM (it closes WiredTiger cleanly), SIGKILL after 30 s.
    pub fn stop(&mut self) {
        self.process.stop();
    }

    /// The server's own log, for assertion messages.
    pub fn log(&self) -> String {
        self.process.log()
    }
}

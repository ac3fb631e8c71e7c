//! The real `invitations` binary as a child process: JSON logs captured from
//! stderr, addresses read from its startup log lines (it binds port 0), and
//! signals sent like Kubernetes does.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::helpers::TestDb;

pub struct Process {
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub db: TestDb,
    child: Child,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Process {
    /// Starts `invitations serve` on port 0 with JSON logs, its own database,
    /// and `env` on top of a clean environment (no OTEL_* from the caller).
    pub async fn spawn(args: &[&str], env: &[(&str, &str)]) -> Self {
        let db = TestDb::create().await;
        let mut command = Command::new(env!("CARGO_BIN_EXE_invitations"));
        command
            .args(["--log-format", "json", "serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .args(["--database-url", &db.url, "--health-interval", "100ms", "--db-max-connections", "8"])
            .args(["--secret", crate::helpers::TEST_SECRET])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (key, _) in std::env::vars() {
            if key.starts_with("OTEL_") || key.starts_with("INVITATIONS_") || key == "NATS_URL" {
                command.env_remove(key);
            }
        }
        command.envs(env.iter().copied());
        let mut child = command.spawn().expect("start the invitations binary");
        let stderr = child.stderr.take().expect("piped stderr");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if std::env::var_os("TEST_LOG").is_some() {
                    eprintln!("{line}");
                }
                sink.lock().expect("log lock").push(line);
            }
        });
        let mut process = Self { addr: unbound(), admin_addr: unbound(), db, child, logs };
        process.addr = process.address_logged("serving gRPC").await;
        process.admin_addr = process.address_logged("serving metrics").await;
        process
    }

    pub async fn address_logged(&mut self, message: &str) -> SocketAddr {
        let start = tokio::time::Instant::now();
        let line = loop {
            if let Some(line) = self.log_line(message) {
                break line;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the binary exited ({status}):\n{}", self.raw_logs());
            }
            assert!(start.elapsed() < Duration::from_secs(30), "the binary did not log {message:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let address = line["fields"]["address"].as_str().expect("address field");
        address.parse().expect("a socket address")
    }

    /// Every log line so far, parsed (each must be JSON).
    pub fn logs(&self) -> Vec<serde_json::Value> {
        let lines = self.logs.lock().expect("log lock").clone();
        lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}")))
            .collect()
    }

    /// Every log line so far, as written.
    pub fn raw_logs(&self) -> String {
        self.logs.lock().expect("log lock").join("\n")
    }

    /// The first line whose message is `message`.
    pub fn log_line(&self, message: &str) -> Option<serde_json::Value> {
        self.logs().into_iter().find(|l| l["fields"]["message"] == message)
    }

    /// The child's process id (for /proc).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn sigterm(&self) {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits (up to `deadline`) for the process to exit.
    pub async fn wait_exit(&mut self, deadline: Duration) -> ExitStatus {
        let start = tokio::time::Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the child") {
                return status;
            }
            assert!(start.elapsed() < deadline, "the binary did not exit within {deadline:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn unbound() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 0))
}

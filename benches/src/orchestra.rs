//! The `orchestra` binary, started as the README tells users to start it, for benches
//! that compare what users run with the engine started inside the bench process.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The `orchestra` binary to run: `ORCHESTRA_BIN` when set, else the one cargo builds
/// with the bench's own profile (`cargo build --release -p omc-orchestra-server`, run
/// here so that the bench never measures a stale binary; cargo answers from its cache
/// when nothing changed). The path comes from cargo's own report of what it built, so
/// it follows `CARGO_TARGET_DIR` and any target layout.
pub fn orchestra_binary() -> std::io::Result<PathBuf> {
    if let Some(path) = std::env::var_os("ORCHESTRA_BIN") {
        return Ok(path.into());
    }
    // Cargo tells the processes it runs where it is.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo)
        .args([
            "build",
            "--release",
            "-p",
            "omc-orchestra-server",
            "--bin",
            "orchestra",
            "--message-format=json-render-diagnostics",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let mut found = None;
    if let Some(out) = build.stdout.take() {
        for line in BufReader::new(out).lines() {
            let Ok(message) = serde_json::from_str::<serde_json::Value>(&line?) else {
                continue;
            };
            if let Some(path) = message["executable"].as_str() {
                found = Some(PathBuf::from(path));
            }
        }
    }
    let status = build.wait()?;
    match found {
        Some(path) if status.success() => Ok(path),
        _ => Err(std::io::Error::other(
            "cargo did not build the orchestra binary (set ORCHESTRA_BIN to one)",
        )),
    }
}

/// `orchestra up` (all four servers in one process, default logging and settings) on
/// free ports, with the gateway configured by `gateway_toml` (the body of a `[gateway]`
/// table) and the extra environment `env` (a static upstream's `<NAME>_SERVICE_URL`).
/// Its log lines go to `/dev/null`, as cheap a sink as a terminal or a pipe gets.
pub struct Orchestra {
    child: Child,
    gateway_port: u16,
    /// The registry's, the gateway's, the jobs' and the logging server's ports.
    ports: [u16; 4],
    dir: PathBuf,
}

impl Orchestra {
    /// Start `binary` and wait until its gateway accepts connections.
    pub fn up(binary: &Path, gateway_toml: &str, env: &[(&str, &str)]) -> std::io::Result<Self> {
        let ports = [(); 4].map(|()| crate::free_port());
        let dir = std::env::temp_dir().join(format!("orchestra-bench-up-{}", ports[1]));
        std::fs::create_dir_all(&dir)?;
        let config = dir.join("orchestra.toml");
        std::fs::write(&config, format!("[gateway]\n{gateway_toml}"))?;
        let child = Command::new(binary)
            .arg("up")
            .arg("--config")
            .arg(&config)
            .args(["--registry-port", &ports[0].to_string()])
            .args(["--gateway-port", &ports[1].to_string()])
            .args(["--jobs-port", &ports[2].to_string()])
            .args(["--logging-port", &ports[3].to_string()])
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?;
        let mut started = Self {
            child,
            gateway_port: ports[1],
            ports,
            dir,
        };
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", started.gateway_port)).is_ok() {
                return Ok(started);
            }
            if let Ok(Some(status)) = started.child.try_wait() {
                return Err(std::io::Error::other(format!(
                    "orchestra up ended: {status}"
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(std::io::Error::other(
            "orchestra up did not start listening",
        ))
    }

    /// CPU time the process has used, in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        crate::cpu_seconds(self.child.id())
    }

    /// The URL of `path` on its gateway.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.gateway_port)
    }

    /// The URL of `path` on its registry server.
    pub fn registry_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ports[0])
    }

    /// The URL of `path` on its jobs server.
    pub fn jobs_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ports[2])
    }

    /// The URL of `path` on its logging server.
    pub fn logging_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ports[3])
    }

    /// The process's resident memory, in MB (NaN where `/proc` does not say).
    pub fn rss_mb(&self) -> f64 {
        std::fs::read_to_string(format!("/proc/{}/statm", self.child.id()))
            .ok()
            .and_then(|s| s.split_whitespace().nth(1)?.parse::<f64>().ok())
            .map_or(f64::NAN, |pages| pages * 4096.0 / 1e6)
    }
}

impl Drop for Orchestra {
    fn drop(&mut self) {
        // SIGTERM: the servers finish what is in flight and stop.
        crate::terminate(&mut self.child, &self.dir);
    }
}

//! Shared pieces of the benchmarks: a peer nginx, the `orchestra` binary, the wrk load
//! driver, free ports.

/// Every benchmark runs on the allocator the `orchestra` binary uses.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod orchestra;

pub use orchestra::{orchestra_binary, Orchestra};

use std::io::Write;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Exit with a message saying how to install whatever of `tools` is missing.
pub fn require(tools: &[&str]) {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|tool| {
            Command::new("sh")
                .arg("-c")
                .arg(format!("command -v {tool}"))
                .stdout(Stdio::null())
                .status()
                .map(|s| !s.success())
                .unwrap_or(true)
        })
        .collect();
    if !missing.is_empty() {
        eprintln!(
            "this benchmark needs {}: install with `apt-get install {}`",
            missing.join(", "),
            missing.join(" ")
        );
        std::process::exit(2);
    }
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// What wrk measured.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    /// Requests per second.
    pub rps: f64,
    /// Median latency in milliseconds.
    pub p50_ms: f64,
    /// 99th percentile latency in milliseconds.
    pub p99_ms: f64,
    /// Answers that were not 2xx/3xx, and socket errors (a run with any measured
    /// something other than the proxy's work).
    pub failures: u64,
}

fn millis(text: &str) -> f64 {
    let text = text.trim();
    let (number, unit) = text.split_at(
        text.find(|c: char| c.is_ascii_alphabetic())
            .unwrap_or(text.len()),
    );
    let value: f64 = number.parse().unwrap_or(f64::NAN);
    match unit {
        "us" => value / 1000.0,
        "ms" => value,
        "s" => value * 1000.0,
        _ => f64::NAN,
    }
}

/// Drive `url` with wrk (one thread, `connections` connections) for `seconds`.
pub fn wrk(url: &str, connections: u32, seconds: u64) -> Load {
    wrk_with(url, connections, seconds, &[])
}

/// [`wrk`] with extra request headers (`"Authorization: Bearer ..."`).
pub fn wrk_with(url: &str, connections: u32, seconds: u64, headers: &[&str]) -> Load {
    let mut command = Command::new("wrk");
    command.args([
        "-t",
        "1",
        "-c",
        &connections.to_string(),
        "-d",
        &format!("{seconds}s"),
        "--latency",
    ]);
    for header in headers {
        command.args(["-H", header]);
    }
    let output = command.arg(url).output().expect("wrk runs");
    let text = String::from_utf8_lossy(&output.stdout);
    let mut load = Load {
        rps: f64::NAN,
        p50_ms: f64::NAN,
        p99_ms: f64::NAN,
        failures: 0,
    };
    for line in text.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("Requests/sec:") {
            load.rps = rest.trim().parse().unwrap_or(f64::NAN);
        } else if let Some(rest) = line.strip_prefix("50%") {
            load.p50_ms = millis(rest);
        } else if let Some(rest) = line.strip_prefix("99%") {
            load.p99_ms = millis(rest);
        } else if let Some(rest) = line.strip_prefix("Non-2xx or 3xx responses:") {
            load.failures += rest.trim().parse::<u64>().unwrap_or(1);
        } else if let Some(rest) = line.strip_prefix("Socket errors:") {
            // `connect 0, read 0, write 0, timeout 0`
            load.failures += rest
                .split(',')
                .filter_map(|part| part.split_whitespace().last()?.parse::<u64>().ok())
                .sum::<u64>();
        }
    }
    if text.contains("Non-2xx") {
        eprintln!("warning: wrk saw non-2xx answers from {url}:\n{text}");
    }
    load
}

/// CPU time (user + system, in seconds) used so far by process `pid` and its direct
/// children (an nginx master and its workers), read from `/proc`. Zero where there is
/// no `/proc`.
pub fn cpu_seconds(pid: u32) -> f64 {
    fn stat(pid: &str) -> Option<(u32, f64)> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the command name, which may hold spaces: state, ppid, ...
        let rest = &text[text.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ppid = fields.get(1)?.parse().ok()?;
        let ticks: f64 =
            fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
        Some((ppid, ticks / 100.0))
    }
    let own = stat(&pid.to_string()).map_or(0.0, |(_, cpu)| cpu);
    let children: f64 = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| stat(entry.file_name().to_str()?))
        .filter(|(ppid, _)| *ppid == pid)
        .map(|(_, cpu)| cpu)
        .sum();
    own + children
}

/// Latency at a fixed request rate, from the `constant-rate` driver of this crate.
#[derive(Debug, Clone, Copy)]
pub struct RateLoad {
    /// Requests sent.
    pub sent: u64,
    /// Requests that failed or answered non-2xx.
    pub errors: u64,
    /// The rate achieved.
    pub rps: f64,
    /// Median latency from each request's scheduled start, in ms.
    pub p50_ms: f64,
    /// 99th percentile, in ms.
    pub p99_ms: f64,
    /// The share of the machine's CPU time (all cores, 0 to 1) that was busy while the
    /// driver ran: the driver, the target and everything else on the machine.
    pub busy: f64,
}

/// The machine's CPU time so far, busy and in all, in clock ticks, from `/proc/stat`
/// (zeros where there is none).
fn machine_ticks() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = text.lines().find(|l| l.starts_with("cpu ")) else {
        return (0, 0);
    };
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|t| t.parse().ok())
        .collect();
    let all: u64 = ticks.iter().sum();
    let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
    (all - idle, all)
}

/// Drive `url` at `rate` requests/s for `seconds` over `connections` connections with
/// the `constant-rate` binary at `driver` (a bench finds it with
/// `env!("CARGO_BIN_EXE_constant-rate")`).
pub fn constant_rate(
    driver: &str,
    url: &str,
    rate: u64,
    seconds: u64,
    connections: u32,
    headers: &[&str],
) -> RateLoad {
    let (busy_before, all_before) = machine_ticks();
    let output = Command::new(driver)
        .args([
            url,
            &rate.to_string(),
            &seconds.to_string(),
            &connections.to_string(),
        ])
        .args(headers)
        .output()
        .expect("the constant-rate driver runs");
    let (busy_after, all_after) = machine_ticks();
    let text = String::from_utf8_lossy(&output.stdout);
    let mut load = RateLoad {
        sent: 0,
        errors: 0,
        rps: f64::NAN,
        p50_ms: f64::NAN,
        p99_ms: f64::NAN,
        busy: (busy_after - busy_before) as f64 / (all_after - all_before).max(1) as f64,
    };
    for field in text.split_whitespace() {
        match field.split_once('=') {
            Some(("sent", v)) => load.sent = v.parse().unwrap_or(0),
            Some(("errors", v)) => load.errors = v.parse().unwrap_or(0),
            Some(("rps", v)) => load.rps = v.parse().unwrap_or(f64::NAN),
            Some(("p50_ms", v)) => load.p50_ms = v.parse().unwrap_or(f64::NAN),
            Some(("p99_ms", v)) => load.p99_ms = v.parse().unwrap_or(f64::NAN),
            _ => {}
        }
    }
    if !output.status.success() || load.errors > 0 {
        eprintln!(
            "warning: the constant-rate driver on {url}: {}{}",
            String::from_utf8_lossy(&output.stderr),
            text
        );
    }
    load
}

/// An nginx of the benchmark's own, killed when dropped.
pub struct Nginx {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Nginx {
    /// nginx on `port` serving `body` as `/body.json`, with as many workers as cores.
    pub fn static_body(port: u16, body: &[u8]) -> std::io::Result<Self> {
        let dir = Self::dir(port)?;
        std::fs::File::create(dir.join("body.json"))?.write_all(body)?;
        let server = format!(
            "server {{\n    listen 127.0.0.1:{port};\n    root {dir};\n\
             location / {{ default_type application/json; }}\n  }}\n",
            dir = dir.display()
        );
        Self::start(port, dir, &server)
    }

    /// nginx on `port` proxying `prefix` (stripped) to `127.0.0.1:upstream_port` over
    /// pooled keep-alive connections, as a reverse proxy in front of a service would.
    pub fn proxy(port: u16, prefix: &str, upstream_port: u16) -> std::io::Result<Self> {
        let dir = Self::dir(port)?;
        let server = format!(
            "upstream backend {{ server 127.0.0.1:{upstream_port}; keepalive 256; }}\n\
             server {{\n    listen 127.0.0.1:{port};\n\
               location {prefix}/ {{\n      proxy_pass http://backend/;\n\
                 proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n\
                 proxy_set_header X-Forwarded-For $remote_addr;\n    }}\n  }}\n"
        );
        Self::start(port, dir, &server)
    }

    fn dir(port: u16) -> std::io::Result<PathBuf> {
        let dir = std::env::temp_dir().join(format!("orchestra-bench-nginx-{port}"));
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    fn start(port: u16, dir: PathBuf, server: &str) -> std::io::Result<Self> {
        let conf = format!(
            "worker_processes auto;\npid {dir}/nginx.pid;\nerror_log {dir}/error.log;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {dir};\n  proxy_temp_path {dir};\n\
               fastcgi_temp_path {dir};\n  uwsgi_temp_path {dir};\n  scgi_temp_path {dir};\n\
               keepalive_requests 1000000;\n  {server}}}\n",
            dir = dir.display()
        );
        std::fs::write(dir.join("nginx.conf"), conf)?;
        let child = Command::new("nginx")
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?;
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(Self { child, port, dir });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(std::io::Error::other("nginx did not start listening"))
    }

    /// CPU time its master and workers have used, in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds(self.child.id())
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of `path` on this nginx.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM lets the master stop its workers; SIGKILL would leave them running.
        terminate(&mut self.child, &self.dir);
    }
}

/// Stop `child` with SIGTERM (SIGKILL when that cannot be sent), wait for it, and remove
/// its folder `dir`.
fn terminate(child: &mut Child, dir: &std::path::Path) {
    let stopped = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .is_ok_and(|s| s.success());
    if !stopped {
        let _ = child.kill();
    }
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(dir);
}

/// `items` calls of `call`, `in_flight` at a time: calls per second, or the first error.
pub async fn rate<F, Fut>(items: u64, in_flight: usize, call: F) -> omc_orchestra::Result<f64>
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = omc_orchestra::Result<()>>,
{
    use futures::StreamExt;
    let started = std::time::Instant::now();
    let mut calls = futures::stream::iter(0..items)
        .map(call)
        .buffer_unordered(in_flight);
    while let Some(done) = calls.next().await {
        done?;
    }
    Ok(items as f64 / started.elapsed().as_secs_f64())
}

/// An end-user token for the gateway's JWT authentication, signed with `secret`, valid
/// for an hour: what the gateway benches send on every request.
pub fn reader_token(secret: &str) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        + 3600;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &serde_json::json!({"sub": "bench", "exp": exp, "roles": ["reader"]}),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("a token")
}

//! Helpers for the end-to-end tests: a headless Chromium driven over WebDriver, and small
//! real HTTP services to register.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A `chromedriver` of the test's own, killed when dropped.
#[derive(Debug)]
pub struct ChromeDriver {
    child: Child,
    port: u16,
}

impl ChromeDriver {
    /// Start chromedriver on a free port; panics naming `scripts/test`, which installs it,
    /// when it is missing.
    pub fn start() -> Self {
        for binary in ["/usr/bin/chromedriver", "/usr/bin/chromium"] {
            assert!(
                std::path::Path::new(binary).exists(),
                "{binary} is missing: the browser tests need Debian's Chromium and its driver; \
                 `scripts/test` installs them (or `apt-get install chromium chromium-driver`)"
            );
        }
        let port = free_port();
        let mut child = Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Self { child, port };
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("chromedriver did not listen on port {port}");
    }

    /// A headless Chromium session.
    pub async fn browser(&self) -> fantoccini::Client {
        let profile = std::env::temp_dir().join(format!("orchestra-chromium-{}", self.port));
        let capabilities = serde_json::json!({
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                    "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.display()),
                ]
            }
        });
        let serde_json::Value::Object(capabilities) = capabilities else {
            unreachable!("a JSON object literal")
        };
        fantoccini::ClientBuilder::native()
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("a Chromium session")
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A small real service whose `/health` answers what the test says.
#[derive(Debug, Clone)]
pub struct FakeService {
    /// The port it listens on.
    pub port: u16,
    status: Arc<AtomicU16>,
}

impl FakeService {
    /// Start a service on a free loopback port, healthy.
    pub async fn start() -> Self {
        use axum::{http::StatusCode, routing::get, Router};
        let status = Arc::new(AtomicU16::new(200));
        let shared = status.clone();
        let app = Router::new().route(
            "/health",
            get(move || {
                let shared = shared.clone();
                async move {
                    let code = StatusCode::from_u16(shared.load(Ordering::SeqCst))
                        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                    (code, "{}")
                }
            }),
        );
        let port = serve(app).await;
        Self { port, status }
    }

    /// Make `/health` answer `code` from now on.
    pub fn set_health(&self, code: u16) {
        self.status.store(code, Ordering::SeqCst);
    }
}

/// Serve `router` on a free loopback port, in the background; the port.
pub async fn serve(router: axum::Router) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    port
}

/// A loopback port free now (so nothing listens there until someone binds it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `GET url` and its JSON body; panics when the server does not answer JSON.
pub async fn get_json(url: &str) -> serde_json::Value {
    let response = reqwest::get(url).await.expect("the server answers");
    response.json().await.expect("a JSON body")
}

/// An Alertmanager of the test's own (Debian's `prometheus-alertmanager`) on a free port,
/// with its own configuration and storage in a temporary directory, clustering off;
/// killed when dropped.
#[derive(Debug)]
pub struct Alertmanager {
    child: Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl Alertmanager {
    /// The binary the Debian package installs.
    pub const BINARY: &'static str = "/usr/bin/prometheus-alertmanager";

    /// Start one whose only receiver drops everything; panics naming `scripts/test`, which
    /// installs it, when the binary is missing.
    pub fn start() -> Self {
        assert!(
            std::path::Path::new(Self::BINARY).exists(),
            "{} is missing: the Alertmanager tests need Debian's prometheus-alertmanager; \
             `scripts/test` installs it (or `apt-get install prometheus-alertmanager`)",
            Self::BINARY
        );
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("orchestra-alertmanager-{port}"));
        std::fs::create_dir_all(dir.join("data")).expect("a temporary directory");
        let config = dir.join("alertmanager.yml");
        std::fs::write(
            &config,
            "route:\n  receiver: drop\n  group_wait: 1s\n  group_interval: 1s\n\
             receivers:\n  - name: drop\n",
        )
        .expect("the configuration is written");
        let mut child = Command::new(Self::BINARY)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("alertmanager starts");
        for _ in 0..400 {
            let ready = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
            if ready {
                return Self { child, port, dir };
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("alertmanager did not listen on port {port}");
    }

    /// `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Its alerts now (`GET /api/v2/alerts`: the active, inhibited and silenced ones; a
    /// resolved alert is no longer listed).
    pub async fn alerts(&self) -> Vec<serde_json::Value> {
        let answer = get_json(&format!("{}/api/v2/alerts", self.url())).await;
        answer.as_array().cloned().unwrap_or_default()
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

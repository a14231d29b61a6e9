//! The server says what happens: `orchestra up` (the real binary) prints what runs where at
//! start, then one line per registration, deregistration, health change, alert, expiry and
//! schedule firing, without a line per request at the default level.

use omc_orchestra::testkit::redis::free_port;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `orchestra up` writing its output to a file; killed when dropped.
struct Up {
    child: Child,
    log: PathBuf,
    ports: [u16; 4],
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

impl Up {
    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn url(&self, index: usize) -> String {
        format!("http://127.0.0.1:{}", self.ports[index])
    }

    /// Wait until the output holds a line with every one of `words`; that line.
    async fn line_with(&self, words: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let output = self.output();
            if let Some(line) = output
                .lines()
                .find(|line| words.iter().all(|w| line.contains(w)))
            {
                return line.to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "no line with {words:?} in:\n{output}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test]
async fn the_server_narrates_what_happens_and_not_each_request() {
    let dir = std::env::temp_dir().join(format!("orchestra-narrate-{}", free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("orchestra.toml");
    std::fs::write(
        &config,
        "[job_routes]\nprice-calculation = { service = \"pricing-service\", path = \"/run\" }\n",
    )
    .unwrap();
    let log = dir.join("out.log");
    let out = std::fs::File::create(&log).unwrap();
    let ports = [free_port(), free_port(), free_port(), free_port()];
    let mut command = Command::new(env!("CARGO_BIN_EXE_orchestra"));
    for var in [
        "JWT_SECRET",
        "SERVICE_PUBLIC_KEY",
        "BIND",
        "REDIS_URL",
        "ORCHESTRA_CONFIG",
        "LOG_LEVEL",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ] {
        command.env_remove(var);
    }
    let child = command
        .arg("up")
        .arg("--config")
        .arg(&config)
        .args(["--registry-port", &ports[0].to_string()])
        .args(["--gateway-port", &ports[1].to_string()])
        .args(["--jobs-port", &ports[2].to_string()])
        .args(["--logging-port", &ports[3].to_string()])
        .args(["--grace", "6", "--health-interval", "1"])
        .env("NO_COLOR", "1")
        .stdout(Stdio::from(out.try_clone().unwrap()))
        .stderr(Stdio::from(out))
        .spawn()
        .expect("the orchestra binary starts");
    let up = Up { child, log, ports };

    // The start block: every URL, the backend, the config file, auth, job routes, tracing.
    let registry = up.url(0);
    up.line_with(&["dashboard", &format!("{registry}/dashboard")])
        .await;
    up.line_with(&["websocket", &format!("ws://127.0.0.1:{}/ws", ports[0])])
        .await;
    up.line_with(&["gateway", &up.url(1)]).await;
    up.line_with(&["backend", "in memory"]).await;
    up.line_with(&["config", &config.display().to_string()])
        .await;
    up.line_with(&["auth", "off", "loopback"]).await;
    up.line_with(&[
        "job routes",
        "price-calculation -> POST pricing-service/run",
    ])
    .await;
    up.line_with(&["tracing", "off"]).await;

    let http = reqwest::Client::new();
    let register = |port: u16, ttl: u64| {
        http.post(format!("{registry}/registry/register"))
            .json(
                &json!({"name": "pricing-service", "host": "127.0.0.1", "port": port,
                          "version": "2.1.0", "ttlSeconds": ttl}),
            )
            .send()
    };
    let kept: Value = register(3006, 3600).await.unwrap().json().await.unwrap();
    let kept_id = kept["id"].as_str().unwrap().to_owned();
    let line = up
        .line_with(&["service registered", "pricing-service", &kept_id])
        .await;
    assert!(line.contains("INFO"), "{line}");
    assert!(line.contains("127.0.0.1:3006"), "{line}");
    assert!(line.contains("2.1.0"), "{line}");

    let answer = http
        .delete(format!("{registry}/registry/services/{kept_id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    up.line_with(&["service deregistered", &kept_id]).await;

    // An instance that stops beating turns critical, then expires.
    let lapsed: Value = register(3007, 1).await.unwrap().json().await.unwrap();
    let lapsed_id = lapsed["id"].as_str().unwrap().to_owned();
    let line = up
        .line_with(&["service health changed", &lapsed_id, "critical"])
        .await;
    assert!(line.contains("WARN"), "{line}");
    // Nothing answers its health endpoint either: its alert fires.
    let line = up
        .line_with(&["alert firing", "ServiceUnavailable", &lapsed_id])
        .await;
    assert!(line.contains("WARN"), "{line}");
    up.line_with(&["service expired", &lapsed_id]).await;

    // A schedule firing.
    let schedule = json!({"id": "nightly-report", "cron": "* * * * * *",
                          "job": {"type": "report-generation"}});
    let answer = http
        .post(format!("{}/schedules", up.url(2)))
        .json(&schedule)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 201);
    up.line_with(&["schedule fired", "nightly-report", "report-generation"])
        .await;

    // Requests are not narrated at the default level.
    for _ in 0..20 {
        http.get(format!("{registry}/registry/services"))
            .send()
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let output = up.output();
    assert!(
        !output.contains("/registry/services\""),
        "a line per request at INFO:\n{output}"
    );
    drop(up);
    let _ = std::fs::remove_dir_all(&dir);
}

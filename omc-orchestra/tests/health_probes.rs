//! Each probe against real sockets and real servers: PostgreSQL on 127.0.0.1:5432, the
//! test Redis, a refused port and a port that accepts but never answers.

use omc_orchestra::health::{FnProbe, HealthProbe, HttpProbe, PostgresProbe, RedisProbe, TcpProbe};
use omc_orchestra::registry::HealthStatus;
use std::time::Duration;

const POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A port nothing listens on (bound, then released).
async fn refused_port() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

/// A port that accepts connections and never says a word.
async fn silent_port() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    port
}

#[tokio::test]
async fn http_refused_and_silent_ports_are_critical_for_different_reasons() {
    let timeout = Duration::from_millis(300);
    let refused = HttpProbe::new(
        format!("http://127.0.0.1:{}/health", refused_port().await),
        timeout,
    )
    .check()
    .await;
    let silent = HttpProbe::new(
        format!("http://127.0.0.1:{}/health", silent_port().await),
        timeout,
    )
    .check()
    .await;
    assert_eq!(refused.status, HealthStatus::Critical);
    assert_eq!(refused.reason, "connection refused");
    assert_eq!(silent.status, HealthStatus::Critical);
    assert_eq!(silent.reason, "timed out after 300ms");
}

#[tokio::test]
async fn http_status_codes_map_to_verdicts() {
    use axum::{http::StatusCode, routing::get, Router};
    let app = Router::new()
        .route("/ok", get(|| async { StatusCode::NO_CONTENT }))
        .route("/busy", get(|| async { StatusCode::TOO_MANY_REQUESTS }))
        .route("/broken", get(|| async { StatusCode::SERVICE_UNAVAILABLE }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let check = |path: &str| HttpProbe::new(format!("{base}{path}"), Duration::from_secs(2));
    let ok = check("/ok").check().await;
    assert_eq!(
        (ok.status, ok.reason.as_str()),
        (HealthStatus::Passing, "HTTP 204")
    );
    assert_eq!(check("/busy").check().await.status, HealthStatus::Warning);
    assert_eq!(
        check("/broken").check().await.status,
        HealthStatus::Critical
    );
    assert!(ok.latency_ms >= 0.0);
}

#[tokio::test]
async fn tcp_refused_port_says_so() {
    let result = TcpProbe::new(
        format!("127.0.0.1:{}", refused_port().await),
        Duration::from_secs(2),
    )
    .check()
    .await;
    assert_eq!(
        (result.status, result.reason.as_str()),
        (HealthStatus::Critical, "connection refused")
    );
}

#[tokio::test]
async fn real_postgres_passes_and_a_wrong_port_is_critical() {
    let good = PostgresProbe::new(POSTGRES, Duration::from_secs(5))
        .check()
        .await;
    assert_eq!(
        good.status,
        HealthStatus::Passing,
        "{} (needs PostgreSQL on 127.0.0.1:5432; `scripts/test` sets one up)",
        good.reason
    );
    let wrong = format!(
        "postgres://postgres@127.0.0.1:{}/postgres",
        refused_port().await
    );
    let bad = PostgresProbe::new(wrong, Duration::from_secs(5))
        .check()
        .await;
    assert_eq!(
        (bad.status, bad.reason.as_str()),
        (HealthStatus::Critical, "connection refused")
    );
}

#[tokio::test]
async fn real_redis_passes_and_a_wrong_port_is_critical() {
    let url = omc_orchestra::testkit::redis::url().await;
    let good = RedisProbe::new(url, Duration::from_secs(5)).check().await;
    assert_eq!(
        (good.status, good.reason.as_str()),
        (HealthStatus::Passing, "PONG")
    );
    let wrong = format!("redis://127.0.0.1:{}", refused_port().await);
    let bad = RedisProbe::new(wrong, Duration::from_secs(5)).check().await;
    assert_eq!(
        (bad.status, bad.reason.as_str()),
        (HealthStatus::Critical, "connection refused")
    );
}

#[tokio::test]
async fn closure_probe_reports_its_verdict_and_its_timeout() {
    let ok = FnProbe::new("cache-warm", Duration::from_secs(1), || async {
        Ok((HealthStatus::Warning, "cache cold".to_owned()))
    });
    assert_eq!(ok.name(), "cache-warm");
    let result = ok.check().await;
    assert_eq!(
        (result.status, result.reason.as_str()),
        (HealthStatus::Warning, "cache cold")
    );
    let failing = FnProbe::new("db", Duration::from_secs(1), || async {
        Err("no rows".to_owned())
    });
    assert_eq!(failing.check().await.status, HealthStatus::Critical);
    let stuck = FnProbe::new("stuck", Duration::from_millis(50), || async {
        std::future::pending::<Result<(HealthStatus, String), String>>().await
    });
    assert_eq!(stuck.check().await.reason, "timed out after 50ms");
}

#[tokio::test]
async fn system_monitor_reads_the_host_into_a_bounded_series() {
    use omc_orchestra::health::SystemMonitor;
    let monitor = SystemMonitor::new(omc_orchestra::clock::system(), 2);
    for _ in 0..3 {
        monitor
            .sample()
            .await
            .expect("the host's figures are readable");
    }
    assert_eq!(monitor.history(10).len(), 2, "only the last two are kept");
    let sample = monitor.latest().unwrap();
    assert!(sample.memory_total_bytes > 0);
    assert!((0.0..=100.0).contains(&sample.memory_percent));
    assert!(!sample.cpu.per_core_percent.is_empty());
    assert!(sample.processes > 0);
    assert!(sample
        .disks
        .iter()
        .all(|d| d.available_bytes <= d.total_bytes));
    assert!(sample.networks.iter().any(|n| n.interface == "lo"));
}

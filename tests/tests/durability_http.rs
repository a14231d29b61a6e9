//! The durability level on the servers: chosen by `--durability`, refused at start when
//! Redis's settings cannot keep it, and shown by `GET /health` and `/metrics` on every
//! port, the memory backend saying it keeps nothing across a restart.

use omc_orchestra::durability::Durability;
use omc_orchestra::testkit::redis::RedisProcess;
use omc_orchestra_server::app::{App, Config, ServerKind};
use serde_json::Value;

async fn health_and_metrics(app: &App, kind: ServerKind) -> (Value, String) {
    let http = reqwest::Client::new();
    let health = http.get(format!("{}/health", app.url(kind))).send().await;
    let health: Value = health.unwrap().json().await.unwrap();
    let metrics = http.get(format!("{}/metrics", app.url(kind))).send().await;
    (health, metrics.unwrap().text().await.unwrap())
}

#[tokio::test]
async fn aof_on_a_redis_without_its_file_does_not_start() {
    let redis = RedisProcess::start(false).expect("redis-server (`scripts/test` installs it)");
    let config = Config {
        redis_url: Some(redis.url()),
        durability: Durability::Aof,
        ..Config::ephemeral()
    };
    let err = App::start(config, &ServerKind::ALL).await.unwrap_err();
    assert!(err.to_string().contains("appendonly no"), "{err}");

    let config = Config {
        durability: Durability::Replica,
        ..Config::ephemeral()
    };
    let err = App::start(config, &ServerKind::ALL).await.unwrap_err();
    assert!(err.to_string().contains("needs Redis"), "{err}");
}

#[tokio::test]
async fn every_port_shows_the_level_in_force() {
    let redis = RedisProcess::start(true).expect("redis-server (`scripts/test` installs it)");
    let config = Config {
        redis_url: Some(redis.url()),
        durability: Durability::Aof,
        ..Config::ephemeral()
    };
    let app = App::start(config, &ServerKind::ALL).await.unwrap();
    for kind in ServerKind::ALL {
        let (health, metrics) = health_and_metrics(&app, kind).await;
        assert_eq!(health["durability"]["level"], "aof", "{health}");
        assert_eq!(health["durability"]["met"], true, "{health}");
        assert_eq!(
            health["durability"]["redis"]["appendfsync"], "always",
            "{health}"
        );
        let line = r#"orchestra_redis_durability{backend="redis",level="aof",met="true"} 1"#;
        assert!(metrics.contains(line), "{}: no `{line}`", kind.name());
    }
    app.shutdown().await;

    let app = App::start(Config::ephemeral(), &ServerKind::ALL)
        .await
        .unwrap();
    for kind in ServerKind::ALL {
        let (health, metrics) = health_and_metrics(&app, kind).await;
        assert_eq!(health["durability"]["backend"], "memory", "{health}");
        let risk = health["durability"]["risk"].as_str().unwrap_or_default();
        assert!(risk.contains("restart of the server loses"), "{health}");
        let line = r#"orchestra_redis_durability{backend="memory",level="memory",met="true"} 1"#;
        assert!(metrics.contains(line), "{}: no `{line}`", kind.name());
    }
    app.shutdown().await;
}

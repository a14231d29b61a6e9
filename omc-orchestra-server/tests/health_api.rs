//! The registry server's health routes without a socket: dependency addresses given with
//! passwords are probed, and no answer about them (dependencies, an instance's health,
//! the dashboard, alerts and the alert events) shows a password.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use omc_orchestra::events::{types, EventQuery};
use omc_orchestra::registry::{Discovery, Registration};
use omc_orchestra::Backends;
use omc_orchestra_server::app::Config;
use omc_orchestra_server::health_api::{self, HealthState};
use omc_orchestra_server::http::HttpMetrics;
use omc_orchestra_server::registry_api::{self, RegistryState};
use omc_orchestra_server::status::ServerStatus;
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower::ServiceExt;

const SECRETS: [&str; 3] = ["hunter2-secret", "pg-secret", "url-secret"];

async fn get(app: &Router, uri: &str) -> (StatusCode, String) {
    let request = Request::builder().uri(uri).body(Body::empty()).unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

fn assert_no_secret(what: &str, text: &str) {
    for secret in SECRETS {
        assert!(!text.contains(secret), "{what} shows `{secret}`: {text}");
    }
}

#[tokio::test]
async fn dependency_passwords_stay_out_of_every_answer() {
    let mut config = Config {
        health_interval: Duration::from_millis(50),
        ..Config::ephemeral()
    };
    // Nothing listens on these ports: the probes fail fast and the alerts fire.
    config.health_dependencies.insert(
        "redis".into(),
        "redis://:hunter2-secret@127.0.0.1:6399".into(),
    );
    config.health_dependencies.insert(
        "postgres".into(),
        "postgres://app:pg-secret@127.0.0.1:5999/db".into(),
    );
    let backends = Backends::memory();
    let metrics = HttpMetrics::new("registry");
    let (health, tasks) = HealthState::start(&config, &backends, &metrics).await;
    let app = registry_api::router(RegistryState {
        discovery: Arc::new(Discovery::new(backends.registry.clone())),
        clock: backends.clock.clone(),
        status: ServerStatus {
            server: "registry",
            backend: "memory",
            durability: backends.durability.clone(),
            started: Instant::now(),
        },
        checker: health.checker.clone(),
    })
    .merge(health_api::router(health));

    let mut registration = Registration::new("erp-service", "127.0.0.1", 1);
    registration.dependencies = vec![
        "redis".into(),
        "postgres".into(),
        // A dependency named by its own URL.
        "redis://:url-secret@127.0.0.1:6398".into(),
    ];
    registration
        .metadata
        .insert("healthCheck".into(), "none".into());
    let instance = backends.registry.register(registration).await.unwrap();

    let deadline = Instant::now() + Duration::from_secs(20);
    let dependencies = loop {
        let (status, body) = get(&app, "/health/dependencies").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let all: Vec<Value> = serde_json::from_str(&body).unwrap();
        let (_, alerts) = get(&app, "/alerts").await;
        let alerts: Value = serde_json::from_str(&alerts).unwrap();
        let firing = alerts["active"].as_array().map_or(0, |a| {
            a.iter()
                .filter(|a| a["rule"] == "DatabaseUnreachable" && a["state"] == "firing")
                .count()
        });
        if all.len() == 3 && firing == 3 {
            break all;
        }
        assert!(
            Instant::now() < deadline,
            "dependencies never all failed: {body} {alerts}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    let addresses: Vec<&str> = dependencies
        .iter()
        .map(|d| d["address"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        addresses,
        [
            "postgres://app:***@127.0.0.1:5999/db",
            "redis://:***@127.0.0.1:6399",
            "redis://:***@127.0.0.1:6398",
        ]
    );
    assert_eq!(dependencies[2]["name"], "redis://:***@127.0.0.1:6398");
    assert_eq!(
        dependencies[0]["health"]["results"][0]["reason"],
        "connection refused"
    );
    assert_no_secret(
        "/health/dependencies",
        &Value::from(dependencies).to_string(),
    );

    let (_, body) = get(&app, &format!("/registry/services/{}/health", instance.id)).await;
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["dependencies"].as_array().map(Vec::len), Some(3));
    assert_no_secret(
        "the instance's dependencies",
        &answer["dependencies"].to_string(),
    );

    for uri in ["/alerts", "/system/dashboard"] {
        let (status, body) = get(&app, uri).await;
        assert_eq!(status, StatusCode::OK, "{uri}: {body}");
        assert_no_secret(uri, &body);
    }
    let query = EventQuery {
        event_type: Some(types::SYSTEM_ALERT.into()),
        ..EventQuery::default()
    };
    let events = backends.events.history(&query).await.unwrap();
    assert!(events.len() >= 3, "{events:?}");
    assert_no_secret("the alert events", &format!("{events:?}"));

    for task in tasks {
        task.abort();
    }
}

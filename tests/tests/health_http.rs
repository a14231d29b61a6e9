//! Health monitoring end to end: a real registry server checks a real tiny HTTP service;
//! when its health endpoint fails the instance goes critical over the API and a
//! `SYSTEM_ALERT` fires on the event bus; when it recovers the alert resolves.

use axum::extract::State;
use axum::http::StatusCode as AxumStatus;
use axum::routing::get;
use omc_orchestra::events::{types, EventQuery};
use omc_orchestra::testkit::eventually;
use omc_orchestra_server::app::{App, Config, ServerKind};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

async fn tiny_service() -> (u16, Arc<AtomicU16>) {
    let code = Arc::new(AtomicU16::new(200));
    let app = axum::Router::new()
        .route(
            "/health",
            get(|State(code): State<Arc<AtomicU16>>| async move {
                AxumStatus::from_u16(code.load(Ordering::SeqCst)).unwrap_or(AxumStatus::OK)
            }),
        )
        .with_state(code.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, code)
}

async fn get_json(http: &reqwest::Client, url: &str) -> Value {
    http.get(url).send().await.unwrap().json().await.unwrap()
}

/// `SYSTEM_ALERT` events on the bus for `instance`, as their `state`s.
async fn alert_states(app: &App, instance: &str) -> Vec<String> {
    let query = EventQuery {
        event_type: Some(types::SYSTEM_ALERT.into()),
        ..EventQuery::default()
    };
    app.backends()
        .events
        .history(&query)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.data["labels"]["instance"] == instance)
        .map(|e| e.data["state"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn failing_health_endpoint_goes_critical_alerts_and_resolves() {
    let mut config = Config {
        health_interval: Duration::from_millis(150),
        ..Config::ephemeral()
    };
    config.health_dependencies.insert(
        "postgres".into(),
        "postgres://postgres@127.0.0.1:5432/postgres".into(),
    );
    let app = App::start(config, &[ServerKind::Registry]).await.unwrap();
    let base = app.url(ServerKind::Registry);
    let http = reqwest::Client::new();
    let (port, code) = tiny_service().await;
    let registered: Value = http
        .post(format!("{base}/registry/register"))
        .json(
            &json!({"name": "tiny-service", "host": "127.0.0.1", "port": port,
                      "healthEndpoint": "/health", "ttlSeconds": 3600,
                      "dependencies": ["postgres"]}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = registered["id"].as_str().unwrap().to_owned();
    let health_url = format!("{base}/registry/services/{id}/health");

    let status_is = |wanted: &'static str| {
        let (http, url) = (http.clone(), health_url.clone());
        move || {
            let (http, url) = (http.clone(), url.clone());
            async move {
                let health = get_json(&http, &url).await;
                (health["checkStatus"] == wanted && !health["results"].as_array()?.is_empty())
                    .then_some(health)
            }
        }
    };
    eventually("first passing probes", WAIT, status_is("passing")).await;
    let health = eventually("the database probed", WAIT, || {
        let (http, url) = (http.clone(), health_url.clone());
        async move {
            let health = get_json(&http, &url).await;
            let dep = health["dependencies"].as_array()?.first()?.clone();
            (!dep["health"]["results"].as_array()?.is_empty()).then_some(dep)
        }
    })
    .await;
    assert_eq!(health["name"], "postgres");
    assert_eq!(
        health["address"],
        "postgres://postgres@127.0.0.1:5432/postgres"
    );
    assert_eq!(
        health["health"]["results"][0]["status"], "passing",
        "{health} (needs PostgreSQL on 127.0.0.1:5432; `scripts/test` sets one up)"
    );

    code.store(500, Ordering::SeqCst);
    let health = eventually("critical", WAIT, status_is("critical")).await;
    let last = health["results"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["reason"], "HTTP 500");
    let found = get_json(&http, &format!("{base}/registry/discovery/tiny-service")).await;
    assert_eq!(found["healthy"], 0);
    eventually("a firing SYSTEM_ALERT", WAIT, || async {
        (alert_states(&app, &id).await == ["firing"]).then_some(())
    })
    .await;
    let alerts = get_json(&http, &format!("{base}/alerts")).await;
    let active = alerts["active"].as_array().unwrap();
    assert!(
        active
            .iter()
            .any(|a| a["rule"] == "ServiceUnavailable" && a["labels"]["instance"] == id.as_str()),
        "{alerts}"
    );

    code.store(200, Ordering::SeqCst);
    eventually("passing again", WAIT, status_is("passing")).await;
    eventually("a resolved SYSTEM_ALERT", WAIT, || async {
        (alert_states(&app, &id).await == ["firing", "resolved"]).then_some(())
    })
    .await;
    let alerts = get_json(&http, &format!("{base}/alerts")).await;
    let history: Vec<&str> = alerts["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["labels"]["instance"] == id.as_str())
        .map(|n| n["state"].as_str().unwrap())
        .collect();
    assert_eq!(history, ["firing", "resolved"]);

    let metrics = get_json(&http, &format!("{base}/registry/services/{id}/metrics")).await;
    assert!(metrics["checksTotal"].as_u64().unwrap() >= 6, "{metrics}");
    assert!(metrics["failuresTotal"].as_u64().unwrap() >= 3, "{metrics}");
    assert!(
        metrics["meanResponseMs"].as_f64().unwrap() > 0.0,
        "{metrics}"
    );

    let system = eventually("a system sample", WAIT, || {
        let http = http.clone();
        let url = format!("{base}/system/metrics");
        async move {
            let body = get_json(&http, &url).await;
            (!body["latest"].is_null()).then_some(body)
        }
    })
    .await;
    assert!(system["latest"]["memoryTotalBytes"].as_u64().unwrap() > 0);
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("orchestra_system_memory_bytes"), "{text}");
    eventually("probe gauges on /metrics", WAIT, || {
        let http = http.clone();
        let url = format!("{base}/metrics");
        let series = format!("orchestra_health_check_status{{instance=\"{id}\"");
        async move {
            let text = http.get(&url).send().await.ok()?.text().await.ok()?;
            text.contains(&series).then_some(())
        }
    })
    .await;
    let bad = http
        .get(format!("{base}/alerts?limit=many"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), reqwest::StatusCode::BAD_REQUEST);
    let body: Value = bad.json().await.unwrap();
    assert_eq!(body["details"][0]["field"], "limit", "{body}");
    let dashboard = get_json(&http, &format!("{base}/system/dashboard")).await;
    assert_eq!(dashboard["services"]["total"], 1, "{dashboard}");
    app.shutdown().await;
}

//! What NestJS sends: TypeScript enums are often upper-case, so every enum field on the
//! wire takes any letter case, in bodies and in query strings, and the answers use the
//! documented lower case.

use omc_orchestra_server::app::{App, Config, ServerKind};
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn send(request: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let res = request.send().await.unwrap();
    (res.status(), res.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn upper_case_enums_are_taken_and_answered_in_lower_case() {
    let app = App::start(Config::ephemeral(), &ServerKind::ALL)
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let jobs = app.url(ServerKind::Jobs);
    let job = json!({"type": "price-calculation", "data": {}, "priority": "HIGH"});
    let (status, body) = send(http.post(format!("{jobs}/jobs")).json(&job)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["priority"], "high");
    let (status, page) = send(http.get(format!("{jobs}/jobs?state=WAITING"))).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["jobs"][0]["state"], "waiting", "{page}");

    let registry = app.url(ServerKind::Registry);
    let event = json!({"type": "PRICE_UPDATED", "source": "pricing-service",
        "priority": "CRITICAL", "data": {"stationId": "STN001"}});
    let (status, body) = send(http.post(format!("{registry}/events")).json(&event)).await;
    assert!(status.is_success(), "{status} {body}");
    let (_, history) = send(http.get(format!("{registry}/events?type=PRICE_UPDATED"))).await;
    let published = &history[0];
    assert_eq!(published["priority"], "critical", "{history}");

    let logging = app.url(ServerKind::Logging);
    let record = json!([{"level": "WARN", "category": "SECURITY",
        "service": "pricing-service", "message": "token refused"}]);
    let (status, body) = send(http.post(format!("{logging}/logs")).json(&record)).await;
    assert!(status.is_success(), "{status} {body}");
    let (status, found) =
        send(http.get(format!("{logging}/logs?level=WARN&category=SECURITY"))).await;
    assert_eq!(status, StatusCode::OK, "{found}");
    assert_eq!(found["records"][0]["level"], "warn", "{found}");
    assert_eq!(found["records"][0]["category"], "security", "{found}");
    app.shutdown().await;
}

//! The logging router without a socket: validation that names the field, ingest, search
//! and stats over the wire format.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use omc_orchestra::logs::{IngestOptions, LogIngest};
use omc_orchestra::Backends;
use omc_orchestra_server::http::{with_stack, Guard, HttpMetrics, Origins, StackConfig};
use omc_orchestra_server::logs_api::{self, LogsState, BODY_LIMIT};
use omc_orchestra_server::status::ServerStatus;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Instant;
use tower::ServiceExt;

fn app() -> Router {
    let backends = Backends::memory();
    let ingest = LogIngest::new(backends.logs.clone(), Vec::new(), IngestOptions::default());
    let router = logs_api::router(LogsState {
        ingest: Arc::new(ingest),
        clock: backends.clock.clone(),
        status: ServerStatus {
            server: "logging",
            backend: "memory",
            durability: backends.durability.clone(),
            started: Instant::now(),
        },
        shutdown: tokio::sync::watch::channel(false).1,
    });
    with_stack(
        router,
        StackConfig {
            server: "logging",
            body_limit: BODY_LIMIT,
            guard: Guard::new(None),
            origins: Origins::default(),
            backends: Backends::memory(),
            request_timeout: std::time::Duration::from_secs(5),
            metrics: HttpMetrics::new("logging"),
            own_fallback: false,
        },
    )
}

async fn call(app: &Router, method: &str, uri: &str, body: Vec<u8>) -> (StatusCode, Value) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn post(app: &Router, body: Value) -> (StatusCode, Value) {
    call(app, "POST", "/logs", body.to_string().into_bytes()).await
}

fn field(body: &Value) -> &str {
    body["details"][0]["field"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn bad_input_names_the_field() {
    let app = app();
    let (status, body) = post(
        &app,
        json!({"level": "fatal", "service": "s", "message": "m"}),
    )
    .await;
    assert_eq!(
        (status, field(&body)),
        (StatusCode::BAD_REQUEST, "level"),
        "{body}"
    );

    let batch = json!([
        {"level": "info", "service": "s", "message": "fine"},
        {"level": "loud", "service": "s", "message": "m"}
    ]);
    let (status, body) = post(&app, batch).await;
    assert_eq!(
        (status, field(&body)),
        (StatusCode::BAD_REQUEST, "level"),
        "{body}"
    );
    assert!(
        body["message"].as_str().unwrap().contains("record 1"),
        "{body}"
    );

    let huge = "x".repeat(5 * 1024 * 1024);
    let (status, body) = post(
        &app,
        json!({"level": "info", "service": "s", "message": huge}),
    )
    .await;
    assert_eq!(
        (status, field(&body)),
        (StatusCode::BAD_REQUEST, "message"),
        "{body}"
    );

    let (status, body) = call(&app, "POST", "/logs", b"level=info".to_vec()).await;
    assert_eq!(
        (status, field(&body)),
        (StatusCode::BAD_REQUEST, "body"),
        "{body}"
    );

    let (status, body) = post(&app, json!({"level": "info", "message": "m"})).await;
    assert_eq!(
        (status, field(&body)),
        (StatusCode::BAD_REQUEST, "service"),
        "{body}"
    );

    let too_big = vec![b' '; BODY_LIMIT + 1];
    let (status, _) = call(&app, "POST", "/logs", too_big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

    let (status, body) = call(&app, "GET", "/logs?since=yesterday", Vec::new()).await;
    assert_eq!(
        (status, field(&body)),
        (StatusCode::BAD_REQUEST, "since"),
        "{body}"
    );
    let (status, body) = call(&app, "GET", "/logs?colour=red", Vec::new()).await;
    assert_eq!(
        (status, field(&body)),
        (StatusCode::BAD_REQUEST, "colour"),
        "{body}"
    );

    // A window past a year is refused by name, however many digits (it used to overflow
    // the time arithmetic into a 500).
    for window in [
        "9000000000000000s",
        "366d",
        "99999999999999999999d",
        "0s",
        "1w",
    ] {
        let uri = format!("/logs/stats?window={window}");
        let (status, body) = call(&app, "GET", &uri, Vec::new()).await;
        assert_eq!(
            (status, field(&body), body["error"].as_str()),
            (StatusCode::BAD_REQUEST, "window", Some("validation_failed")),
            "{window}: {body}"
        );
    }
    let (status, body) = call(
        &app,
        "GET",
        "/logs/stats?window=9000000000000000s",
        Vec::new(),
    )
    .await;
    assert_eq!(
        body["details"][0]["reason"], "must be at most 365d",
        "{status}: {body}"
    );
    let (status, body) = call(&app, "GET", "/logs/stats?window=365d", Vec::new()).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Nothing of the bad requests was stored.
    let (_, page) = call(&app, "GET", "/logs", Vec::new()).await;
    assert_eq!(page["records"], json!([]));
}

#[tokio::test]
async fn ingest_search_and_stats_over_the_wire() {
    let app = app();
    let (status, body) = post(
        &app,
        json!({"level": "info", "service": "pricing-service",
               "message": "Price calculation completed",
               "metadata": {"stationId": "STN001", "calculationTime": 150, "newPrice": 7.45}}),
    )
    .await;
    assert_eq!(
        (status, &body),
        (StatusCode::ACCEPTED, &json!({"accepted": 1}))
    );
    let batch = json!([
        {"level": "error", "service": "pricing-service", "message": "Price feed failed for STN001",
         "category": "business", "requestId": "req-9", "fields": {"duration": 40}},
        {"level": "warn", "service": "auth-service", "message": "Login failed",
         "category": "security", "timestamp": "2026-03-01T12:00:00Z"}
    ]);
    let (status, body) = post(&app, batch).await;
    assert_eq!(
        (status, &body),
        (StatusCode::ACCEPTED, &json!({"accepted": 2}))
    );

    let (status, page) = call(
        &app,
        "GET",
        "/logs?service=pricing-service&level=error",
        Vec::new(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let records = page["records"].as_array().unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["requestId"], "req-9");
    assert_eq!(records[0]["category"], "business");

    let (_, page) = call(&app, "GET", "/logs?field.stationId=STN001", Vec::new()).await;
    assert_eq!(page["records"][0]["message"], "Price calculation completed");

    // Winston spreads metadata at the top level: it lands in `fields`.
    let winston = json!({"level": "http", "service": "api-gateway", "message": "GET /api 200",
                         "responseTime": 12, "statusCode": 200});
    assert_eq!(post(&app, winston).await.0, StatusCode::ACCEPTED);
    let (_, page) = call(&app, "GET", "/logs?field.statusCode=200", Vec::new()).await;
    assert_eq!(page["records"][0]["fields"]["responseTime"], 12);
    let (_, page) = call(&app, "GET", "/logs?until=2026-03-02T00:00:00Z", Vec::new()).await;
    assert_eq!(page["records"][0]["service"], "auth-service");
    let (_, page) = call(&app, "GET", "/logs?limit=1", Vec::new()).await;
    let cursor = page["nextCursor"].as_str().unwrap().to_owned();
    let (_, next) = call(
        &app,
        "GET",
        &format!("/logs?limit=5&cursor={cursor}"),
        Vec::new(),
    )
    .await;
    assert_eq!(next["records"].as_array().unwrap().len(), 3);

    let (status, stats) = call(&app, "GET", "/logs/stats?window=1h", Vec::new()).await;
    assert_eq!(status, StatusCode::OK, "{stats}");
    assert_eq!(
        stats["total"], 3,
        "the 2026-03-01 record is outside the hour: {stats}"
    );
    assert_eq!(stats["byLevel"]["error"], 1);
    assert_eq!(stats["durations"]["responseTime"]["max"], 12.0);
    assert_eq!(
        stats["topErrors"][0]["message"],
        "Price feed failed for <id>"
    );
    assert_eq!(stats["durations"]["calculationTime"]["p50"], 150.0);

    let (status, doc) = call(&app, "GET", "/openapi.json", Vec::new()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["paths"]["/logs/stream"].is_object());
    let (status, _) = call(&app, "GET", "/health", Vec::new()).await;
    assert_eq!(status, StatusCode::OK);
}

//! The logging server end to end: a batch posted over HTTP is found by search, and the
//! live tail delivers a record written after it connected.

use omc_orchestra_server::app::{App, Config, ServerKind};
use serde_json::{json, Value};
use std::time::Duration;

#[tokio::test]
async fn posted_batches_are_searchable_and_tailed_live() {
    let app = App::start(Config::ephemeral(), &[ServerKind::Logging])
        .await
        .unwrap();
    let base = app.url(ServerKind::Logging);
    let http = reqwest::Client::new();

    let batch = json!([
        {"level": "error", "service": "pricing-service", "message": "Price feed failed for STN001",
         "fields": {"stationId": "STN001"}},
        {"level": "info", "service": "pricing-service", "message": "Price calculation completed",
         "fields": {"calculationTime": 150}},
        {"level": "error", "service": "inventory-service", "message": "Sync failed"},
        {"level": "error", "service": "pricing-service", "message": "Price feed failed for STN002"}
    ]);
    let posted = http
        .post(format!("{base}/logs"))
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 202);

    let found: Value = http
        .get(format!("{base}/logs?service=pricing-service&level=error"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let messages: Vec<&str> = found["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["message"].as_str().unwrap())
        .collect();
    assert_eq!(
        messages,
        [
            "Price feed failed for STN002",
            "Price feed failed for STN001"
        ]
    );

    // The tail filters like search; a record written after it connected arrives.
    let mut stream = http
        .get(format!(
            "{base}/logs/stream?service=pricing-service&level=warn"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert!(stream.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let later = json!([
        {"level": "error", "service": "inventory-service", "message": "not for this tail"},
        {"level": "info", "service": "pricing-service", "message": "not for this tail either"},
        {"level": "warn", "service": "pricing-service", "message": "Price drift above 2%"}
    ]);
    let posted = http
        .post(format!("{base}/logs"))
        .json(&later)
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 202);

    let mut text = String::new();
    let event = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(data) = text
                .split("\n\n")
                .find(|e| e.contains("event: log"))
                .and_then(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
            {
                return serde_json::from_str::<Value>(data).unwrap();
            }
            let chunk = stream.chunk().await.unwrap().expect("the stream ended");
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .expect("no record on the live tail within 10 s");
    assert_eq!(event["message"], "Price drift above 2%");
    assert_eq!(event["level"], "warn");
    assert!(!text.contains("not for this tail"));
    app.shutdown().await;
}

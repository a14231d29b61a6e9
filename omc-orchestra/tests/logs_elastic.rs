//! The Elasticsearch forwarder against a real HTTP peer on loopback that answers `_bulk`
//! the way Elasticsearch does, and against nothing at all.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Json, Router};
use chrono::{TimeZone, Utc};
use omc_orchestra::logs::elastic::{ElasticForwarder, ElasticOptions};
use omc_orchestra::logs::{LogExport, LogLevel, LogRecord};
use omc_orchestra::testkit::eventually;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the peer saw, and what it should refuse.
#[derive(Default)]
struct Peer {
    /// Documents stored, with the index they were stored in.
    stored: Vec<(String, Value)>,
    /// `_bulk` requests answered.
    calls: usize,
    /// Message → statuses to answer for it, one per call, before it is stored.
    refuse: Vec<(String, Vec<u16>)>,
}

type Shared = Arc<Mutex<Peer>>;

async fn bulk(State(peer): State<Shared>, headers: HeaderMap, body: String) -> Json<Value> {
    assert_eq!(headers["content-type"], "application/x-ndjson");
    let mut peer = peer.lock().unwrap();
    peer.calls += 1;
    let lines: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut items = Vec::new();
    let mut errors = false;
    for pair in lines.chunks(2) {
        let index = pair[0]["index"]["_index"].as_str().unwrap().to_owned();
        let doc = pair[1].clone();
        let message = doc["message"].as_str().unwrap().to_owned();
        let refusal = peer
            .refuse
            .iter_mut()
            .find(|(m, statuses)| *m == message && !statuses.is_empty())
            .map(|(_, statuses)| statuses.remove(0));
        match refusal {
            Some(status) => {
                errors = true;
                items.push(json!({"index": {"_index": index, "status": status,
                    "error": {"type": "es_rejected_execution_exception", "reason": "busy"}}}));
            }
            None => {
                items.push(json!({"index": {"_index": index, "status": 201, "result": "created"}}));
                peer.stored.push((index, doc));
            }
        }
    }
    Json(json!({"took": 1, "errors": errors, "items": items}))
}

async fn peer(refuse: Vec<(String, Vec<u16>)>) -> (String, Shared) {
    let shared: Shared = Arc::new(Mutex::new(Peer {
        refuse,
        ..Peer::default()
    }));
    let app = Router::new()
        .route("/_bulk", post(bulk))
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, shared)
}

fn records(n: usize) -> Vec<LogRecord> {
    let at = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap();
    (0..n)
        .map(|i| LogRecord::new(at, LogLevel::Info, "pricing-service", format!("record {i}")))
        .collect()
}

fn options(url: &str) -> ElasticOptions {
    let mut options = ElasticOptions::new(url);
    options.linger = Duration::from_millis(20);
    options.backoff = Duration::from_millis(10);
    options
}

#[tokio::test]
async fn items_failed_in_a_200_are_sent_again_and_stored_once() {
    let (url, peer) = peer(vec![
        ("record 1".into(), vec![429, 503]),
        ("record 3".into(), vec![400]),
    ])
    .await;
    let forwarder = ElasticForwarder::spawn(options(&url)).unwrap();
    forwarder.export(&records(5)).await.unwrap();
    eventually("every record settled", Duration::from_secs(10), || {
        let c = forwarder.counters();
        async move { (c.forwarded + c.failed == 5).then_some(()) }
    })
    .await;
    let counters = forwarder.counters();
    assert_eq!(
        (counters.forwarded, counters.failed, counters.dropped),
        (4, 1, 0)
    );
    let peer = peer.lock().unwrap();
    assert_eq!(peer.calls, 3, "one batch, then record 1 alone twice");
    let mut messages: Vec<&str> = peer
        .stored
        .iter()
        .map(|(_, doc)| doc["message"].as_str().unwrap())
        .collect();
    messages.sort_unstable();
    assert_eq!(messages, ["record 0", "record 1", "record 2", "record 4"]);
    let (index, doc) = &peer.stored[0];
    assert_eq!(index, "logs-2026.03.01");
    assert_eq!(doc["@timestamp"], "2026-03-01T12:00:00Z");
    assert_eq!(doc["severityNumber"], 9);
}

#[tokio::test]
async fn a_missing_elasticsearch_never_blocks_and_every_loss_is_counted() {
    let port = omc_orchestra::testkit::redis::free_port();
    let mut options = options(&format!("http://127.0.0.1:{port}"));
    options.queue = 10;
    options.attempts = 2;
    let forwarder = ElasticForwarder::spawn(options).unwrap();
    // On this single-threaded runtime nothing drains the queue while export runs.
    forwarder.export(&records(25)).await.unwrap();
    assert_eq!(forwarder.counters().dropped, 15);
    eventually(
        "the queued records given up on",
        Duration::from_secs(10),
        || {
            let c = forwarder.counters();
            async move { (c.failed == 10).then_some(()) }
        },
    )
    .await;
    assert_eq!(forwarder.counters().forwarded, 0);
}

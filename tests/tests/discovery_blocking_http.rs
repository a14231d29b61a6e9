//! Blocking discovery over HTTP (Consul's blocking queries), on the memory backend and on
//! Redis: a change reaches a client waiting with the service's index at once, a client
//! waiting on an unchanged service gets the same answer after `wait`, and every answer
//! carries the index in `X-Orchestra-Index`.

use omc_orchestra_server::app::{App, Config, ServerKind};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// `GET` discovery of `pricing-service` with `query`: status, index header, body.
async fn discover(base: &str, query: &str) -> (u16, u64, Value) {
    let res = reqwest::get(format!("{base}/registry/discovery/pricing-service{query}"))
        .await
        .unwrap();
    let status = res.status().as_u16();
    let index = res
        .headers()
        .get("x-orchestra-index")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(u64::MAX);
    (status, index, res.json().await.unwrap())
}

async fn register(base: &str, port: u16) {
    let answer = reqwest::Client::new()
        .post(format!("{base}/registry/register"))
        .json(&json!({ "name": "pricing-service", "host": "127.0.0.1", "port": port }))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 201);
}

async fn blocking_queries_follow_changes(config: Config) {
    let app = App::start(config, &[ServerKind::Registry]).await.unwrap();
    let base = app.url(ServerKind::Registry);
    let (status, index, body) = discover(&base, "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(index, 0, "a service never seen");
    register(&base, 3006).await;
    let (_, first, body) = discover(&base, "").await;
    assert!(first > 0, "{body}");
    assert_eq!(body["index"], first);

    // A client waiting at the current index gets the next change at once.
    let waiting = {
        let base = base.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let answer = discover(&base, &format!("?index={first}&wait=60s")).await;
            (answer, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "answered before anything changed");
    register(&base, 3016).await;
    let ((status, index, body), took) = waiting.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(index > first, "{index} after {first}");
    assert_eq!(body["instances"].as_array().unwrap().len(), 2, "{body}");
    assert!(
        took < Duration::from_secs(30),
        "woken by the change, not the wait: {took:?}"
    );

    // Unchanged: the same answer once `wait` has passed.
    let started = Instant::now();
    let (status, same, body) = discover(&base, &format!("?index={index}&wait=1s")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(same, index);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );

    // An index the service has moved past answers at once.
    let (_, now, _) = discover(&base, "?index=0&wait=60s").await;
    assert_eq!(now, index);

    let (status, _, body) = discover(&base, &format!("?index={index}&wait=soon")).await;
    assert_eq!(status, 400);
    assert_eq!(body["details"][0]["field"], "wait", "{body}");
    app.shutdown().await;
}

#[tokio::test]
async fn blocking_discovery_in_memory() {
    blocking_queries_follow_changes(Config::ephemeral()).await;
}

#[tokio::test]
async fn blocking_discovery_on_redis() {
    let store = omc_orchestra::testkit::redis::store().await;
    let config = Config {
        redis_url: Some(omc_orchestra::testkit::redis::url().await),
        redis_prefix: store.prefix().to_owned(),
        ..Config::ephemeral()
    };
    blocking_queries_follow_changes(config).await;
    store.delete_prefix().await.unwrap();
}

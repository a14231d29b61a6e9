//! End to end: the registry server's event API and WebSocket hub, over real sockets.

use futures::{SinkExt, StreamExt};
use omc_orchestra_server::app::{App, Config, ServerKind};
use serde_json::{json, Value};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{connect_async, MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(app: &App) -> Socket {
    let url = app.url(ServerKind::Registry).replacen("http", "ws", 1) + "/ws";
    connect_async(url).await.unwrap().0
}

async fn send(socket: &mut Socket, event: &str, data: Value) {
    let text = json!({ "event": event, "data": data }).to_string();
    socket.send(Message::Text(text.into())).await.unwrap();
}

/// The `data` of the next JSON message whose `event` is `name` (skipping others), within
/// 10 s; with an empty `name`, the next whole message.
async fn expect(socket: &mut Socket, name: &str, mut also: impl FnMut(&Value) -> bool) -> Value {
    let wait = async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Text(text))) => {
                    let message: Value = serde_json::from_str(&text).unwrap();
                    if name.is_empty() {
                        return message;
                    }
                    if message["event"] == name && also(&message["data"]) {
                        return message["data"].clone();
                    }
                }
                Some(Ok(_)) => continue,
                other => panic!("socket ended while waiting for {name}: {other:?}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .unwrap_or_else(|_| panic!("no `{name}` message within 10 s"))
}

#[tokio::test]
async fn a_registration_reaches_a_subscribed_socket_and_the_dashboard_counts_it() {
    let app = App::start(Config::ephemeral(), &ServerKind::ALL)
        .await
        .unwrap();
    let mut socket = connect(&app).await;
    send(
        &mut socket,
        "subscribe",
        json!({ "channels": ["services", "events"] }),
    )
    .await;
    let subscribed = expect(&mut socket, "subscribed", |_| true).await;
    assert_eq!(subscribed["channels"], json!(["services", "events"]));

    let http = reqwest::Client::new();
    let registered: Value = http
        .post(format!(
            "{}/registry/register",
            app.url(ServerKind::Registry)
        ))
        .json(&json!({
            "name": "pricing-service", "version": "1.0.0", "host": "localhost", "port": 3006,
            "type": "api", "healthEndpoint": "/health", "tags": ["pricing"],
            "dependencies": ["postgres", "redis"]
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = registered["id"].as_str().unwrap().to_owned();

    let is_registration = |data: &Value| {
        data["type"] == "SERVICE_REGISTERED" && data["data"]["serviceId"] == id.as_str()
    };
    let update = expect(&mut socket, "service_update", is_registration).await;
    assert_eq!(update["source"], "service-registry");
    assert_eq!(update["data"]["serviceName"], "pricing-service");
    expect(&mut socket, "event", is_registration).await;

    send(&mut socket, "get_system_dashboard", Value::Null).await;
    let dashboard = expect(&mut socket, "system_dashboard", |_| true).await;
    assert_eq!(dashboard["services"]["total"], 1);
    assert_eq!(dashboard["services"]["healthy"], 1);
    assert_eq!(dashboard["services"]["unhealthy"], 0);
    assert!(
        dashboard["requests"]["total"].as_u64().unwrap() >= 1,
        "{dashboard}"
    );
    assert_eq!(dashboard["requests"]["serverErrors"], 0);

    // Nonsense gets an error message, and the socket stays open.
    send(&mut socket, "launch_rockets", json!({})).await;
    let error = expect(&mut socket, "error", |_| true).await;
    assert!(error["message"]
        .as_str()
        .unwrap()
        .contains("launch_rockets"));
    socket.send(Message::Text("not json".into())).await.unwrap();
    expect(&mut socket, "error", |_| true).await;
    send(&mut socket, "subscribe", json!({ "channels": ["weather"] })).await;
    expect(&mut socket, "error", |e| {
        e["message"].as_str().unwrap().contains("weather")
    })
    .await;
    send(&mut socket, "ping", Value::Null).await;
    expect(&mut socket, "pong", |_| true).await;

    // Deregistration arrives the same way.
    http.delete(format!(
        "{}/registry/services/{id}",
        app.url(ServerKind::Registry)
    ))
    .send()
    .await
    .unwrap();
    expect(&mut socket, "service_update", |d| {
        d["type"] == "SERVICE_DEREGISTERED"
    })
    .await;
    app.shutdown().await;
}

#[tokio::test]
async fn the_event_api_publishes_filters_replays_and_counts() {
    let app = App::start(Config::ephemeral(), &[ServerKind::Registry])
        .await
        .unwrap();
    let base = app.url(ServerKind::Registry);
    let http = reqwest::Client::new();
    let mut socket = connect(&app).await;
    send(
        &mut socket,
        "subscribe",
        json!({ "channels": ["events", "alerts"], "types": ["PRICE_UPDATED"] }),
    )
    .await;
    expect(&mut socket, "subscribed", |_| true).await;

    let batch = json!([
        { "type": "USER_ACTION", "source": "auth-service", "data": { "user": "ama" } },
        { "type": "PRICE_UPDATED", "source": "pricing-service", "tags": ["STN001"],
          "data": { "stationId": "STN001", "price": 14.35 }, "priority": "high" },
        { "type": "SYSTEM_ALERT", "source": "health-monitor", "priority": "critical",
          "data": { "rule": "cpu" } }
    ]);
    let answer = http
        .post(format!("{base}/events"))
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 201);
    let published: Vec<Value> = answer.json().await.unwrap();
    assert_eq!(published.len(), 3);

    // The type filter keeps the others off the events channel; alerts come on their own
    // channel (channels are not ordered with each other).
    let (mut event, mut alert) = (None, None);
    while event.is_none() || alert.is_none() {
        let message = expect(&mut socket, "", |_| true).await;
        match message["event"].as_str() {
            Some("event") => {
                assert!(
                    event.is_none(),
                    "only one event passes the filter: {message}"
                );
                event = Some(message["data"].clone());
            }
            Some("alert") => alert = Some(message["data"].clone()),
            _ => panic!("unexpected message {message}"),
        }
    }
    assert_eq!(event.unwrap()["type"], "PRICE_UPDATED");
    assert_eq!(alert.unwrap()["data"]["rule"], "cpu");

    let bad = json!([{ "type": "OK", "source": "a" }, { "type": "", "source": "b" }]);
    let answer = http
        .post(format!("{base}/events"))
        .json(&bad)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 400);
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["details"][0]["field"], "[1].type");

    let prices: Vec<Value> = http
        .get(format!("{base}/events?type=PRICE_UPDATED&tag=STN001"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(prices.len(), 1);
    assert_eq!(prices[0]["data"]["price"], 14.35);

    let page: Value = http
        .post(format!("{base}/events/replay"))
        .json(&json!({ "fromId": published[0]["id"], "limit": 10 }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&Value> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["id"])
        .collect();
    assert_eq!(ids, vec![&published[1]["id"], &published[2]["id"]]);
    assert_eq!(page["nextFromId"], published[2]["id"]);
    let into_group: Value = http
        .post(format!("{base}/events/replay"))
        .json(&json!({ "fromId": published[1]["id"], "group": "reports" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let copy = &into_group["events"][0];
    assert_eq!(copy["target"], "reports");
    assert_eq!(copy["type"], "SYSTEM_ALERT");
    assert!(copy["tags"].as_array().unwrap().contains(&json!("replay")));
    let answer = http
        .post(format!("{base}/events/replay"))
        .json(&json!({ "fromId": "yesterday" }))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 400);

    for (request, field) in [
        (http.get(format!("{base}/events?limit=0")), "limit"),
        (http.get(format!("{base}/events?since=yesterday")), "since"),
        (
            http.post(format!("{base}/events"))
                .json(&json!({ "source": "a" })),
            "type",
        ),
        (
            http.post(format!("{base}/events/replay"))
                .json(&json!({ "fromId": published[0]["id"], "since": "2026-01-01T00:00:00Z" })),
            "fromId",
        ),
    ] {
        let answer = request.send().await.unwrap();
        assert_eq!(answer.status(), 400);
        let body: Value = answer.json().await.unwrap();
        assert_eq!(body["details"][0]["field"], field, "{body}");
    }
    let doc: Value = http
        .get(format!("{base}/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for path in [
        "/events",
        "/events/replay",
        "/events/stats",
        "/registry/register",
    ] {
        assert!(
            doc["paths"].get(path).is_some(),
            "{path} missing from the OpenAPI doc"
        );
    }

    let stats: Value = http
        .get(format!("{base}/events/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["byType"]["PRICE_UPDATED"]["published"], 1);
    assert_eq!(
        stats["total"]["published"], 4,
        "three plus the replayed copy"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn with_redis_backends_a_registration_reaches_the_socket_through_the_redis_bus() {
    let url = omc_orchestra::testkit::redis::url().await;
    let prefix = format!("test-{}", std::process::id());
    let config = Config {
        redis_url: Some(url.clone()),
        redis_prefix: prefix.clone(),
        ..Config::ephemeral()
    };
    let app = App::start(config, &[ServerKind::Registry]).await.unwrap();
    assert_eq!(app.backends().kind, "redis");
    let mut socket = connect(&app).await;
    send(
        &mut socket,
        "subscribe",
        json!({ "channels": ["services"] }),
    )
    .await;
    expect(&mut socket, "subscribed", |_| true).await;
    let answer = reqwest::Client::new()
        .post(format!(
            "{}/registry/register",
            app.url(ServerKind::Registry)
        ))
        .json(&json!({ "name": "inventory-service", "host": "127.0.0.1", "port": 3007 }))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 201);
    let update = expect(&mut socket, "service_update", |d| {
        d["type"] == "SERVICE_REGISTERED"
    })
    .await;
    assert_eq!(update["data"]["serviceName"], "inventory-service");
    send(&mut socket, "get_system_dashboard", Value::Null).await;
    let dashboard = expect(&mut socket, "system_dashboard", |_| true).await;
    assert_eq!(dashboard["services"]["total"], 1);
    assert_eq!(dashboard["events"]["published"], 1);
    app.shutdown().await;
    omc_orchestra::RedisStore::connect(&url, &prefix)
        .await
        .unwrap()
        .delete_prefix()
        .await
        .unwrap();
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_off_and_the_others_carry_on() {
    let mut config = Config::ephemeral();
    config.ws.buffer = 16;
    config.ws.send_timeout = Duration::from_millis(300);
    let app = App::start(config, &[ServerKind::Registry]).await.unwrap();
    let mut slow = connect(&app).await;
    send(&mut slow, "subscribe", json!({ "channels": ["events"] })).await;
    expect(&mut slow, "subscribed", |_| true).await;
    let mut fast = connect(&app).await;
    send(&mut fast, "subscribe", json!({ "channels": ["events"] })).await;
    expect(&mut fast, "subscribed", |_| true).await;

    // The fast client reads everything until it sees the marker, noting what it got.
    let reader = tokio::spawn(async move {
        let (mut events, mut lagged) = (0usize, 0usize);
        loop {
            let message = expect(&mut fast, "", |_| true).await;
            match message["event"].as_str() {
                Some("event") if message["data"]["type"] == "MARKER" => {
                    return (fast, events, lagged)
                }
                Some("event") => events += 1,
                Some("lagged") => lagged += 1,
                _ => {}
            }
        }
    });
    // 400 events of 64 KiB: far more than the socket buffers of a client that never reads.
    let bus = app.backends().events.clone();
    let blob = "x".repeat(64 * 1024);
    for n in 0..400 {
        let event = omc_orchestra::events::NewEvent::new(
            "PERFORMANCE_METRIC",
            "bench",
            json!({ "n": n, "blob": blob }),
        );
        bus.publish(event).await.unwrap();
        tokio::task::yield_now().await;
    }
    let marker = omc_orchestra::events::NewEvent::new("MARKER", "test", Value::Null);
    bus.publish(marker).await.unwrap();
    let (fast, events, lagged) = tokio::time::timeout(Duration::from_secs(20), reader)
        .await
        .expect("the fast client got the marker while the slow one stalled")
        .unwrap();
    assert!(
        events > 0,
        "the fast client received events ({lagged} lag notices)"
    );

    // The stalled client is disconnected: the dashboard counts the fast one and the probe.
    let mut probe = connect(&app).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        send(&mut probe, "get_system_dashboard", Value::Null).await;
        let dashboard = expect(&mut probe, "system_dashboard", |_| true).await;
        if dashboard["connections"] == 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stalled client is still connected: {dashboard}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop((slow, fast));
    app.shutdown().await;
}

/// All four servers, and a socket subscribed to `channel`.
async fn subscribed_to(channel: &str) -> (App, Socket) {
    let app = App::start(Config::ephemeral(), &ServerKind::ALL)
        .await
        .unwrap();
    let mut socket = connect(&app).await;
    send(&mut socket, "subscribe", json!({ "channels": [channel] })).await;
    expect(&mut socket, "subscribed", |_| true).await;
    (app, socket)
}

#[tokio::test]
async fn a_log_record_posted_to_the_logging_server_streams_to_the_logs_channel() {
    let (app, mut socket) = subscribed_to("logs").await;
    let record = json!({"timestamp": "2026-11-24T10:00:00Z", "level": "error",
        "service": "pricing-service", "message": "price feed failed for STN001"});
    let res = reqwest::Client::new()
        .post(format!("{}/logs", app.url(ServerKind::Logging)))
        .json(&json!([record]))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    let data = expect(&mut socket, "log", |d| d["service"] == "pricing-service").await;
    assert_eq!(data["message"], "price feed failed for STN001");
    assert_eq!(data["level"], "error");
    app.shutdown().await;
}

#[tokio::test]
async fn an_enqueued_job_is_announced_on_the_jobs_channel() {
    let (app, mut socket) = subscribed_to("jobs").await;
    let job: Value = reqwest::Client::new()
        .post(format!("{}/jobs", app.url(ServerKind::Jobs)))
        .json(&json!({"type": "price-calculation", "data": {"stationId": "STN001"}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let event = expect(&mut socket, "job", |d| d["type"] == "JOB_QUEUED").await;
    assert_eq!(event["data"]["id"], job["id"]);
    assert_eq!(event["data"]["type"], "price-calculation");
    app.shutdown().await;
}

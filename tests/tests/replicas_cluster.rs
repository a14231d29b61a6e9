//! Three replicas of every server (what `orchestra up` starts), on one Redis Cluster of
//! three masters, act as one system: a registration through one is discovered through
//! all; each gateway routes to an instance registered through another; a cron schedule
//! fires each tick once; a rate limit holds across the gateways; each replica's
//! WebSocket clients see every replica's events; and the health checkers share probing.

mod gateway_support;

use futures::{SinkExt, StreamExt};
use gateway_support::*;
use omc_orchestra::testkit::eventually;
use omc_orchestra::testkit::topology::RedisCluster;
use omc_orchestra::RedisStore;
use omc_orchestra_server::app::{App, Config, ServerKind};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

const REPLICAS: usize = 3;

async fn post(url: String, body: Value) -> (u16, Value) {
    let res = reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .unwrap();
    (
        res.status().as_u16(),
        res.json().await.unwrap_or(Value::Null),
    )
}

async fn get_json(url: String) -> Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_on_a_cluster_act_as_one() {
    let cluster = RedisCluster::start();
    let prefix = format!("replicas-{}", uuid::Uuid::new_v4().simple());
    let mut gateway = limited(1_000);
    gateway.discovery.limits.second = None;
    gateway.discovery.limits.hour = Some(12);
    let mut config = Config {
        redis_url: Some(cluster.url()),
        redis_prefix: prefix.clone(),
        ..with_gateway(gateway)
    };
    config.health_interval = Duration::from_secs(1);
    let mut apps: Vec<App> = Vec::new();
    for _ in 0..REPLICAS {
        apps.push(App::start(config.clone(), &ServerKind::ALL).await.unwrap());
    }
    let url = |i: usize, kind: ServerKind| apps[i].url(kind);

    // WebSocket clients of each replica, subscribed before anything happens.
    let mut sockets = Vec::new();
    for i in 0..REPLICAS {
        let ws = url(i, ServerKind::Registry).replacen("http", "ws", 1) + "/ws";
        let (mut socket, _) = tokio_tungstenite::connect_async(ws).await.unwrap();
        let subscribe = json!({ "event": "subscribe", "data": { "channels": ["events"] } });
        socket
            .send(Message::Text(subscribe.to_string().into()))
            .await
            .unwrap();
        sockets.push(socket);
    }

    // A registration through replica 0 is discovered through every replica.
    let up = upstream("stock").await;
    let registration =
        json!({ "name": "stock-service", "host": "127.0.0.1", "port": up.addr.port() });
    let (status, body) = post(
        format!("{}/registry/register", url(0, ServerKind::Registry)),
        registration,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    for i in 0..REPLICAS {
        let found = get_json(format!(
            "{}/registry/discovery/stock-service",
            url(i, ServerKind::Registry)
        ))
        .await;
        assert_eq!(
            found["instances"].as_array().map(Vec::len),
            Some(1),
            "replica {i}: {found}"
        );
    }

    // Each gateway routes to it, and the hourly limit of 12 holds across all three.
    let http = reqwest::Client::new();
    for i in 0..REPLICAS {
        routed(
            &http,
            &format!("{}/api/stock-service/level", url(i, ServerKind::Gateway)),
            "stock",
        )
        .await;
    }
    let burst_urls = (0..30)
        .map(|n| {
            format!(
                "{}/api/stock-service/level",
                url(n % REPLICAS, ServerKind::Gateway)
            )
        })
        .collect();
    let answers = burst(&http, burst_urls).await;
    let ok = answers.iter().filter(|r| r.status() == 200).count();
    let limited = answers.iter().filter(|r| r.status() == 429).count();
    assert_eq!(
        (ok, limited),
        (12 - REPLICAS, 30 - (12 - REPLICAS)),
        "the three routed calls above count too"
    );

    // An event published through each replica reaches the clients of every replica.
    for i in 0..REPLICAS {
        let event = json!({ "type": "PRICE_UPDATED", "source": format!("replica-{i}"), "data": { "i": i } });
        let (status, body) = post(format!("{}/events", url(i, ServerKind::Registry)), event).await;
        assert_eq!(status, 201, "{body}");
    }
    for (i, socket) in sockets.iter_mut().enumerate() {
        let mut sources = HashSet::new();
        let wait = async {
            while sources.len() < REPLICAS {
                let Some(Ok(Message::Text(text))) = socket.next().await else {
                    continue;
                };
                let message: Value = serde_json::from_str(&text).unwrap();
                if let Some(source) = message["data"]["source"].as_str() {
                    if source.starts_with("replica-") {
                        sources.insert(source.to_owned());
                    }
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(15), wait)
            .await
            .unwrap_or_else(|_| panic!("replica {i}'s client saw only {sources:?}"));
    }

    // A schedule firing every second, made through replica 1: each tick's job is
    // enqueued once, whichever replica's scheduler fired it.
    let schedule =
        json!({ "id": "stock-count", "cron": "* * * * * *", "job": { "type": "inventory-sync" } });
    let (status, body) = post(format!("{}/schedules", url(1, ServerKind::Jobs)), schedule).await;
    assert_eq!(status, 201, "{body}");
    let started = std::time::Instant::now();
    let jobs = url(2, ServerKind::Jobs);
    eventually("four cron ticks", Duration::from_secs(30), || async {
        let listed = get_json(format!("{jobs}/jobs?type=inventory-sync&limit=100")).await;
        (listed["jobs"].as_array().map_or(0, Vec::len) >= 4).then_some(())
    })
    .await;
    let deleted = reqwest::Client::new()
        .delete(format!(
            "{}/schedules/stock-count",
            url(0, ServerKind::Jobs)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    let seconds = started.elapsed().as_secs() as usize + 2;
    let listed = get_json(format!("{jobs}/jobs?type=inventory-sync&limit=100")).await;
    let ids: Vec<&str> = listed["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    let distinct: HashSet<&&str> = ids.iter().collect();
    assert_eq!(distinct.len(), ids.len(), "a tick fired twice: {ids:?}");
    assert!(
        ids.len() <= seconds,
        "{} jobs in {seconds} s: {ids:?}",
        ids.len()
    );

    // Three checkers probing every second share the work: about one probe a second,
    // not three.
    let before = up.hits.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(6)).await;
    let probes = up.hits.load(Ordering::SeqCst) - before;
    assert!(
        (1..=9).contains(&probes),
        "{probes} probes in 6 s by three checkers sharing one each second"
    );

    for app in apps {
        app.shutdown().await;
    }
    RedisStore::connect(&cluster.url(), &prefix)
        .await
        .unwrap()
        .delete_prefix()
        .await
        .unwrap();
}

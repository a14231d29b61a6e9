//! The registry server end to end: real servers on free ports, spoken to over HTTP.

use omc_orchestra::registry::RegistryOptions;
use omc_orchestra::{Backends, ManualClock};
use omc_orchestra_server::app::{App, Config, ServerKind};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

fn seed_body() -> Value {
    json!({"name":"pricing-service","version":"1.0.0","host":"localhost","port":3006,
           "type":"api","healthEndpoint":"/health","tags":["pricing","business-logic"],
           "dependencies":["postgres","redis"]})
}

async fn start_on(clock: &ManualClock, config: Config) -> App {
    let backends = Backends::memory_with(Arc::new(clock.clone()), RegistryOptions::default());
    App::start_with(config, &ServerKind::ALL, backends)
        .await
        .unwrap()
}

async fn send(req: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let res = req.send().await.unwrap();
    let status = res.status();
    let text = res.text().await.unwrap();
    let body =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"));
    (status, body)
}

#[tokio::test]
async fn seed_registration_lives_and_expires_over_http() {
    let clock = ManualClock::starting_now();
    let app = start_on(&clock, Config::ephemeral()).await;
    let base = app.url(ServerKind::Registry);
    let http = reqwest::Client::new();

    let (status, first) = send(
        http.post(format!("{base}/registry/register"))
            .json(&seed_body()),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let id = first["id"].as_str().unwrap().to_owned();
    assert_eq!(first["status"], "passing");
    assert_eq!(first["tags"], json!(["pricing", "business-logic"]));

    let mut short = seed_body();
    short["port"] = json!(3007);
    short["ttlSeconds"] = json!(5);
    let (_, second) = send(http.post(format!("{base}/registry/register")).json(&short)).await;
    let short_id = second["id"].as_str().unwrap().to_owned();

    let (status, found) =
        send(http.get(format!("{base}/registry/discovery/pricing-service"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(found["healthy"], 2);
    assert!(found["selected"]["id"].is_string());

    let (status, listed) = send(http.get(format!(
        "{base}/registry/services?tag=pricing&status=passing"
    )))
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed.as_array().unwrap().len(), 2);

    clock.advance(Duration::from_secs(6));
    let (status, beat) = send(http.put(format!("{base}/registry/heartbeat/{id}"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(beat["status"], "passing");

    // The short-lived instance is past its TTL: critical, out of discovery.
    let (_, found) = send(http.get(format!("{base}/registry/discovery/pricing-service"))).await;
    let ids: Vec<&str> = found["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![id.as_str()]);
    assert_eq!(found["selected"]["id"], json!(id));
    let (_, health) = send(http.get(format!("{base}/registry/services/{short_id}/health"))).await;
    assert_eq!(health["status"], "critical");
    assert_eq!(health["heartbeatExpired"], true);

    // After the grace period the server's own stale cleanup removes it.
    clock.advance(Duration::from_secs(25));
    http.put(format!("{base}/registry/heartbeat/{id}"))
        .send()
        .await
        .unwrap();
    clock.advance(Duration::from_secs(70));
    http.put(format!("{base}/registry/heartbeat/{id}"))
        .send()
        .await
        .unwrap();
    let url = format!("{base}/registry/services/{short_id}");
    omc_orchestra::testkit::eventually("stale cleanup", Duration::from_secs(20), || {
        let http = http.clone();
        let url = url.clone();
        async move {
            (http.get(&url).send().await.ok()?.status() == StatusCode::NOT_FOUND).then_some(())
        }
    })
    .await;

    let (status, metrics) = send(http.get(format!("{base}/registry/services/{id}/metrics"))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(metrics["uptimeSeconds"].as_i64().unwrap() >= 100);

    let (status, gone) = send(http.delete(format!("{base}/registry/services/{id}"))).await;
    assert_eq!(
        (status, gone["id"].as_str()),
        (StatusCode::OK, Some(id.as_str()))
    );
    let (status, err) = send(http.delete(format!("{base}/registry/services/{id}"))).await;
    assert_eq!(
        (status, err["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    app.shutdown().await;
}

#[tokio::test]
async fn bad_input_gets_a_json_error_naming_the_field() {
    let app = App::start(Config::ephemeral(), &[ServerKind::Registry])
        .await
        .unwrap();
    let base = app.url(ServerKind::Registry);
    let http = reqwest::Client::new();
    let register = format!("{base}/registry/register");

    let mut missing_name = seed_body();
    missing_name.as_object_mut().unwrap().remove("name");
    let mut big_port = seed_body();
    big_port["port"] = json!(70000);
    let mut bad_tags = seed_body();
    bad_tags["tags"] = json!("pricing");
    let mut bad_endpoint = seed_body();
    bad_endpoint["healthEndpoint"] = json!("health");
    for (body, field) in [
        (missing_name, "name"),
        (big_port, "port"),
        (bad_tags, "tags"),
        (bad_endpoint, "healthEndpoint"),
        (
            json!({"name": "pricing-service", "host": "localhost", "port": "3006"}),
            "port",
        ),
    ] {
        let (status, err) = send(http.post(&register).json(&body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
        assert_eq!(err["error"], "validation_failed");
        assert_eq!(err["details"][0]["field"], field, "{err}");
    }

    let (status, err) = send(
        http.post(&register)
            .header("content-type", "application/json")
            .body("{not json"),
    )
    .await;
    assert_eq!(
        (status, err["details"][0]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("body"))
    );

    let huge = vec![b' '; 10 * 1024 * 1024];
    let (status, err) = send(
        http.post(&register)
            .header("content-type", "application/json")
            .body(huge),
    )
    .await;
    assert_eq!(
        (status, err["error"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large"))
    );

    for path in [
        "/registry/services/nope",
        "/registry/services/nope/health",
        "/registry/services/nope/metrics",
    ] {
        let (status, err) = send(http.get(format!("{base}{path}"))).await;
        assert_eq!(
            (status, err["error"].as_str()),
            (StatusCode::NOT_FOUND, Some("not_found")),
            "{path}"
        );
    }
    let (status, _) = send(http.put(format!("{base}/registry/heartbeat/nope"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, err) = send(http.get(format!("{base}/registry/services?status=sleeping"))).await;
    assert_eq!(
        (status, err["details"][0]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("status"))
    );
    let (status, _) = send(http.get(format!("{base}/registry/discovery/Bad_Name"))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Odd input of every shape: always a 4xx JSON answer, and the server stays up.
    let odd = [
        "null", "0", "\"x\"", "{}", "{\"name\":null}", "{\"name\":\"a\",\"host\":\"h\",\"port\":-1}",
        "{\"name\":\"a\",\"host\":\"h\",\"port\":1e309}", "{\"name\":\"\u{1F6E2}\",\"host\":\"h\",\"port\":1}",
        "{\"name\":\"a\",\"host\":\"h\",\"port\":1,\"metadata\":{\"k\":1}}",
        "{\"name\":\"a\",\"host\":\"h\",\"port\":1,\"weight\":99999999999999999999}",
        "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
    ];
    for body in odd {
        let res = http
            .post(&register)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert!(res.status().is_client_error(), "{body} → {}", res.status());
        let err: Value = res.json().await.unwrap();
        assert!(err["error"].is_string(), "{body} → {err}");
    }
    let (status, _) = send(http.get(format!("{base}/health"))).await;
    assert_eq!(status, StatusCode::OK);
    app.shutdown().await;
}

#[tokio::test]
async fn weighted_spread_over_http() {
    let app = App::start(Config::ephemeral(), &[ServerKind::Registry])
        .await
        .unwrap();
    let base = app.url(ServerKind::Registry);
    let http = reqwest::Client::new();
    let mut ids = Vec::new();
    for (port, weight) in [(7001, 1), (7002, 2), (7003, 7)] {
        let body =
            json!({"name":"inventory-service","host":"127.0.0.1","port":port,"weight":weight});
        let (_, instance) = send(http.post(format!("{base}/registry/register")).json(&body)).await;
        ids.push(instance["id"].as_str().unwrap().to_owned());
    }
    let mut counts = [0i32; 3];
    for _ in 0..1000 {
        let (_, found) =
            send(http.get(format!("{base}/registry/discovery/inventory-service"))).await;
        let picked = found["selected"]["id"].as_str().unwrap();
        counts[ids.iter().position(|id| id == picked).unwrap()] += 1;
    }
    for (count, expected) in counts.iter().zip([100, 200, 700]) {
        assert!((count - expected).abs() <= 10, "{counts:?}");
    }
    app.shutdown().await;
}

#[tokio::test]
async fn every_port_has_health_metrics_openapi_and_request_ids() {
    let app = App::start(Config::ephemeral(), &ServerKind::ALL)
        .await
        .unwrap();
    let http = reqwest::Client::new();
    for kind in ServerKind::ALL {
        let base = app.url(kind);
        let res = http
            .get(format!("{base}/health"))
            .header("x-request-id", "req-42")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()["x-request-id"], "req-42");
        let health: Value = res.json().await.unwrap();
        assert_eq!(health["server"], kind.name());

        let res = http
            .get(format!("{base}/openapi.json"))
            .send()
            .await
            .unwrap();
        let generated = res
            .headers()
            .get("x-request-id")
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        assert!(!generated.is_empty());
        let doc: Value = res.json().await.unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        assert!(doc["paths"]["/health"].is_object());

        let metrics = http
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            metrics.contains("orchestra_http_requests_total{"),
            "{metrics}"
        );
        assert!(metrics.contains(&format!("server=\"{}\"", kind.name())));
    }
    let doc: Value = http
        .get(format!("{}/openapi.json", app.url(ServerKind::Registry)))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for path in [
        "/registry/register",
        "/registry/services",
        "/registry/discovery/{service_name}",
        "/registry/heartbeat/{service_id}",
    ] {
        assert!(
            doc["paths"][path].is_object(),
            "{path} missing from the OpenAPI document"
        );
    }
    assert!(doc["components"]["schemas"]["Registration"].is_object());
    app.shutdown().await;
}

#[tokio::test]
async fn jwt_guards_everything_but_health_and_metrics() {
    let secret = "s3cret-for-tests-of-32-bytes-or-more";
    let config = Config::ephemeral().with_service_secret(secret).unwrap();
    let app = App::start(config, &[ServerKind::Registry]).await.unwrap();
    let base = app.url(ServerKind::Registry);
    let http = reqwest::Client::new();
    let token = |exp: i64, key: &str| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &json!({"aud": "orchestra", "sub": "pricing-service", "scope": "read", "exp": exp}),
            &jsonwebtoken::EncodingKey::from_secret(key.as_bytes()),
        )
        .unwrap()
    };
    let now = chrono::Utc::now().timestamp();
    assert_eq!(
        http.get(format!("{base}/health"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        http.get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let services = format!("{base}/registry/services");
    let (status, err) = send(http.get(&services)).await;
    assert_eq!(
        (status, err["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthorized"))
    );
    for bad in [
        token(now - 600, secret),
        token(now + 600, "wrong-secret"),
        "garbage".into(),
    ] {
        let res = http.get(&services).bearer_auth(bad).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    let res = http
        .get(&services)
        .bearer_auth(token(now + 600, secret))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);

    // The dashboard page itself is public and tells the browser to ask for a token; the
    // WebSocket, which a browser cannot give headers, takes it as `?token=`.
    let page = http.get(format!("{base}/dashboard")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let config: Value = http
        .get(format!("{base}/dashboard/config.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(config["authRequired"], true);
    let ws = base.replacen("http", "ws", 1) + "/ws";
    assert!(
        tokio_tungstenite::connect_async(ws.clone()).await.is_err(),
        "no token, no socket"
    );
    let with_token = format!("{ws}?token={}", token(now + 600, secret));
    assert!(tokio_tungstenite::connect_async(with_token).await.is_ok());
    app.shutdown().await;
}

#[tokio::test]
async fn two_registry_servers_on_one_redis_see_the_same_services() {
    let url = omc_orchestra::testkit::redis::url().await;
    let prefix = format!("test-{}", uuid::Uuid::new_v4().simple());
    let config = || Config {
        redis_url: Some(url.clone()),
        redis_prefix: prefix.clone(),
        ..Config::ephemeral()
    };
    let a = App::start(config(), &[ServerKind::Registry]).await.unwrap();
    let b = App::start(config(), &[ServerKind::Registry]).await.unwrap();
    let http = reqwest::Client::new();
    let (status, instance) = send(
        http.post(format!("{}/registry/register", a.url(ServerKind::Registry)))
            .json(&seed_body()),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, found) = send(http.get(format!(
        "{}/registry/discovery/pricing-service",
        b.url(ServerKind::Registry)
    )))
    .await;
    assert_eq!(found["selected"]["id"], instance["id"]);
    let (status, _) = send(http.delete(format!(
        "{}/registry/services/{}",
        b.url(ServerKind::Registry),
        instance["id"].as_str().unwrap()
    )))
    .await;
    assert_eq!(status, StatusCode::OK);
    let (_, listed) =
        send(http.get(format!("{}/registry/services", a.url(ServerKind::Registry)))).await;
    assert_eq!(listed, json!([]));
    omc_orchestra::RedisStore::connect(&url, &prefix)
        .await
        .unwrap()
        .delete_prefix()
        .await
        .unwrap();
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn invented_methods_add_no_metric_series() {
    let app = App::start(Config::ephemeral(), &[ServerKind::Registry])
        .await
        .unwrap();
    let base = app.url(ServerKind::Registry);
    let http = reqwest::Client::new();
    for invented in ["FOOBAR", "BREW", "XYZZY"] {
        let method = reqwest::Method::from_bytes(invented.as_bytes()).unwrap();
        let res = http
            .request(method, format!("{base}/registry/services"))
            .send()
            .await
            .unwrap();
        assert!(res.status().is_client_error(), "{invented}");
    }
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for invented in ["FOOBAR", "BREW", "XYZZY"] {
        assert!(!metrics.contains(invented), "{invented} in\n{metrics}");
    }
    assert!(metrics.contains("method=\"_OTHER\""), "{metrics}");
    app.shutdown().await;
}

#[tokio::test]
async fn the_listing_comes_in_pages_with_a_cursor() {
    let clock = ManualClock::starting_now();
    let app = start_on(&clock, Config::ephemeral()).await;
    let base = app.url(ServerKind::Registry);
    let http = reqwest::Client::new();
    for port in 3000..3025 {
        let body = json!({"name": "station-service", "host": "10.0.0.1", "port": port});
        let (status, _) = send(http.post(format!("{base}/registry/register")).json(&body)).await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let (_, all) = send(http.get(format!("{base}/registry/services"))).await;
    let all: Vec<Value> = all.as_array().unwrap().clone();
    assert_eq!(all.len(), 25);
    let mut seen = Vec::new();
    let mut url = format!("{base}/registry/services?name=station-service&limit=10");
    loop {
        let res = http.get(&url).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let next = res
            .headers()
            .get("x-orchestra-next-cursor")
            .map(|v| v.to_str().unwrap().to_owned());
        let page: Vec<Value> = res.json().await.unwrap();
        assert!(page.len() <= 10);
        seen.extend(page);
        match next {
            Some(cursor) => url = format!("{base}/registry/services?limit=10&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, all, "every instance once, in order");
    for (query, field) in [("limit=0", "limit"), ("limit=5&cursor=zz", "cursor")] {
        let (status, body) = send(http.get(format!("{base}/registry/services?{query}"))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(body["details"][0]["field"], field, "{query}: {body}");
    }
    app.shutdown().await;
}

//! The gateway end to end, policies: rate limits (one gateway and two sharing Redis),
//! JWT authentication and the response cache, with real upstreams on loopback.

mod gateway_support;

use gateway_support::*;
use omc_orchestra::gateway::{GatewayConfig, RouteConfig};
use omc_orchestra::registry::{Registration, RegistryOptions};
use omc_orchestra::{Backends, ManualClock, RedisStore};
use omc_orchestra_server::app::{App, Config, ServerKind};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

#[tokio::test]
async fn a_second_limit_of_ten_lets_exactly_ten_of_fifty_through() {
    let clock = ManualClock::starting_now();
    let up = upstream("limited").await;
    let app = start(with_gateway(limited(10)), Some(&clock)).await;
    let base = app.url(ServerKind::Gateway);
    let http = reqwest::Client::new();
    register(&app, "stock-service", &up, 1).await;
    let url = format!("{base}/api/stock-service/level");
    routed(&http, &url, "limited").await;
    clock.advance(Duration::from_secs(1));

    let responses = burst(&http, vec![url.clone(); 50]).await;
    let ok: Vec<&reqwest::Response> = responses.iter().filter(|r| r.status() == 200).collect();
    assert_eq!(ok.len(), 10);
    assert_eq!(ok[0].headers()["x-ratelimit-limit-second"], "10");
    assert!(ok[0].headers().contains_key("ratelimit-remaining"));
    assert!(ok[0].headers().contains_key("ratelimit-reset"));
    let rejected: Vec<reqwest::Response> = responses
        .into_iter()
        .filter(|r| r.status() == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    assert_eq!(rejected.len(), 40);
    let first = rejected.into_iter().next().unwrap();
    assert_eq!(first.headers()["retry-after"], "1");
    assert_eq!(first.headers()["x-ratelimit-remaining-second"], "0");
    let body: Value = first.json().await.unwrap();
    assert_eq!(body["message"], "API rate limit exceeded");
    assert!(!body["requestId"].as_str().unwrap().is_empty());

    clock.advance(Duration::from_secs(1));
    assert_eq!(get(&http, &url).await.0, StatusCode::OK, "a new second");

    // Service names made up in the path share one count per client (as they share one
    // metric series): a flood of them is limited like any route, apart from the known
    // service's count.
    let ghosts = (0..15).map(|i| format!("{base}/api/ghost-{i}/x")).collect();
    let statuses: Vec<u16> = burst(&http, ghosts)
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 503).count(),
        10,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        5,
        "{statuses:?}"
    );
    assert_eq!(get(&http, &url).await.0, StatusCode::OK, "its own count");
    app.shutdown().await;
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_limit() {
    let clock = ManualClock::starting_now();
    let up = upstream("limited").await;
    // Loopback is among the trusted callers by default: the test is the proxy.
    let app = start(with_gateway(limited(1)), Some(&clock)).await;
    let http = reqwest::Client::new();
    register(&app, "stock-service", &up, 1).await;
    let url = format!("{}/api/stock-service/level", app.url(ServerKind::Gateway));
    routed(&http, &url, "limited").await;
    clock.advance(Duration::from_secs(1));
    let from = |forwarded: &'static str| {
        let request = http.get(&url).header("x-forwarded-for", forwarded);
        async move { request.send().await.unwrap().status() }
    };
    assert_eq!(from("203.0.113.9").await, StatusCode::OK);
    assert_eq!(from("203.0.113.9").await, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(from("203.0.113.10").await, StatusCode::OK, "another client");
    // The right-most untrusted address is the client, whatever it wrote on the left;
    // trusted hops after it are proxies.
    let forged = from("198.51.100.1, 203.0.113.9").await;
    assert_eq!(forged, StatusCode::TOO_MANY_REQUESTS);
    let via_two = from("203.0.113.10, 10.0.0.4").await;
    assert_eq!(via_two, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(from("198.51.100.1, 10.0.0.4").await, StatusCode::OK);
    app.shutdown().await;
}

#[tokio::test]
async fn two_gateways_sharing_redis_let_exactly_ten_through() {
    let clock = ManualClock::starting_now();
    let up = upstream("shared").await;
    let prefix = format!("gwtest-{}", uuid::Uuid::new_v4().simple());
    let url = omc_orchestra::testkit::redis::url().await;
    let store = omc_orchestra::RedisStore::connect(&url, &prefix)
        .await
        .unwrap();
    let backends = Backends::memory_with(Arc::new(clock.clone()), RegistryOptions::default())
        .with_redis_store(store);
    let mut gateway = limited(10);
    gateway.routes.push(RouteConfig {
        prefix: "/stock".into(),
        service: "stock-service".into(),
        cache_ttl_secs: Some(30),
        ..RouteConfig::default()
    });
    let config = Config {
        redis_url: Some(url.clone()),
        redis_prefix: prefix.clone(),
        ..with_gateway(gateway)
    };
    let one = App::start_with(config.clone(), &[ServerKind::Gateway], backends.clone())
        .await
        .unwrap();
    let two = App::start_with(config, &[ServerKind::Gateway], backends.clone())
        .await
        .unwrap();
    let mut registration = Registration::new("stock-service", "127.0.0.1", up.addr.port());
    registration.weight = Some(1);
    backends.registry.register(registration).await.unwrap();
    let http = reqwest::Client::new();
    let urls: Vec<String> = [&one, &two]
        .iter()
        .map(|app| format!("{}/api/stock-service/level", app.url(ServerKind::Gateway)))
        .collect();
    for u in &urls {
        routed(&http, u, "shared").await;
    }
    clock.advance(Duration::from_secs(1));

    let all: Vec<String> = (0..50).map(|i| urls[i % 2].clone()).collect();
    let responses = burst(&http, all).await;
    let ok = responses.iter().filter(|r| r.status() == 200).count();
    let limited = responses.iter().filter(|r| r.status() == 429).count();
    assert_eq!((ok, limited), (10, 40));

    // The response cache is shared too: one gateway fills, the other hits.
    let cached = |app: &App| format!("{}/stock/shelf/cached", app.url(ServerKind::Gateway));
    let hits = up.hits.load(Ordering::SeqCst);
    let first = http.get(cached(&one)).send().await.unwrap();
    assert_eq!(first.headers()["x-cache"], "MISS");
    let second = http.get(cached(&two)).send().await.unwrap();
    assert_eq!(second.headers()["x-cache"], "HIT");
    assert_eq!(up.hits.load(Ordering::SeqCst), hits + 1);
    one.shutdown().await;
    two.shutdown().await;
    RedisStore::connect(&url, &prefix)
        .await
        .unwrap()
        .delete_prefix()
        .await
        .unwrap();
}

/// The control plane's secret in the tests that close it.
const CONTROL_SECRET: &str = "control-plane-secret-of-32-bytes!!";

#[tokio::test]
async fn jwt_routes_accept_valid_and_reject_expired_or_forged_tokens() {
    let up = upstream("secure").await;
    let mut gateway = GatewayConfig::default();
    gateway.auth.jwt_secret = Some("gw-secret".into());
    gateway.routes.push(RouteConfig {
        prefix: "/secure".into(),
        service: "accounts-service".into(),
        auth: true,
        ..RouteConfig::default()
    });
    let config = with_gateway(gateway)
        .with_service_secret(CONTROL_SECRET)
        .unwrap();
    let app = start(config, None).await;
    let base = app.url(ServerKind::Gateway);
    let http = reqwest::Client::new();
    register(&app, "accounts-service", &up, 1).await;
    routed(&http, &format!("{base}/api/accounts-service/x"), "secure").await;

    let now = chrono::Utc::now().timestamp();
    let call = |bearer: Option<String>| {
        let mut req = http
            .get(format!("{base}/secure/me"))
            .header("x-user-id", "spoofed");
        if let Some(t) = bearer {
            req = req.bearer_auth(t);
        }
        async move {
            let res = req.send().await.unwrap();
            (res.status(), res.json::<Value>().await.unwrap())
        }
    };
    let good = token(
        json!({"sub": "u-42", "exp": now + 60, "roles": ["admin", "ops"]}),
        "gw-secret",
    );
    let (status, body) = call(Some(good)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["userId"], "u-42");
    assert_eq!(body["roles"], "admin,ops");
    assert_eq!(body["path"], "/me");

    let expired = token(json!({"sub": "u-42", "exp": now - 120}), "gw-secret");
    let (status, body) = call(Some(expired)).await;
    assert_eq!(
        (status, body["message"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("token expired"))
    );
    let forged = token(json!({"sub": "u-42", "exp": now + 60}), "not-the-secret");
    let (status, body) = call(Some(forged)).await;
    assert_eq!(
        (status, body["message"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid token signature"))
    );
    let (status, _) = call(None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // End-user and control-plane tokens never stand in for each other: the control
    // plane's secret verifies nothing here, and a control-plane token signed with the
    // route's own key is still refused by its audience.
    let control = token(
        json!({"sub": "ops", "aud": "orchestra", "scope": "admin", "exp": now + 60}),
        CONTROL_SECRET,
    );
    let (status, _) = call(Some(control)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let smuggled = token(
        json!({"sub": "ops", "aud": "orchestra", "scope": "admin", "exp": now + 60}),
        "gw-secret",
    );
    let (status, body) = call(Some(smuggled)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        body["message"].as_str().unwrap().contains("control-plane"),
        "{body}"
    );

    // Dot-segments are resolved before routing: a public route's path cannot climb into
    // the authenticated one (the upstream would resolve them and serve `/secure/me`),
    // and what goes upstream has none left, written plainly or as `%2e`.
    for climbing in [
        "/api/accounts-service/../../secure/me",
        "/api/accounts-service/%2e%2e/%2E%2E/secure/me",
        // Nor can another spelling of the route's prefix miss it.
        "/%73ecure/me",
        "//secure/me",
        "/secure//me",
    ] {
        let (status, body) = raw_get(&base, climbing).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{climbing}: {body}");
    }
    let (status, body) = raw_get(&base, "/api/accounts-service/a/./b/%2e%2e/me").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["path"], "/a/me");
    let (status, body) = raw_get(&base, "/api//accounts-service/%61//me").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["path"], "/a/me");
    let (status, body) = raw_get(&base, "/api/accounts-service/a%zz").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["details"][0]["field"], "path", "{body}");

    // The gateway's own endpoints need an admin service token when JWT_SECRET is set.
    let breakers = format!("{base}/gateway/breakers");
    assert_eq!(get(&http, &breakers).await.0, StatusCode::UNAUTHORIZED);
    let reader = token(
        json!({"sub": "reports", "aud": "orchestra", "scope": "read", "exp": now + 60}),
        CONTROL_SECRET,
    );
    let res = http
        .get(&breakers)
        .bearer_auth(reader)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let service = token(
        json!({"sub": "ops", "aud": "orchestra", "scope": "admin", "exp": now + 60}),
        CONTROL_SECRET,
    );
    let res = http
        .get(&breakers)
        .bearer_auth(service)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);

    // Public routes never pass a caller's own identity headers on.
    let res = http
        .get(format!("{base}/api/accounts-service/me"))
        .header("x-user-id", "spoofed")
        .send()
        .await
        .unwrap();
    assert_eq!(res.json::<Value>().await.unwrap()["userId"], "");
    app.shutdown().await;
}

#[tokio::test]
async fn cached_gets_skip_the_upstream_and_no_store_is_honoured() {
    let up = upstream("cacheable").await;
    let mut gateway = GatewayConfig::default();
    gateway.routes.push(RouteConfig {
        prefix: "/catalog".into(),
        service: "catalog-service".into(),
        cache_ttl_secs: Some(30),
        ..RouteConfig::default()
    });
    let app = start(with_gateway(gateway), None).await;
    let base = app.url(ServerKind::Gateway);
    let http = reqwest::Client::new();
    register(&app, "catalog-service", &up, 1).await;
    routed(&http, &format!("{base}/api/catalog-service/x"), "cacheable").await;

    let hits = || up.hits.load(Ordering::SeqCst);
    let fetch = |path: &'static str| {
        let req = http
            .get(format!("{base}/catalog{path}"))
            .header("x-request-id", format!("cache-{}", uuid::Uuid::new_v4()));
        async move {
            let sent = req.build().unwrap();
            let id = sent.headers()["x-request-id"].clone();
            let res = reqwest::Client::new().execute(sent).await.unwrap();
            assert_eq!(
                res.headers()["x-request-id"],
                id,
                "each answer carries its own id"
            );
            let cache = res.headers()["x-cache"].to_str().unwrap().to_owned();
            (res.status(), cache)
        }
    };
    let start_hits = hits();
    assert_eq!(
        fetch("/items/cached").await,
        (StatusCode::OK, "MISS".into())
    );
    assert_eq!(fetch("/items/cached").await, (StatusCode::OK, "HIT".into()));
    assert_eq!(fetch("/items/cached").await, (StatusCode::OK, "HIT".into()));
    assert_eq!(
        hits(),
        start_hits + 1,
        "cached answers do not reach the upstream"
    );

    assert_eq!(
        fetch("/items/nostore").await,
        (StatusCode::OK, "MISS".into())
    );
    assert_eq!(
        fetch("/items/nostore").await,
        (StatusCode::OK, "MISS".into())
    );
    assert_eq!(hits(), start_hits + 3, "no-store answers are never cached");

    // Concurrent misses on a fresh entry fill it once.
    let responses = burst(&http, vec![format!("{base}/catalog/other/cached"); 20]).await;
    assert!(responses.iter().all(|r| r.status() == 200));
    assert_eq!(hits(), start_hits + 4, "one request fills, the others wait");

    let res = http
        .delete(format!("{base}/gateway/cache?route=/catalog"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.json::<Value>().await.unwrap()["purged"], 2);
    assert_eq!(
        fetch("/items/cached").await,
        (StatusCode::OK, "MISS".into())
    );
    app.shutdown().await;
}

/// An upstream whose first answer to `/prices` sends its head and part of its body,
/// then stalls with the connection open; every other answer is whole (health probes
/// ask it too).
async fn stalling_upstream() -> std::net::SocketAddr {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let answered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let answered = answered.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                while let Some((request, _)) = read_request(&mut stream, &mut buf).await {
                    let head = "HTTP/1.1 200 OK\r\ncache-control: max-age=60\r\n";
                    let prices = request.split(' ').nth(1) == Some("/prices");
                    if prices && answered.fetch_add(1, Ordering::SeqCst) == 0 {
                        let stalled = format!("{head}content-length: 10\r\n\r\nabc");
                        let _ = stream.write_all(stalled.as_bytes()).await;
                        tokio::time::sleep(Duration::from_secs(60)).await;
                        return;
                    }
                    let whole = format!("{head}content-length: 5\r\n\r\nfresh");
                    if stream.write_all(whole.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_stalled_cache_fill_times_out_and_its_waiters_go_upstream() {
    let addr = stalling_upstream().await;
    let mut gateway = GatewayConfig::default();
    gateway.routes.push(RouteConfig {
        prefix: "/catalog".into(),
        service: "catalog-service".into(),
        cache_ttl_secs: Some(30),
        timeout_ms: Some(500),
        ..RouteConfig::default()
    });
    let app = start(with_gateway(gateway), None).await;
    let registration = Registration::new("catalog-service", "127.0.0.1", addr.port());
    app.backends()
        .registry
        .register(registration)
        .await
        .unwrap();
    let url = format!("{}/catalog/prices", app.url(ServerKind::Gateway));
    // Bounds only keep a regression from hanging the suite.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let filling = tokio::spawn(http.get(&url).send());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let waiting = http.get(&url).send().await.expect("the waiter is answered");
    assert_eq!(waiting.status(), StatusCode::OK);
    assert_eq!(
        waiting.text().await.unwrap(),
        "fresh",
        "it went upstream itself"
    );
    let filled = filling.await.unwrap();
    match filled {
        // The head came in time; the body stalled past the route's timeout.
        Ok(res) if res.status() == StatusCode::GATEWAY_TIMEOUT => {
            let body: Value = res.json().await.unwrap();
            assert_eq!(body["error"], "gateway_timeout", "{body}");
        }
        other => panic!("the stalled fill: {other:?}"),
    }
    app.shutdown().await;
}

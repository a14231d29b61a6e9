//! The gateway end to end, routing: real upstream servers on loopback, registered in the
//! registry, reached through the gateway over HTTP and WebSocket.

mod gateway_support;

use gateway_support::*;
use omc_orchestra::gateway::{GatewayConfig, RouteConfig};
use omc_orchestra::logs::LogQuery;
use omc_orchestra::testkit::eventually;
use omc_orchestra::ManualClock;
use omc_orchestra_server::app::{Config, ServerKind};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::time::Duration;

#[tokio::test]
async fn discovery_routing_static_fallback_and_trace_headers() {
    let a = upstream("a").await;
    let fixed = upstream("fixed").await;
    let mut gateway = GatewayConfig {
        access_log: true,
        ..GatewayConfig::default()
    };
    gateway
        .static_services
        .insert("legacy-service".into(), format!("http://{}", fixed.addr));
    let app = start(with_gateway(gateway), None).await;
    let base = app.url(ServerKind::Gateway);
    let http = reqwest::Client::new();

    register(&app, "pricing-service", &a, 1).await;
    routed(&http, &format!("{base}/api/pricing-service/ping"), "a").await;

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let res = http
        .get(format!("{base}/api/pricing-service/prices/7?currency=EUR"))
        .header("x-request-id", "req-gw-1")
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["x-request-id"], "req-gw-1");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["path"], "/prices/7");
    assert_eq!(body["query"], "currency=EUR");
    assert_eq!(body["requestId"], "req-gw-1");
    let traceparent = body["traceparent"].as_str().unwrap();
    assert!(
        traceparent.starts_with(&format!("00-{trace_id}-")),
        "{traceparent}"
    );
    assert!(
        !traceparent.contains("00f067aa0ba902b7"),
        "a new span id: {traceparent}"
    );
    assert_eq!(body["forwardedFor"], "127.0.0.1");
    let query = LogQuery {
        request_id: Some("req-gw-1".into()),
        ..LogQuery::default()
    };
    let record = eventually("the access record", Duration::from_secs(5), || async {
        app.backends()
            .logs
            .search(&query)
            .await
            .unwrap()
            .into_iter()
            .next()
    })
    .await;
    assert_eq!(record.service, "api-gateway");
    assert_eq!(record.trace_id.as_deref(), Some(trace_id));
    assert_eq!(record.fields["status"], 200);
    assert_eq!(record.fields["service"], "pricing-service");

    // A short name finds `{name}-service`; no traceparent starts a new trace.
    let (status, body) = get(&http, &format!("{base}/api/pricing/x")).await;
    assert_eq!(
        (status, body["upstream"].as_str()),
        (StatusCode::OK, Some("a"))
    );
    assert_eq!(body["traceparent"].as_str().unwrap().len(), 55);
    assert!(!body["requestId"].as_str().unwrap().is_empty());

    // Nothing registered: the static fallback serves.
    let (status, body) = get(&http, &format!("{base}/api/legacy-service/old")).await;
    assert_eq!(
        (status, body["upstream"].as_str()),
        (StatusCode::OK, Some("fixed"))
    );
    assert_eq!(body["path"], "/old");

    for ghost in ["ghost-service", "phantom"] {
        let (status, body) = get(&http, &format!("{base}/api/{ghost}/x")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["error"], "unavailable");
        assert!(body["message"].as_str().unwrap().contains(ghost), "{body}");
    }
    let (status, body) = get(&http, &format!("{base}/nowhere")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "not_found");

    // POST bodies stream through.
    let res = http
        .post(format!("{base}/api/pricing-service/orders"))
        .json(&json!({"sku": "A1"}))
        .send()
        .await
        .unwrap();
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["method"], "POST");

    let (status, _) = get(&http, &format!("{base}/health")).await;
    assert_eq!(status, StatusCode::OK);
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("gateway_requests_total"), "{metrics}");
    // Each serving thread's tallies are folded in at the scrape. Names a client makes up
    // in the path share one series (else each would add a series of its own): the two
    // requests to services nothing answers to show under `(unknown)`, counted with their
    // latency, and neither name appears; a known service keeps its own name.
    let series = |name: &str, service: &str| {
        let label = format!(r#"service="{service}""#);
        metrics
            .lines()
            .filter(|l| l.starts_with(name) && l.contains(&label))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let counted = series("orchestra_gateway_requests_total{", "(unknown)");
    assert_eq!(counted.len(), 1, "{metrics}");
    assert!(
        counted[0].contains(r#"route="/api/(unknown)""#),
        "{counted:?}"
    );
    assert!(counted[0].contains(r#"status="503""#), "{counted:?}");
    assert!(counted[0].ends_with(" 2"), "{counted:?}");
    let timed = series(
        "orchestra_gateway_request_duration_seconds_count{",
        "(unknown)",
    );
    assert_eq!(timed.len(), 1, "{metrics}");
    assert!(timed[0].ends_with(" 2"), "{timed:?}");
    assert!(
        !metrics.contains("ghost") && !metrics.contains("phantom"),
        "{metrics}"
    );
    let known = series("orchestra_gateway_requests_total{", "pricing-service");
    assert!(!known.is_empty(), "{metrics}");
    app.shutdown().await;
}

#[tokio::test]
async fn request_ids_are_kept_only_from_trusted_callers() {
    let up = upstream("ids").await;
    // Loopback is trusted by default; this gateway trusts no caller.
    let mut untrusting = GatewayConfig::default();
    untrusting.trusted_callers.clear();
    for (config, trusted) in [(GatewayConfig::default(), true), (untrusting, false)] {
        let app = start(with_gateway(config), None).await;
        let base = app.url(ServerKind::Gateway);
        let http = reqwest::Client::new();
        register(&app, "orders-service", &up, 1).await;
        let url = format!("{base}/api/orders-service/o/1");
        routed(&http, &url, "ids").await;
        let long = "r".repeat(201);
        for (given, kept) in [("req-from-nest", trusted), (long.as_str(), false)] {
            let res = http
                .get(&url)
                .header("x-request-id", given)
                .send()
                .await
                .unwrap();
            let answered = res.headers()["x-request-id"].to_str().unwrap().to_owned();
            let body: Value = res.json().await.unwrap();
            assert_eq!(body["requestId"], answered.as_str(), "one id both ways");
            assert_eq!(
                answered == given,
                kept,
                "trusted {trusted}: {given} -> {answered}"
            );
            assert!(!answered.is_empty() && answered.len() <= 200, "{answered}");
        }
        app.shutdown().await;
    }
}

#[tokio::test]
async fn weighted_spread_follows_weights() {
    let light = upstream("light").await;
    let heavy = upstream("heavy").await;
    let app = start(Config::ephemeral(), None).await;
    let base = app.url(ServerKind::Gateway);
    let http = reqwest::Client::new();
    register(&app, "inventory-service", &light, 1).await;
    register(&app, "inventory-service", &heavy, 3).await;
    let url = format!("{base}/api/inventory-service/items");
    routed(&http, &url, "light").await;
    routed(&http, &url, "heavy").await;
    light.hits.store(0, Ordering::SeqCst);
    heavy.hits.store(0, Ordering::SeqCst);
    for _ in 0..40 {
        assert_eq!(get(&http, &url).await.0, StatusCode::OK);
    }
    let heavy_hits = heavy.hits.load(Ordering::SeqCst);
    assert_eq!(light.hits.load(Ordering::SeqCst) + heavy_hits, 40);
    assert!(
        (29..=31).contains(&heavy_hits),
        "3:1 spread, heavy got {heavy_hits}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn failing_upstream_is_ejected_and_half_open_brings_it_back() {
    let clock = ManualClock::starting_now();
    let good = upstream("good").await;
    let bad = upstream("bad").await;
    let app = start(Config::ephemeral(), Some(&clock)).await;
    let base = app.url(ServerKind::Gateway);
    let http = reqwest::Client::new();
    register(&app, "orders-service", &good, 1).await;
    let bad_id = register(&app, "orders-service", &bad, 1).await;
    let url = format!("{base}/api/orders-service/list");
    routed(&http, &url, "good").await;
    routed(&http, &url, "bad").await;

    bad.failing.store(true, Ordering::SeqCst);
    let before = good.hits.load(Ordering::SeqCst) + bad.hits.load(Ordering::SeqCst);
    let mut requests = 0;
    while breaker_phase(&http, &base, &bad_id).await != "open" {
        get(&http, &url).await;
        requests += 1;
        assert!(requests < 50, "five failures in a row open the breaker");
    }
    let after = good.hits.load(Ordering::SeqCst) + bad.hits.load(Ordering::SeqCst);
    assert!(
        (after - before) as f64 <= requests as f64 * 1.2 + 1.0,
        "retries stay within the 20 % budget: {} upstream hits for {requests} requests",
        after - before
    );

    let bad_hits = bad.hits.load(Ordering::SeqCst);
    for _ in 0..10 {
        let (status, body) = get(&http, &url).await;
        assert_eq!(
            (status, body["upstream"].as_str()),
            (StatusCode::OK, Some("good"))
        );
    }
    assert_eq!(
        bad.hits.load(Ordering::SeqCst),
        bad_hits,
        "an open breaker keeps traffic away"
    );

    bad.failing.store(false, Ordering::SeqCst);
    clock.advance(Duration::from_secs(5));
    for _ in 0..10 {
        assert_eq!(get(&http, &url).await.0, StatusCode::OK);
    }
    assert_eq!(breaker_phase(&http, &base, &bad_id).await, "half_open");
    clock.advance(Duration::from_secs(10));
    eventually("the breaker to close", Duration::from_secs(5), || async {
        get(&http, &url).await;
        (breaker_phase(&http, &base, &bad_id).await == "closed").then_some(())
    })
    .await;
    assert!(
        bad.hits.load(Ordering::SeqCst) > bad_hits,
        "half-open probes reached it"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn websocket_echo_works_through_the_gateway() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let up = upstream("chat").await;
    let app = start(Config::ephemeral(), None).await;
    let base = app.url(ServerKind::Gateway);
    let http = reqwest::Client::new();
    register(&app, "chat-service", &up, 1).await;
    routed(&http, &format!("{base}/api/chat-service/x"), "chat").await;

    let url = format!("{}/api/chat-service/ws", base.replace("http://", "ws://"));
    let (mut socket, response) = tokio_tungstenite::connect_async(url).await.unwrap();
    assert_eq!(response.status(), 101);
    for word in ["hello", "gateway"] {
        socket.send(Message::text(word)).await.unwrap();
        let reply = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(reply.into_text().unwrap().as_str(), format!("echo: {word}"));
    }
    socket.close(None).await.unwrap();
    app.shutdown().await;
}

#[tokio::test]
async fn reload_adds_a_route_without_a_restart() {
    let up = upstream("reloaded").await;
    let app = start(Config::ephemeral(), None).await;
    let base = app.url(ServerKind::Gateway);
    let http = reqwest::Client::new();
    register(&app, "billing-service", &up, 1).await;
    routed(&http, &format!("{base}/api/billing-service/x"), "reloaded").await;
    assert_eq!(
        get(&http, &format!("{base}/bills/1")).await.0,
        StatusCode::NOT_FOUND
    );

    let gateway = app.gateway().unwrap();
    let mut config = gateway.config();
    config.routes.push(RouteConfig {
        prefix: "/bills".into(),
        service: "billing-service".into(),
        ..RouteConfig::default()
    });
    let mut broken = config.clone();
    broken.routes[0].prefix = "no-slash".into();
    assert!(
        gateway.reload(broken).is_err(),
        "an invalid configuration changes nothing"
    );
    gateway.reload(config).unwrap();

    let (status, body) = get(&http, &format!("{base}/bills/1")).await;
    assert_eq!(
        (status, body["path"].as_str()),
        (StatusCode::OK, Some("/1"))
    );
    app.shutdown().await;
}

#[tokio::test]
async fn route_timeouts_answer_504_and_posts_are_not_retried() {
    let up = upstream("slow").await;
    let mut gateway = GatewayConfig::default();
    gateway.routes.push(RouteConfig {
        prefix: "/quick".into(),
        service: "report-service".into(),
        timeout_ms: Some(200),
        ..RouteConfig::default()
    });
    let app = start(with_gateway(gateway), None).await;
    let base = app.url(ServerKind::Gateway);
    let http = reqwest::Client::new();
    register(&app, "report-service", &up, 1).await;
    routed(&http, &format!("{base}/api/report-service/x"), "slow").await;

    let (status, body) = get(&http, &format!("{base}/quick/slow")).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(body["error"], "gateway_timeout");
    // A pooled connection keeps one timer from request to request: armed for a short
    // deadline by a quick request, it still lets a later request with a long deadline
    // take its time.
    let (status, _) = get(&http, &format!("{base}/quick/fast")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = get(&http, &format!("{base}/api/report-service/slow")).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    up.failing.store(true, Ordering::SeqCst);
    let hits = up.hits.load(Ordering::SeqCst);
    let res = http
        .post(format!("{base}/quick/orders"))
        .json(&json!({"n": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        up.hits.load(Ordering::SeqCst),
        hits + 1,
        "a POST goes out once"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn forwarding_headers_pass_from_trusted_proxies_only_and_underscores_never() {
    let up = upstream("fwd").await;
    let http = reqwest::Client::new();
    for trusted in [true, false] {
        let mut gateway = GatewayConfig::default();
        if !trusted {
            // Loopback, where the test calls from, is then outside the trusted ranges.
            gateway.trusted_callers = vec!["10.0.0.0/8".parse().unwrap()];
        }
        let app = start(with_gateway(gateway), None).await;
        let base = app.url(ServerKind::Gateway);
        register(&app, "claims-service", &up, 1).await;
        let url = format!("{base}/api/claims-service/claims");
        routed(&http, &url, "fwd").await;
        // Through the lane (a plain GET) and through the full router (a body too large
        // for the lane to buffer, which it streams through hyper instead).
        for streamed in [false, true] {
            let mut request = http
                .post(&url)
                .header("x-forwarded-for", "6.6.6.6")
                .header("x-forwarded-proto", "https")
                .header("x_user_id", "forged");
            if streamed {
                request = request.body(vec![b'x'; 1 << 20]);
            }
            let body: Value = request.send().await.unwrap().json().await.unwrap();
            let (chain, proto) = if trusted {
                ("6.6.6.6, 127.0.0.1", "https")
            } else {
                ("127.0.0.1", "http")
            };
            let case = format!("trusted {trusted}, streamed {streamed}: {body}");
            assert_eq!(body["forwardedFor"], chain, "{case}");
            assert_eq!(body["forwardedProto"], proto, "{case}");
            assert_eq!(body["underscored"], "", "{case}");
            let sent = if streamed { 1 << 20 } else { 0 };
            assert_eq!(body["received"], sent, "{case}");
        }
        app.shutdown().await;
    }
}

//! A custom gateway: the library's gateway engines behind your own axum router, next to
//! routes of your own. Here an upstream registers in the (in-memory) registry, and the
//! gateway routes `/api/pricing-service/...` to it with a per-second limit.
//!
//! axum serves this example's port, which is simplest. The `orchestra` gateway serves its
//! port faster, with a thread per core running the library's own HTTP/1.1 lane: wrap the
//! gateway in a `gateway::h1::LaneService` and serve it with `gateway::h1::serve_threads`.
//!
//! Run: `cargo run -p examples --example custom_gateway`

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::routing::get;
use axum::Router;
use http_body_util::BodyExt;
use omc_orchestra::gateway::{Gateway, GatewayConfig, Limits, MemoryRateLimits};
use omc_orchestra::registry::Registration;
use omc_orchestra::Backends;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // An upstream service.
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let upstream_port = upstream.local_addr()?.port();
    let service = Router::new()
        .fallback(|req: Request| async move { format!("pricing answers {}", req.uri().path()) });
    tokio::spawn(async move { axum::serve(upstream, service).await });

    // The gateway engines over the registry.
    let backends = Backends::memory();
    let mut config = GatewayConfig::default();
    config.discovery.limits = Limits {
        second: Some(100),
        ..Limits::default()
    };
    let counters = Arc::new(MemoryRateLimits::new(backends.clock.clone()));
    let gateway = Arc::new(Gateway::new(
        config,
        backends.registry.clone(),
        backends.clock.clone(),
        counters,
        None,
    )?);
    let _background = gateway.spawn();
    backends
        .registry
        .register(Registration::new(
            "pricing-service",
            "127.0.0.1",
            upstream_port,
        ))
        .await?;

    // Your router: your own routes, and the gateway for everything else.
    let proxy = move |ConnectInfo(client): ConnectInfo<SocketAddr>, req: Request| {
        let gateway = gateway.clone();
        async move {
            let req = req.map(|body| body.map_err(Into::into).boxed_unsync());
            gateway.handle(req, client.ip()).await.map(Body::new)
        }
    };
    let app = Router::new()
        .route("/whoami", get(|| async { "a custom gateway" }))
        .fallback(proxy);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });

    tokio::time::sleep(Duration::from_millis(200)).await;
    let http = reqwest::Client::new();
    for path in ["/whoami", "/api/pricing-service/prices/7", "/api/ghost/x"] {
        let res = http.get(format!("{base}{path}")).send().await?;
        let status = res.status();
        let limit = res
            .headers()
            .get("ratelimit-remaining")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned();
        println!(
            "GET {path} -> {status} (remaining {limit}): {}",
            res.text().await?
        );
    }
    Ok(())
}

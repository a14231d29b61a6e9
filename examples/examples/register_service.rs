//! A `pricing-service` that serves a real `/health` on its port, registers (heartbeats run
//! in the background, and the registry's health checker probes `/health`), discovers
//! itself, and on Ctrl-C deregisters and exits.
//!
//! Start the servers first (`cargo run -p omc-orchestra-server -- up`), then:
//!
//! ```text
//! cargo run -p examples --example register_service        # PORT, default 3006
//! curl -s localhost:3010/registry/discovery/pricing-service
//! ```
//!
//! `SERVICE_REGISTRY_URL` (default http://127.0.0.1:3010); `SERVICE_HOST` names this
//! machine as the registry should reach it (default loopback); `ORCHESTRA_TOKEN` or
//! `JWT_SECRET` when the registry requires tokens.

use axum::routing::get;
use axum::{Json, Router};
use omc_orchestra_client::{json, Orchestra};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port = match std::env::var("PORT") {
        Ok(port) => port.parse()?,
        Err(_) => 3006,
    };
    let orc = Orchestra::from_env("pricing-service");
    // Reachable where it is registered: all interfaces for a named host, else loopback.
    let (orc, bind) = match std::env::var("SERVICE_HOST") {
        Ok(_) => (orc, "0.0.0.0"),
        Err(_) => (orc.with_host("127.0.0.1"), "127.0.0.1"),
    };
    let listener = tokio::net::TcpListener::bind((bind, port)).await?;
    let app = Router::new().route("/health", get(|| async { Json(json!({"status": "ok"})) }));
    tokio::spawn(async move { axum::serve(listener, app).await });

    let me = orc.register(port).await?;
    println!(
        "registered {} with /health on port {port} (heartbeat every {:?})",
        me.id(),
        me.heartbeat_every()
    );
    match orc.discover("pricing-service").await? {
        Some(instance) => println!("discovered {} at {}", instance.id, instance.url()),
        None => println!("discovery has no healthy pricing-service instance"),
    }

    println!("press Ctrl-C to deregister and exit");
    tokio::signal::ctrl_c().await?;
    me.deregister().await?;
    orc.shutdown().await?;
    println!("deregistered");
    Ok(())
}

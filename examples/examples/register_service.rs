//! Register a `pricing-service` instance with a running registry, discover it, and keep it
//! registered (heartbeats run in the background) until Ctrl-C, then deregister.
//!
//! Start a registry first (`cargo run -p omc-orchestra-server --bin orchestra -- up`), then:
//!
//! ```text
//! SERVICE_REGISTRY_URL=http://127.0.0.1:3010 cargo run -p examples --example register_service
//! ```
//!
//! Set `ORCHESTRA_TOKEN` (from `orchestra token`) or `JWT_SECRET` when the registry
//! requires tokens.

use omc_orchestra_client::{OrchestraClient, Registration};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Reads SERVICE_REGISTRY_URL (default http://127.0.0.1:3010) and ORCHESTRA_TOKEN or
    // JWT_SECRET.
    let client = OrchestraClient::from_env().with_service_name("pricing-service");
    println!("registry: {}", client.registry_url());

    let mut registration = Registration::new("pricing-service", "localhost", 3006);
    registration.version = "1.0.0".into();
    registration.tags = vec!["pricing".into()];
    registration.dependencies = vec!["postgres".into(), "redis".into()];

    let registered = client.register(registration).await?;
    println!(
        "registered {} (heartbeat every {:?})",
        registered.id(),
        registered.heartbeat_every()
    );

    match client.discover("pricing-service").await? {
        Some(instance) => println!(
            "discovered {} at {}:\n{}",
            instance.id,
            instance.url(),
            serde_json::to_string_pretty(&instance)?
        ),
        None => println!("discovery has no healthy pricing-service instance"),
    }

    println!("press Ctrl-C to deregister and exit");
    tokio::signal::ctrl_c().await?;
    registered.deregister().await?;
    println!("deregistered");
    Ok(())
}

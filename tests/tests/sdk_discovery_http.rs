//! The SDK's discovery answers from a local copy that blocking queries keep current: after
//! the first call for a service, calls cost the registry no request, and registrations
//! and deregistrations reach the copy by themselves; the process's own show at once.

use omc_orchestra::testkit::eventually;
use omc_orchestra_client::{Orchestra, OrchestraClient, Registration};
use omc_orchestra_server::app::{App, Config, ServerKind};
use std::collections::HashSet;
use std::time::Duration;

/// Discovery requests the registry answered so far, from its `/metrics`.
async fn discovery_requests(registry: &str) -> u64 {
    let text = reqwest::get(format!("{registry}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| {
            l.starts_with("orchestra_http_requests_total")
                && l.contains("route=\"/registry/discovery/{service_name}\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// The ports `orc.discover` picks over a few calls.
async fn picked(orc: &Orchestra) -> HashSet<u16> {
    let mut ports = HashSet::new();
    for _ in 0..6 {
        if let Some(found) = orc.discover("pricing-service").await.unwrap() {
            ports.insert(found.port);
        }
    }
    ports
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_is_served_from_a_copy_that_follows_changes() {
    let app = App::start(Config::ephemeral(), &[ServerKind::Registry])
        .await
        .unwrap();
    let registry = app.url(ServerKind::Registry);
    let client = OrchestraClient::new(&registry);
    let first = client
        .register_once(&Registration::new("pricing-service", "127.0.0.1", 3006))
        .await
        .unwrap();
    let orc = Orchestra::with_client("billing-service", client.clone());
    assert_eq!(picked(&orc).await, HashSet::from([3006]));

    let before = discovery_requests(&registry).await;
    for _ in 0..50 {
        orc.discover("pricing-service").await.unwrap().unwrap();
    }
    let asked = discovery_requests(&registry).await - before;
    assert!(asked <= 1, "50 calls asked the registry {asked} times");

    // Another process's registration reaches the copy by itself.
    let other = OrchestraClient::new(&registry);
    other
        .register_once(&Registration::new("pricing-service", "127.0.0.1", 3016))
        .await
        .unwrap();
    eventually(
        "the new instance in the copy",
        Duration::from_secs(10),
        || async { (picked(&orc).await == HashSet::from([3006, 3016])).then_some(()) },
    )
    .await;
    // This process's own deregistration shows on the very next call.
    client.deregister(&first.id).await.unwrap();
    assert_eq!(picked(&orc).await, HashSet::from([3016]));
    orc.shutdown().await.unwrap();
    app.shutdown().await;
}

//! The registry announces itself on the bus: the same check for every pair of backends.

use crate::events::{announce_registry, types, Event, EventBus, REGISTRY_SOURCE};
use crate::registry::{HealthStatus, Registration, Registry, RegistryOptions};
use crate::ManualClock;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

/// The next event on `live` of `event_type` whose data has `reason`.
pub async fn expect_event(
    live: &mut broadcast::Receiver<Event>,
    event_type: &str,
    reason: &str,
) -> Event {
    let wait = async {
        loop {
            match live.recv().await {
                Ok(e) if e.event_type == event_type && e.data["reason"] == reason => return e,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => panic!("the bus closed"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .unwrap_or_else(|_| panic!("no {event_type} ({reason}) event on the bus"))
}

/// Register, health change, deregister and expiry each become an event. `registry` runs
/// on `clock` with [`RegistryOptions::default`].
pub async fn registry_changes_are_announced(
    registry: Arc<dyn Registry>,
    bus: Arc<dyn EventBus>,
    clock: ManualClock,
) {
    let mut live = bus.subscribe();
    let announcer = announce_registry(registry.clone(), bus.clone());
    let pricing = registry
        .register(Registration::new("pricing-service", "10.0.0.5", 3006))
        .await
        .unwrap();
    let registered = expect_event(&mut live, types::SERVICE_REGISTERED, "registered").await;
    assert_eq!(registered.source, REGISTRY_SOURCE);
    assert_eq!(registered.data["serviceId"], pricing.id.as_str());
    assert!(registered.tags.contains(&"pricing-service".to_owned()));

    registry
        .set_health(&pricing.id, HealthStatus::Critical)
        .await
        .unwrap();
    let changed = expect_event(&mut live, types::SERVICE_HEALTH_CHANGED, "healthChanged").await;
    assert_eq!(changed.data["status"], "critical");
    assert_eq!(changed.data["previousStatus"], "passing");

    registry.deregister(&pricing.id).await.unwrap();
    expect_event(&mut live, types::SERVICE_DEREGISTERED, "deregistered").await;

    let inventory = registry
        .register(Registration::new("inventory-service", "10.0.0.6", 3007))
        .await
        .unwrap();
    let options = RegistryOptions::default();
    clock.advance(options.default_ttl + options.grace + Duration::from_secs(1));
    registry.reap().await.unwrap();
    let expired = expect_event(&mut live, types::SERVICE_DEREGISTERED, "expired").await;
    assert_eq!(expired.data["serviceId"], inventory.id.as_str());
    let history = bus.history(&Default::default()).await.unwrap();
    assert!(history.iter().any(|e| e.id == expired.id));
    announcer.abort();
}

//! The registry announces itself: every registry change becomes an event on the bus.

use super::{types, EventBus, EventPriority, NewEvent};
use crate::registry::{ChangeKind, Registry, RegistryChange};
use serde_json::json;
use std::sync::Arc;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

/// The `source` of the events the registry publishes.
pub const REGISTRY_SOURCE: &str = "service-registry";

/// The event announcing `change`: `SERVICE_REGISTERED` (also for an update),
/// `SERVICE_DEREGISTERED` (also for stale cleanup, with `reason: "expired"`) or
/// `SERVICE_HEALTH_CHANGED`, tagged with the service's name.
pub fn change_event(change: &RegistryChange) -> NewEvent {
    let (event_type, priority, reason) = match change.kind {
        ChangeKind::Registered => (
            types::SERVICE_REGISTERED,
            EventPriority::Normal,
            "registered",
        ),
        ChangeKind::Updated => (types::SERVICE_REGISTERED, EventPriority::Normal, "updated"),
        ChangeKind::Deregistered => (
            types::SERVICE_DEREGISTERED,
            EventPriority::High,
            "deregistered",
        ),
        ChangeKind::Expired => (types::SERVICE_DEREGISTERED, EventPriority::High, "expired"),
        ChangeKind::HealthChanged => (
            types::SERVICE_HEALTH_CHANGED,
            EventPriority::High,
            "healthChanged",
        ),
    };
    let instance = &change.instance;
    let mut event = NewEvent::new(
        event_type,
        REGISTRY_SOURCE,
        json!({
            "reason": reason,
            "serviceId": instance.id,
            "serviceName": instance.name,
            "status": instance.status,
            "previousStatus": change.previous_status,
            "instance": instance,
            "at": change.at,
        }),
    );
    event.priority = priority;
    event.tags = vec!["registry".into(), instance.name.clone()];
    // Every replica watching a shared registry sees this change: announce it once.
    event.idempotency_key = Some(format!(
        "registry:{reason}:{}:{}",
        instance.id,
        change.at.timestamp_millis()
    ));
    event
}

/// Publish every change of `registry`'s watch stream on `bus` until the task is aborted.
///
/// With a shared (Redis) registry every replica sees every replica's changes; each change
/// is still announced once, through the event's idempotency key.
pub fn announce_registry(registry: Arc<dyn Registry>, bus: Arc<dyn EventBus>) -> JoinHandle<()> {
    let mut changes = registry.watch();
    tokio::spawn(async move {
        loop {
            match changes.recv().await {
                Ok(change) => {
                    if let Err(err) = bus.publish(change_event(&change)).await {
                        tracing::warn!(error = %err, "could not announce a registry change");
                    }
                }
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "registry announcements fell behind; some were lost");
                }
                Err(RecvError::Closed) => return,
            }
        }
    })
}

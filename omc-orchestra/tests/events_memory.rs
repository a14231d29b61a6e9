//! The event bus contract against the in-memory backend.

use omc_orchestra::events::{EventBus, MemoryEventBus};
use omc_orchestra::testkit::events::{run_all, MakeBus};
use std::sync::Arc;

#[tokio::test]
async fn memory_event_bus_keeps_the_contract() {
    let make: MakeBus = Arc::new(|clock, options| {
        Box::pin(async move {
            Arc::new(MemoryEventBus::with_options(Arc::new(clock), options)) as Arc<dyn EventBus>
        })
    });
    run_all(make).await;
}

#[tokio::test]
async fn memory_registry_changes_are_announced() {
    use omc_orchestra::registry::{MemoryRegistry, RegistryOptions};
    let clock = omc_orchestra::ManualClock::starting_now();
    let shared: omc_orchestra::SharedClock = Arc::new(clock.clone());
    let registry = Arc::new(MemoryRegistry::new(
        shared.clone(),
        RegistryOptions::default(),
    ));
    let bus = Arc::new(MemoryEventBus::new(shared));
    omc_orchestra::testkit::announce::registry_changes_are_announced(registry, bus, clock).await;
}

#[tokio::test]
async fn replay_to_a_group_reaches_only_that_group() {
    use omc_orchestra::events::{replay_to_group, EventQuery, ReplayFrom, REPLAY_TAG};
    use omc_orchestra::testkit::events::{consumer, event, must_get};
    use std::time::Duration;
    let bus = MemoryEventBus::new(omc_orchestra::clock::system());
    let first = bus
        .publish(event("PRICE_UPDATED", "pricing", 1))
        .await
        .unwrap();
    let second = bus
        .publish(event("PRICE_UPDATED", "pricing", 2))
        .await
        .unwrap();
    let vis = Duration::from_secs(30);
    let mut late = consumer(&bus, "reports", "r1", vis, 5).await;
    let mut other = consumer(&bus, "billing", "b1", vis, 5).await;
    let from = ReplayFrom::After(first.id.parse().unwrap());
    let copies = replay_to_group(&bus, "reports", &from, &EventQuery::default())
        .await
        .unwrap();
    assert_eq!(copies.len(), 1);
    let got = must_get(&mut late).await.event;
    assert_eq!(got.data, second.data);
    assert!(got.tags.contains(&REPLAY_TAG.to_owned()));
    assert!(got.tags.contains(&format!("replay-of:{}", second.id)));
    assert!(other
        .next(Duration::from_millis(100))
        .await
        .unwrap()
        .is_none());
    let bad = replay_to_group(&bus, "not a group", &from, &EventQuery::default()).await;
    assert!(bad.unwrap_err().to_string().starts_with("group"));
}

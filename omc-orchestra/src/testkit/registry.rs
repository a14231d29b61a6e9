//! The registry contract, checked the same way for every backend.

use crate::registry::{
    ChangeKind, Discovery, HealthStatus, Registration, Registry, RegistryChange, RegistryOptions,
    ServiceFilter,
};
use crate::{Error, ManualClock};
use futures::future::BoxFuture;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

/// Builds a fresh, empty registry on `clock` with `options`.
pub type MakeRegistry = Arc<
    dyn Fn(ManualClock, RegistryOptions) -> BoxFuture<'static, Arc<dyn Registry>> + Send + Sync,
>;

/// The seed's registration body.
pub fn seed_registration() -> Registration {
    serde_json::from_value(serde_json::json!({
        "name": "pricing-service",
        "version": "1.0.0",
        "host": "localhost",
        "port": 3006,
        "type": "api",
        "healthEndpoint": "/health",
        "tags": ["pricing", "business-logic"],
        "dependencies": ["postgres", "redis"]
    }))
    .expect("the seed body parses")
}

fn registration(name: &str, port: u16, weight: u32) -> Registration {
    let mut r = Registration::new(name, "127.0.0.1", port);
    r.weight = Some(i64::from(weight));
    r
}

async fn fresh(make: &MakeRegistry) -> (Arc<dyn Registry>, ManualClock) {
    let clock = ManualClock::starting_now();
    let registry = make(clock.clone(), RegistryOptions::default()).await;
    (registry, clock)
}

/// Wait (a little) for a change of `kind` about `id` on a watch stream.
pub async fn expect_change(
    watch: &mut broadcast::Receiver<RegistryChange>,
    kind: ChangeKind,
    id: &str,
) -> RegistryChange {
    let wait = async {
        loop {
            match watch.recv().await {
                Ok(change) if change.kind == kind && change.instance.id == id => return change,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => panic!("watch stream closed"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .unwrap_or_else(|_| panic!("no {kind:?} change for {id} on the watch stream"))
}

/// Registering the seed body gives an instance that get and every list filter find.
pub async fn register_then_discover(make: &MakeRegistry) {
    let (registry, _) = fresh(make).await;
    let instance = registry.register(seed_registration()).await.unwrap();
    assert_eq!(instance.name, "pricing-service");
    assert_eq!(instance.port, 3006);
    assert_eq!(instance.status, HealthStatus::Passing);
    assert_eq!(instance.ttl_seconds, 30);
    assert_eq!(instance.weight, 1);
    assert_eq!(registry.get(&instance.id).await.unwrap(), instance);

    let other = registry
        .register(registration("inventory-service", 3007, 1))
        .await
        .unwrap();
    let by = |f: ServiceFilter| {
        let registry = registry.clone();
        async move {
            registry
                .list(&f)
                .await
                .unwrap()
                .into_iter()
                .map(|i| i.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        by(ServiceFilter::default()).await,
        vec![other.id.clone(), instance.id.clone()]
    );
    assert_eq!(
        by(ServiceFilter::by_name("pricing-service")).await,
        vec![instance.id.clone()]
    );
    let tagged = ServiceFilter {
        tag: Some("business-logic".into()),
        ..Default::default()
    };
    assert_eq!(by(tagged).await, vec![instance.id.clone()]);
    let typed = ServiceFilter {
        service_type: Some("worker".into()),
        ..Default::default()
    };
    assert!(by(typed).await.is_empty());
    let critical = ServiceFilter {
        status: Some(HealthStatus::Critical),
        ..Default::default()
    };
    assert!(by(critical).await.is_empty());

    let discovery = Discovery::new(registry.clone());
    let found = discovery.discover("pricing-service").await.unwrap();
    assert_eq!(found.selected.map(|i| i.id), Some(instance.id));
    assert_eq!(
        (found.total, found.healthy, found.panic_mode),
        (1, 1, false)
    );
}

/// Invalid registrations are refused with the field named, and nothing is stored.
pub async fn validation_names_the_field(make: &MakeRegistry) {
    let (registry, _) = fresh(make).await;
    type Spoil = Box<dyn Fn(&mut Registration)>;
    let cases: Vec<(&str, Spoil)> = vec![
        ("name", Box::new(|r| r.name = "Pricing_Service".into())),
        ("name", Box::new(|r| r.name = String::new())),
        ("host", Box::new(|r| r.host = " ".into())),
        ("port", Box::new(|r| r.port = 70_000)),
        ("port", Box::new(|r| r.port = 0)),
        (
            "healthEndpoint",
            Box::new(|r| r.health_endpoint = "health".into()),
        ),
        ("weight", Box::new(|r| r.weight = Some(0))),
        ("weight", Box::new(|r| r.weight = Some(1001))),
        (
            "tags",
            Box::new(|r| r.tags = (0..33).map(|i| format!("t{i}")).collect()),
        ),
        ("ttlSeconds", Box::new(|r| r.ttl_seconds = Some(0))),
        ("id", Box::new(|r| r.id = Some("has space".into()))),
    ];
    for (field, spoil) in cases {
        let mut r = seed_registration();
        spoil(&mut r);
        match registry.register(r).await {
            Err(Error::Invalid { field: got, .. }) => assert_eq!(got, field),
            other => panic!("expected Invalid({field}), got {other:?}"),
        }
    }
    assert!(registry
        .list(&ServiceFilter::default())
        .await
        .unwrap()
        .is_empty());
}

/// Registering the same name, host and port again updates the one instance.
pub async fn reregister_updates_in_place(make: &MakeRegistry) {
    let (registry, clock) = fresh(make).await;
    let mut watch = registry.watch();
    let first = registry.register(seed_registration()).await.unwrap();
    expect_change(&mut watch, ChangeKind::Registered, &first.id).await;
    clock.advance(Duration::from_secs(5));
    let mut again = seed_registration();
    again.version = "1.1.0".into();
    let second = registry.register(again).await.unwrap();
    assert_eq!(second.id, first.id);
    assert_eq!(second.version, "1.1.0");
    assert_eq!(
        second.registered_at.timestamp_millis(),
        first.registered_at.timestamp_millis()
    );
    assert!(second.last_heartbeat > first.last_heartbeat);
    expect_change(&mut watch, ChangeKind::Updated, &first.id).await;
    let all = registry.list(&ServiceFilter::default()).await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].version, "1.1.0");

    // An explicit id for an address known under another id replaces the old instance.
    let mut explicit = seed_registration();
    explicit.id = Some("pricing-1".into());
    let third = registry.register(explicit).await.unwrap();
    assert_eq!(third.id, "pricing-1");
    let all = registry.list(&ServiceFilter::default()).await.unwrap();
    assert_eq!(
        all.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
        vec!["pricing-1"]
    );
    assert!(matches!(
        registry.get(&first.id).await,
        Err(Error::NotFound { .. })
    ));
}

/// Heartbeats keep an instance fresh past its TTL.
pub async fn heartbeat_extends_ttl(make: &MakeRegistry) {
    let (registry, clock) = fresh(make).await;
    let instance = registry.register(seed_registration()).await.unwrap();
    for _ in 0..5 {
        clock.advance(Duration::from_secs(20));
        let beat = registry.heartbeat(&instance.id).await.unwrap();
        assert_eq!(beat.status, HealthStatus::Passing);
    }
    clock.advance(Duration::from_secs(20));
    assert_eq!(
        registry.get(&instance.id).await.unwrap().status,
        HealthStatus::Passing
    );
    assert!(registry.reap().await.unwrap().is_empty());
}

/// Past its TTL an instance is critical and leaves discovery; stale cleanup announces it
/// once; a heartbeat brings it back.
pub async fn heartbeat_expiry_marks_critical(make: &MakeRegistry) {
    let (registry, clock) = fresh(make).await;
    let mut watch = registry.watch();
    let instance = registry.register(seed_registration()).await.unwrap();
    let discovery = Discovery::new(registry.clone());
    clock.advance(Duration::from_secs(31));
    assert_eq!(
        registry.get(&instance.id).await.unwrap().status,
        HealthStatus::Critical
    );
    let found = discovery.discover("pricing-service").await.unwrap();
    assert!(found.instances.is_empty() && found.selected.is_none());
    assert_eq!((found.total, found.healthy), (1, 0));

    let changes = registry.reap().await.unwrap();
    assert_eq!(changes.len(), 1, "one change: {changes:?}");
    assert_eq!(changes[0].kind, ChangeKind::HealthChanged);
    assert_eq!(changes[0].previous_status, Some(HealthStatus::Passing));
    assert_eq!(changes[0].instance.status, HealthStatus::Critical);
    assert!(registry.reap().await.unwrap().is_empty(), "announced once");
    expect_change(&mut watch, ChangeKind::HealthChanged, &instance.id).await;

    let back = registry.heartbeat(&instance.id).await.unwrap();
    assert_eq!(back.status, HealthStatus::Passing);
    let change = expect_change(&mut watch, ChangeKind::HealthChanged, &instance.id).await;
    assert_eq!(change.instance.status, HealthStatus::Passing);
    assert_eq!(
        discovery.discover("pricing-service").await.unwrap().healthy,
        1
    );
}

/// After the grace period stale cleanup removes the instance, once, and announces it.
pub async fn stale_cleanup_removes_after_grace(make: &MakeRegistry) {
    let (registry, clock) = fresh(make).await;
    let mut watch = registry.watch();
    let stale = registry.register(seed_registration()).await.unwrap();
    let mut short = registration("inventory-service", 4000, 1);
    short.ttl_seconds = Some(300);
    let fresh_one = registry.register(short).await.unwrap();
    clock.advance(Duration::from_secs(60));
    registry.reap().await.unwrap();
    assert!(
        registry.get(&stale.id).await.is_ok(),
        "kept during the grace period"
    );
    clock.advance(Duration::from_secs(61));
    let changes = registry.reap().await.unwrap();
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0].kind, ChangeKind::Expired);
    assert_eq!(changes[0].instance.id, stale.id);
    assert!(registry.reap().await.unwrap().is_empty());
    assert!(matches!(
        registry.get(&stale.id).await,
        Err(Error::NotFound { .. })
    ));
    assert!(registry.get(&fresh_one.id).await.is_ok());
    expect_change(&mut watch, ChangeKind::Expired, &stale.id).await;
}

/// Deregistering removes the instance and announces it; unknown ids are `NotFound`.
pub async fn deregister_removes(make: &MakeRegistry) {
    let (registry, _) = fresh(make).await;
    let mut watch = registry.watch();
    let instance = registry.register(seed_registration()).await.unwrap();
    let gone = registry.deregister(&instance.id).await.unwrap();
    assert_eq!(gone.id, instance.id);
    expect_change(&mut watch, ChangeKind::Deregistered, &instance.id).await;
    assert!(registry
        .list(&ServiceFilter::default())
        .await
        .unwrap()
        .is_empty());
    for result in [
        registry.deregister(&instance.id).await,
        registry.heartbeat(&instance.id).await,
        registry.get("no-such-id").await,
        registry
            .set_health("no-such-id", HealthStatus::Critical)
            .await,
    ] {
        assert!(matches!(result, Err(Error::NotFound { .. })), "{result:?}");
    }
    // Registering again works from scratch.
    assert_eq!(
        registry.register(seed_registration()).await.unwrap().id,
        instance.id
    );
}

/// A critical health verdict takes an instance out of discovery; warning keeps it in.
pub async fn health_verdicts_steer_discovery(make: &MakeRegistry) {
    let (registry, _) = fresh(make).await;
    let mut watch = registry.watch();
    let a = registry
        .register(registration("pricing-service", 4001, 1))
        .await
        .unwrap();
    let b = registry
        .register(registration("pricing-service", 4002, 1))
        .await
        .unwrap();
    let discovery = Discovery::new(registry.clone());
    let down = registry
        .set_health(&a.id, HealthStatus::Critical)
        .await
        .unwrap();
    assert_eq!(down.status, HealthStatus::Critical);
    expect_change(&mut watch, ChangeKind::HealthChanged, &a.id).await;
    for _ in 0..5 {
        let found = discovery.discover("pricing-service").await.unwrap();
        assert_eq!(found.selected.map(|i| i.id), Some(b.id.clone()));
    }
    registry
        .set_health(&a.id, HealthStatus::Warning)
        .await
        .unwrap();
    let found = discovery.discover("pricing-service").await.unwrap();
    assert_eq!(found.healthy, 2);
    let warn = ServiceFilter {
        status: Some(HealthStatus::Warning),
        ..Default::default()
    };
    assert_eq!(registry.list(&warn).await.unwrap().len(), 1);
}

/// Weights 1:2:7 over 1,000 picks give 100/200/700, spread evenly (no bursts).
pub async fn weighted_spread(make: &MakeRegistry) {
    let (registry, _) = fresh(make).await;
    let ids: Vec<String> =
        futures::future::join_all([(5001, 1), (5002, 2), (5003, 7)].map(|(port, weight)| {
            registry.register(registration("pricing-service", port, weight))
        }))
        .await
        .into_iter()
        .map(|r| r.unwrap().id)
        .collect();
    let discovery = Discovery::new(registry.clone());
    let mut counts = [0usize; 3];
    let mut picks = Vec::new();
    for _ in 0..1000 {
        let picked = discovery
            .discover("pricing-service")
            .await
            .unwrap()
            .selected
            .unwrap();
        let index = ids.iter().position(|id| *id == picked.id).unwrap();
        counts[index] += 1;
        picks.push(index);
    }
    for (count, expected) in counts.iter().zip([100usize, 200, 700]) {
        assert!(count.abs_diff(expected) <= 10, "counts {counts:?}");
    }
    // Smooth: in every window of 10 picks each instance appears by its weight, ±1.
    for window in picks.chunks(10) {
        let heavy = window.iter().filter(|&&i| i == 2).count();
        assert!((6..=8).contains(&heavy), "bursty window {window:?}");
    }
}

/// Over the panic threshold, discovery serves every known instance and says so.
pub async fn panic_threshold_serves_all(make: &MakeRegistry) {
    let (registry, clock) = fresh(make).await;
    let mut ids = Vec::new();
    for port in 6001..6005 {
        let mut r = registration("pricing-service", port, 1);
        r.ttl_seconds = Some(10);
        ids.push(registry.register(r).await.unwrap().id);
    }
    clock.advance(Duration::from_secs(8));
    registry.heartbeat(&ids[0]).await.unwrap();
    clock.advance(Duration::from_secs(5));
    let plain = Discovery::new(registry.clone());
    let found = plain.discover("pricing-service").await.unwrap();
    assert_eq!((found.instances.len(), found.panic_mode), (1, false));
    let guarded = Discovery::new(registry.clone()).with_panic_threshold(Some(50));
    let found = guarded.discover("pricing-service").await.unwrap();
    assert!(found.panic_mode);
    assert_eq!(
        (found.instances.len(), found.healthy, found.total),
        (4, 1, 4)
    );
    let tolerant = Discovery::new(registry.clone()).with_panic_threshold(Some(80));
    assert!(
        !tolerant
            .discover("pricing-service")
            .await
            .unwrap()
            .panic_mode
    );
}

/// `service` reads one service's instances, ordered by id, whatever other services hold;
/// its index grows with each announced change to that service (registered, health
/// changed, expired, deregistered, moved to another name) and with no other service's.
pub async fn service_index_follows_its_own_changes(make: &MakeRegistry) {
    let (registry, clock) = fresh(make).await;
    let never = registry.service("pricing-service").await.unwrap();
    assert_eq!((never.instances.len(), never.index), (0, 0));
    let a = registry
        .register(registration("pricing-service", 3006, 1))
        .await
        .unwrap();
    let b = registry
        .register(registration("pricing-service", 3016, 1))
        .await
        .unwrap();
    for port in 4000..4010 {
        registry
            .register(registration("inventory-service", port, 1))
            .await
            .unwrap();
    }
    let view = registry.service("pricing-service").await.unwrap();
    let mut ids = vec![a.id.clone(), b.id.clone()];
    ids.sort();
    let found: Vec<String> = view.instances.iter().map(|i| i.id.clone()).collect();
    assert_eq!(found, ids, "ordered by id, this service only");
    assert!(
        view.index >= 2,
        "two registrations announced: {}",
        view.index
    );

    let mut last = view.index;
    fn grew(last: &mut u64, what: &str, index: u64) {
        assert!(index > *last, "{what}: index {index} after {last}");
        *last = index;
    }
    let other = registry
        .register(registration("inventory-service", 4100, 1))
        .await
        .unwrap();
    registry.deregister(&other.id).await.unwrap();
    assert_eq!(
        registry.service("pricing-service").await.unwrap().index,
        last,
        "another service's changes leave the index alone"
    );
    registry
        .set_health(&a.id, HealthStatus::Critical)
        .await
        .unwrap();
    grew(
        &mut last,
        "health changed",
        registry.service("pricing-service").await.unwrap().index,
    );
    registry.heartbeat(&b.id).await.unwrap();
    assert_eq!(
        registry.service("pricing-service").await.unwrap().index,
        last,
        "a heartbeat that changes no status is not a change"
    );
    clock.advance(Duration::from_secs(31));
    registry.heartbeat(&a.id).await.unwrap();
    registry.reap().await.unwrap();
    grew(
        &mut last,
        "b expired",
        registry.service("pricing-service").await.unwrap().index,
    );
    registry.deregister(&a.id).await.unwrap();
    let view = registry.service("pricing-service").await.unwrap();
    grew(&mut last, "deregistered", view.index);
    assert_eq!(view.instances.len(), 1);
    assert_eq!(view.instances[0].id, b.id);
    assert_eq!(view.instances[0].status, HealthStatus::Critical);

    // Moved to another name under the same id: gone from one service, in the other.
    let mut moved = registration("billing-service", 3016, 1);
    moved.id = Some(b.id.clone());
    registry.register(moved).await.unwrap();
    let view = registry.service("pricing-service").await.unwrap();
    grew(&mut last, "moved away", view.index);
    assert!(view.instances.is_empty(), "{:?}", view.instances);
    let billing = registry.service("billing-service").await.unwrap();
    assert_eq!(billing.instances.len(), 1);
    assert_eq!(
        registry
            .list(&ServiceFilter::by_name("inventory-service"))
            .await
            .unwrap()
            .len(),
        10
    );
}

/// Listing in pages: every instance once, in (name, id) order, with the cursor staying
/// valid while instances come and go; filters apply within pages; a bad cursor is an
/// error naming `cursor`.
pub async fn listing_pages_stay_valid_while_instances_come_and_go(make: &MakeRegistry) {
    let (registry, _clock) = fresh(make).await;
    let mut ids = Vec::new();
    for (name, count) in [
        ("billing-service", 7),
        ("inventory-service", 9),
        ("pricing-service", 8),
    ] {
        for port in 0..count {
            let mut r = registration(name, 5000 + port, 1);
            if port % 2 == 0 {
                r.tags = vec!["even".into()];
            }
            ids.push(registry.register(r).await.unwrap().id);
        }
    }
    let all = registry.list(&ServiceFilter::default()).await.unwrap();
    let first = registry
        .list_page(&ServiceFilter::default(), 10, None)
        .await
        .unwrap();
    assert_eq!(first.instances, all[..10].to_vec());
    let cursor = first.next.clone().expect("more pages");
    // One instance sorting before the cursor comes, one after it goes.
    registry
        .register(registration("aaa-service", 5000, 1))
        .await
        .unwrap();
    let gone = all[15].id.clone();
    registry.deregister(&gone).await.unwrap();
    let mut seen: Vec<String> = first.instances.iter().map(|i| i.id.clone()).collect();
    let mut next = Some(cursor);
    let mut pages = 1;
    while let Some(cursor) = next {
        let page = registry
            .list_page(&ServiceFilter::default(), 10, Some(&cursor))
            .await
            .unwrap();
        seen.extend(page.instances.iter().map(|i| i.id.clone()));
        next = page.next;
        pages += 1;
        assert!(pages < 10, "pages never end");
    }
    let expected: Vec<String> = all
        .iter()
        .map(|i| i.id.clone())
        .filter(|id| *id != gone)
        .collect();
    assert_eq!(
        seen, expected,
        "every instance once, in order, the one gone left out"
    );

    // Filters apply within pages, across services and within one.
    let even = ServiceFilter {
        tag: Some("even".into()),
        ..ServiceFilter::default()
    };
    let mut tagged = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let page = registry.list_page(&even, 3, next.as_deref()).await.unwrap();
        assert!(page.instances.len() <= 3);
        tagged.extend(page.instances);
        match page.next {
            Some(cursor) => next = Some(cursor),
            None => break,
        }
    }
    assert_eq!(tagged, registry.list(&even).await.unwrap());
    let one = ServiceFilter::by_name("inventory-service");
    let page = registry.list_page(&one, 100, None).await.unwrap();
    assert_eq!(page.instances, registry.list(&one).await.unwrap());
    assert_eq!(page.instances.len(), 8, "nine, less the one gone");
    assert_eq!(page.next, None);

    match registry
        .list_page(&ServiceFilter::default(), 10, Some("not-a-cursor"))
        .await
    {
        Err(Error::Invalid { field, .. }) => assert_eq!(field, "cursor"),
        other => panic!("a bad cursor gave {other:?}"),
    }
}

/// Every check of the registry contract, in turn.
pub async fn run_all(make: MakeRegistry) {
    register_then_discover(&make).await;
    validation_names_the_field(&make).await;
    reregister_updates_in_place(&make).await;
    heartbeat_extends_ttl(&make).await;
    heartbeat_expiry_marks_critical(&make).await;
    stale_cleanup_removes_after_grace(&make).await;
    deregister_removes(&make).await;
    health_verdicts_steer_discovery(&make).await;
    weighted_spread(&make).await;
    panic_threshold_serves_all(&make).await;
    service_index_follows_its_own_changes(&make).await;
    listing_pages_stay_valid_while_instances_come_and_go(&make).await;
    super::registry_listing::listing_filters_page_through_every_status(&make).await;
}

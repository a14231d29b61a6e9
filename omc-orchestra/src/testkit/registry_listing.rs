//! The registry contract for filtered listings: every filter, paged, gives what the
//! filter picks out of all instances, whatever the instances' tags, types and statuses
//! went through.

use super::registry::MakeRegistry;
use crate::registry::{HealthStatus, Registration, Registry, RegistryOptions, ServiceFilter};
use crate::ManualClock;
use std::time::Duration;

/// Every page of `filter`, `limit` at a time, in order.
async fn paged(registry: &dyn Registry, filter: &ServiceFilter, limit: usize) -> Vec<String> {
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let page = registry
            .list_page(filter, limit, cursor.as_deref())
            .await
            .unwrap();
        assert!(page.instances.len() <= limit, "{filter:?}: a page too long");
        seen.extend(page.instances.into_iter().map(|i| i.id));
        match page.next {
            Some(next) => cursor = Some(next),
            None => return seen,
        }
    }
    panic!("{filter:?}: pages never end");
}

/// Listing by tag, type and status, alone and together, paged and whole, gives what the
/// filter picks out of every instance: after verdicts change, heartbeats lapse (marked by
/// stale cleanup or not yet), marked instances beat again, and an instance registers
/// again with other tags and type.
pub async fn listing_filters_page_through_every_status(make: &MakeRegistry) {
    let clock = ManualClock::starting_now();
    let registry = make(clock.clone(), RegistryOptions::default()).await;
    let mut ids = Vec::new();
    for (n, name) in ["billing-service", "inventory-service", "pricing-service"]
        .iter()
        .enumerate()
    {
        for port in 0..8u16 {
            let mut r = Registration::new(*name, "127.0.0.1", 5000 + port);
            r.tags = vec![if port % 2 == 0 { "even" } else { "odd" }.into()];
            if port % 3 == 0 {
                r.tags.push("third".into());
                r.service_type = "worker".into();
            }
            let id = registry.register(r).await.unwrap().id;
            match (n * 8 + usize::from(port)) % 5 {
                1 => drop(
                    registry
                        .set_health(&id, HealthStatus::Warning)
                        .await
                        .unwrap(),
                ),
                2 => drop(
                    registry
                        .set_health(&id, HealthStatus::Critical)
                        .await
                        .unwrap(),
                ),
                _ => {}
            }
            ids.push(id);
        }
    }
    // Heartbeats: the even positions beat at 20 s, so the odd ones lapse at 30 s and
    // stale cleanup marks them; a quarter of them beat again.
    clock.advance(Duration::from_secs(20));
    for id in ids.iter().step_by(2) {
        registry.heartbeat(id).await.unwrap();
    }
    clock.advance(Duration::from_secs(15));
    assert!(!registry.reap().await.unwrap().is_empty());
    for id in ids.iter().skip(1).step_by(4) {
        registry.heartbeat(id).await.unwrap();
    }
    // Then the even ones lapse too, with no cleanup pass to mark them, but for every
    // fourth that beats again.
    clock.advance(Duration::from_secs(20));
    for id in ids.iter().step_by(4) {
        registry.heartbeat(id).await.unwrap();
    }
    // A verdict back to passing, one instance gone, one registered again as another type
    // with other tags.
    registry
        .set_health(&ids[2], HealthStatus::Passing)
        .await
        .unwrap();
    registry.deregister(&ids[9]).await.unwrap();
    let mut again = Registration::new("inventory-service", "127.0.0.1", 5000);
    again.tags = vec!["odd".into(), "moved".into()];
    again.service_type = "api".into();
    assert_eq!(registry.register(again).await.unwrap().id, ids[8]);

    let all = registry.list(&ServiceFilter::default()).await.unwrap();
    for status in HealthStatus::ALL {
        assert!(
            all.iter().any(|i| i.status == status),
            "the setup leaves some instance {status:?}"
        );
    }
    for status in [None].into_iter().chain(HealthStatus::ALL.map(Some)) {
        for tag in [
            None,
            Some("even"),
            Some("third"),
            Some("moved"),
            Some("none"),
        ] {
            for service_type in [None, Some("worker"), Some("api")] {
                for name in [None, Some("inventory-service")] {
                    let filter = ServiceFilter {
                        name: name.map(Into::into),
                        tag: tag.map(Into::into),
                        status,
                        service_type: service_type.map(Into::into),
                    };
                    let expected: Vec<String> = all
                        .iter()
                        .filter(|i| filter.matches(i))
                        .map(|i| i.id.clone())
                        .collect();
                    let whole: Vec<String> = registry
                        .list(&filter)
                        .await
                        .unwrap()
                        .into_iter()
                        .map(|i| i.id)
                        .collect();
                    assert_eq!(whole, expected, "{filter:?}: the whole listing");
                    for limit in [1, 3] {
                        let seen = paged(registry.as_ref(), &filter, limit).await;
                        assert_eq!(seen, expected, "{filter:?}: pages of {limit}");
                    }
                }
            }
        }
    }
}

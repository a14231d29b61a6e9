//! The event bus contract on the backlog: how far each consumer group is behind, and
//! what the backlog cap drops (part of [`events::run_all`](super::events::run_all)).

use crate::events::{BusOptions, EventPriority, GroupLag, LagCounts};
use crate::testkit::events::{consumer, event, fresh, must_get, publish_numbered, MakeBus};
use std::time::Duration;

/// Every backlog check in turn.
pub async fn run_all(make: &MakeBus) {
    lag_and_pending_per_group(make).await;
    the_backlog_cap_drops_the_oldest_unread_and_counts_them(make).await;
}

/// The figures of group `name` in `groups`, which must be there.
fn group<'a>(groups: &'a [GroupLag], name: &str) -> &'a GroupLag {
    groups
        .iter()
        .find(|g| g.group == name)
        .unwrap_or_else(|| panic!("no group {name} in {groups:?}"))
}

/// A group's lag is what it has not been delivered yet, its pending what it has not
/// acknowledged, summed over the priorities and per priority; each group on its own.
pub async fn lag_and_pending_per_group(make: &MakeBus) {
    let (bus, _) = fresh(make, BusOptions::default()).await;
    let vis = Duration::from_secs(30);
    let mut busy = consumer(bus.as_ref(), "billing", "b1", vis, 5).await;
    let _idle = consumer(bus.as_ref(), "audit", "a1", vis, 5).await;
    publish_numbered(bus.as_ref(), "PRICE_UPDATED", "pricing", 10).await;
    let mut alarm = event("SYSTEM_ALERT", "health-monitor", 0);
    alarm.priority = EventPriority::Critical;
    bus.publish(alarm).await.unwrap();
    // The critical one comes first, then three normal ones; all but the last acknowledged.
    for i in 0..5 {
        let delivery = must_get(&mut busy).await;
        if i < 4 {
            assert!(busy.ack(&delivery.event.id).await.unwrap());
        }
    }
    let stats = bus.stats().await.unwrap();
    let billing = group(&stats.groups, "billing");
    assert_eq!((billing.lag, billing.pending), (6, 1), "{billing:?}");
    assert_eq!(
        billing.by_priority.get(&EventPriority::Normal),
        Some(&LagCounts { lag: 6, pending: 1 })
    );
    let critical = billing.by_priority.get(&EventPriority::Critical);
    assert_eq!(critical.copied().unwrap_or_default(), LagCounts::default());
    let audit = group(&stats.groups, "audit");
    assert_eq!((audit.lag, audit.pending), (11, 0), "{audit:?}");
    assert_eq!(
        audit.by_priority.get(&EventPriority::Critical),
        Some(&LagCounts { lag: 1, pending: 0 })
    );
    assert_eq!(stats.trimmed_unread, 0);
}

/// Past the backlog cap the oldest events a group has not read are dropped, and counted:
/// what the group can still read and what was counted add up to what was published,
/// the group keeps at least the cap, and what it reads is the newest, in order.
pub async fn the_backlog_cap_drops_the_oldest_unread_and_counts_them(make: &MakeBus) {
    let options = BusOptions {
        backlog: 5,
        backlog_cap: 50,
        ..BusOptions::default()
    };
    let (bus, _) = fresh(make, options).await;
    let vis = Duration::from_secs(30);
    let mut slow = consumer(bus.as_ref(), "reports", "r1", vis, 5).await;
    let published = publish_numbered(bus.as_ref(), "SALE_RECORDED", "station", 600).await;
    let stats = bus.stats().await.unwrap();
    let reports = group(&stats.groups, "reports");
    assert!(stats.trimmed_unread > 0, "{stats:?}");
    assert_eq!(stats.trimmed_unread + reports.lag, 600, "{stats:?}");
    assert!(
        reports.lag >= 50,
        "the cap keeps at least its size: {reports:?}"
    );
    let mut read = Vec::new();
    while let Some(delivery) = slow.next(Duration::from_millis(200)).await.unwrap() {
        assert!(slow.ack(&delivery.event.id).await.unwrap());
        read.push(delivery.event);
    }
    let kept = published.len() - read.len();
    assert_eq!(read, published[kept..].to_vec(), "the newest, in order");
    assert_eq!(read.len() as u64, reports.lag);
    let stats = bus.stats().await.unwrap();
    assert_eq!(group(&stats.groups, "reports").lag, 0);
}

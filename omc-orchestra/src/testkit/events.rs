//! The event bus contract, checked the same way for every backend.

use crate::events::{
    subscribe_filtered, BusOptions, ConsumerOptions, Delivery, Event, EventBus, EventConsumer,
    EventFilter, EventPriority, EventQuery, NewEvent, ReplayFrom,
};
use crate::ManualClock;
use futures::future::BoxFuture;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// Builds a fresh, empty bus on `clock` with `options`.
pub type MakeBus =
    Arc<dyn Fn(ManualClock, BusOptions) -> BoxFuture<'static, Arc<dyn EventBus>> + Send + Sync>;

/// How long a check waits for something that should arrive.
const ARRIVES: Duration = Duration::from_secs(5);
/// How long a check waits to be sure that nothing arrives.
const NOTHING: Duration = Duration::from_millis(150);

pub(crate) async fn fresh(make: &MakeBus, options: BusOptions) -> (Arc<dyn EventBus>, ManualClock) {
    let clock = ManualClock::starting_now();
    (make(clock.clone(), options).await, clock)
}

/// An event of `event_type` from `source` with `n` in its data.
pub fn event(event_type: &str, source: &str, n: u64) -> NewEvent {
    NewEvent::new(event_type, source, json!({ "n": n }))
}

/// Publish `count` events of `event_type` from `source`, numbered from 0; answers them
/// as published.
pub async fn publish_numbered(
    bus: &dyn EventBus,
    event_type: &str,
    source: &str,
    count: u64,
) -> Vec<Event> {
    let mut published = Vec::new();
    for n in 0..count {
        published.push(bus.publish(event(event_type, source, n)).await.unwrap());
    }
    published
}

/// A consumer of `group` named `name` with `visibility` and `max_deliveries`.
pub async fn consumer(
    bus: &dyn EventBus,
    group: &str,
    name: &str,
    visibility: Duration,
    max_deliveries: u32,
) -> Box<dyn EventConsumer> {
    let mut options = ConsumerOptions::new(group, name);
    options.visibility_timeout = visibility;
    options.max_deliveries = max_deliveries;
    bus.consumer(options).await.unwrap()
}

/// The next delivery, which must come.
pub async fn must_get(consumer: &mut Box<dyn EventConsumer>) -> Delivery {
    consumer
        .next(ARRIVES)
        .await
        .unwrap()
        .expect("an event should have been delivered")
}

/// Every check in turn.
pub async fn run_all(make: MakeBus) {
    publish_then_history(&make).await;
    broadcast_reaches_every_subscriber(&make).await;
    targeted_reaches_only_its_target(&make).await;
    subscriptions_filter_by_type_tag_and_source(&make).await;
    critical_first_when_behind(&make).await;
    unacked_is_redelivered_after_the_timeout(&make).await;
    poisoned_lands_in_dead_letters(&make).await;
    replay_returns_exactly_the_later_events(&make).await;
    history_trims_at_its_bounds(&make).await;
    stats_count_every_stage(&make).await;
    idempotent_publish_happens_once(&make).await;
    batches_keep_the_contract(&make).await;
    a_batch_consumer_that_ran_dry_gets_news_of_any_priority(&make).await;
    crate::testkit::events_backlog::run_all(&make).await;
}

/// A published event is stamped, reaches history, and bad input names its field.
pub async fn publish_then_history(make: &MakeBus) {
    let (bus, _) = fresh(make, BusOptions::default()).await;
    crate::testkit::roundtrip::events_publish_then_history(bus.as_ref()).await;
    let mut bad = event("PRICE_UPDATED", "pricing-service", 1);
    bad.target = Some("not a service".into());
    let err = bus.publish(bad).await.unwrap_err();
    assert!(err.to_string().starts_with("target"), "{err}");
    let err = bus
        .consumer(ConsumerOptions::new("", "c1"))
        .await
        .err()
        .expect("an empty group is refused");
    assert!(err.to_string().starts_with("group"), "{err}");
}

/// Every live subscriber and every consumer group receives a broadcast event.
pub async fn broadcast_reaches_every_subscriber(make: &MakeBus) {
    let (bus, _) = fresh(make, BusOptions::default()).await;
    let mut live = [bus.subscribe(), bus.subscribe()];
    let second = Duration::from_secs(30);
    let mut pricing = consumer(bus.as_ref(), "pricing-service", "p1", second, 5).await;
    let mut inventory = consumer(bus.as_ref(), "inventory-service", "i1", second, 5).await;
    let published = bus
        .publish(event("SYSTEM_ALERT", "health-monitor", 1))
        .await
        .unwrap();
    for receiver in &mut live {
        let got = tokio::time::timeout(ARRIVES, receiver.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, published);
    }
    for group in [&mut pricing, &mut inventory] {
        let got = must_get(group).await;
        assert_eq!((got.event, got.deliveries), (published.clone(), 1));
        assert!(group.ack(&published.id).await.unwrap());
        assert!(group.next(NOTHING).await.unwrap().is_none());
    }
}

/// A targeted event reaches only its target service's group.
pub async fn targeted_reaches_only_its_target(make: &MakeBus) {
    let (bus, _) = fresh(make, BusOptions::default()).await;
    let vis = Duration::from_secs(30);
    let mut pricing = consumer(bus.as_ref(), "pricing-service", "p1", vis, 5).await;
    let mut inventory = consumer(bus.as_ref(), "inventory-service", "i1", vis, 5).await;
    let mut targeted = event("PRICE_UPDATED", "admin", 1);
    targeted.target = Some("pricing-service".into());
    let targeted = bus.publish(targeted).await.unwrap();
    let everyone = bus
        .publish(event("PRICE_UPDATED", "admin", 2))
        .await
        .unwrap();
    assert_eq!(must_get(&mut pricing).await.event.id, targeted.id);
    assert_eq!(must_get(&mut pricing).await.event.id, everyone.id);
    // The inventory group's first event is the broadcast one: the targeted one never came.
    assert_eq!(must_get(&mut inventory).await.event.id, everyone.id);
    assert!(inventory.next(NOTHING).await.unwrap().is_none());
}

/// A consumer's filter on type, tag and source lets through only what it names.
pub async fn subscriptions_filter_by_type_tag_and_source(make: &MakeBus) {
    let (bus, _) = fresh(make, BusOptions::default()).await;
    let mut options = ConsumerOptions::new("dashboard", "d1");
    options.filter = EventFilter {
        types: vec!["PRICE_UPDATED".into(), "INVENTORY_UPDATED".into()],
        tags: vec!["station-1".into()],
        sources: vec!["pricing-service".into()],
    };
    let mut live = subscribe_filtered(bus.as_ref(), options.filter.clone());
    let mut filtered = bus.consumer(options).await.unwrap();
    let mut wanted = event("PRICE_UPDATED", "pricing-service", 1);
    wanted.tags = vec!["fuel".into(), "station-1".into()];
    let mut wrong_tag = wanted.clone();
    wrong_tag.tags = vec!["station-2".into()];
    let mut wrong_source = wanted.clone();
    wrong_source.source = "inventory-service".into();
    let mut wrong_type = wanted.clone();
    wrong_type.event_type = "USER_ACTION".into();
    for unwanted in [wrong_tag, wrong_source, wrong_type] {
        bus.publish(unwanted).await.unwrap();
    }
    let wanted = bus.publish(wanted).await.unwrap();
    let got = must_get(&mut filtered).await;
    assert_eq!(got.event, wanted);
    let heard = tokio::time::timeout(ARRIVES, live.recv()).await.unwrap();
    assert_eq!(
        heard.unwrap(),
        wanted,
        "the live subscription skips the unwanted"
    );
    assert!(filtered.next(NOTHING).await.unwrap().is_none());
    let types = EventFilter::types(["PRICE_UPDATED"]);
    assert!(types.matches(&wanted));
}

/// A consumer that is behind gets critical events first, then high, normal, low.
pub async fn critical_first_when_behind(make: &MakeBus) {
    let (bus, _) = fresh(make, BusOptions::default()).await;
    let mut behind = consumer(bus.as_ref(), "ops", "o1", Duration::from_secs(30), 5).await;
    let mut ids = Vec::new();
    for priority in [
        EventPriority::Low,
        EventPriority::Normal,
        EventPriority::Critical,
        EventPriority::High,
        EventPriority::Critical,
    ] {
        let mut e = event("SYSTEM_ALERT", "health-monitor", ids.len() as u64);
        e.priority = priority;
        ids.push(bus.publish(e).await.unwrap());
    }
    let mut order = Vec::new();
    for _ in 0..ids.len() {
        order.push(must_get(&mut behind).await.event);
    }
    let delivered: Vec<String> = order.iter().map(|e| e.id.clone()).collect();
    assert_eq!(behind.ack_many(&delivered).await.unwrap(), ids.len());
    assert_eq!(behind.ack_many(&delivered).await.unwrap(), 0);
    let expected: Vec<Event> = [2, 4, 3, 1, 0].iter().map(|&i| ids[i].clone()).collect();
    assert_eq!(order, expected);
}

/// An event not acknowledged within the visibility timeout goes to another consumer of
/// the group; the late acknowledgement of the first one settles nothing.
pub async fn unacked_is_redelivered_after_the_timeout(make: &MakeBus) {
    let (bus, clock) = fresh(make, BusOptions::default()).await;
    let vis = Duration::from_secs(30);
    let mut first = consumer(bus.as_ref(), "billing", "b1", vis, 5).await;
    let mut second = consumer(bus.as_ref(), "billing", "b2", vis, 5).await;
    let published = bus
        .publish(event("UPPF_CLAIM_SUBMITTED", "uppf-service", 7))
        .await
        .unwrap();
    let got = must_get(&mut first).await;
    assert_eq!(
        (got.event.id.as_str(), got.deliveries),
        (published.id.as_str(), 1)
    );
    assert!(
        second.next(NOTHING).await.unwrap().is_none(),
        "still in flight"
    );
    clock.advance(Duration::from_secs(29));
    assert!(second.next(NOTHING).await.unwrap().is_none(), "not yet due");
    clock.advance(Duration::from_secs(2));
    let again = must_get(&mut second).await;
    assert_eq!((again.event, again.deliveries), (published.clone(), 2));
    assert!(second.ack(&published.id).await.unwrap());
    assert!(!first.ack(&published.id).await.unwrap());
    clock.advance(Duration::from_secs(60));
    assert!(first.next(NOTHING).await.unwrap().is_none());
    assert!(bus.dead_letters(10).await.unwrap().is_empty());
}

/// An event never acknowledged is delivered `max_deliveries` times, then parked with the
/// reason, and delivered no more.
pub async fn poisoned_lands_in_dead_letters(make: &MakeBus) {
    let (bus, clock) = fresh(make, BusOptions::default()).await;
    let vis = Duration::from_secs(10);
    let mut worker = consumer(bus.as_ref(), "inventory-service", "i1", vis, 3).await;
    let poison = bus
        .publish(event("INVENTORY_UPDATED", "depot-7", 0))
        .await
        .unwrap();
    for attempt in 1..=3 {
        let got = must_get(&mut worker).await;
        assert_eq!(
            (got.event.id.as_str(), got.deliveries),
            (poison.id.as_str(), attempt)
        );
        clock.advance(Duration::from_secs(11));
    }
    assert!(worker.next(NOTHING).await.unwrap().is_none());
    let dead = bus.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].event.as_ref(), Some(&poison));
    assert_eq!(dead[0].event_id, poison.id);
    assert_eq!(dead[0].group, "inventory-service");
    assert_eq!(dead[0].deliveries, 3);
    assert!(
        dead[0].reason.contains("3 deliveries"),
        "{}",
        dead[0].reason
    );
    assert!(!worker.ack(&poison.id).await.unwrap());
}

/// Replay from an id gives exactly the later events, in order; from a time, those at or
/// after it; both filtered and limited.
pub async fn replay_returns_exactly_the_later_events(make: &MakeBus) {
    let (bus, clock) = fresh(make, BusOptions::default()).await;
    let mut published = Vec::new();
    for n in 0..6 {
        let kind = if n % 2 == 0 {
            "PRICE_UPDATED"
        } else {
            "USER_ACTION"
        };
        published.push(
            bus.publish(event(kind, "pricing-service", n))
                .await
                .unwrap(),
        );
        clock.advance(Duration::from_secs(1));
    }
    let from = ReplayFrom::After(published[1].id.parse().unwrap());
    let all = bus.replay(&from, &EventQuery::default()).await.unwrap();
    assert_eq!(all, published[2..].to_vec());
    let prices = EventQuery {
        event_type: Some("PRICE_UPDATED".into()),
        limit: Some(1),
        ..Default::default()
    };
    assert_eq!(
        bus.replay(&from, &prices).await.unwrap(),
        vec![published[2].clone()]
    );
    let since = ReplayFrom::Since(published[4].time);
    assert_eq!(
        bus.replay(&since, &EventQuery::default()).await.unwrap(),
        published[4..].to_vec()
    );
    let last = ReplayFrom::After(published[5].id.parse().unwrap());
    assert!(bus
        .replay(&last, &EventQuery::default())
        .await
        .unwrap()
        .is_empty());
    let window = EventQuery {
        since: Some(published[1].time),
        until: Some(published[3].time),
        ..Default::default()
    };
    assert_eq!(
        bus.history(&window).await.unwrap(),
        published[1..3].to_vec()
    );
}

/// History keeps at most `history_len` events and none older than `history_age`.
pub async fn history_trims_at_its_bounds(make: &MakeBus) {
    let options = BusOptions {
        history_len: 5,
        history_age: Duration::from_secs(60),
        ..BusOptions::default()
    };
    let (bus, clock) = fresh(make, options).await;
    let published = publish_numbered(bus.as_ref(), "PERFORMANCE_METRIC", "gateway", 8).await;
    let all = EventQuery {
        limit: Some(1000),
        ..Default::default()
    };
    assert_eq!(bus.history(&all).await.unwrap(), published[3..].to_vec());
    let newest_two = EventQuery {
        limit: Some(2),
        ..Default::default()
    };
    assert_eq!(
        bus.history(&newest_two).await.unwrap(),
        published[6..].to_vec()
    );
    clock.advance(Duration::from_secs(61));
    assert!(bus.history(&all).await.unwrap().is_empty(), "all aged out");
    let fresh_one = bus
        .publish(event("PERFORMANCE_METRIC", "gateway", 9))
        .await
        .unwrap();
    assert_eq!(bus.history(&all).await.unwrap(), vec![fresh_one]);
}

/// Stats count publications, deliveries, redeliveries and dead letters per type.
pub async fn stats_count_every_stage(make: &MakeBus) {
    let (bus, clock) = fresh(make, BusOptions::default()).await;
    let vis = Duration::from_secs(5);
    let mut worker = consumer(bus.as_ref(), "jobs", "j1", vis, 2).await;
    bus.publish(event("PRICE_UPDATED", "pricing-service", 1))
        .await
        .unwrap();
    bus.publish(event("USER_ACTION", "auth-service", 2))
        .await
        .unwrap();
    let first = must_get(&mut worker).await;
    assert!(worker.ack(&first.event.id).await.unwrap());
    let second = must_get(&mut worker).await;
    assert_eq!(second.event.event_type, "USER_ACTION");
    clock.advance(Duration::from_secs(6));
    assert_eq!(must_get(&mut worker).await.deliveries, 2);
    clock.advance(Duration::from_secs(6));
    assert!(worker.next(NOTHING).await.unwrap().is_none());
    let stats = bus.stats().await.unwrap();
    let price = stats.by_type["PRICE_UPDATED"];
    let user = stats.by_type["USER_ACTION"];
    assert_eq!(
        (
            price.published,
            price.delivered,
            price.redelivered,
            price.dead
        ),
        (1, 1, 0, 0)
    );
    assert_eq!(
        (user.published, user.delivered, user.redelivered, user.dead),
        (1, 1, 1, 1)
    );
    assert_eq!(stats.total.published, 2);
    assert_eq!(stats.total.dead, 1);
}

/// Publishing again under the same idempotency key answers the first event and adds
/// nothing; another key publishes.
pub async fn idempotent_publish_happens_once(make: &MakeBus) {
    let (bus, _) = fresh(make, BusOptions::default()).await;
    let mut group = consumer(bus.as_ref(), "audit", "a1", Duration::from_secs(30), 5).await;
    let mut once = event("USER_ACTION", "auth-service", 1);
    once.idempotency_key = Some("login-42".into());
    let first = bus.publish(once.clone()).await.unwrap();
    let again = bus.publish(once.clone()).await.unwrap();
    assert_eq!(again, first);
    once.idempotency_key = Some("login-43".into());
    let other = bus.publish(once).await.unwrap();
    assert_ne!(other.id, first.id);
    let history = bus.history(&EventQuery::default()).await.unwrap();
    assert_eq!(history, vec![first.clone(), other.clone()]);
    assert_eq!(must_get(&mut group).await.event, first);
    assert_eq!(must_get(&mut group).await.event, other);
    assert!(group.next(NOTHING).await.unwrap().is_none());
}

/// Everything until `consumer` has nothing for a while, in batches of at most `max`.
async fn drain_batches(consumer: &mut Box<dyn EventConsumer>, max: usize) -> Vec<Delivery> {
    let mut all = Vec::new();
    loop {
        let batch = consumer.next_batch(max, NOTHING).await.unwrap();
        if batch.is_empty() {
            return all;
        }
        assert!(batch.len() <= max, "{} > {max}", batch.len());
        all.extend(batch);
    }
}

/// Consumers taking batches get what one-at-a-time consumers get: filtered and targeted,
/// most urgent first, counted, and delivered again when a batch is not acknowledged.
pub async fn batches_keep_the_contract(make: &MakeBus) {
    let (bus, clock) = fresh(make, BusOptions::default()).await;
    let vis = Duration::from_secs(30);
    let mut options = ConsumerOptions::new("pricing-service", "p1");
    options.filter = EventFilter::types(["PRICE_UPDATED"]);
    options.visibility_timeout = vis;
    let mut prices = bus.consumer(options.clone()).await.unwrap();
    let mut expected = Vec::new();
    for n in 0..12u64 {
        let mut e = event("PRICE_UPDATED", "pricing-service", n);
        match n % 4 {
            1 => e.event_type = "USER_ACTION".into(),
            2 => e.target = Some("inventory-service".into()),
            3 => e.target = Some("pricing-service".into()),
            _ => {}
        }
        let wanted = n % 4 != 1 && n % 4 != 2;
        let published = bus.publish(e).await.unwrap();
        if wanted {
            expected.push(published);
        }
    }
    let mut critical = event("PRICE_UPDATED", "pricing-service", 99);
    critical.priority = EventPriority::Critical;
    let critical = bus.publish(critical).await.unwrap();
    expected.insert(0, critical);
    let first = drain_batches(&mut prices, 4).await;
    let got: Vec<Event> = first.iter().map(|d| d.event.clone()).collect();
    assert_eq!(got, expected, "wanted ones only, the critical one first");
    assert!(first.iter().all(|d| d.deliveries == 1));
    // Not acknowledged: after the visibility timeout they come back, to another consumer.
    clock.advance(vis + Duration::from_secs(1));
    let mut other = bus
        .consumer(ConsumerOptions {
            consumer: "p2".into(),
            ..options
        })
        .await
        .unwrap();
    let again = drain_batches(&mut other, 3).await;
    let mut ids: Vec<&str> = again.iter().map(|d| d.event.id.as_str()).collect();
    ids.sort_unstable();
    let mut want: Vec<&str> = expected.iter().map(|e| e.id.as_str()).collect();
    want.sort_unstable();
    assert_eq!(ids, want);
    assert!(again.iter().all(|d| d.deliveries == 2));
    let all: Vec<String> = again.iter().map(|d| d.event.id.clone()).collect();
    assert_eq!(other.ack_many(&all).await.unwrap(), expected.len());
    assert_eq!(prices.ack_many(&all).await.unwrap(), 0, "settled already");
    let stats = bus.stats().await.unwrap();
    let price = stats.by_type["PRICE_UPDATED"];
    assert_eq!(
        (price.published, price.delivered, price.redelivered),
        (10, expected.len() as u64, expected.len() as u64)
    );
    assert!(other.next(NOTHING).await.unwrap().is_none());
}

/// A batch consumer that took everything of one priority, waiting for more, gets news of
/// a lower priority, and after that of its first priority again.
pub async fn a_batch_consumer_that_ran_dry_gets_news_of_any_priority(make: &MakeBus) {
    let (bus, _clock) = fresh(make, BusOptions::default()).await;
    let mut consumer = bus
        .consumer(ConsumerOptions::new("dashboard", "d1"))
        .await
        .unwrap();
    assert!(consumer.next_batch(10, NOTHING).await.unwrap().is_empty());
    let normal = publish_numbered(bus.as_ref(), "PRICE_UPDATED", "pricing", 3).await;
    let batch = consumer.next_batch(10, ARRIVES).await.unwrap();
    let got: Vec<Event> = batch.into_iter().map(|d| d.event).collect();
    assert_eq!(got, normal);
    let ids: Vec<String> = got.iter().map(|e| e.id.clone()).collect();
    assert_eq!(consumer.ack_many(&ids).await.unwrap(), 3);
    for priority in [EventPriority::Low, EventPriority::Normal] {
        let mut news = event("PRICE_UPDATED", "pricing", 9);
        news.priority = priority;
        // Published while the consumer waits (or just before: it must come either way).
        let (batch, published) = tokio::join!(consumer.next_batch(10, ARRIVES), async {
            tokio::time::sleep(Duration::from_millis(30)).await;
            bus.publish(news).await.unwrap()
        });
        let got: Vec<Event> = batch.unwrap().into_iter().map(|d| d.event).collect();
        assert_eq!(got, vec![published], "{priority:?}");
        let ids = vec![got[0].id.clone()];
        assert_eq!(consumer.ack_many(&ids).await.unwrap(), 1);
    }
    assert!(consumer.next_batch(10, NOTHING).await.unwrap().is_empty());
}

//! The event bus contract against a real Redis, plus what only a shared store can show:
//! a consumer dropped mid-stream loses nothing, and two buses on one Redis share events.

use omc_orchestra::events::{BusOptions, EventBus, EventConsumer, RedisEventBus};
use omc_orchestra::testkit::events::{consumer, event, publish_numbered, run_all, MakeBus};
use omc_orchestra::testkit::redis::{store, url, RedisProcess};
use omc_orchestra::{ManualClock, RedisStore};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[tokio::test]
async fn redis_event_bus_keeps_the_contract() {
    let stores = Arc::new(Mutex::new(Vec::<RedisStore>::new()));
    let seen = stores.clone();
    let make: MakeBus = Arc::new(move |clock, options| {
        let seen = seen.clone();
        Box::pin(async move {
            let store = store().await;
            seen.lock().unwrap().push(store.clone());
            Arc::new(
                RedisEventBus::new(store, Arc::new(clock), options)
                    .await
                    .unwrap(),
            ) as Arc<dyn EventBus>
        })
    });
    run_all(make).await;
    let stores = std::mem::take(&mut *stores.lock().unwrap());
    for store in stores {
        store.delete_prefix().await.unwrap();
    }
}

/// A bus on `store` with the default options, timed by `clock`.
async fn bus_on(store: &RedisStore, clock: &ManualClock) -> RedisEventBus {
    RedisEventBus::new(
        store.clone(),
        Arc::new(clock.clone()),
        BusOptions::default(),
    )
    .await
    .unwrap()
}

/// Drain `consumer`, acknowledging everything, until it has nothing for a while; record
/// which ids this consumer's acknowledgements settled.
async fn drain(mut consumer: Box<dyn EventConsumer>, settled: Arc<Mutex<HashMap<String, u32>>>) {
    while let Some(delivery) = consumer.next(Duration::from_millis(300)).await.unwrap() {
        if consumer.ack(&delivery.event.id).await.unwrap() {
            *settled
                .lock()
                .unwrap()
                .entry(delivery.event.id)
                .or_default() += 1;
        }
    }
}

#[tokio::test]
async fn a_consumer_dropped_mid_stream_loses_nothing() {
    let store = store().await;
    let clock = ManualClock::starting_now();
    let bus = bus_on(&store, &clock).await;
    let vis = Duration::from_secs(30);
    let mut doomed = consumer(&bus, "inventory-service", "doomed", vis, 5).await;
    let survivors = [
        consumer(&bus, "inventory-service", "s1", vis, 5).await,
        consumer(&bus, "inventory-service", "s2", vis, 5).await,
    ];
    let published: Vec<String> = publish_numbered(&bus, "INVENTORY_UPDATED", "depot", 200)
        .await
        .into_iter()
        .map(|e| e.id)
        .collect();
    // The doomed consumer takes ten events, acknowledges three, and dies holding seven.
    for i in 0..10 {
        let delivery = doomed.next(Duration::from_secs(5)).await.unwrap().unwrap();
        if i < 3 {
            assert!(doomed.ack(&delivery.event.id).await.unwrap());
        }
    }
    drop(doomed);
    let mut settled_by_doomed = HashMap::new();
    for id in &published[..3] {
        settled_by_doomed.insert(id.clone(), 1);
    }
    let settled = Arc::new(Mutex::new(settled_by_doomed));
    let [s1, s2] = survivors;
    let tasks = [
        tokio::spawn(drain(s1, settled.clone())),
        tokio::spawn(drain(s2, settled.clone())),
    ];
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(
        settled.lock().unwrap().len(),
        193,
        "the dead consumer's seven wait"
    );
    // Its seven come back once their visibility timeout runs out.
    clock.advance(vis + Duration::from_secs(1));
    let again = [
        consumer(&bus, "inventory-service", "s1", vis, 5).await,
        consumer(&bus, "inventory-service", "s2", vis, 5).await,
    ];
    let [s1, s2] = again;
    let tasks = [
        tokio::spawn(drain(s1, settled.clone())),
        tokio::spawn(drain(s2, settled.clone())),
    ];
    for task in tasks {
        task.await.unwrap();
    }
    let settled = settled.lock().unwrap().clone();
    assert_eq!(settled.len(), published.len(), "every event settled");
    assert!(
        settled.values().all(|&times| times == 1),
        "each settled exactly once"
    );
    assert!(bus.dead_letters(10).await.unwrap().is_empty());
    store.delete_prefix().await.unwrap();
}

#[tokio::test]
async fn two_buses_on_one_redis_share_events_and_groups() {
    let first = store().await;
    let second = RedisStore::connect(&url().await, first.prefix())
        .await
        .unwrap();
    let clock = Arc::new(ManualClock::starting_now());
    let a = RedisEventBus::new(first.clone(), clock.clone(), BusOptions::default())
        .await
        .unwrap();
    let b = RedisEventBus::new(second, clock, BusOptions::default())
        .await
        .unwrap();
    let mut live_b = b.subscribe();
    let vis = Duration::from_secs(30);
    let mut on_a = consumer(&a, "pricing-service", "a", vis, 5).await;
    let mut on_b = consumer(&b, "pricing-service", "b", vis, 5).await;
    let published = a
        .publish(event("PRICE_UPDATED", "pricing-service", 1))
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), live_b.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, published);
    // One group across both replicas: exactly one of its consumers gets the event.
    let first_try = on_b.next(Duration::from_secs(2)).await.unwrap();
    let second_try = on_a.next(Duration::from_millis(200)).await.unwrap();
    assert_eq!(
        first_try.iter().chain(second_try.iter()).count(),
        1,
        "{first_try:?} {second_try:?}"
    );
    first.delete_prefix().await.unwrap();
}

#[tokio::test]
async fn redis_registry_changes_are_announced() {
    use omc_orchestra::registry::{RedisRegistry, RegistryOptions};
    let store = store().await;
    let clock = ManualClock::starting_now();
    let shared: omc_orchestra::SharedClock = Arc::new(clock.clone());
    let registry = RedisRegistry::new(store.clone(), shared.clone(), RegistryOptions::default())
        .await
        .unwrap();
    let bus = RedisEventBus::new(store.clone(), shared, BusOptions::default())
        .await
        .unwrap();
    omc_orchestra::testkit::announce::registry_changes_are_announced(
        Arc::new(registry),
        Arc::new(bus),
        clock,
    )
    .await;
    store.delete_prefix().await.unwrap();
}

#[tokio::test]
async fn acknowledged_stays_acknowledged_and_pending_survives_a_redis_restart() {
    let redis = RedisProcess::start(true).expect("redis-server must be installed for this test");
    let store = RedisStore::connect(&redis.url(), "orc").await.unwrap();
    let clock = ManualClock::starting_now();
    let bus = bus_on(&store, &clock).await;
    let vis = Duration::from_secs(30);
    let mut worker = consumer(&bus, "uppf-service", "u1", vis, 5).await;
    let published = publish_numbered(&bus, "UPPF_CLAIM_SUBMITTED", "uppf", 5).await;
    for expected in &published[..2] {
        let delivery = worker.next(Duration::from_secs(5)).await.unwrap().unwrap();
        assert_eq!(&delivery.event, expected);
        assert!(worker.ack(&delivery.event.id).await.unwrap());
    }
    // Delivered but not acknowledged when Redis goes down.
    let in_flight = worker.next(Duration::from_secs(5)).await.unwrap().unwrap();
    assert_eq!(in_flight.event, published[2]);

    redis.restart().unwrap();

    let mut after = Vec::new();
    while let Some(d) = worker.next(Duration::from_millis(300)).await.unwrap() {
        assert!(worker.ack(&d.event.id).await.unwrap());
        after.push(d.event);
    }
    assert_eq!(after, published[3..].to_vec(), "the rest, once each");
    clock.advance(vis + Duration::from_secs(1));
    let again = worker.next(Duration::from_secs(5)).await.unwrap().unwrap();
    assert_eq!(
        (again.event.clone(), again.deliveries),
        (published[2].clone(), 2)
    );
    assert!(worker.ack(&again.event.id).await.unwrap());
    assert!(worker
        .next(Duration::from_millis(200))
        .await
        .unwrap()
        .is_none());
    let history = bus.history(&Default::default()).await.unwrap();
    assert_eq!(history, published);
}

#[tokio::test]
async fn two_replicas_announce_each_registry_change_once() {
    use omc_orchestra::events::{announce_registry, types, EventQuery};
    use omc_orchestra::registry::{RedisRegistry, Registration, Registry, RegistryOptions};
    let first = store().await;
    let second = RedisStore::connect(&url().await, first.prefix())
        .await
        .unwrap();
    let clock: omc_orchestra::SharedClock = Arc::new(ManualClock::starting_now());
    let mut announcers = Vec::new();
    let mut registries: Vec<Arc<dyn Registry>> = Vec::new();
    let mut buses: Vec<Arc<dyn EventBus>> = Vec::new();
    for store in [first.clone(), second] {
        let registry = RedisRegistry::new(store.clone(), clock.clone(), RegistryOptions::default())
            .await
            .unwrap();
        let bus = RedisEventBus::new(store, clock.clone(), BusOptions::default())
            .await
            .unwrap();
        let (registry, bus): (Arc<dyn Registry>, Arc<dyn EventBus>) =
            (Arc::new(registry), Arc::new(bus));
        announcers.push(announce_registry(registry.clone(), bus.clone()));
        registries.push(registry);
        buses.push(bus);
    }
    let mut live = buses[1].subscribe();
    let instance = registries[0]
        .register(Registration::new("pricing-service", "10.0.0.5", 3006))
        .await
        .unwrap();
    omc_orchestra::testkit::announce::expect_event(
        &mut live,
        types::SERVICE_REGISTERED,
        "registered",
    )
    .await;
    registries[1].deregister(&instance.id).await.unwrap();
    omc_orchestra::testkit::announce::expect_event(
        &mut live,
        types::SERVICE_DEREGISTERED,
        "deregistered",
    )
    .await;
    // Both announcers have seen both changes by now; history holds one event for each.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let history = buses[0].history(&EventQuery::default()).await.unwrap();
    let kinds: Vec<&str> = history.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        kinds,
        vec![types::SERVICE_REGISTERED, types::SERVICE_DEREGISTERED]
    );
    for announcer in announcers {
        announcer.abort();
    }
    first.delete_prefix().await.unwrap();
}

/// A consumer dropped right after it took a batch (before its reads were counted and its
/// unwanted entries acknowledged) loses nothing, and what its group does not want is still
/// never handed out.
#[tokio::test]
async fn a_batch_taken_by_a_consumer_that_dies_comes_back_filtered() {
    use omc_orchestra::events::{ConsumerOptions, EventFilter};
    let store = store().await;
    let clock = ManualClock::starting_now();
    let bus = bus_on(&store, &clock).await;
    let vis = Duration::from_secs(30);
    let mut options = ConsumerOptions::new("pricing-service", "doomed");
    options.filter = EventFilter::types(["PRICE_UPDATED"]);
    options.visibility_timeout = vis;
    let mut doomed = bus.consumer(options.clone()).await.unwrap();
    let mut wanted = Vec::new();
    for n in 0..20 {
        let kind = if n % 2 == 0 {
            "PRICE_UPDATED"
        } else {
            "USER_ACTION"
        };
        let published = bus
            .publish(event(kind, "pricing-service", n))
            .await
            .unwrap();
        if n % 2 == 0 {
            wanted.push(published.id);
        }
    }
    let batch = doomed.next_batch(20, Duration::from_secs(5)).await.unwrap();
    assert!(!batch.is_empty());
    drop(doomed);
    clock.advance(vis + Duration::from_secs(1));
    options.consumer = "survivor".into();
    let mut survivor = bus.consumer(options).await.unwrap();
    let mut got = Vec::new();
    loop {
        let batch = survivor
            .next_batch(7, Duration::from_millis(300))
            .await
            .unwrap();
        if batch.is_empty() {
            break;
        }
        for delivery in &batch {
            assert_eq!(delivery.event.event_type, "PRICE_UPDATED");
        }
        let ids: Vec<String> = batch.iter().map(|d| d.event.id.clone()).collect();
        assert_eq!(survivor.ack_many(&ids).await.unwrap(), ids.len());
        got.extend(ids);
    }
    got.sort();
    wanted.sort();
    assert_eq!(got, wanted);
    store.delete_prefix().await.unwrap();
}

/// A group whose streams vanish under a running consumer (Redis came back empty) is made
/// again from the start of the new streams: what was published before the consumer
/// noticed is delivered too, none skipped. Checked for a consumer taking one event at a
/// time and for one taking batches (plain reads, `redis_read.rs`).
#[tokio::test]
async fn a_group_made_again_after_its_streams_vanished_skips_nothing() {
    let store = store().await;
    let clock = ManualClock::starting_now();
    let bus = bus_on(&store, &clock).await;
    let vis = Duration::from_secs(30);
    let mut single = consumer(&bus, "station-service", "s1", vis, 5).await;
    let mut batch = consumer(&bus, "audit-service", "a1", vis, 5).await;
    let first = publish_numbered(&bus, "STATION_UPDATED", "station", 3).await;
    let mut received = Vec::new();
    while received.len() < first.len() {
        let d = single.next(Duration::from_secs(5)).await.unwrap().unwrap();
        assert!(single.ack(&d.event.id).await.unwrap());
        received.push(d.event);
    }
    assert_eq!(received, first);
    let taken = batch.next_batch(10, Duration::from_secs(5)).await.unwrap();
    let ids: Vec<String> = taken.into_iter().map(|d| d.event.id).collect();
    assert_eq!(batch.ack_many(&ids).await.unwrap(), first.len());

    // This test's own priority streams (and with them both groups) vanish, then events
    // come before the consumers look again: the publishes make the streams anew, without
    // the groups.
    let queues: Vec<String> = ["critical", "high", "normal", "low"]
        .iter()
        .map(|p| store.key("ev", "events", &format!("q:{p}")))
        .collect();
    let _: u64 = redis::cmd("DEL")
        .arg(&queues)
        .query_async(&mut store.connection())
        .await
        .unwrap();
    let published = publish_numbered(&bus, "STATION_UPDATED", "station", 5).await;

    let mut received = Vec::new();
    while let Some(d) = single.next(Duration::from_millis(500)).await.unwrap() {
        assert!(single.ack(&d.event.id).await.unwrap());
        received.push(d.event);
    }
    assert_eq!(received, published, "one at a time: every event, once each");
    let mut received = Vec::new();
    loop {
        let taken = batch
            .next_batch(10, Duration::from_millis(500))
            .await
            .unwrap();
        if taken.is_empty() {
            break;
        }
        let ids: Vec<String> = taken.iter().map(|d| d.event.id.clone()).collect();
        assert_eq!(batch.ack_many(&ids).await.unwrap(), ids.len());
        received.extend(taken.into_iter().map(|d| d.event));
    }
    assert_eq!(received, published, "in batches: every event, once each");
    store.delete_prefix().await.unwrap();
}

/// The live feed keeps one connection while the bus is quiet: its keep-alive pings on a
/// subscribed connection are answered (`["pong", ""]` in RESP2) and taken as answers, not
/// as failures that call for a new connection. An event published afterwards still
/// arrives.
#[tokio::test]
async fn a_quiet_live_feed_keeps_its_connection() {
    use omc_orchestra::events::NewEvent;
    // A Redis of this test's own, so its client list shows this bus's connections only.
    let redis = RedisProcess::start(false).expect("redis-server must be installed for this test");
    let store = RedisStore::connect(&redis.url(), "orc").await.unwrap();
    let clock = ManualClock::starting_now();
    let bus = bus_on(&store, &clock).await;
    let mut live = bus.subscribe();
    // Several keep-alive intervals (a ping after each second of silence).
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let clients: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut store.connection())
        .await
        .unwrap();
    let subscribers: Vec<&str> = clients
        .lines()
        .filter(|line| line.split(' ').any(|field| field == "sub=1"))
        .collect();
    assert_eq!(subscribers.len(), 1, "one live connection: {clients}");
    let age: u64 = subscribers[0]
        .split(' ')
        .find_map(|field| field.strip_prefix("age="))
        .and_then(|age| age.parse().ok())
        .unwrap_or_else(|| panic!("no age in {}", subscribers[0]));
    assert!(
        age >= 3,
        "the live connection was made again {age} s ago: {clients}"
    );
    let published = bus
        .publish(NewEvent::new(
            "PRICE_UPDATED",
            "pricing",
            serde_json::json!({}),
        ))
        .await
        .unwrap();
    let received = tokio::time::timeout(Duration::from_secs(5), live.recv())
        .await
        .expect("the event arrives on the live feed")
        .unwrap();
    assert_eq!(received, published);
}

/// Length of priority stream `priority` of the bus on `store`.
async fn stream_len(store: &RedisStore, priority: &str) -> u64 {
    redis::cmd("XLEN")
        .arg(store.key("ev", "events", &format!("q:{priority}")))
        .query_async(&mut store.connection())
        .await
        .unwrap()
}

/// Trimming keeps what a consumer group has not read or not acknowledged, however far
/// past the backlog that is (below the cap), drops what every group is done with, and
/// trims a stream without groups to about the backlog.
#[tokio::test]
async fn trimming_keeps_what_a_group_has_not_read_or_acknowledged() {
    let store = store().await;
    let clock = ManualClock::starting_now();
    let options = BusOptions {
        backlog: 10,
        backlog_cap: 10_000,
        ..BusOptions::default()
    };
    let bus = RedisEventBus::new(store.clone(), Arc::new(clock.clone()), options)
        .await
        .unwrap();
    // A stream no group reads is trimmed to about the backlog.
    let mut early = event("SYSTEM_ALERT", "health-monitor", 0);
    early.priority = omc_orchestra::events::EventPriority::Low;
    for _ in 0..300 {
        bus.publish(early.clone()).await.unwrap();
    }
    bus.trim_backlog().await.unwrap();
    let low = stream_len(&store, "low").await;
    assert!((10..300).contains(&low), "{low} entries left");

    let vis = Duration::from_secs(30);
    let mut slow = consumer(&bus, "reports", "r1", vis, 5).await;
    let mut fast = consumer(&bus, "billing", "b1", vis, 5).await;
    let published = publish_numbered(&bus, "SALE_RECORDED", "station", 300).await;
    // `reports` takes four and leaves the first unacknowledged; `billing` takes all.
    let unacked = slow.next(Duration::from_secs(5)).await.unwrap().unwrap();
    for _ in 0..3 {
        let delivery = slow.next(Duration::from_secs(5)).await.unwrap().unwrap();
        assert!(slow.ack(&delivery.event.id).await.unwrap());
    }
    let mut taken = 0;
    while taken < published.len() {
        let batch = fast.next_batch(100, Duration::from_secs(5)).await.unwrap();
        let ids: Vec<String> = batch.into_iter().map(|d| d.event.id).collect();
        taken += fast.ack_many(&ids).await.unwrap();
    }
    bus.trim_backlog().await.unwrap();
    let stats = bus.stats().await.unwrap();
    let reports = stats.groups.iter().find(|g| g.group == "reports").unwrap();
    assert_eq!((reports.lag, reports.pending), (296, 1));
    assert!(stream_len(&store, "normal").await >= 300);

    let mut rest = Vec::new();
    while let Some(delivery) = slow.next(Duration::from_millis(300)).await.unwrap() {
        assert!(slow.ack(&delivery.event.id).await.unwrap());
        rest.push(delivery.event);
    }
    assert_eq!(rest, published[4..].to_vec());
    // The unacknowledged one is still there to come back.
    clock.advance(vis + Duration::from_secs(1));
    let again = slow.next(Duration::from_secs(5)).await.unwrap().unwrap();
    assert_eq!((&again.event, again.deliveries), (&unacked.event, 2));
    assert!(slow.ack(&again.event.id).await.unwrap());
    assert!(bus.dead_letters(10).await.unwrap().is_empty());
    // Every group is done with everything: what is left is at most a partly used node.
    bus.trim_backlog().await.unwrap();
    let normal = stream_len(&store, "normal").await;
    assert!(normal < 150, "{normal} entries left");
    assert_eq!(bus.stats().await.unwrap().trimmed_unread, 0);
    store.delete_prefix().await.unwrap();
}

/// What the cap drops unread is counted in the store, and reported (logged) once, by
/// whichever bus maintains first.
#[tokio::test]
async fn what_the_cap_drops_unread_is_reported_once() {
    let store = store().await;
    let clock = Arc::new(ManualClock::starting_now());
    let options = BusOptions {
        backlog: 10,
        backlog_cap: 100,
        ..BusOptions::default()
    };
    let bus = RedisEventBus::new(store.clone(), clock.clone(), options)
        .await
        .unwrap();
    let other = RedisEventBus::new(store.clone(), clock, options)
        .await
        .unwrap();
    let _stuck = consumer(&bus, "reports", "r1", Duration::from_secs(30), 5).await;
    publish_numbered(&bus, "SALE_RECORDED", "station", 400).await;
    let counted = bus.stats().await.unwrap().trimmed_unread;
    assert!(counted >= 299, "{counted}");
    // Publishing starts maintenance in the background, which may have reported some.
    let reported = bus.trim_backlog().await.unwrap() + other.trim_backlog().await.unwrap();
    assert!(reported <= counted);
    assert_eq!(bus.trim_backlog().await.unwrap(), 0);
    assert_eq!(other.trim_backlog().await.unwrap(), 0);
    let told: u64 = redis::cmd("HGET")
        .arg(store.key("ev", "events", "stats"))
        .arg("trimmed-unread-told")
        .query_async(&mut store.connection())
        .await
        .unwrap();
    assert_eq!(told, counted);
    store.delete_prefix().await.unwrap();
}

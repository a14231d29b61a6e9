//! A stalled Redis under publishes without idempotency keys: a publish whose outcome is
//! unknown (the call timed out) is not sent again, so no event is stored twice, and every
//! acknowledged one is stored.

use omc_orchestra::events::{BusOptions, EventBus, EventQuery, NewEvent, RedisEventBus};
use omc_orchestra::testkit::redis::RedisProcess;
use omc_orchestra::{clock, RedisStore};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

#[tokio::test]
async fn a_stall_longer_than_the_response_timeout_stores_no_event_twice() {
    let redis = RedisProcess::start(false).expect("redis-server must be installed for this test");
    let store = RedisStore::connect(&redis.url(), "orc").await.unwrap();
    let bus = Arc::new(
        RedisEventBus::new(store, clock::system(), BusOptions::default())
            .await
            .unwrap(),
    );
    let publish = |n: usize| {
        let bus = bus.clone();
        async move {
            let event = NewEvent::new(
                "UPPF_CLAIM_SUBMITTED",
                "uppf",
                serde_json::json!({ "n": n }),
            );
            bus.publish(event).await.is_ok()
        }
    };
    let before: Vec<_> = futures::future::join_all((0..20).map(publish)).await;
    assert!(before.iter().all(|ok| *ok), "publishes before the stall");

    redis.pause();
    let during = tokio::spawn(futures::future::join_all((20..80).map(publish)));
    // Past the connection's five-second response timeout: each call in flight times out
    // with Redis holding it, unanswered, in its socket buffer.
    tokio::time::sleep(Duration::from_secs(7)).await;
    redis.resume();
    let during = during.await.unwrap();
    let acknowledged: Vec<usize> = (0..20).chain((20..80).filter(|n| during[n - 20])).collect();

    // What Redis holds once it went on: each event at most once, each acknowledged one.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let query = EventQuery {
        limit: Some(1_000),
        ..EventQuery::default()
    };
    let stored = bus.history(&query).await.unwrap();
    let mut copies: HashMap<u64, usize> = HashMap::new();
    for event in &stored {
        let n = event.data["n"].as_u64().unwrap();
        *copies.entry(n).or_default() += 1;
    }
    let twice: Vec<_> = copies.iter().filter(|(_, c)| **c > 1).collect();
    assert!(twice.is_empty(), "stored more than once: {twice:?}");
    for n in acknowledged {
        assert_eq!(copies.get(&(n as u64)), Some(&1), "acknowledged event {n}");
    }
}

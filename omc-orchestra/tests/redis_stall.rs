//! A Redis that stalls past the connection's response timeout under enqueues, publishes
//! and log batches that carry no key of the caller's: each call is sent again with the
//! batch key it got before its first attempt, so every call is acknowledged once Redis
//! goes on, and nothing is stored twice.

use omc_orchestra::events::{BusOptions, EventBus, EventQuery, NewEvent, RedisEventBus};
use omc_orchestra::jobs::{
    JobAdmin, JobFilter, JobQueue, JobState, NewJob, QueueOptions, RedisJobQueue,
};
use omc_orchestra::logs::{LogLevel, LogQuery, LogRecord, LogSink, RedisLogSink};
use omc_orchestra::testkit::redis::RedisProcess;
use omc_orchestra::{clock, RedisStore};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Calls `0..20` before a stall and `20..80` during one of seven seconds; every one must
/// be acknowledged.
async fn through_a_stall<F, Fut>(redis: &RedisProcess, call: F)
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<(), String>> + Send,
{
    let before = futures::future::join_all((0..20).map(call.clone())).await;
    assert!(
        before.iter().all(Result::is_ok),
        "before the stall: {before:?}"
    );
    redis.pause();
    let during = tokio::spawn(async move { futures::future::join_all((20..80).map(call)).await });
    // Past the connection's five-second response timeout: each call in flight times out
    // with Redis holding it, unanswered, in its socket buffer, and is sent again.
    tokio::time::sleep(Duration::from_secs(7)).await;
    redis.resume();
    let during = during.await.unwrap();
    let failed: Vec<_> = during.iter().filter(|r| r.is_err()).collect();
    assert!(failed.is_empty(), "calls not acknowledged: {failed:?}");
}

/// Every number in `0..80` stored exactly once.
fn each_once(numbers: impl Iterator<Item = u64>) {
    let mut copies: HashMap<u64, usize> = HashMap::new();
    for n in numbers {
        *copies.entry(n).or_default() += 1;
    }
    let wrong: Vec<_> = (0..80)
        .filter(|n| copies.get(n) != Some(&1))
        .map(|n| (n, copies.get(&n).copied().unwrap_or(0)))
        .collect();
    assert!(
        wrong.is_empty(),
        "(number, copies) stored not once: {wrong:?}"
    );
}

async fn private_redis() -> (RedisProcess, RedisStore) {
    let redis = RedisProcess::start(false).expect("redis-server must be installed for this test");
    let store = RedisStore::connect(&redis.url(), "orc").await.unwrap();
    (redis, store)
}

#[tokio::test]
async fn enqueues_through_a_stall_are_stored_once() {
    let (redis, store) = private_redis().await;
    let queue = Arc::new(
        RedisJobQueue::new(store, "default", clock::system(), QueueOptions::default()).unwrap(),
    );
    let enqueuer = queue.clone();
    through_a_stall(&redis, move |n| {
        let queue = enqueuer.clone();
        async move {
            let job = NewJob::new("uppf-processing", serde_json::json!({ "n": n }));
            queue
                .enqueue(job)
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        }
    })
    .await;
    let filter = JobFilter {
        state: Some(JobState::Waiting),
        limit: Some(1_000),
        ..JobFilter::default()
    };
    let stored = queue.list(&filter).await.unwrap();
    each_once(stored.iter().map(|job| job.data["n"].as_u64().unwrap()));
}

#[tokio::test]
async fn publishes_through_a_stall_are_stored_once() {
    let (redis, store) = private_redis().await;
    let bus = Arc::new(
        RedisEventBus::new(store, clock::system(), BusOptions::default())
            .await
            .unwrap(),
    );
    let publisher = bus.clone();
    through_a_stall(&redis, move |n| {
        let bus = publisher.clone();
        async move {
            let data = serde_json::json!({ "n": n });
            let event = NewEvent::new("UPPF_CLAIM_SUBMITTED", "uppf", data);
            bus.publish(event)
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        }
    })
    .await;
    let query = EventQuery {
        limit: Some(1_000),
        ..EventQuery::default()
    };
    let stored = bus.history(&query).await.unwrap();
    each_once(stored.iter().map(|event| event.data["n"].as_u64().unwrap()));
}

#[tokio::test]
async fn log_batches_through_a_stall_are_stored_once() {
    let (redis, store) = private_redis().await;
    let sink = Arc::new(RedisLogSink::new(store, clock::system()).await.unwrap());
    let writer = sink.clone();
    through_a_stall(&redis, move |n| {
        let sink = writer.clone();
        async move {
            let record = LogRecord::new(
                chrono::Utc::now(),
                LogLevel::Info,
                "pricing",
                format!("n={n}"),
            );
            sink.write(vec![record]).await.map_err(|e| e.to_string())
        }
    })
    .await;
    let query = LogQuery {
        limit: Some(1_000),
        ..LogQuery::default()
    };
    let stored = sink.search_page(&query).await.unwrap().records;
    each_once(stored.iter().map(|record| {
        let n = record.message.strip_prefix("n=").unwrap();
        n.parse::<u64>().unwrap()
    }));
}

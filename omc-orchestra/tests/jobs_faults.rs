//! A stalled Redis under enqueues without an id or a unique key: an enqueue whose
//! outcome is unknown (the call timed out) is not sent again, so no job is stored twice,
//! and every acknowledged one is stored.

use omc_orchestra::jobs::{JobFilter, JobQueue, JobState, NewJob, QueueOptions, RedisJobQueue};
use omc_orchestra::testkit::redis::RedisProcess;
use omc_orchestra::{clock, RedisStore};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

#[tokio::test]
async fn a_stall_longer_than_the_response_timeout_stores_no_job_twice() {
    let redis = RedisProcess::start(false).expect("redis-server must be installed for this test");
    let store = RedisStore::connect(&redis.url(), "orc").await.unwrap();
    let queue = Arc::new(
        RedisJobQueue::new(store, "default", clock::system(), QueueOptions::default()).unwrap(),
    );
    let enqueue = |n: usize| {
        let queue = queue.clone();
        async move {
            let job = NewJob::new("uppf-processing", serde_json::json!({ "n": n }));
            queue.enqueue(job).await.is_ok()
        }
    };
    let before = futures::future::join_all((0..20).map(enqueue)).await;
    assert!(before.iter().all(|ok| *ok), "enqueues before the stall");

    redis.pause();
    let during = tokio::spawn(futures::future::join_all((20..80).map(enqueue)));
    // Past the connection's five-second response timeout: each call in flight times out
    // with Redis holding it, unanswered, in its socket buffer.
    tokio::time::sleep(Duration::from_secs(7)).await;
    redis.resume();
    let during = during.await.unwrap();
    let acknowledged: Vec<usize> = (0..20).chain((20..80).filter(|n| during[n - 20])).collect();

    tokio::time::sleep(Duration::from_millis(500)).await;
    let filter = JobFilter {
        state: Some(JobState::Waiting),
        limit: Some(1_000),
        ..JobFilter::default()
    };
    let stored = queue.list(&filter).await.unwrap();
    let mut copies: HashMap<u64, usize> = HashMap::new();
    for job in &stored {
        *copies.entry(job.data["n"].as_u64().unwrap()).or_default() += 1;
    }
    let twice: Vec<_> = copies.iter().filter(|(_, c)| **c > 1).collect();
    assert!(twice.is_empty(), "stored more than once: {twice:?}");
    for n in acknowledged {
        assert_eq!(copies.get(&(n as u64)), Some(&1), "acknowledged job {n}");
    }
}

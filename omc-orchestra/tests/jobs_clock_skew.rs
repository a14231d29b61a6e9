//! Workers whose host clocks disagree by minutes share one Redis queue: leases and delays
//! are decided on Redis's clock, so no job is run twice or early because of the skew.

use chrono::{DateTime, Utc};
use omc_orchestra::clock::Clock;
use omc_orchestra::jobs::{FetchRequest, JobQueue, JobState, NewJob, QueueOptions, RedisJobQueue};
use omc_orchestra::testkit::redis::store;
use omc_orchestra::RedisStore;
use std::sync::Arc;
use std::time::Duration;

/// The wall clock of a host that is off by `offset`.
#[derive(Debug)]
struct Skewed {
    offset: chrono::Duration,
}

impl Clock for Skewed {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.offset
    }
}

fn queue(store: &RedisStore, minutes: i64) -> RedisJobQueue {
    let clock = Arc::new(Skewed {
        offset: chrono::Duration::minutes(minutes),
    });
    RedisJobQueue::new(store.clone(), "default", clock, QueueOptions::default()).unwrap()
}

#[tokio::test]
async fn a_worker_whose_clock_runs_fast_requeues_no_lease_still_running() {
    let store = store().await;
    let on_time = queue(&store, 0);
    let fast = queue(&store, 10);
    on_time
        .enqueue(NewJob::new("reconciliation", serde_json::json!({})))
        .await
        .unwrap();
    let lease = FetchRequest::new("on-time", Duration::from_secs(60), 1);
    let leased = on_time.fetch_batch(&lease).await.unwrap();
    assert_eq!(leased.len(), 1);

    // Ten minutes ahead, this worker would see the 60 s lease long over.
    let maintenance = fast.maintain().await.unwrap();
    assert!(maintenance.stalled.is_empty(), "{maintenance:?}");
    let again = fast
        .fetch_batch(&FetchRequest::new("fast", Duration::from_secs(60), 1))
        .await
        .unwrap();
    assert!(again.is_empty(), "leased twice: {again:?}");

    // Its renewal is on its own clock: sixty seconds from its now.
    let renewed = fast
        .extend(&leased[0].job.id, &leased[0].token, Duration::from_secs(60))
        .await
        .unwrap();
    let ahead = renewed.expires_at - (Utc::now() + chrono::Duration::minutes(10));
    assert!(
        ahead > chrono::Duration::seconds(50) && ahead <= chrono::Duration::seconds(61),
        "renewed lease ends {ahead} from the fast clock's now"
    );
    let job = on_time
        .complete(
            &leased[0].job.id,
            &leased[0].token,
            serde_json::json!("done"),
        )
        .await
        .unwrap();
    assert_eq!(job.state, JobState::Completed);
    assert_eq!(job.attempts, 1, "run once");
    store.delete_prefix().await.unwrap();
}

#[tokio::test]
async fn a_delay_set_by_a_slow_clock_is_not_cut_short() {
    let store = store().await;
    let slow = queue(&store, -10);
    let on_time = queue(&store, 0);
    let mut job = NewJob::new("price-calculation", serde_json::json!({}));
    job.delay_ms = Some(2_000);
    let queued = slow.enqueue(job).await.unwrap();
    assert_eq!(queued.state, JobState::Delayed);

    on_time.maintain().await.unwrap();
    let request = FetchRequest::new("on-time", Duration::from_secs(30), 1);
    assert!(
        on_time.fetch_batch(&request).await.unwrap().is_empty(),
        "a two-second delay ran at once"
    );
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    on_time.maintain().await.unwrap();
    let leased = on_time.fetch_batch(&request).await.unwrap();
    assert_eq!(leased.len(), 1, "the delay is over");
    assert_eq!(leased[0].job.id, queued.id);
    store.delete_prefix().await.unwrap();
}

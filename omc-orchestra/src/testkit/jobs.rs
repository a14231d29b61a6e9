//! The job queue contract (and the cron scheduler on top of it), checked the same way
//! for every backend, on a [`ManualClock`].

pub use super::cron::{cron_catch_up_pause_remove, cron_fires_once_per_tick};
pub use super::jobs_ops::{
    cancel_and_progress, complete_many_in_one_go, failed_attempts_in_order, keep_no_completed,
    list_and_stats, payloads_round_trip,
};
use crate::jobs::{
    Backoff, BackoffKind, FetchRequest, JobPriority, JobState, JobStore, NewJob, QueueOptions,
};
use crate::{Clock, Error, ManualClock};
use chrono::{TimeZone, Utc};
use futures::future::BoxFuture;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// Builds a fresh, empty queue on `clock` with `options`.
pub type MakeQueue =
    Arc<dyn Fn(ManualClock, QueueOptions) -> BoxFuture<'static, Arc<dyn JobStore>> + Send + Sync>;

/// The lease the checks take.
pub(crate) const LEASE: Duration = Duration::from_secs(30);

/// Every waiting job of `queue`, page by page (for tests that count what was kept).
pub async fn waiting_jobs(queue: &dyn JobStore) -> Vec<crate::jobs::Job> {
    let mut jobs = Vec::new();
    loop {
        let filter = crate::jobs::JobFilter {
            state: Some(crate::jobs::JobState::Waiting),
            limit: Some(1_000),
            offset: jobs.len(),
            ..crate::jobs::JobFilter::default()
        };
        let page = queue.list(&filter).await.expect("the waiting jobs list");
        if page.is_empty() {
            return jobs;
        }
        jobs.extend(page);
    }
}

/// A clock on a round minute, so cron ticks fall where the checks expect them.
pub fn round_clock() -> ManualClock {
    ManualClock::new(
        Utc.with_ymd_and_hms(2026, 3, 2, 8, 0, 0)
            .single()
            .unwrap_or_default(),
    )
}

pub(crate) async fn fresh(make: &MakeQueue) -> (Arc<dyn JobStore>, ManualClock) {
    let clock = round_clock();
    (make(clock.clone(), QueueOptions::default()).await, clock)
}

pub(crate) fn job(job_type: &str, priority: JobPriority) -> NewJob {
    let mut job = NewJob::new(job_type, json!({"stationId": "STN001"}));
    job.priority = priority;
    job
}

pub(crate) async fn next_id(queue: &dyn JobStore) -> Option<String> {
    queue.fetch("w", LEASE).await.unwrap().map(|l| l.job.id)
}

/// High before normal before low before background; FIFO within a priority; a batch
/// fetch keeps that order.
pub async fn priority_order(make: &MakeQueue) {
    let (queue, _) = fresh(make).await;
    use JobPriority::*;
    let mut ids = Vec::new();
    for p in [Normal, Low, High, Normal, Background, High] {
        ids.push(queue.enqueue(job("price-calculation", p)).await.unwrap().id);
    }
    let batch = queue
        .fetch_batch(&FetchRequest::new("w", LEASE, 3))
        .await
        .unwrap();
    let got: Vec<&str> = batch.iter().map(|l| l.job.id.as_str()).collect();
    assert_eq!(got, [&ids[2], &ids[5], &ids[0]]);
    for lease in &batch {
        assert_eq!(lease.job.state, JobState::Active);
        assert_eq!(lease.job.worker.as_deref(), Some("w"));
        assert_eq!(queue.get(&lease.job.id).await.unwrap(), lease.job);
    }
    for expected in [&ids[3], &ids[1], &ids[4]] {
        assert_eq!(next_id(&*queue).await.as_ref(), Some(expected));
    }
    assert_eq!(next_id(&*queue).await, None);
}

/// Only jobs of the asked types are fetched, in priority order.
pub async fn fetch_by_type(make: &MakeQueue) {
    let (queue, _) = fresh(make).await;
    queue
        .enqueue(job("report-generation", JobPriority::High))
        .await
        .unwrap();
    let want = queue
        .enqueue(job("inventory-sync", JobPriority::Low))
        .await
        .unwrap();
    let mut request = FetchRequest::new("w", LEASE, 5);
    request.types = vec!["inventory-sync".into()];
    let got = queue.fetch_batch(&request).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].job.id, want.id);
}

/// A typed fetch finds the oldest ready job of its types however many jobs of other
/// types wait ahead of it.
pub async fn typed_fetch_ignores_what_waits_ahead(make: &MakeQueue) {
    let (queue, _) = fresh(make).await;
    for _ in 0..5_000 {
        queue
            .enqueue(job("report-generation", JobPriority::High))
            .await
            .unwrap();
    }
    let want = queue
        .enqueue(job("inventory-sync", JobPriority::Background))
        .await
        .unwrap();
    let mut request = FetchRequest::new("w", LEASE, 1);
    request.types = vec!["inventory-sync".into()];
    let got = queue.fetch_batch(&request).await.unwrap();
    let got: Vec<&str> = got.iter().map(|l| l.job.id.as_str()).collect();
    assert_eq!(got, [want.id.as_str()]);
    assert_eq!(queue.stats().await.unwrap().waiting, 5_000);
}

/// A delayed job (or one with a run-at time) runs no earlier than asked.
pub async fn delay_and_run_at(make: &MakeQueue) {
    let (queue, clock) = fresh(make).await;
    let mut delayed = job("database-backup", JobPriority::High);
    delayed.delay_ms = Some(5_000);
    let delayed = queue.enqueue(delayed).await.unwrap();
    assert_eq!(delayed.state, JobState::Delayed);
    assert_eq!(queue.get(&delayed.id).await.unwrap(), delayed);
    let mut at = job("report-generation", JobPriority::High);
    at.run_at = Some(clock.now() + chrono::Duration::seconds(8));
    let at = queue.enqueue(at).await.unwrap();
    clock.advance(Duration::from_millis(4_999));
    assert_eq!(next_id(&*queue).await, None);
    clock.advance(Duration::from_millis(1));
    assert_eq!(next_id(&*queue).await, Some(delayed.id));
    clock.advance(Duration::from_millis(2_999));
    assert_eq!(next_id(&*queue).await, None);
    clock.advance(Duration::from_millis(1));
    assert_eq!(next_id(&*queue).await, Some(at.id));
}

/// Retries wait as the backoff says: exponential doubles, fixed repeats, jitter only
/// shortens.
pub async fn backoff_times(make: &MakeQueue) {
    let (queue, clock) = fresh(make).await;
    let mut new = job("uppf-processing", JobPriority::Normal);
    new.max_attempts = Some(4);
    new.backoff = Some(Backoff {
        kind: BackoffKind::Exponential,
        delay_ms: 1_000,
        jitter: 0.0,
    });
    let id = queue.enqueue(new).await.unwrap().id;
    for wait in [1_000u64, 2_000, 4_000] {
        let lease = queue.fetch("w", LEASE).await.unwrap().unwrap();
        assert_eq!(queue.get(&id).await.unwrap(), lease.job);
        let failed = queue
            .fail(&id, &lease.token, "upstream down")
            .await
            .unwrap();
        assert_eq!(failed.state, JobState::Delayed);
        assert_eq!(failed.error.as_deref(), Some("upstream down"));
        assert_eq!(
            failed.run_at,
            clock.now() + chrono::Duration::milliseconds(wait as i64)
        );
        clock.advance(Duration::from_millis(wait - 1));
        assert_eq!(next_id(&*queue).await, None);
        clock.advance(Duration::from_millis(1));
    }
    let lease = queue.fetch("w", LEASE).await.unwrap().unwrap();
    assert_eq!(lease.job.attempts, 4);
    queue
        .complete(&id, &lease.token, json!(null))
        .await
        .unwrap();

    let mut fixed = job("uppf-processing", JobPriority::Normal);
    fixed.backoff = Some(Backoff {
        kind: BackoffKind::Fixed,
        delay_ms: 500,
        jitter: 0.0,
    });
    let id = queue.enqueue(fixed).await.unwrap().id;
    for _ in 0..2 {
        let lease = queue.fetch("w", LEASE).await.unwrap().unwrap();
        let failed = queue.fail(&id, &lease.token, "again").await.unwrap();
        assert_eq!(
            failed.run_at,
            clock.now() + chrono::Duration::milliseconds(500)
        );
        clock.advance(Duration::from_millis(500));
    }
    let lease = queue.fetch("w", LEASE).await.unwrap().unwrap();
    queue
        .complete(&id, &lease.token, json!(null))
        .await
        .unwrap();

    let mut jittered = job("uppf-processing", JobPriority::Normal);
    jittered.backoff = Some(Backoff {
        kind: BackoffKind::Exponential,
        delay_ms: 1_000,
        jitter: 0.5,
    });
    let id = queue.enqueue(jittered).await.unwrap().id;
    let lease = queue.fetch("w", LEASE).await.unwrap().unwrap();
    let failed = queue.fail(&id, &lease.token, "jitter").await.unwrap();
    let wait = (failed.run_at - clock.now()).num_milliseconds();
    assert!((500..=1_000).contains(&wait), "jittered wait {wait} ms");
}

/// A lease that runs out puts the job back: it runs exactly once more, and the old
/// holder can no longer complete it. Renewed leases hold.
pub async fn lease_expiry_reruns_once(make: &MakeQueue) {
    let (queue, clock) = fresh(make).await;
    let id = queue
        .enqueue(job("inventory-sync", JobPriority::Normal))
        .await
        .unwrap()
        .id;
    let first = queue.fetch("dead-worker", LEASE).await.unwrap().unwrap();
    clock.advance(LEASE - Duration::from_millis(1));
    assert_eq!(next_id(&*queue).await, None);
    clock.advance(Duration::from_millis(1));
    let second = queue.fetch("healthy", LEASE).await.unwrap().unwrap();
    assert_eq!(
        (second.job.id.as_str(), second.job.attempts),
        (id.as_str(), 2)
    );
    assert_ne!(second.token, first.token);
    let stale = queue.complete(&id, &first.token, json!("late")).await;
    assert!(matches!(stale, Err(Error::Conflict(_))), "{stale:?}");
    let done = queue
        .complete(&id, &second.token, json!({"synced": 3}))
        .await
        .unwrap();
    assert_eq!(done.state, JobState::Completed);
    assert_eq!(done.result, Some(json!({"synced": 3})));
    clock.advance(LEASE * 3);
    assert_eq!(next_id(&*queue).await, None);
    assert_eq!(queue.stats().await.unwrap().completed, 1);

    let id = queue
        .enqueue(job("database-backup", JobPriority::Normal))
        .await
        .unwrap()
        .id;
    let lease = queue
        .fetch("long", Duration::from_secs(10))
        .await
        .unwrap()
        .unwrap();
    for _ in 0..3 {
        clock.advance(Duration::from_secs(8));
        let renewed = queue
            .extend(&id, &lease.token, Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(
            renewed.expires_at,
            clock.now() + chrono::Duration::seconds(10)
        );
        assert_eq!(next_id(&*queue).await, None);
    }
    queue
        .complete(&id, &lease.token, json!(null))
        .await
        .unwrap();
}

/// Out of attempts, a job fails for good; retry-failed brings it back with fresh
/// attempts.
pub async fn failed_then_retry_failed(make: &MakeQueue) {
    let (queue, _) = fresh(make).await;
    let mut new = job("financial-reconciliation", JobPriority::High);
    new.max_attempts = Some(2);
    new.backoff = Some(Backoff {
        kind: BackoffKind::Fixed,
        delay_ms: 0,
        jitter: 0.0,
    });
    let id = queue.enqueue(new).await.unwrap().id;
    for attempt in 1..=2 {
        let lease = queue.fetch("w", LEASE).await.unwrap().unwrap();
        assert_eq!(lease.job.attempts, attempt);
        queue
            .fail(&id, &lease.token, "ledger locked")
            .await
            .unwrap();
    }
    let failed = queue.get(&id).await.unwrap();
    assert_eq!(failed.state, JobState::Failed);
    assert!(failed.finished_at.is_some());
    assert_eq!(next_id(&*queue).await, None);
    let stats = queue.stats().await.unwrap();
    assert_eq!((stats.failed, stats.last_minute.failed), (1, 2));
    assert_eq!(queue.retry_failed().await.unwrap(), 1);
    let lease = queue.fetch("w", LEASE).await.unwrap().unwrap();
    assert_eq!(
        (lease.job.id.as_str(), lease.job.attempts),
        (id.as_str(), 1)
    );
    queue
        .complete(&id, &lease.token, json!(null))
        .await
        .unwrap();
    assert_eq!(queue.stats().await.unwrap().failed, 0);

    // A worker that knows a retry cannot help fails it for good on its first attempt;
    // a stale token changes nothing.
    let lease = queue.fetch("w", LEASE).await.unwrap();
    assert!(lease.is_none());
    let id = queue
        .enqueue(job("uppf-processing", JobPriority::Normal))
        .await
        .unwrap()
        .id;
    let lease = queue.fetch("w", LEASE).await.unwrap().unwrap();
    let stale = queue
        .fail_for_good(&id, "not-the-token", "claim rejected")
        .await;
    assert!(matches!(stale, Err(crate::Error::Conflict(_))), "{stale:?}");
    let failed = queue
        .fail_for_good(&id, &lease.token, "claim rejected")
        .await
        .unwrap();
    assert_eq!((failed.state, failed.attempts), (JobState::Failed, 1));
    assert_eq!(failed.error.as_deref(), Some("claim rejected"));
}

/// A second enqueue with the unique key of a pending job returns that job; once it
/// finished, the key is free. A known id returns the job too.
pub async fn unique_key_dedup(make: &MakeQueue) {
    let (queue, _) = fresh(make).await;
    let mut new = job("inventory-sync", JobPriority::Normal);
    new.unique_key = Some("sync:STN001".into());
    new.backoff = Some(Backoff {
        kind: BackoffKind::Fixed,
        delay_ms: 250,
        jitter: 0.5,
    });
    new.timeout_ms = Some(90_000);
    let first = queue.enqueue(new.clone()).await.unwrap();
    assert_eq!(queue.get(&first.id).await.unwrap(), first);
    assert_eq!(queue.enqueue(new.clone()).await.unwrap(), first);
    assert_eq!(queue.stats().await.unwrap().waiting, 1);
    let lease = queue.fetch("w", LEASE).await.unwrap().unwrap();
    assert_eq!(queue.enqueue(new.clone()).await.unwrap().id, first.id);
    queue
        .complete(&first.id, &lease.token, json!(null))
        .await
        .unwrap();
    let second = queue.enqueue(new).await.unwrap();
    assert_ne!(second.id, first.id);
    let mut named = job("report-generation", JobPriority::Low);
    named.id = Some("monthly-2026-03".into());
    let a = queue.enqueue(named.clone()).await.unwrap();
    let b = queue.enqueue(named).await.unwrap();
    assert_eq!(
        (a.id.as_str(), b.created_at),
        ("monthly-2026-03", a.created_at)
    );
}

/// Finished jobs are trimmed by count at once and by age at maintenance.
pub async fn trimming(make: &MakeQueue) {
    let clock = round_clock();
    let options = QueueOptions {
        keep_completed: 2,
        completed_max_age: Duration::from_secs(3600),
        keep_failed: 1,
        failed_max_age: Duration::from_secs(3600),
    };
    let queue = make(clock.clone(), options).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let id = queue
            .enqueue(job("system-maintenance", JobPriority::Normal))
            .await
            .unwrap()
            .id;
        let lease = queue.fetch("w", LEASE).await.unwrap().unwrap();
        clock.advance(Duration::from_millis(10));
        queue
            .complete(&id, &lease.token, json!(null))
            .await
            .unwrap();
        ids.push(id);
    }
    for _ in 0..2 {
        let mut new = job("system-maintenance", JobPriority::Normal);
        new.max_attempts = Some(1);
        let id = queue.enqueue(new).await.unwrap().id;
        let lease = queue.fetch("w", LEASE).await.unwrap().unwrap();
        clock.advance(Duration::from_millis(10));
        queue.fail(&id, &lease.token, "no").await.unwrap();
    }
    let stats = queue.stats().await.unwrap();
    assert_eq!((stats.completed, stats.failed), (2, 1));
    assert!(matches!(
        queue.get(&ids[0]).await,
        Err(Error::NotFound { .. })
    ));
    assert!(queue.get(&ids[2]).await.is_ok());
    clock.advance(Duration::from_secs(3601));
    assert_eq!(queue.maintain().await.unwrap().trimmed, 3);
    let stats = queue.stats().await.unwrap();
    assert_eq!((stats.completed, stats.failed), (0, 0));
}

/// One failed job goes back to waiting with fresh attempts; a job that is not failed
/// is a conflict and an unknown id is not found.
pub async fn retry_one_failed_job(make: &MakeQueue) {
    let (queue, _) = fresh(make).await;
    let mut new = job("uppf-claim", JobPriority::Normal);
    new.max_attempts = Some(1);
    let id = queue.enqueue(new).await.unwrap().id;
    let other = queue
        .enqueue(job("uppf-claim", JobPriority::Low))
        .await
        .unwrap()
        .id;
    assert!(matches!(
        queue.retry(&other).await,
        Err(crate::Error::Conflict(_))
    ));
    let lease = queue.fetch("w", LEASE).await.unwrap().unwrap();
    assert_eq!(lease.job.id, id);
    queue
        .fail(&id, &lease.token, "claim portal down")
        .await
        .unwrap();
    assert_eq!(queue.get(&id).await.unwrap().state, JobState::Failed);
    let retried = queue.retry(&id).await.unwrap();
    assert_eq!((retried.state, retried.attempts), (JobState::Waiting, 0));
    assert_eq!(queue.stats().await.unwrap().failed, 0);
    let lease = queue.fetch("w", LEASE).await.unwrap().unwrap();
    assert_eq!(
        (lease.job.id.as_str(), lease.job.attempts),
        (id.as_str(), 1)
    );
    assert!(matches!(
        queue.retry("no-such-job").await,
        Err(crate::Error::NotFound { .. })
    ));
}

/// Every check of the job queue contract, in turn.
pub async fn run_all(make: MakeQueue) {
    priority_order(&make).await;
    fetch_by_type(&make).await;
    typed_fetch_ignores_what_waits_ahead(&make).await;
    delay_and_run_at(&make).await;
    backoff_times(&make).await;
    lease_expiry_reruns_once(&make).await;
    complete_many_in_one_go(&make).await;
    failed_then_retry_failed(&make).await;
    retry_one_failed_job(&make).await;
    failed_attempts_in_order(&make).await;
    unique_key_dedup(&make).await;
    trimming(&make).await;
    keep_no_completed(&make).await;
    payloads_round_trip(&make).await;
    cancel_and_progress(&make).await;
    list_and_stats(&make).await;
    cron_catch_up_pause_remove(&make).await;
}

//! More of the job queue contract: batch completion, cancellation and progress, listing
//! and stats, keeping no completed jobs, payloads that come back unchanged, the failed
//! attempts kept.

use super::jobs::{fresh, job, next_id, round_clock, MakeQueue, LEASE};
use crate::jobs::{
    Backoff, BackoffKind, Completion, FetchRequest, JobFilter, JobPriority, JobState, NewJob,
    QueueOptions, FAILED_ATTEMPTS_KEPT,
};
use crate::{Clock, Error};
use serde_json::json;
use std::time::Duration;

/// Several completions in one call: each gets its own outcome, and new leases come
/// back for the next jobs.
pub async fn complete_many_in_one_go(make: &MakeQueue) {
    let (queue, _) = fresh(make).await;
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(
            queue
                .enqueue(job("price-calculation", JobPriority::Normal))
                .await
                .unwrap()
                .id,
        );
    }
    let held = queue
        .fetch_batch(&FetchRequest::new("w", LEASE, 2))
        .await
        .unwrap();
    let done = [
        Completion {
            id: held[0].job.id.clone(),
            token: held[0].token.clone(),
            result: json!(1),
        },
        Completion {
            id: held[1].job.id.clone(),
            token: "stolen".into(),
            result: json!(2),
        },
    ];
    let (outcomes, next) = queue
        .complete_many(&done, &FetchRequest::new("w", LEASE, 2))
        .await
        .unwrap();
    assert!(outcomes[0].is_ok());
    assert!(matches!(outcomes[1], Err(Error::Conflict(_))));
    let next: Vec<&str> = next.iter().map(|l| l.job.id.as_str()).collect();
    assert_eq!(next, [&ids[2], &ids[3]]);
    let first = queue.get(&ids[0]).await.unwrap();
    assert_eq!(
        (first.state, first.result),
        (JobState::Completed, Some(json!(1)))
    );
    assert_eq!(queue.get(&ids[1]).await.unwrap().state, JobState::Active);
}

/// Cancelling a queued job removes it; a running one is flagged and its worker told at
/// the next renewal. Progress is kept.
pub async fn cancel_and_progress(make: &MakeQueue) {
    let (queue, _) = fresh(make).await;
    let queued = queue
        .enqueue(job("report-generation", JobPriority::Low))
        .await
        .unwrap();
    let running = queue
        .enqueue(job("report-generation", JobPriority::High))
        .await
        .unwrap();
    let lease = queue.fetch("w", LEASE).await.unwrap().unwrap();
    assert_eq!(lease.job.id, running.id);
    let renewal = queue
        .progress(&running.id, &lease.token, json!({"pct": 40}))
        .await
        .unwrap();
    assert!(!renewal.cancel_requested);
    assert_eq!(
        queue.get(&running.id).await.unwrap().progress,
        Some(json!({"pct": 40}))
    );
    let cancelled = queue.cancel(&queued.id).await.unwrap();
    assert_eq!(cancelled.state, JobState::Cancelled);
    assert!(matches!(
        queue.get(&queued.id).await,
        Err(Error::NotFound { .. })
    ));
    let flagged = queue.cancel(&running.id).await.unwrap();
    assert!(flagged.cancel_requested);
    let renewal = queue
        .extend(&running.id, &lease.token, LEASE)
        .await
        .unwrap();
    assert!(renewal.cancel_requested);
    assert!(matches!(
        queue.cancel("nope").await,
        Err(Error::NotFound { .. })
    ));
    assert_eq!(next_id(&*queue).await, None);
}

/// Listing filters by state and type and pages; stats count per state and priority and
/// time waits and runs.
pub async fn list_and_stats(make: &MakeQueue) {
    let (queue, clock) = fresh(make).await;
    for i in 0..5 {
        let p = if i % 2 == 0 {
            JobPriority::High
        } else {
            JobPriority::Background
        };
        queue.enqueue(job("price-calculation", p)).await.unwrap();
    }
    queue
        .enqueue(job("inventory-sync", JobPriority::Normal))
        .await
        .unwrap();
    clock.advance(Duration::from_millis(400));
    let lease = queue.fetch("w", LEASE).await.unwrap().unwrap();
    clock.advance(Duration::from_millis(200));
    queue
        .complete(&lease.job.id, &lease.token, json!(1))
        .await
        .unwrap();
    let page = |state, job_type: Option<&str>, offset, limit| JobFilter {
        state,
        job_type: job_type.map(Into::into),
        offset,
        limit: Some(limit),
    };
    let waiting = queue
        .list(&page(
            Some(JobState::Waiting),
            Some("price-calculation"),
            1,
            2,
        ))
        .await
        .unwrap();
    assert_eq!(waiting.len(), 2);
    assert!(waiting
        .iter()
        .all(|j| j.job_type == "price-calculation" && j.state == JobState::Waiting));
    let all = queue.list(&page(None, None, 0, 100)).await.unwrap();
    assert_eq!(all.len(), 6);
    let done = queue
        .list(&page(Some(JobState::Completed), None, 0, 10))
        .await
        .unwrap();
    assert_eq!(done[0].id, lease.job.id);
    let stats = queue.stats().await.unwrap();
    assert_eq!((stats.waiting, stats.active, stats.completed), (5, 0, 1));
    assert_eq!(
        (
            stats.waiting_by_priority.high,
            stats.waiting_by_priority.normal,
            stats.waiting_by_priority.background
        ),
        (2, 1, 2)
    );
    assert_eq!(stats.last_hour.completed, 1);
    assert!((stats.avg_wait_ms - 400.0).abs() < 1.0, "{stats:?}");
    assert!((stats.avg_run_ms - 200.0).abs() < 1.0, "{stats:?}");
}

/// A queue that keeps no completed jobs drops each as it completes (alone or in a
/// batch), still answers it as completed, counts it and frees its unique key.
pub async fn keep_no_completed(make: &MakeQueue) {
    let options = QueueOptions {
        keep_completed: 0,
        ..QueueOptions::default()
    };
    let queue = make(round_clock(), options).await;
    let mut unique = job("inventory-sync", JobPriority::Normal);
    unique.unique_key = Some("sync:STN002".into());
    let first = queue.enqueue(unique.clone()).await.unwrap();
    let second = queue
        .enqueue(job("inventory-sync", JobPriority::Normal))
        .await
        .unwrap();
    let lease = queue.fetch("w", LEASE).await.unwrap().unwrap();
    assert_eq!(lease.job.id, first.id);
    let done = queue
        .complete(&first.id, &lease.token, json!({"synced": 1}))
        .await
        .unwrap();
    assert_eq!(
        (done.state, done.result),
        (JobState::Completed, Some(json!({"synced": 1})))
    );
    assert!(matches!(
        queue.get(&first.id).await,
        Err(Error::NotFound { .. })
    ));
    let again = queue.complete(&first.id, &lease.token, json!(null)).await;
    assert!(matches!(again, Err(Error::NotFound { .. })), "{again:?}");
    let lease = queue.fetch("w", LEASE).await.unwrap().unwrap();
    let done = [Completion {
        id: second.id.clone(),
        token: lease.token.clone(),
        result: json!(2),
    }];
    let (outcomes, _) = queue
        .complete_many(&done, &FetchRequest::new("w", LEASE, 1))
        .await
        .unwrap();
    assert!(outcomes[0].is_ok());
    assert!(matches!(
        queue.get(&second.id).await,
        Err(Error::NotFound { .. })
    ));
    let stats = queue.stats().await.unwrap();
    assert_eq!((stats.completed, stats.last_minute.completed), (0, 2));
    assert_ne!(queue.enqueue(unique).await.unwrap().id, first.id);
}

/// Data, progress and errors come back exactly as given, whatever they hold: quotes,
/// slashes, escapes, text beyond ASCII, numbers past 2^53.
pub async fn payloads_round_trip(make: &MakeQueue) {
    let (queue, _) = fresh(make).await;
    let data = json!({
        "note": "a \"quoted\" /path\\ with\nnewline, tab\t and \u{0}",
        "text": "Überweisung ✓ 転送",
        "big": 12_345_678_901_234_567_u64,
        "ratio": 0.1,
        "list": [null, true, {"nested": []}],
    });
    let mut new = NewJob::new("financial-reconciliation", data.clone());
    new.backoff = Some(Backoff {
        kind: BackoffKind::Fixed,
        delay_ms: 0,
        jitter: 0.0,
    });
    let id = queue.enqueue(new).await.unwrap().id;
    let lease = queue.fetch("w", LEASE).await.unwrap().unwrap();
    assert_eq!(lease.job.data, data);
    let progress = json!({"step": "2/3 \"posting\"", "detail": "ü/\\"});
    queue
        .progress(&id, &lease.token, progress.clone())
        .await
        .unwrap();
    let error = "ledger said: \"no\" / retry\n(ü)";
    queue.fail(&id, &lease.token, error).await.unwrap();
    let again = queue.fetch("w", LEASE).await.unwrap().unwrap();
    assert_eq!(
        (again.job.data, again.job.progress, again.job.error),
        (data, Some(progress), Some(error.to_owned()))
    );
    assert_eq!(again.job.attempts, 2);
}

/// Each failed attempt is kept with its number, error, time and worker, oldest first; a
/// retry from failed keeps them; only the newest [`FAILED_ATTEMPTS_KEPT`] stay.
pub async fn failed_attempts_in_order(make: &MakeQueue) {
    let (queue, clock) = fresh(make).await;
    let no_wait = Backoff {
        kind: BackoffKind::Fixed,
        delay_ms: 0,
        jitter: 0.0,
    };
    let mut new = job("stock-reconciliation", JobPriority::Normal);
    new.max_attempts = Some(2);
    new.backoff = Some(no_wait);
    let id = queue.enqueue(new).await.unwrap().id;
    assert!(queue.get(&id).await.unwrap().failed_attempts.is_empty());
    let mut expected = Vec::new();
    for (attempt, worker, error) in [
        (1, "w1", "depot ledger locked"),
        (2, "w2", "tank gauge timeout"),
    ] {
        let lease = queue.fetch(worker, LEASE).await.unwrap().unwrap();
        assert_eq!(lease.job.id, id);
        clock.advance(Duration::from_secs(5));
        queue.fail(&id, &lease.token, error).await.unwrap();
        expected.push((
            attempt,
            error.to_owned(),
            clock.now(),
            Some(worker.to_owned()),
        ));
    }
    let seen = |job: &crate::jobs::Job| -> Vec<_> {
        job.failed_attempts
            .iter()
            .map(|a| (a.attempt, a.error.clone(), a.failed_at, a.worker.clone()))
            .collect()
    };
    let failed = queue.get(&id).await.unwrap();
    assert_eq!(failed.state, JobState::Failed);
    assert_eq!(seen(&failed), expected);
    assert_eq!(failed.error.as_deref(), Some("tank gauge timeout"));
    let listed = queue
        .list(&JobFilter {
            state: Some(JobState::Failed),
            ..JobFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(seen(&listed[0]), expected);
    queue.retry(&id).await.unwrap();
    assert_eq!(seen(&queue.get(&id).await.unwrap()), expected);
    let lease = queue.fetch("w3", LEASE).await.unwrap().unwrap();
    queue
        .complete(&id, &lease.token, json!(null))
        .await
        .unwrap();
    assert_eq!(seen(&queue.get(&id).await.unwrap()), expected);

    let mut new = job("stock-reconciliation", JobPriority::Normal);
    let tries = FAILED_ATTEMPTS_KEPT as u32 + 2;
    new.max_attempts = Some(tries);
    new.backoff = Some(no_wait);
    let id = queue.enqueue(new).await.unwrap().id;
    for attempt in 1..=tries {
        let lease = queue.fetch("w", LEASE).await.unwrap().unwrap();
        queue
            .fail(&id, &lease.token, &format!("failure {attempt}"))
            .await
            .unwrap();
    }
    let kept: Vec<(u32, String)> = queue
        .get(&id)
        .await
        .unwrap()
        .failed_attempts
        .into_iter()
        .map(|a| (a.attempt, a.error))
        .collect();
    let newest: Vec<(u32, String)> = (3..=tries).map(|a| (a, format!("failure {a}"))).collect();
    assert_eq!(kept, newest);
}

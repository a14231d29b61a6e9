//! The worker pool over the in-memory queue, on the wall clock (workers run real tasks).

use omc_orchestra::jobs::{
    Backoff, BackoffKind, JobState, JobStore, MemoryJobQueue, NewJob, WorkerPool,
};
use omc_orchestra::testkit::eventually;
use omc_orchestra::{clock, events::EventBus, events::MemoryEventBus};
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn queue() -> Arc<dyn JobStore> {
    Arc::new(MemoryJobQueue::new(clock::system()))
}

async fn all_completed(queue: &Arc<dyn JobStore>, n: u64) {
    eventually("every job completed", Duration::from_secs(20), || async {
        (queue.stats().await.unwrap().completed == n).then_some(())
    })
    .await;
}

#[tokio::test]
async fn runs_each_type_with_its_handler_and_grows_then_shrinks() {
    let queue = queue();
    let peak = Arc::new(AtomicUsize::new(0));
    let now = Arc::new(AtomicUsize::new(0));
    let (p, n) = (peak.clone(), now.clone());
    let bus = Arc::new(MemoryEventBus::new(clock::system()));
    let mut events = bus.subscribe();
    let pool = WorkerPool::builder(queue.clone())
        .handle("price-calculation", move |ctx| {
            let (p, n) = (p.clone(), n.clone());
            async move {
                let running = n.fetch_add(1, Ordering::SeqCst) + 1;
                p.fetch_max(running, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                n.fetch_sub(1, Ordering::SeqCst);
                Ok(json!({"price": ctx.job.data["litres"]}))
            }
        })
        .handle("inventory-sync", |_| async {
            Err("depot offline".to_owned())
        })
        .concurrency(1, 8)
        .poll_interval(Duration::from_millis(10))
        .events(bus.clone() as Arc<dyn EventBus>)
        .start();
    let mut ids = Vec::new();
    for litres in 0..60 {
        let job = NewJob::new("price-calculation", json!({ "litres": litres }));
        ids.push(queue.enqueue(job).await.unwrap().id);
    }
    let mut failing = NewJob::new("inventory-sync", json!({}));
    failing.max_attempts = Some(1);
    let failing = queue.enqueue(failing).await.unwrap();
    all_completed(&queue, 60).await;
    assert_eq!(
        queue.get(&ids[7]).await.unwrap().result,
        Some(json!({"price": 7}))
    );
    assert!(peak.load(Ordering::SeqCst) > 1, "concurrency never grew");
    assert!(pool.concurrency() <= 8);
    eventually("the failing job failed", Duration::from_secs(5), || async {
        (queue.get(&failing.id).await.unwrap().state == JobState::Failed).then_some(())
    })
    .await;
    eventually(
        "concurrency back to the minimum",
        Duration::from_secs(10),
        || async { (pool.concurrency() == 1).then_some(()) },
    )
    .await;
    let first = events.recv().await.unwrap();
    assert!(first.event_type.starts_with("JOB_"), "{first:?}");
    pool.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn renews_the_lease_of_a_long_job() {
    let queue = queue();
    let pool = WorkerPool::builder(queue.clone())
        .handle("database-backup", |_| async {
            tokio::time::sleep(Duration::from_millis(900)).await;
            Ok(json!("backed up"))
        })
        .lease(Duration::from_millis(300))
        .poll_interval(Duration::from_millis(10))
        .start();
    let id = queue
        .enqueue(NewJob::new("database-backup", json!({})))
        .await
        .unwrap()
        .id;
    // A second worker polls all along: it must never get the job while it is renewed.
    let thief = tokio::spawn({
        let queue = queue.clone();
        async move {
            for _ in 0..50 {
                if let Some(lease) = queue.fetch("thief", Duration::from_secs(5)).await.unwrap() {
                    return Some(lease.job.id);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            None
        }
    });
    all_completed(&queue, 1).await;
    assert_eq!(thief.await.unwrap(), None);
    assert_eq!(queue.get(&id).await.unwrap().attempts, 1);
    pool.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn shutdown_finishes_or_releases_and_cancellation_reaches_the_handler() {
    let queue = queue();
    let pool = WorkerPool::builder(queue.clone())
        .handle("report-generation", |ctx| async move {
            let wait = ctx.job.data["ms"].as_u64().unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(wait)).await;
            Ok(json!(null))
        })
        .handle("uppf-processing", |mut ctx| async move {
            ctx.cancelled().await;
            Err("cancelled".to_owned())
        })
        .lease(Duration::from_millis(150))
        .concurrency(3, 3)
        .poll_interval(Duration::from_millis(10))
        .start();
    let first_id = pool.worker_id().to_owned();
    let quick = queue
        .enqueue(NewJob::new("report-generation", json!({"ms": 100})))
        .await
        .unwrap();
    let slow = queue
        .enqueue(NewJob::new("report-generation", json!({"ms": 60_000})))
        .await
        .unwrap();
    let mut cancellable = NewJob::new("uppf-processing", json!({}));
    cancellable.max_attempts = Some(1);
    let cancellable = queue.enqueue(cancellable).await.unwrap();
    eventually("all three running", Duration::from_secs(5), || async {
        (queue.stats().await.unwrap().active == 3).then_some(())
    })
    .await;
    queue.cancel(&cancellable.id).await.unwrap();
    eventually(
        "the cancelled job stopped",
        Duration::from_secs(5),
        || async {
            (queue.get(&cancellable.id).await.unwrap().state == JobState::Failed).then_some(())
        },
    )
    .await;
    pool.shutdown(Duration::from_millis(400)).await;
    assert_eq!(
        queue.get(&quick.id).await.unwrap().state,
        JobState::Completed
    );
    let released = queue.get(&slow.id).await.unwrap();
    assert_eq!((released.state, released.attempts), (JobState::Waiting, 0));
    let again = WorkerPool::builder(queue.clone()).start();
    assert_ne!(again.worker_id(), first_id);
    again.shutdown(Duration::from_millis(10)).await;
}

#[tokio::test]
async fn a_panicking_handler_fails_its_attempt_and_keeps_its_slot() {
    let queue = queue();
    let gate = Arc::new(tokio::sync::Barrier::new(2));
    let g = gate.clone();
    let pool = WorkerPool::builder(queue.clone())
        .handle("uppf-processing", move |ctx| {
            let gate = g.clone();
            async move {
                if let Some(claim) = ctx.job.data["explode"].as_str() {
                    panic!("claim {claim} has no depot");
                }
                if ctx.job.data["together"] == json!(true) {
                    // Only two jobs running at once get past this.
                    gate.wait().await;
                }
                Ok(json!("paid"))
            }
        })
        .concurrency(2, 2)
        .poll_interval(Duration::from_millis(10))
        .start();
    let mut poisoned = Vec::new();
    for claim in 0..5 {
        let mut job = NewJob::new("uppf-processing", json!({ "explode": format!("C{claim}") }));
        job.max_attempts = Some(2);
        job.backoff = Some(Backoff {
            kind: BackoffKind::Fixed,
            delay_ms: 0,
            jitter: 0.0,
        });
        poisoned.push(queue.enqueue(job).await.unwrap().id);
    }
    for _ in 0..20 {
        queue
            .enqueue(NewJob::new("uppf-processing", json!({})))
            .await
            .unwrap();
    }
    all_completed(&queue, 20).await;
    for (claim, id) in poisoned.iter().enumerate() {
        let job = eventually(
            "the panicking job failed",
            Duration::from_secs(5),
            || async {
                let job = queue.get(id).await.unwrap();
                (job.state == JobState::Failed).then_some(job)
            },
        )
        .await;
        assert_eq!(job.attempts, 2, "{job:?}");
        assert_eq!(
            job.error.as_deref(),
            Some(format!("handler panicked: claim C{claim} has no depot").as_str())
        );
    }
    // Ten panics in a pool of two: both slots still run jobs, side by side.
    for _ in 0..2 {
        queue
            .enqueue(NewJob::new("uppf-processing", json!({"together": true})))
            .await
            .unwrap();
    }
    all_completed(&queue, 22).await;
    pool.shutdown(Duration::from_secs(1)).await;
}

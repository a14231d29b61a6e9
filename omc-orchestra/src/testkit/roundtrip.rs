//! First round-trip checks of the event bus, job queue, log store and probes; their full
//! conformance suites grow from these.

use crate::events::{EventBus, EventQuery, NewEvent};
use crate::jobs::{JobPriority, JobState, JobStore, NewJob};
use crate::logs::{LogLevel, LogQuery, LogRecord, LogSink};
use chrono::Utc;
use serde_json::json;
use std::time::Duration;

/// A published event reaches a live subscriber and the history.
pub async fn events_publish_then_history(bus: &dyn EventBus) {
    let mut live = bus.subscribe();
    let mut event = NewEvent::new(
        "PRICE_UPDATED",
        "pricing-service",
        json!({"stationId": "STN001"}),
    );
    event.tags = vec!["pricing".into()];
    let published = bus.publish(event).await.unwrap();
    assert!(!published.id.is_empty());
    let received = tokio::time::timeout(Duration::from_secs(5), live.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(received, published);
    let query = EventQuery {
        tag: Some("pricing".into()),
        ..Default::default()
    };
    assert_eq!(bus.history(&query).await.unwrap(), vec![published]);
    let bad = NewEvent::new("", "pricing-service", json!(null));
    assert!(bus.publish(bad).await.is_err());
}

/// Jobs come out by priority, complete with a result, and fail into retries.
pub async fn jobs_enqueue_fetch_complete(queue: &dyn JobStore) {
    let mut low = NewJob::new("report-generation", json!({}));
    low.priority = JobPriority::Low;
    let low = queue.enqueue(low).await.unwrap();
    let mut high = NewJob::new("price-calculation", json!({"stationId": "STN001"}));
    high.priority = JobPriority::High;
    let high = queue.enqueue(high).await.unwrap();
    let lease = queue
        .fetch("w1", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(lease.job.id, high.id);
    let done = queue
        .complete(&high.id, &lease.token, json!({"ok": true}))
        .await
        .unwrap();
    assert_eq!(done.state, JobState::Completed);
    let lease = queue
        .fetch("w1", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(lease.job.id, low.id);
    let retried = queue.fail(&low.id, &lease.token, "boom").await.unwrap();
    assert_eq!(retried.state, JobState::Delayed);
    assert!(queue
        .complete(&low.id, &lease.token, json!(null))
        .await
        .is_err());
    let stats = queue.stats().await.unwrap();
    assert_eq!((stats.completed, stats.delayed), (1, 1));
}

/// Written records come back from search, newest first, filtered.
pub async fn logs_write_then_search(sink: &dyn LogSink) {
    let now = Utc::now();
    let mut older = LogRecord::new(
        now - chrono::Duration::seconds(1),
        LogLevel::Error,
        "pricing-service",
        "price feed failed",
    );
    older.request_id = Some("req-1".into());
    let newer = LogRecord::new(
        now,
        LogLevel::Info,
        "pricing-service",
        "Price calculation completed",
    );
    sink.write(vec![older.clone(), newer.clone()])
        .await
        .unwrap();
    let all = sink.search(&LogQuery::default()).await.unwrap();
    assert_eq!(all, vec![newer.clone(), older.clone()]);
    let errors = LogQuery {
        level: Some(LogLevel::Warn),
        ..Default::default()
    };
    assert_eq!(sink.search(&errors).await.unwrap(), vec![older.clone()]);
    let text = LogQuery {
        text: Some("completed".into()),
        ..Default::default()
    };
    assert_eq!(sink.search(&text).await.unwrap(), vec![newer]);
    let blank = LogRecord::new(now, LogLevel::Info, "", "no service");
    assert!(sink.write(vec![blank]).await.is_err());
}

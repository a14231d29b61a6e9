//! The log store contract, checked the same way for every backend.

use crate::logs::{
    IngestOptions, LogCategory, LogIngest, LogLevel, LogPage, LogQuery, LogRecord, LogSink,
    LogStats, LogTail, StatsQuery,
};
use crate::{Clock, Error, ManualClock, Result};
use async_trait::async_trait;
use chrono::{DateTime, Duration as Span, Utc};
use futures::future::BoxFuture;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Builds a fresh, empty log store on `clock`.
pub type MakeLogSink =
    Arc<dyn Fn(ManualClock) -> BoxFuture<'static, Arc<dyn LogSink>> + Send + Sync>;

async fn fresh(make: &MakeLogSink) -> (Arc<dyn LogSink>, DateTime<Utc>) {
    let clock = ManualClock::starting_now();
    let base = clock.now() - Span::minutes(10);
    (make(clock).await, base)
}

fn record(
    base: DateTime<Utc>,
    second: i64,
    level: LogLevel,
    category: LogCategory,
    service: &str,
    message: &str,
) -> LogRecord {
    LogRecord::new(base + Span::seconds(second), level, service, message).with_category(category)
}

/// The known data set, in write order (timestamps one second apart from `base`).
pub fn dataset(base: DateTime<Utc>) -> Vec<LogRecord> {
    use LogCategory::*;
    use LogLevel::*;
    let mut r0 = record(
        base,
        0,
        Info,
        Business,
        "pricing-service",
        "Price calculation completed",
    )
    .with_field("stationId", json!("STN001"))
    .with_field("calculationTime", json!(150))
    .with_field("newPrice", json!(7.45));
    r0.request_id = Some("req-1".into());
    r0.trace_id = Some("trace-a".into());
    r0.span_id = Some("span-1".into());
    let mut r1 = record(
        base,
        1,
        Error,
        Application,
        "pricing-service",
        "Price feed failed for station STN001",
    )
    .with_field("stationId", json!("STN001"));
    r1.request_id = Some("req-2".into());
    r1.trace_id = Some("trace-a".into());
    let r2 = record(
        base,
        2,
        Warn,
        Security,
        "auth-service",
        "Login failed for user 42",
    );
    let r3 = record(base, 3, Debug, System, "inventory-service", "Sync tick");
    let r4 = record(
        base,
        4,
        Error,
        Business,
        "inventory-service",
        "Order ORD-17 failed after 30 ms",
    )
    .with_field("duration", json!(30));
    let r5 = record(
        base,
        5,
        Http,
        Performance,
        "api-gateway",
        "GET /api/pricing 200",
    )
    .with_field("duration", json!(12))
    .with_field("status", json!(200));
    let r6 = record(
        base,
        6,
        Info,
        Audit,
        "auth-service",
        "User 42 changed role to admin",
    );
    let r7 = record(
        base,
        7,
        Error,
        Business,
        "inventory-service",
        "Order ORD-99 failed after 45 ms",
    )
    .with_field("duration", json!(45));
    let r8 = record(
        base,
        8,
        Verbose,
        Application,
        "pricing-service",
        "price cache warmed",
    );
    vec![r0, r1, r2, r3, r4, r5, r6, r7, r8]
}

/// `data` at `indexes`, newest (highest index) first.
fn pick(data: &[LogRecord], indexes: &[usize]) -> Vec<LogRecord> {
    let mut out: Vec<LogRecord> = indexes.iter().map(|&i| data[i].clone()).collect();
    out.reverse();
    out
}

async fn search(sink: &dyn LogSink, query: LogQuery) -> Vec<LogRecord> {
    sink.search(&query).await.unwrap()
}

/// Every filter, alone and combined, finds exactly what it should, newest first.
pub async fn write_then_search_every_filter(make: &MakeLogSink) {
    let (sink, base) = fresh(make).await;
    let data = dataset(base);
    sink.write(data[..4].to_vec()).await.unwrap();
    sink.write(data[4..].to_vec()).await.unwrap();
    let all: Vec<usize> = (0..data.len()).collect();
    let q = LogQuery::default;
    assert_eq!(search(&*sink, q()).await, pick(&data, &all), "no filter");
    let cases: Vec<(&str, LogQuery, Vec<usize>)> = vec![
        (
            "level error",
            LogQuery {
                level: Some(LogLevel::Error),
                ..q()
            },
            vec![1, 4, 7],
        ),
        (
            "level warn and above",
            LogQuery {
                level: Some(LogLevel::Warn),
                ..q()
            },
            vec![1, 2, 4, 7],
        ),
        (
            "level http and above",
            LogQuery {
                level: Some(LogLevel::Http),
                ..q()
            },
            vec![0, 1, 2, 4, 5, 6, 7],
        ),
        (
            "category",
            LogQuery {
                category: Some(LogCategory::Business),
                ..q()
            },
            vec![0, 4, 7],
        ),
        (
            "audit",
            LogQuery {
                category: Some(LogCategory::Audit),
                ..q()
            },
            vec![6],
        ),
        (
            "service",
            LogQuery::for_service("pricing-service"),
            vec![0, 1, 8],
        ),
        (
            "since",
            LogQuery {
                since: Some(base + Span::seconds(6)),
                ..q()
            },
            vec![6, 7, 8],
        ),
        (
            "until",
            LogQuery {
                until: Some(base + Span::seconds(2)),
                ..q()
            },
            vec![0, 1],
        ),
        (
            "time range",
            LogQuery {
                since: Some(base + Span::seconds(2)),
                until: Some(base + Span::seconds(5)),
                ..q()
            },
            vec![2, 3, 4],
        ),
        (
            "request id",
            LogQuery {
                request_id: Some("req-2".into()),
                ..q()
            },
            vec![1],
        ),
        (
            "trace id",
            LogQuery {
                trace_id: Some("trace-a".into()),
                ..q()
            },
            vec![0, 1],
        ),
        (
            "text, any case",
            LogQuery {
                text: Some("FAILED".into()),
                ..q()
            },
            vec![1, 2, 4, 7],
        ),
        (
            "text substring",
            LogQuery {
                text: Some("calc".into()),
                ..q()
            },
            vec![0],
        ),
        (
            "words, any order",
            LogQuery {
                words: Some("failed order".into()),
                ..q()
            },
            vec![4, 7],
        ),
        (
            "whole words only",
            LogQuery {
                words: Some("calc".into()),
                ..q()
            },
            vec![],
        ),
        (
            "string field",
            LogQuery {
                fields: [("stationId".to_owned(), "STN001".to_owned())].into(),
                ..q()
            },
            vec![0, 1],
        ),
        (
            "numeric field",
            LogQuery {
                fields: [("duration".to_owned(), "45".to_owned())].into(),
                ..q()
            },
            vec![7],
        ),
        (
            "combined",
            LogQuery {
                service: Some("inventory-service".into()),
                level: Some(LogLevel::Error),
                since: Some(base + Span::seconds(5)),
                ..q()
            },
            vec![7],
        ),
        ("nothing", LogQuery::for_service("unknown-service"), vec![]),
    ];
    for (what, query, expected) in cases {
        assert_eq!(
            search(&*sink, query).await,
            pick(&data, &expected),
            "{what}"
        );
    }
}

/// Pages of `limit` records walk every match once, newest first, then stop.
pub async fn pages_follow_the_cursor(make: &MakeLogSink) {
    let (sink, base) = fresh(make).await;
    let data = dataset(base);
    sink.write(data.clone()).await.unwrap();
    for filter in [
        LogQuery::default(),
        LogQuery {
            level: Some(LogLevel::Warn),
            ..Default::default()
        },
    ] {
        let expected: Vec<LogRecord> = data
            .iter()
            .rev()
            .filter(|r| filter.matches(r))
            .cloned()
            .collect();
        let mut seen = Vec::new();
        let mut cursor = None;
        for _ in 0..20 {
            let query = LogQuery {
                limit: Some(2),
                cursor: cursor.clone(),
                ..filter.clone()
            };
            let LogPage {
                records,
                next_cursor,
            } = sink.search_page(&query).await.unwrap();
            assert!(records.len() <= 2);
            seen.extend(records);
            cursor = next_cursor;
            if cursor.is_none() {
                break;
            }
        }
        assert!(cursor.is_none(), "paging never ended");
        assert_eq!(seen, expected, "{filter:?}");
    }
    let bad = LogQuery {
        cursor: Some("not a cursor".into()),
        ..Default::default()
    };
    assert!(
        matches!(sink.search_page(&bad).await, Err(Error::Invalid { field, .. }) if field == "cursor")
    );
}

/// A bad record fails the whole batch, naming the field; nothing of it is stored.
pub async fn bad_batches_store_nothing(make: &MakeLogSink) {
    let (sink, base) = fresh(make).await;
    let good = LogRecord::new(base, LogLevel::Info, "pricing-service", "ok");
    let blank = LogRecord::new(base, LogLevel::Info, " ", "no service");
    let huge = LogRecord::new(
        base,
        LogLevel::Info,
        "pricing-service",
        "x".repeat(5 * 1024 * 1024),
    );
    for (bad, field) in [(blank, "service"), (huge, "message")] {
        let result = sink.write(vec![good.clone(), bad]).await;
        assert!(
            matches!(&result, Err(Error::Invalid { field: f, .. }) if f == field),
            "{result:?}"
        );
    }
    assert!(search(&*sink, LogQuery::default()).await.is_empty());
}

/// Stats over a window are exact on the known data set.
pub async fn stats_are_exact(make: &MakeLogSink) {
    let (sink, base) = fresh(make).await;
    let mut data = dataset(base);
    // 20 more performance records 1..=20 ms, at seconds 10..30.
    for i in 1..=20 {
        data.push(
            record(
                base,
                9 + i,
                LogLevel::Info,
                LogCategory::Performance,
                "api-gateway",
                "request served",
            )
            .with_field("duration", json!(i)),
        );
    }
    sink.write(data.clone()).await.unwrap();

    let everything = sink.stats(&StatsQuery::default()).await.unwrap();
    assert_eq!(everything.total, 29);
    let level = |s: &LogStats, l| s.by_level.get(&l).copied().unwrap_or(0);
    assert_eq!(level(&everything, LogLevel::Error), 3);
    assert_eq!(level(&everything, LogLevel::Info), 22);
    assert_eq!(
        everything.by_category.get(&LogCategory::Performance),
        Some(&21)
    );
    assert_eq!(everything.by_service.get("api-gateway"), Some(&21));
    assert_eq!(everything.by_service.get("pricing-service"), Some(&3));
    assert!((everything.error_rate - 3.0 / 29.0).abs() < 1e-12);
    let top = &everything.top_errors;
    assert_eq!(top.len(), 2, "{top:?}");
    assert_eq!(top[0].message, "Order <id> failed after <n> ms");
    assert_eq!(top[0].count, 2);
    assert_eq!(top[0].example, "Order ORD-99 failed after 45 ms");
    assert_eq!(top[1].message, "Price feed failed for station <id>");
    assert_eq!(top[1].count, 1);
    let duration = &everything.durations["duration"];
    // 30, 12, 45 and 1..=20: 23 values; nearest rank p50 = 12th = 12, p95 = 22nd = 30.
    assert_eq!(
        (duration.count, duration.p50, duration.p95, duration.max),
        (23, 12.0, 30.0, 45.0)
    );
    let calc = &everything.durations["calculationTime"];
    assert_eq!((calc.count, calc.p50, calc.p95), (1, 150.0, 150.0));
    assert!(!everything.durations.contains_key("newPrice"));
    assert!(!everything.durations.contains_key("status"));

    // The window [10 s, 30 s): the 20 performance records only.
    let window = StatsQuery {
        filter: LogQuery {
            since: Some(base + Span::seconds(10)),
            until: Some(base + Span::seconds(30)),
            ..Default::default()
        },
        top: None,
    };
    let window = sink.stats(&window).await.unwrap();
    assert_eq!(window.total, 20);
    assert_eq!(window.error_rate, 0.0);
    assert!(window.top_errors.is_empty());
    let d = &window.durations["duration"];
    assert_eq!((d.count, d.p50, d.p95, d.max), (20, 10.0, 19.0, 20.0));

    // Filters narrow stats too; `top` bounds the list.
    let inventory = StatsQuery {
        filter: LogQuery::for_service("inventory-service"),
        top: Some(1),
    };
    let inventory = sink.stats(&inventory).await.unwrap();
    assert_eq!(inventory.total, 3);
    assert!((inventory.error_rate - 2.0 / 3.0).abs() < 1e-12);
    assert_eq!(inventory.top_errors.len(), 1);
    assert_eq!(inventory.top_errors[0].count, 2);
    let empty = sink
        .stats(&StatsQuery {
            filter: LogQuery::for_service("none"),
            top: None,
        })
        .await
        .unwrap();
    assert_eq!(empty, LogStats::default());
}

async fn next(tail: &mut LogTail) -> LogRecord {
    tokio::time::timeout(Duration::from_secs(10), tail.next())
        .await
        .expect("the tail delivered nothing within 10 s")
        .expect("the tail closed")
}

/// A tail gets the records written after it opened that match its filter, in order,
/// and nothing else.
pub async fn tail_receives_only_matching_records(make: &MakeLogSink) {
    let (sink, base) = fresh(make).await;
    let data = dataset(base);
    sink.write(vec![data[1].clone()]).await.unwrap();
    let filter = LogQuery {
        service: Some("inventory-service".into()),
        level: Some(LogLevel::Warn),
        ..Default::default()
    };
    let mut errors = sink.tail(filter.clone());
    let mut everything = sink.tail(LogQuery::default());
    sink.write(data[2..6].to_vec()).await.unwrap();
    sink.write(data[6..].to_vec()).await.unwrap();
    let sentinel = record(
        base,
        20,
        LogLevel::Error,
        LogCategory::System,
        "inventory-service",
        "sentinel",
    );
    sink.write(vec![sentinel.clone()]).await.unwrap();
    assert_eq!(next(&mut errors).await, data[4]);
    assert_eq!(next(&mut errors).await, data[7]);
    assert_eq!(next(&mut errors).await, sentinel);
    for expected in data[2..].iter().chain([&sentinel]) {
        assert_eq!(&next(&mut everything).await, expected);
    }
}

/// A store that holds every write until the test lets it through; wraps a real store.
struct Gated {
    inner: Arc<dyn LogSink>,
    gate: Arc<Semaphore>,
}

#[async_trait]
impl LogSink for Gated {
    async fn write(&self, records: Vec<LogRecord>) -> Result<()> {
        let _pass = self.gate.acquire().await;
        self.inner.write(records).await
    }
    async fn search_page(&self, query: &LogQuery) -> Result<LogPage> {
        self.inner.search_page(query).await
    }
    async fn stats(&self, query: &StatsQuery) -> Result<LogStats> {
        self.inner.stats(query).await
    }
    fn tail(&self, filter: LogQuery) -> LogTail {
        self.inner.tail(filter)
    }
}

/// The ingest buffer answers writers only once the store has their records, refuses
/// with `Overloaded` when full (never drops), and lets waiting writers in as room frees.
pub async fn ingest_pushes_back_and_never_drops(make: &MakeLogSink) {
    let (store, base) = fresh(make).await;
    let gate = Arc::new(Semaphore::new(0));
    let gated: Arc<dyn LogSink> = Arc::new(Gated {
        inner: store.clone(),
        gate: gate.clone(),
    });
    let batch = |n: usize, tag: &str| -> Vec<LogRecord> {
        (0..n)
            .map(|i| {
                LogRecord::new(
                    base,
                    LogLevel::Info,
                    "pricing-service",
                    format!("{tag} {i}"),
                )
            })
            .collect()
    };
    let options = IngestOptions {
        capacity: 10,
        max_batch: 100,
        wait: Duration::ZERO,
    };
    let ingest = Arc::new(LogIngest::new(gated.clone(), Vec::new(), options));

    let too_big = ingest.submit(batch(11, "big")).await;
    assert!(matches!(too_big, Err(Error::Invalid { field, .. }) if field == "records"));
    let bad = ingest
        .submit(vec![LogRecord::new(base, LogLevel::Info, "", "x")])
        .await;
    assert!(matches!(bad, Err(Error::Invalid { field, .. }) if field == "service"));

    let first = tokio::spawn({
        let ingest = ingest.clone();
        let records = batch(6, "first");
        async move { ingest.submit(records).await }
    });
    crate::testkit::eventually("the first batch buffered", Duration::from_secs(5), || {
        let buffered = ingest.buffered();
        async move { (buffered == 6).then_some(()) }
    })
    .await;
    let refused = ingest.submit(batch(5, "refused")).await;
    assert!(matches!(refused, Err(Error::Overloaded(_))), "{refused:?}");
    let second = tokio::spawn({
        let ingest = ingest.clone();
        let records = batch(4, "second");
        async move { ingest.submit(records).await }
    });
    crate::testkit::eventually("the second batch buffered", Duration::from_secs(5), || {
        let buffered = ingest.buffered();
        async move { (buffered == 10).then_some(()) }
    })
    .await;
    assert!(store.search(&LogQuery::default()).await.unwrap().is_empty());
    assert!(
        !first.is_finished() && !second.is_finished(),
        "acknowledged before stored"
    );
    gate.add_permits(1000);
    first.await.unwrap().unwrap();
    second.await.unwrap().unwrap();
    let stored = store.search(&LogQuery::default()).await.unwrap();
    assert_eq!(stored.len(), 10);
    assert!(stored.iter().all(|r| !r.message.starts_with("refused")));

    // A writer allowed to wait gets in once room frees.
    let patient = LogIngest::new(
        gated,
        Vec::new(),
        IngestOptions {
            capacity: 10,
            max_batch: 100,
            wait: Duration::from_secs(10),
        },
    );
    patient.submit(batch(10, "patient")).await.unwrap();
    assert_eq!(
        store
            .search(&LogQuery {
                limit: Some(100),
                ..Default::default()
            })
            .await
            .unwrap()
            .len(),
        20
    );
}

/// Every check, each on a fresh store.
pub async fn run_all(make: MakeLogSink) {
    write_then_search_every_filter(&make).await;
    pages_follow_the_cursor(&make).await;
    bad_batches_store_nothing(&make).await;
    stats_are_exact(&make).await;
    tail_receives_only_matching_records(&make).await;
    ingest_pushes_back_and_never_drops(&make).await;
}
